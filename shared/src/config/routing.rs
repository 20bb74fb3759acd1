//! The routing spec: what the data plane compiles into its snapshot and
//! reloads live. Keys (`[[keys]]`), providers (`[[providers]]`; `upstreams`
//! in code and on the wire), routes (`[[routes]]`; `models` in code and on
//! the wire) and their targets, and the nodes the admin service publishes.
//! The names are explained in [`super::vocabulary`].

use super::policy::{Limits, OrgSpec};
use crate::limits;
use crate::secret::Secret;
use crate::url::BaseUrl;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

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
    /// A key for testing a deployment (`switchboard smoke`): it may send
    /// `x-switchboard-fault` and `x-switchboard-target-only`, which any
    /// other key is refused for.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub test: bool,
    /// Requests and tokens per minute, and quotas: `rpm`, `tpm`, `quotas`
    /// in the key's table.
    #[serde(flatten)]
    pub limits: Limits,
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

/// The API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI's chat completions (and completions, embeddings); nodes are this kind.
    #[default]
    OpenAI,
    /// Anthropic's Messages API (`POST /messages`), key sent as `x-api-key`.
    Anthropic,
}

impl ProviderKind {
    pub fn is_openai(&self) -> bool {
        *self == ProviderKind::OpenAI
    }

    pub fn is_anthropic(&self) -> bool {
        *self == ProviderKind::Anthropic
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            ProviderKind::OpenAI => "openai",
            ProviderKind::Anthropic => "anthropic",
        }
    }

    pub fn parse(s: &str) -> Option<ProviderKind> {
        match s {
            "openai" => Some(ProviderKind::OpenAI),
            "anthropic" => Some(ProviderKind::Anthropic),
            _ => None,
        }
    }
}

/// An upstream (a provider): OpenAI-compatible, or Anthropic's Messages API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    pub name: String,
    /// Which API the provider speaks: `openai` (chat completions, the
    /// default) or `anthropic` (the Messages API: `x-api-key`,
    /// `anthropic-version`).
    #[serde(default, skip_serializing_if = "ProviderKind::is_openai")]
    pub kind: ProviderKind,
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
    /// Also keep answers in Redis (`[cluster]`), shared by every data plane:
    /// local first, then Redis.
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
    /// Name of a provider (`[[providers]]` entry), or set `nodes`. Written
    /// `provider` in a file (`upstream`, the deprecated spelling, is read
    /// too); `upstream` on the wire between the admin and remote data planes.
    #[serde(default, skip_serializing_if = "String::is_empty", alias = "provider")]
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
    /// USD per million prompt tokens read from the provider's prompt cache
    /// (unset: the prompt price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_per_mtok: Option<f64>,
    /// USD per million prompt tokens written to the provider's prompt cache
    /// (Anthropic's cache writes; unset: the prompt price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_per_mtok: Option<f64>,
}

/// The most targets a route may list.
pub const MAX_TARGETS: usize = 16;

/// The most targets a route may have once its node pools are expanded.
pub const MAX_EXPANDED_TARGETS: usize = 64;
