//! Raw tagged frames of our wire protocol, as the floor's pipelined client and echo server
//! exchange them: `C_CALL` out, `S_CALL_RESULT` back, matched by request id.
//!
//! This is the one file of the harness that names `nmid::codec` types, so a change of the
//! codec's payload types touches the harness here and nowhere else. Everything else in the
//! harness talks to nmid through `nmid::client` and `nmid::worker`.

use anyhow::bail;
use bytes::{Bytes, BytesMut};
use nmid::codec::{
    self, Frame, ParamsType, TaggedCall, TaggedResult, DEFAULT_MAX_FRAME_BYTES, HANDLE_TYPE_ENCODE,
};

use crate::common::FUNCTION;

/// Appends a `C_CALL` of `FUNCTION` with `params` (msgpack, as the client library sends
/// them), tagged `request_id`, that the callee may take `timeout_ms` to answer.
pub fn put_call(out: &mut BytesMut, request_id: u64, timeout_ms: u32, params: Bytes) {
    let frame = Frame::CCall(TaggedCall {
        id: request_id,
        timeout_ms,
        params_type: ParamsType::MSGPACK,
        handle_type: HANDLE_TYPE_ENCODE,
        function: Bytes::from_static(FUNCTION.as_bytes()),
        params,
        meta: Vec::new(),
    });
    codec::encode(&frame, out).expect("a small frame encodes");
}

/// Takes one `S_CALL_RESULT` from the front of `src`: `(request_id, ret)`, `None` while the
/// frame is partial. Any other frame is an error: the echo server sends nothing else.
pub fn take_result(src: &mut BytesMut) -> anyhow::Result<Option<(u64, Bytes)>> {
    match codec::decode(src, DEFAULT_MAX_FRAME_BYTES)? {
        None => Ok(None),
        Some(Frame::SCallResult(result)) => Ok(Some((result.id, result.ret))),
        Some(frame) => bail!("unexpected {} from the echo server", frame.name()),
    }
}

/// Answers every whole `C_CALL` in `src` with an `S_CALL_RESULT` of `answer(params)` in
/// `out` (other frames are skipped); what is left in `src` is a partial frame.
pub fn answer_calls(
    src: &mut BytesMut,
    out: &mut BytesMut,
    answer: impl Fn(&[u8]) -> Bytes,
) -> anyhow::Result<()> {
    while let Some(frame) = codec::decode(src, DEFAULT_MAX_FRAME_BYTES)? {
        if let Frame::CCall(call) = frame {
            let reply = Frame::SCallResult(TaggedResult {
                id: call.id,
                ret: answer(&call.params),
            });
            codec::encode(&reply, out)?;
        }
    }
    Ok(())
}
