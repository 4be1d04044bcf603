//! Property tests of the codec: any valid frame round-trips and survives any split, and no
//! input, however hostile or however chunked, makes the decoder panic or spin.

use bytes::{BufMut, Bytes, BytesMut};
use nmid::codec::{
    decode, encode, encoded_len, CDoJob, CJobCancel, CJobStatus, CodecError, ErrorCode, Frame,
    JobStateCode, Metadata, NmidCodec, ParamsType, SCallError, SGetData, SJobStatus, SReturnData,
    SSubmitted, TaggedCall, TaggedResult, WJobError, WReturnData, DEFAULT_MAX_FRAME_BYTES,
    HEADER_LEN,
};
use proptest::prelude::*;
use tokio_util::codec::Decoder;

/// A small limit, so that oversize headers are common in generated junk.
const SMALL_MAX_FRAME_BYTES: usize = 512;

/// A length-prefixed field: a function name, params, a result or a job id.
fn field() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..48).prop_map(Bytes::from)
}

/// A metadata key or value: shorter than `field`, so that a tagged frame with four pairs
/// still fits `SMALL_MAX_FRAME_BYTES` and the near-miss streams reach past it.
fn meta_field() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

/// Arbitrary metadata of 0 to 4 pairs, empty keys and values included.
fn meta() -> impl Strategy<Value = Metadata> {
    prop::collection::vec((meta_field(), meta_field()), 0..=4)
}

/// Any valid frame of any variant, v1 or tagged, with arbitrary bytes in its fields.
fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![v1_frame(), tagged_frame()]
}

/// The common fields of `C_CALL` and `S_JOB`: id, timeout, params type, handle type,
/// function, params and metadata.
type TaggedCallFields = (u64, u32, u32, u32, Bytes, Bytes, Metadata);

fn tagged_call_fields() -> impl Strategy<Value = TaggedCallFields> {
    (
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        field(),
        field(),
        meta(),
    )
}

/// Any valid `C_CALL`.
fn call_frame() -> impl Strategy<Value = Frame> {
    tagged_call_fields().prop_map(
        |(request_id, timeout_ms, params_type, handle_type, function, params, meta)| {
            Frame::CCall(TaggedCall {
                id: request_id,
                timeout_ms,
                params_type: ParamsType(params_type),
                handle_type,
                function,
                params,
                meta,
            })
        },
    )
}

/// Any valid `S_JOB`.
fn job_frame() -> impl Strategy<Value = Frame> {
    tagged_call_fields().prop_map(
        |(job_id, timeout_ms, params_type, handle_type, function, params, meta)| {
            Frame::SJob(TaggedCall {
                id: job_id,
                timeout_ms,
                params_type: ParamsType(params_type),
                handle_type,
                function,
                params,
                meta,
            })
        },
    )
}

/// Any valid tagged extension frame (data types 100 and up).
fn tagged_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        prop::sample::select(vec![Frame::WBye, Frame::SByeAck]),
        any::<u32>().prop_map(|slots| Frame::WSlots { slots }),
        call_frame(),
        job_frame(),
        (any::<u64>(), field()).prop_map(|(request_id, ret)| Frame::SCallResult(TaggedResult {
            id: request_id,
            ret
        })),
        (any::<u64>(), any::<u32>(), field()).prop_map(|(request_id, code, message)| {
            Frame::SCallError(SCallError {
                request_id,
                code: ErrorCode(code),
                message,
            })
        }),
        (any::<u64>(), field())
            .prop_map(|(job_id, ret)| Frame::WJobResult(TaggedResult { id: job_id, ret })),
        (any::<u64>(), field())
            .prop_map(|(job_id, message)| Frame::WJobError(WJobError { job_id, message })),
        background_job_frame(),
    ]
}

/// Any valid frame of the background jobs (`C_SUBMIT` .. `C_JOB_CANCEL`).
fn background_job_frame() -> impl Strategy<Value = Frame> {
    let submit = tagged_call_fields().prop_map(
        |(request_id, timeout_ms, params_type, handle_type, function, params, meta)| {
            Frame::CSubmit(TaggedCall {
                id: request_id,
                timeout_ms,
                params_type: ParamsType(params_type),
                handle_type,
                function,
                params,
                meta,
            })
        },
    );
    let status = (
        (any::<u64>(), any::<u32>(), any::<u32>(), any::<u32>()),
        (any::<u64>(), any::<u64>()),
        (field(), field(), meta_field()),
    )
        .prop_map(
            |(
                (request_id, state, attempts, max_attempts),
                (num, den),
                (function, output, code),
            )| {
                Frame::SJobStatus(SJobStatus {
                    request_id,
                    state: JobStateCode(state),
                    attempts,
                    max_attempts,
                    progress_numerator: num,
                    progress_denominator: den,
                    function,
                    output,
                    error_code: code,
                })
            },
        );
    prop_oneof![
        submit,
        status,
        (any::<u64>(), any::<bool>(), meta_field()).prop_map(|(request_id, shared, job_id)| {
            Frame::SSubmitted(SSubmitted {
                request_id,
                shared,
                job_id,
            })
        }),
        (any::<u64>(), any::<u32>(), meta_field()).prop_map(|(request_id, wait_ms, job_id)| {
            Frame::CJobStatus(CJobStatus {
                request_id,
                wait_ms,
                job_id,
            })
        }),
        (any::<u64>(), meta_field())
            .prop_map(|(request_id, job_id)| Frame::CJobCancel(CJobCancel { request_id, job_id })),
    ]
}

