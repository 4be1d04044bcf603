//! The dispatcher's actors, one per file, with the messages each one receives beside it.
//!
//! One call, bytes in to bytes out:
//!
//! 1. [`connection::Connection`] (one per TCP connection) decodes a client's `C_DO_JOB` and
//!    starts a [`job::Job`] actor for it.
//! 2. The job sends [`registry::Dispatch`] to the [`registry::Registry`], which picks the
//!    least-loaded [`worker::Worker`] of the function (or queues the call, or refuses it) and
//!    sends it [`worker::Assign`] with a [`job::JobLease`].
//! 3. The worker writes `S_GET_DATA` through its connection and keeps the lease under the job
//!    id. The worker program's `W_RETURN_DATA` is matched by that id, and the lease hands the
//!    result to its job; a lease dropped unanswered (worker gone) tells the job at once.
//! 4. The job answers the caller's connection with a [`job::JobReply`], which writes
//!    `S_RETURN_DATA` (or `CANT_DO`, `ERROR`, `RATELIMIT`).

pub mod connection;
pub mod job;
pub mod registry;
pub mod worker;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::codec::{ErrorCode, Metadata, ParamsType};

/// Identifies one call for its whole life, retries included. On the wire (v1) it is the
/// decimal text of the number, which workers echo back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub u64);

impl JobId {
    /// A process-wide unique id.
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// The id as v1 workers see it.
    pub fn to_wire(self) -> Bytes {
        Bytes::from(self.0.to_string())
    }

    /// Parses an id echoed by a worker; `None` for anything we did not send.
    pub fn from_wire(bytes: &[u8]) -> Option<Self> {
        std::str::from_utf8(bytes).ok()?.parse().ok().map(Self)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Identifies one worker connection for as long as it is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId(pub u64);

impl WorkerId {
    /// A process-wide unique id.
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A function name as it travels on the wire: bytes, cheap to clone, shown lossily as UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FunctionName(pub Bytes);

impl fmt::Display for FunctionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl From<&str> for FunctionName {
    fn from(name: &str) -> Self {
        Self(Bytes::copy_from_slice(name.as_bytes()))
    }
}

/// What a worker needs to run a call: everything of `C_DO_JOB` but the sender.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The function to run.
    pub function: FunctionName,
    /// How `params` is encoded, passed through.
    pub params_type: ParamsType,
    /// `params_handle_type`, passed through.
    pub handle_type: u32,
    /// The call's parameters, opaque here.
    pub params: Bytes,
    /// The caller's metadata (trace context), if it sent any (tagged calls only).
    pub meta: Option<Arc<Metadata>>,
    /// When the caller stops waiting; tagged workers are told the time left.
    pub deadline: Instant,
}

/// Why a call got no result. Each maps to one v1 reply frame (see
/// [`connection`]) and, for tagged peers, to an [`ErrorCode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Empty function name or empty params.
    #[error("bad request: empty function name or params")]
    BadRequest,
    /// The function was served once, but no worker serves it now.
    #[error("no worker serves this function")]
    NoWorker,
    /// No worker has ever registered the function.
    #[error("no such function")]
    UnknownFunction,
    /// Every worker is full and the function's queue is full too.
    #[error("rate limited: every worker is busy and the queue is full")]
    RateLimited,
    /// The call's deadline passed.
    #[error("deadline exceeded")]
    Timeout,
    /// The job's worker disconnected or went silent, and no retry was possible.
    #[error("worker lost while running the job")]
    WorkerLost,
    /// The dispatcher is shutting down and takes no new calls.
    #[error("dispatcher is shutting down")]
    ShuttingDown,
}

impl CallError {
    /// The tagged protocol's code for this error.
    pub fn code(self) -> ErrorCode {
        match self {
            CallError::BadRequest => ErrorCode::BAD_REQUEST,
            CallError::NoWorker | CallError::UnknownFunction => ErrorCode::NO_WORKER,
            CallError::RateLimited => ErrorCode::RATE_LIMITED,
            CallError::Timeout => ErrorCode::TIMEOUT,
            CallError::WorkerLost => ErrorCode::WORKER_LOST,
            CallError::ShuttingDown => ErrorCode::SHUTTING_DOWN,
        }
    }
}

/// How a call ended, as its job reports it to the caller's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// The worker's result bytes.
    Done(Bytes),
    /// The worker reported its function failed, with this message (tagged workers only).
    WorkerFailed(Bytes),
    /// The dispatcher could not get a result.
    Failed(CallError),
}
