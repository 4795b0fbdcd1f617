//! The in-memory backend.

use std::collections::{BTreeMap, HashMap};
use std::future::{Future, ready};
use std::sync::{Mutex, MutexGuard};

use sync_core::{ChannelId, Commit, State};

use crate::{AccessHashStorage, AccountId, Result, Snapshot, StateStorage, UserId, rules};

#[derive(Debug, Default)]
struct Account {
    state: Option<State>,
    channels: BTreeMap<ChannelId, i32>,
    access_hashes: HashMap<ChannelId, i64>,
    user_access_hashes: HashMap<UserId, i64>,
}

/// Keeps everything in the process's memory: fast, shared by clones of an `Arc`, gone at exit.
///
/// Every operation takes one mutex for a few map operations and never awaits while holding
/// it, so the futures complete on their first poll and need no particular executor.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    accounts: Mutex<HashMap<AccountId, Account>>,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<AccountId, Account>> {
        // A panic while holding the lock cannot leave an account half-written: `apply` checks
        // everything before its first write and the writes themselves do not panic. So the
        // data behind a poisoned lock is still consistent and we keep serving it.
        self.accounts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
        let mut accounts = self.lock();
        let stored = accounts.entry(account).or_default();
        // Atomicity: `plan` checks the whole commit against the stored values before anything
        // is written, and the mutex keeps other writers out between the check and the writes.
        let outcome = rules::plan(account, commit, stored.state, |channel| {
            Ok(stored.channels.get(&channel).copied())
        })
        .map(|plan| {
            if let Some(state) = plan.state {
                stored.state = Some(state);
            }
            for (channel, pts) in plan.channels {
                match pts {
                    Some(pts) => stored.channels.insert(channel, pts),
                    None => stored.channels.remove(&channel),
                };
            }
        });
        ready(outcome)
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
