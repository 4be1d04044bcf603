//! The shared golden vectors of protocol v1 (`tests/fixtures/nmid-v1-vectors.json`): frames
//! produced by nmid's own SDK and server layout. Each must decode to the listed fields and
//! re-encode to the very same bytes; that is what "wire-compatible" means.

use std::collections::BTreeSet;

use bytes::{Bytes, BytesMut};
use nmid::codec::{decode, encode, encoded_len, Frame, NmidCodec, DEFAULT_MAX_FRAME_BYTES};
use serde_json::Value as Json;
use tokio_util::codec::Decoder;

/// Every vector the fixture must hold. A fixture that silently loses one fails the suite.
const EXPECTED_VECTORS: [&str; 15] = [
    "client_do_job_msgpack",
    "client_do_job_json",
    "worker_set_name",
    "worker_add_func",
    "worker_del_func",
    "worker_heartbeat_ping",
    "worker_grab_job",
    "worker_return_data",
    "server_get_data",
    "server_return_data",
    "server_ok",
    "server_error",
    "server_cant_do",
    "server_ratelimit",
    "server_heartbeat_pong",
];

/// One vector of the fixture file.
struct Vector {
    name: String,
    bytes: Vec<u8>,
    fields: serde_json::Map<String, Json>,
}

fn load_vectors() -> Vec<Vector> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/nmid-v1-vectors.json"
    );
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("cannot read the golden vectors at {path}: {err}"));
    let root: Json = serde_json::from_str(&text).expect("the vector file is not JSON");
    let vectors = root["vectors"]
        .as_array()
        .expect("the vector file has no `vectors` array");
    vectors
        .iter()
        .map(|v| {
            let name = v["name"]
                .as_str()
                .expect("vector without a name")
                .to_owned();
            let hex_text = v["hex"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: no hex"));
            let bytes = hex::decode(hex_text).unwrap_or_else(|e| panic!("{name}: bad hex: {e}"));
            let fields = v["fields"]
                .as_object()
                .unwrap_or_else(|| panic!("{name}: no fields"))
                .clone();
            Vector {
                name,
                bytes,
                fields,
            }
        })
        .collect()
}

/// The fields of a decoded frame, each `Some` only where the frame kind carries it.
#[derive(Default)]
struct FrameFields {
    params_type: Option<u32>,
    handle_type: Option<u32>,
    handle: Option<Bytes>,
    params: Option<Bytes>,
    ret: Option<Bytes>,
    job_id: Option<Bytes>,
    body: Option<Bytes>,
}

impl FrameFields {
    fn of(frame: &Frame) -> Self {
        match frame {
            Frame::CDoJob(job) => Self {
                params_type: Some(job.params_type.0),
                handle_type: Some(job.handle_type),
                handle: Some(job.function.clone()),
                params: Some(job.params.clone()),
                ..Self::default()
            },
            Frame::SGetData(job) => Self {
                params_type: Some(job.params_type.0),
                handle_type: Some(job.handle_type),
                handle: Some(job.function.clone()),
                params: Some(job.params.clone()),
                job_id: Some(job.job_id.clone()),
                ..Self::default()
            },
            Frame::WReturnData(r) => Self {
                handle: Some(r.function.clone()),
                params: Some(r.params.clone()),
                ret: Some(r.ret.clone()),
                job_id: Some(r.job_id.clone()),
                ..Self::default()
            },
            Frame::SReturnData(r) => Self {
                handle: Some(r.function.clone()),
                params: Some(r.params.clone()),
                ret: Some(r.ret.clone()),
                ..Self::default()
            },
            Frame::WAddFunc { function } | Frame::WDelFunc { function } => Self {
                body: Some(function.clone()),
                ..Self::default()
            },
            Frame::WHeartbeatPing { body } => Self {
                body: Some(body.clone()),
                ..Self::default()
            },
            Frame::WSetName { name } => Self {
                body: Some(name.clone()),
                ..Self::default()
            },
            Frame::Ok
            | Frame::Error
            | Frame::CantDo
            | Frame::NoJob
            | Frame::ToSleep
            | Frame::Wakeuped
            | Frame::RateLimit
            | Frame::Breaker
            | Frame::SHeartbeatPong
            | Frame::WakeUp
            | Frame::WGrabJob => Self::default(),
            // The tagged extension frames are this crate's own; nmid's SDK produces none, so no
            // golden vector may decode to one. They are covered by the codec's unit tests.
            Frame::CCall(_)
            | Frame::SCallResult(_)
            | Frame::SCallError(_)
            | Frame::WSlots { .. }
            | Frame::SJob(_)
            | Frame::WJobResult(_)
            | Frame::WJobError(_)
            | Frame::WBye
            | Frame::SByeAck
            | Frame::CAuth { .. }
            | Frame::WAuth { .. }
            | Frame::SAuthResult(_)
            | Frame::CCallStream(_)
            | Frame::SCallPartial(_)
            | Frame::SCallProgress(_)
            | Frame::WJobPartial(_)
            | Frame::WJobProgress(_)
            | Frame::CSubmit(_)
            | Frame::SSubmitted(_)
            | Frame::CJobStatus(_)
            | Frame::SJobStatus(_)
            | Frame::CJobCancel(_) => panic!(
                "a v1 golden vector decoded to the tagged extension frame {}",
                frame.name()
            ),
        }
    }

