//! Switchboard's admin API: an axum service on its own port and its own tokio
//! runtime (never a data-plane thread), storing everything in SQLite.
//!
//! Every committed change is *prepared* (the routing spec is read back from
//! the database inside the transaction and compiled into a snapshot; a spec
//! the data plane could not serve aborts the transaction with 422) and then
//! *published*: swapped into the data plane's `SnapshotStore`, and announced
//! on the versioned watch that remote data planes long-poll.

pub mod api;
pub mod cluster;
pub mod console;
pub mod crypt;
pub mod db;
pub mod error;
pub mod model;
pub mod nodes;
pub mod smoke;
pub mod store;
pub mod usage;

use error::{ApiError, ApiResult};
use rusqlite::Connection;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use switchboard_dataplane::snapshot::{compile, Prepare, SnapshotStore};
use switchboard_shared::{KeyHasher, RoutingSpec};
use tokio::sync::watch;

/// What the admin service publishes: a snapshot version and its spec.
#[derive(Clone, Debug)]
pub struct Published {
    pub version: u64,
    pub spec: Arc<RoutingSpec>,
}

pub struct State {
    db: Mutex<Connection>,
    /// Encrypts provider secrets at rest; its key is never in the database.
    sealer: crypt::Sealer,
    /// DNS cache and key hasher for preparing snapshots; the hasher also
    /// hashes client keys and admin tokens at rest.
    prep: Prepare,
    /// The in-process data plane's store, when there is one.
    store: Option<Arc<SnapshotStore>>,
    watch: watch::Sender<Published>,
    /// Nodes' last heartbeats.
    pub live: nodes::Live,
    /// How often nodes send heartbeats (told to them in every reply).
    heartbeat_ms: std::sync::atomic::AtomicU64,
    /// This admin's identity, new at every start: snapshot versions are
    /// comparable only under the same instance (a restart on a restored or
    /// recreated database may count from a lower version), so a data plane
    /// that saw another instance takes the snapshot whatever its number.
    instance: String,
    /// Where the smoke check sends its requests by default: the in-process
    /// data plane's listener (`switchboard serve`).
    dataplane_url: std::sync::OnceLock<String>,
    /// The web console's sessions and settings.
    pub console: console::Console,
}

/// When a change publishes a snapshot.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Publish {
    Never,
    /// When it wrote an audit entry.
    IfChanged,
    Always,
}

pub type SharedState = Arc<State>;

#[derive(Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub database: PathBuf,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Serve HTTPS with this (reloadable) certificate.
    pub tls: Option<Arc<switchboard_dataplane::tls::ServerTls>>,
    /// How often nodes send heartbeats; one that misses 2.5 intervals is offline.
    pub node_heartbeat_ms: u64,
    /// Connection limits of the admin listener.
    pub conns: ConnLimits,
    /// Whether `listen` may be shared with a running admin (`--handover`).
    pub sharing: switchboard_dataplane::server::AddrSharing,
}

/// The admin listener's connection limits: a head, or an idle keep-alive
/// connection, gets `head_timeout_ms`; at most `max_connections` are open at
/// once (and never more than a quarter of the process's open-files limit,
/// so a flood of admin connections cannot starve the data plane of file
/// descriptors); past it new connections are closed at once.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    pub head_timeout_ms: u64,
    pub max_connections: usize,
    /// How long a stopping admin lets requests in flight (a long poll) finish.
    pub shutdown_grace_ms: u64,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits { head_timeout_ms: 10_000, max_connections: 256, shutdown_grace_ms: 2_000 }
    }
}

impl ConnLimits {
    /// `max_connections`, within a quarter of the open-files soft limit.
    fn cap(&self) -> usize {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit with a valid pointer to a local struct.
        let soft =
            if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 { lim.rlim_cur as usize } else { 1024 };
        self.max_connections.min(soft / 4).max(1)
    }
}

