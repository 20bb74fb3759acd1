//! Live reload of the config file.
//!
//! A reload is triggered by SIGHUP (the binary forwards it to
//! [`Reloader::reload_now`]) or by the file changing (polled every
//! `reload_poll_ms`). It reads and parses on this thread, then hands the
//! config to an *apply* step: in file mode, compile the routing snapshot and
//! publish it; with the admin API, import the file into its database (which
//! publishes). A file that fails any step leaves what runs in place and logs
//! why.
//!
//! A file is caught mid-write more often than one would think: an editor or a
//! deploy tool truncates it, then writes it. So a polled change is applied
//! only once the file has stayed the same for `reload_settle_ms`, and a file
//! that would take the gateway down is *refused* (see [`refusal`]): an empty
//! one, or one that removes every key or every model, unless it says
//! `allow_empty_routing = true`. Refusals and failures are logged and counted
//! (`switchboard_config_reloads_total`).

use crate::snapshot::{compile, Prepare, SnapshotStore};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use switchboard_shared::{Config, ConfigError, ServerConfig};

/// Applies a parsed config; returns the routing version now in force.
pub type Apply = Box<dyn Fn(&Config) -> Result<u64, ConfigError> + Send + Sync>;

/// Reloads of this process's config file, by result (for `/metrics`).
pub static RELOADS_APPLIED: AtomicU64 = AtomicU64::new(0);
/// Files refused because they would take the gateway down (empty, no keys, no models).
pub static RELOADS_REFUSED: AtomicU64 = AtomicU64::new(0);
/// Files that could not be read, parsed or compiled.
pub static RELOADS_FAILED: AtomicU64 = AtomicU64::new(0);

/// What a running config has that a reload must not take away by accident.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Routable {
    pub keys: usize,
    pub models: usize,
}

impl Routable {
    /// Keys that can authenticate (enabled ones), and models.
    pub fn of(cfg: &Config) -> Routable {
        Routable { keys: cfg.keys.iter().filter(|k| k.enabled).count(), models: cfg.models.len() }
    }
}

/// Whether a config text says nothing: empty, or only blanks, comments and a
/// byte-order mark (an editor's new file, or one caught mid-write).
fn says_nothing(text: &str) -> bool {
    text.trim_start_matches('\u{feff}').lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#')
    })
}

/// Why `text` (parsed as `cfg`) must not replace a running config that has
/// `running`, if it must not; `None` when it may. `switchboard check` asks
/// with `running = None`: "could this file replace any working config?".
pub fn refusal(text: &str, cfg: &Config, running: Option<Routable>) -> Option<String> {
    if says_nothing(text) {
        return Some("the file is empty, or only comments (caught while being written?)".into());
    }
    // With `[admin]` the file only seeds the database: leaving a key or a
    // model out of it removes nothing.
    if cfg.allow_empty_routing || cfg.admin.is_some() {
        return None;
    }
    let had = running.unwrap_or(Routable { keys: 1, models: 1 });
    let hint = "write `allow_empty_routing = true` at the top of the file to mean it";
    let now = Routable::of(cfg);
    if now.keys == 0 && had.keys > 0 {
        return Some(format!("it has no enabled [[keys]]: every request would be refused with 401; {hint}"));
    }
    if now.models == 0 && had.models > 0 {
        return Some(format!("it has no [[models]]: every request would be refused with 404; {hint}"));
    }
    None
}

pub struct Reloader {
    path: PathBuf,
    apply: Apply,
    store: Option<Arc<SnapshotStore>>,
    version: AtomicU64,
    /// What was last looked at and applied. Serialises reloads too.
    last: Mutex<Last>,
    server: ServerConfig,
}

/// A file's identity for change detection: modification time and length.
type Stamp = Option<(SystemTime, u64)>;

struct Last {
    /// The file as last looked at (applied, refused or failed): not looked at again until it changes.
    seen: Stamp,
    /// A change seen by the poller, and since when the file has looked like that.
    settling: Option<(Stamp, Instant)>,
    /// The text in force.
    text: String,
    /// What the config in force routes.
    routable: Routable,
}

