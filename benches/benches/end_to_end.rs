//! The whole runtime against the simulated server, as fast as it goes: a `Manager` on tokio,
//! in-memory storage, dispatch to a trivial handler through the sharded fan-out.
//!
//! `cargo bench -p sync-benches --bench end_to_end` (`E2E_EVENTS`, `E2E_RUNS` to change the
//! size and the number of runs; prints min / median / max).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::disallowed_methods
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sync_runtime::sim::{ApiFaults, SimulatedApi};
use sync_runtime::{BoxError, Config, Handler, Manager};
use sync_storage::MemoryStorage;
use sync_testkit::{Limits, Server, TestEntities, TestUpdate, Workload};

#[derive(Default)]
struct Count(AtomicU64);

impl Handler<TestUpdate, TestEntities> for Count {
    async fn handle(&self, _: TestUpdate, _: Arc<[TestEntities]>) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn workload() -> Workload {
    // Common-box traffic plus channels: what a busy user account sees.
    Workload {
        channels: 100,
        seq_updates: 0,
        ephemeral: 0,
        ..Workload::default()
    }
}

fn config() -> Config {
    Config {
        engine: sync_core::Config {
            pts_total_limit: None,
            ..sync_core::Config::bot()
        },
        intake_capacity: 65_536,
        ..Config::default()
    }
}

/// Storage as the client left it: the state and channels it starts from, and every channel's
/// access hash (as its dialogs would have given them).
async fn stored(
    api: &SimulatedApi,
    account: i64,
    state: sync_core::State,
    channels: &[(i64, i32)],
) -> Arc<MemoryStorage> {
    let storage = Arc::new(MemoryStorage::new());
    let channels = channels
        .iter()
        .map(|&(channel_id, pts)| sync_core::ChannelCommit {
            channel_id,
            pts,
            reset: false,
        })
        .collect();
    let commit = sync_core::Commit {
        state: Some(state),
        channels,
        ..sync_core::Commit::default()
    };
    sync_storage::StateStorage::apply(&*storage, account, &commit)
        .await
        .unwrap();
    for (channel_id, hash) in api.with_server(|s| s.access_hashes().collect::<Vec<_>>()) {
        sync_storage::AccessHashStorage::set_access_hash(&*storage, account, channel_id, hash)
            .await
            .unwrap();
    }
    storage
}

/// A backlog of `events` on the server; the client starts behind it and catches up by
/// differences alone. Returns (updates handled, seconds).
async fn catch_up(events: u64) -> (u64, f64) {
    let limits = Limits {
        difference_limit: 10_000,
        difference_too_long_after: usize::MAX,
        ..Limits::default()
    };
    let mut server = Server::new(7, workload(), limits);
    let start_state = server.state();
    let channels: Vec<(i64, i32)> = server.channel_states().collect();
    while server.events() < events {
        let push = server.produce();
        server.push_lost(&push); // nothing was pushed: the difference must mention every channel
    }
    let api = SimulatedApi::new(server, ApiFaults::none(Duration::ZERO), 1);
    let account = 1;
    let storage = stored(&api, account, start_state, &channels).await;
    let handled = Arc::new(Count::default());
    let started = Instant::now();
    let manager = Manager::with_config(account, api, storage, Arc::clone(&handled), config());
    let handle = manager.handle();
    let run = tokio::spawn(manager.run());
    handle.caught_up().await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    if std::env::var("E2E_DEBUG").is_ok() {
        println!("{:#?}", handle.stats());
    }
    handle.shutdown();
    run.await.unwrap().unwrap();
    (handled.0.load(Ordering::Relaxed), seconds)
}

/// `events` pushed in order through `ManagerHandle::handle` as fast as the intake takes them.
async fn live(events: u64) -> (u64, f64) {
    // The server makes each event as it is pushed, so differences (the manager's recovery when
    // its intake overflows) always match what was pushed.
    let limits = Limits {
        difference_too_long_after: usize::MAX,
        ..Limits::default()
    };
    let server = Server::new(11, workload(), limits);
    let start_state = server.state();
    let api = SimulatedApi::new(server, ApiFaults::none(Duration::ZERO), 1);
    let account = 1;
    let channels: Vec<(i64, i32)> = (1..=workload().channels as i64)
        .map(|channel_id| (channel_id, 1))
        .collect();
    let storage = stored(&api, account, start_state, &channels).await;
    let handled = Arc::new(Count::default());
    let manager = Manager::with_config(
        account,
        api.clone(),
        storage,
        Arc::clone(&handled),
        config(),
    );
    let handle = manager.handle();
    let run = tokio::spawn(manager.run());
    handle.caught_up().await.unwrap();
    let started = Instant::now();
    let mut sent = 0u64;
    while let Some(push) = api.with_server(|s| (s.events() < events).then(|| s.produce())) {
        while handle.handle(push.clone()).is_err() {
            // The intake is full (the push was counted as dropped and will also come back by
            // difference): give the manager the thread, then hand it over again.
            tokio::task::yield_now().await;
        }
        sent += 1;
        // Hand the thread over now and then, as a network reader would between reads.
        if sent.is_multiple_of(256) {
            tokio::task::yield_now().await;
        }
    }
    handle.caught_up().await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    if std::env::var("E2E_DEBUG").is_ok() {
        println!("{:#?}", handle.stats());
    }
    handle.shutdown();
    run.await.unwrap().unwrap();
    (handled.0.load(Ordering::Relaxed), seconds)
}

fn report(name: &str, runs: &mut [(u64, f64)]) {
    let mut rates: Vec<f64> = runs.iter().map(|&(n, s)| n as f64 / s).collect();
    rates.sort_by(f64::total_cmp);
    let (min, median, max) = (rates[0], rates[rates.len() / 2], rates[rates.len() - 1]);
    println!(
        "{name}: {} updates handled; updates/s min {:.0} median {:.0} max {:.0}; seconds median {:.3}",
        runs[0].0,
        min,
        median,
        max,
        runs.iter().map(|r| r.1).fold(Vec::new(), |mut v, s| {
            v.push(s);
            v
        })[runs.len() / 2]
    );
}

fn main() {
    // `cargo test --benches` runs benches once in test mode: keep that quick.
    let quick = std::env::args().any(|a| a == "--test");
    let events = if quick {
        2_000
    } else {
        env("E2E_EVENTS", 1_000_000)
    };
    let runs = if quick { 1 } else { env("E2E_RUNS", 3) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut backlog: Vec<(u64, f64)> = (0..runs)
        .map(|_| runtime.block_on(catch_up(events)))
        .collect();
    report(
        &format!("catch up a backlog of {events} events by getDifference"),
        &mut backlog,
    );
    let mut pushed: Vec<(u64, f64)> = (0..runs).map(|_| runtime.block_on(live(events))).collect();
    report(&format!("{events} events pushed in order"), &mut pushed);
}
