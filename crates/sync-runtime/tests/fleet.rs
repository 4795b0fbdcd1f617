//! Fleets of accounts sharing one storage, on tokio's paused clock: the assignment is a
//! balanced partition every member computes alike; members split the registry's accounts, a
//! joining member gets its share handed back, a member that shuts down hands everything over
//! at once, a crashed member's accounts are taken over within the lease's ttl plus a tick; and
//! the oracle holds for every account across every hand-over.
#![allow(clippy::print_stdout)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TokioClock, config, producer, seed_account};
use proptest::prelude::*;
use sync_runtime::sim::{ApiFaults, Recorder, SimulatedApi};
use sync_runtime::{
    AccountFactory, BoxError, Fleet, FleetConfig, FleetHandle, FleetStats, ManagerHandle, assign,
};
use sync_storage::{
    AccountId, LeaseStorage, MemoryStorage, RegistryStorage, Snapshot, StateStorage,
};
use sync_testkit::{Faults, Limits, Oracle, Server, TestEntities, TestUpdate, Workload};
use tokio::task::JoinHandle;
use tokio::time::Instant;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every account goes to exactly one live member, none gets more than its fair share, and
    /// the order of the lists does not change the outcome.
    #[test]
    fn the_assignment_is_a_balanced_partition(
        members in prop::collection::btree_set("[a-z]{1,6}", 1..6),
        accounts in prop::collection::btree_set(any::<i64>(), 0..300),
    ) {
        let members: Vec<String> = members.into_iter().collect();
        let accounts: Vec<AccountId> = accounts.into_iter().collect();
        let share = accounts.len().div_ceil(members.len());
        let mut reversed_members = members.clone();
        reversed_members.reverse();
        let mut reversed_accounts = accounts.clone();
        reversed_accounts.reverse();
        let mut seen = BTreeSet::new();
        for member in &members {
            let mine = assign(member, &members, &accounts);
            prop_assert!(mine.len() <= share, "{member} got {} of share {share}", mine.len());
            prop_assert_eq!(&mine, &assign(member, &reversed_members, &reversed_accounts));
            for account in mine {
                prop_assert!(seen.insert(account), "account {account} assigned twice");
            }
        }
        prop_assert_eq!(seen.len(), accounts.len(), "an account is nobody's");
        prop_assert!(assign("not-a-member", &members, &accounts).is_empty());
    }
}

#[test]
fn a_member_joining_moves_a_fair_part_of_the_accounts() {
    let accounts: Vec<AccountId> = (1..=3_000).collect();
    let three: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let four: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
    let moved: usize = three
        .iter()
        .map(|m| {
            let before = assign(m, &three, &accounts);
            let after = assign(m, &four, &accounts);
            before.difference(&after).count()
        })
        .sum();
    // The newcomer takes a quarter (750); the bounded load moves some more between the others.
    let newcomer = assign("d", &four, &accounts).len();
    assert_eq!(newcomer, 750);
    assert!(moved < 1_500, "{moved} of 3000 accounts moved");
}

/// One account's simulated server, and who ran it: each start of its manager, in order, with
/// the state it started from and what it handled.
struct Account {
    api: SimulatedApi,
    oracle: Oracle,
    runs: Vec<(String, Snapshot, Recorder)>,
}

/// The accounts of a test, shared by every member (one server per account, as Telegram).
#[derive(Clone)]
struct World {
    storage: Arc<MemoryStorage>,
    accounts: Arc<Mutex<HashMap<AccountId, Account>>>,
    events: u64,
    /// Builds still to fail, per account (a login that fails for a while).
    failing_builds: Arc<Mutex<HashMap<AccountId, u32>>>,
    /// How long a build takes (a slow login).
    build_time: Arc<Mutex<Duration>>,
}

