//! [`GrammersApi`]: the manager's three calls over grammers' client, and how grammers' errors
//! map to [`ApiError`].

use std::future::Future;

use grammers_mtsender::{ConnectionParams, InvocationError, NoRetries, RpcError};
use grammers_tl_types as tl;
use sync_core::{ChannelDifference, ChannelDifferenceKind, Difference, State};
use sync_runtime::{Api, ApiError, ChannelDifferenceRequest, DifferenceRequest};

use super::session_peers::LearnPeers;
use crate::entities::TlEntities;
use crate::error::ConvertError;
use crate::request::{get_channel_difference, get_difference};
use crate::update::TlUpdate;

/// What [`GrammersApi`] needs of a client: invoke one TL function and return its result.
///
/// Implemented by [`grammers_client::Client`] (through [`Client::invoke`]); a test implements
/// it over a fake transport to run the same code path.
///
/// [`Client::invoke`]: grammers_client::Client::invoke
pub trait Invoke: Send + Sync + 'static {
    /// Sends `request` and waits for its result.
    fn invoke<R>(
        &self,
        request: &R,
    ) -> impl Future<Output = Result<R::Return, InvocationError>> + Send
    where
        R: tl::RemoteCall + Send + Sync,
        R::Return: Send;
}

impl Invoke for grammers_client::Client {
    fn invoke<R>(
        &self,
        request: &R,
    ) -> impl Future<Output = Result<R::Return, InvocationError>> + Send
    where
        R: tl::RemoteCall + Send + Sync,
        R::Return: Send,
    {
        grammers_client::Client::invoke(self, request)
    }
}

impl<I: Invoke> Invoke for std::sync::Arc<I> {
    fn invoke<R>(
        &self,
        request: &R,
    ) -> impl Future<Output = Result<R::Return, InvocationError>> + Send
    where
        R: tl::RemoteCall + Send + Sync,
        R::Return: Send,
    {
        (**self).invoke(request)
    }
}

/// The [`Api`] the manager calls, over grammers' client (or any [`Invoke`]): `updates.getState`,
/// `updates.getDifference` and `updates.getChannelDifference`, built as
/// [`request`](crate::request) builds them (so `getDifference` always goes out with a
/// positive `date`) and converted back by
/// [`state`](crate::state), [`difference`](crate::difference) and
/// [`channel_difference`](crate::channel_difference). Errors are mapped by [`api_error`].
///
/// # One retry layer
///
/// grammers retries failed calls by itself, in its sender pool, under the
/// [`RetryPolicy`](grammers_mtsender::RetryPolicy) of its [`ConnectionParams`]: the default,
/// [`AutoSleep`](grammers_mtsender::AutoSleep), sleeps through `FLOOD_WAIT` of up to 60 s (and
/// 1 s after an I/O error) inside `invoke`. The manager has its own retries: it schedules a
/// `FLOOD_WAIT` as a timer and keeps serving pushes, other channels and shutdown meanwhile, and
/// backs off transient errors with jitter. Use the manager's: build the sender pool with
/// [`connection_params`] (the [`NoRetries`] policy), so that every error reaches the manager
/// at once.
///
/// ```no_run
/// # async fn run() {
/// use std::sync::Arc;
/// use grammers_client::{Client, SenderPool};
/// use grammers_session::storages::MemorySession;
/// use sync_grammers::client::{GrammersApi, connection_params};
///
/// let session = Arc::new(MemorySession::default());
/// let pool = SenderPool::with_configuration(session, 12345, connection_params());
/// let client = Client::new(pool.handle);
/// let api = GrammersApi::new(client.clone());
/// # let _ = (api, pool.runner, pool.updates);
/// # }
/// ```
///
/// The client's own calls (sending messages, …) then see `FLOOD_WAIT` as an error as well;
/// an application that wants grammers to sleep through those must build a second sender pool
/// for them, since the policy is per pool.
///
/// # Peers from differences
///
/// Built [`with_peers`](GrammersApi::with_peers) a [`SessionPeers`](super::SessionPeers), it
/// hands the users and chats of every difference to it ([`LearnPeers`]) before the manager
/// gets the difference, so that the peers a difference resolved are known to the reader's
/// unknown-peer check from then on.
#[derive(Debug, Clone)]
pub struct GrammersApi<I, L = ()> {
    client: I,
    peers: L,
}

impl<I: Invoke> GrammersApi<I> {
    /// An [`Api`] invoking through `client`.
    pub fn new(client: I) -> Self {
        Self { client, peers: () }
    }
}

impl<I: Invoke, L: LearnPeers> GrammersApi<I, L> {
    /// The client it invokes through.
    pub fn client(&self) -> &I {
        &self.client
    }

    /// The same API, handing the entities of every difference to `peers` (see
    /// [Peers from differences](GrammersApi#peers-from-differences)).
    pub fn with_peers<P: LearnPeers>(self, peers: P) -> GrammersApi<I, P> {
        GrammersApi {
            client: self.client,
            peers,
        }
    }

