//! The embedded, persistent backend: one redb file on disk.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use sync_core::{ChannelId, Commit, State};

use crate::{AccessHashStorage, AccountId, Error, Result, Snapshot, StateStorage, UserId, rules};

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
#[derive(Debug, Clone)]
pub struct FileStorage {
    db: Arc<Database>,
}

impl FileStorage {
    /// Opens the store at `path`, creating the file if it does not exist.
    ///
    /// Blocking (it may recover the file after a crash): call it at startup, or inside
    /// `spawn_blocking`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
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
        }
        txn.commit().map_err(|e| map_err(e.into()))?;
        Ok(Self { db: Arc::new(db) })
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
        let commit = commit.clone();
        self.run(move |db| {
            let txn = db.begin_write().map_err(e)?;
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
