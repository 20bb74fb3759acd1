//! The chunked decoder, fed in arbitrary splits: never panics, never writes past
//! what it read, and agrees with itself whatever the split.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchboard_dataplane::http::chunked::ChunkedDecoder;

fn decode(input: &[u8], step: usize) -> (Result<bool, ()>, Vec<u8>) {
    let mut buf = input.to_vec();
    let mut d = ChunkedDecoder::new();
    let (mut r, mut w) = (0, 0);
    let mut res = Ok(false);
    while r < buf.len() {
        let end = (r + step).min(buf.len());
        match d.decode(&mut buf, &mut r, end, &mut w) {
            Ok(true) => {
                res = Ok(true);
                break;
            }
            Ok(false) => {}
            Err(_) => {
                res = Err(());
                break;
            }
        }
        assert!(w <= r);
    }
    (res, buf[..w].to_vec())
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let step = (data[0] as usize % 7) + 1;
    let (a, pa) = decode(&data[1..], data.len());
    let (b, pb) = decode(&data[1..], step);
    assert_eq!(a, b);
    if a == Ok(true) {
        assert_eq!(pa, pb);
    }
});
