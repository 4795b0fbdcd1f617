//! The dispatch side of the manager: what goes through `sync-events` ([`Dispatch`]), the
//! observer that calls the application's handler ([`Dispatcher`]) and the task-local that marks
//! those calls ([`HANDLING`]), and the [`Backlog`]: the hand-over of delivered batches to the
//! shards, in order and without waiting, and their acknowledgement once handled.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::task::Poll;

use sync_core::{Batch, BatchId, Engine, Entities, Update};
use sync_events::{AsyncObserver, Event, EventStream, NotHandled, Receipt, TrySent};

use sync_core::Notice;

use crate::config::ManagerConfig;
use crate::handler::Handler;
use crate::lease::{Held, LeaseLoss};
use crate::peer::{Peer, PeerKey};
use crate::pool::Pooled;
use crate::stats::{Counters, Timer};

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

tokio::task_local! {
    /// Set for each private dispatch worker's task, and around each job of a
    /// [`DispatchPool`](crate::DispatchPool): the [`Shared::id`](crate::handle::Shared::id) of
    /// the manager and the shard whose handler calls the task makes. Lets `caught_up` tell a
    /// call from inside a handler, which must not wait for its own update to be handled.
    pub(crate) static HANDLING: (u64, usize);
}

/// Numbers the managers of the process, for [`HANDLING`].
pub(crate) static MANAGER_IDS: AtomicU64 = AtomicU64::new(0);

/// What goes through the dispatch: an update with its batch's entities, or a notice.
pub(crate) enum Dispatch<U, E> {
    Update {
        key: Option<PeerKey>,
        update: U,
        entities: Arc<[E]>,
    },
    Notice(Notice),
}

impl<U: Send + 'static, E: Send + Sync + 'static> Event for Dispatch<U, E> {
    type Key = PeerKey;

    fn stream_key(&self) -> Option<PeerKey> {
        match self {
            Self::Update { key, .. } => *key,
            // A channel's notice is handled in order with that channel's updates.
            Self::Notice(notice) => notice.channel_id().map(PeerKey::Channel),
        }
    }
}

/// One shard's observer: calls the shared handler and counts its errors.
pub(crate) struct Dispatcher<H> {
    pub(crate) handler: Arc<H>,
    pub(crate) counters: Arc<Counters>,
    /// The lease the manager runs under: checked before every handler call.
    pub(crate) lease: Option<Arc<Held>>,
}

impl<U, E, H> AsyncObserver<Dispatch<U, E>> for Dispatcher<H>
where
    U: Send + 'static,
    E: Send + Sync + 'static,
    H: Handler<U, E>,
{
    async fn handle(&mut self, event: Dispatch<U, E>) {
        handle_event(&*self.handler, &self.counters, self.lease.as_deref(), event).await;
    }
}

/// Hands one event to the handler, counting its error: the private dispatch's observers and
/// the pool's jobs alike.
pub(crate) async fn handle_event<U, E, H>(
    handler: &H,
    counters: &Counters,
    lease: Option<&Held>,
    event: Dispatch<U, E>,
) where
    H: Handler<U, E>,
{
    if let Some(held) = lease
        && !held.is_fresh()
    {
        // Invariant (see `Held::is_fresh`): a handler is never called once the lease may
        // belong to someone else. The event is neither handled nor acknowledged: the run
        // stops (aborting this wait) and the account's next owner delivers it.
        held.lose(LeaseLoss::Expired {
            last_error: "the lease was not renewed within its ttl (the process stalled)".into(),
        });
        std::future::pending::<()>().await;
    }
    let timer = Timer::start();
    match event {
        Dispatch::Update {
            update, entities, ..
        } => {
            if let Err(error) = handler.handle(update, entities).await {
                counters.handler_errors.incr();
                tracing::warn!(%error, "update handler failed; the update counts as handled");
            }
        }
        Dispatch::Notice(notice) => handler.notice(notice).await,
    }
    counters.handled(timer);
}

/// Where a manager's events are handled: its own dispatch, or a [`DispatchPool`](crate::DispatchPool)
/// shared with other managers.
pub(crate) enum Sink<U, E> {
    /// The manager's own shards and workers.
    Private(EventStream<Dispatch<U, E>>),
    /// A shared pool's shards, the events wrapped in jobs.
    Pooled(Pooled<U, E>),
}

