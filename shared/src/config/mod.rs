//! The declarative configuration: `[server]` settings for this process, and the
//! routing spec (`[[keys]]`, `[[providers]]`, `[[routes]]`) that the data plane
//! compiles into its routing snapshot.
//!
//! Every table denies unknown fields, so a typo is an error naming the key, not
//! a silently ignored setting. [`Config::parse`] also validates cross-references
//! and reports the path of the first bad value (`models[1].targets[0].upstream`).
//!
//! * [`server`]: this process's settings: `[server]`, `[admin]`, `[usage]`.
//! * [`routing`]: the routing spec: keys, upstreams, models (routes), nodes.
//! * [`policy`]: rate limits and quotas, one block ([`Limits`]) for keys and
//!   orgs.
//! * [`validate`]: the routing spec's checks (ranges, names, cross-references).
//! * [`vocabulary`]: the deprecated spellings of the file (`[[upstreams]]`,
//!   `[[models]]`, a target's `upstream`), still read, and reported.
//!
//! Everything is re-exported here: `switchboard_shared::config::X` is the path.

pub mod policy;
pub mod routing;
pub mod server;
mod validate;
pub mod vocabulary;

pub use policy::*;
pub use routing::*;
pub use server::*;

use crate::limits::{self, Range};
use serde::{Deserialize, Serialize};
use std::fmt;

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
pub(crate) fn in_range(path: impl Into<String>, value: u64, range: Range) -> Result<(), ConfigError> {
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
    /// The providers (`[[providers]]`; read from `[[upstreams]]` too, the
    /// deprecated spelling).
    #[serde(default, rename = "providers", alias = "upstreams")]
    pub upstreams: Vec<UpstreamSpec>,
    /// The routes (`[[routes]]`; read from `[[models]]` too, the deprecated
    /// spelling).
    #[serde(default, rename = "routes", alias = "models")]
    pub models: Vec<ModelSpec>,
    /// Limits and quotas shared by every data plane through Redis
    /// (`[cluster]`, `shared/src/cluster.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// What the file spells the deprecated way, one sentence each, for the
    /// loader to log (see [`vocabulary`]).
    #[serde(skip)]
    pub deprecations: Vec<String>,
}

impl Config {
    /// Parse and validate TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut cfg: Config =
            toml::from_str(text).map_err(|e| ConfigError::at("", e.to_string().trim_end().to_string()))?;
        let spelling = vocabulary::Spelling::of(text);
        cfg.deprecations = spelling.deprecations();
        cfg.validate().map_err(|e| spelling.respell(e))?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let cfg = self;
        cfg.server.validate()?;
        if let Some(a) = &cfg.admin {
            a.listen_addr()?;
            in_range("admin.max_body_bytes", a.max_body_bytes as u64, limits::ADMIN_MAX_BODY_BYTES)?;
            in_range("admin.node_heartbeat_ms", a.node_heartbeat_ms, limits::NODE_HEARTBEAT_MS)?;
            in_range("admin.console_session_ttl_ms", a.console_session_ttl_ms, limits::CONSOLE_SESSION_TTL_MS)?;
            in_range("admin.console_max_sessions", a.console_max_sessions, limits::CONSOLE_MAX_SESSIONS)?;
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
        cfg.routing().validate()
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

#[cfg(test)]
mod tests;
