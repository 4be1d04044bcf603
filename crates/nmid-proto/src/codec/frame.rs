//! The frame layer: the [`Frame`] enum and the one table of empty-body frames, the header,
//! the decoder's bounded read-ahead, and the thin `tokio_util` codec. The bodies are in the
//! `v1` and `tagged` families, over the reader and writer of `body`.
//!
//! Adding a frame kind: a variant of [`Frame`] and, for an empty body, a row of
//! [`EMPTY_BODY_FRAMES`]; for a frame with a body, also its body (and its [`Kind`]) in the
//! family's file.
//!
//! Why not `tokio_util`'s `LengthDelimitedCodec`: it reserves the whole announced length at
//! once, so one 12-byte header could make a connection hold `max_frame_bytes`; [`decode`]
//! grows the buffer in bounded steps as bytes arrive, and refuses a kind that is not valid
//! for its sender before any body arrives.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::body::{Body, BodyReader, ConnType, DataType, Kind};
use super::tagged::{
    self, CJobCancel, CJobStatus, SAuthResult, SCallError, SJobStatus, SSubmitted, TaggedCall,
    TaggedPartial, TaggedProgress, TaggedResult, WJobError,
};
use super::v1::{self, CDoJob, SGetData, SReturnData, WReturnData};
use super::CodecError;

/// Bytes in a frame header: `conn_type`, `data_type`, `body_len`, each a `u32`.
pub const HEADER_LEN: usize = 12;

/// The default limit on a frame body: 16 MiB, far above any sane RPC payload and far below
/// the 4 GiB a hostile header can announce.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// The most `decode` reserves at once for a body that has not arrived yet.
pub(super) const MAX_RESERVE_STEP: usize = 64 * 1024;

/// The least `decode` reserves for a frame that has begun but not arrived whole: room for
/// the frames that follow it too, so a stream of 4 KiB frames is read several frames per
/// syscall rather than one (+25% calls/s at 4 KiB, +4% at 32 B in `make bench`). An idle
/// connection reserves nothing; a connection that has not yet sent this much in whole
/// frames gets room only in proportion to what it sent ([`NmidCodec`]).
pub const READ_AHEAD: usize = 32 * 1024;

