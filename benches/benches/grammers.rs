//! sync-core (through the sync-grammers adapter) side by side with grammers' own message box
//! (`grammers_session::updates::MessageBoxes`), fed the same stream of TL `Updates` values in
//! one process.
//!
//! `cargo bench -p sync-benches --bench grammers`
//!
//! Each scenario runs five ways: building the inputs alone (`build`), building and feeding
//! grammers (`grammers`), building and feeding the adapter and engine polled after every value
//! (`sync-core`) or after every 8 (`sync-core-batched`), and building and converting alone
//! (`adapter`, the cost of owning each update in a box, a floor for the engine side). Inputs are
//! generated inside the timed loop, one at a time, so the bench measures update handling
//! rather than memory bandwidth; the net cost of a side is its time minus `build`. A summary
//! table of per-update costs and ratios is printed at the end.
//!
//! Both sides do what a driver does per pushed value: the engine side converts it
//! (`Converter::updates`, peers known), feeds it, polls every output and acknowledges and
//! recycles the batch; the grammers side calls `process_updates` and drops the result. Both
//! read the clock once per value (grammers does it inside `process_updates`).
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use grammers_session::updates::{MessageBoxes, UpdatesLike};
use sync_core::{Difference, EngineConfig, Output, State};
use sync_grammers::tl;
use sync_grammers::{AllKnown, Converter, TlEngine};

/// Updates per timed iteration.
const BLOCK: u64 = 1_000;
/// Pushed values a batching driver takes before it polls the engine (see the
/// `sync-core-batched` side).
const POLL_EVERY: u64 = 8;
/// Text of each message: with its entities, a TL value of about 5 KB.
const TEXT_LEN: usize = 4_900;
const START_PTS: i32 = 1;
const START_SEQ: i32 = 1;

#[derive(Debug, Clone, Copy)]
enum Scenario {
    /// `updateShort` + `updateNewMessage`, common pts in order.
    InOrder,
    /// `updateShort` + `updateNewChannelMessage`, round-robin over this many channels.
    Channels(i64),
    /// `updates` containers of 10 `updateNewMessage`, consecutive seq.
    Seq10,
    /// Common pts with every pair swapped: each pair opens a gap and closes it.
    Swapped,
    /// `updateShortMessage`, common pts in order.
    ShortMessage,
}

impl Scenario {
    fn name(self) -> String {
        match self {
            Scenario::InOrder => "in_order".into(),
            Scenario::Channels(n) => format!("channels_{n}"),
            Scenario::Seq10 => "seq_containers_10".into(),
            Scenario::Swapped => "pairs_swapped".into(),
            Scenario::ShortMessage => "short_message".into(),
        }
    }

    /// How many updates each pushed value carries.
    fn per_value(self) -> u64 {
        match self {
            Scenario::Seq10 => 10,
            _ => 1,
        }
    }

    fn channels(self) -> i64 {
        match self {
            Scenario::Channels(n) => n,
            _ => 0,
        }
    }
}

/// The same endless stream for every side: the i-th value depends only on i.
struct Stream {
    scenario: Scenario,
    text: String,
    produced: u64,
    pts: i32,
    seq: i32,
    channel_pts: Vec<i32>,
}

impl Stream {
    fn new(scenario: Scenario) -> Self {
        Self {
            scenario,
            text: "x".repeat(TEXT_LEN),
            produced: 0,
            pts: START_PTS,
            seq: START_SEQ,
            channel_pts: vec![START_PTS; usize::try_from(scenario.channels()).unwrap()],
        }
    }

