//! The response cache: exact-match answers for identical requests, per route
//! (opt-in), with a TTL per route and one byte bound for all routes.
//!
//! The key is SHA-256 over the org, the route, the endpoint and the request
//! body with the fields that do not change the answer removed (`user`,
//! `stream`, `stream_options`) and object keys sorted at every level — so key
//! order and streaming do not matter. Only complete `200` answers to
//! non-streaming requests are stored (errors never); a streaming request that
//! hits gets the stored answer replayed as SSE.
//!
//! Storage is 16 shards, each an LRU (`hashlink`) under its own mutex, taken
//! only by requests on cache-enabled routes; an entry's bytes count against
//! the bound (body, key and bookkeeping), and inserting evicts the least
//! recently used entries of the shard until it fits — memory never passes the
//! bound.

use hashlink::LinkedHashMap;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub type Key = [u8; 32];

const SHARDS: usize = 16;
/// Bookkeeping per entry, counted against the bound with the body.
const ENTRY_OVERHEAD: usize = 160;

/// A stored answer.
pub struct Entry {
    /// The upstream's JSON body, as the client got it (its `usage` is what
    /// a hit accounts).
    pub body: Box<[u8]>,
    expires: Instant,
}

impl Entry {
    fn size(&self) -> usize {
        self.body.len() + ENTRY_OVERHEAD
    }
}

struct Shard {
    map: LinkedHashMap<Key, Arc<Entry>>,
    bytes: usize,
}

pub struct ResponseCache {
    shards: Vec<Mutex<Shard>>,
    shard_bytes: usize,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub bypasses: AtomicU64,
    pub evictions: AtomicU64,
}

impl ResponseCache {
    /// A cache of at most `max_bytes` (0: nothing is ever stored).
    pub fn new(max_bytes: u64) -> ResponseCache {
        ResponseCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard { map: LinkedHashMap::new(), bytes: 0 })).collect(),
            shard_bytes: (max_bytes as usize) / SHARDS,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            bypasses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: &Key) -> &Mutex<Shard> {
        &self.shards[key[0] as usize % SHARDS]
    }

    /// A fresh entry for `key` (an expired one is dropped).
    pub fn get(&self, key: &Key) -> Option<Arc<Entry>> {
        let mut s = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let fresh = s.map.get(key).map(|e| e.expires > now)?;
        if !fresh {
            if let Some(e) = s.map.remove(key) {
                s.bytes -= e.size();
            }
            return None;
        }
        s.map.to_back(key);
        s.map.get(key).cloned()
    }

    /// Store an answer for `ttl`. Too large for the bound: not stored.
    pub fn put(&self, key: Key, body: &[u8], ttl: Duration) {
        let entry = Arc::new(Entry { body: body.into(), expires: Instant::now() + ttl });
        let size = entry.size();
        if size > self.shard_bytes {
            return;
        }
        let mut s = self.shard(&key).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = s.map.remove(&key) {
            s.bytes -= old.size();
        }
        while s.bytes + size > self.shard_bytes {
            match s.map.pop_front() {
                Some((_, old)) => {
                    s.bytes -= old.size();
                    self.evictions.fetch_add(1, Ordering::Relaxed);
                }
                None => break,
            }
        }
        s.bytes += size;
        s.map.insert(key, entry);
    }

    /// The largest body worth keeping for an entry.
    pub fn max_entry(&self) -> usize {
        self.shard_bytes.saturating_sub(ENTRY_OVERHEAD).min(4 * 1024 * 1024)
    }

    /// (entries, bytes) now.
    pub fn size(&self) -> (u64, u64) {
        self.shards.iter().fold((0, 0), |(n, b), s| {
            let s = s.lock().unwrap_or_else(|p| p.into_inner());
            (n + s.map.len() as u64, b + s.bytes as u64)
        })
    }
}

/// The cache key of a request, or `None` if the body is not a JSON object.
pub fn key(org: &str, route: &str, endpoint: &str, body: &[u8]) -> Option<Key> {
    let mut v: Value = serde_json::from_slice(body).ok()?;
    let obj = v.as_object_mut()?;
    for field in ["user", "stream", "stream_options"] {
        obj.remove(field);
    }
    let mut h = HashWriter(Sha256::new());
    for part in [org, route, endpoint] {
        h.0.update((part.len() as u64).to_le_bytes());
        h.0.update(part.as_bytes());
    }
    canonical(&v, &mut h).ok()?;
    Some(h.0.finalize().into())
}

struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// JSON with object keys sorted at every level (whatever the map's own order).
fn canonical(v: &Value, w: &mut impl Write) -> std::io::Result<()> {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            w.write_all(b"{")?;
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    w.write_all(b",")?;
                }
                serde_json::to_writer(&mut *w, k)?;
                w.write_all(b":")?;
                if let Some(x) = m.get(k) {
                    canonical(x, w)?;
                }
            }
            w.write_all(b"}")
        }
        Value::Array(a) => {
            w.write_all(b"[")?;
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    w.write_all(b",")?;
                }
                canonical(x, w)?;
            }
            w.write_all(b"]")
        }
        other => serde_json::to_writer(w, other).map_err(std::io::Error::other),
    }
}

