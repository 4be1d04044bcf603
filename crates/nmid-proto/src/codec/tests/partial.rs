//! Partial input and buffering: a strict prefix waits with the buffer untouched, frames
//! sharing a read come out one at a time in order, and the read-ahead a connection gets
//! grows in bounded steps and is earned.

use bytes::{BufMut, BytesMut};
use tokio_util::codec::Decoder;

use super::fixtures::*;
use super::{encoded, every_frame, raw_frame};
use crate::codec::frame::{MAX_RESERVE_STEP, READ_AHEAD};
use crate::codec::*;

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
