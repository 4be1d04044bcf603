//! The callback signature: HMAC-SHA256 (RFC 2104) over `sha2`, which the tree has already
//! (fifteen lines do not need another crate), and the string it signs.
//!
//! The signed string holds every header a receiver acts on, each exactly as sent, one per
//! line, then the request target (the path and query of the request line), then the body:
//!
//! ```text
//! {X-Nmid-Timestamp}\n{X-Call-Id}\n{X-Nmid-Function}\n{X-Nmid-Job-State}\n
//! {X-Nmid-Submitter}\n{request target}\n{body}
//! ```
//!
//! (one string: the line break after the state's `\n` is only for the page.)
//!
//! Header values and a request target cannot hold a line feed, so no two different requests
//! sign the same string. Signing the timestamp and body alone would let anyone who saw one
//! callback (they go over plain http) replay its body under another job id or state within
//! the receiver's timestamp window. Without the target, a captured callback re-posted to
//! another URL under the same allowed prefix would verify there; without the submitter, a
//! tenant could aim a job of its own at another tenant's endpoint under a shared prefix and
//! have it accepted as genuine.

use reqwest::Url;
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

/// What one callback request signs: its header values exactly as sent, its request target
/// and its body.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// `X-Nmid-Timestamp`.
    pub timestamp: &'a str,
    /// `X-Call-Id`.
    pub call_id: &'a str,
    /// `X-Nmid-Function`.
    pub function: &'a str,
    /// `X-Nmid-Job-State`.
    pub state: &'a str,
    /// `X-Nmid-Submitter` (empty when the job has none).
    pub submitter: &'a str,
    /// The request target: the URL's path and, when it has one, `?` and its query, exactly
    /// as on the request line.
    pub target: &'a str,
    /// The body.
    pub body: &'a [u8],
}

/// The `X-Nmid-Signature` value of a callback: `sha256=<lower-case hex>`, over the signed
/// string of the module doc.
pub fn signature(key: &[u8], signed: &Signed<'_>) -> String {
    let mac = hmac_sha256(
        key,
        &[
            signed.timestamp.as_bytes(),
            b"\n",
            signed.call_id.as_bytes(),
            b"\n",
            signed.function.as_bytes(),
            b"\n",
            signed.state.as_bytes(),
            b"\n",
            signed.submitter.as_bytes(),
            b"\n",
            signed.target.as_bytes(),
            b"\n",
            signed.body,
        ],
    );
    format!("sha256={}", to_hex(&mac))
}

/// The request target the client sends for `url`: its path, and `?` and its query when it
/// has one (the origin form of RFC 9112, as `reqwest` writes it).
pub fn request_target(url: &Url) -> String {
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    }
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

    /// The target is the path and query as sent, without the host or a fragment.
    #[test]
    fn the_request_target_is_the_path_and_query() {
        let target = |url: &str| request_target(&Url::parse(url).unwrap());
        assert_eq!(
            target("http://127.0.0.1:9100/hooks/tenant-b/orders?order=42"),
            "/hooks/tenant-b/orders?order=42"
        );
        assert_eq!(target("http://h.example/hooks/a%20b"), "/hooks/a%20b");
        assert_eq!(target("http://h.example"), "/");
    }

    /// A key of exactly one block is used as it is, not hashed.
    #[test]
    fn a_block_sized_key_is_not_hashed() {
        let key = [0x61u8; 64];
        let hashed: [u8; 32] = Sha256::digest(key).into();
        assert_ne!(hmac_sha256(&key, &[b"x"]), hmac_sha256(&hashed, &[b"x"]));
    }

    /// The signed string is the headers, the target, then the body, one per line; parts
    /// split anywhere give the same MAC as the whole; each part changes the signature.
    #[test]
    fn the_signature_covers_headers_target_and_body() {
        let genuine = Signed {
            timestamp: "1700000000",
            call_id: "job-1",
            function: "ToUpper",
            state: "succeeded",
            submitter: "token:tenant-a",
            target: "/hooks/tenant-a/orders?order=42",
            body: b"HI",
        };
        let sig = signature(b"k", &genuine);
        let whole = hmac_sha256(
            b"k",
            &[b"1700000000\njob-1\nToUpper\nsucceeded\ntoken:tenant-a\n\
                /hooks/tenant-a/orders?order=42\nHI"],
        );
        assert_eq!(sig, format!("sha256={}", to_hex(&whole)));
        for changed in [
            Signed {
                call_id: "job-2",
                ..genuine
            },
            Signed {
                state: "failed",
                ..genuine
            },
            Signed {
                submitter: "token:tenant-b",
                ..genuine
            },
            Signed {
                submitter: "",
                ..genuine
            },
            Signed {
                target: "/hooks/other-receiver/refunds?order=7",
                ..genuine
            },
            Signed {
                target: "/hooks/tenant-a/orders?order=43",
                ..genuine
            },
        ] {
            assert_ne!(signature(b"k", &changed), sig, "{changed:?}");
        }
    }
}
