//! Body filter "hold": a whole (non-streaming) chat or completion answer is
//! held until it is complete, up to [`HOLD_MAX_BYTES`], so that an answer
//! without `usage` can be given the gateway's estimate before it goes out
//! (OpenAI always reports usage). A larger answer goes out as it comes.

use crate::usage::scan::{token_counts, UsageScan};

/// The most of a whole generation held back to add the usage it lacks; a
/// larger answer goes out as it comes, as the upstream wrote it.
pub const HOLD_MAX_BYTES: usize = 256 * 1024;

pub struct Hold {
    buf: Vec<u8>,
    limit: usize,
}

impl Default for Hold {
    fn default() -> Self {
        Hold::with_limit(HOLD_MAX_BYTES)
    }
}

/// What the hold makes of the bytes fed to it.
pub enum Held {
    /// Kept back; nothing to send yet.
    Holding,
    /// The body is complete: all of it.
    Whole(Vec<u8>),
    /// Past the bound: everything so far, to go out as it came (the hold ends).
    Overflow(Vec<u8>),
}

impl Hold {
    /// A hold of at most `limit` bytes.
    pub fn with_limit(limit: usize) -> Hold {
        Hold { buf: Vec::new(), limit }
    }

    pub fn feed(&mut self, payload: &[u8], done: bool) -> Held {
        self.buf.extend_from_slice(payload);
        if done {
            Held::Whole(std::mem::take(&mut self.buf))
        } else if self.buf.len() > self.limit {
            Held::Overflow(std::mem::take(&mut self.buf))
        } else {
            Held::Holding
        }
    }
}

/// A whole generation's body, with the gateway's usage estimate added when
/// the upstream reported none: `usage` with prompt, completion and total
/// tokens, and `x_switchboard_estimated: true`. A body that is not a JSON
/// object goes as it is.
pub(crate) fn with_owed_usage(body: Vec<u8>, reply: &UsageScan, request_body: &[u8]) -> Vec<u8> {
    if reply.reported() {
        return body;
    }
    let mut v = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) if v.is_object() => v,
        _ => return body,
    };
    let (prompt, completion, total, _) = token_counts(reply, request_body, false);
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "usage".into(),
            serde_json::json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}),
        );
        o.insert("x_switchboard_estimated".into(), serde_json::Value::Bool(true));
    }
    serde_json::to_vec(&v).unwrap_or(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_until_done_and_lets_go_past_the_bound() {
        let mut h = Hold::default();
        assert!(matches!(h.feed(b"{\"a\":", false), Held::Holding));
        match h.feed(b"1}", true) {
            Held::Whole(b) => assert_eq!(b, b"{\"a\":1}"),
            _ => panic!("not whole"),
        }
        let mut h = Hold::default();
        let big = vec![b' '; HOLD_MAX_BYTES];
        assert!(matches!(h.feed(&big, false), Held::Holding));
        match h.feed(b"x", false) {
            Held::Overflow(b) => assert_eq!(b.len(), HOLD_MAX_BYTES + 1),
            _ => panic!("not released"),
        }
    }

    #[test]
    fn owed_usage_is_added_only_when_missing() {
        let body = br#"{"choices":[{"message":{"content":"hello there"},"finish_reason":"stop"}]}"#.to_vec();
        let mut scan = UsageScan::default();
        scan.feed(&body);
        let out = with_owed_usage(body.clone(), &scan, br#"{"messages":[{"role":"user","content":"hi"}]}"#);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["x_switchboard_estimated"], true);
        assert!(v["usage"]["total_tokens"].as_u64().unwrap() > 0);

        let reported = br#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#.to_vec();
        let mut scan = UsageScan::default();
        scan.feed(&reported);
        assert_eq!(with_owed_usage(reported.clone(), &scan, b"{}"), reported);
        // Not a JSON object: as it is.
        let mut scan = UsageScan::default();
        scan.feed(b"[1]");
        assert_eq!(with_owed_usage(b"[1]".to_vec(), &scan, b"{}"), b"[1]");
    }
}
