//! The routing snapshot: an immutable, compiled view of keys, routes and
//! upstreams that every request reads once.
//!
//! A change is two steps: [`compile`] ("prepare": may fail, does all the
//! blocking work — environment variables, CA files, DNS) and
//! [`SnapshotStore::publish`] ("publish": one pointer swap, cannot fail).
//! Requests in flight keep the snapshot they started with. Each worker reads
//! the store through a [`LocalSnapshot`], so a request costs a generation check
//! and a non-atomic `Rc` clone, not an atomic increment on a shared counter.

use crate::dns::{cache_key, DnsCache};
use arc_swap::{ArcSwap, Cache};
use rustc_hash::FxHashMap;
use rustls::pki_types::ServerName;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use switchboard_shared::config::ConfigError;
use switchboard_shared::url::BaseUrl;
use switchboard_shared::{KeyHash, KeyHasher, RoutingSpec};

/// Hashes a [`KeyHash`] by its first bytes: the digest is already uniform.
#[derive(Default)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

impl std::hash::Hash for KeyEntryKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.prefix_u64());
    }
}

/// Map key wrapper so the hasher sees one `u64`.
#[derive(PartialEq, Eq, Clone, Copy)]
struct KeyEntryKey(KeyHash);

pub struct KeyEntry {
    pub id: Arc<str>,
    pub org: Arc<str>,
    /// Route indexes this key may use; `None` = every route.
    allowed: Option<Box<[bool]>>,
    /// Unix seconds after which the key is refused.
    pub expires_at: Option<u64>,
}

impl KeyEntry {
    pub fn expired(&self) -> bool {
        self.expires_at
            .is_some_and(|t| SystemTime::now().duration_since(UNIX_EPOCH).map_or(true, |now| now.as_secs() >= t))
    }

    pub fn may_use(&self, route_index: usize) -> bool {
        self.allowed.as_ref().is_none_or(|a| a.get(route_index).copied().unwrap_or(false))
    }
}

pub enum UpstreamAddr {
    Ip(SocketAddr),
    /// Resolved through the DNS cache under this key.
    Dns {
        host: Box<str>,
        key: Box<str>,
    },
}

pub struct UpstreamTls {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: ServerName<'static>,
}

pub struct Upstream {
    pub name: Arc<str>,
    /// Connections are pooled under this key: same address, same TLS trust.
    pub pool_key: Arc<str>,
    pub addr: UpstreamAddr,
    pub tls: Option<UpstreamTls>,
    pub path_prefix: Box<str>,
    /// Pre-rendered headers: Host, Authorization (the provider key), extra
    /// headers, Content-Type, Accept-Encoding. Holds a secret: never logged.
    pub header_block: Box<[u8]>,
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub read_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("name", &self.name).field("pool_key", &self.pool_key).finish_non_exhaustive()
    }
}

pub struct Target {
    pub upstream: Arc<Upstream>,
    /// The upstream's name for the model as an escaped JSON string, when it
    /// differs from what the client sent (spliced into the body).
    pub model_json: Option<Box<[u8]>>,
}

pub struct Route {
    pub name: Box<str>,
    pub targets: Vec<Target>,
}

pub struct Snapshot {
    pub version: u64,
    pub created_unix: u64,
    /// How bearer tokens are hashed before the key lookup.
    pub hasher: KeyHasher,
    keys: HashMap<KeyEntryKey, KeyEntry, BuildHasherDefault<DigestHasher>>,
    route_index: FxHashMap<Box<str>, usize>,
    pub routes: Vec<Route>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("version", &self.version)
            .field("keys", &self.keys.len())
            .field("routes", &self.routes.len())
            .finish()
    }
}

impl Snapshot {
    /// An empty snapshot: every key is refused.
    pub fn empty() -> Snapshot {
        Snapshot {
            version: 0,
            created_unix: 0,
            hasher: KeyHasher::unkeyed(),
            keys: HashMap::default(),
            route_index: FxHashMap::default(),
            routes: vec![],
        }
    }

