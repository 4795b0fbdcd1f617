//! Many accounts per process, many processes per registry: the [`Fleet`] (its docs tell how).

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sync_storage::{
    AccessHashStorage, AccountId, Acquired, LeaseStorage, RegistryStorage, StateStorage,
};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::api::{Api, BoxError, EntitiesOf, UpdateOf};
use crate::backoff::{Jitter, Policy};
use crate::config::ManagerConfig;
use crate::handle::ManagerHandle;
use crate::handler::Handler;
use crate::lease::{Held, LeaseLoss, unique_owner};
use crate::manager::{Manager, RunError, Summary};
use crate::pool::{DispatchPool, PoolError};

/// What a fleet needs to run an account: the application's side of one [`Manager`].
pub trait AccountFactory: Send + Sync + 'static {
    /// The account's Telegram client.
    type Api: Api;
    /// The account's update handler.
    type Handler: Handler<UpdateOf<Self::Api>, EntitiesOf<Self::Api>>;

    /// Builds the client and handler of `account` (connecting, logging in). Called each time
    /// the fleet starts the account: when it claims it, and when it restarts it. An error is
    /// retried after a backoff.
    fn build(
        &self,
        account: AccountId,
    ) -> impl Future<Output = Result<(Self::Api, Self::Handler), BoxError>> + Send;

    /// The account's manager was built and is about to run: connect the network reader to
    /// `handle` here (it feeds pushes with [`ManagerHandle::push`]; the handle stops accepting
    /// them once the manager stops). The default does nothing.
    fn started(
        &self,
        account: AccountId,
        handle: ManagerHandle<UpdateOf<Self::Api>, EntitiesOf<Self::Api>>,
    ) {
        let _ = (account, handle);
    }
}

/// How a [`Fleet`] behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    /// This process's identity: its heartbeat in the registry and the owner of its leases.
    /// Unique per process; [`FleetConfig::new`] picks one ([`unique_owner`]).
    pub member: Arc<str>,
    /// How long a lease and a heartbeat last: a crashed member's accounts are taken over
    /// within this plus `tick`. Default 10 s.
    pub lease_ttl: Duration,
    /// How often the leases are renewed (all in one round trip). At most half of `lease_ttl`;
    /// default a third of it.
    pub renew_every: Duration,
    /// How often the fleet beats its heartbeat, rebalances and claims. Default 1 s.
    pub tick: Duration,
    /// How often the registered accounts are read again (a change of members is seen every
    /// tick). Default 10 s.
    pub registry_every: Duration,
    /// First delay before an account whose manager stopped with a retryable error (or whose
    /// build failed) is started again; doubled per failure in a row. Default 1 s.
    pub restart_base: Duration,
    /// Longest restart delay; also how long an account that stopped for good is left alone.
    /// Default 60 s.
    pub restart_max: Duration,
    /// The configuration of every account's manager. Its `shards` and `shard_capacity` do
    /// not apply: the accounts share the fleet's dispatch pool.
    pub manager: ManagerConfig,
    /// Worker tasks of the dispatch pool the fleet's accounts share ([`DispatchPool`]): how
    /// many peers, of all accounts, are handled at the same time. Default 64.
    pub dispatch_shards: usize,
    /// Events queued per worker of that pool. Default 1,024.
    pub dispatch_capacity: usize,
}

impl FleetConfig {
    /// The defaults, with a unique member id.
    pub fn new() -> Self {
        Self {
            member: unique_owner().into(),
            lease_ttl: Duration::from_secs(10),
            renew_every: Duration::from_millis(3_333),
            tick: Duration::from_secs(1),
            registry_every: Duration::from_secs(10),
            restart_base: Duration::from_secs(1),
            restart_max: Duration::from_secs(60),
            manager: ManagerConfig::default(),
            dispatch_shards: 64,
            dispatch_capacity: 1_024,
        }
    }
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// What a fleet did, from [`FleetHandle::stats`] and [`Fleet::run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FleetStats {
    /// Live members in the last heartbeat (this one included).
    pub members: usize,
    /// Registered accounts, as last read.
    pub accounts: usize,
    /// Accounts this member should run now ([`assign`]).
    pub assigned: usize,
    /// Managers running now (or being started or stopped).
    pub running: usize,
    /// Leases acquired (accounts claimed).
    pub claimed: u64,
    /// Leases released (accounts handed back, or stopped).
    pub released: u64,
    /// Managers started again after a retryable stop.
    pub restarts: u64,
    /// Leases lost (taken over, or not renewed in time).
    pub lost: u64,
    /// Managers that stopped for good (e.g. a lost authorization).
    pub failed: u64,
}

