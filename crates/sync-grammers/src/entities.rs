//! The users and chats that come with updates, and the channel access hashes they carry.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use grammers_tl_types as tl;
use sync_core::{ChannelHash, Entities};

/// The `users` and `chats` of an `Updates` container or a difference, as TL values.
///
/// The engine only reads the channel access hashes ([`Entities::channel_hashes`]); the batches
/// it delivers hand these back to the application unchanged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlEntities {
    /// The users mentioned.
    pub users: Vec<tl::enums::User>,
    /// The chats and channels mentioned.
    pub chats: Vec<tl::enums::Chat>,
}

impl TlEntities {
    /// Entities from a TL reply's lists.
    pub fn new(users: Vec<tl::enums::User>, chats: Vec<tl::enums::Chat>) -> Self {
        Self { users, chats }
    }

    /// True when these entities hold the user with a usable (non-min) access hash.
    pub fn has_full_user(&self, user_id: i64) -> bool {
        has_full_user(&self.users, user_id)
    }

    /// True when these entities hold the channel with a usable (non-min) access hash.
    pub fn has_full_channel(&self, channel_id: i64) -> bool {
        has_full_channel(&self.chats, channel_id)
    }
}

/// True when `users` hold the user with a usable (non-min) access hash.
pub(crate) fn has_full_user(users: &[tl::enums::User], user_id: i64) -> bool {
    users.iter().any(|user| match user {
        tl::enums::User::User(u) => u.id == user_id && !u.min && u.access_hash.is_some(),
        tl::enums::User::Empty(_) => false,
    })
}

/// True when `chats` hold the channel with a usable (non-min) access hash.
pub(crate) fn has_full_channel(chats: &[tl::enums::Chat], channel_id: i64) -> bool {
    chats.iter().any(|chat| {
        channel_hash(chat).is_some_and(|hash| hash.channel_id == channel_id && !hash.min)
    })
}

impl Entities for TlEntities {
    /// `channel` and `channelForbidden` constructors. A `channel` with `min` set, or without an
    /// access hash, is reported with `min: true` (hash 0 when absent) so the engine never lets
    /// it overwrite a known hash. Basic groups need no hash; `community` constructors are not
    /// message boxes and are skipped.
    fn channel_hashes(&self) -> impl Iterator<Item = ChannelHash> + '_ {
        self.chats.iter().filter_map(channel_hash)
    }

    fn is_empty(&self) -> bool {
        self.users.is_empty() && self.chats.is_empty()
    }
}

/// The access hash a chat carries, if it is a channel.
pub(crate) fn channel_hash(chat: &tl::enums::Chat) -> Option<ChannelHash> {
    match chat {
        tl::enums::Chat::Channel(c) => Some(ChannelHash {
            channel_id: c.id,
            access_hash: c.access_hash.unwrap_or(0),
            // A min constructor's hash only works in the context it was seen in, and one
            // without a hash has nothing usable: neither may replace a stored hash.
            min: c.min || c.access_hash.is_none(),
        }),
        // The user was banned or left; the hash is still the real one, and the engine needs it
        // to learn that the channel is inaccessible.
        tl::enums::Chat::ChannelForbidden(c) => Some(ChannelHash {
            channel_id: c.id,
            access_hash: c.access_hash,
            min: false,
        }),
        _ => None,
    }
}

impl TlEntities {
    /// The user `user_id`, if these entities carry it (a full one before a min one).
    pub fn user(&self, user_id: i64) -> Option<&tl::types::User> {
        let mut found = None;
        for user in &self.users {
            if let tl::enums::User::User(u) = user
                && u.id == user_id
            {
                if !u.min {
                    return Some(u);
                }
                found.get_or_insert(u);
            }
        }
        found
    }

    /// The basic group `chat_id` (`chat`, `chatForbidden` or `chatEmpty`), if these entities
    /// carry it.
    pub fn chat(&self, chat_id: i64) -> Option<&tl::enums::Chat> {
        self.chats
            .iter()
            .find(|chat| kind_of(chat) == Some(ChatKind::Group) && chat.id() == chat_id)
    }

    /// The channel or supergroup `channel_id` (`channel` or `channelForbidden`; a full one
    /// before a min one), if these entities carry it.
    pub fn channel(&self, channel_id: i64) -> Option<&tl::enums::Chat> {
        let mut found = None;
        for chat in &self.chats {
            if kind_of(chat) == Some(ChatKind::Channel) && chat.id() == channel_id {
                if !is_min(chat) {
                    return Some(chat);
                }
                found.get_or_insert(chat);
            }
        }
        found
    }

    /// The user, basic group or channel a TL `Peer` names, if these entities carry it.
    pub fn peer(&self, peer: &tl::enums::Peer) -> Option<PeerEntity<'_>> {
        match peer {
            tl::enums::Peer::User(p) => self.user(p.user_id).map(PeerEntity::User),
            tl::enums::Peer::Chat(p) => self.chat(p.chat_id).map(PeerEntity::Chat),
            tl::enums::Peer::Channel(p) => self.channel(p.channel_id).map(PeerEntity::Channel),
        }
    }
}

