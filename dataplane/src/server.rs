//! Phase "accept": one monoio runtime per worker thread, each with its own
//! SO_REUSEPORT listener, so the kernel spreads connections across cores and
//! no accept lock is shared.

use crate::conn;
use crate::dns::DnsCache;
use crate::error::GatewayError;
use crate::http::io::write_all;
use crate::metrics::Metrics;
use crate::snapshot::SnapshotStore;
use crate::tls::ServerTls;
use crate::usage::pipeline::{UsagePipeline, WorkerQueue};
use crate::worker::{ConnGuard, WorkerCtx, WorkerParts};
use monoio::net::{TcpListener, TcpStream};
use monoio::time::Instant;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use switchboard_shared::config::Driver;
use switchboard_shared::ServerConfig;

/// Which driver a worker ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    IoUring,
    Legacy,
}

impl DriverKind {
    pub fn name(self) -> &'static str {
        match self {
            DriverKind::IoUring => "io_uring",
            DriverKind::Legacy => "legacy (epoll)",
        }
    }
}

/// Decide the driver for a configured preference.
pub fn choose_driver(pref: Driver) -> io::Result<DriverKind> {
    let uring = monoio::utils::detect_uring();
    match pref {
        Driver::Auto if uring => Ok(DriverKind::IoUring),
        Driver::Auto | Driver::Legacy => Ok(DriverKind::Legacy),
        Driver::IoUring if uring => Ok(DriverKind::IoUring),
        Driver::IoUring => Err(io::Error::new(io::ErrorKind::Unsupported, "io_uring is not available on this kernel")),
    }
}

/// `SWITCHBOARD_DRIVER` (`auto`, `io_uring`, `legacy`), when set, overrides
/// `[server] driver`: to run the same binary (or the test suite) on the epoll
/// path that containers under a default seccomp profile get.
pub fn driver_override() -> io::Result<Option<Driver>> {
    match std::env::var("SWITCHBOARD_DRIVER") {
        Err(_) => Ok(None),
        Ok(v) if v.is_empty() => Ok(None),
        Ok(v) => match v.as_str() {
            "auto" => Ok(Some(Driver::Auto)),
            "io_uring" => Ok(Some(Driver::IoUring)),
            "legacy" => Ok(Some(Driver::Legacy)),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("SWITCHBOARD_DRIVER=`{v}`: expected auto, io_uring or legacy"),
            )),
        },
    }
}

/// `shutdown(2)` each socket: a pending accept or read on it wakes (with an
/// error or EOF) in either driver, so the task waiting on it can finish and
/// close it. The caller owns the fds and keeps them open meanwhile.
pub fn shutdown_sockets<'a>(fds: impl IntoIterator<Item = &'a RawFd>) {
    for fd in fds {
        // SAFETY: shutdown(2) on a descriptor the caller keeps open; it changes
        // the socket's state only, never the descriptor table.
        unsafe {
            libc::shutdown(*fd, libc::SHUT_RDWR);
        }
    }
}

/// One way to set up a worker's io_uring ring.
#[derive(Clone, Copy)]
pub struct UringSetup {
    pub name: &'static str,
    apply: fn(&mut io_uring::Builder),
}

/// 6.1+: the ring is created, submitted to and reaped by its worker's thread
/// only, and completions' task work runs when that thread asks for events, in
/// one batch, never interrupting it (no IPI, no locking for other issuers).
const DEFER: UringSetup = UringSetup {
    name: "defer",
    apply: |b| {
        b.setup_single_issuer().setup_defer_taskrun();
    },
};
/// 5.19+: task work still runs at the next system call, but without an IPI.
const COOP: UringSetup = UringSetup {
    name: "coop",
    apply: |b| {
        b.setup_coop_taskrun();
    },
};
const PLAIN: UringSetup = UringSetup { name: "plain", apply: |_| {} };
/// A kernel thread polls the submission queue (idle after 100 ms): no
/// io_uring_enter to submit, but a second thread per worker spinning on a
/// core of its own. Never picked by `auto` (see docs/performance.md).
const SQPOLL: UringSetup = UringSetup {
    name: "sqpoll",
    apply: |b| {
        b.setup_sqpoll(100);
    },
};

