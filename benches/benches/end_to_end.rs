//! The whole runtime against the simulated server, as fast as it goes: a `Manager` on tokio,
//! in-memory storage, dispatch to a trivial handler through the sharded fan-out.
//!
//! `cargo bench -p sync-benches --bench end_to_end` (`E2E_EVENTS`, `E2E_RUNS` to change the
//! size and the number of runs, `E2E_READ` the pushes per read of the live reader, `E2E_SHARDS` the dispatch shards,
//! `E2E_ONLY=catch_up|handle|batch|faults` to run one scenario, `E2E_DEBUG` to print stats;
//! prints min / median / max, and records them in `target/bench-results/end_to_end.csv` for
//! `cargo xtask charts --collect`).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::disallowed_methods
)]

mod common;

use common::{Count, env_u64};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sync_core::{Sequence, Updates};
use sync_runtime::sim::{ApiFaults, SimulatedApi};
use sync_runtime::{Manager, ManagerConfig};
use sync_storage::MemoryStorage;
use sync_testkit::{Limits, Rng, Server, TestEntities, TestUpdate, Workload};

fn workload() -> Workload {
    // Common-box traffic plus channels: what a busy user account sees.
    Workload {
        channels: 100,
        seq_updates: 0,
        ephemeral: 0,
        ..Workload::default()
    }
}

fn config() -> ManagerConfig {
    ManagerConfig {
        engine: sync_core::EngineConfig {
            pts_total_limit: None,
            ..sync_core::EngineConfig::bot()
        },
        intake_capacity: 65_536,
        shards: env_u64("E2E_SHARDS", ManagerConfig::default().shards as u64) as usize,
        ..ManagerConfig::default()
    }
}

/// Storage as the client left it: the state and channels it starts from, and every channel's
/// access hash (as its dialogs would have given them).
async fn stored(
    api: &SimulatedApi,
    account: i64,
    state: sync_core::State,
    channels: &[(i64, i32)],
) -> Arc<MemoryStorage> {
    let storage = Arc::new(MemoryStorage::new());
    let channels = channels
        .iter()
        .map(|&(channel_id, pts)| sync_core::ChannelCommit {
            channel_id,
            pts,
            reset: false,
        })
        .collect();
    let commit = sync_core::Commit {
        state: Some(state),
        channels,
        ..sync_core::Commit::default()
    };
    sync_storage::StateStorage::apply(&*storage, account, &commit)
        .await
        .unwrap();
    for (channel_id, hash) in api.with_server(|s| s.access_hashes().collect::<Vec<_>>()) {
        sync_storage::AccessHashStorage::set_access_hash(&*storage, account, channel_id, hash)
            .await
            .unwrap();
    }
    storage
}

/// A backlog of `events` on the server; the client starts behind it and catches up by
/// differences alone. Returns (updates handled, seconds).
async fn catch_up(events: u64) -> (u64, f64) {
    let limits = Limits {
        difference_limit: 10_000,
        difference_too_long_after: usize::MAX,
        ..Limits::default()
    };
    let mut server = Server::new(7, workload(), limits);
    let start_state = server.state();
    let channels: Vec<(i64, i32)> = server.channel_states().collect();
    while server.events() < events {
        let push = server.produce();
        server.push_lost(&push); // nothing was pushed: the difference must mention every channel
    }
    let api = SimulatedApi::new(server, ApiFaults::none(Duration::ZERO), 1);
    let account = 1;
    let storage = stored(&api, account, start_state, &channels).await;
    let handled = Arc::new(Count::default());
    let started = Instant::now();
    let manager = Manager::with_config(account, api, storage, Arc::clone(&handled), config());
    let handle = manager.handle();
    let run = tokio::spawn(manager.run());
    handle.caught_up().await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    if std::env::var("E2E_DEBUG").is_ok() {
        println!("{:#?}", handle.stats());
    }
    handle.shutdown();
    run.await.unwrap().unwrap();
    (handled.total(), seconds)
}

/// How the bench's network reader hands pushes over.
#[derive(Clone, Copy, Debug)]
struct Feed {
    /// Pushes per read of the socket; the reader yields after each read.
    read: usize,
    /// One `ManagerHandle::push_batch` call per read, rather than `push` per push.
    batch: bool,
    /// Duplicate and reorder some pushes, as a real network does.
    faults: bool,
}

/// What one live run did.
struct Live {
    handled: u64,
    seconds: f64,
    /// Pushes the intake dropped (recovered by difference): 0 when the reader kept pace.
    dropped: u64,
    /// Differences fetched during the timed part.
    differences: u64,
}