/// State shared by the fleet and its handles.
struct Shared<U, E> {
    stats: Mutex<FleetStats>,
    managers: Mutex<HashMap<AccountId, ManagerHandle<U, E>>>,
    cancel: CancellationToken,
}

impl<U, E> Shared<U, E> {
    fn stats(&self) -> std::sync::MutexGuard<'_, FleetStats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn managers(&self) -> std::sync::MutexGuard<'_, HashMap<AccountId, ManagerHandle<U, E>>> {
        self.managers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The application's side of a running [`Fleet`]. Cheap to clone.
pub struct FleetHandle<U, E> {
    shared: Arc<Shared<U, E>>,
}

impl<U, E> Clone for FleetHandle<U, E> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<U, E> std::fmt::Debug for FleetHandle<U, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetHandle")
            .field("stats", &*self.shared.stats())
            .finish_non_exhaustive()
    }
}

impl<U, E> FleetHandle<U, E> {
    /// Stops the fleet cleanly: every manager shuts down, every lease is released, the member
    /// leaves the registry, and [`Fleet::run`] returns.
    pub fn shutdown(&self) {
        self.shared.cancel.cancel();
    }

    /// The fleet's counters now.
    pub fn stats(&self) -> FleetStats {
        *self.shared.stats()
    }

    /// The accounts whose managers run here now, in ascending order.
    pub fn accounts(&self) -> Vec<AccountId> {
        let mut accounts: Vec<_> = self.shared.managers().keys().copied().collect();
        accounts.sort_unstable();
        accounts
    }

    /// The handle of the account's manager, if it runs here now.
    pub fn manager(&self, account: AccountId) -> Option<ManagerHandle<U, E>> {
        self.shared.managers().get(&account).cloned()
    }
}

/// Why [`Fleet::run`] stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// The configuration cannot work (a zero tick or ttl, renewals not within the ttl).
    #[error("invalid fleet configuration: {0}")]
    Config(String),
    /// The dispatch pool could not be built (zero shards or capacity).
    #[error("cannot build the fleet's dispatch pool: {0}")]
    Pool(#[source] PoolError),
}

/// The accounts `member` should run, out of `accounts`, when `members` are alive: a balanced
/// assignment every member computes alike from the same lists (their order does not matter).
///
/// Each account goes to the member that ranks it highest (a hash of the member and the
/// account: rendezvous hashing) among those not yet at the fair share `⌈accounts / members⌉`,
/// taking the accounts in ascending order. So the load is even, and a member joining or
/// leaving moves few accounts. `member` need not be among `members` (it then gets nothing).
pub fn assign(member: &str, members: &[String], accounts: &[AccountId]) -> BTreeSet<AccountId> {
    let mut members: Vec<&str> = members.iter().map(String::as_str).collect();
    members.sort_unstable();
    members.dedup();
    let mut accounts = accounts.to_vec();
    accounts.sort_unstable();
    accounts.dedup();
    let Some(me) = members.iter().position(|m| *m == member) else {
        return BTreeSet::new();
    };
    let share = accounts.len().div_ceil(members.len());
    let seeds: Vec<u64> = members.iter().map(|m| fnv1a(m.as_bytes())).collect();
    let mut load = vec![0usize; members.len()];
    let mut mine = BTreeSet::new();
    for account in accounts {
        let chosen = (0..members.len())
            .filter(|&i| load[i] < share)
            .max_by_key(|&i| (mix(seeds[i] ^ account as u64), std::cmp::Reverse(i)));
        if let Some(chosen) = chosen {
            load[chosen] += 1;
            if chosen == me {
                mine.insert(account);
            }
        }
    }
    mine
}

