//! `SessionStorage` over grammers' `MemorySession`: sync-storage's contract functions, and
//! what is particular to a session.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};

use grammers_session::Session;
use grammers_session::storages::MemorySession;
use grammers_session::types::{PeerAuth, PeerId, PeerInfo, UpdateState, UpdatesState};
use sync_core::{ChannelCommit, ChannelId, Commit, State};
use sync_grammers::client::SessionStorage;
use sync_storage::{
    AccessHashStorage, AccountId, Error, Result, Snapshot, StaleSequence, StateStorage, UserId,
    WriteMode,
};

use crate::common;

/// One `SessionStorage` per account, each over its own `MemorySession`, as an application
/// with several accounts would have (one session file each): the contract functions name
/// many accounts.
#[derive(Default)]
struct Sessions {
    accounts: Mutex<HashMap<AccountId, SessionStorage<MemorySession>>>,
}

impl Sessions {
    fn of(&self, account: AccountId) -> SessionStorage<MemorySession> {
        self.accounts
            .lock()
            .unwrap()
            .entry(account)
            .or_insert_with(|| SessionStorage::new(Arc::new(MemorySession::default()), account))
            .clone()
    }
}

impl StateStorage for Sessions {
    fn get_state(&self, account: AccountId) -> impl Future<Output = Result<Option<State>>> + Send {
        let s = self.of(account);
        async move { s.get_state(account).await }
    }

    fn get_channel_pts(
        &self,
        account: AccountId,
        channel: ChannelId,
    ) -> impl Future<Output = Result<Option<i32>>> + Send {
        let s = self.of(account);
        async move { s.get_channel_pts(account, channel).await }
    }

    fn channels(
        &self,
        account: AccountId,
    ) -> impl Future<Output = Result<BTreeMap<ChannelId, i32>>> + Send {
        let s = self.of(account);
        async move { s.channels(account).await }
    }

    fn apply(
        &self,
        account: AccountId,
        commit: &Commit,
    ) -> impl Future<Output = Result<()>> + Send {
        let s = self.of(account);
        let commit = commit.clone();
        async move { s.apply(account, &commit).await }
    }

    fn load(&self, account: AccountId) -> impl Future<Output = Result<Snapshot>> + Send {
        let s = self.of(account);
        async move { s.load(account).await }
    }

    fn delete(&self, account: AccountId) -> impl Future<Output = Result<()>> + Send {
        let s = self.of(account);
        async move { s.delete(account).await }
    }
}

impl AccessHashStorage for Sessions {
    fn get_access_hash(
        &self,
        account: AccountId,
        channel: ChannelId,
    ) -> impl Future<Output = Result<Option<i64>>> + Send {
        let s = self.of(account);
        async move { s.get_access_hash(account, channel).await }
    }

    fn set_access_hashes(
        &self,
        account: AccountId,
        hashes: &[(ChannelId, i64)],
    ) -> impl Future<Output = Result<()>> + Send {
        let s = self.of(account);
        let hashes = hashes.to_vec();
        async move { s.set_access_hashes(account, &hashes).await }
    }

    fn get_user_access_hash(
        &self,
        account: AccountId,
        user: UserId,
    ) -> impl Future<Output = Result<Option<i64>>> + Send {
        let s = self.of(account);
        async move { s.get_user_access_hash(account, user).await }
    }

    fn set_user_access_hashes(
        &self,
        account: AccountId,
        hashes: &[(UserId, i64)],
    ) -> impl Future<Output = Result<()>> + Send {
        let s = self.of(account);
        let hashes = hashes.to_vec();
        async move { s.set_user_access_hashes(account, &hashes).await }
    }

    fn delete_access_hashes(&self, account: AccountId) -> impl Future<Output = Result<()>> + Send {
        let s = self.of(account);
        async move { s.delete_access_hashes(account).await }
    }
}

async fn make() -> Option<((), Arc<Sessions>)> {
    Some(((), Arc::new(Sessions::default())))
}

// Every contract function that applies to a session. Not run: `extreme_values_round_trip`,
// `delete_forgets_state_and_channels_only` and `user_access_hashes_last_write_wins` store
// access hashes for ids outside Telegram's ranges (i64::MAX, i64::MIN), which a session
// cannot hold (`ids_outside_telegrams_ranges_are_typed_errors` below, and the focused
// `delete_forgets_the_state_and_keeps_the_hashes` and `user_access_hashes_are_peers`);
// `delete_access_hashes_forgets_channels_and_users`: a session cannot forget peers
// (`deleting_access_hashes_is_refused`).
crate::contract_suite!(@tests make;
    empty_account_reads_nothing,
    state_round_trips_and_never_goes_back,
    date_travels_with_its_state,
    channel_pts_round_trips_and_never_goes_back,
    accounts_are_isolated,
    commit_is_all_or_nothing,
    commit_resets_are_honoured,
    removed_channels_forget_pts_but_keep_hashes,
    order_inside_a_commit,
    empty_commit_changes_nothing,
    access_hashes_last_write_wins,
    load_matches_the_single_reads,
    concurrent_writers_end_at_the_maximum,
    random_commits_match_the_model,
);

