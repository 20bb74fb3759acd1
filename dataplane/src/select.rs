//! Phase "select": the order in which a route's targets are tried.
//!
//! The strategy picks the first target (and, for the ranking strategies, the
//! order of the rest); targets that are ejected (circuit open), cooling after
//! a 429, or out of usable provider keys go to the back, kept only as a last
//! resort. Bounded: a route has at most `MAX_TARGETS` targets.

use crate::health::State;
use crate::snapshot::Route;
use switchboard_shared::config::{Strategy, MAX_EXPANDED_TARGETS};

/// Target indexes in the order to try them.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    order: [u8; MAX_EXPANDED_TARGETS],
    len: usize,
}

impl Plan {
    pub fn as_slice(&self) -> &[u8] {
        &self.order[..self.len]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keep only the targets `keep` accepts, in their order (a test request's
    /// `x-switchboard-target-only`, `crate::fault`).
    pub fn retain(&mut self, mut keep: impl FnMut(usize) -> bool) {
        let mut n = 0;
        for i in 0..self.len {
            let t = self.order[i];
            if keep(t as usize) {
                self.order[n] = t;
                n += 1;
            }
        }
        self.len = n;
    }

    /// Move the first target `pick` accepts to the front, the others keeping
    /// their order (a test request's failed target, `crate::fault`).
    pub fn put_first(&mut self, mut pick: impl FnMut(usize) -> bool) {
        if let Some(at) = self.order[..self.len].iter().position(|&t| pick(t as usize)) {
            self.order[..=at].rotate_right(1);
        }
    }

    /// The target for attempt `n` (targets come round again past the end).
    pub fn nth(&self, n: usize) -> usize {
        self.order[n % self.len.max(1)] as usize
    }
}

/// Order `route`'s targets for one request from a key of `org`. Nodes that
/// do not serve `org` are left out; a node pool's nodes are tried least busy
/// first (ties taken in turn), and nodes at capacity go to the back.
pub fn plan(route: &Route, strategy: Strategy, now: u64, org: &str) -> Plan {
    let mut n = route.targets.len().min(MAX_EXPANDED_TARGETS);
    let mut order = [0u8; MAX_EXPANDED_TARGETS];
    for (i, slot) in order.iter_mut().enumerate().take(n) {
        *slot = i as u8;
    }
    let ts = &route.targets;
    match strategy {
        Strategy::Priority => {}
        Strategy::RoundRobin | Strategy::Weighted => {
            let turn = route.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let first = if strategy == Strategy::Weighted && !route.weighted_order.is_empty() {
                route.weighted_order[(turn % route.weighted_order.len() as u64) as usize] as usize
            } else {
                (turn % n.max(1) as u64) as usize
            };
            // The pick first, the others after it in listed order.
            order[..n].rotate_left(first.min(n.saturating_sub(1)));
        }
        Strategy::LeastLatency => {
            let key = |i: u8| ts[i as usize].upstream.health.ewma_ttfb_us.load(std::sync::atomic::Ordering::Relaxed);
            order[..n].sort_by_key(|&i| key(i));
        }
        Strategy::Cheapest => {
            let key = |i: u8| ts[i as usize].price.unwrap_or(f64::INFINITY);
            order[..n].sort_by(|&a, &b| key(a).total_cmp(&key(b)));
        }
        Strategy::LeastBusy => {
            let key = |i: u8| ts[i as usize].upstream.health.in_flight.load(std::sync::atomic::Ordering::Relaxed);
            order[..n].sort_by_key(|&i| key(i));
        }
    }
    if route.has_nodes {
        if strategy == Strategy::Priority {
            let turn = route.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as usize;
            let busy = |i: u8| ts[i as usize].upstream.health.in_flight.load(std::sync::atomic::Ordering::Relaxed);
            order[..n].sort_by_key(|&i| (ts[i as usize].group, busy(i), (i as usize + turn) % n.max(1)));
        }
        let mut kept = 0;
        for k in 0..n {
            let i = order[k];
            if ts[i as usize].serves(org) {
                order[kept] = i;
                kept += 1;
            }
        }
        n = kept;
    }
    // Healthy targets first, in that order; the rest as a last resort.
    let usable = |i: u8| {
        let t = &ts[i as usize];
        let up = &t.upstream;
        matches!(up.health.state(now), State::Closed | State::HalfOpen) && !up.all_keys_benched(now) && t.has_room()
    };
    order[..n].sort_by_key(|&i| !usable(i));
    Plan { order, len: n }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(order: &[u8]) -> Plan {
        let mut p = Plan { order: [0; MAX_EXPANDED_TARGETS], len: order.len() };
        p.order[..order.len()].copy_from_slice(order);
        p
    }

    #[test]
    fn a_test_requests_plan_is_narrowed_or_reordered() {
        let mut p = plan(&[2, 0, 3, 1]);
        p.put_first(|i| i == 3);
        assert_eq!(p.as_slice(), [3, 2, 0, 1]);
        p.put_first(|i| i == 9);
        assert_eq!(p.as_slice(), [3, 2, 0, 1]);
        p.retain(|i| i == 0);
        assert_eq!(p.as_slice(), [0]);
        p.retain(|_| false);
        assert!(p.is_empty());
    }
}
