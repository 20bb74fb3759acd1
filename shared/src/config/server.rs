//! This process's settings: `[server]` (the data plane), `[admin]` (the admin
//! API) and `[usage]` (accounting). Read at start; changing them needs a
//! restart.

use super::{in_range, ConfigError};
use crate::limits;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

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
    /// Serve the web console at `/` of the admin listener.
    pub console: bool,
    /// How long a console session lasts after sign-in (then sign in again).
    pub console_session_ttl_ms: u64,
    /// Console sessions open at once; signing in past it ends the oldest.
    pub console_max_sessions: u64,
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
            console: true,
            console_session_ttl_ms: 8 * 3_600_000,
            console_max_sessions: 256,
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