const ME: AccountId = 777_000;

fn state(pts: i32, qts: i32, date: i32, seq: i32) -> State {
    State {
        pts,
        qts,
        date,
        seq,
    }
}

fn storage() -> (Arc<MemorySession>, SessionStorage<MemorySession>) {
    let session = Arc::new(MemorySession::default());
    (Arc::clone(&session), SessionStorage::new(session, ME))
}

#[tokio::test]
async fn commits_land_in_grammers_update_state() {
    let (session, storage) = storage();
    let commit = Commit {
        state: Some(state(120, 4, 1_700_000_000, 31)),
        channels: vec![
            ChannelCommit {
                channel_id: 1_234,
                pts: 56,
                reset: false,
            },
            ChannelCommit {
                channel_id: 99,
                pts: 7,
                reset: false,
            },
        ],
        ..Commit::default()
    };
    storage.apply(ME, &commit).await.unwrap();
    let stored = session.updates_state().await.unwrap();
    assert_eq!(
        (stored.pts, stored.qts, stored.date, stored.seq),
        (120, 4, 1_700_000_000, 31)
    );
    let channels: BTreeMap<i64, i32> = stored.channels.iter().map(|c| (c.id, c.pts)).collect();
    assert_eq!(channels, BTreeMap::from([(99, 7), (1_234, 56)]));

    // A removal leaves the other channel.
    let removal = Commit {
        removed_channels: vec![99],
        ..Commit::default()
    };
    storage.apply(ME, &removal).await.unwrap();
    let stored = session.updates_state().await.unwrap();
    assert_eq!(stored.channels.len(), 1);
    assert_eq!((stored.channels[0].id, stored.channels[0].pts), (1_234, 56));
}

#[tokio::test]
async fn a_session_grammers_wrote_is_read_back() {
    // What grammers-client stores at sign-in and while listing dialogs.
    let session = Arc::new(MemorySession::default());
    session
        .set_update_state(UpdateState::All(UpdatesState {
            pts: 10,
            qts: 2,
            date: 1_700_000_000,
            seq: 3,
            channels: Vec::new(),
        }))
        .await
        .unwrap();
    session
        .set_update_state(UpdateState::Channel { id: 5, pts: 40 })
        .await
        .unwrap();
    session
        .cache_peer(PeerInfo::Channel {
            id: 5,
            auth: Some(PeerAuth::from_hash(-55)),
            kind: None,
        })
        .await
        .unwrap();
    session
        .cache_peer(PeerInfo::User {
            id: 8,
            auth: Some(PeerAuth::from_hash(88)),
            bot: Some(false),
            is_self: Some(false),
        })
        .await
        .unwrap();

    let storage = SessionStorage::new(session, ME);
    let snapshot = storage.load(ME).await.unwrap();
    assert_eq!(snapshot.state, Some(state(10, 2, 1_700_000_000, 3)));
    assert_eq!(snapshot.channels, BTreeMap::from([(5, 40)]));
    assert_eq!(storage.get_access_hash(ME, 5).await.unwrap(), Some(-55));
    assert_eq!(storage.get_user_access_hash(ME, 8).await.unwrap(), Some(88));
    // A stale write is refused against what grammers stored.
    let stale = storage.set_channel_pts(ME, 5, 39, WriteMode::Advance).await;
    assert!(
        matches!(
            stale,
            Err(Error::Stale {
                sequence: StaleSequence::Channel(5),
                stored: 40,
                attempted: 39,
                ..
            })
        ),
        "{stale:?}"
    );
}

#[tokio::test]
async fn a_new_session_reads_as_never_stored() {
    let (_, storage) = storage();
    assert_eq!(storage.load(ME).await.unwrap(), Snapshot::default());
    // Channels alone are not a common state.
    storage
        .set_channel_pts(ME, 3, 9, WriteMode::Advance)
        .await
        .unwrap();
    assert_eq!(storage.get_state(ME).await.unwrap(), None);
}