    pub fn key(&self, hash: &KeyHash) -> Option<&KeyEntry> {
        self.keys.get(&KeyEntryKey(*hash))
    }

    pub fn route(&self, model: &str) -> Option<(usize, &Route)> {
        let i = *self.route_index.get(model)?;
        Some((i, &self.routes[i]))
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }
}

fn err(path: String, message: impl Into<String>) -> ConfigError {
    ConfigError { path, message: message.into() }
}

fn root_store() -> rustls::RootCertStore {
    rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned())
}

fn tls_config(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

fn load_ca(path: &std::path::Path) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = root_store();
    let mut added = 0;
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))? {
        let cert = cert.map_err(|e| format!("bad PEM in `{}`: {e}", path.display()))?;
        roots.add(cert).map_err(|e| format!("bad CA certificate in `{}`: {e}", path.display()))?;
        added += 1;
    }
    if added == 0 {
        return Err(format!("`{}` holds no certificates", path.display()));
    }
    Ok(roots)
}

/// What preparing a snapshot needs besides the spec: the DNS cache to resolve
/// hosts into, and the key hasher (keyed with the server's hash key, if any).
#[derive(Clone, Default)]
pub struct Prepare {
    pub dns: Arc<DnsCache>,
    pub hasher: KeyHasher,
}

impl Prepare {
    pub fn new(dns: Arc<DnsCache>, hasher: KeyHasher) -> Prepare {
        Prepare { dns, hasher }
    }
}

