//! Phase "account", off the workers: usage records travel
//!
//! ```text
//! worker buffer ──(batch, try_send)──▶ channel ──▶ collector ──▶ pending ──▶ writer ──▶ sink (SQLite / remote admin)
//!  (per worker,                         (bounded)   │ access log   (bounded)   │ retries; replays the spill
//!   bounded)                                        └──▶ spill file (append-only) when pending is full
//! ```
//!
//! A worker never blocks or takes a shared lock for a record: it appends to
//! its own buffer and hands whole batches over with a non-blocking send. The
//! collector never waits on the database: when the writer falls behind, the
//! pending queue absorbs it up to `pending_records`, then records go to the
//! spill file, which the writer replays (idempotently: records carry unique
//! ids) once the sink takes writes again, and at the next start. A record is
//! lost only when every stage is full (or the disk is); each loss is counted
//! (`switchboard_usage_records_lost_total`) and logged.

use crate::usage::access::AccessLog;
use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use switchboard_shared::usage::UsageRecord;
use switchboard_shared::UsageSettings;

/// Where records end up.
pub trait UsageSink: Send + 'static {
    /// Account a batch in one transaction. An error keeps the batch for a
    /// retry; accounting a record twice must be a no-op (`uid`).
    fn write(&mut self, batch: &[UsageRecord]) -> Result<(), String>;
    /// Periodic upkeep (raw-log retention); called from the writer thread.
    fn maintain(&mut self) {}
}

/// Counters of the pipeline, for `/metrics`.
#[derive(Default, Debug)]
pub struct UsageStats {
    /// Records handed over by the workers.
    pub accepted: AtomicU64,
    /// Records the sink accounted (spill replays included).
    pub written: AtomicU64,
    /// Records sent to the spill file.
    pub spilled: AtomicU64,
    /// Records read back from the spill file.
    pub replayed: AtomicU64,
    /// Records lost (every stage full, or the spill file unwritable).
    pub lost: AtomicU64,
    /// Failed sink writes (each retried).
    pub write_errors: AtomicU64,
    /// Records the collector took off the channel.
    pub collected: AtomicU64,
    /// Records in the collector's pending queue now.
    pub pending: AtomicU64,
    /// Records waiting in worker buffers now (updated as workers flush).
    pub buffered: AtomicU64,
}

impl UsageStats {
    /// Records accepted but not yet accounted, spilled or lost.
    pub fn queued(&self) -> u64 {
        let in_channel = self.accepted.load(Ordering::Relaxed).saturating_sub(self.collected.load(Ordering::Relaxed));
        self.buffered.load(Ordering::Relaxed) + in_channel + self.pending.load(Ordering::Relaxed)
    }
}

/// A worker's end of the pipeline: its own buffer, and the channel.
pub struct WorkerQueue {
    buf: Vec<UsageRecord>,
    tx: Option<SyncSender<Vec<UsageRecord>>>,
    cap: usize,
    stats: Arc<UsageStats>,
    /// Records in `buf` last reported to `stats.buffered`.
    reported: u64,
    last_loss_log: Option<Instant>,
}

/// Records per batch a worker hands over without waiting for its timer.
pub const WORKER_BATCH: usize = 256;

