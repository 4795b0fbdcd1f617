//! Runtime-level simulation over `sync-testkit`'s simulated server (feature `testkit`).
//!
//! - [`SimulatedApi`] answers the [`Api`] calls from a [`Server`] after a latency, failing
//!   some of them (transient errors, FLOOD_WAIT, inaccessible channels, lost authorization)
//!   as [`ApiFaults`] says.
//! - [`Producer`] makes the server's events happen at a steady pace and pushes them to a
//!   manager through a faulty network (drops, duplicates, reordering, too-long summaries:
//!   the push fields of [`Faults`]); or on a [`Timetable`] shared by several processes, so
//!   that each one that runs the account in turn makes the same history.
//! - [`Recorder`] is a handler that logs every delivered update (to be judged by the
//!   [`Oracle`](sync_testkit::Oracle)), and can be slow, fail, panic or call the manager back
//!   on purpose ([`Behaviour`]).
//!
//! Everything sleeps on tokio's clock, so a test on a paused clock runs a long simulation in
//! moments, and a real-clock run (the `simulate` example) shows it as it happens.
//!
//! [`Faults`]: sync_testkit::Faults

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use sync_core::{ChannelDifference, ChannelId, Difference, Sequence, State, Updates};
use sync_testkit::{
    ChannelRefusal, Faults, Network, Rng, Server, TestEntities, TestUpdate, Traffic,
};
use tokio::time::Instant;

use crate::api::{Api, ApiError, BoxError, ChannelDifferenceRequest, DifferenceRequest};
use crate::handle::{ManagerHandle, Pushed};
use sync_core::Notice;

use crate::handler::Handler;
use crate::peer::{Peer, PeerKey};

/// The simulated updates carry no chat: every update of the common box (pts, qts, `seq`
/// containers) shares one key, so the oracle can check their global order; each channel is a
/// peer of its own, so channels are handled in parallel.
impl Peer for TestUpdate {
    fn peer(&self) -> Option<PeerKey> {
        match self.sequence {
            Sequence::Channel { channel_id, .. } | Sequence::ChannelTooLong { channel_id, .. } => {
                Some(PeerKey::Channel(channel_id))
            }
            _ => Some(PeerKey::User(0)),
        }
    }
}

/// What goes wrong with the API calls.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiFaults {
    /// Round trip of every call.
    pub latency: Duration,
    /// Chance that a call fails.
    pub failure: f64,
    /// Share of the failures that are FLOOD_WAIT (the others are transient RPC 500s).
    pub flood_wait_share: f64,
    /// Longest FLOOD_WAIT, in whole seconds (each is 0..=this).
    pub flood_wait_max_seconds: u64,
}

impl ApiFaults {
    /// Calls that always succeed, after `latency`.
    pub fn none(latency: Duration) -> Self {
        Self {
            latency,
            failure: 0.0,
            flood_wait_share: 0.0,
            flood_wait_max_seconds: 0,
        }
    }
}

impl Default for ApiFaults {
    /// 40 ms round trips, 10 % failures, half of them FLOOD_WAIT of up to 3 s.
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(40),
            failure: 0.1,
            flood_wait_share: 0.5,
            flood_wait_max_seconds: 3,
        }
    }
}

/// What the simulated API was asked and how it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ApiReport {
    /// Calls received.
    pub calls: u64,
    /// Transient failures injected.
    pub transient_failures: u64,
    /// FLOOD_WAITs injected.
    pub flood_waits: u64,
    /// Channel calls refused as inaccessible.
    pub channel_refusals: u64,
}

#[derive(Debug)]
struct SimState {
    server: Server,
    rng: Rng,
    faults: ApiFaults,
    inaccessible: HashSet<ChannelId>,
    unauthorized: bool,
    report: ApiReport,
}

/// An [`Api`] over a simulated [`Server`]. Cheap to clone: clones share the server.
#[derive(Debug, Clone)]
pub struct SimulatedApi {
    state: Arc<Mutex<SimState>>,
}

