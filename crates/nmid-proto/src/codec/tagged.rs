//! The bodies of the tagged extension frames (data types 100 and up; see [`super`] for their
//! layout): calls and jobs carry an id, a time budget and metadata, so they pipeline.
//!
//! As in `v1`, each body spells out its fields in wire order; bodies with the same layout
//! share one struct ([`TaggedCall`], [`TaggedResult`], [`TaggedPartial`], [`TaggedProgress`]),
//! the rest repeat the shape on purpose.

use bytes::{BufMut, Bytes, BytesMut};

use super::body::{put_field, Body, BodyReader, ConnType, DataType, Kind};
use super::v1::ParamsType;
use super::CodecError;

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
    /// The call is larger than the frames its worker accepts.
    pub const TOO_LARGE: Self = Self(8);
    /// Every worker of the function has an open circuit breaker (v1: `BREAKER`).
    pub const BREAKER_OPEN: Self = Self(9);
    /// The caller's grant does not cover the function (`[auth]`).
    pub const FORBIDDEN: Self = Self(10);
    /// A streaming caller (`C_CALL_STREAM`, SSE) reads its partial results too slowly: more
    /// than `jobs.max_partial_bytes_buffered` of them waited to be written to it.
    pub const SLOW_CALLER: Self = Self(11);
    /// No background job has this id, or the caller may not see it (`C_JOB_STATUS`,
    /// `C_JOB_CANCEL`).
    pub const JOB_NOT_FOUND: Self = Self(12);
    /// The job store is full (`jobs.max_stored_jobs`, `jobs.max_stored_bytes`): `C_SUBMIT`
    /// refused.
    pub const STORE_FULL: Self = Self(13);
    /// The job is running or over: only a queued job can be cancelled (`C_JOB_CANCEL`).
    pub const NOT_CANCELLABLE: Self = Self(14);
}

pub(super) const C_CALL: Kind = Kind::new(ConnType::Client, DataType::C_CALL, "C_CALL");
pub(super) const C_CALL_STREAM: Kind =
    Kind::new(ConnType::Client, DataType::C_CALL_STREAM, "C_CALL_STREAM");
pub(super) const S_CALL_PARTIAL: Kind =
    Kind::new(ConnType::Server, DataType::S_CALL_PARTIAL, "S_CALL_PARTIAL");
pub(super) const S_CALL_PROGRESS: Kind = Kind::new(
    ConnType::Server,
    DataType::S_CALL_PROGRESS,
    "S_CALL_PROGRESS",
);
pub(super) const W_JOB_PARTIAL: Kind =
    Kind::new(ConnType::Worker, DataType::W_JOB_PARTIAL, "W_JOB_PARTIAL");
pub(super) const W_JOB_PROGRESS: Kind =
    Kind::new(ConnType::Worker, DataType::W_JOB_PROGRESS, "W_JOB_PROGRESS");
pub(super) const S_JOB: Kind = Kind::new(ConnType::Server, DataType::S_JOB, "S_JOB");
pub(super) const W_JOB_RESULT: Kind =
    Kind::new(ConnType::Worker, DataType::W_JOB_RESULT, "W_JOB_RESULT");
pub(super) const S_CALL_RESULT: Kind =
    Kind::new(ConnType::Server, DataType::S_CALL_RESULT, "S_CALL_RESULT");
pub(super) const S_CALL_ERROR: Kind =
    Kind::new(ConnType::Server, DataType::S_CALL_ERROR, "S_CALL_ERROR");
pub(super) const W_JOB_ERROR: Kind =
    Kind::new(ConnType::Worker, DataType::W_JOB_ERROR, "W_JOB_ERROR");
pub(super) const W_SLOTS: Kind = Kind::new(ConnType::Worker, DataType::W_SLOTS, "W_SLOTS");
pub(super) const C_AUTH: Kind = Kind::new(ConnType::Client, DataType::AUTH, "C_AUTH");
pub(super) const W_AUTH: Kind = Kind::new(ConnType::Worker, DataType::AUTH, "W_AUTH");
pub(super) const S_AUTH_RESULT: Kind =
    Kind::new(ConnType::Server, DataType::S_AUTH_RESULT, "S_AUTH_RESULT");
