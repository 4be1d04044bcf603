//! The codec's tests: every frame kind round-trips, every strict prefix waits, oversize and
//! junk are refused with a reason. The fixture pairs are in [`fixtures`].
//!
//! The error cases are written out one by one (similar shapes, different bytes) so that a
//! failure names the exact input.

mod fixtures;

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::frame::{MAX_RESERVE_STEP, READ_AHEAD};
use super::*;
use fixtures::*;

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
    }
}

const VARIANT_COUNT: usize = 31;

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
        Frame::CDoJob(CDoJob {
            params_type: ParamsType(0),
            handle_type: 0,
            function: Bytes::new(),
            params: Bytes::new(),
        }),
        Frame::SGetData(SGetData {
            params_type: ParamsType(u32::MAX),
            handle_type: u32::MAX,
            function: Bytes::new(),
            params: Bytes::new(),
            job_id: Bytes::new(),
        }),
        Frame::WReturnData(WReturnData {
            function: Bytes::new(),
            params: Bytes::new(),
            ret: Bytes::new(),
            job_id: Bytes::new(),
        }),
        Frame::SReturnData(SReturnData {
            function: Bytes::new(),
            params: Bytes::new(),
            ret: Bytes::new(),
        }),
        Frame::WAddFunc {
            function: Bytes::new(),
        },
        Frame::WHeartbeatPing { body: Bytes::new() },
        Frame::WSetName { name: Bytes::new() },
        Frame::CCall(TaggedCall {
            id: 0,
            timeout_ms: 0,
            params_type: ParamsType(0),
            handle_type: 0,
            function: Bytes::new(),
            params: Bytes::new(),
            meta: Vec::new(),
        }),
        Frame::CCall(TaggedCall {
            id: u64::MAX,
            timeout_ms: u32::MAX,
            params_type: ParamsType(u32::MAX),
            handle_type: u32::MAX,
            function: Bytes::new(),
            params: Bytes::new(),
            meta: vec![(Bytes::new(), Bytes::new()), (Bytes::new(), Bytes::new())],
        }),
        Frame::SJob(TaggedCall {
            id: u64::MAX,
            timeout_ms: 0,
            params_type: ParamsType(0),
            handle_type: 0,
            function: Bytes::new(),
            params: Bytes::new(),
            meta: Vec::new(),
        }),
        Frame::SCallResult(TaggedResult {
            id: 0,
            ret: Bytes::new(),
        }),
        Frame::SCallError(SCallError {
            request_id: u64::MAX,
            code: ErrorCode(u32::MAX),
            message: Bytes::new(),
        }),
        Frame::WJobResult(TaggedResult {
            id: 0,
            ret: Bytes::new(),
        }),
        Frame::WJobError(WJobError {
            job_id: u64::MAX,
            message: Bytes::new(),
        }),
        Frame::WSlots { slots: 0 },
        Frame::WSlots { slots: u32::MAX },
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
        Some(Frame::WSetName { name })
    );
    let mut from_server = raw_frame(1, 23, b"");
    assert_eq!(
        decode(&mut from_server, max).unwrap(),
        Some(Frame::SHeartbeatPong)
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
    for (_, kind) in &EMPTY_BODY_FRAMES {
        let (conn_type, data_type, frame) = (kind.sender as u32, kind.data_type, kind.name);
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
    assert_eq!(got.unwrap(), Some(Frame::WSlots { slots: 8 }));
}

/// Tagged replies pipelined on one connection come out in order, each with its own id.
#[test]
fn pipelined_tagged_frames_decode_in_order_with_their_ids() {
    let mut second = sample_call_result();
    if let Frame::SCallResult(r) = &mut second {
        r.id = REQUEST_ID + 1;
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

/// A new connection earns its read-ahead: half a header, or a header announcing a large
/// body, makes the codec reserve no more than about the bytes the peer sent; once the
/// connection has sent `READ_AHEAD` bytes of whole frames, it reads ahead in full.
#[test]
fn a_new_connection_earns_its_read_ahead() {
    let mut codec = NmidCodec::new(DEFAULT_MAX_FRAME_BYTES);
    let mut half_header = BytesMut::from(&[0u8, 0, 0, 3, 0, 0][..]);
    assert_eq!(codec.decode(&mut half_header).unwrap(), None);
    assert!(half_header.capacity() <= 64, "{}", half_header.capacity());

    let mut big = BytesMut::from(&raw_frame(3, 16, &[])[..]);
    big[8..12].copy_from_slice(&(8u32 << 20).to_be_bytes()); // announces 8 MiB
    assert_eq!(codec.decode(&mut big).unwrap(), None);
    assert!(big.capacity() <= 64, "{}", big.capacity());

    let frame = sample_do_job_bytes();
    let mut busy = BytesMut::new();
    while busy.len() < READ_AHEAD + frame.len() {
        busy.put_slice(&frame);
    }
    while codec.decode(&mut busy).unwrap().is_some() {}
    let mut next = BytesMut::from(&frame[..5]);
    assert_eq!(codec.decode(&mut next).unwrap(), None);
    assert!(next.capacity() >= READ_AHEAD, "{}", next.capacity());
}
