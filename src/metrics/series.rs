//! The series of one dispatcher's [`Metrics`](super::Metrics), in three groups made in one
//! registry by a [`Registrar`]: calls ([`CallSeries`]), the registry's state read at scrape
//! time ([`StateGauges`]), and what peers and requests did ([`PeerCounters`]).

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry as PromRegistry,
};

use super::{Leniency, Limit, Refusal, Role, DURATION_BUCKETS};

/// Creates metrics and registers them in one registry.
pub(super) struct Registrar<'a>(pub(super) &'a PromRegistry);

impl Registrar<'_> {
    /// Registers `metric` and returns it.
    pub(super) fn metric<M: prometheus::core::Collector + Clone + 'static>(&self, metric: M) -> M {
        (self.0.register(Box::new(metric.clone()))).expect("metric names are unique");
        metric
    }

    pub(super) fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.metric(IntCounter::new(name, help).expect("valid metric"))
    }

    pub(super) fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.metric(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    pub(super) fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.metric(IntGauge::new(name, help).expect("valid metric"))
    }

    pub(super) fn gauge_vec(&self, name: &str, help: &str, label: &str) -> IntGaugeVec {
        self.metric(IntGaugeVec::new(Opts::new(name, help), &[label]).expect("valid metric"))
    }
}

/// Calls by function and outcome, and the durations of the answered ones.
pub(super) struct CallSeries {
    /// `nmid_calls_total{function, outcome}`.
    pub(super) calls: IntCounterVec,
    /// `nmid_call_duration_seconds{function}`.
    pub(super) duration: HistogramVec,
}

impl CallSeries {
    pub(super) fn new(add: &Registrar) -> Self {
        let calls = add.counter_vec(
            "nmid_calls_total",
            "Calls answered, by function and outcome.",
            &["function", "outcome"],
        );
        let duration = add.metric(
            HistogramVec::new(
                HistogramOpts::new(
                    "nmid_call_duration_seconds",
                    "Time from a call's arrival to the worker's answer (queue wait + worker time), by function; answered calls only.",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
                &["function"],
            )
            .expect("valid metric"),
        );
        Self { calls, duration }
    }
}

/// The registry's state, set from its snapshot at each scrape (nothing per call).
pub(super) struct StateGauges {
    pub(super) in_flight: IntGaugeVec,
    pub(super) queued: IntGaugeVec,
    pub(super) function_workers: IntGaugeVec,
    pub(super) functions: IntGauge,
    pub(super) workers: IntGauge,
    pub(super) worker_in_flight: IntGaugeVec,
    /// `workers.max_queue_per_function`, for alerts on the queue depth.
    pub(super) queue_limit: IntGauge,
}

impl StateGauges {
    pub(super) fn new(add: &Registrar) -> Self {
        Self {
            in_flight: add.gauge_vec(
                "nmid_jobs_in_flight",
                "Jobs running on workers, by function.",
                "function",
            ),
            queued: add.gauge_vec(
                "nmid_queue_depth",
                "Calls waiting for a free worker, by function.",
                "function",
            ),
            function_workers: add.gauge_vec(
                "nmid_function_workers",
                "Workers serving each function.",
                "function",
            ),
            functions: add.gauge("nmid_functions", "Functions with at least one worker."),
            workers: add.gauge("nmid_workers", "Connected workers."),
            worker_in_flight: add.gauge_vec(
                "nmid_worker_jobs_in_flight",
                "Jobs running on each worker, by worker name.",
                "worker",
            ),
            queue_limit: add.gauge(
                "nmid_queue_limit",
                "Calls that may wait per function (workers.max_queue_per_function), for alerts on nmid_queue_depth.",
            ),
        }
    }
}

/// What peers and requests did: connections, jobs per worker, retries, limits hit,
/// refusals, lenient frames, HTTP requests.
pub(super) struct PeerCounters {
    pub(super) worker_jobs: IntCounterVec,
    pub(super) connections: IntGaugeVec,
    pub(super) worker_disconnects: IntCounter,
    pub(super) retries: IntCounter,
    pub(super) late_results: IntCounter,
    pub(super) http_requests: IntCounterVec,
    pub(super) http_connections: IntGauge,
    pub(super) limit_hits: [IntCounter; Limit::ALL.len()],
    pub(super) lenient_frames: [IntCounter; Leniency::ALL.len()],
    pub(super) refusals: [IntCounter; Refusal::ALL.len()],
}

impl PeerCounters {
    pub(super) fn new(add: &Registrar) -> Self {
        let connections =
            add.gauge_vec("nmid_connections", "Open TCP connections, by role.", "role");
        for role in [Role::Undecided, Role::Client, Role::Worker] {
            connections.with_label_values(&[role.as_str()]);
        }
        let limit_hits = add.counter_vec(
            "nmid_limit_hits_total",
            "Times a peer ran into a limit, by limit (docs/limits.md).",
            &["limit"],
        );
        let lenient_frames = add.counter_vec(
            "nmid_lenient_frames_total",
            "Frames accepted though not as the protocol says, as nmid's server accepts them, by kind.",
            &["kind"],
        );
        let refusals = add.counter_vec(
            "nmid_security_refusals_total",
            "Connections, requests, calls and registrations refused by [security], [auth] or [tls], by reason.",
            &["reason"],
        );
        Self {
            worker_jobs: add.counter_vec(
                "nmid_worker_jobs_total",
                "Jobs answered by each worker, by worker name.",
                &["worker"],
            ),
            connections,
            worker_disconnects: add.counter(
                "nmid_worker_disconnects_total",
                "Workers that disconnected or were dropped.",
            ),
            retries: add.counter(
                "nmid_job_retries_total",
                "Jobs retried on another worker after a lost worker.",
            ),
            late_results: add.counter(
                "nmid_late_results_total",
                "Worker results discarded because their call was over.",
            ),
            http_requests: add.counter_vec(
                "nmid_http_requests_total",
                "HTTP requests, by route pattern and status code.",
                &["route", "status"],
            ),
            http_connections: add.gauge(
                "nmid_http_connections",
                "HTTP connections open (http.max_connections at most).",
            ),
            limit_hits: Limit::ALL.map(|l| limit_hits.with_label_values(&[l.as_str()])),
            lenient_frames: Leniency::ALL.map(|k| lenient_frames.with_label_values(&[k.as_str()])),
            refusals: Refusal::ALL.map(|r| refusals.with_label_values(&[r.as_str()])),
        }
    }
}
