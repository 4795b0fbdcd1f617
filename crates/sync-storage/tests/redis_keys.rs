//! The Redis keys of user access hashes and of the deletes: which keys each operation
//! touches under the account's hash tag.

use sync_storage::{AccessHashStorage, RedisConfig, RedisStorage, State, StateStorage, WriteMode};
use sync_testkit::redis_server::RedisServer;

async fn connect(server: &RedisServer) -> RedisStorage {
    RedisStorage::with_config(RedisConfig::new(server.url()).with_prefix("app"))
        .await
        .expect("connect")
}

fn exists(server: &RedisServer, key: &str) -> bool {
    server.raw(&["EXISTS", key]) == ":1\r\n"
}

#[tokio::test]
async fn user_hashes_have_their_own_key() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let storage = connect(&server).await;
    assert_eq!(
        storage.user_access_hashes_key(7),
        "app:{7}:user_access_hashes"
    );
    storage
        .set_user_access_hash(7, 99, -5)
        .await
        .expect("write");
    assert_eq!(
        server.raw(&["HGET", "app:{7}:user_access_hashes", "99"]),
        "$2\r\n-5\r\n"
    );
    assert!(!exists(&server, "app:{7}:access_hashes"));
}

#[tokio::test]
async fn deletes_remove_the_accounts_keys() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let storage = connect(&server).await;
    let state = State {
        pts: 1,
        qts: 1,
        date: 1,
        seq: 1,
    };
    for account in [7, 8] {
        storage
            .set_state(account, state, WriteMode::Advance)
            .await
            .expect("state");
        storage
            .set_channel_pts(account, 3, 4, WriteMode::Advance)
            .await
            .expect("channel");
        storage.set_access_hash(account, 3, 5).await.expect("hash");
        storage
            .set_user_access_hash(account, 3, 6)
            .await
            .expect("user hash");
    }
    storage.delete(7).await.expect("delete");
    assert!(!exists(&server, "app:{7}:state"));
    assert!(!exists(&server, "app:{7}:channels"));
    assert!(exists(&server, "app:{7}:access_hashes"));
    assert!(exists(&server, "app:{7}:user_access_hashes"));
    storage
        .delete_access_hashes(7)
        .await
        .expect("delete hashes");
    assert!(!exists(&server, "app:{7}:access_hashes"));
    assert!(!exists(&server, "app:{7}:user_access_hashes"));
    for key in ["state", "channels", "access_hashes", "user_access_hashes"] {
        assert!(exists(&server, &format!("app:{{8}}:{key}")), "{key}");
    }
}
