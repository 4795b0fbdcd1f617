//! The application's side of a manager: [`ManagerHandle`], the messages it sends through the
//! intake (pushes, bounded) and the control channel (commands, never dropped), the state it
//! shares with the manager, and its errors.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use sync_core::{Affected, ChannelId, Sequence, State, Update, Updates};
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use crate::dispatch::HANDLING;
use crate::stats::{Counters, Stats};

/// What became of a push handed to [`ManagerHandle::push`] (or its siblings,
/// [`ManagerHandle::push_batch`] included) while the manager runs.
///
/// Neither outcome needs the caller to do anything: a dropped push is counted in
/// [`RuntimeStats::pushes_dropped`](crate::RuntimeStats::pushes_dropped) and recovered by a
/// difference. So `handle.push(updates)?;` is the usual call, and `?` only propagates
/// [`Stopped`]. A reader that would rather slow down than have pushes dropped looks at it (or at
/// [`ManagerHandle::queued`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pushed {
    /// The push (or the whole batch) is in the intake.
    Queued,
    /// The intake was full: the push (or the whole batch) was dropped and counted, and the
    /// manager fetches the difference once it has room, so nothing is lost.
    Dropped,
}

impl Pushed {
    /// True for [`Pushed::Queued`].
    pub fn is_queued(self) -> bool {
        self == Self::Queued
    }

    /// True for [`Pushed::Dropped`].
    pub fn is_dropped(self) -> bool {
        self == Self::Dropped
    }
}

/// The manager is not running (shut down, or stopped with an error): the push was not taken,
/// and no later one will be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, thiserror::Error)]
#[error("the manager is not running")]
pub struct Stopped;

impl From<Stopped> for ControlError {
    fn from(Stopped: Stopped) -> Self {
        Self::Stopped
    }
}

/// Why a channel command or [`ManagerHandle::caught_up`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The manager is not running.
    #[error("the manager is not running")]
    Stopped,
    /// The engine refused the command (an unknown channel, too many open channels, …).
    #[error(transparent)]
    Engine(#[from] sync_core::Error),
}

/// A push or a signal from the application, through the bounded intake.
pub(crate) enum Input<U, E> {
    Updates(Updates<U, E>),
    /// Many pushes in the order they arrived, as one message (see
    /// [`ManagerHandle::push_batch`]).
    Batch(Vec<Updates<U, E>>),
    Affected(Affected),
    SessionReset,
}

impl<U, E> Input<U, E> {
    /// How many pushes the message counts for in the intake.
    pub(crate) fn pushes(&self) -> usize {
        match self {
            Self::Batch(batch) => batch.len(),
            Self::Updates(_) | Self::Affected(_) | Self::SessionReset => 1,
        }
    }
}

impl<U: Update, E> Input<U, E> {
    /// Drops the message, counted, and arranges its recovery: the manager fetches the
    /// difference, and the difference of every channel the message named (a common
    /// difference does not bring channel updates back).
    ///
    /// Invariant (a dropped push is recovered): the flag is set after the push was dropped,
    /// and the manager requests the differences after it sees the flag, so the server
    /// answers from a moment that includes the dropped push.
    pub(crate) fn drop_recovered(self, shared: &Shared) {
        let pushes = self.pushes();
        {
            let mut channels = shared
                .dropped_channels
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let mut note = |update: &U| match update.sequence() {
                Sequence::Channel { channel_id, .. }
                | Sequence::ChannelTooLong { channel_id, .. } => {
                    channels.insert(channel_id);
                }
                _ => {}
            };
            let mut note_push = |updates: &Updates<U, E>| match updates {
                Updates::Short { update, .. } => note(update),
                Updates::Combined { updates, .. } => updates.iter().for_each(&mut note),
                Updates::TooLong => {}
            };
            match &self {
                Self::Updates(updates) => note_push(updates),
                Self::Batch(batch) => batch.iter().for_each(note_push),
                Self::Affected(Affected::Channel { channel_id, .. }) => {
                    channels.insert(*channel_id);
                }
                Self::Affected(_) | Self::SessionReset => {}
            }
        }
        drop(self);
        shared.counters.pushes_dropped.add(pushes as u64);
        shared.overflowed.store(true, Ordering::Release);
    }
}