pub(super) const C_SUBMIT: Kind = Kind::new(ConnType::Client, DataType::C_SUBMIT, "C_SUBMIT");
pub(super) const S_SUBMITTED: Kind =
    Kind::new(ConnType::Server, DataType::S_SUBMITTED, "S_SUBMITTED");
pub(super) const C_JOB_STATUS: Kind =
    Kind::new(ConnType::Client, DataType::C_JOB_STATUS, "C_JOB_STATUS");
pub(super) const S_JOB_STATUS: Kind =
    Kind::new(ConnType::Server, DataType::S_JOB_STATUS, "S_JOB_STATUS");
pub(super) const C_JOB_CANCEL: Kind =
    Kind::new(ConnType::Client, DataType::C_JOB_CANCEL, "C_JOB_CANCEL");

/// The tagged kinds with a body, the frames of a call first.
pub(super) const KINDS: [Kind; 20] = [
    C_CALL,
    S_JOB,
    W_JOB_RESULT,
    S_CALL_RESULT,
    S_CALL_ERROR,
    W_JOB_ERROR,
    W_JOB_PARTIAL,
    S_CALL_PARTIAL,
    W_JOB_PROGRESS,
    S_CALL_PROGRESS,
    C_CALL_STREAM,
    W_SLOTS,
    C_AUTH,
    W_AUTH,
    S_AUTH_RESULT,
    C_SUBMIT,
    S_SUBMITTED,
    C_JOB_STATUS,
    S_JOB_STATUS,
    C_JOB_CANCEL,
];

/// The body of `C_CALL` (100, client -> server, `id` the client's request id), of `S_JOB`
/// (111, server -> tagged worker, `id` the dispatcher's job id) and of `C_SUBMIT` (130,
/// client -> server: a background job, its options in `meta`): the same fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedCall {
    /// `C_CALL`: chosen by the client, echoed in the reply, so calls pipeline on one
    /// connection. `S_JOB`: the job id the worker echoes in its result.
    pub id: u64,
    /// The time budget in milliseconds. `C_CALL`: 0 means the dispatcher's default;
    /// `S_JOB`: the time left before the caller stops waiting.
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

impl TaggedCall {
    /// Reads the body; `id` names the id field in errors (`request_id` or `job_id`).
    pub(super) fn read(r: &mut BodyReader, id: &'static str) -> Result<Self, CodecError> {
        Ok(Self {
            id: r.u64(id)?,
            timeout_ms: r.u32("timeout_ms")?,
            params_type: ParamsType(r.u32("params_type")?),
            handle_type: r.u32("params_handle_type")?,
            function: r.field("handle")?,
            params: r.field("params")?,
            meta: read_meta(r)?,
        })
    }
}

impl Body for TaggedCall {
    fn body_len(&self) -> usize {
        28 + self.function.len() + self.params.len() + meta_len(&self.meta)
    }

    fn write(&self, dst: &mut BytesMut) {
        dst.put_u64(self.id);
        dst.put_u32(self.timeout_ms);
        dst.put_u32(self.params_type.0);
        dst.put_u32(self.handle_type);
        put_field(dst, &self.function);
        put_field(dst, &self.params);
        dst.put_u32(self.meta.len() as u32);
        for (key, value) in &self.meta {
            put_field(dst, key);
            put_field(dst, value);
        }
    }
}

/// The body of `S_CALL_RESULT` (101, server -> client, `id` the call's request id) and of
/// `W_JOB_RESULT` (112, worker -> server, `id` the job id from `S_JOB`): the same fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedResult {
    /// `S_CALL_RESULT`: the request id of the call. `W_JOB_RESULT`: the job id.
    pub id: u64,
    /// The worker's result bytes.
    pub ret: Bytes,
}

