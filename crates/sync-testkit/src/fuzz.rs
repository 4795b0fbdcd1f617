//! Fuzz bodies shared by the cargo-fuzz targets (`fuzz/`), the property tests and the corpus
//! tests: each takes raw bytes, derives its input with [`arbitrary`], runs it and returns the
//! first broken rule as an error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use sync_core::{
    Affected, BatchId, ChannelDifference, ChannelDifferenceKind, ChannelHash, ChannelId,
    Difference, Engine, EngineConfig, Failure, Output, Request, RequestId, RequestKind, Sequence,
    State, Updates,
};

use crate::faults::Faults;
use crate::scenario::Scenario;
use crate::server::{Limits, Workload};
use crate::update::{TestEntities, TestUpdate};

/// A number as the fuzzer picks it: mostly near the engine's current value, where the
/// interesting rules are, sometimes anything at all.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Number {
    /// The engine's current value plus a small offset.
    Near(i8),
    /// Any value, negative and extreme ones included.
    Raw(i32),
}

impl Number {
    fn resolve(self, near: i32) -> i32 {
        match self {
            Number::Near(offset) => near.saturating_add(i32::from(offset)),
            Number::Raw(value) => value,
        }
    }
}

/// Which sequence an update or reply speaks of.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Place {
    /// Unordered.
    Unordered,
    /// Common pts with a count.
    Common(Number, u8),
    /// qts.
    Qts(Number),
    /// A channel's pts with a count.
    Channel(u8, Number, u8),
    /// `updateChannelTooLong`.
    ChannelTooLong(u8, Option<Number>),
    /// A channel id that is not positive.
    BadChannel(i64, i32),
    /// `updatePtsChanged`.
    PtsChanged,
}

/// Channel ids the fuzzer picks from: a handful, so that they collide.
fn channel(index: u8) -> ChannelId {
    i64::from(index % 6) + 1
}

/// One input to the engine.
#[derive(Debug, Clone, Arbitrary)]
pub enum Step {
    /// A short update.
    Short(Place),
    /// A container.
    Container {
        /// Its updates.
        updates: Vec<Place>,
        /// `seq_start`.
        seq_start: Number,
        /// `seq`.
        seq: Number,
        /// A channel access hash in its entities (min or not).
        hash: Option<(u8, i64, bool)>,
    },
    /// `updatesTooLong`.
    TooLong,
    /// Answer a getState.
    State(u8, Number, Number, Number),
    /// Answer a getDifference.
    Difference(u8, DifferenceSpec),
    /// Answer a getChannelDifference.
    ChannelDifference(u8, Option<u8>, ChannelSpec),
    /// A request failed.
    Fail(u8, Option<u16>, bool),
    /// Time passes and deadlines fire.
    Advance(u32),
    /// Acknowledge a delivered batch.
    Ack(u8),
    /// The pts of an own call.
    Affected(Option<u8>, Number, u8),
    /// Session lost.
    RequestDifference,
    /// Channel bookkeeping by the application.
    Track(u8, Number),
    /// Open a channel.
    Open(u8),
    /// Close a channel.
    Close(u8),
    /// Forget a channel.
    Forget(u8),
}

/// A getDifference answer.
#[derive(Debug, Clone, Arbitrary)]
pub enum DifferenceSpec {
    /// `differenceEmpty`.
    Empty(Number),
    /// `difference` or a slice.
    Full {
        /// Its updates.
        updates: Vec<Place>,
        /// Its state.
        pts: Number,
        /// Its qts.
        qts: Number,
        /// Its seq.
        seq: Number,
        /// A slice?
        slice: bool,
    },
    /// `differenceTooLong`.
    TooLong(Number),
}

/// A getChannelDifference answer.
#[derive(Debug, Clone, Arbitrary)]
pub enum ChannelSpec {
    /// Empty.
    Empty(Number, bool, Option<i32>),
    /// Updates.
    Full(Vec<Place>, Number, bool),
    /// Too long.
    TooLong(Number),
}

/// A whole fuzz input for [`core_inputs`].
#[derive(Debug, Clone, Arbitrary)]
pub struct CoreInputs {
    /// Start fresh (getState) rather than from stored state.
    pub fresh: bool,
    /// Stored channels at start.
    pub channels: Vec<(u8, u16)>,
    /// The inputs.
    pub steps: Vec<Step>,
}

