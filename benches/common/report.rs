//! Results: one [`Run`] per repetition of a cell, [`Cell`]s as medians over repetitions,
//! the markdown tables (results, ratios, targets, scale) and the JSON file.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::load::LoadResult;
use super::procs::Role;

/// The systems compared, in table order.
pub const SYSTEMS: [(&str, &str); 7] = [
    (
        "us-tagged",
        "us, tagged (nmid + 2 workers, 1 pipelined client conn.)",
    ),
    ("us-v1", "us, v1 clients (1 conn. per call in flight)"),
    ("nats", "nats-server request-reply (2 queue responders)"),
    (
        "gearmand",
        "gearmand --threads=2 (4 worker conns, pipelined client)",
    ),
    (
        "floor",
        "one-hop floor (raw pipelined client <-> echo server, our frames)",
    ),
    (
        "floor-client",
        "one hop, our client library (tagged Client <-> echo server)",
    ),
    ("http", "us, HTTP POST /call/Echo (wrk)"),
];

/// CPU one process used inside a measured window.
#[derive(Debug, Clone, Serialize)]
pub struct ProcCpu {
    /// Process name (`nmid`, `worker-1`, `load`, ...).
    pub name: String,
    /// What it is for.
    pub role: Role,
    /// utime + stime over the window, seconds.
    pub cpu_s: f64,
}

/// One repetition of one cell.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// System id (see [`SYSTEMS`]), or a scale-series name.
    pub system: String,
    /// Payload bytes.
    pub payload: usize,
    /// Calls in flight.
    pub level: usize,
    /// Repetition, from 1.
    pub rep: usize,
    /// What the load generator measured (absent on failure).
    pub result: Option<LoadResult>,
    /// Answered calls per second.
    pub calls_per_s: f64,
    /// CPU of each process in the window.
    pub cpu: Vec<ProcCpu>,
    /// Why the run failed, if it did.
    pub error: Option<String>,
}

impl Run {
    /// A failed run.
    pub fn failed(system: &str, payload: usize, level: usize, rep: usize, error: String) -> Self {
        Self {
            system: system.to_owned(),
            payload,
            level,
            rep,
            result: None,
            calls_per_s: 0.0,
            cpu: Vec::new(),
            error: Some(error),
        }
    }

    /// CPU milliseconds per 1000 answered calls, by role and in total.
    pub fn cpu_ms_per_1k(&self) -> BTreeMap<String, f64> {
        let calls = self.result.as_ref().map_or(0, |r| r.calls);
        let mut out = BTreeMap::new();
        if calls == 0 {
            return out;
        }
        let per_1k = |s: f64| s * 1000.0 * 1000.0 / calls as f64;
        for role in [Role::Broker, Role::Worker, Role::Load] {
            let of_role: Vec<f64> = self
                .cpu
                .iter()
                .filter(|p| p.role == role)
                .map(|p| p.cpu_s)
                .collect();
            if !of_role.is_empty() {
                out.insert(role_name(role).to_owned(), per_1k(of_role.iter().sum()));
            }
        }
        out.insert(
            "total".to_owned(),
            per_1k(self.cpu.iter().map(|p| p.cpu_s).sum()),
        );
        out
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Broker => "broker",
        Role::Worker => "workers",
        Role::Load => "load",
    }
}

/// A cell's repetitions summarised: medians, with min and max of throughput.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// System id.
    pub system: String,
    /// Payload bytes.
    pub payload: usize,
    /// Calls in flight.
    pub level: usize,
    /// Repetitions that produced a result.
    pub reps_ok: usize,
    /// Median answered calls per second.
    pub calls_per_s: f64,
    /// Lowest of the repetitions.
    pub calls_per_s_min: f64,
    /// Highest of the repetitions.
    pub calls_per_s_max: f64,
    /// Median p50 latency, microseconds.
    pub p50_us: f64,
    /// Median p99 latency, microseconds.
    pub p99_us: f64,
    /// Median p99.9 latency, microseconds.
    pub p999_us: f64,
    /// Failed calls over all repetitions.
    pub errors: u64,
    /// Median CPU ms per 1000 calls, by role (`broker`, `workers`, `load`, `total`).
    pub cpu_ms_per_1k: BTreeMap<String, f64>,
    /// Failures of repetitions, if any.
    pub error: Option<String>,
}

