//! Hold N streams open against one endpoint and measure a window of them:
//! the client of `loadtests/stream-capacity.sh` (`stream-hold`).
//!
//! Built to stay cheap with 10,000 streams on one core, so that what gives
//! out first is the system under test and not this: one task and one 4 KiB
//! read buffer per stream; one `recv` per arrival and one clock read per
//! `recv`; no timer per read (a stream that stops moving is found by a sweep,
//! twice a second); chunked framing decoded and SSE events split in place;
//! every token timed into a histogram as it lands (nothing kept per token);
//! the request bytes built once and shared by every stream.
//!
//! Streams start at a set rate (a ramp, so connects do not come in a burst
//! and the streams' token times spread over the interval); each one that
//! ends is reopened at once on the same keep-alive connection, so N stay
//! open. Only what arrives inside the window counts. At the window's two ends
//! the CPU time (and run-queue wait) of named processes and the busy share of
//! named cores are read from /proc.

use super::cpu::{core_ticks, run_and_wait_ns, CoreTicks};
use super::stats::{record, MAX_US};
use hdrhistogram::Histogram;
use memchr::memmem::Finder;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};
use switchboard_dataplane::http::chunked::ChunkedDecoder;
use switchboard_dataplane::http::find_head_end;
use switchboard_dataplane::http::head::{parse_response, BodyFraming};

/// Read buffer per stream; an event is about 200 bytes.
const READ_BYTES: usize = 4096;
/// A response head or one SSE event larger than this ends the stream.
const HOLD_BYTES_MAX: usize = 64 * 1024;
/// A stream's last-activity slot when it is not waiting on anything.
const IDLE: u32 = u32::MAX;

#[derive(Debug, Clone)]
pub struct HoldConfig {
    pub addr: SocketAddr,
    /// Builds the HTTP request for a stream of so many tokens.
    pub request: RequestTemplate,
    pub streams: usize,
    /// Content tokens per stream (fewer arriving counts as lost). Stream i's
    /// first request asks for `tokens * (i + 1) / streams` instead, so the
    /// first streams end spread over one stream's length and the streams are
    /// reopened at an even rate from the start (a steady state at once).
    pub tokens: u32,
    /// Streams started per second until all N are.
    pub ramp_per_sec: f64,
    /// After the ramp, before the window.
    pub settle: Duration,
    pub window: Duration,
    /// A stream with nothing arriving for this long counts as stalled.
    pub stall: Duration,
    /// Processes whose CPU time to read at the window's ends, by name.
    pub pids: Vec<(String, u32)>,
    /// Cores whose busy share to read at the window's ends.
    pub cpus: Vec<usize>,
    /// Time each content token's transit: the mock stamps its write time
    /// into the event (`mock.stamp`), and the read that brings it is timed on
    /// the same clock.
    pub stamp: bool,
}

/// An HTTP request whose body names its token count: `head` is everything
/// before the Content-Length value, the body is `body_before`, the count,
/// `body_after`.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    pub head: String,
    pub body_before: String,
    pub body_after: String,
}

impl RequestTemplate {
    pub fn build(&self, tokens: u32) -> Vec<u8> {
        let count = tokens.to_string();
        let len = self.body_before.len() + count.len() + self.body_after.len();
        format!("{}{len}\r\n\r\n{}{count}{}", self.head, self.body_before, self.body_after).into_bytes()
    }
}

/// What the window saw.
#[derive(Clone)]
pub struct HoldStats {
    /// Between consecutive content tokens of a stream (the later one in the window).
    pub gap: Histogram<u64>,
    /// From sending the request to its first content token (in the window).
    pub ttft: Histogram<u64>,
    /// From the mock writing a content token to the read that brought it
    /// (`stamp`; through a proxy, the proxy's relay time plus two loopback
    /// hops, direct one).
    pub transit: Histogram<u64>,
    /// SSE events (role, tokens, finish, usage, `[DONE]`).
    pub events: u64,
    pub tokens: u64,
    pub reads: u64,
    /// Reads that carried two or more content tokens.
    pub batched_reads: u64,
    pub streams_started: u64,
    pub streams_done: u64,
    /// Tokens missing from streams that ended in the window.
    pub lost_tokens: u64,
    pub errors: BTreeMap<String, u64>,
}

