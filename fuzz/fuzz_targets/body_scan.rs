//! The request-body scan: never panics; a found `model` span lies inside the
//! body, and the edits made upstream (model splice, `include_usage`) keep the
//! body valid JSON with the rest intact.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchboard_dataplane::request::{edited_len, include_usage_edit, scan, write_edited};

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = scan(data) {
        let (a, b) = f.model_span;
        assert!(a < b && b <= data.len());
        let mut out = Vec::new();
        write_edited(data, &mut [(a, b, b"\"x\"")], &mut out);
        assert_eq!(out.len(), data.len() - (b - a) + 3);
        if let Some((s, e, v)) = include_usage_edit(data, &f) {
            let mut edits = [(a, b, b"\"x\"".as_slice()), (s, e, v.as_slice())];
            out.clear();
            write_edited(data, &mut edits, &mut out);
            assert_eq!(out.len(), edited_len(data.len(), &edits));
            let v: serde_json::Value = serde_json::from_slice(&out).expect("still JSON");
            assert_eq!(v["stream_options"]["include_usage"], true);
            assert_eq!(v["model"], "x");
        }
    }
});
