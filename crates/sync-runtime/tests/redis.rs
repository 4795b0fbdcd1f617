//! The manager on Redis storage, on the real clock (Redis does real I/O): a clean shutdown and
//! restart, and a Redis server killed and restarted in the middle of a run.
//!
//! Needs `redis-server` (env `REDIS_SERVER`, or on `PATH`); skipped with a note when missing,
//! except under `CI=true`, where it fails.

mod common;

use std::sync::Arc;
use std::time::Duration;

use sync_testkit::redis_server::RedisServer;

/// AOF on (`appendfsync always`): a killed server loses nothing it acknowledged.
const AOF: &[&str] = &["--appendonly", "yes", "--appendfsync", "always"];
use common::{Sim, config, env_or, producer};
use sync_runtime::sim::ApiFaults;
use sync_storage::{RedisConfig, RedisStorage};
use sync_testkit::Faults;

async fn connect(server: &RedisServer, prefix: &str) -> Arc<RedisStorage> {
    let config = RedisConfig {
        retries: 1,
        retry_delay: Duration::from_millis(5),
        response_timeout: Duration::from_millis(500),
        connection_timeout: Duration::from_millis(200),
        ..RedisConfig::new(server.url()).with_prefix(prefix)
    };
    Arc::new(RedisStorage::with_config(config).await.expect("connect"))
}

fn fast_api() -> ApiFaults {
    ApiFaults {
        latency: Duration::from_millis(1),
        failure: 0.05,
        flood_wait_share: 0.0,
        flood_wait_max_seconds: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_and_restart_from_redis_loses_nothing() {
    let Some(server) = RedisServer::start_with(AOF) else {
        return;
    };
    let storage = connect(&server, "restart").await;
    let mut sim = Sim::new(41, 8, fast_api());
    sim.seed(&*storage).await;
    let total = env_or("SYNC_RUNTIME_REDIS_EVENTS", 1_500);
    for round in 0..2u64 {
        let (handle, run) = sim.start(&storage, config(41, true));
        let producing = sim.produce(
            &handle,
            producer(41 + round, total, Faults::moderate(), true),
        );
        if round == 0 {
            while sim.api.with_server(|s| s.events()) < total / 2 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            handle.shutdown();
            let summary = run.await.expect("join").expect("run");
            producing.await.expect("producer");
            assert!(summary.persisted);
            sim.crashed(&*storage).await.expect("oracle before restart");
        } else {
            producing.await.expect("producer");
            handle.caught_up().await.expect("caught up");
            handle.shutdown();
            assert!(run.await.expect("join").expect("run").persisted);
        }
    }
    sim.finish(&*storage).await.expect("oracle");
    assert_eq!(sim.oracle.repeats(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_mid_run_loses_nothing() {
    let Some(mut server) = RedisServer::start_with(AOF) else {
        return;
    };
    let storage = connect(&server, "outage").await;
    let mut sim = Sim::new(43, 8, fast_api());
    sim.seed(&*storage).await;
    let total = env_or("SYNC_RUNTIME_REDIS_EVENTS", 1_500);
    let (handle, run) = sim.start(&storage, config(43, true));
    let producing = sim.produce(&handle, producer(43, total, Faults::moderate(), true));

    // Kill Redis a third of the way in, and keep it down until writes have failed.
    while sim.api.with_server(|s| s.events()) < total / 3 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.kill();
    let mut rounds = 0;
    while handle.stats().runtime.commit_retries == 0 {
        rounds += 1;
        assert!(rounds < 5_000, "no write failed while Redis was down");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.restart();

    producing.await.expect("producer");
    handle.caught_up().await.expect("caught up");
    handle.shutdown();
    let summary = run.await.expect("join").expect("run");
    assert!(
        summary.persisted,
        "the final state did not reach Redis after it came back"
    );
    assert!(summary.stats.runtime.commit_retries > 0);
    sim.finish(&*storage).await.expect("oracle");
}
