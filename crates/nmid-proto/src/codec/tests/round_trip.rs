//! Round trips: each fixture pair matches byte for byte, every frame variant encodes with
//! its own header and decodes back to itself (empty fields too), and the tokio codec
//! agrees with the pure functions.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::fixtures::*;
use super::{encoded, every_frame, variant_index, VARIANT_COUNT};
use crate::codec::*;

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
