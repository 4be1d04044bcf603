//! The dispatcher's recent past for the dashboard's charts: every `history.interval_ms` the
//! call counters are read and the rates since the last reading kept (calls/s, error ratio,
//! p50/p99), overall and for the busiest `history.max_functions` functions of that interval,
//! in a ring of `history.samples` readings (15 minutes by default). Memory is bounded by
//! samples x functions, whatever callers do.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::metrics::{Metrics, UNKNOWN_FUNCTION_LABEL};
use crate::rates::{rates, CallTotals, CallsView, Rates};

/// The `[history]` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistorySettings {
    /// Time between two readings.
    pub interval: Duration,
    /// Readings kept.
    pub samples: usize,
    /// Functions kept per reading (the busiest).
    pub max_functions: usize,
}

/// One reading: the rates of the interval that ended then.
#[derive(Debug, Clone)]
struct Sample {
    at_unix_ms: u64,
    overall: Rates,
    functions: Vec<(String, Rates)>,
}

/// The recent readings.
#[derive(Debug)]
pub struct History {
    settings: HistorySettings,
    samples: VecDeque<Sample>,
    last: Option<(Instant, CallsView)>,
}

/// `GET /api/v1/history`: one series per measure, aligned with `times_unix_ms`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HistoryView {
    /// Time between readings, in milliseconds.
    pub interval_ms: u64,
    /// When each reading was taken (Unix milliseconds), oldest first.
    pub times_unix_ms: Vec<u64>,
    /// All functions together.
    pub overall: Series,
    /// The busiest functions, busiest first; `null` where a reading did not keep it.
    pub functions: Vec<FunctionSeries>,
}

/// A function's series.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FunctionSeries {
    /// The function.
    pub name: String,
    /// Its measures.
    #[serde(flatten)]
    pub series: Series,
}

/// Measures over time; `null` where unknown (no call answered, or not kept).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Series {
    /// Calls answered per second.
    pub calls_per_second: Vec<Option<f64>>,
    /// Share of calls answered with an error, 0 to 1.
    pub error_ratio: Vec<Option<f64>>,
    /// Median latency, milliseconds.
    pub p50_ms: Vec<Option<f64>>,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: Vec<Option<f64>>,
}

impl Series {
    fn push(&mut self, rates: Option<&Rates>) {
        self.calls_per_second
            .push(rates.map(|r| r.calls_per_second));
        self.error_ratio.push(rates.map(|r| r.error_ratio));
        self.p50_ms.push(rates.and_then(|r| r.p50_ms));
        self.p99_ms.push(rates.and_then(|r| r.p99_ms));
    }
}

impl History {
    /// An empty history.
    pub fn new(settings: HistorySettings) -> Self {
        Self {
            settings,
            samples: VecDeque::with_capacity(settings.samples),
            last: None,
        }
    }

