//! The markdown of a run, `bench-results/<unix-time>.md`: a header saying what ran where and
//! how, the results table per payload, the ratios, the issue-6 targets, and (full run) memory,
//! the scale series and the worker connections against NATS. BENCHMARKS.md quotes these
//! tables as they come out.

use std::fmt::Write as _;

use super::cluster::ClusterBench;
use super::report::{find, fmt_ratio, ratio, Cell, Report, Target};
use super::scale::{Scale, ScalePoint};
use super::systems::System;
use super::FUNCTION;

/// The whole document of `report`.
pub fn document(report: &Report) -> String {
    let s = &report.settings;
    let machine = &report.machine;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## nmid benchmark{}\n\n`{}` — {:.0} s in all.\n\nMachine: {} cores, {}, kernel \
         {}; {}; {}; {}; {}; {}.\n\nClosed loop, function `{FUNCTION}` upper-cases the \
         payload; warm-up {} ms excluded; window {} s; {} repetition(s), median \
         (min–max). Pipelined clients use 1 connection below 512 in flight, {} at 512. \
         CPU = utime+stime of each process over the window, per 1000 answered calls.",
        if s.quick { " (quick)" } else { "" },
        report.command,
        report.elapsed.as_secs_f64(),
        machine.nproc,
        machine.cpu_model,
        machine.kernel,
        machine.rustc,
        machine.nats_server,
        machine.gearmand,
        machine.wrk,
        machine.nmid_source,
        s.warmup_ms,
        s.window_ms / 1000,
        s.reps,
        s.pipelined_conns_at_512,
    );
    if s.table {
        md.push_str(&results_table(&report.cells, &s.payloads, &s.levels));
        md.push_str("\n### Ratios (throughput; latency us vs NATS)\n\n");
        md.push_str(&ratios_table(&report.cells, &s.payloads, &s.levels));
        md.push_str("\n### Issue 6 targets\n\n");
        md.push_str(&targets_md(&report.targets));
    }
    if let Some(scale) = &report.scale {
        md.push_str("\n### Scale and memory\n\n");
        md.push_str(&scale_md(scale));
    }
    if let Some(cluster) = &report.cluster {
        md.push_str("\n### Cluster: a forwarded call against a direct one, and failover\n\n");
        md.push_str(&cluster_md(cluster));
    }
    md
}

/// The scale section: memory, our series, then the workers series against NATS.
pub fn scale_md(scale: &Scale) -> String {
    let mut md = String::new();
    match (&scale.memory, &scale.memory_error) {
        (Some(m), _) => {
            let _ = writeln!(
                md,
                "Dispatcher RSS: {:.1} MiB idle, {:.1} MiB with {} idle client \
                 connections: **{:.0} bytes per connection**.\n",
                m.baseline_bytes as f64 / 1048576.0,
                m.loaded_bytes as f64 / 1048576.0,
                m.idle_conns,
                m.bytes_per_conn
            );
        }
        (None, e) => {
            let e = e.as_deref().unwrap_or("not run");
            let _ = writeln!(md, "Memory test failed: {e}\n");
        }
    }
    md.push_str(
        "Tagged, 64 in flight, 32 B, one worker process (so lower than the table \
         above):\n\n| series | n | calls/s median (min–max) | p99 | nmid CPU ms / 1k \
         calls | total CPU ms / 1k calls |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for p in scale.functions.iter().chain(&scale.workers) {
        let c = &p.cell;
        let label = p.series.label();
        if c.failed() {
            let _ = writeln!(md, "| {label} | {} | {} | | | |", p.n, throughput(c));
            continue;
        }
        let cpu = |k: &str| c.cpu_ms_per_1k.get(k).copied().unwrap_or(0.0);
        let _ = writeln!(
            md,
            "| {label} | {} | {} | {} | {:.1} | {:.1} |",
            p.n,
            throughput(c),
            us(c.p99_us),
            cpu("broker"),
            cpu("total"),
        );
    }
    md.push_str(&workers_vs_nats_md(&scale.workers, &scale.nats));
    md
}

