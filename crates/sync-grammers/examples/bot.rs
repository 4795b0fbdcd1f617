//! A bot that logs in with grammers-client and handles its updates through a `sync-runtime`
//! manager, printing every new message.
//!
//! ```text
//! TG_API_ID=12345 TG_API_HASH=0123abcd TG_BOT_TOKEN=123:abc cargo run -p sync-grammers --example bot --features client
//! ```
//!
//! Without those three variables it prints what it needs and exits with code 2. Ctrl-C shuts
//! it down cleanly. The update state and the peers are kept in grammers' session
//! ([`SessionStorage`], [`SessionPeers`]); the session lives in memory here, so a restart logs
//! in again and starts from the server's current state. With a `SqliteSession` instead, a
//! restart would resume where it stopped.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;

use grammers_client::{Client, SenderPool};
use grammers_session::storages::MemorySession;
use sync_grammers::client::{
    GrammersApi, SessionPeers, SessionStorage, connection_params, run_session_reader,
};
use sync_grammers::{Converter, EntityIndex, PeerEntity, TlEntities, TlUpdate, tl};
use sync_runtime::{BoxError, Handler, Manager};

/// Prints each new message with its sender's name.
struct Printer;

impl Handler<TlUpdate, TlEntities> for Printer {
    async fn handle(&self, update: TlUpdate, entities: Arc<[TlEntities]>) -> Result<(), BoxError> {
        let (tl::enums::Update::NewMessage(tl::types::UpdateNewMessage { message, .. })
        | tl::enums::Update::NewChannelMessage(tl::types::UpdateNewChannelMessage {
            message,
            ..
        })) = &*update
        else {
            return Ok(());
        };
        let tl::enums::Message::Message(message) = message else {
            return Ok(());
        };
        let index = EntityIndex::new(&entities);
        let sender = match message.from_id.as_ref().and_then(|from| index.peer(from)) {
            Some(PeerEntity::User(user)) => user.first_name.clone().unwrap_or_default(),
            _ => "someone".to_owned(),
        };
        println!("{sender}: {}", message.message);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (Ok(api_id), Ok(api_hash), Ok(token)) = (
        std::env::var("TG_API_ID"),
        std::env::var("TG_API_HASH"),
        std::env::var("TG_BOT_TOKEN"),
    ) else {
        eprintln!("set TG_API_ID, TG_API_HASH and TG_BOT_TOKEN to run this bot");
        std::process::exit(2);
    };

    // grammers' connection, without its own retries: the manager retries (and schedules
    // FLOOD_WAIT without blocking anything else).
    let session = Arc::new(MemorySession::default());
    let pool =
        SenderPool::with_configuration(Arc::clone(&session), api_id.parse()?, connection_params());
    let client = Client::new(pool.handle);
    let network = tokio::spawn(pool.runner.run());
    let me = client.bot_sign_in(&token, &api_hash).await?.raw.id();

    // The manager, storing into the session and fed from the sender pool's raw updates; a
    // message from a peer the session does not know is fetched again by difference.
    let storage = SessionStorage::new(Arc::clone(&session), me);
    let peers = SessionPeers::new(session);
    let api = GrammersApi::new(client).with_peers(peers.clone());
    let manager = Manager::new(me, api, storage, Printer);
    let handle = manager.handle();
    let converter = Converter::new(peers).with_self_id(me);
    tokio::spawn(run_session_reader(pool.updates, handle.clone(), converter));
    let run = tokio::spawn(manager.run());

    tokio::signal::ctrl_c().await?;
    handle.shutdown();
    let summary = run.await??;
    println!("stopped at {:?}", summary.state);
    network.abort();
    Ok(())
}
