//! Shard workers: the loop that feeds a shard's observer, and ways to run it.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::SpawnError;
use crate::inner::Inner;
use crate::observer::{AsyncObserver, Observer};
use crate::panic::{PanicPhase, catch_future};
use crate::sync::block_on;

/// The worker of shard `index` for an async observer: takes whatever is queued at each
/// wake-up and hands it to the observer one event at a time, awaiting each; shuts the observer
/// down once the shard is closed and drained.
async fn run_async<E, O>(inner: Arc<Inner<E>>, index: usize, mut observer: O)
where
    E: Send + 'static,
    O: AsyncObserver<E>,
{
    let Some(shard) = inner.shards.get(index) else {
        return;
    };
    let mut batch = Vec::new();
    let mut delivered = 0_u64;
    while poll_fn(|cx| shard.poll_take(cx, &mut batch)).await {
        for event in batch.drain(..) {
            // A panic is confined to this event: it is reported and the observer carries on.
            if let Err(payload) = catch_future(|| observer.handle(event)).await {
                inner.report_panic(index, PanicPhase::Handle, &payload);
            }
            delivered += 1;
            shard.progress(delivered);
        }
        shard.publish(delivered);
    }
    // The shard is closed and empty (see `Shard::poll_take`): nothing can be delivered after
    // this point, and this is the only call of the observer's shutdown because the observer
    // is owned by this future, which runs once.
    if let Err(payload) = catch_future(|| observer.shutdown()).await {
        inner.report_panic(index, PanicPhase::Shutdown, &payload);
    }
    shard.finish();
}

/// The worker of shard `index` for a synchronous observer: like [`run_async`], but a whole
/// batch is handled in one plain loop (one unwinding guard per batch rather than an awaited
/// future per event), which is most of the cost of a trivial observer.
async fn run_sync<E, O>(inner: Arc<Inner<E>>, index: usize, mut observer: O)
where
    E: Send + 'static,
    O: Observer<E>,
{
    let Some(shard) = inner.shards.get(index) else {
        return;
    };
    let mut batch = Vec::new();
    let mut delivered = 0_u64;
    while poll_fn(|cx| shard.poll_take(cx, &mut batch)).await {
        let mut events = batch.drain(..);
        // After a panic the loop resumes with the next event: `events` lives outside the
        // guarded closure, and the panicking event was already taken from it.
        while let Err(payload) = catch_unwind(AssertUnwindSafe(|| {
            for event in &mut events {
                observer.handle(event);
                delivered += 1;
                shard.progress(delivered);
            }
        })) {
            delivered += 1;
            shard.progress(delivered);
            inner.report_panic(index, PanicPhase::Handle, &payload);
        }
        drop(events);
        shard.publish(delivered);
    }
    // As in `run_async`: closed and drained, and the only shutdown call.
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| observer.shutdown())) {
        inner.report_panic(index, PanicPhase::Shutdown, &payload);
    }
    shard.finish();
}

/// The worker of one shard: a plain future to run on any executor (or on a thread with
/// [`ShardWorker::run_blocking`]). It completes after the stream is shut down and the shard is
/// drained and its observer shut down.
///
/// Dropping it before it completes (for example when an executor cancels its task) closes the
/// shard: its observer is dropped without its shutdown, the events still queued are counted in
/// [`ShardStats::lost`](crate::ShardStats::lost), sends to the shard fail with
/// [`SendFailure::Closed`](crate::SendFailure::Closed), and receipts waiting on it fail with
/// [`NotHandled`](crate::NotHandled).
pub struct ShardWorker {
    shard: usize,
    run: Pin<Box<dyn Future<Output = ()> + Send + 'static>>,
    /// Closes the shard if the worker is dropped before it finished (a no-op afterwards).
    abandon: Option<Box<dyn FnOnce() + Send + 'static>>,
    done: bool,
}

