//! The declarative configuration: `[server]` settings for this process, and the
//! routing spec (`[[keys]]`, `[[upstreams]]`, `[[models]]`) that the data plane
//! compiles into its routing snapshot.
//!
//! Every table denies unknown fields, so a typo is an error naming the key, not
//! a silently ignored setting. [`Config::parse`] also validates cross-references
//! and reports the path of the first bad value (`models[1].targets[0].upstream`).

use crate::limits::{self, Range};
use crate::secret::Secret;
use crate::url::BaseUrl;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A configuration error with the path of the offending value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { path: path.into(), message: message.into() }
    }
}

/// `path` must be inside `range` (the one place ranges are checked, for the
/// file and the admin API alike: see [`crate::limits`]).
fn in_range(path: impl Into<String>, value: u64, range: Range) -> Result<(), ConfigError> {
    range.check(value).map_err(|m| ConfigError::at(path, m))
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A reload that removes every key or every model is refused (it would
    /// answer every request 401 or 404) unless the new file says this.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_empty_routing: bool,
    #[serde(default)]
    pub server: ServerConfig,
    /// When present, the admin API runs and its database owns the routing
    /// state; this file only seeds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminSettings>,
    /// Usage accounting and the access log (`[usage]`).
    #[serde(default)]
    pub usage: UsageSettings,
    #[serde(default)]
    pub orgs: Vec<OrgSpec>,
    #[serde(default)]
    pub keys: Vec<KeySpec>,
    #[serde(default)]
    pub upstreams: Vec<UpstreamSpec>,
    #[serde(default)]
    pub models: Vec<ModelSpec>,
    // ---- issue 18: scale-out on Redis (shared/src/cluster.rs) ----
    /// Limits and quotas shared by every data plane through Redis (`[cluster]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

/// The admin API (`[admin]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Address of the admin API (its own port and runtime).
    pub listen: String,
    /// SQLite file; a relative path is taken from the config file's folder.
    pub database: PathBuf,
    /// Largest admin request body; larger -> 413.
    pub max_body_bytes: usize,
    /// Serve the admin API over HTTPS with this PEM certificate chain and key
    /// (reloaded when the files change).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
    /// How often enrolled nodes send heartbeats; a node that misses 2.5
    /// intervals is offline and leaves the snapshot.
    pub node_heartbeat_ms: u64,
}

/// How often nodes heartbeat unless `[admin] node_heartbeat_ms` says otherwise.
pub const DEFAULT_NODE_HEARTBEAT_MS: u64 = 5_000;

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            listen: "127.0.0.1:8081".into(),
            database: "switchboard.db".into(),
            max_body_bytes: 1024 * 1024,
            tls_cert_file: None,
            tls_key_file: None,
            node_heartbeat_ms: DEFAULT_NODE_HEARTBEAT_MS,
        }
    }
}

impl AdminSettings {
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen
            .parse()
            .map_err(|_| ConfigError::at("admin.listen", format!("`{}` is not an IP:port address", self.listen)))
    }
}

impl Config {
    /// Parse and validate TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config =
            toml::from_str(text).map_err(|e| ConfigError::at("", e.to_string().trim_end().to_string()))?;
        cfg.server.validate()?;
        if let Some(a) = &cfg.admin {
            a.listen_addr()?;
            in_range("admin.max_body_bytes", a.max_body_bytes as u64, limits::ADMIN_MAX_BODY_BYTES)?;
            in_range("admin.node_heartbeat_ms", a.node_heartbeat_ms, limits::NODE_HEARTBEAT_MS)?;
            if a.tls_cert_file.is_some() != a.tls_key_file.is_some() {
                return Err(ConfigError::at(
                    "admin.tls_cert_file",
                    "set both tls_cert_file and tls_key_file, or neither",
                ));
            }
        }
        cfg.usage.validate()?;
        if let Some(c) = &cfg.cluster {
            c.validate()?;
        }
        cfg.check_names()?;
        cfg.routing().validate()?;
        Ok(cfg)
    }

    /// What the admin API checks in what it is given, checked in a file too:
    /// names by its rules (characters, not bytes; no control, zero-width or
    /// bidi characters) and keys that name some model. (Not in
    /// [`RoutingSpec::validate`]: a database an older version wrote may hold
    /// names these rules refuse, and must still load.)
    fn check_names(&self) -> Result<(), ConfigError> {
        let names = self.upstreams.iter().enumerate().map(|(i, u)| (format!("upstreams[{i}].name"), &u.name));
        let names = names.chain(self.models.iter().enumerate().map(|(i, m)| (format!("models[{i}].name"), &m.name)));
        let names = names.chain(self.orgs.iter().enumerate().map(|(i, o)| (format!("orgs[{i}].name"), &o.name)));
        for (path, name) in names {
            limits::check_name(name).map_err(|m| ConfigError::at(path, m))?;
        }
        for (i, k) in self.keys.iter().enumerate() {
            if k.models.is_empty() {
                return Err(ConfigError::at(format!("keys[{i}].models"), "needs at least one name, or \"*\" for all"));
            }
        }
        Ok(())
    }

    /// The routing part, which can change at run time.
    pub fn routing(&self) -> RoutingSpec {
        RoutingSpec {
            orgs: self.orgs.clone(),
            keys: self.keys.clone(),
            upstreams: self.upstreams.clone(),
            models: self.models.clone(),
            nodes: Vec::new(),
        }
    }
}

/// Usage accounting (`[usage]`): how records leave the data plane and where
/// they wait when the database is slow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageSettings {
    /// Each worker hands its records to the writer this often (or sooner, in
    /// batches of 256).
    pub flush_interval_ms: u64,
    /// Records a worker holds when the writer cannot take them; past this a
    /// record is lost (counted and logged).
    pub queue_records: usize,
    /// Records the writer holds in memory before spilling to `spill_file`.
    pub pending_records: usize,
    /// Records per database transaction.
    pub batch_records: usize,
    /// Append-only file for records the database could not take yet; replayed
    /// when it can (and at start). Default: beside the database
    /// (`<database>.usage-spill`), or `switchboard-usage.spill` in the working
    /// folder for a remote data plane. Relative paths are from the config file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spill_file: Option<PathBuf>,
    /// Days the raw request log is kept (0: keep it forever). The per-minute
    /// rollups are kept.
    pub retention_days: u64,
    /// Write a JSON line per request to this file (`-` for standard error).
    /// Off by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_log: Option<PathBuf>,
}

