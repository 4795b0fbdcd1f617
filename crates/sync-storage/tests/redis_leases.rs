//! Leases, fencing and the registry on a private redis-server: the shared lease suite
//! (`tests/common/lease.rs`) plus what only Redis has: the key layout, real expiry on the
//! server's clock, a fence that outlives every delete, pipelined fenced commits and renewals,
//! and garbage in the lease keys.

mod common;
mod server_time;

use std::sync::Arc;
use std::time::Duration;

use common::lease::LONG;
use common::uniform_commit;
use server_time::ServerTime;
use sync_storage::{
    Acquired, Error, FencingToken, Lease, LeaseStorage, RedisConfig, RedisStorage, RegistryStorage,
    StateStorage,
};
use sync_testkit::redis_server::RedisServer;

async fn make_leases() -> Option<((), RedisStorage, ServerTime)> {
    let server = Arc::new(RedisServer::start()?);
    let storage = RedisStorage::connect(&server.url()).await.expect("connect");
    let time = ServerTime {
        server,
        storage: storage.clone(),
    };
    Some(((), storage, time))
}

lease_suite!(make_leases);

async fn make() -> Option<(RedisServer, RedisStorage)> {
    let server = RedisServer::start()?;
    let storage = RedisStorage::connect(&server.url()).await.expect("connect");
    Some((server, storage))
}

#[track_caller]
fn held(acquired: Result<Acquired, Error>) -> Lease {
    match acquired {
        Ok(Acquired::Held(lease)) => lease,
        other => panic!("expected the lease, got {other:?}"),
    }
}

/// An integer reply (`:n\r\n`) of `raw`.
#[track_caller]
fn int(reply: &str) -> i64 {
    reply
        .strip_prefix(':')
        .and_then(|n| n.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("not an integer reply: {reply:?}"))
}

#[tokio::test]
async fn lease_and_registry_keys_share_their_hash_tags() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let s = RedisStorage::with_config(RedisConfig::new(server.url()).with_prefix("app1"))
        .await
        .expect("connect");
    assert_eq!(s.lease_key(42), "app1:{42}:lease");
    assert_eq!(s.fence_key(42), "app1:{42}:fence");
    assert_eq!(s.registry_accounts_key(), "app1:{registry}:accounts");
    assert_eq!(s.registry_members_key(), "app1:{registry}:members");
    let lease = held(s.acquire(42, "host-1", LONG).await);
    assert_eq!(
        server.raw(&["HGET", "app1:{42}:lease", "owner"]),
        "$6\r\nhost-1\r\n"
    );
    let token = lease.token.0.to_string();
    assert_eq!(
        server.raw(&["GET", "app1:{42}:fence"]),
        format!("${}\r\n{token}\r\n", token.len())
    );
    // The lease expires on the server; the fence never does.
    let pttl = int(&server.raw(&["PTTL", "app1:{42}:lease"]));
    assert!(pttl > 0 && pttl <= 600_000, "{pttl}");
    assert_eq!(server.raw(&["PTTL", "app1:{42}:fence"]), ":-1\r\n");
    s.register(&[42]).await.expect("register");
    s.heartbeat("host-1", LONG).await.expect("beat");
    assert_eq!(
        server.raw(&["SISMEMBER", "app1:{registry}:accounts", "42"]),
        ":1\r\n"
    );
    // The member's score is the end of its beat in server milliseconds.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    let score = server.raw(&["ZSCORE", "app1:{registry}:members", "host-1"]);
    let score: f64 = score
        .lines()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{score:?}"));
    // Same host, so the clocks agree to well within the ttl.
    assert!(
        (score - (now_ms as f64 + 600_000.0)).abs() < 300_000.0,
        "{score}"
    );
}

#[tokio::test]
async fn a_lease_runs_out_on_the_server_clock() {
    let Some((_server, s)) = make().await else {
        return;
    };
    let first = held(s.acquire(1, "a", Duration::from_millis(50)).await);
    // Bounded polling: on a loaded machine the expiry may be seen late, never early.
    let mut freed = false;
    for _ in 0..500 {
        if s.lease_holder(1).await.expect("holder").is_none() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed, "the 50 ms lease never ran out");
    let second = held(s.acquire(1, "b", LONG).await);
    assert!(second.token > first.token);
    // a's renewal is fenced: b acquired since.
    assert!(matches!(
        s.renew(&first).await,
        Err(Error::Fenced { token, current, .. }) if token == first.token.0 && current == second.token.0
    ));
}

