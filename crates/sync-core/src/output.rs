//! What the engine asks of its driver: deliveries, requests, commits and notifications.

use std::fmt;
use std::time::Duration;

use crate::state::{ChannelId, Commit};
use crate::update::ChannelHash;

/// Names one request the engine made; replies and failures quote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Names one delivered batch; the application acknowledges it once handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId(pub u64);

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A request the driver must send to Telegram, answering with the matching `handle_*` call
/// or with [`Engine::handle_failure`](crate::Engine::handle_failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Request {
    /// Quote it in the reply.
    pub id: RequestId,
    /// What to ask.
    pub kind: RequestKind,
}

/// The three calls the engine makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// `updates.getState`, on the very first start. Answer with
    /// [`Engine::handle_state`](crate::Engine::handle_state).
    GetState,
    /// `updates.getDifference`. Answer with
    /// [`Engine::handle_difference`](crate::Engine::handle_difference).
    GetDifference {
        /// The local pts.
        pts: i32,
        /// The local qts.
        qts: i32,
        /// The local date.
        date: i32,
        /// `pts_total_limit`, when set.
        pts_total_limit: Option<i32>,
    },
    /// `updates.getChannelDifference` with `force = false` and an empty filter; the driver adds
    /// the channel's stored access hash. Answer with
    /// [`Engine::handle_channel_difference`](crate::Engine::handle_channel_difference).
    GetChannelDifference {
        /// Which channel.
        channel_id: ChannelId,
        /// The channel's local pts.
        pts: i32,
        /// How many updates at most.
        limit: i32,
    },
}

/// Why a request failed, as the driver classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// A transient failure (network, RPC 500, `PERSISTENT_TIMESTAMP_OUTDATED`, FLOOD_WAIT):
    /// the engine retries after `after` when given (FLOOD_WAIT's seconds, or the driver's own
    /// jittered backoff), otherwise after its own exponential backoff.
    Retry {
        /// How long to wait before retrying, when the driver knows.
        after: Option<Duration>,
    },
    /// The channel can no longer be read (`CHANNEL_PRIVATE`, `CHANNEL_INVALID`, no access
    /// hash): the engine stops tracking it and asks storage to forget it.
    ChannelInaccessible,
}

/// A run of updates to hand to the application, in order.
///
/// Updates of one sequence appear in ascending order, and batches are emitted in order; once the
/// application has handled a batch it calls [`Engine::ack`](crate::Engine::ack) with its id.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch<U, E = ()> {
    /// Acknowledge the batch with this id.
    pub id: BatchId,
    /// The updates, in the order to handle them.
    pub updates: Vec<U>,
    /// The entities (users, chats) of the envelopes the updates came in. Entities describe
    /// peers, they are not ordered events: a batch may carry the entities of an envelope whose
    /// updates are still waiting behind a gap.
    pub entities: Vec<E>,
}

/// Something the driver must do, from [`Engine::poll_output`](crate::Engine::poll_output).
#[derive(Debug, Clone, PartialEq)]
pub enum Output<U, E = ()> {
    /// Hand these updates to the application, then acknowledge the batch.
    Deliver(Batch<U, E>),
    /// Send this request.
    Request(Request),
    /// Persist this change, all or nothing, in the order given.
    Commit(Commit),
    /// Store these channel access hashes (never "min" ones). A hash is reported when first
    /// learned and again only when it changes (or after the channel was forgotten).
    AccessHashes(Vec<ChannelHash>),
    /// History the application will not receive as updates, or a channel it lost: tell it.
    Notice(Notice),
}

/// Something the application should know besides updates: history it will not receive, or a
/// channel it can no longer read. Emitted in order with the deliveries around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Notice {
    /// `updates.differenceTooLong`: the common history between the old pts and `pts` was
    /// skipped. The application should reload what it shows (dialogs, open chats).
    DifferenceTooLong {
        /// The pts jumped to.
        pts: i32,
    },
    /// The channel's local history is stale (`channelDifferenceTooLong`, or an
    /// `updateChannelTooLong` for a channel the engine did not track): the application should
    /// reload its history. With `pts: None` the engine does not know where the channel
    /// stands; call [`Engine::track_channel`](crate::Engine::track_channel) once you do. The
    /// latest messages a `channelDifferenceTooLong` carries are delivered right after it.
    ChannelTooLong {
        /// Which channel.
        channel_id: ChannelId,
        /// The pts the engine now tracks the channel from, if any.
        pts: Option<i32>,
    },
    /// The engine stopped tracking a channel after [`Failure::ChannelInaccessible`]
    /// (`CHANNEL_PRIVATE`, `CHANNEL_INVALID`, no access hash).
    ChannelClosed {
        /// Which channel.
        channel_id: ChannelId,
    },
}

impl Notice {
    /// The channel the notice is about, if it is about one.
    pub fn channel_id(&self) -> Option<ChannelId> {
        match *self {
            Self::DifferenceTooLong { .. } => None,
            Self::ChannelTooLong { channel_id, .. } | Self::ChannelClosed { channel_id } => {
                Some(channel_id)
            }
        }
    }
}

/// Counters and gauges describing what the engine has done, from
/// [`Engine::stats`](crate::Engine::stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Updates handed to the application.
    pub updates_delivered: u64,
    /// Batches handed to the application.
    pub batches_delivered: u64,
    /// Updates dropped because they had been applied already.
    pub duplicates_dropped: u64,
    /// Gaps seen (a sequence got an update it could not apply yet).
    pub gaps_detected: u64,
    /// Gaps closed by the missing pushes arriving within the wait.
    pub gaps_filled_by_wait: u64,
    /// Gaps closed by fetching a difference.
    pub gaps_resolved_by_difference: u64,
    /// Times a buffer hit its cap and was replaced by a difference.
    pub buffer_overflows: u64,
    /// Updates buffered right now, waiting behind gaps or in-flight differences.
    pub buffered_now: usize,
    /// `getState` requests made.
    pub get_state_requests: u64,
    /// `getDifference` requests made.
    pub difference_requests: u64,
    /// `getChannelDifference` requests made.
    pub channel_difference_requests: u64,
    /// Failed requests reported by the driver.
    pub requests_failed: u64,
    /// `differenceTooLong`, `updatesTooLong`, `channelDifferenceTooLong` and
    /// `updateChannelTooLong` seen.
    pub too_long: u64,
    /// Channels tracked right now.
    pub channels_tracked: usize,
    /// Delivered batches not yet acknowledged.
    pub unacknowledged_batches: usize,
    /// Buffered updates discarded without delivery: numbered beyond the state that a final
    /// answer named (the server never sent them: absurd or far-future numbers from a buggy
    /// peer or adapter), or left under the old numbers by `updatePtsChanged`.
    pub updates_discarded: u64,
    /// Pushes refused as malformed ([`Engine::handle_updates`](crate::Engine::handle_updates)
    /// or [`Engine::handle_affected`](crate::Engine::handle_affected) returned an error); each
    /// led to a difference of every sequence it named.
    pub pushes_refused: u64,
    /// `updatePtsChanged` seen: re-bases on `getState` after the pending difference.
    pub rebases: u64,
}
