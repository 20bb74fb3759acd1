//! A keep-alive pool per worker: idle upstream connections by pool key.
//!
//! Thread-local (no lock), LIFO (the warmest connection first), bounded per key
//! by the upstream's `pool_max_idle`, and swept of connections idle longer
//! than `pool_idle_timeout`. Keys outlive snapshots, so a reload keeps its
//! warm connections.

use super::conn::UpStream;
use monoio::time::recent;
use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Idle {
    conn: UpStream,
    since: Instant,
    max_idle: Duration,
}

#[derive(Default)]
pub struct Pool {
    idle: FxHashMap<Arc<str>, Vec<Idle>>,
}

impl Pool {
    /// The most recently returned connection for `key` that is still fresh
    /// and quiet ([`quiet`]); the others are closed.
    pub fn take(&mut self, key: &str) -> Option<UpStream> {
        let list = self.idle.get_mut(key)?;
        let now = recent().into_std();
        while let Some(idle) = list.pop() {
            if now.duration_since(idle.since) < idle.max_idle && quiet(&idle.conn) {
                return Some(idle.conn);
            }
        }
        None
    }

    /// Return a connection that finished a response cleanly. (Bytes that
    /// arrive on it later are caught when it is taken: [`quiet`].)
    pub fn put(&mut self, key: &Arc<str>, conn: UpStream, max_count: usize, max_idle: Duration) {
        let list = self.idle.entry(key.clone()).or_default();
        if list.len() >= max_count {
            // Keep the warm ones; the oldest goes.
            if list.is_empty() {
                return;
            }
            list.remove(0);
        }
        list.push(Idle { conn, since: recent().into_std(), max_idle });
    }

    /// Drop connections idle past their limit; forget empty keys.
    pub fn sweep(&mut self) {
        let now = recent().into_std();
        self.idle.retain(|_, list| {
            list.retain(|i| now.duration_since(i.since) < i.max_idle);
            !list.is_empty()
        });
    }

    /// Close every idle connection of the keys `keep` rejects (nodes that left
    /// the snapshot: their attached connections are cut).
    pub fn retain_keys(&mut self, keep: impl Fn(&str) -> bool) {
        self.idle.retain(|k, _| keep(k));
    }

    /// Close every idle connection (worker shutdown).
    pub fn clear(&mut self) {
        self.idle.clear();
    }

    /// Idle connections per pool (`scheme://host:port`).
    pub fn idle_by_pool(&self) -> Vec<(Box<str>, u64)> {
        self.idle.iter().map(|(k, v)| (k.split('#').next().unwrap_or(k).into(), v.len() as u64)).collect()
    }
}

/// Whether an idle plain connection is still as it was left: its upstream
/// sent nothing after its last response ended and did not close it. Bytes
/// that came later (an upstream that writes past its response's end) would
/// otherwise be read as the next request's response, so such a connection
/// is closed, never reused. One non-blocking peek per reuse. TLS connections
/// are not looked at (rustls owns their socket).
fn quiet(conn: &UpStream) -> bool {
    use std::os::fd::AsRawFd;
    let Some(s) = conn.plain() else { return true };
    let mut byte = 0u8;
    // SAFETY: recv(2) into one valid byte on a socket this pool owns;
    // MSG_PEEK leaves the data in place, MSG_DONTWAIT never blocks.
    let n = unsafe { libc::recv(s.as_raw_fd(), (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    match n {
        0 => {
            tracing::debug!("pooled upstream connection closed by the upstream while idle; not reused");
            false
        }
        n if n > 0 => {
            tracing::warn!("upstream sent bytes after its response ended on a kept-alive connection; connection closed, not reused");
            false
        }
        _ => matches!(
            std::io::Error::last_os_error().kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
        ),
    }
}
