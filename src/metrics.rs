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

use prometheus::{Encoder, IntCounter, Registry as PromRegistry, TextEncoder};

use crate::call::{CallOutcome, DispatchError, FunctionName};
use crate::snapshot::RegistrySnapshot;

mod callbacks;
mod guard;
mod jobs;
mod labels;
mod series;
mod views;

use callbacks::CallbackMetrics;
use guard::GuardMetrics;
use jobs::JobsMetrics;
use series::{CallSeries, PeerCounters, Registrar, StateGauges};

pub use callbacks::CallbackEvent;
pub use labels::{CallCounts, Leniency, Limit, Outcome, Refusal, Role};

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
        if matches!(
            outcome,
            Outcome::Ok | Outcome::FunctionError | Outcome::ClientError
        ) {
            self.duration.observe(elapsed.as_secs_f64());
        }
    }
}

thread_local! {
    /// Metrics instance id -> (label epoch, function -> handles). Keyed by instance (a unique
    /// id, not an address that a later instance could reuse), since tests run several
    /// dispatchers in one process; emptied when the instance's function labels change.
    static HANDLES: RefCell<HashMap<u64, CachedHandles>> = RefCell::new(HashMap::new());
}

/// One thread's handles of one metrics instance: the label epoch they were taken in, and
/// the handles by function.
type CachedHandles = (u64, HashMap<FunctionName, FunctionHandles>);

/// The label value shared by the functions (or worker names) past their series limit.
pub const OTHER_LABEL: &str = "_other";

/// Label values of one kind (function or worker names) under a cap, so that names peers
/// choose cannot grow the series without bound: the first `max` names get series of their
/// own, any further ones share [`OTHER_LABEL`]; at each scrape, names no longer in use are
/// forgotten and their series removed. Names starting with `_` (ours) are not counted.
struct Labels {
    max: usize,
    admitted: std::sync::Mutex<foldhash::HashSet<String>>,
    /// Bumped whenever names are forgotten, so that cached handles are dropped.
    epoch: AtomicU64,
}

impl Labels {
    fn new(max: usize) -> Self {
        Self {
            max,
            admitted: std::sync::Mutex::new(foldhash::HashSet::default()),
            epoch: AtomicU64::new(0),
        }
    }

    /// The label value for `name`: itself if it has (or may get) series of its own.
    fn label<'a>(&self, name: &'a str) -> &'a str {
        if name.starts_with('_') {
            return name;
        }
        let mut admitted = self.admitted.lock().unwrap_or_else(|e| e.into_inner());
        if admitted.contains(name) {
            return name;
        }
        if admitted.len() < self.max {
            admitted.insert(name.to_owned());
            return name;
        }
        OTHER_LABEL
    }

    /// `name` if it has series of its own already, else `fallback`: for names a caller chose
    /// that must not take a place under the cap (a refused call of any name at all).
    fn existing_or<'a>(&self, name: &'a str, fallback: &'a str) -> &'a str {
        let admitted = self.admitted.lock().unwrap_or_else(|e| e.into_inner());
        match admitted.contains(name) {
            true => name,
            false => fallback,
        }
    }

    /// Forgets the names not in `live`; returns them, for their series to be removed.
    fn forget_all_but(&self, live: &foldhash::HashSet<&str>) -> Vec<String> {
        let mut admitted = self.admitted.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<String> = (admitted.iter())
            .filter(|name| !live.contains(name.as_str()))
            .cloned()
            .collect();
        if !gone.is_empty() {
            for name in &gone {
                admitted.remove(name);
            }
            self.epoch.fetch_add(1, Ordering::Relaxed);
        }
        gone
    }
}

/// Ids of [`Metrics`] instances.
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

