//! Prometheus metrics, one registry per dispatcher, with bounded labels only (function,
//! worker name, outcome, role, route, status — never ids or times).
//!
//! The hot path costs no lock: each thread keeps its own handles to a function's counters
//! and histogram (prometheus' label lookup takes a read lock, so it runs once per function and
//! thread, not per call); counting itself is an atomic add. State (jobs in flight, queue
//! depth, workers) is read from the registry at scrape time, so it costs nothing per call.
//!
//! The same struct keeps plain per-outcome totals for the admin API and the dashboard.

use foldhash::{HashMap, HashMapExt};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry as PromRegistry, TextEncoder,
};
use serde::Serialize;

use crate::call::{CallOutcome, DispatchError, FunctionName, RegistrySnapshot};

/// The `function` label of calls to a function no worker ever registered: caller-chosen
/// names must not create label values.
pub const UNKNOWN_FUNCTION_LABEL: &str = "_unknown";
/// Functions whose handles one thread caches at most; past it the cache starts over.
const MAX_CACHED_FUNCTIONS: usize = 4096;
/// Call duration buckets, in seconds: 50 µs to 30 s.
const DURATION_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0,
];

/// How a call ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The worker answered.
    Ok,
    /// The worker reported its function failed.
    WorkerError,
    /// No worker (or no such function).
    CantDo,
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
        Outcome::CantDo,
        Outcome::RateLimited,
        Outcome::Timeout,
        Outcome::WorkerLost,
        Outcome::BadRequest,
        Outcome::ShuttingDown,
    ];

    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::WorkerError => "error",
            Outcome::CantDo => "cant_do",
            Outcome::RateLimited => "rate_limited",
            Outcome::Timeout => "timeout",
            Outcome::WorkerLost => "worker_lost",
            Outcome::BadRequest => "bad_request",
            Outcome::ShuttingDown => "shutting_down",
        }
    }

    /// The outcome of a job.
    pub fn of(outcome: &CallOutcome) -> Self {
        match outcome {
            CallOutcome::Done(_) => Outcome::Ok,
            CallOutcome::WorkerFailed(_) => Outcome::WorkerError,
            CallOutcome::Failed(error) => Self::of_error(*error),
        }
    }

    /// The outcome of a call that failed with `error`.
    pub fn of_error(error: DispatchError) -> Self {
        match error {
            DispatchError::BadRequest => Outcome::BadRequest,
            DispatchError::NoWorker | DispatchError::UnknownFunction => Outcome::CantDo,
            DispatchError::RateLimited => Outcome::RateLimited,
            DispatchError::Timeout => Outcome::Timeout,
            DispatchError::WorkerLost => Outcome::WorkerLost,
            DispatchError::ShuttingDown => Outcome::ShuttingDown,
        }
    }
}

/// Totals by outcome, for the admin API and the dashboard.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CallCounts {
    /// Every call answered.
    pub total: u64,
    /// Calls answered with anything but a result.
    pub errors: u64,
    /// Counts by outcome label.
    pub by_outcome: Vec<(&'static str, u64)>,
}

/// The role of a connection, for `nmid_connections`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sent no frame yet.
    Undecided,
    /// A client.
    Client,
    /// A worker.
    Worker,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Undecided => "undecided",
            Role::Client => "client",
            Role::Worker => "worker",
        }
    }
}

/// A function's handles, cached per thread.
#[derive(Clone)]
struct FunctionHandles {
    calls: [IntCounter; Outcome::ALL.len()],
    duration: prometheus::Histogram,
}

impl FunctionHandles {
    fn count(&self, outcome: Outcome, elapsed: Duration) {
        self.calls[outcome as usize].inc();
        // Latency of answered calls only: refusals (instant) and timeouts (the whole
        // deadline) would skew the function's percentiles.
        if matches!(outcome, Outcome::Ok | Outcome::WorkerError) {
            self.duration.observe(elapsed.as_secs_f64());
        }
    }
}

