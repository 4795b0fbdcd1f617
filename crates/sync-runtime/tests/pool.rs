//! Many managers on one [`DispatchPool`]: the oracle holds for each account while they share
//! the workers (with faults, failing and panicking handlers, a crash), one account's blocked
//! handler holds up only its own shard, one manager's shutdown or crash stops only its own
//! handlers, `caught_up` works from inside a pooled handler, and errors and panics are counted
//! per manager. Paused clock throughout.

mod common;

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{Sim, config, env_or, producer};
use sync_core::{ChannelDifference, Difference, Sequence, State, Update, Updates};
use sync_runtime::sim::{ApiFaults, Recorder};
use sync_runtime::{
    Api, ApiError, BoxError, ChannelDifferenceRequest, DifferenceRequest, DispatchPool, Handler,
    Manager, ManagerConfig, ManagerHandle, Peer, PeerKey, RunError, Summary,
};
use sync_storage::{MemoryStorage, StateStorage};
use sync_testkit::Faults;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Far more simulated time than any wait here needs.
const BOUND: Duration = Duration::from_secs(3_600);

async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    timeout(BOUND, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish"))
}

#[tokio::test(start_paused = true)]
async fn several_accounts_on_one_pool_pass_the_oracle_with_faults_and_a_crash() {
    let pool = DispatchPool::new(4, 64).expect("pool");
    let events = env_or("SYNC_RUNTIME_EVENTS", 600);
    let mixes = [
        (Faults::none(), ApiFaults::none(Duration::from_millis(40))),
        (Faults::moderate(), ApiFaults::default()),
        (
            Faults::harsh(),
            ApiFaults {
                failure: 0.3,
                ..ApiFaults::default()
            },
        ),
        (Faults::moderate(), ApiFaults::default()),
    ];
    let mut accounts = Vec::new();
    for (index, (faults, api)) in mixes.into_iter().enumerate() {
        let seed = 500 + index as u64;
        let mut sim = Sim::new(seed, 8, api);
        sim.recorder = match index {
            // A slow handler: its shards back up behind it, the others' events wait their turn.
            2 => Recorder::new().with_delay(Duration::from_millis(15)),
            3 => Recorder::new().failing_every(7).panicking_every(11),
            _ => Recorder::new(),
        };
        let storage = Arc::new(MemoryStorage::new());
        sim.seed(&*storage).await;
        let (handle, run) = sim.start_on(&storage, config(seed, false), Some(&pool));
        let producing = sim.produce(&handle, producer(seed, events, faults, false));
        accounts.push((sim, storage, handle, run, producing));
    }

    // Account 0 crashes mid-way (its run future is dropped) and restarts on the same pool.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    {
        let (sim, storage, handle, run, producing) = &mut accounts[0];
        run.abort();
        producing.abort();
        assert!((&mut *run).await.is_err_and(|e| e.is_cancelled()));
        let _ = (&mut *producing).await;
        assert!(!handle.is_running());
        sim.crashed(&**storage).await.expect("oracle at the crash");
        let (restarted, again) = sim.start_on(storage, config(600, false), Some(&pool));
        *producing = sim.produce(&restarted, producer(600, events, Faults::moderate(), false));
        *handle = restarted;
        *run = again;
    }

    for (index, (sim, storage, handle, run, producing)) in accounts.iter_mut().enumerate() {
        bounded("the producer", producing).await.expect("producer");
        bounded("caught_up", handle.caught_up())
            .await
            .expect("caught up");
        handle.shutdown();
        let summary = bounded("the shutdown", run)
            .await
            .expect("join")
            .expect("run");
        assert!(summary.persisted, "account {index}: {summary:?}");
        assert_eq!(summary.abandoned, 0, "account {index}: {summary:?}");
        let stats = summary.stats;
        assert_eq!(
            stats.runtime.updates_dispatched, stats.engine.updates_delivered,
            "account {index}"
        );
        assert_eq!(stats.engine.unacknowledged_batches, 0, "account {index}");
        // Errors and panics are counted by the manager whose handler had them.
        let failing = index == 3;
        assert_eq!(stats.runtime.handler_errors > 0, failing, "account {index}");
        assert_eq!(stats.runtime.handler_panics > 0, failing, "account {index}");
        if let Err(message) = sim.finish(&**storage).await {
            panic!("account {index}: {message}");
        }
        if index != 0 {
            assert_eq!(sim.oracle.repeats(), 0, "account {index}: repeats");
        }
        assert!(sim.recorder.count() > 0, "account {index}: nothing handled");
    }
    assert!(!pool.is_shut_down(), "a manager's shutdown stops the pool");
    pool.shutdown();
    bounded("the pool's drain", pool.drained()).await;
}