/// FNV-1a: a fixed hash of a member id, the same in every process and version.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// SplitMix64's finaliser: spreads a member's seed mixed with an account id.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// One account the fleet holds the lease of.
struct Slot {
    held: Arc<Held>,
    phase: Phase,
    /// Retryable stops in a row, for the restart backoff.
    failures: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The manager runs (or is being built).
    Running,
    /// The manager was told to shut down; the lease is released once it has.
    Stopping,
    /// The manager stopped with a retryable error; started again at this instant.
    Waiting(Instant),
}

/// How a manager task ended.
type Ended = (AccountId, Result<Summary, Stop>);

/// Why a manager task ended other than with a summary.
enum Stop {
    Run(RunError),
    Build(BoxError),
}

/// Runs the accounts of a registry in this process, sharing them with the other processes
/// that run the same registry.
///
///
/// A fleet runs one [`Manager`] per account it owns. Which accounts exist is the registry's
/// ([`RegistryStorage`]); which process runs one is the account's lease ([`LeaseStorage`]):
/// the coordination is storage's (Redis', for a fleet of processes), not a protocol of ours.
///
/// Every `tick` a fleet:
///
/// 1. beats its heartbeat (the registry's live members, itself included);
/// 2. computes which accounts it should run ([`assign`]: every member computes the same
///    balanced assignment from the same members and accounts, at most its fair share
///    `⌈accounts / members⌉` each);
/// 3. renews the leases it holds, all in one round trip ([`LeaseStorage::renew_many`]), every
///    `renew_every`; a lease refused (fenced off) or not renewed within its ttl stops its
///    manager at once;
/// 4. hands back the accounts no longer its own (a member joined): their managers shut down
///    cleanly and their leases are released, so the new owner starts at once;
/// 5. claims the accounts that are its own and that it does not run yet: an account still held
///    elsewhere (its old owner is handing it back, or crashed and its lease has not expired) is
///    tried again next tick, so a crashed member's accounts are taken over within the lease's
///    ttl plus a tick.
///
/// The accounts' managers share one [`DispatchPool`] (`dispatch_shards` workers), so an idle
/// account costs its manager's memory (a few KiB) and one task, woken only by the engine's
/// idle rule (a `getDifference` after 15 minutes without updates).
///
/// A manager that stops with a retryable error ([`RunError::is_retryable`]), or whose
/// [`AccountFactory::build`] failed, is restarted after a backoff, keeping its lease; one that
/// stops for good (a lost authorization) is released and left alone until `restart_max` has
/// passed. A clean shutdown ([`FleetHandle::shutdown`]) stops every manager (each within its
/// [`ManagerConfig::shutdown_grace`], leases kept renewed meanwhile), releases every lease and
/// leaves the registry, so a rolling restart moves accounts without waiting for any expiry.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// use sync_core::{ChannelDifference, Difference, Sequence, State, Update};
/// use sync_runtime::{
///     AccountFactory, Api, ApiError, BoxError, ChannelDifferenceRequest, DifferenceRequest,
///     Fleet, FleetConfig, Handler, Peer, PeerKey,
/// };
/// use sync_storage::{AccountId, MemoryStorage, RegistryStorage};
///
/// #[derive(Debug, Clone)]
/// struct Message { chat: i64, pts: i32 }
/// impl Update for Message {
///     fn sequence(&self) -> Sequence { Sequence::Common { pts: self.pts, pts_count: 1 } }
/// }
/// impl Peer for Message {
///     fn peer(&self) -> Option<PeerKey> { Some(PeerKey::Chat(self.chat)) }
/// }
///
/// /// One account's MTProto client; here a server with nothing new.
/// struct Client;
/// impl Api for Client {
///     type Update = Message;
///     type Entities = ();
///     async fn get_state(&self) -> Result<State, ApiError> {
///         Ok(State { pts: 10, qts: 1, date: 1_700_000_000, seq: 1 })
///     }
///     async fn get_difference(&self, r: DifferenceRequest) -> Result<Difference<Message>, ApiError> {
///         Ok(Difference::Empty { date: r.date, seq: 1 })
///     }
///     async fn get_channel_difference(
///         &self,
///         _: ChannelDifferenceRequest,
///     ) -> Result<ChannelDifference<Message>, ApiError> {
///         Err(ApiError::rpc(400, "CHANNEL_INVALID"))
///     }
/// }
///
/// struct Bot { account: AccountId }
/// impl Handler<Message, ()> for Bot {
///     async fn handle(&self, message: Message, _: Arc<[()]>) -> Result<(), BoxError> {
///         let _ = (self.account, message); // reply, store, …
///         Ok(())
///     }
/// }
///
/// /// How this application runs an account: log in, build its handler.
/// struct Accounts;
/// impl AccountFactory for Accounts {
///     type Api = Client;
///     type Handler = Bot;
///     async fn build(&self, account: AccountId) -> Result<(Client, Bot), BoxError> {
///         Ok((Client, Bot { account }))
///     }
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
/// runtime.block_on(async {
///     // Every process of the fleet uses the same storage (`RedisStorage` in production).
///     let storage = Arc::new(MemoryStorage::new());
///     storage.register(&[1001, 1002, 1003]).await?;
///
///     let config = FleetConfig { tick: Duration::from_millis(20), ..FleetConfig::new() };
///     let fleet = Fleet::new(Arc::clone(&storage), Accounts, config);
///     let handle = fleet.handle();
///     let run = tokio::spawn(fleet.run());
///     while handle.accounts().len() < 3 {
///         tokio::time::sleep(Duration::from_millis(10)).await;
///     }
///     // The only member runs every account, each under its lease.
///     let manager = handle.manager(1002).ok_or("not running")?;
///     manager.caught_up().await?;
///     assert!(manager.fencing_token().is_some());
///
///     handle.shutdown();
///     let stats = run.await??;
///     assert_eq!((stats.claimed, stats.released), (3, 3));
///     Ok::<_, Box<dyn std::error::Error>>(())
/// })
/// # }
/// ```
pub struct Fleet<S, F: AccountFactory> {
    storage: Arc<S>,
    factory: Arc<F>,
    config: FleetConfig,
    shared: Arc<SharedOf<F>>,
}

