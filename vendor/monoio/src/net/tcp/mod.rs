#![allow(unreachable_pub)]
//! TCP related.

mod listener;
mod split;
mod stream;
mod tfo;

pub use listener::TcpListener;
pub use split::{TcpOwnedReadHalf, TcpOwnedWriteHalf};
pub use stream::{TcpConnectOpts, TcpStream};
// Switchboard patch: multishot receive (io_uring), see PATCHES.md.
#[cfg(all(target_os = "linux", feature = "iouring"))]
pub use crate::driver::uring::multishot::{set_recv_multi_buffers, MultiRecv, RecvMulti};

#[cfg(feature = "poll-io")]
pub mod stream_poll;
