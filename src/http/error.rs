//! The HTTP front end's one error type: each variant's status code and JSON body, in one
//! place. Bodies are `{"error": "<message>", "code": "<code>"}`.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::call::DispatchError;

/// Why an HTTP call got no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// No worker has ever served the function: 404.
    #[error("no such function: {0}")]
    UnknownFunction(String),
    /// The function was served, but no worker serves it now: 503.
    #[error("no worker serves {0} right now")]
    NoWorker(String),
    /// The body or a header cannot be used: 400.
    #[error("{0}")]
    BadRequest(String),
    /// The body is over `http.max_body_bytes`: 413.
    #[error("request body over the {0}-byte limit")]
    BodyTooLarge(usize),
    /// The body did not arrive whole within `http.body_timeout_ms`: 408.
    #[error("request body not received within {0} ms")]
    BodyTimeout(u64),
    /// Bodies being received would hold more than `http.max_receiving_body_bytes`: 503 with
    /// `Retry-After`.
    #[error("busy: too many request body bytes being received at once; retry")]
    Busy,
    /// The body's content type is not JSON, msgpack or raw: 415.
    #[error("unsupported content type {0:?}: send application/json, application/msgpack, text/plain or application/octet-stream")]
    UnsupportedMediaType(String),
    /// The function answered with a RetStruct whose `Code` is not 0: a `Code` from 400 to
    /// 499 is that status (an http function's upstream said so), with the function's `Data`
    /// as the body when it has one; any other is 502 with its `Msg`.
    #[error("{message}")]
    Function {
        /// The RetStruct `Code`.
        code: i64,
        /// The RetStruct `Msg`.
        message: String,
        /// The RetStruct `Data`.
        data: bytes::Bytes,
        /// The RetStruct `ContentType`, if it said.
        content_type: Option<String>,
    },
    /// A tagged worker reported its function failed: 502 with its message.
    #[error("{0}")]
    WorkerError(String),
    /// The worker was lost and no retry was possible: 502.
    #[error("worker lost while running the call")]
    WorkerLost,
    /// The deadline passed: 504.
    #[error("call timed out")]
    Timeout,
    /// Every worker busy and the queue full: 429 with `Retry-After`.
    #[error("rate limited: every worker is busy and the queue is full")]
    RateLimited,
    /// Over a configured rate limit (`[rate_limit]`): 429 with `Retry-After` in whole
    /// seconds, from the limiter's wait.
    #[error("{refusal}")]
    OverRateLimit {
        /// Which limit, and for how long.
        refusal: crate::rate_limit::Refusal,
    },
    /// Every worker of the function has an open circuit breaker: 503.
    #[error("circuit breaker open: no worker of {0} takes calls right now")]
    BreakerOpen(String),
    /// Shutting down: 503.
    #[error("dispatcher is shutting down")]
    ShuttingDown,
    /// The call's job would be larger than workers accept: 413.
    #[error("call too large: its job would exceed the dispatcher's tcp.max_frame_bytes")]
    TooLarge,
    /// A streaming (SSE) caller read its partial results too slowly
    /// (`jobs.max_partial_bytes_buffered`); only ever sent as an SSE `error` event, whose
    /// response has begun with 200 (429 otherwise).
    #[error("slow caller: the caller reads its partial results too slowly (more than jobs.max_partial_bytes_buffered waited to be written to it)")]
    SlowCaller,
    /// No credentials, or a secret no token has: 401 with `WWW-Authenticate`.
    #[error("unauthorized: send Authorization: Bearer <token secret>")]
    Unauthorized,
    /// The credentials' grant does not cover the request (the role or the function): 403.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// No background job has this id (or the caller may not see it): 404.
    #[error("no such job: {0}")]
    JobNotFound(String),
    /// The background jobs' store is full: 429 with `Retry-After`.
    #[error("{0}")]
    StoreFull(String),
    /// The dispatcher failed to answer (an actor was gone): 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl HttpError {
    /// The error for a call that failed with `error` on `function`.
    pub fn from_call(error: DispatchError, function: &str) -> Self {
        match error {
            DispatchError::BadRequest => {
                Self::BadRequest("empty function name or params".to_owned())
            }
            DispatchError::UnknownFunction => Self::UnknownFunction(function.to_owned()),
            DispatchError::NoWorker => Self::NoWorker(function.to_owned()),
            DispatchError::RateLimited => Self::RateLimited,
            DispatchError::Timeout => Self::Timeout,
            DispatchError::WorkerLost => Self::WorkerLost,
            DispatchError::ShuttingDown => Self::ShuttingDown,
            DispatchError::TooLarge => Self::TooLarge,
            DispatchError::Forbidden => {
                Self::Forbidden(format!("this token may not call {function}"))
            }
            DispatchError::BreakerOpen => Self::BreakerOpen(function.to_owned()),
            DispatchError::SlowCaller => Self::SlowCaller,
        }
    }

    /// The machine-readable `code` of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            HttpError::UnknownFunction(_) => "unknown_function",
            HttpError::NoWorker(_) => "no_worker",
            HttpError::BadRequest(_) => "bad_request",
            HttpError::BodyTooLarge(_) => "body_too_large",
            HttpError::BodyTimeout(_) => "body_timeout",
            HttpError::Busy => "busy",
            HttpError::UnsupportedMediaType(_) => "unsupported_media_type",
            HttpError::Function { .. } => "function_error",
            HttpError::WorkerError(_) => "worker_error",
            HttpError::WorkerLost => "worker_lost",
            HttpError::Timeout => "timeout",
            HttpError::RateLimited | HttpError::OverRateLimit { .. } => "rate_limited",
            HttpError::BreakerOpen(_) => "breaker_open",
            HttpError::ShuttingDown => "shutting_down",
            HttpError::TooLarge => "too_large",
            HttpError::SlowCaller => "slow_caller",
            HttpError::Unauthorized => "unauthorized",
            HttpError::Forbidden(_) => "forbidden",
            HttpError::JobNotFound(_) => "job_not_found",
            HttpError::StoreFull(_) => "store_full",
            HttpError::Internal(_) => "internal",
        }
    }

    /// nmid's gateway name for the error (`N-NMID-MessageStatusType`): the v1 frame a TCP
    /// client would have received.
    pub fn nmid_status_type(&self) -> &'static str {
        match self {
            HttpError::UnknownFunction(_) | HttpError::NoWorker(_) => "PDT_CANT_DO",
            HttpError::RateLimited | HttpError::OverRateLimit { .. } => "PDT_RATELIMIT",
            HttpError::BreakerOpen(_) => "PDT_BREAKER",
            _ => "PDT_ERROR",
        }
    }
}

