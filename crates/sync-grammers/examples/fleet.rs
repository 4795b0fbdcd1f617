//! Many bots over several processes: each process runs a `sync-runtime` `Fleet` over one Redis
//! (or Redis Cluster), and the bots of the registry are shared out among the live processes,
//! each bot logged in with grammers-client in the process that holds its lease.
//!
//! ```text
//! TG_API_ID=12345 TG_API_HASH=0123abcd TG_BOT_TOKENS=123:abc,456:def REDIS_URL=redis://127.0.0.1/ \
//!     cargo run -p sync-grammers --example fleet --features client
//! ```
//!
//! Start it in two terminals: the bots are split between them; stop one (Ctrl-C) and the
//! other takes its bots over at once; kill one (`kill -9`) and the other takes them over
//! within the lease's ttl (10 s). The update state lives in Redis, so whoever runs a bot next
//! resumes where the last owner's last commit left it. Without the variables it prints what it
//! needs and exits with code 2.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use grammers_client::{Client, SenderPool};
use grammers_session::storages::MemorySession;
use grammers_session::updates::UpdatesLike;
use sync_grammers::client::{GrammersApi, SessionPeers, connection_params, run_session_reader};
use sync_grammers::{Converter, TlEntities, TlUpdate, tl};
use sync_runtime::{AccountFactory, BoxError, Fleet, FleetConfig, Handler, ManagerHandle};
use sync_storage::{AccountId, RedisStorage, RegistryStorage};
use tokio::sync::mpsc::Receiver;
use tokio::task::JoinHandle;

/// Aborts a task when dropped: a bot's connection ends with its manager.
struct Connection(JoinHandle<()>);

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Prints each new message, with the bot it reached; holds the bot's connection open while its
/// manager runs.
struct Printer {
    bot: AccountId,
    _connection: Connection,
}

impl Handler<TlUpdate, TlEntities> for Printer {
    async fn handle(&self, update: TlUpdate, _: Arc<[TlEntities]>) -> Result<(), BoxError> {
        if let tl::enums::Update::NewMessage(tl::types::UpdateNewMessage {
            message: tl::enums::Message::Message(message),
            ..
        }) = &*update
        {
            println!("bot {}: {}", self.bot, message.message);
        }
        Ok(())
    }
}

/// What a bot's reader needs once its manager exists (see `started`).
type Reader = (
    Receiver<UpdatesLike>,
    Converter<SessionPeers<MemorySession>>,
);

/// Logs the registry's bots in, one grammers client each.
struct Bots {
    api_id: i32,
    api_hash: String,
    /// Bot id → token.
    tokens: HashMap<AccountId, String>,
    /// Readers of bots built but not started yet.
    readers: Mutex<HashMap<AccountId, Reader>>,
}

impl AccountFactory for Bots {
    type Api = GrammersApi<Client, SessionPeers<MemorySession>>;
    type Handler = Printer;

    async fn build(&self, bot: AccountId) -> Result<(Self::Api, Self::Handler), BoxError> {
        let token = self.tokens.get(&bot).ok_or("no token for this bot")?;
        let session = Arc::new(MemorySession::default());
        let pool =
            SenderPool::with_configuration(Arc::clone(&session), self.api_id, connection_params());
        let client = Client::new(pool.handle);
        let connection = Connection(tokio::spawn(async move { pool.runner.run().await }));
        client.bot_sign_in(token, &self.api_hash).await?;
        let peers = SessionPeers::new(session);
        let converter = Converter::new(peers.clone()).with_self_id(bot);
        self.readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(bot, (pool.updates, converter));
        let api = GrammersApi::new(client).with_peers(peers);
        Ok((
            api,
            Printer {
                bot,
                _connection: connection,
            },
        ))
    }

    fn started(&self, bot: AccountId, handle: ManagerHandle<TlUpdate, TlEntities>) {
        let reader = self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&bot);
        if let Some((updates, converter)) = reader {
            tokio::spawn(run_session_reader(updates, handle, converter));
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (Ok(api_id), Ok(api_hash), Ok(tokens), Ok(redis)) = (
        std::env::var("TG_API_ID"),
        std::env::var("TG_API_HASH"),
        std::env::var("TG_BOT_TOKENS"),
        std::env::var("REDIS_URL"),
    ) else {
        eprintln!("set TG_API_ID, TG_API_HASH, TG_BOT_TOKENS (comma-separated) and REDIS_URL");
        std::process::exit(2);
    };
    // A bot token starts with the bot's user id: `123456:AAE…`.
    let mut bots = HashMap::new();
    for token in tokens.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let id = token
            .split(':')
            .next()
            .and_then(|id| id.parse::<AccountId>().ok())
            .ok_or("a bot token must start with the bot's id")?;
        bots.insert(id, token.to_owned());
    }

    let storage = Arc::new(RedisStorage::connect(&redis).await?);
    let ids: Vec<AccountId> = bots.keys().copied().collect();
    storage.register(&ids).await?;
    let factory = Bots {
        api_id: api_id.parse()?,
        api_hash,
        tokens: bots,
        readers: Mutex::default(),
    };
    let fleet = Fleet::new(storage, factory, FleetConfig::new());
    let handle = fleet.handle();
    let run = tokio::spawn(fleet.run());

    tokio::signal::ctrl_c().await?;
    println!("running {:?}; stopping", handle.accounts());
    handle.shutdown();
    let stats = run.await??;
    println!("stopped: {stats:?}");
    Ok(())
}
