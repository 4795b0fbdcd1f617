//! The in-memory backend.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::{Future, ready};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sync_core::{ChannelId, Commit, State};

use crate::lease::{Acquired, Clock, FencingToken, Lease, LeaseInfo, LeaseRecord, SystemClock};
use crate::{
    AccessHashStorage, AccountId, LeaseStorage, RegistryStorage, Result, Snapshot, StateStorage,
    UserId, rules,
};

#[derive(Debug, Default)]
struct Account {
    state: Option<State>,
    channels: BTreeMap<ChannelId, i32>,
    access_hashes: HashMap<ChannelId, i64>,
    user_access_hashes: HashMap<UserId, i64>,
    /// Kept apart from the state: deleting the state never lowers the token.
    lease: LeaseRecord,
}

/// A fleet's registry: the accounts, and each live member with the end of its heartbeat.
#[derive(Debug, Default)]
struct Registry {
    accounts: BTreeSet<AccountId>,
    members: BTreeMap<String, Duration>,
}

/// Keeps everything in the process's memory: fast, shared by clones of an `Arc`, gone at exit.
///
/// Every operation takes one mutex for a few map operations and never awaits while holding
/// it, so the futures complete on their first poll and need no particular executor. Leases
/// and the registry (for the managers of one process) expire on a [`Clock`]: the system's,
/// or the one given to [`MemoryStorage::with_clock`].
#[derive(Debug)]
pub struct MemoryStorage {
    accounts: Mutex<HashMap<AccountId, Account>>,
    registry: Mutex<Registry>,
    clock: Arc<dyn Clock>,
}