/// A command that must not be dropped, through the unbounded control channel.
pub(crate) enum Control {
    Track(
        ChannelId,
        i32,
        oneshot::Sender<Result<(), sync_core::Error>>,
    ),
    Open(ChannelId, oneshot::Sender<Result<(), sync_core::Error>>),
    Close(ChannelId),
    Forget(ChannelId),
    Refetch(ChannelId, oneshot::Sender<Result<(), sync_core::Error>>),
    /// A channel's applied pts.
    ChannelPts(ChannelId, oneshot::Sender<Option<i32>>),
    /// A `caught_up` call, with the shard of the handler it was made from, if any.
    CaughtUp(oneshot::Sender<()>, Option<usize>),
}

/// State shared by the manager and its handles.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Tells this manager's handler calls from another's (see [`HANDLING`]).
    pub(crate) id: u64,
    pub(crate) counters: Arc<Counters>,
    /// The engine's last published stats and idleness.
    pub(crate) engine: Mutex<(sync_core::Stats, bool)>,
    /// The engine's last published applied state.
    pub(crate) state: Mutex<Option<State>>,
    /// Set by a handle that dropped a push; the manager fetches the difference and clears it. Kept
    /// by [`Manager::with_cancellation`](crate::Manager::with_cancellation), so that earlier
    /// handles' drops are recovered.
    pub(crate) overflowed: Arc<AtomicBool>,
    /// Pushes in the intake: added by a handle before it sends, taken off by the manager
    /// when it receives. Bounded by `capacity` (see [`ManagerHandle::push_batch`]). Kept by
    /// [`Manager::with_cancellation`](crate::Manager::with_cancellation), like the intake itself.
    pub(crate) queued: Arc<AtomicUsize>,
    /// Woken when a handle fills the intake or finds it full. While its dispatch backlog is
    /// past its bound the manager leaves pushes in the intake (so a reader that watches
    /// [`ManagerHandle::queued`] holds back instead of losing pushes), and only a full intake
    /// makes it take and drop them, so nobody waits for room that never comes. Kept by
    /// [`Manager::with_cancellation`](crate::Manager::with_cancellation), like `queued`.
    pub(crate) full: Arc<Notify>,
    /// The channels the dropped pushes named: their differences are fetched with the common
    /// one. Kept by [`Manager::with_cancellation`](crate::Manager::with_cancellation).
    pub(crate) dropped_channels: Arc<Mutex<HashSet<ChannelId>>>,
    /// [`ManagerConfig::intake_capacity`](crate::ManagerConfig::intake_capacity), at least 1.
    pub(crate) capacity: usize,
    pub(crate) running: AtomicBool,
    pub(crate) cancel: CancellationToken,
    /// The fencing token of the lease the manager runs under (0: none yet, or no lease).
    pub(crate) token: AtomicU64,
}

/// The application's side of a running [`Manager`](crate::Manager): feed it pushes, ask for its
/// stats, shut it down. Cheap to clone.
///
/// Every method is safe to call from a [`Handler`](crate::Handler), awaited or not: the manager
/// never waits for the dispatch (updates that do not fit in the shards wait in a backlog while the
/// manager goes on serving the intake, commands, timers, replies and shutdown), so what a handler
/// awaits here resolves, or fails with [`ControlError::Stopped`] once the manager stops.
/// [`caught_up`](Self::caught_up) has its own meaning inside a handler.
pub struct ManagerHandle<U, E = ()> {
    pub(crate) intake: mailbox::Sender<Input<U, E>>,
    pub(crate) control: mailbox::Sender<Control>,
    pub(crate) shared: Arc<Shared>,
}