fn stamp(path: &std::path::Path) -> Stamp {
    let md = std::fs::metadata(path).ok()?;
    Some((md.modified().ok()?, md.len()))
}

fn read(path: &std::path::Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError { path: String::new(), message: format!("cannot read `{}`: {e}", path.display()) })
}

/// A reload that did not happen.
#[derive(Debug)]
pub enum ReloadError {
    /// The file could not be read, parsed or compiled.
    Invalid(ConfigError),
    /// The file is valid but would take the gateway down ([`refusal`]).
    Refused(String),
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::Invalid(e) => e.fmt(f),
            ReloadError::Refused(why) => write!(f, "refused: {why}"),
        }
    }
}

impl std::error::Error for ReloadError {}

impl From<ConfigError> for ReloadError {
    fn from(e: ConfigError) -> Self {
        ReloadError::Invalid(e)
    }
}

impl Reloader {
    /// File mode: the file is the source of truth. Load it once, publish its
    /// snapshot into a new store, and return the reloader with the config.
    pub fn load(path: PathBuf, prep: Prepare) -> Result<(Arc<Reloader>, Config), ConfigError> {
        let text = read(&path)?;
        let cfg = Config::parse(&text)?;
        if let Some(why) = refusal(&text, &cfg, Some(Routable::default())) {
            return Err(ConfigError { path: String::new(), message: why });
        }
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
            last: Mutex::new(Last { seen: st, settling: None, text, routable: Routable::of(cfg) }),
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

    /// Re-read the file and apply it if it changed (SIGHUP: at once, without
    /// waiting for the file to settle). Returns the version now in force.
    pub fn reload_now(&self) -> Result<u64, ReloadError> {
        self.reload(true)
    }

    fn reload(&self, forced: bool) -> Result<u64, ReloadError> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let st = stamp(&self.path);
        if !forced {
            if st == last.seen {
                last.settling = None;
                return Ok(self.version());
            }
            // Changed: apply once it has looked the same for the settle time.
            let settle = Duration::from_millis(self.server.reload_settle_ms);
            match last.settling {
                Some((s, since)) if s == st => {
                    if since.elapsed() < settle {
                        return Ok(self.version());
                    }
                }
                _ => {
                    last.settling = Some((st, Instant::now()));
                    if !settle.is_zero() {
                        return Ok(self.version());
                    }
                }
            }
        }
        last.settling = None;
        let result = self.reload_text(&mut last, st);
        match &result {
            Ok(_) => {}
            Err(ReloadError::Refused(_)) => {
                RELOADS_REFUSED.fetch_add(1, Ordering::Relaxed);
            }
            Err(ReloadError::Invalid(_)) => {
                RELOADS_FAILED.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    fn reload_text(&self, last: &mut Last, st: Stamp) -> Result<u64, ReloadError> {
        // Looked at: a bad (or missing) file is reported once, not on every
        // poll; it is looked at again when it changes, or on SIGHUP.
        last.seen = st;
        let text = read(&self.path)?;
        if text == last.text {
            return Ok(self.version());
        }
        let cfg = Config::parse(&text)?;
        if let Some(why) = refusal(&text, &cfg, Some(last.routable)) {
            return Err(ReloadError::Refused(why));
        }
        if cfg.server != self.server {
            tracing::warn!("[server] settings changed; they take effect only after a restart");
        }
        for d in &cfg.deprecations {
            tracing::warn!(config = %self.path.display(), "{d}");
        }
        let version = (self.apply)(&cfg)?;
        self.version.store(version, Ordering::Release);
        last.text = text;
        last.routable = Routable::of(&cfg);
        RELOADS_APPLIED.fetch_add(1, Ordering::Relaxed);
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
                tracing::error!(error = %e, file = %r.path.display(), "config reload failed; keeping what runs");
            }
        })?;
        Ok(())
    }
}
