//! The one error type of the client library: every way a call can fail, to match on.

use nmid_proto::codec::{CodecError, ErrorCode};

/// Why a call returned no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The dispatcher could not be reached.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The address tried.
        addr: String,
        /// The operating system's reason.
        reason: String,
    },
    /// A discovering client found no live dispatcher in etcd (none registered, all draining,
    /// or every one tried failed).
    #[error("no dispatcher available in the cluster")]
    NoDispatcher,
    /// The connection dropped while the call was in flight (its outcome is unknown).
    #[error("connection to the dispatcher lost")]
    ConnectionLost,
    /// No worker serves the function.
    #[error("no worker serves this function")]
    NoWorker,
    /// The dispatcher refused the call for load.
    #[error("rate limited: every worker is busy and the queue is full")]
    RateLimited,
    /// Every worker of the function has an open circuit breaker (v1 `BREAKER`): it keeps
    /// failing there; try again after the dispatcher's `breaker.open_timeout_ms`.
    #[error("circuit breaker open: no worker of this function takes calls right now")]
    BreakerOpen,
    /// The call's deadline passed.
    #[error("call timed out")]
    Timeout,
    /// The job's worker was lost and no retry was possible.
    #[error("worker lost while running the call")]
    WorkerLost,
    /// The request was invalid (empty function name or params).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The dispatcher is shutting down.
    #[error("dispatcher is shutting down")]
    ShuttingDown,
    /// The call is larger than the dispatcher or its workers accept (`tcp.max_frame_bytes`),
    /// or than this client sends (`max_frame_bytes`, checked before sending); nothing was
    /// sent to a worker. The message says which limit.
    #[error("call too large: {0}")]
    TooLarge(String),
    /// The worker's function reported a failure (tagged workers), with its message.
    #[error("worker error: {0}")]
    WorkerError(String),
    /// The function answered with a RetStruct whose `Code` is not 0.
    #[error("function failed with code {code}: {message}")]
    Function {
        /// The RetStruct `Code`.
        code: i64,
        /// The RetStruct `Msg`.
        message: String,
    },
    /// A v1 dispatcher answered `ERROR`: bad request, timeout or lost worker (v1 does not
    /// say which).
    #[error("the call failed (v1 ERROR)")]
    Failed,
    /// The dispatcher sent an error code this library does not know.
    #[error("call failed with code {code}: {message}")]
    Other {
        /// The code.
        code: u32,
        /// The dispatcher's message.
        message: String,
    },
    /// The dispatcher refused the token (or none was given and it needs one); the message is
    /// the dispatcher's reason.
    #[error("not authorized: {0}")]
    Unauthorized(String),
    /// A streaming call ([`Client::call_stream`](crate::Client::call_stream)) whose caller
    /// read its partial results too slowly: the dispatcher holds at most
    /// `jobs.max_partial_bytes_buffered` of them for it, then fails the call.
    #[error("slow caller: {0}")]
    SlowCaller(String),
    /// The token's grant does not cover the function (`[auth]` on the dispatcher).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The params could not be encoded.
    #[error("cannot encode params: {0}")]
    Encode(String),
    /// The result could not be decoded as expected.
    #[error("cannot decode result: {0}")]
    Decode(String),
    /// The dispatcher sent bytes that are not valid frames.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// No background job has this id on the dispatcher, or it is another caller's (with
    /// `[auth]` on a client sees only its own jobs). Results are kept for the job's result
    /// TTL only.
    #[error("job not found: {0}")]
    JobNotFound(String),
    /// The dispatcher's job store is full (`jobs.max_stored_jobs`, `jobs.max_stored_bytes`)
    /// or could not write: the submission was not accepted; try again later.
    #[error("job store full: {0}")]
    StoreFull(String),
    /// Only a queued job can be cancelled; this one is running or over.
    #[error("job not cancellable: {0}")]
    NotCancellable(String),
    /// This client cannot do that: background jobs need the tagged protocol to one
    /// dispatcher (not `Protocol::V1`, not a discovering client).
    #[error("not supported: {0}")]
    Unsupported(String),
}