    /// The next pushed value ([`Scenario::per_value`] updates).
    ///
    /// Returned alone, not in a tuple with its count, so the caller moves it straight into a
    /// call: destructuring a 5 KB value copies it, and neither side should pay for the harness.
    fn next(&mut self) -> tl::enums::Updates {
        let i = self.produced;
        match self.scenario {
            Scenario::InOrder => {
                self.produced += 1;
                self.pts += 1;
                self.short(new_message(self.message(self.pts), self.pts))
            }
            Scenario::Swapped => {
                self.produced += 1;
                // Pair k holds base+2k+1 and base+2k+2; the second comes first.
                let pair_base = START_PTS + 2 * i32::try_from(i / 2).unwrap();
                let pts = if i.is_multiple_of(2) {
                    pair_base + 2
                } else {
                    pair_base + 1
                };
                self.short(new_message(self.message(pts), pts))
            }
            Scenario::Channels(n) => {
                self.produced += 1;
                let index = usize::try_from(i % u64::try_from(n).unwrap()).unwrap();
                self.channel_pts[index] += 1;
                let pts = self.channel_pts[index];
                let channel_id = i64::try_from(index).unwrap() + 1;
                let mut message = self.message(pts);
                message.peer_id = tl::types::PeerChannel { channel_id }.into();
                let update = tl::types::UpdateNewChannelMessage {
                    message: message.into(),
                    pts,
                    pts_count: 1,
                };
                self.short(update.into())
            }
            Scenario::Seq10 => {
                self.produced += 10;
                self.seq += 1;
                let updates = (0..10)
                    .map(|_| {
                        self.pts += 1;
                        new_message(self.message(self.pts), self.pts)
                    })
                    .collect();
                let container = tl::types::Updates {
                    updates,
                    users: vec![],
                    chats: vec![],
                    date: 1_700_000_000,
                    seq: self.seq,
                };
                container.into()
            }
            Scenario::ShortMessage => {
                self.produced += 1;
                self.pts += 1;
                let short = tl::types::UpdateShortMessage {
                    out: false,
                    mentioned: false,
                    media_unread: false,
                    silent: false,
                    id: self.pts,
                    user_id: 42,
                    message: self.text.clone(),
                    pts: self.pts,
                    pts_count: 1,
                    date: 1_700_000_000,
                    fwd_from: None,
                    via_bot_id: None,
                    reply_to: None,
                    entities: Some(entities()),
                    ttl_period: None,
                };
                short.into()
            }
        }
    }

    fn short(&self, update: tl::enums::Update) -> tl::enums::Updates {
        tl::types::UpdateShort {
            update,
            date: 1_700_000_000,
        }
        .into()
    }

    fn message(&self, id: i32) -> tl::types::Message {
        message(id, self.text.clone())
    }
}

fn new_message(message: tl::types::Message, pts: i32) -> tl::enums::Update {
    tl::types::UpdateNewMessage {
        message: message.into(),
        pts,
        pts_count: 1,
    }
    .into()
}

fn entities() -> Vec<tl::enums::MessageEntity> {
    (0..8)
        .map(|i| {
            tl::types::MessageEntityBold {
                offset: i * 10,
                length: 5,
            }
            .into()
        })
        .collect()
}

fn message(id: i32, text: String) -> tl::types::Message {
    let peer = tl::enums::Peer::from(tl::types::PeerUser { user_id: 42 });
    let mut message = sync_grammers::blank_message(id, peer.clone(), 1_700_000_000, text);
    message.from_id = Some(peer);
    message.entities = Some(entities());
    message
}

/// grammers' message box at the start state, every channel known, not fetching anything.
fn grammers_boxes(scenario: Scenario) -> MessageBoxes {
    let mut boxes = MessageBoxes::new();
    boxes.set_state(tl::types::updates::State {
        pts: START_PTS,
        qts: START_PTS,
        date: 1,
        seq: START_SEQ,
        unread_count: 0,
    });
    for id in 1..=scenario.channels() {
        boxes.try_set_channel_state(id, START_PTS);
    }
    debug_assert!(
        boxes.session_state().channels.len() == usize::try_from(scenario.channels()).unwrap_or(0)
    );
    boxes
}

