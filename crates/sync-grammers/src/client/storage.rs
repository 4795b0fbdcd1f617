//! [`SessionStorage`]: the update state and access hashes of `sync-storage`, kept in a grammers
//! [`Session`] (its update state and its peer cache).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use grammers_session::Session;
use grammers_session::types::{
    ChannelState, PeerAuth, PeerId, PeerInfo, UpdateState, UpdatesState,
};
use sync_core::{ChannelId, Commit, State};
use sync_storage::{
    AccessHashStorage, AccountId, BackendError, Error, Result, StateStorage, UserId,
};
use tokio::sync::Mutex;

/// The `backend` named in errors.
const BACKEND: &str = "grammers-session";

/// `sync-storage`'s [`StateStorage`] and [`AccessHashStorage`] over a grammers [`Session`]
/// (a `SqliteSession` file, a `MemorySession`, or any other), for the one account the session
/// is logged into: an application moving from grammers' own update handling to a
/// `sync-runtime` manager keeps its session file, its update state and its cached peers.
///
/// | storage | session |
/// | --- | --- |
/// | common state (`pts`, `qts`, `date`, `seq`) | [`UpdatesState`]'s `pts`, `qts`, `date`, `seq` |
/// | each channel's pts | [`UpdatesState::channels`] |
/// | a channel's access hash | the peer cache's [`PeerInfo::Channel`] `auth` |
/// | a user's access hash | the peer cache's [`PeerInfo::User`] `auth` |
///
/// grammers stores "no common state" as zeros: a session whose `pts`, `qts`, `date` and `seq`
/// are all 0 (a new one) reads as never stored ([`StateStorage::get_state`] is `None`), so a
/// state of four zeros cannot be told from none (Telegram never sends one).
///
/// # The storage contract
///
/// Writes never move a sequence backwards unless they are resets, and a stale write is refused
/// whole with [`Error::Stale`], as for every backend: the checks run here, against what the
/// session holds, since a [`Session`] stores whatever it is given.
///
/// **Atomic**: every commit ([`StateStorage::apply`]) is one call to
/// [`Session::set_update_state`]: [`UpdateState::Channel`] when it moves a single channel and
/// nothing else, otherwise [`UpdateState::All`] with the whole new state (common state and
/// every channel), so that it lands whole as far as the session's one write does (one mutex
/// in `MemorySession`, one transaction in `SqliteSession`). [`StateStorage::delete`] is one
/// `All` write of the empty state. Checking and writing happen under a lock held by this value
/// and its clones, so their writes never interleave.
///
/// **Not atomic**:
///
/// - The lock is this storage's own: anything else writing the same session's update state
///   meanwhile (grammers' own update stream, or `Client::iter_dialogs`, which stores the pts
///   of the channels it lists) may be overwritten by the next `All` write, or may itself move
///   a channel backwards. Run one manager over the session, and not grammers' update stream.
/// - A batch of access hashes ([`AccessHashStorage::set_access_hashes`]) is
///   [`Session::cache_peers`], which both of grammers' storages run one peer at a time: an
///   error part-way leaves the first ones written (each hash is still whole, and last-write-
///   wins makes a retry harmless).
///
/// # Errors
///
/// Never panics. A failed session read is [`Error::Unavailable`]; a failed write is
/// [`Error::Ambiguous`], since the [`Session`] trait does not say whether a failed write left
/// anything behind (`SqliteSession` rolls back). Calls for another account than the session's
/// are [`Error::Config`], and so are access hashes for ids grammers cannot represent (outside
/// Telegram's id ranges; reading one gives `None`) and
/// [`AccessHashStorage::delete_access_hashes`]: a session's peer cache cannot forget peers
/// (to forget an account, sign out and delete the session).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use grammers_session::storages::MemorySession;
/// use sync_grammers::client::SessionStorage;
/// use sync_storage::StateStorage;
///
/// let session = Arc::new(MemorySession::default());
/// let me = 777_000; // the logged-in user, e.g. `client.get_me().await?.raw.id()`
/// let storage = SessionStorage::new(session, me);
/// let snapshot = storage.load(me).await?;
/// # let _ = snapshot;
/// # Ok(())
/// # }
/// ```
pub struct SessionStorage<S> {
    session: Arc<S>,
    account: AccountId,
    write: Arc<Mutex<()>>,
}

impl<S> Clone for SessionStorage<S> {
    fn clone(&self) -> Self {
        Self {
            session: Arc::clone(&self.session),
            account: self.account,
            write: Arc::clone(&self.write),
        }
    }
}

