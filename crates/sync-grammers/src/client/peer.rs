//! Which chat a TL update is about: the [`Peer`] key the manager shards its dispatch by.

use grammers_tl_types as tl;
use sync_runtime::{Peer, PeerKey};

use crate::update::{TlUpdate, message_peer};

impl Peer for TlUpdate {
    /// The chat the update is about, see [`peer_key`].
    fn peer(&self) -> Option<PeerKey> {
        peer_key(self)
    }
}

/// The key of a TL `Peer`: `peerUser` → [`PeerKey::User`], `peerChat` → [`PeerKey::Chat`],
/// `peerChannel` → [`PeerKey::Channel`].
pub fn key_of(peer: &tl::enums::Peer) -> PeerKey {
    match peer {
        tl::enums::Peer::User(p) => PeerKey::User(p.user_id),
        tl::enums::Peer::Chat(p) => PeerKey::Chat(p.chat_id),
        tl::enums::Peer::Channel(p) => PeerKey::Channel(p.channel_id),
    }
}

/// The chat a TL update is about, which [`Peer for TlUpdate`](Peer) returns: a private chat
/// is [`PeerKey::User`] (the other user's id), a basic group [`PeerKey::Chat`], a channel or
/// supergroup [`PeerKey::Channel`].
///
/// | updates | key |
/// | --- | --- |
/// | `updateNewMessage`, `updateEditMessage`, `updateNewChannelMessage`, `updateEditChannelMessage`, `updateNewScheduledMessage`, `updateBotNewBusinessMessage`, `updateBotEditBusinessMessage` | the message's `peer_id` (`None` for a `messageEmpty` without one) |
/// | `updateReadHistoryInbox`, `updateReadHistoryOutbox`, `updatePinnedMessages`, `updateDraftMessage`, `updateMessageReactions`, `updateChatDefaultBannedRights`, `updateBotCallbackQuery`, `updateBotChatInviteRequester`, `updateBotChatBoost`, `updateBotMessageReaction`, `updateBotMessageReactions` | its `peer` (the chat) |
/// | `updateDeleteChannelMessages`, `updateReadChannelInbox`, `updateReadChannelOutbox`, `updateChannelTooLong`, `updateChannel`, `updateChannelWebPage`, `updatePinnedChannelMessages`, `updateChannelMessageViews`, `updateChannelMessageForwards`, `updateChannelAvailableMessages`, `updateReadChannelDiscussionInbox`, `updateReadChannelDiscussionOutbox`, `updateChannelUserTyping`, `updateChannelParticipant` | `Channel(channel_id)` |
/// | `updateChatParticipants`, `updateChatParticipantAdd`, `updateChatParticipantDelete`, `updateChatParticipantAdmin`, `updateChatUserTyping`, `updateChatParticipant` | `Chat(chat_id)` |
/// | `updateUserTyping`, `updateUserStatus`, `updateUserName`, `updateUserPhone`, `updateUserEmojiStatus`, `updateBotStopped`, `updateBotInlineQuery` | `User(user_id)`: the private chat with that user |
/// | everything else (`updateDeleteMessages` and `updateReadMessagesContents`, which carry message ids only; `updateMessagePoll`, `updateMessagePollVote`, `updateNewEncryptedMessage`, `updateWebPage`, `updateFolderPeers`, `updatePtsChanged`, `updateConfig`, …) | `None` |
///
/// `None` updates share one shard, in order with each other (see [`Peer`]).
pub fn peer_key(update: &tl::enums::Update) -> Option<PeerKey> {
    use tl::enums::Update as U;
    let channel = |id: i64| Some(PeerKey::Channel(id));
    let chat = |id: i64| Some(PeerKey::Chat(id));
    let user = |id: i64| Some(PeerKey::User(id));
    let message = |m: &tl::enums::Message| message_peer(m).map(key_of);
    match update {
        U::NewMessage(u) => message(&u.message),
        U::EditMessage(u) => message(&u.message),
        U::NewChannelMessage(u) => message(&u.message),
        U::EditChannelMessage(u) => message(&u.message),
        U::NewScheduledMessage(u) => message(&u.message),
        U::BotNewBusinessMessage(u) => message(&u.message),
        U::BotEditBusinessMessage(u) => message(&u.message),

        U::ReadHistoryInbox(u) => Some(key_of(&u.peer)),
        U::ReadHistoryOutbox(u) => Some(key_of(&u.peer)),
        U::PinnedMessages(u) => Some(key_of(&u.peer)),
        U::DraftMessage(u) => Some(key_of(&u.peer)),
        U::MessageReactions(u) => Some(key_of(&u.peer)),
        U::ChatDefaultBannedRights(u) => Some(key_of(&u.peer)),
        U::BotCallbackQuery(u) => Some(key_of(&u.peer)),
        U::BotChatInviteRequester(u) => Some(key_of(&u.peer)),
        U::BotChatBoost(u) => Some(key_of(&u.peer)),
        U::BotMessageReaction(u) => Some(key_of(&u.peer)),
        U::BotMessageReactions(u) => Some(key_of(&u.peer)),

        U::DeleteChannelMessages(u) => channel(u.channel_id),
        U::ReadChannelInbox(u) => channel(u.channel_id),
        U::ReadChannelOutbox(u) => channel(u.channel_id),
        U::ChannelTooLong(u) => channel(u.channel_id),
        U::Channel(u) => channel(u.channel_id),
        U::ChannelWebPage(u) => channel(u.channel_id),
        U::PinnedChannelMessages(u) => channel(u.channel_id),
        U::ChannelMessageViews(u) => channel(u.channel_id),
        U::ChannelMessageForwards(u) => channel(u.channel_id),
        U::ChannelAvailableMessages(u) => channel(u.channel_id),
        U::ReadChannelDiscussionInbox(u) => channel(u.channel_id),
        U::ReadChannelDiscussionOutbox(u) => channel(u.channel_id),
        U::ChannelUserTyping(u) => channel(u.channel_id),
        U::ChannelParticipant(u) => channel(u.channel_id),

        U::ChatParticipants(u) => match &u.participants {
            tl::enums::ChatParticipants::Forbidden(p) => chat(p.chat_id),
            tl::enums::ChatParticipants::Participants(p) => chat(p.chat_id),
        },
        U::ChatParticipantAdd(u) => chat(u.chat_id),
        U::ChatParticipantDelete(u) => chat(u.chat_id),
        U::ChatParticipantAdmin(u) => chat(u.chat_id),
        U::ChatUserTyping(u) => chat(u.chat_id),
        U::ChatParticipant(u) => chat(u.chat_id),

        U::UserTyping(u) => user(u.user_id),
        U::UserStatus(u) => user(u.user_id),
        U::UserName(u) => user(u.user_id),
        U::UserPhone(u) => user(u.user_id),
        U::UserEmojiStatus(u) => user(u.user_id),
        U::BotStopped(u) => user(u.user_id),
        U::BotInlineQuery(u) => user(u.user_id),

        _ => None,
    }
}
