//! The one error type every backend returns.

use std::fmt;

use sync_core::ChannelId;

use crate::AccountId;

/// A boxed error from a backend's own library, kept as the [`std::error::Error::source`].
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What storage operations return.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which sequence a stale write tried to move backwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StaleSequence {
    /// The common message box's `pts`.
    Pts,
    /// The secret-chat and bot events' `qts`.
    Qts,
    /// The `updates` containers' `seq`.
    Seq,
    /// One channel's `pts`.
    Channel(ChannelId),
}

impl fmt::Display for StaleSequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pts => f.write_str("pts"),
            Self::Qts => f.write_str("qts"),
            Self::Seq => f.write_str("seq"),
            Self::Channel(id) => write!(f, "pts of channel {id}"),
        }
    }
}

/// Why a storage operation failed.
///
/// The variants answer the question a caller has to decide on: may I retry, must I re-read
/// first, or is something broken that a retry will not fix?
///
/// | variant | did the write happen? | what to do |
/// | --- | --- | --- |
/// | [`Unavailable`](Error::Unavailable) | no | retry later (backoff) |
/// | [`Ambiguous`](Error::Ambiguous) | maybe | re-read, or re-send a write that is safe to repeat |
/// | [`Stale`](Error::Stale) | no, on purpose | someone stored a newer position: reload it |
/// | [`Corrupt`](Error::Corrupt) | no | a stored value does not parse: an operator must look |
/// | [`Fenced`](Error::Fenced) | no, on purpose | another owner took the account's lease: stop |
/// | [`Config`](Error::Config) | no | fix the configuration |
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend could not be reached or refused to work (connection refused, server down,
    /// file locked or unreadable). The operation was not carried out.
    #[error("{backend} storage is unavailable: {source}")]
    Unavailable {
        /// Which backend (`"redis"`, `"file"`, …).
        backend: &'static str,
        /// The backend library's error.
        #[source]
        source: BackendError,
    },
    /// The command was sent but no answer came back (a timeout or a connection lost after
    /// sending): the write may or may not have been applied.
    #[error("{backend} storage outcome unknown (the write may or may not have happened): {source}")]
    Ambiguous {
        /// Which backend.
        backend: &'static str,
        /// The backend library's error.
        #[source]
        source: BackendError,
    },
    /// The write would have moved a sequence backwards without being a forced reset, so
    /// nothing of it was applied.
    #[error(
        "stale write rejected for account {account}: {sequence} would move back from {stored} to {attempted}"
    )]
    Stale {
        /// Whose state.
        account: AccountId,
        /// Which sequence would have regressed.
        sequence: StaleSequence,
        /// The stored value.
        stored: i32,
        /// The value the write carried.
        attempted: i32,
    },
    /// A stored value does not parse (wrong type, garbage, out of range). Nothing was changed.
    #[error("corrupt data in {backend} storage at {location}: {detail}")]
    Corrupt {
        /// Which backend.
        backend: &'static str,
        /// Where the bad value is (a key and field, a table).
        location: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The write carried a fencing token that is no longer the account's current one:
    /// another owner acquired the account's lease since (see [`crate::lease`]). Nothing was
    /// changed; the writer is no longer the owner and must stop.
    #[error(
        "account {account} is owned by a newer lease (token {current}); token {token} is fenced off"
    )]
    Fenced {
        /// Whose lease.
        account: AccountId,
        /// The token the write carried.
        token: u64,
        /// The account's current token.
        current: u64,
    },
    /// The backend was configured wrongly (a bad URL, a bad key prefix).
    #[error("invalid storage configuration: {0}")]
    Config(String),
}

impl Error {
    /// True for [`Error::Unavailable`]: retrying the same operation later is safe.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// True for [`Error::Ambiguous`].
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, Self::Ambiguous { .. })
    }

    /// True for [`Error::Stale`].
    pub fn is_stale(&self) -> bool {
        matches!(self, Self::Stale { .. })
    }

    /// True for [`Error::Fenced`].
    pub fn is_fenced(&self) -> bool {
        matches!(self, Self::Fenced { .. })
    }

    /// True for [`Error::Corrupt`].
    pub fn is_corrupt(&self) -> bool {
        matches!(self, Self::Corrupt { .. })
    }
}
