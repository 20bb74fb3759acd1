//! Scale-out on Redis (`[cluster]`, docs/scale-out.md): rate limits and
//! quotas shared by every data plane, exact across processes.
//!
//! * [`client`]: the per-worker RESP client on monoio (pipelined on a few
//!   connections per worker; the wire format is the `redis-protocol` crate's).
//! * [`sync`]: a small blocking client, for the health probe and the admin's
//!   quota re-seeding (threads of their own, never a worker).
//! * [`limits`]: a request's admission — all of its windows and quotas in one
//!   atomic script (`admit.lua`) — and its reconcile (`settle.lua`).
//!
//! Keys are hash-tagged by org (`sb:{org}:...`): a key's own limits live under
//! its org's tag, so all of a request's keys are in one hash slot and one
//! script call works on Redis Cluster too.

pub mod cache;
pub mod client;
pub mod limits;
pub mod seed;
pub mod sync;

use arc_swap::{ArcSwap, ArcSwapOption};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchboard_shared::cluster::{ClusterConfig, OnRedisDown};
use switchboard_shared::Secret;

/// The Lua scripts, loaded once per Redis (EVALSHA; EVAL again on NOSCRIPT).
pub struct Script {
    pub body: &'static str,
    pub sha: String,
}

impl Script {
    fn new(body: &'static str) -> Script {
        use sha1_smol::Sha1;
        Script { body, sha: Sha1::from(body).digest().to_string() }
    }
}

/// Counters for `/metrics` and `GET /v1/admin/cluster`.
#[derive(Default)]
pub struct Stats {
    pub admitted: AtomicU64,
    pub refused: AtomicU64,
    pub commands: AtomicU64,
    pub errors: AtomicU64,
    pub timeouts: AtomicU64,
    pub went_down: AtomicU64,
    pub came_up: AtomicU64,
    /// Requests decided by `on_redis_down` (Redis down, or a quota not seeded yet).
    pub fallback: AtomicU64,
    pub unseeded: AtomicU64,
    pub reconciles: AtomicU64,
    pub reseeded: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub cache_stores: AtomicU64,
}

/// The process's connection settings and Redis health.
pub struct Cluster {
    pub cfg: ClusterConfig,
    pub endpoint: switchboard_shared::url::BaseUrl,
    /// Resolved off the workers (at start, and by the prober).
    addr: ArcSwap<Vec<SocketAddr>>,
    pub tls: Option<(Arc<rustls::ClientConfig>, rustls::pki_types::ServerName<'static>)>,
    pub auth: Option<(Option<String>, Secret)>,
    up: AtomicBool,
    failures: AtomicU32,
    /// Unix ms of the last up/down change.
    pub changed_at_ms: AtomicU64,
    pub last_error: Mutex<String>,
    pub stats: Stats,
    pub admit_script: Script,
    pub settle_script: Script,
    pub seed_script: Script,
    /// Bumped on every `install`: workers drop clients of an older one.
    pub generation: u64,
}

static CLUSTER: ArcSwapOption<Cluster> = ArcSwapOption::const_empty();
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// The installed cluster settings, if `[cluster]` is on.
pub fn current() -> Option<Arc<Cluster>> {
    CLUSTER.load_full()
}

/// Turn `[cluster]` on for this process: resolve Redis, start the prober.
/// Called once at start (`serve`, `dataplane`); Redis need not be up yet.
pub fn install(cfg: &ClusterConfig) -> Result<Arc<Cluster>, String> {
    cfg.validate().map_err(|e| e.to_string())?;
    let endpoint = cfg.endpoint()?;
    let tls = if endpoint.tls {
        let config = crate::tls::client_config(cfg.ca_file.as_deref())?;
        let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone())
            .map_err(|e| format!("cluster.redis_url: {e}"))?;
        Some((config, name))
    } else {
        None
    };
    let auth = cfg.password()?.map(|p| (cfg.username.clone(), p));
    let c = Arc::new(Cluster {
        cfg: cfg.clone(),
        addr: ArcSwap::from_pointee(resolve(&endpoint).unwrap_or_default()),
        endpoint,
        tls,
        auth,
        up: AtomicBool::new(false),
        failures: AtomicU32::new(0),
        changed_at_ms: AtomicU64::new(crate::policy::now_unix_ms()),
        last_error: Mutex::new(String::new()),
        stats: Stats::default(),
        admit_script: Script::new(include_str!("admit.lua")),
        settle_script: Script::new(include_str!("settle.lua")),
        seed_script: Script::new(include_str!("seed.lua")),
        generation: GENERATION.fetch_add(1, Ordering::Relaxed) + 1,
    });
    // One probe now, so the first requests find Redis up if it is.
    c.probe_once();
    CLUSTER.store(Some(c.clone()));
    let weak = Arc::downgrade(&c);
    std::thread::Builder::new()
        .name("sb-redis-probe".into())
        .spawn(move || loop {
            let Some(c) = weak.upgrade() else { return };
            std::thread::sleep(Duration::from_millis(c.cfg.probe_interval_ms));
            c.probe_once();
        })
        .map_err(|e| format!("cannot start the Redis prober: {e}"))?;
    tracing::info!(redis = %c.cfg.redis_url, on_redis_down = c.cfg.on_redis_down.name(), up = c.is_up(), "cluster: limits and quotas shared through Redis");
    Ok(c)
}

