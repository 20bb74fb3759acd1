//! Switchboard's admin API: an axum service on its own port and its own tokio
//! runtime (never a data-plane thread), storing everything in SQLite.
//!
//! Every committed change is *prepared* (the routing spec is read back from
//! the database inside the transaction and compiled into a snapshot; a spec
//! the data plane could not serve aborts the transaction with 422) and then
//! *published*: swapped into the data plane's `SnapshotStore`, and announced
//! on the versioned watch that remote data planes long-poll.

pub mod api;
pub mod crypt;
pub mod db;
pub mod error;
pub mod model;
pub mod nodes;
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
    /// Whether `listen` may be shared with a running admin (`--handover`).
    pub sharing: switchboard_dataplane::server::AddrSharing,
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
        let (tx, _) = watch::channel(Published { version, spec: Arc::new(spec) });
        let state = Arc::new(State {
            db: Mutex::new(conn),
            sealer,
            prep,
            store,
            watch: tx,
            live,
            heartbeat_ms: std::sync::atomic::AtomicU64::new(switchboard_shared::config::DEFAULT_NODE_HEARTBEAT_MS),
        });
        state.republish()?;
        state.seed_quotas().map_err(|e| e.message)?;
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
            let snapshot = compile(&spec, version, &self.prep)
                .map_err(|e| ApiError::invalid_field(&e.path, format!("the change cannot be served: {e}")))?;
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
        use switchboard_dataplane::policy::{key_scope, org_scope};
        let spec = self.watch.borrow().spec.clone();
        let now = switchboard_dataplane::policy::now_unix_ms() as i64 / 1000;
        let scopes = spec
            .keys
            .iter()
            .flat_map(|k| k.quotas.iter().map(move |q| ("key_id", k.id.clone(), key_scope(&k.id), q.period)))
            .chain(
                spec.orgs
                    .iter()
                    .flat_map(|o| o.quotas.iter().map(move |q| ("org", o.name.clone(), org_scope(&o.name), q.period))),
            );
        for (column, value, scope, period) in scopes {
            let q = self.prep.policy.quota_state(&scope, period);
            if q.is_seeded() {
                continue;
            }
            let (start, _) = period.bounds(now);
            let (nanos, tokens) = self.read(|c| store::spent_since(c, column, &value, start))?;
            q.seed(start.max(0) as u64, nanos, tokens);
        }
        Ok(())
    }

    /// The rate-limit and quota state shared with the in-process data plane.
    pub fn policy(&self) -> &switchboard_dataplane::policy::PolicyRegistry {
        &self.prep.policy
    }

    /// Account usage records (from a remote data plane) in one transaction;
    /// returns how many were new.
    pub fn ingest(&self, records: &[switchboard_shared::usage::UsageRecord]) -> ApiResult<usize> {
        let mut conn = self.db.lock().map_err(|_| ApiError::internal("database lock poisoned"))?;
        Ok(usage::write_batch(&mut conn, records)?)
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
    let sweeper = state.clone();
    let app = api::app(state, cfg.max_body_bytes);
    let tls = cfg.tls.clone();
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
            let stop = async {
                let _ = rx.await;
            };
            let result = match tls {
                None => axum::serve(listener, app).with_graceful_shutdown(stop).await,
                Some(tls) => match tls_listener(listener, tls) {
                    Ok(l) => axum::serve(l, app).with_graceful_shutdown(stop).await,
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "admin API stopped");
            }
        });
    })?;
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, scheme, "admin API listening on {addr}");
    Ok(AdminHandle { addr, shutdown: Some(tx), thread: Some(thread) })
}