impl<U, E> Clone for ManagerHandle<U, E> {
    fn clone(&self) -> Self {
        Self {
            intake: self.intake.clone(),
            control: self.control.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<U, E> std::fmt::Debug for ManagerHandle<U, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerHandle")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl<U: Update, E> ManagerHandle<U, E> {
    /// Hands a pushed `Updates` value to the manager. Never waits: when the intake is full
    /// the push is dropped, counted, and recovered by a difference ([`Pushed::Dropped`]), so
    /// a network reader (or a handler) calling this can never be blocked by the manager. Fails
    /// only when the manager is not running ([`Stopped`]).
    pub fn push(&self, updates: Updates<U, E>) -> Result<Pushed, Stopped> {
        self.offer(Input::Updates(updates), 1)
    }

    /// Hands many pushed `Updates` values to the manager at once, in the order they arrived:
    /// what a network reader decoded from one read. Equivalent to calling
    /// [`push`](Self::push) on each in order, but it costs one message through the intake
    /// (and at most one wake-up of the manager) for the whole batch.
    ///
    /// Never waits. The intake counts pushes, not batches: a batch is taken when it fits in the
    /// room left by [`ManagerConfig::intake_capacity`](crate::ManagerConfig::intake_capacity), or when the intake
    /// is empty (so a batch larger than the capacity is not refused for good; the intake then holds
    /// at most that batch). Otherwise the whole batch is dropped, counted in
    /// [`RuntimeStats::pushes_dropped`](crate::RuntimeStats::pushes_dropped), and recovered by a
    /// difference ([`Pushed::Dropped`]). An empty batch is [`Pushed::Queued`] and does
    /// nothing. Fails only when the manager is not running ([`Stopped`]).
    pub fn push_batch(&self, batch: Vec<Updates<U, E>>) -> Result<Pushed, Stopped> {
        match batch.len() {
            0 => {
                if self.intake.is_closed() {
                    Err(Stopped)
                } else {
                    Ok(Pushed::Queued)
                }
            }
            n => self.offer(Input::Batch(batch), n),
        }
    }

    /// How many pushes wait in the intake right now (a batch counts its pushes). A reader that
    /// would rather slow down than have pushes dropped (and fetched again by difference) can hold
    /// back while this is close to [`ManagerConfig::intake_capacity`](crate::ManagerConfig::intake_capacity).
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// The fencing token of the account's lease while the manager runs under one
    /// ([`Manager::with_lease`](crate::Manager::with_lease), or in a fleet),
    /// `None` before it is acquired or without a lease. It grows with every new owner of the
    /// account, so an application can fence its own side effects the same way storage fences
    /// commits: store it with what a handler writes elsewhere, and refuse a write whose token
    /// is lower than one already seen.
    pub fn fencing_token(&self) -> Option<sync_storage::FencingToken> {
        match self.shared.token.load(Ordering::Acquire) {
            0 => None,
            token => Some(sync_storage::FencingToken(token)),
        }
    }

    /// The `pts` / `pts_count` returned by the application's own calls
    /// (`messages.affectedMessages`, `affectedHistory`, `channels.deleteMessages`, …): they
    /// advance the sequence like an update. Taken or dropped like a push.
    pub fn push_affected(&self, affected: Affected) -> Result<Pushed, Stopped> {
        self.offer(Input::Affected(affected), 1)
    }

    /// The session was reset (`new_session_created`), or an update could not be decoded: the
    /// manager fetches the difference. Taken or dropped like a push (a dropped signal still
    /// leads to a difference).
    pub fn session_reset(&self) -> Result<Pushed, Stopped> {
        self.offer(Input::SessionReset, 1)
    }

    /// Queues `input`, which carries `pushes` pushes, if the intake has room for them.
    fn offer(&self, input: Input<U, E>, pushes: usize) -> Result<Pushed, Stopped> {
        if self.intake.is_closed() {
            return Err(Stopped);
        }
        let shared = &*self.shared;
        // Invariant (the intake is bounded): room is reserved before the message is sent and
        // given back by the manager when it takes the message, so at most `capacity` pushes
        // (or one larger batch, taken only into an empty intake) wait at any time.
        let reserved = shared
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                let fits = queued == 0 || queued.saturating_add(pushes) <= shared.capacity;
                fits.then(|| queued.saturating_add(pushes))
            });
        let Ok(before) = reserved else {
            shared.full.notify_one();
            input.drop_recovered(shared);
            return Ok(Pushed::Dropped);
        };
        if before.saturating_add(pushes) >= shared.capacity {
            shared.full.notify_one();
        }
        match self.intake.send(input) {
            Ok(()) => {
                shared.counters.pushes_accepted.add(pushes as u64);
                Ok(Pushed::Queued)
            }
            Err(_) => {
                shared.queued.fetch_sub(pushes, Ordering::AcqRel);
                Err(Stopped)
            }
        }
    }

    /// Starts tracking a channel from `pts` (from the dialogs, or after
    /// [`Notice::ChannelTooLong`](crate::Notice::ChannelTooLong) with no pts).
    pub async fn track_channel(&self, channel_id: ChannelId, pts: i32) -> Result<(), ControlError> {
        self.ask(|reply| Control::Track(channel_id, pts, reply))
            .await
    }

    /// The application shows this channel: it is caught up now and polled on the server's
    /// hint until [`close_channel`](Self::close_channel).
    pub async fn open_channel(&self, channel_id: ChannelId) -> Result<(), ControlError> {
        self.ask(|reply| Control::Open(channel_id, reply)).await
    }

