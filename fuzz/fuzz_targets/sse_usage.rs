//! The usage-chunk strip, the usage scan and the stream gate over generated
//! OpenAI-style streams whose JSON whitespace, key order and SSE line endings
//! (LF, CRLF, CR) come from the input: the usage-only chunks and nothing else
//! are taken out, the reported usage is read, the gate releases exactly when a
//! real event came, whatever the split of the stream into reads.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchboard_dataplane::sse::synth;
use switchboard_dataplane::sse::{Gate, StreamGate};
use switchboard_dataplane::usage::scan::{UsageScan, UsageStrip};

fuzz_target!(|data: &[u8]| {
    let Some((&split, shape)) = data.split_first() else { return };
    let want = synth::stream(shape);
    let step = (split as usize % 31) + 1;
    let mut strip = UsageStrip::default();
    let mut scan = UsageScan::default();
    let mut gate = StreamGate::default();
    let mut out = Vec::new();
    let mut released = false;
    for piece in want.stream.chunks(step) {
        strip.filter(piece, &mut out);
        scan.feed(piece);
        released |= matches!(gate.feed(piece), Gate::Release);
    }
    strip.finish(&mut out);
    assert_eq!(out, want.stripped);
    assert_eq!(released, want.releases);
    let usage = scan.prompt_tokens.zip(scan.completion_tokens).zip(scan.total_tokens).map(|((p, c), t)| (p, c, t));
    assert_eq!(usage, want.usage);
    assert_eq!(scan.text_fragments, want.tokens);
});
