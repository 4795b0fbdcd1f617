//! The per-account manager: its construction, [`Manager::run`] (loading the stored state,
//! building the engine, the dispatch and the storage writer around the driver loop) and the
//! shutdown sequence, with what a run ends in ([`Summary`], [`RunError`]).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use sync_core::{Engine, State};
use sync_events::ObserverPanic;
use sync_storage::{AccessHashStorage, AccountId, FencingToken, LeaseStorage, StateStorage};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::api::{Api, EntitiesOf, UpdateOf};
use crate::backoff::{Jitter, Policy};
use crate::config::{BadStatePolicy, ManagerConfig};
use crate::dispatch::{Dispatcher, HANDLING, MANAGER_IDS, Sink};
use crate::driver::{Driver, now};
use crate::handle::{Control, Input, ManagerHandle, Shared, mailbox};
use crate::handler::Handler;
use crate::lease::{self, Fence, Fencing, Held, LeaseConfig, LeaseLoss};
use crate::pool::DispatchPool;
use crate::stats::{Counters, Stats};
use crate::writer::{Write, Writer};

/// Why [`Manager::run`] stopped other than by a shutdown.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The stored state could not be read at startup, or deleted under
    /// [`BadStatePolicy::StartFresh`](crate::BadStatePolicy::StartFresh) (and retrying would
    /// not help). A corrupt state ends here only under
    /// [`BadStatePolicy::Stop`](crate::BadStatePolicy::Stop).
    #[error("cannot load the stored state: {0}")]
    Storage(#[source] sync_storage::Error),
    /// The stored state is invalid (negative numbers, a bad channel id), under
    /// [`BadStatePolicy::Stop`](crate::BadStatePolicy::Stop).
    #[error("the stored state is invalid: {0}")]
    InvalidState(#[source] sync_core::Error),
    /// The dispatch could not be built (zero shards or zero capacity in the [`ManagerConfig`]).
    #[error("invalid dispatch configuration: {0}")]
    Dispatch(#[source] sync_events::ConfigError),
    /// The API reported the authorization lost. The manager drained its dispatch and
    /// persisted what was handled before stopping.
    #[error("authorization lost: {message}")]
    Unauthorized {
        /// The error the API reported.
        message: String,
    },
    /// The account's lease was lost ([`Manager::with_lease`]): another owner took the account
    /// over, or the lease could not be renewed in time. The manager stopped at once: its
    /// handlers were stopped, nothing more was dispatched, and storage refuses whatever it
    /// would still commit. The new owner resumes from the stored state, so what this manager
    /// handled but had not persisted is delivered again there.
    #[error("account lease (token {token}) lost: {loss}")]
    LeaseLost {
        /// The token the manager held.
        token: FencingToken,
        /// How it was lost.
        loss: LeaseLoss,
    },
}

impl RunError {
    /// Whether starting the manager again may succeed without an operator: a lease that ran
    /// out while storage was unreachable (it may be acquired again), or storage that could not
    /// be reached. Not a lost authorization, invalid state or configuration, nor a lease
    /// another owner took over.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::LeaseLost { loss, .. } => matches!(loss, LeaseLoss::Expired { .. }),
            Self::Storage(error) => error.is_unavailable() || error.is_ambiguous(),
            Self::InvalidState(_) | Self::Dispatch(_) | Self::Unauthorized { .. } => false,
        }
    }
}

