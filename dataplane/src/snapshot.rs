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
use crate::health::{HealthRegistry, TargetHealth};
use arc_swap::{ArcSwap, Cache};
use rustc_hash::FxHashMap;
use rustls::pki_types::ServerName;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use switchboard_shared::config::ConfigError;
use switchboard_shared::config::{ProviderKind, Strategy, Trigger};
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
    /// Rate limits and quotas of the key and its org.
    pub policy: crate::policy::KeyPolicy,
    /// A test key: may inject faults (`crate::fault`).
    pub test: bool,
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
    /// A node in outbound mode: only the connections it opened to the gateway
    /// (in the worker's pool) reach it.
    Reverse,
}

pub struct UpstreamTls {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: ServerName<'static>,
}

/// One provider key: its pre-rendered `authorization` line, and until when
/// it is benched (0 = usable; `u64::MAX` = until the config changes).
pub struct ProviderKey {
    pub line: Box<[u8]>,
    pub benched_until_ms: AtomicU64,
}

pub struct Upstream {
    pub name: Arc<str>,
    /// Shared with every snapshot that has this upstream.
    pub health: Arc<TargetHealth>,
    /// Provider keys, used in turn; empty = no `authorization` header.
    pub keys: Vec<ProviderKey>,
    next_key: AtomicUsize,
    pub eject_after_failures: u32,
    pub eject_for: Duration,
    /// Active health check: how often, and which path (after the base URL).
    pub probe: Option<(Duration, Box<str>)>,
    /// Connections are pooled under this key: same address, same TLS trust.
    pub pool_key: Arc<str>,
    pub addr: UpstreamAddr,
    pub tls: Option<UpstreamTls>,
    pub path_prefix: Box<str>,
    /// Pre-rendered headers: Host, extra headers, Content-Type,
    /// Accept-Encoding (the provider key is added per request from `keys`).
    pub header_block: Box<[u8]>,
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub read_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
    /// A stream without any `finish_reason` is truncated (`upstream_truncated`).
    pub require_finish_reason: bool,
    /// The API it speaks: which ingress requests it can serve, how its key goes.
    pub kind: ProviderKind,
}

/// Every provider key of an upstream is benched (refused or rate limited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllKeysBenched;

impl Upstream {
    /// The next usable provider key (round-robin over keys not benched);
    /// `Ok(None)` when the upstream has no key at all; an error when it has
    /// keys and all are benched.
    pub fn pick_key(&self, now: u64) -> Result<Option<usize>, AllKeysBenched> {
        if self.keys.is_empty() {
            return Ok(None);
        }
        let usable = |k: &&ProviderKey| k.benched_until_ms.load(Ordering::Relaxed) <= now;
        let count = self.keys.iter().filter(usable).count();
        if count == 0 {
            return Err(AllKeysBenched);
        }
        // The n-th usable key, so the load stays even when some are benched.
        let n = self.next_key.fetch_add(1, Ordering::Relaxed) % count;
        self.keys.iter().enumerate().filter(|(_, k)| usable(k)).nth(n).map(|(i, _)| Some(i)).ok_or(AllKeysBenched)
    }

    /// Bench a key: `until` = `u64::MAX` for good (401/403), or a time (429).
    pub fn bench_key(&self, index: usize, until: u64) {
        if let Some(k) = self.keys.get(index) {
            k.benched_until_ms.fetch_max(until, Ordering::AcqRel);
        }
        // No verdict on the upstream itself: let a half-open trial go again.
        self.health.cool(0);
    }

    /// All keys benched: the upstream cannot be used.
    pub fn all_keys_benched(&self, now: u64) -> bool {
        !self.keys.is_empty() && self.keys.iter().all(|k| k.benched_until_ms.load(Ordering::Relaxed) > now)
    }
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
    pub weight: u32,
    /// USD per million prompt + completion tokens at this upstream, if known.
    pub price: Option<f64>,
    /// USD per million (prompt, completion) tokens, for cost accounting.
    pub prices: Option<(f64, f64)>,
    /// USD per million prompt tokens read from and written to the
    /// provider's prompt cache, where its price table says (else the prompt price).
    pub cache_prices: (Option<f64>, Option<f64>),
    /// The model name the upstream gets.
    pub upstream_model: Box<str>,
    /// A node's target: the org it serves (`None`: every org — a provider, or
    /// a node its admin shared).
    pub org: Option<Arc<str>>,
    /// Most requests in flight at once in this process (0: no limit).
    pub capacity: u32,
    /// The listed target this one comes from (a node pool expands to several).
    pub group: u8,
}

