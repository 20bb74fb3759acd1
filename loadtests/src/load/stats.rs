//! What a run records, per target: latency histograms (microseconds), token
//! timing, and errors by kind.

use hdrhistogram::Histogram;
use std::collections::BTreeMap;

pub const MAX_US: u64 = 3_600_000_000;

fn hist() -> Histogram<u64> {
    // 3 significant digits from 1 us to an hour: constant, valid bounds.
    Histogram::new_with_bounds(1, MAX_US, 3).expect("constant histogram bounds are valid")
}

#[derive(Clone)]
pub struct Stats {
    /// From the intended send time to the last byte.
    pub total: Histogram<u64>,
    /// From the intended send time to the first content token (streams).
    pub ttft: Histogram<u64>,
    /// Between consecutive content tokens of a stream.
    pub gap: Histogram<u64>,
    /// Tokens per second of each stream, first token to last.
    pub tps: Histogram<u64>,
    pub ok: u64,
    pub expected_failures: u64,
    pub errors: BTreeMap<String, u64>,
    pub streams: u64,
    pub tokens: u64,
    /// Tokens the upstream reported (usage) but that never arrived.
    pub lost_tokens: u64,
    /// Reads that carried two or more content tokens at once.
    pub batched_reads: u64,
    pub bytes_received: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            total: hist(),
            ttft: hist(),
            gap: hist(),
            tps: hist(),
            ok: 0,
            expected_failures: 0,
            errors: BTreeMap::new(),
            streams: 0,
            tokens: 0,
            lost_tokens: 0,
            batched_reads: 0,
            bytes_received: 0,
        }
    }
}

/// What one request came to; folded into [`Stats`] by [`Stats::add`]. Reused
/// from request to request (no histogram per request).
#[derive(Default)]
pub struct Sample {
    pub ok: bool,
    pub expected_failure: bool,
    pub error: Option<String>,
    pub total_us: Option<u64>,
    pub ttft_us: Option<u64>,
    pub gaps_us: Vec<u64>,
    pub tps: Option<u64>,
    pub stream: bool,
    pub tokens: u64,
    pub lost_tokens: u64,
    pub batched_reads: u64,
    pub bytes: u64,
}

impl Sample {
    pub fn reset(&mut self) {
        let mut gaps = std::mem::take(&mut self.gaps_us);
        gaps.clear();
        *self = Sample { gaps_us: gaps, ..Sample::default() };
    }

    pub fn fail(&mut self, kind: impl Into<String>) {
        self.error = Some(kind.into());
    }
}

pub fn record(h: &mut Histogram<u64>, us: u64) {
    let _ = h.record(us.clamp(1, MAX_US));
}

impl Stats {
    pub fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_insert(0) += 1;
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn completed(&self) -> u64 {
        self.ok + self.expected_failures + self.error_count()
    }

    pub fn add(&mut self, s: &Sample) {
        if let Some(e) = &s.error {
            self.error(e.clone());
        }
        self.ok += s.ok as u64;
        self.expected_failures += s.expected_failure as u64;
        for (h, v) in [(&mut self.total, s.total_us), (&mut self.ttft, s.ttft_us), (&mut self.tps, s.tps)] {
            if let Some(v) = v {
                record(h, v);
            }
        }
        for g in &s.gaps_us {
            record(&mut self.gap, *g);
        }
        self.streams += (s.stream && s.ok) as u64;
        self.tokens += s.tokens;
        self.lost_tokens += s.lost_tokens;
        self.batched_reads += s.batched_reads;
        self.bytes_received += s.bytes;
    }

    pub fn merge(&mut self, o: &Stats) {
        let _ = self.total.add(&o.total);
        let _ = self.ttft.add(&o.ttft);
        let _ = self.gap.add(&o.gap);
        let _ = self.tps.add(&o.tps);
        self.ok += o.ok;
        self.expected_failures += o.expected_failures;
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_insert(0) += v;
        }
        self.streams += o.streams;
        self.tokens += o.tokens;
        self.lost_tokens += o.lost_tokens;
        self.batched_reads += o.batched_reads;
        self.bytes_received += o.bytes_received;
    }
}
