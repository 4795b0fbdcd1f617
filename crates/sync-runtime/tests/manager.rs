//! The manager against the simulated server on tokio's paused clock: faults on the network
//! and the API, failing handlers, intake overflow, clean shutdowns and crashes, all judged by
//! the oracle.
//!
//! Longer runs: `SYNC_RUNTIME_EVENTS` (events per run, default 600) and
//! `SYNC_RUNTIME_SEEDS` (seeds per fault mix, default 2).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{ACCOUNT, Sim, config, env_or, producer};
use sync_core::Sequence;
use sync_runtime::sim::{ApiFaults, Recorder};
use sync_runtime::{Notice, RunError};
use sync_storage::{MemoryStorage, StateStorage};
use sync_testkit::Faults;

fn events() -> u64 {
    env_or("SYNC_RUNTIME_EVENTS", 600)
}

/// One full run: seed storage, produce, catch up, shut down, judge.
async fn clean_run(seed: u64, faults: Faults, api: ApiFaults) -> Sim {
    let mut sim = Sim::new(seed, 8, api);
    let storage = Arc::new(MemoryStorage::new());
    sim.seed(&*storage).await;
    let (handle, run) = sim.start(&storage, config(seed, false));
    sim.produce(&handle, producer(seed, events(), faults, false))
        .await
        .expect("producer");
    handle.caught_up().await.expect("caught up");
    handle.shutdown();
    let summary = run.await.expect("join").expect("run");
    assert!(summary.persisted, "seed {seed}: final state not persisted");
    let stats = summary.stats;
    assert_eq!(
        stats.runtime.updates_dispatched, stats.engine.updates_delivered,
        "seed {seed}"
    );
    assert_eq!(stats.engine.unacknowledged_batches, 0, "seed {seed}");
    if let Err(message) = sim.finish(&*storage).await {
        panic!("seed {seed}: {message}");
    }
    assert_eq!(
        sim.oracle.repeats(),
        0,
        "seed {seed}: repeats without a crash"
    );
    sim
}

