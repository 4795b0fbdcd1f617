//! Sharded, per-key ordered observer fan-out.
//!
//! An [`EventStream`] routes each event by its stream key ([`Event::stream_key`], hashed with
//! a stable hash, see [`shard_for_key`]) to one of `N` shards. Each shard has a bounded queue,
//! one worker and one observer made by an [`ObserverFactory`] (synchronous) or an
//! [`AsyncObserverFactory`] (async). So:
//!
//! * all events of one key reach the same observer instance, in the order they were sent
//!   (a stream's "finish" never overtakes its "start"), while different keys proceed in
//!   parallel on different shards;
//! * an observer is only ever called by its own worker, one event at a time, so it keeps
//!   per-stream state in plain fields, without locks;
//! * events without a key all go to shard `0`.
//!
//! The crate is runtime-agnostic. A worker is a plain [`Future`]
//! ([`ShardWorker`]) woken through the standard [`Waker`](std::task::Waker): run the workers on
//! threads with [`Workers::spawn_threads`], or on any executor with [`Workers::spawn_with`]
//! (`|w| { tokio::spawn(w); }`). Senders have blocking ([`EventStream::send`],
//! [`EventStream::send_batch`]) and async ([`EventStream::send_async`],
//! [`EventStream::send_batch_async`]) forms.
//!
//! **Backpressure.** Queues are bounded ([`Builder::capacity`]). By default a sender waits for
//! room and nothing is ever dropped; [`Overflow::DropNewest`] and [`Overflow::FailFast`] trade
//! that for never waiting, and count what they drop or refuse ([`ShardStats`]). A sender that
//! must never wait inside a send uses [`EventStream::try_send`] and awaits
//! [`EventStream::room`] next to its other work.
//!
//! **Batching.** [`EventStream::send_batch`] takes each shard's lock once per batch, and a
//! worker takes its whole queue at each wake-up, so the per-event cost is a hash, a move and an
//! observer call.
//!
//! **Knowing when events were handled.** Every send returns a [`Receipt`];
//! [`EventStream::handled`] resolves (and [`EventStream::wait_handled`] returns) once the
//! receipt's events have been handled by their observers. Receipts merge, so one receipt can
//! stand for a whole batch spread over many shards.
//!
//! **Shutdown.** [`EventStream::shutdown`] is idempotent. It stops accepting events (a later
//! send fails with [`SendFailure::Closed`]); the workers deliver everything that was accepted,
//! then call each observer's shutdown exactly once, after which nothing is delivered to it.
//! [`EventStream::drained`] / [`EventStream::wait_drained`] wait for that. Dropping the last
//! stream handle shuts the stream down too.
//!
//! **Panics.** An observer that panics is caught by its worker, counted
//! ([`ShardStats::panics`]) and reported to the [`Builder::on_panic`] hook; the event counts as
//! delivered, the observer keeps receiving events, and the other shards are unaffected.
//!
//! **Combining and no-op.** [`Both`] combines two observers or factories (every event reaches
//! both, in order, in the same worker: no task per event). [`Noop`] ignores events and
//! [`EventStream::noop`] is a stream without workers that discards everything.
//!
//! # Where things are
//!
//! | file | holds |
//! | --- | --- |
//! | `stream.rs` | [`Builder`] and [`EventStream`]: configuration, sending, receipts, shutdown |
//! | `inner.rs`, `shard.rs` | the state the stream's handles and workers share; one shard's bounded queue and wake-ups |
//! | `route.rs` | which shard a key goes to |
//! | `worker.rs` | [`ShardWorker`]: the loop that feeds a shard's observer, and [`Workers`] to run them |
//! | `observer.rs`, `panic.rs` | [`Observer`], [`AsyncObserver`], factories, [`Both`], [`Noop`]; catching their panics |
//! | `receipt.rs`, `stats.rs`, `error.rs` | [`Receipt`], counters, typed errors |
//! | `sync.rs` | the synchronisation primitives (std, or loom's under `--cfg loom`) |
//! | `fuzzing.rs` | the fuzz body shared by the cargo-fuzz target and the corpus test |
//!
//! # Example: synchronous observers on threads
//!
//! ```
//! use std::collections::HashMap;
//! use std::sync::mpsc;
//!
//! use sync_events::{Builder, Observer};
//!
//! // Events are `(chat id, text)` pairs: a pair is routed by its first element.
//! struct LastMessage {
//!     last: HashMap<i64, String>,
//!     report: mpsc::Sender<usize>,
//! }
//!
//! impl Observer<(i64, String)> for LastMessage {
//!     fn handle(&mut self, (chat, text): (i64, String)) {
//!         // Per-chat state without locks: this shard sees all of this chat's events, in order.
//!         self.last.insert(chat, text);
//!     }
//!     fn shutdown(&mut self) {
//!         let _ = self.report.send(self.last.len());
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (tx, rx) = mpsc::channel();
//! let (stream, workers) = Builder::new()
//!     .shards(2)
//!     .build(move |_shard| LastMessage { last: HashMap::new(), report: tx.clone() })?;
//! let threads = workers.spawn_threads()?;
//!
//! stream.send((1, "hello".to_owned()))?;
//! let receipt = stream.send_batch([(2, "hi".to_owned()), (1, "bye".to_owned())])?;
//! stream.wait_handled(&receipt)?;
//!
//! stream.shutdown_and_wait();
//! threads.join();
//! let chats: usize = rx.try_iter().sum();
//! assert_eq!(chats, 2);
//! assert_eq!(stream.stats().total().delivered, 3);
//! # Ok(())
//! # }
//! ```
//!
//! # Example: async observers on tokio
//!
//! ```
//! use sync_events::{AsyncObserver, Builder};
//!
//! struct Handler;
//!
//! impl AsyncObserver<(u64, u32)> for Handler {
//!     async fn handle(&mut self, (peer, update): (u64, u32)) {
//!         // Await the application's handler (network calls, storage, …).
//!         tokio::task::yield_now().await;
//!         let _ = (peer, update);
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build()?;
//! runtime.block_on(async {
//!     let (stream, workers) = Builder::new().shards(4).build_async(|_shard| Handler)?;
//!     workers.spawn_with(|worker| {
//!         tokio::spawn(worker);
//!     });
//!     let receipt = stream.send_batch_async((0..100_u32).map(|i| (u64::from(i % 7), i))).await?;
//!     // Acknowledge the batch once every update in it was handled.
//!     stream.handled(&receipt).await?;
//!     assert!(stream.is_handled(&receipt));
//!     stream.shutdown();
//!     stream.drained().await;
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })
//! # }
//! ```

mod error;
#[doc(hidden)]
pub mod fuzzing;
mod inner;
mod observer;
mod panic;
mod receipt;
mod route;
mod shard;
mod stats;
mod stream;
mod sync;
mod worker;

pub use error::{ConfigError, NotHandled, SendError, SendFailure, SpawnError};
pub use inner::Overflow;
pub use observer::{
    AsAsync, AsyncObserver, AsyncObserverFactory, Both, Noop, Observer, ObserverFactory,
};
pub use panic::{ObserverPanic, PanicPhase};
pub use receipt::Receipt;
pub use route::{Event, shard_for_event, shard_for_key};
pub use stats::{ShardStats, Stats};
pub use stream::{Builder, EventStream, Room, TrySent};
pub use worker::{ShardWorker, WorkerThreads, Workers};

/// A pair is routed by its first element: `(key, payload)`.
impl<K, V> Event for (K, V)
where
    K: std::hash::Hash + Clone + Send + 'static,
    V: Send + 'static,
{
    type Key = K;

    fn stream_key(&self) -> Option<K> {
        Some(self.0.clone())
    }
}