/// The shared state of a fleet built by `F`.
type SharedOf<F> =
    Shared<UpdateOf<<F as AccountFactory>::Api>, EntitiesOf<<F as AccountFactory>::Api>>;

impl<S, F: AccountFactory> std::fmt::Debug for Fleet<S, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S, F> Fleet<S, F>
where
    S: StateStorage + AccessHashStorage + LeaseStorage + RegistryStorage + 'static,
    F: AccountFactory,
{
    /// A fleet over `storage` (state, leases and registry), building its accounts with
    /// `factory`.
    pub fn new(storage: Arc<S>, factory: F, config: FleetConfig) -> Self {
        Self {
            storage,
            factory: Arc::new(factory),
            config,
            shared: Arc::new(Shared {
                stats: Mutex::default(),
                managers: Mutex::default(),
                cancel: CancellationToken::new(),
            }),
        }
    }

    /// A handle for stats, the accounts' managers and shutdown.
    pub fn handle(&self) -> FleetHandle<UpdateOf<F::Api>, EntitiesOf<F::Api>> {
        FleetHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Runs until [`FleetHandle::shutdown`], then stops every manager, releases every lease and
    /// leaves the registry. Dropping the future instead is a crash: the managers stop where
    /// they are and the other members take the accounts over once the leases expire.
    pub async fn run(self) -> Result<FleetStats, FleetError> {
        let config = &self.config;
        if config.tick.is_zero() || config.lease_ttl.is_zero() || config.renew_every.is_zero() {
            return Err(FleetError::Config(
                "tick, lease_ttl and renew_every must not be zero".into(),
            ));
        }
        if config.renew_every > config.lease_ttl / 2 {
            return Err(FleetError::Config(format!(
                "renew_every ({:?}) must be at most half of lease_ttl ({:?})",
                config.renew_every, config.lease_ttl
            )));
        }
        let pool = DispatchPool::new(config.dispatch_shards, config.dispatch_capacity)
            .map_err(FleetError::Pool)?;
        let span = tracing::info_span!("sync_fleet", member = %config.member);
        let mut run = Run {
            fleet: &self,
            pool: pool.clone(),
            slots: HashMap::new(),
            tasks: JoinSet::new(),
            task_accounts: HashMap::new(),
            members: Vec::new(),
            accounts: Vec::new(),
            assigned: BTreeSet::new(),
            assigned_from: None,
            accounts_changed: false,
            benched: HashMap::new(),
            next_renewal: Instant::now() + config.renew_every,
            next_registry: Instant::now(),
            jitter: Jitter::new(config.manager.jitter_seed),
            #[cfg(feature = "metrics")]
            series: FleetSeries::new(config),
        };
        run.run().instrument(span).await;
        drop(run);
        pool.shutdown();
        Ok(*self.shared.stats())
    }
}

/// The state of one [`Fleet::run`].
struct Run<'a, S, F: AccountFactory> {
    fleet: &'a Fleet<S, F>,
    /// The dispatch workers every account's manager shares.
    pool: DispatchPool,
    slots: HashMap<AccountId, Slot>,
    tasks: JoinSet<Ended>,
    /// Which account each manager task runs, to tell a panicked one.
    task_accounts: HashMap<tokio::task::Id, AccountId>,
    members: Vec<String>,
    accounts: Vec<AccountId>,
    assigned: BTreeSet<AccountId>,
    /// The members `assigned` was computed from (with the accounts as they are, unless
    /// `accounts_changed`).
    assigned_from: Option<Vec<String>>,
    /// The registry read last changed the accounts.
    accounts_changed: bool,
    /// Accounts that stopped for good, left alone until then.
    benched: HashMap<AccountId, Instant>,
    next_renewal: Instant,
    next_registry: Instant,
    jitter: Jitter,
    #[cfg(feature = "metrics")]
    series: FleetSeries,
}