// A small account of its own, for the tests that need to steer single updates.

#[derive(Debug, Clone)]
struct Message {
    chat: i64,
    pts: i32,
}

impl Update for Message {
    fn sequence(&self) -> Sequence {
        Sequence::Common {
            pts: self.pts,
            pts_count: 1,
        }
    }
}

impl Peer for Message {
    fn peer(&self) -> Option<PeerKey> {
        Some(PeerKey::Chat(self.chat))
    }
}

/// A server at pts 0 with nothing new.
struct Client;

impl Api for Client {
    type Update = Message;
    type Entities = ();

    async fn get_state(&self) -> Result<State, ApiError> {
        Ok(State {
            pts: 0,
            qts: 0,
            date: 1,
            seq: 0,
        })
    }

    async fn get_difference(
        &self,
        request: DifferenceRequest,
    ) -> Result<Difference<Message>, ApiError> {
        Ok(Difference::Empty {
            date: request.date,
            seq: 0,
        })
    }

    async fn get_channel_difference(
        &self,
        _: ChannelDifferenceRequest,
    ) -> Result<ChannelDifference<Message>, ApiError> {
        Err(ApiError::rpc(400, "CHANNEL_INVALID"))
    }
}

type Behaviour =
    dyn Fn(Message) -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>> + Send + Sync;

/// A handler that does what its closure says.
#[derive(Clone)]
struct Hook(Arc<Behaviour>);

impl Hook {
    fn new<F, Fut>(behaviour: F) -> Self
    where
        F: Fn(Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        Self(Arc::new(move |message| Box::pin(behaviour(message))))
    }
}

impl Handler<Message, ()> for Hook {
    async fn handle(&self, message: Message, _: Arc<[()]>) -> Result<(), BoxError> {
        (self.0)(message).await
    }
}

type Handle = ManagerHandle<Message, ()>;
type Run = JoinHandle<Result<Summary, RunError>>;

fn start(
    account: i64,
    hook: Hook,
    storage: &Arc<MemoryStorage>,
    pool: &DispatchPool,
) -> (Handle, Run) {
    let config = ManagerConfig {
        shutdown_grace: Duration::from_secs(5),
        jitter_seed: Some(1),
        ..ManagerConfig::default()
    };
    let manager =
        Manager::with_config(account, Client, Arc::clone(storage), hook, config).with_pool(pool);
    let handle = manager.handle();
    (handle, tokio::spawn(manager.run()))
}

/// `count` updates of one chat each, from pts 1 on.
fn messages(chats: impl Iterator<Item = i64>) -> Vec<Updates<Message>> {
    chats
        .zip(1..)
        .map(|(chat, pts)| Updates::Short {
            update: Message { chat, pts },
            date: 0,
        })
        .collect()
}

/// Counts drops of what it is part of: a handler future dropped before it finished.
struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A handler that blocks forever on every update, counting the calls and the futures dropped.
fn blocking(started: &Arc<AtomicUsize>, dropped: &Arc<AtomicUsize>) -> Hook {
    let (started, dropped) = (Arc::clone(started), Arc::clone(dropped));
    Hook::new(move |_| {
        started.fetch_add(1, Ordering::SeqCst);
        let guard = DropCount(Arc::clone(&dropped));
        async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Ok(())
        }
    })
}

