//! The update and entity types the simulated server produces.

use sync_core::{ChannelHash, Entities, Sequence, Update};

/// One update from the simulated server: a unique id (the oracle's handle on it) and its place
/// in Telegram's numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TestUpdate {
    /// Unique per server event; duplicates of a push share it.
    pub id: u64,
    /// Where the update sits.
    pub sequence: Sequence,
}

impl Update for TestUpdate {
    fn sequence(&self) -> Sequence {
        self.sequence
    }
}

/// The entities of a push or difference: the channels it mentions, some as "min" constructors
/// whose hash is garbage.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TestEntities {
    /// The channels mentioned.
    pub channels: Vec<ChannelHash>,
}

impl Entities for TestEntities {
    fn channel_hashes(&self) -> impl Iterator<Item = ChannelHash> + '_ {
        self.channels.iter().copied()
    }

    fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }
}
