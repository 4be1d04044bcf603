//! A call as a function's program or HTTP service receives it ([`Call`]), and its params:
//! a msgpack map (what nmid's SDKs and our HTTP front end send) or JSON params become JSON
//! object text; anything else passes as the raw bytes it arrived as.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rmpv::Value;
use serde_json::{Map, Number, Value as Json};

/// One call, as exec and http functions run it.
#[derive(Debug)]
pub struct Call<'a> {
    /// The function called (`NMID_FUNCTION`, `X-Nmid-Function`).
    pub function: &'a str,
    /// The dispatcher's job id (`NMID_JOB_ID`, `X-Nmid-Job-Id`).
    pub job_id: &'a str,
    /// The params bytes as the call carried them.
    pub params: &'a [u8],
    /// Whether the params are JSON (type 6).
    pub json: bool,
    /// When the caller stops waiting, if the dispatcher said.
    pub deadline: Option<Instant>,
    /// `traceparent` / `tracestate` of the call, passed on.
    pub trace: Vec<(&'a str, &'a str)>,
    /// The HTTP caller's request id (`NMID_REQUEST_ID`, `X-Request-Id`).
    pub request_id: Option<&'a str>,
    /// The HTTP caller's query string (http functions: added to the URL's).
    pub query: Option<&'a str>,
    /// Request headers the dispatcher forwarded (`http.forward_headers`), by name (http
    /// functions send them on).
    pub headers: Vec<(&'a str, &'a str)>,
    /// The media type of a raw body that the params are (`text/plain`, ...): they pass as
    /// they are.
    pub content_type: Option<&'a str>,
}

impl<'a> Call<'a> {
    /// The parts of a call that come from its metadata (as the dispatcher's HTTP front end
    /// fills it; `crate::http`'s `QUERY_META`, `HEADER_META_PREFIX`, `CONTENT_TYPE_META`),
    /// given each key and value as text.
    pub fn with_metadata(mut self, meta: impl Iterator<Item = (&'a str, &'a str)>) -> Self {
        for (key, value) in meta {
            match key {
                "traceparent" | "tracestate" => self.trace.push((key, value)),
                "x-request-id" => self.request_id = Some(value),
                "http-query" => self.query = Some(value),
                "content-type" => self.content_type = Some(value),
                _ => {
                    if let Some(name) = key.strip_prefix("http-header-") {
                        self.headers.push((name, value));
                    }
                }
            }
        }
        self
    }

    /// The bytes for a program's stdin (or an HTTP body) and their format: a raw body's
    /// bytes as they are, else as [`stdin_of`] says.
    pub fn input(&self) -> (Bytes, ParamsFormat) {
        match self.content_type {
            Some(_) => (Bytes::copy_from_slice(self.params), ParamsFormat::Raw),
            None => stdin_of(self.params, self.json),
        }
    }
}

/// How long past the caller's deadline a call may still run. At the deadline the dispatcher
/// answers the caller 504 `timeout`; giving up a little later means this worker's failure
/// arrives after that answer (and is discarded as late), never racing it to become a 502.
pub const DEADLINE_GRACE: Duration = Duration::from_millis(50);

impl Call<'_> {
    /// How long the call may run: the function's `limit`, or less when the caller's deadline
    /// (plus [`DEADLINE_GRACE`]) comes first.
    pub fn time_limit(&self, limit: Duration) -> Duration {
        match self.deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                limit.min(left + DEADLINE_GRACE)
            }
            None => limit,
        }
    }
}

/// How the params were handed over (`NMID_PARAMS_FORMAT` for exec functions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamsFormat {
    /// JSON text.
    Json,
    /// The params bytes as they came.
    Raw,
}

impl ParamsFormat {
    /// `json` or `raw`.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamsFormat::Json => "json",
            ParamsFormat::Raw => "raw",
        }
    }
}