    /// The application no longer shows this channel: polling stops.
    pub fn close_channel(&self, channel_id: ChannelId) -> Result<(), ControlError> {
        self.control
            .send(Control::Close(channel_id))
            .map_err(|_| ControlError::Stopped)
    }

    /// Fetches a tracked channel's difference now (for example, its update mentioned users or
    /// chats the application cannot resolve). Fails with [`ControlError::Engine`] for a
    /// channel that is not tracked.
    pub async fn request_channel_difference(
        &self,
        channel_id: ChannelId,
    ) -> Result<(), ControlError> {
        self.ask(|reply| Control::Refetch(channel_id, reply)).await
    }

    /// Stop tracking a channel (the user left it); storage forgets its pts.
    pub fn forget_channel(&self, channel_id: ChannelId) -> Result<(), ControlError> {
        self.control
            .send(Control::Forget(channel_id))
            .map_err(|_| ControlError::Stopped)
    }

    async fn ask(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<(), sync_core::Error>>) -> Control,
    ) -> Result<(), ControlError> {
        let (reply, answer) = oneshot::channel();
        self.control
            .send(command(reply))
            .map_err(|_| ControlError::Stopped)?;
        answer
            .await
            .map_err(|_| ControlError::Stopped)?
            .map_err(ControlError::Engine)
    }

    /// Fetches the difference now and resolves once the manager has caught up: every update
    /// the server had when it answered was delivered and handled, and nothing waits behind a
    /// gap. (Persisting trails it; a clean shutdown persists everything.)
    ///
    /// Called from inside this manager's [`Handler`](crate::Handler) (the handler's own task, not a
    /// task it spawned), it cannot wait for updates to be handled: the caller's own update is one
    /// of them, and its shard makes no progress while the caller waits. There it resolves once the
    /// engine waits for nothing and every update it delivered was handed to the dispatch shards
    /// (not necessarily handled yet), or as soon as handing them over waits for room on the
    /// caller's own shard, which only the caller's return can make.
    ///
    /// Fails with [`ControlError::Stopped`] if the manager stops first.
    pub async fn caught_up(&self) -> Result<(), ControlError> {
        let inside = HANDLING
            .try_with(|&(manager, shard)| (manager == self.shared.id).then_some(shard))
            .ok()
            .flatten();
        let (reply, answer) = oneshot::channel();
        self.control
            .send(Control::CaughtUp(reply, inside))
            .map_err(|_| ControlError::Stopped)?;
        answer.await.map_err(|_| ControlError::Stopped)
    }

    /// A snapshot of the engine's and the runtime's counters.
    pub fn stats(&self) -> Stats {
        let (engine, idle) = *self
            .shared
            .engine
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Stats {
            engine,
            runtime: self.shared.counters.snapshot(),
            idle,
        }
    }

    /// The common state the engine has applied (`pts`, `qts`, `seq`, `date` of what was
    /// delivered to the dispatch, not necessarily handled or persisted yet), as of the
    /// manager's last turn: published with the [`stats`](Self::stats). `None` before the
    /// manager has a state (before it started, or until a first run's `getState` is
    /// answered). After the manager stopped it keeps the last state.
    pub fn state(&self) -> Option<State> {
        *self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A tracked channel's applied pts, asked of the running manager; `None` for a channel it
    /// does not track.
    pub async fn channel_pts(&self, channel_id: ChannelId) -> Result<Option<i32>, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.control
            .send(Control::ChannelPts(channel_id, reply))
            .map_err(|_| ControlError::Stopped)?;
        answer.await.map_err(|_| ControlError::Stopped)
    }

    /// True while [`Manager::run`](crate::Manager::run) is running.
    pub fn is_running(&self) -> bool {
        self.shared.running.load(Ordering::Acquire)
    }

    /// Asks the manager to shut down cleanly: stop intake, drain dispatch (for at most
    /// [`ManagerConfig::shutdown_grace`](crate::ManagerConfig::shutdown_grace)), persist what was handled,
    /// return. Never waits.
    pub fn shutdown(&self) {
        self.shared.cancel.cancel();
    }

    /// The token whose cancellation shuts the manager down.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.shared.cancel.clone()
    }
}

