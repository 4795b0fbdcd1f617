//! The calls the manager makes to Telegram, supplied by the application, and how their errors
//! are classified.

use std::future::Future;
use std::time::Duration;

use sync_core::{ChannelDifference, ChannelId, Difference, Entities, State, Update};

use crate::peer::Peer;

/// A boxed error from the application's client library, kept as the error's source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `updates.getDifference` as the engine asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DifferenceRequest {
    /// The local pts.
    pub pts: i32,
    /// The local qts.
    pub qts: i32,
    /// The local date.
    pub date: i32,
    /// `pts_total_limit`, when set.
    pub pts_total_limit: Option<i32>,
}

/// `updates.getChannelDifference` as the engine asks for it, with the stored access hash.
///
/// Send it with `force = false` and an empty message filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelDifferenceRequest {
    /// Which channel.
    pub channel_id: ChannelId,
    /// Its access hash, from storage or learned from updates.
    pub access_hash: i64,
    /// The channel's local pts.
    pub pts: i32,
    /// How many updates at most.
    pub limit: i32,
}

/// The three calls the manager makes to keep an account in sync, implemented by the
/// application over its MTProto client.
///
/// Each call returns the reply mapped to the engine's types, or an [`ApiError`] that says what
/// to do about the failure. The manager runs several calls at once (a few channel differences
/// while the common difference is in flight), so implementations are shared (`&self`) and
/// their futures must be `Send`.
///
/// ```
/// use sync_core::{ChannelDifference, Difference, Sequence, State, Update};
/// use sync_runtime::{Api, ApiError, ChannelDifferenceRequest, DifferenceRequest, Peer, PeerKey};
///
/// #[derive(Debug, Clone)]
/// struct Message { chat: i64, pts: i32 }
///
/// impl Update for Message {
///     fn sequence(&self) -> Sequence { Sequence::Common { pts: self.pts, pts_count: 1 } }
/// }
/// impl Peer for Message {
///     fn peer(&self) -> Option<PeerKey> { Some(PeerKey::Chat(self.chat)) }
/// }
///
/// struct Client; // the application's MTProto client
///
/// impl Api for Client {
///     type Update = Message;
///     type Entities = ();
///
///     async fn get_state(&self) -> Result<State, ApiError> {
///         // client.invoke(updates.getState).await, mapped; RPC errors through ApiError::rpc.
///         Err(ApiError::rpc(420, "FLOOD_WAIT_3"))
///     }
///     async fn get_difference(&self, request: DifferenceRequest) -> Result<Difference<Message>, ApiError> {
///         Ok(Difference::Empty { date: request.date, seq: 0 })
///     }
///     async fn get_channel_difference(
///         &self,
///         request: ChannelDifferenceRequest,
///     ) -> Result<ChannelDifference<Message>, ApiError> {
///         Err(ApiError::rpc(400, "CHANNEL_PRIVATE"))
///     }
/// }
/// ```
pub trait Api: Send + Sync + 'static {
    /// The application's update type.
    type Update: Update + Peer + Send + 'static;
    /// The users and chats that come with updates (`()` when the application keeps them
    /// elsewhere).
    type Entities: Entities + Send + Sync + 'static;

    /// `updates.getState`: called once, on the first run of an account without stored state.
    fn get_state(&self) -> impl Future<Output = Result<State, ApiError>> + Send;

    /// `updates.getDifference`.
    fn get_difference(
        &self,
        request: DifferenceRequest,
    ) -> impl Future<Output = Result<Difference<Self::Update, Self::Entities>, ApiError>> + Send;

    /// `updates.getChannelDifference`; the reply's `channel_id` must be the requested one.
    fn get_channel_difference(
        &self,
        request: ChannelDifferenceRequest,
    ) -> impl Future<Output = Result<ChannelDifference<Self::Update, Self::Entities>, ApiError>> + Send;
}

/// A shared client: the manager calls through the `Arc`, so one client can serve a manager and
/// the rest of the application. (`&A` is not an `Api`: the manager's requests run on their own
/// tasks and need `'static`.)
impl<A: Api + ?Sized> Api for std::sync::Arc<A> {
    type Update = A::Update;
    type Entities = A::Entities;

    fn get_state(&self) -> impl Future<Output = Result<State, ApiError>> + Send {
        (**self).get_state()
    }

    fn get_difference(
        &self,
        request: DifferenceRequest,
    ) -> impl Future<Output = Result<Difference<Self::Update, Self::Entities>, ApiError>> + Send
    {
        (**self).get_difference(request)
    }

    fn get_channel_difference(
        &self,
        request: ChannelDifferenceRequest,
    ) -> impl Future<Output = Result<ChannelDifference<Self::Update, Self::Entities>, ApiError>> + Send
    {
        (**self).get_channel_difference(request)
    }
}