fn update(place: Place, engine: &Engine<TestUpdate, TestEntities>, id: u64) -> TestUpdate {
    let state = engine.state().unwrap_or_default();
    let sequence = match place {
        Place::Unordered => Sequence::Unordered,
        Place::Common(pts, count) => Sequence::Common {
            pts: pts.resolve(state.pts),
            pts_count: i32::from(count % 5),
        },
        Place::Qts(qts) => Sequence::Qts {
            qts: qts.resolve(state.qts),
        },
        Place::Channel(c, pts, count) => {
            let channel_id = channel(c);
            let near = engine.channel_pts(channel_id).unwrap_or(10);
            Sequence::Channel {
                channel_id,
                pts: pts.resolve(near),
                pts_count: i32::from(count % 5),
            }
        }
        Place::ChannelTooLong(c, pts) => {
            let channel_id = channel(c);
            let near = engine.channel_pts(channel_id).unwrap_or(10);
            Sequence::ChannelTooLong {
                channel_id,
                pts: pts.map(|p| p.resolve(near)),
            }
        }
        Place::BadChannel(channel_id, pts) => Sequence::Channel {
            channel_id: -channel_id.saturating_abs(),
            pts,
            pts_count: 1,
        },
        Place::PtsChanged => Sequence::PtsChanged,
    };
    TestUpdate { id, sequence }
}

/// The configuration fuzzed engines run with: tiny caps, so that every limit is reached.
pub fn fuzz_config() -> EngineConfig {
    EngineConfig {
        max_buffered_per_sequence: 4,
        max_buffered_total: 10,
        max_concurrent_channel_requests: 2,
        max_open_channels: 2,
        ..EngineConfig::default()
    }
}

/// Feeds arbitrary inputs to the engine. The rules: no panic; after every input the outputs
/// come to an end; buffers stay within their caps; an input refused with an error changes
/// nothing; commits never move a sequence backwards unless they say it is a reset; after
/// `handle_timeout(now)` the next deadline is later than `now` (no busy loop).
pub fn core_inputs(data: &[u8]) -> Result<(), String> {
    let Ok(input) = CoreInputs::arbitrary_take_rest(Unstructured::new(data)) else {
        return Ok(());
    };
    run_core_inputs(&input)
}

