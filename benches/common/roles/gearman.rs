//! The Gearman binary protocol, as much as the harness's client and workers need.
//!
//! ```text
//! +-------------------+-----------+-----------+---------------------------------+
//! | magic             | type      | size      | data: arguments separated by \0 |
//! | "\0REQ" / "\0RES" | u32 BE    | u32 BE    | (the last one may hold \0)      |
//! +-------------------+-----------+-----------+---------------------------------+
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Request magic (client or worker -> server).
const REQ: &[u8; 4] = b"\0REQ";
/// Response magic (server -> client or worker).
const RES: &[u8; 4] = b"\0RES";
/// Header bytes.
const HEADER: usize = 12;
/// Larger packets are refused (the harness never sends more than a few KiB).
const MAX_PACKET: usize = 16 * 1024 * 1024;

/// Packet types used here (from the Gearman protocol document).
#[derive(Debug)]
pub struct Packet;

#[allow(missing_docs)]
impl Packet {
    pub const CAN_DO: u32 = 1;
    pub const PRE_SLEEP: u32 = 4;
    pub const NOOP: u32 = 6;
    pub const SUBMIT_JOB: u32 = 7;
    pub const JOB_CREATED: u32 = 8;
    pub const GRAB_JOB: u32 = 9;
    pub const NO_JOB: u32 = 10;
    pub const JOB_ASSIGN: u32 = 11;
    pub const WORK_COMPLETE: u32 = 13;
    pub const WORK_FAIL: u32 = 14;
    pub const ECHO_REQ: u32 = 16;
    pub const ECHO_RES: u32 = 17;
    pub const ERROR: u32 = 19;
    pub const WORK_EXCEPTION: u32 = 25;
}

/// Appends a request packet whose data is `args` joined by `\0`.
pub fn put_request(dst: &mut BytesMut, kind: u32, args: &[&[u8]]) {
    let size: usize = args.iter().map(|a| a.len()).sum::<usize>() + args.len().saturating_sub(1);
    dst.reserve(HEADER + size);
    dst.put_slice(REQ);
    dst.put_u32(kind);
    dst.put_u32(size as u32);
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            dst.put_u8(0);
        }
        dst.put_slice(arg);
    }
}

/// Takes one response packet from the front of `src`: `(type, data)`, `None` while partial.
pub fn take_response(src: &mut BytesMut) -> anyhow::Result<Option<(u32, Bytes)>> {
    if src.len() < HEADER {
        return Ok(None);
    }
    if &src[..4] != RES {
        anyhow::bail!("gearman: bad magic {:?}", &src[..4]);
    }
    let kind = u32::from_be_bytes([src[4], src[5], src[6], src[7]]);
    let size = u32::from_be_bytes([src[8], src[9], src[10], src[11]]) as usize;
    if size > MAX_PACKET {
        anyhow::bail!("gearman: {size}-byte packet");
    }
    if src.len() < HEADER + size {
        src.reserve(HEADER + size - src.len());
        return Ok(None);
    }
    src.advance(HEADER);
    Ok(Some((kind, src.split_to(size).freeze())))
}

/// Splits `data` at its first `n - 1` `\0`s into `n` arguments (the last keeps any `\0`).
pub fn split_args(data: &Bytes, n: usize) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(n);
    let mut rest = data.clone();
    while out.len() + 1 < n {
        match rest.iter().position(|&b| b == 0) {
            Some(i) => {
                out.push(rest.slice(..i));
                rest = rest.slice(i + 1..);
            }
            None => break,
        }
    }
    out.push(rest);
    out
}