impl<U, E> Sink<U, E>
where
    U: Send + 'static,
    E: Send + Sync + 'static,
{
    /// Past how many events in the backlog the manager holds back: the dispatch's own room.
    pub(crate) fn bound(&self, config: &ManagerConfig) -> usize {
        match self {
            Self::Private(_) => config.shards.saturating_mul(config.shard_capacity),
            Self::Pooled(pooled) => pooled.stream.shards().saturating_mul(pooled.capacity),
        }
        .max(1)
    }

    /// Offers `events` to the dispatch without waiting; what is not taken comes back, in order
    /// per shard.
    fn try_send_batch(
        &mut self,
        events: impl IntoIterator<Item = Dispatch<U, E>>,
    ) -> TrySent<Dispatch<U, E>> {
        match self {
            Self::Private(stream) => stream.try_send_batch(events),
            Self::Pooled(pooled) => {
                if pooled.closed || pooled.slot.is_stopped() {
                    return TrySent {
                        receipt: Receipt::default(),
                        unsent: events.into_iter().collect(),
                        full: None,
                        closed: true,
                    };
                }
                let sent = pooled
                    .stream
                    .try_send_batch(events.into_iter().map(&pooled.wrap));
                let unsent = sent
                    .unsent
                    .into_iter()
                    .filter_map(|job| {
                        let event = job.into_event();
                        if event.is_none() {
                            tracing::error!("a pooled job came back as another type; dropped");
                        }
                        event
                    })
                    .collect();
                TrySent {
                    receipt: sent.receipt,
                    unsent,
                    full: sent.full,
                    closed: sent.closed,
                }
            }
        }
    }

    /// Resolves once `shard` has room.
    fn room(&self, shard: usize) -> BoxFuture<()> {
        match self {
            Self::Private(stream) => {
                let stream = stream.clone();
                Box::pin(async move { stream.room(shard).await })
            }
            Self::Pooled(pooled) => {
                let stream = pooled.stream.clone();
                Box::pin(async move { stream.room(shard).await })
            }
        }
    }

    /// Whether the events of `receipt` were handled.
    fn is_handled(&self, receipt: &Receipt) -> bool {
        match self {
            Self::Private(stream) => stream.is_handled(receipt),
            Self::Pooled(pooled) => pooled.stream.is_handled(receipt),
        }
    }

    /// Resolves once the events of `receipt` were handled, or cannot be.
    fn handled(&self, receipt: Receipt) -> BoxFuture<Result<(), NotHandled>> {
        match self {
            Self::Private(stream) => {
                let stream = stream.clone();
                Box::pin(async move { stream.handled(&receipt).await })
            }
            Self::Pooled(pooled) => {
                let stream = pooled.stream.clone();
                Box::pin(async move { stream.handled(&receipt).await })
            }
        }
    }
}

/// The events of one delivered batch (or one notice) not yet all accepted by the dispatch.
struct Outgoing<U, E> {
    /// The batch to acknowledge once all its events are handled; `None` for a notice.
    batch: Option<BatchId>,
    /// The events still to hand over, in order.
    events: VecDeque<Dispatch<U, E>>,
    /// What the dispatch accepted of them so far.
    receipt: Receipt,
}

