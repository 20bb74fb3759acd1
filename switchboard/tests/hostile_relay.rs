//! The relay attacked from outside: a hostile upstream (bytes one at a time,
//! chunk framing split anywhere, bytes after the response's end, resets and
//! half-closes mid-event, silence) and a client that leaves. Every stream's
//! bytes are compared with what the upstream sent (the gateway passes a
//! chat stream's events as they came; only the HTTP chunking is its own).
//! Runs under both drivers (the suite runs twice); the tests that need a
//! tiny multishot receive ring start the real binary with
//! `SWITCHBOARD_URING_RECV=1x512`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the hostile upstream does with a connection after answering.
#[derive(Clone, Copy)]
enum After {
    /// Wait for the next request on it.
    KeepAlive,
    /// Close it (FIN).
    Close,
    /// Reset it (RST: linger 0).
    Reset,
    /// Shut its write side and wait a while before closing.
    HalfClose,
}

type Script = dyn Fn(usize, &[u8], &mut TcpStream) -> After + Send + Sync;

/// An upstream on an ephemeral loopback port that answers request number
/// `n` (from 1, across connections) with `script(n, body, socket)`.
struct Hostile {
    url: String,
    /// Connections accepted.
    conns: Arc<AtomicUsize>,
    /// Connections the gateway closed (EOF or error reading the next request).
    closed_by_gateway: Arc<AtomicUsize>,
}

impl Hostile {
    fn start(script: impl Fn(usize, &[u8], &mut TcpStream) -> After + Send + Sync + 'static) -> Hostile {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1", l.local_addr().unwrap());
        let conns = Arc::new(AtomicUsize::new(0));
        let closed_by_gateway = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let script: Arc<Script> = Arc::new(script);
        let (c, g) = (conns.clone(), closed_by_gateway.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { return };
                c.fetch_add(1, Ordering::SeqCst);
                let (script, requests, g) = (script.clone(), requests.clone(), g.clone());
                std::thread::spawn(move || serve(s, &*script, &requests, &g));
            }
        });
        Hostile { url, conns, closed_by_gateway }
    }

    fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }
}

fn serve(mut s: TcpStream, script: &Script, requests: &AtomicUsize, closed: &AtomicUsize) {
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 16384];
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => {
                    closed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let len: usize =
            head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
        while buf.len() < end + len {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..end + len).skip(end).collect();
        let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
        match script(n, &body, &mut s) {
            After::KeepAlive => {}
            After::Close => return,
            After::Reset => {
                // SO_LINGER 0: close(2) sends RST.
                let l = libc::linger { l_onoff: 1, l_linger: 0 };
                use std::os::fd::AsRawFd;
                // SAFETY: setsockopt(2) on our own socket with a valid linger.
                unsafe {
                    libc::setsockopt(
                        s.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        (&l as *const libc::linger).cast(),
                        std::mem::size_of::<libc::linger>() as u32,
                    );
                }
                return;
            }
            After::HalfClose => {
                let _ = s.shutdown(std::net::Shutdown::Write);
                std::thread::sleep(Duration::from_secs(2));
                return;
            }
        }
    }
}

const SSE_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n";

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut c = format!("{:x}\r\n", data.len()).into_bytes();
    c.extend_from_slice(data);
    c.extend_from_slice(b"\r\n");
    c
}

/// A chat chunk event with `text` as its content, lines ended by `nl`.
fn event(text: &str, nl: &str) -> Vec<u8> {
    let data = serde_json::json!({
        "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}],
    });
    format!("data: {data}{nl}{nl}").into_bytes()
}

