//! Runs the sans-IO engine against the simulated server on a virtual clock, through a faulty
//! network, and asks the oracle whether the client got everything right.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::mem;
use std::time::{Duration, Instant};

use sync_core::{
    BatchId, ChannelDifference, ChannelId, Config, Difference, Engine, Failure, Output, Request,
    RequestId, RequestKind, Sequence, State, Stats, Updates,
};

use crate::faults::Faults;
use crate::network::{Network, Traffic};
use crate::oracle::Oracle;
use crate::rng::Rng;
use crate::server::{Limits, Server, Workload};
use crate::update::{TestEntities, TestUpdate};

/// A failed run: what went wrong, the seed that replays it, and the last steps before it.
#[derive(Debug, Clone)]
pub struct Violation {
    /// Replays the run with the same builder settings.
    pub seed: u64,
    /// What the oracle or the driver saw.
    pub message: String,
    /// The last steps of the run, oldest first.
    pub trace: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed {}: {}", self.seed, self.message)?;
        writeln!(f, "last steps:")?;
        for step in &self.trace {
            writeln!(f, "  {step}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Violation {}

/// What a successful run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Events the server made.
    pub events: u64,
    /// Pushes the server made (before faults).
    pub pushes: u64,
    /// Updates the client delivered (repeats included).
    pub delivered: u64,
    /// Deliveries that repeated an event after a crash.
    pub repeats: u64,
    /// Crashes survived.
    pub crashes: u32,
    /// Corrupted replies refused.
    pub corrupt_refused: u64,
    /// What the network did to the pushes (losses, copies, too-long summaries, malformed
    /// updates, absurd and `updatePtsChanged` pushes).
    pub traffic: Traffic,
    /// Pushes sent with a malformed number (absurd or with a malformed update inside), which
    /// the engine refused.
    pub malformed_refused: u64,
    /// Latest messages of `channelDifferenceTooLong` answers delivered.
    pub latest_messages: u64,
    /// Requests the engine made once the network went quiet (every push arrived, no crash
    /// left, faults off) until it was idle.
    pub tail_requests: u64,
    /// The most requests the quiet tail was allowed: a few, plus one per channel, plus the
    /// slices of what the client had still to fetch, plus a retry per request then in flight.
    pub tail_bound: u64,
    /// The engine's counters, summed over its restarts.
    pub stats: Stats,
    /// Virtual time the run took.
    pub virtual_time: Duration,
    /// Driver steps.
    pub steps: u64,
}

/// A reproducible run: a workload, faults, limits and engine settings, from one seed.
///
/// ```
/// use sync_testkit::{Faults, Scenario};
///
/// let report = Scenario::new(7).events(300).channels(5).faults(Faults::moderate()).run().unwrap();
/// assert!(report.delivered > 0);
/// ```
#[derive(Debug, Clone)]
pub struct Scenario {
    seed: u64,
    events: u64,
    workload: Workload,
    limits: Limits,
    faults: Faults,
    config: Config,
    crashes: u32,
    ack_delay: Duration,
    push_interval: Duration,
    latency: Duration,
    max_steps: u64,
}

impl Scenario {
    /// A run of 500 events over 8 channels on a perfect network.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            events: 500,
            workload: Workload::default(),
            limits: Limits::default(),
            faults: Faults::none(),
            config: Config::default(),
            crashes: 0,
            ack_delay: Duration::ZERO,
            push_interval: Duration::from_millis(20),
            latency: Duration::from_millis(40),
            max_steps: 0,
        }
    }

    /// How many events the server makes.
    pub fn events(mut self, events: u64) -> Self {
        self.events = events;
        self
    }

    /// How many channels the account has.
    pub fn channels(mut self, channels: usize) -> Self {
        self.workload.channels = channels;
        self
    }

    /// The event mix.
    pub fn workload(mut self, workload: Workload) -> Self {
        self.workload = workload;
        self
    }

