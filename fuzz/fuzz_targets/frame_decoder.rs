//! Any bytes, fed to the decoder in chunks of any size: it never panics, consumes only whole
//! frames, and every frame it reads re-encodes to exactly the bytes it was read from.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use nmid::codec::{decode_frame, encode, DEFAULT_MAX_FRAME_BYTES, READ_AHEAD};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size, so splits are explored too.
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(split).max(1);
    let mut buf = BytesMut::new();
    let mut fed = 0;
    loop {
        let before = buf.clone();
        match decode_frame(&mut buf, DEFAULT_MAX_FRAME_BYTES, READ_AHEAD) {
            Ok(Some(Ok(frame))) => {
                let consumed = before.len() - buf.len();
                let mut again = BytesMut::new();
                encode(&frame, &mut again).expect("a decoded frame encodes");
                assert_eq!(&again[..], &before[..consumed], "{frame:?} round-trips");
            }
            // A bad body is consumed whole: the stream is still in step.
            Ok(Some(Err(_))) => assert!(buf.len() < before.len()),
            Ok(None) => {
                assert_eq!(buf, before, "a partial frame is left as it was");
                if fed == data.len() {
                    return;
                }
                let next = (fed + chunk).min(data.len());
                buf.extend_from_slice(&data[fed..next]);
                fed = next;
            }
            Err(_) => return,
        }
    }
});