/// The engine at the same start state, past its start-up difference.
fn our_engine(scenario: Scenario) -> TlEngine {
    let now = Instant::now();
    let state = State {
        pts: START_PTS,
        qts: START_PTS,
        date: 1,
        seq: START_SEQ,
    };
    let channels = (1..=scenario.channels()).map(|id| (id, START_PTS));
    let mut engine = TlEngine::from_state(EngineConfig::default(), now, state, channels).unwrap();
    let Some(Output::Request(request)) = engine.poll_output() else {
        unreachable!()
    };
    engine
        .handle_difference(
            now,
            request.id,
            Difference::Empty {
                date: 1,
                seq: START_SEQ,
            },
        )
        .unwrap();
    drain(&mut engine);
    engine
}

fn drain(engine: &mut TlEngine) -> u64 {
    let mut delivered = 0;
    while let Some(output) = engine.poll_output() {
        if let Output::Deliver(mut batch) = output {
            delivered += batch.updates.len() as u64;
            engine.ack(batch.id).unwrap();
            // The application takes the updates; the vector goes back to the engine.
            batch.updates.clear();
            engine.recycle(batch.updates);
        }
    }
    delivered
}

/// Time and update counts per (scenario, side), accumulated over every timed run.
#[derive(Default, Clone, Copy)]
struct Tally {
    elapsed: Duration,
    updates: u64,
    delivered: u64,
}

impl Tally {
    fn ns_per_update(self) -> f64 {
        self.elapsed.as_secs_f64() * 1e9 / self.updates.max(1) as f64
    }
}

