//! Bytes <-> [`Frame`]: the pure `decode`/`encode` pair and the thin `tokio_util` codec on top.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::frame::{
    Call, CallError, CallResult, ConnType, DataType, DoJob, ErrorCode, Frame, GetData, Job,
    JobError, JobResult, Metadata, ParamsType, ReturnData, WorkerReturn,
};
use super::CodecError;

/// Bytes in a frame header: `conn_type`, `data_type`, `body_len`, each a `u32`.
pub const HEADER_LEN: usize = 12;

/// The default limit on a frame body: 16 MiB, far above any sane RPC payload and far below
/// the 4 GiB a hostile header can announce.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// The most `decode` reserves at once for a body that has not arrived yet.
const MAX_RESERVE_STEP: usize = 64 * 1024;

/// The least `decode` reserves for a frame that has begun but not arrived whole: room for
/// the frames that follow it too, so a stream of 4 KiB frames is read several frames per
/// syscall rather than one (+25% calls/s at 4 KiB, +4% at 32 B in `make bench`). An idle
/// connection reserves nothing; a hostile header still gets no more than
/// [`MAX_RESERVE_STEP`].
const READ_AHEAD: usize = 32 * 1024;

/// Reads one frame from the front of `src`.
///
/// Returns `Ok(None)` while `src` holds less than a whole frame (nothing is consumed then), and
/// `Ok(Some(frame))` with the frame's bytes removed from `src`. A body announced larger than
/// `max_frame_bytes` is refused from the header alone, before anything is allocated.
pub fn decode(src: &mut BytesMut, max_frame_bytes: usize) -> Result<Option<Frame>, CodecError> {
    if src.len() < HEADER_LEN {
        if !src.is_empty() {
            // A frame has begun: make room for it and the frames behind it.
            src.reserve(READ_AHEAD);
        }
        return Ok(None);
    }
    let conn_type = u32::from_be_bytes([src[0], src[1], src[2], src[3]]);
    let data_type = u32::from_be_bytes([src[4], src[5], src[6], src[7]]);
    let body_len = u32::from_be_bytes([src[8], src[9], src[10], src[11]]) as usize;
    if body_len > max_frame_bytes {
        return Err(CodecError::FrameTooLarge {
            len: body_len as u64,
            max: max_frame_bytes,
        });
    }
    let sender = ConnType::from_u32(conn_type).ok_or(CodecError::UnknownConnType(conn_type))?;
    // Refuse a data type before waiting for its body: a bad header is bad at once.
    check_data_type(sender, data_type)?;
    if src.len() < HEADER_LEN + body_len {
        // Grow toward the announced size in bounded steps, so a 12-byte header alone cannot
        // make a connection hold `max_frame_bytes` of memory.
        let missing = HEADER_LEN + body_len - src.len();
        src.reserve(missing.clamp(READ_AHEAD, MAX_RESERVE_STEP));
        return Ok(None);
    }
    src.advance(HEADER_LEN);
    let body = src.split_to(body_len).freeze();
    parse_body(sender, data_type, body).map(Some)
}

/// Appends `frame`, header included, to `dst`.
pub fn encode(frame: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
    let body_len = encoded_len(frame) - HEADER_LEN;
    let body_len = u32::try_from(body_len).map_err(|_| CodecError::FieldTooLarge {
        frame: frame.name(),
    })?;
    dst.reserve(HEADER_LEN + body_len as usize);
    dst.put_u32(frame.sender() as u32);
    dst.put_u32(frame.data_type());
    dst.put_u32(body_len);
    match frame {
        Frame::DoJob(job) => {
            dst.put_u32(job.params_type.0);
            dst.put_u32(job.handle_type);
            put_field(dst, &job.function);
            put_field(dst, &job.params);
        }
        Frame::GetData(job) => {
            dst.put_u32(job.params_type.0);
            dst.put_u32(job.handle_type);
            dst.put_u32(job.function.len() as u32);
            dst.put_u32(job.params.len() as u32);
            dst.put_u32(job.job_id.len() as u32);
            dst.put_slice(&job.function);
            dst.put_slice(&job.params);
            dst.put_slice(&job.job_id);
        }
        Frame::WorkerReturn(ret) => {
            put_field(dst, &ret.function);
            put_field(dst, &ret.params);
            put_field(dst, &ret.ret);
            put_field(dst, &ret.job_id);
        }
        Frame::ReturnData(ret) => {
            dst.put_u32(ret.function.len() as u32);
            dst.put_u32(ret.params.len() as u32);
            dst.put_u32(ret.ret.len() as u32);
            dst.put_slice(&ret.function);
            dst.put_slice(&ret.params);
            dst.put_slice(&ret.ret);
        }
        Frame::Call(call) => {
            dst.put_u64(call.request_id);
            dst.put_u32(call.timeout_ms);
            dst.put_u32(call.params_type.0);
            dst.put_u32(call.handle_type);
            put_field(dst, &call.function);
            put_field(dst, &call.params);
            put_meta(dst, &call.meta);
        }
        Frame::Job(job) => {
            dst.put_u64(job.job_id);
            dst.put_u32(job.timeout_ms);
            dst.put_u32(job.params_type.0);
            dst.put_u32(job.handle_type);
            put_field(dst, &job.function);
            put_field(dst, &job.params);
            put_meta(dst, &job.meta);
        }
        Frame::CallResult(r) => {
            dst.put_u64(r.request_id);
            put_field(dst, &r.ret);
        }
        Frame::CallError(e) => {
            dst.put_u64(e.request_id);
            dst.put_u32(e.code.0);
            put_field(dst, &e.message);
        }
        Frame::JobResult(r) => {
            dst.put_u64(r.job_id);
            put_field(dst, &r.ret);
        }
        Frame::JobError(e) => {
            dst.put_u64(e.job_id);
            put_field(dst, &e.message);
        }
        Frame::Slots { slots } => dst.put_u32(*slots),
        Frame::AddFunc { function } | Frame::DelFunc { function } => dst.put_slice(function),
        Frame::HeartbeatPing { body } => dst.put_slice(body),
        Frame::SetName { name } => dst.put_slice(name),
        Frame::Ok
        | Frame::Error
        | Frame::CantDo
        | Frame::NoJob
        | Frame::ToSleep
        | Frame::Wakeuped
        | Frame::RateLimit
        | Frame::Breaker
        | Frame::HeartbeatPong
        | Frame::WakeUp
        | Frame::GrabJob
        | Frame::Bye
        | Frame::ByeAck => {}
    }
    Ok(())
}

/// The number of bytes `encode` writes for `frame`, header included.
pub fn encoded_len(frame: &Frame) -> usize {
    let body = match frame {
        Frame::DoJob(job) => 16 + job.function.len() + job.params.len(),
        Frame::GetData(job) => 20 + job.function.len() + job.params.len() + job.job_id.len(),
        Frame::WorkerReturn(r) => {
            16 + r.function.len() + r.params.len() + r.ret.len() + r.job_id.len()
        }
        Frame::ReturnData(r) => 12 + r.function.len() + r.params.len() + r.ret.len(),
        Frame::AddFunc { function } | Frame::DelFunc { function } => function.len(),
        Frame::HeartbeatPing { body } => body.len(),
        Frame::SetName { name } => name.len(),
        Frame::Call(c) => 28 + c.function.len() + c.params.len() + meta_len(&c.meta),
        Frame::Job(j) => 28 + j.function.len() + j.params.len() + meta_len(&j.meta),
        Frame::CallResult(r) => 12 + r.ret.len(),
        Frame::CallError(e) => 16 + e.message.len(),
        Frame::JobResult(r) => 12 + r.ret.len(),
        Frame::JobError(e) => 12 + e.message.len(),
        Frame::Slots { .. } => 4,
        Frame::Ok
        | Frame::Error
        | Frame::CantDo
        | Frame::NoJob
        | Frame::ToSleep
        | Frame::Wakeuped
        | Frame::RateLimit
        | Frame::Breaker
        | Frame::HeartbeatPong
        | Frame::WakeUp
        | Frame::GrabJob
        | Frame::Bye
        | Frame::ByeAck => 0,
    };
    HEADER_LEN + body
}

fn put_field(dst: &mut BytesMut, field: &[u8]) {
    dst.put_u32(field.len() as u32);
    dst.put_slice(field);
}

fn put_meta(dst: &mut BytesMut, meta: &Metadata) {
    dst.put_u32(meta.len() as u32);
    for (key, value) in meta {
        put_field(dst, key);
        put_field(dst, value);
    }
}

