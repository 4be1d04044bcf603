//! `nmidctl bench FUNC -c N -d S`: N calls in flight on one (pipelined) connection for S,
//! with a progress bar on a terminal, then calls/s and a latency summary (HdrHistogram), as
//! `nats bench` prints. Bounded by the duration and, with `-n`, a count of calls. Any failed
//! call makes the exit status non-zero (the first failure's); a caller the dispatcher
//! refuses backs off rather than hammer it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::call::{connect, params_of};
use super::cli::{BenchArgs, Cli};
use super::CtlError;
use crate::client::{CallOptions, Client};
use crate::retstruct::RetStruct;

/// Latencies recorded, in microseconds: 1 µs to 10 minutes, 3 significant figures.
const MAX_LATENCY_US: u64 = 600_000_000;
/// How often the progress bar is redrawn.
const PROGRESS_TICK: Duration = Duration::from_millis(200);
/// A refused caller's first pause; each refusal in a row doubles it, up to `--max-backoff`.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);

/// What a run measured; printed as text or, with `--json`, as this.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// The function loaded.
    pub function: String,
    /// Calls in flight.
    pub concurrency: u32,
    /// How long the run took, in seconds.
    pub seconds: f64,
    /// Calls answered with a result (RetStruct `Code` 0, or no RetStruct).
    pub ok: u64,
    /// Calls that failed, by kind.
    pub errors: BTreeMap<String, u64>,
    /// Successful calls per second.
    pub calls_per_second: f64,
    /// Latency percentiles of successful calls, in milliseconds.
    pub latency_ms: Latency,
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest.
    pub max: f64,
}

/// What every caller task adds to.
struct Tally {
    latencies: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    first_error: Option<CtlError>,
    started: u64,
    /// An error no retry fixes (no worker, denied, a bad request): every caller stops.
    fatal: Option<CtlError>,
}

