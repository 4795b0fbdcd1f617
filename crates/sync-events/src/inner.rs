//! The state a stream's handles and its workers share, and the overflow policy it carries.
//!
//! Both `stream` (the sending side) and `worker` (the delivering side) build on this module;
//! it depends on neither.

use std::sync::Arc;

use crate::panic::{ObserverPanic, PanicPhase, Payload, message};
use crate::shard::Shard;
use crate::sync::{AtomicBool, AtomicUsize};

/// What a send does when a shard's queue is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Wait for room (the blocking calls park the thread, the async ones return `Pending`).
    /// Nothing is ever dropped.
    #[default]
    Block,
    /// Discard the events that do not fit (the newest), count them in
    /// [`ShardStats::dropped`](crate::ShardStats::dropped) and
    /// [`Receipt::dropped`](crate::Receipt::dropped), and succeed.
    DropNewest,
    /// Accept what fits and hand the rest back in [`SendError`](crate::SendError) with
    /// [`SendFailure::Full`](crate::SendFailure::Full), counting them in
    /// [`ShardStats::rejected`](crate::ShardStats::rejected).
    FailFast,
}

/// The hook called with every caught observer panic.
pub(crate) type PanicHook = Arc<dyn Fn(&ObserverPanic) + Send + Sync + 'static>;

/// State shared by the stream handles and the workers.
pub(crate) struct Inner<E> {
    /// Empty for the no-op stream.
    pub(crate) shards: Box<[Shard<E>]>,
    pub(crate) capacity: usize,
    pub(crate) overflow: Overflow,
    /// Set once by [`EventStream::shutdown`](crate::EventStream::shutdown).
    pub(crate) closed: AtomicBool,
    /// Live [`EventStream`](crate::EventStream) handles; the last one to go shuts the stream down.
    pub(crate) handles: AtomicUsize,
    on_panic: Option<PanicHook>,
}

impl<E> Inner<E> {
    /// Open state over `shards`, with one live handle.
    pub(crate) fn new(
        shards: Box<[Shard<E>]>,
        capacity: usize,
        overflow: Overflow,
        on_panic: Option<PanicHook>,
    ) -> Self {
        Self {
            shards,
            capacity,
            overflow,
            closed: AtomicBool::new(false),
            handles: AtomicUsize::new(1),
            on_panic,
        }
    }

    /// Counts and reports a caught observer panic.
    pub(crate) fn report_panic(&self, shard: usize, phase: PanicPhase, payload: &Payload) {
        let report = ObserverPanic {
            shard,
            phase,
            message: message(payload),
        };
        if let Some(s) = self.shards.get(shard) {
            s.record_panic(report.message.clone());
        }
        if let Some(hook) = &self.on_panic {
            // A panicking hook must not take the worker down either.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(&report)));
        }
    }
}
