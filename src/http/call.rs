//! `POST /call/{func}` and nmid's gateway protocol (`N-NMID-*` headers on any path): each
//! request is admitted through the [`FrontDoor`](crate::actors::front_door::FrontDoor), as a
//! TCP client's call is, and becomes a job actor directly, no loopback TCP hop. Its caller is
//! what the guard established ([`Access`]): its token, else (auth off) its peer IP.

use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix::prelude::*;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::mime;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use bytes::Bytes;
use serde::Deserialize;

use super::body::read_body;
use super::error::HttpError;
use super::guard::Access;
use super::HttpState;
use crate::actors::front_door::{Caller, FrontEnd, Refused};
use crate::actors::job::JobActor;
use crate::call::{
    CallOutcome, CallSpec, ClientKey, JobId, CONTENT_TYPE_META, HEADER_META_PREFIX, QUERY_META,
};
use crate::codec::{Metadata, ParamsType, HANDLE_TYPE_ENCODE};
use crate::metrics::Outcome;
use crate::retstruct::RetStruct;
use crate::telemetry::{self, Hop};
use tracing::Instrument;

mod sse;

pub use sse::wants_events;

/// Per-call deadline, in milliseconds.
pub const TIMEOUT_HEADER: &str = "x-nmid-timeout-ms";
/// The request id echoed (or made up) on every `/call` response.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// nmid gateway request headers.
pub const NMID_REQUEST_TYPE: &str = "n-nmid-requesttype";
/// nmid gateway: the function name (else the URL path).
pub const NMID_FUNCTION_NAME: &str = "n-nmid-functionname";
/// nmid gateway: 5 (JSON object -> msgpack map, the default) or 6 (JSON passed as is).
pub const NMID_PARAMS_TYPE: &str = "n-nmid-paramstype";
/// nmid gateway response header on success (`PDT_S_RETURN_DATA`).
const NMID_PDT_DATA_TYPE: &str = "n-nmid-pdtdatatype";
/// nmid gateway response header on failure: the v1 reply type (`PDT_CANT_DO`, ...).
const NMID_MESSAGE_STATUS_TYPE: &str = "n-nmid-messagestatustype";
/// nmid gateway response header on failure: the error message.
const NMID_ERROR_MESSAGE: &str = "n-nmid-errormessage";

/// Query of `POST /call/{func}`.
#[derive(Debug, Deserialize)]
pub struct CallQuery {
    /// `json`: pass the JSON body to the worker as JSON (params type 6).
    params: Option<String>,
}

/// `POST /call/{func}`. Every answer, an error too, carries `X-Request-Id`: the caller's,
/// or one made up from the job id when it sent none; the function gets it as well.
pub async fn call(
    req: HttpRequest,
    function: web::Path<String>,
    query: web::Query<CallQuery>,
    payload: web::Payload,
    state: web::Data<HttpState>,
) -> HttpResponse {
    let job_id = JobId::next();
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .cloned()
        .unwrap_or_else(|| fresh_request_id(job_id));
    let events = wants_events(req.headers());
    let called = call_function(
        &req,
        &function,
        &query,
        payload,
        &state,
        job_id,
        &request_id,
        events,
    );
    let mut response = match called.await {
        Ok(response) => response,
        Err(err) => actix_web::ResponseError::error_response(&err),
    };
    response.headers_mut().insert(
        header::HeaderName::from_static(REQUEST_ID_HEADER),
        request_id,
    );
    response
}

/// The `X-Request-Id` of an answer the call handler did not make (a refusal, a 405, any
/// other route's): the caller's, else a fresh one.
pub fn request_id_of(request: &HeaderMap) -> HeaderValue {
    (request.get(REQUEST_ID_HEADER).cloned()).unwrap_or_else(|| fresh_request_id(JobId::next()))
}

