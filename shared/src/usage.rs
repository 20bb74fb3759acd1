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
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
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
        self.clamped
    }
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
    fn outcome_names_round_trip() {
        for o in [Outcome::Ok, Outcome::Error, Outcome::ClientClosed, Outcome::UpstreamCut] {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
    }
}