impl Default for HoldStats {
    fn default() -> Self {
        let h = || Histogram::new_with_bounds(1, MAX_US, 3).expect("constant histogram bounds are valid");
        HoldStats {
            gap: h(),
            ttft: h(),
            transit: h(),
            events: 0,
            tokens: 0,
            reads: 0,
            batched_reads: 0,
            streams_started: 0,
            streams_done: 0,
            lost_tokens: 0,
            errors: BTreeMap::new(),
        }
    }
}

/// The result of [`run`].
pub struct HoldResult {
    pub stats: HoldStats,
    pub window: Duration,
    /// Streams open (response head received, not yet ended) at the window's start and end.
    pub open_at_start: usize,
    pub open_at_end: usize,
    /// Streams with nothing arriving for `stall` at the window's end.
    pub stalled: usize,
    /// Per named process: CPU and run-queue wait over the window, ns.
    pub cpu: Vec<(String, Option<(u64, u64)>)>,
    /// Per core: busy and niced shares of the window.
    pub cores: Vec<(usize, Option<(f64, f64)>)>,
}

struct Ctx {
    cfg: HoldConfig,
    request: &'static [u8],
    start: Instant,
    w0: Instant,
    w1: Instant,
    stats: RefCell<HoldStats>,
    open: Cell<usize>,
    /// Per stream: milliseconds after `start` of its last arrival (or send), or IDLE.
    last_ms: Vec<Cell<u32>>,
    blank: Finder<'static>,
    content: Finder<'static>,
    text: Finder<'static>,
    usage: Finder<'static>,
    stamp: Finder<'static>,
}

impl Ctx {
    fn in_window(&self, t: Instant) -> bool {
        t >= self.w0 && t < self.w1
    }

    fn error(&self, kind: &str) {
        if self.in_window(Instant::now()) {
            *self.stats.borrow_mut().errors.entry(kind.to_string()).or_insert(0) += 1;
        }
    }

    fn touch(&self, i: usize, t: Instant) {
        self.last_ms[i].set(t.saturating_duration_since(self.start).as_millis().min(u32::MAX as u128 - 1) as u32);
    }

    fn stalled(&self, now: Instant) -> usize {
        let now_ms = now.saturating_duration_since(self.start).as_millis() as u64;
        let limit = self.cfg.stall.as_millis() as u64;
        self.last_ms.iter().filter(|c| c.get() != IDLE && now_ms.saturating_sub(u64::from(c.get())) > limit).count()
    }
}

/// Run the ramp, the settle time and the window; returns when the window
/// ends (streams still open are abandoned with the runtime's thread, which
/// the caller ends by exiting).
pub fn run(cfg: HoldConfig) -> std::io::Result<HoldResult> {
    let ramp = Duration::from_secs_f64(cfg.streams as f64 / cfg.ramp_per_sec.max(1e-3));
    let start = Instant::now() + Duration::from_millis(50);
    let w0 = start + ramp + cfg.settle;
    let w1 = w0 + cfg.window;
    let (tx, rx) = std::sync::mpsc::channel();
    let thread_cfg = cfg.clone();
    std::thread::Builder::new().name("hold".into()).spawn(move || {
        let rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new().with_entries(4096).enable_timer().build();
        if let Ok(mut rt) = rt {
            rt.block_on(runtime_main(thread_cfg, start, w0, w1, tx));
        }
    })?;
    let sleep_until = |t: Instant| std::thread::sleep(t.saturating_duration_since(Instant::now()));
    let read = |cfg: &HoldConfig| {
        let cpu: Vec<Option<(u64, u64)>> = cfg.pids.iter().map(|(_, p)| run_and_wait_ns(*p)).collect();
        let cores: Vec<Option<CoreTicks>> = cfg.cpus.iter().map(|c| core_ticks(*c)).collect();
        (cpu, cores)
    };
    sleep_until(w0);
    let (cpu0, cores0) = read(&cfg);
    let t0 = Instant::now();
    sleep_until(w1);
    let (cpu1, cores1) = read(&cfg);
    let window = t0.elapsed();
    let deadline = Duration::from_secs(5);
    let (stats, open_at_start, open_at_end, stalled) = rx
        .recv_timeout(deadline)
        .map_err(|_| std::io::Error::other("the load thread did not report (stuck or failed to start)"))?;
    let cpu = cfg
        .pids
        .iter()
        .zip(cpu0.iter().zip(cpu1.iter()))
        .map(|((name, _), (a, b))| {
            let d = a.zip(*b).map(|(a, b)| (b.0.saturating_sub(a.0), b.1.saturating_sub(a.1)));
            (name.clone(), d)
        })
        .collect();
    let cores = cfg
        .cpus
        .iter()
        .zip(cores0.iter().zip(cores1.iter()))
        .map(|(c, (a, b))| (*c, a.zip(*b).map(|(a, b)| a.shares_until(&b))))
        .collect();
    Ok(HoldResult { stats, window, open_at_start, open_at_end, stalled, cpu, cores })
}