/// Duplicates about 2 % of the pushes (the copy arrives up to 64 pushes later) and swaps
/// about 2 % with a push up to 8 places later (a gap the next pushes fill).
fn network_faults(
    pushes: Vec<Updates<TestUpdate, TestEntities>>,
    seed: u64,
) -> Vec<Updates<TestUpdate, TestEntities>> {
    let mut rng = Rng::new(seed);
    // Copies still in transit: (index of the push after which each arrives, the copy).
    let mut late: Vec<(usize, Updates<TestUpdate, TestEntities>)> = Vec::new();
    let mut out = Vec::with_capacity(pushes.len() + pushes.len() / 32);
    for (i, push) in pushes.into_iter().enumerate() {
        if rng.chance(0.02) {
            late.push((i + rng.below(64) as usize, push.clone()));
        }
        out.push(push);
        let mut k = 0;
        while k < late.len() {
            if late[k].0 <= i {
                out.push(late.swap_remove(k).1);
            } else {
                k += 1;
            }
        }
    }
    out.extend(late.into_iter().map(|(_, copy)| copy));
    let len = out.len();
    for i in 0..len {
        if rng.chance(0.02) {
            let other = (i + 1 + rng.below(8) as usize).min(len - 1);
            out.swap(i, other);
        }
    }
    out
}

/// Updates the pushes carry, each counted once (a duplicate push carries the same ones): all
/// of them, and those that move a sequence (a zero-count update that arrives after its pts was
/// passed is skipped as already applied, by Telegram's rule).
fn updates_in(pushes: &[Updates<TestUpdate, TestEntities>]) -> (u64, u64) {
    let mut all = std::collections::HashSet::new();
    let mut counted = std::collections::HashSet::new();
    let mut add = |update: &TestUpdate| {
        all.insert(update.id);
        if !matches!(update.sequence, Sequence::Common { pts_count: 0, .. }) {
            counted.insert(update.id);
        }
    };
    for push in pushes {
        match push {
            Updates::TooLong => {}
            Updates::Short { update, .. } => add(update),
            Updates::Combined { updates, .. } => updates.iter().for_each(&mut add),
        }
    }
    (all.len() as u64, counted.len() as u64)
}

/// `events` pushed through `ManagerHandle::push` or `push_batch`, as fast as the manager
/// takes them. The server makes every event before the clock starts (the manager has caught
/// up by then), so the timed part is the runtime's: intake, engine, dispatch to the handler,
/// acknowledgements and commits. The reader holds back while the intake is nearly full rather
/// than have pushes dropped; the run ends when the manager has caught up and every update was
/// handled.
async fn live(events: u64, feed: Feed) -> Live {
    let limits = Limits {
        difference_too_long_after: usize::MAX,
        ..Limits::default()
    };
    let server = Server::new(11, workload(), limits);
    let start_state = server.state();
    let api = SimulatedApi::new(server, ApiFaults::none(Duration::ZERO), 1);
    let account = 1;
    let channels: Vec<(i64, i32)> = (1..=workload().channels as i64)
        .map(|channel_id| (channel_id, 1))
        .collect();
    let storage = stored(&api, account, start_state, &channels).await;
    let handled = Arc::new(Count::default());
    let config = config();
    let capacity = config.intake_capacity;
    let manager = Manager::with_config(account, api.clone(), storage, Arc::clone(&handled), config);
    let handle = manager.handle();
    let run = tokio::spawn(manager.run());
    handle.caught_up().await.unwrap();

    let mut pushes = api.with_server(|s| {
        let mut pushes = Vec::new();
        while s.events() < events {
            pushes.push(s.produce());
        }
        pushes
    });
    if feed.faults {
        pushes = network_faults(pushes, 5);
    }
    let (all, counted) = updates_in(&pushes);
    // What one read of the socket decoded.
    let mut reads: Vec<Vec<Updates<TestUpdate, TestEntities>>> = Vec::new();
    let mut pushes = pushes.into_iter().peekable();
    while pushes.peek().is_some() {
        reads.push(pushes.by_ref().take(feed.read.max(1)).collect());
    }
    let before = handle.stats();

    let started = Instant::now();
    let reader = {
        let handle = handle.clone();
        // The reader is a task of its own, as a network reader would be.
        tokio::spawn(async move {
            for read in reads {
                // Hold back rather than overflow: a dropped push would come back through a
                // difference, which is not what this bench measures.
                while handle.queued() + read.len() > capacity {
                    tokio::task::yield_now().await;
                }
                if feed.batch {
                    handle.push_batch(read).expect("the manager stopped");
                } else {
                    for push in read {
                        handle.push(push).expect("the manager stopped");
                    }
                }
                tokio::task::yield_now().await;
            }
        })
    };
    reader.await.unwrap();
    // Let the manager take what is queued before asking it to catch up (the request would
    // otherwise overtake the queued pushes, and the difference deliver their updates).
    while handle.queued() > 0 {
        tokio::task::yield_now().await;
    }
    handle.caught_up().await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let after = handle.stats();
    if std::env::var("E2E_DEBUG").is_ok() {
        println!("{after:#?}");
    }
    handle.shutdown();
    run.await.unwrap().unwrap();
    // The oracle's count: every update the pushes carried was handled, once (the catch-up
    // before the clock started had nothing to deliver). The pushes carry zero-count updates,
    // which a difference does not repeat: a push recovered by difference would show here.
    let handled = handled.total();
    if feed.faults {
        assert!(
            (counted..=all).contains(&handled),
            "{handled} updates handled, expected {counted} to {all}"
        );
    } else {
        assert_eq!(handled, all, "updates handled");
    }
    Live {
        handled,
        seconds,
        dropped: after.runtime.pushes_dropped - before.runtime.pushes_dropped,
        differences: after.engine.difference_requests - before.engine.difference_requests,
    }
}