fn finish(nl: &str) -> Vec<u8> {
    format!(r#"data: {{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{{"index":0,"delta":{{}},"finish_reason":"stop"}}]}}{nl}{nl}"#).into_bytes()
}

fn done(nl: &str) -> Vec<u8> {
    format!("data: [DONE]{nl}{nl}").into_bytes()
}

/// `n` token events, the finish event and `[DONE]`: the stream's payload.
fn events(n: usize, nl: &str) -> Vec<Vec<u8>> {
    let mut e: Vec<Vec<u8>> = (0..n).map(|i| event(&format!("tok {i} "), nl)).collect();
    e.push(finish(nl));
    e.push(done(nl));
    e
}

/// The upstream's body for `events`: one HTTP chunk each, then the last chunk.
fn chunked(events: &[Vec<u8>]) -> Vec<u8> {
    let mut w: Vec<u8> = events.iter().flat_map(|e| chunk(e)).collect();
    w.extend_from_slice(b"0\r\n\r\n");
    w
}

fn json_answer(content: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "id": "x", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    })
    .to_string();
    let mut a = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len())
        .into_bytes();
    a.extend_from_slice(body.as_bytes());
    a
}

const STREAM: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
const PLAIN: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

fn chat(body: &str) -> Vec<u8> {
    request("POST", "/v1/chat/completions", Some(KEY), body, &[])
}

/// A streamed response's status and body (de-chunked).
fn stream_body(c: &mut Conn) -> (u16, Vec<u8>) {
    let r = c.response();
    (r.status, r.body)
}

/// The gateway as a process with a receive ring of ONE 512-byte buffer per
/// worker (the driver is the suite's: `SWITCHBOARD_DRIVER`).
fn tiny_ring_gateway(dir: &tempfile::TempDir, url: &str) -> (Proc, std::net::SocketAddr) {
    let path = dir.path().join("sb.toml");
    std::fs::write(&path, basic_config(url, "workers = 1")).unwrap();
    let mut p = Proc::spawn(&["serve", "--config", path.to_str().unwrap()], &[("SWITCHBOARD_URING_RECV", "1x512")]);
    let addr = p.address("data plane listening on ");
    (p, addr)
}

// ---- bytes after the end of a response ----

/// An upstream that writes past its response's end, after the gateway has
/// read that end (a whole second response, 50 ms later, on a kept-alive
/// connection): those bytes must never become the next request's answer.
/// Found by this attack: the connection went back to the pool, and the next
/// request on it got the forged response (both drivers, streams and JSON).
#[test]
fn bytes_an_upstream_sends_after_its_response_never_answer_the_next_request() {
    let forged = json_answer("FORGED");
    for first in [STREAM, PLAIN] {
        let forged = forged.clone();
        let up = Hostile::start(move |n, body, s| {
            if n == 1 {
                if body.windows(13).any(|w| w == b"\"stream\":true") {
                    s.write_all(SSE_HEAD).unwrap();
                    s.write_all(&chunked(&events(2, "\n"))).unwrap();
                } else {
                    s.write_all(&json_answer("first")).unwrap();
                }
                // After the gateway has read the end (and pooled the connection).
                std::thread::sleep(Duration::from_millis(50));
                let _ = s.write_all(&forged);
                return After::KeepAlive;
            }
            s.write_all(&json_answer("good")).unwrap();
            After::KeepAlive
        });
        let gw = Gateway::start(&basic_config(&up.url, "workers = 1"));
        let mut c = gw.conn();
        c.send(&chat(first));
        let (status, body) = stream_body(&mut c);
        assert_eq!(status, 200);
        if first == STREAM {
            assert_eq!(body, events(2, "\n").concat());
        } else {
            assert!(String::from_utf8_lossy(&body).contains("\"first\""));
        }
        std::thread::sleep(Duration::from_millis(200));
        for _ in 0..2 {
            c.send(&chat(PLAIN));
            let r = c.response();
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.json()["choices"][0]["message"]["content"], "good", "after a {first}: {}", r.text());
        }
        // The dirty connection was closed; the next requests went over a new one.
        assert_eq!(up.conns(), 2, "after a {first}");
        assert!(eventually(Duration::from_secs(5), || up.closed_by_gateway.load(Ordering::SeqCst) >= 1));
    }
}

// ---- streams in hostile shapes: byte-exact, and the pooled connection after ----

