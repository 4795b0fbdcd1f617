//! The Redis backend while its server dies: a real redis-server with AOF and
//! `appendfsync always` is killed (SIGKILL) in the middle of a run of commits and restarted.
//! Nothing acknowledged is lost, nothing goes back, the outage shows as clear errors, and
//! the storage recovers on its own.

mod common;

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::uniform_commit;
use sync_storage::{Error, RedisConfig, RedisStorage, StateStorage};
use sync_testkit::redis_server::RedisServer;

const ACCOUNT: i64 = 31;

#[derive(Default)]
struct Progress {
    acked: AtomicI32,
    stop: AtomicBool,
    errors: Mutex<Vec<(i32, String)>>,
}

/// Polls `done` every few milliseconds; fails after `rounds` polls (a bound on liveness, not
/// a timing assertion: the condition is expected long before).
async fn wait_until(what: &str, rounds: u32, mut done: impl FnMut() -> bool) {
    for _ in 0..rounds {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("gave up waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_run_loses_nothing_and_recovers() {
    let Some(mut server) =
        RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"])
    else {
        return;
    };
    let config = RedisConfig {
        retries: 2,
        retry_delay: Duration::from_millis(5),
        ..RedisConfig::new(server.url())
    };
    let storage = RedisStorage::with_config(config).await.expect("connect");
    let progress = Arc::new(Progress::default());

    // The writer: commits 1, 2, 3, … in order; after a failure it sends the same commit
    // again (equal values are accepted, so that is safe even if the failed one landed).
    let writer = {
        let storage = storage.clone();
        let progress = Arc::clone(&progress);
        tokio::spawn(async move {
            let mut v = 1;
            let mut last_read = 0;
            while !progress.stop.load(Ordering::SeqCst) {
                match storage.apply(ACCOUNT, &uniform_commit(v)).await {
                    Ok(()) => {
                        progress.acked.store(v, Ordering::SeqCst);
                        v += 1;
                    }
                    Err(error) => {
                        progress
                            .errors
                            .lock()
                            .expect("lock")
                            .push((v, kind(&error)));
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
                // Reads never go back, outage or not.
                if let Ok(Some(state)) = storage.get_state(ACCOUNT).await {
                    assert!(
                        state.pts >= last_read,
                        "read {} after {last_read}",
                        state.pts
                    );
                    last_read = state.pts;
                }
            }
        })
    };

    wait_until("50 acknowledged commits", 4000, || {
        progress.acked.load(Ordering::SeqCst) >= 50
    })
    .await;
    server.kill();

    // While the server is down: errors, and no acknowledgements.
    wait_until("errors while the server is down", 4000, || {
        progress.errors.lock().expect("lock").len() >= 5
    })
    .await;
    let acked_while_down = progress.acked.load(Ordering::SeqCst);
    wait_until("more errors while down", 4000, || {
        progress.errors.lock().expect("lock").len() >= 10
    })
    .await;
    assert_eq!(
        progress.acked.load(Ordering::SeqCst),
        acked_while_down,
        "a commit was acknowledged by a dead server"
    );
    let read = storage.load(ACCOUNT).await;
    assert!(
        read.as_ref().is_err_and(Error::is_unavailable),
        "a read while down: {read:?}"
    );
    {
        let errors = progress.errors.lock().expect("lock");
        // The first failure may be ambiguous (a command in flight when the connection
        // died); once the connection is known dead every failure says "unavailable".
        assert!(
            errors
                .iter()
                .all(|(_, k)| k == "unavailable" || k == "ambiguous"),
            "unexpected errors: {errors:?}"
        );
        assert!(
            errors.iter().skip(2).all(|(_, k)| k == "unavailable"),
            "errors while down: {errors:?}"
        );
    }

    server.restart();
    // Nothing acknowledged before the kill is lost (AOF, fsync on every write).
    let fresh = RedisStorage::connect(&server.url())
        .await
        .expect("connect after restart");
    let after_restart = fresh
        .load(ACCOUNT)
        .await
        .expect("load")
        .state
        .expect("state")
        .pts;
    assert!(
        after_restart >= acked_while_down,
        "lost commits: {after_restart} < {acked_while_down}"
    );

    // The old handle recovers on its own.
    let target = acked_while_down + 50;
    wait_until("recovery after the restart", 4000, || {
        progress.acked.load(Ordering::SeqCst) >= target
    })
    .await;
    progress.stop.store(true, Ordering::SeqCst);
    writer.await.expect("writer");

    let last = progress.acked.load(Ordering::SeqCst);
    let snapshot = fresh.load(ACCOUNT).await.expect("load");
    assert_eq!(snapshot.state, uniform_commit(last).state);
    assert_eq!(snapshot.channels.get(&1), Some(&last));
}

fn kind(error: &Error) -> String {
    match error {
        Error::Unavailable { .. } => "unavailable".into(),
        Error::Ambiguous { .. } => "ambiguous".into(),
        other => format!("{other}"),
    }
}
