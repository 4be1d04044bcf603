//! Fixture pairs, as rumqttd keeps them: each `sample_x()` is a frame and
//! `sample_x_bytes()` its exact wire form, with a comment per field.
//!
//! Deliberately repetitive: every fixture spells out its bytes field by field, so that each
//! can be read alone against the protocol's layout without following a helper.

use bytes::Bytes;

use crate::codec::*;

/// A client's call of `ToUpper` with the msgpack map `{"name": "nmid"}`.
pub(super) fn sample_do_job() -> Frame {
    Frame::CDoJob(CDoJob {
        params_type: ParamsType::MSGPACK,
        handle_type: HANDLE_TYPE_ENCODE,
        function: Bytes::from_static(b"ToUpper"),
        params: Bytes::from_static(b"\x81\xa4name\xa4nmid"),
    })
}

pub(super) fn sample_do_job_bytes() -> Vec<u8> {
    let parts: &[&[u8]] = &[
        &[0, 0, 0, 3],  // conn_type: client
        &[0, 0, 0, 16], // data_type: C_DO_JOB
        &[0, 0, 0, 34], // body_len
        &[0, 0, 0, 5],  // params_type: msgpack
        &[0, 0, 0, 10], // params_handle_type: encode
        &[0, 0, 0, 7],  // handle_len
        b"ToUpper",     // handle
        &[0, 0, 0, 11], // params_len
        &[0x81, 0xa4],  // params: fixmap(1), fixstr(4)
        b"name",        //   key
        &[0xa4],        //   fixstr(4)
        b"nmid",        //   value
    ];
    parts.concat()
}

/// A job pushed to a worker; JSON params passed through as the caller gave them.
pub(super) fn sample_get_data() -> Frame {
    Frame::SGetData(SGetData {
        params_type: ParamsType::JSON,
        handle_type: HANDLE_TYPE_ORIGINAL,
        function: Bytes::from_static(b"ToUpper"),
        params: Bytes::from_static(b"{\"a\":1}"),
        job_id: Bytes::from_static(b"job-1"),
    })
}

pub(super) fn sample_get_data_bytes() -> Vec<u8> {
    let parts: &[&[u8]] = &[
        &[0, 0, 0, 1],  // conn_type: server
        &[0, 0, 0, 10], // data_type: S_GET_DATA
        &[0, 0, 0, 39], // body_len
        &[0, 0, 0, 6],  // params_type: JSON
        &[0, 0, 0, 11], // params_handle_type: original
        &[0, 0, 0, 7],  // handle_len
        &[0, 0, 0, 7],  // params_len
        &[0, 0, 0, 5],  // job_id_len
        b"ToUpper",     // handle
        b"{\"a\":1}",   // params
        b"job-1",       // job_id
    ];
    parts.concat()
}

/// A worker's result for `job-1`, echoing the handle and params it was given.
pub(super) fn sample_worker_return() -> Frame {
    Frame::WReturnData(WReturnData {
        function: Bytes::from_static(b"ToUpper"),
        params: Bytes::from_static(b"{\"a\":1}"),
        ret: Bytes::from_static(b"\x81\xa4Code\x00"),
        job_id: Bytes::from_static(b"job-1"),
    })
}

pub(super) fn sample_worker_return_bytes() -> Vec<u8> {
    let parts: &[&[u8]] = &[
        &[0, 0, 0, 2],  // conn_type: worker
        &[0, 0, 0, 15], // data_type: W_RETURN_DATA
        &[0, 0, 0, 42], // body_len
        &[0, 0, 0, 7],  // handle_len
        b"ToUpper",     // handle
        &[0, 0, 0, 7],  // params_len
        b"{\"a\":1}",   // params
        &[0, 0, 0, 7],  // ret_len
        &[0x81, 0xa4],  // ret: fixmap(1), fixstr(4)
        b"Code",        //   key
        &[0x00],        //   value: positive fixint 0
        &[0, 0, 0, 5],  // job_id_len
        b"job-1",       // job_id
    ];
    parts.concat()
}

/// The result sent back to the calling client (no job id in v1).
pub(super) fn sample_return_data() -> Frame {
    Frame::SReturnData(SReturnData {
        function: Bytes::from_static(b"ToUpper"),
        params: Bytes::from_static(b"{\"a\":1}"),
        ret: Bytes::from_static(b"\x81\xa4Code\x00"),
    })
}