/// An unbounded single-receiver queue that holds no memory while it is empty: the intake,
/// the control channel and the writer's queue.
///
/// tokio's unbounded channel allocates a 512-byte channel and a first block of 32 slots when
/// it is created and keeps a block while empty; a process with 100,000 idle accounts would
/// hold three of each per account. Here the queue is a `VecDeque` behind a mutex, allocated
/// on the first send and given back whenever the receiver waits on it empty.
///
/// It behaves like tokio's channel where the manager relies on it: sends fail once the
/// receiver closed or dropped the queue, the receiver takes what was queued before it closed
/// it, a dropped receiver drops what was still queued, and `recv` returns `None` once the
/// queue is closed (by the receiver, or by the last sender being dropped) and empty.
pub(crate) mod mailbox {
    use std::collections::VecDeque;
    use std::future::Future;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
    use std::task::Poll;

    use futures::task::AtomicWaker;

    struct Mailbox<T> {
        items: Mutex<VecDeque<T>>,
        /// Set (under the lock) when the receiver closes or drops the queue, or the last
        /// sender is dropped; read without it by [`Sender::is_closed`].
        closed: AtomicBool,
        senders: AtomicUsize,
        /// The receiver waiting in [`Receiver::recv`].
        waker: AtomicWaker,
    }

    impl<T> Mailbox<T> {
        fn items(&self) -> MutexGuard<'_, VecDeque<T>> {
            self.items.lock().unwrap_or_else(PoisonError::into_inner)
        }
    }

    /// The sending side; cheap to clone.
    pub(crate) struct Sender<T>(Arc<Mailbox<T>>);

    /// The receiving side.
    pub(crate) struct Receiver<T>(Arc<Mailbox<T>>);

    /// An empty, open queue.
    pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
        let mailbox = Arc::new(Mailbox {
            items: Mutex::new(VecDeque::new()),
            closed: AtomicBool::new(false),
            senders: AtomicUsize::new(1),
            waker: AtomicWaker::new(),
        });
        (Sender(Arc::clone(&mailbox)), Receiver(mailbox))
    }

    impl<T> Sender<T> {
        /// Queues `item`; gives it back if the queue is closed.
        pub(crate) fn send(&self, item: T) -> Result<(), T> {
            {
                let mut items = self.0.items();
                if self.0.closed.load(Ordering::Relaxed) {
                    return Err(item);
                }
                items.push_back(item);
            }
            // After the push: a receiver that registered before it is woken, one that looks
            // after it finds the item.
            self.0.waker.wake();
            Ok(())
        }

        /// Whether sends fail now.
        pub(crate) fn is_closed(&self) -> bool {
            self.0.closed.load(Ordering::Acquire)
        }
    }

    impl<T> Clone for Sender<T> {
        fn clone(&self) -> Self {
            self.0.senders.fetch_add(1, Ordering::Relaxed);
            Self(Arc::clone(&self.0))
        }
    }

    impl<T> Drop for Sender<T> {
        fn drop(&mut self) {
            if self.0.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
                // The last sender: the receiver takes what is queued, then sees the end.
                let items = self.0.items();
                self.0.closed.store(true, Ordering::Release);
                drop(items);
                self.0.waker.wake();
            }
        }
    }

    impl<T> Receiver<T> {
        /// The next item; `None` once the queue is closed and empty.
        pub(crate) fn recv(&mut self) -> impl Future<Output = Option<T>> + '_ {
            std::future::poll_fn(|cx| {
                // Registered before looking: a send after the look wakes this task.
                self.0.waker.register(cx.waker());
                let mut items = self.0.items();
                if let Some(item) = items.pop_front() {
                    return Poll::Ready(Some(item));
                }
                if self.0.closed.load(Ordering::Relaxed) {
                    return Poll::Ready(None);
                }
                // Waiting on an empty queue: its buffer goes back to the allocator, so an
                // idle manager holds none (a busy one rarely waits).
                if items.capacity() > 0 {
                    *items = VecDeque::new();
                }
                Poll::Pending
            })
        }

        /// The next item if one is queued, without waiting.
        pub(crate) fn try_recv(&mut self) -> Option<T> {
            self.0.items().pop_front()
        }

        /// Closes the queue: sends fail from now on; what was queued can still be taken.
        pub(crate) fn close(&mut self) {
            let _items = self.0.items();
            self.0.closed.store(true, Ordering::Release);
        }
    }

    impl<T> Drop for Receiver<T> {
        fn drop(&mut self) {
            let left = {
                let mut items = self.0.items();
                self.0.closed.store(true, Ordering::Release);
                std::mem::take(&mut *items)
            };
            // Outside the lock: what it holds (a command's reply) may wake other tasks.
            drop(left);
        }
    }
}