/// The request id made up for `job` (a call's, or one taken for an answer that is no
/// call): its id through a permutation of the 64-bit numbers keyed at random per process
/// (four Feistel rounds over SipHash), so ids stay unique yet tell nobody how many calls the
/// dispatcher has taken; two consecutive jobs' ids were consecutive numbers.
fn fresh_request_id(job: JobId) -> HeaderValue {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    let keys = KEYS.get_or_init(RandomState::new);
    let (mut left, mut right) = ((job.0 >> 32) as u32, job.0 as u32);
    for round in 0u8..4 {
        let mixed = keys.hash_one((round, right)) as u32;
        (left, right) = (right, left ^ mixed);
    }
    HeaderValue::from(u64::from(left) << 32 | u64::from(right))
}

/// The call of `POST /call/{func}` up to its answer; with `events`, the answer is a stream
/// of server-sent events that begins once the job started.
#[allow(clippy::too_many_arguments)]
async fn call_function(
    req: &HttpRequest,
    function: &str,
    query: &CallQuery,
    payload: web::Payload,
    state: &HttpState,
    job_id: JobId,
    request_id: &HeaderValue,
    events: bool,
) -> Result<HttpResponse, HttpError> {
    let caller = CallerOf::request(req);
    let call = prepare_call(req, function, query, payload, &caller, state, request_id)
        .await
        .inspect_err(|err| record_unusable(state, err))?;
    match events {
        true => sse::stream_call(state, job_id, call, caller),
        false => run_call(state, job_id, call, caller)
            .await
            .map(data_response),
    }
}

/// Counts a request that cannot be a call as `bad_request` when it is the caller's fault (a
/// 4xx), as a TCP client's unusable call is; a refusal for load (503 `busy`) is counted by
/// its `limit=` label alone.
fn record_unusable(state: &HttpState, err: &HttpError) {
    if err.status_code().is_client_error() {
        state.metrics().record_refused(Outcome::BadRequest);
    }
}

/// The call a `POST /call/{func}` request makes, or why the request cannot be one (counted
/// as `bad_request`, as a TCP client's unusable call is).
pub(super) async fn prepare_call(
    req: &HttpRequest,
    function: &str,
    query: &CallQuery,
    payload: web::Payload,
    caller: &CallerOf,
    state: &HttpState,
    request_id: &HeaderValue,
) -> Result<CallSpec, HttpError> {
    let body = read_body(req, payload, caller.key(), &state.bodies, state.metrics()).await?;
    let pass_json = match query.params.as_deref() {
        None => false,
        Some("json") => true,
        Some(other) => {
            return Err(HttpError::BadRequest(format!(
                "unknown params mode {other:?}: use ?params=json or nothing"
            )))
        }
    };
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.as_bytes());
    let (params, params_type) = call_params(content_type, body, pass_json)?;
    let timeout = timeout_from(req.headers(), state.job_timeout)?;
    let mut call = new_call(req.headers(), function, params, params_type, timeout);
    call.meta = Some(Arc::new(forwarded_meta(
        req,
        call.meta.take(),
        request_id,
        &state.forward_headers,
    )));
    Ok(call)
}

/// What the function gets from the HTTP request besides its params, as call metadata
/// (tagged workers; nmid-faas passes it on): the request id, the query string, the
/// `http.forward_headers`, and the content type of a raw body. Added to `meta` (the trace
/// context).
fn forwarded_meta(
    req: &HttpRequest,
    meta: Option<Arc<Metadata>>,
    request_id: &HeaderValue,
    forward: &[header::HeaderName],
) -> Metadata {
    let mut meta = meta.map(|m| (*m).clone()).unwrap_or_default();
    let entry = |key: String, value: &[u8]| (Bytes::from(key), Bytes::copy_from_slice(value));
    meta.push(entry(REQUEST_ID_HEADER.to_owned(), request_id.as_bytes()));
    // Without our own `params=` (how the body becomes params), which is no business of the
    // function's.
    let query: Vec<&str> = (req.query_string().split('&'))
        .filter(|pair| !pair.is_empty() && !pair.starts_with("params="))
        .collect();
    if !query.is_empty() {
        meta.push(entry(QUERY_META.to_owned(), query.join("&").as_bytes()));
    }
    for name in forward {
        for value in req.headers().get_all(name) {
            meta.push(entry(
                format!("{HEADER_META_PREFIX}{name}"),
                value.as_bytes(),
            ));
        }
    }
    if let Some(raw) = (req.headers().get(header::CONTENT_TYPE)).filter(|v| is_raw(v.as_bytes())) {
        meta.push(entry(CONTENT_TYPE_META.to_owned(), raw.as_bytes()));
    }
    meta
}

