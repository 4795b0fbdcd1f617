//! Handlers that call the manager back and wait for it: every such call resolves whatever the
//! dispatch capacities, the manager keeps serving intake, commands and shutdown while dispatch
//! is backed up, and the oracle still holds. Every await is bounded (paused clock), so a
//! deadlock fails the test instead of hanging it.

mod common;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::{Sim, config, producer};
use sync_core::Updates;
use sync_runtime::sim::{ApiFaults, Recorder};
use sync_runtime::{BoxError, ManagerConfig, ManagerHandle, RunError, Summary};
use sync_storage::MemoryStorage;
use sync_testkit::{Faults, TestEntities, TestUpdate};
use tokio::task::JoinHandle;

type Handle = ManagerHandle<TestUpdate, TestEntities>;
type Slot = Arc<OnceLock<Handle>>;

/// Far more simulated time than any of these runs needs.
const BOUND: Duration = Duration::from_secs(3_600);

async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(BOUND, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish: the manager is stuck"),
    }
}

/// Waits for `handle` to catch up, shuts it down and returns the run's summary.
async fn catch_up_and_shut_down(
    handle: &Handle,
    run: &mut JoinHandle<Result<Summary, RunError>>,
) -> Summary {
    bounded("caught_up", handle.caught_up())
        .await
        .expect("caught up");
    handle.shutdown();
    bounded("the shutdown", run)
        .await
        .expect("join")
        .expect("run")
}

fn handle_of(slot: &Slot) -> Handle {
    slot.get()
        .expect("the handle is set before the run starts")
        .clone()
}

/// Two shards of two updates and an intake of four: dispatch backs up at once.
fn tiny(seed: u64) -> ManagerConfig {
    ManagerConfig {
        intake_capacity: 4,
        shards: 2,
        shard_capacity: 2,
        ..config(seed, false)
    }
}

/// 400 pushes at the same instant, handled by `recorder` (which gets the manager's handle
/// through the slot); the run must catch up, shut down and pass the oracle.
async fn burst(seed: u64, recorder: impl FnOnce(Slot) -> Recorder) -> (Sim, Summary) {
    let mut sim = Sim::new(seed, 8, ApiFaults::none(Duration::from_millis(40)));
    let slot = Slot::default();
    sim.recorder = recorder(Arc::clone(&slot));
    let storage = Arc::new(MemoryStorage::new());
    sim.seed(&*storage).await;
    let (handle, mut run) = sim.start(&storage, tiny(seed));
    slot.set(handle.clone()).expect("set once");
    let mut burst = producer(seed, 400, Faults::none(), false);
    burst.burst = 400;
    bounded("the producer", sim.produce(&handle, burst))
        .await
        .expect("producer");
    let summary = catch_up_and_shut_down(&handle, &mut run).await;
    assert!(summary.persisted);
    if let Err(message) = sim.finish(&*storage).await {
        panic!("seed {seed}: {message}");
    }
    assert_eq!(sim.oracle.repeats(), 0);
    assert_everything_handled(&sim);
    (sim, summary)
}

/// Every handler call returned (the oracle judges that each update came once).
fn assert_everything_handled(sim: &Sim) {
    let (seen, finished) = (sim.recorder.count(), sim.recorder.finished());
    assert_eq!(seen, finished, "handler calls that never returned");
    assert!(seen > 0, "nothing handled");
}

fn boxed(
    future: impl Future<Output = Result<(), BoxError>> + Send + 'static,
) -> std::pin::Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>> {
    Box::pin(future)
}

