//! Background jobs over HTTP (`docs/jobs.md`):
//!
//! - `POST /async/{func}`: the request is read as `POST /call/{func}` reads it, vetted by
//!   the front door as a call, and submitted; `202 Accepted` with the job's id in the body,
//!   `X-Call-Id` and `Location: /api/v1/jobs/{id}`. Options are `X-Nmid-*` headers
//!   ([`OPTION_NAMES`]); `X-Callback-Url` is OpenFaaS's spelling of `X-Nmid-Callback-Url`;
//!   `X-Nmid-Timeout-Ms` is each attempt's deadline.
//! - `GET /api/v1/jobs/{id}` (`?wait_ms=` waits, at most `jobs.timeout_ms`, for it to end),
//!   `DELETE /api/v1/jobs/{id}` (cancels a queued job), `GET /api/v1/jobs/{id}/result` (the
//!   result as `/call` would have answered it), `GET /api/v1/jobs?function=&state=&after=&limit=`.
//!
//! With auth on, a job is its submitter's: another client token gets 404 for it, as for a
//! job that does not exist; a token with the `admin` role sees every job.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use actix_web::http::header;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use super::call::{answer_of, data_response, prepare_call, CallQuery, CallerOf};
use super::error::HttpError;
use super::guard::{Access, VouchedCaller};
use super::HttpState;
use crate::actors::background::{
    Background, CancelJob, GetJob, ListJobs, Submit, SubmitError, WaitForJob,
};
use crate::actors::front_door::{FrontEnd, Refused};
use crate::call::{CallOutcome, ClientKey};
use crate::config::JobsConfig;
use crate::jobs::access::Viewer;
use crate::jobs::options::{SubmitOptions, OPTION_NAMES};
use crate::jobs::remote::{FORWARDED_HEADER, RECORD_CONTENT_TYPE};
use crate::jobs::{BackgroundId, JobRecord, JobState, NotCancelled};

/// What the HTTP front end needs of the background jobs.
#[derive(Debug, Clone)]
pub struct JobsFront {
    /// The jobs' actor.
    pub background: Addr<Background>,
    /// `[jobs]`.
    pub config: Arc<JobsConfig>,
    /// The node name in this dispatcher's job ids.
    pub node: String,
    /// Checks callback URLs against `jobs.callback_allow`.
    pub callbacks: crate::jobs::callback::Callbacks,
    /// The cluster, when discovery is on: another dispatcher's jobs are asked of it.
    pub cluster: Option<crate::cluster::ClusterView>,
    /// The HTTP client that asks them.
    pub peers: reqwest::Client,
    /// The jobs' numbers, as the metrics read them (`/api/v1/functions`, `/api/v1/stats`).
    pub gauges: std::sync::Arc<std::sync::Mutex<crate::jobs::JobsGauges>>,
}

