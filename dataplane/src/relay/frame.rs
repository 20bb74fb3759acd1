//! Body filter "frame": the client's framing. A Content-Length body passes
//! with its length; a chunked or close-delimited upstream body goes out
//! chunked to an HTTP/1.1 client and close-delimited to an HTTP/1.0 one. Also
//! the response head the client gets ([`render_head`]).

use super::Served;
use crate::error::reason;
use crate::exchange::Exchange;
use crate::fmt::{push_chunk, push_dec};
use crate::http::head::{BodyFraming, ResponseHead};

/// How the client's response body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientBody {
    Length(u64),
    Chunked,
    CloseDelimited,
}

impl ClientBody {
    /// The client's framing for an upstream body framed as `upstream`.
    pub fn for_upstream(upstream: BodyFraming, client_http10: bool) -> ClientBody {
        match upstream {
            BodyFraming::None => ClientBody::Length(0),
            BodyFraming::Length(n) => ClientBody::Length(n),
            _ if client_http10 => ClientBody::CloseDelimited,
            _ => ClientBody::Chunked,
        }
    }

    /// Frame `payload` into `out`.
    pub fn push(self, out: &mut Vec<u8>, payload: &[u8]) {
        match self {
            ClientBody::Chunked => push_chunk(out, payload),
            _ => out.extend_from_slice(payload),
        }
    }

    /// The body's end: an SSE error event to add (a stream that did not
    /// finish), then the last chunk if chunked.
    pub fn end(self, out: &mut Vec<u8>, error_event: Option<&[u8]>) {
        if let Some(ev) = error_event {
            self.push(out, ev);
        }
        if self == ClientBody::Chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
    }
}

/// The response head for the client: the upstream's status and content type,
/// what served it, the exchange's own header lines, and the body's framing.
pub(crate) fn render_head(
    out: &mut Vec<u8>,
    head: &ResponseHead,
    x: &Exchange<'_>,
    served: &Served<'_>,
    body: ClientBody,
    keep_alive: bool,
) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    push_dec(out, head.status as u64);
    out.push(b' ');
    out.extend_from_slice(reason(head.status).as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(ct) = &head.content_type {
        out.extend_from_slice(b"content-type: ");
        out.extend_from_slice(ct);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(ra) = &head.retry_after {
        out.extend_from_slice(b"retry-after: ");
        out.extend_from_slice(ra);
        out.extend_from_slice(b"\r\n");
    }
    if head.event_stream {
        out.extend_from_slice(b"cache-control: no-cache\r\n");
    }
    out.extend_from_slice(b"x-request-id: ");
    out.extend_from_slice(x.request_id());
    out.extend_from_slice(b"\r\nx-switchboard-route: ");
    out.extend_from_slice(served.route.as_bytes());
    out.extend_from_slice(b"\r\nx-switchboard-target: ");
    out.extend_from_slice(served.target.as_bytes());
    out.extend_from_slice(b"\r\nx-switchboard-attempts: ");
    push_dec(out, served.attempts as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&x.headers);
    match body {
        ClientBody::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_dec(out, n);
            out.extend_from_slice(b"\r\n");
        }
        ClientBody::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        ClientBody::CloseDelimited => {}
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if x.head.http10 {
        // HTTP/1.0 closes unless told the connection stays.
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_follows_the_upstream_and_the_client_version() {
        assert_eq!(ClientBody::for_upstream(BodyFraming::Length(7), false), ClientBody::Length(7));
        assert_eq!(ClientBody::for_upstream(BodyFraming::None, true), ClientBody::Length(0));
        assert_eq!(ClientBody::for_upstream(BodyFraming::Chunked, false), ClientBody::Chunked);
        assert_eq!(ClientBody::for_upstream(BodyFraming::Close, false), ClientBody::Chunked);
        assert_eq!(ClientBody::for_upstream(BodyFraming::Chunked, true), ClientBody::CloseDelimited);
    }

    #[test]
    fn chunked_bodies_end_with_the_last_chunk_and_an_optional_error_event() {
        let mut out = Vec::new();
        ClientBody::Chunked.push(&mut out, b"data: x\n\n");
        ClientBody::Chunked.push(&mut out, b"");
        ClientBody::Chunked.end(&mut out, Some(b"event: error\n\n"));
        assert_eq!(out, b"9\r\ndata: x\n\n\r\ne\r\nevent: error\n\n\r\n0\r\n\r\n");
        let mut out = Vec::new();
        ClientBody::CloseDelimited.push(&mut out, b"abc");
        ClientBody::CloseDelimited.end(&mut out, None);
        assert_eq!(out, b"abc");
    }
}