/// Any valid frame of protocol v1, with arbitrary bytes in its fields.
fn v1_frame() -> impl Strategy<Value = Frame> {
    let empty_body = prop::sample::select(vec![
        Frame::Ok,
        Frame::Error,
        Frame::CantDo,
        Frame::NoJob,
        Frame::ToSleep,
        Frame::Wakeuped,
        Frame::RateLimit,
        Frame::Breaker,
        Frame::SHeartbeatPong,
        Frame::WakeUp,
        Frame::WGrabJob,
    ]);
    prop_oneof![
        empty_body,
        field().prop_map(|function| Frame::WAddFunc { function }),
        field().prop_map(|function| Frame::WDelFunc { function }),
        field().prop_map(|body| Frame::WHeartbeatPing { body }),
        field().prop_map(|name| Frame::WSetName { name }),
        (any::<u32>(), any::<u32>(), field(), field()).prop_map(
            |(params_type, handle_type, function, params)| Frame::CDoJob(CDoJob {
                params_type: ParamsType(params_type),
                handle_type,
                function,
                params,
            })
        ),
        (any::<u32>(), any::<u32>(), field(), field(), field()).prop_map(
            |(params_type, handle_type, function, params, job_id)| Frame::SGetData(SGetData {
                params_type: ParamsType(params_type),
                handle_type,
                function,
                params,
                job_id,
            })
        ),
        (field(), field(), field(), field()).prop_map(|(function, params, ret, job_id)| {
            Frame::WReturnData(WReturnData {
                function,
                params,
                ret,
                job_id,
            })
        }),
        (field(), field(), field()).prop_map(|(function, params, ret)| {
            Frame::SReturnData(SReturnData {
                function,
                params,
                ret,
            })
        }),
    ]
}

/// Every (conn_type, data_type) pair a peer may send, v1 and tagged.
const VALID_TYPES: [(u32, u32); 28] = [
    (1, 1),
    (1, 2),
    (1, 4),
    (1, 5),
    (1, 7),
    (1, 9),
    (1, 10),
    (1, 11),
    (1, 18),
    (1, 19),
    (1, 23),
    (2, 8),
    (2, 12),
    (2, 13),
    (2, 14),
    (2, 15),
    (2, 22),
    (2, 23),
    (3, 16),
    (3, 100), // C_CALL
    (1, 101), // S_CALL_RESULT
    (1, 102), // S_CALL_ERROR
    (2, 110), // W_SLOTS
    (1, 111), // S_JOB
    (2, 112), // W_JOB_RESULT
    (2, 113), // W_JOB_ERROR
    (2, 114), // W_BYE
    (1, 115), // S_BYE_ACK
];

/// A header with plausible types, a random body, and a `body_len` that may be honest,
/// slightly off, or huge.
fn near_miss_raw() -> impl Strategy<Value = Vec<u8>> {
    let types = prop_oneof![
        3 => prop::sample::select(VALID_TYPES.to_vec()),
        1 => (0u32..=5, 0u32..=25),
        1 => (0u32..=5, 98u32..=117),
    ];
    let skew = prop_oneof![
        4 => Just(0i64),
        2 => -8i64..8,
        1 => Just(i64::from(u32::MAX)),
    ];
    (types, skew, prop::collection::vec(any::<u8>(), 0..64)).prop_map(
        |((conn_type, data_type), skew, body)| {
            let body_len = (body.len() as i64 + skew).clamp(0, i64::from(u32::MAX)) as u32;
            let mut out = Vec::with_capacity(HEADER_LEN + body.len());
            out.put_u32(conn_type);
            out.put_u32(data_type);
            out.put_u32(body_len);
            out.extend_from_slice(&body);
            out
        },
    )
}

