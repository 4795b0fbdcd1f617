//! The users and chats that come with updates, and the channel access hashes they carry.

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
        self.users.iter().any(|user| match user {
            tl::enums::User::User(u) => u.id == user_id && !u.min && u.access_hash.is_some(),
            tl::enums::User::Empty(_) => false,
        })
    }

    /// True when these entities hold the channel with a usable (non-min) access hash.
    pub fn has_full_channel(&self, channel_id: i64) -> bool {
        self.chats.iter().any(|chat| {
            channel_hash(chat).is_some_and(|hash| hash.channel_id == channel_id && !hash.min)
        })
    }
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
fn channel_hash(chat: &tl::enums::Chat) -> Option<ChannelHash> {
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
