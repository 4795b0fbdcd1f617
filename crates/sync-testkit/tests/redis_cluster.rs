//! The Redis Cluster harness itself: it starts a working cluster, and a killed master's
//! replica takes over and the killed node comes back as a replica.

use std::time::{Duration, Instant};

use sync_testkit::redis_server::{RedisCluster, Reply, Role};

#[test]
fn a_cluster_starts_fails_over_and_takes_its_old_master_back() {
    let started = Instant::now();
    let Some(mut cluster) = RedisCluster::start_with(3, true, Duration::from_millis(1000)) else {
        return;
    };
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "three masters serve the slots");
    let created = started.elapsed();

    // Every node answers for the whole key space (a write to a key of another node's slot is
    // redirected, not refused as unknown).
    let master = masters[0];
    let replica = cluster
        .replica_of(master)
        .expect("every master has a replica");
    assert_eq!(cluster.role(replica), Some(Role::Replica));
    for index in 0..cluster.len() {
        let reply = cluster
            .command(index, &["SET", "{k}", "v"])
            .expect("answer");
        assert!(
            reply == Reply::Simple("OK".into()) || reply.text().starts_with("MOVED"),
            "{reply:?}"
        );
    }

    let killed_at = Instant::now();
    cluster.kill(master);
    let promoted = cluster.wait_for_failover(master);
    let failed_over = killed_at.elapsed();
    assert_eq!(
        promoted, replica,
        "the killed master's own replica takes over"
    );
    assert_eq!(cluster.role(promoted), Some(Role::Master));

    cluster.restart(master);
    cluster.wait_replica(master);
    cluster.wait_ok();
    assert_eq!(cluster.replica_of(promoted), Some(master));
    #[allow(clippy::print_stderr)] // The figures are for the person running the test.
    {
        eprintln!(
            "cluster created in {created:?}, failed over in {failed_over:?}, total {:?}",
            started.elapsed()
        );
    }
}