pub(super) fn sample_return_data_bytes() -> Vec<u8> {
    let parts: &[&[u8]] = &[
        &[0, 0, 0, 1],  // conn_type: server
        &[0, 0, 0, 11], // data_type: S_RETURN_DATA
        &[0, 0, 0, 33], // body_len
        &[0, 0, 0, 7],  // handle_len
        &[0, 0, 0, 7],  // params_len
        &[0, 0, 0, 7],  // ret_len
        b"ToUpper",     // handle
        b"{\"a\":1}",   // params
        &[0x81, 0xa4],  // ret: fixmap(1), fixstr(4)
        b"Code",        //   key
        &[0x00],        //   value: positive fixint 0
    ];
    parts.concat()
}

/// A worker naming itself at start-up.
pub(super) fn sample_set_name() -> Frame {
    Frame::WSetName {
        name: Bytes::from_static(b"Worker1"),
    }
}

pub(super) fn sample_set_name_bytes() -> Vec<u8> {
    let parts: &[&[u8]] = &[
        &[0, 0, 0, 2],  // conn_type: worker
        &[0, 0, 0, 23], // data_type: W_SET_NAME (23 from a worker)
        &[0, 0, 0, 7],  // body_len
        b"Worker1",     // body: the worker's name, no length prefix
    ];
    parts.concat()
}

/// A worker's heartbeat, with the body every SDK sends.
pub(super) fn sample_heartbeat_ping() -> Frame {
    Frame::WHeartbeatPing {
        body: Bytes::from_static(b"PING"),
    }
}

pub(super) fn sample_heartbeat_ping_bytes() -> Vec<u8> {
    let parts: &[&[u8]] = &[
        &[0, 0, 0, 2],  // conn_type: worker
        &[0, 0, 0, 22], // data_type: W_HEARTBEAT_PING
        &[0, 0, 0, 4],  // body_len
        b"PING",        // body
    ];
    parts.concat()
}

// Tagged extension frames (data types 100 and up).

/// W3C trace context of the tagged samples.
const TRACEPARENT: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACESTATE: &[u8] = b"congo=t61rcWkgMzE";

/// A request id with bits in both halves, so that a u32 write of it would show.
pub(super) const REQUEST_ID: u64 = 0x0000_0001_0000_002a;
/// A job id with the top bit set, so that a signed or narrowed write of it would show.
pub(super) const JOB_ID: u64 = 0x8000_0000_0000_0009;

/// A client's tagged call of `ToUpper`, carrying trace context as two metadata pairs.
pub(super) fn sample_call() -> Frame {
    Frame::CCall(TaggedCall {
        id: REQUEST_ID,
        timeout_ms: 5000,
        params_type: ParamsType::MSGPACK,
        handle_type: HANDLE_TYPE_ENCODE,
        function: Bytes::from_static(b"ToUpper"),
        params: Bytes::from_static(b"\x81\xa4name\xa4nmid"),
        meta: vec![
            (
                Bytes::from_static(b"traceparent"),
                Bytes::from_static(TRACEPARENT),
            ),
            (
                Bytes::from_static(b"tracestate"),
                Bytes::from_static(TRACESTATE),
            ),
        ],
    })
}

pub(super) fn sample_call_bytes() -> Vec<u8> {
    let parts: &[&[u8]] = &[
        &[0, 0, 0, 3],                // conn_type: client
        &[0, 0, 0, 100],              // data_type: C_CALL
        &[0, 0, 0, 159],              // body_len
        &[0, 0, 0, 1, 0, 0, 0, 0x2a], // request_id: u64 BE 0x1_0000_002a
        &[0, 0, 0x13, 0x88],          // timeout_ms: 5000
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
        &[0, 0, 0, 11],               // meta[0] key_len
        b"traceparent",               // meta[0] key
        &[0, 0, 0, 55],               // meta[0] value_len
        TRACEPARENT,                  // meta[0] value
        &[0, 0, 0, 10],               // meta[1] key_len
        b"tracestate",                // meta[1] key
        &[0, 0, 0, 17],               // meta[1] value_len
        TRACESTATE,                   // meta[1] value
    ];
    parts.concat()
}

