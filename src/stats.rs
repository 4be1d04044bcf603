//! Call counters by outcome: lock-free (one relaxed atomic add per call), shared by every
//! front end, read by the admin API and the dashboard.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::actors::{CallError, JobOutcome};

/// How a call ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The worker answered.
    Ok,
    /// The worker reported its function failed.
    WorkerError,
    /// No worker (or no such function).
    NoWorker,
    /// Refused for load.
    RateLimited,
    /// Deadline passed.
    Timeout,
    /// The worker was lost.
    WorkerLost,
    /// Empty function name or params, or an unreadable HTTP body.
    BadRequest,
    /// Refused during shutdown.
    ShuttingDown,
}

impl Outcome {
    /// Every outcome, in counter order.
    pub const ALL: [Outcome; 8] = [
        Outcome::Ok,
        Outcome::WorkerError,
        Outcome::NoWorker,
        Outcome::RateLimited,
        Outcome::Timeout,
        Outcome::WorkerLost,
        Outcome::BadRequest,
        Outcome::ShuttingDown,
    ];

    /// The outcome's label, as the admin API and metrics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::WorkerError => "worker_error",
            Outcome::NoWorker => "cant_do",
            Outcome::RateLimited => "rate_limited",
            Outcome::Timeout => "timeout",
            Outcome::WorkerLost => "worker_lost",
            Outcome::BadRequest => "bad_request",
            Outcome::ShuttingDown => "shutting_down",
        }
    }

    /// The outcome of a job.
    pub fn of(outcome: &JobOutcome) -> Self {
        match outcome {
            JobOutcome::Done(_) => Outcome::Ok,
            JobOutcome::WorkerFailed(_) => Outcome::WorkerError,
            JobOutcome::Failed(error) => Self::of_error(*error),
        }
    }

    /// The outcome of a call that failed with `error`.
    pub fn of_error(error: CallError) -> Self {
        match error {
            CallError::BadRequest => Outcome::BadRequest,
            CallError::NoWorker | CallError::UnknownFunction => Outcome::NoWorker,
            CallError::RateLimited => Outcome::RateLimited,
            CallError::Timeout => Outcome::Timeout,
            CallError::WorkerLost => Outcome::WorkerLost,
            CallError::ShuttingDown => Outcome::ShuttingDown,
        }
    }
}

/// Calls answered, by outcome, since start.
#[derive(Debug, Default)]
pub struct CallStats {
    counts: [AtomicU64; Outcome::ALL.len()],
}

/// A reading of [`CallStats`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CallCounts {
    /// Every call answered.
    pub total: u64,
    /// Calls answered with anything but a result.
    pub errors: u64,
    /// Counts by outcome label.
    pub by_outcome: Vec<(&'static str, u64)>,
}

impl CallStats {
    /// Counts one call.
    pub fn record(&self, outcome: Outcome) {
        self.counts[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn read(&self) -> CallCounts {
        let by_outcome: Vec<(&'static str, u64)> = Outcome::ALL
            .iter()
            .map(|o| (o.as_str(), self.counts[*o as usize].load(Ordering::Relaxed)))
            .collect();
        let total = by_outcome.iter().map(|(_, n)| n).sum();
        let ok = by_outcome[Outcome::Ok as usize].1;
        CallCounts {
            total,
            errors: total - ok,
            by_outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts add up by outcome, and errors are everything but ok.
    #[test]
    fn counts_add_up_by_outcome() {
        let stats = CallStats::default();
        stats.record(Outcome::Ok);
        stats.record(Outcome::Ok);
        stats.record(Outcome::Timeout);
        let counts = stats.read();
        assert_eq!(counts.total, 3);
        assert_eq!(counts.errors, 1);
        assert!(counts.by_outcome.contains(&("timeout", 1)));
        assert!(counts.by_outcome.contains(&("ok", 2)));
    }
}