impl<S, F> Run<'_, S, F>
where
    S: StateStorage + AccessHashStorage + LeaseStorage + RegistryStorage + 'static,
    F: AccountFactory,
{
    async fn run(&mut self) {
        let cancel = self.fleet.shared.cancel.clone();
        let mut tick = tokio::time::interval(self.fleet.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = tick.tick() => self.round().await,
                Some(ended) = self.tasks.join_next_with_id() => self.ended(ended).await,
            }
        }
        self.stop_all().await;
    }

    /// One tick: heartbeat, assignment, renewals, hand-backs, claims, restarts.
    async fn round(&mut self) {
        let config = &self.fleet.config;
        let storage = &self.fleet.storage;
        let now = Instant::now();
        match storage.heartbeat(&config.member, config.lease_ttl).await {
            Ok(members) => self.members = members,
            Err(error) => {
                tracing::warn!(%error, "fleet heartbeat failed; keeping the last members")
            }
        }
        if !self.members.iter().any(|m| **m == *config.member) {
            self.members.push(config.member.to_string());
        }
        if now >= self.next_registry {
            match storage.registered().await {
                Ok(accounts) => {
                    self.accounts_changed |= accounts != self.accounts;
                    self.accounts = accounts;
                    self.next_registry = now + config.registry_every;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot read the registry; keeping the last accounts")
                }
            }
        }
        // The assignment costs a hash per account and member: computed again only when the
        // members or the accounts changed.
        if self.assigned_from.as_ref() != Some(&self.members) || self.accounts_changed {
            self.assigned = assign(&config.member, &self.members, &self.accounts);
            self.assigned_from = Some(self.members.clone());
            self.accounts_changed = false;
        }
        if now >= self.next_renewal {
            self.renew().await;
        }

        // Hand back what is no longer ours; restart what waited long enough.
        let mut restart = Vec::new();
        for (&account, slot) in &mut self.slots {
            let ours = self.assigned.contains(&account);
            match slot.phase {
                Phase::Running if !ours => {
                    tracing::info!(account, "handing the account back");
                    slot.phase = Phase::Stopping;
                    if let Some(handle) = self.fleet.shared.managers().get(&account) {
                        handle.shutdown();
                    }
                }
                Phase::Waiting(at) if ours && at <= now => restart.push(account),
                _ => {}
            }
        }
        let waiting_elsewhere: Vec<AccountId> = self
            .slots
            .iter()
            .filter(|(account, slot)| {
                matches!(slot.phase, Phase::Waiting(_)) && !self.assigned.contains(account)
            })
            .map(|(&account, _)| account)
            .collect();
        for account in waiting_elsewhere {
            self.release(account).await;
        }
        for account in restart {
            if let Some(slot) = self.slots.get_mut(&account) {
                slot.phase = Phase::Running;
                self.fleet.shared.stats().restarts += 1;
                let held = Arc::clone(&slot.held);
                self.spawn(account, held);
            }
        }

        // Claim what is ours and not running here.
        self.benched.retain(|_, until| *until > now);
        let claims: Vec<AccountId> = self
            .assigned
            .iter()
            .copied()
            .filter(|a| !self.slots.contains_key(a) && !self.benched.contains_key(a))
            .collect();
        for account in claims {
            // Claiming thousands of accounts (a start-up, a member gone) takes round trips
            // each: the leases already held are renewed in between, on time.
            if Instant::now() >= self.next_renewal {
                self.renew().await;
            }
            let sent = Instant::now();
            match storage
                .acquire(account, &config.member, config.lease_ttl)
                .await
            {
                Ok(Acquired::Held(lease)) => {
                    tracing::info!(account, token = %lease.token, "account claimed");
                    self.fleet.shared.stats().claimed += 1;
                    let held = Held::new(lease, sent);
                    self.slots.insert(
                        account,
                        Slot {
                            held: Arc::clone(&held),
                            phase: Phase::Running,
                            failures: 0,
                        },
                    );
                    self.spawn(account, held);
                }
                Ok(Acquired::Busy(holder)) => {
                    tracing::debug!(account, holder = %holder.owner, "account still held elsewhere");
                }
                Err(error) => {
                    tracing::warn!(account, %error, "cannot claim the account; trying again next tick");
                }
            }
        }
        self.publish();
    }

    /// Renews every held lease in one round trip; marks lost those refused, or not renewed
    /// within their ttl.
    async fn renew(&mut self) {
        let config = &self.fleet.config;
        let sent = Instant::now();
        let accounts: Vec<AccountId> = self.slots.keys().copied().collect();
        let leases: Vec<_> = accounts
            .iter()
            .filter_map(|a| self.slots.get(a).map(|slot| slot.held.lease.clone()))
            .collect();
        let outcome = if leases.is_empty() {
            Ok(Vec::new())
        } else {
            self.fleet.storage.renew_many(&leases).await
        };
        let results: Vec<Option<sync_storage::Error>> = match outcome {
            Ok(results) => results.into_iter().map(Result::err).collect(),
            Err(error) => {
                tracing::warn!(%error, "lease renewals failed");
                accounts.iter().map(|_| Some(transport())).collect()
            }
        };
        self.next_renewal = sent + config.renew_every;
        for (account, error) in accounts.into_iter().zip(results) {
            let Some(slot) = self.slots.get_mut(&account) else {
                continue;
            };
            match error {
                None => slot.held.renewed(sent),
                Some(sync_storage::Error::Fenced { current, .. }) => {
                    slot.held.lose(LeaseLoss::TakenOver { current });
                }
                Some(error) if sent >= slot.held.fresh_until() => {
                    slot.held.lose(LeaseLoss::Expired {
                        last_error: error.to_string(),
                    });
                }
                Some(error) => {
                    tracing::warn!(account, %error, "lease not renewed; trying again");
                    // Try again at the next tick rather than a whole renewal period later.
                    self.next_renewal = self.next_renewal.min(sent + config.tick);
                }
            }
        }
        // A lost lease whose manager already stopped has nothing left to stop.
        let lost: Vec<AccountId> = self
            .slots
            .iter()
            .filter(|(_, slot)| {
                slot.held.lost.is_cancelled() && matches!(slot.phase, Phase::Waiting(_))
            })
            .map(|(&account, _)| account)
            .collect();
        for account in lost {
            self.slots.remove(&account);
            self.fleet.shared.stats().lost += 1;
        }
    }

    /// Starts the account's manager under `held` on the fleet's task set.
    fn spawn(&mut self, account: AccountId, held: Arc<Held>) {
        let factory = Arc::clone(&self.fleet.factory);
        let storage = Arc::clone(&self.fleet.storage);
        let config = self.fleet.config.manager.clone();
        let shared = Arc::clone(&self.fleet.shared);
        let pool = self.pool.clone();
        let task = self.tasks.spawn(async move {
            let built = tokio::select! {
                () = held.lost.cancelled() => return (account, Err(Stop::Run(lost_error(&held)))),
                built = factory.build(account) => built,
            };
            let (api, handler) = match built {
                Ok(built) => built,
                Err(error) => return (account, Err(Stop::Build(error))),
            };
            let manager = Manager::with_config(account, api, storage, handler, config)
                .with_pool(&pool)
                .with_held_lease(held);
            let handle = manager.handle();
            shared.managers().insert(account, handle.clone());
            // A fleet that began to stop after this build started has shut down the
            // managers it knew: this one, inserted since, shuts itself down (the insert comes
            // before the check, and the fleet cancels before it looks).
            if shared.cancel.is_cancelled() {
                handle.shutdown();
            }
            factory.started(account, handle);
            let outcome = manager.run().await.map_err(Stop::Run);
            shared.managers().remove(&account);
            (account, outcome)
        });
        self.task_accounts.insert(task.id(), account);
    }

    /// A manager task ended: release, restart later, or forget the account.
    async fn ended(&mut self, ended: Result<(tokio::task::Id, Ended), tokio::task::JoinError>) {
        let (account, outcome) = match ended {
            Ok((id, ended)) => {
                self.task_accounts.remove(&id);
                ended
            }
            Err(error) => {
                // The manager task panicked (a bug, ours or a handler's that escaped): start
                // the account again later, like a retryable stop.
                let Some(account) = self.task_accounts.remove(&error.id()) else {
                    return;
                };
                tracing::error!(account, %error, "a fleet manager task failed");
                self.fleet.shared.managers().remove(&account);
                (account, Err(Stop::Build(error.to_string().into())))
            }
        };
        let Some(slot) = self.slots.get_mut(&account) else {
            return;
        };
        let config = &self.fleet.config;
        match outcome {
            _ if slot.held.lost.is_cancelled() => {
                tracing::warn!(account, "account lease lost: the manager stopped");
                self.slots.remove(&account);
                self.fleet.shared.stats().lost += 1;
            }
            _ if slot.phase == Phase::Stopping => self.release(account).await,
            Ok(_) => {
                // Shut down through its own handle: started again like a retryable stop.
                self.wait_to_restart(account);
            }
            Err(Stop::Run(error)) if !error.is_retryable() => {
                tracing::error!(account, %error, "account stopped for good; left alone for a while");
                self.fleet.shared.stats().failed += 1;
                self.benched
                    .insert(account, Instant::now() + config.restart_max);
                self.release(account).await;
            }
            Err(Stop::Run(error)) => {
                tracing::warn!(account, %error, "account stopped; starting it again later");
                self.wait_to_restart(account);
            }
            Err(Stop::Build(error)) => {
                tracing::warn!(account, %error, "cannot build the account; trying again later");
                self.wait_to_restart(account);
            }
        }
        self.publish();
    }

    fn wait_to_restart(&mut self, account: AccountId) {
        let policy = Policy {
            base: self.fleet.config.restart_base,
            max: self.fleet.config.restart_max,
        };
        if let Some(slot) = self.slots.get_mut(&account) {
            let delay = self.jitter.backoff(policy, slot.failures);
            slot.failures = slot.failures.saturating_add(1);
            slot.phase = Phase::Waiting(Instant::now() + delay);
        }
    }

    async fn release(&mut self, account: AccountId) {
        if let Some(slot) = self.slots.remove(&account) {
            self.fleet.shared.stats().released += 1;
            if let Err(error) = self.fleet.storage.release(&slot.held.lease).await {
                tracing::warn!(account, %error, "lease not released: it expires on its own");
            }
        }
    }

    /// Stops every manager (renewing their leases meanwhile), releases every lease, leaves the
    /// registry.
    async fn stop_all(&mut self) {
        let config = &self.fleet.config;
        for handle in self.fleet.shared.managers().values() {
            handle.shutdown();
        }
        for slot in self.slots.values_mut() {
            if slot.phase == Phase::Running {
                slot.phase = Phase::Stopping;
            }
        }
        let mut renewals =
            tokio::time::interval_at(Instant::now() + config.renew_every, config.renew_every);
        while !self.tasks.is_empty() {
            tokio::select! {
                Some(ended) = self.tasks.join_next_with_id() => self.ended(ended).await,
                _ = renewals.tick() => self.renew().await,
            }
        }
        let accounts: Vec<AccountId> = self.slots.keys().copied().collect();
        for account in accounts {
            self.release(account).await;
        }
        if let Err(error) = self.fleet.storage.leave(&config.member).await {
            tracing::warn!(%error, "cannot leave the registry: the heartbeat expires on its own");
        }
        self.publish();
        tracing::info!("fleet stopped");
    }

    fn publish(&mut self) {
        let stats = {
            let mut stats = self.fleet.shared.stats();
            stats.members = self.members.len();
            stats.accounts = self.accounts.len();
            stats.assigned = self.assigned.len();
            stats.running = self.slots.len();
            *stats
        };
        #[cfg(feature = "metrics")]
        self.series.publish(&stats);
        #[cfg(not(feature = "metrics"))]
        let _ = stats;
    }
}

