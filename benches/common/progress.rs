//! What the harness says on stderr while it runs: a line per measured cell (system, payload,
//! level, repetition, and what it measured, or why it failed), and notes (a system starting,
//! a restart, the memory test).
//!
//! On a terminal an indicatif bar sits below those lines: cells done out of all, time spent,
//! time left, and the cell being measured, ticking through each window. When stderr is not
//! a terminal (CI logs, `2> file`) there is no bar, only the plain lines.

use std::fmt::Display;
use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::markdown::{kilo, us};
use super::report::{Run, RunKey};

/// How often the bar redraws (its spinner and clocks), so a 6 s window is visibly alive.
const TICK: Duration = Duration::from_millis(200);
/// The bar's layout.
const TEMPLATE: &str = "{spinner} [{elapsed_precise}] [{bar:30}] {pos}/{len} cells, about \
                        {eta} left: {msg}";

/// Progress through a run's cells.
#[derive(Debug)]
pub struct Progress {
    /// Cells the run will measure, repetitions counted.
    total: usize,
    /// Cells measured (or given up) so far.
    done: AtomicUsize,
    /// The bar, when stderr is a terminal.
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Progress through `total` cells.
    pub fn new(total: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(TEMPLATE) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.enable_steady_tick(TICK);
            bar
        });
        Self {
            total,
            done: AtomicUsize::new(0),
            bar,
        }
    }

    /// A note, `compare: {msg}`; on the bar too, until the next cell begins.
    pub fn note(&self, msg: impl Display) {
        let line = format!("compare: {msg}");
        if let Some(bar) = &self.bar {
            bar.set_message(line.clone());
        }
        self.say(line);
    }

    /// The cell `key` starts measuring.
    pub fn begin(&self, key: &RunKey) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("measuring {key}"));
        }
    }

    /// `run` is over: one line with its figures, or why it failed.
    pub fn cell_done(&self, run: &Run) {
        self.skip(1);
        self.say(self.line(run));
    }

    /// `n` cells will not be measured (their system did not start).
    pub fn skip(&self, n: usize) {
        self.done.fetch_add(n, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(n as u64);
        }
    }

    /// The run is over: the bar goes, the lines stay.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// A line above the bar, or a plain line.
    fn say(&self, line: String) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

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