thread_local! {
    /// Metrics instance id -> function -> handles. Keyed by instance (a unique id, not an
    /// address that a later instance could reuse), since tests run several dispatchers in
    /// one process.
    static HANDLES: RefCell<HashMap<u64, HashMap<FunctionName, FunctionHandles>>> = RefCell::new(HashMap::new());
}

/// Ids of [`Metrics`] instances.
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

/// Every metric of one dispatcher.
pub struct Metrics {
    /// This instance's key in the per-thread handle cache.
    instance: u64,
    registry: PromRegistry,
    calls: IntCounterVec,
    duration: HistogramVec,
    totals: [AtomicU64; Outcome::ALL.len()],
    in_flight: IntGaugeVec,
    queued: IntGaugeVec,
    function_workers: IntGaugeVec,
    functions: IntGauge,
    workers: IntGauge,
    worker_in_flight: IntGaugeVec,
    worker_jobs: IntCounterVec,
    connections: IntGaugeVec,
    worker_disconnects: IntCounter,
    retries: IntCounter,
    late_results: IntCounter,
    http_requests: IntCounterVec,
    queue_limit: IntGauge,
    scrape: std::sync::Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("calls", &self.read())
            .finish()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics in its own registry, with build info and process metrics.
    pub fn new() -> Self {
        let registry = PromRegistry::new();
        let add = Registrar(&registry);
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
        let in_flight = add.gauge_vec(
            "nmid_jobs_in_flight",
            "Jobs running on workers, by function.",
            "function",
        );
        let queued = add.gauge_vec(
            "nmid_queue_depth",
            "Calls waiting for a free worker, by function.",
            "function",
        );
        let function_workers = add.gauge_vec(
            "nmid_function_workers",
            "Workers serving each function.",
            "function",
        );
        let functions = add.metric(
            IntGauge::new("nmid_functions", "Functions with at least one worker.")
                .expect("valid metric"),
        );
        let workers =
            add.metric(IntGauge::new("nmid_workers", "Connected workers.").expect("valid metric"));
        let worker_in_flight = add.gauge_vec(
            "nmid_worker_jobs_in_flight",
            "Jobs running on each worker, by worker name.",
            "worker",
        );
        let worker_jobs = add.counter_vec(
            "nmid_worker_jobs_total",
            "Jobs answered by each worker, by worker name.",
            &["worker"],
        );
        let connections =
            add.gauge_vec("nmid_connections", "Open TCP connections, by role.", "role");
        for role in [Role::Undecided, Role::Client, Role::Worker] {
            connections.with_label_values(&[role.as_str()]);
        }
        let worker_disconnects = add.counter(
            "nmid_worker_disconnects_total",
            "Workers that disconnected or were dropped.",
        );
        let retries = add.counter(
            "nmid_job_retries_total",
            "Jobs retried on another worker after a lost worker.",
        );
        let late_results = add.counter(
            "nmid_late_results_total",
            "Worker results discarded because their call was over.",
        );
        let http_requests = add.counter_vec(
            "nmid_http_requests_total",
            "HTTP requests, by route pattern and status code.",
            &["route", "status"],
        );
        let queue_limit = add.metric(
            IntGauge::new(
                "nmid_queue_limit",
                "Calls that may wait per function (workers.max_queue_per_function), for alerts on nmid_queue_depth.",
            )
            .expect("valid metric"),
        );
        add.gauge_vec(
            "nmid_build_info",
            "Always 1; the version label says which build runs.",
            "version",
        )
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
        let process = prometheus::process_collector::ProcessCollector::for_self();
        (registry.register(Box::new(process))).expect("metric names are unique");
        Self {
            instance: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
            registry,
            calls,
            duration,
            totals: Default::default(),
            in_flight,
            queued,
            function_workers,
            functions,
            workers,
            worker_in_flight,
            worker_jobs,
            connections,
            worker_disconnects,
            retries,
            late_results,
            http_requests,
            queue_limit,
            scrape: std::sync::Mutex::new(()),
        }
    }