type Report = (HoldStats, usize, usize, usize);

async fn runtime_main(cfg: HoldConfig, start: Instant, w0: Instant, w1: Instant, tx: std::sync::mpsc::Sender<Report>) {
    // Built once, shared by every stream for the life of the process.
    let request: &'static [u8] = Box::leak(cfg.request.build(cfg.tokens).into_boxed_slice());
    let ctx = Rc::new(Ctx {
        request,
        start,
        w0,
        w1,
        stats: RefCell::new(HoldStats::default()),
        open: Cell::new(0),
        last_ms: (0..cfg.streams).map(|_| Cell::new(IDLE)).collect(),
        blank: Finder::new(b"\n\n"),
        content: Finder::new(b"\"content\":\""),
        text: Finder::new(b"\"text\":\""),
        usage: Finder::new(b"\"completion_tokens\":"),
        stamp: Finder::new(b"\"system_fingerprint\":\"t"),
        cfg,
    });
    for i in 0..ctx.cfg.streams {
        monoio::spawn(stream_task(i, ctx.clone()));
    }
    let until = |t: Instant| monoio::time::sleep_until(monoio::time::Instant::from_std(t));
    until(w0).await;
    let open_at_start = ctx.open.get();
    until(w1).await;
    let report = (ctx.stats.borrow().clone(), open_at_start, ctx.open.get(), ctx.stalled(Instant::now()));
    let _ = tx.send(report);
    // The streams end at their next arrival; give them a moment.
    until(w1 + Duration::from_secs(2)).await;
}

enum Next {
    /// Send the next request on this connection.
    Again,
    /// Open a new connection.
    Reconnect,
    /// The window is over.
    Stop,
}

async fn stream_task(i: usize, ctx: Rc<Ctx>) {
    let at = ctx.start + Duration::from_secs_f64(i as f64 / ctx.cfg.ramp_per_sec.max(1e-3));
    monoio::time::sleep_until(monoio::time::Instant::from_std(at)).await;
    let mut buf: Vec<u8> = Vec::with_capacity(READ_BYTES);
    let first_tokens = (u64::from(ctx.cfg.tokens) * (i as u64 + 1) / ctx.cfg.streams.max(1) as u64).max(1) as u32;
    let mut first = Some((ctx.cfg.request.build(first_tokens), first_tokens));
    'connect: while Instant::now() < ctx.w1 {
        let mut tcp = match TcpStream::connect_addr(ctx.cfg.addr).await {
            Ok(s) => s,
            Err(_) => {
                ctx.error("connect");
                monoio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        loop {
            let (request, tokens) = match &first {
                Some((r, t)) => (&r[..], *t),
                None => (ctx.request, ctx.cfg.tokens),
            };
            let next = one_stream(i, &ctx, &mut tcp, &mut buf, request, tokens).await;
            if !matches!(next, Next::Reconnect) {
                first = None;
            }
            match next {
                Next::Again => {}
                Next::Reconnect => {
                    // Do not spin on a refusing peer.
                    monoio::time::sleep(Duration::from_millis(10)).await;
                    continue 'connect;
                }
                Next::Stop => break 'connect,
            }
        }
    }
    ctx.last_ms[i].set(IDLE);
}

/// One `recv` into `buf`'s spare room (at least a quarter of [`READ_BYTES`]).
async fn read_more(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    use monoio::buf::IoBufMut;
    if buf.capacity() - buf.len() < READ_BYTES / 4 {
        buf.reserve(READ_BYTES);
    }
    let (len, cap) = (buf.len(), buf.capacity());
    let (res, slice) = tcp.read(std::mem::take(buf).slice_mut(len..cap)).await;
    *buf = slice.into_inner();
    res
}

/// Counts a stream open from its response head until it ends, however it ends.
struct Open<'a>(&'a Cell<usize>);