#[tokio::test]
async fn the_fence_outlives_every_delete() {
    let Some((server, s)) = make().await else {
        return;
    };
    let lease = held(s.acquire(5, "a", LONG).await);
    s.apply_fenced(5, lease.token, &uniform_commit(3))
        .await
        .expect("commit");
    s.delete(5).await.expect("delete");
    sync_storage::AccessHashStorage::delete_access_hashes(&s, 5)
        .await
        .expect("delete hashes");
    assert_eq!(int(&server.raw(&["EXISTS", &s.fence_key(5)])), 1);
    s.release(&lease).await.expect("release");
    let next = held(s.acquire(5, "b", LONG).await);
    assert!(next.token > lease.token);
}

#[tokio::test]
async fn pipelined_fenced_commits_and_renewals_report_each_outcome() {
    let Some((server, s)) = make().await else {
        return;
    };
    let a1 = held(s.acquire(1, "a", LONG).await);
    let a2 = held(s.acquire(2, "a", LONG).await);
    s.release(&a2).await.expect("release");
    let b2 = held(s.acquire(2, "b", LONG).await);
    // An empty script cache: every EVALSHA of the first round is NOSCRIPT and re-sent.
    assert_eq!(server.raw(&["SCRIPT", "FLUSH"]), "+OK\r\n");
    let (five, nine) = (uniform_commit(5), uniform_commit(9));
    let results = s
        .apply_many_fenced(&[
            (1, a1.token, &five),
            (2, a2.token, &nine),
            (2, b2.token, &five),
        ])
        .await
        .expect("transport");
    assert!(results[0].is_ok(), "{results:?}");
    assert!(
        matches!(results[1], Err(Error::Fenced { account: 2, .. })),
        "{results:?}"
    );
    assert!(results[2].is_ok(), "{results:?}");
    assert_eq!(
        s.get_state(2).await.expect("read"),
        Some(common::uniform_state(5))
    );
    // The plain pipeline still works next to the fenced one.
    let plain = s
        .apply_many(&[(1, &nine), (1, &five)])
        .await
        .expect("transport");
    assert!(plain[0].is_ok() && plain[1].as_ref().is_err_and(Error::is_stale));

    assert_eq!(server.raw(&["SCRIPT", "FLUSH"]), "+OK\r\n");
    let renewed = s.renew_many(&[a1, a2, b2]).await.expect("transport");
    assert!(renewed[0].is_ok(), "{renewed:?}");
    assert!(
        renewed[1].as_ref().is_err_and(Error::is_fenced),
        "{renewed:?}"
    );
    assert!(renewed[2].is_ok(), "{renewed:?}");
}

#[tokio::test]
async fn garbage_in_the_lease_keys_is_corrupt() {
    let Some((server, s)) = make().await else {
        return;
    };
    let lease = Lease {
        account: 1,
        owner: "a".into(),
        token: FencingToken(1),
        ttl: LONG,
    };
    assert_eq!(server.raw(&["SET", &s.lease_key(1), "x"]), "+OK\r\n");
    assert!(s.acquire(1, "a", LONG).await.is_err_and(|e| e.is_corrupt()));
    assert!(s.lease_holder(1).await.is_err_and(|e| e.is_corrupt()));
    server.raw(&["DEL", &s.lease_key(1)]);

    assert_eq!(server.raw(&["SET", &s.fence_key(1), "abc"]), "+OK\r\n");
    assert!(s.acquire(1, "a", LONG).await.is_err_and(|e| e.is_corrupt()));
    assert!(s.renew(&lease).await.is_err_and(|e| e.is_corrupt()));
    server.raw(&["DEL", &s.fence_key(1)]);
    assert_eq!(int(&server.raw(&["LPUSH", &s.fence_key(1), "x"])), 1);
    let commit = s.apply_fenced(1, FencingToken(1), &uniform_commit(1)).await;
    assert!(commit.is_err_and(|e| e.is_corrupt()));
    // Nothing was written past the corrupt fence.
    assert_eq!(s.get_state(1).await.expect("read"), None);

    let members = s.registry_members_key();
    assert_eq!(server.raw(&["SET", &members, "x"]), "+OK\r\n");
    assert!(s.heartbeat("m", LONG).await.is_err_and(|e| e.is_corrupt()));
    let accounts = s.registry_accounts_key();
    assert_eq!(int(&server.raw(&["SADD", &accounts, "not-a-number"])), 1);
    assert!(s.registered().await.is_err_and(|e| e.is_corrupt()));
}
