//! The raw updates of grammers' sender pool, fed to a manager: [`feed`] and [`run_reader`].

use std::time::Duration;

use grammers_session::Session;
use grammers_session::updates::UpdatesLike;
use grammers_tl_types as tl;
use sync_runtime::{ControlError, ManagerHandle, Stopped};
use tokio::sync::mpsc;

use crate::entities::TlEntities;
use crate::incoming::{ChannelRefetch, Converter, Incoming, TlUpdates};
use crate::peers::PeerCache;
use crate::update::TlUpdate;

use super::session_peers::SessionPeers;

/// The handle of a manager over TL updates (one built with a
/// [`GrammersApi`](super::GrammersApi)).
pub type TlHandle = ManagerHandle<TlUpdate, TlEntities>;

/// Why [`run_reader`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaderEnd {
    /// The receiver closed: the sender pool stopped (its runner returned or was dropped).
    Closed,
    /// The manager stopped (shut down, or stopped with an error).
    Stopped,
}

/// What the reader hands the manager: every push goes through [`submit`].
enum Input {
    Updates(TlUpdates),
    Affected(sync_core::Affected),
    /// Fetch the difference.
    Reset,
}

/// Hands one input to the manager. The only place that reads what a push returned: a push
/// the full intake dropped is not a failure (the manager fetches the difference instead).
fn submit(handle: &TlHandle, input: Input) -> Result<(), Stopped> {
    let pushed = match input {
        Input::Updates(updates) => handle.push(updates),
        Input::Affected(affected) => handle.push_affected(affected),
        Input::Reset => handle.session_reset(),
    };
    pushed.map(|_queued_or_dropped| ())
}

/// True once the manager's intake is closed: its run returned.
fn manager_gone(handle: &TlHandle) -> bool {
    // An empty batch pushes nothing; it only says whether the intake is still open.
    handle.push_batch(Vec::new()).is_err()
}

/// Feeds one value of grammers' raw updates channel (`SenderPool::updates`) to the manager:
///
/// | `UpdatesLike` | fed as |
/// | --- | --- |
/// | `Updates` | [`Converter::updates`], pushed ([`ManagerHandle::push`], or [`push_affected`](ManagerHandle::push_affected) for `updateShortSentMessage`) |
/// | `ShortSentMessage { request, update }` | [`Converter::sent_message`] with the request's peer and text, pushed; a request whose peer names no chat (`inputPeerEmpty`, or `inputPeerSelf` without [`Converter::with_self_id`]) is pushed as its pts only |
/// | `AffectedMessages` | [`affected_messages`](crate::affected_messages) of the common box, [`push_affected`](ManagerHandle::push_affected) |
/// | `AffectedChannelMessages` | the same for its channel |
/// | `InvitedUsers`, `ChatInviteJoinResult` | their `updates`, like `Updates` |
/// | `ConnectionClosed`, `MalformedUpdates` | a difference ([`session_reset`](ManagerHandle::session_reset)): something may have been missed |
///
/// When the converter withholds updates whose peers it cannot resolve
/// ([`Incoming::NeedsDifference`]), the rest is pushed, a withheld common update asks for the
/// difference ([`session_reset`](ManagerHandle::session_reset)) and a withheld channel update
/// for the channel's ([`request_channel_difference`](ManagerHandle::request_channel_difference),
/// tracking the channel from before the update first when the manager did not track it, and
/// the common difference when the manager refuses both). Only then does it await: the manager
/// answers those commands.
///
/// A push dropped because the manager's intake is full is not an error (the manager fetches the
/// difference); [`Stopped`] means the manager is not running.
pub async fn feed<C: PeerCache>(
    handle: &TlHandle,
    converter: &Converter<C>,
    updates: UpdatesLike,
) -> Result<(), Stopped> {
    let incoming = match updates {
        UpdatesLike::Updates(updates) => converter.updates(updates),
        UpdatesLike::ShortSentMessage { request, update } => {
            match sent_to(&request.peer, converter.self_id()) {
                Some(peer) => converter.sent_message(update, peer, request.message),
                None => converter.updates(update.into()),
            }
        }
        UpdatesLike::AffectedMessages(affected) => {
            Incoming::Affected(crate::affected_messages(&affected.into(), None))
        }
        UpdatesLike::AffectedChannelMessages {
            affected,
            channel_id,
            ..
        } => Incoming::Affected(crate::affected_messages(&affected.into(), Some(channel_id))),
        UpdatesLike::InvitedUsers(invited) => converter.updates(invited.updates),
        UpdatesLike::ChatInviteJoinResult(joined) => converter.updates(joined.updates),
        UpdatesLike::ConnectionClosed | UpdatesLike::MalformedUpdates => {
            return submit(handle, Input::Reset);
        }
    };
    feed_incoming(handle, incoming).await
}

