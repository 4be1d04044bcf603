//! The parts of `benches/jobs.rs` (durable background jobs and streaming partials), beside
//! the compare harness's parts they reuse (the [`Launcher`](super::systems::Launcher) and its
//! ports, [`Proc`](super::procs::Proc), the Gearman packets, the markdown number formats).
//!
//! - this file: what one durable run measured ([`JobsRun`]), the submitter loop every
//!   system shares ([`submit_all`]), the wait for every job to be final, and the tables;
//! - `durable`: each system of the durable table: nmid (`jobs.fsync` always / interval,
//!   HTTP `POST /async/Echo`), gearmand with its SQLite queue (`SUBMIT_JOB_BG`), NATS
//!   JetStream (a work-queue stream, publishes awaiting their acks, a pull consumer);
//! - `streaming`: partials per second to one caller: our `call_stream` against NATS
//!   multi-reply.
//!
//! Everything the harness starts listens on 127.0.0.1, is killed by its PID when its guard
//! drops, and every loop is bounded in count and time.

pub mod durable;
pub mod parse;
pub mod streaming;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::markdown::{kilo, us};

/// The longest a submission may take before the run fails. gearmand at 64 submitters
/// answers most in about 2 ms but leaves a few waiting for seconds (over 30 s once, on a
/// busy 2-core machine): the table's `max` column shows it.
pub const SUBMIT_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest the jobs may take to be final once all are submitted.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(60);
/// How often the harness asks a system whether its jobs are all final.
pub const POLL: Duration = Duration::from_millis(50);

/// What one durable run measured: `jobs` submissions by `submitters`, completed by a pool
/// of 64 worker slots answering at once.
#[derive(Debug, Clone, Serialize)]
pub struct JobsRun {
    /// The system's id (`us-always`, `gearmand-sqlite`, `jetstream`).
    pub system: String,
    /// Submitters, each one submission at a time over a connection of its own.
    pub submitters: usize,
    /// Jobs submitted (and completed).
    pub jobs: u64,
    /// Jobs accepted per second: `jobs` over the time from the first submission to the last
    /// answer.
    pub submits_per_s: f64,
    /// Jobs final per second: `jobs` over the time from the first submission until the
    /// system holds none queued or running.
    pub completions_per_s: f64,
    /// Submission latency (sent to accepted), p50, in µs.
    pub submit_p50_us: f64,
    /// Submission latency, p99, in µs.
    pub submit_p99_us: f64,
    /// The slowest submission, in µs.
    pub submit_max_us: f64,
    /// CPU time (user + system) of the server process (nmid, gearmand, nats-server) from the
    /// first submission to the end, per 1000 jobs, in ms.
    pub server_cpu_ms_per_1k: f64,
    /// Why the run failed, if it did.
    pub error: Option<String>,
}

impl JobsRun {
    /// A failed run of `system` at `submitters`.
    pub fn failed(system: &str, submitters: usize, jobs: u64, error: String) -> Self {
        Self {
            system: system.to_owned(),
            submitters,
            jobs,
            submits_per_s: 0.0,
            completions_per_s: 0.0,
            submit_p50_us: 0.0,
            submit_p99_us: 0.0,
            submit_max_us: 0.0,
            server_cpu_ms_per_1k: 0.0,
            error: Some(error),
        }
    }
}

/// Jobs left to submit, shared by the submitters: each takes one before it submits it.
#[derive(Debug)]
pub struct Quota(AtomicU64);

impl Quota {
    /// `n` jobs to submit.
    pub fn new(n: u64) -> Arc<Self> {
        Arc::new(Self(AtomicU64::new(n)))
    }

