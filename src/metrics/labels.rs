//! The label values of the dispatcher's metrics: closed enums, so no peer can add one.

use serde::Serialize;

use crate::call::{CallOutcome, DispatchError};

/// How a call ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The worker answered, and not with a failure.
    Ok,
    /// The function failed: its worker reported an error (tagged `W_JOB_ERROR`), or answered
    /// a RetStruct whose `Code` is not 0 (nmid-faas: a non-zero exit, an upstream's 5xx
    /// status). Label `error`.
    FunctionError,
    /// The function refused the call as the caller's fault: a RetStruct `Code` from 400 to
    /// 499 (an http function's upstream 4xx; [`crate::retstruct::is_client_error`]). Not a
    /// failure of the function: left out of the error ratio.
    ClientError,
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
    /// The caller's grant does not cover the function (`[auth]`).
    Forbidden,
    /// Refused: every worker of the function has an open circuit breaker.
    BreakerOpen,
}

impl Outcome {
    /// Every outcome, in counter order.
    pub const ALL: [Outcome; 11] = [
        Outcome::Ok,
        Outcome::FunctionError,
        Outcome::ClientError,
        Outcome::CantDo,
        Outcome::RateLimited,
        Outcome::Timeout,
        Outcome::WorkerLost,
        Outcome::BadRequest,
        Outcome::ShuttingDown,
        Outcome::Forbidden,
        Outcome::BreakerOpen,
    ];

    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::FunctionError => "error",
            Outcome::ClientError => "client_error",
            Outcome::CantDo => "cant_do",
            Outcome::RateLimited => "rate_limited",
            Outcome::Timeout => "timeout",
            Outcome::WorkerLost => "worker_lost",
            Outcome::BadRequest => "bad_request",
            Outcome::ShuttingDown => "shutting_down",
            Outcome::Forbidden => "forbidden",
            Outcome::BreakerOpen => "breaker_open",
        }
    }

    /// Whether the call counts as an error (`stats`, `top`, the dashboard, the error-ratio
    /// alert): every outcome but `ok` and `client_error`.
    pub fn is_error(self) -> bool {
        !matches!(self, Outcome::Ok | Outcome::ClientError)
    }

    /// The outcome of the `outcome` label `label`.
    pub fn of_label(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == label)
    }

    /// The outcome of a job. A result's RetStruct `Code` is peeked at
    /// ([`crate::retstruct::peek_code`]): 400 to 499 is the caller's fault, any other but 0
    /// a failed function.
    pub fn of(outcome: &CallOutcome) -> Self {
        match outcome {
            CallOutcome::Done(ret) => match crate::retstruct::peek_code(ret) {
                Some(code) if crate::retstruct::is_client_error(code) => Outcome::ClientError,
                Some(code) if code != 0 => Outcome::FunctionError,
                _ => Outcome::Ok,
            },
            CallOutcome::WorkerFailed(_) => Outcome::FunctionError,
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
            DispatchError::TooLarge => Outcome::BadRequest,
            DispatchError::Forbidden => Outcome::Forbidden,
            DispatchError::BreakerOpen => Outcome::BreakerOpen,
            // The caller's doing: it does not read what it asked for.
            DispatchError::SlowCaller => Outcome::ClientError,
        }
    }
}

/// A limit a peer ran into, for `nmid_limit_hits_total{limit}` (docs/limits.md lists each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `tcp.max_connections`: a connection was closed at accept.
    Connections,
    /// `tcp.max_connections_per_ip`: a connection was closed at accept.
    ConnectionsPerIp,
    /// `tcp.handshake_timeout_ms`: no first frame in time.
    Handshake,
    /// `tcp.frame_timeout_ms`: a frame did not arrive whole in time.
    FrameTimeout,
    /// `tcp.max_incomplete_frame_bytes`: too many bytes in frames not yet whole.
    IncompleteFrames,
    /// `tcp.max_outbound_bytes`: a peer's frames were held back until it read its replies.
    Backpressure,
    /// `tcp.slow_consumer_timeout_ms`: a peer stayed over the outbound bound and was closed.
    SlowConsumer,
    /// `tcp.client_idle_timeout_ms`: an idle client was closed.
    ClientIdle,
    /// `workers.max_function_name_bytes` or `workers.max_worker_name_bytes`.
    NameTooLong,
    /// `workers.max_functions_per_worker`.
    FunctionsPerWorker,
    /// `workers.max_control_frames_per_second`: a worker's frames were read more slowly.
    ControlFrames,
    /// `tcp.max_frame_bytes` on the way out: a call or result too large for its receiver.
    OutboundFrameSize,
    /// `tcp.max_frame_bytes` on the way in: a header announced a larger body.
    InboundFrameSize,
    /// `http.max_connections_per_ip`: an HTTP connection was closed at accept.
    HttpConnectionsPerIp,
    /// `http.body_timeout_ms`: a request body did not arrive whole in time (408).
    HttpBodyTimeout,
    /// `http.max_receiving_body_bytes`: too many body bytes being received at once (503).
    HttpBodyBytes,
    /// `jobs.max_partial_bytes_buffered`: a streaming caller read its partials too slowly;
    /// the call failed `slow_caller`.
    PartialBacklog,
}

