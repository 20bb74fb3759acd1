//! Health of each upstream, shared by all workers through atomics (no lock on
//! the request path) and kept across snapshot swaps in a registry keyed by
//! upstream name.
//!
//! Passive health is a circuit breaker: `eject_after_failures` consecutive
//! failures open it for `eject_ms`; then one trial request is let through
//! (half-open): success closes it, failure opens it again. A 429's
//! `Retry-After` cools the upstream for that long. Routing also reads the
//! in-flight count and a moving average of time to first byte.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Milliseconds on a process-wide monotonic clock (never 0). On a worker,
/// the clock read its runtime shares for the round (`monoio::time::recent`):
/// health, benching and key cool-downs count in milliseconds, and a request
/// asks several times.
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    monoio::time::recent().into_std().saturating_duration_since(epoch).as_millis() as u64 + 1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    /// Ejected until the cool-down ends.
    Open,
    /// The cool-down ended: one trial request may go.
    HalfOpen,
    /// Told to slow down (429 Retry-After).
    Cooling,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::Cooling => "cooling",
        }
    }
}

#[derive(Debug)]
pub struct TargetHealth {
    pub name: Arc<str>,
    pub in_flight: AtomicU32,
    /// Moving average of time to first byte, microseconds; 0 = not measured yet.
    pub ewma_ttfb_us: AtomicU64,
    consecutive_failures: AtomicU32,
    /// 0 = closed; else open until this time (`now_ms`).
    open_until_ms: AtomicU64,
    trial: AtomicBool,
    cool_until_ms: AtomicU64,
    pub successes: AtomicU64,
    pub failures: AtomicU64,
}