    /// Counts one answered call of `function` that took `elapsed`.
    pub fn record_call(&self, function: &FunctionName, outcome: Outcome, elapsed: Duration) {
        self.totals[outcome as usize].fetch_add(1, Ordering::Relaxed);
        HANDLES.with(|cache| {
            let mut cache = cache.borrow_mut();
            let mine = cache.entry(self.instance).or_default();
            // Looked up by reference: the common case clones nothing and hashes once.
            if let Some(handles) = mine.get(function) {
                return handles.count(outcome, elapsed);
            }
            if mine.len() >= MAX_CACHED_FUNCTIONS {
                mine.clear();
            }
            let handles = self.handles(function);
            handles.count(outcome, elapsed);
            mine.insert(function.clone(), handles);
        });
    }

    /// Counts one answered job: its outcome, and its time since `started`. A call of a
    /// function nobody ever registered is counted under [`UNKNOWN_FUNCTION_LABEL`].
    pub fn record_job(&self, function: &FunctionName, outcome: &CallOutcome, elapsed: Duration) {
        let outcome_kind = Outcome::of(outcome);
        if matches!(outcome, CallOutcome::Failed(DispatchError::UnknownFunction)) {
            self.record_refused(outcome_kind);
        } else {
            self.record_call(function, outcome_kind, elapsed);
        }
    }

    /// Counts a call refused before it became a job (bad request): no function label value
    /// is created for it.
    pub fn record_refused(&self, outcome: Outcome) {
        self.record_call(
            &FunctionName::from(UNKNOWN_FUNCTION_LABEL),
            outcome,
            Duration::ZERO,
        );
    }

    fn handles(&self, function: &FunctionName) -> FunctionHandles {
        let name = function.to_string();
        FunctionHandles {
            calls: Outcome::ALL.map(|o| self.calls.with_label_values(&[name.as_str(), o.as_str()])),
            duration: self.duration.with_label_values(&[name.as_str()]),
        }
    }

    /// Exports the configured queue bound (`nmid_queue_limit`).
    pub fn set_queue_limit(&self, limit: usize) {
        self.queue_limit
            .set(i64::try_from(limit).unwrap_or(i64::MAX));
    }

    /// A job was retried on another worker.
    pub fn record_retry(&self) {
        self.retries.inc();
    }

    /// A worker's result arrived after its call was over.
    pub fn record_late_result(&self) {
        self.late_results.inc();
    }

    /// A worker disconnected or was dropped.
    pub fn record_worker_disconnect(&self) {
        self.worker_disconnects.inc();
    }

    /// The counter of jobs answered by the worker named `name` (unnamed workers count under
    /// [`UNNAMED_WORKER_LABEL`]).
    pub fn worker_jobs(&self, name: &str) -> IntCounter {
        self.worker_jobs.with_label_values(&[worker_label(name)])
    }

    /// A connection took `role` (or left it, with `delta` -1).
    pub fn connection(&self, role: Role, delta: i64) {
        self.connections
            .with_label_values(&[role.as_str()])
            .add(delta);
    }

    /// Counts one HTTP request.
    pub fn record_http(&self, route: &str, status: u16) {
        self.http_requests
            .with_label_values(&[route, itoa_status(status)])
            .inc();
    }

