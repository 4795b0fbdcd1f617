//! A manager against the simulated Telegram server, over a faulty network, on the real clock.
//!
//! ```text
//! cargo run --release -p sync-runtime --example simulate -- [--events N] [--channels N]
//!     [--seed N] [--file PATH | --redis URL]
//! ```
//!
//! Pushes are dropped, duplicated, reordered and summarised as too-long; API calls fail and
//! answer FLOOD_WAIT; the handler is spread over shards by peer. At the end the oracle checks
//! that every update was delivered exactly once and in order, and that storage holds the
//! server's final state. The summary then accounts for every event the server made: delivered,
//! skipped because a too-long answer let the client jump over it, or an update Telegram only
//! delivers at most once (ephemeral ones, the unordered updates of `seq` containers, and
//! `pts_count == 0` updates, which cannot be told from their duplicates) that never arrived;
//! anything else would be lost, and the oracle would have failed.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::{HashMap, HashSet};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sync_core::{ChannelCommit, Commit, Sequence};
use sync_runtime::sim::{ApiFaults, Producer, Recorder, SimulatedApi};
use sync_runtime::{Manager, ManagerConfig, Stats};
use sync_storage::{AccessHashStorage, MemoryStorage, StateStorage};
use sync_testkit::{Delivery, Faults, Limits, Oracle, Server, TestUpdate, Workload};

const ACCOUNT: i64 = 777_000;

const USAGE: &str =
    "usage: simulate [--events N] [--channels N] [--seed N] [--file PATH | --redis URL]";

struct Options {
    events: u64,
    channels: usize,
    seed: u64,
    file: Option<String>,
    redis: Option<String>,
}

