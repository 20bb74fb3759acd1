//! Per-worker state: everything a request touches lives on its own thread
//! (snapshot view, upstream pool, counters), so the hot path takes no lock
//! shared across cores.

use crate::dns::DnsCache;
use crate::metrics::{Metrics, WorkerSlot};
use crate::snapshot::{LocalSnapshot, Snapshot};
use crate::upstream::Pool;
use crate::usage::pipeline::WorkerQueue;
use std::cell::{Cell, RefCell};
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use switchboard_shared::ServerConfig;

pub struct WorkerCtx {
    pub id: usize,
    pub cfg: Arc<ServerConfig>,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    snapshots: RefCell<LocalSnapshot>,
    pub pool: RefCell<Pool>,
    pub dns: Arc<DnsCache>,
    /// Open client connections on this worker, by socket.
    pub conns: RefCell<rustc_hash::FxHashSet<std::os::fd::RawFd>>,
    /// Requests being handled on this worker.
    pub inflight: Cell<usize>,
    rid_prefix: u64,
    rid_counter: Cell<u64>,
    draining: Arc<AtomicBool>,
    /// This worker's metrics.
    pub metrics: Arc<WorkerSlot>,
    /// Every worker's metrics (for `/metrics`).
    pub registry: Arc<Metrics>,
    /// This worker's end of the usage pipeline.
    pub usage: RefCell<WorkerQueue>,
    /// Whether the access log is on (requests that never reach a route are
    /// then recorded too, for it alone).
    pub access_log: bool,
    /// The response cache, shared by every worker.
    pub cache: Arc<crate::cache::ResponseCache>,
    /// This process's random id (node agents tell gateways apart by it).
    pub instance: u64,
    /// Byte buffers a connection hands back while it waits (see [`WorkerCtx::lend_buffer`]).
    spare: SpareBuffers,
}

/// A worker's spare byte buffers (see [`WorkerCtx::lend_buffer`]): its own,
/// on its own thread, so lending takes no lock.
#[derive(Default)]
pub struct SpareBuffers(RefCell<Vec<Vec<u8>>>);

impl SpareBuffers {
    /// A buffer handed back before (empty), else a new one.
    pub fn lend(&self) -> Vec<u8> {
        self.0.borrow_mut().pop().unwrap_or_default()
    }

    /// Keep `buf`, emptied, while fewer than [`SPARE_BUFFERS`] are kept and
    /// if it is at most [`SPARE_BUFFER_MAX_BYTES`] large; else free it.
    pub fn give_back(&self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > SPARE_BUFFER_MAX_BYTES {
            return;
        }
        let mut spare = self.0.borrow_mut();
        if spare.len() < SPARE_BUFFERS {
            buf.clear();
            spare.push(buf);
        }
    }

    /// How many are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.borrow().len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The most spare buffers a worker keeps ([`WorkerCtx::lend_buffer`]):
/// enough for the writes under way at one moment in steady traffic (a burst
/// past it allocates, and frees what it cannot hand back); few enough that
/// the list itself stays small (at most 64 × 16 KiB).
pub const SPARE_BUFFERS: usize = 64;
/// A buffer larger than this is freed rather than kept as a spare.
pub const SPARE_BUFFER_MAX_BYTES: usize = 16 * 1024;

/// What a worker is given besides its config and snapshots.
pub struct WorkerParts {
    pub dns: Arc<DnsCache>,
    pub draining: Arc<AtomicBool>,
    pub registry: Arc<Metrics>,
    pub usage: WorkerQueue,
    pub access_log: bool,
    pub cache: Arc<crate::cache::ResponseCache>,
    pub instance: u64,
}

impl WorkerCtx {
    pub fn new(id: usize, cfg: Arc<ServerConfig>, snapshots: LocalSnapshot, parts: WorkerParts) -> WorkerCtx {
        let WorkerParts { dns, draining, registry, usage, access_log, cache, instance } = parts;
        let metrics = registry.slots.get(id).cloned().unwrap_or_default();
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(id);
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
        WorkerCtx {
            id,
            header_timeout: Duration::from_millis(cfg.header_read_timeout_ms),
            body_timeout: Duration::from_millis(cfg.body_read_timeout_ms),
            idle_timeout: Duration::from_millis(cfg.idle_timeout_ms),
            write_timeout: Duration::from_millis(cfg.write_timeout_ms),
            cfg,
            snapshots: RefCell::new(snapshots),
            pool: RefCell::new(Pool::default()),
            dns,
            conns: RefCell::new(Default::default()),
            inflight: Cell::new(0),
            rid_prefix: h.finish(),
            rid_counter: Cell::new(0),
            draining,
            metrics,
            registry,
            usage: RefCell::new(usage),
            access_log,
            cache,
            instance,
            spare: SpareBuffers::default(),
        }
    }

