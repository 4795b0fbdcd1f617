//! The event stream: configuration, sending, receipts, shutdown.

use std::fmt;
use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::error::{ConfigError, NotHandled, SendError, SendFailure};
use crate::inner::{Inner, Overflow, PanicHook};
use crate::observer::{AsyncObserverFactory, ObserverFactory};
use crate::panic::ObserverPanic;
use crate::receipt::Receipt;
use crate::route::shard_for_event;
use crate::shard::{Shard, Target};
use crate::stats::Stats;
use crate::sync::{Ordering, block_on};
use crate::worker::{ShardWorker, Workers};
use crate::{Event, ShardStats};

/// Configures and builds an [`EventStream`].
#[derive(Clone)]
pub struct Builder {
    shards: usize,
    capacity: usize,
    overflow: Overflow,
    on_panic: Option<PanicHook>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("shards", &self.shards)
            .field("capacity", &self.capacity)
            .field("overflow", &self.overflow)
            .field("on_panic", &self.on_panic.is_some())
            .finish()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            shards: std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
            capacity: Self::DEFAULT_CAPACITY,
            overflow: Overflow::Block,
            on_panic: None,
        }
    }
}

impl Builder {
    /// The default queue capacity per shard.
    pub const DEFAULT_CAPACITY: usize = 1024;

    /// A builder with the defaults: one shard per available core, queues of
    /// [`Builder::DEFAULT_CAPACITY`], [`Overflow::Block`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of shards, each with one observer and one worker (default: the available
    /// parallelism).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
    }

    /// How many events each shard's queue holds before senders meet the [`Overflow`] policy
    /// (default [`Builder::DEFAULT_CAPACITY`]). The worker takes the whole queue at each
    /// wake-up, so up to twice this many events per shard can be in memory.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// What a send does when a queue is full (default [`Overflow::Block`]).
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// Calls `hook` with every caught observer panic (from the worker that caught it), for
    /// logging; panics are also counted in [`ShardStats::panics`].
    pub fn on_panic(mut self, hook: impl Fn(&ObserverPanic) + Send + Sync + 'static) -> Self {
        self.on_panic = Some(Arc::new(hook));
        self
    }

    /// Builds a stream whose shards run synchronous observers made by `factory`.
    ///
    /// Returns the stream (a cloneable handle for senders) and the workers, which must be run:
    /// [`Workers::spawn_threads`] or, on an executor, [`Workers::spawn_with`].
    pub fn build<E, F>(self, mut factory: F) -> Result<(EventStream<E>, Workers), ConfigError>
    where
        E: Event,
        F: ObserverFactory<E>,
    {
        let inner = self.inner()?;
        let workers = (0..inner.shards.len())
            .map(|shard| ShardWorker::new_sync(Arc::clone(&inner), shard, factory.make(shard)))
            .collect();
        Ok((EventStream { inner }, Workers::new(workers)))
    }

    /// Builds a stream whose shards run asynchronous observers made by `factory`.
    ///
    /// Returns the stream (a cloneable handle for senders) and the workers, which must be run:
    /// [`Workers::spawn_with`] on any executor, or [`Workers::spawn_threads`].
    pub fn build_async<E, F>(self, mut factory: F) -> Result<(EventStream<E>, Workers), ConfigError>
    where
        E: Event,
        F: AsyncObserverFactory<E>,
    {
        let inner = self.inner()?;
        let workers = (0..inner.shards.len())
            .map(|shard| ShardWorker::new_async(Arc::clone(&inner), shard, factory.make(shard)))
            .collect();
        Ok((EventStream { inner }, Workers::new(workers)))
    }

    /// The shared state, once the settings are checked.
    fn inner<E>(self) -> Result<Arc<Inner<E>>, ConfigError> {
        if self.shards == 0 {
            return Err(ConfigError::ZeroShards);
        }
        if self.capacity == 0 {
            return Err(ConfigError::ZeroCapacity);
        }
        Ok(Arc::new(Inner::new(
            (0..self.shards).map(|_| Shard::new()).collect(),
            self.capacity,
            self.overflow,
            self.on_panic,
        )))
    }
}

/// A sharded, per-key ordered event stream: the sending side.
///
/// Each event goes to the shard its [`Event::stream_key`] hashes to; a shard hands its events
/// to its one observer in the order they were accepted, so events with the same key arrive in
/// the order they were sent and always at the same observer. Handles are cheap to clone and
/// can be used from any number of threads and tasks; when the last handle is dropped the stream
/// shuts down.
///
/// Blocking calls ([`send`](Self::send), [`send_batch`](Self::send_batch),
/// [`wait_handled`](Self::wait_handled), [`wait_drained`](Self::wait_drained)) park the
/// thread; do not call them from async code, which has the `async` counterparts. Do not send
/// with [`Overflow::Block`] from inside an observer to its own shard: the queue it waits on is
/// the one it is supposed to drain.
pub struct EventStream<E> {
    inner: Arc<Inner<E>>,
}

