//! A process-wide dispatch shared by many managers: [`DispatchPool`], the type-erased [`Job`]
//! each manager's events travel in, and the per-run [`Slot`] that lets one manager stop its
//! own handlers without touching anyone else's.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use sync_events::{AsyncObserver, Event, EventStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::dispatch::{BoxFuture, Dispatch, HANDLING, handle_event};
use crate::handler::Handler;
use crate::lease::Held;
use crate::peer::PeerKey;
use crate::stats::Counters;

/// Why a [`DispatchPool`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// Zero shards or zero capacity.
    #[error("invalid dispatch pool configuration: {0}")]
    Config(#[source] sync_events::ConfigError),
    /// [`DispatchPool::new`] was called outside a tokio runtime, which its workers need.
    #[error("a dispatch pool is built inside a tokio runtime")]
    NoRuntime,
}

/// Dispatch workers shared by many [`Manager`](crate::Manager)s of one process.
///
/// By default each manager has a private dispatch: [`ManagerConfig::shards`](crate::ManagerConfig::shards)
/// worker tasks of its own. A process that runs many accounts builds one pool instead and hands
/// it to each manager with [`Manager::with_pool`](crate::Manager::with_pool): the pool's
/// workers (tokio tasks, spawned once by [`new`](Self::new)) then handle every account's
/// updates, so an idle account costs no worker task at all.
///
/// Events are routed by (manager, [`PeerKey`](crate::PeerKey)): one peer's updates of one
/// account are handled one at a time, in order, while other peers and other accounts run in
/// parallel on the other shards. Everything the private dispatch promises holds per manager:
/// the manager never waits for the pool (what does not fit waits in its backlog), batches are
/// acknowledged once handled, handler errors and panics are counted in that manager's
/// [`RuntimeStats`](crate::RuntimeStats), [`caught_up`](crate::ManagerHandle::caught_up)
/// knows a call from inside that manager's handler, and a manager's shutdown waits
/// [`ManagerConfig::shutdown_grace`](crate::ManagerConfig::shutdown_grace) for its own events,
/// then stops its own handlers that are still busy and skips its queued events (counted in
/// [`Summary::abandoned`](crate::Summary::abandoned)), leaving the pool and the other managers
/// running. A manager whose run future is dropped stops its handlers the same way.
///
/// A handler that blocks holds up its shard, and so the events of every account routed to
/// that shard: size the pool (shards, capacity) for the process, not for one account.
///
/// The handle is cheap to clone; managers keep a clone while they run. The pool shuts down
/// when [`shutdown`](Self::shutdown) is called or when the last clone is dropped: its workers
/// handle what they accepted, then end ([`drained`](Self::drained)). A manager still running
/// on a shut-down pool keeps what it could not hand over unacknowledged, so a restart
/// delivers it again.
///
/// ```
/// # use sync_runtime::DispatchPool;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
/// runtime.block_on(async {
///     // 16 shards of 1,024 events each, for every account of the process.
///     let pool = DispatchPool::new(16, 1_024)?;
///     assert_eq!(pool.shards(), 16);
///     // Manager::new(account, api, storage, handler).with_pool(&pool), for each account.
///     pool.shutdown();
///     pool.drained().await;
///     Ok::<_, Box<dyn std::error::Error>>(())
/// })
/// # }
/// ```
#[derive(Clone)]
pub struct DispatchPool {
    stream: EventStream<Job>,
    capacity: usize,
}

impl std::fmt::Debug for DispatchPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispatchPool")
            .field("shards", &self.stream.shards())
            .field("capacity", &self.capacity)
            .field("shut_down", &self.stream.is_shut_down())
            .finish()
    }
}

