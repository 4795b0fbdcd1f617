//! How a manager starts: on a shared (`Arc`) API, skipping the backlog
//! (`ManagerConfig::catch_up = false`), and with stored state it cannot use
//! (`ManagerConfig::on_bad_state`); and the live state read from a handle.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::{ACCOUNT, Sim, config};
use sync_core::{ChannelCommit, ChannelId, Commit, Notice, Sequence, State, Updates};
use sync_runtime::sim::{ApiFaults, Recorder};
use sync_runtime::{
    BadState, BadStatePolicy, BoxError, ControlError, Handler, Manager, ManagerConfig, RunError,
};
use sync_storage::{
    AccessHashStorage, AccountId, Error, MemoryStorage, Result, Snapshot, StateStorage,
};
use sync_testkit::{TestEntities, TestUpdate};

fn ids(updates: &Updates<TestUpdate, TestEntities>) -> Vec<u64> {
    updates_of(updates).map(|u| u.id).collect()
}

fn updates_of(updates: &Updates<TestUpdate, TestEntities>) -> impl Iterator<Item = &TestUpdate> {
    match updates {
        Updates::Short { update, .. } => std::slice::from_ref(update).iter(),
        Updates::Combined { updates, .. } => updates.iter(),
        Updates::TooLong => [].iter(),
    }
}

/// The ids of the updates that have a place in a sequence: what a difference fetches again
/// and what the engine drops as old news (an update without one is delivered as it comes).
fn sequenced(pushes: &[Updates<TestUpdate, TestEntities>]) -> HashSet<u64> {
    pushes
        .iter()
        .flat_map(updates_of)
        .filter(|u| u.sequence != Sequence::Unordered)
        .map(|u| u.id)
        .collect()
}

/// Makes `n` server events without pushing them; returns the pushes (and so their ids).
fn backlog(sim: &Sim, n: usize) -> Vec<Updates<TestUpdate, TestEntities>> {
    sim.api
        .with_server(|s| (0..n).map(|_| s.produce()).collect())
}

#[tokio::test(start_paused = true)]
async fn a_manager_runs_on_a_shared_api() {
    let sim = Sim::new(1, 0, ApiFaults::none(std::time::Duration::from_millis(5)));
    let storage = Arc::new(MemoryStorage::new());
    sim.seed(&*storage).await;
    let missed = sequenced(&backlog(&sim, 20));
    assert!(!missed.is_empty());
    let api = Arc::new(sim.api.clone());
    let manager = Manager::with_config(
        ACCOUNT,
        Arc::clone(&api),
        Arc::clone(&storage),
        sim.recorder.clone(),
        config(1, false),
    );
    let handle = manager.handle();
    let run = tokio::spawn(manager.run());
    handle.caught_up().await.expect("caught up");
    let delivered: HashSet<u64> = sim.recorder.take().iter().map(|u| u.id).collect();
    assert!(missed.is_subset(&delivered), "the backlog is caught up");
    assert_eq!(handle.state(), Some(api.with_server(|s| s.state())));
    handle.shutdown();
    assert!(run.await.expect("join").expect("run").persisted);
}

#[tokio::test(start_paused = true)]
async fn the_handle_reads_the_live_state() {
    let sim = Sim::new(2, 2, ApiFaults::none(std::time::Duration::from_millis(5)));
    let storage = Arc::new(MemoryStorage::new());
    sim.seed(&*storage).await;
    let (handle, run) = sim.start(&storage, config(2, false));
    assert_eq!(
        handle.state(),
        None,
        "nothing published before the first turn"
    );
    handle.caught_up().await.expect("caught up");
    let server = sim.api.with_server(|s| s.state());
    assert_eq!(handle.state(), Some(server));
    let channels: Vec<(ChannelId, i32)> = sim.api.with_server(|s| s.channel_states().collect());
    assert!(!channels.is_empty());
    for (channel_id, pts) in channels {
        assert_eq!(handle.channel_pts(channel_id).await, Ok(Some(pts)));
    }
    assert_eq!(handle.channel_pts(987_654_321).await, Ok(None));
    handle.shutdown();
    run.await.expect("join").expect("run");
    // The last state stays readable; questions to the manager fail.
    assert_eq!(handle.state(), Some(server));
    assert_eq!(handle.channel_pts(1).await, Err(ControlError::Stopped));
}