#[tokio::test]
async fn access_hashes_are_cached_peers() {
    let (session, storage) = storage();
    storage
        .set_access_hashes(ME, &[(5, 1), (6, 2), (5, 3)])
        .await
        .unwrap();
    let peer = session
        .peer(PeerId::channel(5).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        peer.auth(),
        Some(PeerAuth::from_hash(3)),
        "the later entry wins"
    );
    assert_eq!(storage.get_access_hash(ME, 6).await.unwrap(), Some(2));
    // A cached peer keeps what grammers knew of it besides the hash.
    session
        .cache_peer(PeerInfo::User {
            id: 9,
            auth: Some(PeerAuth::from_hash(1)),
            bot: Some(true),
            is_self: Some(false),
        })
        .await
        .unwrap();
    storage.set_user_access_hash(ME, 9, 2).await.unwrap();
    let peer = session.peer(PeerId::user(9).unwrap()).await.unwrap();
    assert_eq!(
        peer,
        Some(PeerInfo::User {
            id: 9,
            auth: Some(PeerAuth::from_hash(2)),
            bot: Some(true),
            is_self: Some(false),
        })
    );
}

#[tokio::test]
async fn user_access_hashes_are_peers() {
    // `user_access_hashes_last_write_wins` of the contract, with ids a session can hold.
    let (_, storage) = storage();
    assert_eq!(storage.get_user_access_hash(ME, 5).await.unwrap(), None);
    storage.set_user_access_hash(ME, 5, 100).await.unwrap();
    storage.set_user_access_hash(ME, 5, -100).await.unwrap();
    assert_eq!(
        storage.get_user_access_hash(ME, 5).await.unwrap(),
        Some(-100)
    );
    storage
        .set_user_access_hashes(ME, &[(6, 1), (0xff_ffff_ffff, i64::MAX), (6, 2)])
        .await
        .unwrap();
    assert_eq!(storage.get_user_access_hash(ME, 6).await.unwrap(), Some(2));
    assert_eq!(
        storage
            .get_user_access_hash(ME, 0xff_ffff_ffff)
            .await
            .unwrap(),
        Some(i64::MAX)
    );
    storage.set_user_access_hashes(ME, &[]).await.unwrap();
    // Users and channels are kept apart.
    storage.set_access_hash(ME, 5, 9).await.unwrap();
    assert_eq!(
        storage.get_user_access_hash(ME, 5).await.unwrap(),
        Some(-100)
    );
    assert_eq!(storage.get_access_hash(ME, 6).await.unwrap(), None);
    assert_eq!(storage.get_state(ME).await.unwrap(), None);
}

#[tokio::test]
async fn delete_forgets_the_state_and_keeps_the_hashes() {
    let (session, storage) = storage();
    let commit = Commit {
        state: Some(state(100, 100, 100, 100)),
        channels: vec![ChannelCommit {
            channel_id: 10,
            pts: 100,
            reset: false,
        }],
        ..Commit::default()
    };
    storage.apply(ME, &commit).await.unwrap();
    storage.set_access_hash(ME, 10, -1).await.unwrap();
    storage.set_user_access_hash(ME, 10, 3).await.unwrap();
    storage.delete(ME).await.unwrap();
    assert_eq!(storage.load(ME).await.unwrap(), Snapshot::default());
    assert_eq!(
        session.updates_state().await.unwrap(),
        UpdatesState::default()
    );
    assert_eq!(storage.get_access_hash(ME, 10).await.unwrap(), Some(-1));
    assert_eq!(storage.get_user_access_hash(ME, 10).await.unwrap(), Some(3));
    // Nothing is stale any more.
    storage
        .set_state(ME, state(1, 1, 1, 1), WriteMode::Advance)
        .await
        .unwrap();
    storage
        .set_channel_pts(ME, 10, 1, WriteMode::Advance)
        .await
        .unwrap();
    storage.delete(ME).await.unwrap();
    storage.delete(ME).await.unwrap();
    assert_eq!(storage.get_state(ME).await.unwrap(), None);
}

#[tokio::test]
async fn deleting_access_hashes_is_refused() {
    let (_, storage) = storage();
    storage.set_access_hash(ME, 10, 7).await.unwrap();
    let refused = storage.delete_access_hashes(ME).await;
    assert!(matches!(refused, Err(Error::Config(_))), "{refused:?}");
    assert_eq!(storage.get_access_hash(ME, 10).await.unwrap(), Some(7));
}

#[tokio::test]
async fn another_account_is_a_config_error() {
    let (session, storage) = storage();
    let other = ME + 1;
    assert!(matches!(
        storage.get_state(other).await,
        Err(Error::Config(_))
    ));
    assert!(matches!(storage.load(other).await, Err(Error::Config(_))));
    let commit = Commit {
        state: Some(state(1, 1, 1, 1)),
        ..Commit::default()
    };
    assert!(matches!(
        storage.apply(other, &commit).await,
        Err(Error::Config(_))
    ));
    assert!(matches!(storage.delete(other).await, Err(Error::Config(_))));
    assert!(matches!(
        storage.set_access_hash(other, 1, 1).await,
        Err(Error::Config(_))
    ));
    assert!(matches!(
        storage.get_user_access_hash(other, 1).await,
        Err(Error::Config(_))
    ));
    assert_eq!(
        session.updates_state().await.unwrap(),
        UpdatesState::default()
    );
}

