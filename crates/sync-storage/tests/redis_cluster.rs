//! The Redis backend on a real Redis Cluster that the tests start themselves
//! (`sync_testkit::redis_server::RedisCluster`): the shared contract suite, commits of many
//! accounts spread over every node, the lease and registry suite, writes that wait for
//! replicas, and a master killed in the middle of a run, which must lose no acknowledged
//! commit.

mod common;

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use common::{uniform_commit, uniform_state};
use sync_storage::{
    AccountId, Commit, Error, RedisConfig, RedisStorage, ReplicationShortfall, StateStorage,
};
use sync_testkit::redis_server::{RedisCluster, Reply};

/// One three-master cluster shared by the tests that run at the same time (each under its own
/// key prefix); the last test holding it drops it, which kills its processes, and a later test
/// starts a new one. Starting a cluster takes seconds, a test a few milliseconds.
static SHARED: Mutex<Weak<RedisCluster>> = Mutex::new(Weak::new());
static PREFIXES: AtomicU32 = AtomicU32::new(0);

fn shared_cluster() -> Option<Arc<RedisCluster>> {
    let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(cluster) = shared.upgrade() {
        return Some(cluster);
    }
    let cluster = Arc::new(tokio::task::block_in_place(RedisCluster::start)?);
    *shared = Arc::downgrade(&cluster);
    Some(cluster)
}

/// A storage on the shared cluster, under a prefix of its own.
async fn storage_on(
    cluster: &RedisCluster,
    config: impl FnOnce(RedisConfig) -> RedisConfig,
) -> RedisStorage {
    let prefix = format!("t{}", PREFIXES.fetch_add(1, Ordering::Relaxed));
    let config = config(RedisConfig::cluster(cluster.urls()).with_prefix(prefix));
    RedisStorage::with_config(config)
        .await
        .expect("connect to the cluster")
}

async fn make() -> Option<(Arc<RedisCluster>, RedisStorage)> {
    let cluster = shared_cluster()?;
    let storage = storage_on(&cluster, |config| config).await;
    Some((cluster, storage))
}

contract_suite!(make);

/// Time on the cluster for the lease suite: a lease is ended by deleting its key on the master
/// of its slot (what its expiry does), a ttl is waited out for real.
struct ClusterTime {
    cluster: Arc<RedisCluster>,
    storage: RedisStorage,
}

impl common::lease::Time for ClusterTime {
    async fn expire_lease(&self, account: AccountId) {
        let key = self.storage.lease_key(account);
        let master = self
            .cluster
            .master_of_slot(self.cluster.slot_of(&key))
            .expect("the slot is served");
        let reply = self.cluster.command(master, &["DEL", &key]);
        assert!(matches!(reply, Ok(Reply::Int(_))), "DEL {key}: {reply:?}");
    }

    async fn outlive(&self, ttl: Duration) {
        tokio::time::sleep(ttl + Duration::from_millis(10)).await;
    }
}

async fn make_leases() -> Option<((), RedisStorage, ClusterTime)> {
    let cluster = shared_cluster()?;
    let storage = storage_on(&cluster, |config| config).await;
    let time = ClusterTime {
        cluster,
        storage: storage.clone(),
    };
    Some(((), storage, time))
}

lease_suite!(make_leases);