/// Serve `app` on `listener` with the admin's connection limits, until
/// `stop`; then let requests in flight finish for the grace period.
async fn serve_limited<L>(
    mut listener: L,
    app: axum::Router,
    limits: ConnLimits,
    stop: tokio::sync::oneshot::Receiver<()>,
) where
    L: axum::serve::Listener,
    L::Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use std::time::Duration;
    let cap = limits.cap();
    let open = Arc::new(tokio::sync::Semaphore::new(cap));
    let (closing_tx, closing_rx) = watch::channel(false);
    let grace = Duration::from_millis(limits.shutdown_grace_ms);
    let mut stop = std::pin::pin!(stop);
    let mut refused_logged: Option<std::time::Instant> = None;
    loop {
        let (io, _peer) = tokio::select! {
            c = listener.accept() => c,
            _ = &mut stop => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            // At the cap: close at once rather than hold a descriptor.
            if refused_logged.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                refused_logged = Some(std::time::Instant::now());
                tracing::warn!(max_connections = cap, "admin connection refused: too many open");
            }
            drop(io);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut closing = closing_rx.clone();
        tokio::spawn(async move {
            let _open = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_millis(limits.head_timeout_ms));
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = closing.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(grace, conn).await;
                }
            }
        });
    }
    let _ = closing_tx.send(true);
    // Every connection done, or the grace period over (a long poll is cut).
    let _ = tokio::time::timeout(grace + Duration::from_millis(100), open.acquire_many(cap as u32)).await;
}

/// Accepted TLS connections, handshaken off the accept loop (a slow client
/// cannot hold up the others), handed to axum.
struct TlsListener {
    addr: SocketAddr,
    rx: tokio::sync::mpsc::Receiver<(tokio_rustls::server::TlsStream<tokio::net::TcpStream>, SocketAddr)>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The acceptor stopped: wait for shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

/// Accept TCP connections and run TLS handshakes (10 s each at most).
fn tls_listener(
    listener: tokio::net::TcpListener,
    tls: Arc<switchboard_dataplane::tls::ServerTls>,
) -> std::io::Result<TlsListener> {
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::mpsc::channel(128);
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
            let tx = tx.clone();
            tokio::spawn(async move {
                let hs = tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream)).await;
                if let Ok(Ok(s)) = hs {
                    let _ = tx.send((s, peer)).await;
                }
            });
        }
    });
    Ok(TlsListener { addr, rx })
}

impl State {
    /// Open the database, and publish what it holds.
    pub fn open(
        database: &std::path::Path,
        prep: Prepare,
        store: Option<Arc<SnapshotStore>>,
    ) -> Result<SharedState, String> {
        Self::open_with(database, prep, store, db::DEFAULT_BUSY_TIMEOUT)
    }

    /// As [`State::open`], with how long a write waits on a locked database.
    pub fn open_with(
        database: &std::path::Path,
        prep: Prepare,
        store: Option<Arc<SnapshotStore>>,
        busy_timeout: std::time::Duration,
    ) -> Result<SharedState, String> {
        let conn = db::open_with(database, busy_timeout)
            .map_err(|e| format!("cannot open database `{}`: {e}", database.display()))?;
        let sealer = crypt::Sealer::for_database(database)?;
        let dbv = store::Db { conn: &conn, sealer: &sealer };
        // A new database starts at version 1 (empty), so followers have something to fetch.
        let mut version = store::snapshot_version(&dbv).map_err(|e| e.message)?;
        if version == 0 {
            version = store::bump_snapshot_version(&dbv).map_err(|e| e.message)?;
        }
        let live = nodes::Live::default();
        let restored = nodes::restore_live(&dbv, &live).map_err(|e| e.message)?;
        if restored > 0 {
            tracing::info!(nodes = restored, "nodes restored from their last advertisement until they heartbeat");
        }
        let mut spec = store::routing_spec(&dbv).map_err(|e| e.message)?;
        spec.nodes = nodes::spec_nodes(&dbv, &live).map_err(|e| e.message)?;
        // State saved before the ranges were checked must not stop the start:
        // serve it clamped, and say what to fix.
        for path in spec.clamp_to_ranges() {
            tracing::error!(field = %path, "a stored value is out of its documented range; serving it clamped (fix it through the API)");
        }
        let (tx, _) = watch::channel(Published { version, spec: Arc::new(spec) });
        let state = Arc::new(State {
            db: Mutex::new(conn),
            sealer,
            prep,
            store,
            watch: tx,
            live,
            heartbeat_ms: std::sync::atomic::AtomicU64::new(switchboard_shared::config::DEFAULT_NODE_HEARTBEAT_MS),
            instance: db::random_hex(8),
            dataplane_url: std::sync::OnceLock::new(),
            console: console::Console::default(),
        });
        state.republish()?;
        // Start-up never depends on the usage tables: quotas that cannot be
        // seeded start from zero, loudly.
        if let Err(e) = state.seed_quotas() {
            tracing::error!(error = %e.message, "cannot read accounted usage back for quotas; they count from zero");
        }
        Ok(state)
    }

