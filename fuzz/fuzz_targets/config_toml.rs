//! Config parsing and validation: never panics, whatever the text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cfg) = switchboard_shared::Config::parse(text) {
            let _ = cfg.routing().validate();
        }
    }
});