/// One frame. Each variant is named after nmid's frame and fixes both `conn_type` and
/// `data_type`, so a frame round-trips byte-exactly.
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
    /// `RATELIMIT` (18), server -> client: the call was refused for load.
    RateLimit,
    /// `BREAKER` (19), server -> client: circuit open.
    Breaker,
    /// `S_HEARTBEAT_PONG` (23 from the server), server -> worker.
    SHeartbeatPong,
    /// `WAKEUP` (8), worker -> server.
    WakeUp,
    /// `W_GRAB_JOB` (12), worker -> server; needs no reply.
    WGrabJob,
    /// `W_BYE` (114), worker -> server: send me no more jobs.
    WBye,
    /// `S_BYE_ACK` (115), server -> worker: every job for this worker has been sent.
    SByeAck,
    /// `W_ADD_FUNC` (13), worker -> server: the worker serves `function`.
    WAddFunc {
        /// The function name: the whole body.
        function: Bytes,
    },
    /// `W_DEL_FUNC` (14), worker -> server: the worker no longer serves `function`.
    WDelFunc {
        /// The function name: the whole body.
        function: Bytes,
    },
    /// `W_HEARTBEAT_PING` (22), worker -> server; the SDKs send the body `PING`.
    WHeartbeatPing {
        /// The body as sent (kept so that the frame re-encodes byte-exactly).
        body: Bytes,
    },
    /// `W_SET_NAME` (23 from a worker), worker -> server.
    WSetName {
        /// The worker's name: the whole body.
        name: Bytes,
    },
    /// `C_DO_JOB` (16), client -> server: a v1 call.
    CDoJob(CDoJob),
    /// `S_GET_DATA` (10), server -> v1 worker: a job.
    SGetData(SGetData),
    /// `W_RETURN_DATA` (15), worker -> server: a v1 job's result.
    WReturnData(WReturnData),
    /// `S_RETURN_DATA` (11), server -> client: a v1 call's result.
    SReturnData(SReturnData),
    /// `C_CALL` (100), client -> server: a tagged call.
    CCall(TaggedCall),
    /// `S_JOB` (111), server -> tagged worker: a job with its id, time budget and metadata.
    SJob(TaggedCall),
    /// `S_CALL_RESULT` (101), server -> client.
    SCallResult(TaggedResult),
    /// `S_CALL_ERROR` (102), server -> client.
    SCallError(SCallError),
    /// `C_CALL_STREAM` (103), client -> server: a tagged call whose caller also wants its
    /// partial results and progress (`S_CALL_PARTIAL`, `S_CALL_PROGRESS`) before the answer.
    CCallStream(TaggedCall),
    /// `S_CALL_PARTIAL` (104), server -> client: a partial result of a `C_CALL_STREAM` call.
    SCallPartial(TaggedPartial),
    /// `S_CALL_PROGRESS` (105), server -> client: the progress of a `C_CALL_STREAM` call.
    SCallProgress(TaggedProgress),
    /// `W_JOB_PARTIAL` (116), worker -> server: a partial result of a tagged job.
    WJobPartial(TaggedPartial),
    /// `W_JOB_PROGRESS` (117), worker -> server: the progress of a tagged job.
    WJobProgress(TaggedProgress),
    /// `W_SLOTS` (110), worker -> server: the worker takes tagged jobs, at most `slots` at
    /// once. Answered with `OK`.
    WSlots {
        /// Jobs the worker runs at once.
        slots: u32,
    },
    /// `W_JOB_RESULT` (112), worker -> server.
    WJobResult(TaggedResult),
    /// `W_JOB_ERROR` (113), worker -> server.
    WJobError(WJobError),
    /// `AUTH` (120) from a client: the first frame, presenting a token's secret.
    CAuth {
        /// The secret: the whole body.
        secret: Bytes,
    },
    /// `AUTH` (120) from a worker: the first frame, presenting a token's secret.
    WAuth {
        /// The secret: the whole body.
        secret: Bytes,
    },
    /// `S_AUTH_RESULT` (121), server -> client or worker: accepted, or refused and closing.
    SAuthResult(SAuthResult),
    /// `C_SUBMIT` (130), client -> server: a background job (the `C_CALL` body; its options
    /// in `meta` as `nmid-priority`, `nmid-delay-ms`, ...).
    CSubmit(TaggedCall),
    /// `S_SUBMITTED` (131), server -> client: the job's id.
    SSubmitted(SSubmitted),
    /// `C_JOB_STATUS` (132), client -> server: a job's state, perhaps after waiting for it.
    CJobStatus(CJobStatus),
    /// `S_JOB_STATUS` (133), server -> client: a job's state.
    SJobStatus(SJobStatus),
    /// `C_JOB_CANCEL` (134), client -> server: cancel a queued job.
    CJobCancel(CJobCancel),
}

/// The frames whose body is empty, with their kinds: the one list that encode, decode and
/// the tests use for them.
pub static EMPTY_BODY_FRAMES: [(Frame, Kind); 13] = {
    use ConnType::{Server, Worker};
    [
        (Frame::Ok, Kind::new(Server, DataType::OK, "OK")),
        (Frame::Error, Kind::new(Server, DataType::ERROR, "ERROR")),
        (
            Frame::CantDo,
            Kind::new(Server, DataType::CANT_DO, "CANT_DO"),
        ),
        (Frame::NoJob, Kind::new(Server, DataType::NO_JOB, "NO_JOB")),
        (
            Frame::ToSleep,
            Kind::new(Server, DataType::TOSLEEP, "TOSLEEP"),
        ),
        (
            Frame::Wakeuped,
            Kind::new(Server, DataType::WAKEUPED, "WAKEUPED"),
        ),
        (
            Frame::RateLimit,
            Kind::new(Server, DataType::RATELIMIT, "RATELIMIT"),
        ),
        (
            Frame::Breaker,
            Kind::new(Server, DataType::BREAKER, "BREAKER"),
        ),
        (
            Frame::SHeartbeatPong,
            Kind::new(Server, DataType::S_HEARTBEAT_PONG, "S_HEARTBEAT_PONG"),
        ),
        (
            Frame::SByeAck,
            Kind::new(Server, DataType::S_BYE_ACK, "S_BYE_ACK"),
        ),
        (Frame::WakeUp, Kind::new(Worker, DataType::WAKEUP, "WAKEUP")),
        (
            Frame::WGrabJob,
            Kind::new(Worker, DataType::W_GRAB_JOB, "W_GRAB_JOB"),
        ),
        (Frame::WBye, Kind::new(Worker, DataType::W_BYE, "W_BYE")),
    ]
};

