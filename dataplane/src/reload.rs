//! Live reload of the config file.
//!
//! A reload is triggered by SIGHUP (the binary forwards it to
//! [`Reloader::reload_now`]) or by the file changing (polled every
//! `reload_poll_ms`). It reads and parses on this thread, then hands the
//! config to an *apply* step: in file mode, compile the routing snapshot and
//! publish it; with the admin API, import the file into its database (which
//! publishes). A file that fails any step leaves what runs in place and logs
//! why.

use crate::snapshot::{compile, Prepare, SnapshotStore};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use switchboard_shared::{Config, ConfigError, ServerConfig};

/// Applies a parsed config; returns the routing version now in force.
pub type Apply = Box<dyn Fn(&Config) -> Result<u64, ConfigError> + Send + Sync>;

pub struct Reloader {
    path: PathBuf,
    apply: Apply,
    store: Option<Arc<SnapshotStore>>,
    version: AtomicU64,
    /// What was last loaded: file stamp and text. Serialises reloads too.
    last: Mutex<(Option<(SystemTime, u64)>, String)>,
    server: ServerConfig,
}

fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let md = std::fs::metadata(path).ok()?;
    Some((md.modified().ok()?, md.len()))
}

fn read(path: &std::path::Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError { path: String::new(), message: format!("cannot read `{}`: {e}", path.display()) })
}

impl Reloader {
    /// File mode: the file is the source of truth. Load it once, publish its
    /// snapshot into a new store, and return the reloader with the config.
    pub fn load(path: PathBuf, prep: Prepare) -> Result<(Arc<Reloader>, Config), ConfigError> {
        let text = read(&path)?;
        let cfg = Config::parse(&text)?;
        let store = SnapshotStore::new(compile(&cfg.routing(), 1, &prep)?);
        let target = store.clone();
        let next = AtomicU64::new(1);
        let apply: Apply = Box::new(move |cfg: &Config| {
            let version = next.load(Ordering::Acquire) + 1;
            let snapshot = compile(&cfg.routing(), version, &prep)?;
            target.publish(snapshot);
            next.store(version, Ordering::Release);
            Ok(version)
        });
        let me = Reloader::new(path, &cfg, text, apply, 1, Some(store));
        Ok((me, cfg))
    }

    /// Any mode: `apply` takes each changed config; `cfg`/`text` were applied already.
    pub fn new(
        path: PathBuf,
        cfg: &Config,
        text: String,
        apply: Apply,
        version: u64,
        store: Option<Arc<SnapshotStore>>,
    ) -> Arc<Reloader> {
        let st = stamp(&path);
        Arc::new(Reloader {
            path,
            apply,
            store,
            version: AtomicU64::new(version),
            last: Mutex::new((st, text)),
            server: cfg.server.clone(),
        })
    }

    /// The snapshot store (file mode).
    pub fn store(&self) -> Option<&Arc<SnapshotStore>> {
        self.store.as_ref()
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Re-read the file and apply it if it changed. Returns the version now in force.
    pub fn reload_now(&self) -> Result<u64, ConfigError> {
        self.reload(true)
    }

    fn reload(&self, forced: bool) -> Result<u64, ConfigError> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let st = stamp(&self.path);
        if !forced && st == last.0 {
            return Ok(self.version());
        }
        let text = read(&self.path)?;
        last.0 = st;
        if text == last.1 {
            return Ok(self.version());
        }
        let cfg = Config::parse(&text)?;
        if cfg.server != self.server {
            tracing::warn!("[server] settings changed; they take effect only after a restart");
        }
        let version = (self.apply)(&cfg)?;
        self.version.store(version, Ordering::Release);
        last.1 = text;
        tracing::info!(version, "config file applied");
        Ok(version)
    }

    /// Poll the file for changes every `every` on a background thread.
    pub fn spawn_watcher(self: &Arc<Self>, every: Duration) -> std::io::Result<()> {
        let me = Arc::downgrade(self);
        std::thread::Builder::new().name("sb-reload".into()).spawn(move || loop {
            std::thread::sleep(every);
            let Some(r) = me.upgrade() else { return };
            if let Err(e) = r.reload(false) {
                tracing::error!(error = %e, "config reload failed; keeping what runs");
            }
        })?;
        Ok(())
    }
}