/// The ring setups to try, best first: `SWITCHBOARD_URING_SETUP` (`auto`, the
/// default: `defer`, else `coop`, else `plain`, as the kernel takes them; or
/// exactly one of `defer`, `coop`, `plain`, `sqpoll`). An older kernel
/// refuses flags it does not know (EINVAL) and `auto` tries the next.
pub fn uring_setups() -> io::Result<&'static [UringSetup]> {
    match std::env::var("SWITCHBOARD_URING_SETUP").as_deref() {
        Err(_) | Ok("") | Ok("auto") => Ok(&[DEFER, COOP, PLAIN]),
        Ok("defer") => Ok(&[DEFER]),
        Ok("coop") => Ok(&[COOP]),
        Ok("plain") => Ok(&[PLAIN]),
        Ok("sqpoll") => Ok(&[SQPOLL]),
        Ok(v) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("SWITCHBOARD_URING_SETUP=`{v}`: expected auto, defer, coop, plain or sqpoll"),
        )),
    }
}

/// The first of [`uring_setups`] this kernel takes, tried on a small ring
/// before any worker starts: a setup it refuses (an older kernel: EINVAL) is
/// an error here, not a worker that fails later.
pub fn pick_uring_setup() -> io::Result<UringSetup> {
    let mut last = io::Error::new(io::ErrorKind::Unsupported, "no io_uring setup");
    for setup in uring_setups()? {
        let mut urb = io_uring::IoUring::builder();
        (setup.apply)(&mut urb);
        match urb.build(8) {
            Ok(_probe) => return Ok(*setup),
            Err(e) => {
                tracing::debug!(setup = setup.name, error = %e, "io_uring setup refused");
                last = io::Error::new(e.kind(), format!("io_uring setup `{}` refused by this kernel: {e}", setup.name));
            }
        }
    }
    Err(last)
}

/// Multishot receive's buffer ring per worker when `SWITCHBOARD_URING_RECV`
/// is unset: 256 buffers of 4 KiB (1 MiB per worker).
pub const URING_RECV_DEFAULT: (u16, u32) = (256, 4096);

/// `SWITCHBOARD_URING_RECV`: `COUNTxBYTES` (the provided-buffer ring each
/// io_uring worker receives streamed upstream bodies into, with multishot
/// receive), `off`, or unset for [`URING_RECV_DEFAULT`]. Ranges in
/// `limits::URING_RECV_BUFFERS` / `URING_RECV_BUFFER_BYTES`; COUNT a power
/// of two. Returns (0, 0) for off.
pub fn uring_recv_buffers() -> io::Result<(u16, u32)> {
    use switchboard_shared::limits::{URING_RECV_BUFFERS, URING_RECV_BUFFER_BYTES, URING_RECV_RING_BYTES};
    let v = match std::env::var("SWITCHBOARD_URING_RECV") {
        Err(_) => return Ok(URING_RECV_DEFAULT),
        Ok(v) => v,
    };
    let bad = |why: String| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("SWITCHBOARD_URING_RECV=`{v}`: {why} (expected COUNTxBYTES, e.g. 256x4096, or off)"),
        )
    };
    match v.trim() {
        "" => return Ok(URING_RECV_DEFAULT),
        "off" | "0" => return Ok((0, 0)),
        _ => {}
    }
    let Some((count, bytes)) = v.trim().split_once(['x', 'X']) else {
        return Err(bad("no `x`".into()));
    };
    let count: u64 = count.trim().parse().map_err(|_| bad("COUNT is not a number".into()))?;
    let bytes: u64 = bytes.trim().parse().map_err(|_| bad("BYTES is not a number".into()))?;
    URING_RECV_BUFFERS.check(count).map_err(|e| bad(format!("COUNT {e}")))?;
    if count == 0 {
        return Ok((0, 0));
    }
    if !count.is_power_of_two() {
        return Err(bad(format!("COUNT must be a power of two, got {count}")));
    }
    URING_RECV_BUFFER_BYTES.check(bytes).map_err(|e| bad(format!("BYTES {e}")))?;
    URING_RECV_RING_BYTES
        .check(count.saturating_mul(bytes))
        .map_err(|e| bad(format!("the ring (COUNT × BYTES, per worker) {e}")))?;
    let count = u16::try_from(count).map_err(|_| bad("COUNT too large".into()))?;
    let bytes = u32::try_from(bytes).map_err(|_| bad("BYTES too large".into()))?;
    Ok((count, bytes))
}

