//! The engine's typed errors. Every error leaves the engine's state as it was before the call.

use crate::output::{BatchId, RequestId};
use crate::state::ChannelId;

/// Why the engine refused an input. The input had no effect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A number that Telegram never sends: negative, or a `pts_count` larger than its `pts`, or
    /// a `seq_start` outside `1..=seq`.
    #[error("invalid {field}: {value}")]
    InvalidNumber {
        /// Which field.
        field: &'static str,
        /// The value received.
        value: i64,
    },
    /// A channel id that is not positive.
    #[error("invalid channel id {0}")]
    InvalidChannel(ChannelId),
    /// A reply that would move a sequence backwards.
    #[error("{sequence} would move backwards from {local} to {received}")]
    Regression {
        /// Which sequence (`pts`, `qts`, `seq`, or `channel pts`).
        sequence: &'static str,
        /// The engine's value.
        local: i32,
        /// The value in the reply.
        received: i32,
    },
    /// A reply or failure for a request the engine did not make or no longer waits for.
    #[error("no request {0} is in flight")]
    UnknownRequest(RequestId),
    /// A reply of the wrong kind for the request (e.g. a channel difference for getState).
    #[error("request {id} expected a reply to {expected}")]
    UnexpectedReply {
        /// The request.
        id: RequestId,
        /// What it was.
        expected: &'static str,
    },
    /// A channel difference for another channel than the one requested.
    #[error("request {id} was for channel {expected}, the reply is for channel {received}")]
    ChannelMismatch {
        /// The request.
        id: RequestId,
        /// The channel requested.
        expected: ChannelId,
        /// The channel in the reply.
        received: ChannelId,
    },
    /// An acknowledgement of a batch that was never delivered or was acknowledged already.
    #[error("batch {0} is not awaiting acknowledgement")]
    UnknownBatch(BatchId),
    /// A channel the engine does not track.
    #[error("channel {0} is not tracked")]
    UnknownChannel(ChannelId),
    /// More open channels than [`EngineConfig::max_open_channels`](crate::EngineConfig).
    #[error("at most {limit} channels can be open at once")]
    TooManyOpenChannels {
        /// The configured limit.
        limit: usize,
    },
}