/// The median of `values` (0 when empty).
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Summarises the runs of one cell.
pub fn summarise(system: &str, payload: usize, level: usize, runs: &[&Run]) -> Cell {
    let ok: Vec<&&Run> = runs.iter().filter(|r| r.result.is_some()).collect();
    let field = |f: &dyn Fn(&Run) -> f64| -> Vec<f64> { ok.iter().map(|r| f(r)).collect() };
    let mut tput = field(&|r| r.calls_per_s);
    let min = tput.iter().copied().fold(f64::INFINITY, f64::min);
    let max = tput.iter().copied().fold(0.0, f64::max);
    let result = |r: &Run| r.result.clone().unwrap_or_default();
    let mut cpu = BTreeMap::new();
    for key in ["broker", "workers", "load", "total"] {
        let mut v: Vec<f64> = ok
            .iter()
            .filter_map(|r| r.cpu_ms_per_1k().get(key).copied())
            .collect();
        if !v.is_empty() {
            cpu.insert(key.to_owned(), median(&mut v));
        }
    }
    let errors: Vec<String> = runs
        .iter()
        .filter_map(|r| r.error.clone().map(|e| format!("rep {}: {e}", r.rep)))
        .collect();
    Cell {
        system: system.to_owned(),
        payload,
        level,
        reps_ok: ok.len(),
        calls_per_s: median(&mut tput),
        calls_per_s_min: if ok.is_empty() { 0.0 } else { min },
        calls_per_s_max: max,
        p50_us: median(&mut field(&|r| result(r).p50_us)),
        p99_us: median(&mut field(&|r| result(r).p99_us)),
        p999_us: median(&mut field(&|r| result(r).p999_us)),
        errors: ok.iter().map(|r| result(r).errors).sum(),
        cpu_ms_per_1k: cpu,
        error: (!errors.is_empty()).then(|| errors.join("; ")),
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

/// Microseconds for a table: `87` or `1.42 ms`.
pub fn us(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} ms", v / 1000.0)
    } else if v >= 1000.0 {
        format!("{:.2} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (a > 0.0 && b > 0.0).then(|| a / b)
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.2}x"))
}

/// Finds a cell.
pub fn find<'a>(cells: &'a [Cell], system: &str, payload: usize, level: usize) -> Option<&'a Cell> {
    cells
        .iter()
        .find(|c| c.system == system && c.payload == payload && c.level == level && c.reps_ok > 0)
}

/// The results table: one row per system and level, per payload.
pub fn results_table(cells: &[Cell], payloads: &[usize], levels: &[usize]) -> String {
    let mut md = String::new();
    for &payload in payloads {
        let _ = writeln!(md, "\n### Payload {payload} B\n");
        md.push_str(
            "| system | in flight | calls/s median (min–max) | p50 | p99 | p99.9 | errors \
             | CPU ms / 1k calls: broker · workers · load = total |\n\
             |---|---:|---:|---:|---:|---:|---:|---|\n",
        );
        for (id, label) in SYSTEMS {
            for &level in levels {
                let Some(c) = cells
                    .iter()
                    .find(|c| c.system == id && c.payload == payload && c.level == level)
                else {
                    continue;
                };
                if c.reps_ok == 0 {
                    let _ = writeln!(
                        md,
                        "| {label} | {level} | **failed** | | | | | {} |",
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

/// The ratios table: us (tagged) against each peer, and HTTP against TCP.
pub fn ratios_table(cells: &[Cell], payloads: &[usize], levels: &[usize]) -> String {
    let mut md = String::from(
        "| payload | in flight | us/NATS | us/gearmand | us/floor | us/one hop, our client \
         | us v1/NATS | HTTP/us TCP | p99 us vs NATS | p50 us vs NATS | CPU/call us vs NATS |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
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
                "| {payload} B | {level} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                fmt_ratio(ratio(tput("us-tagged"), tput("nats"))),
                fmt_ratio(ratio(tput("us-tagged"), tput("gearmand"))),
                fmt_ratio(ratio(tput("us-tagged"), tput("floor"))),
                fmt_ratio(ratio(tput("us-tagged"), tput("floor-client"))),
                fmt_ratio(ratio(tput("us-v1"), tput("nats"))),
                fmt_ratio(ratio(tput("http"), tput("us-tagged"))),
                lat(|c| c.p99_us),
                lat(|c| c.p50_us),
                cpu,
            );
        }
    }
    md
}

/// One issue-6 target and whether this run meets it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What is asked.
    pub target: String,
    /// What this run measured.
    pub measured: String,
    /// `Some(true)` met, `Some(false)` missed, `None` not measured.
    pub met: Option<bool>,
}

/// The targets of issue 6, checked against `cells`.
pub fn targets(cells: &[Cell], payloads: &[usize], levels: &[usize]) -> Vec<Target> {
    let mut out = Vec::new();
    let tput = |s: &str, p: usize, l: usize| find(cells, s, p, l).map(|c| c.calls_per_s);
    for &payload in payloads {
        for &level in levels.iter().filter(|&&l| l >= 64) {
            let us = tput("us-tagged", payload, level);
            for (peer, name, want) in [
                ("nats", "NATS", 1.5),
                ("gearmand", "gearmand", 5.0),
                ("floor", "the floor", 0.5),
            ] {
                if !cells.iter().any(|c| c.system == peer) {
                    continue; // not in this run (e.g. --quick)
                }
                let r = us.zip(tput(peer, payload, level)).map(|(a, b)| a / b);
                out.push(Target {
                    target: format!("{payload} B, {level} in flight: >= {want}x {name}"),
                    measured: fmt_ratio(r),
                    met: r.map(|r| r >= want),
                });
            }
        }
        for &level in levels {
            let us = find(cells, "us-tagged", payload, level);
            let nats = find(cells, "nats", payload, level);
            let pair = us.zip(nats);
            out.push(Target {
                target: format!("{payload} B, {level} in flight: p99 <= NATS"),
                measured: pair.map_or("n/a".to_owned(), |(a, b)| {
                    format!("{} vs {}", self::us(a.p99_us), self::us(b.p99_us))
                }),
                met: pair.map(|(a, b)| a.p99_us <= b.p99_us),
            });
            if level == 1 {
                out.push(Target {
                    target: format!("{payload} B, 1 in flight: p50 <= NATS"),
                    measured: pair.map_or("n/a".to_owned(), |(a, b)| {
                        format!("{} vs {}", self::us(a.p50_us), self::us(b.p50_us))
                    }),
                    met: pair.map(|(a, b)| a.p50_us <= b.p50_us),
                });
            }
        }
    }
    out
}

/// The targets as a markdown list.
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
