//! Quota counters in Redis start from the usage the admin has recorded: for
//! every quota of the current spec and its current period, a counter that
//! has not been seeded (a new period, a new quota, a Redis that came back
//! empty) gets the accounted usage added once (`seed.lua`). Until then the
//! admission script answers "not seeded" and requests follow
//! `on_redis_down` — so a Redis that lost its data never lets a capped org
//! start again from zero. Runs on a thread of its own in the process that
//! has the database (`switchboard serve`).

use super::sync::{Frame, SyncConn};
use super::Cluster;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use switchboard_shared::config::Period;
use switchboard_shared::RoutingSpec;

/// One quota to keep seeded.
pub struct QuotaRef {
    /// The org whose hash tag its counter is under.
    pub org: String,
    /// `key `k1`` / `org `acme`` (as in [`crate::policy`]).
    pub scope: String,
    /// The usage column and value that select its records (`key_id`/`org`).
    pub column: &'static str,
    pub value: String,
    pub period: Period,
}

/// Every quota in `spec`.
pub fn quotas_of(spec: &RoutingSpec) -> Vec<QuotaRef> {
    use crate::policy::Scope;
    let keys = spec.keys.iter().flat_map(|k| {
        k.limits.quotas.iter().map(move |q| QuotaRef {
            org: k.org.clone(),
            scope: Scope::Key(&k.id).to_string(),
            column: "key_id",
            value: k.id.clone(),
            period: q.period,
        })
    });
    let orgs = spec.orgs.iter().flat_map(|o| {
        o.limits.quotas.iter().map(move |q| QuotaRef {
            org: o.name.clone(),
            scope: Scope::Org(&o.name).to_string(),
            column: "org",
            value: o.name.clone(),
            period: q.period,
        })
    });
    keys.chain(orgs).collect()
}

/// What a seeder reads usage from: `(column, value, period start unix s)` →
/// `(nanos, tokens)` accounted since then.
pub type UsedSince = dyn Fn(&str, &str, i64) -> Result<(u64, u64), String> + Send;

/// Check and seed once; returns how many counters were seeded.
pub fn seed_once(c: &Cluster, conn: &mut SyncConn, quotas: &[QuotaRef], used: &UsedSince) -> Result<usize, String> {
    if quotas.is_empty() {
        return Ok(0);
    }
    let now_s = crate::policy::now_unix_ms() / 1000;
    // The current period's counter, and the next one's (seeded with zero
    // ahead of time, so a new day or month starts seeded).
    let mut keys: Vec<(&QuotaRef, String, u64, bool)> = Vec::with_capacity(2 * quotas.len());
    for q in quotas {
        let (key, exp) = super::limits::quota_key(&q.org, &q.scope, q.period, now_s);
        keys.push((q, key, exp, false));
        let (_, end) = q.period.bounds(now_s as i64);
        let (key, exp) = super::limits::quota_key(&q.org, &q.scope, q.period, end.max(0) as u64);
        keys.push((q, key, exp, true));
    }
    let checks: Vec<Vec<&[u8]>> = keys.iter().map(|(_, k, _, _)| vec![&b"HEXISTS"[..], k.as_bytes(), b"s"]).collect();
    let replies = conn.pipeline(&checks)?;
    let mut seeded = 0;
    for ((q, key, exp, next), r) in keys.iter().zip(replies) {
        if matches!(r, Frame::Integer(1)) {
            continue;
        }
        let (start, _) = q.period.bounds(now_s as i64);
        let (nanos, tokens) = if *next { (0, 0) } else { used(q.column, &q.value, start)? };
        let cap = switchboard_shared::limits::CLUSTER_MAX_COUNTER;
        let (n, t, e) = (nanos.min(cap).to_string(), tokens.min(cap).to_string(), exp.to_string());
        let r = conn.call(&[
            b"EVAL",
            c.seed_script.body.as_bytes(),
            b"1",
            key.as_bytes(),
            n.as_bytes(),
            t.as_bytes(),
            e.as_bytes(),
        ])?;
        match r {
            Frame::Integer(1) if *next => {}
            Frame::Integer(1) => {
                seeded += 1;
                tracing::info!(scope = %q.scope, period = q.period.name(), used_nanos = nanos, used_tokens = tokens,
                    "cluster: quota counter seeded from the accounted usage");
            }
            Frame::Integer(_) => {}
            other => return Err(format!("unexpected answer to the seed script: {other:?}")),
        }
    }
    c.stats.reseeded.fetch_add(seeded as u64, Ordering::Relaxed);
    Ok(seeded)
}

/// Keep the quotas of `spec()` seeded, every `probe_interval_ms`.
pub fn spawn(
    c: Arc<Cluster>,
    spec: Box<dyn Fn() -> Arc<RoutingSpec> + Send>,
    used: Box<UsedSince>,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("sb-redis-seed".into()).spawn(move || {
        let mut conn: Option<SyncConn> = None;
        let mut last_error = String::new();
        loop {
            if c.is_up() {
                let quotas = quotas_of(&spec());
                let result = match conn.as_mut() {
                    Some(x) => Ok(x),
                    None => SyncConn::connect(&c).map(|x| conn.insert(x)),
                }
                .and_then(|x| seed_once(&c, x, &quotas, &*used));
                match result {
                    Ok(_) => last_error.clear(),
                    Err(e) => {
                        conn = None;
                        if e != last_error {
                            tracing::warn!(error = %e, "cluster: cannot seed quota counters yet");
                            last_error = e;
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(c.cfg.probe_interval_ms));
        }
    })?;
    Ok(())
}
