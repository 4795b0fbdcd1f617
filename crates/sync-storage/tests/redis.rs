//! The Redis backend against a private redis-server: the shared contract suite (model
//! property test included), plus what only Redis has: URLs and credentials, key layout,
//! garbage in the keys, pipelined commits, and separate clients racing.

mod common;

use std::collections::BTreeMap;

use common::{uniform_commit, uniform_state};
use sync_storage::{
    AccessHashStorage, ChannelCommit, Commit, Error, RedisConfig, RedisStorage, StateStorage,
    WriteMode,
};
use sync_testkit::redis_server::RedisServer;

async fn make() -> Option<(RedisServer, RedisStorage)> {
    let server = RedisServer::start()?;
    let storage = RedisStorage::connect(&server.url()).await.expect("connect");
    Some((server, storage))
}

contract_suite!(make);

#[tokio::test]
async fn keys_use_the_prefix_and_an_account_hash_tag() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let config = RedisConfig::new(server.url()).with_prefix("app1");
    let storage = RedisStorage::with_config(config).await.expect("connect");
    assert_eq!(storage.state_key(42), "app1:{42}:state");
    assert_eq!(storage.channels_key(42), "app1:{42}:channels");
    assert_eq!(storage.access_hashes_key(42), "app1:{42}:access_hashes");
    storage
        .set_state(42, uniform_state(5), WriteMode::Advance)
        .await
        .expect("write");
    storage
        .set_channel_pts(42, 9, 3, WriteMode::Advance)
        .await
        .expect("write");
    storage.set_access_hash(42, 9, -1).await.expect("write");
    assert_eq!(
        server.raw(&["HGET", "app1:{42}:state", "pts"]),
        "$1\r\n5\r\n"
    );
    assert_eq!(
        server.raw(&["HGET", "app1:{42}:channels", "9"]),
        "$1\r\n3\r\n"
    );
    assert_eq!(
        server.raw(&["HGET", "app1:{42}:access_hashes", "9"]),
        "$2\r\n-1\r\n"
    );
    // Another prefix is another namespace on the same server.
    let other = RedisStorage::with_config(RedisConfig::new(server.url()).with_prefix("app2"))
        .await
        .expect("connect");
    assert_eq!(other.get_state(42).await.expect("read"), None);
    // Braces would break the cluster hash tag.
    let bad = RedisStorage::with_config(RedisConfig::new(server.url()).with_prefix("a{b}")).await;
    assert!(matches!(bad, Err(Error::Config(_))), "{bad:?}");
}

#[tokio::test]
async fn tcp_url_with_user_and_password() {
    let Some(binary) = sync_testkit::redis_server::find_binary() else {
        return;
    };
    drop(binary);
    // A free loopback port: bind to port 0, read it, release it, hand it to the server.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let port_arg = port.to_string();
    let Some(_server) = RedisServer::start_with(&[
        "--port",
        &port_arg,
        "--bind",
        "127.0.0.1",
        "--user",
        "default",
        "off",
        "--user",
        "bot",
        "on",
        ">s3cret",
        "~*",
        "&*",
        "+@all",
    ]) else {
        return;
    };
    let url = format!("redis://bot:s3cret@127.0.0.1:{port}/0");
    let storage = RedisStorage::connect(&url)
        .await
        .expect("connect with credentials");
    storage
        .set_state(1, uniform_state(3), WriteMode::Advance)
        .await
        .expect("write");
    assert_eq!(
        storage.get_state(1).await.expect("read"),
        Some(uniform_state(3))
    );

    let wrong = RedisStorage::connect(&format!("redis://bot:wrong@127.0.0.1:{port}/0")).await;
    assert!(
        matches!(wrong, Err(Error::Config(_))),
        "bad credentials: {wrong:?}"
    );
    // Without credentials the connection may open, but the default user is off: commands
    // are refused (NOAUTH, or the server drops the unauthenticated connection).
    if let Ok(nobody) = RedisStorage::connect(&format!("redis://127.0.0.1:{port}/0")).await {
        assert!(
            nobody.get_state(1).await.is_err(),
            "read without credentials"
        );
        assert!(
            nobody
                .set_state(1, uniform_state(4), WriteMode::Advance)
                .await
                .is_err(),
            "write without credentials"
        );
    }
    assert_eq!(
        storage.get_state(1).await.expect("read"),
        Some(uniform_state(3))
    );
}