impl<S> std::fmt::Debug for SessionStorage<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStorage")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl<S: Session> SessionStorage<S> {
    /// Storage over `session`, which is logged into `account` (the logged-in user's id, as
    /// given to the manager).
    pub fn new(session: Arc<S>, account: AccountId) -> Self {
        Self {
            session,
            account,
            write: Arc::new(Mutex::new(())),
        }
    }

    /// The session it stores into.
    pub fn session(&self) -> &Arc<S> {
        &self.session
    }

    /// The account it stores for.
    pub fn account(&self) -> AccountId {
        self.account
    }

    fn check_account(&self, account: AccountId) -> Result<()> {
        if account == self.account {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "this grammers session storage holds account {}, not {account}",
                self.account
            )))
        }
    }
}

impl<S> SessionStorage<S>
where
    S: Session,
    S::Error: Into<BackendError>,
{
    async fn read_state(&self) -> Result<UpdatesState> {
        self.session.updates_state().await.map_err(unavailable)
    }

    async fn write_state(&self, update: UpdateState) -> Result<()> {
        self.session
            .set_update_state(update)
            .await
            .map_err(ambiguous)
    }

    async fn peer(&self, peer: Option<PeerId>) -> Result<Option<PeerInfo>> {
        match peer {
            Some(peer) => self.session.peer(peer).await.map_err(unavailable),
            None => Ok(None),
        }
    }

    async fn cache(&self, peers: Vec<PeerInfo>) -> Result<()> {
        if peers.is_empty() {
            return Ok(());
        }
        self.session.cache_peers(peers).await.map_err(ambiguous)
    }

    async fn apply_commit(&self, account: AccountId, commit: &Commit) -> Result<()> {
        self.check_account(account)?;
        if commit.state.is_none()
            && commit.channels.is_empty()
            && commit.removed_channels.is_empty()
        {
            return Ok(());
        }
        let _write = self.write.lock().await;
        let stored = self.read_state().await?;
        let next = plan(account, &stored, commit)?;
        let single_channel = commit.state.is_none()
            && commit.removed_channels.is_empty()
            && commit.channels.len() == 1;
        let update = match commit.channels.first() {
            Some(entry) if single_channel => UpdateState::Channel {
                id: entry.channel_id,
                pts: entry.pts,
            },
            _ => UpdateState::All(next),
        };
        self.write_state(update).await
    }
}

/// The common state a session holds, `None` for grammers' "nothing" (all zeros).
fn common_state(stored: &UpdatesState) -> Option<State> {
    let state = State {
        pts: stored.pts,
        qts: stored.qts,
        date: stored.date,
        seq: stored.seq,
    };
    (state != State::default()).then_some(state)
}

/// Every channel's pts (a later entry for the same channel wins).
fn channel_map(stored: &UpdatesState) -> BTreeMap<ChannelId, i32> {
    stored.channels.iter().map(|c| (c.id, c.pts)).collect()
}

/// The session's whole update state after `commit`, or the first rule it breaks: removed
/// channels first, then the state, then each channel in order, as the storage contract says.
fn plan(account: AccountId, stored: &UpdatesState, commit: &Commit) -> Result<UpdatesState> {
    let mut channels = channel_map(stored);
    let checked = sync_storage::rules::plan(account, commit, common_state(stored), |channel| {
        Ok(channels.get(&channel).copied())
    })?;
    for (channel, pts) in checked.channels {
        match pts {
            Some(pts) => channels.insert(channel, pts),
            None => channels.remove(&channel),
        };
    }
    let state = checked.state.or_else(|| common_state(stored));
    let state = state.unwrap_or_default();
    Ok(UpdatesState {
        pts: state.pts,
        qts: state.qts,
        date: state.date,
        seq: state.seq,
        channels: channels
            .into_iter()
            .map(|(id, pts)| ChannelState { id, pts })
            .collect(),
    })
}

fn unavailable(error: impl Into<BackendError>) -> Error {
    Error::Unavailable {
        backend: BACKEND,
        source: error.into(),
    }
}

fn ambiguous(error: impl Into<BackendError>) -> Error {
    Error::Ambiguous {
        backend: BACKEND,
        source: error.into(),
    }
}

/// The session's id of a channel, `None` outside Telegram's channel id ranges.
///
/// grammers' `PeerId::channel` computes its id before checking the range, which overflows (a
/// panic in debug builds) for ids near `i64::MAX`: the range is checked here first.
pub(crate) fn channel_id(id: i64) -> Option<PeerId> {
    const SUPERGROUPS_AND_CHANNELS: std::ops::RangeInclusive<i64> = 1..=997_852_516_352;
    const MONOFORUMS: std::ops::RangeInclusive<i64> = 1_002_147_483_649..=3_000_000_000_000;
    if SUPERGROUPS_AND_CHANNELS.contains(&id) || MONOFORUMS.contains(&id) {
        PeerId::channel(id)
    } else {
        None
    }
}

