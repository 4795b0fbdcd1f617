//! The application's answer to "can I resolve this peer?", and the peers a message mentions.

use grammers_tl_types as tl;

use crate::entities::TlEntities;

/// A peer that needs an access hash before the application can act on it.
///
/// Basic groups (`peerChat`) need none and are never asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerRef {
    /// A user (sender, private chat partner, forward origin, inline bot, mention).
    User(i64),
    /// A channel or supergroup (a message's chat, a forward origin, a sender posting as one).
    Channel(i64),
}

/// The application's peer cache, asked whether a peer's full access hash is known.
///
/// Short updates (`updateShortMessage`, `updateShortChatMessage`, `updateShort`) come without
/// users, and a container's `users` may hold only "min" constructors: a message update that
/// mentions a peer neither the container nor this cache can resolve is not fed to the engine;
/// the sequence is fetched as a difference instead, which comes with full entities.
///
/// Closures `Fn(PeerRef) -> bool` implement it, and so does [`AllKnown`].
pub trait PeerCache {
    /// True when the application holds a usable access hash for `peer`.
    fn is_known(&self, peer: PeerRef) -> bool;
}

impl<F: Fn(PeerRef) -> bool> PeerCache for F {
    fn is_known(&self, peer: PeerRef) -> bool {
        self(peer)
    }
}

/// A cache that knows every peer: nothing is ever withheld. For bots or applications that
/// resolve peers lazily.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllKnown;

impl PeerCache for AllKnown {
    fn is_known(&self, _: PeerRef) -> bool {
        true
    }
}

/// Resolves peers against a container's entities first, then the application's cache.
pub(crate) struct Resolver<'a, C> {
    pub(crate) cache: &'a C,
    pub(crate) entities: Option<&'a TlEntities>,
}

impl<C: PeerCache> Resolver<'_, C> {
    fn known(&self, peer: PeerRef) -> bool {
        let in_entities = self.entities.is_some_and(|e| match peer {
            PeerRef::User(id) => e.has_full_user(id),
            PeerRef::Channel(id) => e.has_full_channel(id),
        });
        in_entities || self.cache.is_known(peer)
    }

    fn peer_known(&self, peer: &tl::enums::Peer) -> bool {
        match peer {
            tl::enums::Peer::User(u) => self.known(PeerRef::User(u.user_id)),
            tl::enums::Peer::Channel(c) => self.known(PeerRef::Channel(c.channel_id)),
            tl::enums::Peer::Chat(_) => true,
        }
    }

    fn opt_peer_known(&self, peer: Option<&tl::enums::Peer>) -> bool {
        peer.is_none_or(|p| self.peer_known(p))
    }

    fn forward_known(&self, fwd: Option<&tl::enums::MessageFwdHeader>) -> bool {
        fwd.is_none_or(|tl::enums::MessageFwdHeader::Header(h)| {
            self.opt_peer_known(h.from_id.as_ref())
        })
    }

    fn mentions_known(&self, entities: Option<&Vec<tl::enums::MessageEntity>>) -> bool {
        entities.is_none_or(|list| {
            list.iter().all(|entity| match entity {
                tl::enums::MessageEntity::MentionName(m) => self.known(PeerRef::User(m.user_id)),
                _ => true,
            })
        })
    }

    fn user_known(&self, user_id: Option<i64>) -> bool {
        user_id.is_none_or(|id| self.known(PeerRef::User(id)))
    }

    /// The users a service message's action names: members added, removed or invited, the
    /// creator's first members, the inviter of a link, the peers of a proximity alert.
    fn action_known(&self, action: &tl::enums::MessageAction) -> bool {
        use tl::enums::MessageAction as A;
        let all = |users: &[i64]| users.iter().all(|&id| self.known(PeerRef::User(id)));
        match action {
            A::ChatCreate(a) => all(&a.users),
            A::ChatAddUser(a) => all(&a.users),
            A::InviteToGroupCall(a) => all(&a.users),
            A::ChatDeleteUser(a) => self.known(PeerRef::User(a.user_id)),
            A::ChatJoinedByLink(a) => self.known(PeerRef::User(a.inviter_id)),
            A::GeoProximityReached(a) => self.peer_known(&a.from_id) && self.peer_known(&a.to_id),
            _ => true,
        }
    }

    /// Every peer a message mentions that the application would need: its chat, its sender,
    /// the forward origin, the inline bot and the users named in its text; for a service
    /// message, the users its action names.
    pub(crate) fn message_known(&self, message: &tl::enums::Message) -> bool {
        match message {
            tl::enums::Message::Message(m) => {
                self.peer_known(&m.peer_id)
                    && self.opt_peer_known(m.from_id.as_ref())
                    && self.forward_known(m.fwd_from.as_ref())
                    && self.user_known(m.via_bot_id)
                    && self.mentions_known(m.entities.as_ref())
            }
            tl::enums::Message::Service(m) => {
                self.peer_known(&m.peer_id)
                    && self.opt_peer_known(m.from_id.as_ref())
                    && self.action_known(&m.action)
            }
            // Nothing to show: a deleted or unavailable message needs no peer.
            tl::enums::Message::Empty(_) => true,
        }
    }

    /// The message-bearing updates are checked; others are delivered as they are (a typing
    /// notice from an unknown user is still worth delivering, and cannot be fetched again).
    pub(crate) fn update_known(&self, update: &tl::enums::Update) -> bool {
        use tl::enums::Update as U;
        match update {
            U::NewMessage(u) => self.message_known(&u.message),
            U::EditMessage(u) => self.message_known(&u.message),
            U::NewChannelMessage(u) => self.message_known(&u.message),
            U::EditChannelMessage(u) => self.message_known(&u.message),
            U::BotNewBusinessMessage(u) => self.message_known(&u.message),
            U::BotEditBusinessMessage(u) => self.message_known(&u.message),
            _ => true,
        }
    }

    /// `updateShortMessage`: the chat partner (who is also the sender or the recipient), the
    /// forward origin, the inline bot and the mentions.
    pub(crate) fn short_message_known(&self, m: &tl::types::UpdateShortMessage) -> bool {
        self.known(PeerRef::User(m.user_id))
            && self.forward_known(m.fwd_from.as_ref())
            && self.user_known(m.via_bot_id)
            && self.mentions_known(m.entities.as_ref())
    }

    /// `updateShortChatMessage`: the sender (the basic group needs no hash), the forward
    /// origin, the inline bot and the mentions.
    pub(crate) fn short_chat_message_known(&self, m: &tl::types::UpdateShortChatMessage) -> bool {
        self.known(PeerRef::User(m.from_id))
            && self.forward_known(m.fwd_from.as_ref())
            && self.user_known(m.via_bot_id)
            && self.mentions_known(m.entities.as_ref())
    }
}
