//! Request and response heads: never panic; a parsed credential points inside the head.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchboard_dataplane::http::find_head_end;
use switchboard_dataplane::http::head::{parse_request, parse_response};

fuzz_target!(|data: &[u8]| {
    if let Some(end) = find_head_end(data, 0) {
        if let Ok(h) = parse_request(&data[..end], 96) {
            assert!(h.head_len <= end);
            let _ = h.credential.token(&data[..end]);
        }
        let _ = parse_response(&data[..end], false);
    }
});
