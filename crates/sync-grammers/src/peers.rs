//! The application's answer to "can I resolve this peer?", and the peers a message mentions.

use grammers_tl_types as tl;

use crate::entities::{has_full_channel, has_full_user};

/// A peer that needs an access hash before the application can act on it.
///
/// Basic groups (`peerChat`) need none and are never asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MentionedPeer {
    /// A user (sender, private chat partner, forward or reply origin, inline or business bot,
    /// mention, shared contact, giveaway winner).
    User(i64),
    /// A channel or supergroup (a message's chat, a forward or reply origin, a sender posting
    /// as one, a giveaway's channel).
    Channel(i64),
}

/// The application's peer cache, asked whether a peer's full access hash is known.
///
/// Short updates (`updateShortMessage`, `updateShortChatMessage`, `updateShort`) come without
/// users, and a container's `users` may hold only "min" constructors: a message update that
/// names a peer neither the container nor this cache can resolve is not fed to the engine;
/// the sequence is fetched as a difference instead, which comes with full entities. The crate
/// docs list the peer fields checked. The own user ([`Converter::with_self_id`]) is never
/// asked about: it is always known.
///
/// [`Converter::with_self_id`]: crate::Converter::with_self_id
///
/// Closures `Fn(MentionedPeer) -> bool` implement it, and so does [`AllKnown`].
pub trait PeerCache {
    /// True when the application holds a usable access hash for `peer`.
    fn is_known(&self, peer: MentionedPeer) -> bool;
}

impl<F: Fn(MentionedPeer) -> bool> PeerCache for F {
    fn is_known(&self, peer: MentionedPeer) -> bool {
        self(peer)
    }
}

/// A cache that knows every peer: nothing is ever withheld. For bots or applications that
/// resolve peers lazily.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllKnown;

impl PeerCache for AllKnown {
    fn is_known(&self, _: MentionedPeer) -> bool {
        true
    }
}

/// Resolves peers against the own user, a container's entities, then the application's cache.
pub(crate) struct Resolver<'a, C> {
    pub(crate) cache: &'a C,
    /// The container's users and chats (empty for short updates).
    pub(crate) users: &'a [tl::enums::User],
    pub(crate) chats: &'a [tl::enums::Chat],
    /// The logged-in user ([`Converter::with_self_id`](crate::Converter::with_self_id)):
    /// always known, without asking the cache.
    pub(crate) self_id: Option<i64>,
}

