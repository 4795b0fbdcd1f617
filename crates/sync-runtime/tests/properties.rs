//! Random handler behaviours against the manager: every update's handling picks (seeded)
//! whether to return at once, sleep, await one of the [`ManagerHandle`] methods, wait for
//! intake room, block until shutdown, fail or panic, over tiny and default dispatch
//! capacities and the fault mixes of the simulator. Every run must end (paused clock, every
//! await bounded), `shutdown` must return within its grace, and the oracle must hold:
//! nothing lost, nothing delivered twice without a crash.
//!
//! Runs a modest number of cases by default (fewer on a shared [`DispatchPool`](sync_runtime::DispatchPool),
//! with a second account beside the random one); set `PROPTEST_CASES` for a longer run.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{Sim, config, env_or, producer};
use proptest::prelude::*;
use sync_core::{Affected, Updates};
use sync_runtime::sim::{ApiFaults, Recorder};
use sync_runtime::{BoxError, ControlError, ManagerConfig, ManagerHandle};
use sync_storage::MemoryStorage;
use sync_testkit::{Faults, Rng, TestEntities, TestUpdate};
use tokio::time::{Instant, timeout};

type Handle = ManagerHandle<TestUpdate, TestEntities>;

/// A channel the simulated server never uses: commands on it are harmless.
const FOREIGN: i64 = 1_000_000;
/// Far more simulated time than a run needs.
const BOUND: Duration = Duration::from_secs(3_600);
const GRACE: Duration = Duration::from_secs(10);

/// What one handler call does after logging its update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Return,
    Sleep(u64),
    Track,
    Open,
    Close,
    Forget,
    Refetch,
    CaughtUp,
    Push,
    PushBatch,
    Affected,
    SessionReset,
    Stats,
    WaitForRoom,
    BlockUntilShutdown,
    Fail,
    Panic,
}

/// Picks an act: mostly quick ones, now and then one that waits on the manager, rarely one
/// that blocks its shard until shutdown or panics.
fn pick(rng: &mut Rng) -> Act {
    match rng.below(1_000) {
        0..=399 => Act::Return,
        400..=519 => Act::Sleep(rng.below(60)),
        520..=559 => Act::Track,
        560..=579 => Act::Open,
        580..=599 => Act::Close,
        600..=619 => Act::Forget,
        620..=659 => Act::Refetch,
        660..=699 => Act::CaughtUp,
        700..=729 => Act::Push,
        730..=749 => Act::PushBatch,
        750..=769 => Act::Affected,
        770..=789 => Act::SessionReset,
        790..=829 => Act::Stats,
        830..=889 => Act::WaitForRoom,
        890..=894 => Act::BlockUntilShutdown,
        895..=959 => Act::Fail,
        _ => Act::Panic,
    }
}

/// A typed answer is fine whatever it says; hanging is what the test looks for.
fn typed(result: Result<(), ControlError>) {
    let _ = result;
}