/// nmid's gateway: any path, `N-NMID-RequestType: HTTP_DO_WORK`. Answered with nmid's
/// headers, but with truthful status codes.
pub async fn gateway(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<HttpState>,
) -> HttpResponse {
    let caller = CallerOf::request(&req);
    let prepared = async {
        let function = gateway_function(&req)?;
        let pass_json = match req.headers().get(NMID_PARAMS_TYPE).map(|v| v.to_str()) {
            None | Some(Ok("5")) => false,
            Some(Ok("6")) => true,
            Some(_) => {
                return Err(HttpError::BadRequest(
                    "N-NMID-ParamsType must be 5 or 6".to_owned(),
                ))
            }
        };
        let body = read_body(&req, payload, caller.key(), &state.bodies, state.metrics()).await?;
        let (params, params_type) = json_body_params(body, pass_json)?;
        let timeout = timeout_from(req.headers(), state.job_timeout)?;
        Ok(new_call(
            req.headers(),
            &function,
            params,
            params_type,
            timeout,
        ))
    }
    .await
    .inspect_err(|err| record_unusable(&state, err));
    let result = match prepared {
        Ok(call) => run_call(&state, JobId::next(), call, caller).await,
        Err(err) => Err(err),
    };
    match result {
        Ok(data) => {
            let mut response = data_response(data);
            response.headers_mut().insert(
                header::HeaderName::from_static(NMID_PDT_DATA_TYPE),
                HeaderValue::from_static("PDT_S_RETURN_DATA"),
            );
            response
        }
        Err(err) => {
            let mut response = actix_web::ResponseError::error_response(&err);
            let headers = response.headers_mut();
            headers.insert(
                header::HeaderName::from_static(NMID_MESSAGE_STATUS_TYPE),
                HeaderValue::from_static(err.nmid_status_type()),
            );
            if let Ok(message) = HeaderValue::from_str(&err.to_string()) {
                headers.insert(header::HeaderName::from_static(NMID_ERROR_MESSAGE), message);
            }
            response
        }
    }
}

/// The function a gateway request names: `N-NMID-FunctionName`, else its path.
fn gateway_function(req: &HttpRequest) -> Result<String, HttpError> {
    match req.headers().get(NMID_FUNCTION_NAME) {
        Some(name) => (name.to_str().map(str::to_owned))
            .map_err(|_| HttpError::BadRequest("N-NMID-FunctionName is not text".to_owned())),
        None => Ok(req.path().trim_start_matches('/').to_owned()),
    }
}

/// The function a call request names, known before its body is read (so a grant can refuse
/// it with the body unread): `/call/{func}`'s, decoded as the handler's path is, or the
/// gateway's. `None` when it names none readable (the handler answers that).
pub fn function_named(req: &HttpRequest) -> Option<String> {
    match req.match_info().get("func") {
        Some(_) => (req.match_info().load::<(String,)>().ok()).map(|(function,)| function),
        None => gateway_function(req).ok(),
    }
}

/// What a successful call answers: the RetStruct's `Data` (or the raw result when the worker
/// does not follow the convention).
pub struct CallData {
    bytes: Bytes,
    /// The result was a RetStruct (its `Data` is `bytes`).
    ret_struct: bool,
    /// The RetStruct's `ContentType`, if it said.
    content_type: Option<String>,
}