impl Target {
    /// Whether a key of `org` may be served by this target.
    pub fn serves(&self, org: &str) -> bool {
        self.org.as_deref().is_none_or(|o| o == org)
    }

    /// Whether it has room for another request.
    pub fn has_room(&self) -> bool {
        self.capacity == 0 || (self.upstream.health.in_flight.load(Ordering::Relaxed) as u64) < self.capacity as u64
    }
}

/// Retry settings of a route.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub max_attempts: usize,
    pub per_attempt_timeout: Option<Duration>,
    pub deadline: Option<Duration>,
    pub backoff: Duration,
}

/// Which failures move a request on (a bit per [`Trigger`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Triggers(u8);

impl Triggers {
    fn bit(t: Trigger) -> u8 {
        1 << (t as u8)
    }

    pub fn from_list(list: &[Trigger]) -> Triggers {
        Triggers(list.iter().fold(0, |acc, t| acc | Self::bit(*t)))
    }

    pub fn has(self, t: Trigger) -> bool {
        self.0 & Self::bit(t) != 0
    }
}

pub struct Route {
    pub name: Box<str>,
    /// The response cache's settings for this route.
    pub cache: switchboard_shared::config::CacheSpec,
    pub targets: Vec<Target>,
    pub strategy: Strategy,
    pub allow_strategy_header: bool,
    pub triggers: Triggers,
    pub retry: Retry,
    /// Shared turn counter for round-robin and weighted picks.
    pub turn: AtomicU64,
    /// One period of the smooth weighted round-robin order (target indexes).
    pub weighted_order: Box<[u8]>,
    /// Some targets are nodes (checked per request: org, capacity, pools).
    pub has_nodes: bool,
}

impl Route {
    /// The dearest price (USD per million tokens, prompt or completion) of
    /// any target: quota holds are taken at it.
    pub fn dearest_price(&self) -> f64 {
        self.targets.iter().filter_map(|t| t.prices).map(|(p, c)| p.max(c)).fold(0.0_f64, f64::max)
    }
}

/// One period of smooth weighted round-robin over `weights`: each index
/// appears `weight` times, spread out (nginx's algorithm).
pub fn smooth_weighted_order(weights: &[u32]) -> Vec<u8> {
    let total: i64 = weights.iter().map(|w| *w as i64).sum();
    let mut current = vec![0i64; weights.len()];
    let mut order = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += *w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        order.push(best as u8);
    }
    order
}

pub struct Snapshot {
    pub version: u64,
    pub created_unix: u64,
    /// How bearer tokens are hashed before the key lookup.
    pub hasher: KeyHasher,
    keys: HashMap<KeyEntryKey, KeyEntry, BuildHasherDefault<DigestHasher>>,
    route_index: FxHashMap<Box<str>, usize>,
    pub routes: Vec<Route>,
    /// Every upstream, once.
    pub upstreams: Vec<Arc<Upstream>>,
    /// Enrolled nodes that are online, by id (for their attach credential).
    pub nodes: FxHashMap<Box<str>, NodeEntry>,
}

