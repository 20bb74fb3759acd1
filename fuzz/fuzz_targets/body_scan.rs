//! The request-body scan: never panics; a found `model` span lies inside the body
//! and splicing over it keeps the rest intact.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchboard_dataplane::request::{scan, splice_model};

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = scan(data) {
        let (a, b) = f.model_span;
        assert!(a < b && b <= data.len());
        let mut out = Vec::new();
        splice_model(data, f.model_span, b"\"x\"", &mut out);
        assert_eq!(out.len(), data.len() - (b - a) + 3);
    }
});
