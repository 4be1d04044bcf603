//! What the frame families share: the names of frame kinds ([`ConnType`], [`DataType`],
//! [`Kind`]), what a body is ([`Body`]), and the body reader and writer that refuse any length
//! overrunning its body. Below both families and the frame layer, importing neither.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::CodecError;

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

/// `data_type` values, named as nmid names them.
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
    pub const C_CALL_STREAM: u32 = 103;
    pub const S_CALL_PARTIAL: u32 = 104;
    pub const S_CALL_PROGRESS: u32 = 105;
    pub const W_SLOTS: u32 = 110;
    pub const S_JOB: u32 = 111;
    pub const W_JOB_RESULT: u32 = 112;
    pub const W_JOB_ERROR: u32 = 113;
    pub const W_BYE: u32 = 114;
    pub const S_BYE_ACK: u32 = 115;
    pub const W_JOB_PARTIAL: u32 = 116;
    pub const W_JOB_PROGRESS: u32 = 117;
    pub const AUTH: u32 = 120;
    pub const S_AUTH_RESULT: u32 = 121;
    // Background jobs (tagged): submit, status, cancel.
    pub const C_SUBMIT: u32 = 130;
    pub const S_SUBMITTED: u32 = 131;
    pub const C_JOB_STATUS: u32 = 132;
    pub const S_JOB_STATUS: u32 = 133;
    pub const C_JOB_CANCEL: u32 = 134;
}

/// A frame kind as the header names it: who sends it, its `data_type`, nmid's name for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// The `conn_type` of its sender.
    pub sender: ConnType,
    /// Its `data_type`.
    pub data_type: u32,
    /// nmid's name, for logs and errors.
    pub name: &'static str,
}

impl Kind {
    /// A kind sent by `sender` with `data_type`, named `name`.
    pub const fn new(sender: ConnType, data_type: u32, name: &'static str) -> Self {
        Self {
            sender,
            data_type,
            name,
        }
    }
}

/// A frame body as the families write it.
pub trait Body {
    /// The body's length in bytes.
    fn body_len(&self) -> usize;
    /// Appends the body to `dst`.
    fn write(&self, dst: &mut BytesMut);
}

/// A raw body: the field is the whole body (`W_ADD_FUNC`, `W_SET_NAME`, ...).
impl Body for Bytes {
    fn body_len(&self) -> usize {
        self.len()
    }

    fn write(&self, dst: &mut BytesMut) {
        dst.put_slice(self);
    }
}

/// Reads the fields of one body, refusing any length that overruns it.
pub(super) struct BodyReader {
    frame: &'static str,
    body: Bytes,
}

impl BodyReader {
    pub(super) fn new(frame: &'static str, body: Bytes) -> Self {
        Self { frame, body }
    }

    /// A big-endian `u32`.
    pub(super) fn u32(&mut self, field: &'static str) -> Result<u32, CodecError> {
        if self.body.len() < 4 {
            return Err(self.truncated(field));
        }
        Ok(self.body.get_u32())
    }

    /// A big-endian `u64`.
    pub(super) fn u64(&mut self, field: &'static str) -> Result<u64, CodecError> {
        if self.body.len() < 8 {
            return Err(self.truncated(field));
        }
        Ok(self.body.get_u64())
    }

    /// The next `len` bytes.
    pub(super) fn bytes(&mut self, field: &'static str, len: usize) -> Result<Bytes, CodecError> {
        if self.body.len() < len {
            return Err(self.truncated(field));
        }
        Ok(self.body.split_to(len))
    }

    /// A `u32` length followed by that many bytes.
    pub(super) fn field(&mut self, field: &'static str) -> Result<Bytes, CodecError> {
        let len = self.u32(field)? as usize;
        self.bytes(field, len)
    }

    /// Everything left: the body of a raw-body frame.
    pub(super) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.body)
    }

    /// Bytes not read yet.
    pub(super) fn remaining(&self) -> usize {
        self.body.len()
    }

    pub(super) fn finish(self) -> Result<(), CodecError> {
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

/// Appends a `u32` length and then `field`.
pub(super) fn put_field(dst: &mut BytesMut, field: &[u8]) {
    dst.put_u32(field.len() as u32);
    dst.put_slice(field);
}