type UringRuntime = monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>;

/// A worker's io_uring runtime, its ring set up as `setup` says.
fn uring_runtime(setup: UringSetup) -> io::Result<UringRuntime> {
    let mut urb = io_uring::IoUring::builder();
    (setup.apply)(&mut urb);
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().uring_builder(urb).enable_timer().build()
}

/// A running data plane.
pub struct ServerHandle {
    pub local_addr: SocketAddr,
    pub driver: DriverKind,
    threads: Vec<JoinHandle<()>>,
    listener_fds: Vec<RawFd>,
    draining: Arc<AtomicBool>,
    /// The listener's TLS, when it serves HTTPS.
    pub tls: Option<Arc<ServerTls>>,
    /// Every worker's metrics.
    pub metrics: Arc<Metrics>,
}

/// Whether the listen address may already be served by another process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddrSharing {
    /// The address must be free: a running gateway (a forgotten one, an old
    /// version) on it is an error, not a silent split of the traffic.
    #[default]
    Exclusive,
    /// A planned hand-over (`--handover`): join the listeners of a running
    /// process on the address (same user, SO_REUSEPORT); it drains and exits.
    HandOver,
}

/// Bind `count` listeners to `addr`, one per worker, in one SO_REUSEPORT
/// group so the kernel spreads connections across them. With port 0 the
/// first bind picks the port and the others join it.
///
/// [`AddrSharing::Exclusive`] binds the first socket *without* SO_REUSEPORT
/// and sets it only before `listen`: the bind fails with `AddrInUse` if any
/// socket is bound or listening on the address (including a wildcard one),
/// and there is no window in which a probe and the real bind could disagree.
/// The workers' other sockets then join that socket's group.
pub fn bind_reuseport(
    addr: SocketAddr,
    count: usize,
    backlog: i32,
    sharing: AddrSharing,
) -> io::Result<Vec<std::net::TcpListener>> {
    let mut addr = addr;
    let mut listeners = Vec::with_capacity(count);
    for i in 0..count.max(1) {
        let exclusive = i == 0 && sharing == AddrSharing::Exclusive;
        let l = listener(addr, backlog, exclusive).map_err(|e| match e.kind() {
            io::ErrorKind::AddrInUse if i == 0 => in_use_error(addr, sharing),
            _ => e,
        })?;
        addr = l.local_addr()?;
        listeners.push(l);
    }
    Ok(listeners)
}

/// The error for an address another process serves, saying what to do.
pub fn in_use_error(addr: SocketAddr, sharing: AddrSharing) -> io::Error {
    let hint = match sharing {
        AddrSharing::Exclusive => {
            "another process already serves it (a gateway still running?): stop it, or start this one with \
             --handover to take over from it"
        }
        AddrSharing::HandOver => {
            "--handover shares an address only with a process of the same user that listens with SO_REUSEPORT \
             (another Switchboard gateway)"
        }
    };
    io::Error::new(io::ErrorKind::AddrInUse, format!("{addr} is in use: {hint}"))
}

