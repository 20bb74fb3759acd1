//! Request and response bodies. Requests deny unknown fields; secrets are
//! write-only (responses carry a masked hint).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use switchboard_shared::config::ProviderKind;
use switchboard_shared::Secret;
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub object: &'static str,
    pub data: Vec<T>,
    /// Pass as `offset` for the next page; null on the last.
    pub next_offset: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    #[serde(default)]
    pub offset: u64,
    #[serde(default = "default_limit")]
    pub limit: u64,
}

fn default_limit() -> u64 {
    50
}

// ---- orgs ----

#[derive(Debug, Serialize, Clone, PartialEq, ToSchema)]
pub struct Org {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgInput {
    pub name: String,
}

// ---- API keys ----

#[derive(Debug, Serialize, Clone, PartialEq, ToSchema)]
pub struct Key {
    pub id: String,
    pub org_id: String,
    pub org: String,
    pub name: String,
    /// `sk-sb-...abcd`: enough to recognise a key, not to use it.
    pub hint: String,
    pub models: Vec<String>,
    pub expires_at: Option<i64>,
    pub enabled: bool,
    /// A test key: may inject faults (`x-switchboard-fault`), for `switchboard smoke`.
    pub test: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A key with its plaintext: returned once, at creation or rotation.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyWithSecret {
    #[serde(flatten)]
    pub key: Key,
    pub key_secret: String,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyCreate {
    /// Org id or name.
    pub org: String,
    pub name: String,
    #[serde(default = "all_models")]
    pub models: Vec<String>,
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A test key: may send `x-switchboard-fault` and `x-switchboard-target-only`.
    #[serde(default)]
    pub test: bool,
}

#[derive(Debug, Deserialize, Serialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyUpdate {
    #[serde(default, deserialize_with = "non_null")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "non_null")]
    pub models: Option<Vec<String>>,
    /// `null` clears the expiry.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<i64>)]
    pub expires_at: Option<Option<i64>>,
    #[serde(default, deserialize_with = "non_null")]
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "non_null")]
    pub test: Option<bool>,
}

fn all_models() -> Vec<String> {
    vec!["*".to_string()]
}
fn yes() -> bool {
    true
}

// ---- providers ----

#[derive(Debug, Deserialize, Serialize, Clone, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// The upstream's model name.
    pub name: String,
    /// USD per million prompt tokens.
    #[serde(default)]
    pub prompt_per_mtok: f64,
    /// USD per million completion tokens.
    #[serde(default)]
    pub completion_per_mtok: f64,
    /// USD per million prompt tokens read from the provider's prompt cache
    /// (unset: the prompt price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_per_mtok: Option<f64>,
    /// USD per million prompt tokens written to the prompt cache (unset: the prompt price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_per_mtok: Option<f64>,
}

/// What is stored for a provider (secrets included; never returned as is).
#[derive(Debug, Deserialize, Serialize, Clone, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    /// `openai` (default) or `anthropic` (the Messages API: key sent as
    /// `x-api-key`, `anthropic-version` added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub kind: Option<ProviderKind>,
    pub base_url: String,
    /// Provider API keys, for rotation; the first enabled one is used today.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub api_keys: Vec<Secret>,
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    pub headers: BTreeMap<String, Secret>,
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    #[serde(default)]
    pub first_byte_timeout_ms: Option<u64>,
    #[serde(default)]
    pub read_timeout_ms: Option<u64>,
    #[serde(default)]
    pub models: Vec<ModelPrice>,
    /// Consecutive failures that eject the provider (default 5).
    #[serde(default)]
    pub eject_after_failures: Option<u32>,
    /// How long an ejected provider stays out before a trial request (default 10 s).
    #[serde(default)]
    pub eject_ms: Option<u64>,
    /// Active health probe interval (unset or 0 = off).
    #[serde(default)]
    pub probe_interval_ms: Option<u64>,
    /// Path probed after the base URL (default `/models`).
    #[serde(default)]
    pub probe_path: Option<String>,
    /// A stream without any `finish_reason` is truncated (default true; false
    /// for a server known to omit it).
    #[serde(default)]
    pub require_finish_reason: Option<bool>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderCreate {
    pub name: String,
    /// `openai` (default) or `anthropic` (the Messages API: key sent as
    /// `x-api-key`, `anthropic-version` added).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub kind: Option<ProviderKind>,
    pub base_url: String,
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub api_keys: Vec<Secret>,
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    pub headers: BTreeMap<String, Secret>,
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    #[serde(default)]
    pub first_byte_timeout_ms: Option<u64>,
    #[serde(default)]
    pub read_timeout_ms: Option<u64>,
    #[serde(default)]
    pub models: Vec<ModelPrice>,
    #[serde(default)]
    pub eject_after_failures: Option<u32>,
    #[serde(default)]
    pub eject_ms: Option<u64>,
    #[serde(default)]
    pub probe_interval_ms: Option<u64>,
    #[serde(default)]
    pub probe_path: Option<String>,
    #[serde(default)]
    pub require_finish_reason: Option<bool>,
}