impl ShardWorker {
    /// A worker for an async observer.
    pub(crate) fn new_async<E, O>(inner: Arc<Inner<E>>, shard: usize, observer: O) -> Self
    where
        E: Send + 'static,
        O: AsyncObserver<E>,
    {
        let run = Box::pin(run_async(Arc::clone(&inner), shard, observer));
        Self::with_run(inner, shard, run)
    }

    /// A worker for a synchronous observer.
    pub(crate) fn new_sync<E, O>(inner: Arc<Inner<E>>, shard: usize, observer: O) -> Self
    where
        E: Send + 'static,
        O: Observer<E>,
    {
        let run = Box::pin(run_sync(Arc::clone(&inner), shard, observer));
        Self::with_run(inner, shard, run)
    }

    fn with_run<E>(
        inner: Arc<Inner<E>>,
        shard: usize,
        run: Pin<Box<dyn Future<Output = ()> + Send + 'static>>,
    ) -> Self
    where
        E: Send + 'static,
    {
        let for_abandon = inner;
        Self {
            shard,
            run,
            abandon: Some(Box::new(move || {
                if let Some(s) = for_abandon.shards.get(shard) {
                    s.abandon();
                }
            })),
            done: false,
        }
    }

    /// The shard this worker serves.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// Runs the worker on the current thread until it completes.
    pub fn run_blocking(self) {
        block_on(self);
    }
}

impl fmt::Debug for ShardWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardWorker")
            .field("shard", &self.shard)
            .field("done", &self.done)
            .finish()
    }
}

impl Future for ShardWorker {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.done {
            return Poll::Ready(());
        }
        let poll = self.run.as_mut().poll(cx);
        if poll.is_ready() {
            self.done = true;
        }
        poll
    }
}

impl Drop for ShardWorker {
    fn drop(&mut self) {
        if let Some(abandon) = self.abandon.take() {
            abandon();
        }
    }
}

/// The workers of a freshly built stream, one per shard. They must be run for events to flow:
/// [`Workers::spawn_with`] hands each to an executor, [`Workers::spawn_threads`] gives each a
/// thread. Dropping them unrun closes the stream's shards.
#[derive(Debug)]
pub struct Workers {
    workers: Vec<ShardWorker>,
}

impl Workers {
    pub(crate) fn new(workers: Vec<ShardWorker>) -> Self {
        Self { workers }
    }

    /// The number of workers (one per shard).
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether there are no workers.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Hands each worker to `spawn`, for example `|w| { tokio::spawn(w); }`.
    pub fn spawn_with(self, spawn: impl FnMut(ShardWorker)) {
        self.workers.into_iter().for_each(spawn);
    }

    /// Runs each worker on a thread of its own (named `sync-events-<shard>`).
    pub fn spawn_threads(self) -> Result<WorkerThreads, SpawnError> {
        let mut handles = Vec::with_capacity(self.workers.len());
        for worker in self.workers {
            let shard = worker.shard;
            let handle = std::thread::Builder::new()
                .name(format!("sync-events-{shard}"))
                .spawn(move || worker.run_blocking())
                .map_err(|source| SpawnError { shard, source })?;
            handles.push(handle);
        }
        Ok(WorkerThreads { handles })
    }
}

impl IntoIterator for Workers {
    type Item = ShardWorker;
    type IntoIter = std::vec::IntoIter<ShardWorker>;

    fn into_iter(self) -> Self::IntoIter {
        self.workers.into_iter()
    }
}

/// The threads started by [`Workers::spawn_threads`].
#[derive(Debug)]
pub struct WorkerThreads {
    handles: Vec<JoinHandle<()>>,
}

impl WorkerThreads {
    /// Waits for every worker thread to end (they end once the stream is shut down and
    /// drained). Observer panics are caught by the workers, so the threads end normally.
    pub fn join(self) {
        for handle in self.handles {
            // A worker thread cannot panic (observer panics are caught); if one somehow did,
            // its shard was closed by the worker's drop, which is all there is to do here.
            let _ = handle.join();
        }
    }
}
