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
#[cfg(not(loom))]
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    use std::pin::pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    use std::thread::{self, Thread};

    struct Unpark(Thread);

    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }

    thread_local! {
        // One waker per thread, made once: blocking sends are on the hot path and should not
        // allocate. Spurious unparks are harmless because the loop below re-polls.
        static WAKER: Waker = Waker::from(Arc::new(Unpark(thread::current())));
    }

    let mut fut = pin!(fut);
    let mut run = |waker: &Waker| {
        let mut cx = Context::from_waker(waker);
        loop {
            match fut.as_mut().poll(&mut cx) {
                Poll::Ready(out) => return out,
                Poll::Pending => thread::park(),
            }
        }
    };
    match WAKER.try_with(Waker::clone) {
        Ok(waker) => run(&waker),
        // The thread-local is being torn down (a blocking call from a destructor): make a
        // one-off waker instead.
        Err(_) => run(&Waker::from(Arc::new(Unpark(thread::current())))),
    }
}

/// Runs `fut` to completion under the model checker.
#[cfg(loom)]
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    loom::future::block_on(fut)
}