#[tokio::test(start_paused = true)]
async fn skipping_the_backlog_delivers_only_later_pushes() {
    let sim = Sim::new(3, 0, ApiFaults::none(std::time::Duration::from_millis(5)));
    let storage = Arc::new(MemoryStorage::new());
    sim.seed(&*storage).await;
    let stored = storage
        .get_state(ACCOUNT)
        .await
        .expect("get")
        .expect("seeded");
    let missed = backlog(&sim, 30);
    let skip = ManagerConfig {
        catch_up: false,
        ..config(3, false)
    };
    let (handle, run) = sim.start(&storage, skip);
    handle.caught_up().await.expect("caught up");
    assert_eq!(sim.recorder.take(), Vec::new(), "the backlog is skipped");
    let live = sim.api.with_server(|s| s.state());
    assert!(live.pts > stored.pts);
    assert_eq!(handle.state(), Some(live), "started from getState");

    // The backlog's pushes arriving late are old news; new pushes are delivered.
    let last = missed.iter().flat_map(ids).max().expect("a backlog");
    for push in missed.clone() {
        handle.push(push).expect("running");
    }
    let later = backlog(&sim, 10);
    let expected: Vec<u64> = later.iter().flat_map(ids).collect();
    for push in later {
        handle.push(push).expect("running");
    }
    handle.caught_up().await.expect("caught up");
    let old = sequenced(&missed);
    let delivered: Vec<u64> = sim.recorder.take().iter().map(|u| u.id).collect();
    assert!(
        delivered.iter().all(|id| !old.contains(id)),
        "{delivered:?}"
    );
    let new: Vec<u64> = delivered.into_iter().filter(|id| *id > last).collect();
    assert_eq!(new, expected);
    handle.shutdown();
    let summary = run.await.expect("join").expect("run");
    assert!(summary.persisted);
    let end = sim.api.with_server(|s| s.state());
    assert_eq!(storage.get_state(ACCOUNT).await.expect("get"), Some(end));
}

#[tokio::test(start_paused = true)]
async fn skipping_the_backlog_keeps_the_stored_channels() {
    let sim = Sim::new(4, 3, ApiFaults::none(std::time::Duration::from_millis(5)));
    let storage = Arc::new(MemoryStorage::new());
    sim.seed(&*storage).await;
    let stored = storage.channels(ACCOUNT).await.expect("channels");
    assert!(!stored.is_empty());
    backlog(&sim, 30);
    let skip = ManagerConfig {
        catch_up: false,
        ..config(4, false)
    };
    let (handle, run) = sim.start(&storage, skip);
    handle.caught_up().await.expect("caught up");
    assert_eq!(sim.recorder.take(), Vec::new());
    for (&channel_id, &pts) in &stored {
        assert_eq!(handle.channel_pts(channel_id).await, Ok(Some(pts)));
    }
    handle.shutdown();
    run.await.expect("join").expect("run");
    assert_eq!(storage.channels(ACCOUNT).await.expect("channels"), stored);
    assert_eq!(
        storage.get_state(ACCOUNT).await.expect("get"),
        Some(sim.api.with_server(|s| s.state()))
    );
}

/// A memory store whose `load` reports the data corrupt until the account is deleted.
#[derive(Debug, Default)]
struct CorruptLoad {
    inner: MemoryStorage,
    corrupt: AtomicBool,
}

impl StateStorage for CorruptLoad {
    async fn get_state(&self, account: AccountId) -> Result<Option<State>> {
        self.inner.get_state(account).await
    }
    async fn get_channel_pts(&self, account: AccountId, channel: ChannelId) -> Result<Option<i32>> {
        self.inner.get_channel_pts(account, channel).await
    }
    async fn channels(&self, account: AccountId) -> Result<BTreeMap<ChannelId, i32>> {
        self.inner.channels(account).await
    }
    async fn apply(&self, account: AccountId, commit: &Commit) -> Result<()> {
        self.inner.apply(account, commit).await
    }
    async fn load(&self, account: AccountId) -> Result<Snapshot> {
        if self.corrupt.load(Ordering::Acquire) {
            return Err(Error::Corrupt {
                backend: "test",
                location: "state".into(),
                detail: "garbage".into(),
            });
        }
        self.inner.load(account).await
    }
    async fn delete(&self, account: AccountId) -> Result<()> {
        self.inner.delete(account).await?;
        self.corrupt.store(false, Ordering::Release);
        Ok(())
    }
}

common::forward_access_hashes!(CorruptLoad);

/// The recorder, and what it was told of discarded state.
#[derive(Clone)]
struct Told {
    recorder: Recorder,
    discarded: Arc<Mutex<Vec<BadState>>>,
}

impl Handler<TestUpdate, TestEntities> for Told {
    async fn handle(
        &self,
        update: TestUpdate,
        entities: Arc<[TestEntities]>,
    ) -> Result<(), BoxError> {
        self.recorder.handle(update, entities).await
    }
    async fn notice(&self, notice: Notice) {
        self.recorder.notice(notice).await;
    }
    async fn state_discarded(&self, bad: BadState) {
        self.discarded.lock().expect("lock").push(bad);
    }
}

fn told() -> Told {
    Told {
        recorder: Recorder::new(),
        discarded: Arc::default(),
    }
}