    /// The server's answer limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The faults.
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// The engine's configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// How many times the client crashes (without a clean shutdown) and restarts from what it
    /// committed.
    pub fn crashes(mut self, crashes: u32) -> Self {
        self.crashes = crashes;
        self
    }

    /// How long the application takes to handle (acknowledge) a batch.
    pub fn ack_delay(mut self, delay: Duration) -> Self {
        self.ack_delay = delay;
        self
    }

    /// Virtual time between two pushes of the server.
    pub fn push_interval(mut self, interval: Duration) -> Self {
        self.push_interval = interval;
        self
    }

    /// A step budget; a run that needs more is reported as a livelock. 0 picks one from the
    /// workload size.
    pub fn max_steps(mut self, steps: u64) -> Self {
        self.max_steps = steps;
        self
    }

    /// Runs the scenario and judges it.
    pub fn run(&self) -> Result<Report, Violation> {
        Run::new(self).go()
    }
}

/// Something scheduled on the virtual timeline.
#[derive(Debug)]
enum Event {
    Produce,
    Arrive {
        epoch: u32,
        updates: Updates<TestUpdate, TestEntities>,
        /// The push carries a malformed number: the engine must refuse it.
        malformed: bool,
    },
    Reply {
        epoch: u32,
        id: RequestId,
        reply: Reply,
    },
    Ack {
        epoch: u32,
        batch: BatchId,
    },
    Crash,
}

#[derive(Debug)]
enum Reply {
    State(State),
    Difference(Difference<TestUpdate, TestEntities>),
    Channel(ChannelDifference<TestUpdate, TestEntities>),
    Failure(Failure),
    CorruptDifference(Difference<TestUpdate, TestEntities>),
    CorruptChannel(ChannelDifference<TestUpdate, TestEntities>),
}

/// What storage holds: the committed state.
#[derive(Debug, Clone)]
struct Stored {
    state: State,
    channels: HashMap<ChannelId, i32>,
}

struct Run<'a> {
    scenario: &'a Scenario,
    rng: Rng,
    server: Server,
    engine: Engine<TestUpdate, TestEntities>,
    oracle: Oracle,
    stored: Stored,
    hashes: HashMap<ChannelId, i64>,
    start: Instant,
    now: Duration,
    timeline: BTreeMap<(Duration, u64), Event>,
    next_event: u64,
    epoch: u32,
    network: Network,
    trace: VecDeque<String>,
    report: Report,
    finished_stats: Stats,
    trace_length: usize,
    /// The quiet tail, once it has begun.
    tail: Option<Tail>,
}

/// The end of a run: every push has arrived, no crash is left, and the network no longer
/// fails or corrupts requests. The engine must be idle within `bound` requests.
#[derive(Debug, Clone, Copy)]
struct Tail {
    requests: u64,
    bound: u64,
    idle: bool,
}

/// Requests a quiet tail may take besides one per channel and the slices of the backlog:
/// a difference, `getState` and the difference after it (`updatePtsChanged`), the idle
/// rule's difference, and a little slack.
const TAIL_REQUESTS: u64 = 6;

/// Steps kept for a violation's report; `SYNC_TESTKIT_TRACE` sets another length.
const TRACE_LENGTH: usize = 40;

impl<'a> Run<'a> {
    fn new(scenario: &'a Scenario) -> Self {
        let server = Server::new(
            scenario.seed,
            scenario.workload.clone(),
            scenario.limits.clone(),
        );
        let state = server.state();
        let channels: HashMap<ChannelId, i32> = server.channel_states().collect();
        let hashes = server.access_hashes().collect();
        let start = Instant::now();
        let engine = Self::start_engine(&scenario.config, start, state, &channels);
        Self {
            scenario,
            rng: Rng::new(scenario.seed ^ 0xA5A5_5A5A_F00D_CAFE),
            oracle: Oracle::new(state, channels.iter().map(|(&id, &pts)| (id, pts))),
            server,
            engine,
            stored: Stored { state, channels },
            hashes,
            start,
            now: Duration::ZERO,
            timeline: BTreeMap::new(),
            next_event: 0,
            epoch: 0,
            network: Network::new(scenario.faults.clone(), scenario.latency),
            trace: VecDeque::new(),
            report: Report::default(),
            finished_stats: Stats::default(),
            trace_length: std::env::var("SYNC_TESTKIT_TRACE")
                .ok()
                .and_then(|value| value.parse().ok())
                .unwrap_or(TRACE_LENGTH),
            tail: None,
        }
    }