fn resolve(e: &switchboard_shared::url::BaseUrl) -> Result<Vec<SocketAddr>, String> {
    (e.host.as_str(), e.port).to_socket_addrs().map(|a| a.collect()).map_err(|err| err.to_string())
}

impl Cluster {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr.load().first().copied()
    }

    pub fn on_down(&self) -> OnRedisDown {
        self.cfg.on_redis_down
    }

    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.command_timeout_ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.connect_timeout_ms)
    }

    /// A command answered: Redis is fine as far as requests can tell.
    pub fn success(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }

    /// A command failed or timed out: after `down_after_failures` in a row,
    /// Redis is down until a probe answers.
    pub fn failure(&self, timed_out: bool, why: &str) {
        let stat = if timed_out { &self.stats.timeouts } else { &self.stats.errors };
        stat.fetch_add(1, Ordering::Relaxed);
        let n = self.failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if n >= self.cfg.down_after_failures {
            self.set_up(false, why);
        }
    }

    fn set_up(&self, up: bool, why: &str) {
        if self.up.swap(up, Ordering::AcqRel) == up {
            return;
        }
        self.changed_at_ms.store(crate::policy::now_unix_ms(), Ordering::Relaxed);
        if up {
            self.failures.store(0, Ordering::Relaxed);
            self.stats.came_up.fetch_add(1, Ordering::Relaxed);
            tracing::info!(redis = %self.cfg.redis_url, "cluster: Redis is up; limits and quotas are shared again");
        } else {
            self.stats.went_down.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut e) = self.last_error.lock() {
                *e = why.to_string();
            }
            tracing::error!(redis = %self.cfg.redis_url, error = %why, on_redis_down = self.cfg.on_redis_down.name(),
                "cluster: Redis is down; limited requests follow on_redis_down until it answers");
        }
    }

    /// One health probe (PING on a fresh connection), off the request path.
    /// Also resolves the host again and loads the scripts.
    pub fn probe_once(&self) {
        if let Ok(a) = resolve(&self.endpoint) {
            if !a.is_empty() && **self.addr.load() != a {
                self.addr.store(Arc::new(a));
            }
        }
        let result = sync::SyncConn::connect(self).and_then(|mut conn| {
            let pong = conn.call(&[b"PING"])?;
            if !matches!(pong, sync::Frame::SimpleString(ref s) if s == b"PONG") {
                return Err(format!("unexpected answer to PING: {pong:?}"));
            }
            if !self.is_up() {
                for s in [&self.admit_script, &self.settle_script, &self.seed_script] {
                    conn.call(&[b"SCRIPT", b"LOAD", s.body.as_bytes()])?;
                }
            }
            Ok(())
        });
        match result {
            Ok(()) => self.set_up(true, ""),
            Err(e) => self.set_up(false, &e),
        }
    }

    /// `GET /v1/admin/cluster`.
    pub fn status(&self) -> serde_json::Value {
        let s = &self.stats;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "object": "cluster",
            "redis_url": self.cfg.redis_url,
            "state": if self.is_up() { "up" } else { "down" },
            "on_redis_down": self.cfg.on_redis_down.name(),
            "since": switchboard_shared::time::format_rfc3339((n(&self.changed_at_ms) / 1000) as i64),
            "last_error": self.last_error.lock().map(|e| e.clone()).unwrap_or_default(),
            "admitted": n(&s.admitted),
            "refused": n(&s.refused),
            "fallbacks": n(&s.fallback),
            "unseeded": n(&s.unseeded),
            "reconciles": n(&s.reconciles),
            "commands": n(&s.commands),
            "errors": n(&s.errors),
            "timeouts": n(&s.timeouts),
            "went_down": n(&s.went_down),
            "came_up": n(&s.came_up),
            "quotas_reseeded": n(&s.reseeded),
            "shared_cache": {"hits": n(&s.cache_hits), "misses": n(&s.cache_misses), "stores": n(&s.cache_stores)},
        })
    }
}

/// `/metrics` lines (nothing when `[cluster]` is off).
pub fn render_metrics(o: &mut String) {
    use std::fmt::Write;
    let Some(c) = current() else { return };
    let s = &c.stats;
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let _ =
        writeln!(o, "# TYPE switchboard_cluster_redis_up gauge\nswitchboard_cluster_redis_up {}", u8::from(c.is_up()));
    let _ = writeln!(o, "# TYPE switchboard_cluster_transitions_total counter");
    let _ = writeln!(o, "switchboard_cluster_transitions_total{{to=\"down\"}} {}", n(&s.went_down));
    let _ = writeln!(o, "switchboard_cluster_transitions_total{{to=\"up\"}} {}", n(&s.came_up));
    let _ = writeln!(o, "# TYPE switchboard_cluster_fallback_total counter");
    let _ =
        writeln!(o, "switchboard_cluster_fallback_total{{mode=\"{}\"}} {}", c.cfg.on_redis_down.name(), n(&s.fallback));
    for (name, v) in [
        ("admitted", &s.admitted),
        ("refused", &s.refused),
        ("commands", &s.commands),
        ("errors", &s.errors),
        ("timeouts", &s.timeouts),
        ("reconciles", &s.reconciles),
        ("cache_hits", &s.cache_hits),
        ("cache_misses", &s.cache_misses),
        ("cache_stores", &s.cache_stores),
    ] {
        let _ =
            writeln!(o, "# TYPE switchboard_cluster_{name}_total counter\nswitchboard_cluster_{name}_total {}", n(v));
    }
}