/// [`core_inputs`] on a structured input.
pub fn run_core_inputs(input: &CoreInputs) -> Result<(), String> {
    let start = Instant::now();
    let mut now = start;
    let config = fuzz_config();
    let stored = State {
        pts: 100,
        qts: 10,
        date: 0,
        seq: 5,
    };
    let channels: HashMap<ChannelId, i32> = input
        .channels
        .iter()
        .map(|&(c, pts)| (channel(c), i32::from(pts)))
        .collect();
    let mut engine = if input.fresh {
        Engine::new(config.clone(), now)
    } else {
        let mut list: Vec<(ChannelId, i32)> = channels.iter().map(|(&c, &p)| (c, p)).collect();
        list.sort_unstable();
        Engine::from_state(config.clone(), now, stored, list)
            .map_err(|e| format!("stored state refused: {e}"))?
    };
    // A fresh engine knows no stored channels, so neither does its storage.
    let mut committed = (
        stored,
        if input.fresh {
            HashMap::new()
        } else {
            channels
        },
    );
    let mut requests: Vec<Request> = Vec::new();
    let mut batches: Vec<BatchId> = Vec::new();
    let mut next_id = 1;
    drain(
        &mut engine,
        &config,
        &mut requests,
        &mut batches,
        &mut committed,
    )?;

    for step in &input.steps {
        let before = (engine.state(), engine.stats());
        let tracked_before: Vec<ChannelId> = (0..6)
            .map(channel)
            .filter(|&c| engine.channel_pts(c).is_some())
            .collect();
        let pick = |index: u8, requests: &[Request]| -> RequestId {
            if requests.is_empty() {
                RequestId(u64::from(index) + 1_000)
            } else {
                requests[usize::from(index) % requests.len()].id
            }
        };
        let outcome = match step.clone() {
            Step::Short(place) => {
                next_id += 1;
                let update = update(place, &engine, next_id);
                engine.handle_updates(now, Updates::Short { update, date: 0 })
            }
            Step::Container {
                updates,
                seq_start,
                seq,
                hash,
            } => {
                let state = engine.state().unwrap_or_default();
                let updates = updates
                    .into_iter()
                    .map(|p| {
                        next_id += 1;
                        update(p, &engine, next_id)
                    })
                    .collect();
                let channels = hash
                    .map(|(c, access_hash, min)| {
                        vec![ChannelHash {
                            channel_id: channel(c),
                            access_hash,
                            min,
                        }]
                    })
                    .unwrap_or_default();
                engine.handle_updates(
                    now,
                    Updates::Combined {
                        updates,
                        entities: TestEntities { channels },
                        date: 0,
                        seq_start: seq_start.resolve(state.seq + 1),
                        seq: seq.resolve(state.seq + 1),
                    },
                )
            }
            Step::TooLong => engine.handle_updates(now, Updates::TooLong),
            Step::State(r, pts, qts, seq) => {
                let state = State {
                    pts: pts.resolve(100),
                    qts: qts.resolve(10),
                    date: 0,
                    seq: seq.resolve(5),
                };
                engine.handle_state(now, pick(r, &requests), state)
            }
            Step::Difference(r, spec) => {
                let state = engine.state().unwrap_or_default();
                let difference = match spec {
                    DifferenceSpec::Empty(seq) => Difference::Empty {
                        date: 0,
                        seq: seq.resolve(state.seq),
                    },
                    DifferenceSpec::Full {
                        updates,
                        pts,
                        qts,
                        seq,
                        slice,
                    } => Difference::Difference {
                        updates: updates
                            .into_iter()
                            .map(|p| {
                                next_id += 1;
                                update(p, &engine, next_id)
                            })
                            .collect(),
                        entities: TestEntities::default(),
                        state: State {
                            pts: pts.resolve(state.pts),
                            qts: qts.resolve(state.qts),
                            date: 0,
                            seq: seq.resolve(state.seq),
                        },
                        slice,
                    },
                    DifferenceSpec::TooLong(pts) => Difference::TooLong {
                        pts: pts.resolve(state.pts),
                    },
                };
                engine.handle_difference(now, pick(r, &requests), difference)
            }
            Step::ChannelDifference(r, c, spec) => {
                let id = pick(r, &requests);
                let asked = requests
                    .iter()
                    .find(|q| q.id == id)
                    .and_then(|q| match q.kind {
                        RequestKind::GetChannelDifference { channel_id, .. } => Some(channel_id),
                        _ => None,
                    });
                let channel_id = c.map(channel).or(asked).unwrap_or(1);
                let near = engine.channel_pts(channel_id).unwrap_or(10);
                let kind = match spec {
                    ChannelSpec::Empty(pts, is_final, timeout) => ChannelDifferenceKind::Empty {
                        pts: pts.resolve(near),
                        is_final,
                        timeout,
                    },
                    ChannelSpec::Full(updates, pts, is_final) => {
                        ChannelDifferenceKind::Difference {
                            updates: updates
                                .into_iter()
                                .map(|p| {
                                    next_id += 1;
                                    update(p, &engine, next_id)
                                })
                                .collect(),
                            entities: TestEntities::default(),
                            pts: pts.resolve(near),
                            is_final,
                            timeout: None,
                        }
                    }
                    ChannelSpec::TooLong(pts) => ChannelDifferenceKind::TooLong {
                        pts: pts.resolve(near),
                        updates: Vec::new(),
                        entities: TestEntities::default(),
                        timeout: None,
                    },
                };
                engine.handle_channel_difference(now, id, ChannelDifference { channel_id, kind })
            }
            Step::Fail(r, flood, channel_fatal) => {
                let failure = if channel_fatal {
                    Failure::ChannelInaccessible
                } else {
                    Failure::Retry {
                        after: flood.map(|s| Duration::from_millis(u64::from(s))),
                    }
                };
                engine.handle_failure(now, pick(r, &requests), failure)
            }
            Step::Advance(millis) => {
                now += Duration::from_millis(u64::from(millis % 2_000_000));
                engine.handle_timeout(now);
                if engine.poll_timeout().is_some_and(|at| at <= now) {
                    return Err(format!(
                        "after handle_timeout({:?}) the next deadline is not later",
                        now - start
                    ));
                }
                Ok(())
            }
            Step::Ack(b) => {
                if batches.is_empty() {
                    engine.ack(BatchId(u64::from(b) + 1_000_000))
                } else {
                    let batch = batches.remove(usize::from(b) % batches.len());
                    engine.ack(batch)
                }
            }
            Step::Affected(c, pts, count) => {
                let state = engine.state().unwrap_or_default();
                let affected = match c {
                    None => Affected::Common {
                        pts: pts.resolve(state.pts),
                        pts_count: i32::from(count % 5),
                    },
                    Some(c) => {
                        let channel_id = channel(c);
                        let near = engine.channel_pts(channel_id).unwrap_or(10);
                        Affected::Channel {
                            channel_id,
                            pts: pts.resolve(near),
                            pts_count: i32::from(count % 5),
                        }
                    }
                };
                engine.handle_affected(now, affected)
            }
            Step::RequestDifference => {
                engine.request_difference(now);
                Ok(())
            }
            Step::Track(c, pts) => engine.track_channel(channel(c), pts.resolve(10)),
            Step::Open(c) => engine.open_channel(channel(c)),
            Step::Close(c) => {
                engine.close_channel(channel(c));
                Ok(())
            }
            Step::Forget(c) => {
                engine.forget_channel(channel(c));
                Ok(())
            }
        };
        if let Err(error) = outcome {
            let push = matches!(
                step,
                Step::Short(_) | Step::Container { .. } | Step::Affected(..)
            );
            // What a refused push names is fetched again; only a channel nobody tracks has
            // nothing to fetch (the application is told instead).
            let untracked = matches!(step, Step::Affected(Some(c), ..) if !tracked_before.contains(&channel(*c)));
            let (state, stats) = (engine.state(), engine.stats());
            if push {
                // A refused push applies nothing, and is recovered by a difference.
                let (state_before, stats_before) = before;
                if state != state_before
                    || stats.updates_delivered != stats_before.updates_delivered
                    || stats.buffered_now != stats_before.buffered_now
                {
                    return Err(format!("{step:?} was refused ({error}) but applied"));
                }
                if stats.pushes_refused != stats_before.pushes_refused + 1
                    || (engine.is_idle() && !untracked)
                {
                    return Err(format!("{step:?} was refused ({error}) and not recovered"));
                }
            } else if (state, stats) != before {
                return Err(format!(
                    "{step:?} was refused ({error}) but changed the engine"
                ));
            }
        }
        drain(
            &mut engine,
            &config,
            &mut requests,
            &mut batches,
            &mut committed,
        )?;
    }
    Ok(())
}