    fn start_engine(
        config: &Config,
        now: Instant,
        state: State,
        channels: &HashMap<ChannelId, i32>,
    ) -> Engine<TestUpdate, TestEntities> {
        let mut channels: Vec<(ChannelId, i32)> =
            channels.iter().map(|(&id, &pts)| (id, pts)).collect();
        channels.sort_unstable();
        // The stored state is what this driver committed from the engine's own commits, which
        // are checked as they arrive: it is always valid.
        match Engine::from_state(config.clone(), now, state, channels) {
            Ok(engine) => engine,
            Err(error) => unreachable!("stored state refused: {error}"),
        }
    }

    fn violation(&self, message: impl Into<String>) -> Violation {
        Violation {
            seed: self.scenario.seed,
            message: message.into(),
            trace: self.trace.iter().cloned().collect(),
        }
    }

    fn log(&mut self, step: impl FnOnce() -> String) {
        if self.trace.len() >= self.trace_length {
            self.trace.pop_front();
        }
        let at = self.now.as_millis();
        self.trace.push_back(format!("{at:>9} ms  {}", step()));
    }

    fn schedule(&mut self, after: Duration, event: Event) {
        let key = (self.now + after, self.next_event);
        self.next_event += 1;
        self.timeline.insert(key, event);
    }

    fn instant(&self) -> Instant {
        self.start + self.now
    }

    fn go(mut self) -> Result<Report, Violation> {
        let scenario = self.scenario;
        let production =
            scenario.push_interval * u32::try_from(scenario.events).unwrap_or(u32::MAX);
        for i in 0..scenario.crashes {
            // Crashes spread over the production period, at seeded moments.
            let slot = production / (scenario.crashes + 1);
            let at = slot * (i + 1) + Duration::from_millis(self.rng.below(200));
            self.timeline
                .insert((at, u64::MAX - u64::from(i)), Event::Crash);
        }
        self.schedule(Duration::ZERO, Event::Produce);
        self.drain()?;
        // After the last push, long enough for the idle rule to catch up whatever was lost.
        let settle = scenario.config.idle_timeout + Duration::from_secs(300);
        let max_steps = match scenario.max_steps {
            0 => 200 * scenario.events + 100_000,
            steps => steps,
        };
        let mut production_end = None::<Duration>;
        loop {
            self.report.steps += 1;
            if self.report.steps > max_steps {
                return Err(self.violation(format!("no end after {max_steps} steps: livelock")));
            }
            if production_end.is_none() && self.server.events() >= scenario.events {
                production_end = Some(self.now);
            }
            if production_end.is_some() && self.tail.is_none() {
                self.begin_tail();
            }
            // Done once the settle window has passed and nothing is under way any more.
            let settled = production_end.is_some_and(|end| self.now > end + settle);
            let in_transit = self
                .timeline
                .values()
                .any(|e| matches!(e, Event::Arrive { .. } | Event::Reply { .. }));
            if settled && self.engine.is_idle() && !in_transit {
                break;
            }
            let timer = self
                .engine
                .poll_timeout()
                .map(|at| at.saturating_duration_since(self.start));
            let event = self.timeline.first_key_value().map(|(&(at, _), _)| at);
            let (at, is_timer) = match (timer, event) {
                (Some(t), Some(e)) if t <= e => (t, true),
                (_, Some(e)) => (e, false),
                (Some(t), None) => (t, true),
                (None, None) => break,
            };
            self.now = self.now.max(at);
            if is_timer {
                self.log(|| "timeout".into());
                self.engine.handle_timeout(self.instant());
            } else if let Some((_, event)) = self.timeline.pop_first() {
                self.handle(event)?;
            }
            self.drain()?;
            self.check_tail()?;
        }
        if let Some(tail) = self.tail
            && !tail.idle
        {
            return Err(self.violation(format!(
                "the run ended before the engine was idle ({} requests in the quiet tail)",
                tail.requests
            )));
        }
        self.finish()
    }

