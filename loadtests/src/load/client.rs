//! One keep-alive HTTP/1.1 (or HTTPS) connection of the load generator, and
//! one timed request on it, streaming or not.

use super::stats::Sample;
use super::workload::Planned;
use monoio::net::TcpStream;
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use switchboard_dataplane::fmt::push_dec;
use switchboard_dataplane::http::chunked::ChunkedDecoder;
use switchboard_dataplane::http::find_head_end;
use switchboard_dataplane::http::head::{parse_response, BodyFraming};
use switchboard_dataplane::http::io::{read_append, write_all, IoFail};
use switchboard_dataplane::upstream::UpStream;

/// Where requests go.
#[derive(Clone)]
pub struct Target {
    pub label: String,
    pub addr: SocketAddr,
    pub host_header: String,
    pub path_prefix: String,
    pub tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

pub struct Conn {
    io: UpStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    events: Vec<u8>,
}

pub async fn connect(t: &Target, deadline: Instant) -> Result<Conn, &'static str> {
    let d = monoio::time::Instant::from_std(deadline);
    let tcp = match monoio::time::timeout_at(d, TcpStream::connect_addr(t.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => return Err("connect"),
        Err(_) => return Err("connect_timeout"),
    };
    let _ = tcp.set_nodelay(true);
    let io = match &t.tls {
        None => UpStream::Plain(tcp),
        Some((cfg, name)) => {
            let c = monoio_rustls::TlsConnector::from(cfg.clone());
            match monoio::time::timeout_at(d, c.connect(name.clone(), tcp)).await {
                Ok(Ok(s)) => UpStream::Tls(Box::new(s)),
                _ => return Err("tls"),
            }
        }
    };
    Ok(Conn { io, rbuf: Vec::with_capacity(16 * 1024), wbuf: Vec::with_capacity(4096), events: Vec::new() })
}

/// One request: what to send and when it was meant to go.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    pub path: &'a str,
    pub key: &'a str,
    pub plan: &'a Planned,
    /// The scheduled send time; latencies count from here.
    pub intended: Instant,
    pub deadline: Instant,
}

/// How a request went; `keep` says whether the connection can be reused.
pub struct Done {
    pub keep: bool,
}

/// Send one request and read its response, recording into `s`.
/// Latencies count from `intended` (the scheduled send time), so a late send
/// is charged to the system under test, not hidden (coordinated omission).
pub async fn exchange(conn: &mut Conn, t: &Target, req: &Request<'_>, s: &mut Sample) -> Done {
    let Request { path, key, plan, intended, deadline } = *req;
    let fail = |s: &mut Sample, kind: &str| {
        s.fail(kind);
        Done { keep: false }
    };
    let d = monoio::time::Instant::from_std(deadline);
    let w = &mut conn.wbuf;
    w.clear();
    w.extend_from_slice(b"POST ");
    w.extend_from_slice(t.path_prefix.as_bytes());
    w.extend_from_slice(path.as_bytes());
    w.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    w.extend_from_slice(t.host_header.as_bytes());
    w.extend_from_slice(b"\r\nauthorization: Bearer ");
    w.extend_from_slice(key.as_bytes());
    w.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
    push_dec(w, plan.body.len() as u64);
    w.extend_from_slice(b"\r\n\r\n");
    w.extend_from_slice(&plan.body);
    if let Err(e) = write_all(&mut conn.io, w, d).await {
        return fail(s, if matches!(e, IoFail::Timeout) { "timeout" } else { "io_write" });
    }
    // Head.
    let r = &mut conn.rbuf;
    r.clear();
    let head = loop {
        if let Some(end) = find_head_end(r, 0) {
            match parse_response(&r[..end], false) {
                Ok(h) => break h,
                Err(_) => return fail(s, "bad_response"),
            }
        }
        if r.len() > 1 << 20 {
            return fail(s, "bad_response");
        }
        match read_append(&mut conn.io, r, 16 * 1024, d).await {
            Ok(0) => return fail(s, "closed"),
            Ok(_) => {}
            Err(IoFail::Timeout) => return fail(s, "timeout"),
            Err(IoFail::Io(_)) => return fail(s, "io_read"),
        }
    };
    // Body: decode framing; for streams, time each SSE event as it lands.
    let mut pos = head.head_len;
    let mut dec = ChunkedDecoder::new();
    let mut remaining = match head.framing {
        BodyFraming::Length(n) => n,
        _ => 0,
    };
    let mut done = matches!(head.framing, BodyFraming::None | BodyFraming::Length(0));
    let sse = head.event_stream;
    let ev = &mut conn.events;
    ev.clear();
    let mut scanned = 0;
    let mut sse_state = SseState::default();
    let mut body_bytes = 0u64;
    let mut non_stream_tokens = None;
    let mut surplus = false;
    loop {
        let end = r.len();
        let payload = match head.framing {
            BodyFraming::Chunked => {
                let (mut rp, mut wp) = (pos, pos);
                match dec.decode(r, &mut rp, end, &mut wp) {
                    Ok(d) => {
                        done = d;
                        surplus |= d && rp < end;
                        pos..wp
                    }
                    Err(_) => return fail(s, "bad_chunking"),
                }
            }
            BodyFraming::Length(_) => {
                let n = ((end - pos) as u64).min(remaining) as usize;
                remaining -= n as u64;
                done = remaining == 0;
                pos..pos + n
            }
            _ => pos..end,
        };
        body_bytes += payload.len() as u64;
        if sse {
            ev.extend_from_slice(&r[payload]);
            let now = Instant::now();
            let before = sse_state.tokens;
            while let Some(i) = memchr::memmem::find(&ev[scanned..], b"\n\n") {
                let event_end = scanned + i;
                sse_state.event(&ev[scanned..event_end], now, intended, s);
                scanned = event_end + 2;
            }
            if sse_state.tokens - before >= 2 {
                s.batched_reads += 1;
            }
            ev.drain(..scanned);
            scanned = 0;
        } else if head.status == 200 {
            ev.extend_from_slice(&r[payload]);
        }
        if done {
            break;
        }
        r.clear();
        pos = 0;
        match read_append(&mut conn.io, r, 16 * 1024, d).await {
            Ok(0) if head.framing == BodyFraming::Close => done = true,
            Ok(0) => return fail(s, if sse { "stream_truncated" } else { "body_truncated" }),
            Ok(_) => {}
            Err(IoFail::Timeout) => return fail(s, "timeout"),
            Err(IoFail::Io(_)) => return fail(s, if sse { "stream_truncated" } else { "io_read" }),
        }
    }
    let finished = Instant::now();
    s.bytes = body_bytes;
    s.stream = sse;
    if !sse && head.status == 200 {
        non_stream_tokens = number_after(ev, b"\"completion_tokens\":");
    }
    let keep = head.keep_alive && !surplus && head.framing != BodyFraming::Close;
    let success = head.status == 200 && (!sse || (sse_state.done && !sse_state.error));
    if plan.must_fail {
        if success {
            s.fail("unexpected_success");
        } else {
            s.expected_failure = true;
        }
        return Done { keep };
    }
    if head.status != 200 {
        s.fail(format!("http_{}", head.status));
        return Done { keep };
    }
    if sse && sse_state.error {
        s.fail("stream_error_event");
        return Done { keep };
    }
    if sse && !sse_state.done {
        s.fail("stream_no_done");
        return Done { keep };
    }
    s.ok = true;
    s.total_us = Some(finished.duration_since(intended).as_micros() as u64);
    if sse {
        s.tokens = sse_state.tokens as u64;
        if let Some(reported) = sse_state.usage_tokens {
            s.lost_tokens = reported.saturating_sub(sse_state.tokens as u64);
        }
        if let (Some(first), Some(last)) = (sse_state.first, sse_state.last) {
            let span = last.duration_since(first).as_secs_f64();
            if sse_state.tokens > 1 && span > 0.0 {
                s.tps = Some(((sse_state.tokens - 1) as f64 / span) as u64);
            }
        }
    } else if let Some(n) = non_stream_tokens {
        s.tokens = n;
    }
    Done { keep }
}