impl Frame {
    /// The frame's kind and, unless it is empty, its body.
    fn parts(&self) -> (Kind, Option<&dyn Body>) {
        match self {
            Frame::WAddFunc { function } => (v1::W_ADD_FUNC, Some(function)),
            Frame::WDelFunc { function } => (v1::W_DEL_FUNC, Some(function)),
            Frame::WHeartbeatPing { body } => (v1::W_HEARTBEAT_PING, Some(body)),
            Frame::WSetName { name } => (v1::W_SET_NAME, Some(name)),
            Frame::CDoJob(body) => (v1::C_DO_JOB, Some(body)),
            Frame::SGetData(body) => (v1::S_GET_DATA, Some(body)),
            Frame::WReturnData(body) => (v1::W_RETURN_DATA, Some(body)),
            Frame::SReturnData(body) => (v1::S_RETURN_DATA, Some(body)),
            Frame::CCall(body) => (tagged::C_CALL, Some(body)),
            Frame::SJob(body) => (tagged::S_JOB, Some(body)),
            Frame::SCallResult(body) => (tagged::S_CALL_RESULT, Some(body)),
            Frame::SCallError(body) => (tagged::S_CALL_ERROR, Some(body)),
            Frame::CCallStream(body) => (tagged::C_CALL_STREAM, Some(body)),
            Frame::SCallPartial(body) => (tagged::S_CALL_PARTIAL, Some(body)),
            Frame::SCallProgress(body) => (tagged::S_CALL_PROGRESS, Some(body)),
            Frame::WJobPartial(body) => (tagged::W_JOB_PARTIAL, Some(body)),
            Frame::WJobProgress(body) => (tagged::W_JOB_PROGRESS, Some(body)),
            Frame::WSlots { slots } => (tagged::W_SLOTS, Some(slots)),
            Frame::WJobResult(body) => (tagged::W_JOB_RESULT, Some(body)),
            Frame::WJobError(body) => (tagged::W_JOB_ERROR, Some(body)),
            Frame::CAuth { secret } => (tagged::C_AUTH, Some(secret)),
            Frame::WAuth { secret } => (tagged::W_AUTH, Some(secret)),
            Frame::SAuthResult(body) => (tagged::S_AUTH_RESULT, Some(body)),
            Frame::CSubmit(body) => (tagged::C_SUBMIT, Some(body)),
            Frame::SSubmitted(body) => (tagged::S_SUBMITTED, Some(body)),
            Frame::CJobStatus(body) => (tagged::C_JOB_STATUS, Some(body)),
            Frame::SJobStatus(body) => (tagged::S_JOB_STATUS, Some(body)),
            Frame::CJobCancel(body) => (tagged::C_JOB_CANCEL, Some(body)),
            empty => {
                let (_, kind) = (EMPTY_BODY_FRAMES.iter())
                    .find(|(frame, _)| frame == empty)
                    .expect("every frame without a body is in EMPTY_BODY_FRAMES");
                (*kind, None)
            }
        }
    }

    /// The frame's kind: sender, `data_type`, name.
    pub fn kind(&self) -> Kind {
        self.parts().0
    }

    /// The sender this frame belongs to, written as its `conn_type`.
    pub fn sender(&self) -> ConnType {
        self.kind().sender
    }

    /// The frame's `data_type`.
    pub fn data_type(&self) -> u32 {
        self.kind().data_type
    }

    /// nmid's name for the frame, for logs and errors.
    pub fn name(&self) -> &'static str {
        self.kind().name
    }
}