impl<E> fmt::Debug for EventStream<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("shards", &self.inner.shards.len())
            .field("capacity", &self.inner.capacity)
            .field("overflow", &self.inner.overflow)
            .field("closed", &self.is_shut_down())
            .finish()
    }
}

impl<E> Clone for EventStream<E> {
    fn clone(&self) -> Self {
        self.inner.handles.fetch_add(1, Ordering::Relaxed);
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<E> Drop for EventStream<E> {
    fn drop(&mut self) {
        // The last sender is gone: nobody can send any more, so let the workers drain and
        // stop instead of waiting forever.
        if self.inner.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shutdown();
        }
    }
}

impl<E> EventStream<E> {
    /// Stops accepting events: every send from now on fails with [`SendFailure::Closed`]
    /// (blocked senders wake up and fail too). The workers deliver what was accepted, then call
    /// their observers' shutdown once each and finish; wait for that with
    /// [`drained`](Self::drained) or [`wait_drained`](Self::wait_drained).
    ///
    /// Idempotent: returns `true` for the call that shut the stream down, `false` after.
    pub fn shutdown(&self) -> bool {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return false;
        }
        for shard in &*self.inner.shards {
            shard.close();
        }
        true
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }
}

impl<E: Event> EventStream<E> {
    /// A stream with no shards and no workers: sends succeed and the events are dropped at
    /// once (their receipts are handled immediately). It still follows the shutdown rules: a
    /// send after [`shutdown`](Self::shutdown) fails with [`SendFailure::Closed`].
    pub fn noop() -> Self {
        Self {
            inner: Arc::new(Inner::new(Box::new([]), 1, Overflow::Block, None)),
        }
    }

    /// The number of shards (0 for the no-op stream).
    pub fn shards(&self) -> usize {
        self.inner.shards.len()
    }

    /// The shard `event` is routed to (see [`shard_for_key`](crate::shard_for_key)).
    pub fn shard_of(&self, event: &E) -> usize {
        shard_for_event(event, self.inner.shards.len())
    }

    /// Sends one event, waiting for room if its queue is full and the policy is
    /// [`Overflow::Block`].
    pub fn send(&self, event: E) -> Result<Receipt, SendError<E>> {
        match self.send_fast(event) {
            Ok(done) => done,
            Err((shard, event)) => block_on(self.send_parts(single(shard, event))),
        }
    }

    /// Sends one event from async code; see [`send`](Self::send).
    pub async fn send_async(&self, event: E) -> Result<Receipt, SendError<E>> {
        match self.send_fast(event) {
            Ok(done) => done,
            Err((shard, event)) => self.send_parts(single(shard, event)).await,
        }
    }

    /// Sends one event if its queue has room, never waiting whatever the policy; a full queue
    /// hands it back with [`SendFailure::Full`] (counted in [`ShardStats::rejected`]).
    pub fn try_send(&self, event: E) -> Result<Receipt, SendError<E>> {
        let Some(shard) = self.route_or_discard(&event) else {
            return self.discard(vec![event]);
        };
        match self.inner.shards[shard].try_push_one(event, self.inner.capacity) {
            Ok(position) => Ok(accepted_one(shard, position)),
            Err((event, closed)) => Err(self.refuse(shard, event, closed)),
        }
    }

    /// Sends as much of a batch as there is room for, never waiting whatever the policy: the
    /// events are grouped by shard and each shard takes, under one lock, the longest prefix
    /// of its group that fits, so the events of one key keep their order. What was not taken
    /// comes back in [`TrySent::unsent`] (grouped by shard, each group in order) with the
    /// first shard that was full; counted in [`ShardStats::rejected`].
    ///
    /// With [`room`](Self::room), it lets a sender that must never block hand over large
    /// batches at the cost of a few lock round-trips, and wait for room next to its other
    /// work.
    pub fn try_send_batch(&self, events: impl IntoIterator<Item = E>) -> TrySent<E> {
        let parts = self.partition(events);
        let mut sent = TrySent {
            receipt: Receipt::default(),
            unsent: Vec::new(),
            full: None,
            closed: false,
        };
        if self.inner.shards.is_empty() {
            let events: Vec<E> = parts.into_iter().flatten().collect();
            match self.discard(events) {
                Ok(receipt) => sent.receipt = receipt,
                Err(error) => {
                    sent.closed = true;
                    sent.unsent = error.unsent;
                }
            }
            return sent;
        }
        for (index, mut part) in parts.into_iter().enumerate() {
            if part.is_empty() {
                continue;
            }
            let shard = &self.inner.shards[index];
            let pushed = shard.push(&mut part, self.inner.capacity, None);
            if pushed.closed {
                sent.closed = true;
            } else if let Some(position) = pushed.position {
                sent.receipt.mark(index, position, pushed.accepted);
            }
            if !part.is_empty() {
                if !pushed.closed {
                    shard
                        .rejected
                        .fetch_add(part.len() as u64, Ordering::Relaxed);
                    sent.full.get_or_insert(index);
                }
                sent.unsent.append(&mut part);
            }
        }
        sent
    }

