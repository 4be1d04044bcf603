//! Admin and introspection JSON: functions, workers, stats, health and readiness.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde::Serialize;

use super::error::HttpError;
use super::guard::Access;
use super::HttpState;
use crate::actors::registry::Snapshot;
use crate::metrics::CallCounts;
use crate::snapshot::{RegistrySnapshot, WorkerSnapshot};

/// A worker as `/api/v1/workers` shows it.
#[derive(Serialize)]
struct WorkerView {
    id: u64,
    name: Option<String>,
    address: String,
    functions: Vec<String>,
    in_flight: u32,
    max_jobs: u32,
    /// Unix seconds.
    connected_since: u64,
    /// Its circuit breaker's state (`closed`, `open`, `half_open`) per function it serves;
    /// absent with breakers off.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    breakers: BTreeMap<String, &'static str>,
}

#[derive(Serialize)]
struct StatsView {
    version: &'static str,
    uptime_seconds: f64,
    calls: CallCounts,
    workers: usize,
    functions: usize,
    in_flight: u64,
    queued: usize,
    late_results: u64,
    draining: bool,
    /// Background jobs waiting to start.
    jobs_queued: u64,
    /// Background jobs on a worker.
    jobs_running: u64,
}

async fn snapshot(state: &HttpState) -> Result<RegistrySnapshot, HttpError> {
    state
        .registry()
        .send(Snapshot)
        .await
        .map_err(|e| HttpError::Internal(format!("registry unavailable: {e}")))
}

/// `GET /api/v1/functions`: each function with its workers, jobs in flight, queued calls
/// and background jobs waiting to start (`jobs_queued`).
pub async fn functions(state: web::Data<HttpState>) -> Result<HttpResponse, HttpError> {
    let functions = snapshot(&state).await?.functions;
    let jobs = state.jobs.as_ref().map(|j| j.gauges()).unwrap_or_default();
    let view: Vec<serde_json::Value> = (functions.into_iter())
        .map(|function| {
            let waiting: u64 = (jobs.queued.iter())
                .filter(|((name, _), _)| *name == function.name)
                .map(|(_, count)| count)
                .sum();
            let mut value = serde_json::to_value(function).unwrap_or_default();
            value["jobs_queued"] = waiting.into();
            value
        })
        .collect();
    Ok(HttpResponse::Ok().json(view))
}

/// `GET /api/v1/workers`: each connected worker.
pub async fn workers(state: web::Data<HttpState>) -> Result<HttpResponse, HttpError> {
    let workers = snapshot(&state).await?.workers;
    let view: Vec<WorkerView> = workers.into_iter().map(WorkerView::from).collect();
    Ok(HttpResponse::Ok().json(view))
}

impl From<WorkerSnapshot> for WorkerView {
    fn from(w: WorkerSnapshot) -> Self {
        let since = w.connected_since.duration_since(UNIX_EPOCH);
        Self {
            id: w.id.0,
            name: w.name,
            address: w.peer.to_string(),
            functions: w.functions,
            in_flight: w.in_flight,
            max_jobs: w.max_jobs,
            connected_since: since.map_or(0, |d| d.as_secs()),
            breakers: (w.breakers.into_iter())
                .map(|(function, state)| (function, state.as_str()))
                .collect(),
        }
    }
}

/// `GET /api/v1/stats`: version, uptime, call counts by outcome, load. The dashboard's feed.
pub async fn stats(state: web::Data<HttpState>) -> Result<HttpResponse, HttpError> {
    let snapshot = snapshot(&state).await?;
    let jobs = state.jobs.as_ref().map(|j| j.gauges());
    Ok(HttpResponse::Ok().json(StatsView {
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: SystemTime::now()
            .duration_since(state.started)
            .unwrap_or_default()
            .as_secs_f64(),
        calls: state.metrics().read(),
        workers: snapshot.workers.len(),
        functions: snapshot.functions.len(),
        in_flight: snapshot.in_flight(),
        queued: snapshot.queued(),
        late_results: snapshot.late_results,
        draining: snapshot.draining,
        jobs_queued: jobs.as_ref().map_or(0, |g| g.queued.values().sum()),
        jobs_running: jobs.as_ref().map_or(0, |g| g.running),
    }))
}