/// The bytes for a program's stdin (or an HTTP body) and their format. `json` says the call
/// declared JSON params (type 6): they pass as they are.
pub fn stdin_of(params: &[u8], json: bool) -> (Bytes, ParamsFormat) {
    if json {
        return (Bytes::copy_from_slice(params), ParamsFormat::Json);
    }
    match msgpack_map_as_json(params) {
        Some(text) => (Bytes::from(text), ParamsFormat::Json),
        None => (Bytes::copy_from_slice(params), ParamsFormat::Raw),
    }
}

/// The JSON text of `params` when they are exactly one msgpack map.
fn msgpack_map_as_json(params: &[u8]) -> Option<String> {
    let mut rest = params;
    let value = rmpv::decode::read_value(&mut rest).ok()?;
    if !rest.is_empty() || !value.is_map() {
        return None;
    }
    serde_json::to_string(&to_json(value)).ok()
}

/// msgpack -> JSON: strings and UTF-8 binaries are strings, other binaries arrays of bytes,
/// non-string map keys their JSON text, extensions null.
fn to_json(value: Value) -> Json {
    match value {
        Value::Nil | Value::Ext(..) => Json::Null,
        Value::Boolean(b) => Json::Bool(b),
        Value::Integer(i) => i
            .as_i64()
            .map(Json::from)
            .or_else(|| i.as_u64().map(Json::from))
            .unwrap_or(Json::Null),
        Value::F32(f) => Number::from_f64(f64::from(f)).map_or(Json::Null, Json::Number),
        Value::F64(f) => Number::from_f64(f).map_or(Json::Null, Json::Number),
        Value::String(s) => match s.into_str() {
            Some(s) => Json::String(s),
            None => Json::Null,
        },
        Value::Binary(b) => match String::from_utf8(b) {
            Ok(s) => Json::String(s),
            Err(e) => Json::Array(e.into_bytes().into_iter().map(Json::from).collect()),
        },
        Value::Array(items) => Json::Array(items.into_iter().map(to_json).collect()),
        Value::Map(entries) => {
            let mut map = Map::with_capacity(entries.len());
            for (key, value) in entries {
                let key = match to_json(key) {
                    Json::String(s) => s,
                    other => other.to_string(),
                };
                map.insert(key, to_json(value));
            }
            Json::Object(map)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgpack(value: &Json) -> Vec<u8> {
        rmp_serde::to_vec_named(value).unwrap()
    }

    /// A msgpack map becomes its JSON object text, nested values included.
    #[test]
    fn a_msgpack_map_becomes_json_text() {
        let params = msgpack(
            &serde_json::json!({"name": "nmid", "n": [1, -2, 2.5], "ok": true, "none": null}),
        );
        let (text, format) = stdin_of(&params, false);
        assert_eq!(format, ParamsFormat::Json);
        let back: Json = serde_json::from_slice(&text).unwrap();
        assert_eq!(
            back,
            serde_json::json!({"name": "nmid", "n": [1, -2, 2.5], "ok": true, "none": null})
        );
    }

    /// JSON params pass as they are; a msgpack string, junk and trailing bytes pass raw.
    #[test]
    fn other_params_pass_as_raw_bytes() {
        assert_eq!(
            stdin_of(b"[1,2]", true),
            (Bytes::from_static(b"[1,2]"), ParamsFormat::Json)
        );
        let string = msgpack(&serde_json::json!("text"));
        assert_eq!(
            stdin_of(&string, false),
            (Bytes::from(string.clone()), ParamsFormat::Raw)
        );
        assert_eq!(stdin_of(b"hello", false).1, ParamsFormat::Raw);
        let mut two = msgpack(&serde_json::json!({}));
        two.push(0x01);
        assert_eq!(stdin_of(&two, false).1, ParamsFormat::Raw);
    }

    /// Binary values: UTF-8 ones are strings, others byte arrays; integer keys are text.
    #[test]
    fn binaries_and_odd_keys_are_readable_json() {
        let value = Value::Map(vec![
            (Value::from(1), Value::Binary(b"hi".to_vec())),
            (Value::from("raw"), Value::Binary(vec![0xff, 0x00])),
        ]);
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &value).unwrap();
        let (text, _) = stdin_of(&bytes, false);
        assert_eq!(&text[..], br#"{"1":"hi","raw":[255,0]}"#);
    }
}