/// A valid frame with one byte overwritten: usually a bad length inside a good body.
fn mutated_frame() -> impl Strategy<Value = Vec<u8>> {
    (frame(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(frame, at, byte)| {
        let mut bytes = encoded(&frame);
        let i = at.index(bytes.len());
        bytes[i] = byte;
        bytes
    })
}

/// Streams that look almost right: valid frames, mutated frames and plausible headers over
/// random bodies. Reaches the body parsers far more often than uniform random bytes, whose
/// first four bytes are almost never a valid conn_type.
fn near_miss_stream() -> impl Strategy<Value = Vec<u8>> {
    let part = prop_oneof![
        2 => frame().prop_map(|f| encoded(&f)),
        3 => mutated_frame(),
        3 => near_miss_raw(),
    ];
    prop::collection::vec(part, 0..8).prop_map(|parts| parts.concat())
}

fn encoded(frame: &Frame) -> Vec<u8> {
    let mut dst = BytesMut::new();
    encode(frame, &mut dst).expect("a generated frame encodes");
    dst.to_vec()
}

/// Calls `decode` until it wants more bytes or fails, checking each call's contract: a frame
/// consumes bytes, `Ok(None)` consumes none. Returns the frames and whether it stopped on an
/// error.
fn drain(buf: &mut BytesMut, max_frame_bytes: usize) -> Result<(Vec<Frame>, bool), TestCaseError> {
    let mut frames = Vec::new();
    loop {
        let before = buf.clone();
        match decode(buf, max_frame_bytes) {
            Ok(Some(frame)) => {
                prop_assert!(buf.len() < before.len(), "a frame consumed no bytes");
                prop_assert_eq!(before.len() - buf.len(), encoded_len(&frame));
                frames.push(frame);
            }
            Ok(None) => {
                prop_assert_eq!(&buf[..], &before[..], "Ok(None) changed the buffer");
                return Ok((frames, false));
            }
            Err(_) => return Ok((frames, true)),
        }
    }
}

/// Feeds `bytes` to a fresh `NmidCodec` in chunks of the given sizes (cycled), decoding after
/// every chunk the way `FramedRead` does, then signals end of stream. Stops at the first
/// error, as a connection would. Returns the frames and whether an error ended the stream.
fn feed_in_chunks(
    bytes: &[u8],
    chunk_sizes: &[usize],
    max_frame_bytes: usize,
) -> (Vec<Frame>, bool) {
    let mut codec = NmidCodec::new(max_frame_bytes);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = bytes;
    let mut sizes = chunk_sizes.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().expect("at least one chunk size")).min(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
    }
    match codec.decode_eof(&mut buf) {
        Ok(Some(frame)) => {
            frames.push(frame);
            (frames, false)
        }
        Ok(None) => (frames, false),
        Err(_) => (frames, true),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any valid frame encodes to `encoded_len` bytes and decodes back to itself, whole.
    #[test]
    fn any_valid_frame_round_trips(frame in frame()) {
        let bytes = encoded(&frame);
        prop_assert_eq!(bytes.len(), encoded_len(&frame));
        let mut buf = BytesMut::from(&bytes[..]);
        let decoded = decode(&mut buf, DEFAULT_MAX_FRAME_BYTES).expect("a valid frame decodes");
        prop_assert_eq!(decoded, Some(frame));
        prop_assert!(buf.is_empty());
    }

    /// Every strict prefix of any valid frame is `Ok(None)` and leaves the buffer as it was.
    #[test]
    fn every_strict_prefix_of_any_valid_frame_waits_for_more(frame in frame()) {
        let bytes = encoded(&frame);
        for n in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..n]);
            let got = decode(&mut buf, DEFAULT_MAX_FRAME_BYTES);
            prop_assert!(matches!(got, Ok(None)), "prefix {} of {}: {:?}", n, bytes.len(), got);
            prop_assert_eq!(&buf[..], &bytes[..n]);
        }
    }

    /// Two valid frames back to back decode as the first, then the second, then nothing.
    #[test]
    fn two_concatenated_frames_decode_in_order(first in frame(), second in frame()) {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&encoded(&first));
        buf.extend_from_slice(&encoded(&second));
        let max = DEFAULT_MAX_FRAME_BYTES;
        prop_assert_eq!(decode(&mut buf, max).expect("first"), Some(first));
        prop_assert_eq!(&buf[..], &encoded(&second)[..]);
        prop_assert_eq!(decode(&mut buf, max).expect("second"), Some(second));
        prop_assert!(buf.is_empty());
        prop_assert!(matches!(decode(&mut buf, max), Ok(None)));
    }

    /// Uniformly random bytes never panic `decode`; each call consumes, waits or errors.
    #[test]
    fn arbitrary_bytes_never_panic_and_every_decode_call_keeps_its_contract(
        bytes in prop::collection::vec(any::<u8>(), 0..4096),
    ) {
        let mut buf = BytesMut::from(&bytes[..]);
        drain(&mut buf, DEFAULT_MAX_FRAME_BYTES)?;
    }

    /// Nearly valid frames never panic `decode`; each call consumes, waits or errors.
    #[test]
    fn near_miss_frames_never_panic_and_every_decode_call_keeps_its_contract(
        bytes in near_miss_stream(),
    ) {
        let mut buf = BytesMut::from(&bytes[..]);
        drain(&mut buf, SMALL_MAX_FRAME_BYTES)?;
    }
}