    /// Begins the quiet tail once nothing but replies and acknowledgements is left on the
    /// timeline, and works out how many requests the engine may still need.
    fn begin_tail(&mut self) {
        let pending = self
            .timeline
            .values()
            .any(|e| matches!(e, Event::Arrive { .. } | Event::Crash | Event::Produce));
        if pending {
            return;
        }
        let in_flight = self
            .timeline
            .values()
            .filter(|e| matches!(e, Event::Reply { .. }))
            .count() as u64;
        let config = &self.scenario.config;
        let limit = config
            .pts_total_limit
            .and_then(|limit| usize::try_from(limit).ok())
            .filter(|&limit| limit > 0)
            .unwrap_or(self.scenario.limits.difference_limit)
            .max(1) as u64;
        let channel_limit = u64::try_from(config.channel_difference_limit.max(1)).unwrap_or(1);
        let (pts, qts) = self
            .engine
            .state()
            .map_or((0, 0), |state| (state.pts, state.qts));
        let common = self.server.missed_common(pts, qts) as u64;
        let mut bound = TAIL_REQUESTS + in_flight + common.div_ceil(limit);
        let channels: Vec<(ChannelId, i32)> = self.server.channel_states().collect();
        for (channel_id, _) in channels {
            let from = self.engine.channel_pts(channel_id).unwrap_or(0);
            let missed = self.server.missed_channel(channel_id, from) as u64;
            bound += 1 + missed.div_ceil(channel_limit);
        }
        self.log(|| format!("quiet tail: at most {bound} requests"));
        self.tail = Some(Tail {
            requests: 0,
            bound,
            idle: self.engine.is_idle(),
        });
        self.report.tail_bound = bound;
    }

    /// Once the tail has begun: the engine is idle within its bound of requests.
    fn check_tail(&mut self) -> Result<(), Violation> {
        let Some(tail) = self.tail.as_mut() else {
            return Ok(());
        };
        if tail.idle {
            return Ok(());
        }
        if self.engine.is_idle() {
            tail.idle = true;
            self.report.tail_requests = tail.requests;
            return Ok(());
        }
        if tail.requests > tail.bound {
            let (requests, bound) = (tail.requests, tail.bound);
            return Err(self.violation(format!(
                "not idle after {requests} requests once the server went quiet (at most {bound} expected)"
            )));
        }
        Ok(())
    }

    fn handle(&mut self, event: Event) -> Result<(), Violation> {
        let now = self.instant();
        match event {
            Event::Produce => {
                if self.server.events() < self.scenario.events {
                    let push = self.server.produce();
                    self.report.pushes += 1;
                    self.send_push(push);
                    self.schedule(self.scenario.push_interval, Event::Produce);
                }
            }
            Event::Arrive {
                epoch,
                updates,
                malformed,
            } if epoch == self.epoch => {
                self.log(|| format!("push {}", describe_push(&updates)));
                let before = (self.engine.state(), self.engine.stats().pushes_refused);
                match self.engine.handle_updates(now, updates) {
                    Ok(()) if malformed => {
                        return Err(self.violation("a malformed push was accepted"));
                    }
                    Ok(()) => {}
                    Err(error) if !malformed => {
                        return Err(
                            self.violation(format!("a well-formed push was refused: {error}"))
                        );
                    }
                    Err(_) => {
                        self.report.malformed_refused += 1;
                        let after = (self.engine.state(), self.engine.stats().pushes_refused);
                        if after != (before.0, before.1 + 1) {
                            return Err(self.violation(
                                "a refused push changed the state or was not counted as refused",
                            ));
                        }
                    }
                }
            }
            Event::Reply { epoch, id, reply } if epoch == self.epoch => self.reply(id, reply)?,
            Event::Ack { epoch, batch } if epoch == self.epoch => {
                if let Err(error) = self.engine.ack(batch) {
                    return Err(self.violation(format!("ack of batch {batch} refused: {error}")));
                }
            }
            Event::Crash => self.crash(),
            // Addressed to a client that has crashed since.
            Event::Arrive { .. } | Event::Reply { .. } | Event::Ack { .. } => {}
        }
        Ok(())
    }

