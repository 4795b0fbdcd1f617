//! Many accounts on one Redis: N `Manager`s (one per account, each with its own simulated
//! server and no faults, all handing updates to one counting no-op handler) share one
//! `RedisStorage` connection to a private redis-server (unix socket in a temp dir, no
//! persistence). For each N it reports
//!
//! - start-up: from spawning the N managers to all of them loaded from Redis, caught up and
//!   idle;
//! - live: one network reader pushes to every account in turn for a fixed time; updates
//!   handled per second, storage writes per second (`RuntimeStats::commits_written`) and the
//!   engine commits folded into them (`engine_commits_persisted`), with the server's own view
//!   (`INFO commandstats`: `EVALSHA` calls and µs per call);
//! - the ceiling, in the same run on the same server: the commit script (a state and one
//!   channel per commit, as the managers write) pipelined straight through the `redis` crate
//!   over the same N accounts, and a one-`HSET` script the same way.
//!
//! `cargo bench -p sync-benches --bench fleet_redis` (about 30 s). `FLEET_ACCOUNTS` (default
//! `1000,10000`), `FLEET_SECONDS` (the live phase, default 3), `FLEET_CEILING_SECONDS`
//! (default 1), `FLEET_SHARDS` (dispatch shards per manager, default 1), `FLEET_POOL` (when
//! set, the shards of one `DispatchPool` all managers share instead); `REDIS_SERVER` or
//! `PATH` for redis-server (the bench prints a note and does nothing without it). Figures in
//! `docs/PERFORMANCE.md`, "Many accounts on one Redis".
#![allow(
    missing_docs,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::disallowed_methods
)]

mod common;

use common::{Count, env_u64};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sync_core::{ChannelCommit, Commit};
use sync_runtime::sim::{ApiFaults, SimulatedApi};
use sync_runtime::{DispatchPool, Manager, ManagerConfig, ManagerHandle, Summary};
use sync_storage::{AccessHashStorage, RedisStorage};
use sync_testkit::redis_server::RedisServer;
use sync_testkit::{Limits, Server, TestEntities, TestUpdate, Workload};

/// The commit script the storage runs, for the ceiling.
const COMMIT_LUA: &str = include_str!("../../crates/sync-storage/src/redis/commit.lua");
/// The floor: one `HSET`, no checks.
const TRIVIAL_LUA: &str = "return redis.call('HSET', KEYS[1], 'pts', ARGV[1])";
/// `EVALSHA`s per pipeline in the ceiling runs (the storage's `apply_many` sends what the
/// callers give it; 100 is the size of `benches/storage.rs`).
const PIPELINE: usize = 100;
/// Pipelines in flight at once on the ceiling's connection.
const IN_FLIGHT: usize = 4;
/// Pushes the reader lets queue per account before it skips the account for a round.
const QUEUE_PER_ACCOUNT: usize = 8;

fn accounts_to_run() -> Vec<usize> {
    let list = std::env::var("FLEET_ACCOUNTS").unwrap_or_else(|_| "1000,10000".to_owned());
    list.split(',')
        .filter_map(|n| n.trim().replace('_', "").parse().ok())
        .filter(|&n| n > 0)
        .collect()
}

fn workload() -> Workload {
    // A user account's common-box traffic and a few channels; no `seq`-only or ephemeral
    // updates, so that every update moves a sequence the storage keeps.
    Workload {
        channels: 4,
        seq_updates: 0,
        ephemeral: 0,
        ..Workload::default()
    }
}

fn config() -> ManagerConfig {
    ManagerConfig {
        shards: env_u64("FLEET_SHARDS", 1) as usize,
        intake_capacity: 1_024,
        shard_capacity: 256,
        jitter_seed: Some(1),
        ..ManagerConfig::default()
    }
}

/// Account ids of the run: far from the ceiling's, so the two never share keys.
fn account_id(i: usize) -> i64 {
    1_000_000 + i as i64
}

/// One account: its simulated server and its manager's handle.
struct Account {
    api: SimulatedApi,
    handle: ManagerHandle<TestUpdate, TestEntities>,
}

