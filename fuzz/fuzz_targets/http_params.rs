//! Any HTTP body and content type through the conversion of `POST /call/<func>`: params or
//! a typed refusal, never a panic; a JSON object becomes a msgpack map that decodes.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use nmid::codec::ParamsType;
use nmid::http::call_params;

const CONTENT_TYPES: [Option<&[u8]>; 6] = [
    None,
    Some(b"application/json"),
    Some(b"application/json; charset=utf-8"),
    Some(b"application/msgpack"),
    Some(b"text/plain"),
    Some(b"application/"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(pick) % CONTENT_TYPES.len()];
    let pass_json = pick & 0x80 != 0;
    let converted = call_params(content_type, Bytes::copy_from_slice(body), pass_json);
    let Ok((params, params_type)) = converted else {
        return;
    };
    let from_json = content_type != Some(b"application/msgpack");
    if params_type == ParamsType::MSGPACK && from_json {
        let mut read = &params[..];
        let value = rmpv::decode::read_value(&mut read).expect("a converted object is msgpack");
        assert!(value.is_map() && read.is_empty(), "one msgpack map: {value:?}");
    }
});