/// The update type of an [`Api`].
pub(crate) type UpdateOf<A> = <A as Api>::Update;
/// The entities type of an [`Api`].
pub(crate) type EntitiesOf<A> = <A as Api>::Entities;

/// Why a call failed, classified by what the manager should do about it.
///
/// Build it from an RPC error with [`ApiError::rpc`] (the name as Telegram sends it) or
/// [`ApiError::rpc_with_value`] (the name and its number apart), which know Telegram's error
/// names, or pick the variant directly for transport errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// A transient failure (network, timeout, RPC 500, `PERSISTENT_TIMESTAMP_OUTDATED`): the
    /// call is retried with exponential backoff and jitter.
    #[error("transient failure: {message}")]
    Transient {
        /// What happened.
        message: String,
        /// The client library's error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// `FLOOD_WAIT_N` and its relatives: the call is retried after `after` (plus a little
    /// jitter).
    #[error("flood wait of {after:?}")]
    FloodWait {
        /// How long Telegram asked to wait.
        after: Duration,
    },
    /// The channel cannot be read any more (`CHANNEL_PRIVATE`, `CHANNEL_INVALID`,
    /// `CHANNEL_PUBLIC_GROUP_NA`, …): the manager stops tracking it and tells the application
    /// ([`Notice::ChannelClosed`](crate::Notice::ChannelClosed)). Only meaningful for
    /// `getChannelDifference`; elsewhere it is treated as transient.
    #[error("channel inaccessible: {message}")]
    ChannelInaccessible {
        /// The RPC error name or a description.
        message: String,
    },
    /// The authorization is gone (`AUTH_KEY_UNREGISTERED`, `AUTH_KEY_DUPLICATED`, `SESSION_REVOKED`,
    /// `USER_DEACTIVATED`, any 401): nothing can be fetched any more, and [`Manager::run`](crate::Manager::run)
    /// stops with [`RunError::Unauthorized`](crate::RunError::Unauthorized).
    #[error("authorization lost: {message}")]
    Unauthorized {
        /// The RPC error name or a description.
        message: String,
    },
}

impl ApiError {
    /// Classifies an RPC error by its code and its name as Telegram sends it, with any number
    /// joined on (`"FLOOD_WAIT_30"`, `"CHANNEL_PRIVATE"`, …). A trailing `_N` is split off as
    /// the value, so this classifies exactly like [`rpc_with_value`](Self::rpc_with_value),
    /// which takes the two apart (as grammers' `RpcError` has them):
    ///
    /// | error | class |
    /// | --- | --- |
    /// | 401; `AUTH_KEY_UNREGISTERED`, `AUTH_KEY_INVALID`, `AUTH_KEY_DUPLICATED` (and any other `AUTH_KEY_*`); `SESSION_REVOKED`, `SESSION_EXPIRED`, `SESSION_PASSWORD_NEEDED`; `USER_DEACTIVATED`, `USER_DEACTIVATED_BAN` | [`Unauthorized`](Self::Unauthorized) |
    /// | `FLOOD_WAIT_N`, `FLOOD_PREMIUM_WAIT_N`, `SLOWMODE_WAIT_N`, `FLOOD_TEST_PHONE_WAIT_N`, `TAKEOUT_INIT_DELAY_N`, and any other 420 with a value | [`FloodWait`](Self::FloodWait) of N seconds |
    /// | `CHANNEL_PRIVATE`, `CHANNEL_INVALID`, `CHANNEL_PUBLIC_GROUP_NA`, `CHAT_FORBIDDEN`, `USER_BANNED_IN_CHANNEL` | [`ChannelInaccessible`](Self::ChannelInaccessible) |
    /// | anything else: 5xx and -503 timeouts, `PERSISTENT_TIMESTAMP_OUTDATED`, `TIMEOUT`, unknown 400s, a wait without its number | [`Transient`](Self::Transient) |
    ///
    /// ```
    /// use std::time::Duration;
    /// use sync_runtime::ApiError;
    ///
    /// assert!(matches!(ApiError::rpc(420, "FLOOD_WAIT_7"), ApiError::FloodWait { after } if after == Duration::from_secs(7)));
    /// assert!(matches!(ApiError::rpc(400, "CHANNEL_PRIVATE"), ApiError::ChannelInaccessible { .. }));
    /// assert!(matches!(ApiError::rpc(401, "AUTH_KEY_UNREGISTERED"), ApiError::Unauthorized { .. }));
    /// assert!(matches!(ApiError::rpc(500, "PERSISTENT_TIMESTAMP_OUTDATED"), ApiError::Transient { .. }));
    /// ```
    pub fn rpc(code: i32, message: &str) -> Self {
        let (name, value) = split_value(message);
        Self::classify(code, name, value)
    }

