//! The synchronisation primitives the crate is built on.
//!
//! Everything that coordinates threads goes through this module so that the model checker can
//! swap in its own instrumented versions: a normal build uses `std`, a build with
//! `RUSTFLAGS="--cfg loom"` uses `loom` (see `tests/loom.rs`).

use std::future::Future;
use std::sync::PoisonError;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, ignoring poisoning.
///
/// Poisoning cannot leave the protected state half-updated: no observer code ever runs while
/// one of the crate's locks is held, and the critical sections themselves only move vectors
/// and wakers around (the only possible panic there is an allocation failure, which aborts).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `fut` to completion on the current thread, parking the thread while it is pending.
///
/// Before parking it spins briefly, then yields a few times, watching for a wake-up: a worker
/// that just emptied its queue usually gets the next events within microseconds, and catching
/// them without sleeping saves both the sleeper's and the waker's system calls (an `unpark` of
/// a thread that is not parked is a single atomic operation).
#[cfg(not(loom))]
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    use std::pin::pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    use std::thread::{self, Thread};

    /// Spins of the busy-wait, then yields to other threads, before parking.
    const SPINS: u32 = 64;
    const YIELDS: u32 = 4;

    struct Unpark {
        thread: Thread,
        woken: AtomicBool,
    }

    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.woken.store(true, Ordering::Release);
            self.thread.unpark();
        }
    }

    /// Waits for a wake-up of `unpark`, the current thread's waker.
    fn wait(unpark: &Unpark) {
        for i in 0..SPINS + YIELDS {
            if unpark.woken.swap(false, Ordering::Acquire) {
                return;
            }
            if i < SPINS {
                std::hint::spin_loop();
            } else {
                thread::yield_now();
            }
        }
        // A wake-up between the last check and `park` leaves the park token set, so `park`
        // returns at once; spurious returns only cost a re-poll.
        thread::park();
        unpark.woken.store(false, Ordering::Relaxed);
    }

    thread_local! {
        // One waker per thread, made once: blocking sends are on the hot path and should not
        // allocate.
        static UNPARK: Arc<Unpark> = Arc::new(Unpark { thread: thread::current(), woken: AtomicBool::new(false) });
    }

    let unpark = UNPARK
        .try_with(Arc::clone)
        // The thread-local is being torn down (a blocking call from a destructor): make a
        // one-off waker instead.
        .unwrap_or_else(|_| {
            Arc::new(Unpark {
                thread: thread::current(),
                woken: AtomicBool::new(false),
            })
        });
    let waker = Waker::from(Arc::clone(&unpark));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(out) => return out,
            Poll::Pending => wait(&unpark),
        }
    }
}

/// Runs `fut` to completion under the model checker.
#[cfg(loom)]
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    loom::future::block_on(fut)
}