fn meta_len(meta: &Metadata) -> usize {
    4 + meta
        .iter()
        .map(|(k, v)| 8 + k.len() + v.len())
        .sum::<usize>()
}

fn check_data_type(sender: ConnType, data_type: u32) -> Result<(), CodecError> {
    let valid = match sender {
        ConnType::Server => matches!(
            data_type,
            DataType::OK
                | DataType::ERROR
                | DataType::CANT_DO
                | DataType::NO_JOB
                | DataType::TOSLEEP
                | DataType::WAKEUPED
                | DataType::S_GET_DATA
                | DataType::S_RETURN_DATA
                | DataType::RATELIMIT
                | DataType::BREAKER
                | DataType::S_HEARTBEAT_PONG
                | DataType::S_CALL_RESULT
                | DataType::S_CALL_ERROR
                | DataType::S_JOB
                | DataType::S_BYE_ACK
        ),
        ConnType::Worker => matches!(
            data_type,
            DataType::WAKEUP
                | DataType::W_GRAB_JOB
                | DataType::W_ADD_FUNC
                | DataType::W_DEL_FUNC
                | DataType::W_RETURN_DATA
                | DataType::W_HEARTBEAT_PING
                | DataType::W_SET_NAME
                | DataType::W_SLOTS
                | DataType::W_JOB_RESULT
                | DataType::W_JOB_ERROR
                | DataType::W_BYE
        ),
        ConnType::Client => matches!(data_type, DataType::C_DO_JOB | DataType::C_CALL),
        ConnType::Service => false,
    };
    if valid {
        Ok(())
    } else {
        Err(CodecError::UnknownDataType {
            conn_type: sender as u32,
            data_type,
        })
    }
}

fn parse_body(sender: ConnType, data_type: u32, body: Bytes) -> Result<Frame, CodecError> {
    let frame = match (sender, data_type) {
        (ConnType::Client, DataType::C_DO_JOB) => {
            let mut r = BodyReader::new("C_DO_JOB", body);
            let params_type = ParamsType(r.u32("params_type")?);
            let handle_type = r.u32("params_handle_type")?;
            let function = r.field("handle")?;
            let params = r.field("params")?;
            r.finish()?;
            Frame::DoJob(DoJob {
                params_type,
                handle_type,
                function,
                params,
            })
        }
        (ConnType::Worker, DataType::W_RETURN_DATA) => {
            let mut r = BodyReader::new("W_RETURN_DATA", body);
            let function = r.field("handle")?;
            let params = r.field("params")?;
            let ret = r.field("ret")?;
            let job_id = r.field("job_id")?;
            r.finish()?;
            Frame::WorkerReturn(WorkerReturn {
                function,
                params,
                ret,
                job_id,
            })
        }
        (ConnType::Server, DataType::S_GET_DATA) => {
            let mut r = BodyReader::new("S_GET_DATA", body);
            let params_type = ParamsType(r.u32("params_type")?);
            let handle_type = r.u32("params_handle_type")?;
            let function_len = r.u32("handle_len")? as usize;
            let params_len = r.u32("params_len")? as usize;
            let job_id_len = r.u32("job_id_len")? as usize;
            let function = r.bytes("handle", function_len)?;
            let params = r.bytes("params", params_len)?;
            let job_id = r.bytes("job_id", job_id_len)?;
            r.finish()?;
            Frame::GetData(GetData {
                params_type,
                handle_type,
                function,
                params,
                job_id,
            })
        }
        (ConnType::Server, DataType::S_RETURN_DATA) => {
            let mut r = BodyReader::new("S_RETURN_DATA", body);
            let function_len = r.u32("handle_len")? as usize;
            let params_len = r.u32("params_len")? as usize;
            let ret_len = r.u32("ret_len")? as usize;
            let function = r.bytes("handle", function_len)?;
            let params = r.bytes("params", params_len)?;
            let ret = r.bytes("ret", ret_len)?;
            r.finish()?;
            Frame::ReturnData(ReturnData {
                function,
                params,
                ret,
            })
        }
        (ConnType::Client, DataType::C_CALL) => {
            let mut r = BodyReader::new("C_CALL", body);
            let frame = Frame::Call(Call {
                request_id: r.u64("request_id")?,
                timeout_ms: r.u32("timeout_ms")?,
                params_type: ParamsType(r.u32("params_type")?),
                handle_type: r.u32("params_handle_type")?,
                function: r.field("handle")?,
                params: r.field("params")?,
                meta: r.meta()?,
            });
            r.finish()?;
            frame
        }
        (ConnType::Server, DataType::S_JOB) => {
            let mut r = BodyReader::new("S_JOB", body);
            let frame = Frame::Job(Job {
                job_id: r.u64("job_id")?,
                timeout_ms: r.u32("timeout_ms")?,
                params_type: ParamsType(r.u32("params_type")?),
                handle_type: r.u32("params_handle_type")?,
                function: r.field("handle")?,
                params: r.field("params")?,
                meta: r.meta()?,
            });
            r.finish()?;
            frame
        }
        (ConnType::Server, DataType::S_CALL_RESULT) => {
            let mut r = BodyReader::new("S_CALL_RESULT", body);
            let frame = Frame::CallResult(CallResult {
                request_id: r.u64("request_id")?,
                ret: r.field("ret")?,
            });
            r.finish()?;
            frame
        }
        (ConnType::Server, DataType::S_CALL_ERROR) => {
            let mut r = BodyReader::new("S_CALL_ERROR", body);
            let frame = Frame::CallError(CallError {
                request_id: r.u64("request_id")?,
                code: ErrorCode(r.u32("code")?),
                message: r.field("message")?,
            });
            r.finish()?;
            frame
        }
        (ConnType::Worker, DataType::W_JOB_RESULT) => {
            let mut r = BodyReader::new("W_JOB_RESULT", body);
            let frame = Frame::JobResult(JobResult {
                job_id: r.u64("job_id")?,
                ret: r.field("ret")?,
            });
            r.finish()?;
            frame
        }
        (ConnType::Worker, DataType::W_JOB_ERROR) => {
            let mut r = BodyReader::new("W_JOB_ERROR", body);
            let frame = Frame::JobError(JobError {
                job_id: r.u64("job_id")?,
                message: r.field("message")?,
            });
            r.finish()?;
            frame
        }
        (ConnType::Worker, DataType::W_SLOTS) => {
            let mut r = BodyReader::new("W_SLOTS", body);
            let slots = r.u32("slots")?;
            r.finish()?;
            Frame::Slots { slots }
        }
        (ConnType::Worker, DataType::W_BYE) => empty("W_BYE", body, Frame::Bye)?,
        (ConnType::Server, DataType::S_BYE_ACK) => empty("S_BYE_ACK", body, Frame::ByeAck)?,
        (ConnType::Worker, DataType::W_ADD_FUNC) => Frame::AddFunc { function: body },
        (ConnType::Worker, DataType::W_DEL_FUNC) => Frame::DelFunc { function: body },
        (ConnType::Worker, DataType::W_HEARTBEAT_PING) => Frame::HeartbeatPing { body },
        (ConnType::Worker, DataType::W_SET_NAME) => Frame::SetName { name: body },
        (ConnType::Worker, DataType::WAKEUP) => empty("WAKEUP", body, Frame::WakeUp)?,
        (ConnType::Worker, DataType::W_GRAB_JOB) => empty("W_GRAB_JOB", body, Frame::GrabJob)?,
        (ConnType::Server, DataType::OK) => empty("OK", body, Frame::Ok)?,
        (ConnType::Server, DataType::ERROR) => empty("ERROR", body, Frame::Error)?,
        (ConnType::Server, DataType::CANT_DO) => empty("CANT_DO", body, Frame::CantDo)?,
        (ConnType::Server, DataType::NO_JOB) => empty("NO_JOB", body, Frame::NoJob)?,
        (ConnType::Server, DataType::TOSLEEP) => empty("TOSLEEP", body, Frame::ToSleep)?,
        (ConnType::Server, DataType::WAKEUPED) => empty("WAKEUPED", body, Frame::Wakeuped)?,
        (ConnType::Server, DataType::RATELIMIT) => empty("RATELIMIT", body, Frame::RateLimit)?,
        (ConnType::Server, DataType::BREAKER) => empty("BREAKER", body, Frame::Breaker)?,
        (ConnType::Server, DataType::S_HEARTBEAT_PONG) => {
            empty("S_HEARTBEAT_PONG", body, Frame::HeartbeatPong)?
        }
        (sender, data_type) => {
            return Err(CodecError::UnknownDataType {
                conn_type: sender as u32,
                data_type,
            })
        }
    };
    Ok(frame)
}

