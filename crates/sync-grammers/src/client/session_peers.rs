//! [`SessionPeers`]: the unknown-peer check answered by a grammers [`Session`]'s peer cache.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use grammers_session::Session;
use grammers_session::types::{PeerId, PeerInfo};
use grammers_tl_types as tl;

use super::storage::channel_id;
use crate::entities::TlEntities;
use crate::peers::{MentionedPeer, PeerCache};

/// A [`PeerCache`] over a grammers [`Session`]: a peer is known when the session holds its
/// access hash.
///
/// [`Session::peer`] is async and [`PeerCache::is_known`] is not, so this answers from memory:
/// the peers it has seen the session hold, or has itself written into it. The memory is kept
/// fresh on three paths, so that what the session knows is never withheld:
///
/// - **before each push is converted** (in [`feed_session`](super::feed_session) and
///   [`run_session_reader`](super::run_session_reader)): the container's full users and
///   channels are learned, and every peer it mentions that is still unknown
///   ([`Converter::unknown_peers`](crate::Converter::unknown_peers)) is asked of the session,
///   one [`Session::peer`] each; only what the session does not hold either is withheld and
///   fetched as a difference;
/// - **from every difference**, when the [`GrammersApi`](super::GrammersApi) is built
///   [`with_peers`](super::GrammersApi::with_peers): its users and channels, which come with
///   full access hashes, are learned, so the next short message from the same user is
///   delivered at once;
/// - by hand: [`SessionPeers::learn`], [`SessionPeers::resolve`].
///
/// What is learned is also written into the session ([`Session::cache_peers`]), as grammers'
/// own update handling does, so the session stays the one place peers are kept. Only new or
/// changed access hashes are written; min users and channels (whose hash works only in the
/// context they came in) are not learned.
///
/// The [`Session`] trait cannot list the peers it holds, so nothing is loaded at start: each
/// peer is asked for the first time it matters, and remembered once the session knows it. A
/// peer the session does not know is asked again the next time (the session may have learned
/// it from grammers-client's own calls meanwhile).
///
/// Clones share the memory. A failing session is never an error for the updates: a lookup
/// that fails leaves the peer unknown (its update is fetched by difference instead), and a
/// write that fails still leaves the peer known in memory.
///
/// ```no_run
/// # async fn run(client: grammers_client::Client, pool_updates: tokio::sync::mpsc::Receiver<grammers_session::updates::UpdatesLike>, handle: sync_grammers::client::TlHandle) {
/// use std::sync::Arc;
/// use grammers_session::storages::MemorySession;
/// use sync_grammers::Converter;
/// use sync_grammers::client::{GrammersApi, SessionPeers, run_session_reader};
///
/// let session = Arc::new(MemorySession::default()); // the one the sender pool uses
/// let peers = SessionPeers::new(session);
/// let api = GrammersApi::new(client).with_peers(peers.clone());
/// // … the manager over `api`; then its reader:
/// tokio::spawn(run_session_reader(pool_updates, handle, Converter::new(peers)));
/// # let _ = api;
/// # }
/// ```
pub struct SessionPeers<S> {
    session: Arc<S>,
    /// Each known peer's access hash.
    known: Arc<Mutex<HashMap<MentionedPeer, i64>>>,
}

impl<S> Clone for SessionPeers<S> {
    fn clone(&self) -> Self {
        Self {
            session: Arc::clone(&self.session),
            known: Arc::clone(&self.known),
        }
    }
}

impl<S> std::fmt::Debug for SessionPeers<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionPeers")
            .field("known", &self.known().len())
            .finish_non_exhaustive()
    }
}

impl<S> SessionPeers<S> {
    /// Peers over `session` (the one grammers-client's sender pool uses), nothing known yet.
    pub fn new(session: Arc<S>) -> Self {
        Self {
            session,
            known: Arc::default(),
        }
    }

    /// The session.
    pub fn session(&self) -> &Arc<S> {
        &self.session
    }

    /// The access hash known in memory for `peer`.
    pub fn access_hash(&self, peer: MentionedPeer) -> Option<i64> {
        self.known().get(&peer).copied()
    }

