//! Switchboard's data plane: an OpenAI-compatible proxy, thread-per-core on
//! monoio (io_uring, or epoll where io_uring is unavailable).
//!
//! A request's path, phase by phase (see docs/architecture.md), one file each:
//!
//! | phase        | module                         |
//! |--------------|--------------------------------|
//! | accept       | `server`                       |
//! | parse        | `conn` (with `http`, `request`, `validate`) |
//! | authenticate | `auth`                         |
//! | route        | `route`                        |
//! | admit        | `admit` (with `policy`, `cache`) |
//! | select       | `select`                       |
//! | connect / fail over | `forward` (with `upstream`) |
//! | relay        | `relay` (a chain of body filters) |
//! | account      | `account`; off the workers: [`usage::pipeline`] |
//!
//! From route to account a request is one `Exchange` (`exchange`), taken
//! through the phases by `pipeline`.
//!
//! State that changes at run time lives in the [`snapshot`] (swapped whole),
//! host names resolve in [`dns`] off the workers, [`reload`] watches the
//! config file, and [`remote`] follows a remote admin API.

// The public surface: what the admin API and the binary use.
pub mod cluster;
pub mod dns;
pub mod health;
pub mod limits;
pub mod memory;
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
pub mod translate;
#[doc(hidden)]
pub mod upstream;
/// The relay's body filters, for the fuzz targets; not an API.
#[doc(hidden)]
pub mod relay_filters {
    pub use crate::relay::capture::Capture;
    pub use crate::relay::deframe::Deframer;
    pub use crate::relay::frame::ClientBody;
    pub use crate::relay::hold::{Held, Hold, HOLD_MAX_BYTES};
}

// The request's path, phase by phase, and what it runs on: private.
mod account;
mod admit;
mod blocking;
mod cache;
mod conn;
mod error;
mod exchange;
mod fault;
mod forward;
mod node;
mod pipeline;
mod policy;
mod relay;
mod respond;
mod validate;
mod worker;