impl Default for MemoryStorage {
    fn default() -> Self {
        Self::with_clock(SystemClock)
    }
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store whose leases and heartbeats expire on `clock` (a
    /// [`ManualClock`](crate::lease::ManualClock) in tests of expiry).
    pub fn with_clock(clock: impl Clock) -> Self {
        Self {
            accounts: Mutex::default(),
            registry: Mutex::default(),
            clock: Arc::new(clock),
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // Every registry change is a single map operation: a poisoned lock holds whole data.
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<AccountId, Account>> {
        // A panic while holding the lock cannot leave an account half-written: `apply` checks
        // everything before its first write and the writes themselves do not panic. So the
        // data behind a poisoned lock is still consistent and we keep serving it.
        self.accounts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Checks the token (if any) and the whole commit, then writes it, all under one lock.
    fn commit(
        &self,
        account: AccountId,
        token: Option<FencingToken>,
        commit: &Commit,
    ) -> Result<()> {
        let mut accounts = self.lock();
        let stored = accounts.entry(account).or_default();
        if let Some(token) = token {
            stored.lease.check(account, token)?;
        }
        // Atomicity: `plan` checks the whole commit against the stored values before anything
        // is written, and the mutex keeps other writers out between the check and the writes.
        let plan = rules::plan(account, commit, stored.state, |channel| {
            Ok(stored.channels.get(&channel).copied())
        })?;
        if let Some(state) = plan.state {
            stored.state = Some(state);
        }
        for (channel, pts) in plan.channels {
            match pts {
                Some(pts) => stored.channels.insert(channel, pts),
                None => stored.channels.remove(&channel),
            };
        }
        Ok(())
    }

    fn read<T>(&self, account: AccountId, f: impl FnOnce(&Account) -> T) -> T {
        let accounts = self.lock();
        match accounts.get(&account) {
            Some(stored) => f(stored),
            None => f(&Account::default()),
        }
    }
}

impl StateStorage for MemoryStorage {
    fn get_state(&self, account: AccountId) -> impl Future<Output = Result<Option<State>>> + Send {
        ready(Ok(self.read(account, |a| a.state)))
    }

    fn get_channel_pts(
        &self,
        account: AccountId,
        channel: ChannelId,
    ) -> impl Future<Output = Result<Option<i32>>> + Send {
        ready(Ok(self.read(account, |a| a.channels.get(&channel).copied())))
    }

    fn channels(
        &self,
        account: AccountId,
    ) -> impl Future<Output = Result<BTreeMap<ChannelId, i32>>> + Send {
        ready(Ok(self.read(account, |a| a.channels.clone())))
    }

    fn apply(
        &self,
        account: AccountId,
        commit: &Commit,
    ) -> impl Future<Output = Result<()>> + Send {
        ready(self.commit(account, None, commit))
    }

    fn load(&self, account: AccountId) -> impl Future<Output = Result<Snapshot>> + Send {
        ready(Ok(self.read(account, |a| Snapshot {
            state: a.state,
            channels: a.channels.clone(),
        })))
    }

    fn delete(&self, account: AccountId) -> impl Future<Output = Result<()>> + Send {
        let mut accounts = self.lock();
        if let Some(stored) = accounts.get_mut(&account) {
            stored.state = None;
            stored.channels.clear();
        }
        ready(Ok(()))
    }
}

impl AccessHashStorage for MemoryStorage {
    fn get_access_hash(
        &self,
        account: AccountId,
        channel: ChannelId,
    ) -> impl Future<Output = Result<Option<i64>>> + Send {
        ready(Ok(
            self.read(account, |a| a.access_hashes.get(&channel).copied())
        ))
    }

    fn set_access_hashes(
        &self,
        account: AccountId,
        hashes: &[(ChannelId, i64)],
    ) -> impl Future<Output = Result<()>> + Send {
        let mut accounts = self.lock();
        let stored = accounts.entry(account).or_default();
        stored.access_hashes.extend(hashes.iter().copied());
        ready(Ok(()))
    }

    fn get_user_access_hash(
        &self,
        account: AccountId,
        user: UserId,
    ) -> impl Future<Output = Result<Option<i64>>> + Send {
        ready(Ok(
            self.read(account, |a| a.user_access_hashes.get(&user).copied())
        ))
    }

    fn set_user_access_hashes(
        &self,
        account: AccountId,
        hashes: &[(UserId, i64)],
    ) -> impl Future<Output = Result<()>> + Send {
        let mut accounts = self.lock();
        let stored = accounts.entry(account).or_default();
        stored.user_access_hashes.extend(hashes.iter().copied());
        ready(Ok(()))
    }

    fn delete_access_hashes(&self, account: AccountId) -> impl Future<Output = Result<()>> + Send {
        let mut accounts = self.lock();
        if let Some(stored) = accounts.get_mut(&account) {
            stored.access_hashes.clear();
            stored.user_access_hashes.clear();
        }
        ready(Ok(()))
    }
}

impl LeaseStorage for MemoryStorage {
    fn acquire(
        &self,
        account: AccountId,
        owner: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<Acquired>> + Send {
        let now = self.clock.now();
        let mut accounts = self.lock();
        let stored = accounts.entry(account).or_default();
        ready(Ok(stored.lease.acquire(account, owner, ttl, now)))
    }

    fn renew(&self, lease: &Lease) -> impl Future<Output = Result<()>> + Send {
        let now = self.clock.now();
        let mut accounts = self.lock();
        let stored = accounts.entry(lease.account).or_default();
        ready(stored.lease.renew(lease, now))
    }

    fn release(&self, lease: &Lease) -> impl Future<Output = Result<()>> + Send {
        let mut accounts = self.lock();
        if let Some(stored) = accounts.get_mut(&lease.account) {
            stored.lease.release(lease);
        }
        ready(Ok(()))
    }

    fn lease_holder(
        &self,
        account: AccountId,
    ) -> impl Future<Output = Result<Option<LeaseInfo>>> + Send {
        let now = self.clock.now();
        ready(Ok(self.read(account, |a| a.lease.live_holder(now))))
    }

    fn apply_fenced(
        &self,
        account: AccountId,
        token: FencingToken,
        commit: &Commit,
    ) -> impl Future<Output = Result<()>> + Send {
        ready(self.commit(account, Some(token), commit))
    }
}

impl RegistryStorage for MemoryStorage {
    fn register(&self, accounts: &[AccountId]) -> impl Future<Output = Result<()>> + Send {
        self.registry().accounts.extend(accounts.iter().copied());
        ready(Ok(()))
    }

    fn unregister(&self, accounts: &[AccountId]) -> impl Future<Output = Result<()>> + Send {
        let mut registry = self.registry();
        for account in accounts {
            registry.accounts.remove(account);
        }
        ready(Ok(()))
    }

    fn registered(&self) -> impl Future<Output = Result<Vec<AccountId>>> + Send {
        ready(Ok(self.registry().accounts.iter().copied().collect()))
    }

    fn heartbeat(
        &self,
        member: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<Vec<String>>> + Send {
        let now = self.clock.now();
        let mut registry = self.registry();
        registry
            .members
            .insert(member.to_owned(), now.saturating_add(ttl));
        registry.members.retain(|_, until| *until > now);
        ready(Ok(registry.members.keys().cloned().collect()))
    }

    fn leave(&self, member: &str) -> impl Future<Output = Result<()>> + Send {
        self.registry().members.remove(member);
        ready(Ok(()))
    }
}