impl WorkerQueue {
    /// A queue that drops everything (no pipeline: tests, benches).
    pub fn disabled() -> WorkerQueue {
        WorkerQueue { buf: Vec::new(), tx: None, cap: 0, stats: Arc::default(), reported: 0, last_loss_log: None }
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn push(&mut self, rec: UsageRecord) {
        if self.tx.is_none() {
            return;
        }
        if self.buf.len() >= self.cap {
            self.flush();
            if self.buf.len() >= self.cap {
                self.stats.lost.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                if self.last_loss_log.is_none_or(|t| now.duration_since(t) > Duration::from_secs(10)) {
                    self.last_loss_log = Some(now);
                    tracing::error!(
                        capacity = self.cap,
                        "usage record lost: the worker's usage queue is full (the writer is not keeping up)"
                    );
                }
                return;
            }
        }
        self.buf.push(rec);
        if self.buf.len() >= WORKER_BATCH {
            self.flush();
        }
    }

    /// Hand the buffer to the collector if the channel has room.
    pub fn flush(&mut self) {
        if let Some(tx) = &self.tx {
            if !self.buf.is_empty() {
                let batch = std::mem::take(&mut self.buf);
                let n = batch.len() as u64;
                match tx.try_send(batch) {
                    Ok(()) => {
                        self.stats.accepted.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(TrySendError::Full(b)) | Err(TrySendError::Disconnected(b)) => self.buf = b,
                }
            }
        }
        self.report();
    }

    /// At the worker's end: hand everything over, waiting for room if need be.
    pub fn close(&mut self) {
        if let Some(tx) = self.tx.take() {
            if !self.buf.is_empty() {
                let batch = std::mem::take(&mut self.buf);
                let n = batch.len() as u64;
                if tx.send(batch).is_ok() {
                    self.stats.accepted.fetch_add(n, Ordering::Relaxed);
                } else {
                    self.stats.lost.fetch_add(n, Ordering::Relaxed);
                    tracing::error!(records = n, "usage records lost: the usage pipeline stopped first");
                }
            }
        }
        self.report();
    }

    fn report(&mut self) {
        let now = self.buf.len() as u64;
        if now != self.reported {
            if now > self.reported {
                self.stats.buffered.fetch_add(now - self.reported, Ordering::Relaxed);
            } else {
                self.stats.buffered.fetch_sub(self.reported - now, Ordering::Relaxed);
            }
            self.reported = now;
        }
    }
}

impl Drop for WorkerQueue {
    fn drop(&mut self) {
        self.close();
    }
}

struct Shared {
    pending: Mutex<Pending>,
    ready: Condvar,
    stats: Arc<UsageStats>,
    spill: Mutex<Spill>,
    /// Set at shutdown: past it, the writer spills instead of retrying.
    drain_deadline: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct Pending {
    queue: VecDeque<UsageRecord>,
    /// The collector is done (every worker queue closed).
    closed: bool,
}

struct Spill {
    path: PathBuf,
}

impl Spill {
    fn replay_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".replay");
        PathBuf::from(p)
    }

    /// Append records as JSON lines, synced. Err = not (all) written.
    fn append(&self, records: &[UsageRecord]) -> std::io::Result<()> {
        let mut text = Vec::with_capacity(records.len() * 400);
        for r in records {
            serde_json::to_writer(&mut text, r).map_err(std::io::Error::other)?;
            text.push(b'\n');
        }
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        f.write_all(&text)?;
        f.sync_data()
    }
}

/// The running pipeline.
pub struct UsagePipeline {
    tx: Mutex<Option<SyncSender<Vec<UsageRecord>>>>,
    shared: Arc<Shared>,
    pub stats: Arc<UsageStats>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    queue_records: usize,
    flush_interval: Duration,
    access_log: bool,
}

impl UsagePipeline {
    /// Start the collector and (with a sink) the writer. `spill_file` is
    /// replayed first if a previous run left records in it.
    pub fn start(
        settings: &UsageSettings,
        spill_file: &Path,
        sink: Option<Box<dyn UsageSink>>,
        access_log: Option<AccessLog>,
    ) -> std::io::Result<Arc<UsagePipeline>> {
        // The channel holds batches; bound it so that a stuck collector costs
        // at most about `queue_records` per worker on top of the buffers.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<UsageRecord>>(1024);
        let stats = Arc::new(UsageStats::default());
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            ready: Condvar::new(),
            stats: stats.clone(),
            spill: Mutex::new(Spill { path: spill_file.to_path_buf() }),
            drain_deadline: Mutex::new(None),
        });
        let mut threads = Vec::new();
        let has_sink = sink.is_some();
        let has_access_log = access_log.is_some();
        let pending_max = settings.pending_records;
        let s = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("sb-usage-collect".into())
                .spawn(move || collect(rx, s, access_log, has_sink, pending_max))?,
        );
        if let Some(sink) = sink {
            let s = shared.clone();
            let batch = settings.batch_records;
            let retention_every = Duration::from_secs(600);
            threads.push(
                std::thread::Builder::new()
                    .name("sb-usage-write".into())
                    .spawn(move || write_loop(s, sink, batch, retention_every))?,
            );
        }
        Ok(Arc::new(UsagePipeline {
            tx: Mutex::new(Some(tx)),
            shared,
            stats,
            threads: Mutex::new(threads),
            queue_records: settings.queue_records,
            flush_interval: Duration::from_millis(settings.flush_interval_ms),
            access_log: has_access_log,
        }))
    }

    /// A queue for one worker.
    pub fn worker_queue(&self) -> WorkerQueue {
        let tx = self.tx.lock().ok().and_then(|t| t.clone());
        WorkerQueue {
            buf: Vec::new(),
            tx,
            cap: self.queue_records,
            stats: self.stats.clone(),
            reported: 0,
            last_loss_log: None,
        }
    }

    pub fn has_access_log(&self) -> bool {
        self.access_log
    }

    pub fn flush_interval(&self) -> Duration {
        self.flush_interval
    }

    /// Drain and stop, once the workers have closed their queues: every
    /// record is accounted, or (if the sink will not take it within `grace`)
    /// spilled for the next start.
    pub fn shutdown(&self, grace: Duration) {
        if let Ok(mut t) = self.tx.lock() {
            t.take();
        }
        if let Ok(mut d) = self.shared.drain_deadline.lock() {
            *d = Some(Instant::now() + grace);
        }
        let threads = self.threads.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default();
        for t in threads {
            let _ = t.join();
        }
        let s = &self.stats;
        tracing::info!(
            written = s.written.load(Ordering::Relaxed),
            spilled = s.spilled.load(Ordering::Relaxed),
            lost = s.lost.load(Ordering::Relaxed),
            "usage pipeline stopped"
        );
    }
}