/// Pushes a converted value, and asks for the differences of what it withheld.
async fn feed_incoming(handle: &TlHandle, incoming: Incoming) -> Result<(), Stopped> {
    match incoming {
        Incoming::Updates(updates) => submit(handle, Input::Updates(updates)),
        Incoming::Affected(affected) => submit(handle, Input::Affected(affected)),
        Incoming::NeedsDifference { rest, refetch } => {
            if let Some(rest) = rest {
                submit(handle, Input::Updates(rest))?;
            }
            if refetch.common {
                submit(handle, Input::Reset)?;
            }
            for channel in &refetch.channels {
                refetch_channel(handle, channel).await?;
            }
            Ok(())
        }
    }
}

/// Asks for a channel's difference, tracking the channel first if the manager refuses because
/// it does not track it; the common difference if it refuses again.
async fn refetch_channel(handle: &TlHandle, channel: &ChannelRefetch) -> Result<(), Stopped> {
    match handle.request_channel_difference(channel.channel_id).await {
        Ok(()) => return Ok(()),
        Err(ControlError::Stopped) => return Err(Stopped),
        Err(ControlError::Engine(_)) => {}
    }
    let tracked = match handle
        .track_channel(channel.channel_id, channel.pts_before)
        .await
    {
        Ok(()) => true,
        Err(ControlError::Stopped) => return Err(Stopped),
        Err(ControlError::Engine(_)) => false,
    };
    if tracked {
        match handle.request_channel_difference(channel.channel_id).await {
            Ok(()) => return Ok(()),
            Err(ControlError::Stopped) => return Err(Stopped),
            Err(ControlError::Engine(_)) => {}
        }
    }
    submit(handle, Input::Reset)
}

/// The chat a `messages.sendMessage` went to, as a `Peer`.
fn sent_to(peer: &tl::enums::InputPeer, self_id: Option<i64>) -> Option<tl::enums::Peer> {
    use tl::enums::InputPeer as P;
    let user = |user_id| tl::types::PeerUser { user_id }.into();
    let channel = |channel_id| tl::types::PeerChannel { channel_id }.into();
    match peer {
        P::Empty => None,
        P::PeerSelf => self_id.map(user),
        P::Chat(p) => Some(tl::types::PeerChat { chat_id: p.chat_id }.into()),
        P::User(p) => Some(user(p.user_id)),
        P::UserFromMessage(p) => Some(user(p.user_id)),
        P::Channel(p) => Some(channel(p.channel_id)),
        P::ChannelFromMessage(p) => Some(channel(p.channel_id)),
    }
}

/// How often [`run_reader`] checks, while no updates arrive, whether the manager stopped
/// without being shut down (an error, such as a lost authorization).
const LIVENESS_CHECK: Duration = Duration::from_secs(1);

/// Feeds every value of grammers' raw updates channel to the manager ([`feed`]) until the
/// channel closes ([`ReaderEnd::Closed`]) or the manager stops ([`ReaderEnd::Stopped`]: at once
/// when it is shut down, within a second when it stops with an error).
///
/// Take the receiver from [`SenderPool::updates`](grammers_mtsender::SenderPool) and spawn this
/// next to the manager; do not also call grammers' `Client::stream_updates`, which runs
/// grammers' own message box over the same channel. With a [`SessionPeers`] cache, use
/// [`run_session_reader`], which also asks the session about unknown peers.
pub async fn run_reader<C: PeerCache>(
    receiver: mpsc::Receiver<UpdatesLike>,
    handle: TlHandle,
    converter: Converter<C>,
) -> ReaderEnd {
    let mut reader = Reader::new(receiver, handle);
    loop {
        let updates = match reader.next().await {
            Ok(updates) => updates,
            Err(end) => return end,
        };
        if feed(&reader.handle, &converter, updates).await.is_err() {
            return ReaderEnd::Stopped;
        }
    }
}

