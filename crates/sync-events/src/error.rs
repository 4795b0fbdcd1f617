//! Typed errors.

use std::io;

use crate::Receipt;

/// Why events were not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendFailure {
    /// The stream was shut down (or the shard's worker was dropped before it finished).
    #[error("the event stream is shut down")]
    Closed,
    /// A shard's queue was full and the policy (or [`try_send`](crate::EventStream::try_send))
    /// refuses to wait.
    #[error("a shard's queue is full")]
    Full,
}

/// Events that a send did not accept, handed back to the caller.
///
/// A batch may be accepted in part (some shards had room, or the stream shut down half-way):
/// `receipt` covers what was accepted, `unsent` holds the rest. `unsent` is grouped by shard,
/// and the events of each key keep their original order, so resending it keeps per-key order.
#[derive(Debug, thiserror::Error)]
#[error("{failure}: {} event(s) not accepted", .unsent.len())]
pub struct SendError<E> {
    /// Why the events were not accepted.
    pub failure: SendFailure,
    /// The events that were not accepted.
    pub unsent: Vec<E>,
    /// What was accepted before the failure.
    pub receipt: Receipt,
}

/// An invalid [`Builder`](crate::Builder) setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A stream needs at least one shard (use [`EventStream::noop`](crate::EventStream::noop)
    /// for a stream without observers).
    #[error("the number of shards must be at least 1")]
    ZeroShards,
    /// A queue needs room for at least one event.
    #[error("the queue capacity must be at least 1")]
    ZeroCapacity,
}

/// The operating system refused to start a worker thread.
///
/// The workers that were not started are dropped, which closes their shards (sends to them fail
/// with [`SendFailure::Closed`]); call [`EventStream::shutdown`](crate::EventStream::shutdown)
/// to stop the ones already running.
#[derive(Debug, thiserror::Error)]
#[error("could not start the worker thread of shard {shard}")]
pub struct SpawnError {
    /// The shard whose thread could not be started.
    pub shard: usize,
    /// The operating system's error.
    #[source]
    pub source: io::Error,
}

/// Events covered by a [`Receipt`] will never be handled: their shard's worker was dropped
/// before it delivered them (for example a task cancelled by its executor).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the worker of shard {shard} stopped before handling the events")]
pub struct NotHandled {
    /// The shard whose worker stopped early.
    pub shard: usize,
}