impl TaggedResult {
    /// Reads the body; `id` names the id field in errors (`request_id` or `job_id`).
    pub(super) fn read(r: &mut BodyReader, id: &'static str) -> Result<Self, CodecError> {
        Ok(Self {
            id: r.u64(id)?,
            ret: r.field("ret")?,
        })
    }
}

impl Body for TaggedResult {
    fn body_len(&self) -> usize {
        12 + self.ret.len()
    }

    fn write(&self, dst: &mut BytesMut) {
        dst.put_u64(self.id);
        put_field(dst, &self.ret);
    }
}

/// The body of `S_CALL_PARTIAL` (104, server -> client, `id` the call's request id) and of
/// `W_JOB_PARTIAL` (116, worker -> server, `id` the job id from `S_JOB`): one partial result
/// of a call, before its final answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedPartial {
    /// `S_CALL_PARTIAL`: the request id of the call. `W_JOB_PARTIAL`: the job id.
    pub id: u64,
    /// The partial result's bytes, opaque here.
    pub data: Bytes,
}

impl TaggedPartial {
    /// Reads the body; `id` names the id field in errors (`request_id` or `job_id`).
    pub(super) fn read(r: &mut BodyReader, id: &'static str) -> Result<Self, CodecError> {
        Ok(Self {
            id: r.u64(id)?,
            data: r.field("data")?,
        })
    }
}

impl Body for TaggedPartial {
    fn body_len(&self) -> usize {
        12 + self.data.len()
    }

    fn write(&self, dst: &mut BytesMut) {
        dst.put_u64(self.id);
        put_field(dst, &self.data);
    }
}

/// The body of `S_CALL_PROGRESS` (105, server -> client) and of `W_JOB_PROGRESS` (117,
/// worker -> server): how far a call has come, `numerator` of `denominator` (gearman's
/// `WORK_STATUS`; the numbers mean what the worker means by them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaggedProgress {
    /// `S_CALL_PROGRESS`: the request id of the call. `W_JOB_PROGRESS`: the job id.
    pub id: u64,
    /// Work done.
    pub numerator: u64,
    /// Work in all.
    pub denominator: u64,
}

impl TaggedProgress {
    /// Reads the body; `id` names the id field in errors (`request_id` or `job_id`).
    pub(super) fn read(r: &mut BodyReader, id: &'static str) -> Result<Self, CodecError> {
        Ok(Self {
            id: r.u64(id)?,
            numerator: r.u64("numerator")?,
            denominator: r.u64("denominator")?,
        })
    }
}

impl Body for TaggedProgress {
    fn body_len(&self) -> usize {
        24
    }

    fn write(&self, dst: &mut BytesMut) {
        dst.put_u64(self.id);
        dst.put_u64(self.numerator);
        dst.put_u64(self.denominator);
    }
}

/// `S_CALL_ERROR` (102), server -> client: why a tagged call got no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SCallError {
    /// The request id of the call.
    pub request_id: u64,
    /// What went wrong.
    pub code: ErrorCode,
    /// A human-readable message (the worker's, for `WORKER_ERROR`).
    pub message: Bytes,
}

impl SCallError {
    pub(super) fn read(r: &mut BodyReader) -> Result<Self, CodecError> {
        Ok(Self {
            request_id: r.u64("request_id")?,
            code: ErrorCode(r.u32("code")?),
            message: r.field("message")?,
        })
    }
}

impl Body for SCallError {
    fn body_len(&self) -> usize {
        16 + self.message.len()
    }

    fn write(&self, dst: &mut BytesMut) {
        dst.put_u64(self.request_id);
        dst.put_u32(self.code.0);
        put_field(dst, &self.message);
    }
}

/// `W_JOB_ERROR` (113), worker -> server: a tagged job's function failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WJobError {
    /// The job id from `S_JOB`.
    pub job_id: u64,
    /// Why, for the caller.
    pub message: Bytes,
}