/// A handler that records the chats it handled.
fn recording(chats: &Arc<Mutex<HashSet<i64>>>) -> Hook {
    let chats = Arc::clone(chats);
    Hook::new(move |message| {
        chats.lock().expect("chats").insert(message.chat);
        async { Ok(()) }
    })
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    bounded(what, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
}

const CHATS: i64 = 32;

/// Two accounts on `pool`, caught up: the first (account 1) with its handler blocked for good
/// on one update, the second (account 2) recording the chats it handles.
struct BlockedBeside {
    stuck: Handle,
    stuck_run: Run,
    stuck_storage: Arc<MemoryStorage>,
    /// How many of the blocked handler's calls were stopped (dropped).
    dropped: Arc<AtomicUsize>,
    other: Handle,
    other_run: Run,
    other_storage: Arc<MemoryStorage>,
    chats: Arc<Mutex<HashSet<i64>>>,
}

async fn blocked_beside(pool: &DispatchPool) -> BlockedBeside {
    let (started, dropped) = (Arc::default(), Arc::default());
    let stuck_storage = Arc::new(MemoryStorage::new());
    let (stuck, stuck_run) = start(1, blocking(&started, &dropped), &stuck_storage, pool);
    let chats = Arc::new(Mutex::new(HashSet::new()));
    let other_storage = Arc::new(MemoryStorage::new());
    let (other, other_run) = start(2, recording(&chats), &other_storage, pool);
    bounded("caught_up", stuck.caught_up()).await.expect("up");
    bounded("caught_up", other.caught_up()).await.expect("up");
    stuck
        .push_batch(messages(std::iter::once(1)))
        .expect("push");
    wait_until("the blocking handler", || {
        started.load(Ordering::SeqCst) == 1
    })
    .await;
    BlockedBeside {
        stuck,
        stuck_run,
        stuck_storage,
        dropped,
        other,
        other_run,
        other_storage,
        chats,
    }
}

#[tokio::test(start_paused = true)]
async fn a_blocked_account_holds_up_only_its_shard_and_its_shutdown_abandons_only_its_events() {
    let pool = DispatchPool::new(8, 1_024).expect("pool");
    // One chat of the first account blocks one shard for good.
    let BlockedBeside {
        stuck,
        stuck_run,
        stuck_storage,
        dropped,
        other,
        other_run,
        other_storage,
        chats,
    } = blocked_beside(&pool).await;
    // The second account's chats spread over the shards: those on the other seven are handled.
    other.push_batch(messages(100..100 + CHATS)).expect("push");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let handled = chats.lock().expect("chats").len();
    // 32 chats over 8 shards: more than half on one shard is beyond any plausible hash.
    assert!(
        handled >= CHATS as usize / 2,
        "only {handled} of {CHATS} chats handled while another account blocks one shard"
    );

    // The blocked account shuts down: its busy handler is stopped after the grace, counted,
    // and not acknowledged.
    stuck.shutdown();
    let summary = bounded("the blocked account's shutdown", stuck_run)
        .await
        .expect("join")
        .expect("run");
    assert_eq!(summary.abandoned, 1, "{summary:?}");
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        1,
        "the handler was not stopped"
    );
    assert_eq!(summary.state.map(|s| s.pts), Some(1));
    let stored = stuck_storage.load(1).await.expect("load").state;
    assert_eq!(
        stored.map(|s| s.pts),
        Some(0),
        "an abandoned update was persisted"
    );

    // The shard is free again: the other account handles everything and stops cleanly.
    assert!(other.is_running());
    bounded("caught_up", other.caught_up()).await.expect("up");
    assert_eq!(chats.lock().expect("chats").len(), CHATS as usize);
    other.shutdown();
    let summary = bounded("the other shutdown", other_run)
        .await
        .expect("join")
        .expect("run");
    assert_eq!(summary.abandoned, 0, "{summary:?}");
    assert!(summary.persisted);
    let stored = other_storage.load(2).await.expect("load").state;
    assert_eq!(stored.map(|s| s.pts), Some(CHATS as i32));
    assert_eq!(summary.stats.runtime.handler_panics, 0);
    pool.shutdown();
    bounded("the pool's drain", pool.drained()).await;
}

