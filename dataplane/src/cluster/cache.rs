//! The shared tier of the response cache (`cache = { ..., shared = true }`):
//! after a local miss, Redis; an answer stored locally is stored in Redis too.
//! A Redis entry is `sb:{org}:c:<hex key>` holding the answer's expiry (8
//! bytes, Unix ms, big-endian) and the body, uncompressed, with the route's
//! TTL as its own expiry; a copy taken into the local LRU keeps the
//! remaining lifetime. A Redis miss, error or timeout is a miss: it never
//! fails the request; with Redis down, the local cache alone answers.

use super::client::worker_client;
use super::sync::{encode_command, Frame};
use crate::cache::{Entry, Key, ResponseCache};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

fn redis_key(org: &str, key: &Key) -> Vec<u8> {
    let mut k = format!("sb:{{{}}}:c:", org.replace(['{', '}'], "_")).into_bytes();
    for b in key {
        k.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    k
}

fn shard_of(key: &Key) -> usize {
    key[1] as usize
}

/// Look `key` up in Redis; a hit is copied into the local cache and returned.
pub async fn get(org: &str, key: &Key, local: &ResponseCache) -> Option<Arc<Entry>> {
    let c = super::current()?;
    if !c.is_up() {
        return None;
    }
    let mut cmd = Vec::with_capacity(128);
    encode_command(&mut cmd, &[b"GET", &redis_key(org, key)]).ok()?;
    let reply = worker_client(&c).call(shard_of(key), &cmd).await;
    let value = match reply {
        Ok(Frame::BulkString(v)) => {
            c.success();
            v
        }
        Ok(Frame::Null) => {
            c.success();
            c.stats.cache_misses.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Ok(other) => {
            c.failure(false, &format!("unexpected answer to GET: {other:?}"));
            return None;
        }
        Err(e) => {
            c.failure(matches!(e, super::client::Fail::Timeout), &e.to_string());
            return None;
        }
    };
    let (expiry, body) = value.split_at_checked(8)?;
    let expires_ms = u64::from_be_bytes(expiry.try_into().ok()?);
    let left = expires_ms.saturating_sub(crate::policy::now_unix_ms());
    if left == 0 || body.len() > local.max_entry() {
        return None;
    }
    c.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
    local.put(*key, body, Duration::from_millis(left));
    local.get(key)
}

/// Store an answer in Redis for `ttl` (sent without waiting for the reply).
pub fn put(org: &str, key: &Key, body: &[u8], ttl: Duration) {
    let Some(c) = super::current() else { return };
    if !c.is_up() {
        return;
    }
    let ttl_ms = ttl.as_millis().clamp(1, u64::MAX as u128) as u64;
    let mut value = Vec::with_capacity(8 + body.len());
    value.extend_from_slice(&crate::policy::now_unix_ms().saturating_add(ttl_ms).to_be_bytes());
    value.extend_from_slice(body);
    let px = ttl_ms.to_string();
    let mut cmd = Vec::with_capacity(64 + value.len());
    if encode_command(&mut cmd, &[b"SET", &redis_key(org, key), &value, b"PX", px.as_bytes()]).is_ok() {
        c.stats.cache_stores.fetch_add(1, Ordering::Relaxed);
        worker_client(&c).send_now(shard_of(key), &cmd);
    }
}