/// A node as the attach handshake sees it.
pub struct NodeEntry {
    pub name: Arc<str>,
    /// Hash of the node's secret.
    pub secret_hash: KeyHash,
    /// Its connections are pooled under this key.
    pub pool_key: Arc<str>,
    /// Whether it is reached over connections it opens (outbound mode).
    pub outbound: bool,
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
            upstreams: vec![],
            nodes: FxHashMap::default(),
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

/// What preparing a snapshot needs besides the spec: the DNS cache to resolve
/// hosts into, the key hasher (keyed with the server's hash key, if any), and
/// the health registry upstreams take their health from.
#[derive(Clone, Default)]
pub struct Prepare {
    pub dns: Arc<DnsCache>,
    pub hasher: KeyHasher,
    /// Upstream health, carried from snapshot to snapshot.
    pub health: Arc<HealthRegistry>,
    /// Rate-limit and quota state, carried from snapshot to snapshot.
    pub policy: Arc<crate::policy::PolicyRegistry>,
}

impl Prepare {
    pub fn new(dns: Arc<DnsCache>, hasher: KeyHasher) -> Prepare {
        Prepare { dns, hasher, health: Arc::default(), policy: Arc::default() }
    }
}

/// The limits and quotas that apply to key `k`: its own and its org's.
fn key_policy(
    k: &switchboard_shared::KeySpec,
    spec: &RoutingSpec,
    reg: &crate::policy::PolicyRegistry,
) -> crate::policy::KeyPolicy {
    use crate::policy::{Scope, Unit};
    let mut p = crate::policy::KeyPolicy::default();
    let mut add = |scope: Scope<'_>, rpm: Option<u64>, tpm: Option<u64>, quotas: &[switchboard_shared::QuotaSpec]| {
        if let Some(n) = rpm {
            p.requests.push(reg.bucket(scope, Unit::Requests, n));
        }
        if let Some(n) = tpm {
            p.tokens.push(reg.bucket(scope, Unit::Tokens, n));
        }
        for q in quotas {
            p.quotas.push(reg.quota(scope, q.period, q.max_usd, q.max_tokens));
        }
    };
    add(Scope::Key(&k.id), k.limits.rpm, k.limits.tpm, &k.limits.quotas);
    if let Some(o) = spec.orgs.iter().find(|o| o.name == k.org) {
        add(Scope::Org(&o.name), o.limits.rpm, o.limits.tpm, &o.limits.quotas);
        for m in &o.models {
            let ms = Scope::OrgModel(&o.name, &m.model);
            let r = m.rpm.map(|n| reg.bucket(ms, Unit::Requests, n));
            let t = m.tpm.map(|n| reg.bucket(ms, Unit::Tokens, n));
            p.per_model.insert(m.model.as_str().into(), (r, t));
        }
    }
    p
}

/// How a node is reached, for `build_upstream`.
#[derive(Clone, Copy, Default)]
enum NodeLink<'a> {
    /// Not a node, or a node dialled with the usual trust.
    #[default]
    Dial,
    /// A node dialled over TLS that trusts exactly this certificate.
    Pinned(KeyHash),
    /// Connections the node opened to the gateway, pooled under this key
    /// (no address to dial).
    Reverse(&'a str),
}