#[tokio::test(start_paused = true)]
async fn an_account_stuck_behind_another_abandons_its_own_events_at_shutdown() {
    // One shard: the second account's events wait behind the first account's blocked handler.
    let pool = DispatchPool::new(1, 1_024).expect("pool");
    let BlockedBeside {
        stuck,
        stuck_run,
        dropped,
        other: waiting,
        other_run: waiting_run,
        other_storage: storage,
        chats,
        ..
    } = blocked_beside(&pool).await;
    waiting.push_batch(messages(100..110)).expect("push");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(chats.lock().expect("chats").is_empty());

    // Its shutdown gives up on its queued events after the grace; the blocked handler of the
    // other account keeps running.
    waiting.shutdown();
    let summary = bounded("the shutdown", waiting_run)
        .await
        .expect("join")
        .expect("run");
    assert_eq!(summary.abandoned, 10, "{summary:?}");
    assert_eq!(
        storage.load(2).await.expect("load").state.map(|s| s.pts),
        Some(0)
    );
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        0,
        "another account's handler was stopped"
    );
    assert!(stuck.is_running());

    // Once the blocked handler is stopped, the skipped jobs of the stopped account are not
    // handled after all.
    stuck.shutdown();
    let summary = bounded("the blocked shutdown", stuck_run)
        .await
        .expect("join")
        .expect("run");
    assert_eq!(summary.abandoned, 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        chats.lock().expect("chats").is_empty(),
        "a stopped account's job ran"
    );
    assert_eq!(pool.stats().total().delivered, 11);
    pool.shutdown();
    bounded("the pool's drain", pool.drained()).await;
}

