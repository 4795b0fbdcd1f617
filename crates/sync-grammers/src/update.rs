//! The TL `Update` enum as the engine's update type: which sequence each constructor belongs to.

use grammers_tl_types as tl;
use sync_core::{ChannelId, Sequence, Update};

/// A TL update, as the engine sees it.
///
/// A newtype because neither the [`Update`] trait nor `tl::enums::Update` is defined here (the
/// orphan rule). It boxes the TL value: `tl::enums::Update` is about 5 KB inline (its largest
/// constructors hold whole messages), and the engine moves updates through buffers and batches,
/// so a pointer is moved instead of 5 KB each time. It is transparent otherwise: [`From`]
/// wraps, [`TlUpdate::into_inner`] unwraps, and it derefs to the TL value.
#[derive(Debug, Clone, PartialEq)]
pub struct TlUpdate(pub Box<tl::enums::Update>);

impl TlUpdate {
    /// The TL update inside.
    pub fn into_inner(self) -> tl::enums::Update {
        *self.0
    }

    /// The boxed TL update inside, without moving it out of its box.
    pub fn into_box(self) -> Box<tl::enums::Update> {
        self.0
    }

    /// Moves the update out of `place` into a box, leaving `updateConfig` (which has no
    /// fields) behind.
    ///
    /// Why not `From`: moving a 5 KB value out by value makes the compiler copy it to the
    /// stack before copying it into the box. Allocating the box first and moving the value
    /// straight from where it lies copies it once.
    pub(crate) fn take(place: &mut tl::enums::Update) -> Self {
        let slot = Box::new_uninit();
        Self(Box::write(
            slot,
            std::mem::replace(place, tl::enums::Update::Config),
        ))
    }

    /// Every update of `updates`, each moved into its box once (see [`TlUpdate::take`]).
    pub(crate) fn take_all(mut updates: Vec<tl::enums::Update>) -> Vec<Self> {
        updates.iter_mut().map(Self::take).collect()
    }
}

impl From<tl::enums::Update> for TlUpdate {
    fn from(update: tl::enums::Update) -> Self {
        Self(Box::new(update))
    }
}

impl From<Box<tl::enums::Update>> for TlUpdate {
    fn from(update: Box<tl::enums::Update>) -> Self {
        Self(update)
    }
}

impl From<TlUpdate> for tl::enums::Update {
    fn from(update: TlUpdate) -> Self {
        *update.0
    }
}

