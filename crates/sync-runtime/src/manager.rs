//! The per-account manager: drives the engine with the API, storage and the handler.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use sync_core::{
    Affected, Batch, BatchId, ChannelDifference, ChannelId, Difference, Engine, Failure, Output,
    Request, RequestId, RequestKind, Sequence, State, Update, Updates,
};
use sync_events::{
    AsyncObserver, Event, EventStream, NotHandled, ObserverPanic, Receipt, SendError, SendFailure,
};
use sync_storage::{AccessHashStorage, AccountId, StateStorage};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::api::{Api, ApiError, ChannelDifferenceRequest, DifferenceRequest};
use crate::backoff::{Jitter, Policy};
use crate::config::Config;
use crate::handler::{Handler, Notice};
use crate::peer::{Peer, PeerKey};
use crate::stats::{Counters, Stats};
use crate::writer::{Write, Writer};

type UpdateOf<A> = <A as Api>::Update;
type EntitiesOf<A> = <A as Api>::Entities;

/// Why [`ManagerHandle::handle`] (and its siblings, [`ManagerHandle::handle_batch`] included)
/// did not take a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    /// The intake is full: the push (or the whole batch) was dropped and counted, and the
    /// manager fetches the difference once it has room, so nothing is lost. Nothing to do for
    /// the caller.
    #[error(
        "the manager's intake is full; the push was dropped and will be recovered by a difference"
    )]
    Full,
    /// The manager is not running (shut down, or stopped with an error).
    #[error("the manager is not running")]
    Stopped,
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