/// Whether something already listens on `addr` (a bind without
/// SO_REUSEPORT is refused). Port 0 is never in use.
pub fn addr_in_use(addr: SocketAddr) -> bool {
    if addr.port() == 0 {
        return false;
    }
    matches!(listener_socket(addr, false), Err(e) if e.kind() == io::ErrorKind::AddrInUse)
}

fn listener_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(reuse_port)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

fn listener(addr: SocketAddr, backlog: i32, exclusive: bool) -> io::Result<std::net::TcpListener> {
    let socket = listener_socket(addr, !exclusive)?;
    if exclusive {
        // Bound alone; now let the other workers' sockets join its group.
        socket.set_reuse_port(true)?;
    }
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// Raise the open-files soft limit to the hard limit (each proxied stream
/// holds two sockets).
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(lim.rlim_cur)
}

/// Bind the listeners and start the workers. Returns once every listener is
/// bound (the address is final: port 0 has been resolved).
pub fn start(cfg: ServerConfig, store: Arc<SnapshotStore>, dns: Arc<DnsCache>) -> io::Result<ServerHandle> {
    start_with(cfg, store, dns, None)
}

/// [`start`], with usage records going to `usage`.
pub fn start_with(
    cfg: ServerConfig,
    store: Arc<SnapshotStore>,
    dns: Arc<DnsCache>,
    usage: Option<Arc<UsagePipeline>>,
) -> io::Result<ServerHandle> {
    let driver = choose_driver(driver_override()?.unwrap_or(cfg.driver))?;
    // A bad SWITCHBOARD_URING_SETUP is refused on either driver.
    let setup = if driver == DriverKind::IoUring { pick_uring_setup()? } else { uring_setups().map(|_| PLAIN)? };
    // Likewise a bad SWITCHBOARD_URING_RECV. Process-wide: a worker thread
    // registers its ring on its first streamed upstream read.
    let (recv_count, recv_bytes) = uring_recv_buffers()?;
    if driver == DriverKind::IoUring {
        monoio::net::tcp::set_recv_multi_buffers(recv_count, recv_bytes)?;
    }
    if cfg.raise_nofile_limit {
        match raise_nofile_limit() {
            Ok(n) => tracing::debug!(nofile = n, "open-files limit"),
            Err(e) => tracing::warn!(error = %e, "could not raise the open-files limit"),
        }
    }
    let workers =
        if cfg.workers == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { cfg.workers };
    let addr: SocketAddr = cfg.listen_addr().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    if cfg.handover {
        if addr_in_use(addr) {
            tracing::warn!(%addr, "hand-over: sharing {addr} with the process serving it; stop that one (SIGTERM) to finish");
        } else {
            tracing::info!(%addr, "hand-over asked for, but nothing serves {addr}: starting alone");
        }
    }
    let sharing = if cfg.handover { AddrSharing::HandOver } else { AddrSharing::Exclusive };
    let listeners = bind_reuseport(addr, workers, 4096, sharing)?;
    let addr = listeners[0].local_addr()?;
    let tls = match (&cfg.tls_cert_file, &cfg.tls_key_file) {
        (Some(c), Some(k)) => {
            let t = ServerTls::load(c, k).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            t.spawn_watcher(Duration::from_millis(cfg.reload_poll_ms.max(100)))?;
            Some(t)
        }
        _ => None,
    };
    let cfg = Arc::new(cfg);
    let draining = Arc::new(AtomicBool::new(false));
    let cache = Arc::new(crate::cache::ResponseCache::new(cfg.cache_max_bytes));
    let mut metrics = Metrics::new(workers, usage.as_ref().map(|u| u.stats.clone()));
    metrics.cache = Some(cache.clone());
    let metrics = Arc::new(metrics);
    let flush_every = usage.as_ref().map_or(Duration::from_millis(100), |u| u.flush_interval());
    let access_log = usage.as_ref().is_some_and(|u| u.has_access_log());
    let listener_fds = listeners.iter().map(|l| l.as_raw_fd()).collect();
    let instance = {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish()
    };
    let mut threads = Vec::with_capacity(workers);
    for (id, l) in listeners.into_iter().enumerate() {
        let cfg = cfg.clone();
        let store = store.clone();
        let dns = dns.clone();
        let draining = draining.clone();
        let tls = tls.clone();
        let parts = WorkerParts {
            dns,
            draining,
            registry: metrics.clone(),
            usage: usage.as_ref().map_or_else(WorkerQueue::disabled, |u| u.worker_queue()),
            access_log,
            cache: cache.clone(),
            instance,
        };
        // A panic out of the worker's runtime marks it down (see `supervise`).
        let slot = metrics.slots[id].clone();
        let t = std::thread::Builder::new().name(format!("sb-worker-{id}")).spawn(move || {
            crate::supervise::worker(id, &slot, move || {
                let ctx = Rc::new(WorkerCtx::new(id, cfg, store.local(), parts));
                let result = match driver {
                    DriverKind::IoUring => {
                        uring_runtime(setup).map(|mut rt| rt.block_on(worker_main(ctx, l, tls, flush_every)))
                    }
                    DriverKind::Legacy => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                        .enable_timer()
                        .build()
                        .map(|mut rt| rt.block_on(worker_main(ctx, l, tls, flush_every))),
                };
                if let Err(e) = result {
                    tracing::error!(worker = id, error = %e, "worker runtime failed to start");
                }
            })
        })?;
        threads.push(t);
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let ring = if driver == DriverKind::IoUring { setup.name } else { "-" };
    tracing::info!(%addr, workers, driver = driver.name(), ring, scheme, "data plane listening on {addr}");
    Ok(ServerHandle { local_addr: addr, driver, threads, listener_fds, draining, tls, metrics })
}

impl ServerHandle {
    /// Stop accepting, let requests in flight finish (up to the grace period),
    /// then stop the workers.
    pub fn shutdown(self) {
        self.draining.store(true, Ordering::SeqCst);
        // The workers' listeners stay open until their threads end.
        shutdown_sockets(&self.listener_fds);
        self.wait();
    }

    /// Block until the workers end.
    pub fn wait(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }

    /// A flag that, once set, drains the server (for signal handlers).
    pub fn draining_flag(&self) -> Arc<AtomicBool> {
        self.draining.clone()
    }
}

async fn worker_main(
    ctx: Rc<WorkerCtx>,
    std_listener: std::net::TcpListener,
    tls: Option<Arc<ServerTls>>,
    flush_every: Duration,
) {
    let listener = match TcpListener::from_std(std_listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(worker = ctx.id, error = %e, "cannot register the listener");
            return;
        }
    };
    let sweeper = ctx.clone();
    monoio::spawn(async move {
        loop {
            monoio::time::sleep(Duration::from_secs(1)).await;
            crate::supervise::debug_panic_hook(sweeper.id, || sweeper.registry.slots.iter().any(|s| s.answered() > 0));
            let snapshot = sweeper.snapshot();
            let pools = {
                let mut pool = sweeper.pool.borrow_mut();
                pool.sweep();
                // A node that left the snapshot (removed, disabled, offline) is cut off.
                let prefix = switchboard_shared::config::NODE_TARGET_PREFIX;
                pool.retain_keys(|k| k.strip_prefix(prefix).is_none_or(|id| snapshot.nodes.contains_key(id)));
                pool.idle_by_pool()
            };
            sweeper.metrics.set_pools(pools);
            // Pages freed since the last tick go back to the OS (`crate::memory`).
            crate::memory::release();
        }
    });
    if ctx.usage.borrow().enabled() {
        // Usage records leave in batches: when 256 are buffered, or on this tick.
        let flusher = ctx.clone();
        monoio::spawn(async move {
            loop {
                monoio::time::sleep(flush_every).await;
                flusher.usage.borrow_mut().flush();
            }
        });
    }
    let max_conns = ctx.cfg.max_connections_per_worker;
    loop {
        let accepted = listener.accept().await;
        if ctx.draining() {
            break;
        }
        match accepted {
            Ok((stream, _peer)) => {
                let _ = stream.set_nodelay(true);
                if ctx.conns.borrow().len() >= max_conns {
                    monoio::spawn(refuse(ctx.clone(), stream));
                    continue;
                }
                let tls = tls.as_ref().map(|t| t.current());
                monoio::spawn(serve_accepted(ctx.clone(), stream, tls));
            }
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(worker = ctx.id, error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    let grace = Instant::now() + Duration::from_millis(ctx.cfg.shutdown_grace_ms);
    while ctx.inflight.get() > 0 && Instant::now() < grace {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    // Wake the connections still open (idle keep-alives, or requests past the
    // grace period): their reads end, their tasks finish and close the sockets.
    shutdown_sockets(ctx.conns.borrow().iter());
    let closing = Instant::now() + Duration::from_secs(1);
    while !ctx.conns.borrow().is_empty() && Instant::now() < closing {
        monoio::time::sleep(Duration::from_millis(2)).await;
    }
    ctx.pool.borrow_mut().clear();
    // Every record of this worker goes to the pipeline before the thread ends.
    ctx.usage.borrow_mut().close();
    tracing::debug!(worker = ctx.id, "worker stopped");
}

/// One accepted connection's task, from accept to close.
///
/// A task's future is allocated whole for as long as its connection is open,
/// and an `async` block is as large as its largest state. The TLS handshake
/// and a TLS stream (rustls' buffers and state, inline) are tens of KiB, so
/// they live in a box of their own, allocated for TLS connections only: a
/// plain connection's task stays the size of [`conn::serve`] (the
/// `task_future_sizes` test bounds it).
///
/// A plain function returning an `async move` block: an `async fn` would keep
/// its arguments twice (as passed, and moved into its body).
// Not an `async fn` on purpose (see above): it would keep its arguments twice.
#[allow(clippy::manual_async_fn)]
fn serve_accepted(
    c: Rc<WorkerCtx>,
    stream: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> impl std::future::Future<Output = ()> {
    async move {
        let _open = ConnGuard::new(&c, stream.as_raw_fd());
        // A panic closes this connection only (see `supervise`).
        let slot = c.metrics.clone();
        match tls {
            None => crate::supervise::connection(c.id, &slot, conn::serve(c.clone(), stream)).await,
            Some(cfg) => crate::supervise::connection(c.id, &slot, Box::pin(serve_tls(c.clone(), stream, cfg))).await,
        }
    }
}

/// A TLS connection: the handshake (within the header timeout), then requests.
async fn serve_tls(c: Rc<WorkerCtx>, stream: TcpStream, cfg: Arc<rustls::ServerConfig>) {
    let acceptor = monoio_rustls::TlsAcceptor::from(cfg);
    let deadline = Instant::now() + c.header_timeout;
    if let Ok(Ok(s)) = monoio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        conn::serve(c, s).await;
    }
}

/// Over the connection limit: answer 503 and close, with a short deadline.
async fn refuse(ctx: Rc<WorkerCtx>, mut stream: TcpStream) {
    let err = GatewayError::overloaded();
    let mut out = Vec::new();
    crate::respond::render_json(&mut out, err.status, &err.to_json(), &ctx.next_request_id(), false);
    let _ = write_all(&mut stream, &mut out, Instant::now() + Duration::from_secs(1)).await;
}

#[cfg(test)]
mod task_size_tests {
    use super::*;

    fn future_size<A, B, C, F: std::future::Future>(_: impl Fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    fn future_size2<A, B, F: std::future::Future>(_: impl Fn(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// The size of the future `make` would return, without calling it (the
    /// arguments of such a call need not exist).
    fn size_of_unmade<F: std::future::Future>(_make: impl FnOnce() -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// The most a plain connection's task future may be in a debug build
    /// (the tests' build), in bytes: what every open connection, an open
    /// stream too, holds for its task (docs/performance.md, "Memory per open
    /// stream"). 6,784 bytes measured on 2026-12-01 once the rarely taken
    /// large states were boxed (opening an upstream connection, the client
    /// watch before the first byte, a stream's translator); 5,664 once the
    /// vendored monoio's timers lost their cache-line alignment
    /// (vendor/monoio/PATCHES.md); 3,888 on 2026-12-02 once the connection's
    /// functions stopped keeping their arguments twice, `forward` stopped
    /// carrying the attempt's dead locals across the relay, and a TLS
    /// upstream's send and relay were built apart (boxed) from a plain one's.
    /// The bound keeps the task with monoio's 48-byte task header (3,936
    /// bytes) inside mimalloc's 4 KiB size class: 160 bytes of margin. Past
    /// it, every open connection takes the next class, 5 KiB (it took 6 KiB
    /// before: 5,712 bytes).
    const TASK_MAX_DEBUG: usize = 4_096 - 48;

    /// Every open connection holds its task's future: a plain connection's
    /// must not carry the TLS handshake's and TLS stream's state inline, nor
    /// grow back past the bound above.
    #[test]
    fn task_future_sizes() {
        let plain = future_size2(conn::serve::<TcpStream>);
        let task = future_size(serve_accepted);
        let tls = future_size(serve_tls);
        eprintln!("task {task} bytes, plain serve {plain}, TLS path {tls}");
        assert!(task <= plain + 1024, "a connection's task is {task} bytes, its plain serve {plain}");
        assert!(tls > task, "the TLS path ({tls} bytes) is boxed apart from the task ({task} bytes)");
        if cfg!(debug_assertions) {
            assert!(task <= TASK_MAX_DEBUG, "a connection's task is {task} bytes, over its bound of {TASK_MAX_DEBUG}");
        }
    }

    /// What `forward` keeps beside the relay it awaits, at most, in a debug
    /// build: its loop's own state (the plan, the retry settings, the boxed
    /// errors, the timings), not the attempt's result, the verdict or the
    /// moved-from connection and head. 360 bytes measured on 2026-12-02
    /// (1,104 before the attempt was scoped).
    const FORWARD_OVER_RELAY_MAX_DEBUG: usize = 512;

    /// The size of the relay's future for an upstream connection of type `U`.
    #[allow(unreachable_code, clippy::diverging_sub_expression)]
    fn relay_size<U: crate::upstream::RelayConn>() -> usize {
        size_of_unmade(|| {
            crate::relay::relay::<TcpStream, U>(
                unreachable!(),
                unreachable!(),
                unreachable!(),
                unreachable!(),
                unreachable!(),
                unreachable!(),
                unreachable!(),
                unreachable!(),
            )
        })
    }

    /// A plain-TCP upstream's relay — what every open stream over plain HTTP
    /// awaits — is built apart from a TLS one's (whose reads' state is
    /// hundreds of bytes larger), and `forward` carries little beside it.
    #[test]
    #[allow(unreachable_code, clippy::diverging_sub_expression)]
    fn relay_future_sizes() {
        let relay_plain = relay_size::<TcpStream>();
        let relay_any = relay_size::<crate::upstream::UpStream>();
        let forward = size_of_unmade(|| {
            crate::forward::forward::<TcpStream>(unreachable!(), unreachable!(), unreachable!(), unreachable!())
        });
        eprintln!("relay from plain TCP {relay_plain} bytes, from any upstream {relay_any}, forward {forward}");
        assert!(
            relay_plain < relay_any,
            "a plain relay ({relay_plain} bytes) is sized apart from a TLS one ({relay_any})"
        );
        if cfg!(debug_assertions) {
            let over = forward.saturating_sub(relay_plain);
            assert!(
                over <= FORWARD_OVER_RELAY_MAX_DEBUG,
                "forward keeps {over} bytes beside its relay, over its bound of {FORWARD_OVER_RELAY_MAX_DEBUG}"
            );
        }
    }
}
