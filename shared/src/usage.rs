//! Usage records: one per request that reached routing, made on the data
//! plane and accounted by the admin (SQLite). The same JSON travels from a
//! remote data plane to the admin in batches, and sits in the spill file.

use serde::{Deserialize, Serialize};

/// How a request ended, as the client saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The whole response reached the client (whatever its status).
    #[default]
    Ok,
    /// The gateway answered with an error (no target, every attempt failed, ...).
    Error,
    /// The client went away before the response ended.
    ClientClosed,
    /// The upstream failed after the response started (cut short).
    UpstreamCut,
    /// A stream ended (`[DONE]`) without any `finish_reason`: the generation
    /// was cut short upstream (e.g. interrupted), and the client was told so.
    UpstreamTruncated,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::ClientClosed => "client_closed",
            Outcome::UpstreamCut => "upstream_cut",
            Outcome::UpstreamTruncated => "upstream_truncated",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        Some(match s {
            "ok" => Outcome::Ok,
            "error" => Outcome::Error,
            "client_closed" => Outcome::ClientClosed,
            "upstream_cut" => Outcome::UpstreamCut,
            "upstream_truncated" => Outcome::UpstreamTruncated,
            _ => return None,
        })
    }
}

/// One request's usage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Unique per record (the data plane's own id, even when the client sent
    /// an `x-request-id`): accounting the same record twice is a no-op.
    pub uid: String,
    /// When the request started, Unix milliseconds.
    pub ts_ms: u64,
    /// The `x-request-id` the client saw.
    pub request_id: String,
    pub org: String,
    pub key_id: String,
    /// The model the client asked for.
    pub model: String,
    pub route: String,
    /// The provider (or node) that served it; empty when none did.
    pub target: String,
    /// The model name sent to the target.
    pub upstream_model: String,
    /// `chat.completions`, `completions` or `embeddings`.
    pub endpoint: String,
    pub stream: bool,
    /// The status the client got.
    pub status: u16,
    pub outcome: Outcome,
    /// Upstream attempts made (0: none could be tried).
    pub attempts: u32,
    pub cache_hit: bool,
    /// All prompt tokens (cache reads and writes included, OpenAI's way).
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// Of the prompt tokens: read from the provider's prompt cache.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_read_tokens: u64,
    /// Of the prompt tokens: written to the provider's prompt cache (Anthropic).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
    /// The client's session (`X-Claude-Code-Session-Id` or `X-Session-Id`),
    /// for grouping usage by session; empty when none was sent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub session: String,
    /// The token counts are the gateway's estimate (the upstream gave none).
    pub estimated: bool,
    /// Cost in nano-USD (1e-9 USD), from the target's price table.
    pub cost_nanos: u64,
    /// From the end of the request head to the end of the response.
    pub latency_us: u64,
    /// Time to the first token (streams) or to the response head; 0 when none.
    pub ttft_us: u64,
    /// Time spent waiting on upstreams (all attempts).
    pub upstream_us: u64,
    /// A count or time past its documented maximum ([`crate::limits`]) was
    /// clamped to it: the upstream or node reported nonsense.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clamped: bool,
    /// A failure was injected into this request (`x-switchboard-fault`, test
    /// keys only): its failed attempts say nothing about the targets.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub injected: bool,
}

