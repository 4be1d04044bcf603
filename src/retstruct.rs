//! nmid's result convention: a worker's `ret` is the msgpack map
//! `{"Code": <int>, "Msg": <string>, "Data": <bin>}`, and `Code` 0 means success.
//!
//! The dispatcher passes `ret` through untouched on the TCP path; this module is for the parts
//! that produce or read results (the demo worker, the libraries, the HTTP front end).

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
}

impl RetStruct {
    /// A success carrying `data`, with the `"ok"` message nmid's SDK examples use.
    pub fn ok(data: impl Into<Bytes>) -> Self {
        Self {
            code: 0,
            msg: "ok".to_owned(),
            data: data.into(),
        }
    }

    /// A failure with `code` (non-zero) and `msg`.
    pub fn error(code: i64, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            data: Bytes::new(),
        }
    }

    /// The msgpack bytes, keys in nmid's order (`Code`, `Msg`, `Data`).
    pub fn encode(&self) -> Vec<u8> {
        let value = Value::Map(vec![
            (Value::from("Code"), Value::from(self.code)),
            (Value::from("Msg"), Value::from(self.msg.as_str())),
            (Value::from("Data"), Value::Binary(self.data.to_vec())),
        ]);
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
                _ => {}
            }
        }
        Ok(Self {
            code: code.ok_or(RetStructError::Shape("no Code"))?,
            msg,
            data,
        })
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
}
