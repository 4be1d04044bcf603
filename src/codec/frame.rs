//! Typed frames of protocol v1: who sends each one and what its body holds.

use bytes::Bytes;

/// `conn_type`: who sent a frame. A connection's role is the `conn_type` of its frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ConnType {
    /// The dispatcher.
    Server = 1,
    /// A worker that serves functions.
    Worker = 2,
    /// A client that calls functions.
    Client = 3,
    /// A sidecar service; defined by nmid, sent by no current SDK.
    Service = 4,
}

impl ConnType {
    /// The type for a wire value, if it is one of the four.
    pub fn from_u32(value: u32) -> Option<Self> {
        match value {
            1 => Some(Self::Server),
            2 => Some(Self::Worker),
            3 => Some(Self::Client),
            4 => Some(Self::Service),
            _ => None,
        }
    }
}

/// `data_type` values of protocol v1, named as nmid names them.
///
/// Value 23 is both `W_SET_NAME` (from a worker) and `S_HEARTBEAT_PONG` (from the server).
#[derive(Debug)]
pub struct DataType;

#[allow(missing_docs)]
impl DataType {
    pub const OK: u32 = 1;
    pub const ERROR: u32 = 2;
    pub const CAN_DO: u32 = 3;
    pub const CANT_DO: u32 = 4;
    pub const NO_JOB: u32 = 5;
    pub const HAVE_JOB: u32 = 6;
    pub const TOSLEEP: u32 = 7;
    pub const WAKEUP: u32 = 8;
    pub const WAKEUPED: u32 = 9;
    pub const S_GET_DATA: u32 = 10;
    pub const S_RETURN_DATA: u32 = 11;
    pub const W_GRAB_JOB: u32 = 12;
    pub const W_ADD_FUNC: u32 = 13;
    pub const W_DEL_FUNC: u32 = 14;
    pub const W_RETURN_DATA: u32 = 15;
    pub const C_DO_JOB: u32 = 16;
    pub const C_GET_DATA: u32 = 17;
    pub const RATELIMIT: u32 = 18;
    pub const BREAKER: u32 = 19;
    pub const W_HEARTBEAT_PING: u32 = 22;
    pub const W_SET_NAME: u32 = 23;
    pub const S_HEARTBEAT_PONG: u32 = 23;
    // Tagged extension frames (100 and up): never sent to a peer that did not send one first.
    pub const C_CALL: u32 = 100;
    pub const S_CALL_RESULT: u32 = 101;
    pub const S_CALL_ERROR: u32 = 102;
    pub const W_SLOTS: u32 = 110;
    pub const S_JOB: u32 = 111;
    pub const W_JOB_RESULT: u32 = 112;
    pub const W_JOB_ERROR: u32 = 113;
    pub const W_BYE: u32 = 114;
    pub const S_BYE_ACK: u32 = 115;
}

/// Metadata of a tagged call or job: ordered key/value pairs such as `traceparent` and
/// `tracestate`. On the wire: `count u32`, then `len(key) key len(value) value` per pair.
pub type Metadata = Vec<(Bytes, Bytes)>;

/// Why a tagged call failed (`S_CALL_ERROR`), as a number a caller can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u32);

impl ErrorCode {
    /// Empty function name or params, or an invalid request.
    pub const BAD_REQUEST: Self = Self(1);
    /// No worker serves the function.
    pub const NO_WORKER: Self = Self(2);
    /// Every worker is full and the queue is full.
    pub const RATE_LIMITED: Self = Self(3);
    /// The call's deadline passed.
    pub const TIMEOUT: Self = Self(4);
    /// The job's worker was lost and no retry was possible.
    pub const WORKER_LOST: Self = Self(5);
    /// The worker's function failed (`W_JOB_ERROR`); the message is the worker's.
    pub const WORKER_ERROR: Self = Self(6);
    /// The dispatcher is shutting down.
    pub const SHUTTING_DOWN: Self = Self(7);
}

