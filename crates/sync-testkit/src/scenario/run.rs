//! One run of a [`Scenario`]: the virtual timeline, pushes through the network, deliveries
//! judged by the oracle, acknowledgements, crashes and restarts from what was committed, and
//! the quiet tail in which the engine must become idle.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::mem;
use std::time::{Duration, Instant};

use sync_core::{
    BatchId, ChannelId, Engine, EngineConfig, Notice, Output, RequestId, Sequence, State, Stats,
    Updates,
};

use crate::network::Network;
use crate::oracle::Oracle;
use crate::rng::Rng;
use crate::server::Server;
use crate::update::{TestEntities, TestUpdate};

use super::requests::Reply;
use super::{Report, Scenario, Violation};

/// Something scheduled on the virtual timeline.
#[derive(Debug)]
pub(super) enum Event {
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

/// What storage holds: the committed state (none before a fresh client's first commit).
#[derive(Debug, Clone)]
pub(super) struct Stored {
    pub(super) state: Option<State>,
    pub(super) channels: HashMap<ChannelId, i32>,
}

pub(super) struct Run<'a> {
    pub(super) scenario: &'a Scenario,
    pub(super) rng: Rng,
    pub(super) server: Server,
    pub(super) engine: Engine<TestUpdate, TestEntities>,
    pub(super) oracle: Oracle,
    pub(super) stored: Stored,
    pub(super) hashes: HashMap<ChannelId, i64>,
    pub(super) start: Instant,
    pub(super) now: Duration,
    pub(super) timeline: BTreeMap<(Duration, u64), Event>,
    pub(super) next_event: u64,
    pub(super) epoch: u32,
    pub(super) network: Network,
    pub(super) trace: VecDeque<String>,
    pub(super) report: Report,
    pub(super) finished_stats: Stats,
    pub(super) trace_length: usize,
    /// The quiet tail, once it has begun.
    pub(super) tail: Option<Tail>,
    /// The server's state when the run began.
    pub(super) initial: State,
    /// Channels the engine tracks, as last seen: a channel new to it is reported to the
    /// oracle with where it was learned.
    pub(super) known: HashSet<ChannelId>,
    /// Channels whose position the server has confirmed to the engine since it (re)started
    /// (stored, or a channel difference accepted): only for these is a lower channel pts a
    /// corruption the engine must refuse.
    pub(super) verified: HashSet<ChannelId>,
}

/// The end of a run: every push has arrived, no crash is left, and the network no longer
/// fails or corrupts requests. The engine must be idle within `bound` requests.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tail {
    pub(super) requests: u64,
    pub(super) bound: u64,
    pub(super) idle: bool,
}

/// Requests a quiet tail may take besides one per channel and the slices of the backlog:
/// a difference, `getState` and the difference after it (`updatePtsChanged`), the idle
/// rule's difference, and a little slack.
pub(super) const TAIL_REQUESTS: u64 = 6;

/// Steps kept for a violation's report; `SYNC_TESTKIT_TRACE` sets another length.
pub(super) const TRACE_LENGTH: usize = 40;

