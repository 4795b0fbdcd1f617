//! Feeds the `sync-core` engine from `grammers-tl-types`, the TL types Rust Telegram clients
//! speak (pinned to 0.11.0, layer 230).
//!
//! The engine is generic over the application's update type; this crate supplies the TL one
//! and converts everything that crosses the boundary:
//!
//! | TL | engine | with |
//! | --- | --- | --- |
//! | `Update` | update type [`TlUpdate`] (its [`Sequence`](sync_core::Sequence): [`sequence_of`]) | |
//! | `users` + `chats` | entities [`TlEntities`] (channel access hashes; min ones marked) | |
//! | `Updates` (pushed) | [`Incoming`] → [`Engine::handle_updates`](sync_core::Engine::handle_updates) | [`Converter::updates`] |
//! | `updateShortSentMessage` | [`Incoming::Affected`], or a full message | [`Converter::sent_message`] |
//! | `updates.State` | [`State`](sync_core::State) | [`state`] |
//! | `updates.Difference` | [`Difference`](sync_core::Difference) | [`difference`] |
//! | `updates.ChannelDifference` | [`ChannelDifference`](sync_core::ChannelDifference) | [`channel_difference`] |
//! | `messages.affectedMessages` / `affectedHistory` | [`Affected`](sync_core::Affected) | [`affected_messages`], [`affected_history`] |
//! | engine [`Request`](sync_core::Request) | `updates.getState` / `getDifference` / `getChannelDifference` | [`request`] + [`AccessHashes`] |
//!
//! # Where things are
//!
//! | file | holds |
//! | --- | --- |
//! | `update.rs`, `entities.rs` | [`TlUpdate`] and its [`Sequence`](sync_core::Sequence) ([`sequence_of`]); [`TlEntities`] and [`EntityIndex`] (users and chats by id) |
//! | `incoming.rs` | pushed `Updates` into [`Incoming`] ([`Converter`]) |
//! | `peers.rs` | [`MentionedPeer`], [`PeerCache`] and what a message mentions |
//! | `difference.rs` | `updates.State`, `Difference`, `ChannelDifference`, affected messages |
//! | `request.rs`, `error.rs` | the engine's requests as TL calls; typed errors |
//! | `client/` (feature `client`) | `api.rs`: `GrammersApi`, `Invoke`, `api_error`, `connection_params`; `reader.rs`: `feed`, `run_reader`, `feed_session`, `run_session_reader`; `peer.rs`: `Peer for TlUpdate`; `storage.rs`: `SessionStorage`; `session_peers.rs`: `SessionPeers`, `LearnPeers` |
//!
//! # The `client` feature
//!
//! Off by default, so that users of the bare adapter need neither tokio nor grammers-client.
//! With it, the module `client` connects grammers-client 0.11 to a `sync-runtime` `Manager`,
//! leaving nothing to write on the path from the socket to the handler:
//!
//! - `client::GrammersApi`: the manager's `Api` over `grammers_client::Client` (or any
//!   `client::Invoke`, such as a fake transport), with grammers' `InvocationError` classified
//!   by `client::api_error`. Build the sender pool with `client::connection_params()` (grammers'
//!   `NoRetries` policy): the manager does the retrying, and waits out `FLOOD_WAIT` without
//!   blocking anything else.
//! - `client::run_reader` (and `client::feed` for one value): the raw `UpdatesLike` values of
//!   `SenderPool::updates` into the manager, every variant (`Updates`, `ShortSentMessage`,
//!   affected messages, invites, joins, closed connections, malformed updates).
//! - `impl sync_runtime::Peer for TlUpdate` (`client::peer_key`): each update is handled in
//!   order with the other updates of its chat.
//! - `client::SessionStorage`: the manager's storage (`sync-storage`'s `StateStorage` and
//!   `AccessHashStorage`) over the grammers `Session` the client already uses, for the account
//!   it is logged into: the common state and each channel's pts are grammers' `UpdatesState`,
//!   access hashes its peer cache. An application leaving grammers' own update handling keeps
//!   its session file and resumes where grammers stopped. Each commit is one
//!   `set_update_state` call (atomic as far as the session's write is); batches of access
//!   hashes are not atomic, and a session cannot forget peers (see its docs).
//! - `client::SessionPeers`: the unknown-peer check ([`PeerCache`]) answered by the session.
//!   The check is synchronous and `Session::peer` is not, so the reader for it,
//!   `client::run_session_reader` (`client::feed_session`), first learns each push's full
//!   users and channels and asks the session about the peers still unknown
//!   ([`Converter::unknown_peers`]), then converts; `GrammersApi::with_peers` learns the
//!   entities of every difference. What is learned is written into the session too.
//!
//! `examples/bot.rs` is a complete bot: a dozen lines of setup and a handler.
//!
//! # Peers the application cannot resolve
//!
//! Short updates carry no users, and containers may carry only "min" ones. A message update
//! that names a user or channel whose full access hash neither the container nor the
//! application's [`PeerCache`] knows is not delivered half-known: [`Converter::updates`]
//! withholds it and returns [`Incoming::NeedsDifference`], whose [`Refetch`] asks the engine
//! for the difference of its sequence (which comes with full entities). [`Incoming::apply`]
//! does both steps.
//!
//! The peers checked, in `updateNewMessage`, `updateEditMessage`, `updateNewChannelMessage`,
//! `updateEditChannelMessage`, `updateBotNewBusinessMessage` and `updateBotEditBusinessMessage`
//! (for the last two, also in their `reply_to_message`), and in `updateShortMessage` and
//! `updateShortChatMessage` as the message they expand to:
//!
//! - `message` and `messageService`: `peer_id`, `from_id`, `saved_peer_id`, `reply_to`;
//! - `message` only: `fwd_from`, `via_bot_id`, `via_business_bot_id`, `guestchat_via_from`,
//!   the `user_id` of each `messageEntityMentionName` in `entities`, and `media`;
//! - `messageService` only: the `action`'s users: `users` of `messageActionChatCreate`,
//!   `messageActionChatAddUser` and `messageActionInviteToGroupCall`, `user_id` of
//!   `messageActionChatDeleteUser`, `inviter_id` of `messageActionChatJoinedByLink`, `from_id`
//!   and `to_id` of `messageActionGeoProximityReached`;
//! - `messageFwdHeader` (`fwd_from`, and a reply's `reply_from`): `from_id`,
//!   `saved_from_peer`, `saved_from_id`;
//! - `messageReplyHeader`: `reply_to_peer_id`, `reply_from`, `reply_media`, the mentions in
//!   `quote_entities`; `messageReplyStoryHeader`: `peer`;
//! - media (`media`, and a reply's `reply_media`): `user_id` of `messageMediaContact` (unless
//!   0: no account), `peer` of `messageMediaStory`, `channels` of `messageMediaGiveaway`,
//!   `channel_id` and `winners` of `messageMediaGiveawayResults`.
//!
//! Basic groups (`peerChat`) need no access hash and are always known, and so is the own user
//! once [`Converter::with_self_id`] names it. Other updates, and peers only counters or
//! previews name (reactions, recent repliers), are not checked.
//!
//! # Example
//!
//! ```
//! use std::time::Instant;
//! use grammers_tl_types as tl;
//! use sync_core::{EngineConfig, Difference, Output, State};
//! use sync_grammers::{Converter, MentionedPeer, TlEngine, TlRequest};
//!
//! let now = Instant::now();
//! let stored = State { pts: 10, qts: 0, date: 1, seq: 0 };
//! let mut engine = TlEngine::from_state(EngineConfig::default(), now, stored, []).unwrap();
//! // The application's peer cache: here it knows user 7 only.
//! let converter = Converter::new(|peer: MentionedPeer| peer == MentionedPeer::User(7));
//! let hashes = std::collections::HashMap::<i64, i64>::new();
//!
//! // At start the engine asks for the difference: send it as a TL call.
//! let Some(Output::Request(request)) = engine.poll_output() else { panic!() };
//! let Ok(TlRequest::GetDifference(call)) = sync_grammers::request(&request, &hashes) else {
//!     panic!()
//! };
//! assert_eq!(call.pts, 10);
//! // … invoke `call`; the server answers that nothing is new.
//! let reply = tl::types::updates::DifferenceEmpty { date: 2, seq: 0 }.into();
//! engine.handle_difference(now, request.id, sync_grammers::difference(reply)).unwrap();
//!
//! // A pushed private message from user 7, pts 11.
//! let pushed = tl::types::UpdateShortMessage {
//!     out: false, mentioned: false, media_unread: false, silent: false,
//!     id: 100, user_id: 7, message: "hi".into(), pts: 11, pts_count: 1, date: 3,
//!     fwd_from: None, via_bot_id: None, reply_to: None, entities: None, ttl_period: None,
//! };
//! converter.updates(pushed.into()).apply(&mut engine, now).unwrap();
//!
//! let mut delivered = Vec::new();
//! while let Some(output) = engine.poll_output() {
//!     if let Output::Deliver(batch) = output {
//!         delivered.extend(batch.updates.iter().cloned().map(|u| u.into_inner()));
//!         engine.ack(batch.id).unwrap();
//!     }
//! }
//! // It arrives as the full `updateNewMessage` it abbreviates.
//! let [tl::enums::Update::NewMessage(update)] = &delivered[..] else { panic!() };
//! let tl::enums::Message::Message(message) = &update.message else { panic!() };
//! assert_eq!((message.id, message.message.as_str()), (100, "hi"));
//! ```

#[cfg(feature = "client")]
pub mod client;
mod difference;
mod entities;
mod error;
mod incoming;
mod peers;
mod request;
mod update;

pub use difference::{affected_history, affected_messages, channel_difference, difference, state};
pub use entities::{EntityIndex, PeerEntity, TlEntities};
pub use error::ConvertError;
pub use incoming::{
    ChannelRefetch, Converter, Incoming, Refetch, TlEngine, TlUpdates, blank_message,
};
pub use peers::{AllKnown, MentionedPeer, PeerCache};
pub use request::{AccessHashes, TlRequest, request};
pub use update::{TlUpdate, message_channel, sequence_of};

/// Decodes a TL value (an `Updates`, `updates.Difference`, `updates.ChannelDifference`,
/// `updates.State`, …) from the bytes of an RPC result or a push; convert it afterwards.
pub fn decode<T: tl::Deserializable>(bytes: &[u8]) -> Result<T, ConvertError> {
    Ok(T::from_bytes(bytes)?)
}

/// The `grammers-tl-types` version this adapter is built against, re-exported so applications
/// use the same one.
pub use grammers_tl_types as tl;