/// Writes every account's starting point (the state, the channels at their pts, the access
/// hashes) as the client would have left it, pipelined.
async fn store_starting_points(storage: &RedisStorage, apis: &[SimulatedApi]) {
    let commits: Vec<Commit> = apis
        .iter()
        .map(|api| {
            api.with_server(|s| Commit {
                state: Some(s.state()),
                channels: s
                    .channel_states()
                    .map(|(channel_id, pts)| ChannelCommit {
                        channel_id,
                        pts,
                        reset: false,
                    })
                    .collect(),
                ..Commit::default()
            })
        })
        .collect();
    for (chunk, commits) in commits.chunks(1_000).enumerate() {
        let batch: Vec<_> = commits
            .iter()
            .enumerate()
            .map(|(k, commit)| (account_id(chunk * 1_000 + k), commit))
            .collect();
        for result in storage.apply_many(&batch).await.expect("pipeline") {
            result.expect("starting point");
        }
    }
    let mut writes = tokio::task::JoinSet::new();
    for (i, api) in apis.iter().enumerate() {
        let hashes: Vec<(i64, i64)> = api.with_server(|s| s.access_hashes().collect());
        let storage = storage.clone();
        writes.spawn(async move {
            storage
                .set_access_hashes(account_id(i), &hashes)
                .await
                .expect("access hashes");
        });
    }
    while let Some(done) = writes.join_next().await {
        done.expect("access hash task");
    }
}

/// Waits until every manager has caught up and is idle, asking them all at once.
async fn all_caught_up(accounts: &[Account]) {
    let mut waits = tokio::task::JoinSet::new();
    for account in accounts {
        let handle = account.handle.clone();
        waits.spawn(async move { handle.caught_up().await });
    }
    while let Some(done) = waits.join_next().await {
        done.expect("caught_up task").expect("caught up");
    }
}

/// Counters summed over the fleet.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    writes: u64,
    engine_commits: u64,
    dropped: u64,
    stale: u64,
    failed: u64,
    retries: u64,
}

fn totals(accounts: &[Account]) -> Totals {
    let mut t = Totals::default();
    for account in accounts {
        let r = account.handle.stats().runtime;
        t.writes += r.commits_written;
        t.engine_commits += r.engine_commits_persisted;
        t.dropped += r.pushes_dropped;
        t.stale += r.commits_stale;
        t.failed += r.commits_failed;
        t.retries += r.commit_retries;
    }
    t
}

/// `EVALSHA` calls and µs per call since the last `CONFIG RESETSTAT`.
async fn evalsha_stats(connection: &mut redis::aio::MultiplexedConnection) -> (u64, f64) {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(connection)
        .await
        .expect("INFO");
    let Some(line) = info.lines().find(|l| l.starts_with("cmdstat_evalsha:")) else {
        return (0, 0.0);
    };
    let field = |name: &str| -> Option<f64> {
        line.split([':', ','])
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
    };
    (
        field("calls").unwrap_or(0.0) as u64,
        field("usec_per_call").unwrap_or(0.0),
    )
}

async fn reset_stats(connection: &mut redis::aio::MultiplexedConnection) {
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .exec_async(connection)
        .await
        .expect("CONFIG RESETSTAT");
}