/// Replay a stored `chat.completion` / `text_completion` as the SSE stream an
/// upstream would have sent: the role, the content in one chunk, the finish
/// reason, the usage chunk if asked, `[DONE]`.
pub fn replay_as_sse(stored: &[u8], include_usage: bool) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_slice(stored).ok()?;
    let chat = v.get("object").and_then(Value::as_str) == Some("chat.completion");
    let id = v.get("id").cloned().unwrap_or(Value::Null);
    let created = v.get("created").cloned().unwrap_or(Value::Null);
    let model = v.get("model").cloned().unwrap_or(Value::Null);
    let object = if chat { "chat.completion.chunk" } else { "text_completion" };
    let mut out = Vec::new();
    let mut event = |choices: Value, usage: Option<&Value>| {
        let mut chunk =
            serde_json::json!({"id": id, "object": object, "created": created, "model": model, "choices": choices});
        if let Some(u) = usage {
            chunk["usage"] = u.clone();
        }
        out.extend_from_slice(b"data: ");
        let _ = serde_json::to_writer(&mut out, &chunk);
        out.extend_from_slice(b"\n\n");
    };
    for (i, choice) in v.get("choices")?.as_array()?.iter().enumerate() {
        let index = choice.get("index").cloned().unwrap_or(Value::from(i));
        let finish = choice.get("finish_reason").cloned().unwrap_or(Value::Null);
        if chat {
            let msg = choice.get("message")?;
            event(
                serde_json::json!([{"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
                None,
            );
            let mut delta = serde_json::Map::new();
            for field in ["content", "tool_calls", "refusal"] {
                if let Some(x) = msg.get(field).filter(|x| !x.is_null()) {
                    delta.insert(field.to_string(), x.clone());
                }
            }
            if let Some(Value::Array(calls)) = delta.get_mut("tool_calls") {
                for (j, c) in calls.iter_mut().enumerate() {
                    c["index"] = Value::from(j);
                }
            }
            event(serde_json::json!([{"index": index, "delta": delta, "finish_reason": null}]), None);
            event(serde_json::json!([{"index": index, "delta": {}, "finish_reason": finish}]), None);
        } else {
            let text = choice.get("text").cloned().unwrap_or(Value::from(""));
            event(serde_json::json!([{"index": index, "text": text, "finish_reason": null}]), None);
            event(serde_json::json!([{"index": index, "text": "", "finish_reason": finish}]), None);
        }
    }
    if include_usage {
        if let Some(u) = v.get("usage") {
            event(serde_json::json!([]), Some(u));
        }
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_ignores_order_user_and_streaming() {
        let a = key("o", "m", "chat", br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0}"#);
        let b = key(
            "o",
            "m",
            "chat",
            br#"{"temperature":0,"stream":true,"user":"x","stream_options":{"include_usage":true},"messages":[{"content":"hi","role":"user"}],"model":"m"}"#,
        );
        assert_eq!(a, b);
        assert_ne!(
            a,
            key(
                "other-org",
                "m",
                "chat",
                br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0}"#
            )
        );
        assert_ne!(
            a,
            key("o", "m", "chat", br#"{"model":"m","messages":[{"role":"user","content":"hi!"}],"temperature":0}"#)
        );
        assert_eq!(key("o", "m", "chat", b"[1]"), None);
    }

    #[test]
    fn the_byte_bound_holds_and_the_least_recent_goes() {
        let c = ResponseCache::new(16 * 1024);
        let ttl = Duration::from_secs(60);
        let body = vec![b'x'; 200];
        let mut keys = Vec::new();
        for i in 0..200u8 {
            let mut k = [0u8; 32];
            k[0] = 0; // one shard
            k[1] = i;
            c.put(k, &body, ttl);
            keys.push(k);
            assert!(c.size().1 <= 16 * 1024);
        }
        assert!(c.get(&keys[199]).is_some());
        assert!(c.get(&keys[0]).is_none(), "evicted");
        assert!(c.evictions.load(Ordering::Relaxed) > 0);
        let mut k = [0u8; 32];
        k[1] = 255;
        c.put(k, &vec![b'y'; 4096], Duration::from_millis(0));
        assert!(c.get(&k).is_none(), "expired at once, or too large");
    }

    #[test]
    fn a_stored_answer_replays_as_sse() {
        let stored = br#"{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
        let sse = String::from_utf8(replay_as_sse(stored, true).unwrap()).unwrap();
        let events: Vec<&str> = sse.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 5);
        assert!(events[1].contains(r#""delta":{"content":"hello"}"#), "{sse}");
        assert!(events[2].contains(r#""finish_reason":"stop""#));
        assert!(events[3].contains(r#""choices":[]"#) && events[3].contains(r#""total_tokens":4"#));
        assert_eq!(events[4], "data: [DONE]");
        let no_usage = String::from_utf8(replay_as_sse(stored, false).unwrap()).unwrap();
        assert!(!no_usage.contains("usage"));
    }
}
