//! Giving memory the workers freed back to the operating system.
//!
//! The allocator is the binary's choice (mimalloc in `switchboard`). Such an
//! allocator keeps pages it no longer uses and returns them only when later
//! allocations or frees pass through its slow paths. A worker that holds
//! thousands of open streams allocates nothing per relayed event, so after a
//! burst of stream openings (each briefly holding what only setting up a
//! stream needs: the response head's read buffer, a new upstream connection's
//! boxed connect) those freed pages would stay resident for as long as the
//! streams stay open — the bulk of the difference between the live heap and
//! the RSS of an open stream (docs/performance.md, "Memory per open stream").
//!
//! The binary installs a release function ([`set_release`]); each worker calls
//! it from its once-a-second housekeeping tick ([`release`]), on its own
//! thread. For mimalloc it is `mi_collect(false)`: that thread's empty pages
//! go back to the allocator's arenas, and what has been free for longer than
//! the allocator's purge delay is returned to the OS. Nothing is forced and
//! nothing runs per request.

use std::sync::OnceLock;

static RELEASE: OnceLock<fn()> = OnceLock::new();

/// Install the function a worker calls once a second to return freed memory
/// to the OS (on the worker's own thread). Set once per process; false if a
/// function was already set.
pub fn set_release(f: fn()) -> bool {
    RELEASE.set(f).is_ok()
}

/// Return this thread's freed memory to the OS, if the binary said how.
pub(crate) fn release() {
    if let Some(f) = RELEASE.get() {
        f()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static CALLS: AtomicUsize = AtomicUsize::new(0);

    fn counted() {
        CALLS.fetch_add(1, Ordering::SeqCst);
    }

    /// The release function is set once per process, and each call of
    /// `release` (a worker's tick) reaches it.
    #[test]
    fn the_release_function_is_set_once_and_called() {
        assert!(set_release(counted), "the first function is taken");
        assert!(!set_release(|| {}), "a second one is refused");
        // (Workers of other tests in this process may call it too.)
        let before = CALLS.load(Ordering::SeqCst);
        release();
        release();
        assert!(CALLS.load(Ordering::SeqCst) >= before + 2);
    }
}