impl<'a> Run<'a> {
    pub(super) fn new(scenario: &'a Scenario) -> Self {
        let server = Server::new(
            scenario.seed,
            scenario.workload.clone(),
            scenario.limits.clone(),
        );
        let state = server.state();
        let channels: HashMap<ChannelId, i32> = if scenario.fresh_start {
            HashMap::new()
        } else {
            server.channel_states().collect()
        };
        let stored = Stored {
            state: (!scenario.fresh_start).then_some(state),
            channels,
        };
        let hashes = server.access_hashes().collect();
        let start = Instant::now();
        let engine = Self::start_engine(&scenario.config, start, &stored);
        Self {
            scenario,
            rng: Rng::new(scenario.seed ^ 0xA5A5_5A5A_F00D_CAFE),
            oracle: Oracle::new(state, stored.channels.iter().map(|(&id, &pts)| (id, pts))),
            server,
            engine,
            known: stored.channels.keys().copied().collect(),
            verified: stored.channels.keys().copied().collect(),
            initial: state,
            stored,
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

    pub(super) fn start_engine(
        config: &EngineConfig,
        now: Instant,
        stored: &Stored,
    ) -> Engine<TestUpdate, TestEntities> {
        let mut channels: Vec<(ChannelId, i32)> = stored
            .channels
            .iter()
            .map(|(&id, &pts)| (id, pts))
            .collect();
        channels.sort_unstable();
        let Some(state) = stored.state else {
            // No common state was committed yet, but channels may have been: the application
            // hands them over as its own.
            let mut engine = Engine::new(config.clone(), now);
            for (channel_id, pts) in channels {
                if let Err(error) = engine.track_channel(channel_id, pts) {
                    unreachable!("stored channel refused: {error}");
                }
            }
            return engine;
        };
        // The stored state is what this driver committed from the engine's own commits, which
        // are checked as they arrive: it is always valid.
        match Engine::from_state(config.clone(), now, state, channels) {
            Ok(engine) => engine,
            Err(error) => unreachable!("stored state refused: {error}"),
        }
    }

    pub(super) fn violation(&self, message: impl Into<String>) -> Violation {
        Violation {
            seed: self.scenario.seed,
            message: message.into(),
            trace: self.trace.iter().cloned().collect(),
        }
    }

    pub(super) fn log(&mut self, step: impl FnOnce() -> String) {
        if self.trace.len() >= self.trace_length {
            self.trace.pop_front();
        }
        let at = self.now.as_millis();
        self.trace.push_back(format!("{at:>9} ms  {}", step()));
    }

    pub(super) fn schedule(&mut self, after: Duration, event: Event) {
        let key = (self.now + after, self.next_event);
        self.next_event += 1;
        self.timeline.insert(key, event);
    }

    pub(super) fn instant(&self) -> Instant {
        self.start + self.now
    }

    pub(super) fn go(mut self) -> Result<Report, Violation> {
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
    pub(super) fn begin_tail(&mut self) {
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
    pub(super) fn check_tail(&mut self) -> Result<(), Violation> {
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

    pub(super) fn handle(&mut self, event: Event) -> Result<(), Violation> {
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
    pub(super) fn send_push(&mut self, updates: Updates<TestUpdate, TestEntities>) {
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

    /// Tells the oracle where the engine began tracking each channel new to it: at the pts
    /// it took, or the server's own when that is lower (a pts beyond the server's is no
    /// knowledge of the channel's history).
    pub(super) fn learn_channels(&mut self) {
        if self.engine.stats().channels_tracked == self.known.len() {
            return;
        }
        let learned: Vec<(ChannelId, i32)> = self
            .server
            .channel_states()
            .filter(|(channel_id, _)| !self.known.contains(channel_id))
            .filter_map(|(channel_id, server_pts)| {
                let pts = self.engine.channel_pts(channel_id)?;
                Some((channel_id, pts.min(server_pts)))
            })
            .collect();
        for (channel_id, pts) in learned {
            self.log(|| format!("channel {channel_id} learned at {pts}"));
            self.known.insert(channel_id);
            self.oracle.learned_channel(channel_id, pts);
        }
    }

    /// Polls the engine dry, doing what it says.
    pub(super) fn drain(&mut self) -> Result<(), Violation> {
        self.learn_channels();
        let mut after_notice = false;
        while let Some(output) = self.engine.poll_output() {
            // Requests, commits and hashes may come between a notice and its batch.
            let follows_notice = match output {
                Output::Notice(Notice::ChannelTooLong { .. }) => {
                    mem::replace(&mut after_notice, true)
                }
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
                        if let Some(old) = self.stored.state {
                            let regressed =
                                state.pts < old.pts || state.qts < old.qts || state.seq < old.seq;
                            if regressed && !commit.state_reset {
                                return Err(self.violation(format!(
                                    "commit moved the state back from {old:?} to {state:?}"
                                )));
                            }
                        }
                        self.stored.state = Some(state);
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
                Output::Notice(Notice::DifferenceTooLong { pts }) => {
                    self.log(|| format!("difference too long: pts {pts}"))
                }
                Output::Notice(Notice::ChannelTooLong { channel_id, pts }) => {
                    self.log(|| format!("channel {channel_id} too long: {pts:?}"));
                }
                Output::Notice(Notice::ChannelClosed { channel_id }) => {
                    return Err(self.violation(format!(
                        "channel {channel_id} closed, but no channel is inaccessible"
                    )));
                }
                Output::Notice(other) => self.log(|| format!("notice {other:?}")),
            }
        }
        let buffered = self.engine.stats().buffered_now;
        if buffered > self.scenario.config.max_buffered_total {
            return Err(self.violation(format!("{buffered} updates buffered, over the cap")));
        }
        Ok(())
    }

    pub(super) fn crash(&mut self) {
        self.log(|| "crash: restart from storage".into());
        self.report.crashes += 1;
        self.epoch += 1;
        add_stats(&mut self.finished_stats, &self.engine.stats());
        self.oracle.crash(
            self.stored.state.unwrap_or(self.initial),
            &self.stored.channels,
        );
        self.server.client_restarted();
        self.engine = Self::start_engine(&self.scenario.config, self.instant(), &self.stored);
        self.known = self.stored.channels.keys().copied().collect();
        self.verified = self.known.clone();
    }

    pub(super) fn finish(mut self) -> Result<Report, Violation> {
        let engine = &self.engine;
        let verdict = self
            .oracle
            .finish(&self.server, engine.state(), |id| engine.channel_pts(id));
        if let Err(message) = verdict {
            return Err(self.violation(message));
        }
        if self.engine.stats().unacknowledged_batches == 0
            && self.stored.state != self.engine.state()
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

pub(super) fn add_stats(total: &mut Stats, more: &Stats) {
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

pub(super) fn describe_push(updates: &Updates<TestUpdate, TestEntities>) -> String {
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
