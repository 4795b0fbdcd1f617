//! Everything between grammers-client's sender pool and a `sync-runtime`
//! [`Manager`](sync_runtime::Manager) (feature `client`):
//!
//! - [`GrammersApi`]: the manager's [`Api`](sync_runtime::Api) over a
//!   [`grammers_client::Client`] (or any [`Invoke`]), with grammers' errors classified by
//!   [`api_error`]; build the sender pool with [`connection_params`] so that only the manager
//!   retries (see [`GrammersApi`]);
//! - [`run_reader`] (and [`feed`] for one value): grammers' raw `UpdatesLike` values, from
//!   `SenderPool::updates`, into the manager's [`TlHandle`];
//! - `impl` [`Peer`](sync_runtime::Peer) `for` [`TlUpdate`](crate::TlUpdate): updates are
//!   handled in order per chat ([`peer_key`]);
//! - [`SessionStorage`]: the manager's storage over the grammers `Session` the client uses
//!   (its update state and peer cache);
//! - [`SessionPeers`]: the unknown-peer check answered by that session, for
//!   [`run_session_reader`] (and [`feed_session`]) and [`GrammersApi::with_peers`];
//! - [`EntityIndex`](crate::EntityIndex) (also without the feature): the users and chats of a
//!   delivered batch by id.
//!
//! `examples/bot.rs` puts them together: a bot that prints every new message.
//!
//! # Building grammers' high-level updates
//!
//! grammers-client 0.11 cannot build its friendly `update::Update` or `message::Message` from
//! a raw TL update outside its own update stream: both `Update::from_raw` and
//! `Message::from_raw` take a `peer::PeerMap`, and a `PeerMap` can only be made inside
//! grammers-client (its fields and `Client::build_peer_map` are `pub(crate)`). What is missing
//! upstream is a public constructor, e.g. `PeerMap::new(&Client, Vec<tl::enums::User>,
//! Vec<tl::enums::Chat>)` or a public `Client::build_peer_map`. Until then handlers read the
//! raw TL update and look its users and chats up with [`EntityIndex`](crate::EntityIndex);
//! single peers convert with grammers' public `peer::User::from_raw(&client, user)` and
//! `peer::Peer::from_raw(&client, chat)`.

mod api;
mod peer;
mod reader;
mod session_peers;
mod storage;

pub use api::{GrammersApi, Invoke, api_error, connection_params};
pub use peer::{key_of, peer_key};
pub use reader::{ReaderEnd, TlHandle, feed, feed_session, run_reader, run_session_reader};
pub use session_peers::{LearnPeers, SessionPeers};
pub use storage::SessionStorage;
/// Re-exported from `sync-runtime`: the manager is not running.
pub use sync_runtime::Stopped;
