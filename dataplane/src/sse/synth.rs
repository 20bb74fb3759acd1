//! Synthetic OpenAI-style streams for the unit tests and the fuzz targets:
//! the same events an upstream sends, with JSON whitespace, key order and SSE
//! line endings chosen by the input bytes, and what the stream must come to.

/// A generated stream and what the relay's scanners must make of it.
pub struct Synth {
    pub stream: Vec<u8>,
    /// The stream without its usage-only events.
    pub stripped: Vec<u8>,
    /// The last usage chunk's (prompt, completion, total).
    pub usage: Option<(u64, u64, u64)>,
    /// An event other than the role-only opening and comments came.
    pub releases: bool,
    /// Content tokens sent.
    pub tokens: u64,
}

/// Draws choices from the input bytes (zeros once they run out).
struct Draw<'a>(&'a [u8]);

impl Draw<'_> {
    fn next(&mut self, n: u8) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                b % n
            }
            None => 0,
        }
    }
}

fn ws(d: &mut Draw<'_>, out: &mut String) {
    out.push_str(["", "", " ", "  ", "\t"][d.next(5) as usize]);
}

/// A JSON object with its members in an order the input picks.
fn object(d: &mut Draw<'_>, members: &mut [(&str, String)], out: &mut String) {
    let n = members.len();
    for i in 0..n {
        let j = i + (d.next(n as u8 - i as u8) as usize);
        members.swap(i, j);
    }
    out.push('{');
    for (i, (k, v)) in members.iter().enumerate() {
        ws(d, out);
        out.push_str(&format!("\"{k}\""));
        ws(d, out);
        out.push(':');
        ws(d, out);
        out.push_str(v);
        ws(d, out);
        if i + 1 < n {
            out.push(',');
        }
    }
    out.push('}');
}

fn value(d: &mut Draw<'_>, members: &mut [(&str, String)]) -> String {
    let mut s = String::new();
    object(d, members, &mut s);
    s
}

fn array(d: &mut Draw<'_>, items: &[String]) -> String {
    let mut s = String::from("[");
    ws(d, &mut s);
    s.push_str(&items.join(","));
    ws(d, &mut s);
    s.push(']');
    s
}

/// Add one event (`line`, then a blank line, one line ending chosen for both).
fn push(s: &mut Synth, d: &mut Draw<'_>, line: &str, usage_only: bool, holds: bool) {
    let nl = ["\n", "\r\n", "\r"][d.next(3) as usize];
    let ev = format!("{line}{nl}{nl}");
    s.stream.extend_from_slice(ev.as_bytes());
    if !usage_only {
        s.stripped.extend_from_slice(ev.as_bytes());
    }
    s.releases |= !holds;
}

/// A stream: maybe a role-only opening, up to seven events (comments, tokens,
/// usage-only chunks), maybe `[DONE]`.
pub fn stream(bytes: &[u8]) -> Synth {
    let d = &mut Draw(bytes);
    let mut s = Synth { stream: Vec::new(), stripped: Vec::new(), usage: None, releases: false, tokens: 0 };
    let id = || ("id", "\"chatcmpl-1\"".to_string());
    if d.next(4) != 0 {
        let delta = value(d, &mut [("role", "\"assistant\"".into()), ("content", "\"\"".into())]);
        let choice = value(d, &mut [("index", "0".into()), ("delta", delta), ("finish_reason", "null".into())]);
        let choices = array(d, &[choice]);
        let line = format!("data: {}", value(d, &mut [id(), ("choices", choices)]));
        push(&mut s, d, &line, false, true);
    }
    let events = d.next(8);
    for i in 0..events {
        match d.next(6) {
            0 => push(&mut s, d, ": keep-alive", false, true),
            1 => {
                let (p, c) = (d.next(100) as u64, d.next(100) as u64);
                let usage = value(
                    d,
                    &mut [
                        ("prompt_tokens", p.to_string()),
                        ("completion_tokens", c.to_string()),
                        ("total_tokens", (p + c).to_string()),
                    ],
                );
                let choices = array(d, &[]);
                let line = format!("data: {}", value(d, &mut [id(), ("choices", choices), ("usage", usage)]));
                s.usage = Some((p, c, p + c));
                push(&mut s, d, &line, true, false);
            }
            _ => {
                let delta = value(d, &mut [("content", format!("\"tok{i} \\\"q\\\"\""))]);
                let choice = value(d, &mut [("index", "0".into()), ("delta", delta), ("finish_reason", "null".into())]);
                let choices = array(d, &[choice]);
                let mut members = vec![id(), ("choices", choices)];
                if d.next(2) == 1 {
                    members.push(("usage", "null".into()));
                }
                let line = format!("data: {}", value(d, &mut members));
                s.tokens += 1;
                push(&mut s, d, &line, false, false);
            }
        }
    }
    if d.next(2) == 1 {
        push(&mut s, d, "data: [DONE]", false, false);
    }
    s
}
