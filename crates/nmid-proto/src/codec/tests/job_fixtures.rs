//! Fixture pairs of the background jobs' frames (`C_SUBMIT` .. `C_JOB_CANCEL`), as
//! [`super::fixtures`] keeps the others: each `sample_x()` is a frame and `sample_x_bytes()`
//! its exact wire form, with a comment per field.

use bytes::Bytes;

use super::fixtures::REQUEST_ID;
use crate::codec::*;

/// A background submission of `ToUpper`, high priority, with a unique key.
pub(super) fn sample_submit() -> Frame {
    Frame::CSubmit(TaggedCall {
        id: REQUEST_ID,
        timeout_ms: 0,
        params_type: ParamsType::MSGPACK,
        handle_type: HANDLE_TYPE_ENCODE,
        function: Bytes::from_static(b"ToUpper"),
        params: Bytes::from_static(b"\x81\xa4name\xa4nmid"),
        meta: vec![
            (
                Bytes::from_static(b"nmid-priority"),
                Bytes::from_static(b"high"),
            ),
            (
                Bytes::from_static(b"nmid-unique-key"),
                Bytes::from_static(b"order-7"),
            ),
        ],
    })
}

pub(super) fn sample_submit_bytes() -> Vec<u8> {
    let parts: &[&[u8]] = &[
        &[0, 0, 0, 3],                // conn_type: client
        &[0, 0, 0, 130],              // data_type: C_SUBMIT
        &[0, 0, 0, 105],              // body_len
        &[0, 0, 0, 1, 0, 0, 0, 0x2a], // request_id: u64 BE 0x1_0000_002a
        &[0, 0, 0, 0],                // timeout_ms: 0 (jobs.timeout_ms)
        &[0, 0, 0, 5],                // params_type: msgpack
        &[0, 0, 0, 10],               // params_handle_type: encode
        &[0, 0, 0, 7],                // handle_len
        b"ToUpper",                   // handle
        &[0, 0, 0, 11],               // params_len
        &[0x81, 0xa4],                // params: fixmap(1), fixstr(4)
        b"name",                      //   key
        &[0xa4],                      //   fixstr(4)
        b"nmid",                      //   value
        &[0, 0, 0, 2],                // meta_count
        &[0, 0, 0, 13],               // meta[0] key_len
        b"nmid-priority",             // meta[0] key
        &[0, 0, 0, 4],                // meta[0] value_len
        b"high",                      // meta[0] value
        &[0, 0, 0, 15],               // meta[1] key_len
        b"nmid-unique-key",           // meta[1] key
        &[0, 0, 0, 7],                // meta[1] value_len
        b"order-7",                   // meta[1] value
    ];
    parts.concat()
}

/// The submission was accepted: it shares the queued job `n1-7`.
pub(super) fn sample_submitted() -> Frame {
    Frame::SSubmitted(SSubmitted {
        request_id: REQUEST_ID,
        shared: true,
        job_id: Bytes::from_static(b"n1-7"),
    })
}

pub(super) fn sample_submitted_bytes() -> Vec<u8> {
    let parts: &[&[u8]] = &[
        &[0, 0, 0, 1],                // conn_type: server
        &[0, 0, 0, 131],              // data_type: S_SUBMITTED
        &[0, 0, 0, 20],               // body_len
        &[0, 0, 0, 1, 0, 0, 0, 0x2a], // request_id
        &[0, 0, 0, 1],                // shared: 1
        &[0, 0, 0, 4],                // job_id_len
        b"n1-7",                      // job_id
    ];
    parts.concat()
}

/// The state of job `n1-7`, waiting up to 2.5 s for it to end.
pub(super) fn sample_job_status() -> Frame {
    Frame::CJobStatus(CJobStatus {
        request_id: REQUEST_ID,
        wait_ms: 2500,
        job_id: Bytes::from_static(b"n1-7"),
    })
}

pub(super) fn sample_job_status_bytes() -> Vec<u8> {
    let parts: &[&[u8]] = &[
        &[0, 0, 0, 3],                // conn_type: client
        &[0, 0, 0, 132],              // data_type: C_JOB_STATUS
        &[0, 0, 0, 20],               // body_len
        &[0, 0, 0, 1, 0, 0, 0, 0x2a], // request_id
        &[0, 0, 0x09, 0xc4],          // wait_ms: 2500
        &[0, 0, 0, 4],                // job_id_len
        b"n1-7",                      // job_id
    ];
    parts.concat()
}

/// Job `n1-7` failed on its third of three attempts, half way through.
pub(super) fn sample_job_status_reply() -> Frame {
    Frame::SJobStatus(SJobStatus {
        request_id: REQUEST_ID,
        state: JobStateCode::FAILED,
        attempts: 3,
        max_attempts: 3,
        progress_numerator: 1 << 32,
        progress_denominator: 2 << 32,
        function: Bytes::from_static(b"ToUpper"),
        output: Bytes::from_static(b"boom"),
        error_code: Bytes::from_static(b"worker_error"),
    })
}

pub(super) fn sample_job_status_reply_bytes() -> Vec<u8> {
    let parts: &[&[u8]] = &[
        &[0, 0, 0, 1],                // conn_type: server
        &[0, 0, 0, 133],              // data_type: S_JOB_STATUS
        &[0, 0, 0, 71],               // body_len
        &[0, 0, 0, 1, 0, 0, 0, 0x2a], // request_id
        &[0, 0, 0, 3],                // state: failed
        &[0, 0, 0, 3],                // attempts
        &[0, 0, 0, 3],                // max_attempts
        &[0, 0, 0, 1, 0, 0, 0, 0],    // progress_numerator: u64 BE 1 << 32
        &[0, 0, 0, 2, 0, 0, 0, 0],    // progress_denominator: u64 BE 2 << 32
        &[0, 0, 0, 7],                // function_len
        b"ToUpper",                   // function
        &[0, 0, 0, 4],                // output_len
        b"boom",                      // output: the error message
        &[0, 0, 0, 12],               // error_code_len
        b"worker_error",              // error_code
    ];
    parts.concat()
}

/// Cancel job `n1-7`.
pub(super) fn sample_job_cancel() -> Frame {
    Frame::CJobCancel(CJobCancel {
        request_id: REQUEST_ID,
        job_id: Bytes::from_static(b"n1-7"),
    })
}

pub(super) fn sample_job_cancel_bytes() -> Vec<u8> {
    let parts: &[&[u8]] = &[
        &[0, 0, 0, 3],                // conn_type: client
        &[0, 0, 0, 134],              // data_type: C_JOB_CANCEL
        &[0, 0, 0, 16],               // body_len
        &[0, 0, 0, 1, 0, 0, 0, 0x2a], // request_id
        &[0, 0, 0, 4],                // job_id_len
        b"n1-7",                      // job_id
    ];
    parts.concat()
}

/// The background jobs' fixture pairs, for the round trips.
pub(super) fn job_samples() -> Vec<(Frame, Vec<u8>)> {
    vec![
        (sample_submit(), sample_submit_bytes()),
        (sample_submitted(), sample_submitted_bytes()),
        (sample_job_status(), sample_job_status_bytes()),
        (sample_job_status_reply(), sample_job_status_reply_bytes()),
        (sample_job_cancel(), sample_job_cancel_bytes()),
    ]
}