/// One fleet of `n` accounts: start-up, then the live phase.
async fn fleet(url: &str, n: usize, seconds: f64) {
    let storage = RedisStorage::connect(url).await.expect("connect");
    let client = redis::Client::open(url).expect("client");
    let mut admin = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");

    let limits = Limits {
        difference_too_long_after: usize::MAX,
        ..Limits::default()
    };
    let apis: Vec<SimulatedApi> = (0..n)
        .map(|i| {
            let server = Server::new(i as u64 + 1, workload(), limits.clone());
            SimulatedApi::new(server, ApiFaults::none(Duration::ZERO), i as u64 + 1)
        })
        .collect();
    store_starting_points(&storage, &apis).await;

    // Start-up: every manager loads its account from Redis and catches up (nothing happened
    // while it was away, so the difference is empty).
    let handled = Arc::new(Count::default());
    let started = Instant::now();
    let mut runs = tokio::task::JoinSet::new();
    let mut accounts = Vec::with_capacity(n);
    let pool_shards = env_u64("FLEET_POOL", 0) as usize;
    let pool =
        (pool_shards > 0).then(|| DispatchPool::new(pool_shards, 4_096).expect("dispatch pool"));
    for (i, api) in apis.into_iter().enumerate() {
        let manager = Manager::with_config(
            account_id(i),
            api.clone(),
            storage.clone(),
            Arc::clone(&handled),
            config(),
        );
        let manager = match &pool {
            Some(pool) => manager.with_pool(pool),
            None => manager,
        };
        accounts.push(Account {
            api,
            handle: manager.handle(),
        });
        runs.spawn(manager.run());
    }
    all_caught_up(&accounts).await;
    let start_up = started.elapsed().as_secs_f64();
    if std::env::var("FLEET_DEBUG").is_ok() {
        println!(
            "after start-up: {:?} {:#?}",
            totals(&accounts),
            accounts[n - 1].handle.stats()
        );
    }

    // Live: one reader pushes to each account in turn, skipping an account whose intake
    // already holds QUEUE_PER_ACCOUNT pushes, for `seconds`; then every account drains.
    let before = totals(&accounts);
    let handled_before = handled.total();
    reset_stats(&mut admin).await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut pushes = 0u64;
    'push: loop {
        for (k, account) in accounts.iter().enumerate() {
            if account.handle.queued() < QUEUE_PER_ACCOUNT {
                let push = account.api.with_server(Server::produce);
                account.handle.push(push).expect("the manager stopped");
                pushes += 1;
            }
            if k % 64 == 63 {
                tokio::task::yield_now().await;
                if Instant::now() >= deadline {
                    break 'push;
                }
            }
        }
        tokio::task::yield_now().await;
        if Instant::now() >= deadline {
            break;
        }
    }
    let pushed_for = started.elapsed().as_secs_f64();
    // Let the managers take what is queued before asking them to catch up (the request would
    // otherwise overtake the queued pushes, and a difference deliver them).
    while accounts.iter().any(|a| a.handle.queued() > 0) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    all_caught_up(&accounts).await;
    let live = started.elapsed().as_secs_f64();
    let (calls, usec) = evalsha_stats(&mut admin).await;
    let after = totals(&accounts);
    let updates = handled.total() - handled_before;
    let writes = after.writes - before.writes;
    let engine_commits = after.engine_commits - before.engine_commits;

    for account in &accounts {
        account.handle.shutdown();
    }
    let mut abandoned = 0;
    while let Some(done) = runs.join_next().await {
        let summary: Summary = done.expect("manager task").expect("manager run");
        abandoned += summary.abandoned;
    }
    if let Some(pool) = &pool {
        pool.shutdown();
    }
    let dispatch = match pool {
        Some(_) => format!("one shared pool of {pool_shards} shards"),
        None => format!("{} shard(s) per manager", config().shards),
    };
    println!("fleet_redis/{n} accounts: dispatch through {dispatch}");

    println!(
        "fleet_redis/{n} accounts: start-up {start_up:.2} s ({:.0} accounts/s)",
        n as f64 / start_up
    );
    println!(
        "fleet_redis/{n} accounts: live {live:.2} s ({pushed_for:.2} s pushing, {pushes} pushes): \
         {:.0} updates/s handled, {:.0} storage writes/s ({:.0} engine commits/s folded into them, \
         {:.2} per write); server: {calls} EVALSHA, {usec:.2} us per call, {:.0} % busy in them",
        updates as f64 / live,
        writes as f64 / live,
        engine_commits as f64 / live,
        engine_commits as f64 / writes.max(1) as f64,
        calls as f64 * usec / 1e6 / live * 100.0,
    );
    if after.dropped > before.dropped
        || after.stale + after.failed + after.retries > 0
        || abandoned > 0
    {
        println!(
            "fleet_redis/{n} accounts: note: {} pushes dropped, {} stale and {} failed commits, \
             {} retried writes, {abandoned} updates abandoned",
            after.dropped - before.dropped,
            after.stale,
            after.failed,
            after.retries,
        );
    }

    ceiling(&client, n, seconds_env("FLEET_CEILING_SECONDS", 1.0)).await;
}