impl World {
    async fn new(accounts: usize, events: u64) -> Self {
        let storage = Arc::new(MemoryStorage::with_clock(TokioClock(Instant::now())));
        let mut all = HashMap::new();
        for index in 0..accounts {
            let account = 1_000 + index as AccountId;
            let server = Server::new(
                account as u64,
                Workload {
                    channels: 3,
                    ..Workload::default()
                },
                Limits::default(),
            );
            let oracle = Oracle::new(server.state(), server.channel_states().collect::<Vec<_>>());
            let api = SimulatedApi::new(server, ApiFaults::default(), account as u64);
            seed_account(&api, &*storage, account).await;
            all.insert(
                account,
                Account {
                    api,
                    oracle,
                    runs: Vec::new(),
                },
            );
        }
        let ids: Vec<AccountId> = all.keys().copied().collect();
        storage.register(&ids).await.expect("register");
        Self {
            storage,
            accounts: Arc::new(Mutex::new(all)),
            events,
            failing_builds: Arc::default(),
            build_time: Arc::default(),
        }
    }

    fn member(&self, name: &str) -> Member {
        Member {
            name: name.into(),
            world: self.clone(),
        }
    }

    fn start(
        &self,
        name: &str,
    ) -> (
        FleetHandle<TestUpdate, TestEntities>,
        JoinHandle<FleetStats>,
    ) {
        let fleet = Fleet::new(
            Arc::clone(&self.storage),
            self.member(name),
            fleet_config(name),
        );
        let handle = fleet.handle();
        let run = tokio::spawn(async move { fleet.run().await.expect("fleet") });
        (handle, run)
    }

    /// Judges every account: each run's deliveries in order, a restart from the state the
    /// next run started from between them, then the final state. Returns the repeats.
    async fn judge(&self) -> u64 {
        let mut accounts = self.accounts.lock().expect("world");
        let mut repeats = 0;
        for (&id, account) in accounts.iter_mut() {
            let Account { api, oracle, runs } = account;
            assert!(!runs.is_empty(), "account {id} never ran");
            for (index, (member, started, recorder)) in runs.iter().enumerate() {
                if index > 0 {
                    let state = started.state.expect("a stored state");
                    let channels = started.channels.iter().map(|(&c, &p)| (c, p)).collect();
                    oracle.crash(state, &channels);
                }
                let log = recorder.take();
                api.with_server(|server| {
                    log.iter()
                        .try_for_each(|update| oracle.deliver(server, update))
                })
                .unwrap_or_else(|e| panic!("account {id}, run {index} on {member}: {e}"));
            }
            let stored = futures_block(self.storage.load(id)).expect("load");
            api.with_server(|server| {
                oracle.finish(server, stored.state, |c| stored.channels.get(&c).copied())
            })
            .unwrap_or_else(|e| panic!("account {id}: {e}"));
            repeats += oracle.repeats();
        }
        repeats
    }

    /// Waits until every account's server made all its events and every running manager
    /// caught up with it.
    async fn settle(&self, fleets: &[&FleetHandle<TestUpdate, TestEntities>]) {
        let started = Instant::now();
        loop {
            let made = {
                let accounts = self.accounts.lock().expect("world");
                accounts
                    .values()
                    .all(|a| a.api.with_server(|s| s.events()) >= self.events)
            };
            let running: usize = fleets.iter().map(|f| f.accounts().len()).sum();
            if made && running == self.accounts.lock().expect("world").len() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "never settled"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for fleet in fleets {
            for account in fleet.accounts() {
                if let Some(handle) = fleet.manager(account) {
                    let _ = handle.caught_up().await;
                }
            }
        }
    }
}

/// The memory backend never awaits: one poll is enough.
fn futures_block<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut context) {
            return out;
        }
    }
}

fn fleet_config(member: &str) -> FleetConfig {
    FleetConfig {
        member: member.into(),
        lease_ttl: Duration::from_secs(3),
        renew_every: Duration::from_secs(1),
        tick: Duration::from_millis(250),
        registry_every: Duration::from_secs(5),
        manager: config(7, false),
        ..FleetConfig::new()
    }
}

