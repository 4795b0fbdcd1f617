//! What the engine needs to know about the application's updates, and the shapes in which
//! they reach it: pushed envelopes, differences, and the pts of the application's own calls.

use crate::state::{ChannelId, State};

/// Where an update sits in Telegram's numbering: the only thing the engine reads from it.
///
/// Adapters map each TL constructor to one of these. Updates whose `pts` or `qts` is 0 carry no
/// position (Telegram sends such updates outside the sequence); the engine treats them as
/// [`Sequence::Unordered`] and never lets them move or reset the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sequence {
    /// Not numbered (typing, user status, …): delivered as it arrives, or with its `seq`
    /// container when it came in one.
    Unordered,
    /// The common message box: applies when `local_pts + pts_count == pts`.
    Common {
        /// The box's pts after this update.
        pts: i32,
        /// How many pts this update consumes (0 is allowed).
        pts_count: i32,
    },
    /// Secret-chat and bot events: applies when `local_qts + 1 == qts`.
    Qts {
        /// The qts of this event.
        qts: i32,
    },
    /// One channel's message box: applies when `local_pts + pts_count == pts` for that channel.
    Channel {
        /// Which channel.
        channel_id: ChannelId,
        /// The channel's pts after this update.
        pts: i32,
        /// How many pts this update consumes (0 is allowed).
        pts_count: i32,
    },
    /// `updateChannelTooLong`: the channel has more news than a push can carry; the engine
    /// fetches its difference. Never delivered; never rewinds a known pts.
    ChannelTooLong {
        /// Which channel.
        channel_id: ChannelId,
        /// The channel's pts according to the server, when it says.
        pts: Option<i32>,
    },
    /// `updatePtsChanged`: the server renumbered the common box. The engine fetches what is
    /// still pending under the old numbers (`getDifference`), then re-bases on `getState`;
    /// updates buffered under the old numbers are discarded. Never delivered.
    PtsChanged,
}

/// An update of the application's own type, as the engine sees it.
///
/// The engine never inspects anything but [`Update::sequence`]; it moves updates around and
/// hands them back in [`Batch`](crate::Batch)es.
///
/// ```
/// use sync_core::{Sequence, Update};
///
/// struct NewMessage { pts: i32, text: String }
///
/// impl Update for NewMessage {
///     fn sequence(&self) -> Sequence {
///         Sequence::Common { pts: self.pts, pts_count: 1 }
///     }
/// }
/// ```
pub trait Update {
    /// Which sequence this update belongs to, and where in it.
    fn sequence(&self) -> Sequence;
}

/// A channel access hash learned from the `chats` of an update or a difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelHash {
    /// Which channel.
    pub channel_id: ChannelId,
    /// Its access hash, needed by `getChannelDifference`.
    pub access_hash: i64,
    /// True for a "min" channel, whose hash is not usable: the engine never reports those, so
    /// a min constructor can never overwrite a known hash.
    pub min: bool,
}

/// The users and chats that come with updates, opaque to the engine except for the channel
/// access hashes they carry.
///
/// `()` implements it for applications that keep entities elsewhere.
pub trait Entities {
    /// The channel access hashes these entities carry, min ones included (the engine filters).
    fn channel_hashes(&self) -> impl Iterator<Item = ChannelHash> + '_;

    /// True when there is nothing in them: empty entities are not delivered.
    fn is_empty(&self) -> bool;
}

impl Entities for () {
    fn channel_hashes(&self) -> impl Iterator<Item = ChannelHash> + '_ {
        std::iter::empty()
    }

    fn is_empty(&self) -> bool {
        true
    }
}