impl WJobError {
    pub(super) fn read(r: &mut BodyReader) -> Result<Self, CodecError> {
        Ok(Self {
            job_id: r.u64("job_id")?,
            message: r.field("message")?,
        })
    }
}

impl Body for WJobError {
    fn body_len(&self) -> usize {
        12 + self.message.len()
    }

    fn write(&self, dst: &mut BytesMut) {
        dst.put_u64(self.job_id);
        put_field(dst, &self.message);
    }
}

/// `S_AUTH_RESULT` (121), server -> client or worker: the answer to its `AUTH` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SAuthResult {
    /// [`SAuthResult::ACCEPTED`], or why not.
    pub code: u32,
    /// Accepted: the grant's name (`token <name>`); refused: the reason.
    pub message: Bytes,
}

impl SAuthResult {
    /// The token is valid and grants the role the connection asked for.
    pub const ACCEPTED: u32 = 0;
    /// No token has this secret, or the token lacks the role; the connection closes.
    pub const REFUSED: u32 = 1;

    pub(super) fn read(r: &mut BodyReader) -> Result<Self, CodecError> {
        Ok(Self {
            code: r.u32("code")?,
            message: r.field("message")?,
        })
    }
}

impl Body for SAuthResult {
    fn body_len(&self) -> usize {
        8 + self.message.len()
    }

    fn write(&self, dst: &mut BytesMut) {
        dst.put_u32(self.code);
        put_field(dst, &self.message);
    }
}

/// `S_SUBMITTED` (131), server -> client: a `C_SUBMIT` was accepted as job `job_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SSubmitted {
    /// The request id of the `C_SUBMIT`.
    pub request_id: u64,
    /// The submission joined the queued or running job with the same unique key (on the
    /// wire a `u32`, 0 or 1).
    pub shared: bool,
    /// The job's id (`node-seq`), for `C_JOB_STATUS` and `C_JOB_CANCEL`.
    pub job_id: Bytes,
}

impl SSubmitted {
    pub(super) fn read(r: &mut BodyReader) -> Result<Self, CodecError> {
        Ok(Self {
            request_id: r.u64("request_id")?,
            shared: r.u32("shared")? != 0,
            job_id: r.field("job_id")?,
        })
    }
}

impl Body for SSubmitted {
    fn body_len(&self) -> usize {
        16 + self.job_id.len()
    }

    fn write(&self, dst: &mut BytesMut) {
        dst.put_u64(self.request_id);
        dst.put_u32(u32::from(self.shared));
        put_field(dst, &self.job_id);
    }
}

/// `C_JOB_STATUS` (132), client -> server: the state of job `job_id`, answered with
/// `S_JOB_STATUS` (or `S_CALL_ERROR`), after at most `wait_ms` for it to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CJobStatus {
    /// Chosen by the client, echoed in the answer.
    pub request_id: u64,
    /// Wait this long (capped by the dispatcher's `jobs.timeout_ms`) for the job to end
    /// before answering; 0 answers at once.
    pub wait_ms: u32,
    /// The job's id, as `S_SUBMITTED` gave it.
    pub job_id: Bytes,
}

impl CJobStatus {
    pub(super) fn read(r: &mut BodyReader) -> Result<Self, CodecError> {
        Ok(Self {
            request_id: r.u64("request_id")?,
            wait_ms: r.u32("wait_ms")?,
            job_id: r.field("job_id")?,
        })
    }
}

impl Body for CJobStatus {
    fn body_len(&self) -> usize {
        16 + self.job_id.len()
    }

    fn write(&self, dst: &mut BytesMut) {
        dst.put_u64(self.request_id);
        dst.put_u32(self.wait_ms);
        put_field(dst, &self.job_id);
    }
}

/// `C_JOB_CANCEL` (134), client -> server: cancel queued job `job_id`; answered with
/// `S_JOB_STATUS` (the cancelled job) or `S_CALL_ERROR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CJobCancel {
    /// Chosen by the client, echoed in the answer.
    pub request_id: u64,
    /// The job's id.
    pub job_id: Bytes,
}