    /// Totals by outcome since start.
    pub fn read(&self) -> CallCounts {
        let by_outcome: Vec<(&'static str, u64)> = Outcome::ALL
            .iter()
            .map(|o| (o.as_str(), self.totals[*o as usize].load(Ordering::Relaxed)))
            .collect();
        let total = by_outcome.iter().map(|(_, n)| n).sum();
        let ok = by_outcome[Outcome::Ok as usize].1;
        CallCounts {
            total,
            errors: total - ok,
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
        for family in self.calls.collect() {
            for metric in family.get_metric() {
                let function = label(metric, "function");
                let entry = by_function.entry(function.clone()).or_default();
                entry.function = function;
                let count = metric.get_counter().get_value() as u64;
                entry.calls += count;
                if label(metric, "outcome") != Outcome::Ok.as_str() {
                    entry.errors += count;
                }
            }
        }
        for family in self.duration.collect() {
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

    /// The text exposition, with the registry's state (in flight, queues, workers) as of
    /// `snapshot`.
    pub fn render(&self, snapshot: &RegistrySnapshot) -> String {
        // Two scrapes at once must not interleave their resets and refills.
        let _scrape = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.in_flight.reset();
        self.queued.reset();
        self.function_workers.reset();
        self.worker_in_flight.reset();
        for function in &snapshot.functions {
            let name = function.name.as_str();
            // A served function's call series exist from its first scrape, at 0, so that
            // rate() counts its first calls too.
            for outcome in Outcome::ALL {
                self.calls.with_label_values(&[name, outcome.as_str()]);
            }
            self.duration.with_label_values(&[name]);
            self.in_flight
                .with_label_values(&[name])
                .set(i64::from(function.in_flight));
            self.queued
                .with_label_values(&[name])
                .set(function.queued as i64);
            self.function_workers
                .with_label_values(&[name])
                .set(function.workers as i64);
        }
        for worker in &snapshot.workers {
            let name = worker_label(worker.name.as_deref().unwrap_or(""));
            self.worker_in_flight
                .with_label_values(&[name])
                .add(i64::from(worker.in_flight));
        }
        self.functions
            .set(snapshot.functions.iter().filter(|f| f.workers > 0).count() as i64);
        self.workers.set(snapshot.workers.len() as i64);
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// Creates metrics and registers them in one registry.
struct Registrar<'a>(&'a PromRegistry);

impl Registrar<'_> {
    /// Registers `metric` and returns it.
    fn metric<M: prometheus::core::Collector + Clone + 'static>(&self, metric: M) -> M {
        (self.0.register(Box::new(metric.clone()))).expect("metric names are unique");
        metric
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.metric(IntCounter::new(name, help).expect("valid metric"))
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.metric(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn gauge_vec(&self, name: &str, help: &str, label: &str) -> IntGaugeVec {
        self.metric(IntGaugeVec::new(Opts::new(name, help), &[label]).expect("valid metric"))
    }
}

/// The `worker` label of workers that sent no name.
pub const UNNAMED_WORKER_LABEL: &str = "_unnamed";

fn worker_label(name: &str) -> &str {
    if name.is_empty() {
        UNNAMED_WORKER_LABEL
    } else {
        name
    }
}

/// Status codes as label values without allocating.
fn itoa_status(status: u16) -> &'static str {
    match status {
        200 => "200",
        400 => "400",
        404 => "404",
        413 => "413",
        415 => "415",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls are counted by function and outcome in the exposition, and in the totals; the
    /// latency histogram takes answered calls only (not the timeout).
    #[test]
    fn calls_are_counted_by_function_and_outcome() {
        let metrics = Metrics::new();
        let f = FunctionName::from("ToUpper");
        metrics.record_call(&f, Outcome::Ok, Duration::from_millis(2));
        metrics.record_call(&f, Outcome::Ok, Duration::from_millis(3));
        metrics.record_call(&f, Outcome::Timeout, Duration::from_secs(1));
        let text = metrics.render(&RegistrySnapshot::default());
        assert!(
            text.contains(r#"nmid_calls_total{function="ToUpper",outcome="ok"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"nmid_calls_total{function="ToUpper",outcome="timeout"} 1"#));
        assert!(text.contains(r#"nmid_call_duration_seconds_count{function="ToUpper"} 2"#));
        assert!(text.contains("nmid_build_info{version="));
        let counts = metrics.read();
        assert_eq!((counts.total, counts.errors), (3, 1));
    }

    /// Two metrics instances on one thread keep separate counts.
    #[test]
    fn instances_do_not_share_counts() {
        let (a, b) = (Metrics::new(), Metrics::new());
        let f = FunctionName::from("F");
        a.record_call(&f, Outcome::Ok, Duration::ZERO);
        assert!(!b
            .render(&RegistrySnapshot::default())
            .contains(r#"function="F",outcome="ok"} 1"#));
        assert_eq!(b.read().total, 0);
    }
}
