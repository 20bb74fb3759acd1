//! The structured access log: one JSON line per request, written by the usage
//! collector thread (never a worker), buffered and flushed every 200 ms.
//! It names the key by id, never the key.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};
use switchboard_shared::usage::UsageRecord;

pub struct AccessLog {
    out: std::io::BufWriter<Box<dyn Write + Send>>,
    last_error_log: Option<Instant>,
}

#[derive(serde::Serialize)]
struct Line<'a> {
    ts_ms: u64,
    request_id: &'a str,
    org: &'a str,
    key_id: &'a str,
    model: &'a str,
    route: &'a str,
    target: &'a str,
    endpoint: &'a str,
    stream: bool,
    status: u16,
    outcome: &'a str,
    attempts: u32,
    prompt_tokens: u64,
    completion_tokens: u64,
    estimated: bool,
    latency_ms: f64,
    ttft_ms: f64,
    upstream_ms: f64,
    overhead_ms: f64,
}

impl AccessLog {
    /// `-` is standard error; anything else a file, appended to.
    pub fn open(path: &Path) -> std::io::Result<AccessLog> {
        let out: Box<dyn Write + Send> = if path == Path::new("-") {
            Box::new(std::io::stderr())
        } else {
            Box::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?)
        };
        Ok(AccessLog { out: std::io::BufWriter::with_capacity(64 * 1024, out), last_error_log: None })
    }

    pub fn write(&mut self, records: &[UsageRecord]) {
        for r in records {
            let ms = |us: u64| us as f64 / 1000.0;
            let line = Line {
                ts_ms: r.ts_ms,
                request_id: &r.request_id,
                org: &r.org,
                key_id: &r.key_id,
                model: &r.model,
                route: &r.route,
                target: &r.target,
                endpoint: &r.endpoint,
                stream: r.stream,
                status: r.status,
                outcome: r.outcome.as_str(),
                attempts: r.attempts,
                prompt_tokens: r.prompt_tokens,
                completion_tokens: r.completion_tokens,
                estimated: r.estimated,
                latency_ms: ms(r.latency_us),
                ttft_ms: ms(r.ttft_us),
                upstream_ms: ms(r.upstream_us),
                overhead_ms: ms(r.latency_us.saturating_sub(r.upstream_us)),
            };
            let result = serde_json::to_writer(&mut self.out, &line).map_err(std::io::Error::other);
            if let Err(e) = result.and_then(|()| self.out.write_all(b"\n")) {
                self.failed(&e);
            }
        }
    }

    pub fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            self.failed(&e);
        }
    }

    fn failed(&mut self, e: &std::io::Error) {
        let now = Instant::now();
        if self.last_error_log.is_none_or(|t| now.duration_since(t) > Duration::from_secs(10)) {
            self.last_error_log = Some(now);
            tracing::error!(error = %e, "cannot write the access log");
        }
    }
}