impl CJobCancel {
    pub(super) fn read(r: &mut BodyReader) -> Result<Self, CodecError> {
        Ok(Self {
            request_id: r.u64("request_id")?,
            job_id: r.field("job_id")?,
        })
    }
}

impl Body for CJobCancel {
    fn body_len(&self) -> usize {
        12 + self.job_id.len()
    }

    fn write(&self, dst: &mut BytesMut) {
        dst.put_u64(self.request_id);
        put_field(dst, &self.job_id);
    }
}

/// A background job's state on the wire (`S_JOB_STATUS`'s `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JobStateCode(pub u32);

impl JobStateCode {
    /// Waiting for its time or a worker.
    pub const QUEUED: Self = Self(0);
    /// An attempt is running.
    pub const RUNNING: Self = Self(1);
    /// Over: `output` is the result.
    pub const SUCCEEDED: Self = Self(2);
    /// Over: `output` is the error message, `error_code` says why.
    pub const FAILED: Self = Self(3);
    /// Over: cancelled while queued.
    pub const CANCELLED: Self = Self(4);
}

/// `S_JOB_STATUS` (133), server -> client: a background job as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SJobStatus {
    /// The request id of the `C_JOB_STATUS` or `C_JOB_CANCEL`.
    pub request_id: u64,
    /// Queued, running, succeeded, failed or cancelled.
    pub state: JobStateCode,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts at most.
    pub max_attempts: u32,
    /// The worker's last progress report (`0/0`: none).
    pub progress_numerator: u64,
    /// See `progress_numerator`.
    pub progress_denominator: u64,
    /// The job's function.
    pub function: Bytes,
    /// Succeeded: the result; failed: the error message; else empty.
    pub output: Bytes,
    /// Failed: why, as a short name (`worker_error`, `timeout`, ...); else empty.
    pub error_code: Bytes,
}

impl SJobStatus {
    pub(super) fn read(r: &mut BodyReader) -> Result<Self, CodecError> {
        Ok(Self {
            request_id: r.u64("request_id")?,
            state: JobStateCode(r.u32("state")?),
            attempts: r.u32("attempts")?,
            max_attempts: r.u32("max_attempts")?,
            progress_numerator: r.u64("progress_numerator")?,
            progress_denominator: r.u64("progress_denominator")?,
            function: r.field("function")?,
            output: r.field("output")?,
            error_code: r.field("error_code")?,
        })
    }
}

impl Body for SJobStatus {
    fn body_len(&self) -> usize {
        48 + self.function.len() + self.output.len() + self.error_code.len()
    }

    fn write(&self, dst: &mut BytesMut) {
        dst.put_u64(self.request_id);
        dst.put_u32(self.state.0);
        dst.put_u32(self.attempts);
        dst.put_u32(self.max_attempts);
        dst.put_u64(self.progress_numerator);
        dst.put_u64(self.progress_denominator);
        put_field(dst, &self.function);
        put_field(dst, &self.output);
        put_field(dst, &self.error_code);
    }
}

/// `W_SLOTS`: the body is the slot count.
impl Body for u32 {
    fn body_len(&self) -> usize {
        4
    }

    fn write(&self, dst: &mut BytesMut) {
        dst.put_u32(*self);
    }
}

/// `count u32`, then that many key/value fields. The count cannot make us allocate more than
/// the body could hold (each pair takes at least 8 bytes).
fn read_meta(r: &mut BodyReader) -> Result<Metadata, CodecError> {
    let count = r.u32("meta_count")? as usize;
    let mut meta = Vec::with_capacity(count.min(r.remaining() / 8));
    for _ in 0..count {
        let key = r.field("meta_key")?;
        let value = r.field("meta_value")?;
        meta.push((key, value));
    }
    Ok(meta)
}

fn meta_len(meta: &Metadata) -> usize {
    4 + meta
        .iter()
        .map(|(k, v)| 8 + k.len() + v.len())
        .sum::<usize>()
}
