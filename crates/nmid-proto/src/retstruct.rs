//! nmid's result convention: a worker's `ret` is the msgpack map
//! `{"Code": <int>, "Msg": <string>, "Data": <bin>}`, and `Code` 0 means success.
//!
//! The dispatcher passes `ret` through untouched on the TCP path, but counts a call whose
//! `Code` is not 0 as a failed function: [`peek_code`] reads the `Code` without decoding the
//! rest (no allocation), on every result. The rest of this module is for the parts that
//! produce or read results (the demo worker, the libraries, the HTTP front end).
//!
//! `nmid-faas`'s http functions add an optional `ContentType` key (the upstream's
//! `Content-Type`), which the HTTP front end answers with; readers that do not know it (nmid's
//! SDKs) skip it as an unknown key.

use bytes::Bytes;
use rmpv::Value;

/// Why bytes are not a RetStruct.
#[derive(Debug, thiserror::Error)]
pub enum RetStructError {
    /// Not msgpack at all.
    #[error("result is not msgpack: {0}")]
    Msgpack(rmpv::decode::Error),
    /// msgpack, but not a map with the three keys of the right types.
    #[error("result is not a RetStruct map: {0}")]
    Shape(&'static str),
}

/// A decoded RetStruct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetStruct {
    /// 0 for success; anything else is the function's error code.
    pub code: i64,
    /// A message, `"ok"` by convention on success.
    pub msg: String,
    /// The function's output.
    pub data: Bytes,
    /// The media type of `data`, when the function said (the `ContentType` key).
    pub content_type: Option<String>,
}

impl RetStruct {
    /// A success carrying `data`, with the `"ok"` message nmid's SDK examples use.
    pub fn ok(data: impl Into<Bytes>) -> Self {
        Self {
            code: 0,
            msg: "ok".to_owned(),
            data: data.into(),
            content_type: None,
        }
    }

    /// A failure with `code` (non-zero) and `msg`.
    pub fn error(code: i64, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            data: Bytes::new(),
            content_type: None,
        }
    }

    /// The same result, saying `data` is of media type `content_type`.
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// The msgpack bytes, keys in nmid's order (`Code`, `Msg`, `Data`), then `ContentType`
    /// when there is one.
    pub fn encode(&self) -> Vec<u8> {
        let mut entries = vec![
            (Value::from("Code"), Value::from(self.code)),
            (Value::from("Msg"), Value::from(self.msg.as_str())),
            (Value::from("Data"), Value::Binary(self.data.to_vec())),
        ];
        if let Some(content_type) = &self.content_type {
            entries.push((
                Value::from("ContentType"),
                Value::from(content_type.as_str()),
            ));
        }
        let value = Value::Map(entries);
        let mut out = Vec::with_capacity(24 + self.msg.len() + self.data.len());
        rmpv::encode::write_value(&mut out, &value).expect("writing to a Vec cannot fail");
        out
    }

    /// Reads a RetStruct. `Data` may be bin or str (SDKs differ), and may be nil or absent.
    pub fn decode(mut bytes: &[u8]) -> Result<Self, RetStructError> {
        let value = rmpv::decode::read_value(&mut bytes).map_err(RetStructError::Msgpack)?;
        let Value::Map(entries) = value else {
            return Err(RetStructError::Shape("not a map"));
        };
        let mut code = None;
        let mut msg = String::new();
        let mut data = Bytes::new();
        let mut content_type = None;
        for (key, value) in entries {
            match (key.as_str(), value) {
                (Some("Code"), v) => {
                    code = Some(
                        v.as_i64()
                            .ok_or(RetStructError::Shape("Code is not an integer"))?,
                    )
                }
                (Some("Msg"), Value::String(s)) => msg = s.into_str().unwrap_or_default(),
                (Some("Msg"), Value::Nil) => {}
                (Some("Msg"), _) => return Err(RetStructError::Shape("Msg is not a string")),
                (Some("Data"), Value::Binary(b)) => data = Bytes::from(b),
                (Some("Data"), Value::String(s)) => data = Bytes::from(s.into_bytes()),
                (Some("Data"), Value::Nil) => {}
                (Some("Data"), _) => return Err(RetStructError::Shape("Data is not bytes")),
                (Some("ContentType"), Value::String(s)) => content_type = s.into_str(),
                _ => {}
            }
        }
        Ok(Self {
            code: code.ok_or(RetStructError::Shape("no Code"))?,
            msg,
            data,
            content_type,
        })
    }
}

