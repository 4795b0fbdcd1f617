//! The tokio runtime of the update engine: a per-account [`Manager`] that keeps a Telegram
//! client's update state in sync and hands every update to the application, in order per peer.
//!
//! This is the piece a bot or client author uses. You supply three things:
//!
//! - an [`Api`]: `getState`, `getDifference` and `getChannelDifference` over your MTProto
//!   client, with errors classified by [`ApiError`] ([`ApiError::rpc`] and
//!   [`ApiError::rpc_with_value`], for a name and its number apart as grammers has them, know
//!   Telegram's names: FLOOD_WAIT, CHANNEL_PRIVATE, AUTH_KEY_UNREGISTERED, …);
//! - a storage: any [`sync_storage::StateStorage`] + [`sync_storage::AccessHashStorage`]
//!   (memory, the embedded file store, Redis);
//! - a [`Handler`] for updates (and [`Notice`]s about skipped history), with a [`Peer`] key on
//!   your update type.
//!
//! Then the [`Manager`] does the rest:
//!
//! - **Start**: loads the stored state and catches up with `getDifference`, or calls
//!   `getState` on the first run, or when told to skip the backlog
//!   ([`ManagerConfig::catch_up`]). Stored state that cannot be used (corrupt, invalid) stops
//!   the manager, or is thrown away and the account started afresh, as
//!   [`ManagerConfig::on_bad_state`] says ([`BadStatePolicy`], [`Handler::state_discarded`]).
//! - **Intake**: your network reader hands pushes to [`ManagerHandle::push`], or what one
//!   read decoded to [`ManagerHandle::push_batch`] (one message through the intake for
//!   the lot); neither ever waits. When the bounded intake (counted in pushes) is full the
//!   push, or the whole batch, is dropped and counted, and the manager fetches the
//!   difference instead, so a handler that itself pushes never waits for the manager. A
//!   reader that would rather slow down than lose pushes to a difference can watch
//!   [`ManagerHandle::queued`]. [`ManagerHandle::push_affected`] takes the pts of your own
//!   calls, and [`ManagerHandle::session_reset`] signals `new_session_created`.
//! - **Turns**: the manager takes queued pushes for as long as the reader keeps adding them
//!   (yielding to the other tasks between rounds, up to 8,192 pushes), then polls the engine
//!   once, so one delivery, one dispatch and one commit cover many pushes.
//! - **Requests**: the engine's requests run concurrently (several channel differences at
//!   once, bounded by the engine), with exponential backoff and jitter on transient errors and
//!   FLOOD_WAIT honoured; an inaccessible channel stops being tracked and you are told
//!   ([`Notice::ChannelClosed`]); a lost authorization stops the manager
//!   ([`RunError::Unauthorized`]).
//! - **Dispatch**: delivered updates go to your handler through `sync-events`, sharded by
//!   [`PeerKey`]: one chat's updates are handled in order, many chats in parallel. The manager
//!   never waits for the dispatch: what does not fit in a full shard waits in a backlog, in
//!   delivery order, while the manager keeps serving pushes, commands, timers, replies and
//!   shutdown, so a handler may await any [`ManagerHandle`] method. While the backlog is past
//!   `shards × shard_capacity` (a handler is slow or stuck) the engine's requests wait and
//!   pushes wait in the intake (a reader watching [`ManagerHandle::queued`] holds back); only a
//!   full intake is emptied, its pushes dropped and later recovered by a difference, so memory
//!   stays bounded and nobody waits for room forever.
//! - **Persistence**: a batch is acknowledged to the engine only once every update in it was
//!   handled (dispatched batches are acknowledged in order, from the dispatch receipts, with
//!   one wake-up armed for the oldest), and the engine's commits trail those
//!   acknowledgements; commits are written in order, retried while storage is unavailable. A crash therefore loses nothing: a restart
//!   redelivers at most the unacknowledged tail.
//! - **Shutdown**: [`ManagerHandle::shutdown`] (or a [`CancellationToken`]) stops intake and
//!   commands (calls waiting on them fail with [`ControlError::Stopped`]), drains dispatch for
//!   at most [`ManagerConfig::shutdown_grace`] (then stops handlers that are still busy, counted in
//!   [`Summary::abandoned`]), persists what was handled and makes [`Manager::run`] return.
//! - **Observability**: `tracing` spans and events (gaps detected and resolved, differences
//!   fetched, commits rejected), [`ManagerHandle::stats`] ([`Stats`]: the engine's counters
//!   and the runtime's), [`ManagerHandle::state`] (the applied state, published with the
//!   stats) and [`ManagerHandle::channel_pts`]. With the `metrics` feature the same
//!   counters (the engine's as `sync_engine_*_total`, the runtime's as
//!   `sync_runtime_*_total`), the engine's gauges, and histograms of difference round trips,
//!   handler calls and commit writes go through the `metrics` facade. By default the series
//!   carry no `account` label, so a process running 100,000 accounts has as few series as one
//!   running one, and its managers share one set of metric handles;
//!   [`ManagerConfig::metrics`] ([`MetricsConfig`]) adds the `account` label or labels of
//!   your own. `docs/METRICS.md` lists every series.
//!
//! Run one manager per account; many run side by side in one process. Each manager has a
//! dispatch of its own by default ([`ManagerConfig::shards`] worker tasks); a process with many
//! accounts shares one [`DispatchPool`] between them ([`Manager::with_pool`]), so an idle
//! account costs its run task and a few KiB, and no worker tasks.
//!
//! # Beyond one process
//!
//! - **One owner per account.** [`Manager::with_lease`] runs a manager under the account's
//!   lease ([`sync_storage::LeaseStorage`]: memory, file, Redis): it waits as a standby while
//!   another process holds the account, takes over at once when that one shuts down cleanly
//!   and within the lease's ttl when it crashes, fences every commit with the lease's token
//!   ([`ManagerHandle::fencing_token`] gives it to handlers), and stops with
//!   [`RunError::LeaseLost`] when the account was taken over.
//! - **Fleets.** A [`Fleet`] runs the accounts of a registry
//!   ([`sync_storage::RegistryStorage`]) in one process, sharing them with every other process
//!   of the registry: a balanced share each ([`assign`]), handed back when members join, taken
//!   over when one dies, all through the leases. Its accounts share one [`DispatchPool`].
//!
//! # Features
//!
//! | feature | adds |
//! | --- | --- |
//! | `metrics` | the engine's and the runtime's counters (`sync_engine_*_total`, `sync_runtime_*_total`), the engine's gauges and histograms (`sync_runtime_difference_seconds`, `sync_runtime_handler_seconds`, `sync_runtime_commit_seconds`) through the `metrics` facade, labelled as [`MetricsConfig`] says |
//! | `file`, `redis` | the storage backends of `sync-storage` |
// The `sim` module only exists with its feature: link it only then.
#![cfg_attr(
    feature = "testkit",
    doc = "| `testkit` | [`sim`]: an [`Api`] over `sync-testkit`'s simulated server with faults, a push producer and a recording handler |"
)]
#![cfg_attr(
    not(feature = "testkit"),
    doc = "| `testkit` | `sim`: an [`Api`] over `sync-testkit`'s simulated server with faults, a push producer and a recording handler |"
)]
//!
//! # Source files
//!
//! | file | holds |
//! | --- | --- |
//! | `manager.rs` | [`Manager`]: construction, [`Manager::run`] (loading the stored state, building the engine, the dispatch and the writer), the shutdown sequence; [`Summary`], [`RunError`], [`BadState`] |
//! | `handle.rs` | [`ManagerHandle`] and the intake and control messages it sends; [`Pushed`], [`Stopped`], [`ControlError`] |
//! | `driver.rs` | the loop: intake turns, commands, requests and their replies, timers, commits queued, stats published |
//! | `dispatch.rs` | the events handed to `sync-events`, the observer that calls the [`Handler`] (and the task-local that marks its calls), the backlog and the acknowledgement of handled batches |
//! | `pool.rs` | [`DispatchPool`]: dispatch workers shared by many managers, the type-erased jobs and per-manager stop |
//! | `writer.rs` | the storage writer: commits and access hashes, in order, retried (fenced under a lease) |
//! | `lease.rs` | a manager's account lease: [`LeaseConfig`], acquiring as a standby, renewing, fencing, [`LeaseLoss`] |
//! | `fleet.rs` | [`Fleet`], [`AccountFactory`], [`FleetConfig`], [`FleetHandle`], [`assign`] |
//! | `backoff.rs` | retry delays: exponential backoff with jitter, FLOOD_WAIT spread |
//! | `api.rs` | [`Api`], [`ApiError`], the request types, [`BoxError`] |
//! | `handler.rs` | [`Handler`] (which also gets the engine's [`Notice`]s) |
//! | `peer.rs` | [`Peer`], [`PeerKey`] |
//! | `config.rs`, `stats.rs` | [`ManagerConfig`], [`BadStatePolicy`], [`MetricsConfig`]; [`Stats`], [`RuntimeStats`], the counters behind them and the measuring points of the `metrics` export |
//! | `facade.rs` | (feature `metrics`) the metric handles: registered per manager with the `account` label, or shared by the managers of the process without it |
//! | `sim.rs` | `sim` (feature `testkit`) |
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//!
//! use sync_core::{ChannelDifference, Difference, Sequence, State, Update, Updates};
//! use sync_runtime::{
//!     Api, ApiError, BoxError, ChannelDifferenceRequest, DifferenceRequest, Handler, Manager,
//!     Peer, PeerKey,
//! };
//! use sync_storage::MemoryStorage;
//!
//! #[derive(Debug, Clone)]
//! struct Message { chat: i64, pts: i32 }
//!
//! impl Update for Message {
//!     fn sequence(&self) -> Sequence { Sequence::Common { pts: self.pts, pts_count: 1 } }
//! }
//! impl Peer for Message {
//!     fn peer(&self) -> Option<PeerKey> { Some(PeerKey::Chat(self.chat)) }
//! }
//!
//! /// Your MTProto client; here a server that is at pts 10 and has nothing new.
//! struct Client;
//!
//! impl Api for Client {
//!     type Update = Message;
//!     type Entities = ();
//!     async fn get_state(&self) -> Result<State, ApiError> {
//!         Ok(State { pts: 10, qts: 1, date: 1_700_000_000, seq: 1 })
//!     }
//!     async fn get_difference(&self, r: DifferenceRequest) -> Result<Difference<Message>, ApiError> {
//!         Ok(Difference::Empty { date: r.date, seq: 1 })
//!     }
//!     async fn get_channel_difference(
//!         &self,
//!         _: ChannelDifferenceRequest,
//!     ) -> Result<ChannelDifference<Message>, ApiError> {
//!         Err(ApiError::rpc(400, "CHANNEL_INVALID"))
//!     }
//! }
//!
//! struct Counter(AtomicUsize);
//!
//! impl Handler<Message, ()> for Arc<Counter> {
//!     async fn handle(&self, message: Message, _: Arc<[()]>) -> Result<(), BoxError> {
//!         self.0.fetch_add(1, Ordering::Relaxed); // reply, store, …
//!         Ok(())
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
//! runtime.block_on(async {
//!     let storage = Arc::new(MemoryStorage::new());
//!     let handled = Arc::new(Counter(AtomicUsize::new(0)));
//!     let account = 777_000;
//!     let manager = Manager::new(account, Client, Arc::clone(&storage), Arc::clone(&handled));
//!     let handle = manager.handle();
//!     let run = tokio::spawn(manager.run());
//!
//!     // The network reader: hand every pushed `Updates` over; this never waits.
//!     handle.push(Updates::Short { update: Message { chat: 1, pts: 11 }, date: 0 })?;
//!     handle.push(Updates::Short { update: Message { chat: 2, pts: 12 }, date: 0 })?;
//!     // Or what one read of the socket decoded, in one call.
//!     handle.push_batch(vec![
//!         Updates::Short { update: Message { chat: 1, pts: 13 }, date: 0 },
//!         Updates::Short { update: Message { chat: 3, pts: 14 }, date: 0 },
//!     ])?;
//!     handle.caught_up().await?;
//!
//!     handle.shutdown();
//!     let summary = run.await??;
//!     assert!(summary.persisted);
//!     assert_eq!(handled.0.load(Ordering::Relaxed), 4);
//!     assert_eq!(summary.state.map(|s| s.pts), Some(14));
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })
//! # }
//! ```

mod api;
mod backoff;
mod config;
mod dispatch;
mod driver;
#[cfg(feature = "metrics")]
mod facade;
mod fleet;
mod handle;
mod handler;
mod lease;
mod manager;
mod peer;
mod pool;
mod stats;
mod writer;

#[cfg(feature = "testkit")]
pub mod sim;

pub use api::{Api, ApiError, BoxError, ChannelDifferenceRequest, DifferenceRequest};
pub use config::{BadStatePolicy, ManagerConfig, MetricsConfig};
pub use fleet::{AccountFactory, Fleet, FleetConfig, FleetError, FleetHandle, FleetStats, assign};
pub use handle::{ControlError, ManagerHandle, Pushed, Stopped};
pub use handler::Handler;
pub use lease::{LeaseConfig, LeaseLoss, unique_owner};
pub use manager::{BadState, Manager, RunError, Summary};
pub use peer::{Peer, PeerKey};
pub use pool::{DispatchPool, PoolError};
pub use stats::{RuntimeStats, Stats};
/// Re-exported from `sync-core`: what the handler learns besides updates.
pub use sync_core::Notice;
pub use tokio_util::sync::CancellationToken;