/// Delivered batches and notices on their way to the handlers, and the dispatched batches
/// waiting to be acknowledged.
///
/// The manager never waits for the dispatch: the backlog hands events over with `try_send`,
/// in the order delivered, stops at the first that does not fit and retries when that shard
/// has room. A batch is acknowledged to the engine once every update in it was handled, in
/// dispatch order, with one wake-up armed for the oldest.
pub(crate) struct Backlog<U, E> {
    /// The dispatch: the manager's own, or a shared pool.
    sink: Sink<U, E>,
    counters: Arc<Counters>,
    /// Delivered batches and notices whose events the dispatch has not all accepted yet,
    /// oldest first. Handed over with `try_send`, in the order delivered, up to the first
    /// event that does not fit; retried when that shard has room (`room`).
    queue: VecDeque<Outgoing<U, E>>,
    /// Events in `queue`.
    len: usize,
    /// Events handed over so far: how the manager tells a slow backlog from a stuck one.
    handed: u64,
    /// Past this many events in the backlog (`shards × shard_capacity`), pushes wait in the
    /// intake (dropped, and recovered by difference, only if it fills) and requests are held
    /// back, so memory stays bounded while a handler blocks.
    bound: usize,
    /// The shard the backlog's front event waits for, while it does.
    blocked: Option<usize>,
    /// Resolves once `blocked` has room.
    room: Option<BoxFuture<()>>,
    /// Dispatched batches not yet acknowledged, oldest first, with their receipts.
    dispatched: VecDeque<(BatchId, Receipt)>,
    /// Resolves once the oldest dispatched batch (the one named) was handled, or cannot be:
    /// the only wake-up the acknowledgements need, however many batches are in flight.
    waiting: Option<(BatchId, BoxFuture<Result<(), NotHandled>>)>,
}

/// What woke a [`Backlog`] up: see [`Backlog::wake`].
pub(crate) enum Wake {
    /// The oldest dispatched batch was handled, or cannot be.
    Handled(BatchId, Result<(), NotHandled>),
    /// The blocked shard has room.
    Room,
}