impl DispatchPool {
    /// A pool of `shards` worker tasks, each queueing up to `capacity` events, spawned on the
    /// current tokio runtime.
    pub fn new(shards: usize, capacity: usize) -> Result<Self, PoolError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| PoolError::NoRuntime)?;
        let (stream, workers) = sync_events::Builder::new()
            .shards(shards)
            .capacity(capacity)
            // Jobs catch their handlers' panics and count them per manager; this only
            // reports a panic of the pool's own code.
            .on_panic(|panic| tracing::error!(%panic, "dispatch pool worker panicked"))
            .build_async(|shard| Worker { shard })
            .map_err(PoolError::Config)?;
        workers.spawn_with(|worker| {
            runtime.spawn(worker);
        });
        Ok(Self { stream, capacity })
    }

    /// How many shards (worker tasks) the pool has.
    pub fn shards(&self) -> usize {
        self.stream.shards()
    }

    /// How many events each shard queues.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Stops the pool: it takes no more events, its workers handle what they accepted and end.
    /// Idempotent. Managers still running keep what they could not hand over unacknowledged.
    pub fn shutdown(&self) {
        self.stream.shutdown();
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        self.stream.is_shut_down()
    }

    /// Resolves once every worker has ended, after [`shutdown`](Self::shutdown).
    pub async fn drained(&self) {
        self.stream.drained().await;
    }

    /// The pool's per-shard counters (events accepted, delivered, refused as full, …), across
    /// all its managers.
    pub fn stats(&self) -> sync_events::Stats {
        self.stream.stats()
    }

    /// A manager's link to the pool for one run: its events become jobs calling `handler`.
    pub(crate) fn attach<U, E, H>(
        &self,
        manager: u64,
        handler: Arc<H>,
        counters: Arc<Counters>,
        lease: Option<Arc<Held>>,
    ) -> Pooled<U, E>
    where
        U: Send + 'static,
        E: Send + Sync + 'static,
        H: Handler<U, E>,
    {
        let slot = Arc::new(Slot::default());
        let link = Arc::new(Link {
            manager,
            handler,
            counters,
            lease,
            slot: Arc::clone(&slot),
        });
        Pooled {
            stream: self.stream.clone(),
            capacity: self.capacity,
            wrap: Box::new(move |event| {
                let key = (manager, event.stream_key());
                Job {
                    key,
                    body: Box::new(Pending {
                        event,
                        link: Arc::clone(&link),
                    }),
                }
            }),
            slot,
            closed: false,
        }
    }
}

/// One event of one manager on its way through the pool.
pub(crate) struct Job {
    /// The manager's id and the event's peer: one peer's events of one manager keep their order,
    /// and the keyless events of different managers spread over the shards.
    key: (u64, Option<PeerKey>),
    body: Box<dyn Body>,
}

impl Event for Job {
    type Key = (u64, Option<PeerKey>);

    fn stream_key(&self) -> Option<Self::Key> {
        Some(self.key)
    }
}

impl Job {
    /// The event the job carries, for a job the pool did not take (its shard was full): it
    /// waits in its manager's backlog as the event it was. `None` only for a job that carries
    /// some other type, which its manager never makes.
    pub(crate) fn into_event<U: 'static, E: 'static>(self) -> Option<Dispatch<U, E>> {
        self.body
            .into_event()
            .downcast::<Dispatch<U, E>>()
            .ok()
            .map(|event| *event)
    }
}

/// A job's type-erased contents.
trait Body: Send + 'static {
    /// Handles the event on `shard`.
    fn run(self: Box<Self>, shard: usize) -> BoxFuture<()>;
    /// Gives the event back, boxed as `Dispatch<U, E>`.
    fn into_event(self: Box<Self>) -> Box<dyn Any + Send>;
}

struct Pending<U, E, H> {
    event: Dispatch<U, E>,
    link: Arc<Link<H>>,
}

/// What every job of one manager's run shares.
struct Link<H> {
    manager: u64,
    handler: Arc<H>,
    counters: Arc<Counters>,
    /// The lease the manager runs under: checked before every handler call.
    lease: Option<Arc<Held>>,
    slot: Arc<Slot>,
}