impl SimulatedApi {
    /// The API of `server`, failing as `faults` says, with jitter from `seed`.
    pub fn new(server: Server, faults: ApiFaults, seed: u64) -> Self {
        let state = SimState {
            server,
            rng: Rng::new(seed ^ 0x0A91_C0DE),
            faults,
            inaccessible: HashSet::new(),
            unauthorized: false,
            report: ApiReport::default(),
        };
        Self {
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the server (to produce events, read its state, or judge with the oracle).
    pub fn with_server<R>(&self, f: impl FnOnce(&mut Server) -> R) -> R {
        f(&mut self.lock().server)
    }

    /// Changes the faults.
    pub fn set_faults(&self, faults: ApiFaults) {
        self.lock().faults = faults;
    }

    /// From now on, `getChannelDifference` for `channel_id` fails with `CHANNEL_PRIVATE`.
    pub fn make_inaccessible(&self, channel_id: ChannelId) {
        self.lock().inaccessible.insert(channel_id);
    }

    /// From now on every call fails with `AUTH_KEY_UNREGISTERED`.
    pub fn revoke_authorization(&self) {
        self.lock().unauthorized = true;
    }

    /// What was asked so far.
    pub fn report(&self) -> ApiReport {
        self.lock().report
    }

    /// The latency, then a fault or `None` to answer.
    async fn call(&self) -> Result<(), ApiError> {
        let latency = self.lock().faults.latency;
        tokio::time::sleep(latency).await;
        let mut state = self.lock();
        state.report.calls += 1;
        if state.unauthorized {
            return Err(ApiError::rpc(401, "AUTH_KEY_UNREGISTERED"));
        }
        let faults = state.faults.clone();
        if state.rng.chance(faults.failure) {
            if state.rng.chance(faults.flood_wait_share) {
                state.report.flood_waits += 1;
                let seconds = state.rng.below(faults.flood_wait_max_seconds + 1);
                return Err(ApiError::rpc(420, &format!("FLOOD_WAIT_{seconds}")));
            }
            state.report.transient_failures += 1;
            return Err(ApiError::rpc(500, "INTERNAL_SERVER_ERROR"));
        }
        Ok(())
    }
}

impl Api for SimulatedApi {
    type Update = TestUpdate;
    type Entities = TestEntities;

    async fn get_state(&self) -> Result<State, ApiError> {
        self.call().await?;
        Ok(self.lock().server.state())
    }

    async fn get_difference(
        &self,
        request: DifferenceRequest,
    ) -> Result<Difference<TestUpdate, TestEntities>, ApiError> {
        self.call().await?;
        let DifferenceRequest {
            pts,
            qts,
            pts_total_limit,
            ..
        } = request;
        Ok(self.lock().server.get_difference(pts, qts, pts_total_limit))
    }

    async fn get_channel_difference(
        &self,
        request: ChannelDifferenceRequest,
    ) -> Result<ChannelDifference<TestUpdate, TestEntities>, ApiError> {
        self.call().await?;
        let mut state = self.lock();
        let ChannelDifferenceRequest {
            channel_id,
            access_hash,
            pts,
            limit,
        } = request;
        if state.inaccessible.contains(&channel_id) {
            state.report.channel_refusals += 1;
            return Err(ApiError::rpc(400, "CHANNEL_PRIVATE"));
        }
        state
            .server
            .get_channel_difference(channel_id, access_hash, pts, limit)
            .map_err(|refusal| {
                state.report.channel_refusals += 1;
                match refusal {
                    ChannelRefusal::Invalid => ApiError::rpc(400, "CHANNEL_INVALID"),
                    ChannelRefusal::BadAccessHash => ApiError::rpc(400, "CHANNEL_INVALID"),
                }
            })
    }
}

/// What a [`Producer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProducerReport {
    /// What the network did to the server's pushes: losses, copies, too-long summaries,
    /// malformed updates, and the absurd and `updatePtsChanged` pushes it added.
    pub traffic: Traffic,
    /// Pushes the manager's intake dropped because it was full.
    pub intake_full: u64,
}

/// Makes the server's events happen and pushes them through a faulty network.
#[derive(Debug, Clone)]
pub struct Producer {
    /// Events to make (a push carries one or a few).
    pub events: u64,
    /// Time between two rounds of pushes.
    pub interval: Duration,
    /// Pushes per round.
    pub burst: u32,
    /// The network's one-way latency.
    pub latency: Duration,
    /// The push faults, applied by `sync_testkit`'s [`Network`] (drops, silences, copies,
    /// reordering, too-long summaries, malformed updates, absurd and `updatePtsChanged`
    /// pushes); the request fields are ignored (see [`ApiFaults`]).
    pub faults: Faults,
    /// Seed of the network's faults.
    pub seed: u64,
    /// Hand the pushes that arrive at the same instant over in one
    /// [`ManagerHandle::push_batch`] call, as a reader that decodes several frames per read
    /// does; otherwise each goes through [`ManagerHandle::push`].
    pub batched: bool,
}

impl Producer {
    /// Runs until every event was made and every push in transit arrived (or the manager
    /// stopped). `progress` is called once per round with the events made so far.
    pub async fn run(
        self,
        api: &SimulatedApi,
        handle: &ManagerHandle<TestUpdate, TestEntities>,
        progress: impl FnMut(u64),
    ) -> ProducerReport {
        self.drive(Pace::Steady, api, handle, progress).await
    }