    /// Compile and publish the current database contents (at start).
    fn republish(&self) -> Result<(), String> {
        let published = self.watch.borrow().clone();
        let snapshot = compile(&published.spec, published.version, &self.prep).map_err(|e| e.to_string())?;
        if let Some(store) = &self.store {
            store.publish(snapshot);
        }
        Ok(())
    }

    /// Upstream health shared with the in-process data plane.
    pub fn health(&self) -> &switchboard_dataplane::health::HealthRegistry {
        &self.prep.health
    }

    pub fn hasher(&self) -> &KeyHasher {
        &self.prep.hasher
    }

    pub fn subscribe(&self) -> watch::Receiver<Published> {
        self.watch.subscribe()
    }

    pub fn current(&self) -> Published {
        self.watch.borrow().clone()
    }

    /// Tell the smoke check where the in-process data plane listens
    /// (`http://127.0.0.1:PORT`); the first call wins.
    pub fn set_dataplane_url(&self, url: String) {
        let _ = self.dataplane_url.set(url);
    }

    /// The in-process data plane's URL, when there is one.
    pub fn dataplane_url(&self) -> Option<&str> {
        self.dataplane_url.get().map(String::as_str)
    }

    /// This admin's instance id (see the field).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Run a read on the database.
    pub fn read<T>(&self, f: impl FnOnce(&store::Db<'_>) -> ApiResult<T>) -> ApiResult<T> {
        let conn = self.db.lock().map_err(|_| ApiError::internal("database lock poisoned"))?;
        f(&store::Db { conn: &conn, sealer: &self.sealer })
    }

    /// Run a change in one transaction. When `routing` is true and the change
    /// changed something (it wrote an audit entry), it is prepared into a
    /// snapshot before commit and published after; a change that leaves an
    /// unservable spec is rolled back. A no-op publishes nothing.
    pub fn write<T>(&self, routing: bool, f: impl FnOnce(&store::Db<'_>) -> ApiResult<T>) -> ApiResult<T> {
        self.write_with(if routing { Publish::IfChanged } else { Publish::Never }, f)
    }

    fn write_with<T>(&self, publish: Publish, f: impl FnOnce(&store::Db<'_>) -> ApiResult<T>) -> ApiResult<T> {
        let mut conn = self.db.lock().map_err(|_| ApiError::internal("database lock poisoned"))?;
        let tx = conn.transaction()?;
        let db = store::Db { conn: &tx, sealer: &self.sealer };
        let audit_before = store::last_audit_id(&db)?;
        let out = f(&db)?;
        let due = match publish {
            Publish::Never => false,
            Publish::IfChanged => store::last_audit_id(&db)? != audit_before,
            Publish::Always => true,
        };
        let prepared = if due {
            let version = store::bump_snapshot_version(&db)?;
            let mut spec = store::routing_spec(&db)?;
            spec.nodes = nodes::spec_nodes(&db, &self.live)?;
            if publish == Publish::Always {
                // Node changes publish whatever else is stored: an out-of-range
                // value saved by an older version is served clamped, as at start.
                spec.clamp_to_ranges();
            }
            let snapshot = compile(&spec, version, &self.prep).map_err(|e| unservable(&spec, &e))?;
            Some((version, spec, snapshot))
        } else {
            None
        };
        tx.commit()?;
        // Publishing reads the database again (quotas): let go of it first.
        drop(conn);
        if let Some((version, spec, snapshot)) = prepared {
            if let Some(store) = &self.store {
                store.publish(snapshot);
            }
            self.watch.send_replace(Published { version, spec: Arc::new(spec) });
            tracing::info!(version, "routing snapshot published");
            if let Err(e) = self.seed_quotas() {
                tracing::warn!(error = %e.message, "cannot read accounted usage back for quotas");
            }
        }
        Ok(out)
    }

    /// How often nodes heartbeat.
    pub fn heartbeat_ms(&self) -> u64 {
        self.heartbeat_ms.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set_heartbeat_ms(&self, ms: u64) {
        self.heartbeat_ms.store(ms.max(100), std::sync::atomic::Ordering::Relaxed);
    }

    /// Exchange an enrollment token for a node identity.
    pub fn enroll(
        &self,
        req: &switchboard_shared::node::EnrollRequest,
    ) -> ApiResult<switchboard_shared::node::EnrollResponse> {
        let hb = self.heartbeat_ms();
        self.write(false, |c| nodes::enroll(c, &self.prep.hasher, req, hb))
    }

    /// Take a node's heartbeat; publish a snapshot when what gateways route
    /// on changed.
    pub fn node_heartbeat(
        &self,
        credential: &str,
        beat: switchboard_shared::node::Heartbeat,
    ) -> ApiResult<switchboard_shared::node::HeartbeatReply> {
        let (id, changed, status, routable) =
            self.write(false, |c| nodes::heartbeat(c, &self.prep.hasher, &self.live, credential, beat))?;
        if changed {
            tracing::info!(node = %id, status, routable, "node advertisement changed; publishing");
            self.publish_nodes()?;
        }
        Ok(switchboard_shared::node::HeartbeatReply { status, routable, heartbeat_ms: self.heartbeat_ms() })
    }

    /// Take nodes whose heartbeats stopped out of the snapshot.
    pub fn expire_nodes(&self) -> ApiResult<()> {
        if self.live.expire(self.heartbeat_ms()) {
            self.publish_nodes()?;
        }
        Ok(())
    }

    /// Publish a snapshot with the nodes as they are now.
    fn publish_nodes(&self) -> ApiResult<()> {
        self.write_with(Publish::Always, |_| Ok(()))
    }

    /// Give every quota not counted yet (at start, or just configured) the
    /// usage already accounted in its period, so a restart or a new cap
    /// starts from the real totals.
    fn seed_quotas(&self) -> ApiResult<()> {
        use switchboard_dataplane::limits::Scope;
        let spec = self.watch.borrow().spec.clone();
        let now = switchboard_dataplane::limits::now_unix_ms() as i64 / 1000;
        let keys = spec.keys.iter().flat_map(|k| k.limits.quotas.iter().map(move |q| ("key_id", &k.id, q.period)));
        let orgs = spec.orgs.iter().flat_map(|o| o.limits.quotas.iter().map(move |q| ("org", &o.name, q.period)));
        for (column, value, period) in keys.chain(orgs) {
            let scope = if column == "org" { Scope::Org(value) } else { Scope::Key(value) };
            let q = self.prep.policy.quota_state(scope, period);
            if q.is_seeded() {
                continue;
            }
            let (start, _) = period.bounds(now);
            let (nanos, tokens) = self.read(|c| store::spent_since(c, column, value, start))?;
            q.seed(start.max(0) as u64, nanos, tokens);
        }
        Ok(())
    }

    /// The rate-limit and quota state shared with the in-process data plane.
    pub fn policy(&self) -> &switchboard_dataplane::limits::PolicyRegistry {
        &self.prep.policy
    }

    /// Account usage records (from a remote data plane) in one transaction;
    /// returns how many were new. A node whose records had to be clamped is
    /// flagged; at [`nodes::NONSENSE_REPORTS_LIMIT`] it leaves routing.
    pub fn ingest(&self, records: &[switchboard_shared::usage::UsageRecord]) -> ApiResult<usize> {
        let mut conn = self.db.lock().map_err(|_| ApiError::internal("database lock poisoned"))?;
        let written = usage::write_batch(&mut conn, records)?;
        drop(conn);
        let mut quarantined = false;
        for target in &written.clamped_targets {
            let Some(name) = target.strip_prefix(switchboard_shared::config::NODE_TARGET_PREFIX) else {
                tracing::warn!(target_name = %target, "an upstream reported usage past the documented maxima; clamped");
                continue;
            };
            let newly = self.live.flag(name);
            tracing::warn!(node = %name, reports = self.live.flags(name), "a node reported usage past the documented maxima; clamped");
            if newly {
                tracing::error!(node = %name, "node taken out of routing: it keeps reporting nonsense usage (re-enable it to route to it again)");
                quarantined = true;
            }
        }
        // The records are accounted whatever happens next: a failed publish
        // must not make the sender send them again.
        if quarantined {
            if let Err(e) = self.publish_nodes() {
                tracing::warn!(error = %e.message, "cannot publish a flagged node's removal yet; the next node change will");
            }
        }
        Ok(written.fresh)
    }

    /// Import a routing spec (the config file's) idempotently, in one
    /// transaction; returns how many audit entries it wrote (0 = nothing
    /// changed, and no new snapshot).
    pub fn seed(&self, spec: &RoutingSpec) -> ApiResult<usize> {
        self.write(true, |c| store::seed(c, &self.prep.hasher, spec))
    }

    /// Make sure an admin token exists. With `env_token` (from
    /// SWITCHBOARD_ADMIN_TOKEN) that token is registered if unknown; with none
    /// and no tokens at all, one is generated and returned (to print once).
    pub fn bootstrap_token(&self, env_token: Option<&str>) -> ApiResult<Option<String>> {
        self.write(false, |c| {
            if let Some(t) = env_token {
                if let Some(id) = store::revoked_token_id(c, &self.prep.hasher, t)? {
                    // Revoked on purpose: the environment does not bring it back.
                    tracing::error!(
                        token = %id,
                        "SWITCHBOARD_ADMIN_TOKEN is an admin token that was revoked; it is refused. \
                         Use another admin token, or set SWITCHBOARD_ADMIN_TOKEN to a new value to register that one"
                    );
                    return Ok(None);
                }
                if store::authenticate_token(c, &self.prep.hasher, t)?.is_none() {
                    let name = format!("from-env-{}", &db::random_hex(4));
                    store::insert_token(c, &self.prep.hasher, "bootstrap", &name, "admin", t)?;
                }
                return Ok(None);
            }
            if store::token_count(c)? > 0 {
                return Ok(None);
            }
            let secret = store::new_token_secret();
            store::insert_token(c, &self.prep.hasher, "bootstrap", "bootstrap", "admin", &secret)?;
            Ok(Some(secret))
        })
    }
}

/// A spec the data plane could not serve, as a 422 naming the field the
/// admin API knows (`connect_timeout_ms`) and the resource by name, not the
/// spec's internal path (`upstreams[3].connect_timeout_ms`).
fn unservable(spec: &RoutingSpec, e: &switchboard_shared::ConfigError) -> ApiError {
    let (resource, index, field) = split_path(&e.path);
    let name = index.and_then(|i| match resource {
        "upstreams" => spec.upstreams.get(i).map(|u| ("provider", u.name.clone())),
        "models" => spec.models.get(i).map(|m| ("route", m.name.clone())),
        "keys" => spec.keys.get(i).map(|k| ("key", k.id.clone())),
        "orgs" => spec.orgs.get(i).map(|o| ("org", o.name.clone())),
        "nodes" => spec.nodes.get(i).map(|n| ("node", n.name.clone())),
        _ => None,
    });
    let field = api_field(resource, field);
    let shown: String = name.as_ref().map_or(String::new(), |n| n.1.chars().take(128).collect());
    let message = match &name {
        Some((kind, _)) => format!("The change cannot be served: {kind} `{shown}`: `{field}` {}.", e.message),
        None => format!("The change cannot be served: {e}."),
    };
    ApiError::invalid_field(&field, message)
}

/// `upstreams[3].prices[0].model` -> ("upstreams", Some(3), "prices[0].model").
fn split_path(path: &str) -> (&str, Option<usize>, &str) {
    let Some(open) = path.find('[') else { return ("", None, path) };
    let Some(close) = path[open..].find(']').map(|c| open + c) else { return ("", None, path) };
    let index = path[open + 1..close].parse().ok();
    let rest = path[close + 1..].strip_prefix('.').unwrap_or(&path[close + 1..]);
    (&path[..open], index, rest)
}

/// A spec field under the name the admin API gives it.
fn api_field(resource: &str, field: &str) -> String {
    let renamed = match resource {
        // A provider's price table is `models[i].name` in the API.
        "upstreams" => field.replacen("prices[", "models[", 1).replace("].model", "].name"),
        "models" => field.replace(".upstream", ".provider"),
        _ => field.to_string(),
    };
    if renamed.is_empty() {
        "spec".to_string()
    } else {
        renamed
    }
}

/// A running admin service.
pub struct AdminHandle {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AdminHandle {
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AdminHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Start the admin API on its own thread and tokio runtime.
pub fn start(cfg: &AdminConfig, state: SharedState) -> std::io::Result<AdminHandle> {
    let std_listener = switchboard_dataplane::server::bind_reuseport(cfg.listen, 1, 1024, cfg.sharing)?
        .pop()
        .ok_or_else(|| std::io::Error::other("no listener"))?;
    let addr = std_listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    state.set_heartbeat_ms(cfg.node_heartbeat_ms);
    state.console.set_secure(cfg.tls.is_some());
    let sweeper = state.clone();
    let app = api::app(state, cfg.max_body_bytes);
    let tls = cfg.tls.clone();
    let conns = cfg.conns;
    let thread = std::thread::Builder::new().name("sb-admin".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "admin runtime failed to start");
                return;
            }
        };
        rt.block_on(async move {
            let listener = match tokio::net::TcpListener::from_std(std_listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "admin listener failed");
                    return;
                }
            };
            // Nodes whose heartbeats stop leave the snapshot.
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(sweeper.heartbeat_ms() / 4)).await;
                    let st = sweeper.clone();
                    match tokio::task::spawn_blocking(move || st.expire_nodes()).await {
                        Ok(Err(e)) => tracing::warn!(error = %e.message, "cannot publish node changes"),
                        Err(e) => tracing::warn!(error = %e, "node sweeper failed"),
                        Ok(Ok(())) => {}
                    }
                }
            });
            match tls {
                None => serve_limited(listener, app, conns, rx).await,
                Some(tls) => match tls_listener(listener, tls) {
                    Ok(l) => serve_limited(l, app, conns, rx).await,
                    Err(e) => tracing::error!(error = %e, "admin API stopped"),
                },
            }
        });
    })?;
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, scheme, "admin API listening on {addr}");
    Ok(AdminHandle { addr, shutdown: Some(tx), thread: Some(thread) })
}