/// Every metric of one dispatcher.
pub struct Metrics {
    /// This instance's key in the per-thread handle cache.
    instance: u64,
    registry: PromRegistry,
    /// Calls by function and outcome, and their durations.
    call: CallSeries,
    totals: [AtomicU64; Outcome::ALL.len()],
    /// The registry's state, set at scrape time.
    state: StateGauges,
    /// What peers and requests did: connections, limits, refusals, HTTP requests.
    peers: PeerCounters,
    function_labels: Labels,
    worker_labels: Labels,
    scrape: std::sync::Mutex<()>,
    /// Rate limits and circuit breakers (`[rate_limit]`, `[breaker]`).
    guard: GuardMetrics,
    /// Background jobs.
    jobs: JobsMetrics,
    /// Callbacks of background jobs (`jobs.callback_*`).
    callbacks: CallbackMetrics,
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
    /// A fresh set of metrics in its own registry, with build info and process metrics, and
    /// the default series limits (1000 functions, 1000 worker names).
    pub fn new() -> Self {
        Self::with_series_limits(1000, 1000)
    }

    /// Like [`Metrics::new`], with at most `functions` function names and `workers` worker
    /// names getting series of their own (`metrics.max_function_series`,
    /// `metrics.max_worker_series`).
    pub fn with_series_limits(max_functions: usize, max_workers: usize) -> Self {
        let registry = PromRegistry::new();
        let add = Registrar(&registry);
        let call = CallSeries::new(&add);
        let state = StateGauges::new(&add);
        let peers = PeerCounters::new(&add);
        add.gauge_vec(
            "nmid_build_info",
            "Always 1; the version label says which build runs.",
            "version",
        )
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
        let guard = GuardMetrics::new(&add);
        let jobs = JobsMetrics::new(&add);
        let callbacks = CallbackMetrics::new(&add);
        let process = prometheus::process_collector::ProcessCollector::for_self();
        (registry.register(Box::new(process))).expect("metric names are unique");
        Self {
            instance: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
            registry,
            call,
            totals: Default::default(),
            state,
            peers,
            function_labels: Labels::new(max_functions),
            worker_labels: Labels::new(max_workers),
            scrape: std::sync::Mutex::new(()),
            guard,
            jobs,
            callbacks,
        }
    }

    /// Reads the background jobs' `gauges` at each scrape from now on.
    pub fn watch_jobs(&self, gauges: std::sync::Arc<std::sync::Mutex<crate::jobs::JobsGauges>>) {
        self.jobs.watch(gauges);
    }