async fn act(
    act: Act,
    handle: Handle,
    capacity: usize,
    blocked: &AtomicBool,
) -> Result<(), BoxError> {
    match act {
        Act::Return => {}
        Act::Sleep(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
        // Channel 1 is tracked from further on: a no-op for the engine.
        Act::Track => typed(handle.track_channel(1, 0).await),
        Act::Open => typed(handle.open_channel(FOREIGN).await),
        Act::Close => typed(handle.close_channel(FOREIGN)),
        Act::Forget => typed(handle.forget_channel(FOREIGN)),
        Act::Refetch => {
            typed(handle.request_channel_difference(1).await);
            typed(handle.request_channel_difference(FOREIGN).await);
        }
        Act::CaughtUp => typed(handle.caught_up().await),
        Act::Push => {
            let _ = handle.push(Updates::TooLong);
        }
        Act::PushBatch => {
            let _ = handle.push_batch(Vec::new());
        }
        // An old range: a duplicate the engine drops.
        Act::Affected => {
            let _ = handle.push_affected(Affected::Common {
                pts: 1,
                pts_count: 1,
            });
        }
        Act::SessionReset => {
            let _ = handle.session_reset();
        }
        Act::Stats => {
            let stats = handle.stats();
            let _ = (stats, handle.queued(), handle.is_running());
        }
        Act::WaitForRoom => {
            while handle.queued() >= capacity && handle.is_running() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let _ = handle.push(Updates::TooLong);
        }
        Act::BlockUntilShutdown => {
            blocked.store(true, Ordering::Relaxed);
            handle.cancellation_token().cancelled().await;
        }
        Act::Fail => return Err("simulated failure".into()),
        Act::Panic => panic!("simulated handler panic"),
    }
    Ok(())
}

/// A recorder whose every call picks an act from `seed`.
fn random_recorder(
    seed: u64,
    slot: Arc<OnceLock<Handle>>,
    capacity: usize,
    blocked: Arc<AtomicBool>,
) -> Recorder {
    let rng = Arc::new(Mutex::new(Rng::new(seed ^ 0xB0B)));
    Recorder::new().with_behaviour(move |_, _| {
        let chosen = pick(&mut rng.lock().expect("rng"));
        let handle = slot.get().expect("set before the run").clone();
        let blocked = Arc::clone(&blocked);
        Box::pin(async move { act(chosen, handle, capacity, &blocked).await })
            as Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>
    })
}

fn mix(index: usize) -> (Faults, ApiFaults) {
    match index {
        0 => (Faults::none(), ApiFaults::none(Duration::from_millis(40))),
        1 => (Faults::moderate(), ApiFaults::default()),
        _ => (
            Faults::harsh(),
            ApiFaults {
                failure: 0.3,
                ..ApiFaults::default()
            },
        ),
    }
}

async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> Result<T, String> {
    timeout(BOUND, future)
        .await
        .map_err(|_| format!("{what} did not finish: the manager is stuck"))
}

/// One case: a run with random behaviours, shut down, then a plain restart that must
/// complete it; judged by the oracle throughout. `pooled`: both runs dispatch through a
/// [`DispatchPool`](sync_runtime::DispatchPool) of the case's shards and capacity, shared with
/// a second, quiet account that must stop cleanly whatever the first one's handlers do.
async fn case(
    seed: u64,
    tiny: Option<(usize, usize, usize)>,
    faults: usize,
    pooled: bool,
) -> Result<(), String> {
    let (faults, api) = mix(faults);
    let mut sim = Sim::new(seed, 8, api);
    let mut config = ManagerConfig {
        shutdown_grace: GRACE,
        ..config(seed, false)
    };
    if let Some((intake, shards, shard_capacity)) = tiny {
        config.intake_capacity = intake;
        config.shards = shards;
        config.shard_capacity = shard_capacity;
    }
    let slot = Arc::new(OnceLock::new());
    let blocked = Arc::new(AtomicBool::new(false));
    sim.recorder = random_recorder(
        seed,
        Arc::clone(&slot),
        config.intake_capacity,
        Arc::clone(&blocked),
    );
    let storage = Arc::new(MemoryStorage::new());
    sim.seed(&*storage).await;
    let pool = if pooled {
        let pool = sync_runtime::DispatchPool::new(config.shards, config.shard_capacity)
            .map_err(|e| e.to_string())?;
        Some(pool)
    } else {
        None
    };
    let neighbour = match &pool {
        Some(pool) => {
            let sim = Sim::new(seed ^ 0x5EED, 4, ApiFaults::default());
            let storage = Arc::new(MemoryStorage::new());
            sim.seed(&*storage).await;
            let (handle, run) = sim.start_on(&storage, config.clone(), Some(pool));
            let producing =
                sim.produce(&handle, producer(seed ^ 0x5EED, 100, Faults::none(), false));
            Some((sim, storage, handle, run, producing))
        }
        None => None,
    };
    let (handle, mut run) = sim.start_on(&storage, config.clone(), pool.as_ref());
    slot.set(handle.clone()).map_err(|_| "slot set twice")?;
    let mut push = producer(seed, 250, faults, false);
    push.burst = 1 + (seed % 8) as u32;
    push.batched = seed.is_multiple_of(2);
    bounded("the producer", sim.produce(&handle, push))
        .await?
        .map_err(|e| e.to_string())?;
    // A handler that blocks until shutdown holds its shard: catching up cannot finish then.
    match timeout(Duration::from_secs(300), handle.caught_up()).await {
        Ok(result) => result.map_err(|e| format!("caught_up: {e}"))?,
        Err(_) if blocked.load(Ordering::Relaxed) => {}
        Err(_) => return Err("caught_up did not resolve".into()),
    }
    handle.shutdown();
    let asked = Instant::now();
    let summary = bounded("the shutdown", &mut run)
        .await?
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let took = asked.elapsed();
    if took > GRACE + config.shutdown_timeout + Duration::from_secs(1) {
        return Err(format!("the shutdown took {took:?}"));
    }
    if handle.queued() != 0 {
        return Err(format!("{} pushes left in the intake", handle.queued()));
    }
    let clean = summary.persisted && summary.abandoned == 0;

    // The restart, with a plain handler: like after a crash, what was not acknowledged may
    // repeat (after a clean stop nothing was left unacknowledged, so nothing may).
    sim.crashed(&*storage).await?;
    sim.recorder = Recorder::new();
    let (handle, mut run) = sim.start_on(&storage, config, pool.as_ref());
    bounded("caught_up after the restart", handle.caught_up())
        .await?
        .map_err(|e| e.to_string())?;
    handle.shutdown();
    let summary = bounded("the second shutdown", &mut run)
        .await?
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if summary.abandoned != 0 || !summary.persisted {
        return Err(format!("second run: {summary:?}"));
    }
    sim.finish(&*storage).await?;
    if clean && sim.oracle.repeats() != 0 {
        return Err(format!(
            "{} repeats after a clean stop",
            sim.oracle.repeats()
        ));
    }
    // The quiet neighbour on the pool: once the random handlers are gone, it catches up and
    // stops with everything handled and nothing repeated.
    if let Some((mut sim, storage, handle, run, producing)) = neighbour {
        bounded("the neighbour's producer", producing)
            .await?
            .map_err(|e| e.to_string())?;
        bounded("the neighbour's caught_up", handle.caught_up())
            .await?
            .map_err(|e| format!("neighbour: {e}"))?;
        handle.shutdown();
        let summary = bounded("the neighbour's shutdown", run)
            .await?
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if summary.abandoned != 0 || !summary.persisted {
            return Err(format!("neighbour: {summary:?}"));
        }
        sim.finish(&*storage)
            .await
            .map_err(|e| format!("neighbour: {e}"))?;
        if sim.oracle.repeats() != 0 {
            return Err("neighbour: repeats after a clean stop".into());
        }
    }
    Ok(())
}

/// Runs one case on a fresh single-threaded runtime with tokio's paused clock.
fn on_paused_clock<T>(case: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
        .block_on(case)
}

fn capacities() -> impl Strategy<Value = Option<(usize, usize, usize)>> {
    prop_oneof![
        3 => (1..=4usize, 1..=4usize, 1..=4usize).prop_map(Some),
        1 => Just(None),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: u32::try_from(env_or("PROPTEST_CASES", 24)).unwrap_or(24),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_handler_behaviours_never_stall_the_manager(
        seed in 1..u64::MAX / 2,
        tiny in capacities(),
        faults in 0..3usize,
    ) {
        let verdict = on_paused_clock(case(seed, tiny, faults, false));
        prop_assert!(verdict.is_ok(), "seed {seed}, {tiny:?}, mix {faults}: {verdict:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: u32::try_from(env_or("PROPTEST_CASES", 8)).unwrap_or(8),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_handler_behaviours_on_a_shared_pool_never_stall_the_managers(
        seed in 1..u64::MAX / 2,
        tiny in capacities(),
        faults in 0..3usize,
    ) {
        let verdict = on_paused_clock(case(seed, tiny, faults, true));
        prop_assert!(verdict.is_ok(), "pooled, seed {seed}, {tiny:?}, mix {faults}: {verdict:?}");
    }
}