impl<'a> Open<'a> {
    fn new(c: &'a Cell<usize>) -> Self {
        c.set(c.get() + 1);
        Open(c)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// What one stream has seen so far.
#[derive(Default)]
struct StreamState {
    tokens: u32,
    last: Option<Instant>,
    done: bool,
    error: bool,
    usage: Option<u64>,
}

async fn one_stream(i: usize, ctx: &Ctx, tcp: &mut TcpStream, buf: &mut Vec<u8>, request: &[u8], tokens: u32) -> Next {
    let sent = Instant::now();
    if sent >= ctx.w1 {
        return Next::Stop;
    }
    ctx.touch(i, sent);
    // Owned by the write while it runs: the shared request as is, a first
    // request copied (once per stream).
    let res = if request.as_ptr() == ctx.request.as_ptr() {
        tcp.write_all(ctx.request).await.0
    } else {
        tcp.write_all(request.to_vec()).await.0
    };
    if res.is_err() {
        ctx.error("io_write");
        return Next::Reconnect;
    }
    buf.clear();
    let head = loop {
        if let Some(end) = find_head_end(buf, 0) {
            match parse_response(&buf[..end], false) {
                Ok(h) => break h,
                Err(_) => {
                    ctx.error("bad_response");
                    return Next::Reconnect;
                }
            }
        }
        if buf.len() > HOLD_BYTES_MAX {
            ctx.error("bad_response");
            return Next::Reconnect;
        }
        match read_more(tcp, buf).await {
            Ok(0) => {
                ctx.error("closed");
                return Next::Reconnect;
            }
            Ok(_) => {}
            Err(_) => {
                ctx.error("io_read");
                return Next::Reconnect;
            }
        }
        if Instant::now() >= ctx.w1 {
            return Next::Stop;
        }
    };
    let mut read_at = Instant::now();
    let mut read_ns = if ctx.cfg.stamp { crate::mock::monotonic_ns() } else { 0 };
    ctx.touch(i, read_at);
    if head.status != 200 {
        ctx.error(&format!("http_{}", head.status));
        return Next::Reconnect;
    }
    if head.framing != BodyFraming::Chunked || !head.event_stream {
        ctx.error("not_a_chunked_event_stream");
        return Next::Reconnect;
    }
    let open = Open::new(&ctx.open);
    if ctx.in_window(sent) {
        ctx.stats.borrow_mut().streams_started += 1;
    }
    let mut dec = ChunkedDecoder::new();
    // Decoded payload is moved down to buf[..wp]; raw bytes start at rp.
    let (mut rp, mut wp) = (head.head_len, 0usize);
    let mut st = StreamState::default();
    loop {
        let end = buf.len();
        let finished = match dec.decode(buf, &mut rp, end, &mut wp) {
            Ok(f) => f,
            Err(_) => {
                ctx.error("bad_chunking");
                return Next::Reconnect;
            }
        };
        let in_window = ctx.in_window(read_at);
        let mut consumed = 0;
        let mut tokens_now = 0u32;
        while let Some(k) = ctx.blank.find(&buf[consumed..wp]) {
            let at = (read_at, read_ns);
            tokens_now += event(ctx, &buf[consumed..consumed + k], &mut st, sent, at, in_window);
            consumed += k + 2;
        }
        if in_window {
            let mut s = ctx.stats.borrow_mut();
            s.reads += 1;
            s.batched_reads += u64::from(tokens_now >= 2);
        }
        // Keep the unfinished event and any undecoded bytes, at the front.
        let pending = wp - consumed;
        buf.copy_within(consumed..wp, 0);
        let raw = end - rp;
        buf.copy_within(rp..end, pending);
        buf.truncate(pending + raw);
        (rp, wp) = (pending, pending);
        if finished {
            drop(open);
            return stream_end(ctx, &st, tokens, read_at, head.keep_alive && raw == 0);
        }
        if buf.len() > HOLD_BYTES_MAX {
            ctx.error("event_too_large");
            return Next::Reconnect;
        }
        match read_more(tcp, buf).await {
            Ok(0) => {
                ctx.error("stream_truncated");
                return Next::Reconnect;
            }
            Ok(_) => {}
            Err(_) => {
                ctx.error("io_read");
                return Next::Reconnect;
            }
        }
        read_at = Instant::now();
        if ctx.cfg.stamp {
            read_ns = crate::mock::monotonic_ns();
        }
        if read_at >= ctx.w1 {
            // Still open when the window closed: counted so at its end.
            std::mem::forget(open);
            return Next::Stop;
        }
        ctx.touch(i, read_at);
    }
}

/// One SSE event (without its blank line), read at `at` (and at that many
/// ns of CLOCK_MONOTONIC); returns 1 for a content token.
fn event(ctx: &Ctx, ev: &[u8], st: &mut StreamState, sent: Instant, at: (Instant, u64), in_window: bool) -> u32 {
    let (at, at_ns) = at;
    let Some(data) = ev.strip_prefix(b"data: ") else { return 0 };
    if in_window {
        ctx.stats.borrow_mut().events += 1;
    }
    if data.starts_with(b"[DONE]") {
        st.done = true;
        return 0;
    }
    if data.starts_with(b"{\"error\"") {
        st.error = true;
        return 0;
    }
    let marker = ctx.content.find(data).map(|i| i + ctx.content.needle().len());
    let marker = marker.or_else(|| ctx.text.find(data).map(|i| i + ctx.text.needle().len()));
    if marker.is_some_and(|m| data.get(m).is_some_and(|&c| c != b'"')) {
        st.tokens = st.tokens.saturating_add(1);
        if in_window {
            let mut s = ctx.stats.borrow_mut();
            s.tokens += 1;
            match st.last {
                Some(prev) => record(&mut s.gap, at.saturating_duration_since(prev).as_micros() as u64),
                None => record(&mut s.ttft, at.saturating_duration_since(sent).as_micros() as u64),
            }
            if ctx.cfg.stamp {
                let stamp = ctx.stamp.find(data).and_then(|i| stamp_ns(&data[i + ctx.stamp.needle().len()..]));
                match stamp {
                    Some(t) => record(&mut s.transit, at_ns.saturating_sub(t) / 1000),
                    None => {
                        drop(s);
                        ctx.error("no_stamp");
                    }
                }
            }
        }
        st.last = Some(at);
        return 1;
    }
    if let Some(i) = ctx.usage.find(data) {
        st.usage = number(&data[i + ctx.usage.needle().len()..]);
    }
    0
}

fn stream_end(ctx: &Ctx, st: &StreamState, tokens: u32, at: Instant, keep: bool) -> Next {
    if ctx.in_window(at) {
        let mut s = ctx.stats.borrow_mut();
        s.streams_done += 1;
        s.lost_tokens += u64::from(tokens.saturating_sub(st.tokens));
        drop(s);
        if st.error {
            ctx.error("stream_error_event");
        } else if !st.done {
            ctx.error("stream_no_done");
        } else if st.usage.is_some_and(|u| u != u64::from(st.tokens)) {
            ctx.error("usage_mismatch");
        }
    }
    if keep {
        Next::Again
    } else {
        Next::Reconnect
    }
}

/// The mock's stamp: exactly `STAMP_DIGITS` digits.
fn stamp_ns(s: &[u8]) -> Option<u64> {
    let digits = s.get(..crate::mock::STAMP_DIGITS)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The decimal number at the start of `s` (after spaces), if any.
fn number(s: &[u8]) -> Option<u64> {
    let s = &s[s.iter().take_while(|c| **c == b' ').count()..];
    let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    std::str::from_utf8(&s[..digits]).ok()?.parse().ok()
}

fn pct(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({"count": 0});
    }
    json!({
        "count": h.len(),
        "p50": h.value_at_quantile(0.5),
        "p90": h.value_at_quantile(0.9),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
    })
}

/// The result as JSON (times in microseconds, CPU in nanoseconds).
pub fn to_json(r: &HoldResult, streams: usize) -> Value {
    let s = &r.stats;
    let cpu: serde_json::Map<String, Value> = r
        .cpu
        .iter()
        .map(|(n, v)| (n.clone(), v.map_or(Value::Null, |(run, wait)| json!({"cpu_ns": run, "wait_ns": wait}))))
        .collect();
    let cores: serde_json::Map<String, Value> = r
        .cores
        .iter()
        .map(|(c, v)| (format!("cpu{c}"), v.map_or(Value::Null, |(busy, nice)| json!({"busy": busy, "nice": nice}))))
        .collect();
    json!({
        "streams": streams,
        "window_s": r.window.as_secs_f64(),
        "open_at_start": r.open_at_start,
        "open_at_end": r.open_at_end,
        "stalled": r.stalled,
        "events": s.events,
        "tokens": s.tokens,
        "reads": s.reads,
        "batched_reads": s.batched_reads,
        "streams_started": s.streams_started,
        "streams_done": s.streams_done,
        "lost_tokens": s.lost_tokens,
        "errors": s.errors,
        "gap_us": pct(&s.gap),
        "ttft_us": pct(&s.ttft),
        "transit_us": pct(&s.transit),
        "cpu": cpu,
        "cores": cores,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_request_of_any_token_count_is_whole() {
        let t = RequestTemplate {
            head: "POST /v1/chat/completions HTTP/1.1\r\nhost: h\r\ncontent-length: ".into(),
            body_before: r#"{"mock":{"interval_ms":33,"tokens":"#.into(),
            body_after: "}}".into(),
        };
        for n in [1, 9, 10, 300, u32::MAX] {
            let req = t.build(n);
            let at = find_head_end(&req, 0).unwrap();
            let head = String::from_utf8_lossy(&req[..at]).into_owned();
            let body: serde_json::Value = serde_json::from_slice(&req[at..]).unwrap();
            assert_eq!(body["mock"]["tokens"], n);
            assert!(head.ends_with(&format!("content-length: {}\r\n\r\n", req.len() - at)), "{head}");
        }
    }

    /// Streams held against the real mock: every stream reopened as it ends,
    /// every token counted, nothing lost or failed, both histograms filled.
    #[test]
    fn holds_streams_against_the_mock_and_counts_what_arrives() {
        let mock = crate::MockUpstream::start(crate::MockConfig::default()).unwrap();
        let cfg = HoldConfig {
            addr: mock.addr,
            request: RequestTemplate {
                head: "POST /v1/chat/completions HTTP/1.1\r\nhost: mock\r\ncontent-type: application/json\r\ncontent-length: ".into(),
                body_before: r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[],"mock":{"stamp":true,"interval_ms":20,"tokens":"#.into(),
                body_after: "}}".into(),
            },
            streams: 8,
            tokens: 5,
            ramp_per_sec: 1000.0,
            settle: Duration::from_millis(200),
            window: Duration::from_millis(1000),
            stall: Duration::from_secs(5),
            pids: vec![("self".into(), std::process::id())],
            cpus: vec![0],
            stamp: true,
        };
        let r = run(cfg).unwrap();
        let s = &r.stats;
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        assert_eq!(s.lost_tokens, 0);
        assert_eq!(r.stalled, 0);
        assert!(s.streams_done >= 8, "{} streams ended in the window", s.streams_done);
        assert!(s.tokens >= s.streams_done * 4, "{} tokens, {} streams", s.tokens, s.streams_done);
        // Every stream: a role event, its tokens, a finish, a usage and [DONE].
        assert!(s.events > s.tokens);
        assert!(!s.gap.is_empty() && !s.ttft.is_empty());
        // Every content token in the window carried the mock's stamp (a
        // missing one counts as a `no_stamp` error above), and its transit
        // is timed: on loopback, well under the 20 ms between tokens.
        assert_eq!(s.transit.len(), s.tokens);
        assert!(s.transit.value_at_quantile(0.5) < 20_000, "{}", s.transit.value_at_quantile(0.5));
        assert!(r.open_at_start <= 8 && r.open_at_end <= 8);
        let (run_ns, _) = r.cpu[0].1.unwrap();
        assert!(run_ns > 0);
        let json = to_json(&r, 8);
        assert_eq!(json["tokens"], s.tokens);
        assert!(json["gap_us"]["p99"].as_u64().is_some());
        assert!(json["transit_us"]["p99"].as_u64().is_some());
        assert!(json["cores"]["cpu0"]["busy"].as_f64().is_some());
    }

    #[test]
    fn numbers_after_a_marker() {
        assert_eq!(number(b" 42,\"x\":1"), Some(42));
        assert_eq!(number(b"7}"), Some(7));
        assert_eq!(number(b"x"), None);
        assert_eq!(number(b"99999999999999999999999"), None);
    }
}