pub(super) async fn bench(cli: &Cli, args: &BenchArgs) -> Result<(), CtlError> {
    let (params, params_type) = params_of(Some(&args.params), None)?;
    let client = connect(cli, args.timeout).await?;
    let tally = Rc::new(RefCell::new(Tally {
        latencies: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds"),
        ok: 0,
        errors: BTreeMap::new(),
        first_error: None,
        started: 0,
        fatal: None,
    }));
    let progress = progress_bar(args.duration);
    let started = Instant::now();
    let end = started + args.duration;
    let callers = (0..args.concurrency).map(|_| {
        let (client, tally, params) = (client.clone(), tally.clone(), params.clone());
        let options = CallOptions::default()
            .timeout(args.timeout)
            .params_type(params_type);
        caller(client, tally, args, params, options, end)
    });
    let run = futures_util::future::join_all(callers);
    tokio::pin!(run);
    let mut ticks = tokio::time::interval(PROGRESS_TICK);
    loop {
        tokio::select! {
            _ = &mut run => break,
            _ = ticks.tick() => {
                let t = tally.borrow();
                let elapsed = started.elapsed().as_secs_f64();
                progress.set_position(started.elapsed().as_millis().min(args.duration.as_millis()) as u64);
                progress.set_message(format!(
                    "{} ok, {} failed, {:.0} calls/s",
                    t.ok,
                    t.errors.values().sum::<u64>(),
                    t.ok as f64 / elapsed.max(1e-9)
                ));
            }
        }
    }
    progress.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let mut tally = Rc::try_unwrap(tally)
        .ok()
        .expect("every caller is done")
        .into_inner();
    let summary = summarize(args, seconds, &tally);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        );
    } else {
        print_summary(&summary);
    }
    // Any failure fails the run, with the status of the first (the summary counts them all).
    match tally.fatal.take().or_else(|| tally.first_error.take()) {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// The pause before a caller's next call: none after an answer; after a refusal or an
/// unreachable dispatcher, `previous` doubled (from [`FIRST_BACKOFF`]) up to `max`.
fn backoff(previous: Duration, refused: bool, max: Duration) -> Duration {
    match refused {
        false => Duration::ZERO,
        true => (previous * 2).clamp(FIRST_BACKOFF, max.max(FIRST_BACKOFF)),
    }
}

/// An error that the next call would meet too: the run stops at once with it (and its exit
/// status) instead of repeating it for the whole duration.
fn is_fatal(err: &CtlError) -> bool {
    matches!(
        err,
        CtlError::NoWorker(_) | CtlError::Denied(_) | CtlError::Usage(_)
    )
}

/// One caller: calls back to back until the end (or the call budget is spent).
async fn caller(
    client: Client,
    tally: Rc<RefCell<Tally>>,
    args: &BenchArgs,
    params: bytes::Bytes,
    options: CallOptions,
    end: Instant,
) {
    let mut pause = Duration::ZERO;
    loop {
        {
            let mut t = tally.borrow_mut();
            let spent = args.max_calls.is_some_and(|max| t.started >= max);
            if Instant::now() >= end || spent || t.fatal.is_some() {
                return;
            }
            t.started += 1;
        }
        let sent = Instant::now();
        let result = client
            .call_with(&args.function, params.clone(), options.clone())
            .await;
        let elapsed = sent.elapsed();
        let failure = match result {
            Ok(ret) => match RetStruct::decode(&ret) {
                Ok(ret) if ret.code != 0 => Some(CtlError::Function {
                    code: ret.code,
                    message: ret.msg,
                }),
                _ => None,
            },
            Err(err) => Some(CtlError::of_call(&args.function, err)),
        };
        let refused = {
            let mut t = tally.borrow_mut();
            match failure {
                None => {
                    t.ok += 1;
                    let us = (elapsed.as_micros() as u64).clamp(1, MAX_LATENCY_US);
                    let _ = t.latencies.record(us);
                    false
                }
                Some(err) => {
                    *t.errors.entry(kind_of(&err)).or_default() += 1;
                    let refused = matches!(err, CtlError::Refused(_) | CtlError::Unreachable(_));
                    if is_fatal(&err) {
                        t.fatal.get_or_insert(err);
                    } else {
                        t.first_error.get_or_insert(err);
                    }
                    refused
                }
            }
        };
        // A refusal (or a dispatcher down) comes back at once: calling again at once would
        // only add to the load that made it refuse.
        pause = backoff(pause, refused, args.max_backoff);
        let left = end.saturating_duration_since(Instant::now());
        if !pause.is_zero() {
            tokio::time::sleep(pause.min(left)).await;
        }
    }
}

fn kind_of(err: &CtlError) -> String {
    match err {
        CtlError::Function { code, .. } => format!("function error (code {code})"),
        CtlError::Worker(_) => "worker error".to_owned(),
        CtlError::Unreachable(_) => "unreachable".to_owned(),
        CtlError::NoWorker(_) => "no worker".to_owned(),
        CtlError::Timeout => "timeout".to_owned(),
        CtlError::Refused(m) => format!("refused ({m})"),
        CtlError::WorkerLost => "worker lost".to_owned(),
        other => other.to_string(),
    }
}

fn summarize(args: &BenchArgs, seconds: f64, tally: &Tally) -> Summary {
    let ms = |us: u64| us as f64 / 1000.0;
    let h = &tally.latencies;
    Summary {
        function: args.function.clone(),
        concurrency: args.concurrency,
        seconds,
        ok: tally.ok,
        errors: tally.errors.clone(),
        calls_per_second: tally.ok as f64 / seconds.max(1e-9),
        latency_ms: Latency {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        },
    }
}

fn print_summary(s: &Summary) {
    let failed: u64 = s.errors.values().sum();
    println!(
        "bench {}: {} in flight for {:.1} s",
        s.function, s.concurrency, s.seconds
    );
    println!("calls       {} ok, {failed} failed", s.ok);
    println!("throughput  {:.1} calls/s", s.calls_per_second);
    let l = &s.latency_ms;
    println!(
        "latency ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        l.p50, l.p90, l.p99, l.p999, l.max
    );
    for (kind, n) in &s.errors {
        println!("error       {n} x {kind}");
    }
}

/// A bar over the run's duration on stderr; drawn only when stderr is a terminal.
fn progress_bar(duration: Duration) -> ProgressBar {
    let bar = ProgressBar::new(duration.as_millis() as u64);
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {elapsed:>4} {msg}") {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Refusals in a row double the pause from 10 ms up to the maximum; an answer ends it.
    #[test]
    fn refused_callers_back_off_up_to_the_maximum() {
        let max = Duration::from_millis(100);
        let mut pause = Duration::ZERO;
        let mut pauses = Vec::new();
        for _ in 0..6 {
            pause = backoff(pause, true, max);
            pauses.push(pause.as_millis());
        }
        assert_eq!(pauses, [10, 20, 40, 80, 100, 100]);
        assert_eq!(backoff(pause, false, max), Duration::ZERO);
    }
}