/// A tagged job pushed to a worker: JSON params, the remaining budget, one metadata pair.
pub(super) fn sample_job() -> Frame {
    Frame::SJob(TaggedCall {
        id: JOB_ID,
        timeout_ms: 4750,
        params_type: ParamsType::JSON,
        handle_type: HANDLE_TYPE_ORIGINAL,
        function: Bytes::from_static(b"ToUpper"),
        params: Bytes::from_static(b"{\"a\":1}"),
        meta: vec![(
            Bytes::from_static(b"traceparent"),
            Bytes::from_static(TRACEPARENT),
        )],
    })
}

pub(super) fn sample_job_bytes() -> Vec<u8> {
    let parts: &[&[u8]] = &[
        &[0, 0, 0, 1],                // conn_type: server
        &[0, 0, 0, 111],              // data_type: S_JOB
        &[0, 0, 0, 120],              // body_len
        &[0x80, 0, 0, 0, 0, 0, 0, 9], // job_id: u64 BE 0x8000_0000_0000_0009
        &[0, 0, 0x12, 0x8e],          // timeout_ms: 4750
        &[0, 0, 0, 6],                // params_type: JSON
        &[0, 0, 0, 11],               // params_handle_type: original
        &[0, 0, 0, 7],                // handle_len
        b"ToUpper",                   // handle
        &[0, 0, 0, 7],                // params_len
        b"{\"a\":1}",                 // params
        &[0, 0, 0, 1],                // meta_count
        &[0, 0, 0, 11],               // meta[0] key_len
        b"traceparent",               // meta[0] key
        &[0, 0, 0, 55],               // meta[0] value_len
        TRACEPARENT,                  // meta[0] value
    ];
    parts.concat()
}

/// The result of the sample call, tagged with its request id.
pub(super) fn sample_call_result() -> Frame {
    Frame::SCallResult(TaggedResult {
        id: REQUEST_ID,
        ret: Bytes::from_static(b"\x81\xa4Code\x00"),
    })
}

pub(super) fn sample_call_result_bytes() -> Vec<u8> {
    let parts: &[&[u8]] = &[
        &[0, 0, 0, 1],                // conn_type: server
        &[0, 0, 0, 101],              // data_type: S_CALL_RESULT
        &[0, 0, 0, 19],               // body_len
        &[0, 0, 0, 1, 0, 0, 0, 0x2a], // request_id
        &[0, 0, 0, 7],                // ret_len
        &[0x81, 0xa4],                // ret: fixmap(1), fixstr(4)
        b"Code",                      //   key
        &[0x00],                      //   value: positive fixint 0
    ];
    parts.concat()
}

/// The sample call refused: no worker serves the function.
pub(super) fn sample_call_error() -> Frame {
    Frame::SCallError(SCallError {
        request_id: REQUEST_ID,
        code: ErrorCode::NO_WORKER,
        message: Bytes::from_static(b"no worker for ToUpper"),
    })
}

pub(super) fn sample_call_error_bytes() -> Vec<u8> {
    let parts: &[&[u8]] = &[
        &[0, 0, 0, 1],                // conn_type: server
        &[0, 0, 0, 102],              // data_type: S_CALL_ERROR
        &[0, 0, 0, 37],               // body_len
        &[0, 0, 0, 1, 0, 0, 0, 0x2a], // request_id
        &[0, 0, 0, 2],                // code: NO_WORKER
        &[0, 0, 0, 21],               // message_len
        b"no worker for ToUpper",     // message
    ];
    parts.concat()
}

/// A tagged worker's result for the sample job.
pub(super) fn sample_job_result() -> Frame {
    Frame::WJobResult(TaggedResult {
        id: JOB_ID,
        ret: Bytes::from_static(b"\x81\xa4Code\x00"),
    })
}

pub(super) fn sample_job_result_bytes() -> Vec<u8> {
    let parts: &[&[u8]] = &[
        &[0, 0, 0, 2],                // conn_type: worker
        &[0, 0, 0, 112],              // data_type: W_JOB_RESULT
        &[0, 0, 0, 19],               // body_len
        &[0x80, 0, 0, 0, 0, 0, 0, 9], // job_id
        &[0, 0, 0, 7],                // ret_len
        &[0x81, 0xa4],                // ret: fixmap(1), fixstr(4)
        b"Code",                      //   key
        &[0x00],                      //   value: positive fixint 0
    ];
    parts.concat()
}

