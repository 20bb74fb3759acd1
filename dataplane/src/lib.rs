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

pub mod auth;
pub mod blocking;
pub mod cache;
pub mod cluster;
pub mod conn;
pub mod dns;
pub mod error;
pub mod fmt;
pub mod health;
pub mod http;
pub mod metrics;
pub mod node;
pub mod policy;
pub mod probe;
pub mod proxy;
pub mod reload;
pub mod remote;
pub mod request;
pub mod route;
pub mod select;
pub mod server;
pub mod snapshot;
pub mod sse;
pub mod supervise;
pub mod tls;
pub mod upstream;
pub mod usage;
pub mod validate;
pub mod worker;

pub use server::{start, start_with, ServerHandle};