/// Runs one call as a job and waits for it. If the HTTP client goes away first, the
/// handler's future is dropped and so is the guard, which cancels the job: nothing leaks.
async fn run_call(
    state: &HttpState,
    job_id: JobId,
    mut call: CallSpec,
    caller: CallerOf,
) -> Result<CallData, HttpError> {
    if !telemetry::enabled() {
        return run_job(state, job_id, call, caller).await;
    }
    // The HTTP hop's span: child of the request's traceparent, parent of the dispatch span.
    let function = call.function.to_string();
    let span = telemetry::hop_span(Hop::Http, &function, call.meta.as_deref());
    let meta = call.meta.take().map(|m| (*m).clone()).unwrap_or_default();
    call.meta = Some(Arc::new(telemetry::with_span_context(&span, meta)));
    let result = (run_job(state, job_id, call, caller))
        .instrument(span.clone())
        .await;
    telemetry::finish(
        &span,
        result.as_ref().map_or_else(HttpError::code, |_| "ok"),
    );
    result
}

async fn run_job(
    state: &HttpState,
    job_id: JobId,
    call: CallSpec,
    caller: CallerOf,
) -> Result<CallData, HttpError> {
    let function = call.function.to_string();
    let function = function.as_str();
    let (tx, answer) = tokio::sync::oneshot::channel();
    // The waiter may be gone (the HTTP client disconnected): nothing to tell then.
    let reply = Box::new(move |outcome| drop(tx.send(outcome)));
    let job = match state
        .door
        .admit(job_id, call, caller.caller(), FrontEnd::Http, reply, None)
    {
        Ok(job) => job,
        Err(Refused::Forbidden { who }) => {
            return Err(HttpError::Forbidden(format!(
                "{who} may not call {function}"
            )))
        }
        Err(Refused::OverLimit(refusal)) => return Err(HttpError::OverRateLimit { refusal }),
        Err(Refused::Invalid(error)) => return Err(HttpError::from_call(error, function)),
    };
    let mut guard = CancelOnDrop(Some(job));
    let outcome = answer
        .await
        .map_err(|_| HttpError::Internal("the job ended without an answer".to_owned()))?;
    guard.0 = None;
    answer_of(outcome, function)
}

/// The HTTP answer of a call's outcome: a RetStruct's `Data` (its `ContentType` kept); a
/// `Code` other than 0 is the function's error (a 4xx code stays that status); a result
/// that is not a RetStruct is answered as it is.
pub(super) fn answer_of(outcome: CallOutcome, function: &str) -> Result<CallData, HttpError> {
    match outcome {
        CallOutcome::Done(ret) => match RetStruct::decode(&ret) {
            Ok(ret) if ret.code != 0 => Err(HttpError::Function {
                code: ret.code,
                message: ret.msg,
                data: ret.data,
                content_type: ret.content_type,
            }),
            Ok(ret) => Ok(CallData {
                bytes: ret.data,
                ret_struct: true,
                content_type: ret.content_type,
            }),
            Err(_) => Ok(CallData {
                bytes: ret,
                ret_struct: false,
                content_type: None,
            }),
        },
        CallOutcome::WorkerFailed(message) => Err(HttpError::WorkerError(
            String::from_utf8_lossy(&message).into_owned(),
        )),
        CallOutcome::Failed(error) => Err(HttpError::from_call(error, function)),
    }
}

/// A request's caller, taken out of the request before its body is read: what the guard
/// established ([`Access`]; none at all is refused, deny by default) and its peer's IP.
pub(super) struct CallerOf {
    access: Option<Access>,
    ip: Option<IpAddr>,
}