/// A RetStruct converts into the bytes a worker's handler returns.
impl From<RetStruct> for Bytes {
    fn from(ret: RetStruct) -> Self {
        Bytes::from(ret.encode())
    }
}

/// Whether a RetStruct `Code` says the *caller* was at fault, as an HTTP 4xx does: 400 to 499
/// (nmid-faas passes an http function's upstream status as its `Code`). A dispatcher answers
/// an HTTP caller with that status, and counts the call as `client_error` rather than as the
/// function failing; any other non-zero `Code` is the function's error.
///
/// # Examples
///
/// ```
/// use nmid_proto::retstruct::is_client_error;
///
/// assert!(is_client_error(404));
/// assert!(!is_client_error(500) && !is_client_error(3) && !is_client_error(0));
/// ```
pub fn is_client_error(code: i64) -> bool {
    (400..500).contains(&code)
}

/// The `Code` of a RetStruct, read without decoding the rest: the map's keys are walked, the
/// values before `Code` skipped, nothing copied. `None` when `ret` is not a msgpack map with
/// an integer `Code` (a result that does not follow the convention is not a failure).
///
/// # Examples
///
/// ```
/// use nmid_proto::retstruct::{peek_code, RetStruct};
///
/// assert_eq!(peek_code(&RetStruct::error(3, "bad").encode()), Some(3));
/// assert_eq!(peek_code(&RetStruct::ok("x").encode()), Some(0));
/// assert_eq!(peek_code(b"plain bytes"), None);
/// ```
pub fn peek_code(ret: &[u8]) -> Option<i64> {
    let mut at = Cursor(ret);
    let entries = at.map_len()?;
    for _ in 0..entries {
        if at.str()? == b"Code" {
            return at.int();
        }
        at.skip(0)?;
    }
    None
}

/// How deep [`peek_code`] follows nested arrays and maps before giving up.
const MAX_PEEK_DEPTH: usize = 16;

