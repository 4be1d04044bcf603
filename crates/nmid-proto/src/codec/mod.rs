//! The nmid wire protocol: frames and bodies as typed values. Pure, no I/O.
//!
//! - `frame`: the [`Frame`] enum and the table of empty-body frames, the header, the
//!   decoder's bounded read-ahead, and the `tokio_util` codec ([`NmidCodec`]);
//! - `body`: what the families share: kinds ([`ConnType`], [`DataType`], [`Kind`]), the body
//!   reader and writer;
//! - `v1`: the bodies of protocol v1 ([`CDoJob`], [`SGetData`], [`WReturnData`],
//!   [`SReturnData`]);
//! - `tagged`: the bodies of the tagged extension ([`TaggedCall`], the shared body of
//!   `C_CALL` and `S_JOB`; [`TaggedResult`], that of `S_CALL_RESULT` and `W_JOB_RESULT`;
//!   [`SCallError`], [`WJobError`]; [`TaggedPartial`] and [`TaggedProgress`], those of the
//!   partial results and progress of a streaming call; the background jobs' [`SSubmitted`],
//!   [`CJobStatus`], [`SJobStatus`], [`CJobCancel`]).
//!
//! # Format
//!
//! Every frame is a 12-byte header followed by its body. All integers are `u32` big-endian;
//! strings are raw bytes with a `u32` length in front, never NUL-terminated.
//!
//! ```text
//! +-----------+-----------+-----------+----------------------+
//! | conn_type | data_type | body_len  | body (body_len bytes)|
//! |  u32 BE   |  u32 BE   |  u32 BE   |                      |
//! +-----------+-----------+-----------+----------------------+
//! ```
//!
//! `conn_type` names the sender (1 server, 2 worker, 3 client, 4 service) and disambiguates
//! `data_type` 23 (`W_SET_NAME` from a worker, `S_HEARTBEAT_PONG` from the server). Each
//! [`Frame`] variant knows its own sender, so a frame round-trips byte-exactly.
//!
//! The bodies that carry data are laid out as follows (`len(x)` is `u32` BE):
//!
//! ```text
//! C_DO_JOB (16)       params_type | handle_type | len(fn) | fn | len(params) | params
//! S_GET_DATA (10)     params_type | handle_type | len(fn) | len(params) | len(job_id)
//!                     | fn | params | job_id
//! W_RETURN_DATA (15)  len(fn) | fn | len(params) | params | len(ret) | ret | len(job_id) | job_id
//! S_RETURN_DATA (11)  len(fn) | len(params) | len(ret) | fn | params | ret
//! ```
//!
//! Tagged extension frames (data types 100 and up; a v1 peer never receives one unless it
//! sent one first). `u64` ids are big-endian; `meta` is `count u32` then `len(k) k len(v) v`
//! per pair:
//!
//! ```text
//! C_CALL (100)        request_id u64 | timeout_ms | params_type | handle_type | len(fn) | fn
//!                     | len(params) | params | meta
//! S_CALL_RESULT (101) request_id u64 | len(ret) | ret
//! S_CALL_ERROR (102)  request_id u64 | code | len(message) | message
//! C_CALL_STREAM (103) as C_CALL; the caller also receives S_CALL_PARTIAL / S_CALL_PROGRESS
//! S_CALL_PARTIAL (104)  request_id u64 | len(data) | data
//! S_CALL_PROGRESS (105) request_id u64 | numerator u64 | denominator u64
//! W_SLOTS (110)       slots
//! S_JOB (111)         job_id u64 | timeout_ms | params_type | handle_type | len(fn) | fn
//!                     | len(params) | params | meta
//! W_JOB_RESULT (112)  job_id u64 | len(ret) | ret
//! W_JOB_ERROR (113)   job_id u64 | len(message) | message
//! W_BYE (114)         (empty)
//! S_BYE_ACK (115)     (empty)
//! W_JOB_PARTIAL (116)   job_id u64 | len(data) | data
//! W_JOB_PROGRESS (117)  job_id u64 | numerator u64 | denominator u64
//! ```
//!
//! Background jobs (tagged; answered to the client that sent the request, with its id):
//!
//! ```text
//! C_SUBMIT (130)      the C_CALL body; options in meta as nmid-priority, nmid-delay-ms, ...
//! S_SUBMITTED (131)   request_id u64 | shared (0/1) | len(job_id) | job_id
//! C_JOB_STATUS (132)  request_id u64 | wait_ms | len(job_id) | job_id
//! S_JOB_STATUS (133)  request_id u64 | state | attempts | max_attempts | progress_num u64
//!                     | progress_den u64 | len(fn) | fn | len(output) | output
//!                     | len(error_code) | error_code
//! C_JOB_CANCEL (134)  request_id u64 | len(job_id) | job_id
//! ```
//!
//! [`decode`] checks the announced body length against the configured maximum before it
//! allocates anything, and checks every inner length against the body it sits in.

mod body;
mod frame;
mod tagged;
mod v1;

pub use body::{ConnType, DataType, Kind};
pub use frame::{
    decode, decode_frame, decode_with, encode, encoded_len, over_limit, BadBody, Frame, NmidCodec,
    TolerantCodec, DEFAULT_MAX_FRAME_BYTES, EMPTY_BODY_FRAMES, HEADER_LEN, READ_AHEAD,
};
pub use tagged::{
    CJobCancel, CJobStatus, ErrorCode, JobStateCode, Metadata, SAuthResult, SCallError, SJobStatus,
    SSubmitted, TaggedCall, TaggedPartial, TaggedProgress, TaggedResult, WJobError,
};
pub use v1::{
    CDoJob, ParamsType, SGetData, SReturnData, WReturnData, HANDLE_TYPE_ENCODE,
    HANDLE_TYPE_ORIGINAL,
};

/// Why a byte stream could not be read as nmid frames. Any of these ends the connection:
/// after a bad frame the stream's framing can no longer be trusted.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The header announces a body larger than the configured maximum.
    #[error("frame announces a {len}-byte body, over the {max}-byte limit")]
    FrameTooLarge {
        /// The announced body length.
        len: u64,
        /// The configured maximum.
        max: usize,
    },
    /// `conn_type` is not one of 1..=4.
    #[error("unknown conn_type {0}")]
    UnknownConnType(u32),
    /// `data_type` is not one this sender may send.
    #[error("data_type {data_type} is not valid from conn_type {conn_type}")]
    UnknownDataType {
        /// The sender's `conn_type`.
        conn_type: u32,
        /// The offending `data_type`.
        data_type: u32,
    },
    /// The body ends before one of its fields (a length inside it overruns it).
    #[error("malformed {frame} body: {field} overruns the body")]
    Truncated {
        /// The frame's name, e.g. `C_DO_JOB`.
        frame: &'static str,
        /// The field that does not fit.
        field: &'static str,
    },
    /// The body is longer than its fields account for.
    #[error("malformed {frame} body: {extra} trailing bytes")]
    TrailingBytes {
        /// The frame's name.
        frame: &'static str,
        /// How many bytes were left over.
        extra: usize,
    },
    /// A frame we only ever send would not fit a `u32` length.
    #[error("cannot encode {frame}: a field is larger than 4 GiB")]
    FieldTooLarge {
        /// The frame's name.
        frame: &'static str,
    },
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

#[cfg(test)]
mod tests;