/// Each worker count against NATS with as many responder connections (one responder
/// process, every connection its own subscription in one queue group): throughputs, their
/// ratio, p99 and CPU side by side.
fn workers_vs_nats_md(workers: &[ScalePoint], nats: &[ScalePoint]) -> String {
    let mut md = String::from(
        "\nThe worker connections against NATS request-reply with as many responder \
         connections (one responder process, each connection its own subscription in one \
         queue group; the table's async-nats requester, 64 in flight, 32 B):\n\n\
         | connections | us calls/s median (min–max) | NATS calls/s median (min–max) | \
         us/NATS | p99 us vs NATS | broker CPU ms / 1k calls us vs NATS | total CPU ms / 1k \
         calls us vs NATS |\n|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for ours in workers {
        let theirs = nats.iter().find(|p| p.n == ours.n);
        let (a, b) = (&ours.cell, theirs.map(|p| &p.cell));
        let both = b.filter(|b| !a.failed() && !b.failed());
        let side = |f: &dyn Fn(&Cell) -> String| {
            both.map_or("n/a".to_owned(), |b| format!("{} vs {}", f(a), f(b)))
        };
        let cpu = |key: &'static str| {
            move |c: &Cell| {
                c.cpu_ms_per_1k
                    .get(key)
                    .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
            }
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            ours.n,
            throughput(a),
            b.map_or_else(|| "not run".to_owned(), throughput),
            fmt_ratio(both.and_then(|b| ratio(a.calls_per_s, b.calls_per_s))),
            side(&|c| us(c.p99_us)),
            side(&cpu("broker")),
            side(&cpu("total")),
        );
    }
    md
}

/// A cell's throughput for a table, `210.6k (210.4k–218.5k)`, or `**failed**: why`.
fn throughput(c: &Cell) -> String {
    match c.failed() {
        true => format!(
            "**failed**: {}",
            c.error.as_deref().unwrap_or("no result").replace('|', "/")
        ),
        false => format!(
            "{} ({}–{})",
            kilo(c.calls_per_s),
            kilo(c.calls_per_s_min),
            kilo(c.calls_per_s_max)
        ),
    }
}

/// `12345.6` -> `12.3k`.
pub fn kilo(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.1}k", v / 1000.0)
    } else {
        format!("{v:.0}")
    }
}