    /// Resolves once `shard`'s queue has room for one more event, or the stream is shut down
    /// (a shard that does not exist, as in the no-op stream, has room at once). With
    /// [`try_send`](Self::try_send) it lets a sender that must never block on the stream wait
    /// for room next to its other work (in a `select!`), instead of inside a send. Another
    /// sender may take the room first: the next `try_send` can still find the queue full.
    ///
    /// Cancel-safe: dropping the future forgets its registration.
    pub fn room(&self, shard: usize) -> Room<'_, E> {
        Room {
            inner: &self.inner,
            shard,
            id: None,
        }
    }

    /// Sends a batch: events are grouped by shard and each shard's group is appended under
    /// one lock, so a batch costs a few lock round-trips however many events it holds. Events
    /// of one key keep their order. With [`Overflow::Block`] the call waits until every event
    /// is accepted.
    pub fn send_batch(&self, events: impl IntoIterator<Item = E>) -> Result<Receipt, SendError<E>> {
        let parts = self.partition(events);
        block_on(self.send_parts(parts))
    }

    /// Sends a batch from async code; see [`send_batch`](Self::send_batch).
    pub fn send_batch_async(
        &self,
        events: impl IntoIterator<Item = E>,
    ) -> impl Future<Output = Result<Receipt, SendError<E>>> + Send + '_ {
        let parts = self.partition(events);
        self.send_parts(parts)
    }

    /// Resolves when every worker has finished: all accepted events delivered and every
    /// observer's shutdown returned. Only resolves after [`shutdown`](Self::shutdown) (or once
    /// the workers were dropped).
    pub async fn drained(&self) {
        for shard in 0..self.inner.shards.len() {
            // `Finished` is always reached once the worker ends, however it ends.
            let _finished = WaitFor::new(&self.inner, shard, Target::Finished).await;
        }
    }

    /// Blocks until every worker has finished; see [`drained`](Self::drained).
    pub fn wait_drained(&self) {
        block_on(self.drained());
    }

    /// Shuts the stream down and blocks until it has drained.
    pub fn shutdown_and_wait(&self) {
        self.shutdown();
        self.wait_drained();
    }

    /// Resolves when the events of `receipt` have been handled (their observers returned), or
    /// fails if a shard's worker was dropped before handling them.
    pub async fn handled(&self, receipt: &Receipt) -> Result<(), NotHandled> {
        for mark in receipt.marks() {
            let reached =
                WaitFor::new(&self.inner, mark.shard, Target::Delivered(mark.position)).await;
            if !reached {
                return Err(NotHandled { shard: mark.shard });
            }
        }
        Ok(())
    }

    /// Blocks until the events of `receipt` have been handled; see [`handled`](Self::handled).
    pub fn wait_handled(&self, receipt: &Receipt) -> Result<(), NotHandled> {
        block_on(self.handled(receipt))
    }

    /// Whether the events of `receipt` have all been handled.
    pub fn is_handled(&self, receipt: &Receipt) -> bool {
        receipt.marks().iter().all(|mark| {
            self.inner
                .shards
                .get(mark.shard)
                .is_some_and(|s| s.delivered.load(Ordering::Acquire) >= mark.position)
        })
    }

    /// The counters of every shard.
    pub fn stats(&self) -> Stats {
        Stats {
            shards: self
                .inner
                .shards
                .iter()
                .map(Shard::snapshot)
                .collect::<Vec<ShardStats>>(),
        }
    }

    /// The event's shard, or `None` for the no-op stream.
    fn route_or_discard(&self, event: &E) -> Option<usize> {
        let n = self.inner.shards.len();
        (n > 0).then(|| shard_for_event(event, n))
    }

    /// The no-op stream's send: accept and drop, unless shut down.
    fn discard(&self, events: Vec<E>) -> Result<Receipt, SendError<E>> {
        if self.is_shut_down() {
            return Err(SendError {
                failure: SendFailure::Closed,
                unsent: events,
                receipt: Receipt::default(),
            });
        }
        let mut receipt = Receipt::default();
        receipt.add_accepted(events.len());
        Ok(receipt)
    }

    /// Counts a refused event and builds the error that hands it back.
    fn refuse(&self, shard: usize, event: E, closed: bool) -> SendError<E> {
        let failure = if closed {
            SendFailure::Closed
        } else {
            self.inner.shards[shard]
                .rejected
                .fetch_add(1, Ordering::Relaxed);
            SendFailure::Full
        };
        SendError {
            failure,
            unsent: vec![event],
            receipt: Receipt::default(),
        }
    }

    /// One event without waiting or allocating, when that settles it; otherwise hands the
    /// event back with its shard for the general path.
    #[allow(clippy::type_complexity)]
    fn send_fast(&self, event: E) -> Result<Result<Receipt, SendError<E>>, (usize, E)> {
        let Some(shard) = self.route_or_discard(&event) else {
            return Ok(self.discard(vec![event]));
        };
        match self.inner.shards[shard].try_push_one(event, self.inner.capacity) {
            Ok(position) => Ok(Ok(accepted_one(shard, position))),
            Err((event, true)) => Ok(Err(self.refuse(shard, event, true))),
            Err((event, false)) => match self.inner.overflow {
                Overflow::Block => Err((shard, event)),
                Overflow::DropNewest => {
                    self.inner.shards[shard]
                        .dropped
                        .fetch_add(1, Ordering::Relaxed);
                    drop(event);
                    let mut receipt = Receipt::default();
                    receipt.add_dropped(1);
                    Ok(Ok(receipt))
                }
                Overflow::FailFast => Ok(Err(self.refuse(shard, event, false))),
            },
        }
    }

    /// Groups `events` by shard, keeping their order: `parts[s]` holds shard `s`'s events.
    /// For the no-op stream, one part holds them all.
    fn partition(&self, events: impl IntoIterator<Item = E>) -> Vec<Vec<E>> {
        let n = self.inner.shards.len();
        if n <= 1 {
            return vec![events.into_iter().collect()];
        }
        let events = events.into_iter();
        // Reserve twice a fair share on first use, so a typical batch allocates once per shard
        // it touches; a skewed one grows as usual.
        let share = events.size_hint().0.div_ceil(n).saturating_mul(2).max(4);
        let mut parts: Vec<Vec<E>> = (0..n).map(|_| Vec::new()).collect();
        for event in events {
            let part = &mut parts[shard_for_event(&event, n)];
            if part.capacity() == 0 {
                part.reserve(share);
            }
            part.push(event);
        }
        parts
    }

    fn send_parts(&self, parts: Vec<Vec<E>>) -> SendParts<'_, E> {
        SendParts {
            inner: &self.inner,
            parts,
            receipt: Receipt::default(),
            unsent: Vec::new(),
            failure: None,
            waiting: None,
        }
    }
}

