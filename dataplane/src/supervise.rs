//! Phase "accept", its safety net. A panic while serving one connection is
//! caught, logged and counted (`switchboard_worker_panics_total`); the
//! connection closes and the worker keeps serving. A panic that escapes a
//! worker's runtime (outside any connection) marks the worker down
//! (`/healthz` answers 503, `switchboard_workers_down`) and, in the binary,
//! stops the process with a non-zero status so its supervisor restarts it:
//! a process that serves with fewer workers than it says must not look
//! healthy.

use crate::metrics::WorkerSlot;
use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

/// A future whose panics end it with `Err(message)` instead of unwinding
/// through the runtime.
pub struct CatchPanic<F> {
    inner: F,
}

impl<F: Future<Output = ()>> Future for CatchPanic<F> {
    type Output = Result<(), String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `inner` is structurally pinned: it is never moved out of
        // `self`, and `CatchPanic` has no `Drop` and no manual `Unpin`.
        let inner = unsafe { self.map_unchecked_mut(|s| &mut s.inner) };
        // A future that panicked is never polled again (it is dropped), so
        // whatever state the panic left it in is not observed.
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(())) => Poll::Ready(Ok(())),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(panic_message(payload.as_ref()))),
        }
    }
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Serve one connection; a panic closes it and is counted on `slot`.
///
/// A plain function returning a future of its own rather than an `async fn`:
/// an `async fn` keeps its by-value argument (here the connection's whole
/// future) in its first state and again in the state that awaits it, which
/// doubled every open connection's task.
pub fn connection<F: Future<Output = ()>>(worker: usize, slot: &WorkerSlot, serve: F) -> Supervised<'_, F> {
    Supervised { inner: CatchPanic { inner: serve }, worker, slot }
}

/// The future [`connection`] returns.
pub struct Supervised<'a, F> {
    inner: CatchPanic<F>,
    worker: usize,
    slot: &'a WorkerSlot,
}

impl<F: Future<Output = ()>> Future for Supervised<'_, F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let (worker, slot) = (self.worker, self.slot);
        // SAFETY: `inner` is structurally pinned: it is never moved out of
        // `self`, and `Supervised` has no `Drop` and no manual `Unpin`.
        let inner = unsafe { self.map_unchecked_mut(|s| &mut s.inner) };
        match inner.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(()),
            Poll::Ready(Err(message)) => {
                slot.panics.fetch_add(1, Ordering::Relaxed);
                tracing::error!(worker, panic = %message, "a connection's task panicked; it was closed and the worker keeps serving");
                Poll::Ready(())
            }
        }
    }
}

/// Whether a dead worker stops the process (set by the binary, which turns
/// the SIGTERM this raises into a drain and a non-zero exit). Off in
/// embedded use (tests), where nothing handles the signal.
static STOP_PROCESS_ON_WORKER_DEATH: AtomicBool = AtomicBool::new(false);

/// Make a dead worker stop the process (see the module doc).
pub fn stop_process_on_worker_death() {
    STOP_PROCESS_ON_WORKER_DEATH.store(true, Ordering::SeqCst);
}

/// Run a worker's thread body; a panic out of it marks the worker down.
pub fn worker(id: usize, slot: &WorkerSlot, run: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(run)) {
        slot.panics.fetch_add(1, Ordering::Relaxed);
        slot.down.store(true, Ordering::SeqCst);
        let message = panic_message(payload.as_ref());
        if STOP_PROCESS_ON_WORKER_DEATH.load(Ordering::SeqCst) {
            tracing::error!(worker = id, panic = %message, "a data-plane worker died; stopping the process (it exits non-zero) so that its supervisor restarts it");
            if let Err(e) = signal_hook::low_level::raise(signal_hook::consts::SIGTERM) {
                tracing::error!(error = %e, "cannot signal the process to stop");
            }
        } else {
            tracing::error!(worker = id, panic = %message, "a data-plane worker died; it serves nothing any more");
        }
    }
}

/// Test builds only: `SWITCHBOARD_DEBUG_PANIC_WORKER=<id>` makes that worker
/// panic outside any connection (from its once-a-second sweep, the first one
/// after the process answered a request — `served` — so a test can show it
/// serving first however slow the machine), so a test can drive a real
/// worker death through the binary. Nothing in release builds.
#[cfg(debug_assertions)]
#[allow(clippy::panic)]
pub fn debug_panic_hook(worker: usize, served: impl FnOnce() -> bool) {
    static WHICH: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let which = WHICH.get_or_init(|| std::env::var("SWITCHBOARD_DEBUG_PANIC_WORKER").ok().and_then(|v| v.parse().ok()));
    if *which == Some(worker) && served() {
        panic!("SWITCHBOARD_DEBUG_PANIC_WORKER: worker {worker} panics on purpose");
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn debug_panic_hook(_worker: usize, _served: impl FnOnce() -> bool) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_connection_is_caught_and_counted() {
        let slot = WorkerSlot::default();
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap();
        rt.block_on(async {
            connection(0, &slot, async {
                // The very panic of issue 16: a timer too far in the future.
                monoio::time::sleep(std::time::Duration::from_millis(u64::MAX)).await;
            })
            .await;
            connection(0, &slot, async {}).await;
        });
        assert_eq!(slot.panics.load(Ordering::Relaxed), 1);
        assert!(!slot.down.load(Ordering::Relaxed));
    }

    #[test]
    fn a_dead_worker_is_marked_down() {
        let slot = WorkerSlot::default();
        worker(3, &slot, || panic!("boom"));
        assert!(slot.down.load(Ordering::Relaxed));
        worker(4, &WorkerSlot::default(), || {});
    }
}
