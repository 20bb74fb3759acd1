//! Active health checks: a background thread probes each upstream that has a
//! `probe_interval_ms`, with a blocking client off the workers, and feeds the
//! result into the same health state requests update (so a probe can eject a
//! dead upstream before any client meets it, and bring it back after).

use crate::blocking::{call, Call};
use crate::dns::DnsCache;
use crate::health::now_ms;
use crate::snapshot::{SnapshotStore, Upstream, UpstreamAddr};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(50);
const PROBE_TIMEOUT_MAX: Duration = Duration::from_secs(10);

/// Probe once: the time to the answer, or why it failed.
pub fn probe(up: &Upstream, path: &str, dns: &DnsCache) -> Result<Duration, String> {
    let addr = match &up.addr {
        UpstreamAddr::Ip(a) => *a,
        UpstreamAddr::Dns { host, key } => *dns
            .lookup(key)
            .and_then(|a| a.first().copied())
            .as_ref()
            .ok_or_else(|| format!("`{host}` does not resolve"))?,
        UpstreamAddr::Reverse => return Err("an outbound node is checked by its heartbeats, not probed".into()),
    };
    let mut req = Vec::with_capacity(256);
    req.extend_from_slice(b"GET ");
    req.extend_from_slice(up.path_prefix.as_bytes());
    req.extend_from_slice(path.as_bytes());
    req.extend_from_slice(b" HTTP/1.1\r\n");
    req.extend_from_slice(&up.header_block);
    if let Ok(Some(k)) = up.pick_key(now_ms()) {
        req.extend_from_slice(&up.keys[k].line);
    }
    req.extend_from_slice(b"connection: close\r\n\r\n");
    let started = Instant::now();
    let timeout = up.first_byte_timeout.min(PROBE_TIMEOUT_MAX);
    let (status, _) = call(&Call {
        addr,
        tls: up.tls.as_ref().map(|t| (t.config.clone(), t.server_name.clone())),
        request: &req,
        connect_timeout: up.connect_timeout,
        read_timeout: timeout,
        max_response_bytes: 1024 * 1024,
    })?;
    if status >= 500 || status == 429 {
        return Err(format!("answered {status}"));
    }
    Ok(started.elapsed())
}

/// Start the prober thread. It reads the current snapshot each round, so
/// probes follow reloads.
pub fn spawn(store: Arc<SnapshotStore>, dns: Arc<DnsCache>) -> std::io::Result<()> {
    std::thread::Builder::new().name("sb-probe".into()).spawn(move || {
        let mut next: HashMap<Arc<str>, Instant> = HashMap::new();
        loop {
            std::thread::sleep(TICK);
            let snapshot = store.load();
            for up in &snapshot.upstreams {
                let Some((every, path)) = &up.probe else { continue };
                let due = next.get(&up.name).is_none_or(|t| Instant::now() >= *t);
                if !due {
                    continue;
                }
                next.insert(up.name.clone(), Instant::now() + *every);
                match probe(up, path, &dns) {
                    Ok(took) => up.health.success(took),
                    Err(why) => {
                        tracing::debug!(upstream = %up.name, %why, "health probe failed");
                        up.health.failure(now_ms(), up.eject_after_failures, up.eject_for);
                    }
                }
            }
        }
    })?;
    Ok(())
}
