//! A small blocking HTTP/1.1 client (plain or rustls), for work that runs on
//! its own thread and never on a worker: following a remote admin, probing
//! upstream health. One request per connection (`Connection: close`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

pub struct Call<'a> {
    pub addr: SocketAddr,
    pub tls: Option<(Arc<rustls::ClientConfig>, rustls::pki_types::ServerName<'static>)>,
    /// The whole request, head and body; it should say `Connection: close`.
    pub request: &'a [u8],
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub max_response_bytes: usize,
}

/// Send the request; return the status and the (de-chunked) body.
pub fn call(c: &Call<'_>) -> Result<(u16, Vec<u8>), String> {
    let tcp = TcpStream::connect_timeout(&c.addr, c.connect_timeout).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(c.read_timeout)).map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(c.read_timeout)).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    match &c.tls {
        None => exchange(tcp, c.request, &mut raw, c.max_response_bytes)?,
        Some((cfg, name)) => {
            let conn = rustls::ClientConnection::new(cfg.clone(), name.clone()).map_err(|e| e.to_string())?;
            exchange(rustls::StreamOwned::new(conn, tcp), c.request, &mut raw, c.max_response_bytes)?;
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut res = httparse::Response::new(&mut headers);
    let head_len = match res.parse(&raw) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err("malformed response".into()),
    };
    let status = res.code.unwrap_or(0);
    let chunked = res
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding") && h.value.eq_ignore_ascii_case(b"chunked"));
    let mut body = raw[head_len..].to_vec();
    if chunked {
        let mut d = crate::http::chunked::ChunkedDecoder::new();
        let (mut r, mut w) = (0, 0);
        let end = body.len();
        d.decode(&mut body, &mut r, end, &mut w).map_err(|e| e.to_string())?;
        body.truncate(w);
    }
    Ok((status, body))
}

fn exchange<S: Read + Write>(mut s: S, req: &[u8], out: &mut Vec<u8>, max: usize) -> Result<(), String> {
    s.write_all(req).map_err(|e| format!("send: {e}"))?;
    s.flush().map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.len() > max {
                    return Err("the response is too large".into());
                }
            }
            // A TLS peer that closes without close_notify: take what arrived.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(format!("receive: {e}")),
        }
    }
}