/// `parts` for one event on `shard`.
fn single<E>(shard: usize, event: E) -> Vec<Vec<E>> {
    let mut parts: Vec<Vec<E>> = (0..shard).map(|_| Vec::new()).collect();
    parts.push(vec![event]);
    parts
}

fn accepted_one(shard: usize, position: u64) -> Receipt {
    let mut receipt = Receipt::default();
    receipt.mark(shard, position, 1);
    receipt
}

/// The general send: pushes each shard's part, waiting for room under [`Overflow::Block`].
struct SendParts<'a, E> {
    inner: &'a Inner<E>,
    /// `parts[s]`: shard `s`'s events not yet accepted (for the no-op stream, all events).
    parts: Vec<Vec<E>>,
    receipt: Receipt,
    unsent: Vec<E>,
    failure: Option<SendFailure>,
    /// The shard and id this future's waker is registered under, while it waits for room.
    waiting: Option<(usize, u64)>,
}

// The future never pins its fields (it only moves events between vectors), so it is `Unpin`
// whatever `E` is.
impl<E> Unpin for SendParts<'_, E> {}

impl<E> Future for SendParts<'_, E> {
    type Output = Result<Receipt, SendError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let inner = this.inner;
        if inner.shards.is_empty() {
            let events: Vec<E> = this.parts.drain(..).flatten().collect();
            let mut receipt = Receipt::default();
            if inner.closed.load(Ordering::Acquire) {
                return Poll::Ready(Err(SendError {
                    failure: SendFailure::Closed,
                    unsent: events,
                    receipt,
                }));
            }
            receipt.add_accepted(events.len());
            return Poll::Ready(Ok(receipt));
        }
        if let Some((shard, id)) = this.waiting.take() {
            inner.shards[shard].unregister_sender(id);
        }
        let mut blocked = false;
        for (index, part) in this.parts.iter_mut().enumerate() {
            if part.is_empty() {
                continue;
            }
            let shard = &inner.shards[index];
            // Register on the first full shard only: when woken, the whole send is retried.
            let register = (inner.overflow == Overflow::Block && !blocked).then_some(cx.waker());
            let pushed = shard.push(part, inner.capacity, register);
            if pushed.closed {
                this.failure = Some(SendFailure::Closed);
                this.unsent.append(part);
                continue;
            }
            if let Some(position) = pushed.position {
                this.receipt.mark(index, position, pushed.accepted);
            }
            if part.is_empty() {
                continue;
            }
            match inner.overflow {
                Overflow::Block => {
                    if let Some(id) = pushed.registered {
                        this.waiting = Some((index, id));
                        blocked = true;
                    }
                }
                Overflow::DropNewest => {
                    shard
                        .dropped
                        .fetch_add(part.len() as u64, Ordering::Relaxed);
                    this.receipt.add_dropped(part.len());
                    part.clear();
                }
                Overflow::FailFast => {
                    shard
                        .rejected
                        .fetch_add(part.len() as u64, Ordering::Relaxed);
                    this.failure.get_or_insert(SendFailure::Full);
                    this.unsent.append(part);
                }
            }
        }
        if blocked {
            return Poll::Pending;
        }
        let receipt = std::mem::take(&mut this.receipt);
        Poll::Ready(match this.failure.take() {
            None => Ok(receipt),
            Some(failure) => Err(SendError {
                failure,
                unsent: std::mem::take(&mut this.unsent),
                receipt,
            }),
        })
    }
}

