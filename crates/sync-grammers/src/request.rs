//! The engine's requests as TL function values.

use std::collections::HashMap;
use std::hash::BuildHasher;

use grammers_tl_types as tl;
use sync_core::{ChannelId, Request, RequestKind};

use crate::error::ConvertError;

/// Where the application keeps channel access hashes (those the engine reported in
/// [`Output::AccessHashes`](sync_core::Output), or learned elsewhere).
///
/// Implemented by `HashMap<ChannelId, i64>` and by closures `Fn(ChannelId) -> Option<i64>`.
pub trait AccessHashes {
    /// The stored access hash of `channel_id`, if any.
    fn access_hash(&self, channel_id: ChannelId) -> Option<i64>;
}

impl<S: BuildHasher> AccessHashes for HashMap<ChannelId, i64, S> {
    fn access_hash(&self, channel_id: ChannelId) -> Option<i64> {
        self.get(&channel_id).copied()
    }
}

impl<F: Fn(ChannelId) -> Option<i64>> AccessHashes for F {
    fn access_hash(&self, channel_id: ChannelId) -> Option<i64> {
        self(channel_id)
    }
}

/// One of the engine's requests as the TL function to invoke. Each implements
/// `RemoteCall`, whose reply converts back with [`state`](crate::state),
/// [`difference`](crate::difference) or [`channel_difference`](crate::channel_difference).
#[derive(Debug, Clone, PartialEq)]
pub enum TlRequest {
    /// `updates.getState`.
    GetState(tl::functions::updates::GetState),
    /// `updates.getDifference`.
    GetDifference(tl::functions::updates::GetDifference),
    /// `updates.getChannelDifference`, with the channel it is for (to convert the reply).
    GetChannelDifference {
        /// Which channel.
        channel_id: ChannelId,
        /// The call.
        request: tl::functions::updates::GetChannelDifference,
    },
}

/// Builds the TL call for an engine [`Request`]. A channel request takes its `InputChannel`
/// from `hashes`; without a stored hash it is [`ConvertError::MissingAccessHash`].
///
/// `getDifference` is sent with `date` at least 1 (Telegram refuses 0, which a fresh state may
/// carry) and without `pts_limit` / `qts_limit`; `getChannelDifference` with `force = false`
/// and no filter, as the engine asks.
pub fn request(request: &Request, hashes: &impl AccessHashes) -> Result<TlRequest, ConvertError> {
    Ok(match request.kind {
        RequestKind::GetState => TlRequest::GetState(tl::functions::updates::GetState {}),
        RequestKind::GetDifference {
            pts,
            qts,
            date,
            pts_total_limit,
        } => TlRequest::GetDifference(get_difference(pts, qts, date, pts_total_limit)),
        RequestKind::GetChannelDifference {
            channel_id,
            pts,
            limit,
        } => {
            let access_hash = hashes
                .access_hash(channel_id)
                .ok_or(ConvertError::MissingAccessHash(channel_id))?;
            TlRequest::GetChannelDifference {
                channel_id,
                request: get_channel_difference(channel_id, access_hash, pts, limit),
            }
        }
    })
}

/// `updates.getDifference` from the local `pts`, `qts` and `date` (a `date` of 0 is sent as 1:
/// Telegram refuses 0).
pub(crate) fn get_difference(
    pts: i32,
    qts: i32,
    date: i32,
    pts_total_limit: Option<i32>,
) -> tl::functions::updates::GetDifference {
    tl::functions::updates::GetDifference {
        pts,
        pts_limit: None,
        pts_total_limit,
        date: date.max(1),
        qts,
        qts_limit: None,
    }
}

/// `updates.getChannelDifference` with `force = false` and an empty filter.
pub(crate) fn get_channel_difference(
    channel_id: i64,
    access_hash: i64,
    pts: i32,
    limit: i32,
) -> tl::functions::updates::GetChannelDifference {
    tl::functions::updates::GetChannelDifference {
        force: false,
        channel: tl::types::InputChannel {
            channel_id,
            access_hash,
        }
        .into(),
        filter: tl::enums::ChannelMessagesFilter::Empty,
        pts,
        limit,
    }
}