impl CallerOf {
    pub(super) fn request(req: &HttpRequest) -> Self {
        Self {
            access: req.extensions().get::<Access>().cloned(),
            ip: req.peer_addr().map(|addr| addr.ip()),
        }
    }

    /// Whose share of `http.max_receiving_body_bytes` its body takes: its token, else its
    /// address (as the front door counts it for rate limits).
    fn key(&self) -> ClientKey {
        let ip = self.ip.map(|ip| ip.to_canonical());
        match &self.access {
            Some(Access::Granted(grant)) => {
                grant.client_key(ip.unwrap_or(Ipv4Addr::UNSPECIFIED.into()))
            }
            _ => ip.map_or(ClientKey::Overflow, ClientKey::Ip),
        }
    }

    /// The caller as the front door takes it. (A request without a peer address, which a
    /// real listener never makes, counts as 0.0.0.0 for a grant that keys by address.)
    pub(super) fn caller(&self) -> Caller<'_> {
        match &self.access {
            Some(Access::Open) => Caller::Anyone { ip: self.ip },
            Some(Access::Granted(grant)) => Caller::Granted {
                grant,
                ip: self.ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            },
            None => Caller::Unknown,
        }
    }
}

/// Whether a request speaks nmid's gateway protocol (`N-NMID-RequestType: HTTP_DO_WORK`):
/// the guard then authorizes it as a call, and the catch-all route makes it one.
pub fn is_gateway(headers: &HeaderMap) -> bool {
    headers
        .get(NMID_REQUEST_TYPE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"HTTP_DO_WORK"))
}

/// Cancels its job when dropped while armed.
struct CancelOnDrop(Option<Addr<JobActor>>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(job) = self.0.take() {
            JobActor::cancel(&job);
        }
    }
}

/// The response body: of the function's own content type when it said, else JSON when the
/// data is JSON, text when UTF-8, else bytes.
pub(super) fn data_response(data: CallData) -> HttpResponse {
    if let Some(content_type) = data.content_type {
        return HttpResponse::Ok()
            .content_type(content_type)
            .body(data.bytes);
    }
    let content_type = super::error::sniffed_content_type(&data.bytes, data.ret_struct);
    HttpResponse::Ok()
        .content_type(content_type)
        .body(data.bytes)
}

/// The worker's params from a `/call` body with `content_type` (the header's value, if
/// any): msgpack as is; a JSON object as a msgpack map (or, with `pass_json`, the JSON as
/// is); a raw body (`text/plain`, `application/octet-stream`) as its bytes, which must not
/// be empty (the function learns the media type from the call's metadata). No content
/// type, or an empty one, is JSON, as curl's `-d` users expect; an empty JSON body is the
/// empty map.
pub fn call_params(
    content_type: Option<&[u8]>,
    body: Bytes,
    pass_json: bool,
) -> Result<(Bytes, ParamsType), HttpError> {
    let content_type = content_type.filter(|v| !v.trim_ascii().is_empty());
    let Some(content_type) = content_type else {
        return json_body_params(body, pass_json);
    };
    // The two usual values without parsing a media type.
    match content_type {
        b"application/msgpack" => return msgpack_body_params(body),
        b"application/json" => return json_body_params(body, pass_json),
        _ => {}
    }
    let unsupported =
        || HttpError::UnsupportedMediaType(String::from_utf8_lossy(content_type).into_owned());
    let mime: mime::Mime = (std::str::from_utf8(content_type).ok())
        .and_then(|text| text.parse().ok())
        .ok_or_else(unsupported)?;
    match (mime.type_(), mime.subtype().as_str()) {
        (mime::APPLICATION, "msgpack" | "x-msgpack" | "vnd.msgpack") => msgpack_body_params(body),
        (mime::APPLICATION, "json") => json_body_params(body, pass_json),
        (mime::TEXT, "plain") | (mime::APPLICATION, "octet-stream") => raw_body_params(body),
        _ => Err(unsupported()),
    }
}