/// A frame whose body must be empty.
fn empty(name: &'static str, body: Bytes, frame: Frame) -> Result<Frame, CodecError> {
    if body.is_empty() {
        Ok(frame)
    } else {
        Err(CodecError::TrailingBytes {
            frame: name,
            extra: body.len(),
        })
    }
}

/// Reads the fields of one body, refusing any length that overruns it.
struct BodyReader {
    frame: &'static str,
    body: Bytes,
}

impl BodyReader {
    fn new(frame: &'static str, body: Bytes) -> Self {
        Self { frame, body }
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, CodecError> {
        if self.body.len() < 4 {
            return Err(self.truncated(field));
        }
        Ok(self.body.get_u32())
    }

    fn bytes(&mut self, field: &'static str, len: usize) -> Result<Bytes, CodecError> {
        if self.body.len() < len {
            return Err(self.truncated(field));
        }
        Ok(self.body.split_to(len))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, CodecError> {
        if self.body.len() < 8 {
            return Err(self.truncated(field));
        }
        Ok(self.body.get_u64())
    }

    /// `count u32`, then that many key/value fields. The count cannot make us allocate more
    /// than the body could hold (each pair takes at least 8 bytes).
    fn meta(&mut self) -> Result<Metadata, CodecError> {
        let count = self.u32("meta_count")? as usize;
        let mut meta = Vec::with_capacity(count.min(self.body.len() / 8));
        for _ in 0..count {
            let key = self.field("meta_key")?;
            let value = self.field("meta_value")?;
            meta.push((key, value));
        }
        Ok(meta)
    }

    /// A `u32` length followed by that many bytes.
    fn field(&mut self, field: &'static str) -> Result<Bytes, CodecError> {
        let len = self.u32(field)? as usize;
        self.bytes(field, len)
    }

    fn finish(self) -> Result<(), CodecError> {
        if self.body.is_empty() {
            Ok(())
        } else {
            Err(CodecError::TrailingBytes {
                frame: self.frame,
                extra: self.body.len(),
            })
        }
    }

    fn truncated(&self, field: &'static str) -> CodecError {
        CodecError::Truncated {
            frame: self.frame,
            field,
        }
    }
}

/// The `tokio_util` codec over [`decode`] and [`encode`], for `Framed`, `FramedRead` and
/// actix's `FramedWrite`.
#[derive(Debug, Clone, Copy)]
pub struct NmidCodec {
    max_frame_bytes: usize,
}

impl NmidCodec {
    /// A codec that refuses bodies over `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        Self { max_frame_bytes }
    }
}

impl Default for NmidCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl Decoder for NmidCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        decode(src, self.max_frame_bytes)
    }
}