/// `C_CALL` (100), client -> server: a call tagged with the client's request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Chosen by the client; echoed in the reply, so calls pipeline on one connection.
    pub request_id: u64,
    /// The call's time budget in milliseconds; 0 means the dispatcher's default.
    pub timeout_ms: u32,
    /// How `params` is encoded.
    pub params_type: ParamsType,
    /// `params_handle_type`, passed through.
    pub handle_type: u32,
    /// The function name.
    pub function: Bytes,
    /// The call's parameters.
    pub params: Bytes,
    /// Trace context and other small metadata.
    pub meta: Metadata,
}

/// `S_CALL_RESULT` (101), server -> client: the result of a tagged call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallResult {
    /// The request id of the call.
    pub request_id: u64,
    /// The worker's result bytes.
    pub ret: Bytes,
}

/// `S_CALL_ERROR` (102), server -> client: why a tagged call got no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// The request id of the call.
    pub request_id: u64,
    /// What went wrong.
    pub code: ErrorCode,
    /// A human-readable message (the worker's, for `WORKER_ERROR`).
    pub message: Bytes,
}

/// `S_JOB` (111), server -> tagged worker: a job with its id, time budget and metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The dispatcher's job id, to echo in the result.
    pub job_id: u64,
    /// Milliseconds left before the caller stops waiting.
    pub timeout_ms: u32,
    /// How `params` is encoded.
    pub params_type: ParamsType,
    /// `params_handle_type`, as the client sent it.
    pub handle_type: u32,
    /// The function to run.
    pub function: Bytes,
    /// The call's parameters.
    pub params: Bytes,
    /// The call's metadata (trace context).
    pub meta: Metadata,
}

/// `W_JOB_RESULT` (112), worker -> server: a tagged job's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobResult {
    /// The job id from `S_JOB`.
    pub job_id: u64,
    /// The result bytes.
    pub ret: Bytes,
}

/// `W_JOB_ERROR` (113), worker -> server: a tagged job's function failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    /// The job id from `S_JOB`.
    pub job_id: u64,
    /// Why, for the caller.
    pub message: Bytes,
}

/// `params_type`: how the params bytes are encoded. Kept as the raw value so that any value a
/// peer sends is passed through unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParamsType(pub u32);

impl ParamsType {
    /// Params are a msgpack value (usually a map).
    pub const MSGPACK: Self = Self(5);
    /// Params are JSON text.
    pub const JSON: Self = Self(6);
}

/// `params_handle_type` 10: the SDK encoded the params (the SDKs' default).
pub const HANDLE_TYPE_ENCODE: u32 = 10;
/// `params_handle_type` 11: the params are passed through as the caller gave them.
pub const HANDLE_TYPE_ORIGINAL: u32 = 11;

/// `C_DO_JOB` (16), client -> server: a call of `function` with `params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoJob {
    /// How `params` is encoded.
    pub params_type: ParamsType,
    /// `params_handle_type`, passed through to the worker.
    pub handle_type: u32,
    /// The function name (nmid's "handle").
    pub function: Bytes,
    /// The call's parameters, opaque to the dispatcher.
    pub params: Bytes,
}

/// `S_GET_DATA` (10), server -> worker: a job to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetData {
    /// How `params` is encoded.
    pub params_type: ParamsType,
    /// `params_handle_type`, as the client sent it.
    pub handle_type: u32,
    /// The function to run.
    pub function: Bytes,
    /// The call's parameters.
    pub params: Bytes,
    /// The job id the worker must echo in its `W_RETURN_DATA`.
    pub job_id: Bytes,
}

/// `W_RETURN_DATA` (15), worker -> server: the result of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerReturn {
    /// The function, echoed.
    pub function: Bytes,
    /// The params, echoed.
    pub params: Bytes,
    /// The result (by convention a msgpack RetStruct map).
    pub ret: Bytes,
    /// The job id from the `S_GET_DATA` this answers.
    pub job_id: Bytes,
}

