//! Which updates must be handled in order: the [`Peer`] key the application puts on its update
//! type.

use sync_core::ChannelId;

/// The peer an update belongs to: updates of one peer are handled one after another, in
/// order; updates of different peers may be handled at the same time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerKey {
    /// A private chat with a user (or a bot's user).
    User(i64),
    /// A basic group.
    Chat(i64),
    /// A channel or supergroup.
    Channel(ChannelId),
}

/// Tells the manager which peer an update belongs to.
///
/// `None` puts the update on one fixed shard, in order with every other `None` update: use it
/// for updates that are not about one peer (user status, config changes). Updates of one
/// sequence that must stay in order relative to each other across peers (for example a
/// handler that relies on the global `pts` order) should share one key.
pub trait Peer {
    /// The peer this update is about.
    fn peer(&self) -> Option<PeerKey>;
}