/// Prints a scenario's figures; returns its updates/s (min, median, max).
fn report(name: &str, runs: &mut [(u64, f64)]) -> [f64; 3] {
    let mut rates: Vec<f64> = runs.iter().map(|&(n, s)| n as f64 / s).collect();
    rates.sort_by(f64::total_cmp);
    let mut seconds: Vec<f64> = runs.iter().map(|r| r.1).collect();
    seconds.sort_by(f64::total_cmp);
    println!(
        "{name}: {} updates handled; updates/s min {:.0} median {:.0} max {:.0}; seconds median {:.3}",
        runs[0].0,
        rates[0],
        rates[rates.len() / 2],
        rates[rates.len() - 1],
        seconds[seconds.len() / 2],
    );
    [rates[0], rates[rates.len() / 2], rates[rates.len() - 1]]
}

/// Merges `rows` (`scenario,events,runs,min,median,max`, updates/s) into
/// `<target>/bench-results/end_to_end.csv`, replacing earlier rows of the same scenarios, so
/// that runs with different `E2E_READ` or `E2E_ONLY` add up.
fn record(rows: &[(String, u64, u64, [f64; 3])]) {
    const HEADER: &str = "scenario,events,runs,min,median,max";
    // The bench runs from `<target>/<profile>/deps/`; cargo marks `<target>` with CACHEDIR.TAG.
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let Some(target) = exe
        .ancestors()
        .skip(1)
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .or_else(|| exe.ancestors().nth(3))
    else {
        return;
    };
    let dir = target.join("bench-results");
    let path = dir.join("end_to_end.csv");
    let mut lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|line| {
            let key = line.split(',').next().unwrap_or_default();
            !rows.iter().any(|row| row.0 == key)
        })
        .map(str::to_owned)
        .collect();
    for (key, events, runs, [min, median, max]) in rows {
        lines.push(format!(
            "{key},{events},{runs},{min:.0},{median:.0},{max:.0}"
        ));
    }
    let text = format!("{HEADER}\n{}\n", lines.join("\n"));
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, text)) {
        Ok(()) => println!("figures recorded in {}", path.display()),
        Err(error) => println!(
            "could not record the figures in {}: {error}",
            path.display()
        ),
    }
}

fn main() {
    // `cargo test --benches` runs benches once in test mode (a debug build, without a
    // `--test` argument for a bench without a harness): keep that quick.
    let quick = std::env::args().any(|a| a == "--test") || cfg!(debug_assertions);
    let events = if quick {
        2_000
    } else {
        env_u64("E2E_EVENTS", 1_000_000)
    };
    let runs = if quick { 1 } else { env_u64("E2E_RUNS", 3) };
    let read = env_u64("E2E_READ", 256) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let only = std::env::var("E2E_ONLY").unwrap_or_default();
    let mut recorded = Vec::new();
    if only.is_empty() || only == "catch_up" {
        let mut backlog: Vec<(u64, f64)> = (0..runs)
            .map(|_| runtime.block_on(catch_up(events)))
            .collect();
        let figures = report(
            &format!("catch up a backlog of {events} events by getDifference"),
            &mut backlog,
        );
        recorded.push(("catch_up".to_owned(), events, runs, figures));
    }
    let feeds = [
        (
            "handle",
            "pushed in order through handle",
            Feed {
                read,
                batch: false,
                faults: false,
            },
        ),
        (
            "batch",
            "pushed in order through handle_batch",
            Feed {
                read,
                batch: true,
                faults: false,
            },
        ),
        (
            "faults",
            "pushed through handle_batch, 2 % duplicated, 2 % reordered",
            Feed {
                read,
                batch: true,
                faults: true,
            },
        ),
    ];
    for (key, name, feed) in feeds {
        if !only.is_empty() && only != key {
            continue;
        }
        let lives: Vec<Live> = (0..runs)
            .map(|_| runtime.block_on(live(events, feed)))
            .collect();
        let mut figures: Vec<(u64, f64)> = lives.iter().map(|l| (l.handled, l.seconds)).collect();
        let dropped: u64 = lives.iter().map(|l| l.dropped).sum();
        let differences: u64 = lives.iter().map(|l| l.differences).sum();
        let figures = report(
            &format!(
                "{events} events {name}, {read} per read (dropped {dropped}, differences {differences})"
            ),
            &mut figures,
        );
        recorded.push((format!("{key}/{read}"), events, runs, figures));
    }
    // A quick test-mode run is no measurement.
    if !quick {
        record(&recorded);
    }
}