/// The sample job's function failed on the worker.
pub(super) fn sample_job_error() -> Frame {
    Frame::WJobError(WJobError {
        job_id: JOB_ID,
        message: Bytes::from_static(b"division by zero"),
    })
}

pub(super) fn sample_job_error_bytes() -> Vec<u8> {
    let parts: &[&[u8]] = &[
        &[0, 0, 0, 2],                // conn_type: worker
        &[0, 0, 0, 113],              // data_type: W_JOB_ERROR
        &[0, 0, 0, 28],               // body_len
        &[0x80, 0, 0, 0, 0, 0, 0, 9], // job_id
        &[0, 0, 0, 16],               // message_len
        b"division by zero",          // message
    ];
    parts.concat()
}

/// A worker switching to tagged jobs, eight at a time.
pub(super) fn sample_slots() -> Frame {
    Frame::WSlots { slots: 8 }
}

pub(super) fn sample_slots_bytes() -> Vec<u8> {
    let parts: &[&[u8]] = &[
        &[0, 0, 0, 2],   // conn_type: worker
        &[0, 0, 0, 110], // data_type: W_SLOTS
        &[0, 0, 0, 4],   // body_len
        &[0, 0, 0, 8],   // slots, no length prefix
    ];
    parts.concat()
}

/// A client presenting a token's secret as its first frame.
pub(super) fn sample_client_auth() -> Frame {
    Frame::CAuth {
        secret: Bytes::from_static(b"s3cret-0123456789"),
    }
}

pub(super) fn sample_client_auth_bytes() -> Vec<u8> {
    let parts: &[&[u8]] = &[
        &[0, 0, 0, 3],        // conn_type: client
        &[0, 0, 0, 120],      // data_type: AUTH
        &[0, 0, 0, 17],       // body_len
        b"s3cret-0123456789", // the secret: the whole body
    ];
    parts.concat()
}

/// A worker presenting a token's secret as its first frame.
pub(super) fn sample_worker_auth() -> Frame {
    Frame::WAuth {
        secret: Bytes::from_static(b"s3cret-0123456789"),
    }
}

pub(super) fn sample_worker_auth_bytes() -> Vec<u8> {
    let parts: &[&[u8]] = &[
        &[0, 0, 0, 2],        // conn_type: worker
        &[0, 0, 0, 120],      // data_type: AUTH
        &[0, 0, 0, 17],       // body_len
        b"s3cret-0123456789", // the secret: the whole body
    ];
    parts.concat()
}

/// The dispatcher accepting a token.
pub(super) fn sample_auth_result() -> Frame {
    Frame::SAuthResult(SAuthResult {
        code: SAuthResult::ACCEPTED,
        message: Bytes::from_static(b"token web"),
    })
}

pub(super) fn sample_auth_result_bytes() -> Vec<u8> {
    let parts: &[&[u8]] = &[
        &[0, 0, 0, 1],   // conn_type: server
        &[0, 0, 0, 121], // data_type: S_AUTH_RESULT
        &[0, 0, 0, 17],  // body_len
        &[0, 0, 0, 0],   // code: accepted
        &[0, 0, 0, 9],   // message_len
        b"token web",    // message: the grant's name
    ];
    parts.concat()
}

/// The sample call, asked for as a stream: the body of `C_CALL`.
pub(super) fn sample_call_stream() -> Frame {
    match sample_call() {
        Frame::CCall(call) => Frame::CCallStream(call),
        other => other,
    }
}

pub(super) fn sample_call_stream_bytes() -> Vec<u8> {
    let mut bytes = sample_call_bytes();
    bytes[4..8].copy_from_slice(&[0, 0, 0, 103]); // data_type: C_CALL_STREAM; body as C_CALL
    bytes
}

/// A partial result of the sample call, on its way to the caller.
pub(super) fn sample_call_partial() -> Frame {
    Frame::SCallPartial(TaggedPartial {
        id: REQUEST_ID,
        data: Bytes::from_static(b"token 1\n"),
    })
}