impl ProviderCreate {
    pub fn into_parts(self) -> (String, ProviderSpec) {
        let spec = ProviderSpec {
            kind: self.kind,
            base_url: self.base_url,
            api_keys: self.api_keys,
            headers: self.headers,
            ca_file: self.ca_file,
            connect_timeout_ms: self.connect_timeout_ms,
            first_byte_timeout_ms: self.first_byte_timeout_ms,
            read_timeout_ms: self.read_timeout_ms,
            models: self.models,
            eject_after_failures: self.eject_after_failures,
            eject_ms: self.eject_ms,
            probe_interval_ms: self.probe_interval_ms,
            probe_path: self.probe_path,
            require_finish_reason: self.require_finish_reason,
        };
        (self.name, spec)
    }
}

#[derive(Debug, Deserialize, Serialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderUpdate {
    #[serde(default, deserialize_with = "non_null")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "non_null")]
    pub base_url: Option<String>,
    /// `null` clears them.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<Vec<String>>)]
    pub api_keys: Option<Option<Vec<Secret>>>,
    /// `null` clears them.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub headers: Option<Option<BTreeMap<String, Secret>>>,
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub ca_file: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<u64>)]
    pub connect_timeout_ms: Option<Option<u64>>,
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<u64>)]
    pub first_byte_timeout_ms: Option<Option<u64>>,
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<u64>)]
    pub read_timeout_ms: Option<Option<u64>>,
    /// `null` clears the price table.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<Vec<ModelPrice>>)]
    pub models: Option<Option<Vec<ModelPrice>>>,
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<u32>)]
    pub eject_after_failures: Option<Option<u32>>,
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<u64>)]
    pub eject_ms: Option<Option<u64>>,
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<u64>)]
    pub probe_interval_ms: Option<Option<u64>>,
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub probe_path: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<bool>)]
    pub require_finish_reason: Option<Option<bool>>,
    #[serde(default, deserialize_with = "non_null")]
    #[schema(value_type = Option<String>)]
    pub kind: Option<ProviderKind>,
}

#[derive(Debug, Serialize, Clone, PartialEq, ToSchema)]
pub struct Provider {
    pub id: String,
    pub name: String,
    /// `openai` or `anthropic`.
    pub kind: &'static str,
    pub base_url: String,
    /// Masked hints of the provider keys (`...abcd`; `***` below 16 characters).
    pub api_keys: Vec<String>,
    /// Header names with masked values.
    pub headers: BTreeMap<String, String>,
    pub ca_file: Option<String>,
    pub connect_timeout_ms: Option<u64>,
    pub first_byte_timeout_ms: Option<u64>,
    pub read_timeout_ms: Option<u64>,
    pub models: Vec<ModelPrice>,
    pub eject_after_failures: Option<u32>,
    pub eject_ms: Option<u64>,
    pub probe_interval_ms: Option<u64>,
    pub probe_path: Option<String>,
    pub require_finish_reason: Option<bool>,
    pub created_at: i64,
    pub updated_at: i64,
}

// ---- routes ----

#[derive(Debug, Deserialize, Serialize, Clone, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteTarget {
    /// Provider id or name (or set `nodes`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider: String,
    /// A node pool: the enrolled nodes that advertise this model (the
    /// requesting key's org's own, and shared ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<String>,
    /// USD per million prompt tokens here (a node pool's price; 0 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_per_mtok: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_per_mtok: Option<f64>,
    /// The provider's model name; defaults to the route's name.
    #[serde(default)]
    pub model: Option<String>,
    /// For weighted strategies.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize, Serialize, Clone, PartialEq, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub per_attempt_timeout_ms: Option<u64>,
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    #[serde(default)]
    pub backoff_ms: Option<u64>,
}