thread_local! {
    static TALLIES: RefCell<BTreeMap<(String, &'static str), Tally>> = RefCell::default();
}

fn record(scenario: Scenario, side: &'static str, elapsed: Duration, updates: u64, delivered: u64) {
    TALLIES.with(|t| {
        let mut t = t.borrow_mut();
        let tally = t.entry((scenario.name(), side)).or_default();
        tally.elapsed += elapsed;
        tally.updates += updates;
        tally.delivered += delivered;
    });
}

/// Runs `iters` blocks of `BLOCK` updates through `step`, which returns the number of updates
/// it consumed and delivered.
fn run_blocks(iters: u64, mut step: impl FnMut() -> (u64, u64)) -> (Duration, u64, u64) {
    let start = Instant::now();
    let (mut updates, mut delivered) = (0, 0);
    for _ in 0..iters {
        let block_end = updates + BLOCK;
        while updates < block_end {
            let (n, d) = step();
            updates += n;
            delivered += d;
        }
    }
    (start.elapsed(), updates, delivered)
}

fn bench_scenario(c: &mut Criterion, scenario: Scenario) {
    let mut group = c.benchmark_group(format!("grammers/{}", scenario.name()));
    group.throughput(Throughput::Elements(BLOCK));

    group.bench_function("build", |b| {
        let mut stream = Stream::new(scenario);
        b.iter_custom(|iters| {
            let (elapsed, updates, _) = run_blocks(iters, || {
                black_box(stream.next());
                (scenario.per_value(), 0)
            });
            record(scenario, "build", elapsed, updates, 0);
            elapsed
        });
    });

    group.bench_function("grammers", |b| {
        let mut stream = Stream::new(scenario);
        let mut boxes = grammers_boxes(scenario);
        b.iter_custom(|iters| {
            let (elapsed, updates, delivered) = run_blocks(iters, || {
                let delivered = match boxes.process_updates(UpdatesLike::Updates(stream.next())) {
                    Ok((updates, users, chats)) => {
                        let delivered = updates.len() as u64;
                        black_box((updates, users, chats));
                        delivered
                    }
                    Err(gap) => {
                        black_box(gap);
                        0
                    }
                };
                (scenario.per_value(), delivered)
            });
            record(scenario, "grammers", elapsed, updates, delivered);
            elapsed
        });
    });

    // The conversion alone, its result dropped: boxing each update (one 5 KB copy, one
    // allocation and its release) is what keeping an update past the call costs any consumer,
    // so this bounds how far below grammers the engine side can go.
    group.bench_function("adapter", |b| {
        let mut stream = Stream::new(scenario);
        let converter = Converter::new(AllKnown);
        b.iter_custom(|iters| {
            let (elapsed, updates, _) = run_blocks(iters, || {
                black_box(converter.updates(stream.next()));
                (scenario.per_value(), 0)
            });
            record(scenario, "adapter", elapsed, updates, 0);
            elapsed
        });
    });

    // Polled after every value, and, as a driver that takes what its socket has ready before
    // polling does (sync-runtime's loop does this), after every `POLL_EVERY`: one clock read,
    // one batch, one commit per turn. Kept small: 64 values of 10 KB each (update and text)
    // outgrow the cache, and the misses cost more than the polls saved.
    for (side, poll_every) in [("sync-core", 1), ("sync-core-batched", POLL_EVERY)] {
        group.bench_function(side, |b| {
            let mut stream = Stream::new(scenario);
            let mut engine = our_engine(scenario);
            let converter = Converter::new(AllKnown);
            let mut now = Instant::now();
            let mut fed = 0u64;
            b.iter_custom(|iters| {
                let (elapsed, updates, delivered) = run_blocks(iters, || {
                    if fed.is_multiple_of(poll_every) {
                        now = Instant::now();
                    }
                    converter
                        .updates(stream.next())
                        .apply(&mut engine, now)
                        .unwrap();
                    fed += 1;
                    let delivered = if fed.is_multiple_of(poll_every) {
                        drain(&mut engine)
                    } else {
                        0
                    };
                    (scenario.per_value(), delivered)
                });
                record(scenario, side, elapsed, updates, delivered);
                elapsed
            });
        });
    }

    group.finish();
}

fn summary() {
    let tallies = TALLIES.with(|t| t.borrow().clone());
    let get = |scenario: &str, side| tallies.get(&(scenario.to_owned(), side)).copied();
    println!();
    println!(
        "Net ns per update (a side's time minus `build`), and grammers' net over each sync-core side's net."
    );
    println!();
    println!(
        "| scenario | build | grammers | sync-core, polled per value | sync-core, polled every 8 | adapter alone | ratio per value | ratio every 8 | bound (grammers / adapter) | delivered/fed (grammers, per value, every 8) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for scenario in SCENARIOS {
        let name = scenario.name();
        let Some(build) = get(&name, "build") else {
            continue; // filtered out on the command line
        };
        let build_ns = build.ns_per_update();
        let net = |side| get(&name, side).map_or(f64::NAN, |t| t.ns_per_update() - build_ns);
        let fed = |side| {
            get(&name, side).map_or(f64::NAN, |t| t.delivered as f64 / t.updates.max(1) as f64)
        };
        let theirs = net("grammers");
        let (per_value, batched, adapter) =
            (net("sync-core"), net("sync-core-batched"), net("adapter"));
        println!(
            "| {name} | {build_ns:.0} | {theirs:.0} | {per_value:.0} | {batched:.0} | {adapter:.0} | {:.1}× | {:.1}× | {:.1}× | {:.3}, {:.3}, {:.3} |",
            theirs / per_value,
            theirs / batched,
            theirs / adapter,
            fed("grammers"),
            fed("sync-core"),
            fed("sync-core-batched"),
        );
    }
}

const SCENARIOS: [Scenario; 6] = [
    Scenario::InOrder,
    Scenario::Channels(1),
    Scenario::Channels(1000),
    Scenario::Seq10,
    Scenario::Swapped,
    Scenario::ShortMessage,
];

fn main() {
    // Small samples keep the whole run near two minutes on a busy two-core machine.
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    for scenario in SCENARIOS {
        bench_scenario(&mut c, scenario);
    }
    c.final_summary();
    summary();
}
