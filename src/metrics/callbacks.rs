//! The metrics of background jobs' callbacks: `nmid_job_callbacks_total{outcome}`, one
//! counter per [`CallbackEvent`], all present from the start at 0 (so an alert on
//! `gave_up` has a series to watch before the first failure).

use prometheus::IntCounter;

use super::{Metrics, Registrar};

/// What happened to a callback, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackEvent {
    /// A receiver answered 2xx.
    Delivered,
    /// An attempt failed and another is scheduled (one per retry, not per callback).
    Retried,
    /// The last attempt failed, or the receiver refused it: no more attempts.
    GaveUp,
    /// A callback URL was refused at submit (not allowed, malformed).
    Refused,
}

impl CallbackEvent {
    /// Every event, in counter order.
    pub const ALL: [CallbackEvent; 4] = [
        CallbackEvent::Delivered,
        CallbackEvent::Retried,
        CallbackEvent::GaveUp,
        CallbackEvent::Refused,
    ];

    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackEvent::Delivered => "delivered",
            CallbackEvent::Retried => "retried",
            CallbackEvent::GaveUp => "gave_up",
            CallbackEvent::Refused => "refused",
        }
    }
}

/// `nmid_job_callbacks_total`, one handle per outcome.
pub(super) struct CallbackMetrics {
    counters: [IntCounter; CallbackEvent::ALL.len()],
}

impl CallbackMetrics {
    pub(super) fn new(add: &Registrar) -> Self {
        let vec = add.counter_vec(
            "nmid_job_callbacks_total",
            "Callbacks of background jobs, by outcome: delivered (2xx), retried (an attempt failed, another follows), gave_up (no more attempts), refused (URL refused at submit).",
            &["outcome"],
        );
        Self {
            counters: CallbackEvent::ALL.map(|event| vec.with_label_values(&[event.as_str()])),
        }
    }
}

impl Metrics {
    /// Counts one callback event in `nmid_job_callbacks_total`.
    pub fn record_callback(&self, event: CallbackEvent) {
        self.callbacks.counters[event as usize].inc();
    }

    /// The count of `event` so far.
    pub fn callback_count(&self, event: CallbackEvent) -> u64 {
        self.callbacks.counters[event as usize].get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::RegistrySnapshot;

    /// Every outcome is exported from the start, at 0, and counts up on its own.
    #[test]
    fn every_callback_outcome_is_exported_and_counted() {
        let metrics = Metrics::new();
        let text = metrics.render(&RegistrySnapshot::default());
        for event in CallbackEvent::ALL {
            let line = format!(
                "nmid_job_callbacks_total{{outcome=\"{}\"}} 0",
                event.as_str()
            );
            assert!(text.contains(&line), "{line} missing from\n{text}");
        }
        metrics.record_callback(CallbackEvent::Retried);
        metrics.record_callback(CallbackEvent::Retried);
        metrics.record_callback(CallbackEvent::GaveUp);
        let text = metrics.render(&RegistrySnapshot::default());
        assert!(text.contains("nmid_job_callbacks_total{outcome=\"retried\"} 2"));
        assert!(text.contains("nmid_job_callbacks_total{outcome=\"gave_up\"} 1"));
        assert_eq!(metrics.callback_count(CallbackEvent::Delivered), 0);
    }
}