/// The options, or `None` when `--help` asked for the usage.
fn parse() -> Result<Option<Options>, String> {
    let mut options = Options {
        events: 150_000,
        channels: 200,
        seed: 2026,
        file: None,
        redis: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--events" => options.events = number(value()?)?,
            "--channels" => {
                options.channels = usize::try_from(number(value()?)?).map_err(|e| e.to_string())?
            }
            "--seed" => options.seed = number(value()?)?,
            "--file" => options.file = Some(value()?),
            "--redis" => options.redis = Some(value()?),
            "--help" | "-h" => return Ok(None),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(Some(options))
}

fn main() -> ExitCode {
    let options = match parse() {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start tokio: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        if let Some(url) = &options.redis {
            let config = sync_storage::RedisConfig::new(url.clone())
                .with_prefix(format!("simulate-{}", std::process::id()));
            let storage = sync_storage::RedisStorage::with_config(config)
                .await
                .map_err(|e| e.to_string())?;
            simulate(&options, Arc::new(storage), format!("Redis at {url}")).await
        } else if let Some(path) = &options.file {
            if std::path::Path::new(path).exists() {
                return Err(format!(
                    "{path} exists; give a new path (the demo starts a fresh account)"
                ));
            }
            let storage = sync_storage::FileStorage::open(path).map_err(|e| e.to_string())?;
            simulate(&options, Arc::new(storage), format!("file {path}")).await
        } else {
            simulate(&options, Arc::new(MemoryStorage::new()), "memory".into()).await
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("\nFAILED: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn simulate<S>(options: &Options, storage: Arc<S>, storage_name: String) -> Result<(), String>
where
    S: StateStorage + AccessHashStorage + 'static,
{
    let push_faults = Faults::moderate();
    let api_faults = ApiFaults {
        latency: Duration::from_millis(20),
        failure: 0.05,
        flood_wait_share: 0.3,
        flood_wait_max_seconds: 2,
    };
    let workload = Workload {
        channels: options.channels,
        ..Workload::default()
    };
    let server = Server::new(options.seed, workload, Limits::default());
    let mut oracle = Oracle::new(server.state(), server.channel_states().collect::<Vec<_>>());

    // The account's starting point, as a client that has loaded its dialogs.
    let channels = server
        .channel_states()
        .map(|(channel_id, pts)| ChannelCommit {
            channel_id,
            pts,
            reset: false,
        });
    let commit = Commit {
        state: Some(server.state()),
        channels: channels.collect(),
        ..Commit::default()
    };
    storage
        .apply(ACCOUNT, &commit)
        .await
        .map_err(|e| e.to_string())?;
    let hashes: Vec<_> = server.access_hashes().collect();
    storage
        .set_access_hashes(ACCOUNT, &hashes)
        .await
        .map_err(|e| e.to_string())?;

    println!(
        "simulating {} events over {} channels (seed {}), storage: {storage_name}",
        options.events, options.channels, options.seed
    );
    println!(
        "network: drop {:.0}%, duplicate {:.0}%, reorder {:.0}% (up to {:?}), too-long {:.1}%, channel too-long {:.0}%, silences of {}",
        push_faults.drop * 100.0,
        push_faults.duplicate * 100.0,
        push_faults.reorder * 100.0,
        push_faults.reorder_window,
        push_faults.too_long * 100.0,
        push_faults.channel_too_long * 100.0,
        push_faults.silence_length,
    );
    println!(
        "api: {:?} round trips, {:.0}% of calls fail ({:.0}% of those FLOOD_WAIT up to {} s)\n",
        api_faults.latency,
        api_faults.failure * 100.0,
        api_faults.flood_wait_share * 100.0,
        api_faults.flood_wait_max_seconds
    );

    let api = SimulatedApi::new(server, api_faults, options.seed);
    let recorder = Recorder::new();
    let config = ManagerConfig {
        jitter_seed: Some(options.seed),
        ..ManagerConfig::default()
    };
    let manager = Manager::with_config(
        ACCOUNT,
        api.clone(),
        Arc::clone(&storage),
        recorder.clone(),
        config,
    );
    let handle = manager.handle();
    let started = Instant::now();
    let run = tokio::spawn(manager.run());

    let progress = {
        let handle = handle.clone();
        let api = api.clone();
        let total = options.events;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let made = api.with_server(|s| s.events());
                println!(
                    "[{:>5.1}s] {}",
                    started.elapsed().as_secs_f64(),
                    progress_line(made, total, &handle.stats())
                );
            }
        })
    };

    let producer = Producer {
        events: options.events,
        interval: Duration::from_millis(1),
        burst: 10,
        latency: Duration::from_millis(10),
        faults: push_faults,
        seed: options.seed,
        batched: true,
    };
    let network = producer.run(&api, &handle, |_| {}).await;
    handle.caught_up().await.map_err(|e| e.to_string())?;
    let caught_up = started.elapsed();
    handle.shutdown();
    let summary = run
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    progress.abort();

    // The verdict: every update once, in order; storage where the server is.
    let log = recorder.take();
    let snapshot = storage.load(ACCOUNT).await.map_err(|e| e.to_string())?;
    let stored: HashMap<_, _> = snapshot
        .channels
        .iter()
        .map(|(&id, &pts)| (id, pts))
        .collect();
    api.with_server(|server| {
        log.iter()
            .try_for_each(|update| oracle.deliver(server, update))?;
        oracle.finish(server, snapshot.state, |id| stored.get(&id).copied())
    })?;

    let s = summary.stats;
    let (e, r) = (s.engine, s.runtime);
    let fate = api.with_server(|server| Fate::of(server, &log));
    let calls = api.report();
    println!(
        "\nall checks passed: every update delivered exactly once and in order; storage holds the server's final state"
    );
    println!("  events made by the server        {:>10}", fate.made);
    println!(
        "    delivered to the handler       {:>10}  ({} deliveries: {} repeat unnumbered or pts_count 0 updates)",
        fate.delivered,
        log.len(),
        fate.repeats
    );
    println!(
        "    skipped after too-long answers {:>10}  (the server let the client skip {}; {} of those had arrived already)",
        fate.skipped,
        fate.skipped + fate.skipped_delivered,
        fate.skipped_delivered
    );
    println!("    at most once, never arrived:");
    println!("      ephemeral                    {:>10}", fate.ephemeral);
    println!(
        "      unordered, of seq containers {:>10}",
        fate.seq_unordered
    );
    println!("      pts_count 0                  {:>10}", fate.zero_count);
    println!(
        "    lost                           {:>10}  (numbered, never delivered, not skipped: the oracle's count)",
        fate.lost
    );
    println!("  {}", fate.equation());
    if !fate.adds_up() {
        return Err(format!(
            "the accounting does not add up: {}",
            fate.equation()
        ));
    }
    println!(
        "  pushes sent                      {:>10}",
        network.traffic.pushes
    );
    println!(
        "    lost by the network            {:>10}",
        network.traffic.lost
    );
    println!(
        "    duplicated by the network      {:>10}",
        network.traffic.duplicated
    );
    println!(
        "    replaced by too-long           {:>10}",
        network.traffic.too_long
    );
    println!(
        "    dropped at a full intake       {:>10}",
        r.pushes_dropped
    );
    println!(
        "  duplicates dropped               {:>10}",
        e.duplicates_dropped
    );
    println!("  gaps seen                        {:>10}", e.gaps_detected);
    println!(
        "    filled by waiting              {:>10}",
        e.gaps_filled_by_wait
    );
    println!(
        "    resolved by a difference       {:>10}",
        e.gaps_resolved_by_difference
    );
    println!("  too-long handled                 {:>10}", e.too_long);
    println!(
        "  getDifference calls              {:>10}",
        e.difference_requests
    );
    println!(
        "  getChannelDifference calls       {:>10}",
        e.channel_difference_requests
    );
    println!(
        "  calls failed and retried         {:>10}  ({} FLOOD_WAIT)",
        r.requests_retried + r.flood_waits,
        r.flood_waits
    );
    println!("  API calls answered               {:>10}", calls.calls);
    println!(
        "  commit writes to storage         {:>10}  ({} engine commits, {} retried, {} stale)",
        r.commits_written, r.engine_commits_persisted, r.commit_retries, r.commits_stale
    );
    println!(
        "  batches handled and acknowledged {:>10}",
        r.batches_acknowledged
    );
    let secs = caught_up.as_secs_f64();
    println!("  caught up after                  {:>9.1}s", secs);
    println!(
        "  throughput                       {:>10.0} updates/s",
        log.len() as f64 / secs.max(f64::EPSILON)
    );
    Ok(())
}

/// What became of each event the server made. Every event is in exactly one of the counted
/// categories, so they add up to `made`.
struct Fate {
    made: u64,
    /// Events the handler received (at least once).
    delivered: u64,
    /// Deliveries beyond an event's first.
    repeats: u64,
    /// Durable events never delivered that a too-long answer let the client skip.
    skipped: u64,
    /// Events the server's too-long answers covered that had been delivered before.
    skipped_delivered: u64,
    /// Ephemeral updates never delivered (at most once).
    ephemeral: u64,
    /// Unordered updates of `seq` containers never delivered (at most once).
    seq_unordered: u64,
    /// `pts_count == 0` updates never delivered (not told from duplicates: at most once).
    zero_count: u64,
    /// Durable events never delivered and not skipped: what the oracle counts as missing.
    lost: u64,
}

impl Fate {
    fn of(server: &Server, log: &[TestUpdate]) -> Self {
        let mut deliveries: HashMap<u64, u64> = HashMap::new();
        for update in log {
            *deliveries.entry(update.id).or_default() += 1;
        }
        let skipped: HashSet<u64> = server.skipped().iter().copied().collect();
        let zero_count: HashSet<u64> = server
            .durable_events()
            .filter(|event| {
                matches!(
                    event.sequence,
                    Sequence::Common { pts_count: 0, .. } | Sequence::Channel { pts_count: 0, .. }
                )
            })
            .map(|event| event.id)
            .collect();
        let mut fate = Self {
            made: server.events(),
            delivered: 0,
            repeats: 0,
            skipped: 0,
            skipped_delivered: skipped
                .iter()
                .filter(|id| deliveries.contains_key(id))
                .count() as u64,
            ephemeral: 0,
            seq_unordered: 0,
            zero_count: 0,
            lost: 0,
        };
        for id in 1..=fate.made {
            let count = deliveries.get(&id).copied().unwrap_or(0);
            if count > 0 {
                fate.delivered += 1;
                fate.repeats += count - 1;
                continue;
            }
            match server.delivery(id) {
                Some(Delivery::Durable) if skipped.contains(&id) => fate.skipped += 1,
                Some(Delivery::Durable) if zero_count.contains(&id) => fate.zero_count += 1,
                Some(Delivery::Durable) | None => fate.lost += 1,
                Some(Delivery::SeqOrdered { .. }) => fate.seq_unordered += 1,
                Some(Delivery::Ephemeral) => fate.ephemeral += 1,
            }
        }
        fate
    }

    fn accounted(&self) -> u64 {
        self.delivered
            + self.skipped
            + self.ephemeral
            + self.seq_unordered
            + self.zero_count
            + self.lost
    }

    fn adds_up(&self) -> bool {
        self.accounted() == self.made
    }

    fn equation(&self) -> String {
        format!(
            "{} made {} {} delivered + {} skipped + {} ephemeral + {} seq-unordered + {} pts_count-0 + {} lost",
            self.made,
            if self.adds_up() { "=" } else { "!=" },
            self.delivered,
            self.skipped,
            self.ephemeral,
            self.seq_unordered,
            self.zero_count,
            self.lost
        )
    }
}

fn progress_line(made: u64, total: u64, stats: &Stats) -> String {
    let (e, r) = (stats.engine, stats.runtime);
    format!(
        "events {made:>7}/{total}  delivered {:>7}  gaps {:>5} (wait {:>5}, diff {:>4})  differences {:>4} + {:>4} channel  retries {:>3}  flood waits {:>3}  commit writes {:>6}  buffered {:>4}",
        e.updates_delivered,
        e.gaps_detected,
        e.gaps_filled_by_wait,
        e.gaps_resolved_by_difference,
        e.difference_requests,
        e.channel_difference_requests,
        r.requests_retried,
        r.flood_waits,
        r.commits_written,
        e.buffered_now,
    )
}
