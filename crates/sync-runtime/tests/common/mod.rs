//! Shared test code: a simulated account wired to a manager, and the oracle's verdicts.
#![allow(dead_code, unreachable_pub, unused_macros, unused_imports)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sync_core::{ChannelId, Commit, State};
use sync_runtime::sim::{ApiFaults, Producer, Recorder, SimulatedApi};
use sync_runtime::{DispatchPool, Manager, ManagerConfig, ManagerHandle, RunError, Summary};
use sync_storage::{AccessHashStorage, StateStorage};
use sync_testkit::{Faults, Limits, Oracle, Server, TestEntities, TestUpdate, Workload};
use tokio::task::JoinHandle;

pub const ACCOUNT: i64 = 4_242;

/// A number from the environment, for opt-in longer runs.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A simulated account: the server behind its API, the recording handler and the oracle.
pub struct Sim {
    pub api: SimulatedApi,
    pub recorder: Recorder,
    pub oracle: Oracle,
    pub seed: u64,
}

impl Sim {
    pub fn new(seed: u64, channels: usize, faults: ApiFaults) -> Self {
        let workload = Workload {
            channels,
            ..Workload::default()
        };
        let server = Server::new(seed, workload, Limits::default());
        let state = server.state();
        let oracle = Oracle::new(state, server.channel_states().collect::<Vec<_>>());
        Self {
            api: SimulatedApi::new(server, faults, seed),
            recorder: Recorder::new(),
            oracle,
            seed,
        }
    }

    /// Writes the account's starting point to storage, as a client that loaded its dialogs.
    pub async fn seed<S: StateStorage + AccessHashStorage>(&self, storage: &S) {
        seed_account(&self.api, storage, ACCOUNT).await;
    }
}

/// Writes the starting point of the server behind `api` to storage for `account`.
pub async fn seed_account<S: StateStorage + AccessHashStorage>(
    api: &SimulatedApi,
    storage: &S,
    account: i64,
) {
    {
        let (state, channels, hashes) = api.with_server(|s| {
            let channels = s
                .channel_states()
                .map(|(channel_id, pts)| sync_core::ChannelCommit {
                    channel_id,
                    pts,
                    reset: false,
                });
            (
                s.state(),
                channels.collect(),
                s.access_hashes().collect::<Vec<_>>(),
            )
        });
        let commit = Commit {
            state: Some(state),
            channels,
            ..Commit::default()
        };
        storage.apply(account, &commit).await.expect("seed state");
        storage
            .set_access_hashes(account, &hashes)
            .await
            .expect("seed hashes");
    }
}

impl Sim {
    /// Starts a manager on `storage`.
    pub fn start<S>(
        &self,
        storage: &Arc<S>,
        config: ManagerConfig,
    ) -> (
        ManagerHandle<TestUpdate, TestEntities>,
        JoinHandle<Result<Summary, RunError>>,
    )
    where
        S: StateStorage + AccessHashStorage + 'static,
    {
        self.start_on(storage, config, None)
    }

    /// Starts a manager on `storage`, dispatching through `pool` when one is given.
    pub fn start_on<S>(
        &self,
        storage: &Arc<S>,
        config: ManagerConfig,
        pool: Option<&DispatchPool>,
    ) -> (
        ManagerHandle<TestUpdate, TestEntities>,
        JoinHandle<Result<Summary, RunError>>,
    )
    where
        S: StateStorage + AccessHashStorage + 'static,
    {
        let mut manager = Manager::with_config(
            ACCOUNT,
            self.api.clone(),
            Arc::clone(storage),
            self.recorder.clone(),
            config,
        );
        if let Some(pool) = pool {
            manager = manager.with_pool(pool);
        }
        let handle = manager.handle();
        (handle, tokio::spawn(manager.run()))
    }

    /// Starts a producer of `events` events (in total, over restarts) for `handle`.
    pub fn produce(
        &self,
        handle: &ManagerHandle<TestUpdate, TestEntities>,
        producer: Producer,
    ) -> JoinHandle<()> {
        let api = self.api.clone();
        let handle = handle.clone();
        tokio::spawn(async move {
            producer.run(&api, &handle, |_| {}).await;
        })
    }

    /// Feeds what the handler logged to the oracle, in the order it was handled.
    pub fn judge_deliveries(&mut self) -> Result<(), String> {
        let log = self.recorder.take();
        let oracle = &mut self.oracle;
        self.api.with_server(|server| {
            log.iter()
                .try_for_each(|update| oracle.deliver(server, update))
        })
    }

    /// A crash: what was handled is judged, and the oracle learns what storage kept.
    pub async fn crashed<S: StateStorage>(&mut self, storage: &S) -> Result<(), String> {
        self.judge_deliveries()?;
        let snapshot = storage.load(ACCOUNT).await.map_err(|e| e.to_string())?;
        let state = snapshot.state.ok_or("nothing stored")?;
        let channels: HashMap<ChannelId, i32> = snapshot.channels.into_iter().collect();
        self.oracle.crash(state, &channels);
        self.api.with_server(Server::client_restarted);
        Ok(())
    }

    /// The final verdict against what storage holds.
    pub async fn finish<S: StateStorage>(&mut self, storage: &S) -> Result<(), String> {
        self.judge_deliveries()?;
        let snapshot = storage.load(ACCOUNT).await.map_err(|e| e.to_string())?;
        let oracle = &mut self.oracle;
        self.api.with_server(|server| {
            oracle.finish(server, snapshot.state, |id| {
                snapshot.channels.get(&id).copied()
            })
        })
    }
}