/// Accounts until every master serves at least `per_master` of them.
fn accounts_on_every_master(
    cluster: &RedisCluster,
    storage: &RedisStorage,
    per_master: usize,
) -> Vec<AccountId> {
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "three masters serve the slots");
    let mut counts = vec![0; cluster.len()];
    let mut accounts = Vec::new();
    for account in 1.. {
        let slot = cluster.slot_of(&storage.state_key(account));
        let master = cluster.master_of_slot(slot).expect("every slot is served");
        counts[master] += 1;
        accounts.push(account);
        if masters.iter().all(|&m| counts[m] >= per_master) {
            break;
        }
    }
    accounts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_many_spans_every_node() {
    let Some(cluster) = shared_cluster() else {
        return;
    };
    let storage = storage_on(&cluster, |config| config).await;
    assert!(storage.is_cluster());
    let accounts = accounts_on_every_master(&cluster, &storage, 4);
    let commits: Vec<Commit> = accounts
        .iter()
        .map(|&account| uniform_commit(i32::try_from(account).expect("small") * 10))
        .collect();
    let batch: Vec<(AccountId, &Commit)> = accounts.iter().copied().zip(&commits).collect();
    let results = storage.apply_many(&batch).await.expect("the batch");
    assert_eq!(results.len(), accounts.len());
    for (account, result) in accounts.iter().zip(&results) {
        assert!(result.is_ok(), "account {account}: {result:?}");
    }
    for &account in &accounts {
        let expected = i32::try_from(account).expect("small") * 10;
        assert_eq!(
            storage.get_state(account).await.expect("read"),
            Some(uniform_state(expected))
        );
    }

    // A batch that mixes stale and fresh commits across nodes: each is judged on its own.
    let mixed: Vec<Commit> = accounts
        .iter()
        .enumerate()
        .map(|(i, &account)| {
            let stored = i32::try_from(account).expect("small") * 10;
            uniform_commit(if i % 2 == 0 { stored - 1 } else { stored + 1 })
        })
        .collect();
    let batch: Vec<(AccountId, &Commit)> = accounts.iter().copied().zip(&mixed).collect();
    let results = storage.apply_many(&batch).await.expect("the batch");
    for (i, (account, result)) in accounts.iter().zip(&results).enumerate() {
        if i % 2 == 0 {
            assert!(
                matches!(result, Err(Error::Stale { .. })),
                "account {account}: {result:?}"
            );
        } else {
            assert!(result.is_ok(), "account {account}: {result:?}");
        }
    }
    assert!(storage.apply_many(&[]).await.expect("empty").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_are_loaded_on_the_node_that_lacks_them() {
    // A cluster of its own: flushing the script caches would race the other tests' commits.
    let Some(cluster) = tokio::task::block_in_place(RedisCluster::start) else {
        return;
    };
    let storage = storage_on(&cluster, |config| config).await;
    let accounts = accounts_on_every_master(&cluster, &storage, 2);
    for round in 1..=2 {
        // Every node's script cache is empty after this: the first commit on each answers
        // NOSCRIPT, and the script must be loaded on that node, not on a random one.
        for master in cluster.masters() {
            let reply = cluster.command(master, &["SCRIPT", "FLUSH"]);
            assert!(reply.is_ok(), "SCRIPT FLUSH: {reply:?}");
        }
        let commit = uniform_commit(round);
        if round == 1 {
            for &account in &accounts {
                storage.apply(account, &commit).await.expect("commit");
            }
        } else {
            let batch: Vec<(AccountId, &Commit)> =
                accounts.iter().map(|&account| (account, &commit)).collect();
            let results = storage.apply_many(&batch).await.expect("the batch");
            assert!(results.iter().all(Result::is_ok), "{results:?}");
        }
        for &account in &accounts {
            let state = storage.get_state(account).await.expect("read");
            assert_eq!(state, Some(uniform_state(round)));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_missing_replicas_is_ambiguous_but_written() {
    let Some(cluster) = shared_cluster() else {
        return;
    };
    // The shared cluster has no replicas: no write can reach one.
    let storage = storage_on(&cluster, |config| {
        config.with_replicas(1, Duration::from_millis(20))
    })
    .await;
    let error = storage
        .apply(5, &uniform_commit(3))
        .await
        .expect_err("no replica confirms");
    let Error::Ambiguous { source, .. } = &error else {
        panic!("expected Ambiguous, got {error:?}");
    };
    assert_eq!(
        source.downcast_ref::<ReplicationShortfall>(),
        Some(&ReplicationShortfall {
            wanted: 1,
            confirmed: 0
        })
    );
    // Ambiguous, not undone: the master has it.
    assert_eq!(
        storage.get_state(5).await.expect("read"),
        Some(uniform_state(3))
    );
    // A refused commit wrote nothing, so no replica has anything to confirm.
    let stale = storage.apply(5, &uniform_commit(2)).await;
    assert!(matches!(stale, Err(Error::Stale { .. })), "{stale:?}");
    // Deletes wait too.
    assert!(matches!(
        storage.delete(5).await,
        Err(Error::Ambiguous { .. })
    ));
    assert_eq!(storage.get_state(5).await.expect("read"), None);

    let zero = RedisStorage::with_config(
        RedisConfig::cluster(cluster.urls()).with_replicas(1, Duration::ZERO),
    )
    .await;
    assert!(matches!(zero, Err(Error::Config(_))), "{zero:?}");
}

/// What the fail-over run saw.
#[derive(Default)]
struct Run {
    stop: AtomicBool,
    acked_total: AtomicUsize,
    ambiguous: AtomicUsize,
    unavailable: AtomicUsize,
    /// Reads that saw less than what had been acknowledged before they started, or less than
    /// an earlier read: each one is a lost commit or a step back.
    violations: Mutex<Vec<String>>,
}

/// Polls `done` every few milliseconds; fails after `rounds` polls (a bound on liveness, not a
/// timing assertion: the condition is expected long before).
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
async fn master_killed_mid_run_loses_no_acknowledged_commit() {
    let Some(mut cluster) = tokio::task::block_in_place(|| {
        RedisCluster::start_with(3, true, Duration::from_millis(1000))
    }) else {
        return;
    };
    let config = RedisConfig {
        retries: 2,
        retry_delay: Duration::from_millis(10),
        response_timeout: Duration::from_secs(2),
        ..RedisConfig::cluster(cluster.urls()).with_replicas(1, Duration::from_millis(500))
    };
    let storage = RedisStorage::with_config(config).await.expect("connect");
    let accounts = accounts_on_every_master(&cluster, &storage, 8);
    let acked: Arc<Vec<AtomicI32>> = Arc::new(accounts.iter().map(|_| AtomicI32::new(0)).collect());
    let run = Arc::new(Run::default());

    // Writers: each owns every fourth account and commits 1, 2, 3, … to each in turn; after a
    // failure it sends the same commit again (equal values are accepted, so that is safe if
    // the failed one landed), and only an acknowledged one counts.
    const WRITERS: usize = 4;
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let (storage, accounts, acked, run) = (
            storage.clone(),
            accounts.clone(),
            Arc::clone(&acked),
            Arc::clone(&run),
        );
        tasks.push(tokio::spawn(async move {
            let mine: Vec<usize> = (writer..accounts.len()).step_by(WRITERS).collect();
            while !run.stop.load(Ordering::SeqCst) {
                for &i in &mine {
                    let next = acked[i].load(Ordering::SeqCst) + 1;
                    match storage.apply(accounts[i], &uniform_commit(next)).await {
                        Ok(()) => {
                            acked[i].store(next, Ordering::SeqCst);
                            run.acked_total.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(Error::Ambiguous { .. }) => {
                            run.ambiguous.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(Error::Unavailable { .. }) => {
                            run.unavailable.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err(error) => run
                            .violations
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(format!("account {}: commit {next}: {error}", accounts[i])),
                    }
                }
            }
        }));
    }
    // A reader: every read sees at least what was acknowledged before it started, and never
    // less than the read before it.
    {
        let (storage, accounts, acked, run) = (
            storage.clone(),
            accounts.clone(),
            Arc::clone(&acked),
            Arc::clone(&run),
        );
        tasks.push(tokio::spawn(async move {
            let mut seen = vec![0; accounts.len()];
            while !run.stop.load(Ordering::SeqCst) {
                for (i, &account) in accounts.iter().enumerate() {
                    let floor = acked[i].load(Ordering::SeqCst);
                    let Ok(state) = storage.get_state(account).await else {
                        continue;
                    };
                    let pts = state.map_or(0, |state| state.pts);
                    if pts < floor.max(seen[i]) {
                        run.violations
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(format!(
                                "account {account}: read {pts} after acknowledged {floor}, earlier read {}",
                                seen[i]
                            ));
                    }
                    seen[i] = seen[i].max(pts);
                }
            }
        }));
    }

    let acked_total = || run.acked_total.load(Ordering::SeqCst);
    wait_until("commits before the kill", 20_000, || acked_total() >= 200).await;
    let victim = cluster.masters()[0];
    let before_kill = acked_total();
    let killed_at = Instant::now();
    cluster.kill(victim);
    let promoted = tokio::task::block_in_place(|| cluster.wait_for_failover(victim));
    let failover = killed_at.elapsed();
    // The promoted replica has no replica of its own while the killed node is down, so its
    // writes cannot be acknowledged (WAIT finds nobody): they are Ambiguous until the killed
    // node comes back, learns it lost its slots and follows the new master.
    tokio::task::block_in_place(|| {
        cluster.restart(victim);
        cluster.wait_replica(victim);
        cluster.wait_ok();
    });
    let rejoined = killed_at.elapsed();
    // Now every account, on every shard, moves on again.
    let after_rejoin: Vec<i32> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    wait_until("every account to commit after the rejoin", 20_000, || {
        acked
            .iter()
            .zip(&after_rejoin)
            .all(|(now, then)| now.load(Ordering::SeqCst) > *then)
    })
    .await;
    run.stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.expect("task");
    }

    let violations = run
        .violations
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert!(violations.is_empty(), "{violations:#?}");
    // Nothing acknowledged was lost: the stored position is at least the last acknowledged.
    for (i, &account) in accounts.iter().enumerate() {
        let stored = storage
            .get_state(account)
            .await
            .expect("read")
            .map_or(0, |state| state.pts);
        let last = acked[i].load(Ordering::SeqCst);
        assert!(
            stored >= last,
            "account {account}: stored {stored}, acknowledged {last}"
        );
    }
    assert_ne!(promoted, victim);
    #[allow(clippy::print_stderr)] // The figures are for the person running the test.
    {
        eprintln!(
            "{} accounts; {} commits acknowledged ({before_kill} before the kill), {} ambiguous, \
             {} unavailable; fail-over {failover:?}, old master back as a replica {rejoined:?}",
            accounts.len(),
            acked_total(),
            run.ambiguous.load(Ordering::SeqCst),
            run.unavailable.load(Ordering::SeqCst),
        );
    }
}