    /// Runs on `timetable`, the server having made `made` of its pushes already (by
    /// [`Timetable::fast_forward`]): each further push is made once it is due and sent through
    /// the network; `events`, `interval` and `burst` are ignored. Ends once every push of the
    /// timetable was made and every push in transit arrived (or the manager stopped).
    /// `progress` is called once per round with the events made so far.
    pub async fn run_on(
        self,
        timetable: Timetable,
        made: u64,
        api: &SimulatedApi,
        handle: &ManagerHandle<TestUpdate, TestEntities>,
        progress: impl FnMut(u64),
    ) -> ProducerReport {
        self.drive(Pace::Timetable { timetable, made }, api, handle, progress)
            .await
    }

    async fn drive(
        self,
        mut pace: Pace,
        api: &SimulatedApi,
        handle: &ManagerHandle<TestUpdate, TestEntities>,
        mut progress: impl FnMut(u64),
    ) -> ProducerReport {
        let mut rng = Rng::new(self.seed ^ 0x5EED_F00D);
        let mut network = Network::new(self.faults.clone(), self.latency);
        let mut report = ProducerReport::default();
        let mut transit: BTreeMap<(Instant, u64), Updates<TestUpdate, TestEntities>> =
            BTreeMap::new();
        let mut sequence = 0u64;
        let mut next_round = Instant::now();
        'run: loop {
            let (producing, round_at) = match &pace {
                Pace::Steady => (api.with_server(|s| s.events()) < self.events, next_round),
                Pace::Timetable { timetable, made } => {
                    (*made < timetable.pushes, timetable.due_at(*made + 1))
                }
            };
            let next_arrival = transit.first_key_value().map(|(&(at, _), _)| at);
            let wake = match (producing, next_arrival) {
                (true, Some(at)) => at.min(round_at),
                (true, None) => round_at,
                (false, Some(at)) => at,
                (false, None) => break,
            };
            tokio::time::sleep_until(wake).await;
            let now = Instant::now();
            if producing && now >= round_at {
                // How many pushes this round makes: a burst, or every push now due.
                let pushes = match &mut pace {
                    Pace::Steady => {
                        next_round += self.interval;
                        u64::from(self.burst.max(1))
                    }
                    Pace::Timetable { timetable, made } => {
                        let due = timetable.due(now).saturating_sub(*made);
                        *made += due;
                        due
                    }
                };
                for _ in 0..pushes {
                    let (arrivals, made) = api.with_server(|s| {
                        let push = s.produce();
                        (network.send(&mut rng, s, push), s.events())
                    });
                    for arrival in arrivals {
                        sequence += 1;
                        transit.insert((now + arrival.after, sequence), arrival.updates);
                    }
                    if matches!(pace, Pace::Steady) && made >= self.events {
                        break;
                    }
                }
                progress(api.with_server(|s| s.events()));
            }
            let mut read = Vec::new();
            while let Some(entry) = transit.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                read.push(entry.remove());
            }
            let reads: Vec<Vec<_>> = if self.batched {
                vec![read]
            } else {
                read.into_iter().map(|push| vec![push]).collect()
            };
            for read in reads {
                if read.is_empty() {
                    continue;
                }
                // Kept for the server's books: a push the intake drops is a lost push.
                let lost: Vec<_> = if self.batched {
                    let copies = read.clone();
                    match handle.push_batch(read) {
                        Ok(Pushed::Queued) => Vec::new(),
                        Ok(Pushed::Dropped) => copies,
                        Err(_) => break 'run,
                    }
                } else {
                    let mut lost = Vec::new();
                    for push in read {
                        let copy = push.clone();
                        match handle.push(push) {
                            Ok(Pushed::Queued) => {}
                            Ok(Pushed::Dropped) => lost.push(copy),
                            Err(_) => break 'run,
                        }
                    }
                    lost
                };
                if !lost.is_empty() {
                    report.intake_full += lost.len() as u64;
                    api.with_server(|s| lost.iter().for_each(|push| s.push_lost(push)));
                }
            }
        }
        ProducerReport {
            traffic: network.traffic(),
            ..report
        }
    }
}

/// How a [`Producer`] paces its pushes.
enum Pace {
    /// `burst` pushes every `interval`, until `events` events were made.
    Steady,
    /// Each push when the timetable says; `made` of them were made so far.
    Timetable { timetable: Timetable, made: u64 },
}

/// A history on a shared clock: push `k` (from 1) of the account's server is due at
/// `start + k × interval`, up to `pushes`.
///
/// The server makes the same history from the same seed, so processes that run the account in
/// turn (a fleet's fail-over) each build their own copy of it, [fast-forward](Self::fast_forward)
/// it to the pushes already due when they start, and [produce](Producer::run_on) the rest on
/// time: every copy agrees on what happened, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timetable {
    /// When push 0 would be due (the history's origin; the first push is due one `interval`
    /// later).
    pub start: Instant,
    /// Time between two pushes.
    pub interval: Duration,
    /// Pushes in the whole history.
    pub pushes: u64,
}

