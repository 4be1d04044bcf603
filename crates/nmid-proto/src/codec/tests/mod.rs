//! The codec's tests: every frame kind round-trips ([`round_trip`]), every strict prefix
//! waits ([`partial`]), oversize and junk are refused with a reason ([`header`], [`body`]).
//! The fixture pairs are in [`fixtures`]; the helpers the topics share are here.
//!
//! The error cases are written out one by one (similar shapes, different bytes) so that a
//! failure names the exact input.

mod body;
mod fixtures;
mod header;
mod job_fixtures;
mod partial;
mod round_trip;

use bytes::{BufMut, Bytes, BytesMut};

use super::*;
use fixtures::*;
use job_fixtures::*;

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
        Frame::SGetData(_) => 6,
        Frame::SReturnData(_) => 7,
        Frame::RateLimit => 8,
        Frame::Breaker => 9,
        Frame::SHeartbeatPong => 10,
        Frame::WakeUp => 11,
        Frame::WGrabJob => 12,
        Frame::WAddFunc { .. } => 13,
        Frame::WDelFunc { .. } => 14,
        Frame::WReturnData(_) => 15,
        Frame::WHeartbeatPing { .. } => 16,
        Frame::WSetName { .. } => 17,
        Frame::CDoJob(_) => 18,
        Frame::CCall(_) => 19,
        Frame::SCallResult(_) => 20,
        Frame::SCallError(_) => 21,
        Frame::WSlots { .. } => 22,
        Frame::SJob(_) => 23,
        Frame::WJobResult(_) => 24,
        Frame::WJobError(_) => 25,
        Frame::WBye => 26,
        Frame::SByeAck => 27,
        Frame::CAuth { .. } => 28,
        Frame::WAuth { .. } => 29,
        Frame::SAuthResult(_) => 30,
        Frame::CCallStream(_) => 31,
        Frame::SCallPartial(_) => 32,
        Frame::SCallProgress(_) => 33,
        Frame::WJobPartial(_) => 34,
        Frame::WJobProgress(_) => 35,
        Frame::CSubmit(_) => 36,
        Frame::SSubmitted(_) => 37,
        Frame::CJobStatus(_) => 38,
        Frame::SJobStatus(_) => 39,
        Frame::CJobCancel(_) => 40,
    }
}

const VARIANT_COUNT: usize = 41;

/// One frame of every variant, in `variant_index` order (the empty ones from the table).
fn every_frame() -> Vec<Frame> {
    let with_body = [
        sample_get_data(),
        sample_return_data(),
        Frame::WAddFunc {
            function: Bytes::from_static(b"ToUpper"),
        },
        Frame::WDelFunc {
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
        sample_client_auth(),
        sample_worker_auth(),
        sample_auth_result(),
        sample_call_stream(),
        sample_call_partial(),
        sample_call_progress(),
        sample_job_partial(),
        sample_job_progress(),
        sample_submit(),
        sample_submitted(),
        sample_job_status(),
        sample_job_status_reply(),
        sample_job_cancel(),
    ];
    let empty = EMPTY_BODY_FRAMES.iter().map(|(frame, _)| frame.clone());
    let mut frames: Vec<Frame> = empty.chain(with_body).collect();
    frames.sort_by_key(variant_index);
    frames
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
