//! Switchboard patch: multishot receive (`IORING_OP_RECV` with
//! `IORING_RECV_MULTISHOT` and `IOSQE_BUFFER_SELECT`) into a per-thread
//! provided-buffer ring. See `PATCHES.md`.
//!
//! One submission stays armed for a socket and posts a completion for every
//! arrival, each naming the ring buffer the kernel filled. The op's slot in
//! the driver's slab holds a [`MultiState`] (a queue of those completions)
//! instead of a one-shot [`Lifecycle`] state; the slot is removed once the
//! kernel has posted its last completion (one without `IORING_CQE_F_MORE`)
//! and the owner has taken it, or, when the owner is gone, as soon as that
//! completion arrives. Every buffer named by a completion goes back to the
//! ring once its bytes were copied out (or, for an owner that is gone, at
//! once).

use std::{
    alloc::{alloc_zeroed, dealloc, Layout},
    cell::UnsafeCell,
    collections::VecDeque,
    future::Future,
    io,
    pin::Pin,
    rc::Rc,
    sync::atomic::{AtomicU16, AtomicU32, Ordering},
    task::{Context, Poll, Waker},
};

use io_uring::{cqueue, opcode, types};

use super::{lifecycle::Lifecycle, UringInner, CANCEL_USERDATA};
use crate::driver::{shared_fd::SharedFd, Inner, CURRENT};

/// The buffer group id of the receive ring (one ring per thread's driver).
const BGID: u16 = 0x5b01;

/// Largest ring (the kernel's limit is 32768 entries).
pub(crate) const MAX_COUNT: u16 = 32768;
/// Largest buffer.
pub(crate) const MAX_SIZE: u32 = 1 << 20;

/// Process-wide ring size, set before the runtimes start; 0 buffers = off.
static CONFIG_COUNT: AtomicU32 = AtomicU32::new(0);
static CONFIG_SIZE: AtomicU32 = AtomicU32::new(0);

/// Set the provided-buffer ring each io_uring runtime thread registers on its
/// first multishot receive: `count` buffers (a power of two, at most 32768)
/// of `size` bytes (1..=1 MiB) each. `count` 0 turns multishot receive off
/// ([`crate::net::TcpStream::recv_multi`] then answers `None`). Threads that
/// already registered a ring keep theirs.
pub fn set_recv_multi_buffers(count: u16, size: u32) -> io::Result<()> {
    if count != 0 && (!count.is_power_of_two() || count > MAX_COUNT || size == 0 || size > MAX_SIZE) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "multishot receive buffers: count must be a power of two up to 32768, size 1..=1048576",
        ));
    }
    CONFIG_SIZE.store(size, Ordering::Relaxed);
    CONFIG_COUNT.store(count as u32, Ordering::Relaxed);
    Ok(())
}

