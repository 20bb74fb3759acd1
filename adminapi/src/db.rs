//! The SQLite store: WAL mode, foreign keys on, a busy timeout, and versioned
//! migrations embedded in the binary, applied at open. One connection, owned
//! by the admin service and used from blocking threads: one writer.

use rusqlite::Connection;
use std::path::Path;
use std::time::Duration;

/// Migrations in order; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_usage.sql"),
    include_str!("../migrations/0003_limits.sql"),
    include_str!("../migrations/0004_nodes.sql"),
    include_str!("../migrations/0005_clamped.sql"),
    include_str!("../migrations/0006_smoke.sql"),
    include_str!("../migrations/0008_console_latency.sql"),
    include_str!("../migrations/0009_anthropic_usage.sql"),
];

/// How long a write waits for a lock held by another connection before the
/// request fails with 503.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    open_with(path, DEFAULT_BUSY_TIMEOUT)
}

pub fn open_with(path: &Path, busy_timeout: Duration) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(busy_timeout)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrate(&mut conn)?;
    Ok(conn)
}

pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let applied: usize = conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "database migrated");
    }
    Ok(())
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

pub fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A random id with a readable prefix: `org_3f9a…` (96 bits).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_hex(12))
}

/// `n` random bytes from the OS, as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    if getrandom::getrandom(&mut buf).is_err() {
        // No OS randomness is a broken machine; refuse to make guessable secrets.
        tracing::error!("the OS random source failed");
        std::process::abort();
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let c = open(&path).unwrap();
        let v: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        let mode: String = c.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        drop(c);
        let c = open(&path).unwrap();
        let n: i64 = c.query_row("SELECT COUNT(*) FROM meta", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn ids_are_random_and_prefixed() {
        let a = new_id("org");
        assert!(a.starts_with("org_") && a.len() == 28);
        assert_ne!(a, new_id("org"));
    }
}