    /// Sends a push through the faulty network ([`Network`]), with the extra pushes its
    /// faults add.
    fn send_push(&mut self, updates: Updates<TestUpdate, TestEntities>) {
        for arrival in self.network.send(&mut self.rng, &mut self.server, updates) {
            self.schedule(
                arrival.after,
                Event::Arrive {
                    epoch: self.epoch,
                    updates: arrival.updates,
                    malformed: arrival.malformed,
                },
            );
        }
    }

    /// Answers a request the engine made, after a round trip.
    fn request(&mut self, request: Request) -> Result<(), Violation> {
        let faults = &self.scenario.faults;
        let round_trip = self.scenario.latency * 2;
        let epoch = self.epoch;
        self.log(|| format!("request {} {:?}", request.id, request.kind));
        // In the quiet tail the network no longer fails.
        let quiet = self.tail.is_some();
        if let Some(tail) = self.tail.as_mut()
            && !tail.idle
        {
            tail.requests += 1;
        }
        if !quiet && self.rng.chance(faults.request_failure) {
            let after = self
                .rng
                .chance(0.5)
                .then(|| Duration::from_secs(self.rng.between(1, 5)));
            let reply = Reply::Failure(Failure::Retry { after });
            self.schedule(
                round_trip,
                Event::Reply {
                    epoch,
                    id: request.id,
                    reply,
                },
            );
            return Ok(());
        }
        let corrupt = !quiet && self.rng.chance(faults.corrupt_reply);
        let reply = match request.kind {
            RequestKind::GetState => Reply::State(self.server.state()),
            RequestKind::GetDifference {
                pts,
                qts,
                pts_total_limit,
                ..
            } => {
                if corrupt {
                    let bad = corrupt_difference(&mut self.rng, pts);
                    self.schedule(
                        round_trip,
                        Event::Reply {
                            epoch,
                            id: request.id,
                            reply: Reply::CorruptDifference(bad),
                        },
                    );
                }
                Reply::Difference(self.server.get_difference(pts, qts, pts_total_limit))
            }
            RequestKind::GetChannelDifference {
                channel_id,
                pts,
                limit,
            } => {
                let Some(&hash) = self.hashes.get(&channel_id) else {
                    return Err(self.violation(format!(
                        "channel {channel_id} requested without a known access hash"
                    )));
                };
                match self
                    .server
                    .get_channel_difference(channel_id, hash, pts, limit)
                {
                    Ok(difference) => {
                        if corrupt {
                            let bad = corrupt_channel_difference(&mut self.rng, channel_id, pts);
                            self.schedule(
                                round_trip,
                                Event::Reply {
                                    epoch,
                                    id: request.id,
                                    reply: Reply::CorruptChannel(bad),
                                },
                            );
                        }
                        Reply::Channel(difference)
                    }
                    Err(refusal) => {
                        return Err(self.violation(format!(
                            "channel {channel_id} request refused: {refusal:?}"
                        )));
                    }
                }
            }
        };
        self.schedule(
            round_trip + Duration::from_millis(1),
            Event::Reply {
                epoch,
                id: request.id,
                reply,
            },
        );
        Ok(())
    }