fn seconds_env(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&s: &f64| s > 0.0)
        .unwrap_or(default)
}

/// The commit script's ARGV for a state and one channel (the layout at the top of
/// `commit.lua`).
fn commit_args(v: i64, channel: i64) -> [i64; 11] {
    [
        1,
        0,
        v,
        v / 4,
        1_700_000_000 + v,
        v / 2,
        0,
        1,
        channel,
        v,
        0,
    ]
}

/// The ceiling: the commit script (and the one-`HSET` script) pipelined straight through the
/// `redis` crate over `n` accounts of its own, IN_FLIGHT pipelines of PIPELINE at a time, for
/// `seconds` each.
async fn ceiling(client: &redis::Client, n: usize, seconds: f64) {
    let connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    for (name, source) in [
        ("commit script", COMMIT_LUA),
        ("one-HSET script", TRIVIAL_LUA),
    ] {
        let script = redis::Script::new(source);
        let mut c = connection.clone();
        script.load_async(&mut c).await.expect("SCRIPT LOAD");
        reset_stats(&mut c).await;
        let hash = script.get_hash().to_owned();
        let trivial = source == TRIVIAL_LUA;
        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(seconds);
        let mut tasks = tokio::task::JoinSet::new();
        for lane in 0..IN_FLIGHT {
            let mut c = connection.clone();
            let hash = hash.clone();
            tasks.spawn(async move {
                let mut sent = 0u64;
                // Each lane walks its own share of the accounts, round after round; v grows
                // per round, so every commit moves its account forward.
                let (first, end) = (
                    lane * n / IN_FLIGHT,
                    ((lane + 1) * n / IN_FLIGHT).max(lane * n / IN_FLIGHT + 1),
                );
                let mut next = first;
                let mut v = 1i64;
                while Instant::now() < deadline {
                    let mut pipe = redis::pipe();
                    for _ in 0..PIPELINE {
                        let account = 2_000_000 + next as i64;
                        pipe.cmd("EVALSHA").arg(&hash);
                        if trivial {
                            pipe.arg(1)
                                .arg(format!("ceiling:{{{account}}}:state"))
                                .arg(v);
                        } else {
                            pipe.arg(2)
                                .arg(format!("ceiling:{{{account}}}:state"))
                                .arg(format!("ceiling:{{{account}}}:channels"))
                                .arg(&commit_args(v, 1 + (v % 4))[..]);
                        }
                        pipe.ignore();
                        next += 1;
                        if next == end {
                            next = first;
                            v += 1;
                        }
                    }
                    pipe.exec_async(&mut c).await.expect("pipeline");
                    sent += PIPELINE as u64;
                }
                sent
            });
        }
        let mut sent = 0;
        while let Some(done) = tasks.join_next().await {
            sent += done.expect("ceiling task");
        }
        let elapsed = started.elapsed().as_secs_f64();
        let (calls, usec) = evalsha_stats(&mut c).await;
        println!(
            "fleet_redis/{n} accounts: ceiling, {name} pipelined ({IN_FLIGHT} x {PIPELINE} in \
             flight): {:.0} commits/s; server: {calls} EVALSHA, {usec:.2} us per call",
            sent as f64 / elapsed
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument that names nothing here skips it.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter.is_some_and(|f| !"fleet_redis".contains(&f)) {
        return;
    }
    let Some(server) = RedisServer::start() else {
        eprintln!("note: redis-server not found (REDIS_SERVER or PATH): skipping fleet_redis");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let seconds = seconds_env("FLEET_SECONDS", 3.0);
    for n in accounts_to_run() {
        runtime.block_on(async {
            let mut connection = redis::Client::open(server.url())
                .expect("client")
                .get_multiplexed_async_connection()
                .await
                .expect("connect");
            redis::cmd("FLUSHALL")
                .exec_async(&mut connection)
                .await
                .expect("FLUSHALL");
        });
        // The reader (the push loop) runs on this thread, beside the runtime's two workers,
        // as a network reader thread would.
        runtime.block_on(fleet(&server.url(), n, seconds));
    }
}