impl<C: PeerCache> Resolver<'_, C> {
    fn known(&self, peer: MentionedPeer) -> bool {
        if matches!(peer, MentionedPeer::User(id) if Some(id) == self.self_id) {
            return true;
        }
        let in_entities = match peer {
            MentionedPeer::User(id) => has_full_user(self.users, id),
            MentionedPeer::Channel(id) => has_full_channel(self.chats, id),
        };
        in_entities || self.cache.is_known(peer)
    }

    fn peer_known(&self, peer: &tl::enums::Peer) -> bool {
        match peer {
            tl::enums::Peer::User(u) => self.known(MentionedPeer::User(u.user_id)),
            tl::enums::Peer::Channel(c) => self.known(MentionedPeer::Channel(c.channel_id)),
            tl::enums::Peer::Chat(_) => true,
        }
    }

    fn opt_peer_known(&self, peer: Option<&tl::enums::Peer>) -> bool {
        peer.is_none_or(|p| self.peer_known(p))
    }

    fn user_known(&self, user_id: Option<i64>) -> bool {
        user_id.is_none_or(|id| self.known(MentionedPeer::User(id)))
    }

    fn users_known(&self, users: &[i64]) -> bool {
        users.iter().all(|&id| self.known(MentionedPeer::User(id)))
    }

    /// A forward header (of the message itself, or of the message it replies to): the
    /// original sender (`from_id`), and for a message forwarded from Saved Messages the chat
    /// it was saved from (`saved_from_peer`) and its sender there (`saved_from_id`).
    fn forward_known(&self, fwd: Option<&tl::enums::MessageFwdHeader>) -> bool {
        fwd.is_none_or(|tl::enums::MessageFwdHeader::Header(h)| {
            self.opt_peer_known(h.from_id.as_ref())
                && self.opt_peer_known(h.saved_from_peer.as_ref())
                && self.opt_peer_known(h.saved_from_id.as_ref())
        })
    }

    /// A reply header: the chat of the replied-to message (`reply_to_peer_id`, when it is in
    /// another chat), that message's forward header (`reply_from`), its media (`reply_media`)
    /// and the users named in the quote (`quote_entities`); for a reply to a story, the
    /// story's poster (`peer`).
    fn reply_known(&self, reply: Option<&tl::enums::MessageReplyHeader>) -> bool {
        use tl::enums::MessageReplyHeader as R;
        reply.is_none_or(|reply| match reply {
            R::Header(h) => {
                self.opt_peer_known(h.reply_to_peer_id.as_ref())
                    && self.forward_known(h.reply_from.as_ref())
                    && self.media_known(h.reply_media.as_ref())
                    && self.mentions_known(h.quote_entities.as_ref())
            }
            R::MessageReplyStoryHeader(h) => self.peer_known(&h.peer),
        })
    }

    /// The users named in a text (`messageEntityMentionName`).
    fn mentions_known(&self, entities: Option<&Vec<tl::enums::MessageEntity>>) -> bool {
        entities.is_none_or(|list| {
            list.iter().all(|entity| match entity {
                tl::enums::MessageEntity::MentionName(m) => {
                    self.known(MentionedPeer::User(m.user_id))
                }
                _ => true,
            })
        })
    }

    /// The peers a message's media names: a shared contact's user (when they have an account:
    /// `user_id` is 0 otherwise), a shared story's poster, a giveaway's channels, a giveaway's
    /// results' channel and winners.
    fn media_known(&self, media: Option<&tl::enums::MessageMedia>) -> bool {
        use tl::enums::MessageMedia as M;
        media.is_none_or(|media| match media {
            M::Contact(c) => c.user_id == 0 || self.known(MentionedPeer::User(c.user_id)),
            M::Story(s) => self.peer_known(&s.peer),
            M::Giveaway(g) => g
                .channels
                .iter()
                .all(|&id| self.known(MentionedPeer::Channel(id))),
            M::GiveawayResults(r) => {
                self.known(MentionedPeer::Channel(r.channel_id)) && self.users_known(&r.winners)
            }
            _ => true,
        })
    }

    /// The users a service message's action names: members added, removed or invited, the
    /// creator's first members, the inviter of a link, the peers of a proximity alert.
    fn action_known(&self, action: &tl::enums::MessageAction) -> bool {
        use tl::enums::MessageAction as A;
        match action {
            A::ChatCreate(a) => self.users_known(&a.users),
            A::ChatAddUser(a) => self.users_known(&a.users),
            A::InviteToGroupCall(a) => self.users_known(&a.users),
            A::ChatDeleteUser(a) => self.known(MentionedPeer::User(a.user_id)),
            A::ChatJoinedByLink(a) => self.known(MentionedPeer::User(a.inviter_id)),
            A::GeoProximityReached(a) => self.peer_known(&a.from_id) && self.peer_known(&a.to_id),
            _ => true,
        }
    }

    /// Every peer a message names that the application would need: its chat (`peer_id`),
    /// its sender (`from_id`, asked about only when it is not the chat itself), the Saved
    /// Messages or monoforum dialog it is filed under (`saved_peer_id`), the reply header
    /// ([`Resolver::reply_known`]); for a `message` also the forward header
    /// ([`Resolver::forward_known`]), the inline bot (`via_bot_id`), the business bot that
    /// sent it (`via_business_bot_id`), `guestchat_via_from`, the users named in its text
    /// (`entities`) and the peers its media names ([`Resolver::media_known`]); for a service
    /// message, the users its action names ([`Resolver::action_known`]).
    pub(crate) fn message_known(&self, message: &tl::enums::Message) -> bool {
        match message {
            tl::enums::Message::Message(m) => {
                self.chat_and_sender_known(&m.peer_id, m.from_id.as_ref())
                    && self.opt_peer_known(m.saved_peer_id.as_ref())
                    && self.reply_known(m.reply_to.as_ref())
                    && self.forward_known(m.fwd_from.as_ref())
                    && self.user_known(m.via_bot_id)
                    && self.user_known(m.via_business_bot_id)
                    && self.opt_peer_known(m.guestchat_via_from.as_ref())
                    && self.mentions_known(m.entities.as_ref())
                    && self.media_known(m.media.as_ref())
            }
            tl::enums::Message::Service(m) => {
                self.chat_and_sender_known(&m.peer_id, m.from_id.as_ref())
                    && self.opt_peer_known(m.saved_peer_id.as_ref())
                    && self.reply_known(m.reply_to.as_ref())
                    && self.action_known(&m.action)
            }
            // Nothing to show: a deleted or unavailable message needs no peer.
            tl::enums::Message::Empty(_) => true,
        }
    }

    /// The chat, then the sender unless it is the chat (an incoming private message): the
    /// cache is asked once about each.
    fn chat_and_sender_known(
        &self,
        chat: &tl::enums::Peer,
        sender: Option<&tl::enums::Peer>,
    ) -> bool {
        self.peer_known(chat) && self.opt_peer_known(sender.filter(|&s| s != chat))
    }

    /// The message-bearing updates are checked (for a business message, also the message it
    /// replies to); others are delivered as they are (a typing notice from an unknown user is
    /// still worth delivering, and cannot be fetched again). The short forms
    /// (`updateShortMessage`, `updateShortChatMessage`) are checked as the `updateNewMessage`
    /// they expand to.
    pub(crate) fn update_known(&self, update: &tl::enums::Update) -> bool {
        use tl::enums::Update as U;
        let opt_message_known =
            |m: Option<&tl::enums::Message>| m.is_none_or(|m| self.message_known(m));
        match update {
            U::NewMessage(u) => self.message_known(&u.message),
            U::EditMessage(u) => self.message_known(&u.message),
            U::NewChannelMessage(u) => self.message_known(&u.message),
            U::EditChannelMessage(u) => self.message_known(&u.message),
            U::BotNewBusinessMessage(u) => {
                self.message_known(&u.message) && opt_message_known(u.reply_to_message.as_ref())
            }
            U::BotEditBusinessMessage(u) => {
                self.message_known(&u.message) && opt_message_known(u.reply_to_message.as_ref())
            }
            _ => true,
        }
    }
}