    fn reply(&mut self, id: RequestId, reply: Reply) -> Result<(), Violation> {
        let now = self.instant();
        let before = (self.engine.state(), self.engine.stats());
        let outcome = match reply {
            Reply::State(state) => self.engine.handle_state(now, id, state),
            Reply::Difference(difference) => {
                self.log(|| format!("difference for {id}: {}", describe_difference(&difference)));
                self.engine.handle_difference(now, id, difference)
            }
            Reply::Channel(difference) => {
                self.log(|| {
                    format!(
                        "channel difference for {id}: {:?}",
                        difference.kind_summary()
                    )
                });
                self.engine.handle_channel_difference(now, id, difference)
            }
            Reply::Failure(failure) => {
                self.log(|| format!("failure for {id}: {failure:?}"));
                self.engine.handle_failure(now, id, failure)
            }
            Reply::CorruptDifference(difference) => {
                self.report.corrupt_refused += 1;
                return match self.engine.handle_difference(now, id, difference) {
                    Err(_) if (self.engine.state(), self.engine.stats()) == before => Ok(()),
                    Err(_) => Err(self.violation("a refused difference changed the engine")),
                    Ok(()) => Err(self.violation("a corrupted difference was accepted")),
                };
            }
            Reply::CorruptChannel(difference) => {
                self.report.corrupt_refused += 1;
                return match self.engine.handle_channel_difference(now, id, difference) {
                    Err(_) if (self.engine.state(), self.engine.stats()) == before => Ok(()),
                    Err(_) => {
                        Err(self.violation("a refused channel difference changed the engine"))
                    }
                    Ok(()) => Err(self.violation("a corrupted channel difference was accepted")),
                };
            }
        };
        outcome.map_err(|error| {
            self.violation(format!("a correct reply to {id} was refused: {error}"))
        })
    }

    /// Polls the engine dry, doing what it says.
    fn drain(&mut self) -> Result<(), Violation> {
        let mut after_notice = false;
        while let Some(output) = self.engine.poll_output() {
            // Requests, commits and hashes may come between a notice and its batch.
            let follows_notice = match output {
                Output::ChannelTooLong { .. } => mem::replace(&mut after_notice, true),
                Output::Deliver(_) => mem::replace(&mut after_notice, false),
                _ => after_notice,
            };
            match output {
                Output::Deliver(batch) => {
                    // The latest messages of a channelDifferenceTooLong come after its
                    // notice (no other delivery in between), in a batch of their own.
                    let latest = |u: &TestUpdate| {
                        u.sequence == Sequence::Unordered && self.server.is_latest_message(u.id)
                    };
                    let leading = batch.updates.iter().take_while(|u| latest(u)).count();
                    let misplaced = batch.updates[leading..].iter().any(latest)
                        || (leading > 0 && !follows_notice)
                        || (leading > 0 && leading < batch.updates.len());
                    if misplaced {
                        let ids: Vec<String> = batch
                            .updates
                            .iter()
                            .map(|u| format!("{} {:?}", u.id, u.sequence))
                            .collect();
                        return Err(self.violation(format!(
                            "latest messages of a too-long channel were not delivered first after its notice, in a batch of their own: [{}]",
                            ids.join(", ")
                        )));
                    }
                    for update in &batch.updates {
                        if let Err(message) = self.oracle.deliver(&self.server, update) {
                            return Err(self.violation(message));
                        }
                    }
                    self.report.delivered += batch.updates.len() as u64;
                    let (id, count) = (batch.id, batch.updates.len());
                    self.log(|| format!("deliver batch {id} of {count}"));
                    if self.scenario.ack_delay.is_zero() {
                        if let Err(error) = self.engine.ack(batch.id) {
                            return Err(self.violation(format!("ack refused: {error}")));
                        }
                    } else {
                        let delay = Duration::from_millis(
                            self.rng
                                .below(self.scenario.ack_delay.as_millis() as u64 + 1),
                        );
                        self.schedule(
                            delay,
                            Event::Ack {
                                epoch: self.epoch,
                                batch: batch.id,
                            },
                        );
                    }
                }
                Output::Request(request) => self.request(request)?,
                Output::Commit(commit) => {
                    if let Some(state) = commit.state {
                        let old = self.stored.state;
                        let regressed =
                            state.pts < old.pts || state.qts < old.qts || state.seq < old.seq;
                        if regressed && !commit.state_reset {
                            return Err(self.violation(format!(
                                "commit moved the state back from {old:?} to {state:?}"
                            )));
                        }
                        self.stored.state = state;
                    }
                    for channel_id in &commit.removed_channels {
                        self.stored.channels.remove(channel_id);
                    }
                    for channel in &commit.channels {
                        let old = self.stored.channels.insert(channel.channel_id, channel.pts);
                        if old.is_some_and(|old| channel.pts < old) && !channel.reset {
                            return Err(self.violation(format!(
                                "commit moved channel {} back",
                                channel.channel_id
                            )));
                        }
                    }
                }
                Output::AccessHashes(hashes) => {
                    for hash in hashes {
                        if hash.min {
                            return Err(self.violation("a min access hash was reported"));
                        }
                        self.hashes.insert(hash.channel_id, hash.access_hash);
                    }
                }
                Output::DifferenceTooLong { pts } => {
                    self.log(|| format!("difference too long: pts {pts}"))
                }
                Output::ChannelTooLong { channel_id, pts } => {
                    self.log(|| format!("channel {channel_id} too long: {pts:?}"));
                }
                Output::ChannelClosed { channel_id } => {
                    return Err(self.violation(format!(
                        "channel {channel_id} closed, but no channel is inaccessible"
                    )));
                }
            }
        }
        let buffered = self.engine.stats().buffered_now;
        if buffered > self.scenario.config.max_buffered_total {
            return Err(self.violation(format!("{buffered} updates buffered, over the cap")));
        }
        Ok(())
    }