#[tokio::test]
async fn bad_urls_and_unreachable_servers() {
    let bad = RedisStorage::connect("http://example.invalid").await;
    assert!(matches!(bad, Err(Error::Config(_))), "{bad:?}");
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = format!("redis+unix://{}/nothing.sock", dir.path().display());
    let down = RedisStorage::with_config(RedisConfig {
        retries: 0,
        ..RedisConfig::new(missing)
    })
    .await;
    assert!(matches!(down, Err(Error::Unavailable { .. })), "{down:?}");
}

#[cfg(feature = "redis-tls")]
#[tokio::test]
async fn tls_urls_are_accepted() {
    // No TLS server here: the point is that `rediss://` is understood (a connection
    // failure, not a configuration error).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("rediss://user:pass@127.0.0.1:{port}/");
    let result = RedisStorage::with_config(RedisConfig {
        retries: 0,
        ..RedisConfig::new(url)
    })
    .await;
    assert!(
        matches!(result, Err(Error::Unavailable { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn garbage_in_the_keys_is_reported_as_corrupt() {
    let Some((server, s)) = make().await else {
        return;
    };
    let a = 77;
    s.apply(
        a,
        &Commit {
            state: Some(uniform_state(10)),
            channels: vec![ChannelCommit {
                channel_id: 5,
                pts: 10,
                reset: false,
            }],
            ..Commit::default()
        },
    )
    .await
    .expect("base");
    let (state_key, channels_key, hashes_key) =
        (s.state_key(a), s.channels_key(a), s.access_hashes_key(a));

    // A field that is not a number.
    server.raw(&["HSET", &state_key, "qts", "twelve"]);
    assert!(s.get_state(a).await.is_err_and(|e| e.is_corrupt()));
    assert!(s.load(a).await.is_err_and(|e| e.is_corrupt()));
    let write = s.set_state(a, uniform_state(11), WriteMode::Advance).await;
    assert!(write.as_ref().is_err_and(|e| e.is_corrupt()), "{write:?}");
    assert_eq!(
        server.raw(&["HGET", &state_key, "pts"]),
        "$2\r\n10\r\n",
        "a corrupt key must not be overwritten"
    );
    // Out of the 32-bit range, or a missing field.
    server.raw(&["HSET", &state_key, "qts", "4294967296"]);
    assert!(s.get_state(a).await.is_err_and(|e| e.is_corrupt()));
    assert!(
        s.set_state(a, uniform_state(11), WriteMode::Advance)
            .await
            .is_err_and(|e| e.is_corrupt())
    );
    server.raw(&["HDEL", &state_key, "qts"]);
    assert!(s.get_state(a).await.is_err_and(|e| e.is_corrupt()));
    assert!(
        s.set_state(a, uniform_state(11), WriteMode::Advance)
            .await
            .is_err_and(|e| e.is_corrupt())
    );
    // A key of the wrong type.
    server.raw(&["DEL", &state_key]);
    server.raw(&["SET", &state_key, "garbage"]);
    assert!(s.get_state(a).await.is_err_and(|e| e.is_corrupt()));
    assert!(s.load(a).await.is_err_and(|e| e.is_corrupt()));
    assert!(
        s.set_state(a, uniform_state(11), WriteMode::Reset)
            .await
            .is_err_and(|e| e.is_corrupt())
    );

    // Channel pts: a bad value, a bad field name.
    server.raw(&["HSET", &channels_key, "5", "1.5"]);
    assert!(s.get_channel_pts(a, 5).await.is_err_and(|e| e.is_corrupt()));
    assert!(s.channels(a).await.is_err_and(|e| e.is_corrupt()));
    assert!(
        s.set_channel_pts(a, 5, 11, WriteMode::Advance)
            .await
            .is_err_and(|e| e.is_corrupt())
    );
    server.raw(&["HSET", &channels_key, "5", "10", "not-a-channel", "3"]);
    assert!(s.channels(a).await.is_err_and(|e| e.is_corrupt()));
    assert_eq!(
        s.get_channel_pts(a, 5)
            .await
            .expect("the good field still reads"),
        Some(10)
    );
    server.raw(&["DEL", &channels_key]);
    server.raw(&["LPUSH", &channels_key, "x"]);
    assert!(
        s.set_channel_pts(a, 5, 11, WriteMode::Advance)
            .await
            .is_err_and(|e| e.is_corrupt())
    );

    // Access hashes.
    server.raw(&["HSET", &hashes_key, "5", "0xdeadbeef"]);
    assert!(s.get_access_hash(a, 5).await.is_err_and(|e| e.is_corrupt()));
    // Last write wins: a good write replaces the garbage.
    s.set_access_hash(a, 5, 99).await.expect("overwrite");
    assert_eq!(s.get_access_hash(a, 5).await.expect("read"), Some(99));
}

#[tokio::test]
async fn pipelined_commits_report_each_outcome() {
    let Some((server, s)) = make().await else {
        return;
    };
    s.set_state(2, uniform_state(100), WriteMode::Advance)
        .await
        .expect("base");
    let good = Commit {
        state: Some(uniform_state(5)),
        ..Commit::default()
    };
    let stale = Commit {
        state: Some(uniform_state(50)),
        ..Commit::default()
    };
    let channel = Commit {
        channels: vec![ChannelCommit {
            channel_id: 8,
            pts: 8,
            reset: false,
        }],
        ..Commit::default()
    };
    // The server forgets its scripts (as after a restart): the pipeline must load it again.
    assert_eq!(server.raw(&["SCRIPT", "FLUSH"]), "+OK\r\n");
    let results = s
        .apply_many(&[(1, &good), (2, &stale), (3, &channel), (1, &stale)])
        .await
        .expect("pipeline");
    assert_eq!(results.len(), 4);
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(
        results[1].as_ref().is_err_and(|e| e.is_stale()),
        "{:?}",
        results[1]
    );
    assert!(results[2].is_ok(), "{:?}", results[2]);
    assert!(
        results[3].is_ok(),
        "later in the pipeline, account 1 is at 5 < 50: {:?}",
        results[3]
    );
    assert_eq!(s.get_state(1).await.expect("read"), Some(uniform_state(50)));
    assert_eq!(
        s.get_state(2).await.expect("read"),
        Some(uniform_state(100))
    );
    assert_eq!(s.channels(3).await.expect("read"), BTreeMap::from([(8, 8)]));
    assert!(s.apply_many(&[]).await.expect("empty").is_empty());
}

/// The script reads and writes channels in chunks of 1,000 fields: commits larger than that
/// (a long difference touching thousands of channels) apply whole, in the commit's order, and
/// a stale or corrupt entry past the first chunk still rejects the commit before any write.
#[tokio::test]
async fn commits_of_thousands_of_channels_apply_whole() {
    let Some((server, s)) = make().await else {
        return;
    };
    let a = 5;
    let entries = |pts: i32| -> Vec<ChannelCommit> {
        (1..=2_500)
            .map(|channel_id| ChannelCommit {
                channel_id,
                pts,
                reset: false,
            })
            .collect()
    };
    s.apply(
        a,
        &Commit {
            channels: entries(10),
            ..Commit::default()
        },
    )
    .await
    .expect("2,500 channels");
    assert_eq!(s.channels(a).await.expect("read").len(), 2_500);

    // Removes 1..=1,500, then sets 1,001..=2,500 again (at 20), the last one twice.
    let mut channels = entries(20).split_off(1_000);
    channels.push(ChannelCommit {
        channel_id: 2_500,
        pts: 30,
        reset: false,
    });
    let commit = Commit {
        state: Some(uniform_state(3)),
        channels,
        removed_channels: (1..=1_500).collect(),
        ..Commit::default()
    };
    s.apply(a, &commit).await.expect("remove and set");
    let stored = s.channels(a).await.expect("read");
    let mut expected: BTreeMap<i64, i32> = (1_001..=2_500).map(|id| (id, 20)).collect();
    expected.insert(2_500, 30);
    assert_eq!(stored, expected);

    // An entry in the second chunk is stale: nothing at all is written.
    let mut channels = entries(40);
    channels[1_700].pts = 1;
    let rejected = s
        .apply(
            a,
            &Commit {
                state: Some(uniform_state(4)),
                channels,
                ..Commit::default()
            },
        )
        .await;
    assert!(rejected.is_err_and(|e| e.is_stale()));
    assert_eq!(s.channels(a).await.expect("read"), expected);
    assert_eq!(s.get_state(a).await.expect("read"), Some(uniform_state(3)));

    // A corrupt value in the second chunk: reported, nothing written.
    server.raw(&["HSET", &s.channels_key(a), "2400", "x"]);
    let rejected = s
        .apply(
            a,
            &Commit {
                state: Some(uniform_state(4)),
                channels: entries(40),
                ..Commit::default()
            },
        )
        .await;
    assert!(rejected.is_err_and(|e| e.is_corrupt()));
    assert_eq!(s.get_state(a).await.expect("read"), Some(uniform_state(3)));
}

/// A commit that only removes channels reads nothing from the channel hash, and still finds
/// one of the wrong type before writing.
#[tokio::test]
async fn removals_alone_still_check_the_channel_key() {
    let Some((server, s)) = make().await else {
        return;
    };
    let a = 6;
    server.raw(&["LPUSH", &s.channels_key(a), "x"]);
    let commit = Commit {
        state: Some(uniform_state(7)),
        removed_channels: vec![1, 2],
        ..Commit::default()
    };
    assert!(s.apply(a, &commit).await.is_err_and(|e| e.is_corrupt()));
    assert_eq!(s.get_state(a).await.expect("read"), None, "nothing written");
    server.raw(&["DEL", &s.channels_key(a)]);
    s.apply(a, &commit).await.expect("a missing hash is empty");
    assert_eq!(s.get_state(a).await.expect("read"), Some(uniform_state(7)));
}

/// Separate clients (as separate processes would have) race on one account; the server-side
/// script keeps the stored state at the maximum, whatever the interleaving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_clients_racing_end_at_the_maximum() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let clients = 4;
    let rounds = 50;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let storage = RedisStorage::connect(&server.url()).await.expect("connect");
        tasks.push(tokio::spawn(async move {
            for r in 0..rounds {
                let v = r * clients + c + 1;
                // Half of the time a batch of two, to exercise the pipeline path too.
                let commit = uniform_commit(v);
                let results = if r % 2 == 0 {
                    vec![storage.apply(9, &commit).await]
                } else {
                    storage
                        .apply_many(&[(9, &commit), (9, &commit)])
                        .await
                        .expect("pipeline")
                };
                for result in results {
                    match result {
                        Ok(()) => {}
                        Err(Error::Stale {
                            stored, attempted, ..
                        }) => assert!(stored > attempted),
                        Err(other) => panic!("client {c}: {other}"),
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("client task");
    }
    let reader = RedisStorage::connect(&server.url()).await.expect("connect");
    let max = clients * rounds;
    let snapshot = reader.load(9).await.expect("load");
    assert_eq!(snapshot.state, Some(uniform_state(max)));
    assert_eq!(snapshot.channels, BTreeMap::from([(1, max)]));
}