/// A read position in msgpack bytes, for [`peek_code`].
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let bytes = self.0.get(..n)?;
        self.0 = &self.0[n..];
        Some(bytes)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    /// A big-endian unsigned number of `n` bytes (1, 2, 4 or 8).
    fn uint(&mut self, n: usize) -> Option<u64> {
        Some((self.take(n)?.iter()).fold(0u64, |acc, b| acc << 8 | u64::from(*b)))
    }

    fn map_len(&mut self) -> Option<u64> {
        match self.byte()? {
            m @ 0x80..=0x8f => Some(u64::from(m & 0x0f)),
            0xde => self.uint(2),
            0xdf => self.uint(4),
            _ => None,
        }
    }

    fn str(&mut self) -> Option<&'a [u8]> {
        let len = match self.byte()? {
            m @ 0xa0..=0xbf => u64::from(m & 0x1f),
            0xd9 => self.uint(1)?,
            0xda => self.uint(2)?,
            0xdb => self.uint(4)?,
            _ => return None,
        };
        self.take(usize::try_from(len).ok()?)
    }

    fn int(&mut self) -> Option<i64> {
        let value = match self.byte()? {
            m @ 0x00..=0x7f => i64::from(m),
            m @ 0xe0..=0xff => i64::from(m as i8),
            0xcc => self.uint(1)? as i64,
            0xcd => self.uint(2)? as i64,
            0xce => self.uint(4)? as i64,
            0xcf => i64::try_from(self.uint(8)?).ok()?,
            0xd0 => i64::from(self.uint(1)? as u8 as i8),
            0xd1 => i64::from(self.uint(2)? as u16 as i16),
            0xd2 => i64::from(self.uint(4)? as u32 as i32),
            0xd3 => self.uint(8)? as i64,
            _ => return None,
        };
        Some(value)
    }

    /// Skips one value (at nesting `depth`).
    fn skip(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_PEEK_DEPTH {
            return None;
        }
        let marker = self.byte()?;
        let (bytes, items) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * u64::from(marker & 0x0f)),
            0x90..=0x9f => (0, u64::from(marker & 0x0f)),
            0xa0..=0xbf => (u64::from(marker & 0x1f), 0),
            0xc4 | 0xd9 => (self.uint(1)?, 0),
            0xc5 | 0xda => (self.uint(2)?, 0),
            0xc6 | 0xdb => (self.uint(4)?, 0),
            0xc7 => (self.uint(1)? + 1, 0),
            0xc8 => (self.uint(2)? + 1, 0),
            0xc9 => (self.uint(4)? + 1, 0),
            0xca => (4, 0),
            0xcb => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xce | 0xd2 => (4, 0),
            0xcf | 0xd3 => (8, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => (0, self.uint(2)?),
            0xdd => (0, self.uint(4)?),
            0xde => (0, 2 * self.uint(2)?),
            0xdf => (0, 2 * self.uint(4)?),
            0xc1 => return None,
        };
        self.take(usize::try_from(bytes).ok()?)?;
        for _ in 0..items {
            self.skip(depth + 1)?;
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The golden `ret` of nmid's SDK is what `RetStruct::ok("NMID")` encodes, byte for byte.
    #[test]
    fn ok_result_encodes_like_nmids_sdk() {
        // 83: map of 3; a4 "Code" 00; a3 "Msg" a2 "ok"; a4 "Data" c4 04 "NMID"
        let golden = hex::decode("83a4436f646500a34d7367a26f6ba444617461c4044e4d4944").unwrap();
        assert_eq!(RetStruct::ok("NMID").encode(), golden);
        assert_eq!(RetStruct::decode(&golden).unwrap(), RetStruct::ok("NMID"));
    }

    /// An error result round-trips, and non-map bytes are refused with a reason.
    #[test]
    fn error_result_round_trips_and_junk_is_refused() {
        let err = RetStruct::error(3, "bad name");
        assert_eq!(RetStruct::decode(&err.encode()).unwrap(), err);
        assert!(matches!(
            RetStruct::decode(&[0x01]),
            Err(RetStructError::Shape(_))
        ));
        assert!(RetStruct::decode(&[0xc1]).is_err());
    }

    /// `peek_code` agrees with a full decode wherever `Code` sits among the keys and whatever
    /// the values before it (nested, every width of integer); results that are not RetStructs
    /// (not a map, no `Code`, a `Code` that is not an integer, cut short) have none.
    #[test]
    fn peek_code_finds_the_code_without_decoding() {
        use rmpv::Value as V;
        for code in [
            0i64,
            1,
            -1,
            127,
            128,
            -33,
            255,
            256,
            70_000,
            -70_000,
            i64::MAX,
            i64::MIN,
        ] {
            let ret = RetStruct::error(code, "m");
            assert_eq!(peek_code(&ret.encode()), Some(code), "{code}");
            let late = V::Map(vec![
                (V::from("Data"), V::Binary(vec![1; 300])),
                (V::from("Msg"), V::from("x".repeat(40))),
                (
                    V::from("Extra"),
                    V::Array(vec![V::Map(vec![(V::from(1), V::F64(1.5))]), V::Nil]),
                ),
                (V::from("Code"), V::from(code)),
            ]);
            let mut bytes = Vec::new();
            rmpv::encode::write_value(&mut bytes, &late).unwrap();
            assert_eq!(peek_code(&bytes), Some(code), "{code} last");
            assert_eq!(RetStruct::decode(&bytes).unwrap().code, code);
            assert_eq!(peek_code(&bytes[..bytes.len() - 1]), None, "cut short");
        }
        let mut no_code = Vec::new();
        rmpv::encode::write_value(&mut no_code, &V::Map(vec![(V::from("Msg"), V::from("x"))]))
            .unwrap();
        let mut text_code = Vec::new();
        rmpv::encode::write_value(
            &mut text_code,
            &V::Map(vec![(V::from("Code"), V::from("1"))]),
        )
        .unwrap();
        for junk in [
            &b""[..],
            b"\x01",
            b"{\"Code\":1}",
            &no_code,
            &text_code,
            &[0x81, 0xc1],
        ] {
            assert_eq!(peek_code(junk), None, "{junk:?}");
        }
    }

    /// `ContentType` survives a round trip and is left out when absent (nmid's golden bytes
    /// stay as they are).
    #[test]
    fn content_type_is_an_optional_fourth_key() {
        let ret = RetStruct::ok("<p>").with_content_type("text/html");
        assert_eq!(RetStruct::decode(&ret.encode()).unwrap(), ret);
        assert_eq!(peek_code(&ret.encode()), Some(0));
        assert_eq!(
            RetStruct::decode(&RetStruct::ok("x").encode())
                .unwrap()
                .content_type,
            None
        );
    }
}