impl<U, E> Backlog<U, E>
where
    U: Update + Peer + Send + 'static,
    E: Entities + Send + Sync + 'static,
{
    /// An empty backlog over `sink`, past its bound beyond `bound` events.
    pub(crate) fn new(sink: Sink<U, E>, counters: Arc<Counters>, bound: usize) -> Self {
        Self {
            sink,
            counters,
            queue: VecDeque::new(),
            len: 0,
            handed: 0,
            bound,
            blocked: None,
            room: None,
            dispatched: VecDeque::new(),
            waiting: None,
        }
    }

    /// At shutdown, once the backlog was handed over: the dispatch takes nothing more. A
    /// private dispatch shuts down (its workers handle what they accepted, then end); a pool
    /// goes on for the other managers.
    pub(crate) fn close(&mut self) {
        match &mut self.sink {
            Sink::Private(stream) => {
                stream.shutdown();
            }
            Sink::Pooled(pooled) => pooled.closed = true,
        }
    }

    /// Resolves once everything handed over was handled: a private dispatch's workers have
    /// ended; this manager's jobs in a pool were all handled. Only after [`close`](Self::close).
    /// The future owns what it waits on, so the backlog is not borrowed across the wait.
    pub(crate) fn drained(&self) -> BoxFuture<()> {
        match &self.sink {
            Sink::Private(stream) => {
                let stream = stream.clone();
                Box::pin(async move { stream.drained().await })
            }
            Sink::Pooled(pooled) => {
                let slot = Arc::clone(&pooled.slot);
                let handed = self.handed;
                Box::pin(async move { slot.handled(handed).await })
            }
        }
    }

    /// The shutdown grace ran out: this manager's handlers still busy in a pool are dropped and
    /// its queued jobs skipped (a private dispatch's workers are aborted by the manager), and
    /// nothing more is acknowledged (the pool's receipts count skipped jobs too). Acknowledge
    /// what was handled first.
    pub(crate) fn stop(&mut self) {
        if let Sink::Pooled(pooled) = &mut self.sink {
            pooled.closed = true;
            pooled.slot.stop();
        }
    }

    /// Whether the backlog is past its bound: pushes wait in the intake and requests are held
    /// back.
    pub(crate) fn backlogged(&self) -> bool {
        self.len > self.bound
    }

    /// How many events were handed to the dispatch so far.
    pub(crate) fn handed(&self) -> u64 {
        self.handed
    }

    /// Whether everything delivered was handed to the dispatch.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether every dispatched batch was acknowledged.
    pub(crate) fn is_settled(&self) -> bool {
        self.dispatched.is_empty()
    }

    /// The shard the backlog's front event waits for, while it does.
    pub(crate) fn blocked(&self) -> Option<usize> {
        self.blocked
    }

    /// Whether a wake-up is armed: for the oldest dispatched batch, or for room on the
    /// blocked shard.
    pub(crate) fn is_armed(&self) -> bool {
        self.waiting.is_some() || self.room.is_some()
    }

    /// Events never handled: those still in the backlog and those the dispatch lost (its
    /// workers were stopped before handling them).
    pub(crate) fn abandoned(&self) -> u64 {
        let lost = match &self.sink {
            Sink::Private(stream) => stream.stats().shards.iter().map(|shard| shard.lost).sum(),
            // Handed over but not handled (before the stop, once stopped).
            Sink::Pooled(pooled) => self.handed.saturating_sub(pooled.slot.done()),
        };
        self.len as u64 + lost
    }

    /// Waits for an armed wake-up: the oldest dispatched batch handled first, then room on
    /// the blocked shard. Pending forever when none is armed (callers only poll it when
    /// [`is_armed`](Self::is_armed)). A plain poll of the two boxed waits: the main loop
    /// holds this future beside its others on every turn, so it holds no more than the two
    /// references.
    pub(crate) fn wake(&mut self) -> impl Future<Output = Wake> + '_ {
        let Self { waiting, room, .. } = self;
        std::future::poll_fn(move |cx| {
            if let Some((batch, handled)) = waiting
                && let Poll::Ready(handled) = handled.as_mut().poll(cx)
            {
                return Poll::Ready(Wake::Handled(*batch, handled));
            }
            if let Some(room) = room
                && room.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Wake::Room);
            }
            Poll::Pending
        })
    }

    /// Acts on what [`wake`](Self::wake) returned: acknowledges what was handled, or hands the
    /// backlog over again.
    pub(crate) fn woke(&mut self, engine: &mut Engine<U, E>, wake: Wake) {
        match wake {
            Wake::Handled(batch, handled) => {
                self.waiting = None;
                self.settle(engine, Some((batch, handled)));
            }
            Wake::Room => self.unblock(),
        }
    }

    /// Hands a notice to the dispatch, in order with the updates delivered before it.
    pub(crate) fn notify(&mut self, notice: Notice) {
        self.enqueue(None, std::iter::once(Dispatch::Notice(notice)));
    }

    /// Hands a batch to the dispatch and arranges its acknowledgement once handled.
    ///
    /// Invariant (commits trail handled updates): a batch is acknowledged only when its
    /// receipt says every one of its updates was handled, and the engine commits nothing past
    /// an unacknowledged batch. A batch enters `dispatched` (where it can be acknowledged)
    /// only once the dispatch accepted all its events, so its receipt covers each of them.
    pub(crate) fn deliver(&mut self, batch: Batch<U, E>) {
        let Batch {
            id,
            updates,
            entities,
        } = batch;
        let entities: Arc<[E]> = entities.into();
        let events = updates.into_iter().map(|update| Dispatch::Update {
            key: update.peer(),
            update,
            entities: Arc::clone(&entities),
        });
        self.enqueue(Some(id), events);
    }

    /// Hands over what fits and keeps the rest in the backlog, behind what waits there already.
    /// With nothing waiting (the usual case) the events go straight to the dispatch, without
    /// passing through the backlog's queue.
    fn enqueue(
        &mut self,
        batch: Option<BatchId>,
        events: impl ExactSizeIterator<Item = Dispatch<U, E>>,
    ) {
        let mut outgoing = Outgoing {
            batch,
            events: VecDeque::new(),
            receipt: Receipt::default(),
        };
        if !self.queue.is_empty() || self.blocked.is_some() {
            outgoing.events = events.collect();
            self.len += outgoing.events.len();
            self.queue.push_back(outgoing);
            return self.flush();
        }
        let offered = events.len();
        self.len += offered;
        if self.hand_over(&mut outgoing, offered, events) {
            self.finished(outgoing);
        } else {
            self.queue.push_back(outgoing);
        }
    }

    /// Offers `events` (`offered` of them) of `outgoing` to the dispatch; what is not taken
    /// goes back into `outgoing`, and `room` is armed for the shard that was full. Returns
    /// whether everything was taken.
    fn hand_over(
        &mut self,
        outgoing: &mut Outgoing<U, E>,
        offered: usize,
        events: impl IntoIterator<Item = Dispatch<U, E>>,
    ) -> bool {
        let sent = self.sink.try_send_batch(events);
        outgoing.receipt.merge(&sent.receipt);
        let accepted = offered - sent.unsent.len();
        self.len -= accepted;
        self.handed += accepted as u64;
        if outgoing.batch.is_some() {
            self.counters.updates_dispatched.add(accepted as u64);
        }
        if sent.unsent.is_empty() {
            return true;
        }
        outgoing.events = sent.unsent.into();
        if sent.closed {
            // Only once the dispatch is shut down: what is left stays unacknowledged, so a
            // restart delivers it again.
            tracing::error!(
                left = self.len,
                "dispatch closed; the rest of the backlog is not dispatched"
            );
        } else if let Some(shard) = sent.full {
            self.blocked = Some(shard);
            self.room = Some(self.sink.room(shard));
        }
        false
    }

    /// Everything of `outgoing` was handed over: a batch now waits for its acknowledgement.
    fn finished(&mut self, outgoing: Outgoing<U, E>) {
        if let Some(id) = outgoing.batch {
            self.dispatched.push_back((id, outgoing.receipt));
        }
    }

    /// The blocked shard has room: hand the backlog over again.
    fn unblock(&mut self) {
        self.room = None;
        self.blocked = None;
        self.flush();
    }

    /// Hands the backlog to the dispatch in order, without waiting: the front batch goes over
    /// in one [`try_send_batch`](EventStream::try_send_batch) (a lock per shard it touches);
    /// if a shard cannot take all of its part, the rest waits and `room` is armed for that
    /// shard. Does nothing while blocked (the front goes first: events of one peer stay in
    /// order, and batches are acknowledged in order).
    fn flush(&mut self) {
        if self.blocked.is_some() {
            return;
        }
        while let Some(mut front) = self.queue.pop_front() {
            let offered = front.events.len();
            let events = std::mem::take(&mut front.events);
            if !self.hand_over(&mut front, offered, events) {
                self.queue.push_front(front);
                return;
            }
            self.finished(front);
        }
    }

    /// Acknowledges the dispatched batches that were handled, oldest first, stopping at the
    /// first that was not; returns whether it acknowledged any. `oldest` is what the wait for
    /// the oldest batch learned, if it fired: an error means that batch will never be handled.
    ///
    /// Invariant (commits trail handled updates): a batch is acknowledged only when its receipt
    /// says every one of its updates was handled (`is_handled` reads each shard's delivered
    /// count with acquire ordering), and the engine commits nothing past an unacknowledged
    /// batch. Acknowledging in dispatch order loses nothing: the engine commits only the
    /// acknowledged prefix anyway.
    pub(crate) fn settle(
        &mut self,
        engine: &mut Engine<U, E>,
        oldest: Option<(BatchId, Result<(), NotHandled>)>,
    ) -> bool {
        if let Some((batch, Err(error))) = oldest
            && self
                .dispatched
                .front()
                .is_some_and(|(front, _)| *front == batch)
        {
            self.dispatched.pop_front();
            // Only when a dispatch worker was dropped: the batch stays unacknowledged, so its
            // state is never committed and a restart delivers it again.
            tracing::error!(%error, %batch, "batch not handled");
        }
        // A pool's receipts count the jobs it skipped once this manager stopped its handlers.
        if let Sink::Pooled(pooled) = &self.sink
            && pooled.slot.is_stopped()
        {
            return false;
        }
        let mut acknowledged = false;
        while let Some((batch, receipt)) = self.dispatched.front() {
            if !self.sink.is_handled(receipt) {
                break;
            }
            match engine.ack(*batch) {
                Ok(()) => self.counters.batches_acknowledged.incr(),
                Err(error) => tracing::error!(%error, "acknowledgement refused"),
            }
            self.dispatched.pop_front();
            acknowledged = true;
        }
        acknowledged
    }

    /// Arranges one wake-up for when the oldest dispatched batch is handled, unless one is
    /// arranged for it already; a wait for a batch that was acknowledged meanwhile is dropped.
    pub(crate) fn watch_oldest(&mut self) {
        let Some((front, receipt)) = self.dispatched.front() else {
            self.waiting = None;
            return;
        };
        if self
            .waiting
            .as_ref()
            .is_some_and(|(batch, _)| batch == front)
        {
            return;
        }
        self.waiting = Some((*front, self.sink.handled(receipt.clone())));
    }
}