pub(super) fn sample_call_partial_bytes() -> Vec<u8> {
    let parts: &[&[u8]] = &[
        &[0, 0, 0, 1],                // conn_type: server
        &[0, 0, 0, 104],              // data_type: S_CALL_PARTIAL
        &[0, 0, 0, 20],               // body_len
        &[0, 0, 0, 1, 0, 0, 0, 0x2a], // request_id
        &[0, 0, 0, 8],                // data_len
        b"token 1\n",                 // data
    ];
    parts.concat()
}

/// The sample call is 3 of 10 done.
pub(super) fn sample_call_progress() -> Frame {
    Frame::SCallProgress(TaggedProgress {
        id: REQUEST_ID,
        numerator: 3,
        denominator: 10,
    })
}

pub(super) fn sample_call_progress_bytes() -> Vec<u8> {
    let parts: &[&[u8]] = &[
        &[0, 0, 0, 1],                // conn_type: server
        &[0, 0, 0, 105],              // data_type: S_CALL_PROGRESS
        &[0, 0, 0, 24],               // body_len
        &[0, 0, 0, 1, 0, 0, 0, 0x2a], // request_id
        &[0, 0, 0, 0, 0, 0, 0, 3],    // numerator
        &[0, 0, 0, 0, 0, 0, 0, 10],   // denominator
    ];
    parts.concat()
}

/// A tagged worker's partial result for the sample job.
pub(super) fn sample_job_partial() -> Frame {
    Frame::WJobPartial(TaggedPartial {
        id: JOB_ID,
        data: Bytes::from_static(b"row 1"),
    })
}

pub(super) fn sample_job_partial_bytes() -> Vec<u8> {
    let parts: &[&[u8]] = &[
        &[0, 0, 0, 2],                // conn_type: worker
        &[0, 0, 0, 116],              // data_type: W_JOB_PARTIAL
        &[0, 0, 0, 17],               // body_len
        &[0x80, 0, 0, 0, 0, 0, 0, 9], // job_id
        &[0, 0, 0, 5],                // data_len
        b"row 1",                     // data
    ];
    parts.concat()
}

/// A tagged worker's progress on the sample job: the largest numbers.
pub(super) fn sample_job_progress() -> Frame {
    Frame::WJobProgress(TaggedProgress {
        id: JOB_ID,
        numerator: u64::MAX,
        denominator: u64::MAX,
    })
}

pub(super) fn sample_job_progress_bytes() -> Vec<u8> {
    let parts: &[&[u8]] = &[
        &[0, 0, 0, 2],                // conn_type: worker
        &[0, 0, 0, 117],              // data_type: W_JOB_PROGRESS
        &[0, 0, 0, 24],               // body_len
        &[0x80, 0, 0, 0, 0, 0, 0, 9], // job_id
        &[0xff; 8],                   // numerator
        &[0xff; 8],                   // denominator
    ];
    parts.concat()
}

pub(super) fn samples() -> Vec<(Frame, Vec<u8>)> {
    vec![
        (sample_do_job(), sample_do_job_bytes()),
        (sample_get_data(), sample_get_data_bytes()),
        (sample_worker_return(), sample_worker_return_bytes()),
        (sample_return_data(), sample_return_data_bytes()),
        (sample_set_name(), sample_set_name_bytes()),
        (sample_heartbeat_ping(), sample_heartbeat_ping_bytes()),
        (sample_call(), sample_call_bytes()),
        (sample_job(), sample_job_bytes()),
        (sample_call_result(), sample_call_result_bytes()),
        (sample_call_error(), sample_call_error_bytes()),
        (sample_job_result(), sample_job_result_bytes()),
        (sample_job_error(), sample_job_error_bytes()),
        (sample_slots(), sample_slots_bytes()),
        (sample_client_auth(), sample_client_auth_bytes()),
        (sample_worker_auth(), sample_worker_auth_bytes()),
        (sample_auth_result(), sample_auth_result_bytes()),
        (sample_call_stream(), sample_call_stream_bytes()),
        (sample_call_partial(), sample_call_partial_bytes()),
        (sample_call_progress(), sample_call_progress_bytes()),
        (sample_job_partial(), sample_job_partial_bytes()),
        (sample_job_progress(), sample_job_progress_bytes()),
    ]
    .into_iter()
    .chain(super::job_fixtures::job_samples())
    .collect()
}