impl Limit {
    /// Every limit, in label order.
    pub const ALL: [Limit; 17] = [
        Limit::Connections,
        Limit::ConnectionsPerIp,
        Limit::Handshake,
        Limit::FrameTimeout,
        Limit::IncompleteFrames,
        Limit::Backpressure,
        Limit::SlowConsumer,
        Limit::ClientIdle,
        Limit::NameTooLong,
        Limit::FunctionsPerWorker,
        Limit::ControlFrames,
        Limit::OutboundFrameSize,
        Limit::InboundFrameSize,
        Limit::HttpConnectionsPerIp,
        Limit::HttpBodyTimeout,
        Limit::HttpBodyBytes,
        Limit::PartialBacklog,
    ];

    /// The `limit` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Connections => "connections",
            Limit::ConnectionsPerIp => "connections_per_ip",
            Limit::Handshake => "handshake_timeout",
            Limit::FrameTimeout => "frame_timeout",
            Limit::IncompleteFrames => "incomplete_frame_bytes",
            Limit::Backpressure => "outbound_backpressure",
            Limit::SlowConsumer => "slow_consumer",
            Limit::ClientIdle => "client_idle_timeout",
            Limit::NameTooLong => "name_too_long",
            Limit::FunctionsPerWorker => "functions_per_worker",
            Limit::ControlFrames => "control_frame_rate",
            Limit::OutboundFrameSize => "outbound_frame_size",
            Limit::InboundFrameSize => "inbound_frame_size",
            Limit::HttpConnectionsPerIp => "http_connections_per_ip",
            Limit::HttpBodyTimeout => "http_body_timeout",
            Limit::HttpBodyBytes => "http_body_bytes",
            Limit::PartialBacklog => "partial_backlog",
        }
    }
}

/// Why a peer or a request was refused by `[security]`, `[auth]` or `[tls]`, for
/// `nmid_security_refusals_total{reason}` (docs/security.md lists each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its address is denied, or not allowed (`security.allow` / `security.deny`).
    Address,
    /// A TLS handshake failed (or a plaintext peer where only TLS is accepted).
    Tls,
    /// A secret matched no token.
    BadToken,
    /// No token was presented and no `auth.v1_peers` entry matches the peer.
    NoGrant,
    /// The grant lacks the role: a worker without `worker`, a client without `client`, an
    /// admin request without `admin`.
    Role,
    /// A call of a function the grant does not cover.
    Call,
    /// A registration of a function the grant does not cover.
    Serve,
    /// A reload revoked the grant (or denied the address) of an open connection.
    Revoked,
}

impl Refusal {
    /// Every reason, in label order.
    pub const ALL: [Refusal; 8] = [
        Refusal::Address,
        Refusal::Tls,
        Refusal::BadToken,
        Refusal::NoGrant,
        Refusal::Role,
        Refusal::Call,
        Refusal::Serve,
        Refusal::Revoked,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Address => "address",
            Refusal::Tls => "tls",
            Refusal::BadToken => "bad_token",
            Refusal::NoGrant => "no_grant",
            Refusal::Role => "role",
            Refusal::Call => "call",
            Refusal::Serve => "serve",
            Refusal::Revoked => "revoked",
        }
    }
}

/// A frame nmid's server accepts though it is not as the protocol says, and so do we.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leniency {
    /// `W_GRAB_JOB` with a body (nmid's C SDK sends one byte).
    GrabJobBody,
    /// Bytes after a complete `W_RETURN_DATA` (nmid's Go SDK, two jobs in flight).
    ReturnDataTrailing,
    /// A `W_RETURN_DATA` whose body cannot be read, though its frame is whole: only the job
    /// it names (if any) fails.
    ReturnDataMalformed,
    /// A `W_RETURN_DATA` whose echoed function or params are not its job's: it answered
    /// another job (nmid's Go SDK race); that answer is discarded, not delivered.
    ReturnDataMismatch,
}

impl Leniency {
    /// Every kind, in label order.
    pub const ALL: [Leniency; 4] = [
        Leniency::GrabJobBody,
        Leniency::ReturnDataTrailing,
        Leniency::ReturnDataMalformed,
        Leniency::ReturnDataMismatch,
    ];

    /// The `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Leniency::GrabJobBody => "grab_job_body",
            Leniency::ReturnDataTrailing => "return_data_trailing_bytes",
            Leniency::ReturnDataMalformed => "return_data_malformed",
            Leniency::ReturnDataMismatch => "return_data_mismatch",
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
    /// The `role` label.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Role::Undecided => "undecided",
            Role::Client => "client",
            Role::Worker => "worker",
        }
    }
}
