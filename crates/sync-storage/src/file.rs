//! The embedded, persistent backend: one redb file on disk.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use sync_core::{ChannelId, Commit, State};

use crate::lease::{Acquired, Clock, FencingToken, Lease, LeaseInfo, LeaseRecord, SystemClock};
use crate::{
    AccessHashStorage, AccountId, Error, LeaseStorage, RegistryStorage, Result, Snapshot,
    StateStorage, UserId, rules,
};

const BACKEND: &str = "file";

/// account → (pts, qts, date, seq).
const STATE: TableDefinition<'_, i64, (i32, i32, i32, i32)> = TableDefinition::new("state");
/// (account, channel) → pts.
const CHANNELS: TableDefinition<'_, (i64, i64), i32> = TableDefinition::new("channel_pts");
/// (account, channel) → access hash.
const ACCESS_HASHES: TableDefinition<'_, (i64, i64), i64> = TableDefinition::new("access_hashes");
/// (account, user) → access hash.
const USER_ACCESS_HASHES: TableDefinition<'_, (i64, i64), i64> =
    TableDefinition::new("user_access_hashes");
/// account → the last fencing token given out. Its own table, which no delete touches: the
/// token must never go back, whatever happens to the state.
const FENCES: TableDefinition<'_, i64, u64> = TableDefinition::new("lease_fences");
/// account → (holder, end of its lease in milliseconds on the storage's clock). A missing row
/// is a free lease; an ended one counts as free too (see `LeaseRecord::live_holder`).
const LEASES: TableDefinition<'_, i64, (&str, u64)> = TableDefinition::new("lease_holders");
/// Registered accounts (a set: the value is unused).
const REGISTRY_ACCOUNTS: TableDefinition<'_, i64, ()> = TableDefinition::new("registry_accounts");
/// Live members → end of their heartbeat in milliseconds on the storage's clock.
const REGISTRY_MEMBERS: TableDefinition<'_, &str, u64> = TableDefinition::new("registry_members");

/// Keeps the state in one file on disk with [redb]: for a single process that must survive
/// restarts without an external service.
///
/// Every write is one redb write transaction committed with immediate durability: when a
/// write returns `Ok` its data has been fsynced, and a crash at any moment leaves the file
/// with either all or none of a commit (redb's copy-on-write pages and checksummed commit
/// slots). The file is locked: a second process (or a second `open` of the same path)
/// gets [`Error::Unavailable`].
///
/// redb is blocking, so each call runs on tokio's blocking thread pool
/// (`spawn_blocking`): the methods must be awaited inside a tokio runtime. Writes are
/// serialised by redb (one write transaction at a time); reads run alongside them.
///
/// Leases ([`LeaseStorage`]) and the registry ([`RegistryStorage`]) live in the same file and
/// expire on a [`Clock`]: the system's, or the one given to [`FileStorage::open_with_clock`].
/// Every lease operation is one write transaction, and [`LeaseStorage::apply_fenced`] checks
/// the token in the commit's own transaction. The last token of each account is kept in a
/// table of its own that [`StateStorage::delete`] does not touch, so it never goes back.
#[derive(Debug, Clone)]
pub struct FileStorage {
    db: Arc<Database>,
    clock: Arc<dyn Clock>,
}

