//! Time on a Redis server for the lease tests (`tests/redis_leases.rs`, `tests/lease_race.rs`).
//! Kept out of `common/`, which other crates' tests include without a Redis backend.

use std::time::Duration;

use sync_storage::AccountId;

use crate::common::lease::Time;

/// Time on a Redis server: a lease is ended by deleting its key (what its expiry does), a
/// ttl is waited out for real.
pub(crate) struct ServerTime {
    /// The server the storage talks to.
    pub(crate) server: std::sync::Arc<sync_testkit::redis_server::RedisServer>,
    /// The storage, for its key names.
    pub(crate) storage: sync_storage::RedisStorage,
}

impl Time for ServerTime {
    async fn expire_lease(&self, account: AccountId) {
        let key = self.storage.lease_key(account);
        let reply = self.server.raw(&["DEL", &key]);
        assert!(reply.starts_with(':'), "DEL {key}: {reply}");
    }

    async fn outlive(&self, ttl: Duration) {
        tokio::time::sleep(ttl + Duration::from_millis(10)).await;
    }
}