impl ClientError {
    /// A short label of the error's kind, for span attributes and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect { .. } | Self::NoDispatcher => "connect",
            Self::ConnectionLost => "connection_lost",
            Self::NoWorker => "cant_do",
            Self::RateLimited => "rate_limited",
            Self::BreakerOpen => "breaker_open",
            Self::Timeout => "timeout",
            Self::WorkerLost => "worker_lost",
            Self::BadRequest(_) => "bad_request",
            Self::ShuttingDown => "shutting_down",
            Self::TooLarge(_) => "too_large",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::SlowCaller(_) => "slow_caller",
            Self::WorkerError(_) | Self::Function { .. } | Self::Failed | Self::Other { .. } => {
                "error"
            }
            Self::Encode(_) | Self::Decode(_) | Self::Protocol(_) => "protocol",
            Self::JobNotFound(_) => "job_not_found",
            Self::StoreFull(_) => "store_full",
            Self::NotCancellable(_) => "not_cancellable",
            Self::Unsupported(_) => "unsupported",
        }
    }

    /// The error for an `S_CALL_ERROR` code and message.
    pub(crate) fn from_code(code: ErrorCode, message: &[u8]) -> Self {
        let message = String::from_utf8_lossy(message).into_owned();
        match code {
            ErrorCode::BAD_REQUEST => Self::BadRequest(cause(message, "bad request")),
            ErrorCode::NO_WORKER => Self::NoWorker,
            ErrorCode::RATE_LIMITED => Self::RateLimited,
            ErrorCode::BREAKER_OPEN => Self::BreakerOpen,
            ErrorCode::TIMEOUT => Self::Timeout,
            ErrorCode::WORKER_LOST => Self::WorkerLost,
            ErrorCode::WORKER_ERROR => Self::WorkerError(message),
            ErrorCode::SHUTTING_DOWN => Self::ShuttingDown,
            ErrorCode::TOO_LARGE => Self::TooLarge(cause(message, "call too large")),
            ErrorCode::FORBIDDEN => Self::Forbidden(cause(message, "forbidden")),
            ErrorCode::SLOW_CALLER => Self::SlowCaller(cause(message, "slow caller")),
            ErrorCode::JOB_NOT_FOUND => Self::JobNotFound(cause(message, "no such job")),
            ErrorCode::STORE_FULL => Self::StoreFull(cause(message, "job store full")),
            ErrorCode::NOT_CANCELLABLE => Self::NotCancellable(message),
            ErrorCode(code) => Self::Other { code, message },
        }
    }
}

/// The cause in a dispatcher's error `message`, which is its whole error ("call too large:
/// its job would exceed ..."): the variant's own words (`kind`) come off, since its message
/// prints them before the cause; a message without them is kept whole.
fn cause(message: String, kind: &str) -> String {
    match message.split_once(": ") {
        Some((said, cause)) if said == kind => cause.to_owned(),
        _ => message,
    }
}

impl From<CodecError> for ClientError {
    fn from(err: CodecError) -> Self {
        match err {
            CodecError::Io(_) => Self::ConnectionLost,
            other => Self::Protocol(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dispatcher's message already names the error: the client prints it once.
    #[test]
    fn a_dispatcher_error_prints_its_kind_once() {
        let cases = [
            (
                ErrorCode::TOO_LARGE,
                "call too large: its job would exceed tcp.max_frame_bytes",
            ),
            (
                ErrorCode::BAD_REQUEST,
                "bad request: empty function name or params",
            ),
            (
                ErrorCode::FORBIDDEN,
                "forbidden: this caller may not call this function",
            ),
        ];
        for (code, message) in cases {
            let err = ClientError::from_code(code, message.as_bytes());
            assert_eq!(err.to_string(), message);
        }
        let other = ClientError::from_code(ErrorCode::TOO_LARGE, b"over 64 KiB");
        assert_eq!(other.to_string(), "call too large: over 64 KiB");
    }
}