    fn known(&self) -> MutexGuard<'_, HashMap<MentionedPeer, i64>> {
        // Only plain map operations run under the lock: a panic cannot leave it half-changed.
        self.known
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<S> PeerCache for SessionPeers<S> {
    fn is_known(&self, peer: MentionedPeer) -> bool {
        self.known().contains_key(&peer)
    }
}

/// The session's id of a mentioned peer, `None` outside Telegram's id ranges.
fn peer_id(peer: MentionedPeer) -> Option<PeerId> {
    match peer {
        MentionedPeer::User(id) => PeerId::user(id),
        MentionedPeer::Channel(id) => channel_id(id),
    }
}

/// The full users and channels of a container or difference, with their access hashes.
fn full_peers<'a>(
    users: &'a [tl::enums::User],
    chats: &'a [tl::enums::Chat],
) -> impl Iterator<Item = (MentionedPeer, i64, PeerInfo)> + 'a {
    let users = users.iter().filter_map(|user| match user {
        tl::enums::User::User(u) if !u.min && PeerId::user(u.id).is_some() => {
            let hash = u.access_hash?;
            Some((MentionedPeer::User(u.id), hash, PeerInfo::from(u)))
        }
        _ => None,
    });
    let channels = chats.iter().filter_map(|chat| {
        let hash = crate::entities::channel_hash(chat)?;
        (!hash.min && channel_id(hash.channel_id).is_some()).then(|| {
            (
                MentionedPeer::Channel(hash.channel_id),
                hash.access_hash,
                PeerInfo::from(chat),
            )
        })
    });
    users.chain(channels)
}

impl<S: Session> SessionPeers<S> {
    /// Learns the full users and channels of `entities` (a push's or a difference's): known
    /// from now on, and written into the session when their access hash is new or changed.
    /// The error is the session's write; the peers are known in memory even then.
    pub async fn learn(&self, entities: &TlEntities) -> Result<(), S::Error> {
        self.learn_lists(&entities.users, &entities.chats).await
    }

    pub(crate) async fn learn_lists(
        &self,
        users: &[tl::enums::User],
        chats: &[tl::enums::Chat],
    ) -> Result<(), S::Error> {
        let fresh: Vec<PeerInfo> = {
            let mut known = self.known();
            full_peers(users, chats)
                .filter_map(|(peer, hash, info)| {
                    (known.insert(peer, hash) != Some(hash)).then_some(info)
                })
                .collect()
        };
        if fresh.is_empty() {
            return Ok(());
        }
        self.session.cache_peers(fresh).await
    }

    /// Asks the session about each of `peers` not known in memory yet, and remembers those
    /// whose access hash it holds. Returns how many of `peers` are known afterwards. A failed
    /// lookup leaves its peer unknown; the first error is returned after every peer was
    /// asked.
    pub async fn resolve(&self, peers: &[MentionedPeer]) -> Result<usize, S::Error> {
        let mut known = 0;
        let mut first_error = None;
        for &peer in peers {
            if self.is_known(peer) {
                known += 1;
                continue;
            }
            let Some(id) = peer_id(peer) else { continue };
            match self.session.peer(id).await {
                Ok(info) => {
                    if let Some(auth) = info.and_then(|info| info.auth()) {
                        self.known().insert(peer, auth.hash());
                        known += 1;
                    }
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(known),
        }
    }
}

/// What a [`GrammersApi`](super::GrammersApi) does with the users and chats of every
/// difference it fetches: nothing (`()`, the default), or learn them ([`SessionPeers`], with
/// [`GrammersApi::with_peers`](super::GrammersApi::with_peers)).
pub trait LearnPeers: Send + Sync + 'static {
    /// Called with each difference's entities before the manager gets it.
    fn learn_peers(&self, entities: &TlEntities) -> impl Future<Output = ()> + Send;
}

impl LearnPeers for () {
    async fn learn_peers(&self, _: &TlEntities) {}
}

impl<S: Session> LearnPeers for SessionPeers<S> {
    async fn learn_peers(&self, entities: &TlEntities) {
        // A failed write still leaves the peers known in memory (see `SessionPeers`).
        let _written = self.learn(entities).await;
    }
}