std::thread_local! {
    /// Set once this thread's kernel refused a multishot receive (EINVAL:
    /// before 6.0 it has provided-buffer rings but not multishot receive).
    static MULTI_REFUSED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The state of a driver's receive ring.
pub(crate) enum RecvRing {
    /// Not tried yet on this thread.
    Untried,
    /// Registered.
    Ready(BufRing),
    /// Off, or the kernel refused it (before 5.19): no multishot receive.
    Unavailable,
}

/// A provided-buffer ring registered with the kernel: `count` ring entries
/// (page aligned, shared with the kernel) and `count` buffers of `size`.
pub(crate) struct BufRing {
    ring: *mut types::BufRingEntry,
    ring_layout: Layout,
    bufs: *mut u8,
    bufs_layout: Layout,
    size: u32,
    mask: u16,
    tail: u16,
}

impl BufRing {
    fn new(uring: &io_uring::IoUring, count: u16, size: u32) -> io::Result<BufRing> {
        let ring_layout = Layout::from_size_align(count as usize * 16, 4096)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let bufs_layout = Layout::from_size_align(count as usize * size as usize, 64)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // Safety: both layouts have a non-zero size (count, size >= 1).
        let ring = unsafe { alloc_zeroed(ring_layout) } as *mut types::BufRingEntry;
        if ring.is_null() {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        let bufs = unsafe { alloc_zeroed(bufs_layout) };
        if bufs.is_null() {
            unsafe { dealloc(ring.cast(), ring_layout) };
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        let mut this = BufRing { ring, ring_layout, bufs, bufs_layout, size, mask: count - 1, tail: 0 };
        // Safety: the ring memory stays valid until `self` is dropped, which
        // happens after the io_uring instance is closed (see `UringInner`'s
        // drop); a failed registration leaves nothing behind.
        unsafe {
            uring.submitter().register_buf_ring(ring as u64, count, BGID)?;
        }
        for bid in 0..count {
            this.stage(bid);
        }
        this.publish();
        Ok(this)
    }

    /// Put buffer `bid` at the ring's tail (not yet visible to the kernel).
    fn stage(&mut self, bid: u16) {
        let idx = (self.tail & self.mask) as usize;
        // Safety: idx <= mask < count entries; bid < count buffers.
        unsafe {
            let entry = &mut *self.ring.add(idx);
            entry.set_addr(self.bufs.add(bid as usize * self.size as usize) as u64);
            entry.set_len(self.size);
            entry.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Make the staged buffers visible to the kernel.
    fn publish(&mut self) {
        // Safety: the tail field overlays the first entry's `resv`, a u16 the
        // kernel reads; written with release ordering after the entries.
        unsafe {
            let tail = types::BufRingEntry::tail(self.ring) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// Give buffer `bid` back to the kernel.
    pub(crate) fn recycle(&mut self, bid: u16) {
        if bid <= self.mask {
            self.stage(bid);
            self.publish();
        }
    }

    /// The first `len` bytes of buffer `bid`, as the kernel filled them.
    fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        if bid > self.mask {
            return &[];
        }
        let len = len.min(self.size as usize);
        // Safety: inside the buffer area; the kernel wrote `len` bytes into
        // this buffer and does not touch it until it is recycled.
        unsafe { std::slice::from_raw_parts(self.bufs.add(bid as usize * self.size as usize), len) }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // Safety: allocated in `new` with these layouts; the ring is closed.
        unsafe {
            dealloc(self.ring.cast(), self.ring_layout);
            dealloc(self.bufs, self.bufs_layout);
        }
    }
}

/// A multishot receive's state, in its slot of the driver's slab.
pub(crate) struct MultiState {
    /// Completions not yet taken: (result, flags).
    queue: VecDeque<(i32, u32)>,
    waker: Option<Waker>,
    /// The kernel posted its last completion for this op.
    ended: bool,
    /// The owner is gone: completions only return their buffers.
    dropped: bool,
    /// A cancellation was submitted.
    cancelled: bool,
}

/// Complete slot `index` with a completion: the one-shot way
/// (`Lifecycle::complete`), or, for a multishot slot, by queueing it for its
/// owner (or, the owner gone, by returning its buffer to the ring).
pub(super) fn complete(ops: &mut super::Ops, recv_ring: &mut RecvRing, index: usize, cqe: &cqueue::Entry) {
    let Some(mut lc) = ops.slab.get(index) else {
        return;
    };
    let (res, flags) = (cqe.result(), cqe.flags());
    let Lifecycle::Multi(state) = &mut *lc else {
        lc.complete(super::resultify(cqe), flags);
        return;
    };
    let more = cqueue::more(flags);
    if state.dropped {
        if let (Some(bid), RecvRing::Ready(ring)) = (cqueue::buffer_select(flags), recv_ring) {
            ring.recycle(bid);
        }
        if !more {
            lc.remove();
        }
        return;
    }
    state.queue.push_back((res, flags));
    if !more {
        state.ended = true;
    }
    if let Some(w) = state.waker.take() {
        w.wake();
    }
}

impl UringInner {
    fn recv_ring(&mut self) -> Option<&mut BufRing> {
        if let RecvRing::Untried = self.recv_ring {
            let count = CONFIG_COUNT.load(Ordering::Relaxed);
            let size = CONFIG_SIZE.load(Ordering::Relaxed);
            self.recv_ring = match u16::try_from(count) {
                Ok(count) if count > 0 => match BufRing::new(&self.uring, count, size) {
                    Ok(ring) => RecvRing::Ready(ring),
                    Err(_) => RecvRing::Unavailable,
                },
                _ => RecvRing::Unavailable,
            };
        }
        match &mut self.recv_ring {
            RecvRing::Ready(ring) => Some(ring),
            _ => None,
        }
    }

    fn push_sqe(&mut self, sqe: &io_uring::squeue::Entry) {
        // Safety: the entry's pointers (none, or the ring registered above)
        // stay valid while the op is in flight.
        unsafe {
            if self.uring.submission().push(sqe).is_err() {
                let _ = self.submit();
                let _ = self.uring.submission().push(sqe);
            }
        }
    }
}

/// What one [`RecvMulti::recv_into`] got.
#[derive(Debug)]
pub enum MultiRecv {
    /// This many bytes were appended.
    Data(usize),
    /// The peer closed its side (end of stream).
    Eof,
    /// The receive failed.
    Err(io::Error),
    /// The multishot receive stopped without an end of stream: the ring had
    /// no free buffer (ENOBUFS) or the kernel ended it; nothing was read.
    /// Read the plain way (or arm a new one).
    Ended,
}

/// An armed multishot receive on a TCP socket (io_uring driver only), from
/// [`crate::net::TcpStream::recv_multi`]. Bytes that arrive are kept in the
/// thread's ring buffers until [`RecvMulti::recv_into`] copies them out.
/// Dropping it cancels the receive; before the socket is read any other way
/// again, call [`RecvMulti::finish`], which waits until the kernel stopped.
pub struct RecvMulti {
    driver: Rc<UnsafeCell<UringInner>>,
    index: usize,
    /// The slot was removed (the op is over and its completions taken).
    done: bool,
    // Keeps the socket open while the op is armed.
    _fd: SharedFd,
}

impl RecvMulti {
    pub(crate) fn arm(fd: &SharedFd) -> Option<RecvMulti> {
        if !CURRENT.is_set() || MULTI_REFUSED.with(|r| r.get()) {
            return None;
        }
        let driver = CURRENT.with(|inner| match inner {
            Inner::Uring(this) => Some(this.clone()),
            #[allow(unreachable_patterns)]
            _ => None,
        })?;
        let inner = unsafe { &mut *driver.get() };
        inner.recv_ring()?;
        let index = inner.ops.slab.insert(Lifecycle::Multi(Box::new(MultiState {
            queue: VecDeque::with_capacity(4),
            waker: None,
            ended: false,
            dropped: false,
            cancelled: false,
        })));
        let sqe = opcode::RecvMulti::new(types::Fd(fd.raw_fd()), BGID).build().user_data(index as u64);
        inner.push_sqe(&sqe);
        Some(RecvMulti { driver, index, done: false, _fd: fd.clone() })
    }

    /// Wait for bytes and append the received ones that are waiting to
    /// `dst`, whole arrivals in order, up to `max` bytes (but always the
    /// first arrival, which may be larger: up to one ring buffer). The rest
    /// stay queued, in their ring buffers, for the next call: `dst` grows by
    /// at most `max` or one buffer, however much arrived at once.
    /// Cancel-safe: dropping the future loses nothing.
    pub fn recv_into<'a>(&'a mut self, dst: &'a mut Vec<u8>, max: usize) -> impl Future<Output = MultiRecv> + 'a {
        RecvInto { multi: self, dst, max }
    }

    fn poll_recv(&mut self, dst: &mut Vec<u8>, max: usize, cx: &mut Context<'_>) -> Poll<MultiRecv> {
        if self.done {
            return Poll::Ready(MultiRecv::Ended);
        }
        let inner = unsafe { &mut *self.driver.get() };
        let UringInner { ops, recv_ring, .. } = inner;
        let Some(mut lc) = ops.slab.get(self.index) else {
            self.done = true;
            return Poll::Ready(MultiRecv::Ended);
        };
        let Lifecycle::Multi(state) = &mut *lc else {
            self.done = true;
            return Poll::Ready(MultiRecv::Ended);
        };
        let mut got = 0usize;
        let mut out = None;
        while let Some(&(res, flags)) = state.queue.front() {
            if res > 0 {
                if got > 0 && got.saturating_add(res as usize) > max {
                    break;
                }
                state.queue.pop_front();
                if let (Some(bid), RecvRing::Ready(ring)) = (cqueue::buffer_select(flags), &mut *recv_ring) {
                    dst.extend_from_slice(ring.bytes(bid, res as usize));
                    ring.recycle(bid);
                    got += res as usize;
                }
                continue;
            }
            if got > 0 {
                break;
            }
            state.queue.pop_front();
            if let (Some(bid), RecvRing::Ready(ring)) = (cqueue::buffer_select(flags), &mut *recv_ring) {
                ring.recycle(bid);
            }
            out = Some(match res {
                0 => MultiRecv::Eof,
                e if -e == libc::ENOBUFS || -e == libc::ECANCELED => MultiRecv::Ended,
                e if -e == libc::EINVAL => {
                    MULTI_REFUSED.with(|r| r.set(true));
                    MultiRecv::Ended
                }
                e => MultiRecv::Err(io::Error::from_raw_os_error(-e)),
            });
            break;
        }
        let finished = state.ended && state.queue.is_empty();
        if got == 0 && out.is_none() && !finished {
            match &state.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => state.waker = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        if finished {
            lc.remove();
            self.done = true;
        }
        if got > 0 {
            return Poll::Ready(MultiRecv::Data(got));
        }
        Poll::Ready(out.unwrap_or(MultiRecv::Ended))
    }

    /// Stop the receive and wait until the kernel has: afterwards the socket
    /// can be read another way. Returns true when nothing arrived that was
    /// not taken (false: bytes arrived after the last `recv_into`, dropped
    /// here; the connection should not be reused).
    pub async fn finish(mut self) -> bool {
        let mut clean = true;
        if self.done {
            return clean;
        }
        {
            let inner = unsafe { &mut *self.driver.get() };
            let mut cancel = false;
            if let Some(mut lc) = inner.ops.slab.get(self.index) {
                if let Lifecycle::Multi(state) = &mut *lc {
                    if !state.ended && !state.cancelled {
                        state.cancelled = true;
                        cancel = true;
                    }
                }
            }
            if cancel {
                let sqe = opcode::AsyncCancel::new(self.index as u64).build().user_data(CANCEL_USERDATA);
                inner.push_sqe(&sqe);
            }
        }
        let mut sink = Vec::new();
        loop {
            match std::future::poll_fn(|cx| self.poll_recv(&mut sink, usize::MAX, cx)).await {
                MultiRecv::Data(_) => {
                    clean = false;
                    sink.clear();
                }
                MultiRecv::Eof | MultiRecv::Err(_) => clean = false,
                MultiRecv::Ended => {}
            }
            if self.done {
                return clean;
            }
        }
    }
}

struct RecvInto<'a> {
    multi: &'a mut RecvMulti,
    dst: &'a mut Vec<u8>,
    max: usize,
}

impl Future for RecvInto<'_> {
    type Output = MultiRecv;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<MultiRecv> {
        let me = self.get_mut();
        me.multi.poll_recv(me.dst, me.max, cx)
    }
}

impl Drop for RecvMulti {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let inner = unsafe { &mut *self.driver.get() };
        let UringInner { ops, recv_ring, .. } = &mut *inner;
        let Some(mut lc) = ops.slab.get(self.index) else {
            return;
        };
        let Lifecycle::Multi(state) = &mut *lc else {
            return;
        };
        if let RecvRing::Ready(ring) = recv_ring {
            for (_, flags) in state.queue.drain(..) {
                if let Some(bid) = cqueue::buffer_select(flags) {
                    ring.recycle(bid);
                }
            }
        }
        state.waker = None;
        if state.ended {
            lc.remove();
            return;
        }
        state.dropped = true;
        let cancel = !state.cancelled;
        state.cancelled = true;
        drop(lc);
        if cancel {
            let sqe = opcode::AsyncCancel::new(self.index as u64).build().user_data(CANCEL_USERDATA);
            inner.push_sqe(&sqe);
        }
    }
}
