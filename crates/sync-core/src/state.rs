//! The persisted shape of an account's update state, and the changes the engine asks storage
//! to make to it.

/// A channel's (or supergroup's) identifier, as Telegram's `channel_id`.
pub type ChannelId = i64;

/// The common update state of an account, as `updates.state` names it.
///
/// `pts` numbers the common message box, `qts` secret-chat and bot events, `seq` the
/// `updates` containers, and `date` is the server time of the last applied update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct State {
    /// The common message box's sequence number.
    pub pts: i32,
    /// The secret-chat and bot events' sequence number.
    pub qts: i32,
    /// The server date (Unix seconds) of the last applied update.
    pub date: i32,
    /// The `updates` containers' sequence number.
    pub seq: i32,
}

/// The new stored position of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelCommit {
    /// Which channel.
    pub channel_id: ChannelId,
    /// The channel's pts after the committed updates.
    pub pts: i32,
    /// Set when the pts comes from a too-long reset rather than from applying updates in order:
    /// storage must accept it even where it would otherwise look like a regression.
    pub reset: bool,
}

/// A change the engine asks storage to persist, all or nothing.
///
/// A commit only ever covers updates the application has acknowledged as handled, so storage
/// that applies every commit in the order the engine emits them never runs ahead of the
/// application: a restart from it redelivers at most the unacknowledged tail, and loses nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Commit {
    /// The new common state, if it changed.
    pub state: Option<State>,
    /// Set when the common state was jumped forward by a too-long reset (history was skipped).
    pub state_reset: bool,
    /// The new positions of the channels that changed, at most one entry per channel.
    pub channels: Vec<ChannelCommit>,
    /// Channels the engine stopped tracking (access lost): storage forgets their pts.
    pub removed_channels: Vec<ChannelId>,
}

impl Commit {
    /// True when the commit changes nothing.
    pub fn is_empty(&self) -> bool {
        self.state.is_none() && self.channels.is_empty() && self.removed_channels.is_empty()
    }
}