/// Whether `content_type`, one that [`call_params`] accepted, is a raw body's.
fn is_raw(content_type: &[u8]) -> bool {
    let starts = |prefix: &[u8]| {
        (content_type.get(..prefix.len())).is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    };
    starts(b"text/plain") || starts(b"application/octet-stream")
}

/// The params of a raw body: its bytes, which must not be empty.
fn raw_body_params(body: Bytes) -> Result<(Bytes, ParamsType), HttpError> {
    if body.is_empty() {
        return Err(HttpError::BadRequest("empty body".to_owned()));
    }
    Ok((body, ParamsType::MSGPACK))
}

/// The params of a msgpack body: the body as is, which must not be empty.
fn msgpack_body_params(body: Bytes) -> Result<(Bytes, ParamsType), HttpError> {
    if body.is_empty() {
        return Err(HttpError::BadRequest("empty msgpack body".to_owned()));
    }
    Ok((body, ParamsType::MSGPACK))
}

/// A call as the HTTP front end makes it: trace context from the headers.
fn new_call(
    headers: &HeaderMap,
    function: &str,
    params: Bytes,
    params_type: ParamsType,
    timeout: Duration,
) -> CallSpec {
    let function = Bytes::copy_from_slice(function.as_bytes());
    let mut call = CallSpec::new(function, params_type, HANDLE_TYPE_ENCODE, params, timeout);
    call.meta = trace_meta(headers);
    call
}

/// The params of a JSON body (empty means `{}`): a msgpack map, or the JSON as is with
/// `pass_json`.
fn json_body_params(body: Bytes, pass_json: bool) -> Result<(Bytes, ParamsType), HttpError> {
    let body = if body.is_empty() {
        Bytes::from_static(b"{}")
    } else {
        body
    };
    let params_type = if pass_json {
        ParamsType::JSON
    } else {
        ParamsType::MSGPACK
    };
    Ok((json_params(&body, pass_json)?, params_type))
}

/// Checks a JSON body; returns it as is (`pass_json`) or as a msgpack map.
fn json_params(body: &Bytes, pass_json: bool) -> Result<Bytes, HttpError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| HttpError::BadRequest(format!("body is not valid JSON: {e}")))?;
    if pass_json {
        return Ok(body.clone());
    }
    if !value.is_object() {
        return Err(HttpError::BadRequest(
            "JSON body must be an object (it becomes the worker's msgpack map); use ?params=json to pass other JSON".to_owned(),
        ));
    }
    rmp_serde::to_vec_named(&value)
        .map(Bytes::from)
        .map_err(|e| HttpError::Internal(format!("cannot encode params: {e}")))
}

pub(super) fn timeout_from(headers: &HeaderMap, default: Duration) -> Result<Duration, HttpError> {
    let Some(value) = headers.get(TIMEOUT_HEADER) else {
        return Ok(default);
    };
    if headers.get_all(TIMEOUT_HEADER).nth(1).is_some() {
        return Err(HttpError::BadRequest(
            "X-NMID-Timeout-Ms given twice".to_owned(),
        ));
    }
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|ms| *ms > 0)
        .map(|ms| Duration::from_millis(u64::from(ms)))
        .ok_or_else(|| {
            HttpError::BadRequest(
                "X-NMID-Timeout-Ms must be a whole number of milliseconds, 1 to 4294967295"
                    .to_owned(),
            )
        })
}

/// W3C trace context headers, carried to tagged workers as call metadata.
fn trace_meta(headers: &HeaderMap) -> Option<Arc<Metadata>> {
    let meta: Metadata = ["traceparent", "tracestate"]
        .iter()
        .filter_map(|key| {
            headers.get(*key).map(|v| {
                (
                    Bytes::from_static(key.as_bytes()),
                    Bytes::copy_from_slice(v.as_bytes()),
                )
            })
        })
        .collect();
    (!meta.is_empty()).then(|| Arc::new(meta))
}
