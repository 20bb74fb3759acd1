//! What each request looks like: body size, unique prompts, stream mix, keys,
//! models, and the share that must fail.

use std::fmt::Write;

#[derive(Debug, Clone)]
pub struct Workload {
    /// Request path, e.g. `/v1/chat/completions`.
    pub path: String,
    /// Approximate request body size in bytes.
    pub prompt_bytes: usize,
    /// Share of requests that stream, 0.0..=1.0.
    pub stream_ratio: f64,
    /// Ask for the usage chunk on streams.
    pub include_usage: bool,
    /// Share of requests that carry a mock fault and must fail, 0.0..=1.0.
    pub fail_ratio: f64,
    pub keys: Vec<String>,
    pub models: Vec<String>,
    /// Raw JSON object merged into each body as `"mock"` (steers the mock upstream).
    pub mock: Option<String>,
    /// Make every prompt unique, so no cache can answer.
    pub unique: bool,
}

/// One request to send.
pub struct Planned {
    pub stream: bool,
    pub must_fail: bool,
    pub key_index: usize,
    pub body: Vec<u8>,
}

/// Deterministic pseudo-random stream (splitmix64): reproducible runs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const FILLER: &str = "The quick brown fox jumps over the lazy dog while the gateway relays every byte. ";

impl Workload {
    /// Plan request number `seq` (unique across the run).
    pub fn plan(&self, seq: u64, rng: &mut Rng) -> Planned {
        let stream = rng.unit() < self.stream_ratio;
        let must_fail = rng.unit() < self.fail_ratio;
        let key_index = (rng.next_u64() % self.keys.len().max(1) as u64) as usize;
        let model = &self.models[(rng.next_u64() % self.models.len().max(1) as u64) as usize];
        let mock = match (must_fail, &self.mock) {
            (true, Some(m)) if m.trim_start().starts_with('{') => {
                // Merge the fault into the configured mock object.
                let inner = m.trim().trim_start_matches('{');
                let sep = if inner.trim_start().starts_with('}') { "" } else { "," };
                Some(format!("{{\"status\":500{sep}{inner}"))
            }
            (true, _) => Some("{\"status\":500}".to_string()),
            (false, m) => m.clone(),
        };
        let mut tail = String::from("\"}]");
        // Anthropic's Messages API needs `max_tokens`, and has no `stream_options`.
        let messages_api = self.path.ends_with("/messages");
        if messages_api {
            tail.push_str(",\"max_tokens\":1024");
        }
        if stream {
            tail.push_str(",\"stream\":true");
            if self.include_usage && !messages_api {
                tail.push_str(",\"stream_options\":{\"include_usage\":true}");
            }
        }
        if let Some(m) = mock {
            tail.push_str(",\"mock\":");
            tail.push_str(&m);
        }
        tail.push('}');
        let mut body = String::with_capacity(self.prompt_bytes.max(256) + tail.len());
        body.push_str("{\"model\":");
        body.push_str(&serde_json::to_string(model).unwrap_or_else(|_| "\"\"".into()));
        body.push_str(",\"messages\":[{\"role\":\"user\",\"content\":\"");
        if self.unique {
            let _ = write!(body, "request {seq:016x}: ");
        }
        // Pad the prompt so the whole body is `prompt_bytes` long (when it can be).
        let target = self.prompt_bytes.saturating_sub(tail.len());
        while body.len() < target {
            let need = target - body.len();
            body.push_str(&FILLER[..need.min(FILLER.len())]);
        }
        body.push_str(&tail);
        Planned { stream, must_fail, key_index, body: body.into_bytes() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w() -> Workload {
        Workload {
            path: "/v1/chat/completions".into(),
            prompt_bytes: 1024,
            stream_ratio: 0.5,
            include_usage: true,
            fail_ratio: 0.1,
            keys: vec!["a".into(), "b".into()],
            models: vec!["m1".into(), "m2".into()],
            mock: Some("{\"tokens\":4}".into()),
            unique: true,
        }
    }

    #[test]
    fn bodies_are_valid_json_of_the_asked_size_and_unique() {
        let wl = w();
        let mut rng = Rng::new(1);
        let mut seen = std::collections::HashSet::new();
        let (mut streams, mut fails) = (0, 0);
        for seq in 0..2000 {
            let p = wl.plan(seq, &mut rng);
            let v: serde_json::Value = serde_json::from_slice(&p.body).unwrap();
            assert_eq!(p.body.len(), 1024);
            assert_eq!(v["stream"].as_bool().unwrap_or(false), p.stream);
            if p.must_fail {
                assert_eq!(v["mock"]["status"], 500);
                fails += 1;
            }
            assert_eq!(v["mock"]["tokens"], 4);
            streams += p.stream as u32;
            assert!(seen.insert(v["messages"][0]["content"].as_str().unwrap().to_string()));
        }
        assert!((900..1100).contains(&streams), "{streams}");
        assert!((150..250).contains(&fails), "{fails}");
    }
}
