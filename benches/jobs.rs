//! Run: `make bench-jobs` (or `cargo bench --bench jobs -- [--quick]` after
//! `cargo build --release --bin nmid`). Issue 23's benchmarks, us against the peers on this
//! machine, in one run:
//!
//! 1. **Durable background jobs**: submissions/s and completions/s of `--jobs` jobs
//!    (20,000; 5,000 with `--quick`) of 32 bytes by 1, 8 and 64 submitters (64 with
//!    `--quick`), each submitting one at a time on a connection of its own, while a worker
//!    pool of 64 slots answers at once; p50/p99 of the submissions, and us/peer. Systems:
//!    nmid with `jobs.fsync = "always"` and `"interval"` (HTTP `POST /async/Echo`),
//!    gearmand 1.1.20 with its SQLite queue (`SUBMIT_JOB_BG`), nats-server 2.9 JetStream (a
//!    work-queue stream, publishes awaiting their acks, a pull consumer with explicit acks).
//!    Every system starts afresh on an empty store in a temporary directory for each run.
//! 2. **Streaming**: partials/s to one caller, `--partials` (10,000) of 32 bytes a call: our
//!    `call_stream` with a worker's `send_partial` against NATS multi-reply.
//!
//! How each system runs and what "durable" means for it: `common/background/` (`durable.rs`,
//! `streaming.rs`). Servers are child processes on 127.0.0.1 (ports from `--port-base`, as
//! the compare harness's: P+8, P+9, P+22, P+30), killed by their PID when a run ends; the
//! submitters run on a 2-thread tokio runtime in this process, each system's worker pool on
//! a thread of its own. Results go to `bench-results/jobs-<unix-time>.json` and `.md`, and
//! the markdown to stdout; a failed run is reported as failed and the harness exits
//! non-zero.

// compare's parts of `common` that this harness does not use.
#[allow(dead_code)]
mod common;

use std::path::Path;
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use clap::Parser as _;

use common::background::{durable, durable_table, streaming, JobsRun};
use common::procs;
use common::report::Machine;
use common::systems::{Launcher, Ports};

