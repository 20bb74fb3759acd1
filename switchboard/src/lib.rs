//! Switchboard's binary crate as a library: the one assembly of a running
//! gateway ([`app`]), used by `main.rs` and the integration tests alike, and
//! the node agent ([`node`]).

pub mod app;
pub mod node;
pub mod smoke;