#[tokio::test(start_paused = true)]
async fn oracle_holds_across_fault_mixes() {
    let mixes = [
        (
            "none",
            Faults::none(),
            ApiFaults::none(Duration::from_millis(40)),
        ),
        ("moderate", Faults::moderate(), ApiFaults::default()),
        (
            "harsh",
            Faults::harsh(),
            ApiFaults {
                failure: 0.3,
                ..ApiFaults::default()
            },
        ),
    ];
    for seed in 1..=env_or("SYNC_RUNTIME_SEEDS", 2) {
        for (name, faults, api) in mixes.clone() {
            let sim = clean_run(seed * 100 + name.len() as u64, faults, api).await;
            assert!(sim.recorder.count() > 0, "{name}: nothing delivered");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn flood_wait_and_transient_errors_are_retried() {
    let api = ApiFaults {
        failure: 0.5,
        flood_wait_share: 0.5,
        flood_wait_max_seconds: 5,
        ..ApiFaults::default()
    };
    let mut sim = Sim::new(7, 8, api);
    let storage = Arc::new(MemoryStorage::new());
    sim.seed(&*storage).await;
    let (handle, run) = sim.start(&storage, config(7, false));
    sim.produce(&handle, producer(7, events(), Faults::moderate(), false))
        .await
        .expect("producer");
    handle.caught_up().await.expect("caught up");
    handle.shutdown();
    let summary = run.await.expect("join").expect("run");
    let report = sim.api.report();
    assert!(
        report.flood_waits > 0 && report.transient_failures > 0,
        "{report:?}"
    );
    assert_eq!(summary.stats.runtime.flood_waits, report.flood_waits);
    assert_eq!(
        summary.stats.runtime.requests_retried,
        report.transient_failures
    );
    sim.finish(&*storage).await.expect("oracle");
}

#[tokio::test(start_paused = true)]
async fn an_inaccessible_channel_is_closed_and_the_rest_goes_on() {
    const LOST: i64 = 3;
    let sim = Sim::new(11, 6, ApiFaults::default());
    let storage = Arc::new(MemoryStorage::new());
    sim.seed(&*storage).await;
    sim.api.make_inaccessible(LOST);
    let (handle, run) = sim.start(&storage, config(11, false));
    sim.produce(&handle, producer(11, events(), Faults::moderate(), false))
        .await
        .expect("producer");
    handle.caught_up().await.expect("caught up");
    handle.shutdown();
    let summary = run.await.expect("join").expect("run");
    assert!(summary.stats.runtime.channels_closed >= 1);
    assert!(
        sim.recorder
            .notices()
            .contains(&Notice::ChannelClosed { channel_id: LOST })
    );

    // Everything else arrived exactly once. (The simulated server keeps mentioning the lost
    // channel in differences, so it may be tracked again and closed again: not checked.)
    let mut counts: HashMap<u64, u32> = HashMap::new();
    for update in sim.recorder.take() {
        *counts.entry(update.id).or_default() += 1;
    }
    let stored = storage.load(ACCOUNT).await.expect("load");
    sim.api.with_server(|server| {
        for event in server.durable_events() {
            let zero = matches!(
                event.sequence,
                Sequence::Common { pts_count: 0, .. } | Sequence::Channel { pts_count: 0, .. }
            );
            let lost = matches!(
                event.sequence,
                Sequence::Channel {
                    channel_id: LOST,
                    ..
                }
            );
            if !lost && !zero {
                assert_eq!(counts.get(&event.id).copied().unwrap_or(0), 1, "{event:?}");
            }
        }
        assert_eq!(stored.state.map(|s| s.pts), Some(server.state().pts));
        for (channel_id, pts) in server.channel_states().filter(|&(id, _)| id != LOST) {
            assert_eq!(
                stored.channels.get(&channel_id),
                Some(&pts),
                "channel {channel_id}"
            );
        }
    });
}

#[tokio::test(start_paused = true)]
async fn failing_and_panicking_handlers_do_not_stop_the_manager() {
    let mut sim = Sim::new(13, 8, ApiFaults::default());
    sim.recorder = Recorder::new().failing_every(7).panicking_every(11);
    let storage = Arc::new(MemoryStorage::new());
    sim.seed(&*storage).await;
    let (handle, run) = sim.start(&storage, config(13, false));
    sim.produce(&handle, producer(13, events(), Faults::moderate(), false))
        .await
        .expect("producer");
    handle.caught_up().await.expect("caught up");
    handle.shutdown();
    let summary = run.await.expect("join").expect("run");
    assert!(summary.stats.runtime.handler_errors > 0);
    assert!(summary.stats.runtime.handler_panics > 0);
    sim.finish(&*storage).await.expect("oracle");
}

/// A slow handler and tiny queues: dispatch backs up, the manager waits, the intake fills.
async fn backed_up(seed: u64) -> (Sim, Arc<MemoryStorage>, sync_runtime::ManagerConfig) {
    let mut sim = Sim::new(seed, 8, ApiFaults::none(Duration::from_millis(40)));
    sim.recorder = Recorder::new().with_delay(Duration::from_millis(30));
    let storage = Arc::new(MemoryStorage::new());
    sim.seed(&*storage).await;
    let config = sync_runtime::ManagerConfig {
        intake_capacity: 4,
        shard_capacity: 2,
        ..config(seed, false)
    };
    (sim, storage, config)
}

#[tokio::test(start_paused = true)]
async fn a_full_intake_drops_pushes_and_recovers_them_by_difference() {
    let (mut sim, storage, config) = backed_up(17).await;
    let (handle, run) = sim.start(&storage, config);
    let mut burst = producer(17, events(), Faults::none(), false);
    burst.burst = 10;
    sim.produce(&handle, burst).await.expect("producer");
    handle.caught_up().await.expect("caught up");
    handle.shutdown();
    let summary = run.await.expect("join").expect("run");
    assert!(
        summary.stats.runtime.pushes_dropped > 0,
        "{:?}",
        summary.stats.runtime
    );
    assert!(summary.stats.runtime.intake_recoveries > 0);
    sim.finish(&*storage).await.expect("oracle");
}

/// A producer whose pushes arrive in groups of `burst`, each group handed over with one
/// `push_batch` call.
fn batched_producer(seed: u64, faults: Faults, burst: u32) -> sync_runtime::sim::Producer {
    let mut producer = producer(seed, events(), faults, false);
    producer.burst = burst;
    producer.batched = true;
    producer
}

#[tokio::test(start_paused = true)]
async fn batched_pushes_pass_the_oracle_across_fault_mixes() {
    let mixes = [
        ("none", Faults::none()),
        ("moderate", Faults::moderate()),
        ("harsh", Faults::harsh()),
    ];
    for seed in 1..=env_or("SYNC_RUNTIME_SEEDS", 2) {
        for (name, faults) in mixes.clone() {
            let seed = seed * 1_000 + name.len() as u64;
            let mut sim = Sim::new(seed, 8, ApiFaults::default());
            let storage = Arc::new(MemoryStorage::new());
            sim.seed(&*storage).await;
            let (handle, run) = sim.start(&storage, config(seed, false));
            let burst = 1 + (seed % 16) as u32;
            sim.produce(&handle, batched_producer(seed, faults, burst))
                .await
                .expect("producer");
            handle.caught_up().await.expect("caught up");
            handle.shutdown();
            let summary = run.await.expect("join").expect("run");
            let stats = summary.stats;
            assert_eq!(
                stats.runtime.updates_dispatched, stats.engine.updates_delivered,
                "{name}, seed {seed}"
            );
            assert_eq!(
                stats.engine.unacknowledged_batches, 0,
                "{name}, seed {seed}"
            );
            assert_eq!(handle.queued(), 0, "{name}, seed {seed}");
            if let Err(message) = sim.finish(&*storage).await {
                panic!("{name}, seed {seed}: {message}");
            }
            assert_eq!(sim.oracle.repeats(), 0, "{name}, seed {seed}");
            assert!(sim.recorder.count() > 0, "{name}: nothing delivered");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_full_intake_drops_whole_batches_and_recovers_them_by_difference() {
    // Batches of 10 are larger than the intake, so they are taken only into an empty intake.
    let (mut sim, storage, config) = backed_up(37).await;
    let (handle, run) = sim.start(&storage, config);
    sim.produce(&handle, batched_producer(37, Faults::none(), 10))
        .await
        .expect("producer");
    handle.caught_up().await.expect("caught up");
    handle.shutdown();
    let summary = run.await.expect("join").expect("run");
    let runtime = summary.stats.runtime;
    assert!(runtime.pushes_dropped > 0, "{runtime:?}");
    assert!(runtime.intake_recoveries > 0, "{runtime:?}");
    assert!(runtime.pushes_accepted > 0, "{runtime:?}");
    sim.finish(&*storage).await.expect("oracle");
}

/// The intake's books, without running the manager (nothing is taken out): a batch is taken
/// whole when it fits in the room left, or into an empty intake, and dropped whole otherwise;
/// `queued` and the counters follow exactly.
#[test]
fn the_intake_counts_pushes_and_takes_or_drops_whole_batches() {
    use sync_core::Updates;
    use sync_runtime::{Manager, Pushed, Stopped};
    use sync_testkit::{Rng, TestUpdate};

    let push = |id: u64| Updates::Short {
        update: TestUpdate {
            id,
            sequence: Sequence::Unordered,
        },
        date: 0,
    };
    for seed in 0..200 {
        let mut rng = Rng::new(seed);
        let capacity = 1 + rng.below(64) as usize;
        let sim = Sim::new(seed, 0, ApiFaults::default());
        let manager = Manager::with_config(
            ACCOUNT,
            sim.api.clone(),
            Arc::new(MemoryStorage::new()),
            Recorder::new(),
            sync_runtime::ManagerConfig {
                intake_capacity: capacity,
                ..config(seed, false)
            },
        );
        let handle = manager.handle();
        let (mut queued, mut accepted, mut dropped, mut largest) = (0usize, 0u64, 0u64, 0usize);
        for _ in 0..50 {
            let single = rng.chance(0.3);
            let n = if single {
                1
            } else {
                rng.below(2 * capacity as u64) as usize
            };
            let fits = n == 0 || queued == 0 || queued + n <= capacity;
            let result = if single {
                handle.push(push(0))
            } else {
                handle.push_batch((0..n as u64).map(push).collect())
            };
            if fits {
                assert_eq!(result, Ok(Pushed::Queued), "seed {seed}");
                queued += n;
                accepted += n as u64;
                largest = largest.max(n);
            } else {
                assert_eq!(result, Ok(Pushed::Dropped), "seed {seed}");
                dropped += n as u64;
            }
            assert_eq!(handle.queued(), queued, "seed {seed}");
            assert!(queued <= capacity.max(largest), "seed {seed}");
            let runtime = handle.stats().runtime;
            assert_eq!(runtime.pushes_accepted, accepted, "seed {seed}");
            assert_eq!(runtime.pushes_dropped, dropped, "seed {seed}");
        }
        drop(manager);
        assert_eq!(handle.push_batch(vec![push(1)]), Err(Stopped));
        assert_eq!(handle.push_batch(Vec::new()), Err(Stopped));
        assert_eq!(handle.push(push(1)), Err(Stopped));
    }
}

#[tokio::test(start_paused = true)]
async fn first_run_without_stored_state_starts_from_get_state() {
    let mut sim = Sim::new(19, 0, ApiFaults::default());
    let storage = Arc::new(MemoryStorage::new());
    let (handle, run) = sim.start(&storage, config(19, false));
    // The account starts where getState says: the oracle judges from there.
    handle.caught_up().await.expect("started");
    sim.produce(&handle, producer(19, events(), Faults::moderate(), false))
        .await
        .expect("producer");
    handle.caught_up().await.expect("caught up");
    handle.shutdown();
    let summary = run.await.expect("join").expect("run");
    assert_eq!(summary.stats.engine.get_state_requests, 1);
    sim.finish(&*storage).await.expect("oracle");
}

#[tokio::test(start_paused = true)]
async fn shutdown_mid_flight_then_restart_from_memory_loses_nothing() {
    let storage = Arc::new(MemoryStorage::new());
    shutdown_and_restart(&storage, 23, false).await;
}

/// Shuts down while pushes, requests and handlers are busy, restarts from storage, and checks
/// that the second run completes the first without losses or repeats.
pub async fn shutdown_and_restart<S>(storage: &Arc<S>, seed: u64, fast: bool)
where
    S: sync_storage::StateStorage + sync_storage::AccessHashStorage + 'static,
{
    let mut sim = Sim::new(seed, 8, ApiFaults::default());
    sim.recorder = Recorder::new().with_delay(Duration::from_millis(if fast { 1 } else { 20 }));
    sim.seed(&**storage).await;
    let total = events();
    for round in 0..3 {
        let (handle, run) = sim.start(storage, config(seed, fast));
        let producing = sim.produce(
            &handle,
            producer(seed + round, total, Faults::moderate(), fast),
        );
        if round < 2 {
            // Stop once part of the events were made, whatever is in flight.
            let target = total * (round + 1) / 3;
            while sim.api.with_server(|s| s.events()) < target {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            handle.shutdown();
            let summary = run.await.expect("join").expect("run");
            producing.await.expect("producer");
            assert!(summary.persisted);
            let stored = storage.load(ACCOUNT).await.expect("load");
            assert_eq!(
                stored.state, summary.state,
                "round {round}: storage is not where the engine was"
            );
            sim.crashed(&**storage)
                .await
                .expect("oracle before restart");
        } else {
            producing.await.expect("producer");
            handle.caught_up().await.expect("caught up");
            handle.shutdown();
            run.await.expect("join").expect("run");
        }
    }
    sim.finish(&**storage).await.expect("oracle");
    assert_eq!(
        sim.oracle.repeats(),
        0,
        "a clean shutdown leaves nothing unacknowledged"
    );
}

#[tokio::test(start_paused = true)]
async fn crashes_at_random_points_lose_nothing() {
    let crashes = env_or("SYNC_RUNTIME_CRASHES", 4);
    let mut sim = Sim::new(29, 8, ApiFaults::default());
    sim.recorder = Recorder::new().with_delay(Duration::from_millis(15));
    let storage = Arc::new(MemoryStorage::new());
    sim.seed(&*storage).await;
    let total = events();
    let mut rng = sync_testkit::Rng::new(29);
    for round in 0..=crashes {
        let (handle, run) = sim.start(&storage, config(29 + round, false));
        let producing = sim.produce(
            &handle,
            producer(29 + round, total, Faults::moderate(), false),
        );
        if round < crashes {
            // A random moment: while pushes, requests, handlers and writes are in flight.
            tokio::time::sleep(Duration::from_millis(200 + rng.below(3_000))).await;
            run.abort();
            producing.abort();
            assert!(
                run.await.is_err_and(|e| e.is_cancelled()),
                "round {round}: the run ended by itself"
            );
            let _ = producing.await;
            assert!(!handle.is_running());
            sim.crashed(&*storage).await.expect("oracle at crash");
        } else {
            producing.await.expect("producer");
            handle.caught_up().await.expect("caught up");
            handle.shutdown();
            run.await.expect("join").expect("run");
        }
    }
    sim.finish(&*storage).await.expect("oracle");
}

#[tokio::test(start_paused = true)]
async fn lost_authorization_stops_the_manager_with_an_error() {
    let sim = Sim::new(31, 4, ApiFaults::none(Duration::from_millis(40)));
    let storage = Arc::new(MemoryStorage::new());
    sim.seed(&*storage).await;
    let (handle, run) = sim.start(&storage, config(31, false));
    sim.produce(&handle, producer(31, 200, Faults::moderate(), false))
        .await
        .expect("producer");
    handle.caught_up().await.expect("caught up");
    sim.api.revoke_authorization();
    handle.session_reset().expect("intake");
    let outcome = run.await.expect("join");
    assert!(
        matches!(outcome, Err(RunError::Unauthorized { .. })),
        "{outcome:?}"
    );
    assert!(!handle.is_running());
    // What was handled before was persisted on the way out.
    let stored = storage
        .load(ACCOUNT)
        .await
        .expect("load")
        .state
        .expect("state");
    assert_eq!(stored.pts, sim.api.with_server(|s| s.state().pts));
}
