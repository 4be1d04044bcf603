//! Junk bodies: an inner length or a meta count that runs past the body is `Truncated`
//! naming the field, a body too short for its fixed fields likewise, and bytes after the
//! last field (or on a frame whose body must be empty) are `TrailingBytes`.

use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::fixtures::*;
use super::job_fixtures::*;
use super::{body_of, raw_frame};
use crate::codec::*;

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
        (sample_call_stream_bytes(), 32, "C_CALL_STREAM", "handle"),
        (sample_call_stream_bytes(), 58, "C_CALL_STREAM", "meta_key"),
        (sample_call_partial_bytes(), 20, "S_CALL_PARTIAL", "data"),
        (sample_job_partial_bytes(), 20, "W_JOB_PARTIAL", "data"),
        (sample_submit_bytes(), 32, "C_SUBMIT", "handle"),
        (sample_submit_bytes(), 43, "C_SUBMIT", "params"),
        (sample_submit_bytes(), 58, "C_SUBMIT", "meta_key"), // meta_count
        (sample_submitted_bytes(), 24, "S_SUBMITTED", "job_id"),
        (sample_job_status_bytes(), 24, "C_JOB_STATUS", "job_id"),
        (sample_job_cancel_bytes(), 20, "C_JOB_CANCEL", "job_id"),
        (
            sample_job_status_reply_bytes(),
            48,
            "S_JOB_STATUS",
            "function",
        ),
        (
            sample_job_status_reply_bytes(),
            59,
            "S_JOB_STATUS",
            "output",
        ),
        (
            sample_job_status_reply_bytes(),
            67,
            "S_JOB_STATUS",
            "error_code",
        ),
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
        (3, 103, &[0; 7], "C_CALL_STREAM", "request_id"),
        (1, 104, &[0; 8], "S_CALL_PARTIAL", "data"),
        (1, 105, &[0; 16], "S_CALL_PROGRESS", "denominator"),
        (1, 105, &[0; 8], "S_CALL_PROGRESS", "numerator"),
        (2, 116, &[0; 7], "W_JOB_PARTIAL", "job_id"),
        (2, 117, &[0; 23], "W_JOB_PROGRESS", "denominator"),
        (3, 130, &[0; 7], "C_SUBMIT", "request_id"),
        (3, 130, &[0; 28], "C_SUBMIT", "meta_count"),
        (1, 131, &[0; 8], "S_SUBMITTED", "shared"),
        (1, 131, &[0; 12], "S_SUBMITTED", "job_id"),
        (3, 132, &[0; 8], "C_JOB_STATUS", "wait_ms"),
        (3, 132, &[0; 12], "C_JOB_STATUS", "job_id"),
        (3, 134, &[0; 8], "C_JOB_CANCEL", "job_id"),
        (1, 133, &[0; 8], "S_JOB_STATUS", "state"),
        (1, 133, &[0; 12], "S_JOB_STATUS", "attempts"),
        (1, 133, &[0; 16], "S_JOB_STATUS", "max_attempts"),
        (1, 133, &[0; 20], "S_JOB_STATUS", "progress_numerator"),
        (1, 133, &[0; 28], "S_JOB_STATUS", "progress_denominator"),
        (1, 133, &[0; 36], "S_JOB_STATUS", "function"),
        (1, 133, &[0; 40], "S_JOB_STATUS", "output"),
        (1, 133, &[0; 44], "S_JOB_STATUS", "error_code"),
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
        (sample_call_stream_bytes(), "C_CALL_STREAM"),
        (sample_call_partial_bytes(), "S_CALL_PARTIAL"),
        (sample_call_progress_bytes(), "S_CALL_PROGRESS"),
        (sample_job_partial_bytes(), "W_JOB_PARTIAL"),
        (sample_job_progress_bytes(), "W_JOB_PROGRESS"),
        (sample_submit_bytes(), "C_SUBMIT"),
        (sample_submitted_bytes(), "S_SUBMITTED"),
        (sample_job_status_bytes(), "C_JOB_STATUS"),
        (sample_job_status_reply_bytes(), "S_JOB_STATUS"),
        (sample_job_cancel_bytes(), "C_JOB_CANCEL"),
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

/// A meta count far beyond what the body holds fails at the first missing pair, at once,
/// and without reserving room for the announced count (`u32::MAX` pairs of two `Bytes`
/// would be 256 GiB: such a reservation aborts the process rather than fail the test).
#[test]
fn a_meta_count_overrunning_the_body_is_truncated_without_a_huge_allocation() {
    // (fixture, offset of meta_count in the whole frame, frame name)
    let cases = [
        (sample_call_bytes(), 58, "C_CALL"),
        (sample_job_bytes(), 54, "S_JOB"),
        (sample_submit_bytes(), 58, "C_SUBMIT"),
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