/// A `C_CALL` or `S_JOB` frame, for the metadata-count property.
fn call_or_job() -> impl Strategy<Value = Frame> {
    prop_oneof![call_frame(), job_frame()]
}

/// The offset of `meta_count` in an encoded `C_CALL` or `S_JOB`, and the frame's pair count.
fn meta_count_at(frame: &Frame) -> (usize, usize, &'static str) {
    let (function, params, meta) = match frame {
        Frame::CCall(c) => (&c.function, &c.params, &c.meta),
        Frame::SJob(j) => (&j.function, &j.params, &j.meta),
        other => panic!("not a C_CALL or S_JOB: {}", other.name()),
    };
    // id u64, timeout, params_type, handle_type, len(fn) fn, len(params) params
    let at = HEADER_LEN + 20 + 4 + function.len() + 4 + params.len();
    (at, meta.len(), frame.name())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A wrong metadata count never decodes: more pairs than sent runs out of body
    /// (`Truncated`), fewer leaves the rest as `TrailingBytes`. Either way at once, however
    /// large the count.
    #[test]
    fn a_wrong_meta_count_is_refused(frame in call_or_job(), count in any::<u32>()) {
        let (at, pairs, name) = meta_count_at(&frame);
        prop_assume!(count as usize != pairs);
        let mut bytes = encoded(&frame);
        bytes[at..at + 4].copy_from_slice(&count.to_be_bytes());
        let mut buf = BytesMut::from(&bytes[..]);
        let got = decode(&mut buf, DEFAULT_MAX_FRAME_BYTES);
        if count as usize > pairs {
            prop_assert!(
                matches!(got, Err(CodecError::Truncated { frame, field: "meta_key" }) if frame == name),
                "count {} over {} pairs: {:?}", count, pairs, got
            );
        } else {
            prop_assert!(
                matches!(got, Err(CodecError::TrailingBytes { frame, .. }) if frame == name),
                "count {} under {} pairs: {:?}", count, pairs, got
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Random bytes in random-size reads through the tokio codec never panic it.
    #[test]
    fn arbitrary_bytes_in_random_chunks_never_panic_the_tokio_codec(
        bytes in prop::collection::vec(any::<u8>(), 0..4096),
        chunk_sizes in prop::collection::vec(1usize..256, 1..32),
    ) {
        feed_in_chunks(&bytes, &chunk_sizes, DEFAULT_MAX_FRAME_BYTES);
    }

    /// Nearly valid frames in random-size reads decode exactly as they do from one buffer.
    #[test]
    fn near_miss_frames_decode_the_same_whatever_the_chunking(
        bytes in near_miss_stream(),
        chunk_sizes in prop::collection::vec(1usize..64, 1..16),
    ) {
        let (chunked, _) = feed_in_chunks(&bytes, &chunk_sizes, SMALL_MAX_FRAME_BYTES);
        let mut whole = BytesMut::from(&bytes[..]);
        let (expected, _) = drain(&mut whole, SMALL_MAX_FRAME_BYTES)?;
        prop_assert_eq!(chunked, expected);
    }

    /// A stream of valid frames split at arbitrary points yields every frame, in order.
    #[test]
    fn valid_frames_in_random_chunks_all_arrive_in_order(
        frames in prop::collection::vec(frame(), 0..8),
        chunk_sizes in prop::collection::vec(1usize..64, 1..16),
    ) {
        let stream: Vec<u8> = frames.iter().flat_map(encoded).collect();
        let (got, failed) = feed_in_chunks(&stream, &chunk_sizes, DEFAULT_MAX_FRAME_BYTES);
        prop_assert!(!failed);
        prop_assert_eq!(got, frames);
    }

    /// A header announcing more than the limit fails at once, whatever its type fields say.
    #[test]
    fn any_oversize_header_fails_without_waiting_for_its_body(
        conn_type in any::<u32>(),
        data_type in any::<u32>(),
        body_len in (SMALL_MAX_FRAME_BYTES as u32 + 1)..=u32::MAX,
    ) {
        let mut buf = BytesMut::with_capacity(HEADER_LEN);
        buf.put_u32(conn_type);
        buf.put_u32(data_type);
        buf.put_u32(body_len);
        let got = decode(&mut buf, SMALL_MAX_FRAME_BYTES);
        prop_assert!(
            matches!(got, Err(CodecError::FrameTooLarge { len, .. }) if len == u64::from(body_len)),
            "{:?}",
            got
        );
    }
}