/// Prepare a snapshot from a validated spec. Blocking: runs on the reload
/// thread (or at start), never on a worker.
pub fn compile(spec: &RoutingSpec, version: u64, prep: &Prepare) -> Result<Snapshot, ConfigError> {
    let dns = &*prep.dns;
    spec.validate()?;
    let mut default_tls: Option<Arc<rustls::ClientConfig>> = None;
    let mut upstreams: FxHashMap<&str, Arc<Upstream>> = FxHashMap::default();
    for (i, u) in spec.upstreams.iter().enumerate() {
        let p = format!("upstreams[{i}]");
        let url = BaseUrl::parse(&u.base_url).map_err(|e| err(format!("{p}.base_url"), e))?;
        let tls = if url.tls {
            let config = match &u.ca_file {
                Some(path) => tls_config(load_ca(path).map_err(|e| err(format!("{p}.ca_file"), e))?),
                None => match &default_tls {
                    Some(c) => Ok(c.clone()),
                    None => tls_config(root_store()),
                },
            }
            .map_err(|e| err(p.clone(), e))?;
            if u.ca_file.is_none() {
                default_tls = Some(config.clone());
            }
            let server_name = ServerName::try_from(url.host.clone())
                .map_err(|e| err(format!("{p}.base_url"), format!("not a valid TLS server name: {e}")))?;
            Some(UpstreamTls { config, server_name })
        } else {
            None
        };
        let addr = match url.ip() {
            Some(ip) => UpstreamAddr::Ip(SocketAddr::new(ip, url.port)),
            None => {
                if let Err(e) = dns.resolve_blocking(&url.host, url.port) {
                    // Keep going: the refresher retries, and requests get a clear 502 meanwhile.
                    tracing::warn!(upstream = %u.name, error = %e, "upstream host does not resolve yet");
                }
                UpstreamAddr::Dns { host: url.host.clone().into(), key: cache_key(&url.host, url.port).into() }
            }
        };
        let api_key = match (&u.api_key, &u.api_key_env) {
            (Some(k), _) => Some(k.expose().to_string()),
            (None, Some(var)) => Some(
                std::env::var(var)
                    .map_err(|_| err(format!("{p}.api_key_env"), format!("environment variable `{var}` is not set")))?,
            ),
            (None, None) => None,
        };
        let mut block = Vec::with_capacity(256);
        block.extend_from_slice(b"host: ");
        block.extend_from_slice(url.host_header().as_bytes());
        block.extend_from_slice(b"\r\n");
        if let Some(key) = api_key {
            if key.bytes().any(|b| b < b' ' || b == 0x7f) {
                return Err(err(format!("{p}.api_key"), "has control characters"));
            }
            block.extend_from_slice(b"authorization: Bearer ");
            block.extend_from_slice(key.as_bytes());
            block.extend_from_slice(b"\r\n");
        }
        for (name, value) in &u.headers {
            block.extend_from_slice(name.as_bytes());
            block.extend_from_slice(b": ");
            block.extend_from_slice(value.as_bytes());
            block.extend_from_slice(b"\r\n");
        }
        block.extend_from_slice(b"content-type: application/json\r\naccept-encoding: identity\r\n");
        let scheme = if url.tls { "https" } else { "http" };
        let ca = u.ca_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        let upstream = Upstream {
            name: u.name.as_str().into(),
            pool_key: format!("{scheme}://{}:{}#{ca}", url.host, url.port).into(),
            addr,
            tls,
            path_prefix: url.path_prefix.into(),
            header_block: block.into(),
            connect_timeout: Duration::from_millis(u.connect_timeout_ms),
            first_byte_timeout: Duration::from_millis(u.first_byte_timeout_ms),
            read_timeout: Duration::from_millis(u.read_timeout_ms),
            pool_idle_timeout: Duration::from_millis(u.pool_idle_timeout_ms),
            pool_max_idle: u.pool_max_idle,
        };
        upstreams.insert(u.name.as_str(), Arc::new(upstream));
    }
    let mut routes = Vec::with_capacity(spec.models.len());
    let mut route_index = FxHashMap::default();
    for (i, m) in spec.models.iter().enumerate() {
        let mut targets = Vec::with_capacity(m.targets.len());
        for (j, t) in m.targets.iter().enumerate() {
            let upstream = upstreams
                .get(t.upstream.as_str())
                .ok_or_else(|| err(format!("models[{i}].targets[{j}].upstream"), "unknown upstream"))?
                .clone();
            let model_json = match &t.model {
                Some(name) if name != &m.name => Some(
                    serde_json::to_vec(name)
                        .map_err(|e| err(format!("models[{i}].targets[{j}].model"), e.to_string()))?
                        .into_boxed_slice(),
                ),
                _ => None,
            };
            targets.push(Target { upstream, model_json });
        }
        route_index.insert(m.name.as_str().into(), i);
        routes.push(Route { name: m.name.as_str().into(), targets });
    }
    let mut keys = HashMap::default();
    for (i, k) in spec.keys.iter().enumerate() {
        if !k.enabled {
            continue;
        }
        let hash = prep.hasher.parse(&k.hash).map_err(|e| err(format!("keys[{i}].hash"), e))?;
        let allowed = if k.models.iter().any(|m| m == "*") {
            None
        } else {
            let mut a = vec![false; routes.len()];
            for m in &k.models {
                if let Some(&ri) = route_index.get(m.as_str()) {
                    a[ri] = true;
                }
            }
            Some(a.into_boxed_slice())
        };
        keys.insert(
            KeyEntryKey(hash),
            KeyEntry { id: k.id.as_str().into(), org: k.org.as_str().into(), allowed, expires_at: k.expires_at },
        );
    }
    let created_unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Ok(Snapshot { version, created_unix, hasher: prep.hasher.clone(), keys, route_index, routes })
}

/// The current snapshot, shared by all workers.
pub struct SnapshotStore {
    current: Arc<ArcSwap<Snapshot>>,
}

impl SnapshotStore {
    pub fn new(initial: Snapshot) -> Arc<SnapshotStore> {
        Arc::new(SnapshotStore { current: Arc::new(ArcSwap::from_pointee(initial)) })
    }

    /// Swap in a prepared snapshot. The next request on every worker sees it.
    pub fn publish(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }

    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn local(&self) -> LocalSnapshot {
        let cache = Cache::new(self.current.clone());
        let current = Rc::new(self.current.load_full());
        LocalSnapshot { cache, current }
    }
}

