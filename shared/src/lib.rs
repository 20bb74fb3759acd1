//! Types that the Switchboard data plane and the admin API both speak.
//!
//! * [`config`]: the declarative configuration (TOML) and the routing spec the
//!   admin API will publish: keys, upstreams and model routes.
//! * [`keyhash`]: how client API keys are hashed; the data plane only ever
//!   stores and compares hashes.
//! * [`url`]: the small, strict base-URL parser for upstreams.

pub mod config;
pub mod keyhash;
pub mod secret;
pub mod url;

pub use config::{Config, ConfigError, KeySpec, ModelSpec, RoutingSpec, ServerConfig, TargetSpec, UpstreamSpec};
pub use keyhash::{KeyHash, KeyHasher};
pub use secret::Secret;