impl Default for UsageSettings {
    fn default() -> Self {
        UsageSettings {
            flush_interval_ms: 100,
            queue_records: 65_536,
            pending_records: 262_144,
            batch_records: 4_096,
            spill_file: None,
            retention_days: 7,
            access_log: None,
        }
    }
}

impl UsageSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let checks = [
            ("usage.flush_interval_ms", self.flush_interval_ms, limits::FLUSH_INTERVAL_MS),
            ("usage.queue_records", self.queue_records as u64, limits::USAGE_QUEUE_RECORDS),
            ("usage.pending_records", self.pending_records as u64, limits::USAGE_PENDING_RECORDS),
            ("usage.batch_records", self.batch_records as u64, limits::USAGE_BATCH_RECORDS),
            ("usage.retention_days", self.retention_days, limits::RETENTION_DAYS),
        ];
        for (path, value, range) in checks {
            in_range(path, value, range)?;
        }
        Ok(())
    }
}

/// The most header lines `server.max_headers` may allow (the parser's fixed array).
pub const MAX_HEADERS_CAP: usize = 128;

/// Which io driver the data-plane workers use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    /// io_uring when the kernel allows it, else epoll.
    #[default]
    Auto,
    IoUring,
    Legacy,
}

/// Process-level settings of the data plane. Read at start; changing them
/// needs a restart (the routing spec reloads live).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Port 0 picks a free port (logged at start).
    pub listen: String,
    /// Worker threads, each with its own runtime and listener. 0 = one per core.
    pub workers: usize,
    pub driver: Driver,
    /// Largest request head (request line + headers) accepted; larger -> 431.
    pub max_header_bytes: usize,
    /// Most header lines accepted in one request; more -> 431.
    pub max_headers: usize,
    /// Largest request body accepted; larger -> 413.
    pub max_body_bytes: usize,
    /// Time allowed from a request's first byte to the end of its head -> 408.
    pub header_read_timeout_ms: u64,
    /// Time allowed to receive a whole request body -> 408.
    pub body_read_timeout_ms: u64,
    /// How long a keep-alive connection may sit idle between requests.
    pub idle_timeout_ms: u64,
    /// Time allowed for one write to the client before it is dropped.
    pub write_timeout_ms: u64,
    /// Open client connections per worker; more are answered 503 and closed.
    pub max_connections_per_worker: usize,
    /// Largest upstream response head accepted; larger -> 502.
    pub max_upstream_header_bytes: usize,
    /// On shutdown, how long requests in flight may take to finish.
    pub shutdown_grace_ms: u64,
    /// How often the config file is checked for changes. 0 = only on SIGHUP.
    pub reload_poll_ms: u64,
    /// How often upstream host names are resolved again.
    pub dns_refresh_ms: u64,
    /// Raise the open-files soft limit to the hard limit at start.
    pub raise_nofile_limit: bool,
    /// Serve HTTPS with this PEM certificate chain (with `tls_key_file`). The
    /// files are watched and reloaded; connections keep the certificate they
    /// started with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
    /// Serve Prometheus metrics at `GET /metrics` on this listener.
    pub metrics: bool,
    /// Completion tokens reserved against token limits and quotas for a
    /// request that does not say `max_tokens` (reconciled when it ends).
    pub completion_reserve_tokens: u64,
    /// Memory for the response cache, all routes together (0: no cache).
    pub cache_max_bytes: u64,
    /// A config change is applied once the file has stayed unchanged this
    /// long (a file caught half-written is not applied). 0: at once.
    pub reload_settle_ms: u64,
    /// Share the listen address with a running gateway (a planned hand-over).
    /// Set by `--handover` on the command line, never in the file: starting
    /// on an address another process serves is refused otherwise.
    #[serde(skip)]
    pub handover: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".to_string(),
            workers: 0,
            driver: Driver::Auto,
            max_header_bytes: 16 * 1024,
            max_headers: 96,
            max_body_bytes: 8 * 1024 * 1024,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            write_timeout_ms: 30_000,
            max_connections_per_worker: 10_000,
            max_upstream_header_bytes: 64 * 1024,
            shutdown_grace_ms: 30_000,
            reload_poll_ms: 1_000,
            dns_refresh_ms: 30_000,
            raise_nofile_limit: true,
            tls_cert_file: None,
            tls_key_file: None,
            metrics: true,
            completion_reserve_tokens: 1024,
            cache_max_bytes: 64 * 1024 * 1024,
            reload_settle_ms: 500,
            handover: false,
        }
    }
}

impl ServerConfig {
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen
            .parse()
            .map_err(|_| ConfigError::at("server.listen", format!("`{}` is not an IP:port address", self.listen)))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        let checks = [
            ("server.max_header_bytes", self.max_header_bytes as u64, limits::MAX_HEADER_BYTES),
            ("server.max_headers", self.max_headers as u64, limits::MAX_HEADERS),
            ("server.max_body_bytes", self.max_body_bytes as u64, limits::MAX_BODY_BYTES),
            ("server.header_read_timeout_ms", self.header_read_timeout_ms, limits::TIMEOUT_MS),
            ("server.body_read_timeout_ms", self.body_read_timeout_ms, limits::TIMEOUT_MS),
            ("server.idle_timeout_ms", self.idle_timeout_ms, limits::TIMEOUT_MS),
            ("server.write_timeout_ms", self.write_timeout_ms, limits::TIMEOUT_MS),
            (
                "server.max_connections_per_worker",
                self.max_connections_per_worker as u64,
                limits::MAX_CONNECTIONS_PER_WORKER,
            ),
            (
                "server.max_upstream_header_bytes",
                self.max_upstream_header_bytes as u64,
                limits::MAX_UPSTREAM_HEADER_BYTES,
            ),
            ("server.shutdown_grace_ms", self.shutdown_grace_ms, limits::SHUTDOWN_GRACE_MS),
            ("server.reload_poll_ms", self.reload_poll_ms, limits::RELOAD_POLL_MS),
            ("server.reload_settle_ms", self.reload_settle_ms, limits::RELOAD_SETTLE_MS),
            ("server.dns_refresh_ms", self.dns_refresh_ms, limits::DNS_REFRESH_MS),
            ("server.workers", self.workers as u64, limits::WORKERS),
            ("server.completion_reserve_tokens", self.completion_reserve_tokens, limits::COMPLETION_RESERVE_TOKENS),
            ("server.cache_max_bytes", self.cache_max_bytes, limits::CACHE_MAX_BYTES),
        ];
        for (path, value, range) in checks {
            in_range(path, value, range)?;
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(ConfigError::at("server.tls_cert_file", "set both tls_cert_file and tls_key_file, or neither"));
        }
        debug_assert!(MAX_HEADERS_CAP as u64 == limits::MAX_HEADERS.max);
        Ok(())
    }
}