/// A worker's view of the store. The `Rc<Arc<_>>` is deliberate: requests
/// clone the `Rc` (a plain increment on this thread) instead of the `Arc` (an
/// atomic increment on a cache line every core shares).
#[allow(clippy::redundant_allocation)]
pub struct LocalSnapshot {
    cache: Cache<Arc<ArcSwap<Snapshot>>, Arc<Snapshot>>,
    current: Rc<Arc<Snapshot>>,
}

impl LocalSnapshot {
    /// The latest snapshot. Cheap: a generation check, and a non-atomic clone.
    #[allow(clippy::redundant_allocation)]
    pub fn get(&mut self) -> Rc<Arc<Snapshot>> {
        let latest = self.cache.load();
        if !Arc::ptr_eq(latest, &self.current) {
            self.current = Rc::new(latest.clone());
        }
        self.current.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_shared::Config;

    fn spec(extra: &str) -> RoutingSpec {
        let text = format!(
            r#"
[[upstreams]]
name = "a"
base_url = "http://127.0.0.1:9/v1"
api_key = "sk-provider-secret-1234"
headers = {{ "x-extra" = "1" }}

[[models]]
name = "m1"
targets = [{{ upstream = "a", model = "real-m1" }}]

[[models]]
name = "m2"
targets = [{{ upstream = "a" }}]

[[keys]]
id = "k1"
hash = "{}"
models = ["m2"]
{extra}
"#,
            KeyHash::of(b"sk-client")
        );
        Config::parse(&text).unwrap().routing()
    }

    #[test]
    fn compiles_keys_routes_and_headers() {
        let dns = Prepare::default();
        let snap = compile(&spec(""), 7, &dns).unwrap();
        assert_eq!(snap.version, 7);
        let key = snap.key(&KeyHash::of(b"sk-client")).unwrap();
        assert_eq!(&*key.id, "k1");
        let (i1, r1) = snap.route("m1").unwrap();
        let (i2, _) = snap.route("m2").unwrap();
        assert!(!key.may_use(i1) && key.may_use(i2));
        assert_eq!(r1.targets[0].model_json.as_deref(), Some(&br#""real-m1""#[..]));
        let block = String::from_utf8(r1.targets[0].upstream.header_block.to_vec()).unwrap();
        assert!(
            block.starts_with("host: 127.0.0.1:9\r\nauthorization: Bearer sk-provider-secret-1234\r\nx-extra: 1\r\n")
        );
        assert!(!format!("{:?}", r1.targets[0].upstream).contains("sk-provider"));
        assert!(snap.key(&KeyHash::of(b"other")).is_none());
    }

    #[test]
    fn disabled_keys_are_left_out_and_env_keys_must_exist() {
        let dns = Prepare::default();
        let mut s = spec("");
        s.keys[0].enabled = false;
        assert_eq!(compile(&s, 1, &dns).unwrap().key_count(), 0);
        let mut s = spec("");
        s.upstreams[0].api_key = None;
        s.upstreams[0].api_key_env = Some("SWITCHBOARD_TEST_UNSET_VARIABLE".into());
        assert_eq!(compile(&s, 1, &dns).unwrap_err().path, "upstreams[0].api_key_env");
    }

    #[test]
    fn bad_ca_file_is_a_prepare_error() {
        let dns = Prepare::default();
        let mut s = spec("");
        s.upstreams[0].base_url = "https://localhost:9/v1".into();
        s.upstreams[0].ca_file = Some("/nonexistent/ca.pem".into());
        assert_eq!(compile(&s, 1, &dns).unwrap_err().path, "upstreams[0].ca_file");
    }

    #[test]
    fn workers_see_published_snapshots() {
        let dns = Prepare::default();
        let store = SnapshotStore::new(compile(&spec(""), 1, &dns).unwrap());
        let mut local = store.local();
        let first = local.get();
        assert_eq!(first.version, 1);
        store.publish(compile(&spec(""), 2, &dns).unwrap());
        assert_eq!(local.get().version, 2);
        // The request that started on version 1 still holds it.
        assert_eq!(first.version, 1);
    }
}