/// A pushed `Updates` value, as the adapter presents it.
///
/// The short forms (`updateShortMessage`, `updateShortChatMessage`, `updateShortSentMessage`,
/// `updateShort`) arrive as [`Updates::Short`] with the update expanded by the adapter;
/// `updates` is [`Updates::Combined`] with `seq_start == seq`.
#[derive(Debug, Clone, PartialEq)]
pub enum Updates<U, E = ()> {
    /// `updatesTooLong`: too much happened; the engine fetches the difference.
    TooLong,
    /// One update with the server date and no `seq`.
    Short {
        /// The update.
        update: U,
        /// The server date (Unix seconds).
        date: i32,
    },
    /// `updates` / `updatesCombined`: many updates in one container.
    Combined {
        /// The updates in the order the server sent them.
        updates: Vec<U>,
        /// The users and chats they mention.
        entities: E,
        /// The server date (Unix seconds).
        date: i32,
        /// The first `seq` of the container (equal to `seq` for `updates`).
        seq_start: i32,
        /// The last `seq` of the container; 0 means the container is unordered.
        seq: i32,
    },
}

/// The reply to `updates.getDifference`.
#[derive(Debug, Clone, PartialEq)]
pub enum Difference<U, E = ()> {
    /// `updates.differenceEmpty`: nothing new.
    Empty {
        /// The server date (Unix seconds).
        date: i32,
        /// The server's `seq`.
        seq: i32,
    },
    /// `updates.difference` (`slice == false`: this is all) or `updates.differenceSlice`
    /// (`slice == true`: fetch again from `state`).
    Difference {
        /// Every update the difference carries, in server order: new messages (wrapped by the
        /// adapter as `updateNewMessage`), new encrypted messages, and the other updates.
        updates: Vec<U>,
        /// The users and chats they mention.
        entities: E,
        /// The state after these updates (`state`, or `intermediate_state` for a slice).
        state: State,
        /// True for `updates.differenceSlice`.
        slice: bool,
    },
    /// `updates.differenceTooLong`: history was skipped; continue from this pts.
    TooLong {
        /// The pts to jump to.
        pts: i32,
    },
}

/// The reply to `updates.getChannelDifference`, with the channel it is for.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelDifference<U, E = ()> {
    /// The channel the request was for (checked against the request).
    pub channel_id: ChannelId,
    /// What the server answered.
    pub kind: ChannelDifferenceKind<U, E>,
}

/// The constructors of `updates.ChannelDifference`.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelDifferenceKind<U, E = ()> {
    /// `updates.channelDifferenceEmpty`.
    Empty {
        /// The channel's pts.
        pts: i32,
        /// False when more is to be fetched at once.
        is_final: bool,
        /// The server's polling hint, in seconds.
        timeout: Option<i32>,
    },
    /// `updates.channelDifference`.
    Difference {
        /// New messages (wrapped by the adapter as channel updates) and other updates, in
        /// server order.
        updates: Vec<U>,
        /// The users and chats they mention.
        entities: E,
        /// The channel's pts after these updates.
        pts: i32,
        /// False when more is to be fetched at once.
        is_final: bool,
        /// The server's polling hint, in seconds.
        timeout: Option<i32>,
    },
    /// `updates.channelDifferenceTooLong`: the local history is stale; the engine jumps to the
    /// dialog's pts and tells the application ([`Notice::ChannelTooLong`](crate::Output)),
    /// then delivers `updates` right after that notice.
    TooLong {
        /// The dialog's pts.
        pts: i32,
        /// The channel's latest messages that the reply carries (wrapped by the adapter as
        /// updates). They are outside the sequence: the engine delivers them as they are,
        /// after the notice and in a batch of their own, without reading their numbers, so an
        /// adapter should present them as unordered (e.g. with pts 0).
        updates: Vec<U>,
        /// The users and chats of the reply (access hashes are learned from them).
        entities: E,
        /// The server's polling hint, in seconds.
        timeout: Option<i32>,
    },
}

/// Which message box an application's own call affected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Affected {
    /// `messages.affectedMessages` / `affectedHistory` of the common box.
    Common {
        /// The pts the call returned.
        pts: i32,
        /// The pts_count the call returned.
        pts_count: i32,
    },
    /// The same for a channel (e.g. `channels.deleteMessages`).
    Channel {
        /// Which channel.
        channel_id: ChannelId,
        /// The pts the call returned.
        pts: i32,
        /// The pts_count the call returned.
        pts_count: i32,
    },
}
