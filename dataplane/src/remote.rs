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

#[derive(Clone)]
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
    /// The admin's instance id (absent from an older admin).
    #[serde(default)]
    instance: Option<String>,
    spec: RoutingSpec,
    /// The admin's key-hash key, when keys are hashed with one.
    #[serde(default)]
    hash_key: Option<Secret>,
    /// The admin's `[cluster]` (issue 18).
    #[serde(default)]
    cluster: Option<switchboard_shared::cluster::ClusterConfig>,
}

/// One version from the admin: what a snapshot is compiled from.
pub struct Fetched {
    pub version: u64,
    /// The admin instance the version was counted under.
    pub instance: Option<String>,
    pub spec: RoutingSpec,
    pub hasher: KeyHasher,
    /// The admin's `[cluster]`, used when this data plane's file has none.
    pub cluster: Option<switchboard_shared::cluster::ClusterConfig>,
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

    /// One long poll: the spec after `after` (counted under the admin
    /// `instance`, when known), or `None` when the wait ran out.
    pub fn poll(&self, after: u64, instance: Option<&str>) -> Result<Option<Fetched>, String> {
        let mut path =
            format!("{}/v1/admin/snapshot?after={after}&wait_ms={}", self.url.path_prefix, self.wait.as_millis());
        if let Some(i) = instance.filter(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_alphanumeric())) {
            path.push_str(&format!("&instance={i}"));
        }
        let (status, body) = self.call("GET", &path, None, self.wait + Duration::from_secs(10))?;
        match status {
            200 => {
                let b: SnapshotBody =
                    serde_json::from_slice(&body).map_err(|e| format!("the admin sent a bad snapshot: {e}"))?;
                let hasher = match &b.hash_key {
                    Some(k) => KeyHasher::keyed(k.expose().as_bytes())?,
                    None => KeyHasher::unkeyed(),
                };
                Ok(Some(Fetched { version: b.version, instance: b.instance, spec: b.spec, hasher, cluster: b.cluster }))
            }
            204 => Ok(None),
            s => Err(format!("the admin answered {s}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]))),
        }
    }

    /// One request to the admin (a fresh connection each time).
    fn call(&self, method: &str, path: &str, body: Option<&[u8]>, timeout: Duration) -> Result<(u16, Vec<u8>), String> {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nAccept: application/json\r\nConnection: close\r\n",
            self.url.host_header(),
            self.token.expose()
        )
        .into_bytes();
        if let Some(b) = body {
            req.extend_from_slice(
                format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()).as_bytes(),
            );
        }
        req.extend_from_slice(b"\r\n");
        if let Some(b) = body {
            req.extend_from_slice(b);
        }
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
        crate::blocking::call(&crate::blocking::Call {
            addr,
            tls,
            request: &req,
            connect_timeout: Duration::from_secs(5),
            read_timeout: timeout,
            max_response_bytes: MAX_RESPONSE_BYTES,
        })
        .map_err(|e| format!("the admin: {e}"))
    }

    /// A usage sink that posts batches to the admin (`/v1/admin/usage/ingest`).
    pub fn usage_sink(&self) -> RemoteUsageSink {
        RemoteUsageSink { admin: self.clone() }
    }

    /// Follow the admin forever on a background thread, publishing every new
    /// version into `store`. Errors are logged and retried with backoff.
    /// Versions compare only under one admin instance: when the admin
    /// answers as another instance (it restarted, perhaps on a restored or
    /// recreated database whose versions count from lower), its snapshot is
    /// taken whatever its number, and the reset is logged.
    pub fn follow(
        self,
        mut version: u64,
        mut instance: Option<String>,
        store: Arc<SnapshotStore>,
        dns: Arc<DnsCache>,
    ) -> std::io::Result<()> {
        std::thread::Builder::new().name("sb-follow".into()).spawn(move || {
            let mut backoff = Duration::from_millis(250);
            loop {
                match self.poll(version, instance.as_deref()).and_then(|r| match r {
                    Some(f) => {
                        store.publish(f.compile(&dns)?);
                        if f.instance != instance {
                            tracing::warn!(
                                from_version = version,
                                to_version = f.version,
                                admin_instance = f.instance.as_deref().unwrap_or("unknown"),
                                "the admin restarted (another instance); following its snapshot whatever its version"
                            );
                        }
                        tracing::info!(version = f.version, "routing snapshot from the admin published");
                        Ok((f.version, f.instance))
                    }
                    None => Ok((version, instance.clone())),
                }) {
                    Ok((v, i)) => {
                        version = v;
                        instance = i;
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

/// Ships usage batches to the admin; the admin accounts them (idempotently,
/// so a batch re-sent after a lost answer counts once).
pub struct RemoteUsageSink {
    admin: RemoteAdmin,
}

/// Records per POST (about 0.5 MB of JSON).
const INGEST_RECORDS: usize = 1_000;

impl crate::usage::pipeline::UsageSink for RemoteUsageSink {
    fn write(&mut self, batch: &[switchboard_shared::usage::UsageRecord]) -> Result<(), String> {
        #[derive(serde::Serialize)]
        struct Batch<'a> {
            records: &'a [switchboard_shared::usage::UsageRecord],
        }
        for part in batch.chunks(INGEST_RECORDS) {
            let body = serde_json::to_vec(&Batch { records: part }).map_err(|e| e.to_string())?;
            let path = format!("{}/v1/admin/usage/ingest", self.admin.url.path_prefix);
            let (status, answer) = self.admin.call("POST", &path, Some(&body), Duration::from_secs(30))?;
            if status != 200 {
                return Err(format!(
                    "the admin answered {status}: {}",
                    String::from_utf8_lossy(&answer[..answer.len().min(300)])
                ));
            }
        }
        Ok(())
    }
}
