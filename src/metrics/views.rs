//! The read side of the call counters: totals by outcome and each function's calls, errors
//! and latency buckets, for the admin API, the dashboard's history and `nmidctl top`.

use foldhash::{HashMap, HashMapExt};
use std::sync::atomic::Ordering;

use super::{CallCounts, Metrics, Outcome, DURATION_BUCKETS};

impl Metrics {
    /// Totals by outcome since start.
    pub fn read(&self) -> CallCounts {
        let by_outcome: Vec<(&'static str, u64)> = Outcome::ALL
            .iter()
            .map(|o| (o.as_str(), self.totals[*o as usize].load(Ordering::Relaxed)))
            .collect();
        let total = by_outcome.iter().map(|(_, n)| n).sum();
        let errors = (Outcome::ALL.iter().zip(&by_outcome))
            .filter(|(outcome, _)| outcome.is_error())
            .map(|(_, (_, n))| n)
            .sum();
        CallCounts {
            total,
            errors,
            by_outcome,
        }
    }

    /// Every function's cumulative calls, errors and latency buckets (`GET /api/v1/calls`,
    /// the dashboard's history, `nmidctl top`).
    pub fn calls_view(&self) -> crate::rates::CallsView {
        use prometheus::core::Collector;
        let mut by_function: HashMap<String, crate::rates::CallTotals> = HashMap::new();
        let label = |metric: &prometheus::proto::Metric, name: &str| {
            (metric.get_label().iter())
                .find(|l| l.name() == name)
                .map(|l| l.value().to_owned())
                .unwrap_or_default()
        };
        for family in self.call.calls.collect() {
            for metric in family.get_metric() {
                let function = label(metric, "function");
                let entry = by_function.entry(function.clone()).or_default();
                entry.function = function;
                let count = metric.get_counter().get_value() as u64;
                entry.calls += count;
                if Outcome::of_label(&label(metric, "outcome")).is_some_and(Outcome::is_error) {
                    entry.errors += count;
                }
            }
        }
        for family in self.call.duration.collect() {
            for metric in family.get_metric() {
                let histogram = metric.get_histogram();
                let mut buckets: Vec<u64> = (histogram.get_bucket().iter())
                    .map(|b| b.cumulative_count())
                    .collect();
                buckets.push(histogram.get_sample_count());
                if let Some(entry) = by_function.get_mut(&label(metric, "function")) {
                    entry.buckets = buckets;
                }
            }
        }
        let mut functions: Vec<_> = by_function.into_values().collect();
        functions.sort_by(|a, b| a.function.cmp(&b.function));
        crate::rates::CallsView {
            bounds: DURATION_BUCKETS.to_vec(),
            functions,
        }
    }
}
