//! The adapter's typed errors.

use sync_core::ChannelId;

/// A TL value the adapter cannot turn into an engine input or a request.
///
/// Every other shape converts: unknown or surprising updates become unordered updates (see
/// [`sequence_of`](crate::sequence_of)), never errors or panics.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConvertError {
    /// `getChannelDifference` needs the channel's access hash and none is stored. Report the
    /// request as failed with [`Failure::ChannelInaccessible`](sync_core::Failure) (or learn the
    /// hash and retry).
    #[error("no access hash is known for channel {0}")]
    MissingAccessHash(ChannelId),
    /// `channelDifferenceTooLong` whose dialog is not the channel's own `dialog` (a folder or
    /// community dialog, or another peer).
    #[error("channelDifferenceTooLong for channel {0} carries a dialog of another peer")]
    UnexpectedDialog(ChannelId),
    /// `channelDifferenceTooLong` whose dialog carries no `pts`: there is nothing to reset to.
    #[error("channelDifferenceTooLong for channel {0} carries no pts")]
    DialogWithoutPts(ChannelId),
    /// Bytes that do not decode as the expected TL type (truncated, or a constructor this
    /// layer does not know). For a pushed `Updates` value, fetch the difference instead
    /// ([`Engine::request_difference`](sync_core::Engine::request_difference)).
    #[error("undecodable TL value: {0}")]
    Undecodable(#[from] grammers_tl_types::deserialize::Error),
}