    /// Takes the reading `view` made at `now` (`at_unix_ms` on the wall clock): the rates
    /// since the previous reading become a sample (the first reading is only a baseline).
    pub fn record(&mut self, now: Instant, at_unix_ms: u64, view: CallsView) {
        let Some((then, before)) = self.last.replace((now, view)) else {
            return;
        };
        let (_, after) = self.last.as_ref().expect("just set");
        let elapsed = now.saturating_duration_since(then);
        let overall = rates(
            &after.bounds,
            Some(&CallTotals::sum("", &before.functions)),
            &CallTotals::sum("", &after.functions),
            elapsed,
        );
        let mut functions: Vec<(String, Rates)> = (after.functions.iter())
            .filter(|f| f.function != UNKNOWN_FUNCTION_LABEL)
            .map(|f| {
                let previous = before.functions.iter().find(|b| b.function == f.function);
                (
                    f.function.clone(),
                    rates(&after.bounds, previous, f, elapsed),
                )
            })
            .filter(|(_, r)| r.calls_per_second > 0.0)
            .collect();
        functions.sort_by(|a, b| b.1.calls_per_second.total_cmp(&a.1.calls_per_second));
        functions.truncate(self.settings.max_functions);
        if self.samples.len() == self.settings.samples {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            at_unix_ms,
            overall,
            functions,
        });
    }

    /// The series the dashboard draws.
    pub fn view(&self) -> HistoryView {
        let mut overall = Series::default();
        let mut names: Vec<(String, f64)> = Vec::new();
        for sample in &self.samples {
            overall.push(Some(&sample.overall));
            for (name, rates) in &sample.functions {
                match names.iter_mut().find(|(n, _)| n == name) {
                    Some((_, calls)) => *calls += rates.calls_per_second,
                    None => names.push((name.clone(), rates.calls_per_second)),
                }
            }
        }
        names.sort_by(|a, b| b.1.total_cmp(&a.1));
        names.truncate(self.settings.max_functions);
        let functions = names
            .into_iter()
            .map(|(name, _)| {
                let mut series = Series::default();
                for sample in &self.samples {
                    let rates = sample.functions.iter().find(|(n, _)| *n == name);
                    series.push(rates.map(|(_, r)| r));
                }
                FunctionSeries { name, series }
            })
            .collect();
        HistoryView {
            interval_ms: self.settings.interval.as_millis() as u64,
            times_unix_ms: self.samples.iter().map(|s| s.at_unix_ms).collect(),
            overall,
            functions,
        }
    }
}

/// Reads `metrics` into `history` every interval, for as long as the task runs (the
/// dispatcher aborts it on shutdown).
pub async fn sample_every(history: Arc<Mutex<History>>, metrics: Arc<Metrics>) {
    let interval = history
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .settings
        .interval;
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let view = metrics.calls_view();
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(Instant::now(), at, view);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(calls: &[(&str, u64)]) -> CallsView {
        CallsView {
            bounds: vec![0.01, 0.1],
            functions: calls
                .iter()
                .map(|(name, n)| CallTotals {
                    function: (*name).to_owned(),
                    calls: *n,
                    errors: n / 10,
                    buckets: vec![*n, *n, *n],
                })
                .collect(),
        }
    }

    fn history(samples: usize, max_functions: usize) -> History {
        History::new(HistorySettings {
            interval: Duration::from_secs(1),
            samples,
            max_functions,
        })
    }

    /// The first reading is a baseline; later ones become samples of their interval's rates,
    /// overall and per function.
    #[test]
    fn readings_become_rates_overall_and_per_function() {
        let mut h = history(10, 5);
        let t = Instant::now();
        h.record(t, 1000, view(&[("A", 0), ("B", 0)]));
        h.record(
            t + Duration::from_secs(1),
            2000,
            view(&[("A", 100), ("B", 10)]),
        );
        let v = h.view();
        assert_eq!(v.times_unix_ms, [2000]);
        assert_eq!(v.overall.calls_per_second, [Some(110.0)]);
        assert_eq!(v.functions[0].name, "A");
        assert_eq!(v.functions[0].series.error_ratio, [Some(0.1)]);
        assert_eq!(v.functions[1].series.calls_per_second, [Some(10.0)]);
        assert_eq!(v.overall.p50_ms, [Some(5.0)]);
    }

    /// The ring keeps the last `samples` readings and the busiest `max_functions`.
    #[test]
    fn memory_is_bounded_by_samples_and_functions() {
        let mut h = history(3, 2);
        let t = Instant::now();
        for i in 0..10u64 {
            let calls: Vec<(String, u64)> =
                (0..5).map(|f| (format!("F{f}"), i * (f + 1))).collect();
            let calls: Vec<(&str, u64)> = calls.iter().map(|(n, c)| (n.as_str(), *c)).collect();
            h.record(t + Duration::from_secs(i), i, view(&calls));
        }
        let v = h.view();
        assert_eq!(v.times_unix_ms, [7, 8, 9]);
        let names: Vec<&str> = v.functions.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["F4", "F3"]);
    }
}