/// What a TL `Peer` names, found in [`TlEntities`] or an [`EntityIndex`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PeerEntity<'a> {
    /// A user (`peerUser`).
    User(&'a tl::types::User),
    /// A basic group (`peerChat`): `chat`, `chatForbidden` or `chatEmpty`.
    Chat(&'a tl::enums::Chat),
    /// A channel or supergroup (`peerChannel`): `channel` or `channelForbidden`.
    Channel(&'a tl::enums::Chat),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChatKind {
    Group,
    Channel,
}

fn kind_of(chat: &tl::enums::Chat) -> Option<ChatKind> {
    use tl::enums::Chat as C;
    match chat {
        C::Empty(_) | C::Chat(_) | C::Forbidden(_) => Some(ChatKind::Group),
        C::Channel(_) | C::ChannelForbidden(_) => Some(ChatKind::Channel),
        C::Community(_) | C::CommunityForbidden(_) => None,
    }
}

fn is_min(chat: &tl::enums::Chat) -> bool {
    matches!(chat, tl::enums::Chat::Channel(c) if c.min)
}

/// The users and chats of a delivered batch by id: what a [`Handler`] receives as
/// `Arc<[TlEntities]>`, indexed once so that each lookup is a hash probe.
///
/// A full (non-min) user or channel is preferred over a min one with the same id, whichever of
/// the batch's entity lists carries it.
///
/// [`Handler`]: https://docs.rs/sync-runtime/latest/sync_runtime/trait.Handler.html
///
/// ```
/// use grammers_tl_types as tl;
/// use sync_grammers::{EntityIndex, PeerEntity, TlEntities};
///
/// let chat: tl::enums::Chat = tl::types::ChatEmpty { id: 5 }.into();
/// let batch = [TlEntities::new(Vec::new(), vec![chat])];
/// let index = EntityIndex::new(&batch);
/// assert!(index.chat(5).is_some());
/// assert!(index.channel(5).is_none());
/// let peer: tl::enums::Peer = tl::types::PeerChat { chat_id: 5 }.into();
/// assert!(matches!(index.peer(&peer), Some(PeerEntity::Chat(_))));
/// ```
#[derive(Debug, Clone, Default)]
pub struct EntityIndex<'a> {
    /// Each entry with whether it is a min one.
    users: HashMap<i64, (&'a tl::types::User, bool)>,
    chats: HashMap<i64, (&'a tl::enums::Chat, bool)>,
    channels: HashMap<i64, (&'a tl::enums::Chat, bool)>,
}

impl<'a> EntityIndex<'a> {
    /// Indexes every user and chat of `entities`.
    pub fn new(entities: &'a [TlEntities]) -> Self {
        let mut index = Self::default();
        for list in entities {
            for user in &list.users {
                if let tl::enums::User::User(u) = user {
                    insert(&mut index.users, u.id, u, u.min);
                }
            }
            for chat in &list.chats {
                match kind_of(chat) {
                    Some(ChatKind::Group) => insert(&mut index.chats, chat.id(), chat, false),
                    Some(ChatKind::Channel) => {
                        insert(&mut index.channels, chat.id(), chat, is_min(chat));
                    }
                    None => {}
                }
            }
        }
        index
    }

    /// The user `user_id`.
    pub fn user(&self, user_id: i64) -> Option<&'a tl::types::User> {
        self.users.get(&user_id).map(|&(user, _)| user)
    }

    /// The basic group `chat_id`.
    pub fn chat(&self, chat_id: i64) -> Option<&'a tl::enums::Chat> {
        self.chats.get(&chat_id).map(|&(chat, _)| chat)
    }

    /// The channel or supergroup `channel_id`.
    pub fn channel(&self, channel_id: i64) -> Option<&'a tl::enums::Chat> {
        self.channels.get(&channel_id).map(|&(chat, _)| chat)
    }

    /// The user, basic group or channel a TL `Peer` names.
    pub fn peer(&self, peer: &tl::enums::Peer) -> Option<PeerEntity<'a>> {
        match peer {
            tl::enums::Peer::User(p) => self.user(p.user_id).map(PeerEntity::User),
            tl::enums::Peer::Chat(p) => self.chat(p.chat_id).map(PeerEntity::Chat),
            tl::enums::Peer::Channel(p) => self.channel(p.channel_id).map(PeerEntity::Channel),
        }
    }

    /// How many users, basic groups and channels it holds.
    pub fn len(&self) -> usize {
        self.users.len() + self.chats.len() + self.channels.len()
    }

    /// True when it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Keeps the first full entry for `id`, or a min one until a full one comes.
fn insert<'a, T>(map: &mut HashMap<i64, (&'a T, bool)>, id: i64, value: &'a T, min: bool) {
    match map.entry(id) {
        Entry::Vacant(slot) => {
            slot.insert((value, min));
        }
        Entry::Occupied(mut slot) => {
            if slot.get().1 && !min {
                slot.insert((value, min));
            }
        }
    }
}