/// `GET /api/v1/cluster`: each dispatcher of the cluster (this one first) with its
/// addresses, functions, load and when it was last seen, and the etcd session's state;
/// `{"enabled": false, ...}` without discovery.
pub async fn cluster(state: web::Data<HttpState>) -> Result<HttpResponse, HttpError> {
    let report = match &state.cluster {
        Some(view) => view.report(&snapshot(&state).await?),
        None => crate::cluster::ClusterView::disabled(),
    };
    Ok(HttpResponse::Ok().json(report))
}

/// `GET /api/v1/calls`: every function's cumulative calls, errors and latency buckets (what
/// `nmidctl top` turns into rates).
pub async fn calls(state: web::Data<HttpState>) -> HttpResponse {
    HttpResponse::Ok().json(state.metrics().calls_view())
}

/// `GET /api/v1/history`: the recent rates, overall and per function, for the charts.
pub async fn history(state: web::Data<HttpState>) -> HttpResponse {
    let view = state
        .history
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .view();
    HttpResponse::Ok().json(view)
}

/// The dashboard page: plain HTML and JS, no build step.
const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// `GET /dashboard`: the built-in dashboard page.
pub async fn dashboard() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(DASHBOARD_HTML)
}

/// `GET /metrics`: the Prometheus text exposition.
pub async fn metrics(state: web::Data<HttpState>) -> Result<HttpResponse, HttpError> {
    let snapshot = snapshot(&state).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics().render(&snapshot)))
}

/// `GET /healthz`: the process serves HTTP and its registry answers.
pub async fn healthz(state: web::Data<HttpState>) -> Result<HttpResponse, HttpError> {
    snapshot(&state).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ok"})))
}

/// Query of `GET /readyz`.
#[derive(Debug, serde::Deserialize)]
pub struct ReadyQuery {
    /// Functions (comma-separated) that must each have a worker, besides
    /// `http.ready_functions`.
    functions: Option<String>,
}

/// `GET /readyz`: ready to take calls: not shutting down, and every function named by
/// `http.ready_functions` or `?functions=A,B` has a worker (a pod whose dispatcher is ready
/// before its sidecar registered would answer its first calls `no_worker`). Without either,
/// a dispatcher with no worker is ready: workers come and go. 503 while draining.
///
/// With auth on, a caller without the `admin` role gets the status alone: which functions
/// have workers, and how many, is the admin API's to say, so it may not name functions
/// (`?functions=` is 401) and is not told which are missing.
pub async fn readyz(
    req: HttpRequest,
    state: web::Data<HttpState>,
    query: web::Query<ReadyQuery>,
) -> Result<HttpResponse, HttpError> {
    let details = req.extensions().get::<Access>().is_some();
    if !details && query.functions.is_some() {
        return Err(HttpError::Unauthorized);
    }
    let snapshot = snapshot(&state).await?;
    if snapshot.draining {
        return Ok(
            HttpResponse::ServiceUnavailable().json(serde_json::json!({"status": "draining"}))
        );
    }
    let asked = (query.functions.iter()).flat_map(|list| list.split(','));
    let missing: Vec<&str> = (state.ready_functions.iter().map(String::as_str))
        .chain(asked)
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .filter(|name| snapshot.function(name).is_none_or(|f| f.workers == 0))
        .collect();
    let status = match missing.is_empty() {
        true => "ready",
        false => "waiting for functions",
    };
    if !details {
        let mut response = match missing.is_empty() {
            true => HttpResponse::Ok(),
            false => HttpResponse::ServiceUnavailable(),
        };
        return Ok(response.json(serde_json::json!({ "status": status })));
    }
    if !missing.is_empty() {
        return Ok(HttpResponse::ServiceUnavailable().json(serde_json::json!({
            "status": status,
            "missing": missing,
        })));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "status": "ready",
        "workers": snapshot.workers.len(),
        "functions": snapshot.functions.len(),
    })))
}