/// Storage time on tokio's (paused) clock, so that leases and heartbeats expire as the test's
/// time passes.
#[derive(Debug)]
pub struct TokioClock(pub tokio::time::Instant);

impl sync_storage::lease::Clock for TokioClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// A configuration for simulated runs: repeatable jitter, and on the real clock (`fast`)
/// short waits so that a run takes moments.
pub fn config(seed: u64, fast: bool) -> ManagerConfig {
    let mut config = ManagerConfig {
        jitter_seed: Some(seed),
        shards: 4,
        ..ManagerConfig::default()
    };
    if fast {
        config.engine.gap_timeout = Duration::from_millis(30);
        config.engine.retry_base = Duration::from_millis(5);
        config.engine.retry_max = Duration::from_millis(100);
        config.flood_wait_jitter = Duration::from_millis(5);
        config.storage_retry_base = Duration::from_millis(5);
        config.storage_retry_max = Duration::from_millis(100);
    }
    config
}

/// A producer of `events` events at 20 ms per push (paused clock), or 2 ms per round of 5
/// pushes (real clock, `fast`).
pub fn producer(seed: u64, events: u64, faults: Faults, fast: bool) -> Producer {
    let (interval, burst, latency) = if fast {
        (Duration::from_millis(2), 5, Duration::from_millis(1))
    } else {
        (Duration::from_millis(20), 1, Duration::from_millis(40))
    };
    let faults = if fast {
        Faults {
            reorder_window: Duration::from_millis(20),
            ..faults
        }
    } else {
        faults
    };
    Producer {
        events,
        interval,
        burst,
        latency,
        faults,
        seed,
        batched: false,
    }
}

/// The initial state of a fresh server (every seed starts here).
pub fn start_state() -> State {
    Server::new(0, Workload::default(), Limits::default()).state()
}

/// Implements `AccessHashStorage` for a test's storage wrapper by handing every call to its
/// `inner` field: the wrappers change how state is read or written, never access hashes.
macro_rules! forward_access_hashes {
    ($wrapper:ty) => {
        impl sync_storage::AccessHashStorage for $wrapper {
            async fn get_access_hash(
                &self,
                account: sync_storage::AccountId,
                channel: sync_core::ChannelId,
            ) -> sync_storage::Result<Option<i64>> {
                self.inner.get_access_hash(account, channel).await
            }
            async fn set_access_hashes(
                &self,
                account: sync_storage::AccountId,
                hashes: &[(sync_core::ChannelId, i64)],
            ) -> sync_storage::Result<()> {
                self.inner.set_access_hashes(account, hashes).await
            }
            async fn get_user_access_hash(
                &self,
                account: sync_storage::AccountId,
                user: sync_storage::UserId,
            ) -> sync_storage::Result<Option<i64>> {
                self.inner.get_user_access_hash(account, user).await
            }
            async fn set_user_access_hashes(
                &self,
                account: sync_storage::AccountId,
                hashes: &[(sync_storage::UserId, i64)],
            ) -> sync_storage::Result<()> {
                self.inner.set_user_access_hashes(account, hashes).await
            }
            async fn delete_access_hashes(
                &self,
                account: sync_storage::AccountId,
            ) -> sync_storage::Result<()> {
                self.inner.delete_access_hashes(account).await
            }
        }
    };
}
pub(crate) use forward_access_hashes;

/// Starts a manager for the simulated account under a lease, handing its updates to
/// `recorder`.
pub fn start_leased<S>(
    sim: &Sim,
    storage: &Arc<S>,
    recorder: &Recorder,
    config: ManagerConfig,
    lease: sync_runtime::LeaseConfig,
) -> (
    ManagerHandle<TestUpdate, TestEntities>,
    JoinHandle<Result<Summary, RunError>>,
)
where
    S: StateStorage + AccessHashStorage + sync_storage::LeaseStorage + 'static,
{
    let manager = Manager::with_config(
        ACCOUNT,
        sim.api.clone(),
        Arc::clone(storage),
        recorder.clone(),
        config,
    )
    .with_lease(lease);
    let handle = manager.handle();
    (handle, tokio::spawn(manager.run()))
}

/// Waits until `handle` runs under a lease (checking every `poll`, for at most `bound`), and
/// says how long it took.
pub async fn until_owner(
    handle: &ManagerHandle<TestUpdate, TestEntities>,
    poll: Duration,
    bound: Duration,
) -> Duration {
    let started = tokio::time::Instant::now();
    while handle.fencing_token().is_none() {
        assert!(started.elapsed() < bound, "never became the owner");
        tokio::time::sleep(poll).await;
    }
    started.elapsed()
}

/// Crashes the owner: its run and its producer are aborted mid-way (the lease is not
/// released), then the oracle learns what storage kept, read while the dead owner's lease still
/// keeps `standby` out, so it is the state the standby resumes from. Returns the instant of
/// the crash.
pub async fn crash_owner<S: StateStorage>(
    sim: &mut Sim,
    storage: &S,
    owner: JoinHandle<Result<Summary, RunError>>,
    producing: JoinHandle<()>,
    standby: &ManagerHandle<TestUpdate, TestEntities>,
) -> tokio::time::Instant {
    owner.abort();
    producing.abort();
    let _ = producing.await;
    assert!(owner.await.is_err_and(|e| e.is_cancelled()));
    let crashed = tokio::time::Instant::now();
    assert_eq!(
        standby.fencing_token(),
        None,
        "the standby took over too early"
    );
    sim.crashed(storage).await.expect("oracle at the crash");
    crashed
}