    /// What learns the entities of every difference.
    pub fn peers(&self) -> &L {
        &self.peers
    }
}

/// [`ConnectionParams`] for the sender pool behind a [`GrammersApi`]: grammers' defaults with the
/// [`NoRetries`] policy, so that the manager alone retries (see [`GrammersApi`]). Change other
/// fields with struct update syntax:
/// `ConnectionParams { use_ipv6: true, ..connection_params() }`.
pub fn connection_params() -> ConnectionParams {
    ConnectionParams {
        retry_policy: Box::new(NoRetries),
        ..ConnectionParams::default()
    }
}

impl<I: Invoke, L: LearnPeers> Api for GrammersApi<I, L> {
    type Update = TlUpdate;
    type Entities = TlEntities;

    async fn get_state(&self) -> Result<State, ApiError> {
        let reply = self
            .client
            .invoke(&tl::functions::updates::GetState {})
            .await
            .map_err(api_error)?;
        Ok(crate::state(reply))
    }

    async fn get_difference(
        &self,
        r: DifferenceRequest,
    ) -> Result<Difference<TlUpdate, TlEntities>, ApiError> {
        let call = get_difference(r.pts, r.qts, r.date, r.pts_total_limit);
        let reply = self.client.invoke(&call).await.map_err(api_error)?;
        let difference = crate::difference(reply);
        if let Difference::Difference { entities, .. } = &difference {
            self.peers.learn_peers(entities).await;
        }
        Ok(difference)
    }

    async fn get_channel_difference(
        &self,
        r: ChannelDifferenceRequest,
    ) -> Result<ChannelDifference<TlUpdate, TlEntities>, ApiError> {
        let call = get_channel_difference(r.channel_id, r.access_hash, r.pts, r.limit);
        let reply = self.client.invoke(&call).await.map_err(api_error)?;
        let difference = crate::channel_difference(r.channel_id, reply).map_err(convert_error)?;
        if let ChannelDifferenceKind::Difference { entities, .. }
        | ChannelDifferenceKind::TooLong { entities, .. } = &difference.kind
        {
            self.peers.learn_peers(entities).await;
        }
        Ok(difference)
    }
}

/// A reply that does not convert: transient (the call is made again).
fn convert_error(error: ConvertError) -> ApiError {
    ApiError::Transient {
        message: error.to_string(),
        source: Some(Box::new(error)),
    }
}

/// Classifies grammers' [`InvocationError`] for the manager, in the form grammers produces it:
/// an RPC error's name without its number (`FLOOD_WAIT_31` arrives as
/// `RpcError { code: 420, name: "FLOOD_WAIT", value: Some(31) }`).
///
/// | error | class |
/// | --- | --- |
/// | `FLOOD_WAIT`, `FLOOD_PREMIUM_WAIT`, `SLOWMODE_WAIT`, `FLOOD_TEST_PHONE_WAIT` with a value N | [`ApiError::FloodWait`] of N seconds |
/// | `AUTH_KEY_UNREGISTERED`, `AUTH_KEY_INVALID`, `AUTH_KEY_PERM_EMPTY`, `AUTH_KEY_DUPLICATED`, `SESSION_REVOKED`, `SESSION_EXPIRED`, `USER_DEACTIVATED`, `USER_DEACTIVATED_BAN`, any other 401 | [`ApiError::Unauthorized`] |
/// | `CHANNEL_PRIVATE`, `CHANNEL_INVALID`, `CHANNEL_PUBLIC_GROUP_NA`, `CHAT_FORBIDDEN`, `USER_BANNED_IN_CHANNEL` | [`ApiError::ChannelInaccessible`] |
/// | any other RPC error (`PERSISTENT_TIMESTAMP_OUTDATED`, 500s, `-503` timeouts, a wait without a value) | [`ApiError::Transient`] |
/// | I/O, transport, deserialization, session, authentication, dropped, invalid DC | [`ApiError::Transient`], with the error as its source |
///
/// A name that still carries its number (an `RpcError` built by hand as
/// `name: "FLOOD_WAIT_31", value: None`) is classified the same way.
pub fn api_error(error: InvocationError) -> ApiError {
    match error {
        InvocationError::Rpc(rpc) => rpc_error(rpc),
        other => ApiError::Transient {
            message: other.to_string(),
            source: Some(Box::new(other)),
        },
    }
}

/// grammers' RPC error, classified by [`ApiError::rpc_with_value`] (the name and number
/// apart, as grammers splits them) or [`ApiError::rpc`] when the number was left in the name;
/// a transient one keeps the error as its source.
fn rpc_error(rpc: RpcError) -> ApiError {
    let classified = match rpc.value {
        Some(_) => ApiError::rpc_with_value(rpc.code, &rpc.name, rpc.value),
        None => ApiError::rpc(rpc.code, &rpc.name),
    };
    match classified {
        ApiError::Transient { message, .. } => ApiError::Transient {
            message,
            source: Some(Box::new(rpc)),
        },
        classified => classified,
    }
}