    /// Counts one answered call of `function` that took `elapsed`.
    pub fn record_call(&self, function: &FunctionName, outcome: Outcome, elapsed: Duration) {
        self.totals[outcome as usize].fetch_add(1, Ordering::Relaxed);
        HANDLES.with(|cache| {
            let mut cache = cache.borrow_mut();
            let (epoch, mine) = cache.entry(self.instance).or_default();
            let now = self.function_labels.epoch.load(Ordering::Relaxed);
            if *epoch != now {
                *epoch = now;
                mine.clear();
            }
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

    /// Counts one answered job: `kind` (`Outcome::of(outcome)`, which the job worked out once
    /// for its span too), and its time since `started`. A call of a function nobody ever
    /// registered is counted under [`UNKNOWN_FUNCTION_LABEL`].
    pub fn record_job(
        &self,
        function: &FunctionName,
        outcome: &CallOutcome,
        kind: Outcome,
        elapsed: Duration,
    ) {
        if matches!(outcome, CallOutcome::Failed(DispatchError::UnknownFunction)) {
            self.record_refused(kind);
        } else {
            self.record_call(function, kind, elapsed);
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
        let name = self.function_labels.label(&name);
        FunctionHandles {
            calls: Outcome::ALL.map(|o| self.call.calls.with_label_values(&[name, o.as_str()])),
            duration: self.call.duration.with_label_values(&[name]),
        }
    }

    /// A peer ran into `limit`.
    pub fn record_limit(&self, limit: Limit) {
        self.peers.limit_hits[limit as usize].inc();
    }

    /// A peer or a request was refused for `reason`.
    pub fn record_refusal(&self, reason: Refusal) {
        self.peers.refusals[reason as usize].inc();
    }

    /// A frame was accepted leniently.
    pub fn record_lenient(&self, kind: Leniency) {
        self.peers.lenient_frames[kind as usize].inc();
    }

    /// Removes the series of functions no worker serves and of worker names no worker has.
    fn forget_departed(&self, snapshot: &RegistrySnapshot) {
        let live: foldhash::HashSet<&str> =
            snapshot.functions.iter().map(|f| f.name.as_str()).collect();
        for name in self.function_labels.forget_all_but(&live) {
            for outcome in Outcome::ALL {
                let _ = self
                    .call
                    .calls
                    .remove_label_values(&[&name, outcome.as_str()]);
            }
            let _ = self.call.duration.remove_label_values(&[&name]);
            self.guard.forget(&name);
        }
        let live: foldhash::HashSet<&str> = (snapshot.workers.iter())
            .map(|w| worker_label(w.name.as_deref().unwrap_or("")))
            .collect();
        for name in self.worker_labels.forget_all_but(&live) {
            let _ = self.peers.worker_jobs.remove_label_values(&[&name]);
        }
    }

    /// Adds `metric` to this dispatcher's registry, so that `GET /metrics` shows it too (the
    /// cluster's metrics live beside the parts they count). Panics on a duplicate name.
    pub fn register<M: prometheus::core::Collector + Clone + 'static>(&self, metric: M) -> M {
        Registrar(&self.registry).metric(metric)
    }

    /// An HTTP connection opened (`1`) or closed (`-1`).
    pub fn http_connection(&self, delta: i64) {
        self.peers.http_connections.add(delta);
    }

    /// Exports the configured queue bound (`nmid_queue_limit`).
    pub fn set_queue_limit(&self, limit: usize) {
        self.state
            .queue_limit
            .set(i64::try_from(limit).unwrap_or(i64::MAX));
    }

    /// A job was retried on another worker.
    pub fn record_retry(&self) {
        self.peers.retries.inc();
    }

    /// A worker's result arrived after its call was over.
    pub fn record_late_result(&self) {
        self.peers.late_results.inc();
    }

    /// A worker disconnected or was dropped.
    pub fn record_worker_disconnect(&self) {
        self.peers.worker_disconnects.inc();
    }

    /// The counter of jobs answered by the worker named `name` (unnamed workers count under
    /// [`UNNAMED_WORKER_LABEL`]).
    pub fn worker_jobs(&self, name: &str) -> IntCounter {
        let label = self.worker_labels.label(worker_label(name));
        self.peers.worker_jobs.with_label_values(&[label])
    }

    /// A connection took `role` (or left it, with `delta` -1).
    pub fn connection(&self, role: Role, delta: i64) {
        self.peers
            .connections
            .with_label_values(&[role.as_str()])
            .add(delta);
    }

    /// Counts one HTTP request.
    pub fn record_http(&self, route: &str, status: u16) {
        self.peers
            .http_requests
            .with_label_values(&[route, itoa_status(status)])
            .inc();
    }

    /// A worker registered `function`: it gets series of its own now (if under
    /// `max_function_series`), so that calls refused before its first scrape or answered call
    /// (rate limits) are counted under its name rather than `_unknown`.
    pub fn function_served(&self, function: &FunctionName) {
        self.function_labels.label(&function.to_string());
    }

    /// The text exposition, with the registry's state (in flight, queues, workers) as of
    /// `snapshot`.
    pub fn render(&self, snapshot: &RegistrySnapshot) -> String {
        // Two scrapes at once must not interleave their resets and refills.
        let _scrape = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.state.in_flight.reset();
        self.state.queued.reset();
        self.state.function_workers.reset();
        self.state.worker_in_flight.reset();
        self.guard.breakers_open.reset();
        self.forget_departed(snapshot);
        for function in &snapshot.functions {
            let name = self.function_labels.label(&function.name);
            // A served function's call series exist from its first scrape, at 0, so that
            // rate() counts its first calls too.
            for outcome in Outcome::ALL {
                self.call.calls.with_label_values(&[name, outcome.as_str()]);
            }
            self.call.duration.with_label_values(&[name]);
            // Added, not set: the functions past the series limit share one label value.
            self.state
                .in_flight
                .with_label_values(&[name])
                .add(i64::from(function.in_flight));
            self.state
                .queued
                .with_label_values(&[name])
                .add(function.queued as i64);
            self.state
                .function_workers
                .with_label_values(&[name])
                .add(function.workers as i64);
            if function.breakers_open > 0 {
                self.guard
                    .breakers_open
                    .with_label_values(&[name])
                    .add(function.breakers_open as i64);
            }
        }
        for worker in &snapshot.workers {
            let name = worker_label(worker.name.as_deref().unwrap_or(""));
            let name = self.worker_labels.label(name);
            self.state
                .worker_in_flight
                .with_label_values(&[name])
                .add(i64::from(worker.in_flight));
        }
        self.state
            .functions
            .set(snapshot.functions.iter().filter(|f| f.workers > 0).count() as i64);
        self.state.workers.set(snapshot.workers.len() as i64);
        self.jobs.refresh(&self.function_labels);
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
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
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
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
        let text = metrics.render(&serving(&["ToUpper"], &[]));
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

    /// A snapshot in which `functions` are served by workers named `workers`.
    fn serving(functions: &[&str], workers: &[&str]) -> RegistrySnapshot {
        let functions = (functions.iter())
            .map(|name| crate::snapshot::FunctionSnapshot {
                name: name.to_string(),
                workers: 1,
                in_flight: 0,
                queued: 0,
                breakers_open: 0,
                slots: 1,
            })
            .collect();
        let workers = (workers.iter().enumerate())
            .map(|(i, name)| crate::snapshot::WorkerSnapshot {
                id: crate::call::WorkerId(i as u64),
                name: Some(name.to_string()),
                peer: "127.0.0.1:1".parse().unwrap(),
                functions: Vec::new(),
                in_flight: 0,
                max_jobs: 1,
                connected_since: std::time::SystemTime::now(),
                breakers: Vec::new(),
            })
            .collect();
        RegistrySnapshot {
            functions,
            workers,
            ..RegistrySnapshot::default()
        }
    }

    /// Past `max_function_series` functions, calls are counted under `_other`; the series of
    /// a function no worker serves any more are gone at the next scrape.
    #[test]
    fn function_series_are_bounded_and_removed_when_the_function_departs() {
        let metrics = Metrics::with_series_limits(2, 2);
        for name in ["A", "B", "C", "D"] {
            metrics.record_call(&FunctionName::from(name), Outcome::Ok, Duration::ZERO);
        }
        let text = metrics.render(&serving(&["A", "B", "C", "D"], &[]));
        assert!(
            text.contains(r#"nmid_calls_total{function="A",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"nmid_calls_total{function="B",outcome="ok"} 1"#));
        assert!(text.contains(r#"nmid_calls_total{function="_other",outcome="ok"} 2"#));
        assert!(!text.contains(r#"function="C""#));
        assert!(text.contains(r#"nmid_function_workers{function="_other"} 2"#));

        let text = metrics.render(&serving(&["B"], &[]));
        assert!(!text.contains(r#"function="A""#), "{text}");
        assert!(text.contains(r#"nmid_calls_total{function="B",outcome="ok"} 1"#));
        // A's place is free again: a new function gets series of its own.
        metrics.record_call(&FunctionName::from("E"), Outcome::Ok, Duration::ZERO);
        let text = metrics.render(&serving(&["B", "E"], &[]));
        assert!(
            text.contains(r#"nmid_calls_total{function="E",outcome="ok"} 1"#),
            "{text}"
        );
    }

    /// Worker names past `max_worker_series` share `_other`; a departed name's series go.
    #[test]
    fn worker_series_are_bounded_and_removed_when_the_worker_departs() {
        let metrics = Metrics::with_series_limits(10, 1);
        metrics.worker_jobs("w1").inc();
        metrics.worker_jobs("w2").inc();
        metrics.worker_jobs("w3").inc();
        let text = metrics.render(&serving(&[], &["w1", "w2", "w3"]));
        assert!(
            text.contains(r#"nmid_worker_jobs_total{worker="w1"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"nmid_worker_jobs_total{worker="_other"} 2"#));
        let text = metrics.render(&serving(&[], &[]));
        assert!(!text.contains(r#"worker="w1""#), "{text}");
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