impl std::ops::Deref for TlUpdate {
    type Target = tl::enums::Update;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl AsRef<tl::enums::Update> for TlUpdate {
    fn as_ref(&self) -> &tl::enums::Update {
        &self.0
    }
}

impl Update for TlUpdate {
    fn sequence(&self) -> Sequence {
        sequence_of(&self.0)
    }
}

/// Which sequence a TL update belongs to (layer 230, the one `grammers-tl-types` 0.11 is built
/// from).
///
/// - Common pts (`pts` + `pts_count`): `updateNewMessage`, `updateEditMessage`,
///   `updateDeleteMessages`, `updateReadHistoryInbox`, `updateReadHistoryOutbox`,
///   `updateWebPage`, `updateReadMessagesContents`, `updateFolderPeers`, `updatePinnedMessages`.
///   A message update whose message's peer is a channel belongs to that channel instead.
/// - A channel's pts: `updateNewChannelMessage`, `updateEditChannelMessage` (the channel is the
///   message's peer), `updateDeleteChannelMessages`, `updateChannelWebPage`,
///   `updatePinnedChannelMessages`, and `updateReadChannelInbox` (which carries a pts without a
///   count: it consumes none, `pts_count = 0`).
/// - qts: `updateNewEncryptedMessage`, `updateMessagePollVote`, `updateChatParticipant`,
///   `updateChannelParticipant`, `updateBotStopped`, `updateBotChatInviteRequester`,
///   `updateBotChatBoost`, `updateBotMessageReaction`, `updateBotMessageReactions`,
///   `updateBotBusinessConnect`, `updateBotNewBusinessMessage`, `updateBotEditBusinessMessage`,
///   `updateBotDeleteBusinessMessage`, `updateBotPurchasedPaidMedia`, `updateManagedBot`,
///   `updateBotGuestChatQuery`, `updateBotStarsSubscription`.
/// - `updateChannelTooLong` is [`Sequence::ChannelTooLong`], and `updatePtsChanged` is
///   [`Sequence::PtsChanged`] (the engine fetches what is pending, then re-bases on
///   `getState`).
/// - Everything else is [`Sequence::Unordered`], and so is any of the above with `pts` or `qts`
///   equal to 0 (Telegram sends those outside the sequence, e.g. the messages of a difference
///   that the adapter wraps). A channel message update whose message names no channel (an
///   `messageEmpty` without a peer, or a peer that is not a channel) has no sequence the adapter
///   can name, so it is unordered too rather than guessed.
pub fn sequence_of(update: &tl::enums::Update) -> Sequence {
    use tl::enums::Update as U;
    match update {
        U::NewMessage(u) => message_sequence(&u.message, u.pts, u.pts_count),
        U::EditMessage(u) => message_sequence(&u.message, u.pts, u.pts_count),
        U::DeleteMessages(u) => common(u.pts, u.pts_count),
        U::ReadHistoryInbox(u) => common(u.pts, u.pts_count),
        U::ReadHistoryOutbox(u) => common(u.pts, u.pts_count),
        U::WebPage(u) => common(u.pts, u.pts_count),
        U::ReadMessagesContents(u) => common(u.pts, u.pts_count),
        U::FolderPeers(u) => common(u.pts, u.pts_count),
        U::PinnedMessages(u) => common(u.pts, u.pts_count),

        U::NewChannelMessage(u) => channel_message_sequence(&u.message, u.pts, u.pts_count),
        U::EditChannelMessage(u) => channel_message_sequence(&u.message, u.pts, u.pts_count),
        U::DeleteChannelMessages(u) => channel(u.channel_id, u.pts, u.pts_count),
        U::ChannelWebPage(u) => channel(u.channel_id, u.pts, u.pts_count),
        U::PinnedChannelMessages(u) => channel(u.channel_id, u.pts, u.pts_count),
        // Read receipts move the channel's pts without consuming any.
        U::ReadChannelInbox(u) => channel(u.channel_id, u.pts, 0),
        U::ChannelTooLong(u) => Sequence::ChannelTooLong {
            channel_id: u.channel_id,
            pts: u.pts,
        },
        U::PtsChanged => Sequence::PtsChanged,

        U::NewEncryptedMessage(u) => qts(u.qts),
        U::MessagePollVote(u) => qts(u.qts),
        U::ChatParticipant(u) => qts(u.qts),
        U::ChannelParticipant(u) => qts(u.qts),
        U::BotStopped(u) => qts(u.qts),
        U::BotChatInviteRequester(u) => qts(u.qts),
        U::BotChatBoost(u) => qts(u.qts),
        U::BotMessageReaction(u) => qts(u.qts),
        U::BotMessageReactions(u) => qts(u.qts),
        U::BotBusinessConnect(u) => qts(u.qts),
        U::BotNewBusinessMessage(u) => qts(u.qts),
        U::BotEditBusinessMessage(u) => qts(u.qts),
        U::BotDeleteBusinessMessage(u) => qts(u.qts),
        U::BotPurchasedPaidMedia(u) => qts(u.qts),
        U::ManagedBot(u) => qts(u.qts),
        U::BotGuestChatQuery(u) => qts(u.qts),
        U::BotStarsSubscription(u) => qts(u.qts),

        _ => Sequence::Unordered,
    }
}

fn common(pts: i32, pts_count: i32) -> Sequence {
    if pts == 0 {
        Sequence::Unordered
    } else {
        Sequence::Common { pts, pts_count }
    }
}

fn channel(channel_id: ChannelId, pts: i32, pts_count: i32) -> Sequence {
    if pts == 0 {
        Sequence::Unordered
    } else {
        Sequence::Channel {
            channel_id,
            pts,
            pts_count,
        }
    }
}

fn qts(qts: i32) -> Sequence {
    if qts == 0 {
        Sequence::Unordered
    } else {
        Sequence::Qts { qts }
    }
}

/// `updateNewMessage` / `updateEditMessage`: the common box, unless the message is a channel's.
fn message_sequence(message: &tl::enums::Message, pts: i32, pts_count: i32) -> Sequence {
    match message_channel(message) {
        Some(channel_id) => channel(channel_id, pts, pts_count),
        None => common(pts, pts_count),
    }
}

/// `updateNewChannelMessage` / `updateEditChannelMessage`: the message's channel.
fn channel_message_sequence(message: &tl::enums::Message, pts: i32, pts_count: i32) -> Sequence {
    match message_channel(message) {
        Some(channel_id) => channel(channel_id, pts, pts_count),
        None => Sequence::Unordered,
    }
}

/// The peer a message was sent to, when it names one.
pub(crate) fn message_peer(message: &tl::enums::Message) -> Option<&tl::enums::Peer> {
    match message {
        tl::enums::Message::Message(m) => Some(&m.peer_id),
        tl::enums::Message::Service(m) => Some(&m.peer_id),
        tl::enums::Message::Empty(m) => m.peer_id.as_ref(),
    }
}

/// The channel a message belongs to, if its peer is one.
pub fn message_channel(message: &tl::enums::Message) -> Option<ChannelId> {
    match message_peer(message) {
        Some(tl::enums::Peer::Channel(c)) => Some(c.channel_id),
        _ => None,
    }
}
