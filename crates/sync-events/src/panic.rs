//! Catching observer panics so that one shard's failure does not take the others down.

use std::any::Any;
use std::fmt;
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::task::Poll;

/// A panic payload.
pub(crate) type Payload = Box<dyn Any + Send + 'static>;

/// Builds a future with `make` and runs it, catching a panic raised while building or polling.
///
/// `AssertUnwindSafe` is sound here in the sense the standard library means: after a panic the
/// future is dropped, and the observer it borrowed is the user's to keep consistent (the
/// documentation of [`crate::ObserverPanic`] says the observer keeps receiving events).
pub(crate) async fn catch_future<F, M>(make: M) -> Result<(), Payload>
where
    F: Future<Output = ()>,
    M: FnOnce() -> F,
{
    let fut = catch_unwind(AssertUnwindSafe(make))?;
    let mut fut = pin!(fut);
    poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(())) => Poll::Ready(Ok(())),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(payload)),
        },
    )
    .await
}

/// The message of a panic payload, when it has one.
pub(crate) fn message(payload: &Payload) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_owned()
    }
}

/// Where an observer panicked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PanicPhase {
    /// While handling an event; the event counts as delivered and the observer keeps
    /// receiving the shard's next events.
    Handle,
    /// In its shutdown.
    Shutdown,
}

/// A caught observer panic, as given to the hook set with
/// [`Builder::on_panic`](crate::Builder::on_panic) and counted in
/// [`ShardStats::panics`](crate::ShardStats::panics).
///
/// A panic is confined to its shard: the other shards go on, and so does the panicking shard's
/// observer (its next events are delivered, and its shutdown is still called once). An observer
/// that cannot continue after a panic should record the fact and ignore later events itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObserverPanic {
    /// The shard whose observer panicked.
    pub shard: usize,
    /// Where it panicked.
    pub phase: PanicPhase,
    /// The panic message (`"(non-string panic payload)"` when it had none).
    pub message: String,
}

impl fmt::Display for ObserverPanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match self.phase {
            PanicPhase::Handle => "handling an event",
            PanicPhase::Shutdown => "shutting down",
        };
        write!(
            f,
            "observer of shard {} panicked while {phase}: {}",
            self.shard, self.message
        )
    }
}