#[derive(Debug, Deserialize, Serialize, Clone, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// priority, weighted, round_robin, least_latency, cheapest or least_busy.
    #[serde(default = "priority")]
    pub strategy: String,
    pub targets: Vec<RouteTarget>,
    #[serde(default)]
    pub retry: RetrySettings,
    /// Let requests choose the strategy with `x-switchboard-strategy`.
    #[serde(default)]
    pub allow_strategy_header: bool,
    /// Failures that move a request on: connect, tls, reset, timeout, 5xx,
    /// 429, 408, 409 (default: all but 408 and 409).
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    pub failover_on: Option<Vec<switchboard_shared::config::Trigger>>,
    /// The response cache: `{"mode": "off|deterministic|always", "ttl_ms": 300000}`.
    #[serde(default, skip_serializing_if = "switchboard_shared::config::CacheSpec::is_off")]
    #[schema(value_type = Option<Object>)]
    pub cache: switchboard_shared::config::CacheSpec,
}

fn priority() -> String {
    "priority".to_string()
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteCreate {
    /// The public model name.
    pub name: String,
    #[serde(default = "priority")]
    pub strategy: String,
    pub targets: Vec<RouteTarget>,
    #[serde(default)]
    pub retry: RetrySettings,
    #[serde(default)]
    pub allow_strategy_header: bool,
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    pub failover_on: Option<Vec<switchboard_shared::config::Trigger>>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub cache: switchboard_shared::config::CacheSpec,
}

impl RouteCreate {
    pub fn into_parts(self) -> (String, RouteSpec) {
        let spec = RouteSpec {
            strategy: self.strategy,
            targets: self.targets,
            retry: self.retry,
            allow_strategy_header: self.allow_strategy_header,
            failover_on: self.failover_on,
            cache: self.cache,
        };
        (self.name, spec)
    }
}

#[derive(Debug, Deserialize, Serialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteUpdate {
    #[serde(default, deserialize_with = "non_null")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "non_null")]
    pub strategy: Option<String>,
    #[serde(default, deserialize_with = "non_null")]
    pub targets: Option<Vec<RouteTarget>>,
    /// `null` resets it (one attempt per target, no deadline).
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<RetrySettings>)]
    pub retry: Option<Option<RetrySettings>>,
    #[serde(default, deserialize_with = "non_null")]
    pub allow_strategy_header: Option<bool>,
    /// `null` resets it to the default triggers.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<Vec<String>>)]
    pub failover_on: Option<Option<Vec<switchboard_shared::config::Trigger>>>,
    /// `null` turns the cache off.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<Object>)]
    pub cache: Option<Option<switchboard_shared::config::CacheSpec>>,
}

#[derive(Debug, Serialize, Clone, PartialEq, ToSchema)]
pub struct Route {
    pub id: String,
    pub name: String,
    #[serde(flatten)]
    pub spec: RouteSpec,
    pub created_at: i64,
    pub updated_at: i64,
}

// ---- admin tokens ----

#[derive(Debug, Serialize, Clone, PartialEq, ToSchema)]
pub struct AdminToken {
    pub id: String,
    pub name: String,
    pub role: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminTokenCreate {
    pub name: String,
    /// `admin` (read and write) or `read`.
    pub role: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminTokenWithSecret {
    #[serde(flatten)]
    pub token: AdminToken,
    pub token_secret: String,
}

// ---- audit ----

#[derive(Debug, Serialize, Clone, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    /// Unix milliseconds.
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub resource: String,
    pub resource_id: String,
    #[schema(value_type = Object)]
    pub change: serde_json::Value,
}

#[derive(Debug, Deserialize, ToSchema, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Unix milliseconds, inclusive.
    pub since: Option<i64>,
    /// Unix milliseconds, exclusive.
    pub until: Option<i64>,
    pub actor: Option<String>,
    pub resource: Option<String>,
    pub resource_id: Option<String>,
    #[serde(default)]
    pub offset: u64,
    #[serde(default = "default_limit")]
    pub limit: u64,
    /// `asc` (default: oldest first) or `desc` (newest first, as the console shows it).
    #[serde(default)]
    pub order: Option<String>,
}

/// A `PATCH` field that cannot be cleared: `null` is refused (422 naming
/// it), never silently ignored; absent means no change.
fn non_null<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
    match Option::<T>::deserialize(d)? {
        Some(v) => Ok(Some(v)),
        None => Err(serde::de::Error::custom("cannot be null (leave the field out to keep it)")),
    }
}

/// `Option<Option<T>>` that tells "absent" (no change) from `null` (clear).
mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }

    pub fn serialize<T: Serialize, S: Serializer>(v: &Option<Option<T>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }
}