/// Why [`Manager::run`] stopped other than by a shutdown.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The stored state could not be read at startup (and retrying would not help).
    #[error("cannot load the stored state: {0}")]
    Storage(#[source] sync_storage::Error),
    /// The stored state is invalid (negative numbers, a bad channel id).
    #[error("the stored state is invalid: {0}")]
    InvalidState(#[source] sync_core::Error),
    /// The dispatch could not be built (zero shards or zero capacity in the [`Config`]).
    #[error("invalid dispatch configuration: {0}")]
    Dispatch(#[source] sync_events::ConfigError),
    /// The API reported the authorization lost. The manager drained its dispatch and
    /// persisted what was handled before stopping.
    #[error("authorization lost: {message}")]
    Unauthorized {
        /// The error the API reported.
        message: String,
    },
}

/// What a run did, returned by [`Manager::run`] after a clean shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// The final counters.
    pub stats: Stats,
    /// The common state the engine had applied. When `persisted` and nothing was `abandoned`,
    /// storage holds it; with abandoned updates storage stops before the first of them.
    pub state: Option<State>,
    /// True when every commit reached storage before the shutdown deadline.
    pub persisted: bool,
    /// Updates and notices the manager had taken for dispatch whose handling never finished:
    /// the handlers were still busy when [`Config::shutdown_grace`] ran out and were stopped
    /// (or the dispatch was gone). 0 means everything dispatched was handled. What was not
    /// handled was not acknowledged either, so `state` and storage stop before it and the next
    /// start delivers it again.
    pub abandoned: u64,
}

/// A push or a signal from the application, through the bounded intake.
enum Input<U, E> {
    Updates(Updates<U, E>),
    /// Many pushes in the order they arrived, as one message (see
    /// [`ManagerHandle::handle_batch`]).
    Batch(Vec<Updates<U, E>>),
    Affected(Affected),
    SessionReset,
}

impl<U, E> Input<U, E> {
    /// How many pushes the message counts for in the intake.
    fn pushes(&self) -> usize {
        match self {
            Self::Batch(batch) => batch.len(),
            Self::Updates(_) | Self::Affected(_) | Self::SessionReset => 1,
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

/// A command that must not be dropped, through the unbounded control channel.
enum Control {
    Track(
        ChannelId,
        i32,
        oneshot::Sender<Result<(), sync_core::Error>>,
    ),
    Open(ChannelId, oneshot::Sender<Result<(), sync_core::Error>>),
    Close(ChannelId),
    Forget(ChannelId),
    Refetch(ChannelId, oneshot::Sender<Result<(), sync_core::Error>>),
    /// A `caught_up` call, with the shard of the handler it was made from, if any.
    CaughtUp(oneshot::Sender<()>, Option<usize>),
}

tokio::task_local! {
    /// Set by the dispatch around every handler call: the [`Shared::id`] of the manager and
    /// the shard the handler runs on. Lets `caught_up` tell a call from inside a handler,
    /// which must not wait for its own update to be handled.
    static HANDLING: (u64, usize);
}

/// Numbers the managers of the process, for [`HANDLING`].
static MANAGER_IDS: AtomicU64 = AtomicU64::new(0);

/// State shared by the manager and its handles.
#[derive(Debug)]
struct Shared {
    /// Tells this manager's handler calls from another's (see [`HANDLING`]).
    id: u64,
    counters: Arc<Counters>,
    /// The engine's last published stats and idleness.
    engine: Mutex<(sync_core::Stats, bool)>,
    /// Set by a handle that dropped a push; the manager fetches the difference and clears it.
    /// Kept by [`Manager::with_cancellation`], so that earlier handles' drops are recovered.
    overflowed: Arc<AtomicBool>,
    /// Pushes in the intake: added by a handle before it sends, taken off by the manager
    /// when it receives. Bounded by `capacity` (see [`ManagerHandle::handle_batch`]). Kept by
    /// [`Manager::with_cancellation`], like the intake itself.
    queued: Arc<AtomicUsize>,
    /// [`Config::intake_capacity`], at least 1.
    capacity: usize,
    running: AtomicBool,
    cancel: CancellationToken,
}

/// The application's side of a running [`Manager`]: feed it pushes, ask for its stats, shut it
/// down. Cheap to clone.
///
/// Every method is safe to call from a [`Handler`], awaited or not: the manager never waits
/// for the dispatch (updates that do not fit in the shards wait in a backlog while the
/// manager goes on serving the intake, commands, timers, replies and shutdown), so what a
/// handler awaits here resolves, or fails with [`ControlError::Stopped`] once the manager
/// stops. [`caught_up`](Self::caught_up) has its own meaning inside a handler.
pub struct ManagerHandle<U, E = ()> {
    intake: mpsc::UnboundedSender<Input<U, E>>,
    control: mpsc::UnboundedSender<Control>,
    shared: Arc<Shared>,
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

impl<U, E> ManagerHandle<U, E> {
    /// Hands a pushed `Updates` value to the manager. Never waits: when the intake is full
    /// the push is dropped, counted, and recovered by a difference ([`IntakeError::Full`]), so
    /// a network reader (or a handler) calling this can never be blocked by the manager.
    pub fn handle(&self, updates: Updates<U, E>) -> Result<(), IntakeError> {
        self.offer(Input::Updates(updates), 1)
    }

    /// Hands many pushed `Updates` values to the manager at once, in the order they arrived:
    /// what a network reader decoded from one read. Equivalent to calling
    /// [`handle`](Self::handle) on each in order, but it costs one message through the intake
    /// (and at most one wake-up of the manager) for the whole batch.
    ///
    /// Never waits. The intake counts pushes, not batches: a batch is taken when it fits in
    /// the room left by [`Config::intake_capacity`], or when the intake is empty (so a batch
    /// larger than the capacity is not refused for good; the intake then holds at most that
    /// batch). Otherwise the whole batch is dropped, counted in
    /// [`RuntimeStats::pushes_dropped`](crate::RuntimeStats::pushes_dropped), and recovered by
    /// a difference ([`IntakeError::Full`]). An empty batch is accepted and does nothing.
    pub fn handle_batch(&self, batch: Vec<Updates<U, E>>) -> Result<(), IntakeError> {
        match batch.len() {
            0 => {
                if self.intake.is_closed() {
                    Err(IntakeError::Stopped)
                } else {
                    Ok(())
                }
            }
            n => self.offer(Input::Batch(batch), n),
        }
    }

    /// How many pushes wait in the intake right now (a batch counts its pushes). A reader
    /// that would rather slow down than have pushes dropped (and fetched again by difference)
    /// can hold back while this is close to [`Config::intake_capacity`].
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// The `pts` / `pts_count` returned by the application's own calls
    /// (`messages.affectedMessages`, `affectedHistory`, `channels.deleteMessages`, …): they
    /// advance the sequence like an update.
    pub fn handle_affected(&self, affected: Affected) -> Result<(), IntakeError> {
        self.offer(Input::Affected(affected), 1)
    }

    /// The session was reset (`new_session_created`), or an update could not be decoded: the
    /// manager fetches the difference.
    pub fn session_reset(&self) -> Result<(), IntakeError> {
        self.offer(Input::SessionReset, 1)
    }

    /// Queues `input`, which carries `pushes` pushes, if the intake has room for them.
    fn offer(&self, input: Input<U, E>, pushes: usize) -> Result<(), IntakeError> {
        if self.intake.is_closed() {
            return Err(IntakeError::Stopped);
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
        if reserved.is_err() {
            drop(input);
            shared.counters.pushes_dropped.add(pushes as u64);
            // Invariant (a dropped push is recovered): the flag is set after the push was
            // dropped, and the manager requests the difference after it sees the flag, so
            // the server answers from a moment that includes the dropped push.
            shared.overflowed.store(true, Ordering::Release);
            return Err(IntakeError::Full);
        }
        match self.intake.send(input) {
            Ok(()) => {
                shared.counters.pushes_accepted.add(pushes as u64);
                Ok(())
            }
            Err(_) => {
                shared.queued.fetch_sub(pushes, Ordering::AcqRel);
                Err(IntakeError::Stopped)
            }
        }
    }

    /// Starts tracking a channel from `pts` (from the dialogs, or after
    /// [`Notice::ChannelTooLong`] with no pts).
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
    /// Called from inside this manager's [`Handler`] (the handler's own task, not a task it
    /// spawned), it cannot wait for updates to be handled: the caller's own update is one of
    /// them, and its shard makes no progress while the caller waits. There it resolves once
    /// the engine waits for nothing and every update it delivered was handed to the dispatch
    /// shards (not necessarily handled yet), or as soon as handing them over waits for room
    /// on the caller's own shard, which only the caller's return can make.
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

    /// True while [`Manager::run`] is running.
    pub fn is_running(&self) -> bool {
        self.shared.running.load(Ordering::Acquire)
    }

    /// Asks the manager to shut down cleanly: stop intake, drain dispatch (for at most
    /// [`Config::shutdown_grace`]), persist what was handled, return. Never waits.
    pub fn shutdown(&self) {
        self.shared.cancel.cancel();
    }

    /// The token whose cancellation shuts the manager down.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.shared.cancel.clone()
    }
}

/// Keeps one account's update state in sync: the tokio driver of [`sync_core::Engine`].
///
/// Build it with [`Manager::new`], take [`handle`](Self::handle)s for the network reader and
/// the application, then `.await` [`run`](Self::run). See the [crate docs](crate) for the
/// whole picture.
pub struct Manager<A: Api, S, H> {
    account: AccountId,
    api: Arc<A>,
    storage: Arc<S>,
    handler: Arc<H>,
    config: Config,
    shared: Arc<Shared>,
    intake: mpsc::UnboundedReceiver<Input<UpdateOf<A>, EntitiesOf<A>>>,
    control: mpsc::UnboundedReceiver<Control>,
    handle: ManagerHandle<UpdateOf<A>, EntitiesOf<A>>,
}

impl<A: Api, S, H> std::fmt::Debug for Manager<A, S, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("account", &self.account)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<A, S, H> Manager<A, S, H>
where
    A: Api,
    S: StateStorage + AccessHashStorage + 'static,
    H: Handler<UpdateOf<A>, EntitiesOf<A>>,
{
    /// A manager for `account` (the logged-in user's id), calling Telegram through `api`,
    /// persisting through `storage` and handing updates to `handler`, with the default
    /// [`Config`].
    pub fn new(account: AccountId, api: A, storage: S, handler: H) -> Self {
        Self::with_config(account, api, storage, handler, Config::default())
    }

    /// The same with a [`Config`]. Shared API clients and storages work too: the traits are
    /// implemented for `Arc<_>`.
    pub fn with_config(account: AccountId, api: A, storage: S, handler: H, config: Config) -> Self {
        // Unbounded as a channel: the intake's bound is counted in pushes by `Shared::queued`.
        let (intake_tx, intake) = mpsc::unbounded_channel();
        let (control_tx, control) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            id: MANAGER_IDS.fetch_add(1, Ordering::Relaxed),
            counters: Arc::new(Counters::new(account)),
            engine: Mutex::new((sync_core::Stats::default(), false)),
            overflowed: Arc::new(AtomicBool::new(false)),
            queued: Arc::new(AtomicUsize::new(0)),
            capacity: config.intake_capacity.max(1),
            running: AtomicBool::new(false),
            cancel: CancellationToken::new(),
        });
        let handle = ManagerHandle {
            intake: intake_tx,
            control: control_tx,
            shared: Arc::clone(&shared),
        };
        Self {
            account,
            api: Arc::new(api),
            storage: Arc::new(storage),
            handler: Arc::new(handler),
            config,
            shared,
            intake,
            control,
            handle,
        }
    }

    /// Shuts the manager down when `token` is cancelled (e.g. a child of the process's
    /// shutdown token), instead of its own token. Call it before taking
    /// [`handle`](Self::handle)s: earlier handles keep the old token.
    #[must_use]
    pub fn with_cancellation(mut self, token: CancellationToken) -> Self {
        let shared = Arc::new(Shared {
            id: self.shared.id,
            counters: Arc::clone(&self.shared.counters),
            engine: Mutex::new((sync_core::Stats::default(), false)),
            overflowed: Arc::clone(&self.shared.overflowed),
            queued: Arc::clone(&self.shared.queued),
            capacity: self.shared.capacity,
            running: AtomicBool::new(false),
            cancel: token,
        });
        self.handle.shared = Arc::clone(&shared);
        self.shared = shared;
        self
    }

    /// A handle for pushes, commands, stats and shutdown.
    pub fn handle(&self) -> ManagerHandle<UpdateOf<A>, EntitiesOf<A>> {
        self.handle.clone()
    }

    /// Runs until shut down (the handle's [`shutdown`](ManagerHandle::shutdown) or the
    /// cancellation token) or until the authorization is lost.
    ///
    /// Starts from the stored state (catching up with `getDifference`), or with `getState` on
    /// the first run; then feeds pushes to the engine, executes its requests, dispatches its
    /// deliveries and persists its commits. On shutdown it stops intake (commands and queued
    /// pushes fail or are dropped; a later start fetches them by difference), abandons
    /// in-flight requests, and waits for the handlers to finish what was dispatched, for at
    /// most [`Config::shutdown_grace`]; handlers still busy then are stopped (their tasks
    /// aborted, counted in [`Summary::abandoned`]). It persists what was handled and returns.
    ///
    /// Dropping the future instead is a crash: nothing more is handled or written, and a
    /// restart from storage redelivers at most what was not yet acknowledged.
    pub async fn run(self) -> Result<Summary, RunError> {
        let span = tracing::info_span!("sync_manager", account = self.account);
        self.run_inner().instrument(span).await
    }

    async fn run_inner(mut self) -> Result<Summary, RunError> {
        self.shared.running.store(true, Ordering::Release);
        let _running = RunningGuard(Arc::clone(&self.shared));
        let cancel = self.shared.cancel.clone();
        let counters = Arc::clone(&self.shared.counters);
        let mut jitter = Jitter::new(self.config.jitter_seed);

        let Some(snapshot) = self.load(&cancel, &mut jitter).await? else {
            return Ok(Summary {
                stats: self.handle.stats(),
                state: None,
                persisted: true,
                abandoned: 0,
            });
        };
        let now = now();
        let engine = match snapshot.state {
            Some(state) => {
                tracing::info!(
                    ?state,
                    channels = snapshot.channels.len(),
                    "resuming from stored state"
                );
                Engine::from_state(self.config.engine.clone(), now, state, snapshot.channels)
                    .map_err(RunError::InvalidState)?
            }
            None => {
                tracing::info!("no stored state: starting with getState");
                Engine::new(self.config.engine.clone(), now)
            }
        };

        // Dispatch: one observer per shard over the shared handler; the workers belong to this
        // future, so dropping it (a crash) stops them too.
        let panics = Arc::clone(&counters);
        let (stream, workers) = sync_events::Builder::new()
            .shards(self.config.shards)
            .capacity(self.config.shard_capacity)
            .on_panic(move |panic: &ObserverPanic| {
                panics.handler_panics.incr();
                tracing::error!(%panic, "update handler panicked");
            })
            .build_async(|shard| Dispatcher {
                handler: Arc::clone(&self.handler),
                counters: Arc::clone(&counters),
                manager: self.shared.id,
                shard,
            })
            .map_err(RunError::Dispatch)?;
        let mut worker_tasks = JoinSet::new();
        workers.spawn_with(|worker| {
            worker_tasks.spawn(worker);
        });

        let (writes, queue) = mpsc::unbounded_channel();
        let writer = Writer {
            account: self.account,
            storage: Arc::clone(&self.storage),
            counters: Arc::clone(&counters),
            retry: Policy::storage(&self.config),
            jitter: jitter.fork(),
        }
        .run(queue);

        let mut driver = Driver {
            account: self.account,
            api: Arc::clone(&self.api),
            storage: Arc::clone(&self.storage),
            config: self.config.clone(),
            shared: Arc::clone(&self.shared),
            engine,
            stream,
            writes: Some(writes),
            requests: FuturesUnordered::new(),
            backlog: VecDeque::new(),
            backlog_len: 0,
            backlog_bound: self
                .config
                .shards
                .saturating_mul(self.config.shard_capacity)
                .max(1),
            blocked: None,
            room: None,
            held: Vec::new(),
            dropped_channels: HashSet::new(),
            dispatched: VecDeque::new(),
            waiting: None,
            attempts: HashMap::new(),
            hashes: HashMap::new(),
            jitter,
            waiters: Vec::new(),
            seen: sync_core::Stats::default(),
            stopping: false,
            #[cfg(feature = "metrics")]
            gauges: crate::stats::Gauges::new(self.account),
        };
        let mut writer = std::pin::pin!(writer);
        let outcome = {
            let main = driver.run(&mut self.intake, &mut self.control, &cancel);
            let mut main = std::pin::pin!(main);
            // The writer only ends once the driver has dropped its queue, so this waits for
            // the driver while letting the writer make progress.
            tokio::select! {
                outcome = &mut main => outcome,
                () = &mut writer => unreachable_writer_end(),
            }
        };

        // Stop intake and control: later pushes and commands fail with `Stopped`, and so do
        // the commands still queued (their replies are dropped); the queued pushes are dropped
        // (the next start fetches them by difference), so `queued` goes back to 0.
        self.intake.close();
        self.control.close();
        driver.waiters.clear();
        while let Ok(command) = self.control.try_recv() {
            drop(command);
        }
        let mut unread = 0;
        while let Ok(input) = self.intake.try_recv() {
            unread += input.pushes();
        }
        driver.release(unread);

        // Handlers get the grace to finish what was dispatched; then the workers are stopped
        // wherever they are, and only what was handled is acknowledged (and so persisted).
        let deadline = Instant::now() + self.config.shutdown_grace;
        let mut finished = tokio::time::timeout_at(deadline, driver.drain_dispatch())
            .await
            .is_ok();
        driver.stream.shutdown();
        finished = finished
            && tokio::time::timeout_at(deadline, driver.stream.drained())
                .await
                .is_ok();
        if !finished {
            tracing::warn!(grace = ?self.config.shutdown_grace, "handlers still busy after the shutdown grace: stopping them");
            worker_tasks.abort_all();
        }
        while worker_tasks.join_next().await.is_some() {}
        driver.settle_all();
        let abandoned = driver.backlog_len as u64
            + driver
                .stream
                .stats()
                .shards
                .iter()
                .map(|shard| shard.lost)
                .sum::<u64>();
        driver.publish();

        // The final commits were queued by the drain; close the queue and let the writer
        // finish it, within the deadline.
        drop(driver.writes.take());
        let persisted = tokio::time::timeout(self.config.shutdown_timeout, &mut writer)
            .await
            .is_ok();
        if !persisted {
            counters.commits_failed.incr();
            tracing::error!(timeout = ?self.config.shutdown_timeout, "final commits not persisted before the shutdown deadline");
        }
        let summary = Summary {
            stats: self.handle.stats(),
            state: driver.engine.state(),
            persisted,
            abandoned,
        };
        tracing::info!(?summary.state, persisted, "manager stopped");
        match outcome {
            Ok(()) => Ok(summary),
            Err(message) => Err(RunError::Unauthorized { message }),
        }
    }

    /// The stored snapshot, retrying while storage is unavailable; `None` if shut down first.
    async fn load(
        &self,
        cancel: &CancellationToken,
        jitter: &mut Jitter,
    ) -> Result<Option<sync_storage::Snapshot>, RunError> {
        let mut attempt = 0;
        loop {
            let error = tokio::select! {
                () = cancel.cancelled() => return Ok(None),
                loaded = self.storage.load(self.account) => match loaded {
                    Ok(snapshot) => return Ok(Some(snapshot)),
                    Err(error) if error.is_unavailable() || error.is_ambiguous() => error,
                    Err(error) => return Err(RunError::Storage(error)),
                },
            };
            let delay = jitter.backoff(Policy::storage(&self.config), attempt);
            attempt += 1;
            tracing::warn!(%error, ?delay, "cannot load the stored state; retrying");
            tokio::select! {
                () = cancel.cancelled() => return Ok(None),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
}

fn unreachable_writer_end() -> Result<(), String> {
    // The driver holds the writer's queue until it returns, so the writer cannot end first; if
    // it ever did, stopping cleanly is the safe reaction.
    tracing::error!("the storage writer ended before the manager");
    Ok(())
}

/// Clears `running` however the run ends (a dropped future included).
struct RunningGuard(Arc<Shared>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
    }
}

/// The current instant on tokio's clock (paused in tests), as the engine takes it.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// What goes through the dispatch: an update with its batch's entities, or a notice.
enum Dispatch<U, E> {
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
            Self::Notice(notice) => notice.peer(),
        }
    }
}

/// One shard's observer: calls the shared handler and counts its errors.
struct Dispatcher<H> {
    handler: Arc<H>,
    counters: Arc<Counters>,
    /// The manager's [`Shared::id`] and this shard, set in [`HANDLING`] around handler calls.
    manager: u64,
    shard: usize,
}

impl<U, E, H> AsyncObserver<Dispatch<U, E>> for Dispatcher<H>
where
    U: Send + 'static,
    E: Send + Sync + 'static,
    H: Handler<U, E>,
{
    async fn handle(&mut self, event: Dispatch<U, E>) {
        let here = (self.manager, self.shard);
        match event {
            Dispatch::Update {
                update, entities, ..
            } => {
                let handled = HANDLING.scope(here, self.handler.handle(update, entities));
                if let Err(error) = handled.await {
                    self.counters.handler_errors.incr();
                    tracing::warn!(%error, "update handler failed; the update counts as handled");
                }
            }
            Dispatch::Notice(notice) => HANDLING.scope(here, self.handler.notice(notice)).await,
        }
    }
}

/// A request's reply.
enum Reply<U, E> {
    State(State),
    Difference(Difference<U, E>),
    Channel(ChannelDifference<U, E>),
}

/// Whose retry counter a request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Target {
    Common,
    Channel(ChannelId),
}

type Done<U, E> = (RequestId, Target, Result<Reply<U, E>, ApiError>);
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The manager's loop state.
struct Driver<A: Api, S> {
    account: AccountId,
    api: Arc<A>,
    storage: Arc<S>,
    config: Config,
    shared: Arc<Shared>,
    engine: Engine<UpdateOf<A>, EntitiesOf<A>>,
    stream: EventStream<Dispatch<UpdateOf<A>, EntitiesOf<A>>>,
    /// The writer's queue; `None` once closed at shutdown.
    writes: Option<mpsc::UnboundedSender<Write>>,
    requests: FuturesUnordered<BoxFuture<Done<UpdateOf<A>, EntitiesOf<A>>>>,
    /// Delivered batches and notices whose events the dispatch has not all accepted yet,
    /// oldest first. The driver never waits for the dispatch: it hands events over with
    /// `try_send`, in the order delivered, stops at the first that does not fit and retries
    /// when that shard has room (`room`).
    backlog: VecDeque<Outgoing<UpdateOf<A>, EntitiesOf<A>>>,
    /// Events in `backlog`.
    backlog_len: usize,
    /// Past this many events in the backlog (`shards × shard_capacity`), pushes are dropped
    /// at intake (and recovered by difference) and requests held back, so memory stays
    /// bounded while a handler blocks.
    backlog_bound: usize,
    /// The shard the backlog's front event waits for, while it does.
    blocked: Option<usize>,
    /// Resolves once `blocked` has room.
    room: Option<BoxFuture<()>>,
    /// Requests held back while the backlog is past its bound.
    held: Vec<Request>,
    /// Channels of the pushes dropped while the backlog was past its bound: their differences
    /// are fetched with the common one once there is room.
    dropped_channels: HashSet<ChannelId>,
    /// Dispatched batches not yet acknowledged, oldest first, with their receipts.
    dispatched: VecDeque<(BatchId, Receipt)>,
    /// Resolves once the oldest dispatched batch (the one named) was handled, or cannot be:
    /// the only wake-up the acknowledgements need, however many batches are in flight.
    waiting: Option<(BatchId, BoxFuture<Result<(), NotHandled>>)>,
    /// Consecutive failures per target, for the backoff; cleared on success.
    attempts: HashMap<Target, u32>,
    /// Access hashes learned this run (storage is read on a miss).
    hashes: HashMap<ChannelId, i64>,
    jitter: Jitter,
    /// `caught_up` callers, with the shard of the handler each called from, if any.
    waiters: Vec<(oneshot::Sender<()>, Option<usize>)>,
    /// The engine stats last looked at, for logging what changed.
    seen: sync_core::Stats,
    /// Shutting down: requests are no longer sent.
    stopping: bool,
    #[cfg(feature = "metrics")]
    gauges: crate::stats::Gauges,
}

impl<A, S> Driver<A, S>
where
    A: Api,
    S: StateStorage + AccessHashStorage + 'static,
{
    /// Most queued pushes taken per turn of the main loop before the engine is polled (a
    /// batch from [`ManagerHandle::handle_batch`] is taken whole and counts its pushes): large
    /// enough to amortise a poll, a dispatch and a commit, small enough to keep timers and
    /// replies responsive.
    const INTAKE_BATCH: usize = 8_192;

    /// The main loop. Returns `Err` with a message when the authorization is lost.
    async fn run(
        &mut self,
        intake: &mut mpsc::UnboundedReceiver<Input<UpdateOf<A>, EntitiesOf<A>>>,
        control: &mut mpsc::UnboundedReceiver<Control>,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        let sleep = tokio::time::sleep(Duration::ZERO);
        let mut sleep = std::pin::pin!(sleep);
        // The engine's first request (getState or getDifference) is waiting.
        self.drain()?;
        loop {
            let deadline = self.engine.poll_timeout();
            if let Some(at) = deadline {
                sleep.as_mut().reset(Instant::from_std(at));
            }
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    tracing::info!("shutdown requested");
                    return Ok(());
                }
                (batch, handled) = wait_handled(&mut self.waiting), if self.waiting.is_some() => {
                    self.waiting = None;
                    self.settle(Some((batch, handled)));
                }
                () = wait_room(&mut self.room), if self.room.is_some() => self.unblock(),
                Some((id, target, result)) = self.requests.next(), if !self.requests.is_empty() => {
                    self.complete(id, target, result)?;
                }
                () = &mut sleep, if deadline.is_some() => self.engine.handle_timeout(now()),
                Some(command) = control.recv() => self.command(command),
                Some(input) = intake.recv() => {
                    // One reading of the clock per round: a round takes microseconds.
                    let mut now = now();
                    let mut taken = self.input(now, input);
                    // Take whatever else is queued before polling the engine: one delivery
                    // batch, one dispatch and one commit then cover many pushes.
                    let mut rounds = 0;
                    let mut released = 0;
                    loop {
                        let before = taken;
                        while taken < Self::INTAKE_BATCH {
                            let Ok(input) = intake.try_recv() else { break };
                            taken += self.input(now, input);
                        }
                        self.release(taken - released);
                        released = taken;
                        // Let the tasks that are ready run once (the reader among them) and
                        // take what they add, and again while each round brings more: one
                        // delivery then covers many reads. A quiet intake costs one yield.
                        if taken >= Self::INTAKE_BATCH || rounds > 0 && taken == before {
                            break;
                        }
                        rounds += 1;
                        tokio::task::yield_now().await;
                        now = self::now();
                    }
                }
            }
            // Invariant (a dropped push is recovered): the flag stays set while the backlog is
            // past its bound (pushes are still being dropped), and the difference is requested
            // after the flag is seen, so the server answers from a moment that includes them.
            if !self.backlogged() && self.shared.overflowed.swap(false, Ordering::AcqRel) {
                self.shared.counters.intake_recoveries.incr();
                tracing::debug!("pushes were dropped at intake: fetching the difference");
                self.engine.request_difference(now());
                for channel_id in std::mem::take(&mut self.dropped_channels) {
                    // A channel forgotten meanwhile has nothing to fetch.
                    let _ = self.engine.request_channel_difference(channel_id);
                }
            }
            self.drain()?;
            // Batches handled meanwhile are acknowledged without waiting for a wake-up; the
            // commits that follows are queued by the next drain.
            while self.settle(None) {
                self.drain()?;
            }
            self.release_held();
            self.watch_oldest();
            self.publish();
        }
    }

    /// Feeds one intake message to the engine; returns how many pushes it carried (their room
    /// in the intake is given back by [`release`](Self::release)).
    fn input(
        &mut self,
        now: std::time::Instant,
        input: Input<UpdateOf<A>, EntitiesOf<A>>,
    ) -> usize {
        if self.backlogged() {
            return self.drop_input(input);
        }
        match input {
            Input::Updates(updates) => {
                self.push(now, updates);
                1
            }
            Input::Batch(batch) => {
                let pushes = batch.len();
                for updates in batch {
                    self.push(now, updates);
                }
                pushes
            }
            Input::Affected(affected) => {
                if let Err(error) = self.engine.handle_affected(now, affected) {
                    self.shared.counters.pushes_refused.incr();
                    // The engine fetches the difference of the sequence it names.
                    tracing::warn!(%error, "malformed affected pts refused: fetching the difference");
                }
                1
            }
            Input::SessionReset => {
                tracing::info!("session reset: fetching the difference");
                self.engine.request_difference(now);
                1
            }
        }
    }

    /// Drops an intake message while the backlog is past its bound: counted, and recovered by
    /// the difference (and the differences of the channels it carried) once there is room.
    fn drop_input(&mut self, input: Input<UpdateOf<A>, EntitiesOf<A>>) -> usize {
        let pushes = input.pushes();
        match &input {
            Input::Updates(updates) => self.note_channels(updates),
            Input::Batch(batch) => batch.iter().for_each(|u| self.note_channels(u)),
            Input::Affected(Affected::Channel { channel_id, .. }) => {
                self.dropped_channels.insert(*channel_id);
            }
            Input::Affected(_) | Input::SessionReset => {}
        }
        drop(input);
        self.shared.counters.pushes_dropped.add(pushes as u64);
        self.shared.overflowed.store(true, Ordering::Release);
        pushes
    }

    /// Remembers the channels a dropped push carried updates of.
    fn note_channels(&mut self, updates: &Updates<UpdateOf<A>, EntitiesOf<A>>) {
        let mut note = |update: &UpdateOf<A>| match update.sequence() {
            Sequence::Channel { channel_id, .. } | Sequence::ChannelTooLong { channel_id, .. } => {
                self.dropped_channels.insert(channel_id);
            }
            _ => {}
        };
        match updates {
            Updates::Short { update, .. } => note(update),
            Updates::Combined { updates, .. } => updates.iter().for_each(note),
            Updates::TooLong => {}
        }
    }

    /// Whether the backlog is past its bound: pushes are dropped and requests held back.
    fn backlogged(&self) -> bool {
        self.backlog_len > self.backlog_bound
    }

    /// Sends the requests held back, once the backlog is within its bound.
    fn release_held(&mut self) {
        if self.backlogged() || self.held.is_empty() {
            return;
        }
        for request in std::mem::take(&mut self.held) {
            self.send(request);
        }
    }

    /// Gives the room of `pushes` taken pushes back to the intake (once per round rather than
    /// per message: the count is shared with every handle).
    fn release(&self, pushes: usize) {
        if pushes == 0 {
            return;
        }
        // Saturating: every push released was added by a handle first (a manager rebuilt by
        // `with_cancellation` shares the count with earlier handles); this only guards the
        // arithmetic.
        let _ = self
            .shared
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                Some(queued.saturating_sub(pushes))
            });
    }

    /// One pushed `Updates` value into the engine.
    fn push(&mut self, now: std::time::Instant, updates: Updates<UpdateOf<A>, EntitiesOf<A>>) {
        if let Err(error) = self.engine.handle_updates(now, updates) {
            self.shared.counters.pushes_refused.incr();
            // The engine fetches the difference of every sequence the push names.
            tracing::warn!(%error, "malformed push refused: fetching the difference");
        }
    }

    fn command(&mut self, command: Control) {
        match command {
            Control::Track(channel_id, pts, reply) => {
                let _ = reply.send(self.engine.track_channel(channel_id, pts));
            }
            Control::Open(channel_id, reply) => {
                let _ = reply.send(self.engine.open_channel(channel_id));
            }
            Control::Close(channel_id) => self.engine.close_channel(channel_id),
            Control::Forget(channel_id) => self.engine.forget_channel(channel_id),
            Control::Refetch(channel_id, reply) => {
                let _ = reply.send(self.engine.request_channel_difference(channel_id));
            }
            Control::CaughtUp(reply, shard) => {
                self.engine.request_difference(now());
                self.waiters.push((reply, shard));
            }
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
    fn settle(&mut self, oldest: Option<(BatchId, Result<(), NotHandled>)>) -> bool {
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
        let mut acknowledged = false;
        while let Some((batch, receipt)) = self.dispatched.front() {
            if !self.stream.is_handled(receipt) {
                break;
            }
            match self.engine.ack(*batch) {
                Ok(()) => self.shared.counters.batches_acknowledged.incr(),
                Err(error) => tracing::error!(%error, "acknowledgement refused"),
            }
            self.dispatched.pop_front();
            acknowledged = true;
        }
        acknowledged
    }

    /// Arranges one wake-up for when the oldest dispatched batch is handled, unless one is
    /// arranged for it already; a wait for a batch that was acknowledged meanwhile is dropped.
    fn watch_oldest(&mut self) {
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
        let stream = self.stream.clone();
        let receipt = receipt.clone();
        self.waiting = Some((
            *front,
            Box::pin(async move { stream.handled(&receipt).await }),
        ));
    }

    /// A request finished: hands the reply to the engine, or classifies the failure.
    fn complete(
        &mut self,
        id: RequestId,
        target: Target,
        result: Result<Reply<UpdateOf<A>, EntitiesOf<A>>, ApiError>,
    ) -> Result<(), String> {
        let now = now();
        let error = match result {
            Ok(reply) => {
                let outcome = match reply {
                    Reply::State(state) => {
                        tracing::debug!(%id, ?state, "state fetched");
                        self.engine.handle_state(now, id, state)
                    }
                    Reply::Difference(difference) => {
                        log_difference(id, &difference);
                        self.engine.handle_difference(now, id, difference)
                    }
                    Reply::Channel(difference) => {
                        tracing::debug!(%id, channel = difference.channel_id, "channel difference fetched");
                        self.engine.handle_channel_difference(now, id, difference)
                    }
                };
                match outcome {
                    Ok(()) => {
                        self.attempts.remove(&target);
                        return Ok(());
                    }
                    // The engine no longer waits for it (the channel was forgotten meanwhile).
                    Err(sync_core::Error::UnknownRequest(_)) => return Ok(()),
                    Err(error) => {
                        self.shared.counters.replies_refused.incr();
                        tracing::warn!(%id, %error, "malformed reply refused: retrying");
                        ApiError::Transient {
                            message: error.to_string(),
                            source: None,
                        }
                    }
                }
            }
            Err(error) => error,
        };
        let failure = match error {
            ApiError::Unauthorized { message } => {
                tracing::error!(%id, %message, "authorization lost: stopping");
                return Err(message);
            }
            ApiError::ChannelInaccessible { message } if matches!(target, Target::Channel(_)) => {
                self.shared.counters.channels_closed.incr();
                tracing::warn!(%id, ?target, %message, "channel inaccessible: no longer tracked");
                Failure::ChannelInaccessible
            }
            ApiError::FloodWait { after } => {
                self.shared.counters.flood_waits.incr();
                let after = self.jitter.flood_wait(after, self.config.flood_wait_jitter);
                tracing::info!(%id, ?after, "flood wait");
                Failure::Retry { after: Some(after) }
            }
            error => {
                self.shared.counters.requests_retried.incr();
                let attempt = self.attempts.entry(target).or_insert(0);
                let after = self.jitter.backoff(Policy::api(&self.config), *attempt);
                *attempt = attempt.saturating_add(1);
                tracing::info!(%id, %error, ?after, "request failed: retrying");
                Failure::Retry { after: Some(after) }
            }
        };
        if let Err(error) = self.engine.handle_failure(now, id, failure) {
            tracing::debug!(%id, %error, "failure of a request the engine no longer waits for");
        }
        Ok(())
    }

    /// Polls the engine dry, doing what each output says. Never waits.
    fn drain(&mut self) -> Result<(), String> {
        while let Some(output) = self.engine.poll_output() {
            match output {
                Output::Deliver(batch) => self.deliver(batch),
                Output::Request(request) => self.send(request),
                Output::Commit(commit) => self.write(Write::Commit(commit)),
                Output::AccessHashes(hashes) => {
                    // The engine reports a hash when it is new or changed, not at every push.
                    let hashes: Vec<(ChannelId, i64)> = hashes
                        .into_iter()
                        .filter(|h| !h.min)
                        .map(|h| (h.channel_id, h.access_hash))
                        .collect();
                    self.hashes.extend(hashes.iter().copied());
                    self.write(Write::Hashes(hashes));
                }
                Output::DifferenceTooLong { pts } => {
                    tracing::warn!(pts, "difference too long: history skipped");
                    self.notify(Notice::DifferenceTooLong { pts });
                }
                Output::ChannelTooLong { channel_id, pts } => {
                    tracing::info!(channel_id, ?pts, "channel too long");
                    self.notify(Notice::ChannelTooLong { channel_id, pts });
                }
                Output::ChannelClosed { channel_id } => {
                    self.notify(Notice::ChannelClosed { channel_id });
                }
            }
        }
        Ok(())
    }

    fn write(&mut self, write: Write) {
        if let Some(writes) = &self.writes
            && writes.send(write).is_err()
        {
            tracing::error!("the storage writer is gone; a write was lost");
        }
    }

    /// Hands a notice to the dispatch, in order with the updates delivered before it.
    fn notify(&mut self, notice: Notice) {
        self.enqueue(None, VecDeque::from([Dispatch::Notice(notice)]));
    }

    /// Hands a batch to the dispatch and arranges its acknowledgement once handled.
    ///
    /// Invariant (commits trail handled updates): a batch is acknowledged only when its
    /// receipt says every one of its updates was handled, and the engine commits nothing past
    /// an unacknowledged batch. A batch enters `dispatched` (where it can be acknowledged)
    /// only once the dispatch accepted all its events, so its receipt covers each of them.
    fn deliver(&mut self, batch: Batch<UpdateOf<A>, EntitiesOf<A>>) {
        let Batch {
            id,
            updates,
            entities,
        } = batch;
        let entities: Arc<[EntitiesOf<A>]> = entities.into();
        let events = updates
            .into_iter()
            .map(|update| Dispatch::Update {
                key: update.peer(),
                update,
                entities: Arc::clone(&entities),
            })
            .collect();
        self.enqueue(Some(id), events);
    }

    /// Appends to the backlog and hands over what fits.
    fn enqueue(
        &mut self,
        batch: Option<BatchId>,
        events: VecDeque<Dispatch<UpdateOf<A>, EntitiesOf<A>>>,
    ) {
        self.backlog_len += events.len();
        self.backlog.push_back(Outgoing {
            batch,
            events,
            receipt: Receipt::default(),
        });
        self.flush();
    }

    /// The blocked shard has room: hand the backlog over again.
    fn unblock(&mut self) {
        self.room = None;
        self.blocked = None;
        self.flush();
    }

    /// Hands the backlog to the dispatch in order, without waiting: stops at the first event
    /// whose shard is full and arms `room` for that shard. Does nothing while blocked (the
    /// front goes first: events of one peer stay in order, and batches are acknowledged in
    /// order).
    fn flush(&mut self) {
        if self.blocked.is_some() {
            return;
        }
        while let Some(front) = self.backlog.front_mut() {
            while let Some(event) = front.events.pop_front() {
                let shard = self.stream.shard_of(&event);
                let update = matches!(event, Dispatch::Update { .. });
                match self.stream.try_send(event) {
                    Ok(receipt) => {
                        front.receipt.merge(&receipt);
                        self.backlog_len -= 1;
                        if update {
                            self.shared.counters.updates_dispatched.incr();
                        }
                    }
                    Err(SendError {
                        failure: SendFailure::Full,
                        mut unsent,
                        ..
                    }) => {
                        if let Some(event) = unsent.pop() {
                            front.events.push_front(event);
                        }
                        self.blocked = Some(shard);
                        let stream = self.stream.clone();
                        self.room = Some(Box::pin(async move { stream.room(shard).await }));
                        return;
                    }
                    Err(error) => {
                        // Only once the dispatch is shut down: what is left stays
                        // unacknowledged, so a restart delivers it again.
                        tracing::error!(failure = ?error.failure, left = self.backlog_len, "dispatch closed; the rest of the backlog is not dispatched");
                        if let Some(event) = error.unsent.into_iter().next() {
                            front.events.push_front(event);
                        }
                        return;
                    }
                }
            }
            if let Some(Outgoing {
                batch: Some(id),
                receipt,
                ..
            }) = self.backlog.pop_front()
            {
                self.dispatched.push_back((id, receipt));
            }
        }
    }

    /// Starts a request; its reply comes back through `requests`.
    fn send(&mut self, request: Request) {
        if self.stopping {
            return;
        }
        if self.backlogged() {
            // Its reply would only add to the backlog: sent once the backlog is back within
            // its bound.
            self.held.push(request);
            return;
        }
        self.shared.counters.requests_sent.incr();
        let Request { id, kind } = request;
        let api = Arc::clone(&self.api);
        let span = tracing::debug_span!("request", %id, ?kind);
        let future: BoxFuture<Done<UpdateOf<A>, EntitiesOf<A>>> = match kind {
            RequestKind::GetState => Box::pin(
                async move { (id, Target::Common, api.get_state().await.map(Reply::State)) }
                    .instrument(span),
            ),
            RequestKind::GetDifference {
                pts,
                qts,
                date,
                pts_total_limit,
            } => {
                let request = DifferenceRequest {
                    pts,
                    qts,
                    date,
                    pts_total_limit,
                };
                Box::pin(
                    async move {
                        (
                            id,
                            Target::Common,
                            api.get_difference(request).await.map(Reply::Difference),
                        )
                    }
                    .instrument(span),
                )
            }
            RequestKind::GetChannelDifference {
                channel_id,
                pts,
                limit,
            } => {
                let cached = self.hashes.get(&channel_id).copied();
                let storage = Arc::clone(&self.storage);
                let account = self.account;
                Box::pin(
                    async move {
                        let hash = match cached {
                            Some(hash) => Ok(Some(hash)),
                            None => storage.get_access_hash(account, channel_id).await,
                        };
                        let result = match hash {
                            Ok(Some(access_hash)) => {
                                let request = ChannelDifferenceRequest {
                                    channel_id,
                                    access_hash,
                                    pts,
                                    limit,
                                };
                                api.get_channel_difference(request)
                                    .await
                                    .map(Reply::Channel)
                            }
                            Ok(None) => Err(ApiError::ChannelInaccessible {
                                message: "no access hash is known".into(),
                            }),
                            Err(error) => Err(ApiError::Transient {
                                message: format!("cannot read the access hash: {error}"),
                                source: Some(Box::new(error)),
                            }),
                        };
                        (id, Target::Channel(channel_id), result)
                    }
                    .instrument(span),
                )
            }
        };
        self.requests.push(future);
    }

    /// At shutdown: hands the backlog over and waits for every dispatched batch to be handled,
    /// acknowledging each, and queues the commits that follow. No request is sent any more.
    /// Bounded by the caller (the shutdown grace).
    async fn drain_dispatch(&mut self) {
        self.stopping = true;
        self.requests.clear();
        self.held.clear();
        loop {
            // Acknowledging emits commits (and possibly notices); nothing new is delivered
            // without an input, but whatever comes is dispatched and waited for as well.
            let _ = self.drain();
            if self.settle(None) {
                continue;
            }
            self.watch_oldest();
            if self.waiting.is_none() && self.room.is_none() {
                break;
            }
            tokio::select! {
                (batch, handled) = wait_handled(&mut self.waiting), if self.waiting.is_some() => {
                    self.waiting = None;
                    self.settle(Some((batch, handled)));
                }
                () = wait_room(&mut self.room), if self.room.is_some() => self.unblock(),
            }
        }
    }

    /// Acknowledges whatever was handled and queues the commits that follow, without waiting
    /// (once the workers are gone).
    fn settle_all(&mut self) {
        self.stopping = true;
        loop {
            let _ = self.drain();
            if !self.settle(None) {
                break;
            }
        }
    }

    /// Publishes stats for the handles, resolves `caught_up` waiters and logs gap events.
    fn publish(&mut self) {
        let stats = self.engine.stats();
        // Everything the engine delivered was handed to the dispatch, and it waits for nothing.
        let handed = self.engine.is_idle() && self.backlog.is_empty() && self.held.is_empty();
        let idle = handed && stats.unacknowledged_batches == 0 && self.dispatched.is_empty();
        *self
            .shared
            .engine
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = (stats, idle);
        if !self.waiters.is_empty() {
            let blocked = self.blocked;
            // Outside handlers: caught up and handled. Inside a handler on shard `s`: handed
            // over, or waiting for room on `s` itself (see `ManagerHandle::caught_up`).
            let done = |shard: Option<usize>| match shard {
                None => idle,
                Some(shard) => handed || blocked == Some(shard),
            };
            let (ready, waiting) = std::mem::take(&mut self.waiters)
                .into_iter()
                .partition(|(_, shard)| done(*shard));
            self.waiters = waiting;
            for (reply, _) in ready {
                let _ = reply.send(());
            }
        }
        let seen = self.seen;
        if stats.gaps_detected > seen.gaps_detected {
            tracing::debug!(
                total = stats.gaps_detected,
                buffered = stats.buffered_now,
                "gap detected"
            );
        }
        if stats.gaps_filled_by_wait > seen.gaps_filled_by_wait {
            tracing::debug!(
                total = stats.gaps_filled_by_wait,
                "gap resolved by the missing pushes"
            );
        }
        if stats.gaps_resolved_by_difference > seen.gaps_resolved_by_difference {
            tracing::debug!(
                total = stats.gaps_resolved_by_difference,
                "gap resolved by a difference"
            );
        }
        if stats.buffer_overflows > seen.buffer_overflows {
            tracing::warn!(
                total = stats.buffer_overflows,
                "gap buffer overflowed: fetching the difference"
            );
        }
        #[cfg(feature = "metrics")]
        self.gauges.set(&stats);
        self.seen = stats;
    }
}

/// Waits for the armed wait of [`Driver::watch_oldest`]; pending forever when none is armed
/// (the main loop only polls it when one is).
async fn wait_handled(
    waiting: &mut Option<(BatchId, BoxFuture<Result<(), NotHandled>>)>,
) -> (BatchId, Result<(), NotHandled>) {
    match waiting {
        Some((batch, future)) => (*batch, future.await),
        None => std::future::pending().await,
    }
}

/// Waits for the armed wait for room of [`Driver::flush`]; pending forever when none is armed.
async fn wait_room(room: &mut Option<BoxFuture<()>>) {
    match room {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

fn log_difference<U, E>(id: RequestId, difference: &Difference<U, E>) {
    match difference {
        Difference::Empty { .. } => tracing::debug!(%id, "difference fetched: empty"),
        Difference::Difference {
            updates,
            state,
            slice,
            ..
        } => {
            tracing::debug!(%id, updates = updates.len(), ?state, slice, "difference fetched");
        }
        Difference::TooLong { pts } => tracing::debug!(%id, pts, "difference fetched: too long"),
    }
}