/// The part of the configuration that the data plane compiles into its
/// routing snapshot, and that reloads live.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingSpec {
    /// Orgs with limits (an org a key names needs no entry here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orgs: Vec<OrgSpec>,
    #[serde(default)]
    pub keys: Vec<KeySpec>,
    #[serde(default)]
    pub upstreams: Vec<UpstreamSpec>,
    #[serde(default)]
    pub models: Vec<ModelSpec>,
    /// Enrolled nodes that are online (published by the admin service from
    /// their heartbeats; never written in a config file by hand).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeSpec>,
}

/// An enrolled node (BYOI) as the data plane routes to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// The node's id (`node_...`), which its attach credential names.
    pub id: String,
    /// Unique name; the node's target is called `node:<name>`.
    pub name: String,
    /// The org whose keys it serves.
    pub org: String,
    /// Serve every org's keys, not only its own.
    #[serde(default)]
    pub shared: bool,
    /// Models it serves: public name -> the local server's name.
    pub models: Vec<NodeModel>,
    /// Most requests at once (this gateway process sends no more).
    pub capacity: u32,
    /// How the gateway reaches it.
    pub reach: NodeReach,
    /// Whether it takes new requests (online, healthy, inside its availability
    /// window, not draining). A node that is not routable may still attach.
    pub routable: bool,
    /// The credential the gateway presents to the node agent.
    pub gateway_token: Secret,
    /// Hash of the node's own secret (its attach credential), like a key hash.
    pub secret_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeModel {
    /// The name routes and clients use.
    pub name: String,
    /// The local server's name for it.
    pub local: String,
}

/// How the gateway reaches a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum NodeReach {
    /// The gateway dials the agent at this base URL (`https://10.0.0.7:7070`).
    Direct {
        url: String,
        /// `sha256:<hex>` of the certificate the agent serves on an `https`
        /// URL: gateways accept that certificate and no other (the agent's is
        /// self-signed unless it was given one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tls_pin: Option<String>,
    },
    /// The agent keeps connections open to the gateway; requests go down them.
    Outbound,
}

impl NodeReach {
    /// Check an advertised reach: a parsable URL, and a pin only with https.
    /// On error: the field (under `reach`) and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let NodeReach::Direct { url, tls_pin } = self else { return Ok(()) };
        let parsed = BaseUrl::parse(url).map_err(|e| ("url", e))?;
        if let Some(pin) = tls_pin {
            crate::KeyHash::parse(pin).map_err(|e| ("tls_pin", format!("not a certificate pin: {e}")))?;
            if !parsed.tls {
                return Err(("tls_pin", "a certificate pin needs an https URL".to_string()));
            }
        }
        Ok(())
    }
}

/// The prefix of a node's target (upstream) name.
pub const NODE_TARGET_PREFIX: &str = "node:";

/// A client API key, configured by its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    /// A stable, non-secret id (shown in logs and usage instead of the key).
    pub id: String,
    /// `sha256:<hex>` (or `hmac-sha256:<hex>` with a server hash key) of the
    /// key; `switchboard hash-key` prints it.
    pub hash: String,
    #[serde(default = "default_org")]
    pub org: String,
    /// Model names this key may use; `"*"` allows every model.
    #[serde(default = "all_models")]
    pub models: Vec<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Unix seconds after which the key is refused; none = never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// Requests per minute this key may send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// Tokens (prompt + completion) per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Spend and token caps per day or calendar month (UTC).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quotas: Vec<QuotaSpec>,
}

/// Limits of an org: over all its keys, and per model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quotas: Vec<QuotaSpec>,
    /// Limits of the org's traffic to one model (route name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelLimitSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelLimitSpec {
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
}

/// A key's limits as the admin API stores and takes them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quotas: Vec<QuotaSpec>,
}

/// An org's limits as the admin API stores and takes them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quotas: Vec<QuotaSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelLimitSpec>,
}

impl OrgLimits {
    pub fn is_empty(&self) -> bool {
        *self == OrgLimits::default()
    }
}

/// A cap on spend or tokens (or both) per period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSpec {
    pub period: Period,
    /// USD, from the targets' price tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_usd: Option<f64>,
    /// Prompt + completion tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
}

/// A quota's period, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    Month,
}

impl Period {
    pub fn name(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
        }
    }

    /// The UTC period holding `now` (Unix seconds): its start and its end.
    pub fn bounds(self, now: i64) -> (i64, i64) {
        match self {
            Period::Day => {
                let d = crate::time::day_start(now);
                (d, d + 86_400)
            }
            Period::Month => (crate::time::month_start(now), crate::time::next_month_start(now)),
        }
    }
}

/// The most requests or tokens per minute a limit may name.
pub const MAX_PER_MINUTE: u64 = limits::PER_MINUTE.max;