/// The content type of result bytes that did not say theirs: JSON when they are JSON, text
/// when UTF-8, else bytes (`application/msgpack` for a worker's own result, which is
/// msgpack by nmid's convention).
pub(super) fn sniffed_content_type(bytes: &[u8], ret_struct: bool) -> &'static str {
    if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() {
        "application/json"
    } else if std::str::from_utf8(bytes).is_ok() {
        "text/plain; charset=utf-8"
    } else if ret_struct {
        "application/octet-stream"
    } else {
        "application/msgpack"
    }
}

/// The status of a function's `Code` that is an HTTP client error
/// ([`crate::retstruct::is_client_error`]), kept as the
/// caller's status; `None` for any other code.
fn client_error(code: i64) -> Option<StatusCode> {
    crate::retstruct::is_client_error(code)
        .then(|| StatusCode::from_u16(u16::try_from(code).ok()?).ok())
        .flatten()
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: String,
    code: &'a str,
}

impl ResponseError for HttpError {
    fn status_code(&self) -> StatusCode {
        match self {
            HttpError::UnknownFunction(_) | HttpError::JobNotFound(_) => StatusCode::NOT_FOUND,
            HttpError::NoWorker(_)
            | HttpError::ShuttingDown
            | HttpError::BreakerOpen(_)
            | HttpError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::BodyTooLarge(_) | HttpError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            HttpError::Function { code, .. } => {
                client_error(*code).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            HttpError::WorkerError(_) | HttpError::WorkerLost => StatusCode::BAD_GATEWAY,
            HttpError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            HttpError::RateLimited
            | HttpError::OverRateLimit { .. }
            | HttpError::StoreFull(_)
            | HttpError::SlowCaller => StatusCode::TOO_MANY_REQUESTS,
            HttpError::Unauthorized => StatusCode::UNAUTHORIZED,
            HttpError::Forbidden(_) => StatusCode::FORBIDDEN,
            HttpError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            HttpError::Function {
                code,
                data,
                content_type,
                ..
            } if client_error(*code).is_some() && !data.is_empty() => {
                let content_type =
                    (content_type.as_deref()).unwrap_or_else(|| sniffed_content_type(data, true));
                return response.content_type(content_type).body(data.clone());
            }
            HttpError::RateLimited | HttpError::StoreFull(_) => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
            }
            HttpError::Busy | HttpError::BodyTimeout(_) => {
                // The rest of the body is not read: the connection goes with it.
                response.force_close();
                if *self == HttpError::Busy {
                    response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
                }
            }
            HttpError::OverRateLimit { refusal } => {
                let secs = HeaderValue::from(refusal.retry_after_secs());
                response.insert_header((header::RETRY_AFTER, secs));
            }
            HttpError::Unauthorized => {
                // Bearer for programs; Basic (any user name, the secret as the password) lets
                // a browser ask for it, so the dashboard works with auth on.
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="nmid", Basic realm="nmid""#),
                ));
            }
            _ => {}
        }
        response.json(ErrorBody {
            error: self.to_string(),
            code: self.code(),
        })
    }
}
