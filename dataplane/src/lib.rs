//! Switchboard's data plane: an OpenAI-compatible proxy, thread-per-core on
//! monoio (io_uring, or epoll where io_uring is unavailable).
//!
//! A request's path, phase by phase (see docs/architecture.md):
//!
//! | phase        | module                         |
//! |--------------|--------------------------------|
//! | accept       | [`server`]                     |
//! | parse        | [`http::head`], [`conn`] (body), [`request`] (fields), [`validate`] (OpenAI's checks) |
//! | authenticate | [`auth`]                       |
//! | route        | [`route`]                      |
//! | admit        | [`policy`] (rate limits, quotas) |
//! | select       | [`select`]                     |
//! | connect / fail over | [`proxy`], [`upstream`] |
//! | relay        | [`proxy`] (`relay`), [`usage::scan`] (token counts) |
//! | account      | [`usage::record`], [`metrics`]; off the workers: [`usage::pipeline`] |
//!
//! State that changes at run time lives in the [`snapshot`] (swapped whole),
//! host names resolve in [`dns`] off the workers, [`reload`] watches the
//! config file, and [`remote`] follows a remote admin API.

// The public surface: what the admin API and the binary use.
pub mod dns;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod probe;
pub mod reload;
pub mod remote;
pub mod server;
pub mod snapshot;
pub mod supervise;
pub mod tls;
pub mod usage;

pub use relay::HOLD_MAX_BYTES;
pub use server::{start, start_with, ServerHandle};

// The hot path's parsers, filters, lookups and upstream connections: public
// only for the fuzz targets (`fuzz/`), the micro-benchmarks (`benches/`) and
// the load generator (`loadtests/`); not an API.
#[doc(hidden)]
pub mod auth;
#[doc(hidden)]
pub mod fmt;
#[doc(hidden)]
pub mod http;
#[doc(hidden)]
pub mod request;
#[doc(hidden)]
pub mod route;
#[doc(hidden)]
pub mod select;
#[doc(hidden)]
pub mod sse;
#[doc(hidden)]
pub mod upstream;

// The request's path, phase by phase, and what it runs on: private.
mod account;
mod admit;
mod blocking;
mod cache;
mod conn;
mod error;
mod exchange;
mod forward;
mod node;
mod pipeline;
mod policy;
mod relay;
mod respond;
mod validate;
mod worker;