/// The options of `cargo bench --bench jobs -- [OPTIONS]`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "jobs",
    bin_name = "cargo bench --bench jobs --",
    about = "Durable background jobs (nmid vs gearmand's SQLite queue vs NATS JetStream) and streaming partials (nmid vs NATS)"
)]
struct Options {
    /// 5,000 jobs, 64 submitters, 3 streaming calls: under a minute once built.
    #[arg(long)]
    quick: bool,
    /// Jobs per durable run [default: 20000; 5000 with --quick].
    #[arg(long)]
    jobs: Option<u64>,
    /// Submitter counts, comma-separated [default: 1,8,64; 64 with --quick].
    #[arg(long, value_delimiter = ',')]
    submitters: Option<Vec<usize>>,
    /// Durable systems, comma-separated: us-always, us-interval, gearmand-sqlite, jetstream
    /// [default: all].
    #[arg(long, value_delimiter = ',')]
    systems: Option<Vec<String>>,
    /// Partials per streaming call.
    #[arg(long, default_value_t = 10_000)]
    partials: u64,
    /// Measured streaming calls per system (after one warm-up call) [default: 5; 3 with
    /// --quick].
    #[arg(long)]
    stream_reps: Option<usize>,
    /// Skip the streaming section.
    #[arg(long)]
    no_streaming: bool,
    /// Skip the durable section.
    #[arg(long)]
    no_durable: bool,
    /// Ports P+8, P+9 (nmid), P+22 (nats-server), P+30 (gearmand) on 127.0.0.1.
    #[arg(long, default_value_t = 26800, value_parser = clap::value_parser!(u16).range(1..=65_495))]
    port_base: u16,
    /// Appended by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> ExitCode {
    match bench(Options::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jobs: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn bench(o: Options) -> anyhow::Result<()> {
    let jobs = o.jobs.unwrap_or(if o.quick { 5_000 } else { 20_000 });
    let levels = o
        .submitters
        .clone()
        .unwrap_or(if o.quick { vec![64] } else { vec![1, 8, 64] });
    let systems = o
        .systems
        .clone()
        .unwrap_or(durable::ALL.map(str::to_owned).to_vec());
    if let Some(bad) = systems.iter().find(|s| !durable::ALL.contains(&s.as_str())) {
        bail!("unknown system {bad}; known: {}", durable::ALL.join(","));
    }
    let reps = o.stream_reps.unwrap_or(if o.quick { 3 } else { 5 });
    let launcher = Launcher::new(Ports::new(o.port_base))?;
    if !launcher.nmid_bin().exists() {
        bail!(
            "{} not found: build it with `cargo build --release --bin nmid` (make bench-jobs \
             does), or set NMID_BIN",
            launcher.nmid_bin().display()
        );
    }
    launcher.make_logs()?;
    procs::kill_children_on_signal();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let started = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let clock = Instant::now();
    let mut runs: Vec<JobsRun> = Vec::new();
    if !o.no_durable {
        for &submitters in &levels {
            for system in &systems {
                let run = durable::run(&launcher, &rt, system, submitters, jobs);
                match &run.error {
                    None => eprintln!(
                        "jobs: {system:<16} {submitters:>3} submitters: {:>8.0} submits/s \
                         {:>8.0} completions/s  p50 {:.0} µs  p99 {:.0} µs",
                        run.submits_per_s,
                        run.completions_per_s,
                        run.submit_p50_us,
                        run.submit_p99_us
                    ),
                    Some(e) => eprintln!("jobs: {system} {submitters} submitters FAILED: {e}"),
                }
                runs.push(run);
            }
        }
    }
    let mut streams = Vec::new();
    if !o.no_streaming {
        for system in ["us", "nats"] {
            let run = streaming::run(&launcher, &rt, system, o.partials, reps);
            match &run.error {
                None => eprintln!(
                    "jobs: streaming {system:<5} {:>10.0} partials/s (median of {})",
                    run.median(),
                    run.per_call.len()
                ),
                Some(e) => eprintln!("jobs: streaming {system} FAILED: {e}"),
            }
            streams.push(run);
        }
    }
    let machine = Machine::probe();
    let md = markdown(
        &o,
        jobs,
        &machine,
        &runs,
        &streams,
        clock.elapsed().as_secs(),
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-results");
    std::fs::create_dir_all(&dir)?;
    let json = serde_json::json!({
        "started_unix": started,
        "command": command_line(),
        "elapsed_s": clock.elapsed().as_secs_f64(),
        "machine": machine,
        "jobs": jobs,
        "durable": runs,
        "streaming": streams,
    });
    let json_path = dir.join(format!("jobs-{started}.json"));
    let md_path = dir.join(format!("jobs-{started}.md"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)?;
    std::fs::write(&md_path, &md)?;
    eprintln!(
        "jobs: results in {} and {}",
        json_path.display(),
        md_path.display()
    );
    println!("{md}");
    let failed = runs.iter().filter(|r| r.error.is_some()).count()
        + streams.iter().filter(|r| r.error.is_some()).count();
    if failed > 0 {
        bail!(
            "{failed} measurement(s) failed (logs kept in {})",
            launcher.logs().display()
        );
    }
    let _ = std::fs::remove_dir_all(launcher.logs());
    Ok(())
}

/// The results as markdown: how it ran, the durable table, the streaming table.
fn markdown(
    o: &Options,
    jobs: u64,
    m: &Machine,
    runs: &[JobsRun],
    streams: &[streaming::StreamRun],
    secs: u64,
) -> String {
    let mut md = format!(
        "Command: `{}` ({secs} s). Machine: {} cores, {}, kernel {}; {}; {}; {}; {}.\n\n",
        command_line(),
        m.nproc,
        m.cpu_model,
        m.kernel,
        m.rustc,
        m.nats_server,
        m.gearmand,
        m.nmid_source
    );
    if !runs.is_empty() {
        md.push_str(&format!(
            "#### Durable background jobs: {jobs} jobs of {} B, a worker pool of {} slots answering at once\n\n",
            durable::PAYLOAD,
            durable::SLOTS
        ));
        md.push_str(&durable_table(runs, &durable::label));
        md.push('\n');
    }
    if !streams.is_empty() {
        md.push_str(&format!(
            "#### Streaming: {} partials of {} B to one caller, one call at a time\n\n",
            o.partials,
            durable::PAYLOAD
        ));
        md.push_str(&streaming::table(streams));
    }
    md
}

/// How the run was asked for: `cargo bench --bench jobs [-- ARGS]`.
fn command_line() -> String {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args.is_empty() {
        true => "cargo bench --bench jobs".to_owned(),
        false => format!("cargo bench --bench jobs -- {}", args.join(" ")),
    }
}
