//! The background jobs' series, set at scrape time from the gauges their actor refreshes
//! (nothing is counted per call): queued jobs by function and priority, running ones,
//! stored ones by final state, the oldest due job's age, the store's bytes, and attempts.

use std::sync::{Arc, Mutex};

use prometheus::{Gauge, IntCounter, IntGauge, IntGaugeVec, Opts};

use super::series::Registrar;
use super::Labels;
use crate::jobs::JobsGauges;

pub(super) struct JobsMetrics {
    queued: IntGaugeVec,
    running: IntGauge,
    stored: IntGaugeVec,
    oldest: Gauge,
    bytes: IntGauge,
    attempts: IntCounter,
    /// The background actor's gauges, once it runs.
    source: Mutex<Option<Arc<Mutex<JobsGauges>>>>,
}

impl JobsMetrics {
    pub(super) fn new(add: &Registrar) -> Self {
        let queued = add.metric(
            IntGaugeVec::new(
                Opts::new(
                    "nmid_jobs_queued",
                    "Background jobs queued (waiting for their time, a slot or a worker), by function and priority.",
                ),
                &["function", "priority"],
            )
            .expect("valid metric"),
        );
        Self {
            queued,
            running: add.gauge("nmid_jobs_running", "Background jobs running on a worker."),
            stored: add.gauge_vec(
                "nmid_jobs_finished",
                "Final background jobs kept for their result TTL, by state.",
                "state",
            ),
            oldest: add.metric(
                Gauge::new(
                    "nmid_jobs_oldest_queued_seconds",
                    "How long the oldest due background job has waited to start (0: none waits).",
                )
                .expect("valid metric"),
            ),
            bytes: add.gauge(
                "nmid_jobs_store_bytes",
                "Bytes of background jobs held (params, metadata, results), against jobs.max_stored_bytes.",
            ),
            attempts: add.counter(
                "nmid_jobs_attempts_total",
                "Attempts of background jobs started (more than one per job: retries, restarts).",
            ),
            source: Mutex::new(None),
        }
    }

    /// Reads `gauges` at each scrape from now on.
    pub(super) fn watch(&self, gauges: Arc<Mutex<JobsGauges>>) {
        *self.source.lock().unwrap_or_else(|e| e.into_inner()) = Some(gauges);
    }

    /// Sets the series from the gauges, function names through `labels`.
    pub(super) fn refresh(&self, labels: &Labels) {
        let source = self.source.lock().unwrap_or_else(|e| e.into_inner());
        let Some(source) = source.as_ref() else {
            return;
        };
        let gauges = source.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.queued.reset();
        for ((function, priority), count) in &gauges.queued {
            // Caller-chosen names make no label: a function no worker serves is `_unknown`.
            let name = labels.existing_or(function, super::UNKNOWN_FUNCTION_LABEL);
            self.queued
                .with_label_values(&[name, priority])
                .add(*count as i64);
        }
        self.running.set(gauges.running as i64);
        self.stored.reset();
        for (state, count) in &gauges.finished {
            self.stored.with_label_values(&[state]).set(*count as i64);
        }
        self.oldest.set(gauges.oldest_queued_s);
        self.bytes.set(gauges.bytes as i64);
        let counted = self.attempts.get();
        self.attempts
            .inc_by(gauges.attempts.saturating_sub(counted));
    }
}