#[tokio::test(start_paused = true)]
async fn a_crashed_account_stops_its_pooled_handlers() {
    let pool = DispatchPool::new(8, 1_024).expect("pool");
    let (started, dropped) = (Arc::default(), Arc::default());
    let (stuck, stuck_run) = start(1, blocking(&started, &dropped), &Arc::default(), &pool);
    let chats = Arc::new(Mutex::new(HashSet::new()));
    let (other, other_run) = start(2, recording(&chats), &Arc::default(), &pool);
    bounded("caught_up", stuck.caught_up()).await.expect("up");
    stuck
        .push_batch(messages([1, 2, 3, 4].into_iter()))
        .expect("push");
    wait_until("the blocking handlers", || {
        started.load(Ordering::SeqCst) >= 1
    })
    .await;
    stuck_run.abort();
    assert!(stuck_run.await.is_err_and(|e| e.is_cancelled()));
    // Every handler that had started is dropped; none is left running.
    wait_until("the handlers' stop", || {
        dropped.load(Ordering::SeqCst) == started.load(Ordering::SeqCst)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        started.load(Ordering::SeqCst)
    );

    // The pool goes on for the others.
    other.push_batch(messages(100..100 + CHATS)).expect("push");
    bounded("caught_up", other.caught_up()).await.expect("up");
    assert_eq!(chats.lock().expect("chats").len(), CHATS as usize);
    other.shutdown();
    let summary = bounded("the shutdown", other_run)
        .await
        .expect("join")
        .expect("run");
    assert_eq!(summary.abandoned, 0);
}

#[tokio::test(start_paused = true)]
async fn caught_up_from_inside_a_pooled_handler_resolves() {
    let pool = DispatchPool::new(4, 1_024).expect("pool");
    let mut accounts = Vec::new();
    // Two accounts whose every update awaits its own manager's `caught_up`: with the task-local
    // of the wrong manager (or none) each call would wait for its own update to be handled.
    for account in 1..=2 {
        let slot: Arc<OnceLock<Handle>> = Arc::new(OnceLock::new());
        let inside = Arc::new(AtomicUsize::new(0));
        let hook = {
            let (slot, inside) = (Arc::clone(&slot), Arc::clone(&inside));
            Hook::new(move |_| {
                let handle = slot.get().cloned();
                let inside = Arc::clone(&inside);
                async move {
                    let handle = handle.ok_or("no handle")?;
                    handle.caught_up().await?;
                    inside.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            })
        };
        let (handle, run) = start(account, hook, &Arc::default(), &pool);
        slot.set(handle.clone())
            .map_err(|_| "set twice")
            .expect("slot");
        accounts.push((handle, run, inside));
    }
    for (handle, _, _) in &accounts {
        bounded("caught_up", handle.caught_up()).await.expect("up");
        handle.push_batch(messages(1..=20)).expect("push");
    }
    for (handle, run, inside) in accounts {
        bounded("caught_up", handle.caught_up()).await.expect("up");
        assert_eq!(inside.load(Ordering::SeqCst), 20);
        let summary = {
            handle.shutdown();
            bounded("the shutdown", run)
                .await
                .expect("join")
                .expect("run")
        };
        assert_eq!(summary.abandoned, 0);
        assert_eq!(summary.stats.runtime.handler_errors, 0);
    }
}

#[tokio::test(start_paused = true)]
async fn errors_and_panics_are_counted_by_the_manager_whose_handler_had_them() {
    let pool = DispatchPool::new(2, 1_024).expect("pool");
    let panicking = Hook::new(|message: Message| async move {
        if message.pts % 2 == 0 {
            panic!("pooled handler panic");
        }
        Ok(())
    });
    let failing = Hook::new(|message: Message| async move {
        if message.pts % 5 == 0 {
            return Err("pooled handler failure".into());
        }
        Ok(())
    });
    let quiet = Hook::new(|_| async { Ok(()) });
    let mut runs = Vec::new();
    for (account, hook) in [(1, panicking), (2, failing), (3, quiet)] {
        let storage = Arc::new(MemoryStorage::new());
        let (handle, run) = start(account, hook, &storage, &pool);
        bounded("caught_up", handle.caught_up()).await.expect("up");
        handle.push_batch(messages(1..=20)).expect("push");
        runs.push((account, handle, run, storage));
    }
    let mut counts = Vec::new();
    for (account, handle, run, storage) in runs {
        bounded("caught_up", handle.caught_up()).await.expect("up");
        handle.shutdown();
        let summary = bounded("the shutdown", run)
            .await
            .expect("join")
            .expect("run");
        assert_eq!(summary.abandoned, 0);
        // A failed or panicked update counts as handled: everything is acknowledged.
        let stored = storage.load(account).await.expect("load").state;
        assert_eq!(stored.map(|s| s.pts), Some(20), "account {account}");
        let runtime = summary.stats.runtime;
        counts.push((runtime.handler_panics, runtime.handler_errors));
    }
    assert_eq!(counts, [(10, 0), (0, 4), (0, 0)]);
    pool.shutdown();
    bounded("the pool's drain", pool.drained()).await;
}

#[test]
fn a_pool_needs_a_runtime_and_shards() {
    assert!(matches!(
        DispatchPool::new(4, 16),
        Err(sync_runtime::PoolError::NoRuntime)
    ));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        assert!(matches!(
            DispatchPool::new(0, 16),
            Err(sync_runtime::PoolError::Config(_))
        ));
        assert!(matches!(
            DispatchPool::new(4, 0),
            Err(sync_runtime::PoolError::Config(_))
        ));
        let pool = DispatchPool::new(3, 16).expect("pool");
        assert_eq!((pool.shards(), pool.capacity()), (3, 16));
    });
}