fn collect(
    rx: Receiver<Vec<UsageRecord>>,
    shared: Arc<Shared>,
    mut access_log: Option<AccessLog>,
    has_sink: bool,
    pending_max: usize,
) {
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(mut batch) => {
                shared.stats.collected.fetch_add(batch.len() as u64, Ordering::Relaxed);
                if let Some(log) = access_log.as_mut() {
                    log.write(&batch);
                }
                // Requests that never reached a route are for the access log only.
                batch.retain(|r| !r.route.is_empty());
                if !has_sink {
                    // No accounting database (file mode): metrics and the access log only.
                    continue;
                }
                let overflow = {
                    let Ok(mut p) = shared.pending.lock() else { return };
                    if p.queue.len() + batch.len() <= pending_max {
                        shared.stats.pending.fetch_add(batch.len() as u64, Ordering::Relaxed);
                        p.queue.extend(batch);
                        None
                    } else {
                        Some(batch)
                    }
                };
                shared.ready.notify_one();
                if let Some(batch) = overflow {
                    spill(&shared, &batch);
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if let Some(log) = access_log.as_mut() {
                    log.flush();
                }
                // Stopping, and a worker never closed its queue (its thread
                // died holding it): stop without it rather than hang.
                if drain_deadline(&shared).is_some_and(|d| Instant::now() >= d) {
                    tracing::error!("usage pipeline: a worker's queue was never closed; stopping without it");
                    break;
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    if let Some(log) = access_log.as_mut() {
        log.flush();
    }
    if let Ok(mut p) = shared.pending.lock() {
        p.closed = true;
    }
    shared.ready.notify_all();
}

fn spill(shared: &Shared, batch: &[UsageRecord]) {
    let n = batch.len() as u64;
    let result = match shared.spill.lock() {
        Ok(s) => s.append(batch).map_err(|e| format!("{}: {e}", s.path.display())),
        Err(_) => Err("the spill lock is poisoned".into()),
    };
    match result {
        Ok(()) => {
            shared.stats.spilled.fetch_add(n, Ordering::Relaxed);
            tracing::warn!(records = n, "usage writer behind: records spilled to disk");
        }
        Err(e) => {
            shared.stats.lost.fetch_add(n, Ordering::Relaxed);
            tracing::error!(records = n, error = %e, "usage records LOST: the writer is behind and the spill file cannot be written");
        }
    }
}

fn drain_deadline(shared: &Shared) -> Option<Instant> {
    shared.drain_deadline.lock().ok().and_then(|d| *d)
}

fn write_loop(shared: Arc<Shared>, mut sink: Box<dyn UsageSink>, batch_max: usize, maintain_every: Duration) {
    let mut backoff = Duration::from_millis(50);
    let mut last_maintain: Option<Instant> = None;
    let mut last_error_log: Option<Instant> = None;
    // Records left by a previous run first.
    let mut replay_due = true;
    // After a failed replay, wait before the next try.
    let mut replay_after = Instant::now();
    loop {
        if replay_due && Instant::now() >= replay_after {
            replay_due = !replay(&shared, sink.as_mut(), batch_max);
            if replay_due {
                replay_after = Instant::now() + Duration::from_secs(5);
            }
        }
        if last_maintain.is_none_or(|t| t.elapsed() >= maintain_every) {
            sink.maintain();
            last_maintain = Some(Instant::now());
        }
        let (batch, closed) = {
            let Ok(mut p) = shared.pending.lock() else { return };
            if p.queue.is_empty() && !p.closed {
                let waited = shared.ready.wait_timeout(p, Duration::from_millis(500));
                let Ok((g, _)) = waited else { return };
                p = g;
            }
            let n = p.queue.len().min(batch_max);
            (p.queue.drain(..n).collect::<Vec<_>>(), p.closed)
        };
        if batch.is_empty() {
            if closed {
                break;
            }
            // Idle: a good time to replay spilled records.
            if !replay_due {
                replay_due = has_spill(&shared);
            }
            continue;
        }
        match sink.write(&batch) {
            Ok(()) => {
                shared.stats.pending.fetch_sub(batch.len() as u64, Ordering::Relaxed);
                shared.stats.written.fetch_add(batch.len() as u64, Ordering::Relaxed);
                backoff = Duration::from_millis(50);
            }
            Err(e) => {
                shared.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                if last_error_log.is_none_or(|t| now.duration_since(t) > Duration::from_secs(10)) {
                    last_error_log = Some(now);
                    tracing::error!(error = %e, records = batch.len(), "usage write failed; will retry");
                }
                if drain_deadline(&shared).is_some_and(|d| now >= d) {
                    // Shutting down and the sink still refuses: keep them on disk.
                    let rest = take_all(&shared, batch);
                    shared.stats.pending.fetch_sub(rest.len() as u64, Ordering::Relaxed);
                    spill(&shared, &rest);
                    if closed {
                        break;
                    }
                    continue;
                }
                if let Ok(mut p) = shared.pending.lock() {
                    for r in batch.into_iter().rev() {
                        p.queue.push_front(r);
                    }
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// `first` and everything still pending.
fn take_all(shared: &Shared, mut first: Vec<UsageRecord>) -> Vec<UsageRecord> {
    if let Ok(mut p) = shared.pending.lock() {
        first.extend(p.queue.drain(..));
    }
    first
}

fn has_spill(shared: &Shared) -> bool {
    let regular = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file());
    shared.spill.lock().map(|s| regular(&s.path) || regular(&s.replay_path())).unwrap_or(false)
}

/// Replay the spill file into the sink. Returns true when nothing is left.
fn replay(shared: &Shared, sink: &mut dyn UsageSink, batch_max: usize) -> bool {
    let replay_path = {
        let Ok(s) = shared.spill.lock() else { return false };
        let rp = s.replay_path();
        // Take the spill file aside (new spills start a fresh one), unless an
        // earlier replay is still unfinished.
        if !rp.exists() {
            if !s.path.exists() {
                return true;
            }
            // Only a regular file is ever moved or read back (never a device or a pipe).
            if !std::fs::metadata(&s.path).is_ok_and(|m| m.is_file()) {
                tracing::error!(path = %s.path.display(), "the usage spill file is not a regular file; not replaying it");
                return false;
            }
            if let Err(e) = std::fs::rename(&s.path, &rp) {
                tracing::error!(error = %e, "cannot take the usage spill file aside for replay");
                return false;
            }
        }
        rp
    };
    let file = match std::fs::File::open(&replay_path) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, path = %replay_path.display(), "cannot read the usage spill file");
            return false;
        }
    };
    let mut batch = Vec::with_capacity(batch_max.min(4096));
    let mut total = 0u64;
    let mut bad = 0u64;
    let flush = |batch: &mut Vec<UsageRecord>, sink: &mut dyn UsageSink| -> bool {
        if batch.is_empty() {
            return true;
        }
        match sink.write(batch) {
            Ok(()) => {
                shared.stats.written.fetch_add(batch.len() as u64, Ordering::Relaxed);
                shared.stats.replayed.fetch_add(batch.len() as u64, Ordering::Relaxed);
                batch.clear();
                true
            }
            Err(e) => {
                shared.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "replaying spilled usage failed; will retry");
                false
            }
        }
    };
    for line in std::io::BufReader::new(file).lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<UsageRecord>(&line) {
            Ok(r) => batch.push(r),
            // A line cut by a crash mid-append: the rest of the file is still good.
            Err(_) => bad += 1,
        }
        if batch.len() >= batch_max {
            total += batch.len() as u64;
            if !flush(&mut batch, sink) {
                return false;
            }
        }
    }
    total += batch.len() as u64;
    if !flush(&mut batch, sink) {
        return false;
    }
    if bad > 0 {
        tracing::warn!(lines = bad, "skipped unreadable lines in the usage spill file");
    }
    if let Err(e) = std::fs::remove_file(&replay_path) {
        tracing::error!(error = %e, "cannot remove the replayed usage spill file");
        return false;
    }
    if total > 0 {
        tracing::info!(records = total, "replayed spilled usage records");
    }
    // A spill may have started meanwhile.
    !has_spill(shared)
}