/// Where the body of a kind is read.
#[derive(Debug, Clone, Copy)]
enum Family {
    /// No body: the frame itself.
    Empty(&'static Frame),
    /// A body of protocol v1 ([`super::v1`]).
    V1,
    /// A body of the tagged extension ([`super::tagged`]).
    Tagged,
}

/// The kind a header names, and its family, if `data_type` is one `sender` may send. The
/// frames of a call come first in the lists, so the common case looks at a few entries.
fn kind_of(sender: ConnType, data_type: u32) -> Option<(Kind, Family)> {
    let named = |kind: &&Kind| kind.sender == sender && kind.data_type == data_type;
    if let Some(kind) = v1::KINDS.iter().find(named) {
        return Some((*kind, Family::V1));
    }
    if let Some(kind) = tagged::KINDS.iter().find(named) {
        return Some((*kind, Family::Tagged));
    }
    (EMPTY_BODY_FRAMES.iter())
        .find(|(_, kind)| named(&kind))
        .map(|(frame, kind)| (*kind, Family::Empty(frame)))
}

/// Reads one frame from the front of `src`.
///
/// Returns `Ok(None)` while `src` holds less than a whole frame (nothing is consumed then), and
/// `Ok(Some(frame))` with the frame's bytes removed from `src`. A body announced larger than
/// `max_frame_bytes` is refused from the header alone, before anything is allocated. A frame
/// that has begun makes room for [`READ_AHEAD`] more bytes, for the frames behind it.
pub fn decode(src: &mut BytesMut, max_frame_bytes: usize) -> Result<Option<Frame>, CodecError> {
    decode_with(src, max_frame_bytes, READ_AHEAD)
}

/// Like [`decode`], but a frame that has begun makes room for at most `read_ahead` more
/// bytes (at least its header). [`NmidCodec`] passes what the connection has earned: a peer
/// that has sent little gets room in proportion to what it sent, so a header, or half of
/// one, cannot make a connection reserve more than the bytes it sent.
pub fn decode_with(
    src: &mut BytesMut,
    max_frame_bytes: usize,
    read_ahead: usize,
) -> Result<Option<Frame>, CodecError> {
    match decode_frame(src, max_frame_bytes, read_ahead)? {
        None => Ok(None),
        Some(Ok(frame)) => Ok(Some(frame)),
        Some(Err(bad)) => Err(bad.error),
    }
}

/// A frame whose header was valid and whose body was consumed whole, but could not be read
/// (a length inside it overruns it, or bytes are left over). The frames after it are still
/// in step, so a tolerant reader may skip it, or read what it can of it.
#[derive(Debug)]
pub struct BadBody {
    /// The frame's kind, from its header.
    pub kind: Kind,
    /// The whole body, as received.
    pub body: Bytes,
    /// What is wrong with it.
    pub error: CodecError,
}

/// Like [`decode_with`], but a frame whose body cannot be read comes back as a [`BadBody`]
/// instead of an error; only a bad header (which leaves the stream out of step) is an error.
pub fn decode_frame(
    src: &mut BytesMut,
    max_frame_bytes: usize,
    read_ahead: usize,
) -> Result<Option<Result<Frame, BadBody>>, CodecError> {
    if src.len() < HEADER_LEN {
        if !src.is_empty() {
            // A frame has begun: make room for it and the frames behind it.
            src.reserve(read_ahead.max(HEADER_LEN));
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
    let (kind, family) = kind_of(sender, data_type).ok_or(CodecError::UnknownDataType {
        conn_type,
        data_type,
    })?;
    if src.len() < HEADER_LEN + body_len {
        // Grow toward the announced size in bounded steps, so a 12-byte header alone cannot
        // make a connection hold `max_frame_bytes` of memory.
        let missing = HEADER_LEN + body_len - src.len();
        let room = match read_ahead >= READ_AHEAD {
            true => missing.clamp(READ_AHEAD, MAX_RESERVE_STEP),
            false => missing.min(read_ahead.max(HEADER_LEN)),
        };
        src.reserve(room);
        return Ok(None);
    }
    src.advance(HEADER_LEN);
    let body = src.split_to(body_len).freeze();
    let parsed = parse_body(kind, family, body.clone());
    Ok(Some(parsed.map_err(|error| BadBody { kind, body, error })))
}

/// The frame of `kind` from its whole `body`.
fn parse_body(kind: Kind, family: Family, body: Bytes) -> Result<Frame, CodecError> {
    let mut r = BodyReader::new(kind.name, body);
    let frame = match family {
        Family::Empty(frame) => frame.clone(),
        Family::V1 => read_v1(kind, &mut r)?,
        Family::Tagged => read_tagged(kind, &mut r)?,
    };
    r.finish()?;
    Ok(frame)
}

/// Reads the body of a v1 `kind` (one of [`v1::KINDS`], whose data types differ).
fn read_v1(kind: Kind, r: &mut BodyReader) -> Result<Frame, CodecError> {
    Ok(match kind.data_type {
        DataType::C_DO_JOB => Frame::CDoJob(CDoJob::read(r)?),
        DataType::W_RETURN_DATA => Frame::WReturnData(WReturnData::read(r)?),
        DataType::S_GET_DATA => Frame::SGetData(SGetData::read(r)?),
        DataType::S_RETURN_DATA => Frame::SReturnData(SReturnData::read(r)?),
        DataType::W_HEARTBEAT_PING => Frame::WHeartbeatPing { body: r.rest() },
        DataType::W_ADD_FUNC => Frame::WAddFunc { function: r.rest() },
        DataType::W_DEL_FUNC => Frame::WDelFunc { function: r.rest() },
        DataType::W_SET_NAME => Frame::WSetName { name: r.rest() },
        _ => unreachable!("{} is not a v1 kind with a body", kind.name),
    })
}

/// Reads the body of a tagged `kind` (one of [`tagged::KINDS`], whose data types differ).
fn read_tagged(kind: Kind, r: &mut BodyReader) -> Result<Frame, CodecError> {
    Ok(match kind.data_type {
        DataType::C_CALL => Frame::CCall(TaggedCall::read(r, "request_id")?),
        DataType::S_JOB => Frame::SJob(TaggedCall::read(r, "job_id")?),
        DataType::W_JOB_RESULT => Frame::WJobResult(TaggedResult::read(r, "job_id")?),
        DataType::S_CALL_RESULT => Frame::SCallResult(TaggedResult::read(r, "request_id")?),
        DataType::S_CALL_ERROR => Frame::SCallError(SCallError::read(r)?),
        DataType::W_JOB_ERROR => Frame::WJobError(WJobError::read(r)?),
        DataType::W_JOB_PARTIAL => Frame::WJobPartial(TaggedPartial::read(r, "job_id")?),
        DataType::S_CALL_PARTIAL => Frame::SCallPartial(TaggedPartial::read(r, "request_id")?),
        DataType::W_JOB_PROGRESS => Frame::WJobProgress(TaggedProgress::read(r, "job_id")?),
        DataType::S_CALL_PROGRESS => Frame::SCallProgress(TaggedProgress::read(r, "request_id")?),
        DataType::C_CALL_STREAM => Frame::CCallStream(TaggedCall::read(r, "request_id")?),
        DataType::W_SLOTS => Frame::WSlots {
            slots: r.u32("slots")?,
        },
        DataType::AUTH if kind.sender == ConnType::Client => Frame::CAuth { secret: r.rest() },
        DataType::AUTH => Frame::WAuth { secret: r.rest() },
        DataType::S_AUTH_RESULT => Frame::SAuthResult(SAuthResult::read(r)?),
        DataType::C_SUBMIT => Frame::CSubmit(TaggedCall::read(r, "request_id")?),
        DataType::S_SUBMITTED => Frame::SSubmitted(SSubmitted::read(r)?),
        DataType::C_JOB_STATUS => Frame::CJobStatus(CJobStatus::read(r)?),
        DataType::S_JOB_STATUS => Frame::SJobStatus(SJobStatus::read(r)?),
        DataType::C_JOB_CANCEL => Frame::CJobCancel(CJobCancel::read(r)?),
        _ => unreachable!("{} is not a tagged kind with a body", kind.name),
    })
}

/// Appends `frame`, header included, to `dst`.
pub fn encode(frame: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
    let (kind, body) = frame.parts();
    let body_len = body.map_or(0, Body::body_len);
    let body_len =
        u32::try_from(body_len).map_err(|_| CodecError::FieldTooLarge { frame: kind.name })?;
    dst.reserve(HEADER_LEN + body_len as usize);
    dst.put_u32(kind.sender as u32);
    dst.put_u32(kind.data_type);
    dst.put_u32(body_len);
    if let Some(body) = body {
        body.write(dst);
    }
    Ok(())
}

/// The number of bytes `encode` writes for `frame`, header included.
pub fn encoded_len(frame: &Frame) -> usize {
    HEADER_LEN + frame.parts().1.map_or(0, Body::body_len)
}

/// The body length of `frame` when it is over `max_frame_bytes`, else `None`. A peer whose
/// limit that is closes the connection as soon as it reads the header (every call and job
/// in flight on it is lost), so a sender checks this first and fails only this frame's call.
pub fn over_limit(frame: &Frame, max_frame_bytes: usize) -> Option<usize> {
    let body_len = frame.parts().1.map_or(0, Body::body_len);
    (body_len > max_frame_bytes).then_some(body_len)
}

/// The `tokio_util` codec over [`decode`] and [`encode`], for `Framed` and `FramedRead`.
///
/// Its read-ahead is earned: until a connection has sent [`READ_AHEAD`] bytes of whole
/// frames, a frame that has begun makes room only in proportion to the bytes it has sent
/// (see [`decode_with`]); after that, a full [`READ_AHEAD`], so a busy stream of frames is
/// read many frames per syscall.
#[derive(Debug, Clone, Copy)]
pub struct NmidCodec {
    max_frame_bytes: usize,
    /// Bytes of whole frames decoded so far (saturating).
    decoded: usize,
}

impl NmidCodec {
    /// A codec that refuses bodies over `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        Self {
            max_frame_bytes,
            decoded: 0,
        }
    }
}

impl NmidCodec {
    /// The next frame, or the [`BadBody`] of a frame whose body cannot be read (see
    /// [`decode_frame`]), with the read-ahead this connection has earned.
    pub fn decode_frame(
        &mut self,
        src: &mut BytesMut,
    ) -> Result<Option<Result<Frame, BadBody>>, CodecError> {
        let read_ahead = self.earned_read_ahead(src);
        self.decode_frame_within(src, read_ahead)
    }