/// What was wrong with stored state that could not be used (see
/// [`ManagerConfig::on_bad_state`]): handed to
/// [`Handler::state_discarded`](crate::Handler::state_discarded) when it was thrown away.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BadState {
    /// Storage could not read it: a stored value does not parse
    /// ([`sync_storage::Error::Corrupt`]).
    #[error("the stored state cannot be read: {0}")]
    Unreadable(#[source] sync_storage::Error),
    /// It was read, but holds invalid numbers (a negative pts, a bad channel id).
    #[error("the stored state is invalid: {0}")]
    Invalid(#[source] sync_core::Error),
}

impl From<BadState> for RunError {
    fn from(bad: BadState) -> Self {
        match bad {
            BadState::Unreadable(error) => Self::Storage(error),
            BadState::Invalid(error) => Self::InvalidState(error),
        }
    }
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
    /// the handlers were still busy when [`ManagerConfig::shutdown_grace`] ran out and were stopped
    /// (or the dispatch was gone). 0 means everything dispatched was handled. What was not
    /// handled was not acknowledged either, so `state` and storage stop before it and the next
    /// start delivers it again.
    pub abandoned: u64,
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
    /// Shared with the driver (one copy per manager rather than one in each part).
    config: Arc<ManagerConfig>,
    shared: Arc<Shared>,
    intake: mailbox::Receiver<Input<UpdateOf<A>, EntitiesOf<A>>>,
    control: mailbox::Receiver<Control>,
    handle: ManagerHandle<UpdateOf<A>, EntitiesOf<A>>,
    /// Boxed: the run future holds the manager, and most managers have no lease config.
    ownership: Option<Box<Ownership>>,
    /// The shared dispatch, if the manager runs on one (see [`Manager::with_pool`]).
    pool: Option<DispatchPool>,
}

/// The lease a manager runs under.
enum Ownership {
    /// The manager acquires the lease itself (waiting as a standby), renews and releases it.
    Own(LeaseConfig, Arc<dyn Fencing>),
    /// Someone else (a fleet) acquired the lease and keeps it renewed; the manager fences its
    /// commits with it and stops when it is lost.
    Given(Fence),
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
    /// [`ManagerConfig`].
    pub fn new(account: AccountId, api: A, storage: S, handler: H) -> Self {
        Self::with_config(account, api, storage, handler, ManagerConfig::default())
    }

    /// The same with a [`ManagerConfig`]. Shared API clients, storages and handlers work too:
    /// [`Api`], the storage traits and [`Handler`] are implemented for `Arc<_>`.
    pub fn with_config(
        account: AccountId,
        api: A,
        storage: S,
        handler: H,
        config: ManagerConfig,
    ) -> Self {
        // Unbounded as a channel: the intake's bound is counted in pushes by `Shared::queued`.
        let (intake_tx, intake) = mailbox::channel();
        let (control_tx, control) = mailbox::channel();
        let shared = Arc::new(Shared {
            id: MANAGER_IDS.fetch_add(1, Ordering::Relaxed),
            counters: Arc::new(Counters::new(account, &config.metrics)),
            engine: Mutex::new((sync_core::Stats::default(), false)),
            state: Mutex::new(None),
            overflowed: Arc::new(AtomicBool::new(false)),
            queued: Arc::new(AtomicUsize::new(0)),
            full: Arc::new(Notify::new()),
            dropped_channels: Arc::default(),
            capacity: config.intake_capacity.max(1),
            running: AtomicBool::new(false),
            cancel: CancellationToken::new(),
            token: AtomicU64::new(0),
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
            config: shared_config(config),
            shared,
            intake,
            control,
            handle,
            ownership: None,
            pool: None,
        }
    }

    /// Runs the manager under the account's lease, so that at most one manager (in any
    /// process sharing the storage) runs the account at a time.
    ///
    /// [`run`](Self::run) then first acquires the lease, waiting as a standby while another
    /// owner holds it: it takes over as soon as that owner releases it (a clean shutdown, seen
    /// within [`LeaseConfig::standby_poll`]) or once its lease expires (a crash: within
    /// [`LeaseConfig::ttl`]). Only then does it load the stored state, so it resumes where the
    /// previous owner's last commit left off. While running it renews the lease every
    /// [`LeaseConfig::renew_every`] and fences every commit with the lease's token
    /// ([`LeaseStorage::apply_fenced`]); the token is available to handlers through
    /// [`ManagerHandle::fencing_token`]. If the lease is lost (another owner took over, or it
    /// could not be renewed within its ttl) the manager stops at once and `run` returns
    /// [`RunError::LeaseLost`]. A clean shutdown releases the lease after the final commits.
    #[must_use]
    pub fn with_lease(mut self, config: LeaseConfig) -> Self
    where
        S: LeaseStorage,
    {
        let fencing: Arc<dyn Fencing> = Arc::new(Arc::clone(&self.storage));
        self.ownership = Some(Box::new(Ownership::Own(config, fencing)));
        self
    }

    /// Runs the manager under a lease someone else acquired and keeps renewed (a fleet): the
    /// commits are fenced with it, and the manager stops once `held` is marked lost.
    pub(crate) fn with_held_lease(mut self, held: Arc<Held>) -> Self
    where
        S: LeaseStorage,
    {
        let fencing: Arc<dyn Fencing> = Arc::new(Arc::clone(&self.storage));
        self.ownership = Some(Box::new(Ownership::Given(Fence { fencing, held })));
        self
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
            state: Mutex::new(None),
            overflowed: Arc::clone(&self.shared.overflowed),
            queued: Arc::clone(&self.shared.queued),
            full: Arc::clone(&self.shared.full),
            dropped_channels: Arc::clone(&self.shared.dropped_channels),
            capacity: self.shared.capacity,
            running: AtomicBool::new(false),
            cancel: token,
            token: AtomicU64::new(0),
        });
        self.handle.shared = Arc::clone(&shared);
        self.shared = shared;
        self
    }

    /// Dispatches through `pool`, shared with other managers, instead of a dispatch of its own
    /// ([`ManagerConfig::shards`] and [`ManagerConfig::shard_capacity`] are then unused: the
    /// pool's shards and capacity bound the backlog). An idle manager on a pool costs no task
    /// besides its own run. See [`DispatchPool`] for what is shared and what stays per manager.
    ///
    /// ```
    /// # use sync_runtime::{DispatchPool, Manager};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
    /// # runtime.block_on(async {
    /// # use sync_core::{ChannelDifference, Difference, Sequence, State, Update};
    /// # use sync_runtime::{Api, ApiError, BoxError, ChannelDifferenceRequest, DifferenceRequest, Handler, Peer, PeerKey};
    /// # #[derive(Debug, Clone)]
    /// # struct Message { chat: i64, pts: i32 }
    /// # impl Update for Message {
    /// #     fn sequence(&self) -> Sequence { Sequence::Common { pts: self.pts, pts_count: 1 } }
    /// # }
    /// # impl Peer for Message {
    /// #     fn peer(&self) -> Option<PeerKey> { Some(PeerKey::Chat(self.chat)) }
    /// # }
    /// # struct Client;
    /// # impl Api for Client {
    /// #     type Update = Message;
    /// #     type Entities = ();
    /// #     async fn get_state(&self) -> Result<State, ApiError> {
    /// #         Ok(State { pts: 1, qts: 1, date: 1, seq: 1 })
    /// #     }
    /// #     async fn get_difference(&self, r: DifferenceRequest) -> Result<Difference<Message>, ApiError> {
    /// #         Ok(Difference::Empty { date: r.date, seq: 1 })
    /// #     }
    /// #     async fn get_channel_difference(&self, _: ChannelDifferenceRequest)
    /// #         -> Result<ChannelDifference<Message>, ApiError> {
    /// #         Err(ApiError::rpc(400, "CHANNEL_INVALID"))
    /// #     }
    /// # }
    /// # struct Bot;
    /// # impl Handler<Message, ()> for Bot {
    /// #     async fn handle(&self, _: Message, _: std::sync::Arc<[()]>) -> Result<(), BoxError> { Ok(()) }
    /// # }
    /// let pool = DispatchPool::new(8, 1_024)?;
    /// let mut runs = Vec::new();
    /// for account in 1..=3 {
    ///     let storage = sync_storage::MemoryStorage::new();
    ///     let manager = Manager::new(account, Client, storage, Bot).with_pool(&pool);
    ///     let handle = manager.handle();
    ///     runs.push((handle, tokio::spawn(manager.run())));
    /// }
    /// for (handle, run) in runs {
    ///     handle.caught_up().await?;
    ///     handle.shutdown();
    ///     assert_eq!(run.await??.abandoned, 0);
    /// }
    /// pool.shutdown();
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// # })
    /// # }
    /// ```
    #[must_use]
    pub fn with_pool(mut self, pool: &DispatchPool) -> Self {
        self.pool = Some(pool.clone());
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
    /// the first run or when [`ManagerConfig::catch_up`] is off; stored state that cannot be
    /// used is handled as [`ManagerConfig::on_bad_state`] says. Then feeds pushes to the
    /// engine, executes its requests, dispatches its deliveries and persists its commits. On shutdown it stops intake (commands and queued
    /// pushes fail or are dropped; a later start fetches them by difference), abandons
    /// in-flight requests, and waits for the handlers to finish what was dispatched, for at
    /// most [`ManagerConfig::shutdown_grace`]; handlers still busy then are stopped (their tasks
    /// aborted, or on a [`DispatchPool`] their futures dropped; counted in [`Summary::abandoned`]). It persists what was handled and returns.
    ///
    /// Dropping the future instead is a crash: nothing more is handled or written, and a
    /// restart from storage redelivers at most what was not yet acknowledged.
    pub fn run(self) -> impl Future<Output = Result<Summary, RunError>> {
        let span = tracing::info_span!("sync_manager", account = self.account);
        // Not an `async fn`: its future would hold the manager a second time beside
        // `run_inner`'s, for as long as the manager runs.
        self.run_inner().instrument(span)
    }

    async fn run_inner(mut self) -> Result<Summary, RunError> {
        self.shared.running.store(true, Ordering::Release);
        let _running = RunningGuard(Arc::clone(&self.shared));
        let jitter = Jitter::new(self.config.jitter_seed);
        match self.ownership.take() {
            None => self.serve(None, jitter).await,
            // Boxed: the future would otherwise hold room for the lease's waits and state
            // beside the serving future, with or without a lease.
            Some(ownership) => Box::pin(self.leased(*ownership, jitter)).await,
        }
    }

    /// The run under a lease: acquired first (unless given), fenced, released after a clean
    /// stop.
    async fn leased(
        &mut self,
        ownership: Ownership,
        mut jitter: Jitter,
    ) -> Result<Summary, RunError> {
        let cancel = self.shared.cancel.clone();
        // Ownership first: the stored state is only read once the lease is ours, so it is the
        // state the previous owner left.
        let (fence, own) = match ownership {
            Ownership::Given(fence) => (fence, None),
            Ownership::Own(config, fencing) => {
                // Boxed, like every wait of the run other than the main loop's: a future holds
                // room for the largest of its waits, and an idle manager should only hold the
                // main loop's.
                let Some(held) =
                    Box::pin(self.standby(&config, &fencing, &cancel, &mut jitter)).await?
                else {
                    return Ok(self.stopped());
                };
                let renewal = tokio::spawn(lease::keep_renewed(
                    Arc::clone(&fencing),
                    Arc::clone(&held),
                    config.clone(),
                ));
                (Fence { fencing, held }, Some(AbortOnDrop(renewal)))
            }
        };
        let token = fence.held.lease.token;
        lease::publish_token(&self.shared.token, Some(token));
        let lost = |held: &Held| RunError::LeaseLost {
            token,
            loss: held.loss().unwrap_or(LeaseLoss::Expired {
                last_error: "lost".into(),
            }),
        };
        // A lost lease stops everything at once: dropping the serving future aborts the
        // dispatch workers (handlers included) and the writer, as a crash would, so nothing
        // more is handled beside the new owner; storage would refuse the commits anyway.
        let outcome = tokio::select! {
            // Boxed, like every wait of the run other than the main loop's.
            outcome = Box::pin(self.serve(Some(fence.clone()), jitter)) => outcome,
            () = fence.held.lost.cancelled() => Err(lost(&fence.held)),
        };
        lease::publish_token(&self.shared.token, None);
        if fence.held.lost.is_cancelled() {
            return Err(lost(&fence.held));
        }
        if let Some(renewal) = own {
            drop(renewal);
            // A clean stop hands the account over at once instead of at the lease's expiry.
            let released = Box::pin(tokio::time::timeout(
                self.config.shutdown_timeout,
                fence.fencing.release(fence.held.lease.clone()),
            ))
            .await;
            match released {
                Ok(Ok(())) => tracing::info!(%token, "account lease released"),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "account lease not released: it expires on its own")
                }
                Err(_) => {
                    tracing::warn!("account lease not released in time: it expires on its own")
                }
            }
        }
        outcome
    }

    /// A summary of a run that stopped before it started.
    fn stopped(&self) -> Summary {
        Summary {
            stats: self.handle.stats(),
            state: None,
            persisted: true,
            abandoned: 0,
        }
    }

    /// Acquires the lease, waiting as a standby while another owner holds it; `None` if shut
    /// down first.
    async fn standby(
        &self,
        config: &LeaseConfig,
        fencing: &Arc<dyn Fencing>,
        cancel: &CancellationToken,
        jitter: &mut Jitter,
    ) -> Result<Option<Arc<Held>>, RunError> {
        let mut attempt = 0;
        let mut waiting = false;
        loop {
            let sent = tokio::time::Instant::now();
            let acquired = tokio::select! {
                () = cancel.cancelled() => return Ok(None),
                acquired = fencing.acquire(self.account, Arc::clone(&config.owner), config.ttl) => acquired,
            };
            let delay = match acquired {
                Ok(sync_storage::Acquired::Held(lease)) => {
                    tracing::info!(token = %lease.token, owner = %lease.owner, "account lease acquired");
                    return Ok(Some(Held::new(lease, sent)));
                }
                Ok(sync_storage::Acquired::Busy(holder)) => {
                    if !waiting {
                        tracing::info!(holder = %holder.owner, expires_in = ?holder.expires_in, "account held by another owner: waiting as a standby");
                        waiting = true;
                    }
                    attempt = 0;
                    config
                        .standby_poll
                        .min(holder.expires_in + Duration::from_millis(1))
                }
                Err(error) if error.is_unavailable() || error.is_ambiguous() => {
                    let delay = jitter.backoff(Policy::storage(&self.config), attempt);
                    attempt += 1;
                    tracing::warn!(%error, ?delay, "cannot acquire the account lease; retrying");
                    delay
                }
                Err(error) => return Err(RunError::Storage(error)),
            };
            tokio::select! {
                () = cancel.cancelled() => return Ok(None),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Loads the state, builds the engine, the dispatch and the writer, runs the driver until
    /// shutdown and shuts down in order.
    async fn serve(&mut self, fence: Option<Fence>, jitter: Jitter) -> Result<Summary, RunError> {
        // Boxed, like the waits after the main loop: the idle future holds only what the main
        // loop needs, not the room of the start's locals (the engine before it moved into the
        // driver, the stored snapshot, the dispatch being built).
        let Some(Started {
            mut driver,
            mut worker_tasks,
            writer,
            queue,
        }) = Box::pin(self.start(fence, jitter)).await?
        else {
            return Ok(self.stopped());
        };
        // Pinned where they are made, the writer here and the main loop below: pinning a
        // future made earlier moves it, and the place it was made in would keep its room
        // in this future while the manager runs.
        let mut writer = std::pin::pin!(writer.run(queue));
        let outcome = {
            let mut main = std::pin::pin!(driver.run(
                &mut self.intake,
                &mut self.control,
                &self.shared.cancel,
            ));
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
        driver.drop_waiters();
        while let Some(command) = self.control.try_recv() {
            drop(command);
        }
        let mut unread = 0;
        while let Some(input) = self.intake.try_recv() {
            unread += input.pushes();
        }
        driver.release(unread);

        // Handlers get the grace to finish what was dispatched; then the workers are stopped
        // wherever they are, and only what was handled is acknowledged (and so persisted).
        let deadline = Instant::now() + self.config.shutdown_grace;
        let mut finished = Box::pin(tokio::time::timeout_at(deadline, driver.drain_dispatch()))
            .await
            .is_ok();
        driver.backlog().close();
        finished = finished
            && Box::pin(tokio::time::timeout_at(
                deadline,
                driver.backlog().drained(),
            ))
            .await
            .is_ok();
        if !finished {
            tracing::warn!(grace = ?self.config.shutdown_grace, "handlers still busy after the shutdown grace: stopping them");
            worker_tasks.abort_all();
            driver.stop_handlers();
        }
        while worker_tasks.join_next().await.is_some() {}
        driver.settle_all();
        let abandoned = driver.abandoned();
        driver.publish();

        // The final commits were queued by the drain; close the queue and let the writer
        // finish it, within the deadline.
        driver.close_writes();
        let persisted = Box::pin(tokio::time::timeout(
            self.config.shutdown_timeout,
            &mut writer,
        ))
        .await
        .is_ok();
        if !persisted {
            self.shared.counters.commits_failed.incr();
            tracing::error!(timeout = ?self.config.shutdown_timeout, "final commits not persisted before the shutdown deadline");
        }
        let summary = Summary {
            stats: self.handle.stats(),
            state: driver.state(),
            persisted,
            abandoned,
        };
        tracing::info!(?summary.state, persisted, "manager stopped");
        match outcome {
            Ok(()) => Ok(summary),
            Err(message) => Err(RunError::Unauthorized { message }),
        }
    }

    /// Everything before the main loop: loads the state and builds the engine (handling
    /// unusable stored state as configured), the dispatch, the writer and the driver; `None`
    /// if shut down first.
    async fn start(
        &mut self,
        fence: Option<Fence>,
        mut jitter: Jitter,
    ) -> Result<Option<Started<A, S>>, RunError> {
        let cancel = &self.shared.cancel.clone();
        let counters = &self.shared.counters;
        let now = now();
        let built = match Box::pin(self.load(cancel, &mut jitter)).await {
            Ok(Some(snapshot)) => self.engine(now, snapshot).map_err(BadState::Invalid),
            Ok(None) => return Ok(None),
            Err(RunError::Storage(error)) if error.is_corrupt() => Err(BadState::Unreadable(error)),
            Err(error) => return Err(error),
        };
        let engine = match built {
            Ok(engine) => engine,
            Err(bad) if self.config.on_bad_state == BadStatePolicy::Stop => {
                tracing::error!(%bad, "unusable stored state: stopping");
                return Err(bad.into());
            }
            Err(bad) => {
                tracing::warn!(%bad, "unusable stored state: deleting it and starting with getState");
                if !Box::pin(self.forget(cancel, &mut jitter)).await? {
                    return Ok(None);
                }
                tokio::select! {
                    () = cancel.cancelled() => return Ok(None),
                    () = Box::pin(self.handler.state_discarded(bad)) => {}
                }
                Engine::new(self.config.engine.clone(), now)
            }
        };

        let mut worker_tasks = JoinSet::new();
        let lease = fence.as_ref().map(|fence| Arc::clone(&fence.held));
        let sink = match &self.pool {
            Some(pool) => Sink::Pooled(pool.attach(
                self.shared.id,
                Arc::clone(&self.handler),
                Arc::clone(counters),
                lease,
            )),
            None => self.private_dispatch(&mut worker_tasks, lease)?,
        };

        let (writes, queue) = mailbox::channel();
        let writer = Writer {
            account: self.account,
            storage: Arc::clone(&self.storage),
            counters: Arc::clone(counters),
            retry: Policy::storage(&self.config),
            jitter: jitter.fork(),
            fence,
        };
        let driver = Driver::new(
            self.account,
            Arc::clone(&self.api),
            Arc::clone(&self.storage),
            Arc::clone(&self.config),
            Arc::clone(&self.shared),
            engine,
            sink,
            writes,
            jitter,
        );
        Ok(Some(Started {
            driver,
            worker_tasks,
            writer,
            queue,
        }))
    }

    /// The manager's own dispatch: one observer per shard over the shared handler, the workers
    /// spawned on `tasks`, which belong to the run future, so dropping it (a crash) stops them
    /// too.
    fn private_dispatch(
        &self,
        tasks: &mut JoinSet<()>,
        lease: Option<Arc<Held>>,
    ) -> Result<Sink<UpdateOf<A>, EntitiesOf<A>>, RunError> {
        let panics = Arc::clone(&self.shared.counters);
        let (stream, workers) = sync_events::Builder::new()
            .shards(self.config.shards)
            .capacity(self.config.shard_capacity)
            .on_panic(move |panic: &ObserverPanic| {
                panics.handler_panics.incr();
                tracing::error!(%panic, "update handler panicked");
            })
            .build_async(|_shard| Dispatcher {
                handler: Arc::clone(&self.handler),
                counters: Arc::clone(&self.shared.counters),
                lease: lease.clone(),
            })
            .map_err(RunError::Dispatch)?;
        // Each worker task runs with this manager and its shard in `HANDLING`, so that a
        // handler's calls on the handle know they come from inside a handler (set once per
        // task rather than around every call).
        let manager = self.shared.id;
        workers.spawn_with(|worker| {
            let here = (manager, worker.shard());
            tasks.spawn(HANDLING.scope(here, worker));
        });
        Ok(Sink::Private(stream))
    }

    /// The engine for what storage holds: resuming from the stored state (or, without
    /// [`ManagerConfig::catch_up`], starting from `getState` with the stored channels), or
    /// starting from `getState` on a first run.
    fn engine(
        &self,
        now: std::time::Instant,
        snapshot: sync_storage::Snapshot,
    ) -> Result<Engine<UpdateOf<A>, EntitiesOf<A>>, sync_core::Error> {
        let config = self.config.engine.clone();
        match snapshot.state {
            Some(state) if self.config.catch_up => {
                tracing::info!(
                    ?state,
                    channels = snapshot.channels.len(),
                    "resuming from stored state"
                );
                Engine::from_state(config, now, state, snapshot.channels)
            }
            Some(state) => {
                tracing::info!(
                    ?state,
                    channels = snapshot.channels.len(),
                    "skipping the backlog: starting with getState"
                );
                // The stored state is not used; the channels are checked as they are tracked.
                let mut engine = Engine::new(config, now);
                for (channel_id, pts) in snapshot.channels {
                    engine.track_channel(channel_id, pts)?;
                }
                Ok(engine)
            }
            None => {
                tracing::info!("no stored state: starting with getState");
                Ok(Engine::new(config, now))
            }
        }
    }

    /// Deletes the account's stored update state, retrying while storage is unavailable;
    /// `false` if shut down first.
    async fn forget(
        &self,
        cancel: &CancellationToken,
        jitter: &mut Jitter,
    ) -> Result<bool, RunError> {
        let mut attempt = 0;
        loop {
            let error = tokio::select! {
                () = cancel.cancelled() => return Ok(false),
                deleted = self.storage.delete(self.account) => match deleted {
                    Ok(()) => return Ok(true),
                    Err(error) if error.is_unavailable() || error.is_ambiguous() => error,
                    Err(error) => return Err(RunError::Storage(error)),
                },
            };
            let delay = jitter.backoff(Policy::storage(&self.config), attempt);
            attempt += 1;
            tracing::warn!(%error, ?delay, "cannot delete the stored state; retrying");
            tokio::select! {
                () = cancel.cancelled() => return Ok(false),
                () = tokio::time::sleep(delay) => {}
            }
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

/// What [`Manager::start`] built for the main loop.
struct Started<A: Api, S> {
    driver: Driver<A, S>,
    /// The workers of the manager's own dispatch (none on a pool).
    worker_tasks: JoinSet<()>,
    writer: Writer<S>,
    queue: mailbox::Receiver<Write>,
}

/// `config` in an `Arc`, shared with the managers built before with an equal one while any of
/// them is alive (a fleet's, or many built from the same settings): one copy for all of them
/// rather than one each.
fn shared_config(config: ManagerConfig) -> Arc<ManagerConfig> {
    static LAST: Mutex<Weak<ManagerConfig>> = Mutex::new(Weak::new());
    let mut last = LAST.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = last.upgrade()
        && *known == config
    {
        return known;
    }
    let config = Arc::new(config);
    *last = Arc::downgrade(&config);
    config
}

/// Aborts a spawned task when dropped (however the run ends).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Clears `running` however the run ends (a dropped future included).
struct RunningGuard(Arc<Shared>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
    }
}
