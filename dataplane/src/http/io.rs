//! Reads and writes with deadlines, on monoio's owned buffers.
//!
//! monoio passes buffers by ownership; a read that times out loses its buffer
//! to the cancelled operation, so every timeout here is fatal to the
//! connection (the caller closes it) and the helpers take `&mut Vec<u8>` to
//! keep call sites simple.

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::time::Instant;
use std::io;

#[derive(Debug)]
pub enum IoFail {
    Timeout,
    Io(io::Error),
}

impl std::fmt::Display for IoFail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IoFail::Timeout => f.write_str("timed out"),
            IoFail::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Read once, appending to `buf` (after its length), with at least
/// `min_spare` bytes of room. Returns the number of bytes read; 0 is EOF.
pub async fn read_append<S: AsyncReadRent>(
    s: &mut S,
    buf: &mut Vec<u8>,
    min_spare: usize,
    deadline: Instant,
) -> Result<usize, IoFail> {
    if buf.capacity() - buf.len() < min_spare {
        buf.reserve(min_spare);
    }
    let len = buf.len();
    let cap = buf.capacity();
    let owned = std::mem::take(buf).slice_mut(len..cap);
    match monoio::time::timeout_at(deadline, s.read(owned)).await {
        Ok((res, slice)) => {
            *buf = slice.into_inner();
            res.map_err(IoFail::Io)
        }
        Err(_) => Err(IoFail::Timeout),
    }
}

/// Write all of `buf[from..]`, within the deadline. The buffer comes back in
/// `buf` on success and on I/O errors (but not after a timeout).
pub async fn write_all_from<S: AsyncWriteRent>(
    s: &mut S,
    buf: &mut Vec<u8>,
    from: usize,
    deadline: Instant,
) -> Result<(), IoFail> {
    if from >= buf.len() {
        return Ok(());
    }
    let len = buf.len();
    let owned = std::mem::take(buf).slice(from..len);
    match monoio::time::timeout_at(deadline, s.write_all(owned)).await {
        Ok((res, slice)) => {
            *buf = slice.into_inner();
            res.map(|_| ()).map_err(IoFail::Io)
        }
        Err(_) => Err(IoFail::Timeout),
    }
}

/// Write all of `buf`.
pub async fn write_all<S: AsyncWriteRent>(s: &mut S, buf: &mut Vec<u8>, deadline: Instant) -> Result<(), IoFail> {
    write_all_from(s, buf, 0, deadline).await
}

/// True for errors that mean the peer went away (rather than a local fault).
pub fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::NotConnected
    )
}

/// A client connection that can say when its peer has gone, without reading
/// from it (the bytes of a pipelined request must stay in the socket).
pub trait PeerClosed {
    /// Resolves once the peer has closed or reset the connection; never, if
    /// that cannot be told (the peer sent more bytes, or the stream has no
    /// socket to look at).
    fn peer_closed(&self) -> impl std::future::Future<Output = ()>;
}

/// How long a client waiting for its answer goes unwatched. Watching costs a
/// poll submission and its cancellation on io_uring (a `poll(2)` on epoll)
/// for every request, and most answers that come this fast leave nothing to
/// cancel; a client that leaves is still seen this long after at most, and
/// the upstream request cancelled then.
pub const PEER_WATCH_AFTER: std::time::Duration = std::time::Duration::from_millis(10);

impl PeerClosed for monoio::net::TcpStream {
    async fn peer_closed(&self) {
        use std::os::fd::AsRawFd;
        // A timer in this worker's wheel: no allocation, no system call.
        monoio::time::sleep_until(monoio::time::recent() + PEER_WATCH_AFTER).await;
        // Bounded: a driver that keeps reporting readiness without data stops
        // being asked.
        for _ in 0..64 {
            if self.readable(false).await.is_err() {
                return;
            }
            let mut byte = 0u8;
            // SAFETY: recv(2) into one valid byte on our own open socket;
            // MSG_PEEK leaves the data in place, MSG_DONTWAIT never blocks.
            let n = unsafe {
                libc::recv(self.as_raw_fd(), (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT)
            };
            match n {
                0 => return,
                n if n > 0 => break,
                _ => {
                    let e = io::Error::last_os_error();
                    if !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) {
                        return;
                    }
                }
            }
        }
        std::future::pending::<()>().await
    }
}

/// TLS hides its socket (monoio-rustls gives no access to it): a client on
/// the TLS listener that leaves is seen at the next write, as mid-stream.
impl PeerClosed for monoio_rustls::ServerTlsStream<monoio::net::TcpStream> {
    async fn peer_closed(&self) {
        std::future::pending::<()>().await
    }
}
