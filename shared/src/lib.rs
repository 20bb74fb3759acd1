//! Types that the Switchboard data plane and the admin API both speak.
//!
//! * [`anthropic`]: the Anthropic Messages API's error shape and version.
//! * [`config`]: the declarative configuration (TOML) and the routing spec the
//!   admin API will publish: keys, upstreams and model routes.
//! * [`error`]: the one OpenAI-shaped error body (JSON and SSE event) every
//!   server writes.
//! * [`keyhash`]: how client API keys are hashed; the data plane only ever
//!   stores and compares hashes.
//! * [`url`]: the small, strict base-URL parser for upstreams.
//! * [`usage`]: usage records, from the data plane to the accounting.

pub mod anthropic;
pub mod cluster;
pub mod config;
pub mod error;
pub mod keyhash;
pub mod limits;
pub mod node;
pub mod secret;
pub mod time;
pub mod url;
pub mod usage;

pub use config::{
    Config, ConfigError, KeyLimits, KeySpec, Limits, ModelSpec, NodeModel, NodeReach, NodeSpec, OrgLimits, OrgSpec,
    Period, QuotaSpec, RoutingSpec, ServerConfig, TargetSpec, UpstreamSpec, UsageSettings,
};
pub use keyhash::{KeyHash, KeyHasher};
pub use secret::Secret;
