//! Rates between two readings of cumulative call counters: calls per second, error ratio,
//! and latency percentiles from histogram buckets (interpolated within a bucket, as
//! Prometheus's `histogram_quantile` does). Plain data, no I/O: the dispatcher's history
//! (the dashboard's charts) and `nmidctl top` both compute with it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One function's counters since the dispatcher started, as `GET /api/v1/calls` serves them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallTotals {
    /// The function (`_unknown` for calls of functions nobody served).
    pub function: String,
    /// Calls answered, any outcome.
    pub calls: u64,
    /// Calls that count as errors: every outcome but `ok` and `client_error`.
    pub errors: u64,
    /// Answered calls by latency: the cumulative count at or below each bound of
    /// [`CallsView::bounds`], then the count of all of them (the `+Inf` bucket).
    pub buckets: Vec<u64>,
}

/// `GET /api/v1/calls`: every function's counters and the latency bucket bounds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallsView {
    /// Upper bounds of the latency buckets, in seconds (the last bucket, `+Inf`, is implied).
    pub bounds: Vec<f64>,
    /// Each function's counters.
    pub functions: Vec<CallTotals>,
}

/// What happened between two readings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// Calls answered per second.
    pub calls_per_second: f64,
    /// Share of those answered with an error (0 to 1); 0 without calls.
    pub error_ratio: f64,
    /// Median latency, in milliseconds, when any call was answered.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency, in milliseconds, when any call was answered.
    pub p99_ms: Option<f64>,
}

impl CallTotals {
    /// The sum of `all` under the name `function` (the dashboard's "overall").
    pub fn sum<'a>(function: &str, all: impl IntoIterator<Item = &'a CallTotals>) -> Self {
        let mut total = CallTotals {
            function: function.to_owned(),
            ..Default::default()
        };
        for one in all {
            total.calls += one.calls;
            total.errors += one.errors;
            if total.buckets.len() < one.buckets.len() {
                total.buckets.resize(one.buckets.len(), 0);
            }
            for (sum, n) in total.buckets.iter_mut().zip(&one.buckets) {
                *sum += n;
            }
        }
        total
    }
}

/// The rates from `before` (none: since start) to `after`, `elapsed` apart. Counters that
/// went down (a restarted dispatcher) count from zero.
pub fn rates(
    bounds: &[f64],
    before: Option<&CallTotals>,
    after: &CallTotals,
    elapsed: Duration,
) -> Rates {
    let empty = CallTotals::default();
    let before = before.unwrap_or(&empty);
    let reset = after.calls < before.calls;
    let base = if reset { &empty } else { before };
    let calls = after.calls - base.calls;
    let errors = after.errors.saturating_sub(base.errors);
    let buckets: Vec<u64> = (after.buckets.iter().enumerate())
        .map(|(i, n)| n.saturating_sub(base.buckets.get(i).copied().unwrap_or(0)))
        .collect();
    let seconds = elapsed.as_secs_f64();
    Rates {
        calls_per_second: if seconds > 0.0 {
            calls as f64 / seconds
        } else {
            0.0
        },
        error_ratio: if calls > 0 {
            errors as f64 / calls as f64
        } else {
            0.0
        },
        p50_ms: quantile(0.5, bounds, &buckets).map(|s| s * 1000.0),
        p99_ms: quantile(0.99, bounds, &buckets).map(|s| s * 1000.0),
    }
}

/// The `q` quantile of a histogram of cumulative `counts` (one per bound, then the total),
/// interpolated linearly within its bucket; `None` without observations. In the `+Inf`
/// bucket it is the highest finite bound, as Prometheus answers.
pub fn quantile(q: f64, bounds: &[f64], counts: &[u64]) -> Option<f64> {
    let total = *counts.last()?;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut lower_bound = 0.0;
    let mut lower_count = 0u64;
    for (i, &count) in counts.iter().enumerate() {
        let Some(&upper) = bounds.get(i) else {
            return bounds.last().copied();
        };
        if count as f64 >= rank {
            let in_bucket = (count - lower_count) as f64;
            if in_bucket == 0.0 {
                return Some(upper);
            }
            return Some(
                lower_bound + (upper - lower_bound) * (rank - lower_count as f64) / in_bucket,
            );
        }
        lower_bound = upper;
        lower_count = count;
    }
    bounds.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: [f64; 3] = [0.01, 0.1, 1.0];

    fn totals(calls: u64, errors: u64, buckets: [u64; 4]) -> CallTotals {
        CallTotals {
            function: "F".to_owned(),
            calls,
            errors,
            buckets: buckets.to_vec(),
        }
    }

    /// Calls/s and the error ratio come from the differences over the elapsed time.
    #[test]
    fn rates_are_differences_over_time() {
        let before = totals(100, 10, [50, 90, 100, 100]);
        let after = totals(300, 30, [150, 290, 300, 300]);
        let r = rates(&BOUNDS, Some(&before), &after, Duration::from_secs(2));
        assert_eq!(r.calls_per_second, 100.0);
        assert_eq!(r.error_ratio, 0.1);
        // 200 new observations: 100 under 10 ms, 100 between 10 and 100 ms.
        assert_eq!(r.p50_ms, Some(10.0));
        assert!((r.p99_ms.unwrap() - 98.2).abs() < 1e-9, "{r:?}");
    }

    /// No calls: zero rates, no percentiles; a counter reset counts from zero.
    #[test]
    fn idle_and_reset_counters() {
        let same = totals(5, 0, [5, 5, 5, 5]);
        let r = rates(&BOUNDS, Some(&same), &same, Duration::from_secs(1));
        assert_eq!(
            (r.calls_per_second, r.error_ratio, r.p99_ms),
            (0.0, 0.0, None)
        );
        let restarted = totals(2, 1, [0, 2, 2, 2]);
        let r = rates(&BOUNDS, Some(&same), &restarted, Duration::from_secs(1));
        assert_eq!((r.calls_per_second, r.error_ratio), (2.0, 0.5));
    }

    /// Percentiles in the `+Inf` bucket are the highest bound; interpolation is linear.
    #[test]
    fn quantiles_interpolate_within_buckets() {
        assert_eq!(quantile(0.5, &BOUNDS, &[0, 0, 0, 4]), Some(1.0));
        assert_eq!(quantile(0.5, &BOUNDS, &[0, 0, 4, 4]), Some(0.55));
        assert_eq!(quantile(0.5, &BOUNDS, &[]), None);
        assert_eq!(quantile(0.5, &BOUNDS, &[0, 0, 0, 0]), None);
    }

    /// The overall totals are the functions' sums, bucket by bucket.
    #[test]
    fn sums_add_bucket_by_bucket() {
        let all = [totals(1, 0, [1, 1, 1, 1]), totals(2, 1, [0, 1, 2, 2])];
        assert_eq!(CallTotals::sum("all", &all).buckets, [1, 2, 3, 3]);
        assert_eq!(CallTotals::sum("all", &all).errors, 1);
    }
}