    /// The read-ahead this connection has earned: [`READ_AHEAD`] once it has sent that much
    /// in whole frames, else as much as `src` holds.
    pub fn earned_read_ahead(&self, src: &BytesMut) -> usize {
        match self.decoded >= READ_AHEAD {
            true => READ_AHEAD,
            false => src.len(),
        }
    }

    /// Like [`NmidCodec::decode_frame`], with the read-ahead given (a caller may lower it,
    /// e.g. to the memory it has left).
    pub fn decode_frame_within(
        &mut self,
        src: &mut BytesMut,
        read_ahead: usize,
    ) -> Result<Option<Result<Frame, BadBody>>, CodecError> {
        let before = src.len();
        let frame = decode_frame(src, self.max_frame_bytes, read_ahead)?;
        if frame.is_some() {
            self.decoded = self.decoded.saturating_add(before - src.len());
        }
        Ok(frame)
    }
}

/// Like [`NmidCodec`], but yields a frame whose body cannot be read as a [`BadBody`] item
/// instead of ending the stream: for readers that are lenient with what peers really send
/// (nmid's own SDKs), or that should fail only the frame, not the connection.
#[derive(Debug, Clone, Copy)]
pub struct TolerantCodec(pub NmidCodec);

impl Decoder for TolerantCodec {
    type Item = Result<Frame, BadBody>;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
        self.0.decode_frame(src)
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
        match self.decode_frame(src)? {
            None => Ok(None),
            Some(Ok(frame)) => Ok(Some(frame)),
            Some(Err(bad)) => Err(bad.error),
        }
    }
}

impl Encoder<Frame> for NmidCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        encode(&frame, dst)
    }
}