impl<E> Drop for SendParts<'_, E> {
    fn drop(&mut self) {
        if let Some((shard, id)) = self.waiting.take() {
            self.inner.shards[shard].unregister_sender(id);
        }
    }
}

/// Waits for one shard to reach a [`Target`]; `true` if it did, `false` if it finished short.
struct WaitFor<'a, E> {
    inner: &'a Inner<E>,
    shard: usize,
    target: Target,
    id: Option<u64>,
}

impl<'a, E> WaitFor<'a, E> {
    fn new(inner: &'a Inner<E>, shard: usize, target: Target) -> Self {
        Self {
            inner,
            shard,
            target,
            id: None,
        }
    }
}

impl<E> Future for WaitFor<'_, E> {
    type Output = bool;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let this = self.get_mut();
        match this.inner.shards.get(this.shard) {
            Some(shard) => shard.poll_watch(cx, this.target, &mut this.id),
            // Receipts only name existing shards; a foreign receipt has nothing to wait for.
            None => Poll::Ready(false),
        }
    }
}

impl<E> Drop for WaitFor<'_, E> {
    fn drop(&mut self) {
        if let Some(shard) = self.inner.shards.get(self.shard) {
            shard.unwatch(&mut self.id);
        }
    }
}

/// The future of [`EventStream::room`]: resolves once a shard has room for one event (or is
/// closed).
#[must_use = "futures do nothing unless polled"]
pub struct Room<'a, E> {
    inner: &'a Inner<E>,
    shard: usize,
    /// The id this future's waker is registered under among the shard's blocked senders.
    id: Option<u64>,
}

impl<E> fmt::Debug for Room<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Room")
            .field("shard", &self.shard)
            .field("registered", &self.id.is_some())
            .finish()
    }
}

impl<E> Future for Room<'_, E> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        match this.inner.shards.get(this.shard) {
            Some(shard) => shard.poll_room(cx, this.inner.capacity, &mut this.id),
            None => Poll::Ready(()),
        }
    }
}

impl<E> Drop for Room<'_, E> {
    fn drop(&mut self) {
        if let (Some(id), Some(shard)) = (self.id.take(), self.inner.shards.get(self.shard)) {
            shard.unregister_sender(id);
        }
    }
}

/// What [`EventStream::try_send_batch`] did: what it accepted, and what it hands back.
#[derive(Debug)]
#[must_use]
pub struct TrySent<E> {
    /// What was accepted; handled when [`EventStream::is_handled`] says so.
    pub receipt: Receipt,
    /// The events not accepted, grouped by shard, each group in its order.
    pub unsent: Vec<E>,
    /// The first shard that was full, if one was.
    pub full: Option<usize>,
    /// True when the stream is shut down: nothing more will be accepted.
    pub closed: bool,
}
