//! Opening a connection to an upstream: TCP (addresses from the DNS cache, never
//! a blocking lookup), then TLS with rustls when the base URL is `https`.

use crate::dns::DnsCache;
use crate::error::GatewayError;
use crate::snapshot::{Upstream, UpstreamAddr};
use monoio::buf::IoBuf;
use monoio::buf::{IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;
use monoio::BufResult;
use std::net::SocketAddr;
use std::sync::Arc;
use switchboard_shared::config::Trigger;

pub enum UpStream {
    Plain(TcpStream),
    Tls(Box<monoio_rustls::ClientTlsStream<TcpStream>>),
    /// A node's connection to the gateway's TLS listener, turned around.
    Attached(Box<monoio_rustls::ServerTlsStream<TcpStream>>),
}

/// A client connection that can be turned into an upstream one (a node
/// agent's attach: the gateway then sends requests down it).
pub trait IntoUpStream {
    fn into_upstream(self) -> UpStream;
}

impl IntoUpStream for TcpStream {
    fn into_upstream(self) -> UpStream {
        UpStream::Plain(self)
    }
}

impl IntoUpStream for monoio_rustls::ServerTlsStream<TcpStream> {
    fn into_upstream(self) -> UpStream {
        UpStream::Attached(Box::new(self))
    }
}

impl AsyncReadRent for UpStream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpStream::Plain(s) => s.read(buf).await,
            UpStream::Tls(s) => s.read(buf).await,
            UpStream::Attached(s) => s.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpStream::Plain(s) => s.readv(buf).await,
            UpStream::Tls(s) => s.readv(buf).await,
            UpStream::Attached(s) => s.readv(buf).await,
        }
    }
}

impl UpStream {
    /// The TCP socket, when the connection is plain (no TLS on it).
    pub fn plain(&self) -> Option<&TcpStream> {
        match self {
            UpStream::Plain(s) => Some(s),
            _ => None,
        }
    }
}

/// The upstream connection a response is relayed from: a plain TCP stream,
/// or any [`UpStream`]. The relay is built for each, so a plain stream's
/// relay — what every open stream over plain HTTP holds while it waits — is
/// not sized for a TLS read's state (hundreds of bytes); a TLS upstream's
/// relay is boxed once per response instead (`forward`).
pub(crate) trait RelayConn: AsyncReadRent {
    /// The TCP socket, when the connection is plain (multishot receive).
    fn plain(&self) -> Option<&TcpStream>;
    /// Back to a pooled connection.
    fn into_upstream(self) -> UpStream;
}

impl RelayConn for TcpStream {
    fn plain(&self) -> Option<&TcpStream> {
        Some(self)
    }

    fn into_upstream(self) -> UpStream {
        UpStream::Plain(self)
    }
}

impl RelayConn for UpStream {
    fn plain(&self) -> Option<&TcpStream> {
        UpStream::plain(self)
    }

    fn into_upstream(self) -> UpStream {
        self
    }
}

impl AsyncWriteRent for UpStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpStream::Plain(s) => s.write(buf).await,
            UpStream::Tls(s) => s.write(buf).await,
            UpStream::Attached(s) => s.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpStream::Plain(s) => s.writev(buf).await,
            UpStream::Tls(s) => s.writev(buf).await,
            UpStream::Attached(s) => s.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            UpStream::Plain(s) => s.flush().await,
            UpStream::Tls(s) => s.flush().await,
            UpStream::Attached(s) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            UpStream::Plain(s) => s.shutdown().await,
            UpStream::Tls(s) => s.shutdown().await,
            UpStream::Attached(s) => s.shutdown().await,
        }
    }
}

fn addresses(up: &Upstream, dns: &DnsCache) -> Result<Arc<[SocketAddr]>, GatewayError> {
    match &up.addr {
        UpstreamAddr::Ip(a) => Ok(Arc::from(&[*a][..])),
        UpstreamAddr::Dns { host, key } => dns.lookup(key).ok_or_else(|| {
            GatewayError::upstream(format!("Upstream `{}`: host `{host}` could not be resolved.", up.name))
                .because(Trigger::Connect)
        }),
        UpstreamAddr::Reverse => {
            // All its attached connections are busy (or none yet): not the
            // node's failure, so its health is left alone; the next target serves.
            let mut e = GatewayError::upstream(format!(
                "Node `{}` has no idle connection open to this gateway worker.",
                up.name
            ))
            .because(Trigger::Connect);
            e.source = crate::error::Source::Gateway;
            Err(e)
        }
    }
}

/// Connect to `up` within its connect timeout (TCP and TLS together), trying
/// each resolved address in turn.
pub async fn connect(up: &Upstream, dns: &DnsCache) -> Result<UpStream, GatewayError> {
    let deadline = monoio::time::Instant::now() + up.connect_timeout;
    let addrs = addresses(up, dns)?;
    let mut last: Option<GatewayError> = None;
    let mut tcp = None;
    for addr in addrs.iter() {
        match monoio::time::timeout_at(deadline, TcpStream::connect_addr(*addr)).await {
            Ok(Ok(s)) => {
                tcp = Some(s);
                break;
            }
            Ok(Err(e)) => {
                last = Some(
                    GatewayError::upstream(format!("Could not connect to upstream `{}`: {e}.", up.name))
                        .because(Trigger::Connect),
                );
            }
            Err(_) => {
                last = Some(
                    GatewayError::upstream_timeout(format!(
                        "Connecting to upstream `{}` timed out after {} ms.",
                        up.name,
                        up.connect_timeout.as_millis()
                    ))
                    .because(Trigger::Connect),
                );
                break;
            }
        }
    }
    let tcp = match tcp {
        Some(t) => t,
        None => {
            return Err(
                last.unwrap_or_else(|| GatewayError::upstream(format!("Upstream `{}` has no address.", up.name)))
            )
        }
    };
    let _ = tcp.set_nodelay(true);
    let Some(tls) = &up.tls else { return Ok(UpStream::Plain(tcp)) };
    let connector = monoio_rustls::TlsConnector::from(tls.config.clone());
    match monoio::time::timeout_at(deadline, connector.connect(tls.server_name.clone(), tcp)).await {
        Ok(Ok(s)) => Ok(UpStream::Tls(Box::new(s))),
        Ok(Err(e)) => Err(GatewayError::upstream(format!("TLS handshake with upstream `{}` failed: {e}.", up.name))
            .because(Trigger::Tls)),
        Err(_) => Err(GatewayError::upstream_timeout(format!(
            "TLS handshake with upstream `{}` timed out after {} ms.",
            up.name,
            up.connect_timeout.as_millis()
        ))
        .because(Trigger::Tls)),
    }
}