impl JobsFront {
    /// The jobs' numbers as last counted.
    pub fn gauges(&self) -> crate::jobs::JobsGauges {
        self.gauges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Where a job lives.
enum Owner {
    /// Here: its number in this store.
    Here(u64),
    /// At the dispatcher of the cluster serving HTTP at this address.
    Peer(std::net::SocketAddr),
}

/// Who answers for job `id`: this dispatcher, or the live one of the cluster whose jobs have
/// its node name; 404 when none (a malformed id, or an owner not in the cluster now: its
/// jobs resume when it starts again with its data dir).
fn owner(req: &HttpRequest, jobs: &JobsFront, id: &str) -> Result<Owner, HttpError> {
    let parsed = BackgroundId::parse(id).ok_or_else(|| not_found(id))?;
    if parsed.node == jobs.node {
        return Ok(Owner::Here(parsed.seq));
    }
    let forwarded = req.headers().contains_key(FORWARDED_HEADER);
    let peer = (jobs.cluster.as_ref())
        .filter(|_| !forwarded)
        .and_then(|cluster| cluster.jobs_owner(&parsed.node));
    peer.map(Owner::Peer).ok_or_else(|| not_found(id))
}

/// Asks the dispatcher at `peer` what `req` asks, as the same caller (its credentials go
/// along), and answers what it answered.
async fn ask_owner(
    req: &HttpRequest,
    jobs: &JobsFront,
    peer: std::net::SocketAddr,
    wait_ms: u64,
) -> Result<HttpResponse, HttpError> {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
        .map_err(|_| HttpError::BadRequest("method".into()))?;
    let mut request = (jobs.peers)
        .request(method, format!("http://{peer}{target}"))
        .header(FORWARDED_HEADER, "1")
        .timeout(Duration::from_millis(
            wait_ms.min(jobs.config.timeout_ms) + 5000,
        ));
    if let Some(auth) = req.headers().get(header::AUTHORIZATION) {
        request = request.header("authorization", auth.as_bytes());
    }
    let unreachable = |e: reqwest::Error| {
        HttpError::Internal(format!(
            "the dispatcher owning this job ({peer}) did not answer: {e}"
        ))
    };
    let answer = request.send().await.map_err(unreachable)?;
    let status = actix_web::http::StatusCode::from_u16(answer.status().as_u16())
        .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY);
    let content_type = (answer.headers().get("content-type"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let body = answer.bytes().await.map_err(unreachable)?;
    Ok(HttpResponse::build(status)
        .content_type(content_type)
        .body(body))
}

/// OpenFaaS's header naming the callback URL.
const CALLBACK_HEADER: &str = "x-callback-url";
/// The prefix of the option headers.
const OPTION_PREFIX: &str = "x-nmid-";

/// `POST /async/{func}`.
pub async fn submit(
    req: HttpRequest,
    function: web::Path<String>,
    query: web::Query<CallQuery>,
    payload: web::Payload,
    state: web::Data<HttpState>,
) -> HttpResponse {
    into_response(submit_job(&req, &function, &query, payload, &state).await)
}

async fn submit_job(
    req: &HttpRequest,
    function: &str,
    query: &CallQuery,
    payload: web::Payload,
    state: &HttpState,
) -> Result<HttpResponse, HttpError> {
    let jobs = front(state)?;
    let pairs = (req.headers().iter()).filter_map(|(name, value)| {
        let name = name.as_str();
        let option = match name {
            CALLBACK_HEADER => "callback-url",
            _ => name.strip_prefix(OPTION_PREFIX)?,
        };
        OPTION_NAMES
            .contains(&option)
            .then_some((option, value.as_bytes()))
    });
    let mut options =
        SubmitOptions::from_pairs(pairs).map_err(|e| HttpError::BadRequest(e.to_string()))?;
    if let Some(url) = &options.callback_url {
        let checked = (jobs.callbacks.validate(url))
            .map_err(|e| HttpError::BadRequest(format!("callback-url: {e}")))?;
        options.callback_url = Some(checked.as_str().to_owned());
    }
    let caller = CallerOf::request(req);
    let request_id = super::call::request_id_of(req.headers());
    let spec = prepare_call(req, function, query, payload, &caller, state, &request_id).await?;
    let attempt_timeout = super::call::timeout_from(req.headers(), state.job_timeout)?;
    let spec = match state.door.vet(spec, caller.caller(), FrontEnd::Http) {
        Ok(spec) => spec,
        Err(Refused::Forbidden { who }) => {
            return Err(HttpError::Forbidden(format!(
                "{who} may not call {function}"
            )))
        }
        Err(Refused::OverLimit(refusal)) => return Err(HttpError::OverRateLimit { refusal }),
        Err(Refused::Invalid(error)) => return Err(HttpError::from_call(error, function)),
    };
    let record = options
        .record(&spec, attempt_timeout, &jobs.config)
        .map_err(|e| HttpError::BadRequest(e.to_string()))?;
    let submitted = (jobs.background.send(Submit { record }).await)
        .map_err(|_| HttpError::Internal("the background jobs stopped".into()))?;
    let submitted = submitted.map_err(|error| match error {
        SubmitError::Full(why) => HttpError::StoreFull(why),
        SubmitError::Store(why) => HttpError::Internal(format!("job store: {why}")),
        SubmitError::ShuttingDown => HttpError::ShuttingDown,
    })?;
    let id = submitted.id.to_string();
    Ok(HttpResponse::Accepted()
        .insert_header(("x-call-id", id.as_str()))
        .insert_header((header::LOCATION, format!("/api/v1/jobs/{id}")))
        .json(json!({
            "id": id,
            "state": submitted.state.as_str(),
            "shared": submitted.shared,
        })))
}

/// Query of `GET /api/v1/jobs/{id}`.
#[derive(Debug, Deserialize)]
pub struct StatusQuery {
    /// Wait this long, at most `jobs.timeout_ms`, for the job to end.
    wait_ms: Option<u64>,
}

/// `/api/v1/jobs/{id}`: `GET` (and `HEAD`) its state, `DELETE` cancels it.
pub async fn status_or_cancel(
    req: HttpRequest,
    id: web::Path<String>,
    query: web::Query<StatusQuery>,
    state: web::Data<HttpState>,
) -> HttpResponse {
    match *req.method() == actix_web::http::Method::DELETE {
        true => cancel(req, id, state).await,
        false => status(req, id, query, state).await,
    }
}

/// `GET /api/v1/jobs/{id}`.
async fn status(
    req: HttpRequest,
    id: web::Path<String>,
    query: web::Query<StatusQuery>,
    state: web::Data<HttpState>,
) -> HttpResponse {
    let found = async {
        let jobs = front(&state)?;
        let seq = match owner(&req, jobs, &id)? {
            Owner::Here(seq) => seq,
            Owner::Peer(peer) => {
                return ask_owner(&req, jobs, peer, query.wait_ms.unwrap_or(0)).await
            }
        };
        // Whose it is first: waiting on another caller's job would tell that it exists.
        let mut record = visible(&req, get(jobs, seq).await?, &id)?;
        if let Some(wait) = query.wait_ms.filter(|_| !record.state.is_final()) {
            let timeout = Duration::from_millis(wait.min(jobs.config.timeout_ms));
            let _ = jobs.background.send(WaitForJob { seq, timeout }).await;
            record = visible(&req, get(jobs, seq).await?, &id)?;
        }
        Ok(shown(&req, &record, &jobs.node))
    };
    into_response(found.await)
}

/// `record` as the request accepts it: its stored record for a peer dispatcher
/// ([`RECORD_CONTENT_TYPE`]), else the JSON of [`describe`].
fn shown(req: &HttpRequest, record: &JobRecord, node: &str) -> HttpResponse {
    let accept = req.headers().get(header::ACCEPT).map(|v| v.as_bytes());
    match accept == Some(RECORD_CONTENT_TYPE.as_bytes()) {
        true => match rmp_serde::to_vec_named(record) {
            Ok(body) => HttpResponse::Ok()
                .content_type(RECORD_CONTENT_TYPE)
                .body(body),
            Err(e) => HttpError::Internal(format!("job record: {e}")).error_response(),
        },
        false => HttpResponse::Ok().json(describe(record, node)),
    }
}

/// `GET /api/v1/jobs/{id}/result`: a succeeded job's result, answered as `/call` answers
/// it; 409 with the job's state while it has none.
pub async fn result(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<HttpState>,
) -> HttpResponse {
    let found = async {
        let jobs = front(&state)?;
        let seq = match owner(&req, jobs, &id)? {
            Owner::Here(seq) => seq,
            Owner::Peer(peer) => return ask_owner(&req, jobs, peer, 0).await,
        };
        let record = visible(&req, get(jobs, seq).await?, &id)?;
        let function = String::from_utf8_lossy(&record.function).into_owned();
        match (record.state, &record.output) {
            (JobState::Succeeded, Some(output)) => {
                let outcome = CallOutcome::Done(bytes::Bytes::copy_from_slice(output));
                answer_of(outcome, &function).map(data_response)
            }
            (JobState::Failed, Some(output)) => Ok(HttpResponse::BadGateway().json(json!({
                "error": String::from_utf8_lossy(output),
                "code": record.error_code.as_deref().unwrap_or("worker_error"),
            }))),
            _ => Ok(HttpResponse::Conflict().json(json!({
                "error": format!("job {id} has no result: it is {}", record.state.as_str()),
                "code": "no_result",
                "state": record.state.as_str(),
            }))),
        }
    };
    into_response(found.await)
}

/// `DELETE /api/v1/jobs/{id}`: cancels a queued job.
async fn cancel(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<HttpState>,
) -> HttpResponse {
    let cancelled = async {
        let jobs = front(&state)?;
        let seq = match owner(&req, jobs, &id)? {
            Owner::Here(seq) => seq,
            Owner::Peer(peer) => return ask_owner(&req, jobs, peer, 0).await,
        };
        visible(&req, get(jobs, seq).await?, &id)?;
        let answer = (jobs.background.send(CancelJob { seq }).await)
            .map_err(|_| HttpError::Internal("the background jobs stopped".into()))?;
        match answer {
            Ok(record) => Ok(shown(&req, &record, &jobs.node)),
            Err(NotCancelled::NotFound) => Err(not_found(&id)),
            Err(NotCancelled::Too(state)) => Ok(HttpResponse::Conflict().json(json!({
                "error": format!("job {id} is {}: only a queued job can be cancelled", state.as_str()),
                "code": "not_cancellable",
                "state": state.as_str(),
            }))),
        }
    };
    into_response(cancelled.await)
}

/// Query of `GET /api/v1/jobs`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    function: Option<String>,
    state: Option<String>,
    /// The `next` of the previous page.
    after: Option<u64>,
    limit: Option<usize>,
}

/// `GET /api/v1/jobs`: a page of the jobs the caller may see, oldest first.
pub async fn list(
    req: HttpRequest,
    query: web::Query<ListQuery>,
    state: web::Data<HttpState>,
) -> HttpResponse {
    let listed = async {
        let jobs = front(&state)?;
        let wanted_state = match query.state.as_deref() {
            None => None,
            Some(text) => Some(JobState::parse(text).ok_or_else(|| {
                HttpError::BadRequest(format!(
                    "unknown state {text:?}: queued, running, succeeded, failed or cancelled"
                ))
            })?),
        };
        let limit = query
            .limit
            .unwrap_or(100)
            .clamp(1, jobs.config.max_list_page);
        let function = query.function.clone();
        let viewer = viewer(&req);
        let keep = move |record: &JobRecord| {
            wanted_state.is_none_or(|s| record.state == s)
                && function
                    .as_deref()
                    .is_none_or(|f| record.function.as_slice() == f.as_bytes())
                && viewer.sees(record)
        };
        let after = query.after.unwrap_or(0);
        let page = (jobs.background)
            .send(ListJobs {
                after,
                limit,
                keep: Box::new(keep),
            })
            .await
            .map_err(|_| HttpError::Internal("the background jobs stopped".into()))?;
        let (page, next) = page;
        let described: Vec<_> = page.iter().map(|r| describe(r, &jobs.node)).collect();
        Ok(HttpResponse::Ok().json(json!({ "jobs": described, "next": next })))
    };
    into_response(listed.await)
}

/// The background jobs, or 503 when the dispatcher runs none.
fn front(state: &HttpState) -> Result<&JobsFront, HttpError> {
    (state.jobs.as_ref()).ok_or_else(|| HttpError::Internal("background jobs are off".into()))
}

async fn get(jobs: &JobsFront, seq: u64) -> Result<Option<JobRecord>, HttpError> {
    (jobs.background.send(GetJob { seq }).await)
        .map_err(|_| HttpError::Internal("the background jobs stopped".into()))
}

/// The job, if the request may see it ([`Viewer::sees`]); else 404, as if it did not exist.
fn visible(req: &HttpRequest, record: Option<JobRecord>, id: &str) -> Result<JobRecord, HttpError> {
    let record = record.ok_or_else(|| not_found(id))?;
    match viewer(req).sees(&record) {
        true => Ok(record),
        false => Err(not_found(id)),
    }
}

/// Whose jobs the request may see ([`Viewer::of`] its grant).
fn viewer(req: &HttpRequest) -> Viewer {
    let access = req.extensions().get::<Access>().cloned();
    // A peer dispatcher asking for a caller known by its address: that address.
    let vouched = match req.extensions().get::<VouchedCaller>() {
        Some(VouchedCaller(ClientKey::Ip(ip))) => Some(*ip),
        _ => None,
    };
    let ip = vouched.unwrap_or_else(|| {
        req.peer_addr()
            .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip())
    });
    match access {
        Some(Access::Granted(grant)) => Viewer::of(Some(&grant), ip),
        Some(Access::Open) => Viewer::of(None, ip),
        // The guard gave no access (it always does on these routes): nothing is visible.
        None => Viewer::nobody(),
    }
}

fn not_found(id: &str) -> HttpError {
    HttpError::JobNotFound(id.to_owned())
}

/// A job as the API shows it.
fn describe(record: &JobRecord, node: &str) -> serde_json::Value {
    let id = BackgroundId {
        node: node.to_owned(),
        seq: record.seq,
    };
    let mut body = json!({
        "id": id.to_string(),
        "function": String::from_utf8_lossy(&record.function),
        "state": record.state.as_str(),
        "priority": crate::call::Priority::from(record.priority).as_str(),
        "attempts": record.attempts,
        "max_attempts": record.max_attempts,
        "created_ms": record.created_ms,
        "run_at_ms": record.run_at_ms,
        "started_ms": record.started_ms,
        "finished_ms": record.finished_ms,
        "expires_ms": record.expires_ms(),
    });
    if let Some((numerator, denominator)) = record.progress {
        body["progress"] = json!({ "numerator": numerator, "denominator": denominator });
    }
    if let Some(key) = &record.unique {
        body["unique_key"] = json!(String::from_utf8_lossy(key));
    }
    match (&record.callback, &record.callback_url) {
        (Some(outcome), _) => body["callback"] = json!(outcome),
        // Being delivered (or retried): its outcome is written once there is one.
        (None, Some(_)) if record.state.is_final() => body["callback"] = json!("pending"),
        _ => {}
    }
    // A result as `/call` answers it (a RetStruct's `Data`); an error as the worker said.
    let shown = match record.state {
        JobState::Succeeded => record.result_data().map(|(data, _)| ("result", data)),
        _ => (record.output.as_ref()).map(|o| ("error", bytes::Bytes::copy_from_slice(o))),
    };
    if let Some((field, output)) = shown {
        match std::str::from_utf8(&output) {
            Ok(text) => body[field] = json!(text),
            Err(_) => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(&output);
                body[format!("{field}_base64")] = json!(encoded);
            }
        }
    }
    if let Some(code) = &record.error_code {
        body["error_code"] = json!(code);
    }
    body
}

fn into_response(result: Result<HttpResponse, HttpError>) -> HttpResponse {
    result.unwrap_or_else(|error| error.error_response())
}