/// Build one upstream (a provider, or a node as `link` says).
fn build_upstream(
    p: &str,
    u: &switchboard_shared::UpstreamSpec,
    prep: &Prepare,
    default_tls: &mut Option<Arc<rustls::ClientConfig>>,
    link: NodeLink<'_>,
) -> Result<Upstream, ConfigError> {
    let p = p.to_string();
    let dns = &*prep.dns;
    let url = BaseUrl::parse(&u.base_url).map_err(|e| err(format!("{p}.base_url"), e))?;
    let reverse = match link {
        NodeLink::Reverse(key) => Some(key),
        _ => None,
    };
    let tls = if url.tls {
        let config = match (link, &u.ca_file, &*default_tls) {
            (NodeLink::Pinned(pin), _, _) => {
                crate::tls::pinned_client_config(pin).map_err(|e| err(format!("{p}.reach.tls_pin"), e))?
            }
            (_, Some(path), _) => crate::tls::client_config(Some(path)).map_err(|e| err(format!("{p}.ca_file"), e))?,
            (_, None, Some(c)) => c.clone(),
            (_, None, None) => {
                let c = crate::tls::client_config(None).map_err(|e| err(p.clone(), e))?;
                *default_tls = Some(c.clone());
                c
            }
        };
        let server_name = ServerName::try_from(url.host.clone())
            .map_err(|e| err(format!("{p}.base_url"), format!("not a valid TLS server name: {e}")))?;
        Some(UpstreamTls { config, server_name })
    } else {
        None
    };
    let addr = match url.ip() {
        _ if reverse.is_some() => UpstreamAddr::Reverse,
        Some(ip) => UpstreamAddr::Ip(SocketAddr::new(ip, url.port)),
        None => {
            if let Err(e) = dns.resolve_blocking(&url.host, url.port) {
                // Keep going: the refresher retries, and requests get a clear 502 meanwhile.
                tracing::warn!(upstream = %u.name, error = %e, "upstream host does not resolve yet");
            }
            UpstreamAddr::Dns { host: url.host.clone().into(), key: cache_key(&url.host, url.port).into() }
        }
    };
    let mut api_keys: Vec<String> = match (&u.api_key, &u.api_key_env) {
        (Some(k), _) => vec![k.expose().to_string()],
        (None, Some(var)) => vec![std::env::var(var)
            .map_err(|_| err(format!("{p}.api_key_env"), format!("environment variable `{var}` is not set")))?],
        (None, None) => vec![],
    };
    api_keys.extend(u.api_keys.iter().map(|k| k.expose().to_string()));
    let mut keys = Vec::with_capacity(api_keys.len());
    for key in api_keys {
        if key.is_empty() || key.bytes().any(|b| b < b' ' || b == 0x7f) {
            return Err(err(format!("{p}.api_key"), "is empty or has control characters"));
        }
        let line = match u.kind {
            ProviderKind::OpenAI => format!("authorization: Bearer {key}\r\n"),
            ProviderKind::Anthropic => format!("x-api-key: {key}\r\n"),
        };
        let line = line.into_bytes().into_boxed_slice();
        keys.push(ProviderKey { line, benched_until_ms: AtomicU64::new(0) });
    }
    let mut block = Vec::with_capacity(256);
    block.extend_from_slice(b"host: ");
    block.extend_from_slice(url.host_header().as_bytes());
    block.extend_from_slice(b"\r\n");
    for (name, value) in &u.headers {
        block.extend_from_slice(name.as_bytes());
        block.extend_from_slice(b": ");
        block.extend_from_slice(value.as_bytes());
        block.extend_from_slice(b"\r\n");
    }
    block.extend_from_slice(b"content-type: application/json\r\naccept-encoding: identity\r\n");
    let scheme = if url.tls { "https" } else { "http" };
    // The pool key names the trust too: a new pin or CA never reuses a connection made under the old.
    let trust = match (link, &u.ca_file) {
        (NodeLink::Pinned(pin), _) => pin.to_string(),
        (_, Some(ca)) => ca.display().to_string(),
        (_, None) => String::new(),
    };
    let upstream = Upstream {
        name: u.name.as_str().into(),
        health: prep.health.get(&u.name),
        keys,
        next_key: AtomicUsize::new(0),
        eject_after_failures: u.eject_after_failures,
        eject_for: Duration::from_millis(u.eject_ms),
        probe: (u.probe_interval_ms > 0)
            .then(|| (Duration::from_millis(u.probe_interval_ms), u.probe_path.as_str().into())),
        pool_key: match reverse {
            Some(key) => key.into(),
            None => format!("{scheme}://{}:{}#{trust}", url.host, url.port).into(),
        },
        addr,
        tls,
        path_prefix: url.path_prefix.into(),
        header_block: block.into(),
        connect_timeout: Duration::from_millis(u.connect_timeout_ms),
        first_byte_timeout: Duration::from_millis(u.first_byte_timeout_ms),
        read_timeout: Duration::from_millis(u.read_timeout_ms),
        pool_idle_timeout: Duration::from_millis(u.pool_idle_timeout_ms),
        pool_max_idle: u.pool_max_idle,
        require_finish_reason: u.require_finish_reason,
        kind: u.kind,
    };
    Ok(upstream)
}

fn json_string(s: &str) -> Box<[u8]> {
    serde_json::Value::String(s.to_string()).to_string().into_bytes().into_boxed_slice()
}