#[tokio::test]
async fn ids_outside_telegrams_ranges_are_typed_errors() {
    let (_, storage) = storage();
    for id in [0, -5, i64::MAX, i64::MIN, 997_852_516_353] {
        assert_eq!(storage.get_access_hash(ME, id).await.unwrap(), None);
        assert!(
            matches!(
                storage.set_access_hash(ME, id, 1).await,
                Err(Error::Config(_))
            ),
            "channel {id}"
        );
    }
    for id in [0, -5, i64::MAX, i64::MIN, 0x100_0000_0000] {
        assert_eq!(storage.get_user_access_hash(ME, id).await.unwrap(), None);
        assert!(
            matches!(
                storage.set_user_access_hash(ME, id, 1).await,
                Err(Error::Config(_))
            ),
            "user {id}"
        );
    }
    // A batch with one bad id writes nothing.
    assert!(
        storage
            .set_access_hashes(ME, &[(5, 1), (0, 2)])
            .await
            .is_err()
    );
    assert_eq!(storage.get_access_hash(ME, 5).await.unwrap(), None);
    // Channel pts have no such limit: they are update state, not peers.
    storage
        .set_channel_pts(ME, i64::MAX, i32::MAX, WriteMode::Advance)
        .await
        .unwrap();
    assert_eq!(
        storage.get_channel_pts(ME, i64::MAX).await.unwrap(),
        Some(i32::MAX)
    );
}

/// A session whose every call fails, as a broken file would.
struct Broken;

#[derive(Debug)]
struct BrokenError;

impl std::fmt::Display for BrokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("broken session")
    }
}

impl std::error::Error for BrokenError {}

impl Session for Broken {
    type Error = BrokenError;

    fn home_dc_id(&self) -> std::result::Result<i32, BrokenError> {
        Err(BrokenError)
    }

    fn set_home_dc_id(
        &self,
        _: i32,
    ) -> grammers_session::BoxFuture<'_, std::result::Result<(), BrokenError>> {
        Box::pin(async { Err(BrokenError) })
    }

    fn dc_option(
        &self,
        _: i32,
    ) -> std::result::Result<Option<grammers_session::types::DcOption>, BrokenError> {
        Err(BrokenError)
    }

    fn set_dc_option(
        &self,
        _: &grammers_session::types::DcOption,
    ) -> grammers_session::BoxFuture<'_, std::result::Result<(), BrokenError>> {
        Box::pin(async { Err(BrokenError) })
    }

    fn peer(
        &self,
        _: PeerId,
    ) -> grammers_session::BoxFuture<'_, std::result::Result<Option<PeerInfo>, BrokenError>> {
        Box::pin(async { Err(BrokenError) })
    }

    fn cache_peer(
        &self,
        _: PeerInfo,
    ) -> grammers_session::BoxFuture<'_, std::result::Result<(), BrokenError>> {
        Box::pin(async { Err(BrokenError) })
    }

    fn updates_state(
        &self,
    ) -> grammers_session::BoxFuture<'_, std::result::Result<UpdatesState, BrokenError>> {
        Box::pin(async { Err(BrokenError) })
    }

    fn set_update_state(
        &self,
        _: UpdateState,
    ) -> grammers_session::BoxFuture<'_, std::result::Result<(), BrokenError>> {
        Box::pin(async { Err(BrokenError) })
    }
}

#[tokio::test]
async fn session_errors_are_typed() {
    let storage = SessionStorage::new(Arc::new(Broken), ME);
    assert!(storage.load(ME).await.is_err_and(|e| e.is_unavailable()));
    assert!(
        storage
            .get_access_hash(ME, 1)
            .await
            .is_err_and(|e| e.is_unavailable())
    );
    // The check reads first: a commit whose read fails was not carried out.
    let commit = Commit {
        state: Some(state(1, 1, 1, 1)),
        ..Commit::default()
    };
    assert!(
        storage
            .apply(ME, &commit)
            .await
            .is_err_and(|e| e.is_unavailable())
    );
    // A failed write may or may not have left something behind.
    assert!(storage.delete(ME).await.is_err_and(|e| e.is_ambiguous()));
    assert!(
        storage
            .set_access_hash(ME, 1, 1)
            .await
            .is_err_and(|e| e.is_ambiguous())
    );
    let source = storage.delete(ME).await.unwrap_err();
    assert!(std::error::Error::source(&source).is_some_and(|s| s.to_string() == "broken session"));
}