    fn crash(&mut self) {
        self.log(|| "crash: restart from storage".into());
        self.report.crashes += 1;
        self.epoch += 1;
        add_stats(&mut self.finished_stats, &self.engine.stats());
        self.oracle.crash(self.stored.state, &self.stored.channels);
        self.server.client_restarted();
        self.engine = Self::start_engine(
            &self.scenario.config,
            self.instant(),
            self.stored.state,
            &self.stored.channels,
        );
    }

    fn finish(mut self) -> Result<Report, Violation> {
        let engine = &self.engine;
        let verdict = self
            .oracle
            .finish(&self.server, engine.state(), |id| engine.channel_pts(id));
        if let Err(message) = verdict {
            return Err(self.violation(message));
        }
        if self.engine.stats().unacknowledged_batches == 0
            && Some(self.stored.state) != self.engine.state()
        {
            return Err(self.violation(format!(
                "everything was acknowledged but storage holds {:?}, the engine {:?}",
                self.stored.state,
                self.engine.state()
            )));
        }
        add_stats(&mut self.finished_stats, &self.engine.stats());
        self.report.events = self.server.events();
        self.report.repeats = self.oracle.repeats();
        self.report.latest_messages = self.oracle.latest_messages();
        self.report.traffic = self.network.traffic();
        self.report.stats = self.finished_stats;
        self.report.virtual_time = self.now;
        Ok(self.report)
    }
}

fn add_stats(total: &mut Stats, more: &Stats) {
    total.updates_delivered += more.updates_delivered;
    total.batches_delivered += more.batches_delivered;
    total.duplicates_dropped += more.duplicates_dropped;
    total.gaps_detected += more.gaps_detected;
    total.gaps_filled_by_wait += more.gaps_filled_by_wait;
    total.gaps_resolved_by_difference += more.gaps_resolved_by_difference;
    total.buffer_overflows += more.buffer_overflows;
    total.get_state_requests += more.get_state_requests;
    total.difference_requests += more.difference_requests;
    total.channel_difference_requests += more.channel_difference_requests;
    total.requests_failed += more.requests_failed;
    total.too_long += more.too_long;
    total.updates_discarded += more.updates_discarded;
    total.pushes_refused += more.pushes_refused;
    total.rebases += more.rebases;
    total.buffered_now = more.buffered_now;
    total.channels_tracked = more.channels_tracked;
    total.unacknowledged_batches = more.unacknowledged_batches;
}

