//! Account fail-over on a Redis Cluster, on the real clock: a manager holding an account's
//! lease crashes, a standby in the same test takes over once the lease expires on the
//! cluster (within its ttl plus a standby poll), resumes from the state the cluster holds, and
//! the oracle holds across the crash. Then the new owner shuts down cleanly and a third
//! manager takes over at once.
//!
//! Needs `redis-server` and `redis-cli` (on `PATH`, or `REDIS_SERVER` / `REDIS_CLI`); skipped
//! with a note when missing, except under `CI=true`, where it fails.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{ACCOUNT, Sim, config, producer, start_leased};
use sync_runtime::sim::{ApiFaults, Recorder};
use sync_runtime::{LeaseConfig, ManagerHandle, RunError, Summary};
use sync_storage::{LeaseStorage, RedisConfig, RedisStorage};
use sync_testkit::redis_server::RedisCluster;
use sync_testkit::{Faults, TestEntities, TestUpdate};
use tokio::task::JoinHandle;

type Run = JoinHandle<Result<Summary, RunError>>;

fn lease(owner: &str) -> LeaseConfig {
    LeaseConfig {
        ttl: Duration::from_secs(3),
        renew_every: Duration::from_millis(300),
        standby_poll: Duration::from_millis(50),
        ..LeaseConfig::with_owner(owner)
    }
}

fn start(
    sim: &Sim,
    storage: &Arc<RedisStorage>,
    recorder: &Recorder,
    owner: &str,
) -> (ManagerHandle<TestUpdate, TestEntities>, Run) {
    start_leased(sim, storage, recorder, config(sim.seed, true), lease(owner))
}

async fn until_owner(handle: &ManagerHandle<TestUpdate, TestEntities>) -> Duration {
    common::until_owner(handle, Duration::from_millis(5), Duration::from_secs(60)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_owner_is_taken_over_on_a_cluster() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let storage = Arc::new(
        RedisStorage::with_config(RedisConfig::cluster(cluster.urls()))
            .await
            .expect("connect to the cluster"),
    );
    assert!(storage.is_cluster());
    let fast = ApiFaults {
        latency: Duration::from_millis(1),
        failure: 0.05,
        flood_wait_share: 0.0,
        flood_wait_max_seconds: 0,
    };
    let mut sim = Sim::new(61, 6, fast);
    sim.recorder = Recorder::new().with_delay(Duration::from_millis(1));
    sim.seed(&*storage).await;
    let (second_log, third_log) = (Recorder::new(), Recorder::new());

    let (first, first_run) = start(&sim, &storage, &sim.recorder, "first");
    until_owner(&first).await;
    let (second, second_run) = start(&sim, &storage, &second_log, "second");
    let producing = sim.produce(&first, producer(61, 1_500, Faults::moderate(), true));
    while sim.api.with_server(|s| s.events()) < 500 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let crashed = common::crash_owner(&mut sim, &*storage, first_run, producing, &second).await;
    until_owner(&second).await;
    let waited = crashed.elapsed();
    assert!(
        waited <= lease("x").ttl + Duration::from_secs(1),
        "took over after {waited:?}"
    );

    sim.recorder = second_log;
    sim.produce(&second, producer(62, 1_000, Faults::moderate(), true))
        .await
        .expect("producer");
    second.caught_up().await.expect("caught up");
    let (third, third_run) = start(&sim, &storage, &third_log, "third");
    second.shutdown();
    second_run.await.expect("join").expect("clean run");
    let waited = until_owner(&third).await;
    assert!(
        waited < lease("x").ttl,
        "a released lease waited {waited:?}"
    );
    sim.judge_deliveries().expect("second owner's deliveries");

    sim.recorder = third_log;
    sim.produce(&third, producer(63, 1_500, Faults::moderate(), true))
        .await
        .expect("producer");
    third.caught_up().await.expect("caught up");
    third.shutdown();
    third_run.await.expect("join").expect("clean run");
    sim.finish(&*storage).await.expect("oracle");
    assert_eq!(storage.lease_holder(ACCOUNT).await.expect("holder"), None);
}
