//! The per-worker Redis client: a few connections per worker (`pool_size`),
//! each driven by one task of the worker's own runtime. Callers append their
//! encoded command to a connection's queue; the task writes everything queued
//! in one write, reads the replies in order and hands each to its caller —
//! so concurrent requests of a worker are pipelined, and no request opens a
//! connection or blocks the thread. A connection that fails or times out is
//! dropped with everything on it (those callers get an error and the request
//! follows `on_redis_down`); the next command opens a new one.

use super::sync::Frame;
use super::Cluster;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use redis_protocol::resp2::decode::decode;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use switchboard_shared::limits::CLUSTER_MAX_REPLY_BYTES;

/// Why a command got no answer.
#[derive(Debug, Clone)]
pub enum Fail {
    Timeout,
    Io(String),
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Timeout => f.write_str("timed out"),
            Fail::Io(e) => f.write_str(e),
        }
    }
}

/// Where one command's reply goes.
#[derive(Default)]
struct Slot {
    reply: RefCell<Option<Result<Frame, Fail>>>,
    waker: RefCell<Option<Waker>>,
}

impl Slot {
    fn fill(&self, r: Result<Frame, Fail>) {
        *self.reply.borrow_mut() = Some(r);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

#[derive(Default)]
struct Queue {
    out: Vec<u8>,
    /// One per command in `out`; `None` for a command whose reply nobody awaits.
    waiting: VecDeque<Option<Rc<Slot>>>,
    waker: Option<Waker>,
}

/// How long a reconcile may wait for a command to go out with.
const RECONCILE_BATCH: std::time::Duration = std::time::Duration::from_millis(2);

#[derive(Default)]
struct Conn {
    q: RefCell<Queue>,
    /// A flush of queued reconciles is scheduled.
    flush_due: Cell<bool>,
    running: Cell<bool>,
    /// Its task has a connection (it is past connecting).
    connected: Cell<bool>,
    closed: Cell<bool>,
    /// Commands written and not yet answered.
    in_flight: Cell<usize>,
}

impl Conn {
    fn fail_queued(&self, why: &Fail) {
        let waiting = {
            let mut q = self.q.borrow_mut();
            q.out.clear();
            std::mem::take(&mut q.waiting)
        };
        for s in waiting.into_iter().flatten() {
            s.fill(Err(why.clone()));
        }
    }
}

pub struct Client {
    cluster: Arc<Cluster>,
    conns: Vec<Rc<Conn>>,
}

impl Drop for Client {
    fn drop(&mut self) {
        for c in &self.conns {
            c.closed.set(true);
            if let Some(w) = c.q.borrow_mut().waker.take() {
                w.wake();
            }
        }
    }
}

thread_local! {
    static CLIENT: RefCell<Option<Rc<Client>>> = const { RefCell::new(None) };
}

/// This worker's client for `cluster` (made on first use).
pub fn worker_client(cluster: &Arc<Cluster>) -> Rc<Client> {
    CLIENT.with(|c| {
        let mut c = c.borrow_mut();
        if let Some(client) = c.as_ref().filter(|cl| cl.cluster.generation == cluster.generation) {
            return client.clone();
        }
        let conns = (0..cluster.cfg.pool_size.max(1)).map(|_| Rc::new(Conn::default())).collect();
        let client = Rc::new(Client { cluster: cluster.clone(), conns });
        *c = Some(client.clone());
        client
    })
}

impl Client {
    fn conn(&self, shard: usize) -> &Rc<Conn> {
        &self.conns[shard % self.conns.len()]
    }

    /// Queue a command; whether it goes on a connection that was open already.
    fn enqueue(&self, shard: usize, cmd: &[u8], slot: Option<Rc<Slot>>, now: bool) -> bool {
        let conn = self.conn(shard);
        let reused = conn.running.get() && conn.connected.get();
        {
            let mut q = conn.q.borrow_mut();
            q.out.extend_from_slice(cmd);
            q.waiting.push_back(slot);
            if now {
                if let Some(w) = q.waker.take() {
                    w.wake();
                }
            } else if !conn.flush_due.get() {
                // A command nobody waits for (a reconcile) goes out with the
                // next command on this connection, or after RECONCILE_BATCH.
                conn.flush_due.set(true);
                let c = conn.clone();
                monoio::spawn(async move {
                    monoio::time::sleep(RECONCILE_BATCH).await;
                    c.flush_due.set(false);
                    if let Some(w) = c.q.borrow_mut().waker.take() {
                        w.wake();
                    }
                });
            }
        }
        if !conn.running.get() {
            conn.running.set(true);
            monoio::spawn(run(self.cluster.clone(), conn.clone()));
        }
        reused
    }

    /// Send one encoded command on connection `shard` (commands on one
    /// connection are answered in order) and wait for its reply, at most the
    /// command timeout.
    pub async fn call(&self, shard: usize, cmd: &[u8]) -> Result<Frame, Fail> {
        self.cluster.stats.commands.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let deadline = monoio::time::Instant::now() + self.cluster.command_timeout();
        let mut result = Err(Fail::Timeout);
        // A connection Redis closed while it sat idle (Redis restarted, an
        // idle timeout) fails the first command written on it: that command
        // is sent once more, on a new connection, within the same deadline.
        for _ in 0..2 {
            let slot = Rc::new(Slot::default());
            let reused = self.enqueue(shard, cmd, Some(slot.clone()), true);
            let wait = std::future::poll_fn(|cx| match slot.reply.borrow_mut().take() {
                Some(r) => Poll::Ready(r),
                None => {
                    *slot.waker.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            });
            result = monoio::time::timeout_at(deadline, wait).await.unwrap_or(Err(Fail::Timeout));
            if !(reused && matches!(result, Err(Fail::Io(_)))) {
                break;
            }
        }
        result
    }

    /// Send one encoded command whose reply nobody waits for (reconciles):
    /// it goes out with the next command on that connection (in order), or
    /// after [`RECONCILE_BATCH`] — batched per worker and connection.
    pub fn send(&self, shard: usize, cmd: &[u8]) {
        self.cluster.stats.commands.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.enqueue(shard, cmd, None, false);
    }

    /// Send one encoded command whose reply nobody waits for, at once
    /// (a shared-cache store: other data planes should find it soon).
    pub fn send_now(&self, shard: usize, cmd: &[u8]) {
        self.cluster.stats.commands.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.enqueue(shard, cmd, None, true);
    }
}

enum RStream {
    Plain(TcpStream),
    Tls(Box<monoio_rustls::ClientTlsStream<TcpStream>>),
}

impl RStream {
    async fn write_all(&mut self, buf: Vec<u8>) -> (std::io::Result<()>, Vec<u8>) {
        let (r, buf) = match self {
            RStream::Plain(s) => s.write_all(buf).await,
            RStream::Tls(s) => s.write_all(buf).await,
        };
        let r = match (r, self) {
            (Ok(_), RStream::Tls(s)) => s.flush().await,
            (r, _) => r.map(|_| ()),
        };
        (r, buf)
    }

    async fn read(&mut self, buf: Vec<u8>) -> (std::io::Result<usize>, Vec<u8>) {
        match self {
            RStream::Plain(s) => s.read(buf).await,
            RStream::Tls(s) => s.read(buf).await,
        }
    }
}

async fn connect(c: &Cluster) -> Result<RStream, Fail> {
    let addr = c.addr().ok_or_else(|| Fail::Io(format!("cannot resolve {}", c.endpoint.host)))?;
    let tcp = match monoio::time::timeout(c.connect_timeout(), TcpStream::connect(addr)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return Err(Fail::Io(format!("connect {addr}: {e}"))),
        Err(_) => return Err(Fail::Timeout),
    };
    let _ = tcp.set_nodelay(true);
    let mut s = match &c.tls {
        None => RStream::Plain(tcp),
        Some((cfg, name)) => {
            let connector = monoio_rustls::TlsConnector::from(cfg.clone());
            match monoio::time::timeout(c.connect_timeout(), connector.connect(name.clone(), tcp)).await {
                Ok(Ok(t)) => RStream::Tls(Box::new(t)),
                Ok(Err(e)) => return Err(Fail::Io(format!("TLS handshake with Redis: {e}"))),
                Err(_) => return Err(Fail::Timeout),
            }
        }
    };
    if let Some((user, pass)) = &c.auth {
        let mut out = Vec::new();
        let user = user.as_deref().unwrap_or("default");
        super::sync::encode_command(&mut out, &[b"AUTH", user.as_bytes(), pass.expose().as_bytes()])
            .map_err(Fail::Io)?;
        let mut rbuf = Vec::with_capacity(256);
        let replies = monoio::time::timeout(c.command_timeout(), exchange(&mut s, out, 1, &mut rbuf))
            .await
            .map_err(|_| Fail::Timeout)??;
        if let Some(Frame::Error(_)) = replies.first() {
            return Err(Fail::Io("Redis refused the credentials".into()));
        }
    }
    Ok(s)
}

/// Write `out` (holding `n` commands) and read `n` replies.
async fn exchange(s: &mut RStream, out: Vec<u8>, n: usize, rbuf: &mut Vec<u8>) -> Result<Vec<Frame>, Fail> {
    let (r, _) = s.write_all(out).await;
    r.map_err(|e| Fail::Io(format!("send to Redis: {e}")))?;
    let mut replies = Vec::with_capacity(n);
    let mut pos = 0;
    while replies.len() < n {
        match decode(&rbuf[pos..]) {
            Ok(Some((frame, used))) => {
                pos += used;
                replies.push(frame);
                continue;
            }
            Ok(None) => {}
            Err(e) => return Err(Fail::Io(format!("Redis sent a malformed reply: {e:?}"))),
        }
        if rbuf.len() - pos > CLUSTER_MAX_REPLY_BYTES {
            return Err(Fail::Io("the Redis reply is too large".into()));
        }
        if pos > 0 {
            rbuf.drain(..pos);
            pos = 0;
        }
        rbuf.reserve(16 * 1024);
        let (r, b) = s.read(std::mem::take(rbuf)).await;
        *rbuf = b;
        match r {
            Ok(0) => return Err(Fail::Io("Redis closed the connection".into())),
            Ok(_) => {}
            Err(e) => return Err(Fail::Io(format!("receive from Redis: {e}"))),
        }
    }
    rbuf.drain(..pos);
    Ok(replies)
}

/// A connection's task: connect, then write what is queued and read the
/// replies, until it fails, times out or its client is dropped.
async fn run(cluster: Arc<Cluster>, conn: Rc<Conn>) {
    let why = match drive(&cluster, &conn).await {
        Ok(()) => Fail::Io("closed".into()),
        Err(e) => e,
    };
    conn.running.set(false);
    conn.connected.set(false);
    conn.in_flight.set(0);
    conn.fail_queued(&why);
}

async fn drive(cluster: &Cluster, conn: &Conn) -> Result<(), Fail> {
    let mut s = connect(cluster).await?;
    conn.connected.set(true);
    let mut rbuf = Vec::with_capacity(16 * 1024);
    let mut spare = Vec::with_capacity(4096);
    loop {
        std::future::poll_fn(|cx| {
            let mut q = conn.q.borrow_mut();
            if conn.closed.get() || !q.out.is_empty() {
                Poll::Ready(())
            } else {
                q.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        if conn.closed.get() {
            return Ok(());
        }
        let (out, slots) = {
            let mut q = conn.q.borrow_mut();
            spare.clear();
            let out = std::mem::replace(&mut q.out, std::mem::take(&mut spare));
            (out, std::mem::take(&mut q.waiting))
        };
        conn.in_flight.set(slots.len());
        let result = monoio::time::timeout(cluster.command_timeout(), exchange(&mut s, out, slots.len(), &mut rbuf))
            .await
            .unwrap_or(Err(Fail::Timeout));
        conn.in_flight.set(0);
        match result {
            Ok(replies) => {
                for (slot, reply) in slots.into_iter().zip(replies) {
                    if let Some(slot) = slot {
                        slot.fill(Ok(reply));
                    }
                }
            }
            Err(e) => {
                for s in slots.into_iter().flatten() {
                    s.fill(Err(e.clone()));
                }
                return Err(e);
            }
        }
    }
}