fn invalid_id(kind: &str, id: i64) -> Error {
    Error::Config(format!(
        "{id} is not a {kind} id a grammers session can store"
    ))
}

/// The access hash a cached peer holds.
fn auth_hash(info: Option<PeerInfo>) -> Option<i64> {
    info.and_then(|info| match info {
        PeerInfo::User { auth, .. } | PeerInfo::Channel { auth, .. } => auth.map(PeerAuth::hash),
        PeerInfo::Chat { .. } => None,
    })
}

impl<S> StateStorage for SessionStorage<S>
where
    S: Session,
    S::Error: Into<BackendError>,
{
    async fn get_state(&self, account: AccountId) -> Result<Option<State>> {
        self.check_account(account)?;
        Ok(common_state(&self.read_state().await?))
    }

    async fn get_channel_pts(&self, account: AccountId, channel: ChannelId) -> Result<Option<i32>> {
        self.check_account(account)?;
        Ok(channel_map(&self.read_state().await?)
            .get(&channel)
            .copied())
    }

    async fn channels(&self, account: AccountId) -> Result<BTreeMap<ChannelId, i32>> {
        self.check_account(account)?;
        Ok(channel_map(&self.read_state().await?))
    }

    fn apply(
        &self,
        account: AccountId,
        commit: &Commit,
    ) -> impl Future<Output = Result<()>> + Send {
        self.apply_commit(account, commit)
    }

    async fn load(&self, account: AccountId) -> Result<sync_storage::Snapshot> {
        self.check_account(account)?;
        // One read: the state and the channels come from the same moment.
        let stored = self.read_state().await?;
        Ok(sync_storage::Snapshot {
            state: common_state(&stored),
            channels: channel_map(&stored),
        })
    }

    async fn delete(&self, account: AccountId) -> Result<()> {
        self.check_account(account)?;
        let _write = self.write.lock().await;
        self.write_state(UpdateState::All(UpdatesState::default()))
            .await
    }
}

impl<S> AccessHashStorage for SessionStorage<S>
where
    S: Session,
    S::Error: Into<BackendError>,
{
    async fn get_access_hash(&self, account: AccountId, channel: ChannelId) -> Result<Option<i64>> {
        self.check_account(account)?;
        Ok(auth_hash(self.peer(channel_id(channel)).await?))
    }

    fn set_access_hashes(
        &self,
        account: AccountId,
        hashes: &[(ChannelId, i64)],
    ) -> impl Future<Output = Result<()>> + Send {
        // Every id is checked before anything is written.
        let peers = hashes
            .iter()
            .map(|&(id, hash)| match channel_id(id) {
                Some(_) => Ok(PeerInfo::Channel {
                    id,
                    auth: Some(PeerAuth::from_hash(hash)),
                    kind: None,
                }),
                None => Err(invalid_id("channel", id)),
            })
            .collect::<Result<Vec<_>>>();
        async move {
            self.check_account(account)?;
            self.cache(peers?).await
        }
    }

    async fn get_user_access_hash(&self, account: AccountId, user: UserId) -> Result<Option<i64>> {
        self.check_account(account)?;
        Ok(auth_hash(self.peer(PeerId::user(user)).await?))
    }

    fn set_user_access_hashes(
        &self,
        account: AccountId,
        hashes: &[(UserId, i64)],
    ) -> impl Future<Output = Result<()>> + Send {
        let peers = hashes
            .iter()
            .map(|&(id, hash)| match PeerId::user(id) {
                Some(_) => Ok(PeerInfo::User {
                    id,
                    auth: Some(PeerAuth::from_hash(hash)),
                    bot: None,
                    is_self: None,
                }),
                None => Err(invalid_id("user", id)),
            })
            .collect::<Result<Vec<_>>>();
        async move {
            self.check_account(account)?;
            self.cache(peers?).await
        }
    }

    fn delete_access_hashes(&self, account: AccountId) -> impl Future<Output = Result<()>> + Send {
        let outcome = self.check_account(account).and_then(|()| {
            Err(Error::Config(
                "a grammers session's peer cache cannot forget peers: sign out and delete the \
                 session instead"
                    .to_owned(),
            ))
        });
        std::future::ready(outcome)
    }
}