/// True with probability `p`; draws nothing when `p` is 0, so that a fault left off does not
/// change the draws of the others.
/// A difference the engine must refuse: a regressed state or a negative number.
fn corrupt_difference(rng: &mut Rng, client_pts: i32) -> Difference<TestUpdate, TestEntities> {
    let bad_update = TestUpdate {
        id: 0,
        sequence: Sequence::Common {
            pts: -3,
            pts_count: 1,
        },
    };
    if client_pts > 0 && rng.chance(0.5) {
        let state = State {
            pts: client_pts - 1,
            qts: 0,
            date: 0,
            seq: 0,
        };
        return Difference::Difference {
            updates: Vec::new(),
            entities: TestEntities::default(),
            state,
            slice: false,
        };
    }
    Difference::Difference {
        updates: vec![bad_update],
        entities: TestEntities::default(),
        state: State {
            pts: i32::MAX,
            qts: i32::MAX,
            date: 0,
            seq: i32::MAX,
        },
        slice: false,
    }
}

/// A channel difference the engine must refuse: the wrong channel or a regressed pts.
fn corrupt_channel_difference(
    rng: &mut Rng,
    channel_id: ChannelId,
    pts: i32,
) -> ChannelDifference<TestUpdate, TestEntities> {
    use sync_core::ChannelDifferenceKind;
    if pts > 0 && rng.chance(0.5) {
        let kind = ChannelDifferenceKind::Empty {
            pts: pts - 1,
            is_final: true,
            timeout: None,
        };
        return ChannelDifference { channel_id, kind };
    }
    let kind = ChannelDifferenceKind::Empty {
        pts,
        is_final: true,
        timeout: None,
    };
    ChannelDifference {
        channel_id: channel_id + 1_000_000,
        kind,
    }
}

fn describe_push(updates: &Updates<TestUpdate, TestEntities>) -> String {
    match updates {
        Updates::TooLong => "updatesTooLong".into(),
        Updates::Short { update, .. } => format!("short {:?}", update.sequence),
        Updates::Combined {
            updates,
            seq_start,
            seq,
            ..
        } => {
            let inner: Vec<String> = updates
                .iter()
                .map(|u| format!("{:?}", u.sequence))
                .collect();
            format!("container seq {seq_start}..={seq} [{}]", inner.join(", "))
        }
    }
}

fn describe_difference(difference: &Difference<TestUpdate, TestEntities>) -> String {
    match difference {
        Difference::Empty { seq, .. } => format!("empty, seq {seq}"),
        Difference::Difference {
            updates,
            state,
            slice,
            ..
        } => {
            format!(
                "{} updates to {state:?}{}",
                updates.len(),
                if *slice { " (slice)" } else { "" }
            )
        }
        Difference::TooLong { pts } => format!("too long, pts {pts}"),
    }
}

trait KindSummary {
    fn kind_summary(&self) -> String;
}

impl KindSummary for ChannelDifference<TestUpdate, TestEntities> {
    fn kind_summary(&self) -> String {
        use sync_core::ChannelDifferenceKind as K;
        match &self.kind {
            K::Empty { pts, .. } => format!("channel {} empty at {pts}", self.channel_id),
            K::Difference {
                updates,
                pts,
                is_final,
                ..
            } => {
                format!(
                    "channel {} {} updates to {pts}, final {is_final}",
                    self.channel_id,
                    updates.len()
                )
            }
            K::TooLong { pts, .. } => format!("channel {} too long, pts {pts}", self.channel_id),
        }
    }
}
