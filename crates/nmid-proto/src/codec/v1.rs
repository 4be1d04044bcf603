//! The bodies of protocol v1, as nmid's SDKs send them (see [`super`] for their layout), and
//! the raw-body frames whose body is one field as is.
//!
//! Each body's `read` and `write` spell out its fields in wire order, so that each can be
//! checked against its layout at a glance. Their shapes repeat (and `duplicates` lists them
//! as shape boilerplate) because the layouts do; a generic field list would hide the order
//! a reader checks against nmid's docs.

use bytes::{BufMut, Bytes, BytesMut};

use super::body::{put_field, Body, BodyReader, ConnType, DataType, Kind};
use super::CodecError;

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

pub(super) const C_DO_JOB: Kind = Kind::new(ConnType::Client, DataType::C_DO_JOB, "C_DO_JOB");
pub(super) const W_RETURN_DATA: Kind =
    Kind::new(ConnType::Worker, DataType::W_RETURN_DATA, "W_RETURN_DATA");
pub(super) const S_GET_DATA: Kind = Kind::new(ConnType::Server, DataType::S_GET_DATA, "S_GET_DATA");
pub(super) const S_RETURN_DATA: Kind =
    Kind::new(ConnType::Server, DataType::S_RETURN_DATA, "S_RETURN_DATA");
pub(super) const W_HEARTBEAT_PING: Kind = Kind::new(
    ConnType::Worker,
    DataType::W_HEARTBEAT_PING,
    "W_HEARTBEAT_PING",
);
pub(super) const W_ADD_FUNC: Kind = Kind::new(ConnType::Worker, DataType::W_ADD_FUNC, "W_ADD_FUNC");
pub(super) const W_DEL_FUNC: Kind = Kind::new(ConnType::Worker, DataType::W_DEL_FUNC, "W_DEL_FUNC");
pub(super) const W_SET_NAME: Kind = Kind::new(ConnType::Worker, DataType::W_SET_NAME, "W_SET_NAME");

/// The v1 kinds with a body, the frames of a call first.
pub(super) const KINDS: [Kind; 8] = [
    C_DO_JOB,
    W_RETURN_DATA,
    S_GET_DATA,
    S_RETURN_DATA,
    W_HEARTBEAT_PING,
    W_ADD_FUNC,
    W_DEL_FUNC,
    W_SET_NAME,
];

/// `C_DO_JOB` (16), client -> server: a call of `function` with `params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CDoJob {
    /// How `params` is encoded.
    pub params_type: ParamsType,
    /// `params_handle_type`, passed through to the worker.
    pub handle_type: u32,
    /// The function name (nmid's "handle").
    pub function: Bytes,
    /// The call's parameters, opaque to the dispatcher.
    pub params: Bytes,
}

impl CDoJob {
    pub(super) fn read(r: &mut BodyReader) -> Result<Self, CodecError> {
        Ok(Self {
            params_type: ParamsType(r.u32("params_type")?),
            handle_type: r.u32("params_handle_type")?,
            function: r.field("handle")?,
            params: r.field("params")?,
        })
    }
}

impl Body for CDoJob {
    fn body_len(&self) -> usize {
        16 + self.function.len() + self.params.len()
    }

    fn write(&self, dst: &mut BytesMut) {
        dst.put_u32(self.params_type.0);
        dst.put_u32(self.handle_type);
        put_field(dst, &self.function);
        put_field(dst, &self.params);
    }
}

/// `S_GET_DATA` (10), server -> worker: a job to run. Its lengths come first, then the
/// fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SGetData {
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

impl SGetData {
    pub(super) fn read(r: &mut BodyReader) -> Result<Self, CodecError> {
        let params_type = ParamsType(r.u32("params_type")?);
        let handle_type = r.u32("params_handle_type")?;
        let function_len = r.u32("handle_len")? as usize;
        let params_len = r.u32("params_len")? as usize;
        let job_id_len = r.u32("job_id_len")? as usize;
        Ok(Self {
            params_type,
            handle_type,
            function: r.bytes("handle", function_len)?,
            params: r.bytes("params", params_len)?,
            job_id: r.bytes("job_id", job_id_len)?,
        })
    }
}

impl Body for SGetData {
    fn body_len(&self) -> usize {
        20 + self.function.len() + self.params.len() + self.job_id.len()
    }

    fn write(&self, dst: &mut BytesMut) {
        dst.put_u32(self.params_type.0);
        dst.put_u32(self.handle_type);
        dst.put_u32(self.function.len() as u32);
        dst.put_u32(self.params.len() as u32);
        dst.put_u32(self.job_id.len() as u32);
        dst.put_slice(&self.function);
        dst.put_slice(&self.params);
        dst.put_slice(&self.job_id);
    }
}

/// `W_RETURN_DATA` (15), worker -> server: the result of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WReturnData {
    /// The function, echoed.
    pub function: Bytes,
    /// The params, echoed.
    pub params: Bytes,
    /// The result (by convention a msgpack RetStruct map).
    pub ret: Bytes,
    /// The job id from the `S_GET_DATA` this answers.
    pub job_id: Bytes,
}

impl WReturnData {
    pub(super) fn read(r: &mut BodyReader) -> Result<Self, CodecError> {
        Ok(Self {
            function: r.field("handle")?,
            params: r.field("params")?,
            ret: r.field("ret")?,
            job_id: r.field("job_id")?,
        })
    }
}

impl WReturnData {
    /// Reads a `W_RETURN_DATA` body that has bytes after its four fields (nmid's Go worker
    /// SDK sends one byte too many when two jobs overlap on its connection): the fields and
    /// how many bytes were left over. `None` when the four fields themselves do not fit.
    pub fn read_leniently(body: Bytes) -> Option<(Self, usize)> {
        let mut r = BodyReader::new("W_RETURN_DATA", body);
        let ret = Self::read(&mut r).ok()?;
        Some((ret, r.remaining()))
    }
}

impl Body for WReturnData {
    fn body_len(&self) -> usize {
        16 + self.function.len() + self.params.len() + self.ret.len() + self.job_id.len()
    }

    fn write(&self, dst: &mut BytesMut) {
        put_field(dst, &self.function);
        put_field(dst, &self.params);
        put_field(dst, &self.ret);
        put_field(dst, &self.job_id);
    }
}

/// `S_RETURN_DATA` (11), server -> client: the result of a call. It carries no job id, and
/// its lengths come first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SReturnData {
    /// The function that was called.
    pub function: Bytes,
    /// The params of the call.
    pub params: Bytes,
    /// The worker's result.
    pub ret: Bytes,
}

impl SReturnData {
    pub(super) fn read(r: &mut BodyReader) -> Result<Self, CodecError> {
        let function_len = r.u32("handle_len")? as usize;
        let params_len = r.u32("params_len")? as usize;
        let ret_len = r.u32("ret_len")? as usize;
        Ok(Self {
            function: r.bytes("handle", function_len)?,
            params: r.bytes("params", params_len)?,
            ret: r.bytes("ret", ret_len)?,
        })
    }
}

impl Body for SReturnData {
    fn body_len(&self) -> usize {
        12 + self.function.len() + self.params.len() + self.ret.len()
    }

    fn write(&self, dst: &mut BytesMut) {
        dst.put_u32(self.function.len() as u32);
        dst.put_u32(self.params.len() as u32);
        dst.put_u32(self.ret.len() as u32);
        dst.put_slice(&self.function);
        dst.put_slice(&self.params);
        dst.put_slice(&self.ret);
    }
}
