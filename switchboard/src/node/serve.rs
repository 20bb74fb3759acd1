//! The node agent's serving side: one HTTP/1.1 service (check the gateway's
//! token, forward to the local server, stream the answer back) on either a
//! listening port (direct mode) or connections the agent opened to a gateway
//! (outbound mode).

use super::local::InUse;
use super::net::{self, Attach, Slot, Stream};
use super::Agent;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use switchboard_dataplane::sse::StreamTail;
use switchboard_shared::error::ErrorBody;
use switchboard_shared::url::BaseUrl;
use switchboard_shared::KeyHash;
use tokio::sync::watch;

type Reply = Response<BoxBody<Bytes, hyper::Error>>;

/// Request headers not passed to the local server.
const HOP: [&str; 8] =
    ["host", "authorization", "connection", "keep-alive", "proxy-connection", "te", "upgrade", "x-forwarded-for"];

fn error(status: StatusCode, code: &str, message: &str) -> Reply {
    let body = ErrorBody::for_status(status, code, message).to_json();
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    r
}

/// Counts a request in flight until its answer's body is done (or dropped),
/// and keeps discoveries away from the local server meanwhile.
struct Tracked {
    body: Incoming,
    agent: Arc<Agent>,
    _in_use: InUse,
    /// The answer's last bytes: a stream whose data ended with `[DONE]` is
    /// over, even if the local server then closes without ending the body.
    tail: StreamTail,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.agent.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.tail.push(data);
                }
            }
            // `[DONE]`, then the connection closed (llama-cpp-python and others
            // do): a normal end for the gateway, not a cut.
            Poll::Ready(Some(Err(e))) if self.tail.ends_with_done() => {
                tracing::debug!(error = %e, "the local server closed after [DONE]; the answer is whole");
                return Poll::Ready(None);
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// One request from a gateway.
async fn handle(agent: Arc<Agent>, req: Request<Incoming>) -> Result<Reply, std::convert::Infallible> {
    let token = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if token.is_empty() || KeyHash::of(token.as_bytes()) != agent.gateway_hash {
        return Ok(error(StatusCode::UNAUTHORIZED, "invalid_gateway_token", "This node serves its gateway only."));
    }
    let path = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    if !path.starts_with("/v1/") {
        return Ok(error(StatusCode::NOT_FOUND, "unknown_url", "This node forwards /v1/ requests only."));
    }
    if !agent.available.load(Ordering::SeqCst) && !agent.draining.load(Ordering::SeqCst) {
        return Ok(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "node_unavailable",
            "This node is outside its availability window.",
        ));
    }
    let before = agent.in_flight.fetch_add(1, Ordering::SeqCst);
    if before >= agent.args.capacity {
        agent.in_flight.fetch_sub(1, Ordering::SeqCst);
        return Ok(error(StatusCode::SERVICE_UNAVAILABLE, "node_at_capacity", "This node is at capacity."));
    }
    let (parts, body) = req.into_parts();
    let uri = format!("http://{}:{}{path}", agent.local.host, agent.local.port);
    let mut out = Request::builder().method(parts.method).uri(uri);
    for (name, value) in parts.headers.iter() {
        if !HOP.contains(&name.as_str()) {
            out = out.header(name, value);
        }
    }
    if let Some(k) = &agent.args.local_key {
        out = out.header(hyper::header::AUTHORIZATION, format!("Bearer {k}"));
    }
    let out = match out.body(body) {
        Ok(r) => r,
        Err(e) => {
            agent.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Ok(error(StatusCode::BAD_REQUEST, "bad_request", &e.to_string()));
        }
    };
    let in_use = agent.local_server.in_use().await;
    match agent.client.request(out).await {
        Ok(resp) => {
            agent.local_server.answered();
            let (mut parts, body) = resp.into_parts();
            // The connection to the gateway is this agent's, not the local server's to close.
            for h in ["connection", "keep-alive", "proxy-connection", "upgrade"] {
                parts.headers.remove(h);
            }
            let body = Tracked { body, agent: agent.clone(), _in_use: in_use, tail: StreamTail::default() }.boxed();
            Ok(Response::from_parts(parts, body))
        }
        Err(e) => {
            drop(in_use);
            agent.in_flight.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(error = %e, "local server unreachable");
            if e.is_connect() {
                // Down: no need to wait for a discovery to say so.
                let cause = std::error::Error::source(&e).map_or_else(|| e.to_string(), |c| c.to_string());
                agent.local_server.refused(format!(
                    "a request could not connect to the local server at {}: {cause}",
                    agent.args.local
                ));
            }
            let msg = format!("The node's local server at {} is unreachable: {e}.", agent.args.local);
            Ok(error(StatusCode::BAD_GATEWAY, "local_server_unreachable", &msg))
        }
    }
}