    /// A byte buffer for one step of a connection (a request on its way
    /// upstream, an event on its way to the client): one handed back before,
    /// else a new one. A connection that then waits — an open stream between
    /// its events — hands it back with [`give_back`](Self::give_back), so it
    /// holds no buffer while it waits, and steady traffic allocates none.
    pub fn lend_buffer(&self) -> Vec<u8> {
        self.spare.lend()
    }

    /// Hand a buffer back ([`SpareBuffers::give_back`]).
    pub fn give_back(&self, buf: Vec<u8>) {
        self.spare.give_back(buf)
    }

    #[allow(clippy::redundant_allocation)]
    pub fn snapshot(&self) -> Rc<Arc<Snapshot>> {
        self.snapshots.borrow_mut().get()
    }

    /// The Prometheus exposition of every worker's metrics.
    pub fn metrics_text(&self, snapshot_version: u64) -> String {
        self.registry.snapshot_version.store(snapshot_version, Ordering::Relaxed);
        self.registry.render()
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// A pseudo-random number in [0, 1) (backoff jitter): splitmix64 over
    /// this worker's request counter and prefix. Not for secrets.
    pub fn random_unit(&self) -> f64 {
        let n = self.rid_counter.get().wrapping_add(0x9e37_79b9_7f4a_7c15).wrapping_add(self.rid_prefix);
        self.rid_counter.set(self.rid_counter.get().wrapping_add(1));
        let mut z = n;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A new request id: this worker's random prefix and a counter, in hex.
    pub fn next_request_id(&self) -> RequestId {
        let n = self.rid_counter.get().wrapping_add(1);
        self.rid_counter.set(n);
        let mut out = [0u8; 32];
        let hex = b"0123456789abcdef";
        for (i, b) in self.rid_prefix.to_be_bytes().iter().chain(n.to_be_bytes().iter()).enumerate() {
            out[2 * i] = hex[(b >> 4) as usize];
            out[2 * i + 1] = hex[(b & 15) as usize];
        }
        RequestId::Local(out)
    }
}

/// The `x-request-id` of a request: the client's (validated) or our own.
pub enum RequestId {
    Client(String),
    Local([u8; 32]),
}

impl RequestId {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            RequestId::Client(s) => s.as_bytes(),
            RequestId::Local(b) => b,
        }
    }
}

/// Registers an open client connection while alive.
pub struct ConnGuard<'a> {
    ctx: &'a WorkerCtx,
    fd: std::os::fd::RawFd,
}

impl<'a> ConnGuard<'a> {
    pub fn new(ctx: &'a WorkerCtx, fd: std::os::fd::RawFd) -> Self {
        ctx.conns.borrow_mut().insert(fd);
        ctx.metrics.connections.fetch_add(1, Ordering::Relaxed);
        ConnGuard { ctx, fd }
    }
}

impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        self.ctx.conns.borrow_mut().remove(&self.fd);
        self.ctx.metrics.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a request in flight, for this worker and for `/metrics`.
pub struct InFlightGuard<'a>(&'a WorkerCtx);

impl<'a> InFlightGuard<'a> {
    pub fn new(ctx: &'a WorkerCtx) -> Self {
        ctx.inflight.set(ctx.inflight.get() + 1);
        ctx.metrics.inflight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(ctx)
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.inflight.set(self.0.inflight.get().saturating_sub(1));
        self.0.metrics.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_buffers_are_lent_empty_and_bounded() {
        let spare = SpareBuffers::default();
        // Nothing handed back yet: a new, unallocated buffer.
        assert_eq!(spare.lend().capacity(), 0);
        let mut used = Vec::with_capacity(512);
        used.extend_from_slice(b"a previous connection's bytes");
        spare.give_back(used);
        assert_eq!(spare.len(), 1);
        let lent = spare.lend();
        // The same allocation, with nothing of its previous use readable.
        assert!(lent.capacity() >= 512);
        assert!(lent.is_empty());
        assert!(spare.is_empty());
        // Unallocated and oversized buffers are not kept.
        spare.give_back(Vec::new());
        spare.give_back(Vec::with_capacity(SPARE_BUFFER_MAX_BYTES + 1));
        assert!(spare.is_empty());
        // At most SPARE_BUFFERS are kept.
        for _ in 0..SPARE_BUFFERS + 10 {
            spare.give_back(Vec::with_capacity(64));
        }
        assert_eq!(spare.len(), SPARE_BUFFERS);
    }
}