impl Timetable {
    /// How many pushes are due at `now` (at most `pushes`).
    pub fn due(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start).as_nanos();
        let interval = self.interval.as_nanos().max(1);
        u64::try_from(elapsed / interval)
            .unwrap_or(u64::MAX)
            .min(self.pushes)
    }

    /// When push `k` is due.
    pub fn due_at(&self, k: u64) -> Instant {
        let k = u32::try_from(k).unwrap_or(u32::MAX);
        self.start + self.interval.saturating_mul(k)
    }

    /// Makes the pushes due now that `api`'s server has not made yet (`made` of them it has),
    /// as pushes the client never received, as for a client that was offline meanwhile: only
    /// a difference brings them back (their channels are mentioned in the next one, as is every
    /// channel after a reconnect). Returns how many pushes the server has made now.
    pub fn fast_forward(&self, api: &SimulatedApi, made: u64) -> u64 {
        let due = self.due(Instant::now());
        api.with_server(|server| {
            for _ in made..due {
                let push = server.produce();
                server.push_lost(&push);
            }
            server.client_restarted();
        });
        due.max(made)
    }
}

/// What a [`Recorder`] does with each update after logging it: called with the update's
/// number (1 for the first logged) and the update; the update counts as handled when the
/// returned future ends (an error and a panic count too).
pub type Behaviour = Arc<
    dyn Fn(u64, &TestUpdate) -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>
        + Send
        + Sync,
>;

/// A handler that logs every update it is given, in the order given, for the oracle.
///
/// Options make it a difficult application: it can take time per update, fail every n-th
/// update, or panic on every n-th (after logging it: the update reached the application), or
/// do whatever a [`Behaviour`] says (call the manager back, wait, block).
#[derive(Clone, Default)]
pub struct Recorder {
    log: Arc<Mutex<Vec<TestUpdate>>>,
    notices: Arc<Mutex<Vec<Notice>>>,
    seen: Arc<AtomicU64>,
    finished: Arc<AtomicU64>,
    delay: Duration,
    fail_every: Option<u64>,
    panic_every: Option<u64>,
    behaviour: Option<Behaviour>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("seen", &self.count())
            .field("finished", &self.finished())
            .field("delay", &self.delay)
            .field("fail_every", &self.fail_every)
            .field("panic_every", &self.panic_every)
            .field("behaviour", &self.behaviour.is_some())
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// A recorder that handles at once and never fails.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes `delay` to handle each update.
    #[must_use]
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Returns an error on every `n`-th update.
    #[must_use]
    pub fn failing_every(mut self, n: u64) -> Self {
        self.fail_every = Some(n);
        self
    }

    /// Panics on every `n`-th update (after logging it).
    #[must_use]
    pub fn panicking_every(mut self, n: u64) -> Self {
        self.panic_every = Some(n);
        self
    }

    /// After logging each update (and the delay), runs `behaviour` and returns what it
    /// returns; the failing and panicking options apply after it.
    #[must_use]
    pub fn with_behaviour(
        mut self,
        behaviour: impl Fn(
            u64,
            &TestUpdate,
        ) -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.behaviour = Some(Arc::new(behaviour));
        self
    }

    /// Takes the updates logged so far.
    pub fn take(&self) -> Vec<TestUpdate> {
        std::mem::take(&mut *self.log.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// How many updates were logged in total.
    pub fn count(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }

    /// How many handler calls returned normally (with `Ok` or an error; not those that
    /// panicked or were stopped).
    pub fn finished(&self) -> u64 {
        self.finished.load(Ordering::Relaxed)
    }

    /// The notices received so far.
    pub fn notices(&self) -> Vec<Notice> {
        self.notices
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Handler<TestUpdate, TestEntities> for Recorder {
    async fn handle(
        &self,
        update: TestUpdate,
        _entities: Arc<[TestEntities]>,
    ) -> Result<(), BoxError> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(update);
        let n = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let mut outcome = Ok(());
        if let Some(behaviour) = &self.behaviour {
            outcome = behaviour(n, &update).await;
        }
        if self
            .panic_every
            .is_some_and(|every| every > 0 && n.is_multiple_of(every))
        {
            panic!("simulated handler panic on update {}", update.id);
        }
        if self
            .fail_every
            .is_some_and(|every| every > 0 && n.is_multiple_of(every))
        {
            outcome = Err(format!("simulated handler failure on update {}", update.id).into());
        }
        self.finished.fetch_add(1, Ordering::Relaxed);
        outcome
    }

    async fn notice(&self, notice: Notice) {
        self.notices
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(notice);
    }
}