/// The fleet's series in the `metrics` facade (feature `metrics`), labelled with the member
/// and the managers' extra labels (`docs/METRICS.md`).
#[cfg(feature = "metrics")]
struct FleetSeries {
    members: metrics::Gauge,
    accounts: metrics::Gauge,
    assigned: metrics::Gauge,
    running: metrics::Gauge,
    claimed: metrics::Counter,
    released: metrics::Counter,
    restarts: metrics::Counter,
    lost: metrics::Counter,
    failed: metrics::Counter,
    /// What the counters were last given, so each publication adds only what is new.
    published: FleetStats,
}

#[cfg(feature = "metrics")]
impl FleetSeries {
    fn new(config: &FleetConfig) -> Self {
        let mut labels: Vec<metrics::Label> = config
            .manager
            .metrics
            .labels
            .iter()
            .map(|(key, value)| metrics::Label::new(key.clone(), value.clone()))
            .collect();
        labels.push(metrics::Label::new("member", config.member.to_string()));
        Self {
            members: metrics::gauge!("sync_fleet_members", labels.clone()),
            accounts: metrics::gauge!("sync_fleet_accounts_registered", labels.clone()),
            assigned: metrics::gauge!("sync_fleet_accounts_assigned", labels.clone()),
            running: metrics::gauge!("sync_fleet_accounts_running", labels.clone()),
            claimed: metrics::counter!("sync_fleet_claims_total", labels.clone()),
            released: metrics::counter!("sync_fleet_releases_total", labels.clone()),
            restarts: metrics::counter!("sync_fleet_restarts_total", labels.clone()),
            lost: metrics::counter!("sync_fleet_leases_lost_total", labels.clone()),
            failed: metrics::counter!("sync_fleet_accounts_failed_total", labels),
            published: FleetStats::default(),
        }
    }

    fn publish(&mut self, stats: &FleetStats) {
        self.members.set(stats.members as f64);
        self.accounts.set(stats.accounts as f64);
        self.assigned.set(stats.assigned as f64);
        self.running.set(stats.running as f64);
        let last = self.published;
        self.claimed
            .increment(stats.claimed.saturating_sub(last.claimed));
        self.released
            .increment(stats.released.saturating_sub(last.released));
        self.restarts
            .increment(stats.restarts.saturating_sub(last.restarts));
        self.lost.increment(stats.lost.saturating_sub(last.lost));
        self.failed
            .increment(stats.failed.saturating_sub(last.failed));
        self.published = *stats;
    }
}

/// The transport error every lease of a failed `renew_many` gets.
fn transport() -> sync_storage::Error {
    sync_storage::Error::Unavailable {
        backend: "fleet",
        source: "the renewal round trip failed".into(),
    }
}

fn lost_error(held: &Held) -> RunError {
    RunError::LeaseLost {
        token: held.lease.token,
        loss: held.loss().unwrap_or(LeaseLoss::Expired {
            last_error: "lost".into(),
        }),
    }
}
