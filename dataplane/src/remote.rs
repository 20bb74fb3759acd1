//! A data plane in its own process follows a remote admin API: it long-polls
//! `GET /v1/admin/snapshot?after=VERSION` and prepares and publishes each new
//! routing spec, exactly as an in-process admin would. The blocking client
//! runs on its own thread, never on a worker.

use crate::dns::DnsCache;
use crate::snapshot::{compile, Prepare, SnapshotStore};
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;
use switchboard_shared::url::BaseUrl;
use switchboard_shared::{KeyHasher, RoutingSpec, Secret};

pub struct RemoteAdmin {
    url: BaseUrl,
    token: Secret,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// How long one long poll may wait at the admin.
    pub wait: Duration,
}

#[derive(serde::Deserialize)]
struct SnapshotBody {
    version: u64,
    spec: RoutingSpec,
    /// The admin's key-hash key, when keys are hashed with one.
    #[serde(default)]
    hash_key: Option<Secret>,
}

/// One version from the admin: what a snapshot is compiled from.
pub struct Fetched {
    pub version: u64,
    pub spec: RoutingSpec,
    pub hasher: KeyHasher,
}

impl Fetched {
    pub fn compile(&self, dns: &Arc<DnsCache>) -> Result<crate::snapshot::Snapshot, String> {
        compile(&self.spec, self.version, &Prepare::new(dns.clone(), self.hasher.clone()))
            .map_err(|e| format!("cannot serve version {}: {e}", self.version))
    }
}

const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

impl RemoteAdmin {
    pub fn new(url: &str, token: Secret, ca_file: Option<&std::path::Path>) -> Result<RemoteAdmin, String> {
        let url = BaseUrl::parse(url)?;
        let tls = if url.tls { Some(crate::tls::client_config(ca_file)?) } else { None };
        Ok(RemoteAdmin { url, token, tls, wait: Duration::from_secs(30) })
    }

    /// One long poll: the spec after `after`, or `None` when the wait ran out.
    pub fn poll(&self, after: u64) -> Result<Option<Fetched>, String> {
        let path =
            format!("{}/v1/admin/snapshot?after={after}&wait_ms={}", self.url.path_prefix, self.wait.as_millis());
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
            self.url.host_header(),
            self.token.expose()
        );
        let addr = (self.url.host.as_str(), self.url.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", self.url.host))?
            .next()
            .ok_or_else(|| format!("{} has no address", self.url.host))?;
        let tls = match &self.tls {
            Some(cfg) => Some((
                cfg.clone(),
                rustls::pki_types::ServerName::try_from(self.url.host.clone()).map_err(|e| e.to_string())?,
            )),
            None => None,
        };
        let (status, body) = crate::blocking::call(&crate::blocking::Call {
            addr,
            tls,
            request: req.as_bytes(),
            connect_timeout: Duration::from_secs(5),
            read_timeout: self.wait + Duration::from_secs(10),
            max_response_bytes: MAX_RESPONSE_BYTES,
        })
        .map_err(|e| format!("the admin: {e}"))?;
        match status {
            200 => {
                let b: SnapshotBody =
                    serde_json::from_slice(&body).map_err(|e| format!("the admin sent a bad snapshot: {e}"))?;
                let hasher = match &b.hash_key {
                    Some(k) => KeyHasher::keyed(k.expose().as_bytes())?,
                    None => KeyHasher::unkeyed(),
                };
                Ok(Some(Fetched { version: b.version, spec: b.spec, hasher }))
            }
            204 => Ok(None),
            s => Err(format!("the admin answered {s}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]))),
        }
    }

    /// Follow the admin forever on a background thread, publishing every new
    /// version into `store`. Errors are logged and retried with backoff.
    pub fn follow(self, mut version: u64, store: Arc<SnapshotStore>, dns: Arc<DnsCache>) -> std::io::Result<()> {
        std::thread::Builder::new().name("sb-follow".into()).spawn(move || {
            let mut backoff = Duration::from_millis(250);
            loop {
                match self.poll(version).and_then(|r| match r {
                    Some(f) => {
                        store.publish(f.compile(&dns)?);
                        tracing::info!(version = f.version, "routing snapshot from the admin published");
                        Ok(f.version)
                    }
                    None => Ok(version),
                }) {
                    Ok(v) => {
                        version = v;
                        backoff = Duration::from_millis(250);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_ms = backoff.as_millis() as u64, "following the admin failed; serving the last snapshot");
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        })?;
        Ok(())
    }
}
