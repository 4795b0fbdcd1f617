//! Managers under an account lease, on tokio's paused clock: a standby takes over at once
//! after a clean shutdown and within the ttl after a crash, an owner whose lease runs out or
//! is taken over stops at once and commits nothing more, and the oracle holds across every
//! hand-over.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use common::{ACCOUNT, Sim, TokioClock, config, producer, start_leased};
use sync_core::{ChannelId, Commit, State};
use sync_runtime::sim::{ApiFaults, Recorder};
use sync_runtime::{LeaseConfig, LeaseLoss, ManagerHandle, RunError, Summary};
use sync_storage::{
    AccountId, Acquired, FencingToken, Lease, LeaseInfo, LeaseStorage, MemoryStorage,
    Result as StorageResult, StateStorage,
};
use sync_testkit::{Faults, TestEntities, TestUpdate};
use tokio::task::JoinHandle;
use tokio::time::Instant;

const PASS: u8 = 0;
/// Renewals fail as if storage were unreachable.
const FAIL: u8 = 1;
/// Renewals answer success without reaching storage (a proxy that lies), so the stored lease
/// runs out while its owner believes it holds it.
const PRETEND: u8 = 2;

/// Memory storage on the tokio clock whose renewals can be made to fail or to lie.
#[derive(Debug)]
struct Leases {
    inner: MemoryStorage,
    renewals: AtomicU8,
}

impl Leases {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryStorage::with_clock(TokioClock(Instant::now())),
            renewals: AtomicU8::new(PASS),
        })
    }
}

impl StateStorage for Leases {
    async fn get_state(&self, account: AccountId) -> StorageResult<Option<State>> {
        self.inner.get_state(account).await
    }
    async fn get_channel_pts(
        &self,
        account: AccountId,
        channel: ChannelId,
    ) -> StorageResult<Option<i32>> {
        self.inner.get_channel_pts(account, channel).await
    }
    async fn channels(
        &self,
        account: AccountId,
    ) -> StorageResult<std::collections::BTreeMap<ChannelId, i32>> {
        self.inner.channels(account).await
    }
    async fn apply(&self, account: AccountId, commit: &Commit) -> StorageResult<()> {
        self.inner.apply(account, commit).await
    }
    async fn delete(&self, account: AccountId) -> StorageResult<()> {
        self.inner.delete(account).await
    }
}

common::forward_access_hashes!(Leases);

impl LeaseStorage for Leases {
    async fn acquire(
        &self,
        account: AccountId,
        owner: &str,
        ttl: Duration,
    ) -> StorageResult<Acquired> {
        self.inner.acquire(account, owner, ttl).await
    }
    async fn renew(&self, lease: &Lease) -> StorageResult<()> {
        match self.renewals.load(Ordering::SeqCst) {
            FAIL => Err(sync_storage::Error::Unavailable {
                backend: "test",
                source: "renewals are failing".into(),
            }),
            PRETEND => Ok(()),
            _ => self.inner.renew(lease).await,
        }
    }
    async fn release(&self, lease: &Lease) -> StorageResult<()> {
        self.inner.release(lease).await
    }
    async fn lease_holder(&self, account: AccountId) -> StorageResult<Option<LeaseInfo>> {
        self.inner.lease_holder(account).await
    }
    async fn apply_fenced(
        &self,
        account: AccountId,
        token: FencingToken,
        commit: &Commit,
    ) -> StorageResult<()> {
        self.inner.apply_fenced(account, token, commit).await
    }
}

type Run = JoinHandle<Result<Summary, RunError>>;

fn lease(owner: &str) -> LeaseConfig {
    LeaseConfig {
        ttl: Duration::from_secs(6),
        renew_every: Duration::from_secs(2),
        standby_poll: Duration::from_millis(250),
        ..LeaseConfig::with_owner(owner)
    }
}

/// Starts a manager for the simulated account under a lease held by `owner`.
fn start(
    sim: &Sim,
    storage: &Arc<Leases>,
    recorder: &Recorder,
    owner: &str,
) -> (ManagerHandle<TestUpdate, TestEntities>, Run) {
    start_leased(
        sim,
        storage,
        recorder,
        config(sim.seed, false),
        lease(owner),
    )
}

/// Waits (on the paused clock) until `handle` runs under a lease, and says how long it took.
async fn until_owner(handle: &ManagerHandle<TestUpdate, TestEntities>) -> Duration {
    common::until_owner(handle, Duration::from_millis(10), Duration::from_secs(120)).await
}

