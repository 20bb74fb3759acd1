//! Phase "connect": upstream connections over TCP or TLS, and the per-worker
//! keep-alive pool they return to.

pub mod conn;
pub(crate) mod multishot;
pub mod pool;

pub(crate) use conn::RelayConn;
pub use conn::{connect, IntoUpStream, UpStream};
pub(crate) use multishot::UpstreamReader;
pub use pool::Pool;