impl UsageRecord {
    /// Clamp every count, cost and time to its documented maximum
    /// ([`crate::limits::MAX_TOKENS_PER_REQUEST`] and the rest), keep the
    /// total at least the sum of its parts' clamped values and at most the
    /// maximum, and mark the record when anything changed. Idempotent. Every
    /// record passes here where it is made and where it is accounted, so no
    /// value an upstream, a node or a remote data plane sends can overflow a
    /// sum or turn a stored integer into a float.
    pub fn sanitize(&mut self) -> bool {
        use crate::limits::{MAX_COST_NANOS_PER_REQUEST, MAX_LATENCY_US, MAX_TOKENS_PER_REQUEST, MAX_TS_MS};
        for (v, max) in [
            (&mut self.prompt_tokens, MAX_TOKENS_PER_REQUEST),
            (&mut self.completion_tokens, MAX_TOKENS_PER_REQUEST),
            (&mut self.total_tokens, MAX_TOKENS_PER_REQUEST),
            (&mut self.cache_read_tokens, MAX_TOKENS_PER_REQUEST),
            (&mut self.cache_write_tokens, MAX_TOKENS_PER_REQUEST),
            (&mut self.cost_nanos, MAX_COST_NANOS_PER_REQUEST),
            (&mut self.latency_us, MAX_LATENCY_US),
            (&mut self.ttft_us, MAX_LATENCY_US),
            (&mut self.upstream_us, MAX_LATENCY_US),
            (&mut self.ts_ms, MAX_TS_MS),
        ] {
            if *v > max {
                *v = max;
                self.clamped = true;
            }
        }
        // The cached parts are parts of the prompt.
        let cached = self.cache_read_tokens.saturating_add(self.cache_write_tokens);
        if cached > self.prompt_tokens {
            self.cache_write_tokens = self.prompt_tokens.saturating_sub(self.cache_read_tokens.min(self.prompt_tokens));
            self.cache_read_tokens = self.cache_read_tokens.min(self.prompt_tokens);
            self.clamped = true;
        }
        if self.session.len() > crate::limits::MAX_SESSION_ID_BYTES {
            let mut end = crate::limits::MAX_SESSION_ID_BYTES;
            while !self.session.is_char_boundary(end) {
                end -= 1;
            }
            self.session.truncate(end);
            self.clamped = true;
        }
        self.clamped
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A batch of records, as a remote data plane posts it to the admin.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageBatch {
    pub records: Vec<UsageRecord>,
}

/// Nano-USD for a price per million tokens: 1 USD/Mtok is 1,000 nano-USD a token.
pub fn cost_nanos(prompt_tokens: u64, completion_tokens: u64, prompt_per_mtok: f64, completion_per_mtok: f64) -> u64 {
    let nanos =
        prompt_tokens as f64 * prompt_per_mtok * 1_000.0 + completion_tokens as f64 * completion_per_mtok * 1_000.0;
    if nanos.is_finite() && nanos > 0.0 {
        // Saturates (`as` does) at the cap, never wraps.
        nanos.round().min(crate::limits::MAX_COST_NANOS_PER_REQUEST as f64) as u64
    } else {
        0
    }
}

/// Nano-USD for a request whose prompt was partly read from or written to
/// the provider's prompt cache: `tokens` = (all prompt tokens, completion,
/// cache reads, cache writes) — the reads and writes are part of the prompt
/// and priced at their own rate (`None`: the prompt price), the rest of the
/// prompt at the prompt price.
pub fn cost_nanos_cached(tokens: [u64; 4], prompt: f64, completion: f64, cache: (Option<f64>, Option<f64>)) -> u64 {
    let [all_prompt, completion_tokens, read, write] = tokens;
    let read = read.min(all_prompt);
    let write = write.min(all_prompt - read);
    let plain = all_prompt - read - write;
    let nanos = plain as f64 * prompt * 1_000.0
        + completion_tokens as f64 * completion * 1_000.0
        + read as f64 * cache.0.unwrap_or(prompt) * 1_000.0
        + write as f64 * cache.1.unwrap_or(prompt) * 1_000.0;
    if nanos.is_finite() && nanos > 0.0 {
        nanos.round().min(crate::limits::MAX_COST_NANOS_PER_REQUEST as f64) as u64
    } else {
        0
    }
}

/// Nano-USD as USD.
pub fn nanos_to_usd(nanos: i64) -> f64 {
    nanos as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_per_million_tokens() {
        // 1,000 prompt tokens at $2.50/M + 500 completion tokens at $10/M = $0.0075.
        assert_eq!(cost_nanos(1_000, 500, 2.5, 10.0), 7_500_000);
        assert_eq!(cost_nanos(1, 0, 0.0375, 0.0), 38);
        assert_eq!(cost_nanos(0, 0, 5.0, 5.0), 0);
        assert_eq!(cost_nanos(10, 10, f64::NAN, 1.0), 0);
        assert!((nanos_to_usd(7_500_000) - 0.0075).abs() < 1e-12);
    }

    #[test]
    fn absurd_counts_are_clamped_and_marked() {
        use crate::limits::*;
        let mut r =
            UsageRecord { prompt_tokens: 5_000_000_000_000_000_000, total_tokens: u64::MAX, ..Default::default() };
        assert!(r.sanitize());
        assert!(r.clamped);
        assert_eq!((r.prompt_tokens, r.total_tokens), (MAX_TOKENS_PER_REQUEST, MAX_TOKENS_PER_REQUEST));
        assert!(r.sanitize(), "still marked the second time");
        let mut fine = UsageRecord { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15, ..Default::default() };
        assert!(!fine.sanitize());
        assert_eq!(cost_nanos(u64::MAX, u64::MAX, 1e308, 1e308), 0);
        assert_eq!(cost_nanos(u64::MAX, 0, MAX_PRICE_PER_MTOK, 0.0), MAX_COST_NANOS_PER_REQUEST);
        let json = serde_json::to_string(&fine).unwrap();
        assert!(!json.contains("clamped"), "unmarked records keep their old shape");
    }

    #[test]
    fn cache_reads_and_writes_are_priced_at_their_own_rates() {
        // Claude Sonnet: $3/M prompt, $15/M output, $0.30/M cache read, $3.75/M cache write.
        let cache = (Some(0.3), Some(3.75));
        // 2121 prompt tokens = 21 plain + 2000 read + 100 written; 42 output.
        let nanos = cost_nanos_cached([2121, 42, 2000, 100], 3.0, 15.0, cache);
        assert_eq!(nanos, 21 * 3_000 + 42 * 15_000 + 2000 * 300 + 100 * 3_750);
        assert_eq!(cost_nanos_cached([2121, 42, 2000, 100], 3.0, 15.0, (None, None)), cost_nanos(2121, 42, 3.0, 15.0));
        assert_eq!(
            cost_nanos_cached([10, 0, 50, 50], 1.0, 1.0, (Some(0.0), Some(0.0))),
            0,
            "parts never exceed the prompt"
        );
        let mut r =
            UsageRecord { prompt_tokens: 10, cache_read_tokens: 8, cache_write_tokens: 8, ..Default::default() };
        assert!(r.sanitize());
        assert_eq!((r.cache_read_tokens, r.cache_write_tokens), (8, 2));
    }

    #[test]
    fn outcome_names_round_trip() {
        for o in [Outcome::Ok, Outcome::Error, Outcome::ClientClosed, Outcome::UpstreamCut] {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
    }
}