fn check_limits(p: &str, rpm: Option<u64>, tpm: Option<u64>, quotas: &[QuotaSpec]) -> Result<(), ConfigError> {
    for (name, v) in [("rpm", rpm), ("tpm", tpm)] {
        if let Some(v) = v {
            in_range(format!("{p}.{name}"), v, limits::PER_MINUTE)?;
        }
    }
    let mut periods = HashSet::new();
    for (j, q) in quotas.iter().enumerate() {
        let qp = format!("{p}.quotas[{j}]");
        if q.max_usd.is_none() && q.max_tokens.is_none() {
            return Err(ConfigError::at(qp, "set max_usd, max_tokens or both"));
        }
        if q.max_usd.is_some_and(|v| !v.is_finite() || !(0.0..=limits::MAX_QUOTA_USD).contains(&v)) {
            return Err(ConfigError::at(
                format!("{qp}.max_usd"),
                format!("must be a finite amount from 0 to {} USD", limits::MAX_QUOTA_USD),
            ));
        }
        if let Some(t) = q.max_tokens {
            in_range(format!("{qp}.max_tokens"), t, limits::QUOTA_TOKENS)?;
        }
        if !periods.insert(q.period) {
            return Err(ConfigError::at(format!("{qp}.period"), "one quota per period"));
        }
    }
    Ok(())
}

/// A model name a node may advertise: 1 to 256 printable characters, not `*`.
pub fn check_node_model(name: &str) -> Result<(), String> {
    if name == "*" {
        return Err("`*` is reserved".to_string());
    }
    // The name is quoted back cut short: it may be megabytes.
    limits::check_name(name).map_err(|m| {
        let shown: String = name.chars().take(64).collect::<String>().escape_debug().to_string();
        let more = if name.chars().count() > 64 { "..." } else { "" };
        format!("model name `{shown}{more}` {m}")
    })
}

fn default_org() -> String {
    "default".to_string()
}
fn all_models() -> Vec<String> {
    vec!["*".to_string()]
}
fn yes() -> bool {
    true
}

/// An OpenAI-compatible upstream (a provider).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    pub name: String,
    /// `https://api.openai.com/v1`: the endpoint path (`/chat/completions`) is appended.
    pub base_url: String,
    /// The provider key, sent as `Authorization: Bearer`. Prefer `api_key_env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    /// More provider keys: requests are spread over all of them; a key answered
    /// 401/403 is benched until the config changes, 429 for its Retry-After.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_keys: Vec<Secret>,
    /// Name of an environment variable holding the provider key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Extra PEM CA certificates to trust for this upstream (added to the web PKI roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Extra request headers sent to this upstream.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "d_connect")]
    pub connect_timeout_ms: u64,
    /// Time allowed from sending the request to the upstream's response head.
    #[serde(default = "d_first_byte")]
    pub first_byte_timeout_ms: u64,
    /// Longest silence allowed between two reads of the response body.
    #[serde(default = "d_read")]
    pub read_timeout_ms: u64,
    /// Idle pooled connections are closed after this long.
    #[serde(default = "d_pool_idle")]
    pub pool_idle_timeout_ms: u64,
    /// Idle connections kept per worker for this upstream.
    #[serde(default = "d_pool_max")]
    pub pool_max_idle: usize,
    /// Prices per model, for the `cheapest` strategy and cost accounting.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prices: Vec<PriceSpec>,
    /// Consecutive failures that eject this upstream from routing (circuit open).
    #[serde(default = "d_eject_after")]
    pub eject_after_failures: u32,
    /// How long an ejected upstream stays out before one trial request (half-open).
    #[serde(default = "d_eject_ms")]
    pub eject_ms: u64,
    /// Active health check: probe `probe_path` this often (0 = off). A probe
    /// answered below 500 (and not 429) counts as a success, anything else as a
    /// failure, exactly like a request would.
    #[serde(default)]
    pub probe_interval_ms: u64,
    /// Path probed, after the base URL.
    #[serde(default = "d_probe_path")]
    pub probe_path: String,
    /// A chat or completion stream that ends without any `finish_reason` is a
    /// truncated generation: the client gets an error event instead of
    /// `[DONE]`. Set false for a server known to omit `finish_reason`.
    #[serde(default = "d_true", skip_serializing_if = "is_true")]
    pub require_finish_reason: bool,
}

fn d_true() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn d_probe_path() -> String {
    "/models".to_string()
}

fn d_eject_after() -> u32 {
    5
}
fn d_eject_ms() -> u64 {
    10_000
}

fn d_connect() -> u64 {
    5_000
}
fn d_first_byte() -> u64 {
    300_000
}
fn d_read() -> u64 {
    300_000
}
fn d_pool_idle() -> u64 {
    30_000
}
fn d_pool_max() -> usize {
    256
}

/// A public model name and where its requests go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The name clients send in `model`.
    pub name: String,
    /// Where requests go first; the other targets are the fallbacks.
    pub targets: Vec<TargetSpec>,
    /// How the first target is picked.
    #[serde(default)]
    pub strategy: Strategy,
    /// Let a request pick the strategy with the `x-switchboard-strategy` header.
    #[serde(default)]
    pub allow_strategy_header: bool,
    /// What makes a request move on to the next target (or try again).
    #[serde(default = "default_triggers")]
    pub failover_on: Vec<Trigger>,
    #[serde(default)]
    pub retry: RetrySpec,
    /// The response cache for this route (off by default).
    #[serde(default, skip_serializing_if = "CacheSpec::is_off")]
    pub cache: CacheSpec,
}

/// A route's response cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSpec {
    #[serde(default)]
    pub mode: CacheMode,
    /// How long an answer stays cached.
    #[serde(default = "default_cache_ttl")]
    pub ttl_ms: u64,
    /// issue 18: also keep answers in Redis (`[cluster]`), shared by every
    /// data plane: local first, then Redis.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
}

impl Default for CacheSpec {
    fn default() -> Self {
        CacheSpec { mode: CacheMode::Off, ttl_ms: default_cache_ttl(), shared: false }
    }
}

impl CacheSpec {
    pub fn is_off(&self) -> bool {
        self.mode == CacheMode::Off
    }
}

fn default_cache_ttl() -> u64 {
    300_000
}

/// Which requests of a route the cache answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheMode {
    #[default]
    Off,
    /// Requests that ask for a deterministic answer (`temperature` 0), and embeddings.
    Deterministic,
    /// Every request.
    Always,
}

