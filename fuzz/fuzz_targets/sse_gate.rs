//! The SSE stream gate and tail: never panic, and reach the same verdict
//! whatever the split of the stream into reads.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchboard_dataplane::sse::{Gate, StreamGate, StreamTail};

fn verdict(data: &[u8], step: usize) -> (u8, bool) {
    let mut g = StreamGate::default();
    let mut t = StreamTail::default();
    let mut v = 0;
    for piece in data.chunks(step) {
        t.push(piece);
        if v == 0 {
            v = match g.feed(piece) {
                Gate::Hold => 0,
                Gate::Release => 1,
                Gate::Fail(_) => 2,
            };
        }
    }
    (v, t.ends_with_done())
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let step = (data[0] as usize % 13) + 1;
    assert_eq!(verdict(&data[1..], data.len()), verdict(&data[1..], step));
});
