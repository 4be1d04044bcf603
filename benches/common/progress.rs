//! What the harness says on stderr while it runs: a line per measured cell (system, payload,
//! level, repetition, and what it measured), and notes (a system starting, a restart).

use std::fmt::Display;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::markdown::{kilo, us};
use super::report::{Run, RunKey};

/// Progress through a run's cells.
#[derive(Debug)]
pub struct Progress {
    /// Cells the run will measure, repetitions counted.
    total: usize,
    /// Cells measured (or given up) so far.
    done: AtomicUsize,
}

impl Progress {
    /// Progress through `total` cells.
    pub fn new(total: usize) -> Self {
        Self {
            total,
            done: AtomicUsize::new(0),
        }
    }

    /// A note: `compare: {msg}`.
    pub fn note(&self, msg: impl Display) {
        eprintln!("compare: {msg}");
    }

    /// The cell `key` starts measuring.
    pub fn begin(&self, key: &RunKey) {
        let _ = key;
    }

    /// `run` is over: one line with its figures, or why it failed.
    pub fn cell_done(&self, run: &Run) {
        self.skip(1);
        eprintln!("{}", self.line(run));
    }

    /// `n` cells will not be measured (their system did not start).
    pub fn skip(&self, n: usize) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// The run is over.
    pub fn finish(&self) {}

    fn line(&self, run: &Run) -> String {
        let head = format!(
            "[{}/{}] {}",
            self.done.load(Ordering::Relaxed),
            self.total,
            run.key
        );
        let figures = run.result.as_ref().map(|r| {
            format!(
                "{} calls/s, p50 {}, p99 {}, p99.9 {}, errors {}, CPU {:.1} ms/1k calls",
                kilo(run.calls_per_s),
                us(r.p50_us),
                us(r.p99_us),
                us(r.p999_us),
                r.errors,
                run.cpu_ms_per_1k().get("total").copied().unwrap_or(0.0)
            )
        });
        match (figures, &run.error) {
            (Some(figures), None) => format!("{head}: {figures}"),
            (Some(figures), Some(e)) => format!("{head}: FAILED: {e} ({figures})"),
            (None, e) => format!("{head}: FAILED: {}", e.as_deref().unwrap_or("?")),
        }
    }
}