/// A member's factory: the shared servers, a recorder per run, a producer per run.
struct Member {
    name: String,
    world: World,
}

impl AccountFactory for Member {
    type Api = SimulatedApi;
    type Handler = Recorder;

    async fn build(&self, account: AccountId) -> Result<(SimulatedApi, Recorder), BoxError> {
        let build_time = *self.world.build_time.lock().expect("world");
        tokio::time::sleep(build_time).await;
        if let Some(left) = self
            .world
            .failing_builds
            .lock()
            .expect("world")
            .get_mut(&account)
            && *left > 0
        {
            *left -= 1;
            return Err("cannot log in yet".into());
        }
        // The lease is ours here: nobody writes the state before our manager loads it.
        let started = self.world.storage.load(account).await?;
        let recorder = Recorder::new().with_delay(Duration::from_millis(5));
        let mut accounts = self.world.accounts.lock().expect("world");
        let entry = accounts.get_mut(&account).ok_or("unknown account")?;
        entry.api.with_server(Server::client_restarted);
        entry
            .runs
            .push((self.name.clone(), started, recorder.clone()));
        Ok((entry.api.clone(), recorder))
    }

    fn started(&self, account: AccountId, handle: ManagerHandle<TestUpdate, TestEntities>) {
        let api = {
            let accounts = self.world.accounts.lock().expect("world");
            accounts.get(&account).map(|a| a.api.clone())
        };
        let Some(api) = api else { return };
        let producer = producer(account as u64, self.world.events, Faults::moderate(), false);
        tokio::spawn(async move {
            producer.run(&api, &handle, |_| {}).await;
        });
    }
}

