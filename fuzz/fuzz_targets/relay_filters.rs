//! The relay's body filters over an upstream body in arbitrary reads: the
//! payload the deframer finds (and whether the body is done, and whether
//! bytes came past its end) is the same whatever the split; the client's
//! chunked framing of it decodes back to it; the hold gives the body whole
//! (or lets it go past its bound); the cache capture keeps it exactly when
//! it fits.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchboard_dataplane::http::chunked::ChunkedDecoder;
use switchboard_dataplane::http::head::BodyFraming;
use switchboard_dataplane::relay_filters::{Capture, ClientBody, Deframer, Held, Hold, HOLD_MAX_BYTES};

/// Deframe `wire` read `step` bytes at a time: the payload pieces, done,
/// surplus — or None for a framing error.
fn deframe(framing: BodyFraming, wire: &[u8], step: usize) -> Option<(Vec<Vec<u8>>, bool, bool)> {
    let mut d = Deframer::new(framing);
    let mut pieces = Vec::new();
    let mut chunks = wire.chunks(step).peekable();
    if chunks.peek().is_none() {
        let mut empty = Vec::new();
        let r = d.payload(&mut empty, 0).ok()?;
        pieces.push(empty[r].to_vec());
    }
    for chunk in chunks {
        if d.done {
            break;
        }
        let mut buf = chunk.to_vec();
        let r = d.payload(&mut buf, 0).ok()?;
        pieces.push(buf[r].to_vec());
    }
    if framing == BodyFraming::Close && !d.done {
        d.eof = true;
        let mut empty = Vec::new();
        let r = d.payload(&mut empty, 0).ok()?;
        pieces.push(empty[r].to_vec());
    }
    Some((pieces, d.done, d.surplus))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let wire = &data[2..];
    let framing = match data[0] % 4 {
        0 => BodyFraming::Chunked,
        1 => BodyFraming::Length((data[1] as u64 * 7) % (wire.len() as u64 + 8)),
        2 => BodyFraming::Close,
        _ => BodyFraming::None,
    };
    let step = (data[1] as usize % 13) + 1;
    let whole = deframe(framing, wire, wire.len().max(1));
    let split = deframe(framing, wire, step);
    let (Some((a, done_a, surplus_a)), Some((b, done_b, _))) = (whole, split) else {
        // A framing error is one whatever the split (the chunked decoder's own target checks it).
        return;
    };
    let payload: Vec<u8> = a.concat();
    assert_eq!(payload, b.concat(), "the payload depends on the split");
    assert_eq!(done_a, done_b);
    if !done_a {
        return;
    }
    let _ = surplus_a;

    // The client's chunked framing decodes back to the payload.
    let mut out = Vec::new();
    for piece in &b {
        ClientBody::Chunked.push(&mut out, piece);
    }
    ClientBody::Chunked.end(&mut out, None);
    let mut dec = ChunkedDecoder::new();
    let (mut r, mut w) = (0, 0);
    let end = out.len();
    assert!(matches!(dec.decode(&mut out, &mut r, end, &mut w), Ok(true)));
    assert_eq!(&out[..w], &payload[..]);

    // Hold: the body whole at its end (or, past its bound, let go as it came).
    let mut hold = Hold::default();
    let mut held = Vec::new();
    let mut whole = None;
    for (i, piece) in b.iter().enumerate() {
        held.extend_from_slice(piece);
        match hold.feed(piece, i + 1 == b.len()) {
            Held::Holding => assert!(held.len() <= HOLD_MAX_BYTES),
            Held::Whole(body) => whole = Some(body),
            Held::Overflow(all) => {
                assert!(all.len() > HOLD_MAX_BYTES);
                assert_eq!(all, held);
                break;
            }
        }
    }
    if payload.len() <= HOLD_MAX_BYTES && !b.is_empty() {
        assert_eq!(whole.as_deref(), Some(&payload[..]));
    }

    // Capture: kept exactly when it fits.
    let max = data[1] as usize * 16;
    let mut cap = Capture::new(max);
    for piece in &b {
        cap.feed(piece);
    }
    match cap.take() {
        Some(kept) => assert_eq!(kept, payload),
        None => assert!(payload.len() > max),
    }
});