/// `S_RETURN_DATA` (11), server -> client: the result of a call. It carries no job id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnData {
    /// The function that was called.
    pub function: Bytes,
    /// The params of the call.
    pub params: Bytes,
    /// The worker's result.
    pub ret: Bytes,
}

/// One frame of protocol v1. The variant fixes both `conn_type` and `data_type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `OK` (1), server -> worker: registration accepted.
    Ok,
    /// `ERROR` (2), server -> client: the call failed (bad request, worker lost, timeout).
    Error,
    /// `CANT_DO` (4), server -> client: no worker serves the function.
    CantDo,
    /// `NO_JOB` (5), server -> worker.
    NoJob,
    /// `TOSLEEP` (7), server -> worker.
    ToSleep,
    /// `WAKEUPED` (9), server -> worker.
    Wakeuped,
    /// `S_GET_DATA` (10), server -> worker.
    GetData(GetData),
    /// `S_RETURN_DATA` (11), server -> client.
    ReturnData(ReturnData),
    /// `RATELIMIT` (18), server -> client: the call was refused for load.
    RateLimit,
    /// `BREAKER` (19), server -> client: circuit open.
    Breaker,
    /// `S_HEARTBEAT_PONG` (23 from the server), server -> worker.
    HeartbeatPong,
    /// `WAKEUP` (8), worker -> server.
    WakeUp,
    /// `W_GRAB_JOB` (12), worker -> server; needs no reply.
    GrabJob,
    /// `W_ADD_FUNC` (13), worker -> server: the worker serves `function`.
    AddFunc {
        /// The function name.
        function: Bytes,
    },
    /// `W_DEL_FUNC` (14), worker -> server: the worker no longer serves `function`.
    DelFunc {
        /// The function name.
        function: Bytes,
    },
    /// `W_RETURN_DATA` (15), worker -> server.
    WorkerReturn(WorkerReturn),
    /// `W_HEARTBEAT_PING` (22), worker -> server; the SDKs send the body `PING`.
    HeartbeatPing {
        /// The body as sent (kept so that the frame re-encodes byte-exactly).
        body: Bytes,
    },
    /// `W_SET_NAME` (23 from a worker), worker -> server.
    SetName {
        /// The worker's name.
        name: Bytes,
    },
    /// `C_DO_JOB` (16), client -> server.
    DoJob(DoJob),
    /// `C_CALL` (100), client -> server: a tagged call.
    Call(Call),
    /// `S_CALL_RESULT` (101), server -> client.
    CallResult(CallResult),
    /// `S_CALL_ERROR` (102), server -> client.
    CallError(CallError),
    /// `W_SLOTS` (110), worker -> server: the worker takes tagged jobs, at most `slots` at
    /// once. Answered with `OK`.
    Slots {
        /// Jobs the worker runs at once.
        slots: u32,
    },
    /// `S_JOB` (111), server -> tagged worker.
    Job(Job),
    /// `W_JOB_RESULT` (112), worker -> server.
    JobResult(JobResult),
    /// `W_JOB_ERROR` (113), worker -> server.
    JobError(JobError),
    /// `W_BYE` (114), worker -> server: send me no more jobs.
    Bye,
    /// `S_BYE_ACK` (115), server -> worker: every job for this worker has been sent.
    ByeAck,
}

impl Frame {
    /// The sender this frame belongs to, written as its `conn_type`.
    pub fn sender(&self) -> ConnType {
        match self {
            Frame::Ok
            | Frame::Error
            | Frame::CantDo
            | Frame::NoJob
            | Frame::ToSleep
            | Frame::Wakeuped
            | Frame::GetData(_)
            | Frame::ReturnData(_)
            | Frame::RateLimit
            | Frame::Breaker
            | Frame::HeartbeatPong
            | Frame::CallResult(_)
            | Frame::CallError(_)
            | Frame::Job(_)
            | Frame::ByeAck => ConnType::Server,
            Frame::WakeUp
            | Frame::GrabJob
            | Frame::AddFunc { .. }
            | Frame::DelFunc { .. }
            | Frame::WorkerReturn(_)
            | Frame::HeartbeatPing { .. }
            | Frame::SetName { .. }
            | Frame::Slots { .. }
            | Frame::JobResult(_)
            | Frame::JobError(_)
            | Frame::Bye => ConnType::Worker,
            Frame::DoJob(_) | Frame::Call(_) => ConnType::Client,
        }
    }

