//! Any body behind a valid header of each tagged kind (and `C_DO_JOB`, `W_RETURN_DATA`): read
//! as a frame or refused as a bad body, never a panic; a `W_RETURN_DATA` body that reads
//! leniently re-reads to the same fields.
#![no_main]

use bytes::{BufMut, Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use nmid::codec::{decode_frame, WReturnData, DEFAULT_MAX_FRAME_BYTES, READ_AHEAD};

/// (conn_type, data_type) of the frames with structured bodies.
const KINDS: [(u32, u32); 8] = [
    (3, 100), // C_CALL
    (1, 111), // S_JOB
    (1, 101), // S_CALL_RESULT
    (1, 102), // S_CALL_ERROR
    (2, 112), // W_JOB_RESULT
    (2, 113), // W_JOB_ERROR
    (3, 16),  // C_DO_JOB
    (2, 15),  // W_RETURN_DATA
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let (conn_type, data_type) = KINDS[usize::from(pick) % KINDS.len()];
    let mut buf = BytesMut::new();
    buf.put_u32(conn_type);
    buf.put_u32(data_type);
    buf.put_u32(body.len() as u32);
    buf.put_slice(body);
    let decoded = decode_frame(&mut buf, DEFAULT_MAX_FRAME_BYTES, READ_AHEAD);
    assert!(matches!(decoded, Ok(Some(_))), "a whole frame with a valid header is read");
    assert!(buf.is_empty());
    if data_type == 15 {
        if let Some((ret, extra)) = WReturnData::read_leniently(Bytes::copy_from_slice(body)) {
            assert!(extra <= body.len());
            let again = WReturnData::read_leniently(Bytes::copy_from_slice(body));
            assert_eq!(again.map(|(r, _)| r), Some(ret));
        }
    }
});