/// How a route picks its first target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Targets in the order listed; the rest are fallbacks in order.
    #[default]
    Priority,
    /// Smooth weighted round-robin by `weight`.
    Weighted,
    /// Each target in turn.
    RoundRobin,
    /// The lowest moving average of time to first byte.
    LeastLatency,
    /// The lowest price for the model (the upstream's `prices`).
    Cheapest,
    /// The fewest requests in flight.
    LeastBusy,
}

impl Strategy {
    pub fn parse(s: &str) -> Option<Strategy> {
        Some(match s {
            "priority" => Strategy::Priority,
            "weighted" => Strategy::Weighted,
            "round_robin" => Strategy::RoundRobin,
            "least_latency" => Strategy::LeastLatency,
            "cheapest" => Strategy::Cheapest,
            "least_busy" => Strategy::LeastBusy,
            _ => return None,
        })
    }
}

/// A failure that moves a request to the next target, while nothing has
/// reached the client yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Trigger {
    /// The TCP connection could not be made.
    #[serde(rename = "connect")]
    Connect,
    /// The TLS handshake failed.
    #[serde(rename = "tls")]
    Tls,
    /// The connection was reset or closed before an answer, or the answer was not HTTP.
    #[serde(rename = "reset")]
    Reset,
    /// No response head within the time allowed.
    #[serde(rename = "timeout")]
    Timeout,
    #[serde(rename = "5xx")]
    Status5xx,
    #[serde(rename = "429")]
    Status429,
    #[serde(rename = "408")]
    Status408,
    #[serde(rename = "409")]
    Status409,
}

pub fn default_triggers() -> Vec<Trigger> {
    vec![Trigger::Connect, Trigger::Tls, Trigger::Reset, Trigger::Timeout, Trigger::Status5xx, Trigger::Status429]
}

/// Attempts, per-attempt timeout, overall deadline, and backoff.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts in all (first try included); default: one per target. Past the
    /// number of targets, targets are tried again from the top, with backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Limit on one attempt's wait for the response head (below the upstream's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_attempt_timeout_ms: Option<u64>,
    /// Limit on all attempts together, from the request's arrival.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Base of the exponential backoff (with jitter) before retrying a target
    /// already tried; moving to another target does not wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// Name of an `[[upstreams]]` entry (or set `nodes`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub upstream: String,
    /// A node pool instead of an upstream: the nodes that advertise this model
    /// (the requesting key's org's own, and shared ones), tried in the
    /// target's place, least busy first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<String>,
    /// USD per million prompt tokens at this target (overrides the
    /// upstream's price table; a node pool's price, 0 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_per_mtok: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_per_mtok: Option<f64>,
    /// The model name the upstream knows; defaults to the public name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Share for the `weighted` strategy.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// The price of a model at an upstream, in USD per million tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceSpec {
    /// The upstream's model name.
    pub model: String,
    #[serde(default)]
    pub prompt_per_mtok: f64,
    #[serde(default)]
    pub completion_per_mtok: f64,
}

/// The most targets a route may list.
pub const MAX_TARGETS: usize = 16;

/// The most targets a route may have once its node pools are expanded.
pub const MAX_EXPANDED_TARGETS: usize = 64;

