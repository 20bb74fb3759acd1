//! Whole responses the gateway writes itself (errors, cache hits, health,
//! models, metrics): rendered with their length into the connection's output
//! buffer and written under the write deadline. Relayed upstream responses
//! are rendered by [`crate::relay`].

use crate::error::{reason, GatewayError};
use crate::fmt::push_dec;
use crate::http::io::write_all;
use crate::worker::{RequestId, WorkerCtx};
use monoio::io::AsyncWriteRent;
use monoio::time::recent;

/// How a whole response goes out on this connection.
#[derive(Clone, Copy)]
pub(crate) struct Reply {
    pub keep_alive: bool,
    /// An HTTP/1.0 client: a kept connection is said so (`Connection: keep-alive`).
    pub http10: bool,
    /// A HEAD request: the head (with the body's length) and no body.
    pub head_only: bool,
}

/// A connection that closes after this response (no request head to go by).
pub(crate) const CLOSING: Reply = Reply { keep_alive: false, http10: false, head_only: false };

/// Write a complete JSON response; false if the client is gone.
pub(crate) async fn respond<S: AsyncWriteRent>(
    ctx: &WorkerCtx,
    io: &mut S,
    out: &mut Vec<u8>,
    status: u16,
    body: &[u8],
    rid: &RequestId,
    reply: Reply,
) -> bool {
    send_whole(ctx, io, out, status, "application/json", body, rid, reply, b"").await
}

/// Write an error response (with `extra` header lines); false if the client
/// is gone. An error that closes the connection says so.
pub(crate) async fn respond_error<S: AsyncWriteRent>(
    ctx: &WorkerCtx,
    io: &mut S,
    out: &mut Vec<u8>,
    err: &GatewayError,
    rid: &RequestId,
    reply: Reply,
    extra: &[u8],
) -> bool {
    let reply = Reply { keep_alive: reply.keep_alive && !err.close, ..reply };
    send_whole(ctx, io, out, err.status, "application/json", &err.to_json(), rid, reply, extra).await
}

/// Render a complete response and write it; false if the client is gone.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn send_whole<S: AsyncWriteRent>(
    ctx: &WorkerCtx,
    io: &mut S,
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body: &[u8],
    rid: &RequestId,
    reply: Reply,
    extra: &[u8],
) -> bool {
    let connection = match (reply.keep_alive, reply.http10) {
        (false, _) => Some("close"),
        (true, true) => Some("keep-alive"),
        (true, false) => None,
    };
    render_with(out, status, content_type, body, rid, connection, extra);
    if reply.head_only {
        out.truncate(out.len() - body.len());
    }
    let ok = write_all(io, out, recent() + ctx.write_timeout).await.is_ok();
    out.clear();
    ok
}

/// Render a complete JSON response (with its length) into `out`.
pub(crate) fn render_json(out: &mut Vec<u8>, status: u16, body: &[u8], rid: &RequestId, keep_alive: bool) {
    render_with(out, status, "application/json", body, rid, (!keep_alive).then_some("close"), b"")
}

/// Render a complete response (with its length) into `out`, with the
/// `Connection` header's value, if any. `extra` is whole header lines
/// (`name: value\r\n`).
fn render_with(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body: &[u8],
    rid: &RequestId,
    connection: Option<&str>,
    extra: &[u8],
) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    push_dec(out, status as u64);
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: ");
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(b"\r\ncontent-length: ");
    push_dec(out, body.len() as u64);
    out.extend_from_slice(b"\r\nx-request-id: ");
    out.extend_from_slice(rid.as_bytes());
    if let Some(c) = connection {
        out.extend_from_slice(b"\r\nconnection: ");
        out.extend_from_slice(c.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(extra);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}