async fn run_once<S>(
    sim: &Sim,
    storage: &Arc<S>,
    handler: Told,
    policy: BadStatePolicy,
) -> std::result::Result<(), RunError>
where
    S: StateStorage + AccessHashStorage + 'static,
{
    let manager = Manager::with_config(
        ACCOUNT,
        sim.api.clone(),
        Arc::clone(storage),
        handler,
        ManagerConfig {
            on_bad_state: policy,
            ..config(5, false)
        },
    );
    let handle = manager.handle();
    let run = tokio::spawn(manager.run());
    match handle.caught_up().await {
        Ok(()) => {
            handle.shutdown();
            run.await
                .expect("join")
                .map(|summary| assert!(summary.persisted))
        }
        Err(_) => run
            .await
            .expect("join")
            .map(|_| panic!("stopped without an error")),
    }
}

#[tokio::test(start_paused = true)]
async fn corrupt_state_stops_the_manager_by_default() {
    let sim = Sim::new(5, 1, ApiFaults::none(std::time::Duration::from_millis(5)));
    let storage = Arc::new(CorruptLoad::default());
    sim.seed(&*storage).await;
    storage.corrupt.store(true, Ordering::Release);
    let handler = told();
    let outcome = run_once(&sim, &storage, handler.clone(), BadStatePolicy::Stop).await;
    assert!(
        matches!(&outcome, Err(RunError::Storage(error)) if error.is_corrupt()),
        "{outcome:?}"
    );
    assert!(handler.discarded.lock().expect("lock").is_empty());
    // Storage is left for an operator to look at.
    assert!(storage.corrupt.load(Ordering::Acquire));
    assert!(
        storage
            .inner
            .get_state(ACCOUNT)
            .await
            .expect("get")
            .is_some()
    );
}

#[tokio::test(start_paused = true)]
async fn corrupt_state_is_discarded_when_told_to_start_fresh() {
    let sim = Sim::new(6, 2, ApiFaults::none(std::time::Duration::from_millis(5)));
    let storage = Arc::new(CorruptLoad::default());
    sim.seed(&*storage).await;
    storage.set_access_hash(ACCOUNT, 77, 5).await.expect("hash");
    storage.corrupt.store(true, Ordering::Release);
    backlog(&sim, 10);
    let handler = told();
    run_once(&sim, &storage, handler.clone(), BadStatePolicy::StartFresh)
        .await
        .expect("started fresh");
    {
        let discarded = handler.discarded.lock().expect("lock");
        assert!(
            matches!(discarded.as_slice(), [BadState::Unreadable(error)] if error.is_corrupt()),
            "{discarded:?}"
        );
    }
    // Started from getState: nothing of before, the server's state stored, no channel kept;
    // access hashes stay.
    assert_eq!(handler.recorder.take(), Vec::new());
    let snapshot = storage.load(ACCOUNT).await.expect("load");
    assert_eq!(snapshot.state, Some(sim.api.with_server(|s| s.state())));
    assert!(snapshot.channels.is_empty());
    assert_eq!(
        storage.get_access_hash(ACCOUNT, 77).await.expect("hash"),
        Some(5)
    );
}

/// Stored numbers the engine refuses: a channel id that cannot be one.
async fn invalid_storage(sim: &Sim) -> Arc<MemoryStorage> {
    let storage = Arc::new(MemoryStorage::new());
    sim.seed(&*storage).await;
    let bad = Commit {
        channels: vec![ChannelCommit {
            channel_id: -5,
            pts: 3,
            reset: false,
        }],
        ..Commit::default()
    };
    storage.apply(ACCOUNT, &bad).await.expect("stored");
    storage
}

#[tokio::test(start_paused = true)]
async fn invalid_state_stops_or_starts_fresh() {
    let sim = Sim::new(7, 1, ApiFaults::none(std::time::Duration::from_millis(5)));
    let storage = invalid_storage(&sim).await;
    let handler = told();
    let outcome = run_once(&sim, &storage, handler.clone(), BadStatePolicy::Stop).await;
    assert!(
        matches!(outcome, Err(RunError::InvalidState(_))),
        "{outcome:?}"
    );
    assert!(handler.discarded.lock().expect("lock").is_empty());
    assert!(
        storage
            .channels(ACCOUNT)
            .await
            .expect("channels")
            .contains_key(&-5)
    );

    // Skipping the backlog checks the stored channels too.
    let skip = Manager::with_config(
        ACCOUNT,
        sim.api.clone(),
        Arc::clone(&storage),
        told(),
        ManagerConfig {
            catch_up: false,
            ..config(7, false)
        },
    );
    let outcome = skip.run().await;
    assert!(
        matches!(outcome, Err(RunError::InvalidState(_))),
        "{outcome:?}"
    );

    run_once(&sim, &storage, handler.clone(), BadStatePolicy::StartFresh)
        .await
        .expect("started fresh");
    assert!(matches!(
        handler.discarded.lock().expect("lock").as_slice(),
        [BadState::Invalid(_)]
    ));
    let snapshot = storage.load(ACCOUNT).await.expect("load");
    assert_eq!(snapshot.state, Some(sim.api.with_server(|s| s.state())));
    assert!(snapshot.channels.is_empty());
    // The next start resumes normally.
    run_once(&sim, &storage, told(), BadStatePolicy::Stop)
        .await
        .expect("resumed");
}