#[tokio::test(start_paused = true)]
async fn a_handler_awaiting_track_channel_does_not_stall_a_backed_up_dispatch() {
    burst(41, |slot| {
        Recorder::new().with_behaviour(move |_, _| {
            let handle = handle_of(&slot);
            // Channel 1 is tracked further on: a no-op the driver must still answer.
            boxed(async move { Ok(handle.track_channel(1, 0).await?) })
        })
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_handler_waiting_for_intake_room_does_not_stall_a_backed_up_dispatch() {
    burst(43, |slot| {
        Recorder::new().with_behaviour(move |_, _| {
            let handle = handle_of(&slot);
            boxed(async move {
                while handle.queued() >= 4 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                // A harmless push: it only makes the manager fetch the difference.
                let _ = handle.push(Updates::TooLong);
                Ok(())
            })
        })
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_handler_awaiting_caught_up_does_not_stall_a_backed_up_dispatch() {
    burst(47, |slot| {
        Recorder::new().with_behaviour(move |n, _| {
            let handle = handle_of(&slot);
            // Every tenth update: each call fetches the difference.
            boxed(async move {
                if n % 10 == 0 {
                    handle.caught_up().await?;
                }
                Ok(())
            })
        })
    })
    .await;
}

/// The default configuration: one chat's 3,000 missed messages come by difference at
/// startup, more than a shard holds, while each handler call awaits a command.
#[tokio::test(start_paused = true)]
async fn a_large_startup_difference_with_a_handler_awaiting_commands_is_handled() {
    let seed = 53;
    let mut sim = Sim::new(seed, 0, ApiFaults::none(Duration::from_millis(40)));
    let slot = Slot::default();
    let hook = Arc::clone(&slot);
    sim.recorder = Recorder::new().with_behaviour(move |_, _| {
        let handle = handle_of(&hook);
        boxed(async move { Ok(handle.track_channel(1, 1).await?) })
    });
    let storage = Arc::new(MemoryStorage::new());
    sim.seed(&*storage).await;
    sim.api.with_server(|server| {
        while server.events() < 3_000 {
            server.produce();
        }
    });
    let config = ManagerConfig {
        jitter_seed: Some(seed),
        ..ManagerConfig::default()
    };
    let (handle, mut run) = sim.start(&storage, config);
    slot.set(handle.clone()).expect("set once");
    let summary = catch_up_and_shut_down(&handle, &mut run).await;
    assert!(summary.persisted);
    assert_everything_handled(&sim);
    sim.finish(&*storage).await.expect("oracle");
}

/// A handler that never returns: the shutdown ends after the grace, persists only what was
/// handled, and says what it abandoned; a restart delivers the rest.
#[tokio::test(start_paused = true)]
async fn shutdown_ends_within_the_grace_while_a_handler_blocks_forever() {
    let seed = 59;
    let mut sim = Sim::new(seed, 4, ApiFaults::none(Duration::from_millis(40)));
    sim.recorder = Recorder::new().with_behaviour(|n, _| {
        boxed(async move {
            if n == 50 {
                std::future::pending::<()>().await;
            }
            Ok(())
        })
    });
    let storage = Arc::new(MemoryStorage::new());
    sim.seed(&*storage).await;
    let grace = Duration::from_secs(5);
    let config = ManagerConfig {
        shutdown_grace: grace,
        ..tiny(seed)
    };
    let (handle, mut run) = sim.start(&storage, config);
    bounded(
        "the producer",
        sim.produce(&handle, producer(seed, 300, Faults::none(), false)),
    )
    .await
    .expect("producer");
    handle.shutdown();
    let asked = tokio::time::Instant::now();
    let summary = bounded("the shutdown", &mut run)
        .await
        .expect("join")
        .expect("run");
    let took = asked.elapsed();
    assert!(
        took >= grace && took < grace + Duration::from_secs(1),
        "{took:?}"
    );
    assert!(summary.persisted);
    assert!(summary.abandoned > 0, "{summary:?}");
    let stored = sync_storage::StateStorage::load(&*storage, common::ACCOUNT)
        .await
        .expect("load");
    // Storage stops before the abandoned updates; the engine had applied them.
    let (stored, applied) = (stored.state.expect("stored"), summary.state.expect("state"));
    assert!(stored.pts <= applied.pts, "{stored:?} {applied:?}");
    assert!(!handle.is_running());
    assert_eq!(
        handle.track_channel(1, 0).await,
        Err(sync_runtime::ControlError::Stopped)
    );

    // Like a crash: what was not handled may come again, nothing may be missing.
    sim.crashed(&*storage).await.expect("oracle at the stop");
    sim.recorder = Recorder::new();
    let (handle, mut run) = sim.start(&storage, tiny(seed));
    let summary = catch_up_and_shut_down(&handle, &mut run).await;
    assert_eq!(summary.abandoned, 0);
    sim.finish(&*storage).await.expect("oracle");
}

/// While a handler blocks, the manager keeps taking pushes off the intake (dropping them, so
/// memory stays bounded) and recovers them by difference once the handler lets go.
#[tokio::test(start_paused = true)]
async fn a_blocked_handler_leaves_room_in_the_intake_and_nothing_is_lost() {
    let seed = 61;
    let mut sim = Sim::new(seed, 8, ApiFaults::none(Duration::from_millis(40)));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let held = Arc::clone(&gate);
    sim.recorder = Recorder::new().with_behaviour(move |n, _| {
        let gate = Arc::clone(&held);
        boxed(async move {
            if n == 1 {
                let _open = gate.acquire().await?;
            }
            Ok(())
        })
    });
    let storage = Arc::new(MemoryStorage::new());
    sim.seed(&*storage).await;
    let (handle, mut run) = sim.start(&storage, tiny(seed));
    let producing = sim.produce(&handle, producer(seed, 300, Faults::none(), false));
    bounded("the producer", producing).await.expect("producer");
    // The handler still blocks, so the backlog is past its bound: pushes wait in the intake
    // (a reader watching `queued` would hold back), and whenever it fills the manager empties
    // it, dropping those pushes, so there is always room again for whoever waits for it.
    bounded("room in the intake", async {
        while handle.queued() >= 4 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    let runtime = handle.stats().runtime;
    assert!(runtime.pushes_dropped > 0, "{runtime:?}");
    assert!(sim.recorder.finished() < sim.recorder.count());
    gate.add_permits(1);
    let summary = catch_up_and_shut_down(&handle, &mut run).await;
    assert_eq!(summary.abandoned, 0);
    assert!(summary.stats.runtime.intake_recoveries > 0);
    sim.finish(&*storage).await.expect("oracle");
    assert_eq!(sim.oracle.repeats(), 0);
    assert_everything_handled(&sim);
}

#[tokio::test(start_paused = true)]
async fn request_channel_difference_fetches_a_tracked_channel_and_refuses_an_unknown_one() {
    let seed = 67;
    let mut sim = Sim::new(seed, 4, ApiFaults::none(Duration::from_millis(40)));
    let slot = Slot::default();
    let hook = Arc::clone(&slot);
    // From a handler too: the driver answers whatever the dispatch is doing.
    sim.recorder = Recorder::new().with_behaviour(move |n, _| {
        let handle = handle_of(&hook);
        boxed(async move {
            if n % 25 == 0 {
                handle.request_channel_difference(2).await?;
            }
            Ok(())
        })
    });
    let storage = Arc::new(MemoryStorage::new());
    sim.seed(&*storage).await;
    let (handle, mut run) = sim.start(&storage, tiny(seed));
    slot.set(handle.clone()).expect("set once");
    bounded("caught_up", handle.caught_up())
        .await
        .expect("caught up");
    let before = handle.stats().engine.channel_difference_requests;
    bounded("the request", handle.request_channel_difference(3))
        .await
        .expect("tracked");
    bounded("caught_up", handle.caught_up())
        .await
        .expect("caught up");
    assert_eq!(
        handle.stats().engine.channel_difference_requests,
        before + 1
    );
    assert!(matches!(
        bounded("the request", handle.request_channel_difference(999)).await,
        Err(sync_runtime::ControlError::Engine(_))
    ));
    bounded(
        "the producer",
        sim.produce(&handle, producer(seed, 200, Faults::moderate(), false)),
    )
    .await
    .expect("producer");
    catch_up_and_shut_down(&handle, &mut run).await;
    sim.finish(&*storage).await.expect("oracle");
    assert_eq!(sim.oracle.repeats(), 0);
}

/// A reader that holds back while the intake is full never has a push dropped, however slow
/// the handler: while the dispatch backlog is past its bound the manager leaves pushes in the
/// intake, so the reader sees them there and waits, instead of the manager dropping them (and
/// losing the ephemeral and zero-count updates a difference does not repeat).
#[tokio::test(start_paused = true)]
async fn a_reader_that_watches_queued_loses_nothing_to_a_slow_handler() {
    let seed = 71;
    let mut sim = Sim::new(seed, 4, ApiFaults::none(Duration::from_millis(40)));
    sim.recorder = Recorder::new().with_behaviour(|_, _| {
        boxed(async {
            tokio::time::sleep(Duration::from_millis(3)).await;
            Ok(())
        })
    });
    let storage = Arc::new(MemoryStorage::new());
    sim.seed(&*storage).await;
    let config = ManagerConfig {
        intake_capacity: 16,
        shards: 2,
        shard_capacity: 2,
        ..config(seed, false)
    };
    let capacity = config.intake_capacity;
    let (handle, mut run) = sim.start(&storage, config);
    bounded("caught_up", handle.caught_up())
        .await
        .expect("caught up");
    let reader = {
        let handle = handle.clone();
        let api = sim.api.clone();
        async move {
            for _ in 0..400 {
                let push = api.with_server(|server| server.produce());
                while handle.queued() + 1 > capacity {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let pushed = handle.push(push).expect("running");
                assert!(pushed.is_queued(), "a push was dropped at a full intake");
            }
        }
    };
    bounded("the reader", reader).await;
    let summary = catch_up_and_shut_down(&handle, &mut run).await;
    assert_eq!(
        summary.stats.runtime.pushes_dropped, 0,
        "{:?}",
        summary.stats.runtime
    );
    assert_eq!(summary.stats.runtime.intake_recoveries, 0);
    sim.finish(&*storage).await.expect("oracle");
    assert_eq!(sim.oracle.repeats(), 0);
    assert_everything_handled(&sim);
}
