//! Reading a streamed upstream body with one multishot receive (io_uring):
//! one armed submission for the whole stream instead of a receive (and, in
//! the kernel, a poll arm) per event. The bytes land in the worker's
//! provided-buffer ring (`SWITCHBOARD_URING_RECV`) and are copied into the
//! relay's read buffer; the ring buffer goes straight back to the kernel.
//!
//! Falls back to plain reads ([`read_append`]) when there is no
//! multishot receive (the epoll driver, TLS, a kernel without provided
//! buffer rings, `SWITCHBOARD_URING_RECV=off`) and, for the rest of the
//! stream, when the ring ran out of buffers (ENOBUFS) or the kernel ended the
//! receive. Before the connection goes back to the pool the receive is
//! stopped and waited for ([`UpstreamReader::finish`]), so the next
//! response on it is read the plain way from its first byte.

use super::RelayConn;
use crate::http::io::{read_append, IoFail};
use crate::metrics::WorkerSlot;
use monoio::net::tcp::{MultiRecv, RecvMulti};
use monoio::time::Instant;
use std::sync::atomic::Ordering;

/// The upstream side of one relayed body.
pub(crate) struct UpstreamReader<'w> {
    multi: Option<RecvMulti>,
    /// May arm one (a streamed body on a plain TCP connection, not yet
    /// fallen back).
    allowed: bool,
    /// Where arming and falling back are counted (`/metrics`).
    slot: &'w WorkerSlot,
}

impl<'w> UpstreamReader<'w> {
    /// `stream`: the body is an event stream (multishot pays where reads
    /// wait between events; a plain body mostly came with the head).
    pub(crate) fn new(stream: bool, slot: &'w WorkerSlot) -> UpstreamReader<'w> {
        UpstreamReader { multi: None, allowed: stream, slot }
    }

    /// Read once into `r` (after its length), with at least `min_spare` bytes
    /// of room; as [`read_append`]: the bytes read, 0 at EOF.
    pub(crate) async fn read_append<U: RelayConn>(
        &mut self,
        conn: &mut U,
        r: &mut Vec<u8>,
        min_spare: usize,
        deadline: Instant,
    ) -> Result<usize, IoFail> {
        if self.multi.is_none() && self.allowed {
            self.multi = conn.plain().and_then(|s| s.recv_multi());
            self.allowed = self.multi.is_some();
            if self.allowed {
                self.slot.multishot_receives.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(multi) = self.multi.as_mut() {
            if r.capacity() - r.len() < min_spare {
                r.reserve(min_spare);
            }
            // At most `min_spare` (the relay's read size) or one ring
            // buffer per read, as a plain read: a burst stays in the ring
            // rather than growing this stream's buffer for its whole life.
            match monoio::time::timeout_at(deadline, multi.recv_into(r, min_spare)).await {
                Ok(MultiRecv::Data(n)) => return Ok(n),
                Ok(MultiRecv::Eof) => return Ok(0),
                Ok(MultiRecv::Err(e)) => return Err(IoFail::Io(e)),
                // Out of ring buffers, or ended by the kernel: plain reads
                // from here on (nothing was lost: the receive is over).
                Ok(MultiRecv::Ended) => {
                    tracing::debug!("multishot receive ended (ring out of buffers, or ended by the kernel); plain reads for the rest of this body");
                    self.slot.multishot_fallbacks.fetch_add(1, Ordering::Relaxed);
                    self.multi = None;
                    self.allowed = false;
                }
                // The receive stays armed; the caller gives up on the body.
                Err(_) => return Err(IoFail::Timeout),
            }
        }
        read_append(conn, r, min_spare, deadline).await
    }

    /// Stop the multishot receive, if one is armed, and wait until the kernel
    /// has. True when the connection may be reused: nothing arrived that was
    /// not read.
    pub(crate) async fn finish(self) -> bool {
        match self.multi {
            Some(m) => m.finish().await,
            None => true,
        }
    }
}