/// Microseconds for a table: `87 µs` or `1.42 ms`.
pub fn us(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} ms", v / 1000.0)
    } else if v >= 1000.0 {
        format!("{:.2} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}

/// The results table: one row per system and level, per payload. A failed cell's row says
/// **failed**, its failed calls, and why.
pub fn results_table(cells: &[Cell], payloads: &[usize], levels: &[usize]) -> String {
    let mut md = String::new();
    for &payload in payloads {
        let _ = writeln!(md, "\n### Payload {payload} B\n");
        md.push_str(
            "| system | in flight | calls/s median (min–max) | p50 | p99 | p99.9 | errors \
             | CPU ms / 1k calls: broker · workers · load = total |\n\
             |---|---:|---:|---:|---:|---:|---:|---|\n",
        );
        for system in System::KNOWN {
            let label = system.label();
            for &level in levels {
                let Some(c) = cells
                    .iter()
                    .find(|c| c.system == system.id() && c.payload == payload && c.level == level)
                else {
                    continue;
                };
                if c.failed() {
                    let _ = writeln!(
                        md,
                        "| {label} | {level} | **failed** | | | | {} | {} |",
                        c.errors,
                        c.error.as_deref().unwrap_or("no result").replace('|', "/")
                    );
                    continue;
                }
                let cpu = |k: &str| {
                    c.cpu_ms_per_1k
                        .get(k)
                        .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
                };
                let _ = writeln!(
                    md,
                    "| {label} | {level} | {} ({}–{}) | {} | {} | {} | {} | {} · {} · {} = {} |",
                    kilo(c.calls_per_s),
                    kilo(c.calls_per_s_min),
                    kilo(c.calls_per_s_max),
                    us(c.p50_us),
                    us(c.p99_us),
                    us(c.p999_us),
                    c.errors,
                    cpu("broker"),
                    cpu("workers"),
                    cpu("load"),
                    cpu("total"),
                );
            }
        }
    }
    md
}

/// The ratios table: us (tagged) against each peer, HTTP against TCP, and HTTP against the
/// bare actix-web server (http / http-floor: what the dispatcher costs behind actix-web).
pub fn ratios_table(cells: &[Cell], payloads: &[usize], levels: &[usize]) -> String {
    let mut md = String::from(
        "| payload | in flight | us/NATS | us/gearmand | us/floor | us/one hop, our client \
         | us v1/NATS | HTTP/us TCP | HTTP / bare actix-web | p99 us vs NATS | p50 us vs NATS \
         | CPU/call us vs NATS |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for &payload in payloads {
        for &level in levels {
            let get = |s: &str| find(cells, s, payload, level);
            let tput = |s: &str| get(s).map_or(0.0, |c| c.calls_per_s);
            let us_cell = get("us-tagged");
            let nats = get("nats");
            let lat = |f: fn(&Cell) -> f64| match (us_cell, nats) {
                (Some(a), Some(b)) => format!("{} vs {}", us(f(a)), us(f(b))),
                _ => "n/a".to_owned(),
            };
            let cpu = match (us_cell, nats) {
                (Some(a), Some(b)) => {
                    let a = a.cpu_ms_per_1k.get("total").copied().unwrap_or(0.0);
                    let b = b.cpu_ms_per_1k.get("total").copied().unwrap_or(0.0);
                    fmt_ratio(ratio(a, b))
                }
                _ => "n/a".to_owned(),
            };
            let _ = writeln!(
                md,
                "| {payload} B | {level} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                fmt_ratio(ratio(tput("us-tagged"), tput("nats"))),
                fmt_ratio(ratio(tput("us-tagged"), tput("gearmand"))),
                fmt_ratio(ratio(tput("us-tagged"), tput("floor"))),
                fmt_ratio(ratio(tput("us-tagged"), tput("floor-client"))),
                fmt_ratio(ratio(tput("us-v1"), tput("nats"))),
                fmt_ratio(ratio(tput("http"), tput("us-tagged"))),
                fmt_ratio(ratio(tput("http"), tput("http-floor"))),
                lat(|c| c.p99_us),
                lat(|c| c.p50_us),
                cpu,
            );
        }
    }
    md
}

/// The targets as a markdown table.
pub fn targets_md(targets: &[Target]) -> String {
    let mut md = String::from("| target | measured | |\n|---|---:|---|\n");
    for t in targets {
        let mark = match t.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        };
        let _ = writeln!(md, "| {} | {} | {mark} |", t.target, t.measured);
    }
    md
}

/// The cluster section: the direct and forwarded windows side by side, then the failover.
pub fn cluster_md(cluster: &ClusterBench) -> String {
    let mut md = String::from(
        "etcd and three dispatchers; tagged client, 64 in flight, 32 B, one window each.\n\n\
         | calls | calls/s | p50 | p99 | |\n|---|---|---|---|---|\n",
    );
    for (what, run) in [
        ("direct (A, local workers)", &cluster.direct),
        ("forwarded (B -> peer)", &cluster.forwarded),
    ] {
        match (&run.result, &run.error) {
            (Some(r), None) => {
                let _ = writeln!(
                    md,
                    "| {what} | {} | {} | {} | |",
                    kilo(run.calls_per_s),
                    us(r.p50_us),
                    us(r.p99_us)
                );
            }
            (_, error) => {
                let _ = writeln!(
                    md,
                    "| {what} | **failed** | | | {} |",
                    error.as_deref().unwrap_or("no result")
                );
            }
        }
    }
    let ratio = match (&cluster.direct.error, &cluster.forwarded.error) {
        (None, None) if cluster.direct.calls_per_s > 0.0 => {
            format!(
                "{:.2}",
                cluster.forwarded.calls_per_s / cluster.direct.calls_per_s
            )
        }
        _ => "-".to_owned(),
    };
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} ms"));
    let _ = writeln!(
        md,
        "\nForwarded / direct throughput: {ratio}.\n\nFailover of a discovering client (16 \
         callers, dispatcher A SIGKILLed): first successful call on a survivor by a caller that \
         lost one {} after the kill; every caller recovered {} after it; {} calls lost \
         (`ConnectionLost`, in flight on A).",
        ms(cluster.failover_ms),
        ms(cluster.all_recovered_ms),
        cluster.failover_lost,
    );
    if let Some(error) = &cluster.error {
        let _ = writeln!(md, "\n**Cluster section failed**: {error}");
    }
    md
}
