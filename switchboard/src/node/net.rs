//! The node agent's connections: TCP or TLS to the admin API and to
//! gateways, one-shot JSON calls, and the attach handshake that turns a
//! connection to a gateway around.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use switchboard_shared::url::BaseUrl;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// A connection: plain TCP or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The most a one-shot answer may be (model lists, heartbeat replies).
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// Open a connection to `url`'s host (TLS for https), within `timeout`.
pub async fn dial(
    url: &BaseUrl,
    tls: &Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<Box<dyn Stream>, String> {
    let work = async {
        let tcp = TcpStream::connect((url.host.as_str(), url.port)).await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        keepalive(&tcp);
        if !url.tls {
            return Ok(Box::new(tcp) as Box<dyn Stream>);
        }
        let name = rustls::pki_types::ServerName::try_from(url.host.clone()).map_err(|e| e.to_string())?;
        let s = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        Ok(Box::new(s) as Box<dyn Stream>)
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| format!("no connection within {} ms", timeout.as_millis()))?
}

/// TCP keepalive, so a connection to a gateway that vanished is noticed.
fn keepalive(tcp: &TcpStream) {
    let ka = socket2::TcpKeepalive::new().with_time(Duration::from_secs(30)).with_interval(Duration::from_secs(10));
    let _ = socket2::SockRef::from(tcp).set_tcp_keepalive(&ka);
}

/// One request on a fresh connection: status and body.
pub async fn call(
    base: &BaseUrl,
    tls: &Arc<rustls::ClientConfig>,
    method: hyper::Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<(u16, Bytes), String> {
    let work = async {
        let io = dial(base, tls, timeout).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", base.path_prefix))
            .header(hyper::header::HOST, base.host_header());
        if let Some(b) = bearer {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {b}"));
        }
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let bytes = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok((status, bytes))
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| format!("no answer within {} ms", timeout.as_millis()))?
}

/// The code and message of an OpenAI-style error body (the message is the
/// body itself when it is not one).
pub fn error_parts(body: &[u8]) -> (String, String) {
    let v = serde_json::from_slice::<serde_json::Value>(body).ok();
    let field = |name: &str| v.as_ref().and_then(|v| v["error"][name].as_str()).map(str::to_string);
    let message =
        field("message").unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned());
    (field("code").unwrap_or_default(), message)
}

/// Which gateway process and worker took an attached connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slot {
    pub instance: u64,
    pub worker: usize,
    pub workers: usize,
}

pub enum Attach {
    /// The connection is now the gateway's to send requests down.
    Ready(Box<dyn Stream>, Slot),
    /// The gateway refused (status, message).
    Refused(u16, String),
}

/// Send the attach request and read the answer's head (byte by byte, so
/// nothing after it is taken from the stream).
pub async fn attach(
    mut io: Box<dyn Stream>,
    base: &BaseUrl,
    credential: &str,
    timeout: Duration,
) -> Result<Attach, String> {
    let work = async {
        let req = format!(
            "POST /v1/nodes/attach HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {credential}\r\ncontent-length: 0\r\n\r\n",
            base.host_header()
        );
        io.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut head = Vec::with_capacity(256);
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() > 16 * 1024 {
                return Err("the gateway's answer head is too large".to_string());
            }
            match io.read(&mut byte).await {
                Ok(0) => return Err("the gateway closed the connection".to_string()),
                Ok(_) => head.push(byte[0]),
                Err(e) => return Err(e.to_string()),
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        resp.parse(&head).map_err(|e| format!("malformed answer: {e}"))?;
        let status = resp.code.unwrap_or(0);
        let header = |name: &str| {
            resp.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .map(str::to_string)
        };
        if status != 101 {
            let len: usize = header("content-length").and_then(|v| v.trim().parse().ok()).unwrap_or(0).min(64 * 1024);
            let mut body = vec![0u8; len];
            let _ = io.read_exact(&mut body).await;
            return Ok(Attach::Refused(status, error_parts(&body).1));
        }
        let (worker, workers) = header("x-switchboard-worker")
            .and_then(|v| v.split_once('/').and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?))))
            .ok_or("the gateway did not say which worker took the connection")?;
        let instance =
            header("x-switchboard-instance").and_then(|v| u64::from_str_radix(v.trim(), 16).ok()).unwrap_or(0);
        Ok(Attach::Ready(io, Slot { instance, worker, workers }))
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| format!("no answer within {} ms", timeout.as_millis()))?
}
