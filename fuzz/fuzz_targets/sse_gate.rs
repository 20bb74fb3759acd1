//! The SSE frame scanners: the stream gate and tail (`[DONE]`, and
//! Anthropic's `message_stop`), the usage scan (token counts, OpenAI's and
//! Anthropic's with its prompt-cache counts, the finish) and the usage-chunk
//! strip never panic, and reach the same result whatever the split of the
//! stream into reads.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchboard_dataplane::sse::{Gate, StreamGate, StreamTail};
use switchboard_dataplane::usage::scan::{UsageScan, UsageStrip};

#[derive(PartialEq, Debug)]
struct Seen {
    gate: u8,
    done: bool,
    message_stop: bool,
    tokens: (Option<u64>, Option<u64>, Option<u64>, u64, u64),
    anthropic: (Option<u64>, Option<u64>, Option<u64>, bool),
    stripped: Vec<u8>,
}

fn verdict(data: &[u8], step: usize) -> Seen {
    let mut g = StreamGate::default();
    let mut t = StreamTail::default();
    let mut u = UsageScan::default();
    let mut s = UsageStrip::default();
    let mut stripped = Vec::new();
    let mut v = 0;
    for piece in data.chunks(step) {
        t.push(piece);
        u.feed(piece);
        s.filter(piece, &mut stripped);
        if v == 0 {
            v = match g.feed(piece) {
                Gate::Hold => 0,
                Gate::Release => 1,
                Gate::Fail(_) => 2,
            };
        }
    }
    s.finish(&mut stripped);
    Seen {
        gate: v,
        done: t.ends_with_done(),
        message_stop: t.ends_with_message_stop(),
        tokens: (u.prompt_tokens, u.completion_tokens, u.total_tokens, u.text_fragments, u.text_bytes),
        anthropic: (u.input_tokens, u.cache_read_tokens, u.cache_write_tokens, u.finish_seen),
        stripped,
    }
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let step = (data[0] as usize % 13) + 1;
    assert_eq!(verdict(&data[1..], data.len()), verdict(&data[1..], step));
});