impl TargetHealth {
    pub fn new(name: &str) -> TargetHealth {
        TargetHealth {
            name: name.into(),
            in_flight: AtomicU32::new(0),
            ewma_ttfb_us: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            trial: AtomicBool::new(false),
            cool_until_ms: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    pub fn state(&self, now: u64) -> State {
        let open = self.open_until_ms.load(Ordering::Acquire);
        if open != 0 {
            return if now < open { State::Open } else { State::HalfOpen };
        }
        if now < self.cool_until_ms.load(Ordering::Acquire) {
            return State::Cooling;
        }
        State::Closed
    }

    /// May a request go to this target now? In half-open, only one (the
    /// trial) until it reports.
    pub fn admit(&self, now: u64) -> bool {
        match self.state(now) {
            State::Closed => true,
            State::Open | State::Cooling => false,
            State::HalfOpen => {
                now >= self.cool_until_ms.load(Ordering::Acquire)
                    && self.trial.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok()
            }
        }
    }

    pub fn success(&self, ttfb: Duration) {
        self.successes.fetch_add(1, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        if self.open_until_ms.load(Ordering::Relaxed) != 0 {
            self.open_until_ms.store(0, Ordering::Release);
        }
        self.trial.store(false, Ordering::Release);
        // EWMA with weight 1/5 for the new sample. Races between workers lose
        // a sample at worst.
        let sample = (ttfb.as_micros() as u64).max(1);
        let old = self.ewma_ttfb_us.load(Ordering::Relaxed);
        let new = if old == 0 { sample } else { (old * 4 + sample) / 5 };
        self.ewma_ttfb_us.store(new.max(1), Ordering::Relaxed);
    }

    pub fn failure(&self, now: u64, eject_after: u32, eject_for: Duration) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let n = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        let was_trial = self.trial.swap(false, Ordering::AcqRel);
        if n >= eject_after || was_trial {
            self.open_until_ms.store(now + eject_for.as_millis() as u64, Ordering::Release);
        }
    }

    /// Keep requests away until `until` (a 429's Retry-After). Ends a
    /// half-open trial without a verdict, so the next trial can go.
    pub fn cool(&self, until: u64) {
        self.cool_until_ms.fetch_max(until, Ordering::AcqRel);
        self.trial.store(false, Ordering::Release);
    }

    /// Share of failures among all outcomes so far.
    pub fn error_rate(&self) -> f64 {
        let f = self.failures.load(Ordering::Relaxed) as f64;
        let s = self.successes.load(Ordering::Relaxed) as f64;
        if f + s == 0.0 {
            0.0
        } else {
            f / (f + s)
        }
    }
}

/// Counts a request in flight at a target while alive.
pub struct InFlight<'a>(&'a TargetHealth);

impl<'a> InFlight<'a> {
    pub fn new(h: &'a TargetHealth) -> Self {
        h.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(h)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Health by upstream name; snapshots take their entries from here, so health
/// survives a reload.
#[derive(Default)]
pub struct HealthRegistry {
    map: Mutex<HashMap<String, Arc<TargetHealth>>>,
}

impl HealthRegistry {
    pub fn get(&self, name: &str) -> Arc<TargetHealth> {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(name.to_string()).or_insert_with(|| Arc::new(TargetHealth::new(name))).clone()
    }

    /// Every upstream's health, sorted by name (for the admin API).
    pub fn all(&self) -> Vec<Arc<TargetHealth>> {
        let m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = m.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_half_opens_and_closes() {
        let h = TargetHealth::new("a");
        let t0 = 1_000;
        for _ in 0..2 {
            h.failure(t0, 3, Duration::from_millis(100));
        }
        assert_eq!(h.state(t0), State::Closed);
        h.failure(t0, 3, Duration::from_millis(100));
        assert_eq!(h.state(t0 + 50), State::Open);
        assert!(!h.admit(t0 + 50));
        // After the cool-down: exactly one trial.
        assert!(h.admit(t0 + 100));
        assert!(!h.admit(t0 + 101));
        // The trial fails: open again.
        h.failure(t0 + 110, 3, Duration::from_millis(100));
        assert_eq!(h.state(t0 + 150), State::Open);
        assert!(h.admit(t0 + 210));
        h.success(Duration::from_millis(5));
        assert_eq!(h.state(t0 + 211), State::Closed);
        assert!(h.admit(t0 + 211) && h.admit(t0 + 211));
    }

    #[test]
    fn a_trial_answered_429_does_not_wedge_the_breaker() {
        let h = TargetHealth::new("a");
        h.failure(1_000, 1, Duration::from_millis(100));
        assert!(h.admit(1_100), "the trial");
        h.cool(1_200);
        assert_eq!(h.state(1_150), State::HalfOpen);
        assert!(!h.admit(1_150), "still cooling");
        assert!(h.admit(1_250), "a new trial once cooled");
    }

    #[test]
    fn cooling_and_ewma() {
        let h = TargetHealth::new("a");
        h.cool(500);
        assert_eq!(h.state(100), State::Cooling);
        assert_eq!(h.state(500), State::Closed);
        h.success(Duration::from_micros(1000));
        h.success(Duration::from_micros(2000));
        assert_eq!(h.ewma_ttfb_us.load(Ordering::Relaxed), 1200);
        let reg = HealthRegistry::default();
        assert!(Arc::ptr_eq(&reg.get("x"), &reg.get("x")));
    }

    /// Deadlines and `now_ms` take the clock read a worker's runtime shares
    /// for one round of ready tasks (`monoio::time::recent`): the same
    /// within a round, read again after the runtime waited, and read every
    /// time outside a runtime (never a value left over from one).
    #[test]
    fn the_shared_clock_read_is_renewed_each_round_and_not_kept_outside() {
        for legacy in [false, true] {
            let body = async {
                let first = monoio::time::recent();
                assert_eq!(monoio::time::recent(), first, "one read per round");
                monoio::time::sleep(Duration::from_millis(2)).await;
                let after = monoio::time::recent();
                assert!(after >= first + Duration::from_millis(2), "read again after the runtime waited");
                after
            };
            let last = if legacy {
                monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap().block_on(body)
            } else {
                match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().enable_timer().build() {
                    Ok(mut rt) => rt.block_on(body),
                    Err(_) => continue, // no io_uring here
                }
            };
            std::thread::sleep(Duration::from_millis(2));
            assert!(monoio::time::recent() >= last + Duration::from_millis(2), "outside a runtime: a fresh read");
        }
    }
}
