//! The manager's loop: intake turns (queued pushes fed to the engine, many per poll), control
//! commands, the engine's requests and their replies, timers, commits handed to the writer,
//! and the stats published for the handles.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use sync_core::{
    ChannelDifference, ChannelId, Difference, Engine, Failure, Notice, Output, Request, RequestId,
    RequestKind, State, Updates,
};
use sync_storage::{AccessHashStorage, AccountId, StateStorage};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::api::{
    Api, ApiError, ChannelDifferenceRequest, DifferenceRequest, EntitiesOf, UpdateOf,
};
use crate::backoff::{Jitter, Policy};
use crate::config::ManagerConfig;
use crate::dispatch::{Backlog, BoxFuture, Sink};
use crate::handle::{Control, Input, Shared, mailbox};
use crate::writer::Write;

/// The current instant on tokio's clock (paused in tests), as the engine takes it.
pub(crate) fn now() -> std::time::Instant {
    Instant::now().into_std()
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

/// The manager's loop state: what it feeds the engine, the requests in flight, and what it
/// does with the engine's outputs.
pub(crate) struct Driver<A: Api, S> {
    account: AccountId,
    api: Arc<A>,
    storage: Arc<S>,
    config: Arc<ManagerConfig>,
    shared: Arc<Shared>,
    engine: Engine<UpdateOf<A>, EntitiesOf<A>>,
    /// The hand-over to the dispatch and the acknowledgements of what was handled.
    backlog: Backlog<UpdateOf<A>, EntitiesOf<A>>,
    /// The writer's queue; `None` once closed at shutdown.
    writes: Option<mailbox::Sender<Write>>,
    requests: FuturesUnordered<BoxFuture<Done<UpdateOf<A>, EntitiesOf<A>>>>,
    /// A full intake waiting on a backlog past its bound: the timer of the watch's end (boxed,
    /// so that the driver holds room for it only while a stall is watched), and how many
    /// events the backlog had handed over when it began.
    stall: Option<(Pin<Box<Sleep>>, u64)>,
    /// Requests held back while the backlog is past its bound.
    held: Vec<Request>,
    /// Consecutive failures per target, for the backoff; cleared on success.
    attempts: HashMap<Target, u32>,
    /// Access hashes learned this run (storage is read on a miss).
    hashes: HashMap<ChannelId, i64>,
    jitter: Jitter,
    /// `caught_up` callers, with the shard of the handler each called from, if any.
    waiters: Vec<(oneshot::Sender<()>, Option<usize>)>,
    /// The gap counters of the engine stats last looked at, for logging what changed.
    seen: Gaps,
    /// Shutting down: requests are no longer sent.
    stopping: bool,
    /// The engine's stats as last exported to `metrics`.
    metrics: crate::stats::EngineMetrics,
}

impl<A, S> Driver<A, S>
where
    A: Api,
    S: StateStorage + AccessHashStorage + 'static,
{
    /// A driver of `engine` that dispatches through `sink` and queues its writes on `writes`.
    #[expect(
        clippy::too_many_arguments,
        reason = "each is a separate piece the manager built"
    )]
    pub(crate) fn new(
        account: AccountId,
        api: Arc<A>,
        storage: Arc<S>,
        config: Arc<ManagerConfig>,
        shared: Arc<Shared>,
        engine: Engine<UpdateOf<A>, EntitiesOf<A>>,
        sink: Sink<UpdateOf<A>, EntitiesOf<A>>,
        writes: mailbox::Sender<Write>,
        jitter: Jitter,
    ) -> Self {
        let bound = sink.bound(&config);
        let backlog = Backlog::new(sink, Arc::clone(&shared.counters), bound);
        let metrics = shared.counters.engine_metrics();
        Self {
            account,
            api,
            storage,
            config,
            shared,
            engine,
            backlog,
            writes: Some(writes),
            requests: FuturesUnordered::new(),
            held: Vec::new(),
            stall: None,
            attempts: HashMap::new(),
            hashes: HashMap::new(),
            jitter,
            waiters: Vec::new(),
            seen: Gaps::default(),
            stopping: false,
            metrics,
        }
    }

    /// The hand-over to the dispatch.
    pub(crate) fn backlog(&mut self) -> &mut Backlog<UpdateOf<A>, EntitiesOf<A>> {
        &mut self.backlog
    }

    /// The shutdown grace ran out: acknowledges what was handled, then stops the handlers
    /// still busy in a pool (see [`Backlog::stop`]).
    pub(crate) fn stop_handlers(&mut self) {
        self.settle_all();
        self.backlog.stop();
    }

    /// Updates and notices taken for dispatch whose handling never finished (see
    /// [`Summary::abandoned`](crate::Summary::abandoned)).
    pub(crate) fn abandoned(&self) -> u64 {
        self.backlog.abandoned()
    }

    /// The common state the engine has applied.
    pub(crate) fn state(&self) -> Option<State> {
        self.engine.state()
    }

    /// Drops the `caught_up` callers' replies: their calls fail with `Stopped`.
    pub(crate) fn drop_waiters(&mut self) {
        self.waiters.clear();
    }

    /// Closes the writer's queue: the writer finishes what is queued, then ends.
    pub(crate) fn close_writes(&mut self) {
        drop(self.writes.take());
    }

    /// Most queued pushes taken per turn of the main loop before the engine is polled (a
    /// batch from [`ManagerHandle::push_batch`](crate::ManagerHandle::push_batch) is taken
    /// whole and counts its pushes): large enough to amortise a poll, a dispatch and a commit,
    /// small enough to keep timers and replies responsive.
    const INTAKE_BATCH: usize = 8_192;

    /// How long a full intake waits on a backlog that hands nothing over before it is
    /// emptied (see [`shed`](Self::shed)).
    const STALL: Duration = Duration::from_secs(1);

    /// The main loop. Returns `Err` with a message when the authorization is lost.
    pub(crate) async fn run(
        &mut self,
        intake: &mut mailbox::Receiver<Input<UpdateOf<A>, EntitiesOf<A>>>,
        control: &mut mailbox::Receiver<Control>,
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
                wake = self.backlog.wake(), if self.backlog.is_armed() => {
                    self.backlog.woke(&mut self.engine, wake);
                }
                Some((id, target, result)) = self.requests.next(), if !self.requests.is_empty() => {
                    self.complete(id, target, result)?;
                }
                () = &mut sleep, if deadline.is_some() => self.engine.handle_timeout(now()),
                Some(command) = control.recv() => self.command(command),
                // Past its bound the backlog takes no more pushes: they wait in the intake,
                // where a reader watching `queued` sees them and holds back.
                () = self.shared.full.notified(), if self.backlog.backlogged() => {
                    self.watch_stall();
                }
                () = stall_over(&mut self.stall), if self.stall.is_some() => {
                    self.stall_check(intake);
                }
                Some(input) = intake.recv(), if !self.backlog.backlogged() => {
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
                            let Some(input) = intake.try_recv() else { break };
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
            if !self.backlog.backlogged() && self.shared.overflowed.swap(false, Ordering::AcqRel) {
                self.shared.counters.intake_recoveries.incr();
                tracing::debug!("pushes were dropped at intake: fetching the difference");
                self.engine.request_difference(now());
                let channels = std::mem::take(
                    &mut *self
                        .shared
                        .dropped_channels
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner),
                );
                for channel_id in channels {
                    // A channel forgotten meanwhile has nothing to fetch.
                    let _ = self.engine.request_channel_difference(channel_id);
                }
            }
            self.drain()?;
            // Batches handled meanwhile are acknowledged without waiting for a wake-up; the
            // commits that follows are queued by the next drain.
            while self.backlog.settle(&mut self.engine, None) {
                self.drain()?;
            }
            self.release_held();
            self.backlog.watch_oldest();
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

    /// Whether the intake is full.
    fn intake_full(&self) -> bool {
        self.shared.queued.load(Ordering::Acquire) >= self.shared.capacity
    }

    /// The intake filled while the backlog is past its bound: watch whether the backlog is
    /// slow (it hands events over meanwhile) or stuck (a handler blocks, perhaps one that
    /// waits for room in this very intake).
    fn watch_stall(&mut self) {
        if self.stall.is_none() && self.intake_full() {
            let over = Box::pin(tokio::time::sleep_until(Instant::now() + Self::STALL));
            self.stall = Some((over, self.backlog.handed()));
        }
    }

    /// A stall watch is over: a backlog that handed nothing over while the intake stayed
    /// full is stuck, and the intake is emptied; otherwise the watch starts again if the
    /// intake is still full.
    fn stall_check(&mut self, intake: &mut mailbox::Receiver<Input<UpdateOf<A>, EntitiesOf<A>>>) {
        let Some((_, handed)) = self.stall.take() else {
            return;
        };
        if !self.backlog.backlogged() || !self.intake_full() {
            return;
        }
        if self.backlog.handed() == handed {
            self.shed(intake);
        } else {
            self.watch_stall();
        }
    }

    /// The intake is full and the backlog stuck: empties the intake, dropping what it held, so
    /// that a caller waiting for room (a handler, perhaps the very one whose shard holds the
    /// backlog up) gets it.
    fn shed(&mut self, intake: &mut mailbox::Receiver<Input<UpdateOf<A>, EntitiesOf<A>>>) {
        let mut dropped = 0;
        while let Some(input) = intake.try_recv() {
            dropped += self.drop_input(input);
        }
        self.release(dropped);
    }

    /// Drops an intake message while the backlog is stuck: counted, and recovered by the
    /// difference (and the differences of the channels it carried) once there is room.
    fn drop_input(&mut self, input: Input<UpdateOf<A>, EntitiesOf<A>>) -> usize {
        let pushes = input.pushes();
        input.drop_recovered(&self.shared);
        pushes
    }

    /// Sends the requests held back, once the backlog is within its bound.
    fn release_held(&mut self) {
        if self.backlog.backlogged() || self.held.is_empty() {
            return;
        }
        for request in std::mem::take(&mut self.held) {
            self.send(request);
        }
    }

    /// Gives the room of `pushes` taken pushes back to the intake (once per round rather than
    /// per message: the count is shared with every handle).
    pub(crate) fn release(&self, pushes: usize) {
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
            Control::ChannelPts(channel_id, reply) => {
                let _ = reply.send(self.engine.channel_pts(channel_id));
            }
            Control::CaughtUp(reply, shard) => {
                self.engine.request_difference(now());
                self.waiters.push((reply, shard));
            }
        }
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
                Output::Deliver(batch) => self.backlog.deliver(batch),
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
                Output::Notice(notice) => {
                    match notice {
                        Notice::DifferenceTooLong { pts } => {
                            tracing::warn!(pts, "difference too long: history skipped");
                        }
                        Notice::ChannelTooLong { channel_id, pts } => {
                            tracing::info!(channel_id, ?pts, "channel too long");
                        }
                        _ => tracing::info!(?notice, "notice"),
                    }
                    self.backlog.notify(notice);
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

    /// Starts a request; its reply comes back through `requests`.
    fn send(&mut self, request: Request) {
        if self.stopping {
            return;
        }
        if self.backlog.backlogged() {
            // Its reply would only add to the backlog: sent once the backlog is back within
            // its bound.
            self.held.push(request);
            return;
        }
        self.shared.counters.requests_sent.incr();
        let timer = self.shared.counters.request_timer(&request.kind);
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
        self.requests.push(timer.time(future));
    }

    /// At shutdown: hands the backlog over and waits for every dispatched batch to be handled,
    /// acknowledging each, and queues the commits that follow. No request is sent any more.
    /// Bounded by the caller (the shutdown grace).
    pub(crate) async fn drain_dispatch(&mut self) {
        self.stopping = true;
        self.requests.clear();
        self.held.clear();
        loop {
            // Acknowledging emits commits (and possibly notices); nothing new is delivered
            // without an input, but whatever comes is dispatched and waited for as well.
            let _ = self.drain();
            if self.backlog.settle(&mut self.engine, None) {
                continue;
            }
            self.backlog.watch_oldest();
            if !self.backlog.is_armed() {
                break;
            }
            let wake = self.backlog.wake().await;
            self.backlog.woke(&mut self.engine, wake);
        }
    }

    /// Acknowledges whatever was handled and queues the commits that follow, without waiting
    /// (once the workers are gone).
    pub(crate) fn settle_all(&mut self) {
        self.stopping = true;
        loop {
            let _ = self.drain();
            if !self.backlog.settle(&mut self.engine, None) {
                break;
            }
        }
    }

    /// Publishes stats for the handles, resolves `caught_up` waiters and logs gap events.
    pub(crate) fn publish(&mut self) {
        let stats = self.engine.stats();
        // Everything the engine delivered was handed to the dispatch, and it waits for nothing.
        let handed = self.engine.is_idle() && self.backlog.is_empty() && self.held.is_empty();
        let idle = handed && stats.unacknowledged_batches == 0 && self.backlog.is_settled();
        *self
            .shared
            .engine
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = (stats, idle);
        *self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = self.engine.state();
        if !self.waiters.is_empty() {
            let blocked = self.backlog.blocked();
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
        self.metrics.publish(&stats);
        self.seen = Gaps::of(&stats);
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

/// Waits until the stall watch `stall` is over; pending forever without one (the main loop
/// only polls it when there is one).
async fn stall_over(stall: &mut Option<(Pin<Box<Sleep>>, u64)>) {
    match stall {
        Some((over, _)) => over.as_mut().await,
        None => std::future::pending().await,
    }
}

/// The gap counters of [`sync_core::Stats`] that [`Driver::publish`] logs the changes of.
#[derive(Debug, Clone, Copy, Default)]
struct Gaps {
    gaps_detected: u64,
    gaps_filled_by_wait: u64,
    gaps_resolved_by_difference: u64,
    buffer_overflows: u64,
}

impl Gaps {
    fn of(stats: &sync_core::Stats) -> Self {
        Self {
            gaps_detected: stats.gaps_detected,
            gaps_filled_by_wait: stats.gaps_filled_by_wait,
            gaps_resolved_by_difference: stats.gaps_resolved_by_difference,
            buffer_overflows: stats.buffer_overflows,
        }
    }
}
