//! A clock read shared by everything that runs in one round of a runtime's
//! loop (Switchboard patch; see PATCHES.md).
//!
//! [`recent`] answers the time read by the first call since the runtime last
//! woke from waiting for I/O or timers, or since it started another round of
//! ready tasks: one `clock_gettime` per round instead of one per caller. It
//! is for deadlines and coarse bookkeeping, not for measuring: its answer is
//! at most one round of ready tasks old. Outside a runtime's loop it reads
//! the clock every time.

use std::cell::Cell;

use super::Instant;

#[derive(Clone, Copy)]
enum State {
    /// Not inside a runtime's loop on this thread: read every time.
    Off,
    /// Inside, no read yet this round.
    Stale,
    /// Inside, read this round.
    Fresh(Instant),
}

thread_local! {
    static RECENT: Cell<State> = const { Cell::new(State::Off) };
}

/// The time at the start of this round of the runtime's loop (read by the
/// first caller of the round), or now outside a runtime.
pub fn recent() -> Instant {
    RECENT.with(|r| match r.get() {
        State::Fresh(t) => t,
        State::Stale => {
            let t = Instant::now();
            r.set(State::Fresh(t));
            t
        }
        State::Off => Instant::now(),
    })
}

/// A new round begins (the runtime woke, or runs its ready tasks again):
/// the next [`recent`] reads the clock.
pub(crate) fn new_round() {
    RECENT.with(|r| r.set(State::Stale));
}

/// The runtime's loop ends on this thread.
pub(crate) fn off() {
    RECENT.with(|r| r.set(State::Off));
}

/// Turns the shared read on for the life of a runtime's loop; off again
/// when dropped (also on unwind).
pub(crate) struct Rounds;

impl Rounds {
    pub(crate) fn start() -> Rounds {
        new_round();
        Rounds
    }
}

impl Drop for Rounds {
    fn drop(&mut self) {
        off();
    }
}