impl Encoder<Frame> for NmidCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        encode(&frame, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{HANDLE_TYPE_ENCODE, HANDLE_TYPE_ORIGINAL};
    use std::time::{Duration, Instant};

    // Fixture pairs: each `sample_x()` is the frame, `sample_x_bytes()` its exact wire form.

    /// A client's call of `ToUpper` with the msgpack map `{"name": "nmid"}`.
    fn sample_do_job() -> Frame {
        Frame::DoJob(DoJob {
            params_type: ParamsType::MSGPACK,
            handle_type: HANDLE_TYPE_ENCODE,
            function: Bytes::from_static(b"ToUpper"),
            params: Bytes::from_static(b"\x81\xa4name\xa4nmid"),
        })
    }

    fn sample_do_job_bytes() -> Vec<u8> {
        let parts: &[&[u8]] = &[
            &[0, 0, 0, 3],  // conn_type: client
            &[0, 0, 0, 16], // data_type: C_DO_JOB
            &[0, 0, 0, 34], // body_len
            &[0, 0, 0, 5],  // params_type: msgpack
            &[0, 0, 0, 10], // params_handle_type: encode
            &[0, 0, 0, 7],  // handle_len
            b"ToUpper",     // handle
            &[0, 0, 0, 11], // params_len
            &[0x81, 0xa4],  // params: fixmap(1), fixstr(4)
            b"name",        //   key
            &[0xa4],        //   fixstr(4)
            b"nmid",        //   value
        ];
        parts.concat()
    }

    /// A job pushed to a worker; JSON params passed through as the caller gave them.
    fn sample_get_data() -> Frame {
        Frame::GetData(GetData {
            params_type: ParamsType::JSON,
            handle_type: HANDLE_TYPE_ORIGINAL,
            function: Bytes::from_static(b"ToUpper"),
            params: Bytes::from_static(b"{\"a\":1}"),
            job_id: Bytes::from_static(b"job-1"),
        })
    }

    fn sample_get_data_bytes() -> Vec<u8> {
        let parts: &[&[u8]] = &[
            &[0, 0, 0, 1],  // conn_type: server
            &[0, 0, 0, 10], // data_type: S_GET_DATA
            &[0, 0, 0, 39], // body_len
            &[0, 0, 0, 6],  // params_type: JSON
            &[0, 0, 0, 11], // params_handle_type: original
            &[0, 0, 0, 7],  // handle_len
            &[0, 0, 0, 7],  // params_len
            &[0, 0, 0, 5],  // job_id_len
            b"ToUpper",     // handle
            b"{\"a\":1}",   // params
            b"job-1",       // job_id
        ];
        parts.concat()
    }

    /// A worker's result for `job-1`, echoing the handle and params it was given.
    fn sample_worker_return() -> Frame {
        Frame::WorkerReturn(WorkerReturn {
            function: Bytes::from_static(b"ToUpper"),
            params: Bytes::from_static(b"{\"a\":1}"),
            ret: Bytes::from_static(b"\x81\xa4Code\x00"),
            job_id: Bytes::from_static(b"job-1"),
        })
    }

    fn sample_worker_return_bytes() -> Vec<u8> {
        let parts: &[&[u8]] = &[
            &[0, 0, 0, 2],  // conn_type: worker
            &[0, 0, 0, 15], // data_type: W_RETURN_DATA
            &[0, 0, 0, 42], // body_len
            &[0, 0, 0, 7],  // handle_len
            b"ToUpper",     // handle
            &[0, 0, 0, 7],  // params_len
            b"{\"a\":1}",   // params
            &[0, 0, 0, 7],  // ret_len
            &[0x81, 0xa4],  // ret: fixmap(1), fixstr(4)
            b"Code",        //   key
            &[0x00],        //   value: positive fixint 0
            &[0, 0, 0, 5],  // job_id_len
            b"job-1",       // job_id
        ];
        parts.concat()
    }

    /// The result sent back to the calling client (no job id in v1).
    fn sample_return_data() -> Frame {
        Frame::ReturnData(ReturnData {
            function: Bytes::from_static(b"ToUpper"),
            params: Bytes::from_static(b"{\"a\":1}"),
            ret: Bytes::from_static(b"\x81\xa4Code\x00"),
        })
    }

    fn sample_return_data_bytes() -> Vec<u8> {
        let parts: &[&[u8]] = &[
            &[0, 0, 0, 1],  // conn_type: server
            &[0, 0, 0, 11], // data_type: S_RETURN_DATA
            &[0, 0, 0, 33], // body_len
            &[0, 0, 0, 7],  // handle_len
            &[0, 0, 0, 7],  // params_len
            &[0, 0, 0, 7],  // ret_len
            b"ToUpper",     // handle
            b"{\"a\":1}",   // params
            &[0x81, 0xa4],  // ret: fixmap(1), fixstr(4)
            b"Code",        //   key
            &[0x00],        //   value: positive fixint 0
        ];
        parts.concat()
    }

    /// A worker naming itself at start-up.
    fn sample_set_name() -> Frame {
        Frame::SetName {
            name: Bytes::from_static(b"Worker1"),
        }
    }

    fn sample_set_name_bytes() -> Vec<u8> {
        let parts: &[&[u8]] = &[
            &[0, 0, 0, 2],  // conn_type: worker
            &[0, 0, 0, 23], // data_type: W_SET_NAME (23 from a worker)
            &[0, 0, 0, 7],  // body_len
            b"Worker1",     // body: the worker's name, no length prefix
        ];
        parts.concat()
    }

    /// A worker's heartbeat, with the body every SDK sends.
    fn sample_heartbeat_ping() -> Frame {
        Frame::HeartbeatPing {
            body: Bytes::from_static(b"PING"),
        }
    }

    fn sample_heartbeat_ping_bytes() -> Vec<u8> {
        let parts: &[&[u8]] = &[
            &[0, 0, 0, 2],  // conn_type: worker
            &[0, 0, 0, 22], // data_type: W_HEARTBEAT_PING
            &[0, 0, 0, 4],  // body_len
            b"PING",        // body
        ];
        parts.concat()
    }

    // Tagged extension frames (data types 100 and up).

    /// W3C trace context of the tagged samples.
    const TRACEPARENT: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const TRACESTATE: &[u8] = b"congo=t61rcWkgMzE";

    /// A request id with bits in both halves, so that a u32 write of it would show.
    const REQUEST_ID: u64 = 0x0000_0001_0000_002a;
    /// A job id with the top bit set, so that a signed or narrowed write of it would show.
    const JOB_ID: u64 = 0x8000_0000_0000_0009;

    /// A client's tagged call of `ToUpper`, carrying trace context as two metadata pairs.
    fn sample_call() -> Frame {
        Frame::Call(Call {
            request_id: REQUEST_ID,
            timeout_ms: 5000,
            params_type: ParamsType::MSGPACK,
            handle_type: HANDLE_TYPE_ENCODE,
            function: Bytes::from_static(b"ToUpper"),
            params: Bytes::from_static(b"\x81\xa4name\xa4nmid"),
            meta: vec![
                (
                    Bytes::from_static(b"traceparent"),
                    Bytes::from_static(TRACEPARENT),
                ),
                (
                    Bytes::from_static(b"tracestate"),
                    Bytes::from_static(TRACESTATE),
                ),
            ],
        })
    }

    fn sample_call_bytes() -> Vec<u8> {
        let parts: &[&[u8]] = &[
            &[0, 0, 0, 3],                // conn_type: client
            &[0, 0, 0, 100],              // data_type: C_CALL
            &[0, 0, 0, 159],              // body_len
            &[0, 0, 0, 1, 0, 0, 0, 0x2a], // request_id: u64 BE 0x1_0000_002a
            &[0, 0, 0x13, 0x88],          // timeout_ms: 5000
            &[0, 0, 0, 5],                // params_type: msgpack
            &[0, 0, 0, 10],               // params_handle_type: encode
            &[0, 0, 0, 7],                // handle_len
            b"ToUpper",                   // handle
            &[0, 0, 0, 11],               // params_len
            &[0x81, 0xa4],                // params: fixmap(1), fixstr(4)
            b"name",                      //   key
            &[0xa4],                      //   fixstr(4)
            b"nmid",                      //   value
            &[0, 0, 0, 2],                // meta_count
            &[0, 0, 0, 11],               // meta[0] key_len
            b"traceparent",               // meta[0] key
            &[0, 0, 0, 55],               // meta[0] value_len
            TRACEPARENT,                  // meta[0] value
            &[0, 0, 0, 10],               // meta[1] key_len
            b"tracestate",                // meta[1] key
            &[0, 0, 0, 17],               // meta[1] value_len
            TRACESTATE,                   // meta[1] value
        ];
        parts.concat()
    }

    /// A tagged job pushed to a worker: JSON params, the remaining budget, one metadata pair.
    fn sample_job() -> Frame {
        Frame::Job(Job {
            job_id: JOB_ID,
            timeout_ms: 4750,
            params_type: ParamsType::JSON,
            handle_type: HANDLE_TYPE_ORIGINAL,
            function: Bytes::from_static(b"ToUpper"),
            params: Bytes::from_static(b"{\"a\":1}"),
            meta: vec![(
                Bytes::from_static(b"traceparent"),
                Bytes::from_static(TRACEPARENT),
            )],
        })
    }

    fn sample_job_bytes() -> Vec<u8> {
        let parts: &[&[u8]] = &[
            &[0, 0, 0, 1],                // conn_type: server
            &[0, 0, 0, 111],              // data_type: S_JOB
            &[0, 0, 0, 120],              // body_len
            &[0x80, 0, 0, 0, 0, 0, 0, 9], // job_id: u64 BE 0x8000_0000_0000_0009
            &[0, 0, 0x12, 0x8e],          // timeout_ms: 4750
            &[0, 0, 0, 6],                // params_type: JSON
            &[0, 0, 0, 11],               // params_handle_type: original
            &[0, 0, 0, 7],                // handle_len
            b"ToUpper",                   // handle
            &[0, 0, 0, 7],                // params_len
            b"{\"a\":1}",                 // params
            &[0, 0, 0, 1],                // meta_count
            &[0, 0, 0, 11],               // meta[0] key_len
            b"traceparent",               // meta[0] key
            &[0, 0, 0, 55],               // meta[0] value_len
            TRACEPARENT,                  // meta[0] value
        ];
        parts.concat()
    }

    /// The result of the sample call, tagged with its request id.
    fn sample_call_result() -> Frame {
        Frame::CallResult(CallResult {
            request_id: REQUEST_ID,
            ret: Bytes::from_static(b"\x81\xa4Code\x00"),
        })
    }

    fn sample_call_result_bytes() -> Vec<u8> {
        let parts: &[&[u8]] = &[
            &[0, 0, 0, 1],                // conn_type: server
            &[0, 0, 0, 101],              // data_type: S_CALL_RESULT
            &[0, 0, 0, 19],               // body_len
            &[0, 0, 0, 1, 0, 0, 0, 0x2a], // request_id
            &[0, 0, 0, 7],                // ret_len
            &[0x81, 0xa4],                // ret: fixmap(1), fixstr(4)
            b"Code",                      //   key
            &[0x00],                      //   value: positive fixint 0
        ];
        parts.concat()
    }

    /// The sample call refused: no worker serves the function.
    fn sample_call_error() -> Frame {
        Frame::CallError(CallError {
            request_id: REQUEST_ID,
            code: ErrorCode::NO_WORKER,
            message: Bytes::from_static(b"no worker for ToUpper"),
        })
    }

    fn sample_call_error_bytes() -> Vec<u8> {
        let parts: &[&[u8]] = &[
            &[0, 0, 0, 1],                // conn_type: server
            &[0, 0, 0, 102],              // data_type: S_CALL_ERROR
            &[0, 0, 0, 37],               // body_len
            &[0, 0, 0, 1, 0, 0, 0, 0x2a], // request_id
            &[0, 0, 0, 2],                // code: NO_WORKER
            &[0, 0, 0, 21],               // message_len
            b"no worker for ToUpper",     // message
        ];
        parts.concat()
    }

    /// A tagged worker's result for the sample job.
    fn sample_job_result() -> Frame {
        Frame::JobResult(JobResult {
            job_id: JOB_ID,
            ret: Bytes::from_static(b"\x81\xa4Code\x00"),
        })
    }

    fn sample_job_result_bytes() -> Vec<u8> {
        let parts: &[&[u8]] = &[
            &[0, 0, 0, 2],                // conn_type: worker
            &[0, 0, 0, 112],              // data_type: W_JOB_RESULT
            &[0, 0, 0, 19],               // body_len
            &[0x80, 0, 0, 0, 0, 0, 0, 9], // job_id
            &[0, 0, 0, 7],                // ret_len
            &[0x81, 0xa4],                // ret: fixmap(1), fixstr(4)
            b"Code",                      //   key
            &[0x00],                      //   value: positive fixint 0
        ];
        parts.concat()
    }

    /// The sample job's function failed on the worker.
    fn sample_job_error() -> Frame {
        Frame::JobError(JobError {
            job_id: JOB_ID,
            message: Bytes::from_static(b"division by zero"),
        })
    }

    fn sample_job_error_bytes() -> Vec<u8> {
        let parts: &[&[u8]] = &[
            &[0, 0, 0, 2],                // conn_type: worker
            &[0, 0, 0, 113],              // data_type: W_JOB_ERROR
            &[0, 0, 0, 28],               // body_len
            &[0x80, 0, 0, 0, 0, 0, 0, 9], // job_id
            &[0, 0, 0, 16],               // message_len
            b"division by zero",          // message
        ];
        parts.concat()
    }

    /// A worker switching to tagged jobs, eight at a time.
    fn sample_slots() -> Frame {
        Frame::Slots { slots: 8 }
    }

    fn sample_slots_bytes() -> Vec<u8> {
        let parts: &[&[u8]] = &[
            &[0, 0, 0, 2],   // conn_type: worker
            &[0, 0, 0, 110], // data_type: W_SLOTS
            &[0, 0, 0, 4],   // body_len
            &[0, 0, 0, 8],   // slots, no length prefix
        ];
        parts.concat()
    }

    fn samples() -> Vec<(Frame, Vec<u8>)> {
        vec![
            (sample_do_job(), sample_do_job_bytes()),
            (sample_get_data(), sample_get_data_bytes()),
            (sample_worker_return(), sample_worker_return_bytes()),
            (sample_return_data(), sample_return_data_bytes()),
            (sample_set_name(), sample_set_name_bytes()),
            (sample_heartbeat_ping(), sample_heartbeat_ping_bytes()),
            (sample_call(), sample_call_bytes()),
            (sample_job(), sample_job_bytes()),
            (sample_call_result(), sample_call_result_bytes()),
            (sample_call_error(), sample_call_error_bytes()),
            (sample_job_result(), sample_job_result_bytes()),
            (sample_job_error(), sample_job_error_bytes()),
            (sample_slots(), sample_slots_bytes()),
        ]
    }

    /// Position of a variant in `every_frame()`. The exhaustive match makes a new `Frame`
    /// variant a compile error here until it is added to the round-trip list.
    fn variant_index(frame: &Frame) -> usize {
        match frame {
            Frame::Ok => 0,
            Frame::Error => 1,
            Frame::CantDo => 2,
            Frame::NoJob => 3,
            Frame::ToSleep => 4,
            Frame::Wakeuped => 5,
            Frame::GetData(_) => 6,
            Frame::ReturnData(_) => 7,
            Frame::RateLimit => 8,
            Frame::Breaker => 9,
            Frame::HeartbeatPong => 10,
            Frame::WakeUp => 11,
            Frame::GrabJob => 12,
            Frame::AddFunc { .. } => 13,
            Frame::DelFunc { .. } => 14,
            Frame::WorkerReturn(_) => 15,
            Frame::HeartbeatPing { .. } => 16,
            Frame::SetName { .. } => 17,
            Frame::DoJob(_) => 18,
            Frame::Call(_) => 19,
            Frame::CallResult(_) => 20,
            Frame::CallError(_) => 21,
            Frame::Slots { .. } => 22,
            Frame::Job(_) => 23,
            Frame::JobResult(_) => 24,
            Frame::JobError(_) => 25,
            Frame::Bye => 26,
            Frame::ByeAck => 27,
        }
    }

    const VARIANT_COUNT: usize = 28;

    /// One frame of every variant, in `variant_index` order.
    fn every_frame() -> Vec<Frame> {
        vec![
            Frame::Ok,
            Frame::Error,
            Frame::CantDo,
            Frame::NoJob,
            Frame::ToSleep,
            Frame::Wakeuped,
            sample_get_data(),
            sample_return_data(),
            Frame::RateLimit,
            Frame::Breaker,
            Frame::HeartbeatPong,
            Frame::WakeUp,
            Frame::GrabJob,
            Frame::AddFunc {
                function: Bytes::from_static(b"ToUpper"),
            },
            Frame::DelFunc {
                function: Bytes::from_static(b"ToUpper"),
            },
            sample_worker_return(),
            sample_heartbeat_ping(),
            sample_set_name(),
            sample_do_job(),
            sample_call(),
            sample_call_result(),
            sample_call_error(),
            sample_slots(),
            sample_job(),
            sample_job_result(),
            sample_job_error(),
            Frame::Bye,
            Frame::ByeAck,
        ]
    }

    fn encoded(frame: &Frame) -> Vec<u8> {
        let mut dst = BytesMut::new();
        encode(frame, &mut dst).expect("encode");
        dst.to_vec()
    }

    /// A 12-byte header with the given fields, followed by `body`.
    fn raw_frame(conn_type: u32, data_type: u32, body: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_u32(conn_type);
        buf.put_u32(data_type);
        buf.put_u32(body.len() as u32);
        buf.put_slice(body);
        buf
    }

    /// The body of a fixture's bytes, header stripped.
    fn body_of(bytes: &[u8]) -> &[u8] {
        &bytes[HEADER_LEN..]
    }

    /// Each sample frame encodes to exactly its commented byte fixture.
    #[test]
    fn sample_frames_encode_to_their_documented_bytes() {
        for (frame, bytes) in samples() {
            assert_eq!(encoded(&frame), bytes, "{}", frame.name());
            assert_eq!(encoded_len(&frame), bytes.len(), "{}", frame.name());
        }
    }

    /// Each commented byte fixture decodes to its sample frame and is consumed whole.
    #[test]
    fn documented_bytes_decode_to_their_sample_frames() {
        for (frame, bytes) in samples() {
            let mut buf = BytesMut::from(&bytes[..]);
            let decoded = decode(&mut buf, DEFAULT_MAX_FRAME_BYTES).expect("decode");
            assert_eq!(decoded, Some(frame));
            assert!(buf.is_empty());
        }
    }

    /// The round-trip list really holds one frame of each variant.
    #[test]
    fn round_trip_list_covers_every_frame_variant() {
        let indices: Vec<usize> = every_frame().iter().map(variant_index).collect();
        assert_eq!(indices, (0..VARIANT_COUNT).collect::<Vec<_>>());
    }

    /// Every variant encodes with its own sender and data type and decodes back to itself.
    #[test]
    fn every_frame_variant_round_trips_through_encode_and_decode() {
        for frame in every_frame() {
            let bytes = encoded(&frame);
            assert_eq!(bytes.len(), encoded_len(&frame), "{}", frame.name());
            assert_eq!(&bytes[0..4], &(frame.sender() as u32).to_be_bytes());
            assert_eq!(&bytes[4..8], &frame.data_type().to_be_bytes());
            let body_len = (bytes.len() - HEADER_LEN) as u32;
            assert_eq!(&bytes[8..12], &body_len.to_be_bytes());

            let mut buf = BytesMut::from(&bytes[..]);
            let decoded = decode(&mut buf, DEFAULT_MAX_FRAME_BYTES).expect("decode");
            assert_eq!(decoded.as_ref(), Some(&frame), "{}", frame.name());
            assert!(buf.is_empty(), "{} left bytes behind", frame.name());
        }
    }

    /// Body-carrying frames with empty fields still round-trip (lengths of zero are legal).
    #[test]
    fn frames_with_empty_fields_round_trip() {
        let frames = [
            Frame::DoJob(DoJob {
                params_type: ParamsType(0),
                handle_type: 0,
                function: Bytes::new(),
                params: Bytes::new(),
            }),
            Frame::GetData(GetData {
                params_type: ParamsType(u32::MAX),
                handle_type: u32::MAX,
                function: Bytes::new(),
                params: Bytes::new(),
                job_id: Bytes::new(),
            }),
            Frame::WorkerReturn(WorkerReturn {
                function: Bytes::new(),
                params: Bytes::new(),
                ret: Bytes::new(),
                job_id: Bytes::new(),
            }),
            Frame::ReturnData(ReturnData {
                function: Bytes::new(),
                params: Bytes::new(),
                ret: Bytes::new(),
            }),
            Frame::AddFunc {
                function: Bytes::new(),
            },
            Frame::HeartbeatPing { body: Bytes::new() },
            Frame::SetName { name: Bytes::new() },
            Frame::Call(Call {
                request_id: 0,
                timeout_ms: 0,
                params_type: ParamsType(0),
                handle_type: 0,
                function: Bytes::new(),
                params: Bytes::new(),
                meta: Vec::new(),
            }),
            Frame::Call(Call {
                request_id: u64::MAX,
                timeout_ms: u32::MAX,
                params_type: ParamsType(u32::MAX),
                handle_type: u32::MAX,
                function: Bytes::new(),
                params: Bytes::new(),
                meta: vec![(Bytes::new(), Bytes::new()), (Bytes::new(), Bytes::new())],
            }),
            Frame::Job(Job {
                job_id: u64::MAX,
                timeout_ms: 0,
                params_type: ParamsType(0),
                handle_type: 0,
                function: Bytes::new(),
                params: Bytes::new(),
                meta: Vec::new(),
            }),
            Frame::CallResult(CallResult {
                request_id: 0,
                ret: Bytes::new(),
            }),
            Frame::CallError(CallError {
                request_id: u64::MAX,
                code: ErrorCode(u32::MAX),
                message: Bytes::new(),
            }),
            Frame::JobResult(JobResult {
                job_id: 0,
                ret: Bytes::new(),
            }),
            Frame::JobError(JobError {
                job_id: u64::MAX,
                message: Bytes::new(),
            }),
            Frame::Slots { slots: 0 },
            Frame::Slots { slots: u32::MAX },
        ];
        for frame in frames {
            let mut buf = BytesMut::from(&encoded(&frame)[..]);
            let decoded = decode(&mut buf, DEFAULT_MAX_FRAME_BYTES).expect("decode");
            assert_eq!(decoded, Some(frame));
            assert!(buf.is_empty());
        }
    }

    /// Any strict prefix of a frame is "not yet", and the partial bytes stay in the buffer.
    #[test]
    fn every_strict_prefix_of_a_frame_waits_for_more_and_leaves_the_buffer_untouched() {
        for frame in every_frame() {
            let bytes = encoded(&frame);
            for n in 0..bytes.len() {
                let mut buf = BytesMut::from(&bytes[..n]);
                let got = decode(&mut buf, DEFAULT_MAX_FRAME_BYTES);
                assert!(
                    matches!(got, Ok(None)),
                    "{} prefix {n}: {got:?}",
                    frame.name()
                );
                assert_eq!(&buf[..], &bytes[..n], "{} prefix {n}", frame.name());
            }
        }
    }

    /// Two frames that arrive in one read come out one at a time, in order.
    #[test]
    fn two_frames_in_one_buffer_decode_in_order() {
        let mut buf = BytesMut::new();
        buf.put_slice(&sample_do_job_bytes());
        buf.put_slice(&sample_worker_return_bytes());
        let max = DEFAULT_MAX_FRAME_BYTES;
        assert_eq!(decode(&mut buf, max).unwrap(), Some(sample_do_job()));
        assert_eq!(&buf[..], &sample_worker_return_bytes()[..]);
        assert_eq!(decode(&mut buf, max).unwrap(), Some(sample_worker_return()));
        assert!(buf.is_empty());
        assert_eq!(decode(&mut buf, max).unwrap(), None);
    }

    /// A whole frame followed by part of the next yields the first and keeps the part.
    #[test]
    fn a_frame_followed_by_a_partial_frame_yields_the_first_and_keeps_the_rest() {
        let second = sample_get_data_bytes();
        let mut buf = BytesMut::new();
        buf.put_slice(&sample_set_name_bytes());
        buf.put_slice(&second[..15]);
        let max = DEFAULT_MAX_FRAME_BYTES;
        assert_eq!(decode(&mut buf, max).unwrap(), Some(sample_set_name()));
        assert_eq!(decode(&mut buf, max).unwrap(), None);
        assert_eq!(&buf[..], &second[..15]);
        buf.put_slice(&second[15..]);
        assert_eq!(decode(&mut buf, max).unwrap(), Some(sample_get_data()));
        assert!(buf.is_empty());
    }

    /// An incomplete frame makes room for the frames behind it too, but a header announcing
    /// a large body (within the limit) grows the buffer by one bounded step only.
    #[test]
    fn an_incomplete_frame_reserves_read_ahead_in_bounded_steps() {
        let mut small = BytesMut::new();
        small.put_u32(3); // conn_type: client
        small.put_u32(16); // data_type: C_DO_JOB
        small.put_u32(100); // body_len
        assert_eq!(decode(&mut small, DEFAULT_MAX_FRAME_BYTES).unwrap(), None);
        assert!(small.capacity() >= READ_AHEAD, "{}", small.capacity());

        let mut part_of_a_header = BytesMut::from(&[0u8, 0, 0, 3, 0][..]);
        assert_eq!(
            decode(&mut part_of_a_header, DEFAULT_MAX_FRAME_BYTES).unwrap(),
            None
        );
        assert!(part_of_a_header.capacity() >= READ_AHEAD);
        let mut nothing = BytesMut::new();
        assert_eq!(decode(&mut nothing, DEFAULT_MAX_FRAME_BYTES).unwrap(), None);
        assert_eq!(nothing.capacity(), 0, "an idle connection reserves nothing");

        let mut large = BytesMut::new();
        large.put_u32(3);
        large.put_u32(16);
        large.put_u32(8 * 1024 * 1024); // 8 MiB, under the 16 MiB limit
        assert_eq!(decode(&mut large, DEFAULT_MAX_FRAME_BYTES).unwrap(), None);
        assert!(
            large.capacity() <= HEADER_LEN + MAX_RESERVE_STEP,
            "{}",
            large.capacity()
        );
    }

    /// A bare header announcing a 4 GiB body is refused at once, without waiting or allocating.
    #[test]
    fn a_header_announcing_4_gib_is_refused_from_the_header_alone() {
        let mut buf = BytesMut::new();
        buf.put_u32(3); // conn_type: client
        buf.put_u32(16); // data_type: C_DO_JOB
        buf.put_u32(u32::MAX); // body_len: 4 GiB - 1
        let got = decode(&mut buf, DEFAULT_MAX_FRAME_BYTES);
        assert!(
            matches!(
                got,
                Err(CodecError::FrameTooLarge { len, max })
                    if len == u64::from(u32::MAX) && max == DEFAULT_MAX_FRAME_BYTES
            ),
            "{got:?}"
        );
        assert!(
            buf.capacity() < 1024 * 1024,
            "buffer grew to {}",
            buf.capacity()
        );
    }

    /// The limit is on the body: a body of exactly the limit passes, one byte more does not.
    #[test]
    fn a_body_one_byte_over_the_limit_is_too_large_and_one_at_the_limit_is_not() {
        let bytes = sample_do_job_bytes();
        let body_len = bytes.len() - HEADER_LEN;

        let mut buf = BytesMut::from(&bytes[..]);
        let got = decode(&mut buf, body_len);
        assert_eq!(got.unwrap(), Some(sample_do_job()));

        let mut header_only = BytesMut::from(&bytes[..HEADER_LEN]);
        let got = decode(&mut header_only, body_len - 1);
        assert!(
            matches!(got, Err(CodecError::FrameTooLarge { len, max })
                if len == body_len as u64 && max == body_len - 1),
            "{got:?}"
        );
    }

    /// `NmidCodec::new` applies its own limit, not the default one.
    #[test]
    fn the_tokio_codec_enforces_its_configured_limit() {
        let mut codec = NmidCodec::new(3);
        let mut buf = BytesMut::from(&sample_heartbeat_ping_bytes()[..]);
        let got = Decoder::decode(&mut codec, &mut buf);
        assert!(
            matches!(got, Err(CodecError::FrameTooLarge { len: 4, max: 3 })),
            "{got:?}"
        );
    }

    /// The tokio codec encodes and decodes exactly like the pure functions.
    #[test]
    fn the_tokio_codec_matches_the_pure_functions() {
        let mut codec = NmidCodec::default();
        for frame in every_frame() {
            let mut dst = BytesMut::new();
            Encoder::encode(&mut codec, frame.clone(), &mut dst).expect("encode");
            assert_eq!(&dst[..], &encoded(&frame)[..]);
            let decoded = Decoder::decode(&mut codec, &mut dst).expect("decode");
            assert_eq!(decoded, Some(frame));
            assert!(dst.is_empty());
        }
    }

    /// A conn_type outside 1..=4 is refused from the header alone, before any body arrives.
    #[test]
    fn an_unknown_conn_type_is_refused_from_the_header_alone() {
        for conn_type in [0, 5, 0x0300_0000, u32::MAX] {
            let mut buf = BytesMut::new();
            buf.put_u32(conn_type);
            buf.put_u32(16); // data_type: C_DO_JOB
            buf.put_u32(34); // body_len, none of which has arrived
            let got = decode(&mut buf, DEFAULT_MAX_FRAME_BYTES);
            assert!(
                matches!(got, Err(CodecError::UnknownConnType(c)) if c == conn_type),
                "{conn_type}: {got:?}"
            );
        }
    }

    /// A data type the sender may not send is refused (a client registering a function).
    #[test]
    fn a_data_type_not_valid_for_its_sender_is_refused() {
        let cases: &[(u32, u32)] = &[
            (3, 13),  // client sends W_ADD_FUNC
            (3, 11),  // client sends S_RETURN_DATA
            (2, 16),  // worker sends C_DO_JOB
            (2, 10),  // worker sends S_GET_DATA
            (2, 1),   // worker sends OK
            (1, 15),  // server sends W_RETURN_DATA
            (1, 22),  // server sends W_HEARTBEAT_PING
            (4, 16),  // service: no data type is defined for it
            (1, 3),   // CAN_DO: reserved
            (1, 6),   // HAVE_JOB: reserved
            (3, 17),  // C_GET_DATA: reserved
            (1, 0),   // zero
            (3, 111), // client sends S_JOB
            (3, 101), // client sends S_CALL_RESULT
            (3, 110), // client sends W_SLOTS
            (3, 114), // client sends W_BYE
            (2, 100), // worker sends C_CALL
            (2, 101), // worker sends S_CALL_RESULT
            (2, 111), // worker sends S_JOB
            (2, 115), // worker sends S_BYE_ACK
            (1, 100), // server sends C_CALL
            (1, 110), // server sends W_SLOTS
            (1, 112), // server sends W_JOB_RESULT
            (1, 113), // server sends W_JOB_ERROR
            (1, 114), // server sends W_BYE
            (4, 100), // service sends C_CALL
            (4, 111), // service sends S_JOB
            (3, 103), // unassigned, between the call and worker ranges
            (2, 116), // unassigned, past the last tagged type
            (1, 99),  // unassigned, just below the tagged range
        ];
        for &(conn_type, data_type) in cases {
            let mut buf = raw_frame(conn_type, data_type, b"");
            let got = decode(&mut buf, DEFAULT_MAX_FRAME_BYTES);
            assert!(
                matches!(
                    got,
                    Err(CodecError::UnknownDataType { conn_type: c, data_type: d })
                        if c == conn_type && d == data_type
                ),
                "({conn_type}, {data_type}): {got:?}"
            );
        }
    }

    /// Data type 23 means W_SET_NAME from a worker and S_HEARTBEAT_PONG from the server.
    #[test]
    fn data_type_23_is_read_by_the_direction_it_comes_from() {
        let max = DEFAULT_MAX_FRAME_BYTES;
        let mut from_worker = raw_frame(2, 23, b"w1");
        let name = Bytes::from_static(b"w1");
        assert_eq!(
            decode(&mut from_worker, max).unwrap(),
            Some(Frame::SetName { name })
        );
        let mut from_server = raw_frame(1, 23, b"");
        assert_eq!(
            decode(&mut from_server, max).unwrap(),
            Some(Frame::HeartbeatPong)
        );
    }

    /// An inner length that runs past the end of the body is `Truncated`, naming the field.
    #[test]
    fn an_inner_length_overrunning_the_body_is_truncated() {
        // (fixture, offset of a u32 to overwrite in the whole frame, frame name, field name)
        let cases: Vec<(Vec<u8>, usize, &str, &str)> = vec![
            (sample_do_job_bytes(), 20, "C_DO_JOB", "handle"),
            (sample_do_job_bytes(), 31, "C_DO_JOB", "params"),
            (sample_get_data_bytes(), 20, "S_GET_DATA", "handle"),
            (sample_get_data_bytes(), 24, "S_GET_DATA", "params"),
            (sample_get_data_bytes(), 28, "S_GET_DATA", "job_id"),
            (sample_worker_return_bytes(), 12, "W_RETURN_DATA", "handle"),
            (sample_worker_return_bytes(), 23, "W_RETURN_DATA", "params"),
            (sample_worker_return_bytes(), 34, "W_RETURN_DATA", "ret"),
            (sample_worker_return_bytes(), 45, "W_RETURN_DATA", "job_id"),
            (sample_return_data_bytes(), 12, "S_RETURN_DATA", "handle"),
            (sample_return_data_bytes(), 16, "S_RETURN_DATA", "params"),
            (sample_return_data_bytes(), 20, "S_RETURN_DATA", "ret"),
            (sample_call_bytes(), 32, "C_CALL", "handle"),
            (sample_call_bytes(), 43, "C_CALL", "params"),
            (sample_call_bytes(), 58, "C_CALL", "meta_key"), // meta_count
            (sample_call_bytes(), 62, "C_CALL", "meta_key"),
            (sample_call_bytes(), 77, "C_CALL", "meta_value"),
            (sample_call_bytes(), 136, "C_CALL", "meta_key"),
            (sample_call_bytes(), 150, "C_CALL", "meta_value"),
            (sample_job_bytes(), 32, "S_JOB", "handle"),
            (sample_job_bytes(), 43, "S_JOB", "params"),
            (sample_job_bytes(), 54, "S_JOB", "meta_key"), // meta_count
            (sample_job_bytes(), 58, "S_JOB", "meta_key"),
            (sample_job_bytes(), 73, "S_JOB", "meta_value"),
            (sample_call_result_bytes(), 20, "S_CALL_RESULT", "ret"),
            (sample_call_error_bytes(), 24, "S_CALL_ERROR", "message"),
            (sample_job_result_bytes(), 20, "W_JOB_RESULT", "ret"),
            (sample_job_error_bytes(), 20, "W_JOB_ERROR", "message"),
        ];
        for (mut bytes, offset, frame, field) in cases {
            for bad_len in [1000u32, u32::MAX] {
                bytes[offset..offset + 4].copy_from_slice(&bad_len.to_be_bytes());
                let mut buf = BytesMut::from(&bytes[..]);
                let got = decode(&mut buf, DEFAULT_MAX_FRAME_BYTES);
                assert!(
                    matches!(
                        got,
                        Err(CodecError::Truncated { frame: f, field: g }) if f == frame && g == field
                    ),
                    "{frame}.{field} = {bad_len}: {got:?}"
                );
            }
        }
    }

    /// A body too short for its fixed-size fields is `Truncated` at the first missing one.
    #[test]
    fn a_body_shorter_than_its_fixed_fields_is_truncated() {
        let cases: &[(u32, u32, &[u8], &str, &str)] = &[
            (3, 16, b"", "C_DO_JOB", "params_type"),
            (3, 16, &[0, 0, 0, 5, 0, 0], "C_DO_JOB", "params_handle_type"),
            (
                1,
                10,
                &[0, 0, 0, 5, 0, 0, 0, 10],
                "S_GET_DATA",
                "handle_len",
            ),
            (1, 10, &[0; 16], "S_GET_DATA", "job_id_len"),
            (2, 15, &[0, 0, 0, 0, 0, 0, 0, 0, 0], "W_RETURN_DATA", "ret"),
            (1, 11, &[0; 11], "S_RETURN_DATA", "ret_len"),
            (3, 100, &[0; 7], "C_CALL", "request_id"),
            (3, 100, &[0; 8], "C_CALL", "timeout_ms"),
            (3, 100, &[0; 12], "C_CALL", "params_type"),
            (3, 100, &[0; 16], "C_CALL", "params_handle_type"),
            (3, 100, &[0; 20], "C_CALL", "handle"),
            (3, 100, &[0; 24], "C_CALL", "params"),
            (3, 100, &[0; 28], "C_CALL", "meta_count"),
            (3, 100, &[0; 31], "C_CALL", "meta_count"),
            (1, 111, &[], "S_JOB", "job_id"),
            (1, 111, &[0; 8], "S_JOB", "timeout_ms"),
            (1, 111, &[0; 28], "S_JOB", "meta_count"),
            (1, 101, &[0; 8], "S_CALL_RESULT", "ret"),
            (1, 102, &[0; 8], "S_CALL_ERROR", "code"),
            (1, 102, &[0; 12], "S_CALL_ERROR", "message"),
            (2, 112, &[0; 4], "W_JOB_RESULT", "job_id"),
            (2, 113, &[0; 11], "W_JOB_ERROR", "message"),
            (2, 110, &[], "W_SLOTS", "slots"),
            (2, 110, &[0; 3], "W_SLOTS", "slots"),
        ];
        for &(conn_type, data_type, body, frame, field) in cases {
            let mut buf = raw_frame(conn_type, data_type, body);
            let got = decode(&mut buf, DEFAULT_MAX_FRAME_BYTES);
            assert!(
                matches!(
                    got,
                    Err(CodecError::Truncated { frame: f, field: g }) if f == frame && g == field
                ),
                "{frame}: {got:?}"
            );
        }
    }

    /// Bytes after the last field of a structured body are `TrailingBytes`, with their count.
    #[test]
    fn bytes_after_the_last_field_are_trailing_bytes() {
        let cases = [
            (sample_do_job_bytes(), "C_DO_JOB"),
            (sample_get_data_bytes(), "S_GET_DATA"),
            (sample_worker_return_bytes(), "W_RETURN_DATA"),
            (sample_return_data_bytes(), "S_RETURN_DATA"),
            (sample_call_bytes(), "C_CALL"),
            (sample_job_bytes(), "S_JOB"),
            (sample_call_result_bytes(), "S_CALL_RESULT"),
            (sample_call_error_bytes(), "S_CALL_ERROR"),
            (sample_job_result_bytes(), "W_JOB_RESULT"),
            (sample_job_error_bytes(), "W_JOB_ERROR"),
            (sample_slots_bytes(), "W_SLOTS"),
        ];
        for (bytes, frame) in cases {
            let conn_type = u32::from_be_bytes(bytes[0..4].try_into().unwrap());
            let data_type = u32::from_be_bytes(bytes[4..8].try_into().unwrap());
            let mut body = body_of(&bytes).to_vec();
            body.extend_from_slice(b"xyz");
            let mut buf = raw_frame(conn_type, data_type, &body);
            let got = decode(&mut buf, DEFAULT_MAX_FRAME_BYTES);
            assert!(
                matches!(
                    got,
                    Err(CodecError::TrailingBytes { frame: f, extra: 3 }) if f == frame
                ),
                "{frame}: {got:?}"
            );
        }
    }

    /// A frame whose body must be empty is refused when it carries one (server OK + 1 byte).
    #[test]
    fn a_body_on_an_empty_body_frame_is_trailing_bytes() {
        let cases: &[(u32, u32, &str)] = &[
            (1, 1, "OK"),
            (1, 2, "ERROR"),
            (1, 4, "CANT_DO"),
            (1, 5, "NO_JOB"),
            (1, 7, "TOSLEEP"),
            (1, 9, "WAKEUPED"),
            (1, 18, "RATELIMIT"),
            (1, 19, "BREAKER"),
            (1, 23, "S_HEARTBEAT_PONG"),
            (2, 8, "WAKEUP"),
            (2, 12, "W_GRAB_JOB"),
            (2, 114, "W_BYE"),
            (1, 115, "S_BYE_ACK"),
        ];
        for &(conn_type, data_type, frame) in cases {
            let mut buf = raw_frame(conn_type, data_type, b"!");
            let got = decode(&mut buf, DEFAULT_MAX_FRAME_BYTES);
            assert!(
                matches!(
                    got,
                    Err(CodecError::TrailingBytes { frame: f, extra: 1 }) if f == frame
                ),
                "{frame}: {got:?}"
            );
        }
    }
    /// A tagged data type from the wrong sender is refused from the header alone, before its
    /// body arrives, exactly like a v1 one.
    #[test]
    fn a_tagged_data_type_from_the_wrong_sender_is_refused_from_the_header_alone() {
        for (conn_type, data_type) in [(3, 111), (2, 100), (1, 112), (3, 110), (2, 102)] {
            let mut buf = BytesMut::new();
            buf.put_u32(conn_type);
            buf.put_u32(data_type);
            buf.put_u32(64); // body_len, none of which has arrived
            let got = decode(&mut buf, DEFAULT_MAX_FRAME_BYTES);
            assert!(
                matches!(
                    got,
                    Err(CodecError::UnknownDataType { conn_type: c, data_type: d })
                        if c == conn_type && d == data_type
                ),
                "({conn_type}, {data_type}): {got:?}"
            );
        }
    }

    /// A meta count far beyond what the body holds fails at the first missing pair, at once,
    /// and without reserving room for the announced count (`u32::MAX` pairs of two `Bytes`
    /// would be 256 GiB: such a reservation aborts the process rather than fail the test).
    #[test]
    fn a_meta_count_overrunning_the_body_is_truncated_without_a_huge_allocation() {
        // (fixture, offset of meta_count in the whole frame, frame name)
        let cases = [
            (sample_call_bytes(), 58, "C_CALL"),
            (sample_job_bytes(), 54, "S_JOB"),
        ];
        for (bytes, at, frame) in cases {
            let conn_type = u32::from_be_bytes(bytes[0..4].try_into().unwrap());
            let data_type = u32::from_be_bytes(bytes[4..8].try_into().unwrap());
            // The body up to meta_count, then `padding` zero bytes: each 8 zero bytes read as
            // one pair with an empty key and value, so the count still runs out of body.
            for padding in [0usize, 3, 8, 64 * 1024] {
                let mut body = bytes[HEADER_LEN..at].to_vec();
                body.extend_from_slice(&u32::MAX.to_be_bytes()); // meta_count: u32::MAX
                body.resize(body.len() + padding, 0);
                let mut buf = raw_frame(conn_type, data_type, &body);
                let started = Instant::now();
                let got = decode(&mut buf, DEFAULT_MAX_FRAME_BYTES);
                let took = started.elapsed();
                let field = if padding % 8 < 4 {
                    "meta_key"
                } else {
                    "meta_value"
                };
                assert!(
                    matches!(
                        got,
                        Err(CodecError::Truncated { frame: f, field: g }) if f == frame && g == field
                    ),
                    "{frame} + {padding} bytes: {got:?}"
                );
                assert!(
                    took < Duration::from_secs(2),
                    "{frame} + {padding} bytes took {took:?}"
                );
            }
        }
    }

    /// A meta count short of the pairs that follow leaves them as trailing bytes.
    #[test]
    fn a_meta_count_short_of_its_pairs_leaves_trailing_bytes() {
        // (fixture, offset of meta_count, count to write, bytes of the pairs left over)
        let cases = [
            (sample_call_bytes(), 58, 1u32, 35usize, "C_CALL"),
            (sample_call_bytes(), 58, 0, 74 + 35, "C_CALL"),
            (sample_job_bytes(), 54, 0, 74, "S_JOB"),
        ];
        for (mut bytes, at, count, extra, frame) in cases {
            bytes[at..at + 4].copy_from_slice(&count.to_be_bytes());
            let mut buf = BytesMut::from(&bytes[..]);
            let got = decode(&mut buf, DEFAULT_MAX_FRAME_BYTES);
            assert!(
                matches!(
                    got,
                    Err(CodecError::TrailingBytes { frame: f, extra: e }) if f == frame && e == extra
                ),
                "{frame} count {count}: {got:?}"
            );
        }
    }

    /// `W_SLOTS` is exactly one `u32`: shorter is truncated, longer is trailing bytes.
    #[test]
    fn a_slots_body_must_be_exactly_four_bytes() {
        let max = DEFAULT_MAX_FRAME_BYTES;
        for short in [&[][..], &[0], &[0, 0, 8]] {
            let got = decode(&mut raw_frame(2, 110, short), max);
            assert!(
                matches!(
                    got,
                    Err(CodecError::Truncated {
                        frame: "W_SLOTS",
                        field: "slots"
                    })
                ),
                "{} bytes: {got:?}",
                short.len()
            );
        }
        for (long, extra) in [(&[0, 0, 0, 8, 0][..], 1), (&[0, 0, 0, 8, 0, 0, 0, 8], 4)] {
            let got = decode(&mut raw_frame(2, 110, long), max);
            assert!(
                matches!(
                    got,
                    Err(CodecError::TrailingBytes { frame: "W_SLOTS", extra: e }) if e == extra
                ),
                "{} bytes: {got:?}",
                long.len()
            );
        }
        let got = decode(&mut raw_frame(2, 110, &[0, 0, 0, 8]), max);
        assert_eq!(got.unwrap(), Some(Frame::Slots { slots: 8 }));
    }

    /// Tagged replies pipelined on one connection come out in order, each with its own id.
    #[test]
    fn pipelined_tagged_frames_decode_in_order_with_their_ids() {
        let mut second = sample_call_result();
        if let Frame::CallResult(r) = &mut second {
            r.request_id = REQUEST_ID + 1;
        }
        let mut buf = BytesMut::new();
        buf.put_slice(&sample_call_error_bytes());
        buf.put_slice(&encoded(&second));
        buf.put_slice(&sample_call_result_bytes());
        let max = DEFAULT_MAX_FRAME_BYTES;
        assert_eq!(decode(&mut buf, max).unwrap(), Some(sample_call_error()));
        assert_eq!(decode(&mut buf, max).unwrap(), Some(second));
        assert_eq!(decode(&mut buf, max).unwrap(), Some(sample_call_result()));
        assert_eq!(decode(&mut buf, max).unwrap(), None);
        assert!(buf.is_empty());
    }
}
