//! Any text as a configuration file: a configuration or an error that names what is wrong,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nmid::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml(text) {
        Ok(config) => assert!(config.validate().is_ok()),
        Err(err) => assert!(!err.to_string().is_empty()),
    }
});