/// Sends a stream's body one byte per write (each its own arrival, a ring
/// buffer each), then answers the next requests on the same connection with
/// JSON and with a stream in one write: with a receive ring of one 512-byte
/// buffer, every stream is byte-exact and the connection is reused (the
/// multishot receive was stopped cleanly before it went back to the pool).
#[test]
fn a_stream_one_byte_at_a_time_then_json_and_a_stream_on_the_same_upstream_connection() {
    let body = chunked(&events(12, "\n"));
    let up = Hostile::start(move |n, _, s| {
        match n {
            1 => {
                s.write_all(SSE_HEAD).unwrap();
                for b in &body {
                    s.write_all(std::slice::from_ref(b)).unwrap();
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            2 => s.write_all(&json_answer("plain")).unwrap(),
            _ => {
                let mut all = SSE_HEAD.to_vec();
                all.extend(chunked(&events(3, "\n")));
                s.write_all(&all).unwrap();
            }
        }
        After::KeepAlive
    });
    let dir = tempfile::tempdir().unwrap();
    let (p, addr) = tiny_ring_gateway(&dir, &up.url);
    let mut c = Conn::open(addr);
    c.send(&chat(STREAM));
    assert_eq!(stream_body(&mut c), (200, events(12, "\n").concat()));
    c.send(&chat(PLAIN));
    let r = c.response();
    assert_eq!(r.json()["choices"][0]["message"]["content"], "plain", "{}", r.text());
    c.send(&chat(STREAM));
    assert_eq!(stream_body(&mut c), (200, events(3, "\n").concat()));
    assert_eq!(up.conns(), 1, "one upstream connection served all three");
    assert_eq!(p.stop(), 0);
}

/// The upstream's chunked framing split into two writes at every byte
/// position (chunk-size line, CRLFs, data, the last chunk), and events with
/// CRLF line endings, one larger than every buffer (300 KB) and one of odd
/// Unicode: what the client gets is the upstream's payload, byte for byte.
#[test]
fn chunk_framing_split_anywhere_crlf_events_and_an_event_larger_than_every_buffer_arrive_byte_exact() {
    let small = events(2, "\r\n");
    let wire = chunked(&small);
    let cut = Arc::new(AtomicUsize::new(0));
    let big = vec![
        event("a", "\r\n"),
        event(&"x".repeat(300_000), "\r\n"),
        event("é😀\u{2028}\u{0}\u{202e}\u{fe0f}", "\r\n"),
        finish("\r\n"),
        done("\r\n"),
    ];
    let big_wire = chunked(&big);
    let (k, bw) = (cut.clone(), big_wire.clone());
    let up = Hostile::start(move |_, body, s| {
        s.write_all(SSE_HEAD).unwrap();
        if body.windows(3).any(|w| w == b"big") {
            for piece in bw.chunks(1000) {
                s.write_all(piece).unwrap();
            }
            return After::KeepAlive;
        }
        let at = k.load(Ordering::SeqCst);
        s.write_all(&wire[..at]).unwrap();
        std::thread::sleep(Duration::from_millis(1));
        s.write_all(&wire[at..]).unwrap();
        After::KeepAlive
    });
    let gw = Gateway::start(&basic_config(&up.url, "workers = 1"));
    let mut c = gw.conn();
    for at in 0..=chunked(&small).len() {
        cut.store(at, Ordering::SeqCst);
        c.send(&chat(STREAM));
        assert_eq!(stream_body(&mut c), (200, small.concat()), "split at {at}");
    }
    c.send(&chat(r#"{"model":"m","messages":[{"role":"user","content":"big"}],"stream":true}"#));
    let (status, got) = stream_body(&mut c);
    assert_eq!(status, 200);
    assert!(got == big.concat(), "{} bytes, expected {}", got.len(), big.concat().len());
    assert_eq!(up.conns(), 1);
}

// ---- an upstream that fails mid-stream ----

/// The upstream stops right after the head, inside an event, inside a chunk
/// size line, or after a chunk size's CR, by closing, resetting, or shutting
/// its write side while keeping the socket open: a stream that had not
/// started is a 502 (retried first, then the error), one that had ends with
/// the SSE error event, and in both cases at once, not at a timeout; the
/// gateway serves the next stream byte-exact.
#[test]
fn an_upstream_that_closes_resets_or_half_closes_mid_stream_gives_a_prompt_clean_error() {
    let e0 = chunk(&event("tok 0 ", "\n"));
    let e1 = chunk(&event("tok 1 ", "\n"));
    let wheres: [(&str, Vec<u8>); 4] = [
        ("after the head", Vec::new()),
        ("inside an event", [e0.clone(), e1[..20].to_vec()].concat()),
        ("inside a chunk size", [e0.clone(), b"1".to_vec()].concat()),
        ("after a chunk size's CR", [e0.clone(), b"1a\r".to_vec()].concat()),
    ];
    for (where_, piece) in wheres {
        for how in 0..3 {
            let piece = piece.clone();
            let up = Hostile::start(move |n, _, s| {
                if n > 1 {
                    s.write_all(SSE_HEAD).unwrap();
                    s.write_all(&chunked(&events(1, "\n"))).unwrap();
                    return After::KeepAlive;
                }
                s.write_all(&[SSE_HEAD, &piece].concat()).unwrap();
                std::thread::sleep(Duration::from_millis(20));
                [After::Close, After::Reset, After::HalfClose][how]
            });
            let label = format!("{} {where_}", ["close", "reset", "half-close"][how]);
            // No retries: the first answer is the one the client gets.
            let config = basic_config(&up.url, "workers = 1").replace(
                "targets = [{ upstream = \"up\" }]",
                "targets = [{ upstream = \"up\" }]\nretry = { max_attempts = 1 }",
            );
            let gw = Gateway::start(&config);
            let mut c = gw.conn();
            let started = std::time::Instant::now();
            c.send(&chat(STREAM));
            let r = c.response();
            assert!(started.elapsed() < Duration::from_secs(2), "{label}: {:?}", started.elapsed());
            let text = r.text();
            if where_ == "after the head" {
                assert_eq!(r.status, 502, "{label}: {text}");
                assert!(r.error()["message"].as_str().unwrap().contains("`up`"), "{label}: {text}");
            } else {
                assert_eq!(r.status, 200, "{label}: {text}");
                assert!(text.starts_with(&String::from_utf8(event("tok 0 ", "\n")).unwrap()), "{label}: {text}");
                let last = sse_data(&r.body).pop().unwrap();
                assert!(last.contains("failed mid-stream"), "{label}: {last}");
            }
            let mut c = gw.conn();
            c.send(&chat(STREAM));
            assert_eq!(stream_body(&mut c), (200, events(1, "\n").concat()), "{label}: the next stream");
        }
    }
}

/// An upstream that sends two events and then nothing, holding the
/// connection open: `read_timeout_ms` cuts the stream with the SSE error
/// event, the client's connection is closed after it, the upstream's too,
/// and the next stream is served.
#[test]
fn an_upstream_that_stalls_mid_stream_is_cut_at_its_read_timeout_and_both_ends_are_closed() {
    let up = Hostile::start(|n, _, s| {
        s.write_all(SSE_HEAD).unwrap();
        if n > 1 {
            s.write_all(&chunked(&events(1, "\n"))).unwrap();
            return After::KeepAlive;
        }
        s.write_all(&[chunk(&event("a", "\n")), chunk(&event("b", "\n"))].concat()).unwrap();
        // Silent, but open: the gateway must close it.
        After::KeepAlive
    });
    let config = basic_config(&up.url, "workers = 1").replace(
        &format!("api_key = \"{PROVIDER_KEY}\""),
        &format!("api_key = \"{PROVIDER_KEY}\"\nread_timeout_ms = 300"),
    );
    let gw = Gateway::start(&config);
    let mut c = gw.conn();
    c.send(&chat(STREAM));
    let r = c.response();
    assert_eq!(r.status, 200);
    let last = sse_data(&r.body).pop().unwrap();
    assert!(last.contains("sent nothing for 300 ms"), "{last}");
    assert!(c.closed_by_peer(), "the client's connection is closed after a cut stream");
    assert!(
        eventually(Duration::from_secs(5), || up.closed_by_gateway.load(Ordering::SeqCst) == 1),
        "the stalled upstream connection is closed"
    );
    let mut c = gw.conn();
    c.send(&chat(STREAM));
    assert_eq!(stream_body(&mut c), (200, events(1, "\n").concat()));
}

// ---- a client that leaves ----

/// A client that disconnects mid-stream while the upstream keeps sending:
/// the upstream connection is closed (the upstream's writes fail), not
/// pooled; the next stream goes over a new connection, byte-exact.
#[test]
fn a_client_that_leaves_mid_stream_gets_the_upstream_connection_closed() {
    let stopped = Arc::new(AtomicUsize::new(0));
    let st = stopped.clone();
    let up = Hostile::start(move |n, _, s| {
        s.write_all(SSE_HEAD).unwrap();
        if n > 1 {
            s.write_all(&chunked(&events(1, "\n"))).unwrap();
            return After::KeepAlive;
        }
        for i in 0..20_000 {
            if s.write_all(&chunk(&event(&format!("tok {i} "), "\n"))).is_err() {
                st.store(1, Ordering::SeqCst);
                return After::Close;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        After::Close
    });
    let gw = Gateway::start(&basic_config(&up.url, "workers = 1"));
    let mut c = gw.conn();
    c.send(&chat(STREAM));
    let (status, _) = c.head();
    assert_eq!(status, 200);
    assert!(c.chunk().is_some());
    drop(c);
    assert!(
        eventually(Duration::from_secs(5), || stopped.load(Ordering::SeqCst) == 1),
        "the upstream connection is closed when the client leaves"
    );
    let mut c = gw.conn();
    c.send(&chat(STREAM));
    assert_eq!(stream_body(&mut c), (200, events(1, "\n").concat()));
    assert_eq!(up.conns(), 2);
}

/// Events an upstream sends after `[DONE]` (inside the same body) are not
/// the stream's: a client reading the upstream directly stops at `[DONE]`.
/// Found by this attack: the gateway holds `[DONE]` back to write the
/// stream's ending, and relayed the later events before it, so they reached
/// the client as content. Now they are dropped; the stream is byte-exact up
/// to and including `[DONE]`.
#[test]
fn events_after_done_are_not_relayed_as_content() {
    let up = Hostile::start(|_, _, s| {
        s.write_all(SSE_HEAD).unwrap();
        let mut e = events(1, "\n");
        e.push(event("AFTER THE END", "\n"));
        e.push(done("\n"));
        s.write_all(&chunked(&e)).unwrap();
        After::KeepAlive
    });
    let gw = Gateway::start(&basic_config(&up.url, "workers = 1"));
    let mut c = gw.conn();
    c.send(&chat(STREAM));
    let (status, body) = stream_body(&mut c);
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8_lossy(&body), String::from_utf8_lossy(&events(1, "\n").concat()));
}

// ---- the client side: pipelining, sizes, Unicode ----

/// A stream, a JSON request and another stream sent in one write: each is
/// answered in order, byte-exact, on the one client connection (the bytes
/// of the requests behind a stream wait in the read buffer while it runs).
#[test]
fn requests_pipelined_behind_a_stream_are_answered_in_order_byte_exact() {
    let up = Hostile::start(|n, body, s| {
        if body.windows(13).any(|w| w == b"\"stream\":true") {
            s.write_all(SSE_HEAD).unwrap();
            for e in events(4, "\n") {
                s.write_all(&chunk(&e)).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
            s.write_all(b"0\r\n\r\n").unwrap();
        } else {
            s.write_all(&json_answer(&format!("json {n}"))).unwrap();
        }
        After::KeepAlive
    });
    let gw = Gateway::start(&basic_config(&up.url, "workers = 1"));
    let mut c = gw.conn();
    c.send(&[chat(STREAM), chat(PLAIN), chat(STREAM)].concat());
    assert_eq!(stream_body(&mut c), (200, events(4, "\n").concat()));
    let r = c.response();
    assert_eq!(r.json()["choices"][0]["message"]["content"], "json 2", "{}", r.text());
    assert_eq!(stream_body(&mut c), (200, events(4, "\n").concat()));
}

/// Stream requests whose whole size (head and body) is exactly 1 KiB (the
/// first read), 1 KiB + 1, 4 KiB ± 1, and whose body is exactly at
/// `max_body_bytes` and one byte over, with multi-byte UTF-8 and odd
/// escapes: the body reaches the upstream as sent (but the usage request the
/// gateway adds), the stream comes back byte-exact; over the limit, a 413.
#[test]
fn stream_requests_at_the_read_and_body_limits_with_odd_unicode() {
    let seen: Arc<std::sync::Mutex<Vec<Vec<u8>>>> = Arc::default();
    let s2 = seen.clone();
    let up = Hostile::start(move |_, body, s| {
        s2.lock().unwrap().push(body.to_vec());
        s.write_all(SSE_HEAD).unwrap();
        s.write_all(&chunked(&events(1, "\n"))).unwrap();
        After::KeepAlive
    });
    let limit = 16_384;
    let gw = Gateway::start(&basic_config(&up.url, &format!("workers = 1\nmax_body_bytes = {limit}")));
    let mut c = gw.conn();
    let body_of = |content: &str| {
        format!(r#"{{"model":"m","stream":true,"messages":[{{"role":"user","content":"{content}"}}]}}"#)
    };
    let odd = r#"é😀\ud83d\ude00\u0000\u202e"#;
    // Pad with 2-byte characters (and one ASCII byte when odd) to a length.
    let padded = |len: usize| {
        let base = body_of(odd).len();
        let pad = len - base;
        format!("{odd}{}{}", "é".repeat(pad / 2), "a".repeat(pad % 2))
    };
    let overhead = chat(&body_of("")).len() - body_of("").len();
    let mut cases: Vec<(String, u16)> = Vec::new();
    for whole in [1024usize, 1025, 4095, 4096, 4097] {
        // The head's length grows by a digit with the body's: find the body length.
        let mut len = whole - overhead;
        while chat(&body_of(&padded(len))).len() > whole {
            len -= 1;
        }
        let content = padded(len);
        assert_eq!(chat(&body_of(&content)).len(), whole);
        cases.push((content, 200));
    }
    cases.push((padded(limit), 200));
    cases.push((padded(limit + 1), 413));
    for (content, want) in cases {
        let body = body_of(&content);
        c.send(&chat(&body));
        let (status, got) = stream_body(&mut c);
        assert_eq!(status, want, "a body of {} bytes: {}", body.len(), String::from_utf8_lossy(&got));
        if want == 413 {
            break;
        }
        assert_eq!(got, events(1, "\n").concat(), "a body of {} bytes", body.len());
        let sent = seen.lock().unwrap().last().cloned().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&sent).unwrap();
        let asked: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["messages"], asked["messages"], "a body of {} bytes", body.len());
        let quoted = &body[body.find(odd).unwrap()..][..odd.len()];
        assert!(sent.windows(quoted.len()).any(|w| w == quoted.as_bytes()), "the escapes pass as written");
    }
}

// ---- memory: a burst does not stay with a stream ----

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// 100 streams each get a 256 KB burst in one upstream write, then the
/// upstream holds them open. Found by this attack: on io_uring, one
/// multishot read took every arrival waiting in the ring at once, so each
/// stream's read buffer grew to the burst and kept it for the rest of the
/// stream (about 370 KB per held stream against about 45 KB with plain
/// reads). Now a read takes at most its read size (or one ring buffer), as
/// a plain read does: the gateway's resident memory grows by well under
/// 128 KB per held stream, and every stream is byte-exact when released.
#[test]
fn a_burst_does_not_stay_with_a_held_stream() {
    const N: usize = 100;
    let burst: Vec<Vec<u8>> = (0..250).map(|i| event(&format!("{i:03}{}", "q".repeat(1000)), "\n")).collect();
    let released = Arc::new(AtomicUsize::new(0));
    let (b, rel) = (burst.clone(), released.clone());
    let up = Hostile::start(move |_, _, s| {
        let mut first = SSE_HEAD.to_vec();
        first.extend(chunk(&event("tok 0 ", "\n")));
        first.extend(b.iter().flat_map(|e| chunk(e)));
        s.write_all(&first).unwrap();
        while rel.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        s.write_all(&[chunk(&finish("\n")), chunk(&done("\n")), b"0\r\n\r\n".to_vec()].concat()).unwrap();
        After::KeepAlive
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sb.toml");
    std::fs::write(&path, basic_config(&up.url, "workers = 1")).unwrap();
    // The default ring (256 x 4 KiB), as a user runs it.
    let mut p = Proc::spawn(&["serve", "--config", path.to_str().unwrap()], &[]);
    let addr = p.address("data plane listening on ");
    // Warm up (the worker's buffers, the allocator) before the baseline.
    let mut c = Conn::open(addr);
    c.send(&request("GET", "/healthz", None, "", &[]));
    assert_eq!(c.response().status, 200);
    let before = vm_rss_kib(p.pid());
    let mut conns: Vec<Conn> = (0..N).map(|_| Conn::open(addr)).collect();
    for c in &mut conns {
        c.send(&chat(STREAM));
    }
    let want_first: usize = event("tok 0 ", "\n").len() + burst.iter().map(Vec::len).sum::<usize>();
    let mut got: Vec<Vec<u8>> = Vec::new();
    for c in &mut conns {
        let (status, _) = c.head();
        assert_eq!(status, 200);
        let mut body = Vec::new();
        while body.len() < want_first {
            body.extend(c.chunk().expect("the burst"));
        }
        got.push(body);
    }
    let held = vm_rss_kib(p.pid());
    let per_stream = held.saturating_sub(before) / N as u64;
    released.store(1, Ordering::SeqCst);
    let mut want = vec![event("tok 0 ", "\n")];
    want.extend(burst);
    want.push(finish("\n"));
    want.push(done("\n"));
    let want = want.concat();
    for (c, mut body) in conns.iter_mut().zip(got) {
        while let Some(more) = c.chunk() {
            body.extend(more);
        }
        assert!(body == want, "a released stream is byte-exact ({} bytes, expected {})", body.len(), want.len());
    }
    assert!(per_stream < 128, "{per_stream} KiB resident per held stream ({before} -> {held} KiB for {N} streams)");
    assert_eq!(p.stop(), 0);
}

/// A client that leaves mid-stream (after its first events) while the
/// upstream keeps sending is recorded as docs/usage.md says: the upstream's
/// status, `client_closed`, with the tokens relayed so far (estimated from
/// the chunks, as the upstream reports no usage) — at least what the client
/// read, fewer than the upstream went on to send.
#[test]
fn a_client_that_leaves_mid_stream_is_recorded_client_closed_with_the_tokens_relayed() {
    let sent = Arc::new(AtomicUsize::new(0));
    let s2 = sent.clone();
    let up = Hostile::start(move |_, _, s| {
        s.write_all(SSE_HEAD).unwrap();
        for i in 0..20_000 {
            if s.write_all(&chunk(&event(&format!("tok {i} "), "\n"))).is_err() {
                return After::Close;
            }
            s2.store(i + 1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(1));
        }
        After::Close
    });
    let gw = AdminGateway::start(&basic_config(&up.url, "workers = 1"));
    let mut c = Conn::open(gw.addr);
    c.send(&chat(STREAM));
    let (status, _) = c.head();
    assert_eq!(status, 200);
    let mut seen = 0;
    while seen < 5 {
        let chunk = c.chunk().expect("an event");
        seen += String::from_utf8_lossy(&chunk).matches("\"content\":\"tok ").count();
    }
    drop(c);
    assert!(eventually(Duration::from_secs(5), || up.conns() == 1 && sent.load(Ordering::SeqCst) < 20_000));
    gw.wait_usage_written(1);
    let row: (u16, String, i64) = rusqlite::Connection::open(&gw.db_path)
        .unwrap()
        .query_row("SELECT status, outcome, completion_tokens FROM request_log", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    let upstream_sent = sent.load(Ordering::SeqCst) as i64;
    assert_eq!((row.0, row.1.as_str()), (200, "client_closed"), "{row:?}");
    assert!(
        row.2 >= seen as i64 && row.2 <= upstream_sent,
        "{row:?}: the client read {seen}, the upstream sent {upstream_sent}"
    );
}

// ---- the receive ring comes back whole ----

/// The gateway as a process whose stderr lines are all kept, to count them.
struct Logged {
    child: std::process::Child,
    lines: Arc<std::sync::Mutex<Vec<String>>>,
    addr: std::net::SocketAddr,
}

impl Logged {
    fn start(config: &std::path::Path, ring: &str) -> Logged {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("SWITCHBOARD_URING_RECV", ring)
            .env("SWITCHBOARD_LOG", "info,switchboard_dataplane::upstream::multishot=debug")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let lines: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let l2 = lines.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                l2.lock().unwrap().push(line);
            }
        });
        let marker = "data plane listening on ";
        assert!(
            eventually(Duration::from_secs(30), || lines.lock().unwrap().iter().any(|l| l.contains(marker))),
            "the gateway starts"
        );
        let addr = {
            let all = lines.lock().unwrap();
            let line = all.iter().find(|l| l.contains(marker)).unwrap();
            line.split(marker).nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap()
        };
        Logged { child, lines, addr }
    }

    fn count(&self, marker: &str) -> usize {
        self.lines.lock().unwrap().iter().filter(|l| l.contains(marker)).count()
    }

    fn uring(&self) -> bool {
        self.count("driver=\"io_uring\"") > 0
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client that never reads a fast stream holds the ring's buffers (4 of
/// 4 KiB here) until `write_timeout_ms` cuts it: then they come back. The
/// streams after it read through the ring again (no fallback to plain reads,
/// which an empty ring would force at once), byte-exact, and so does a
/// stream behind a second such client.
#[test]
fn ring_buffers_held_for_a_client_that_stopped_reading_come_back_when_it_is_cut() {
    let small = events(6, "\n");
    let s2 = small.clone();
    let up = Hostile::start(move |_, body, s| {
        s.write_all(SSE_HEAD).unwrap();
        if body.windows(3).any(|w| w == b"hog") {
            for i in 0..100_000 {
                if s.write_all(&chunk(&event(&format!("{i} {}", "h".repeat(3000)), "\n"))).is_err() {
                    return After::Close;
                }
            }
            return After::Close;
        }
        // Apart, so that each is its own arrival (a ring buffer each).
        for e in &s2 {
            s.write_all(&chunk(e)).unwrap();
            std::thread::sleep(Duration::from_millis(3));
        }
        s.write_all(b"0\r\n\r\n").unwrap();
        After::KeepAlive
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sb.toml");
    std::fs::write(&path, basic_config(&up.url, "workers = 1\nwrite_timeout_ms = 400")).unwrap();
    let gw = Logged::start(&path, "4x4096");
    let fallback = "multishot receive ended";
    for round in 0..2 {
        let hog = TcpStream::connect(gw.addr).unwrap();
        hog.set_nodelay(true).unwrap();
        (&hog).write_all(&chat(r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hog"}]}"#)).unwrap();
        // The hog's relay is cut once a write to it waits past 400 ms.
        let mut probe = Conn::open(gw.addr);
        probe.set_timeout(Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(1500));
        if gw.uring() {
            assert!(gw.count(fallback) > round, "round {round}: the hog ran the ring dry");
        }
        let before = gw.count(fallback);
        for k in 0..3 {
            probe.send(&chat(STREAM));
            assert_eq!(stream_body(&mut probe), (200, small.concat()), "round {round}, stream {k}");
        }
        assert_eq!(gw.count(fallback), before, "round {round}: the streams after the hog read through the ring");
        drop(hog);
    }
}
