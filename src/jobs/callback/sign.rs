//! The callback signature: HMAC-SHA256 (RFC 2104) over `sha2`, which the tree has already
//! (fifteen lines do not need another crate), and the string it signs.
//!
//! The signed string holds every header a receiver acts on, each exactly as sent, one per
//! line, then the body:
//!
//! ```text
//! {X-Nmid-Timestamp}\n{X-Call-Id}\n{X-Nmid-Function}\n{X-Nmid-Job-State}\n{body}
//! ```
//!
//! Header values cannot hold a line feed, so no two different requests sign the same string.
//! Signing the timestamp and body alone would let anyone who saw one callback (they go over
//! plain http) replay its body under another job id or state within the receiver's
//! timestamp window.

use sha2::{Digest, Sha256};

/// SHA-256's block size, in bytes.
const BLOCK_BYTES: usize = 64;

/// HMAC-SHA256 of the concatenation of `parts`, keyed by `key`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut block = [0u8; BLOCK_BYTES];
    if key.len() > BLOCK_BYTES {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let mut inner = Sha256::new();
    inner.update(pad(0x36));
    for part in parts {
        inner.update(part);
    }
    let mut outer = Sha256::new();
    outer.update(pad(0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The `X-Nmid-Signature` value of a callback: `sha256=<lower-case hex>`, over the signed
/// string of the module doc. The header values are passed as sent.
pub fn signature(
    key: &[u8],
    timestamp: &str,
    call_id: &str,
    function: &str,
    state: &str,
    body: &[u8],
) -> String {
    let mac = hmac_sha256(
        key,
        &[
            timestamp.as_bytes(),
            b"\n",
            call_id.as_bytes(),
            b"\n",
            function.as_bytes(),
            b"\n",
            state.as_bytes(),
            b"\n",
            body,
        ],
    );
    format!("sha256={}", to_hex(&mac))
}

/// Lower-case hex.
fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 4231's HMAC-SHA256 test cases 1 to 7 (case 5's truncated output compared on its
    /// first 16 bytes), keys shorter than, equal to and longer than a block.
    #[test]
    fn hmac_matches_the_rfc_4231_vectors() {
        let long_key = vec![0xaa; 131];
        let cases: [(Vec<u8>, &[u8], &str); 7] = [
            (
                vec![0x0b; 20],
                b"Hi There",
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe".to_vec(),
                b"what do ya want for nothing?",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                vec![0xaa; 20],
                &[0xdd; 50],
                "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
            ),
            (
                unhex("0102030405060708090a0b0c0d0e0f10111213141516171819"),
                &[0xcd; 50],
                "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
            ),
            (
                vec![0x0c; 20],
                b"Test With Truncation",
                "a3b6167473100ee06e0c796c2955552b",
            ),
            (
                long_key.clone(),
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
            (
                long_key,
                b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.",
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
            ),
        ];
        for (i, (key, data, expected)) in cases.iter().enumerate() {
            let mac = to_hex(&hmac_sha256(key, &[data]));
            assert_eq!(&mac[..expected.len()], *expected, "RFC 4231 case {}", i + 1);
        }
    }

    /// A key of exactly one block is used as it is, not hashed.
    #[test]
    fn a_block_sized_key_is_not_hashed() {
        let key = [0x61u8; 64];
        let hashed: [u8; 32] = Sha256::digest(key).into();
        assert_ne!(hmac_sha256(&key, &[b"x"]), hmac_sha256(&hashed, &[b"x"]));
    }

    /// The signed string is the headers then the body, one per line; parts split anywhere
    /// give the same MAC as the whole.
    #[test]
    fn the_signature_covers_headers_and_body() {
        let sig = signature(b"k", "1700000000", "job-1", "ToUpper", "succeeded", b"HI");
        let whole = hmac_sha256(b"k", &[b"1700000000\njob-1\nToUpper\nsucceeded\nHI"]);
        assert_eq!(sig, format!("sha256={}", to_hex(&whole)));
        let other = signature(b"k", "1700000000", "job-2", "ToUpper", "succeeded", b"HI");
        assert_ne!(sig, other);
        let failed = signature(b"k", "1700000000", "job-1", "ToUpper", "failed", b"HI");
        assert_ne!(sig, failed);
    }
}