/// [`feed`] with the unknown-peer check answered by a grammers session ([`SessionPeers`]):
/// first the pushed container's full users and channels are learned (and written into the
/// session), then every peer it mentions that is still unknown
/// ([`Converter::unknown_peers`]) is asked of the session; only then is it converted and fed.
/// A message from a user the session knows is delivered; one from a user it does not know
/// either is withheld and its sequence fetched as a difference (whose entities a
/// [`GrammersApi::with_peers`](super::GrammersApi::with_peers) teaches the cache).
///
/// Session errors do not stop the feed: a failed lookup leaves the peer unknown.
pub async fn feed_session<S: Session>(
    handle: &TlHandle,
    converter: &Converter<SessionPeers<S>>,
    updates: UpdatesLike,
) -> Result<(), Stopped> {
    if let Some(container) = container_of(&updates) {
        let peers = converter.cache();
        if let Some((users, chats)) = entities_of(container) {
            // A failed write still leaves the peers known in memory.
            let _written = peers.learn_lists(users, chats).await;
        }
        let unknown = converter.unknown_peers(container);
        if !unknown.is_empty() {
            // A failed lookup leaves its peer unknown: the update is fetched by difference.
            let _known = peers.resolve(&unknown).await;
        }
    }
    feed(handle, converter, updates).await
}

/// [`run_reader`] feeding with [`feed_session`]: the reader for a converter over
/// [`SessionPeers`].
pub async fn run_session_reader<S: Session>(
    receiver: mpsc::Receiver<UpdatesLike>,
    handle: TlHandle,
    converter: Converter<SessionPeers<S>>,
) -> ReaderEnd {
    let mut reader = Reader::new(receiver, handle);
    loop {
        let updates = match reader.next().await {
            Ok(updates) => updates,
            Err(end) => return end,
        };
        if feed_session(&reader.handle, &converter, updates)
            .await
            .is_err()
        {
            return ReaderEnd::Stopped;
        }
    }
}

/// The `Updates` container a raw value carries, if it is one the converter checks.
fn container_of(updates: &UpdatesLike) -> Option<&tl::enums::Updates> {
    match updates {
        UpdatesLike::Updates(updates) => Some(updates),
        UpdatesLike::InvitedUsers(invited) => Some(&invited.updates),
        UpdatesLike::ChatInviteJoinResult(joined) => Some(&joined.updates),
        _ => None,
    }
}

/// A container's users and chats.
fn entities_of(updates: &tl::enums::Updates) -> Option<(&[tl::enums::User], &[tl::enums::Chat])> {
    match updates {
        tl::enums::Updates::Updates(u) => Some((&u.users, &u.chats)),
        tl::enums::Updates::Combined(c) => Some((&c.users, &c.chats)),
        _ => None,
    }
}

/// The receiving end of both readers: the next raw value, or why to stop.
struct Reader {
    receiver: mpsc::Receiver<UpdatesLike>,
    handle: TlHandle,
    check: tokio::time::Interval,
}

impl Reader {
    fn new(receiver: mpsc::Receiver<UpdatesLike>, handle: TlHandle) -> Self {
        let mut check = tokio::time::interval(LIVENESS_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            receiver,
            handle,
            check,
        }
    }

    async fn next(&mut self) -> Result<UpdatesLike, ReaderEnd> {
        let shutdown = self.handle.cancellation_token();
        loop {
            let next = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Err(ReaderEnd::Stopped),
                next = self.receiver.recv() => next,
                _ = self.check.tick() => {
                    if manager_gone(&self.handle) {
                        return Err(ReaderEnd::Stopped);
                    }
                    continue;
                }
            };
            return next.ok_or(ReaderEnd::Closed);
        }
    }
}