    /// Takes one job; `false` once there is none left.
    pub fn take(&self) -> bool {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// A latency histogram in nanoseconds, 3 significant digits, up to a minute.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

/// Runs `submitters` submitters at once until `jobs` are submitted: `connect(i)` opens the
/// submitter's connection, `submit(conn)` submits one job on it and gives the connection
/// back once the system accepted the job. Returns when the first submission started, the
/// time from then to the last acceptance, and the submissions' latencies.
pub async fn submit_all<C, CF, S, SF>(
    submitters: usize,
    jobs: u64,
    connect: impl Fn(usize) -> CF,
    submit: S,
) -> anyhow::Result<(Instant, Duration, Histogram<u64>)>
where
    CF: Future<Output = anyhow::Result<C>>,
    S: Fn(C) -> SF + Clone + Send + 'static,
    SF: Future<Output = anyhow::Result<C>> + Send,
    C: Send + 'static,
{
    let mut conns = Vec::with_capacity(submitters);
    for i in 0..submitters {
        conns.push(connect(i).await?);
    }
    let quota = Quota::new(jobs);
    let started = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|conn| {
            let quota = quota.clone();
            let submit = submit.clone();
            tokio::spawn(async move {
                let mut hist = histogram();
                let mut conn = conn;
                while quota.take() {
                    let t0 = Instant::now();
                    conn = match tokio::time::timeout(SUBMIT_TIMEOUT, submit(conn)).await {
                        Ok(answer) => answer?,
                        Err(_) => bail!("a submission took over {SUBMIT_TIMEOUT:?}"),
                    };
                    hist.saturating_record(t0.elapsed().as_nanos() as u64);
                }
                anyhow::Ok(hist)
            })
        })
        .collect();
    let mut all = histogram();
    for task in tasks {
        all.add(task.await??)?;
    }
    Ok((started, started.elapsed(), all))
}

/// Waits until `done` (the worker's executions) reaches `jobs`, then until `all_final`
/// says the system holds none queued or running; the instant it did. Fails after
/// [`DRAIN_LIMIT`].
pub async fn wait_final<F, Fut>(
    done: &AtomicU64,
    jobs: u64,
    mut all_final: F,
) -> anyhow::Result<Instant>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let until = Instant::now() + DRAIN_LIMIT;
    while done.load(Ordering::Relaxed) < jobs {
        if Instant::now() > until {
            bail!(
                "only {} of {jobs} jobs executed within {DRAIN_LIMIT:?}",
                done.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    loop {
        if all_final().await? {
            return Ok(Instant::now());
        }
        if Instant::now() > until {
            bail!("jobs still queued or running {DRAIN_LIMIT:?} after the submissions");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The run of `system` at `submitters` from its timings.
pub fn judge(
    system: &str,
    submitters: usize,
    jobs: u64,
    submitted: Duration,
    completed: Duration,
    hist: &Histogram<u64>,
) -> JobsRun {
    let per_s = |d: Duration| jobs as f64 / d.as_secs_f64().max(1e-9);
    JobsRun {
        system: system.to_owned(),
        submitters,
        jobs,
        submits_per_s: per_s(submitted),
        completions_per_s: per_s(completed),
        submit_p50_us: hist.value_at_quantile(0.50) as f64 / 1000.0,
        submit_p99_us: hist.value_at_quantile(0.99) as f64 / 1000.0,
        submit_max_us: hist.max() as f64 / 1000.0,
        server_cpu_ms_per_1k: 0.0,
        error: None,
    }
}

/// The durable table: a row per system and submitter count, with us/peer ratios of
/// submissions and completions (us = the `always` row) at the same submitter count.
pub fn durable_table(runs: &[JobsRun], labels: &dyn Fn(&str) -> String) -> String {
    let mut out = String::from(
        "| system | submitters | submissions/s | completions/s | submit p50 | submit p99 | submit max | server CPU ms / 1k jobs | us (always) / it: submissions · completions |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for run in runs {
        if let Some(error) = &run.error {
            out.push_str(&format!(
                "| {} | {} | **failed** | | | | | | {} |\n",
                labels(&run.system),
                run.submitters,
                error.replace('|', "/")
            ));
            continue;
        }
        let us_row = runs.iter().find(|r| {
            r.system == durable::US_ALWAYS && r.submitters == run.submitters && r.error.is_none()
        });
        let ratio = match us_row {
            Some(u) if u.system != run.system => format!(
                "{:.2}x · {:.2}x",
                u.submits_per_s / run.submits_per_s,
                u.completions_per_s / run.completions_per_s
            ),
            _ => "-".to_owned(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} | {} |\n",
            labels(&run.system),
            run.submitters,
            kilo(run.submits_per_s),
            kilo(run.completions_per_s),
            us(run.submit_p50_us),
            us(run.submit_p99_us),
            us(run.submit_max_us),
            run.server_cpu_ms_per_1k,
            ratio
        ));
    }
    out
}