/// Polls the engine dry, checking what it emits.
fn drain(
    engine: &mut Engine<TestUpdate, TestEntities>,
    config: &EngineConfig,
    requests: &mut Vec<Request>,
    batches: &mut Vec<BatchId>,
    committed: &mut (State, HashMap<ChannelId, i32>),
) -> Result<(), String> {
    let mut outputs = 0u32;
    while let Some(output) = engine.poll_output() {
        outputs += 1;
        if outputs > 1_000_000 {
            return Err("an input produced outputs without end".into());
        }
        match output {
            Output::Deliver(batch) => batches.push(batch.id),
            Output::Request(request) => requests.push(request),
            Output::Commit(commit) => {
                if let Some(state) = commit.state {
                    let old = committed.0;
                    let back = state.pts < old.pts || state.qts < old.qts || state.seq < old.seq;
                    if back && !commit.state_reset {
                        return Err(format!(
                            "commit moved the state back from {old:?} to {state:?}"
                        ));
                    }
                    committed.0 = state;
                }
                for channel_id in &commit.removed_channels {
                    committed.1.remove(channel_id);
                }
                for channel in &commit.channels {
                    let old = committed.1.insert(channel.channel_id, channel.pts);
                    if old.is_some_and(|old| channel.pts < old) && !channel.reset {
                        return Err(format!(
                            "commit moved channel {} back from {old:?} to {}",
                            channel.channel_id, channel.pts
                        ));
                    }
                }
            }
            Output::AccessHashes(hashes) => {
                if hashes.iter().any(|h| h.min) {
                    return Err("a min access hash was reported".into());
                }
            }
            Output::Notice(_) => {}
        }
    }
    // Requests the engine no longer waits for are harmless to keep: replies to them must be
    // refused, which the fuzzer exercises too. Keep the list short.
    if requests.len() > 64 {
        requests.drain(..requests.len() - 64);
    }
    let buffered = engine.stats().buffered_now;
    if buffered > config.max_buffered_total {
        return Err(format!(
            "{buffered} updates buffered, over the cap of {}",
            config.max_buffered_total
        ));
    }
    Ok(())
}

/// A whole simulated run, as the fuzzer picks it.
#[derive(Debug, Clone, Arbitrary)]
pub struct ScenarioSpec {
    /// The seed.
    pub seed: u64,
    /// Events, modulo 400.
    pub events: u16,
    /// Channels, modulo 16.
    pub channels: u8,
    /// Fault chances in percent: drop, duplicate, reorder, too-long, channel too-long,
    /// silence, request failure, corrupt reply.
    pub faults: [u8; 8],
    /// Crashes, modulo 4.
    pub crashes: u8,
    /// Acknowledgement delay in milliseconds.
    pub ack_delay: u16,
    /// Difference limit, too-long threshold, channel too-long threshold.
    pub limits: (u8, u16, u16),
    /// Buffer caps (per sequence, total) and channel request concurrency.
    pub caps: (u8, u8, u8),
    /// More fault chances in percent: absurd push, malformed update in a container,
    /// `updatePtsChanged`.
    pub more_faults: [u8; 3],
}