    /// The names of the fields this frame carries, so that none goes unchecked.
    fn present(&self) -> BTreeSet<&'static str> {
        let mut set = BTreeSet::new();
        let mut add = |present: bool, name| {
            if present {
                set.insert(name);
            }
        };
        add(self.params_type.is_some(), "params_type");
        add(self.handle_type.is_some(), "params_handle_type");
        add(self.handle.is_some(), "handle");
        add(self.params.is_some(), "params");
        add(self.ret.is_some(), "ret");
        add(self.job_id.is_some(), "job_id");
        add(self.body.is_some(), "body");
        set
    }
}

fn json_u32(name: &str, key: &str, value: &Json) -> u32 {
    value
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or_else(|| panic!("{name}: `{key}` is not a u32: {value}"))
}

fn json_str<'a>(name: &str, key: &str, value: &'a Json) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{name}: `{key}` is not a string: {value}"))
}

fn carried<'a, T>(name: &str, key: &str, field: &'a Option<T>) -> &'a T {
    field
        .as_ref()
        .unwrap_or_else(|| panic!("{name}: the fixture lists `{key}` but the frame has none"))
}

/// The msgpack value a fixture's JSON describes. A key `X_utf8` stands for the key `X` whose
/// value is a msgpack bin holding that UTF-8 text (how RetStruct carries `Data`).
fn json_to_msgpack(value: &Json) -> rmpv::Value {
    match value {
        Json::Null => rmpv::Value::Nil,
        Json::Bool(b) => rmpv::Value::Boolean(*b),
        Json::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => rmpv::Value::from(u),
            (None, Some(i)) => rmpv::Value::from(i),
            (None, None) => rmpv::Value::from(n.as_f64().expect("a JSON number")),
        },
        Json::String(s) => rmpv::Value::from(s.as_str()),
        Json::Array(items) => rmpv::Value::Array(items.iter().map(json_to_msgpack).collect()),
        Json::Object(map) => rmpv::Value::Map(
            map.iter()
                .map(|(key, value)| match (key.strip_suffix("_utf8"), value) {
                    (Some(key), Json::String(text)) => (
                        rmpv::Value::from(key),
                        rmpv::Value::Binary(text.as_bytes().to_vec()),
                    ),
                    _ => (rmpv::Value::from(key.as_str()), json_to_msgpack(value)),
                })
                .collect(),
        ),
    }
}

/// Sorts map entries by key, recursively, so that maps compare regardless of key order.
fn normalize(value: rmpv::Value) -> rmpv::Value {
    match value {
        rmpv::Value::Map(entries) => {
            let mut entries: Vec<_> = entries
                .into_iter()
                .map(|(k, v)| (normalize(k), normalize(v)))
                .collect();
            entries.sort_by_key(|(k, _)| k.to_string());
            rmpv::Value::Map(entries)
        }
        rmpv::Value::Array(items) => rmpv::Value::Array(items.into_iter().map(normalize).collect()),
        other => other,
    }
}

/// Decodes `bytes` as exactly one msgpack value and compares it with the fixture's JSON.
fn assert_msgpack(name: &str, key: &str, bytes: &[u8], expected: &Json) {
    let mut reader = bytes;
    let actual = rmpv::decode::read_value(&mut reader)
        .unwrap_or_else(|e| panic!("{name}: `{key}` is not msgpack: {e}"));
    assert!(
        reader.is_empty(),
        "{name}: `{key}` has {} bytes after its msgpack value",
        reader.len()
    );
    assert_eq!(
        normalize(actual),
        normalize(json_to_msgpack(expected)),
        "{name}: `{key}`"
    );
}

