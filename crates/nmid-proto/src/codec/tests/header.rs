//! What the 12-byte header alone decides: a body over the frame limit, an unknown sender,
//! a data type its sender may not send (v1 and tagged), and which frame a data type shared
//! by two directions is.

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use super::fixtures::*;
use super::raw_frame;
use crate::codec::*;

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

/// A sender's `over_limit` agrees with the receiver's decoder: the frame it passes at a
/// limit decodes at that limit, the one it flags (with its body length) is refused.
#[test]
fn over_limit_flags_exactly_the_frames_a_peer_with_that_limit_refuses() {
    let frame = sample_do_job();
    let body_len = encoded_len(&frame) - HEADER_LEN;
    assert_eq!(over_limit(&frame, body_len), None);
    assert_eq!(over_limit(&frame, body_len - 1), Some(body_len));
    let empty = Frame::WBye;
    assert_eq!(over_limit(&empty, 0), None);
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
        (3, 106), // unassigned, between the call and worker ranges
        (2, 118), // unassigned, past the last worker type
        (1, 99),  // unassigned, just below the tagged range
    ];
    for &(conn_type, data_type) in cases {
        let mut buf = raw_frame(conn_type, data_type, b"");
        refused_as_unknown(
            decode(&mut buf, DEFAULT_MAX_FRAME_BYTES),
            conn_type,
            data_type,
        );
    }
}

/// A tagged data type from the wrong sender is refused from the header alone, before its
/// body arrives, exactly like a v1 one.
#[test]
fn a_tagged_data_type_from_the_wrong_sender_is_refused_from_the_header_alone() {
    let streaming = [(2, 103), (3, 104), (2, 105), (1, 116), (3, 117)];
    let others = [(3, 111), (2, 100), (1, 112), (3, 110), (2, 102)];
    for (conn_type, data_type) in others.into_iter().chain(streaming) {
        let mut buf = BytesMut::new();
        buf.put_u32(conn_type);
        buf.put_u32(data_type);
        buf.put_u32(64); // body_len, none of which has arrived
        refused_as_unknown(
            decode(&mut buf, DEFAULT_MAX_FRAME_BYTES),
            conn_type,
            data_type,
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

/// `got` is the refusal of `data_type` from `conn_type` as an unknown data type.
fn refused_as_unknown<T: std::fmt::Debug>(
    got: Result<T, CodecError>,
    conn_type: u32,
    data_type: u32,
) {
    assert!(
        matches!(
            got,
            Err(CodecError::UnknownDataType { conn_type: c, data_type: d })
                if c == conn_type && d == data_type
        ),
        "({conn_type}, {data_type}): {got:?}"
    );
}