impl ScenarioSpec {
    /// The scenario this spec describes.
    pub fn scenario(&self) -> Scenario {
        let percent = |i: usize| f64::from(self.faults[i] % 101) / 100.0;
        // Faults that destroy most pushes are kept below one half so that runs still end.
        let faults = Faults {
            drop: percent(0) * 0.5,
            duplicate: percent(1) * 0.5,
            reorder: percent(2),
            reorder_window: Duration::from_millis(u64::from(self.faults[2]) * 10),
            too_long: percent(3) * 0.1,
            channel_too_long: percent(4) * 0.2,
            silence: percent(5) * 0.05,
            silence_length: u64::from(self.faults[5] % 64),
            request_failure: percent(6) * 0.5,
            corrupt_reply: percent(7) * 0.5,
            absurd_push: f64::from(self.more_faults[0] % 101) / 100.0 * 0.2,
            malformed_update: f64::from(self.more_faults[1] % 101) / 100.0 * 0.3,
            pts_changed: f64::from(self.more_faults[2] % 101) / 100.0 * 0.05,
        };
        let limits = Limits {
            difference_limit: usize::from(self.limits.0 % 200) + 1,
            difference_too_long_after: usize::from(self.limits.1 % 2_000) + 1,
            channel_too_long_after: usize::from(self.limits.2 % 500) + 1,
            channel_timeout: Some(30),
            ..Limits::default()
        };
        let config = EngineConfig {
            max_buffered_per_sequence: usize::from(self.caps.0 % 64) + 1,
            max_buffered_total: usize::from(self.caps.1) + 1,
            max_concurrent_channel_requests: usize::from(self.caps.2 % 8) + 1,
            pts_total_limit: None,
            ..EngineConfig::default()
        };
        Scenario::new(self.seed)
            .events(u64::from(self.events % 400))
            .workload(Workload {
                channels: usize::from(self.channels % 16),
                ..Workload::default()
            })
            .faults(faults)
            .limits(limits)
            .config(config)
            .crashes(u32::from(self.crashes % 4))
            .ack_delay(Duration::from_millis(u64::from(self.ack_delay % 500)))
    }
}

/// Runs an arbitrary simulated scenario: the oracle must hold.
pub fn core_scenario(data: &[u8]) -> Result<(), String> {
    let Ok(spec) = ScenarioSpec::arbitrary_take_rest(Unstructured::new(data)) else {
        return Ok(());
    };
    spec.scenario()
        .run()
        .map(|_| ())
        .map_err(|violation| format!("{violation}\n{spec:?}"))
}

/// Runs a fuzz body over every input of a checked-in corpus directory, in name order, and
/// returns the first failure with the file it came from. A missing or empty corpus is an
/// error too: the corpus test must not pass by testing nothing.
///
/// `corpus` is usually `fuzz/corpus/<target>` of the repository: [`corpus`], and
/// [`check_corpus`] runs it as a test.
pub fn run_corpus(
    corpus: &Path,
    body: impl Fn(&[u8]) -> Result<(), String>,
) -> Result<usize, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus)
        .map_err(|error| format!("the corpus at {} cannot be read: {error}", corpus.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_file())
        .collect();
    if files.is_empty() {
        return Err(format!("the corpus at {} is empty", corpus.display()));
    }
    files.sort();
    for path in &files {
        let bytes = std::fs::read(path).map_err(|error| format!("{}: {error}", path.display()))?;
        body(&bytes).map_err(|message| format!("{}: {message}", path.display()))?;
    }
    Ok(files.len())
}

/// The checked-in corpus of the fuzz target `target`: `fuzz/corpus/<target>` of the
/// repository, found from this crate's directory (so it exists only in a checkout).
#[must_use]
pub fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// [`run_corpus`] over the [`corpus`] of `target`, as a test.
///
/// # Panics
///
/// With the first failure and the file it came from, or when the corpus is missing or empty.
pub fn check_corpus(target: &str, body: impl Fn(&[u8]) -> Result<(), String>) {
    if let Err(message) = run_corpus(&corpus(target), body) {
        panic!("{message}");
    }
}