impl FileStorage {
    /// Opens the store at `path`, creating the file if it does not exist.
    ///
    /// Blocking (it may recover the file after a crash): call it at startup, or inside
    /// `spawn_blocking`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with_clock(path, SystemClock)
    }

    /// [`FileStorage::open`], with leases and heartbeats expiring on `clock` (a
    /// [`ManualClock`](crate::lease::ManualClock) in tests of expiry). A clock must not run
    /// behind the one that wrote the file before, or stored leases last longer.
    pub fn open_with_clock(path: impl AsRef<Path>, clock: impl Clock) -> Result<Self> {
        let db = Database::create(path.as_ref()).map_err(|e| map_err(e.into()))?;
        // Create the tables up front so that reads never meet a missing table.
        let txn = db.begin_write().map_err(|e| map_err(e.into()))?;
        {
            txn.open_table(STATE).map_err(|e| map_err(e.into()))?;
            txn.open_table(CHANNELS).map_err(|e| map_err(e.into()))?;
            txn.open_table(ACCESS_HASHES)
                .map_err(|e| map_err(e.into()))?;
            txn.open_table(USER_ACCESS_HASHES)
                .map_err(|e| map_err(e.into()))?;
            txn.open_table(FENCES).map_err(|e| map_err(e.into()))?;
            txn.open_table(LEASES).map_err(|e| map_err(e.into()))?;
            txn.open_table(REGISTRY_ACCOUNTS)
                .map_err(|e| map_err(e.into()))?;
            txn.open_table(REGISTRY_MEMBERS)
                .map_err(|e| map_err(e.into()))?;
        }
        txn.commit().map_err(|e| map_err(e.into()))?;
        Ok(Self {
            db: Arc::new(db),
            clock: Arc::new(clock),
        })
    }

    /// Checks the token (if any) and the whole commit, then writes it: one write transaction.
    fn commit(
        &self,
        account: AccountId,
        token: Option<FencingToken>,
        commit: &Commit,
    ) -> impl Future<Output = Result<()>> + Send {
        let commit = commit.clone();
        self.run(move |db| {
            let txn = db.begin_write().map_err(e)?;
            // Fencing: the token is read in the commit's own transaction, and redb runs one
            // write transaction at a time, so no acquisition can land between this check and
            // the commit's writes.
            if let Some(token) = token {
                read_lease(&txn, account)?.check(account, token)?;
            }
            {
                let mut state = txn.open_table(STATE).map_err(e)?;
                let mut channels = txn.open_table(CHANNELS).map_err(e)?;
                let stored = state.get(account).map_err(e)?.map(|v| to_state(v.value()));
                // Atomicity: everything is checked before the first write, and the writes
                // happen in one transaction; returning early drops (aborts) it.
                let plan = rules::plan(account, &commit, stored, |channel| {
                    Ok(channels
                        .get((account, channel))
                        .map_err(e)?
                        .map(|v| v.value()))
                })?;
                if let Some(s) = plan.state {
                    state
                        .insert(account, (s.pts, s.qts, s.date, s.seq))
                        .map_err(e)?;
                }
                for (channel, pts) in plan.channels {
                    match pts {
                        Some(pts) => channels.insert((account, channel), pts).map_err(e)?,
                        None => channels.remove((account, channel)).map_err(e)?,
                    };
                }
            }
            // Durability: the default `Durability::Immediate` fsyncs before `commit` returns,
            // so an acknowledged commit survives a crash.
            txn.commit().map_err(e)
        })
    }

    /// Reads the account's lease record, changes it with `change` on the clock's `now`, and
    /// writes it back: one write transaction, so the rule runs on what is stored.
    fn update_lease<T: Send + 'static>(
        &self,
        account: AccountId,
        change: impl FnOnce(&mut LeaseRecord, Duration) -> Result<T> + Send + 'static,
    ) -> impl Future<Output = Result<T>> + Send {
        let clock = Arc::clone(&self.clock);
        self.run(move |db| {
            let txn = db.begin_write().map_err(e)?;
            let mut record = read_lease(&txn, account)?;
            let before = record.clone();
            let outcome = change(&mut record, clock.now())?;
            if record != before {
                write_lease(&txn, account, &record)?;
                txn.commit().map_err(e)?;
            }
            Ok(outcome)
        })
    }

    /// Runs blocking redb work on tokio's blocking pool.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(|join| Error::Unavailable {
                backend: BACKEND,
                source: Box::new(join),
            })?
    }
}

