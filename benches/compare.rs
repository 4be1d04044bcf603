//! Run: `make bench` (or `cargo bench --bench compare -- [--quick]` after
//! `cargo build --release --bin nmid`). Us against the peers on this machine, in one run:
//! nmid (tagged and v1 clients, and HTTP under wrk), nats-server request-reply, gearmand,
//! the one-hop floor (client <-> echo server, no broker), and the HTTP floor (a bare
//! actix-web server answering wrk's posts itself, with nmid's HTTP worker count).
//!
//! Every system serves `Echo` (upper-case the payload) to a closed-loop load of 1, 64 or 512
//! calls in flight, 32 B or 4 KiB payloads, warm-up excluded, 3 repetitions (medians with
//! min–max). Each role is a process of its own — this binary re-executed with `--role` for
//! our workers, the peers' workers and every load generator — so the CPU time of each
//! process (utime + stime from /proc over the measured window) is reported per 1000 calls.
//! A full run also measures the dispatcher's memory with 10,000 idle connections and its
//! throughput as functions grow 1 -> 1000 and worker connections 1 -> 100 (each worker
//! count against NATS with as many queue-group responder connections), and a cluster
//! of three dispatchers on etcd: a forwarded call's cost against a direct one (calls/s and
//! p99 in the same run) and a discovering client's failover time (`--cluster-only` runs
//! just that).
//!
//! Every server binds 127.0.0.1 only, on ports from `--port-base` (default 26800); a busy
//! port stops the run before anything starts. Every child is killed by its PID when its
//! guard drops (and on SIGINT/SIGTERM); every load loop is bounded in count and time.
//! Results go to `bench-results/<unix-time>.json` and `.md`. `--quick` (C=64, 32 B, us vs
//! NATS vs floor, and HTTP, three rounds of ~4 s windows, the systems alternating within
//! each) prints each round's ratios, then ends with the line
//! `ratio_vs_nats=<x> ratio_vs_floor=<y> http_vs_tcp=<z> rounds=3` (throughputs: us-tagged /
//! nats, us-tagged / floor, http / us-tagged; each the median of the rounds' ratios: one run
//! of one round moved ±20% from run to run on a shared 2-core machine). Any failed call in a measured window, or a
//! process of a system dying, fails the cell: `--quick` stops there with an error naming the
//! system and the count; a full run reports the cell as failed, writes its files, and exits
//! non-zero at the end.
//!
//! This file is the main: parse the options, run the table and the scale section, write
//! the results. How each part works is in `common/` (its `mod.rs` lists the files); the
//! options are `--help`'s.

mod common;

use std::path::Path;
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use clap::Parser as _;

use common::options::{self, Options, Settings};
use common::procs;
use common::progress::Progress;
use common::report::Report;
use common::systems::Launcher;
use common::{cluster, roles, scale, table, Harness};

fn main() -> ExitCode {
    let options = Options::parse();
    if let Some(role) = options.role {
        return roles::main(role, &options);
    }
    match bench(Settings::resolve(&options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("compare: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The harness: checks, the table, the scale section, then the result files, the markdown
/// on stdout and, for `--quick`, the ratio line. Fails when anything measured failed (a
/// quick run at the first failure, a full run once its files are written).
fn bench(settings: Settings) -> anyhow::Result<()> {
    let launcher = Launcher::new(settings.ports)?;
    launcher.preflight(&settings)?;
    launcher.make_logs()?;
    procs::kill_children_on_signal();
    let started = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let clock = Instant::now();
    let mut cells = 0;
    if settings.table {
        cells += table::cell_count(&settings);
    }
    if settings.scale {
        cells += scale::cell_count(&settings);
    }
    let h = Harness {
        settings,
        launcher,
        progress: Progress::new(cells),
    };
    let mut runs = Vec::new();
    if h.settings.table {
        table::run(&h, &mut runs)?;
    }
    let scale = h.settings.scale.then(|| scale::run(&h, &mut runs));
    let cluster = h.settings.cluster.then(|| cluster::run(&h));
    h.progress.finish();
    let mut report = Report::new(
        h.settings.clone(),
        options::command_line(),
        started,
        clock.elapsed(),
        runs,
        scale,
    );
    report.cluster = cluster;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-results");
    let (json_path, md_path, md) = report.write(&dir)?;
    eprintln!(
        "compare: results in {} and {}",
        json_path.display(),
        md_path.display()
    );
    println!("{md}");
    let failures = report.failures();
    if !failures.is_empty() {
        eprintln!(
            "compare: these failed (logs kept in {}):",
            h.launcher.logs().display()
        );
        for failure in &failures {
            eprintln!("compare:   {failure}");
        }
        bail!(
            "{} of {} measurements failed; they are reported as failed and count in no \
             median or ratio",
            failures.len(),
            report.runs.len() + usize::from(report.scale.is_some())
        );
    }
    let _ = std::fs::remove_dir_all(h.launcher.logs());
    if h.settings.quick {
        let (Some(rounds), Some(ratios)) = (report.quick_rounds(), report.quick_ratios()) else {
            bail!("quick run incomplete: us-tagged, nats, floor and http must all produce results in every round");
        };
        for (n, round) in rounds.iter().enumerate() {
            println!("round {}: {round}", n + 1);
        }
        println!("{ratios}");
    }
    Ok(())
}