#[tokio::test(start_paused = true)]
async fn a_standby_takes_over_at_once_after_a_clean_shutdown() {
    let mut sim = Sim::new(51, 6, ApiFaults::default());
    let storage = Leases::new();
    sim.seed(&*storage).await;
    let (first_log, second_log) = (Recorder::new(), Recorder::new());

    let (first, first_run) = start(&sim, &storage, &first_log, "first");
    until_owner(&first).await;
    let (second, second_run) = start(&sim, &storage, &second_log, "second");
    sim.produce(&first, producer(51, 300, Faults::moderate(), false))
        .await
        .expect("producer");
    first.caught_up().await.expect("caught up");
    // The standby waited the whole time: no token, nothing handled.
    assert_eq!(second.fencing_token(), None);
    assert_eq!(second_log.count(), 0);
    let first_token = first.fencing_token().expect("owner's token");

    first.shutdown();
    let summary = first_run.await.expect("join").expect("clean run");
    assert!(summary.persisted);
    // Released at shutdown: taken over within the standby's poll, not the ttl.
    let waited = until_owner(&second).await;
    assert!(
        waited <= Duration::from_millis(260),
        "took over after {waited:?}"
    );
    let second_token = second.fencing_token().expect("new owner's token");
    assert!(second_token > first_token, "the token grows with the owner");

    sim.produce(&second, producer(52, 600, Faults::moderate(), false))
        .await
        .expect("producer");
    second.caught_up().await.expect("caught up");
    second.shutdown();
    second_run.await.expect("join").expect("clean run");

    sim.recorder = first_log;
    sim.judge_deliveries().expect("first owner's deliveries");
    sim.recorder = second_log;
    sim.finish(&*storage).await.expect("oracle");
    assert_eq!(sim.oracle.repeats(), 0, "a clean hand-over repeats nothing");
    assert!(sim.recorder.count() > 0, "the second owner handled nothing");
    assert_eq!(
        storage.lease_holder(ACCOUNT).await.expect("holder"),
        None,
        "released"
    );
}

#[tokio::test(start_paused = true)]
async fn a_crashed_owner_is_taken_over_within_the_ttl() {
    let mut sim = Sim::new(53, 6, ApiFaults::default());
    sim.recorder = Recorder::new().with_delay(Duration::from_millis(15));
    let storage = Leases::new();
    sim.seed(&*storage).await;
    let second_log = Recorder::new();

    let (first, first_run) = start(&sim, &storage, &sim.recorder, "first");
    until_owner(&first).await;
    let (second, second_run) = start(&sim, &storage, &second_log, "second");
    let producing = sim.produce(&first, producer(53, 400, Faults::moderate(), false));
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let crashed_at = common::crash_owner(&mut sim, &*storage, first_run, producing, &second).await;

    until_owner(&second).await;
    let waited = crashed_at.elapsed();
    assert!(
        waited <= lease("x").ttl + Duration::from_millis(260),
        "took over after {waited:?}"
    );
    sim.recorder = second_log;
    sim.produce(&second, producer(54, 800, Faults::moderate(), false))
        .await
        .expect("producer");
    second.caught_up().await.expect("caught up");
    second.shutdown();
    second_run.await.expect("join").expect("clean run");
    sim.finish(&*storage).await.expect("oracle");
}

#[tokio::test(start_paused = true)]
async fn an_owner_that_cannot_renew_stops_within_the_ttl() {
    let sim = Sim::new(55, 4, ApiFaults::default());
    let storage = Leases::new();
    sim.seed(&*storage).await;
    let (owner, run) = start(&sim, &storage, &sim.recorder, "first");
    until_owner(&owner).await;
    let token = owner.fencing_token().expect("token");
    storage.renewals.store(FAIL, Ordering::SeqCst);
    let failing_since = Instant::now();
    let error = run.await.expect("join").expect_err("must stop");
    let RunError::LeaseLost { token: lost, loss } = error else {
        panic!("unexpected error {error}");
    };
    assert_eq!(lost, token);
    assert!(matches!(loss, LeaseLoss::Expired { .. }), "{loss}");
    // It stops no later than the lease it last renewed would run out.
    assert!(failing_since.elapsed() <= lease("x").ttl);
    assert!(!owner.is_running());
    assert_eq!(owner.fencing_token(), None);
}

#[tokio::test(start_paused = true)]
async fn a_fenced_off_owner_stops_and_commits_nothing() {
    let sim = Sim::new(57, 4, ApiFaults::default());
    let storage = Leases::new();
    sim.seed(&*storage).await;
    let (owner, run) = start(&sim, &storage, &sim.recorder, "first");
    until_owner(&owner).await;
    let token = owner.fencing_token().expect("token");
    let producing = sim.produce(&owner, producer(57, 2_000, Faults::moderate(), false));

    // The owner's renewals stop reaching storage: its lease runs out there and an intruder
    // takes the account while the owner still runs, commits and believes it holds it.
    storage.renewals.store(PRETEND, Ordering::SeqCst);
    let intruder = loop {
        match storage
            .acquire(ACCOUNT, "intruder", Duration::from_secs(60))
            .await
            .expect("acquire")
        {
            Acquired::Held(lease) => break lease,
            Acquired::Busy(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    assert!(intruder.token > token);
    let at_takeover = storage.load(ACCOUNT).await.expect("load");

    // Bounded on the paused clock: an owner that is never fenced off would run forever.
    let error = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("the fenced-off owner kept running")
        .expect("join")
        .expect_err("must stop");
    producing.abort();
    let RunError::LeaseLost { loss, .. } = error else {
        panic!("unexpected error {error}");
    };
    assert_eq!(
        loss,
        LeaseLoss::TakenOver {
            current: intruder.token.get()
        }
    );
    assert_eq!(
        storage.load(ACCOUNT).await.expect("load"),
        at_takeover,
        "the fenced-off owner changed the state after the takeover"
    );
    assert!(
        owner.stats().runtime.commits_failed > 0,
        "the owner never tried to commit"
    );
}