/// Header names the gateway sets itself and an upstream's `headers` may not override.
const RESERVED_HEADERS: [&str; 7] =
    ["host", "content-length", "transfer-encoding", "connection", "authorization", "x-request-id", "accept-encoding"];

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl RoutingSpec {
    /// Bring every number into its range ([`crate::limits`]), for state
    /// stored before the ranges were checked (an absurd timeout saved through
    /// an older admin API): start-up must not depend on it. Returns the paths
    /// changed. New input is refused by [`RoutingSpec::validate`] instead.
    pub fn clamp_to_ranges(&mut self) -> Vec<String> {
        let mut changed = Vec::new();
        let mut clamp = |path: String, v: &mut u64, r: Range| {
            let c = (*v).clamp(r.min, r.max);
            if c != *v {
                *v = c;
                changed.push(path);
            }
        };
        let price = |v: &mut f64| {
            let ok = if v.is_finite() { v.clamp(0.0, limits::MAX_PRICE_PER_MTOK) } else { 0.0 };
            let same = ok == *v;
            *v = ok;
            same
        };
        let mut prices_changed = Vec::new();
        for (i, u) in self.upstreams.iter_mut().enumerate() {
            let p = format!("upstreams[{i}]");
            clamp(format!("{p}.connect_timeout_ms"), &mut u.connect_timeout_ms, limits::TIMEOUT_MS);
            clamp(format!("{p}.first_byte_timeout_ms"), &mut u.first_byte_timeout_ms, limits::TIMEOUT_MS);
            clamp(format!("{p}.read_timeout_ms"), &mut u.read_timeout_ms, limits::TIMEOUT_MS);
            clamp(format!("{p}.pool_idle_timeout_ms"), &mut u.pool_idle_timeout_ms, limits::POOL_IDLE_MS);
            clamp(format!("{p}.eject_ms"), &mut u.eject_ms, limits::EJECT_MS);
            clamp(format!("{p}.probe_interval_ms"), &mut u.probe_interval_ms, limits::PROBE_INTERVAL_MS);
            let mut eject = u64::from(u.eject_after_failures);
            clamp(format!("{p}.eject_after_failures"), &mut eject, limits::EJECT_AFTER_FAILURES);
            u.eject_after_failures = u32::try_from(eject).unwrap_or(u32::MAX);
            for (j, pr) in u.prices.iter_mut().enumerate() {
                if !(price(&mut pr.prompt_per_mtok) & price(&mut pr.completion_per_mtok)) {
                    prices_changed.push(format!("{p}.prices[{j}]"));
                }
            }
        }
        for (i, m) in self.models.iter_mut().enumerate() {
            let p = format!("models[{i}]");
            for (field, v, r) in [
                ("per_attempt_timeout_ms", &mut m.retry.per_attempt_timeout_ms, limits::TIMEOUT_MS),
                ("deadline_ms", &mut m.retry.deadline_ms, limits::TIMEOUT_MS),
                ("backoff_ms", &mut m.retry.backoff_ms, limits::BACKOFF_MS),
            ] {
                if let Some(v) = v {
                    clamp(format!("{p}.retry.{field}"), v, r);
                }
            }
            clamp(format!("{p}.cache.ttl_ms"), &mut m.cache.ttl_ms, limits::CACHE_TTL_MS);
            for (j, t) in m.targets.iter_mut().enumerate() {
                for v in [&mut t.prompt_per_mtok, &mut t.completion_per_mtok].into_iter().flatten() {
                    if !price(v) {
                        prices_changed.push(format!("{p}.targets[{j}]"));
                    }
                }
            }
        }
        for (i, k) in self.keys.iter_mut().enumerate() {
            if let Some(t) = k.expires_at.as_mut() {
                clamp(format!("keys[{i}].expires_at"), t, limits::EXPIRES_AT_S);
            }
        }
        changed.extend(prices_changed);
        changed
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut upstream_names = HashSet::new();
        for (i, u) in self.upstreams.iter().enumerate() {
            let p = format!("upstreams[{i}]");
            if u.name.is_empty() {
                return Err(ConfigError::at(format!("{p}.name"), "must not be empty"));
            }
            if u.name.starts_with(NODE_TARGET_PREFIX) {
                return Err(ConfigError::at(format!("{p}.name"), "names starting with `node:` are for nodes"));
            }
            if !upstream_names.insert(u.name.as_str()) {
                return Err(ConfigError::at(format!("{p}.name"), format!("duplicate upstream name `{}`", u.name)));
            }
            BaseUrl::parse(&u.base_url).map_err(|e| ConfigError::at(format!("{p}.base_url"), e))?;
            if u.api_key.is_some() && u.api_key_env.is_some() {
                return Err(ConfigError::at(p, "set either api_key or api_key_env, not both"));
            }
            in_range(format!("{p}.probe_interval_ms"), u.probe_interval_ms, limits::PROBE_INTERVAL_MS)?;
            if u.probe_interval_ms > 0 && u.probe_interval_ms < limits::PROBE_INTERVAL_MIN_MS {
                return Err(ConfigError::at(format!("{p}.probe_interval_ms"), "must be 0 (off) or at least 100"));
            }
            if !u.probe_path.starts_with('/') || u.probe_path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                return Err(ConfigError::at(format!("{p}.probe_path"), "must start with / and have no spaces"));
            }
            in_range(format!("{p}.eject_after_failures"), u.eject_after_failures.into(), limits::EJECT_AFTER_FAILURES)?;
            in_range(format!("{p}.eject_ms"), u.eject_ms, limits::EJECT_MS)?;
            in_range(format!("{p}.pool_max_idle"), u.pool_max_idle as u64, limits::POOL_MAX_IDLE)?;
            let mut priced = HashSet::new();
            for (j, price) in u.prices.iter().enumerate() {
                for (field, v) in
                    [("prompt_per_mtok", price.prompt_per_mtok), ("completion_per_mtok", price.completion_per_mtok)]
                {
                    limits::check_price(v).map_err(|m| ConfigError::at(format!("{p}.prices[{j}].{field}"), m))?;
                }
                if !priced.insert(price.model.as_str()) {
                    return Err(ConfigError::at(
                        format!("{p}.prices[{j}].model"),
                        format!("`{}` is priced twice", price.model),
                    ));
                }
            }
            for (name, value) in &u.headers {
                if !is_token(name) {
                    return Err(ConfigError::at(
                        format!("{p}.headers"),
                        format!("`{name}` is not a valid header name"),
                    ));
                }
                if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                    return Err(ConfigError::at(
                        format!("{p}.headers"),
                        format!("`{name}` is set by the gateway and cannot be overridden"),
                    ));
                }
                if value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
                    return Err(ConfigError::at(format!("{p}.headers.{name}"), "value has control characters"));
                }
            }
            for (field, v, range) in [
                ("connect_timeout_ms", u.connect_timeout_ms, limits::TIMEOUT_MS),
                ("first_byte_timeout_ms", u.first_byte_timeout_ms, limits::TIMEOUT_MS),
                ("read_timeout_ms", u.read_timeout_ms, limits::TIMEOUT_MS),
                ("pool_idle_timeout_ms", u.pool_idle_timeout_ms, limits::POOL_IDLE_MS),
            ] {
                in_range(format!("{p}.{field}"), v, range)?;
            }
        }
        let mut model_names = HashSet::new();
        for (i, m) in self.models.iter().enumerate() {
            let p = format!("models[{i}]");
            if m.name.is_empty() || m.name.len() > 256 {
                return Err(ConfigError::at(format!("{p}.name"), "must be 1 to 256 characters"));
            }
            if m.name == "*" {
                return Err(ConfigError::at(format!("{p}.name"), "`*` is reserved (it means every model in keys)"));
            }
            if !model_names.insert(m.name.as_str()) {
                return Err(ConfigError::at(format!("{p}.name"), format!("duplicate model name `{}`", m.name)));
            }
            if m.targets.is_empty() {
                return Err(ConfigError::at(format!("{p}.targets"), "needs at least one target"));
            }
            if m.targets.len() > MAX_TARGETS {
                return Err(ConfigError::at(format!("{p}.targets"), format!("at most {MAX_TARGETS} targets")));
            }
            if let Some(n) = m.retry.max_attempts {
                in_range(format!("{p}.retry.max_attempts"), n.into(), limits::MAX_ATTEMPTS)?;
            }
            if !m.cache.is_off() {
                in_range(format!("{p}.cache.ttl_ms"), m.cache.ttl_ms, limits::CACHE_TTL_MS)?;
            }
            for (field, v, range) in [
                ("per_attempt_timeout_ms", m.retry.per_attempt_timeout_ms, limits::TIMEOUT_MS),
                ("deadline_ms", m.retry.deadline_ms, limits::TIMEOUT_MS),
                ("backoff_ms", m.retry.backoff_ms, limits::BACKOFF_MS),
            ] {
                if let Some(v) = v {
                    in_range(format!("{p}.retry.{field}"), v, range)?;
                }
            }
            if m.targets.iter().map(|t| t.weight as u64).sum::<u64>() > 10_000 {
                return Err(ConfigError::at(format!("{p}.targets"), "weights must add up to at most 10000"));
            }
            for (j, t) in m.targets.iter().enumerate() {
                match &t.nodes {
                    Some(pool) => {
                        if !t.upstream.is_empty() {
                            return Err(ConfigError::at(
                                format!("{p}.targets[{j}]"),
                                "set either upstream or nodes, not both",
                            ));
                        }
                        if pool.is_empty() || pool.len() > 256 {
                            return Err(ConfigError::at(
                                format!("{p}.targets[{j}].nodes"),
                                "must be 1 to 256 characters",
                            ));
                        }
                        if t.model.is_some() {
                            return Err(ConfigError::at(
                                format!("{p}.targets[{j}].model"),
                                "a node pool takes each node's own name for the model",
                            ));
                        }
                    }
                    None if !upstream_names.contains(t.upstream.as_str()) => {
                        return Err(ConfigError::at(
                            format!("{p}.targets[{j}].upstream"),
                            format!("unknown upstream `{}`", t.upstream),
                        ));
                    }
                    None => {}
                }
                for (field, v) in
                    [("prompt_per_mtok", t.prompt_per_mtok), ("completion_per_mtok", t.completion_per_mtok)]
                {
                    if let Some(v) = v {
                        limits::check_price(v).map_err(|m| ConfigError::at(format!("{p}.targets[{j}].{field}"), m))?;
                    }
                }
                if t.model.as_deref() == Some("") {
                    return Err(ConfigError::at(format!("{p}.targets[{j}].model"), "must not be empty"));
                }
                in_range(format!("{p}.targets[{j}].weight"), t.weight.into(), limits::WEIGHT)?;
            }
        }
        let mut ids = HashSet::new();
        let mut hashes = HashSet::new();
        for (i, k) in self.keys.iter().enumerate() {
            let p = format!("keys[{i}]");
            if k.id.is_empty() {
                return Err(ConfigError::at(format!("{p}.id"), "must not be empty"));
            }
            if !ids.insert(k.id.as_str()) {
                return Err(ConfigError::at(format!("{p}.id"), format!("duplicate key id `{}`", k.id)));
            }
            let h = crate::keyhash::parse_any(&k.hash).map_err(|e| ConfigError::at(format!("{p}.hash"), e))?;
            if !hashes.insert(h) {
                return Err(ConfigError::at(format!("{p}.hash"), "the same key is configured twice"));
            }
            for (j, m) in k.models.iter().enumerate() {
                if m != "*" && !model_names.contains(m.as_str()) {
                    return Err(ConfigError::at(format!("{p}.models[{j}]"), format!("unknown model `{m}`")));
                }
            }
            if let Some(t) = k.expires_at {
                in_range(format!("{p}.expires_at"), t, limits::EXPIRES_AT_S)?;
            }
            check_limits(&p, k.rpm, k.tpm, &k.quotas)?;
        }
        let mut node_names = HashSet::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let p = format!("nodes[{i}]");
            if n.id.is_empty() || !node_names.insert(n.name.as_str()) {
                return Err(ConfigError::at(format!("{p}.name"), format!("duplicate or empty node `{}`", n.name)));
            }
            crate::keyhash::parse_any(&n.secret_hash).map_err(|e| ConfigError::at(format!("{p}.secret_hash"), e))?;
            n.reach.check().map_err(|(field, e)| ConfigError::at(format!("{p}.reach.{field}"), e))?;
            let mut seen = HashSet::new();
            for (j, m) in n.models.iter().enumerate() {
                if let Err(e) = check_node_model(&m.name).and_then(|_| check_node_model(&m.local)) {
                    return Err(ConfigError::at(format!("{p}.models[{j}]"), e));
                }
                if !seen.insert(m.name.as_str()) {
                    return Err(ConfigError::at(format!("{p}.models[{j}]"), format!("`{}` is listed twice", m.name)));
                }
            }
        }
        let mut org_names = HashSet::new();
        for (i, o) in self.orgs.iter().enumerate() {
            let p = format!("orgs[{i}]");
            if o.name.is_empty() {
                return Err(ConfigError::at(format!("{p}.name"), "must not be empty"));
            }
            if !org_names.insert(o.name.as_str()) {
                return Err(ConfigError::at(format!("{p}.name"), format!("duplicate org `{}`", o.name)));
            }
            check_limits(&p, o.rpm, o.tpm, &o.quotas)?;
            let mut seen = HashSet::new();
            for (j, m) in o.models.iter().enumerate() {
                let mp = format!("{p}.models[{j}]");
                if !model_names.contains(m.model.as_str()) {
                    return Err(ConfigError::at(format!("{mp}.model"), format!("unknown model `{}`", m.model)));
                }
                if !seen.insert(m.model.as_str()) {
                    return Err(ConfigError::at(format!("{mp}.model"), "listed twice"));
                }
                check_limits(&mp, m.rpm, m.tpm, &[])?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyHash;

    fn sample() -> String {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
workers = 2

[[upstreams]]
name = "mock"
base_url = "http://127.0.0.1:9000/v1"
api_key = "sk-upstream-123456789"

[[models]]
name = "gpt-4o-mini"
targets = [{{ upstream = "mock" }}]

[[models]]
name = "fast"
targets = [{{ upstream = "mock", model = "gpt-4o-mini" }}]

[[keys]]
id = "team-a"
hash = "{}"
models = ["fast"]
"#,
            KeyHash::of(b"sk-a")
        )
    }

    #[test]
    fn parses_a_full_config_with_defaults() {
        let cfg = Config::parse(&sample()).unwrap();
        assert_eq!(cfg.server.workers, 2);
        assert_eq!(cfg.server.max_header_bytes, 16 * 1024);
        assert_eq!(cfg.server.max_body_bytes, 8 * 1024 * 1024);
        assert_eq!(cfg.keys[0].org, "default");
        assert_eq!(cfg.upstreams[0].connect_timeout_ms, 5_000);
        assert_eq!(cfg.models[1].targets[0].model.as_deref(), Some("gpt-4o-mini"));
    }

    #[test]
    fn unknown_fields_are_errors_that_name_the_key() {
        let err = Config::parse("[server]\nlisten_addr = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("listen_addr"), "{err}");
        let err = Config::parse(&sample().replace("api_key =", "apikey =")).unwrap_err();
        assert!(err.to_string().contains("apikey"), "{err}");
    }

    #[test]
    fn cross_references_are_checked_with_paths() {
        let err = Config::parse(&sample().replace("{ upstream = \"mock\" }", "{ upstream = \"nope\" }")).unwrap_err();
        assert_eq!(err.path, "models[0].targets[0].upstream");
        let err = Config::parse(&sample().replace("models = [\"fast\"]", "models = [\"slow\"]")).unwrap_err();
        assert_eq!(err.path, "keys[0].models[0]");
        let err = Config::parse(&sample().replace("127.0.0.1:9000/v1", "127.0.0.1:9000/v1?x")).unwrap_err();
        assert_eq!(err.path, "upstreams[0].base_url");
        let err = Config::parse(&sample().replace("listen = \"127.0.0.1:0\"", "listen = \"nowhere\"")).unwrap_err();
        assert_eq!(err.path, "server.listen");
    }

    #[test]
    fn names_follow_the_admin_apis_rules_and_a_key_names_some_model() {
        // TOML escapes: U+202E (bidi override), U+200B (zero width), NUL.
        for bad in [r"fa\u202Est", r"fa\u200Bst", r"fa\u0000st"] {
            let cfg = sample().replacen("name = \"fast\"", &format!("name = \"{bad}\""), 1);
            assert_ne!(cfg, sample());
            assert_eq!(Config::parse(&cfg).unwrap_err().path, "models[1].name", "{bad:?}");
        }
        let cfg = sample().replacen("models = [\"fast\"]", "models = []", 1);
        assert_ne!(cfg, sample());
        assert_eq!(Config::parse(&cfg).unwrap_err().path, "keys[0].models");
    }

    #[test]
    fn a_routes_weights_add_up_to_at_most_10000_whatever_its_strategy() {
        let heavy = "{ upstream = \"mock\", weight = 6000 }, { upstream = \"mock\", weight = 6000 }]";
        let cfg = sample().replacen("{ upstream = \"mock\" }]", heavy, 1);
        assert_ne!(cfg, sample());
        assert_eq!(Config::parse(&cfg).unwrap_err().path, "models[0].targets");
    }

    #[test]
    fn duplicates_and_reserved_headers_are_refused() {
        let dup = sample().replace("name = \"fast\"", "name = \"gpt-4o-mini\"");
        assert_eq!(Config::parse(&dup).unwrap_err().path, "models[1].name");
        let hdr = sample().replace("api_key = ", "headers = { Authorization = \"x\" }\napi_key = ");
        assert_eq!(Config::parse(&hdr).unwrap_err().path, "upstreams[0].headers");
        let zero = sample().replace("workers = 2", "workers = 2\nmax_body_bytes = 0");
        assert_eq!(Config::parse(&zero).unwrap_err().path, "server.max_body_bytes");
    }

    #[test]
    fn node_pool_targets_are_checked() {
        let pool = sample().replace(
            "{ upstream = \"mock\" }]",
            "{ nodes = \"llama\", prompt_per_mtok = 0.0 }, { upstream = \"mock\" }]",
        );
        let cfg = Config::parse(&pool).unwrap();
        assert_eq!(cfg.models[0].targets[0].nodes.as_deref(), Some("llama"));
        let both = sample().replace("{ upstream = \"mock\" }]", "{ upstream = \"mock\", nodes = \"llama\" }]");
        assert_eq!(Config::parse(&both).unwrap_err().path, "models[0].targets[0]");
        let renamed = sample().replace("{ upstream = \"mock\" }]", "{ nodes = \"llama\", model = \"x\" }]");
        assert_eq!(Config::parse(&renamed).unwrap_err().path, "models[0].targets[0].model");
        let price = sample().replace("{ upstream = \"mock\" }]", "{ nodes = \"llama\", prompt_per_mtok = -1.0 }]");
        assert_eq!(Config::parse(&price).unwrap_err().path, "models[0].targets[0].prompt_per_mtok");
        let reserved = sample().replace("name = \"mock\"", "name = \"node:mock\"");
        assert_eq!(Config::parse(&reserved).unwrap_err().path, "upstreams[0].name");
    }

    #[test]
    fn ranges_are_checked_for_the_file_as_for_the_api() {
        let huge = sample().replace("api_key =", "connect_timeout_ms = 18446744073709551615\napi_key =");
        let err = Config::parse(&huge).unwrap_err();
        assert_eq!(err.path, "upstreams[0].connect_timeout_ms", "{err}");
        assert!(err.message.contains("3600000"), "{err}");
        let retention = sample().replace("[server]", "[usage]\nretention_days = 18446744073709551615\n\n[server]");
        assert_eq!(Config::parse(&retention).unwrap_err().path, "usage.retention_days");
        let price = sample().replace("api_key =", "prices = [{ model = \"m\", prompt_per_mtok = 1e13 }]\napi_key =");
        assert_eq!(Config::parse(&price).unwrap_err().path, "upstreams[0].prices[0].prompt_per_mtok");
        let long = format!("x{}", "y".repeat(900_000));
        let e = check_node_model(&long).unwrap_err();
        assert!(e.len() < 400, "a huge name is not echoed whole: {} bytes", e.len());
    }

    #[test]
    fn stored_absurd_values_are_clamped_into_range_so_they_can_be_served() {
        let mut spec = Config::parse(&sample()).unwrap().routing();
        spec.upstreams[0].connect_timeout_ms = u64::MAX;
        spec.upstreams[0].prices.push(PriceSpec {
            model: "x".into(),
            prompt_per_mtok: 1e308,
            completion_per_mtok: f64::NAN,
        });
        assert!(spec.validate().is_err());
        let changed = spec.clamp_to_ranges();
        assert_eq!(changed, ["upstreams[0].connect_timeout_ms", "upstreams[0].prices[0]"]);
        spec.validate().unwrap();
        assert!(spec.clamp_to_ranges().is_empty());
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let cfg = Config::parse(&sample()).unwrap();
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("sk-upstream-123456789"));
        assert!(dbg.contains("...6789"));
    }
}