async fn until(what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{what}: never"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

#[tokio::test(start_paused = true)]
async fn members_share_the_accounts_and_hand_them_over_cleanly() {
    let world = World::new(8, 400).await;
    let (first, first_run) = world.start("first");
    until("the first member runs everything", || {
        first.accounts().len() == 8
    })
    .await;

    let (second, second_run) = world.start("second");
    until("the accounts are shared", || {
        first.accounts().len() == 4 && second.accounts().len() == 4
    })
    .await;
    let mine: BTreeSet<AccountId> = second.accounts().into_iter().collect();
    assert!(first.accounts().iter().all(|a| !mine.contains(a)));

    tokio::time::sleep(Duration::from_secs(2)).await;
    first.shutdown();
    let stats = first_run.await.expect("join");
    assert_eq!(stats.running, 0, "{stats:?}");
    assert_eq!(
        stats.released, stats.claimed,
        "every lease released: {stats:?}"
    );
    let taken = until("the second member runs everything", || {
        second.accounts().len() == 8
    })
    .await;
    // Released at shutdown: claimed at the next tick, not after the ttl.
    assert!(taken <= Duration::from_millis(300), "took {taken:?}");

    world.settle(&[&second]).await;
    second.shutdown();
    let stats = second_run.await.expect("join");
    assert_eq!(stats.lost, 0, "{stats:?}");
    assert_eq!(world.judge().await, 0, "clean hand-overs repeat nothing");
    assert_eq!(
        world
            .storage
            .heartbeat("probe", Duration::from_secs(1))
            .await
            .expect("members"),
        vec!["probe".to_string()],
        "both members left the registry"
    );
}

#[tokio::test(start_paused = true)]
async fn a_crashed_members_accounts_are_taken_over_within_the_ttl() {
    let world = World::new(8, 600).await;
    let (first, first_run) = world.start("first");
    let (second, second_run) = world.start("second");
    until("the accounts are shared", || {
        first.accounts().len() == 4 && second.accounts().len() == 4
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // A crash: the fleet's future and its managers are gone, no lease released.
    first_run.abort();
    assert!(first_run.await.is_err_and(|e| e.is_cancelled()));
    let taken = until("the second member runs everything", || {
        second.accounts().len() == 8
    })
    .await;
    let ttl = fleet_config("x").lease_ttl;
    assert!(
        taken <= ttl + Duration::from_secs(1),
        "took over after {taken:?}"
    );

    world.settle(&[&second]).await;
    second.shutdown();
    let stats = second_run.await.expect("join");
    assert_eq!(stats.claimed, 8, "{stats:?}");
    let repeats = world.judge().await;
    println!("repeats after the crash: {repeats}");
}

#[tokio::test(start_paused = true)]
async fn a_failing_account_is_retried_and_a_lost_one_left_alone() {
    let world = World::new(4, 200).await;
    let (flaky, revoked) = (1_000, 1_001);
    world.failing_builds.lock().expect("world").insert(flaky, 2);
    let (fleet, run) = world.start("only");
    until("the flaky account runs after two failed builds", || {
        fleet.accounts().contains(&flaky)
    })
    .await;
    assert!(fleet.stats().restarts >= 2, "{:?}", fleet.stats());
    until("every account runs", || fleet.accounts().len() == 4).await;

    // A lost authorization stops the account for good: released and left alone.
    let api = world.accounts.lock().expect("world")[&revoked].api.clone();
    api.revoke_authorization();
    if let Some(handle) = fleet.manager(revoked) {
        let _ = handle.request_channel_difference(1).await;
        let _ = handle.push(sync_core::Updates::TooLong);
    }
    until("the revoked account stops", || {
        !fleet.accounts().contains(&revoked)
    })
    .await;
    until("its lease is released", || {
        futures_block(world.storage.lease_holder(revoked))
            .expect("holder")
            .is_none()
    })
    .await;
    assert_eq!(fleet.stats().failed, 1, "{:?}", fleet.stats());
    // Left alone: not claimed again for a while.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!fleet.accounts().contains(&revoked));

    fleet.shutdown();
    let stats = run.await.expect("join");
    assert_eq!(stats.lost, 0, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn a_fleet_stopping_while_accounts_are_still_built_stops_them_too() {
    let world = World::new(4, 100).await;
    *world.build_time.lock().expect("world") = Duration::from_secs(5);
    let (fleet, run) = world.start("only");
    // Claimed, still being built.
    until("every account is claimed", || fleet.stats().claimed == 4).await;
    assert!(fleet.accounts().is_empty());
    fleet.shutdown();
    let stats = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the fleet did not stop")
        .expect("join");
    assert_eq!(stats.released, 4, "{stats:?}");
    for account in 1_000..1_004 {
        assert_eq!(
            futures_block(world.storage.lease_holder(account)).expect("holder"),
            None
        );
    }
}

#[tokio::test(start_paused = true)]
async fn accounts_registered_later_are_run_and_unregistered_ones_handed_back() {
    let world = World::new(5, 100).await;
    let late = 1_004;
    world.storage.unregister(&[late]).await.expect("unregister");
    let (fleet, run) = world.start("only");
    until("the registered accounts run", || {
        fleet.accounts().len() == 4
    })
    .await;
    assert!(!fleet.accounts().contains(&late));

    world.storage.register(&[late]).await.expect("register");
    let picked_up = until("the new account runs", || fleet.accounts().contains(&late)).await;
    let bound = fleet_config("x").registry_every + fleet_config("x").tick * 2;
    assert!(picked_up <= bound, "picked up after {picked_up:?}");

    world
        .storage
        .unregister(&[1_000])
        .await
        .expect("unregister");
    until("the removed account is handed back", || {
        !fleet.accounts().contains(&1_000)
    })
    .await;
    assert!(
        futures_block(world.storage.lease_holder(1_000))
            .expect("holder")
            .is_none()
    );
    fleet.shutdown();
    run.await.expect("join");
}