    /// Classifies an RPC error whose number comes apart from its name, as grammers' `RpcError`
    /// has them (`FLOOD_WAIT_31` is `name: "FLOOD_WAIT"`, `value: Some(31)`). Same classes as
    /// [`rpc`](Self::rpc).
    ///
    /// ```
    /// use std::time::Duration;
    /// use sync_runtime::ApiError;
    ///
    /// // With grammers: ApiError::rpc_with_value(e.code, &e.name, e.value)
    /// let error = ApiError::rpc_with_value(420, "FLOOD_WAIT", Some(31));
    /// assert!(matches!(error, ApiError::FloodWait { after } if after == Duration::from_secs(31)));
    /// assert!(matches!(
    ///     ApiError::rpc_with_value(406, "AUTH_KEY_DUPLICATED", None),
    ///     ApiError::Unauthorized { .. }
    /// ));
    /// ```
    pub fn rpc_with_value(code: i32, name: &str, value: Option<u32>) -> Self {
        Self::classify(code, name, value)
    }

    /// The one classification behind [`rpc`](Self::rpc) and
    /// [`rpc_with_value`](Self::rpc_with_value).
    fn classify(code: i32, name: &str, value: Option<u32>) -> Self {
        let message = match value {
            Some(value) => format!("{code} {name}_{value}"),
            None => format!("{code} {name}"),
        };
        let waits = matches!(
            name,
            "FLOOD_WAIT"
                | "FLOOD_PREMIUM_WAIT"
                | "SLOWMODE_WAIT"
                | "FLOOD_TEST_PHONE_WAIT"
                | "TAKEOUT_INIT_DELAY"
        ) || code == 420;
        if waits && let Some(seconds) = value {
            return Self::FloodWait {
                after: Duration::from_secs(u64::from(seconds)),
            };
        }
        let unauthorized = code == 401
            || name.starts_with("AUTH_KEY_")
            || matches!(
                name,
                "SESSION_REVOKED"
                    | "SESSION_EXPIRED"
                    | "SESSION_PASSWORD_NEEDED"
                    | "USER_DEACTIVATED"
                    | "USER_DEACTIVATED_BAN"
            );
        if unauthorized {
            return Self::Unauthorized { message };
        }
        if matches!(
            name,
            "CHANNEL_PRIVATE"
                | "CHANNEL_INVALID"
                | "CHANNEL_PUBLIC_GROUP_NA"
                | "CHAT_FORBIDDEN"
                | "USER_BANNED_IN_CHANNEL"
        ) {
            return Self::ChannelInaccessible { message };
        }
        Self::Transient {
            message,
            source: None,
        }
    }

    /// A transient transport failure (connection lost, timeout) with its cause.
    pub fn network(error: impl Into<BoxError>) -> Self {
        let source = error.into();
        Self::Transient {
            message: source.to_string(),
            source: Some(source),
        }
    }
}

/// Splits a trailing `_N` off an RPC error name, as grammers does: `FLOOD_WAIT_31` is
/// `("FLOOD_WAIT", Some(31))`; a name without a number is kept whole.
fn split_value(message: &str) -> (&str, Option<u32>) {
    match message.rsplit_once('_') {
        Some((name, digits))
            if !name.is_empty()
                && !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit()) =>
        {
            match digits.parse() {
                Ok(value) => (name, Some(value)),
                Err(_) => (message, None),
            }
        }
        _ => (message, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_rpc_errors() {
        assert!(
            matches!(ApiError::rpc(420, "FLOOD_WAIT_0"), ApiError::FloodWait { after } if after.is_zero())
        );
        assert!(
            matches!(ApiError::rpc(420, "SLOWMODE_WAIT_12"), ApiError::FloodWait { after } if after.as_secs() == 12)
        );
        assert!(matches!(
            ApiError::rpc(420, "FLOOD_WAIT_X"),
            ApiError::Transient { .. }
        ));
        assert!(matches!(
            ApiError::rpc(401, "WHATEVER"),
            ApiError::Unauthorized { .. }
        ));
        assert!(matches!(
            ApiError::rpc(400, "CHANNEL_INVALID"),
            ApiError::ChannelInaccessible { .. }
        ));
        assert!(matches!(
            ApiError::rpc(400, "PEER_ID_INVALID"),
            ApiError::Transient { .. }
        ));
        assert!(matches!(
            ApiError::network(std::io::Error::other("reset")),
            ApiError::Transient {
                source: Some(_),
                ..
            }
        ));
    }
}