/// How long a direct-mode client may take to send a request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Serve HTTP/1.1 on one connection until it closes or `stop` is set (then
/// the request in flight finishes first). A listener's connections (direct
/// mode: anyone may connect) get a head timeout; attached ones wait for the
/// gateway as long as it likes.
async fn serve_conn(agent: Arc<Agent>, io: Box<dyn Stream>, mut stop: watch::Receiver<bool>, accepted: bool) {
    let svc = hyper::service::service_fn(move |req| handle(agent.clone(), req));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.keep_alive(true);
    if accepted {
        builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    }
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// How long a direct-mode client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Direct mode: accept gateway connections on `listen` (TLS when `tls` is
/// given). Returns the bound address.
pub async fn direct(
    agent: Arc<Agent>,
    listen: &str,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        let mut stop_accept = stop.clone();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let _ = tcp.set_nodelay(true);
                        let (agent, stop) = (agent.clone(), stop.clone());
                        let Some(acceptor) = acceptor.clone() else {
                            tokio::spawn(serve_conn(agent, Box::new(tcp), stop, true));
                            continue;
                        };
                        tokio::spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                                Ok(Ok(tls)) => serve_conn(agent, Box::new(tls), stop, true).await,
                                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = stopped(&mut stop_accept) => return,
            }
        }
    });
    Ok(addr)
}

/// Outbound mode: keep `--connections` attached connections on every worker
/// of the gateway (each worker uses only the ones it accepted; which worker
/// takes a new connection is the kernel's pick, so the agent dials until each
/// has its share). Dropped connections are replaced; refusals back off.
pub async fn outbound(agent: Arc<Agent>, gateway: BaseUrl, mut stop: watch::Receiver<bool>) {
    let per_worker = agent.args.connections.unwrap_or((agent.args.capacity as usize).min(64));
    let counts: Arc<Mutex<HashMap<Slot, usize>>> = Arc::default();
    let changed = Arc::new(tokio::sync::Notify::new());
    let mut backoff = Duration::from_millis(200);
    let mut latest: Option<(u64, usize)> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let missing = |counts: &HashMap<Slot, usize>, latest: Option<(u64, usize)>| match latest {
            None => true,
            Some((instance, workers)) => (0..workers)
                .any(|w| counts.get(&Slot { instance, worker: w, workers }).copied().unwrap_or(0) < per_worker),
        };
        let need = missing(&counts.lock().unwrap_or_else(|p| p.into_inner()), latest);
        if !need {
            tokio::select! {
                _ = changed.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = stopped(&mut stop) => return,
            }
            continue;
        }
        let attempt = async {
            let io = net::dial(&gateway, &agent.tls, Duration::from_secs(5)).await?;
            net::attach(io, &gateway, agent.identity.credential.expose(), Duration::from_secs(10)).await
        };
        match attempt.await {
            Ok(Attach::Ready(io, slot)) => {
                backoff = Duration::from_millis(200);
                if latest.is_none_or(|(i, _)| i != slot.instance) {
                    tracing::info!(
                        instance = format!("{:016x}", slot.instance),
                        workers = slot.workers,
                        "attached to gateway"
                    );
                }
                latest = Some((slot.instance, slot.workers));
                let mut map = counts.lock().unwrap_or_else(|p| p.into_inner());
                let have = map.entry(slot).or_insert(0);
                if *have >= per_worker {
                    // This worker has its share; the gateway finds this one closed.
                    continue;
                }
                *have += 1;
                drop(map);
                let (agent, counts, changed, stop) = (agent.clone(), counts.clone(), changed.clone(), stop.clone());
                tokio::spawn(async move {
                    serve_conn(agent, io, stop, false).await;
                    let mut map = counts.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(n) = map.get_mut(&slot) {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            map.remove(&slot);
                        }
                    }
                    drop(map);
                    changed.notify_one();
                });
            }
            Ok(Attach::Refused(status, message)) => {
                tracing::warn!(status, error = %message, "the gateway refused the attach; retrying");
                sleep_or_stop(&mut stop, backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) => {
                tracing::warn!(error = %e, gateway = %gateway.host_header(), "cannot attach to the gateway; retrying");
                sleep_or_stop(&mut stop, backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Resolves once `stop` is set (never, if its sender is gone without setting it).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stopped(stop) => {}
    }
}