fn map_err(error: redb::Error) -> Error {
    match error {
        redb::Error::Corrupted(detail) => Error::Corrupt {
            backend: BACKEND,
            location: "database file".into(),
            detail,
        },
        error @ (redb::Error::TableTypeMismatch { .. }
        | redb::Error::TypeDefinitionChanged { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TableIsNotMultimap(_)) => Error::Corrupt {
            backend: BACKEND,
            location: "database schema".into(),
            detail: error.to_string(),
        },
        other => Error::Unavailable {
            backend: BACKEND,
            source: Box::new(other),
        },
    }
}

/// Shorthand for the many redb error types, which all convert into `redb::Error`.
fn e(error: impl Into<redb::Error>) -> Error {
    map_err(error.into())
}

fn to_state((pts, qts, date, seq): (i32, i32, i32, i32)) -> State {
    State {
        pts,
        qts,
        date,
        seq,
    }
}

fn read_channels(
    table: &impl ReadableTable<(i64, i64), i32>,
    account: AccountId,
) -> Result<BTreeMap<ChannelId, i32>> {
    let mut channels = BTreeMap::new();
    for entry in table
        .range((account, i64::MIN)..=(account, i64::MAX))
        .map_err(e)?
    {
        let (key, pts) = entry.map_err(e)?;
        channels.insert(key.value().1, pts.value());
    }
    Ok(channels)
}

impl StateStorage for FileStorage {
    fn get_state(&self, account: AccountId) -> impl Future<Output = Result<Option<State>>> + Send {
        self.run(move |db| {
            let txn = db.begin_read().map_err(e)?;
            let table = txn.open_table(STATE).map_err(e)?;
            Ok(table.get(account).map_err(e)?.map(|v| to_state(v.value())))
        })
    }

    fn get_channel_pts(
        &self,
        account: AccountId,
        channel: ChannelId,
    ) -> impl Future<Output = Result<Option<i32>>> + Send {
        self.run(move |db| {
            let txn = db.begin_read().map_err(e)?;
            let table = txn.open_table(CHANNELS).map_err(e)?;
            Ok(table.get((account, channel)).map_err(e)?.map(|v| v.value()))
        })
    }

    fn channels(
        &self,
        account: AccountId,
    ) -> impl Future<Output = Result<BTreeMap<ChannelId, i32>>> + Send {
        self.run(move |db| {
            let txn = db.begin_read().map_err(e)?;
            read_channels(&txn.open_table(CHANNELS).map_err(e)?, account)
        })
    }

    fn apply(
        &self,
        account: AccountId,
        commit: &Commit,
    ) -> impl Future<Output = Result<()>> + Send {
        self.commit(account, None, commit)
    }

    fn load(&self, account: AccountId) -> impl Future<Output = Result<Snapshot>> + Send {
        self.run(move |db| {
            // One read transaction: a consistent snapshot of state and channels.
            let txn = db.begin_read().map_err(e)?;
            let state = txn.open_table(STATE).map_err(e)?;
            let state = state.get(account).map_err(e)?.map(|v| to_state(v.value()));
            let channels = read_channels(&txn.open_table(CHANNELS).map_err(e)?, account)?;
            Ok(Snapshot { state, channels })
        })
    }

    fn delete(&self, account: AccountId) -> impl Future<Output = Result<()>> + Send {
        self.run(move |db| {
            // One write transaction: the state and every channel go together, or nothing does.
            let txn = db.begin_write().map_err(e)?;
            {
                txn.open_table(STATE)
                    .map_err(e)?
                    .remove(account)
                    .map_err(e)?;
                remove_account(&mut txn.open_table(CHANNELS).map_err(e)?, account)?;
            }
            txn.commit().map_err(e)
        })
    }
}

fn millis(time: Duration) -> u64 {
    u64::try_from(time.as_millis()).unwrap_or(u64::MAX)
}

/// The account's lease record, from its two tables (of a read or a write transaction).
fn lease_record(
    fences: &impl ReadableTable<i64, u64>,
    leases: &impl ReadableTable<i64, (&'static str, u64)>,
    account: AccountId,
) -> Result<LeaseRecord> {
    let token = fences.get(account).map_err(e)?.map_or(0, |v| v.value());
    let holder = leases.get(account).map_err(e)?.map(|v| {
        let (owner, until) = v.value();
        (owner.to_owned(), Duration::from_millis(until))
    });
    Ok(LeaseRecord { token, holder })
}

/// The account's lease record, inside a write transaction.
fn read_lease(txn: &redb::WriteTransaction, account: AccountId) -> Result<LeaseRecord> {
    lease_record(
        &txn.open_table(FENCES).map_err(e)?,
        &txn.open_table(LEASES).map_err(e)?,
        account,
    )
}

fn write_lease(
    txn: &redb::WriteTransaction,
    account: AccountId,
    record: &LeaseRecord,
) -> Result<()> {
    txn.open_table(FENCES)
        .map_err(e)?
        .insert(account, record.token)
        .map_err(e)?;
    let mut leases = txn.open_table(LEASES).map_err(e)?;
    match &record.holder {
        Some((owner, until)) => leases
            .insert(account, (owner.as_str(), millis(*until)))
            .map_err(e)?,
        None => leases.remove(account).map_err(e)?,
    };
    Ok(())
}

/// Removes every `(account, _)` entry of a table keyed by account and id.
fn remove_account<V: redb::Value + 'static>(
    table: &mut redb::Table<'_, (i64, i64), V>,
    account: AccountId,
) -> Result<()> {
    table
        .retain_in((account, i64::MIN)..=(account, i64::MAX), |_, _| false)
        .map_err(e)
}

impl AccessHashStorage for FileStorage {
    fn get_access_hash(
        &self,
        account: AccountId,
        channel: ChannelId,
    ) -> impl Future<Output = Result<Option<i64>>> + Send {
        self.run(move |db| {
            let txn = db.begin_read().map_err(e)?;
            let table = txn.open_table(ACCESS_HASHES).map_err(e)?;
            Ok(table.get((account, channel)).map_err(e)?.map(|v| v.value()))
        })
    }

    fn set_access_hashes(
        &self,
        account: AccountId,
        hashes: &[(ChannelId, i64)],
    ) -> impl Future<Output = Result<()>> + Send {
        let hashes = hashes.to_vec();
        self.run(move |db| {
            let txn = db.begin_write().map_err(e)?;
            {
                let mut table = txn.open_table(ACCESS_HASHES).map_err(e)?;
                for (channel, hash) in hashes {
                    table.insert((account, channel), hash).map_err(e)?;
                }
            }
            txn.commit().map_err(e)
        })
    }

    fn get_user_access_hash(
        &self,
        account: AccountId,
        user: UserId,
    ) -> impl Future<Output = Result<Option<i64>>> + Send {
        self.run(move |db| {
            let txn = db.begin_read().map_err(e)?;
            let table = txn.open_table(USER_ACCESS_HASHES).map_err(e)?;
            Ok(table.get((account, user)).map_err(e)?.map(|v| v.value()))
        })
    }

    fn set_user_access_hashes(
        &self,
        account: AccountId,
        hashes: &[(UserId, i64)],
    ) -> impl Future<Output = Result<()>> + Send {
        let hashes = hashes.to_vec();
        self.run(move |db| {
            let txn = db.begin_write().map_err(e)?;
            {
                let mut table = txn.open_table(USER_ACCESS_HASHES).map_err(e)?;
                for (user, hash) in hashes {
                    table.insert((account, user), hash).map_err(e)?;
                }
            }
            txn.commit().map_err(e)
        })
    }

    fn delete_access_hashes(&self, account: AccountId) -> impl Future<Output = Result<()>> + Send {
        self.run(move |db| {
            let txn = db.begin_write().map_err(e)?;
            {
                remove_account(&mut txn.open_table(ACCESS_HASHES).map_err(e)?, account)?;
                remove_account(&mut txn.open_table(USER_ACCESS_HASHES).map_err(e)?, account)?;
            }
            txn.commit().map_err(e)
        })
    }
}

impl LeaseStorage for FileStorage {
    fn acquire(
        &self,
        account: AccountId,
        owner: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<Acquired>> + Send {
        let owner = owner.to_owned();
        self.update_lease(account, move |record, now| {
            Ok(record.acquire(account, &owner, ttl, now))
        })
    }

    fn renew(&self, lease: &Lease) -> impl Future<Output = Result<()>> + Send {
        let lease = lease.clone();
        self.update_lease(lease.account, move |record, now| record.renew(&lease, now))
    }

    fn renew_many(&self, leases: &[Lease]) -> impl Future<Output = Result<Vec<Result<()>>>> + Send {
        let leases = leases.to_vec();
        let clock = Arc::clone(&self.clock);
        // One transaction (one fsync) for all of them: each lease is checked on its own.
        self.run(move |db| {
            let txn = db.begin_write().map_err(e)?;
            let now = clock.now();
            let mut results = Vec::with_capacity(leases.len());
            for lease in &leases {
                let mut record = read_lease(&txn, lease.account)?;
                let result = record.renew(lease, now);
                if result.is_ok() {
                    write_lease(&txn, lease.account, &record)?;
                }
                results.push(result);
            }
            txn.commit().map_err(e)?;
            Ok(results)
        })
    }

    fn release(&self, lease: &Lease) -> impl Future<Output = Result<()>> + Send {
        let lease = lease.clone();
        self.update_lease(lease.account, move |record, _| {
            record.release(&lease);
            Ok(())
        })
    }

    fn lease_holder(
        &self,
        account: AccountId,
    ) -> impl Future<Output = Result<Option<LeaseInfo>>> + Send {
        let clock = Arc::clone(&self.clock);
        self.run(move |db| {
            let txn = db.begin_read().map_err(e)?;
            let record = lease_record(
                &txn.open_table(FENCES).map_err(e)?,
                &txn.open_table(LEASES).map_err(e)?,
                account,
            )?;
            Ok(record.live_holder(clock.now()))
        })
    }

    fn apply_fenced(
        &self,
        account: AccountId,
        token: FencingToken,
        commit: &Commit,
    ) -> impl Future<Output = Result<()>> + Send {
        self.commit(account, Some(token), commit)
    }
}

impl RegistryStorage for FileStorage {
    fn register(&self, accounts: &[AccountId]) -> impl Future<Output = Result<()>> + Send {
        let accounts = accounts.to_vec();
        self.run(move |db| {
            let txn = db.begin_write().map_err(e)?;
            {
                let mut table = txn.open_table(REGISTRY_ACCOUNTS).map_err(e)?;
                for account in accounts {
                    table.insert(account, ()).map_err(e)?;
                }
            }
            txn.commit().map_err(e)
        })
    }

    fn unregister(&self, accounts: &[AccountId]) -> impl Future<Output = Result<()>> + Send {
        let accounts = accounts.to_vec();
        self.run(move |db| {
            let txn = db.begin_write().map_err(e)?;
            {
                let mut table = txn.open_table(REGISTRY_ACCOUNTS).map_err(e)?;
                for account in accounts {
                    table.remove(account).map_err(e)?;
                }
            }
            txn.commit().map_err(e)
        })
    }

    fn registered(&self) -> impl Future<Output = Result<Vec<AccountId>>> + Send {
        self.run(move |db| {
            let txn = db.begin_read().map_err(e)?;
            let table = txn.open_table(REGISTRY_ACCOUNTS).map_err(e)?;
            // redb keeps keys sorted: the listing is in ascending order.
            let mut accounts = Vec::new();
            for entry in table.iter().map_err(e)? {
                accounts.push(entry.map_err(e)?.0.value());
            }
            Ok(accounts)
        })
    }

    fn heartbeat(
        &self,
        member: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<Vec<String>>> + Send {
        let member = member.to_owned();
        let clock = Arc::clone(&self.clock);
        self.run(move |db| {
            let now = clock.now();
            let until = millis(now.saturating_add(ttl));
            let now = millis(now);
            let txn = db.begin_write().map_err(e)?;
            let mut live = Vec::new();
            {
                let mut table = txn.open_table(REGISTRY_MEMBERS).map_err(e)?;
                table.insert(member.as_str(), until).map_err(e)?;
                // Pruned here, as the Redis heartbeat does: a member whose beat ended is gone.
                table.retain(|_, until| until > now).map_err(e)?;
                for entry in table.iter().map_err(e)? {
                    live.push(entry.map_err(e)?.0.value().to_owned());
                }
            }
            txn.commit().map_err(e)?;
            Ok(live)
        })
    }

    fn leave(&self, member: &str) -> impl Future<Output = Result<()>> + Send {
        let member = member.to_owned();
        self.run(move |db| {
            let txn = db.begin_write().map_err(e)?;
            txn.open_table(REGISTRY_MEMBERS)
                .map_err(e)?
                .remove(member.as_str())
                .map_err(e)?;
            txn.commit().map_err(e)
        })
    }
}