#[derive(Default)]
struct SseState {
    tokens: u32,
    first: Option<Instant>,
    last: Option<Instant>,
    done: bool,
    error: bool,
    usage_tokens: Option<u64>,
}

impl SseState {
    fn event(&mut self, ev: &[u8], now: Instant, intended: Instant, s: &mut Sample) {
        // Anthropic's events have an `event:` line before their data.
        let Some(data) = ev.split(|&b| b == b'\n').find_map(|l| l.strip_prefix(b"data: ")) else { return };
        if data.starts_with(b"[DONE]") || data.starts_with(b"{\"type\":\"message_stop\"") {
            self.done = true;
            return;
        }
        if data.starts_with(b"{\"error\"") || data.starts_with(b"{\"type\":\"error\"") {
            self.error = true;
            return;
        }
        if let Some(n) = number_after(data, b"\"completion_tokens\":").or_else(|| {
            memchr::memmem::find(data, b"\"message_delta\"")
                .is_some()
                .then(|| number_after(data, b"\"output_tokens\":"))
                .flatten()
        }) {
            self.usage_tokens = Some(n);
        }
        if has_content(data) {
            self.tokens += 1;
            match self.last {
                None => s.ttft_us = Some(now.duration_since(intended).as_micros() as u64),
                Some(prev) => s.gaps_us.push(now.duration_since(prev).as_micros() as u64),
            }
            self.first.get_or_insert(now);
            self.last = Some(now);
        }
    }
}

/// A chat delta or completion text that is not empty.
fn has_content(data: &[u8]) -> bool {
    for marker in [&b"\"content\":\""[..], &b"\"text\":\""[..]] {
        if let Some(i) = memchr::memmem::find(data, marker) {
            return data.get(i + marker.len()).is_some_and(|&c| c != b'"');
        }
    }
    false
}

fn number_after(data: &[u8], marker: &[u8]) -> Option<u64> {
    let i = memchr::memmem::find(data, marker)? + marker.len();
    let digits: Vec<u8> = data[i..].iter().copied().skip_while(|c| *c == b' ').take_while(u8::is_ascii_digit).collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_detection() {
        assert!(has_content(br#"{"choices":[{"delta":{"content":"hi"}}]}"#));
        assert!(!has_content(br#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#));
        assert!(has_content(br#"{"choices":[{"text":"x"}]}"#));
        assert!(!has_content(br#"{"choices":[],"usage":{}}"#));
        assert_eq!(number_after(br#"{"completion_tokens": 42,"x":1}"#, b"\"completion_tokens\":"), Some(42));
    }
}
