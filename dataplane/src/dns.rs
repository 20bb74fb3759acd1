//! Upstream host names are resolved off the worker threads.
//!
//! Snapshot preparation (on the reload thread) resolves every host before the
//! snapshot is published, and a refresher thread resolves them again every
//! `dns_refresh_ms`, keeping the last good answer when a lookup fails. Workers
//! only read the cache (one `ArcSwap` load when they open a connection); they
//! never call the blocking resolver.

use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;
use std::collections::BTreeSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Map = FxHashMap<String, Arc<[SocketAddr]>>;

#[derive(Default)]
pub struct DnsCache {
    map: ArcSwap<Map>,
    /// Hosts to keep fresh (`host:port`); guarded for the writers only.
    wanted: Mutex<BTreeSet<(String, u16)>>,
}

pub fn cache_key(host: &str, port: u16) -> String {
    format!("{host}:{port}")
}

impl DnsCache {
    pub fn new() -> Arc<DnsCache> {
        Arc::new(DnsCache::default())
    }

    /// The addresses of `key` (`host:port`), if it has been resolved.
    pub fn lookup(&self, key: &str) -> Option<Arc<[SocketAddr]>> {
        self.map.load().get(key).cloned()
    }

    /// Resolve now (blocking: never call this on a worker) and remember the host.
    pub fn resolve_blocking(&self, host: &str, port: u16) -> Result<(), String> {
        let mut wanted = self.wanted.lock().unwrap_or_else(|p| p.into_inner());
        wanted.insert((host.to_string(), port));
        let addrs = resolve(host, port)?;
        let mut next: Map = (**self.map.load()).clone();
        next.insert(cache_key(host, port), addrs);
        self.map.store(Arc::new(next));
        Ok(())
    }

    /// Resolve every wanted host again; keep old answers for hosts that fail.
    pub fn refresh(&self) {
        let wanted: Vec<(String, u16)> =
            self.wanted.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
        let mut fresh = Vec::with_capacity(wanted.len());
        for (host, port) in &wanted {
            match resolve(host, port.to_owned()) {
                Ok(addrs) => fresh.push((cache_key(host, *port), addrs)),
                Err(e) => tracing::warn!(host = %host, error = %e, "DNS refresh failed; keeping the last answer"),
            }
        }
        let _guard = self.wanted.lock().unwrap_or_else(|p| p.into_inner());
        let mut next: Map = (**self.map.load()).clone();
        for (k, v) in fresh {
            next.insert(k, v);
        }
        self.map.store(Arc::new(next));
    }

    /// Start the refresher thread.
    pub fn spawn_refresher(self: &Arc<Self>, every: Duration) -> std::io::Result<()> {
        let me = Arc::downgrade(self);
        std::thread::Builder::new().name("sb-dns".into()).spawn(move || loop {
            std::thread::sleep(every);
            match me.upgrade() {
                Some(cache) => cache.refresh(),
                None => return,
            }
        })?;
        Ok(())
    }
}

fn resolve(host: &str, port: u16) -> Result<Arc<[SocketAddr]>, String> {
    let addrs: Vec<SocketAddr> =
        (host, port).to_socket_addrs().map_err(|e| format!("cannot resolve `{host}`: {e}"))?.take(8).collect();
    if addrs.is_empty() {
        return Err(format!("`{host}` resolved to no addresses"));
    }
    Ok(addrs.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_localhost_and_keeps_it_fresh() {
        let dns = DnsCache::new();
        assert!(dns.lookup("localhost:80").is_none());
        dns.resolve_blocking("localhost", 80).unwrap();
        let addrs = dns.lookup("localhost:80").unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 80));
        dns.refresh();
        assert!(dns.lookup("localhost:80").is_some());
        assert!(dns.resolve_blocking("no-such-host.invalid", 80).is_err());
    }
}