/// Checks every listed field against the decoded frame, and that no carried field is unlisted.
fn assert_fields(vector: &Vector, frame: &Frame) {
    let name = vector.name.as_str();
    let fields = FrameFields::of(frame);
    let mut checked = BTreeSet::new();
    for (key, value) in &vector.fields {
        match key.as_str() {
            "conn_type" => assert_eq!(
                frame.sender() as u32,
                json_u32(name, key, value),
                "{name}: conn_type"
            ),
            "data_type" => assert_eq!(
                frame.data_type(),
                json_u32(name, key, value),
                "{name}: data_type"
            ),
            "params_type" => {
                let actual = carried(name, key, &fields.params_type);
                assert_eq!(*actual, json_u32(name, key, value), "{name}: params_type");
                checked.insert("params_type");
            }
            "params_handle_type" => {
                let actual = carried(name, key, &fields.handle_type);
                assert_eq!(*actual, json_u32(name, key, value), "{name}: {key}");
                checked.insert("params_handle_type");
            }
            "handle" => {
                let actual = carried(name, key, &fields.handle);
                assert_eq!(&actual[..], json_str(name, key, value).as_bytes(), "{name}");
                checked.insert("handle");
            }
            "body_utf8" => {
                let actual = carried(name, key, &fields.body);
                assert_eq!(&actual[..], json_str(name, key, value).as_bytes(), "{name}");
                checked.insert("body");
            }
            "job_id" => {
                let actual = carried(name, key, &fields.job_id);
                assert_eq!(&actual[..], json_str(name, key, value).as_bytes(), "{name}");
                checked.insert("job_id");
            }
            "params_utf8" => {
                let actual = carried(name, key, &fields.params);
                assert_eq!(&actual[..], json_str(name, key, value).as_bytes(), "{name}");
                checked.insert("params");
            }
            "params_msgpack" => {
                assert_msgpack(name, key, &carried(name, key, &fields.params)[..], value);
                checked.insert("params");
            }
            "ret_msgpack" => {
                assert_msgpack(name, key, &carried(name, key, &fields.ret)[..], value);
                checked.insert("ret");
            }
            other => panic!("{name}: the test does not know the fixture field `{other}`"),
        }
    }
    assert!(
        vector.fields.contains_key("conn_type") && vector.fields.contains_key("data_type"),
        "{name}: a vector must list conn_type and data_type"
    );
    assert_eq!(
        fields.present(),
        checked,
        "{name}: every field the {} frame carries must be checked",
        frame.name()
    );
}

/// Each golden vector decodes whole to its listed fields and re-encodes to the same bytes.
#[test]
fn every_golden_vector_decodes_to_its_fields_and_re_encodes_byte_exactly() {
    let vectors = load_vectors();
    let mut seen = BTreeSet::new();
    for vector in &vectors {
        let name = vector.name.as_str();
        assert!(seen.insert(name), "{name}: listed twice");

        let mut buf = BytesMut::from(&vector.bytes[..]);
        let frame = decode(&mut buf, DEFAULT_MAX_FRAME_BYTES)
            .unwrap_or_else(|e| panic!("{name}: decode failed: {e}"))
            .unwrap_or_else(|| panic!("{name}: decode wants more bytes"));
        assert!(
            buf.is_empty(),
            "{name}: {} bytes left after the frame",
            buf.len()
        );
        assert_fields(vector, &frame);

        let mut out = BytesMut::new();
        encode(&frame, &mut out).unwrap_or_else(|e| panic!("{name}: encode failed: {e}"));
        assert_eq!(
            hex::encode(&out),
            hex::encode(&vector.bytes),
            "{name}: re-encoding"
        );
        assert_eq!(
            encoded_len(&frame),
            vector.bytes.len(),
            "{name}: encoded_len"
        );
    }
    let expected: BTreeSet<&str> = EXPECTED_VECTORS.into_iter().collect();
    assert_eq!(seen, expected, "the fixture's vectors changed");
}

/// All vectors sent back to back on one stream come out in order.
#[test]
fn all_golden_vectors_in_one_buffer_decode_in_order() {
    let vectors = load_vectors();
    let mut buf = BytesMut::new();
    for vector in &vectors {
        buf.extend_from_slice(&vector.bytes);
    }
    for vector in &vectors {
        let frame = decode(&mut buf, DEFAULT_MAX_FRAME_BYTES)
            .unwrap_or_else(|e| panic!("{}: {e}", vector.name))
            .unwrap_or_else(|| panic!("{}: wants more bytes", vector.name));
        let mut out = BytesMut::new();
        encode(&frame, &mut out).expect("encode");
        assert_eq!(&out[..], &vector.bytes[..], "{}", vector.name);
    }
    assert!(buf.is_empty());
}

/// All vectors arriving one byte per read through the tokio codec still decode in order.
#[test]
fn all_golden_vectors_fed_one_byte_at_a_time_through_the_tokio_codec_decode_in_order() {
    let vectors = load_vectors();
    let stream: Vec<u8> = vectors.iter().flat_map(|v| v.bytes.clone()).collect();
    let mut codec = NmidCodec::default();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for &byte in &stream {
        buf.extend_from_slice(&[byte]);
        while let Some(frame) = codec.decode(&mut buf).expect("decode") {
            frames.push(frame);
        }
    }
    assert!(codec.decode_eof(&mut buf).expect("decode_eof").is_none());
    assert_eq!(frames.len(), vectors.len());
    for (frame, vector) in frames.iter().zip(&vectors) {
        let mut out = BytesMut::new();
        encode(frame, &mut out).expect("encode");
        assert_eq!(&out[..], &vector.bytes[..], "{}", vector.name);
    }
}
