//! A worker's own Prometheus metrics (opt-in with [`WorkerBuilder::metrics`]), as nmid's SDK
//! offers a Prometheus package for the worker's service: jobs, latency and errors per
//! function, jobs in flight, connections and reconnects per dispatcher. Labels are bounded:
//! the functions the worker serves and the dispatchers it was given.
//!
//! [`WorkerBuilder::metrics`]: super::WorkerBuilder::metrics

use std::sync::Arc;
use std::time::Duration;

use crate::Readiness;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Job duration buckets, in seconds: 1 ms to 60 s (handlers run programs and requests).
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The metrics of one or more workers, cheap to clone; render them with
/// [`WorkerMetrics::render`] or serve them with [`serve_metrics`].
///
/// # Examples
///
/// ```
/// use nmid_worker::{Job, JobError, Worker, WorkerMetrics};
///
/// let metrics = WorkerMetrics::new();
/// let builder = Worker::builder()
///     .server("127.0.0.1:6808")
///     .metrics(metrics.clone())
///     .function("Echo", |job: Job| async move { Ok::<_, JobError>(job.params().clone()) });
/// // Once started, its jobs are counted: `metrics.render()` is the Prometheus text, or
/// // `serve_metrics(listener, metrics)` serves it at /metrics.
/// # let _ = (builder, metrics.render());
/// ```
#[derive(Clone)]
pub struct WorkerMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    jobs: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGaugeVec,
    connected: IntGaugeVec,
    reconnects: IntCounterVec,
}

impl std::fmt::Debug for WorkerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkerMetrics")
    }
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkerMetrics {
    /// A fresh set in its own registry (add your own metrics to [`WorkerMetrics::registry`]).
    pub fn new() -> Self {
        let registry = Registry::new();
        let register = |metric: Box<dyn prometheus::core::Collector>| {
            registry.register(metric).expect("metric names are unique");
        };
        let jobs = IntCounterVec::new(
            Opts::new(
                "nmid_worker_handled_total",
                "Jobs this worker answered, by function and outcome: ok; client_error (a RetStruct Code from 400 to 499, the caller's fault); or error (the handler failed or answered another Code but 0).",
            ),
            &["function", "outcome"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "nmid_worker_handler_duration_seconds",
                "Time a handler took, by function.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["function"],
        )
        .expect("valid metric");
        let in_flight = IntGaugeVec::new(
            Opts::new(
                "nmid_worker_handlers_running",
                "Jobs running now, by function.",
            ),
            &["function"],
        )
        .expect("valid metric");
        let connected = IntGaugeVec::new(
            Opts::new(
                "nmid_worker_connected",
                "1 while connected and registered to the dispatcher, else 0.",
            ),
            &["dispatcher"],
        )
        .expect("valid metric");
        let reconnects = IntCounterVec::new(
            Opts::new(
                "nmid_worker_reconnects_total",
                "Connections made again after one to the dispatcher was lost.",
            ),
            &["dispatcher"],
        )
        .expect("valid metric");
        register(Box::new(jobs.clone()));
        register(Box::new(duration.clone()));
        register(Box::new(in_flight.clone()));
        register(Box::new(connected.clone()));
        register(Box::new(reconnects.clone()));
        Self {
            inner: Arc::new(Inner {
                registry,
                jobs,
                duration,
                in_flight,
                connected,
                reconnects,
            }),
        }
    }

    /// The registry holding these metrics.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.inner.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    /// A worker starts serving `function`: its series exist from now on, at 0.
    pub(super) fn serve(&self, function: &str) {
        for outcome in ["ok", "client_error", "error"] {
            self.inner.jobs.with_label_values(&[function, outcome]);
        }
        self.inner.duration.with_label_values(&[function]);
        self.inner.in_flight.with_label_values(&[function]);
    }

    /// A job of `function` started.
    pub(super) fn job_started(&self, function: &str) {
        self.inner.in_flight.with_label_values(&[function]).inc();
    }

    /// A job of `function` ended after `elapsed` with `result`: an error when the handler
    /// failed or answered a RetStruct whose `Code` is not 0, but a client error for a `Code`
    /// from 400 to 499 ([`nmid_proto::retstruct::is_client_error`]).
    pub(super) fn job_done(&self, function: &str, result: Result<&[u8], ()>, elapsed: Duration) {
        use nmid_proto::retstruct::{is_client_error, peek_code};
        let outcome = match result.map(|ret| peek_code(ret).unwrap_or(0)) {
            Ok(0) => "ok",
            Ok(code) if is_client_error(code) => "client_error",
            _ => "error",
        };
        self.inner.in_flight.with_label_values(&[function]).dec();
        self.inner
            .jobs
            .with_label_values(&[function, outcome])
            .inc();
        self.inner
            .duration
            .with_label_values(&[function])
            .observe(elapsed.as_secs_f64());
    }

    /// A job of `function` was cancelled unanswered (its connection was lost): no longer in
    /// flight, and not counted as answered.
    pub(super) fn job_cancelled(&self, function: &str) {
        self.inner.in_flight.with_label_values(&[function]).dec();
    }

    /// The connection to `dispatcher` came up (`again`: not the first time) or went down.
    pub(super) fn link(&self, dispatcher: &str, up: bool, again: bool) {
        self.inner
            .connected
            .with_label_values(&[dispatcher])
            .set(i64::from(up));
        let reconnects = self.inner.reconnects.with_label_values(&[dispatcher]);
        if up && again {
            reconnects.inc();
        }
    }
}

/// Serves `GET /metrics` (and `GET /healthz`) of `metrics` on `listener` with actix-web, on
/// the current actix system. Returns the server's handle, to stop it.
pub fn serve_metrics(
    listener: std::net::TcpListener,
    metrics: WorkerMetrics,
) -> std::io::Result<actix_web::dev::ServerHandle> {
    serve_metrics_with(listener, metrics, None)
}

/// As [`serve_metrics`], with `GET /readyz` answering what `readiness` says: 200
/// `{"status": "ready"}`, or 503 `{"status": "not ready", "reason": ...}`. `GET /healthz`
/// (liveness) stays 200 while the process runs, and says the same (`"ready"`, `"reason"`).
pub fn serve_metrics_with(
    listener: std::net::TcpListener,
    metrics: WorkerMetrics,
    readiness: Option<Readiness>,
) -> std::io::Result<actix_web::dev::ServerHandle> {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let readiness = readiness.unwrap_or_else(|| Arc::new(|| Ok(())));
    let server = HttpServer::new(move || {
        let metrics = metrics.clone();
        let (live, ready) = (readiness.clone(), readiness.clone());
        App::new()
            .route(
                "/metrics",
                web::get().to(move || {
                    let text = metrics.render();
                    async move {
                        HttpResponse::Ok()
                            .content_type("text/plain; version=0.0.4; charset=utf-8")
                            .body(text)
                    }
                }),
            )
            .route(
                "/healthz",
                web::get().to(move || {
                    let body = match live() {
                        Ok(()) => serde_json::json!({"status": "ok", "ready": true}),
                        Err(reason) => {
                            serde_json::json!({"status": "ok", "ready": false, "reason": reason})
                        }
                    };
                    async move { HttpResponse::Ok().json(body) }
                }),
            )
            .route(
                "/readyz",
                web::get().to(move || {
                    let response = match ready() {
                        Ok(()) => HttpResponse::Ok().json(serde_json::json!({"status": "ready"})),
                        Err(reason) => HttpResponse::ServiceUnavailable()
                            .json(serde_json::json!({"status": "not ready", "reason": reason})),
                    };
                    async move { response }
                }),
            )
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok(handle)
}
