//! `[cluster]`: the Redis (or Valkey) that data planes share for exact rate
//! limits and quotas across processes (docs/scale-out.md).

use crate::config::ConfigError;
use crate::limits;
use crate::url::BaseUrl;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What a data plane does with a limited request while Redis is down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisDown {
    /// Fall back to this process's own limits and quotas (as without `[cluster]`).
    #[default]
    Local,
    /// Refuse requests that have limits or quotas: 503 `limits_unavailable`.
    Deny,
    /// Admit requests without checking limits or quotas.
    Allow,
}

impl OnRedisDown {
    pub fn name(self) -> &'static str {
        match self {
            OnRedisDown::Local => "local",
            OnRedisDown::Deny => "deny",
            OnRedisDown::Allow => "allow",
        }
    }
}

/// `[cluster]`. Credentials are never in the file or the published
/// snapshot: `password_env` / `password_file` name where each process reads them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `redis://host:port` or `rediss://host:port` (TLS, rustls). No
    /// credentials in the URL.
    pub redis_url: String,
    /// ACL user name (Redis 6+); `default` when only a password is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Environment variable holding the password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// File holding the password (one line; trailing newline ignored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// PEM CA bundle for `rediss://` (default: the public web roots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    pub connect_timeout_ms: u64,
    /// One command (a request's admission script) may take this long; past
    /// it the request gets the `on_redis_down` answer.
    pub command_timeout_ms: u64,
    /// Connections to Redis per data-plane worker (commands are pipelined on them).
    pub pool_size: usize,
    pub on_redis_down: OnRedisDown,
    /// Consecutive failed or timed-out commands after which Redis is taken
    /// as down (requests stop waiting on it until a probe answers).
    pub down_after_failures: u32,
    /// How often Redis is probed (PING) off the request path, and how often
    /// the admin checks whether quotas need re-seeding.
    pub probe_interval_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis_url: "redis://127.0.0.1:6379".into(),
            username: None,
            password_env: None,
            password_file: None,
            ca_file: None,
            connect_timeout_ms: 500,
            command_timeout_ms: 250,
            pool_size: 2,
            on_redis_down: OnRedisDown::Local,
            down_after_failures: 3,
            probe_interval_ms: 250,
        }
    }
}

impl ClusterConfig {
    /// The address and whether it is TLS, from `redis_url`.
    pub fn endpoint(&self) -> Result<BaseUrl, String> {
        let (tls, rest) = if let Some(r) = self.redis_url.strip_prefix("redis://") {
            (false, r)
        } else if let Some(r) = self.redis_url.strip_prefix("rediss://") {
            (true, r)
        } else {
            return Err("must start with redis:// or rediss://".into());
        };
        if rest.contains('@') {
            return Err("must not carry credentials; use username and password_env or password_file".into());
        }
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err("must not name a database (only database 0 is used)".into());
        }
        let scheme = if tls { "https" } else { "http" };
        let mut url = BaseUrl::parse(&format!("{scheme}://{rest}"))?;
        if !rest.rsplit_once(':').is_some_and(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())) {
            url.port = 6379;
        }
        Ok(url)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let at = |f: &str| format!("cluster.{f}");
        self.endpoint().map_err(|m| ConfigError::at(at("redis_url"), m))?;
        if self.password_env.is_some() && self.password_file.is_some() {
            return Err(ConfigError::at(at("password_env"), "set either password_env or password_file, not both"));
        }
        let checks = [
            ("connect_timeout_ms", self.connect_timeout_ms, limits::CLUSTER_TIMEOUT_MS),
            ("command_timeout_ms", self.command_timeout_ms, limits::CLUSTER_TIMEOUT_MS),
            ("pool_size", self.pool_size as u64, limits::CLUSTER_POOL_SIZE),
            ("down_after_failures", self.down_after_failures.into(), limits::CLUSTER_DOWN_AFTER_FAILURES),
            ("probe_interval_ms", self.probe_interval_ms, limits::CLUSTER_PROBE_INTERVAL_MS),
        ];
        for (f, v, r) in checks {
            r.check(v).map_err(|m| ConfigError::at(at(f), m))?;
        }
        Ok(())
    }

    /// The password, read now from the environment or the file (never logged).
    pub fn password(&self) -> Result<Option<crate::Secret>, String> {
        if let Some(var) = &self.password_env {
            return std::env::var(var)
                .map(|v| Some(crate::Secret::new(v)))
                .map_err(|_| format!("cluster.password_env: the variable `{var}` is not set"));
        }
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cluster.password_file: cannot read {}: {e}", path.display()))?;
            return Ok(Some(crate::Secret::new(text.trim_end_matches(['\r', '\n']))));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_ranges() {
        let mut c = ClusterConfig { redis_url: "redis://10.0.0.5".into(), ..ClusterConfig::default() };
        let e = c.endpoint().expect("valid");
        assert_eq!((e.host.as_str(), e.port, e.tls), ("10.0.0.5", 6379, false));
        c.redis_url = "rediss://cache.example:6380/".into();
        let e = c.endpoint().expect("valid");
        assert_eq!((e.port, e.tls), (6380, true));
        for bad in ["http://x", "redis://u:p@x:1", "redis://x:1/3"] {
            c.redis_url = bad.into();
            assert!(c.validate().is_err(), "{bad}");
        }
        c.redis_url = "redis://x:1".into();
        c.command_timeout_ms = 0;
        assert!(c.validate().unwrap_err().to_string().contains("cluster.command_timeout_ms"));
    }
}
