//! Live reload of the routing spec from the config file.
//!
//! A reload is triggered by SIGHUP (the binary forwards it to
//! [`Reloader::reload_now`]) or by the file changing (polled every
//! `reload_poll_ms`). It reads, parses and compiles on this thread, then
//! publishes; a file that fails any step leaves the running snapshot in place
//! and logs why.

use crate::dns::DnsCache;
use crate::snapshot::{compile, SnapshotStore};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use switchboard_shared::{Config, ConfigError, ServerConfig};

pub struct Reloader {
    path: PathBuf,
    store: Arc<SnapshotStore>,
    dns: Arc<DnsCache>,
    version: AtomicU64,
    /// What was last loaded: file stamp and text. Serialises reloads too.
    last: Mutex<(Option<(SystemTime, u64)>, String)>,
    server: ServerConfig,
}

fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let md = std::fs::metadata(path).ok()?;
    Some((md.modified().ok()?, md.len()))
}

impl Reloader {
    /// Load the file once, publish its snapshot into a new store, and return
    /// the reloader with the server settings it held.
    pub fn load(path: PathBuf, dns: Arc<DnsCache>) -> Result<(Arc<Reloader>, Config), ConfigError> {
        let st = stamp(&path);
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
            path: String::new(),
            message: format!("cannot read `{}`: {e}", path.display()),
        })?;
        let cfg = Config::parse(&text)?;
        let snapshot = compile(&cfg.routing(), 1, &dns)?;
        let store = SnapshotStore::new(snapshot);
        let me = Reloader {
            path,
            store,
            dns,
            version: AtomicU64::new(1),
            last: Mutex::new((st, text)),
            server: cfg.server.clone(),
        };
        Ok((Arc::new(me), cfg))
    }

    pub fn store(&self) -> &Arc<SnapshotStore> {
        &self.store
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Re-read the file and publish it if it changed. Returns the version now
    /// in force.
    pub fn reload_now(&self) -> Result<u64, ConfigError> {
        self.reload(true)
    }

    fn reload(&self, forced: bool) -> Result<u64, ConfigError> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let st = stamp(&self.path);
        if !forced && st == last.0 {
            return Ok(self.version());
        }
        let text = std::fs::read_to_string(&self.path).map_err(|e| ConfigError {
            path: String::new(),
            message: format!("cannot read `{}`: {e}", self.path.display()),
        })?;
        last.0 = st;
        if text == last.1 {
            return Ok(self.version());
        }
        let cfg = Config::parse(&text)?;
        if cfg.server != self.server {
            tracing::warn!("[server] settings changed; they take effect only after a restart");
        }
        let version = self.version() + 1;
        let snapshot = compile(&cfg.routing(), version, &self.dns)?;
        let (keys, routes) = (snapshot.key_count(), snapshot.routes.len());
        self.store.publish(snapshot);
        self.version.store(version, Ordering::Release);
        last.1 = text;
        tracing::info!(version, keys, routes, "routing snapshot published");
        Ok(version)
    }

    /// Poll the file for changes every `every` on a background thread.
    pub fn spawn_watcher(self: &Arc<Self>, every: Duration) -> std::io::Result<()> {
        let me = Arc::downgrade(self);
        std::thread::Builder::new().name("sb-reload".into()).spawn(move || loop {
            std::thread::sleep(every);
            let Some(r) = me.upgrade() else { return };
            if let Err(e) = r.reload(false) {
                tracing::error!(error = %e, "config reload failed; keeping the running snapshot");
            }
        })?;
        Ok(())
    }
}