    /// The frame's `data_type`.
    pub fn data_type(&self) -> u32 {
        match self {
            Frame::Ok => DataType::OK,
            Frame::Error => DataType::ERROR,
            Frame::CantDo => DataType::CANT_DO,
            Frame::NoJob => DataType::NO_JOB,
            Frame::ToSleep => DataType::TOSLEEP,
            Frame::Wakeuped => DataType::WAKEUPED,
            Frame::GetData(_) => DataType::S_GET_DATA,
            Frame::ReturnData(_) => DataType::S_RETURN_DATA,
            Frame::RateLimit => DataType::RATELIMIT,
            Frame::Breaker => DataType::BREAKER,
            Frame::HeartbeatPong => DataType::S_HEARTBEAT_PONG,
            Frame::WakeUp => DataType::WAKEUP,
            Frame::GrabJob => DataType::W_GRAB_JOB,
            Frame::AddFunc { .. } => DataType::W_ADD_FUNC,
            Frame::DelFunc { .. } => DataType::W_DEL_FUNC,
            Frame::WorkerReturn(_) => DataType::W_RETURN_DATA,
            Frame::HeartbeatPing { .. } => DataType::W_HEARTBEAT_PING,
            Frame::SetName { .. } => DataType::W_SET_NAME,
            Frame::DoJob(_) => DataType::C_DO_JOB,
            Frame::Call(_) => DataType::C_CALL,
            Frame::CallResult(_) => DataType::S_CALL_RESULT,
            Frame::CallError(_) => DataType::S_CALL_ERROR,
            Frame::Slots { .. } => DataType::W_SLOTS,
            Frame::Job(_) => DataType::S_JOB,
            Frame::JobResult(_) => DataType::W_JOB_RESULT,
            Frame::JobError(_) => DataType::W_JOB_ERROR,
            Frame::Bye => DataType::W_BYE,
            Frame::ByeAck => DataType::S_BYE_ACK,
        }
    }

    /// nmid's name for the frame, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Ok => "OK",
            Frame::Error => "ERROR",
            Frame::CantDo => "CANT_DO",
            Frame::NoJob => "NO_JOB",
            Frame::ToSleep => "TOSLEEP",
            Frame::Wakeuped => "WAKEUPED",
            Frame::GetData(_) => "S_GET_DATA",
            Frame::ReturnData(_) => "S_RETURN_DATA",
            Frame::RateLimit => "RATELIMIT",
            Frame::Breaker => "BREAKER",
            Frame::HeartbeatPong => "S_HEARTBEAT_PONG",
            Frame::WakeUp => "WAKEUP",
            Frame::GrabJob => "W_GRAB_JOB",
            Frame::AddFunc { .. } => "W_ADD_FUNC",
            Frame::DelFunc { .. } => "W_DEL_FUNC",
            Frame::WorkerReturn(_) => "W_RETURN_DATA",
            Frame::HeartbeatPing { .. } => "W_HEARTBEAT_PING",
            Frame::SetName { .. } => "W_SET_NAME",
            Frame::DoJob(_) => "C_DO_JOB",
            Frame::Call(_) => "C_CALL",
            Frame::CallResult(_) => "S_CALL_RESULT",
            Frame::CallError(_) => "S_CALL_ERROR",
            Frame::Slots { .. } => "W_SLOTS",
            Frame::Job(_) => "S_JOB",
            Frame::JobResult(_) => "W_JOB_RESULT",
            Frame::JobError(_) => "W_JOB_ERROR",
            Frame::Bye => "W_BYE",
            Frame::ByeAck => "S_BYE_ACK",
        }
    }
}