impl<U, E, H> Body for Pending<U, E, H>
where
    U: Send + 'static,
    E: Send + Sync + 'static,
    H: Handler<U, E>,
{
    fn run(self: Box<Self>, shard: usize) -> BoxFuture<()> {
        Box::pin(async move {
            let Pending { event, link } = *self;
            let slot = &link.slot;
            // The manager stopped its handlers: what it still had queued is skipped (it
            // counted it abandoned and will not acknowledge it).
            if slot.cancel.is_cancelled() {
                return;
            }
            // `HANDLING` per job: this task handles every manager's events.
            let handling = HANDLING.scope(
                (link.manager, shard),
                handle_event(&*link.handler, &link.counters, link.lease.as_deref(), event),
            );
            let handling = std::pin::pin!(handling);
            let outcome = tokio::select! {
                // The handler first: one that finishes at its first poll never registers
                // with the token.
                biased;
                outcome = CatchUnwind(handling) => outcome,
                () = slot.cancel.cancelled() => return,
            };
            if let Err(payload) = outcome {
                link.counters.handler_panics.incr();
                let panic = panic_message(payload.as_ref());
                tracing::error!(panic, "update handler panicked");
            }
            slot.finish();
        })
    }

    fn into_event(self: Box<Self>) -> Box<dyn Any + Send> {
        Box::new(self.event)
    }
}

/// The pool's observer on one shard: runs each job there.
struct Worker {
    shard: usize,
}

impl AsyncObserver<Job> for Worker {
    async fn handle(&mut self, job: Job) {
        job.body.run(self.shard).await;
    }
}

/// Set when a manager stopped its handlers: the count of its jobs handled until then.
const CLOSED: u64 = 1 << 63;

/// One manager run's share of the pool: how many of its jobs were handled, and the token that
/// stops the rest.
#[derive(Default)]
pub(crate) struct Slot {
    /// Jobs handled (their handler returned or panicked), with [`CLOSED`] set once the manager
    /// stopped its handlers; jobs that finish after that are not counted as handled.
    done: AtomicU64,
    /// The manager waits for its jobs: wake it at each one handled.
    draining: AtomicBool,
    finished: Notify,
    /// Cancelled when the manager stops its handlers: running ones are dropped at their next
    /// poll, queued ones skipped.
    cancel: CancellationToken,
}

impl Slot {
    fn finish(&self) {
        self.done.fetch_add(1, Ordering::AcqRel);
        if self.draining.load(Ordering::Acquire) {
            self.finished.notify_waiters();
        }
    }

    /// Jobs handled so far (up to the stop, once stopped).
    pub(crate) fn done(&self) -> u64 {
        let done = self.done.load(Ordering::Acquire);
        if done & CLOSED != 0 {
            self.stopped_at(done)
        } else {
            done
        }
    }

    fn stopped_at(&self, done: u64) -> u64 {
        done & !CLOSED
    }

    /// Stops the manager's handlers: running ones are dropped, queued ones skipped. Returns
    /// how many jobs were handled before. Idempotent.
    pub(crate) fn stop(&self) -> u64 {
        let done = self.done.fetch_or(CLOSED, Ordering::AcqRel);
        self.cancel.cancel();
        self.stopped_at(done)
    }

    /// Whether [`stop`](Self::stop) was called.
    pub(crate) fn is_stopped(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves once `handed` jobs were handled.
    pub(crate) async fn handled(&self, handed: u64) {
        self.draining.store(true, Ordering::Release);
        loop {
            let notified = self.finished.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.done() >= handed {
                return;
            }
            notified.await;
        }
    }
}

/// A manager's side of the pool for one run (inside its [`Backlog`](crate::dispatch::Backlog)).
pub(crate) struct Pooled<U, E> {
    pub(crate) stream: EventStream<Job>,
    pub(crate) capacity: usize,
    pub(crate) wrap: Box<dyn Fn(Dispatch<U, E>) -> Job + Send + Sync>,
    pub(crate) slot: Arc<Slot>,
    /// The manager shuts down: nothing more is handed over.
    pub(crate) closed: bool,
}

impl<U, E> Drop for Pooled<U, E> {
    fn drop(&mut self) {
        // However the run ends (a dropped future included), its jobs must not outlive it.
        self.slot.stop();
    }
}

/// Catches a panic of the future it wraps.
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = Pin::new(&mut self.0);
        match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}
