//! The load generator's bookkeeping: the phase of its closed loop (warm-up, measured window,
//! done), counts of answered and failed calls, latencies in an hdrhistogram, and the two
//! markers the harness reads on stdout: `START` when the window opens and `RESULT {json}`
//! (a [`LoadResult`]) as soon as it closes.
//!
//! The window closes at its end time, after `max_calls` completions in it, or after twice
//! that many calls issued in all, whichever comes first.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies are recorded in nanoseconds up to this (longer ones count as this); calls time
/// out after 10 s, well below it.
const MAX_LATENCY_NS: u64 = 60_000_000_000;
/// Significant digits the histogram keeps: 0.1% resolution at every magnitude.
const LATENCY_SIGFIG: u8 = 3;

/// What one measured window gave; printed as `RESULT {json}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadResult {
    /// Calls answered correctly inside the window.
    pub calls: u64,
    /// Calls that failed (error reply, wrong answer, timeout) inside the window.
    pub errors: u64,
    /// Failed calls during warm-up (not in `errors`).
    pub warmup_errors: u64,
    /// Length of the window, seconds.
    pub duration_s: f64,
    /// Latency percentiles of the answered calls, microseconds.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// The first error of the measured window, or else of the warm-up, if any.
    pub first_error: Option<String>,
    /// True when the loop stopped completing calls and was cut off.
    pub stalled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Warmup,
    Measure,
    Done,
}

/// The closed loop's bookkeeping: phase, counts, latencies, and the two markers.
#[derive(Debug)]
pub struct Recorder {
    warm_end: Instant,
    end: Instant,
    max_calls: u64,
    max_issued: u64,
    issued: u64,
    phase: Phase,
    started: Option<Instant>,
    hist: Histogram<u64>,
    calls: u64,
    errors: u64,
    warmup_errors: u64,
    first_error: Option<String>,
}

impl Recorder {
    /// A recorder whose warm-up starts now.
    pub fn new(warmup: Duration, duration: Duration, max_calls: u64) -> Self {
        let now = Instant::now();
        Self {
            warm_end: now + warmup,
            end: now + warmup + duration,
            max_calls,
            // Warm-up included; a second bound on count besides the window's.
            max_issued: max_calls.saturating_mul(2),
            issued: 0,
            phase: Phase::Warmup,
            started: None,
            hist: Histogram::new_with_bounds(1, MAX_LATENCY_NS, LATENCY_SIGFIG)
                .expect("valid histogram bounds"),
            calls: 0,
            errors: 0,
            warmup_errors: 0,
            first_error: None,
        }
    }

    /// A call started at `t0` ended with `outcome`; returns whether to start another.
    pub fn complete(&mut self, t0: Instant, outcome: Result<(), String>) -> bool {
        let now = Instant::now();
        match self.phase {
            Phase::Warmup => {
                if outcome.is_err() {
                    self.warmup_errors += 1;
                    if self.first_error.is_none() {
                        self.first_error = outcome.err().map(|e| format!("warm-up: {e}"));
                    }
                }
                if now >= self.warm_end {
                    self.begin(now);
                }
            }
            Phase::Measure => {
                match outcome {
                    Ok(()) => {
                        self.calls += 1;
                        let ns = u64::try_from((now - t0).as_nanos()).unwrap_or(u64::MAX);
                        self.hist.saturating_record(ns.max(1));
                    }
                    Err(e) => {
                        self.errors += 1;
                        // The window's first error says more than a warm-up one.
                        if self.errors == 1 {
                            self.first_error = Some(e);
                        }
                    }
                }
                if now >= self.end || self.calls + self.errors >= self.max_calls {
                    self.finish(now, false);
                }
            }
            Phase::Done => {}
        }
        self.issued += 1;
        if self.issued >= self.max_issued {
            self.finish(now, false);
        }
        self.phase != Phase::Done
    }

    /// When the window is due to end.
    pub fn end(&self) -> Instant {
        self.end
    }

    /// Whether the window is over (the result is printed).
    pub fn done(&self) -> bool {
        self.phase == Phase::Done
    }

    fn begin(&mut self, now: Instant) {
        self.phase = Phase::Measure;
        self.started = Some(now);
        println!("START");
    }

    /// The latency at quantile `q` (0..=1) of the answered calls, in microseconds; 0 when
    /// none was answered.
    fn quantile_us(&self, q: f64) -> f64 {
        match self.hist.is_empty() {
            true => 0.0,
            false => self.hist.value_at_quantile(q) as f64 / 1000.0,
        }
    }

    /// Ends the window now and prints the result (once).
    pub fn finish(&mut self, now: Instant, stalled: bool) {
        if self.phase == Phase::Done {
            return;
        }
        if self.phase == Phase::Warmup {
            self.begin(now);
        }
        self.phase = Phase::Done;
        let started = self.started.unwrap_or(now);
        let result = LoadResult {
            calls: self.calls,
            errors: self.errors,
            warmup_errors: self.warmup_errors,
            duration_s: (now - started).as_secs_f64(),
            p50_us: self.quantile_us(0.50),
            p99_us: self.quantile_us(0.99),
            p999_us: self.quantile_us(0.999),
            first_error: self.first_error.clone(),
            stalled,
        };
        println!(
            "RESULT {}",
            serde_json::to_string(&result).expect("result serializes")
        );
    }
}