/// Prepare a snapshot from a validated spec. Blocking: runs on the reload
/// thread (or at start), never on a worker.
pub fn compile(spec: &RoutingSpec, version: u64, prep: &Prepare) -> Result<Snapshot, ConfigError> {
    spec.validate()?;
    let mut default_tls: Option<Arc<rustls::ClientConfig>> = None;
    // Each upstream, with its (prompt, completion) prices by model.
    type Prices<'a> = FxHashMap<&'a str, ((f64, f64), (Option<f64>, Option<f64>))>;
    let mut upstreams: FxHashMap<&str, (Arc<Upstream>, Prices<'_>)> = FxHashMap::default();
    for (i, u) in spec.upstreams.iter().enumerate() {
        let upstream = build_upstream(&format!("upstreams[{i}]"), u, prep, &mut default_tls, NodeLink::Dial)?;
        let prices: Prices<'_> = u
            .prices
            .iter()
            .map(|p| {
                let cache = (p.cache_read_per_mtok, p.cache_write_per_mtok);
                (p.model.as_str(), ((p.prompt_per_mtok, p.completion_per_mtok), cache))
            })
            .collect();
        upstreams.insert(u.name.as_str(), (Arc::new(upstream), prices));
    }
    // Nodes: an upstream each, and the pools they advertise into.
    let mut node_entries = FxHashMap::default();
    let mut node_ups: Vec<(&switchboard_shared::config::NodeSpec, Arc<Upstream>)> = Vec::new();
    for (i, n) in spec.nodes.iter().enumerate() {
        let p = format!("nodes[{i}]");
        let pool_key = format!("{}{}", switchboard_shared::config::NODE_TARGET_PREFIX, n.id);
        let (base_url, link) = match &n.reach {
            switchboard_shared::config::NodeReach::Direct { url, tls_pin } => {
                let link = match tls_pin {
                    Some(pin) => {
                        NodeLink::Pinned(KeyHash::parse(pin).map_err(|e| err(format!("{p}.reach.tls_pin"), e))?)
                    }
                    None => NodeLink::Dial,
                };
                (format!("{}/v1", url.trim_end_matches('/')), link)
            }
            switchboard_shared::config::NodeReach::Outbound => {
                ("http://node/v1".to_string(), NodeLink::Reverse(pool_key.as_str()))
            }
        };
        let reverse = matches!(link, NodeLink::Reverse(_));
        let u = switchboard_shared::UpstreamSpec {
            name: format!("{}{}", switchboard_shared::config::NODE_TARGET_PREFIX, n.name),
            // Nodes speak OpenAI chat.
            kind: switchboard_shared::config::ProviderKind::OpenAI,
            base_url,
            api_key: Some(n.gateway_token.clone()),
            api_keys: vec![],
            api_key_env: None,
            ca_file: None,
            headers: Default::default(),
            connect_timeout_ms: 2_000,
            first_byte_timeout_ms: 300_000,
            read_timeout_ms: 300_000,
            // Outbound connections are the node's to keep or close.
            pool_idle_timeout_ms: if reverse { 86_400_000 } else { 30_000 },
            pool_max_idle: if reverse { 1024 } else { 64 },
            prices: vec![],
            eject_after_failures: 3,
            eject_ms: 5_000,
            probe_interval_ms: 0,
            probe_path: "/models".into(),
            require_finish_reason: true,
        };
        let up = Arc::new(build_upstream(&p, &u, prep, &mut default_tls, link)?);
        let secret_hash = prep.hasher.parse(&n.secret_hash).map_err(|e| err(format!("{p}.secret_hash"), e))?;
        node_entries.insert(
            n.id.as_str().into(),
            NodeEntry { name: n.name.as_str().into(), secret_hash, pool_key: up.pool_key.clone(), outbound: reverse },
        );
        node_ups.push((n, up));
    }
    let mut routes = Vec::with_capacity(spec.models.len());
    let mut route_index = FxHashMap::default();
    for (i, m) in spec.models.iter().enumerate() {
        let mut targets = Vec::with_capacity(m.targets.len());
        // Whether any node made it into the route (an empty pool costs requests nothing).
        let mut has_nodes = false;
        for (j, t) in m.targets.iter().enumerate() {
            let listed_price = match (t.prompt_per_mtok, t.completion_per_mtok) {
                (None, None) => None,
                (p, c) => Some((p.unwrap_or(0.0), c.unwrap_or(0.0))),
            };
            if let Some(pool) = &t.nodes {
                // Least busy first within the pool (see `select`); stable order here.
                for (n, up) in node_ups.iter().filter(|(n, _)| n.routable) {
                    let Some(model) = n.models.iter().find(|x| &x.name == pool) else { continue };
                    if targets.len() >= switchboard_shared::config::MAX_EXPANDED_TARGETS {
                        tracing::warn!(route = %m.name, "node pool larger than a route can hold; extra nodes left out");
                        break;
                    }
                    let prices = listed_price.unwrap_or((0.0, 0.0));
                    has_nodes = true;
                    targets.push(Target {
                        upstream: up.clone(),
                        model_json: (model.local != m.name).then(|| json_string(&model.local)),
                        weight: t.weight,
                        price: Some(prices.0 + prices.1),
                        prices: Some(prices),
                        cache_prices: (None, None),
                        upstream_model: model.local.as_str().into(),
                        org: (!n.shared).then(|| n.org.as_str().into()),
                        capacity: n.capacity,
                        group: j as u8,
                    });
                }
                continue;
            }
            if targets.len() >= switchboard_shared::config::MAX_EXPANDED_TARGETS {
                return Err(err(format!("models[{i}].targets"), "too many targets once node pools are expanded"));
            }
            let (upstream, prices) = upstreams
                .get(t.upstream.as_str())
                .ok_or_else(|| err(format!("models[{i}].targets[{j}].upstream"), "unknown upstream"))?;
            let upstream_model = t.model.as_deref().unwrap_or(&m.name);
            let listed = prices.get(upstream_model).copied();
            let target_prices = listed_price.or(listed.map(|l| l.0));
            // Cache prices come from the provider's table, unless the target lists its own prices.
            let cache_prices = match (listed_price, listed) {
                (None, Some((_, cache))) => cache,
                _ => (None, None),
            };
            let upstream = upstream.clone();
            let model_json = match &t.model {
                Some(name) if name != &m.name => Some(
                    serde_json::to_vec(name)
                        .map_err(|e| err(format!("models[{i}].targets[{j}].model"), e.to_string()))?
                        .into_boxed_slice(),
                ),
                _ => None,
            };
            targets.push(Target {
                upstream,
                model_json,
                weight: t.weight,
                price: target_prices.map(|(p, c)| p + c),
                prices: target_prices,
                cache_prices,
                upstream_model: upstream_model.into(),
                org: None,
                capacity: 0,
                group: j as u8,
            });
        }
        let weights: Vec<u32> = targets.iter().map(|t| t.weight).collect();
        let retry = Retry {
            max_attempts: m.retry.max_attempts.map_or(targets.len(), |n| n as usize),
            per_attempt_timeout: m.retry.per_attempt_timeout_ms.map(Duration::from_millis),
            deadline: m.retry.deadline_ms.map(Duration::from_millis),
            backoff: Duration::from_millis(m.retry.backoff_ms.unwrap_or(50)),
        };
        route_index.insert(m.name.as_str().into(), i);
        routes.push(Route {
            has_nodes,
            name: m.name.as_str().into(),
            cache: m.cache,
            targets,
            strategy: m.strategy,
            allow_strategy_header: m.allow_strategy_header,
            triggers: Triggers::from_list(&m.failover_on),
            retry,
            turn: AtomicU64::new(0),
            weighted_order: smooth_weighted_order(&weights).into_boxed_slice(),
        });
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
            KeyEntry {
                id: k.id.as_str().into(),
                org: k.org.as_str().into(),
                allowed,
                expires_at: k.expires_at,
                policy: key_policy(k, spec, &prep.policy),
                test: k.test,
            },
        );
    }
    let created_unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut all: Vec<Arc<Upstream>> = upstreams.into_values().map(|(u, _)| u).collect();
    all.extend(node_ups.into_iter().map(|(_, u)| u));
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Snapshot {
        version,
        created_unix,
        hasher: prep.hasher.clone(),
        keys,
        route_index,
        routes,
        upstreams: all,
        nodes: node_entries,
    })
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
    use switchboard_shared::{Config, Secret};

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
        assert!(block.starts_with("host: 127.0.0.1:9\r\nx-extra: 1\r\n"), "{block}");
        let up = &r1.targets[0].upstream;
        assert_eq!(&*up.keys[0].line, b"authorization: Bearer sk-provider-secret-1234\r\n");
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
    fn smooth_weighted_order_spreads_picks() {
        assert_eq!(smooth_weighted_order(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        let o = smooth_weighted_order(&[3, 1]);
        assert_eq!(o.iter().filter(|&&i| i == 0).count(), 3);
        assert_eq!(smooth_weighted_order(&[1, 1, 1]), vec![0, 1, 2]);
    }

    #[test]
    fn keys_rotate_and_bench() {
        let dns = Prepare::default();
        let mut s = spec("");
        s.upstreams[0].api_keys = vec![Secret::new("sk-second-key-xxxx"), Secret::new("sk-third-key-yyyyy")];
        let snap = compile(&s, 1, &dns).unwrap();
        let up = &snap.route("m1").unwrap().1.targets[0].upstream;
        let picks: Vec<usize> = (0..6).map(|_| up.pick_key(10).unwrap().unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        up.bench_key(1, u64::MAX);
        assert!((0..6).all(|_| up.pick_key(10).unwrap() != Some(1)));
        up.bench_key(0, 20);
        up.bench_key(2, 20);
        assert!(up.all_keys_benched(10) && up.pick_key(10).is_err());
        assert!(!up.all_keys_benched(20));
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

    fn node(
        id: &str,
        org: &str,
        shared: bool,
        routable: bool,
        reach: switchboard_shared::NodeReach,
    ) -> switchboard_shared::NodeSpec {
        switchboard_shared::NodeSpec {
            id: id.into(),
            name: id.into(),
            org: org.into(),
            shared,
            models: vec![switchboard_shared::NodeModel { name: "m1".into(), local: "local-m1".into() }],
            capacity: 2,
            reach,
            routable,
            gateway_token: Secret::new("sbg-gateway-token-0123456789"),
            secret_hash: KeyHash::of(format!("secret-{id}").as_bytes()).to_string(),
        }
    }

    #[test]
    fn node_pools_expand_to_routable_nodes_and_serve_their_org() {
        use switchboard_shared::NodeReach;
        let prep = Prepare::default();
        let mut s = spec("");
        s.models[0].targets.insert(
            0,
            switchboard_shared::TargetSpec {
                upstream: String::new(),
                nodes: Some("m1".into()),
                prompt_per_mtok: None,
                completion_per_mtok: None,
                model: None,
                weight: 1,
            },
        );
        s.nodes = vec![
            node("n-a", "acme", false, true, NodeReach::Direct { url: "http://127.0.0.1:7070".into(), tls_pin: None }),
            node("n-down", "acme", false, false, NodeReach::Outbound),
            node("n-shared", "beta", true, true, NodeReach::Outbound),
        ];
        let snap = compile(&s, 1, &prep).unwrap();
        let (_, route) = snap.route("m1").unwrap();
        let names: Vec<&str> = route.targets.iter().map(|t| &*t.upstream.name).collect();
        assert_eq!(names, ["node:n-a", "node:n-shared", "a"], "a node that is not routable is left out");
        let t = &route.targets[0];
        assert_eq!(t.model_json.as_deref(), Some(&br#""local-m1""#[..]));
        assert_eq!(t.prices, Some((0.0, 0.0)), "a pool costs 0 unless priced");
        assert_eq!(&*t.upstream.keys[0].line, b"authorization: Bearer sbg-gateway-token-0123456789\r\n");
        assert!(matches!(route.targets[1].upstream.addr, UpstreamAddr::Reverse));
        // Every online node can attach, routable or not.
        assert_eq!(snap.nodes.len(), 3);
        assert!(snap.nodes["n-down"].outbound && !snap.nodes["n-a"].outbound);
        assert_eq!(snap.nodes["n-a"].secret_hash, KeyHash::of(b"secret-n-a"));
        // Org acme: its own node, the shared one, the provider; another org: no acme node.
        let order = |org: &str| -> Vec<String> {
            let plan = crate::select::plan(route, Strategy::Priority, 1, org);
            plan.as_slice().iter().map(|&i| route.targets[i as usize].upstream.name.to_string()).collect()
        };
        assert_eq!(order("acme"), ["node:n-a", "node:n-shared", "a"]);
        assert_eq!(order("other"), ["node:n-shared", "a"]);
        // A node at capacity goes behind the others.
        route.targets[0].upstream.health.in_flight.store(2, Ordering::Relaxed);
        assert_eq!(order("acme"), ["node:n-shared", "a", "node:n-a"]);
    }
}
