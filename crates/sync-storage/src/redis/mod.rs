//! The Redis backend: state shared by many processes, kept monotonic by a server-side script.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Script, ServerErrorKind, Value};
use sync_core::{ChannelId, Commit, State};

use crate::lease::FencingToken;
use crate::{
    AccessHashStorage, AccountId, Error, Result, Snapshot, StaleSequence, StateStorage, UserId,
};

mod lease;

const BACKEND: &str = "redis";

/// The Lua source of the commit script (see the comments in it for its invariants).
const COMMIT_LUA: &str = include_str!("commit.lua");
/// The Lua source of the consistent startup read.
const LOAD_LUA: &str = include_str!("load.lua");
/// The Lua source of the lease operations (see the comments in it for its invariants).
const LEASE_LUA: &str = include_str!("lease.lua");
/// The Lua source of a registry member's heartbeat.
const HEARTBEAT_LUA: &str = include_str!("heartbeat.lua");

/// How to reach Redis and how to lay out and retry things there.
///
/// Build it with [`RedisConfig::new`] (one server) or [`RedisConfig::cluster`] (a Redis
/// Cluster) and change the public fields as needed
/// (`RedisConfig { retries: 5, ..RedisConfig::new(url) }`).
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Where the server is: `redis://[user:password@]host:port/db`, `rediss://…` for TLS
    /// (feature `redis-tls`), or `redis+unix:///path/to.sock?user=…&pass=…`. Not used when
    /// [`nodes`](Self::nodes) is set.
    pub url: String,
    /// Seed nodes of a Redis Cluster (`redis://[user:password@]host:port` each; any reachable
    /// one is enough, the client discovers the rest). When not empty the storage is a cluster
    /// client and [`url`](Self::url) is not used. Default empty (one server).
    pub nodes: Vec<String>,
    /// Prefix of every key, so several applications can share a server. Keys are
    /// `{prefix}:{<account>}:state`, `…:channels`, `…:access_hashes` and
    /// `…:user_access_hashes`: the braces make the account id the Redis Cluster hash tag, so
    /// all of an account's keys share a slot and the commit script (which touches two of them,
    /// three when fenced) and the multi-key `DEL`s of the deletes are valid on a cluster.
    /// Leases add `{prefix}:{<account>}:lease` (a hash `owner`, `token` with a `PX` expiry)
    /// and `{prefix}:{<account>}:fence` (the account's last fencing token, a counter that
    /// never expires); the fleet registry is `{prefix}:{registry}:accounts` (a set of
    /// account ids) and `{prefix}:{registry}:members` (a sorted set, member → end of its
    /// heartbeat in server milliseconds), one slot for the two. Must not contain
    /// `{` or `}`. Default `tgsync`.
    pub prefix: String,
    /// How many times an operation that is safe to repeat is retried after a transient
    /// failure (so at most `retries + 1` attempts). Default 3.
    pub retries: u32,
    /// The first retry's delay; each further retry doubles it. Default 25 ms.
    pub retry_delay: Duration,
    /// How long to wait for an answer once a command was sent; past it a write is reported
    /// as [`Error::Ambiguous`]. Default 5 s.
    pub response_timeout: Duration,
    /// How long one connection attempt may take. Default 2 s.
    pub connection_timeout: Duration,
    /// How many replicas must have a write before it is acknowledged. Redis replicates
    /// asynchronously, so a write acknowledged by a master alone is lost if the master fails
    /// and a replica that did not get it takes over. With `n > 0` every write is followed, on
    /// the same connection to the same master, by `WAIT n` (bounded by
    /// [`replica_timeout`](Self::replica_timeout)); if fewer than `n` replicas confirmed it
    /// the write is reported as [`Error::Ambiguous`] with a [`ReplicationShortfall`] as its
    /// source: it happened on the master but may be lost. Default 0 (acknowledged by the
    /// master alone).
    pub replicas_to_wait: usize,
    /// How long `WAIT` may wait for the replicas; must not be zero when
    /// [`replicas_to_wait`](Self::replicas_to_wait) is set (Redis reads 0 as "forever"), and
    /// should stay below [`response_timeout`](Self::response_timeout). Default 1 s.
    pub replica_timeout: Duration,
}

impl RedisConfig {
    /// The defaults, for the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            nodes: Vec::new(),
            prefix: "tgsync".into(),
            retries: 3,
            retry_delay: Duration::from_millis(25),
            response_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(2),
            replicas_to_wait: 0,
            replica_timeout: Duration::from_secs(1),
        }
    }

    /// The defaults, for the Redis Cluster reachable through `nodes` (seed node URLs).
    pub fn cluster<I, S>(nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            nodes: nodes.into_iter().map(Into::into).collect(),
            ..Self::new(String::new())
        }
    }

    /// The same configuration with another key prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The same configuration, acknowledging writes only once `replicas` replicas have them
    /// (waiting at most `timeout`; see [`replicas_to_wait`](Self::replicas_to_wait)).
    pub fn with_replicas(mut self, replicas: usize, timeout: Duration) -> Self {
        self.replicas_to_wait = replicas;
        self.replica_timeout = timeout;
        self
    }
}

/// Why a write was reported as [`Error::Ambiguous`] with
/// [`RedisConfig::replicas_to_wait`] set: the master applied it, but fewer replicas than
/// asked confirmed it within [`RedisConfig::replica_timeout`], so a fail-over may lose it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("only {confirmed} of {wanted} replicas confirmed the write in time")]
pub struct ReplicationShortfall {
    /// How many replicas were asked for.
    pub wanted: usize,
    /// How many confirmed.
    pub confirmed: usize,
}

/// One run of a script: its `EVALSHA` and the slot it goes to.
struct Run {
    route: Route,
    command: Cmd,
}

/// A script's reply, and whether the replicas confirmed the run (`Ok` when nobody waited).
struct Evaluated {
    reply: Value,
    replicated: Result<()>,
}

/// The connection: one server (a manager that reconnects) or a cluster client.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// The connection, bound to the slot of the account an operation is about. Every command
/// and pipeline of the backend goes through it, so the command code is the same for one
/// server and for a cluster: on a cluster each one is sent to the master of that slot, by
/// explicit route rather than redis-rs's guess from the command (which sends a keyless
/// `WAIT` or `SCRIPT LOAD` to every master and a two-key `DEL` through its multi-slot
/// splitting).
#[derive(Clone)]
struct Routed {
    connection: Connection,
    route: Route,
}

impl ConnectionLike for Routed {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.connection {
            Connection::Single(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(connection) => {
                let routing =
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(self.route));
                Box::pin(connection.route_command(cmd.clone(), routing))
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.connection {
            Connection::Single(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            // One slot means one node, so the pipeline travels whole on one connection:
            // what follows a write there (WAIT) sees that write.
            Connection::Cluster(connection) => Box::pin(connection.route_pipeline(
                pipeline.clone(),
                offset,
                count,
                SingleNodeRoutingInfo::SpecificNode(self.route),
            )),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.connection {
            Connection::Single(connection) => connection.get_db(),
            Connection::Cluster(_) => 0,
        }
    }
}

/// Keeps the state on a Redis server or a Redis Cluster, shared by every process that uses
/// the same server (or cluster) and prefix.
///
/// - **Monotonic and atomic server-side.** Every sequence write runs one Lua script
///   (`EVALSHA` of [`redis::Script`]s) that checks the whole commit against the stored
///   values and only then writes; Redis runs scripts one at a time, so racing writers on one
///   account can never move a sequence backwards. No `WATCH`/`MULTI` is used: the one
///   multiplexed connection is shared by all callers.
/// - **Layout.** Per account, four hashes under the prefix: `{prefix}:{<account>}:state`
///   (fields `pts`, `qts`, `date`, `seq`), `…:channels` (channel id → pts),
///   `…:access_hashes` (channel id → hash) and `…:user_access_hashes` (user id → hash);
///   for its lease, `…:lease` (hash `owner`, `token`, with a `PX` expiry) and `…:fence`
///   (the last token, a counter without expiry); for the fleet, `{prefix}:{registry}:accounts`
///   (set) and `{prefix}:{registry}:members` (sorted set scored by the end of each
///   heartbeat, server milliseconds). Values are decimal strings. A value that does not
///   parse is reported as [`Error::Corrupt`].
/// - **Connection.** One server: one [`ConnectionManager`] (a multiplexed connection that
///   reconnects on its own). A cluster ([`RedisConfig::cluster`]): one
///   [`ClusterConnection`], which keeps a connection per node and follows the slot map.
///   Clones of a `RedisStorage` share it.
/// - **Cluster.** The account id is the hash tag of all of its keys, so an account lives in
///   one slot, on one master: every command about an account is routed there, the commit
///   script's two keys are valid together, and `WAIT` follows the write on the same
///   connection. The cluster client's own retries are off (it would re-send a write whose
///   answer was lost); a redirect (`MOVED`, `ASK`), `TRYAGAIN`, `CLUSTERDOWN` or a write on
///   a demoted master (`READONLY`) was not executed, so it is retried here like a refused
///   connection, after the client refreshed its slot map. A slot in the middle of a
///   migration answers `ASK` to such retries until it is done, which shows as
///   [`Error::Unavailable`] once the retries are spent.
/// - **Durability.** Replication is asynchronous; with [`RedisConfig::replicas_to_wait`]
///   every write is acknowledged only once `WAIT` confirmed it on that many replicas, and
///   reported as [`Error::Ambiguous`] (a [`ReplicationShortfall`]) otherwise.
/// - **Retries.** Reads and access-hash writes are retried with exponential backoff on
///   connection failures and timeouts. Sequence writes are retried only when the command
///   cannot have reached the server (connection refused, server still loading, the cluster
///   answers above): after an unanswered send, repeating a commit could undo a newer
///   writer's reset, so the caller gets [`Error::Ambiguous`] and decides (reading the state
///   back tells what happened).
/// - **Deletes.** [`StateStorage::delete`] is one `DEL` of the state and channel hashes, and
///   [`AccessHashStorage::delete_access_hashes`] one `DEL` of the two access-hash hashes: each
///   atomic. Deleting the state is a write (retried only when it cannot have run, like a
///   commit); deleting access hashes is retried like a read.
/// - **Pipelining.** [`RedisStorage::apply_many`] (and [`RedisStorage::apply_many_fenced`])
///   sends many accounts' commits in one round trip (on a cluster: concurrently, one request
///   per commit, which the client pipelines per node); [`AccessHashStorage::set_access_hashes`]
///   is one `HSET`; [`LeaseStorage::renew_many`](crate::LeaseStorage::renew_many) is one
///   pipeline of renewals (split the same way on a cluster).
/// - **Leases** ([`LeaseStorage`](crate::LeaseStorage)): each operation is one run of
///   `redis/lease.lua` on the account's `…:lease` and `…:fence` keys, timed by the server
///   (`PEXPIRE`, `PTTL`), never by a client clock. The fence is a counter with no expiry that
///   no delete touches, so a token never goes back. A fenced commit is the commit script with
///   the fence as a third key and the token as a last argument: the token is checked in the
///   same script as the sequences. Acquiring is retried only when it cannot have run (a repeat
///   would bump the token again: harmless, but the caller should know), else
///   [`Error::Ambiguous`]; renewing and releasing are safe to repeat and retried like reads.
///   With [`RedisConfig::replicas_to_wait`] an acquisition waits for the replicas too: a
///   fence bump lost in a fail-over would hand the same token out twice.
/// - **Registry** ([`RegistryStorage`](crate::RegistryStorage)): `SADD`/`SREM`/`SMEMBERS` on
///   `{prefix}:{registry}:accounts`; the heartbeat is `redis/heartbeat.lua`, which scores the
///   member by the server's `TIME` plus its ttl in `{prefix}:{registry}:members` and prunes
///   the ended beats in the same step. On a cluster the two keys share the `{registry}` slot.
#[derive(Clone)]
pub struct RedisStorage {
    connection: Connection,
    prefix: String,
    retries: u32,
    retry_delay: Duration,
    replicas_to_wait: usize,
    replica_timeout_ms: u64,
    commit: Script,
    load: Script,
    lease: Script,
    heartbeat: Script,
}

impl std::fmt::Debug for RedisStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStorage")
            .field("prefix", &self.prefix)
            .field(
                "cluster",
                &matches!(self.connection, Connection::Cluster(_)),
            )
            .field("replicas_to_wait", &self.replicas_to_wait)
            .finish_non_exhaustive()
    }
}

impl RedisStorage {
    /// Connects to the server at `url` with the default configuration.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::with_config(RedisConfig::new(url)).await
    }

    /// Connects to the Redis Cluster reachable through `nodes` with the default
    /// configuration.
    pub async fn connect_cluster<I, S>(nodes: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::with_config(RedisConfig::cluster(nodes)).await
    }

    /// Connects with the given configuration. Fails with [`Error::Config`] for a bad URL,
    /// prefix, credentials or replica timeout, and with [`Error::Unavailable`] if the server
    /// (or no seed node of the cluster) cannot be reached.
    pub async fn with_config(config: RedisConfig) -> Result<Self> {
        if config.prefix.contains(['{', '}']) {
            return Err(Error::Config(format!(
                "the key prefix {:?} must not contain braces: they would change the cluster hash tag",
                config.prefix
            )));
        }
        let replica_timeout_ms =
            u64::try_from(config.replica_timeout.as_millis()).unwrap_or(u64::MAX);
        if config.replicas_to_wait > 0 && replica_timeout_ms == 0 {
            return Err(Error::Config(
                "replica_timeout must be at least 1 ms: WAIT reads 0 as waiting forever".into(),
            ));
        }
        let connection = if config.nodes.is_empty() {
            Connection::Single(Self::connect_single(&config).await?)
        } else {
            Connection::Cluster(Self::connect_cluster_client(&config).await?)
        };
        Ok(Self {
            connection,
            prefix: config.prefix,
            retries: config.retries,
            retry_delay: config.retry_delay,
            replicas_to_wait: config.replicas_to_wait,
            replica_timeout_ms,
            commit: Script::new(COMMIT_LUA),
            load: Script::new(LOAD_LUA),
            lease: Script::new(LEASE_LUA),
            heartbeat: Script::new(HEARTBEAT_LUA),
        })
    }

    async fn connect_single(config: &RedisConfig) -> Result<ConnectionManager> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| Error::Config(format!("bad Redis URL: {e}")))?;
        // The manager's own reconnect retries are kept short: our retry loop does the
        // backoff, and a caller must learn quickly that the server is down.
        let manager_config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_min_delay(config.retry_delay)
            .set_max_delay(config.retry_delay.saturating_mul(8))
            .set_response_timeout(Some(config.response_timeout))
            .set_connection_timeout(Some(config.connection_timeout));
        ConnectionManager::new_with_config(client, manager_config)
            .await
            .map_err(|e| classify(e, Op::Read, "connect"))
    }

    async fn connect_cluster_client(config: &RedisConfig) -> Result<ClusterConnection> {
        // No retries inside the client: it would re-send a command after a lost connection,
        // and a commit must not be repeated once it may have run. Redirects and
        // "cluster busy" answers come back to `with_retries`, which retries what was not
        // executed; the client still refreshes its slot map on them.
        let client = ClusterClient::builder(config.nodes.iter().map(String::as_str))
            .retries(0)
            .connection_timeout(config.connection_timeout)
            .response_timeout(config.response_timeout)
            .build()
            .map_err(|e| Error::Config(format!("bad Redis Cluster configuration: {e}")))?;
        client
            .get_async_connection()
            .await
            .map_err(|e| classify(e, Op::Read, "connect to the cluster"))
    }

    /// The key of the account's common state hash (for operators and tools).
    pub fn state_key(&self, account: AccountId) -> String {
        format!("{}:{{{account}}}:state", self.prefix)
    }

    /// The key of the account's channel pts hash.
    pub fn channels_key(&self, account: AccountId) -> String {
        format!("{}:{{{account}}}:channels", self.prefix)
    }

    /// The key of the account's access hash hash (channels).
    pub fn access_hashes_key(&self, account: AccountId) -> String {
        format!("{}:{{{account}}}:access_hashes", self.prefix)
    }

    /// The key of the account's user access hash hash.
    pub fn user_access_hashes_key(&self, account: AccountId) -> String {
        format!("{}:{{{account}}}:user_access_hashes", self.prefix)
    }

    /// The key of the account's lease (a hash `owner`, `token`, expiring with the lease).
    pub fn lease_key(&self, account: AccountId) -> String {
        format!("{}:{{{account}}}:lease", self.prefix)
    }

    /// The key of the account's fence: its last fencing token, a counter that never expires.
    pub fn fence_key(&self, account: AccountId) -> String {
        format!("{}:{{{account}}}:fence", self.prefix)
    }

    /// The key of the registry's set of accounts.
    pub fn registry_accounts_key(&self) -> String {
        format!("{}:{{registry}}:accounts", self.prefix)
    }

    /// The key of the registry's sorted set of live members.
    pub fn registry_members_key(&self) -> String {
        format!("{}:{{registry}}:members", self.prefix)
    }

    /// True when connected to a Redis Cluster rather than one server.
    pub fn is_cluster(&self) -> bool {
        matches!(self.connection, Connection::Cluster(_))
    }

    /// Where the account's commands go: the master of its slot (all of its keys share the
    /// slot: the account id is their hash tag). On one server it routes nothing.
    fn route(&self, account: AccountId) -> Route {
        Route::with_key(self.state_key(account), SlotAddr::Master)
    }

    /// Where the registry's commands go: the master of the `{registry}` slot.
    fn registry_route(&self) -> Route {
        Route::with_key(self.registry_accounts_key(), SlotAddr::Master)
    }

    /// True when writes wait for replicas.
    fn durable(&self) -> bool {
        self.replicas_to_wait > 0
    }

    /// Appends `WAIT` to a pipeline of writes when writes wait for replicas.
    fn push_wait(&self, pipe: &mut Pipeline) {
        if self.durable() {
            pipe.cmd("WAIT")
                .arg(self.replicas_to_wait)
                .arg(self.replica_timeout_ms);
        }
    }

    /// Reads `WAIT`'s answer: `Ok` when enough replicas confirmed (or none were asked for),
    /// [`Error::Ambiguous`] otherwise.
    fn confirm(&self, wait: Option<&Value>) -> Result<()> {
        if !self.durable() {
            return Ok(());
        }
        let confirmed = match wait {
            Some(Value::Int(count)) => usize::try_from(*count).unwrap_or(0),
            Some(Value::ServerError(error)) => {
                return Err(Error::Ambiguous {
                    backend: BACKEND,
                    source: format!("WAIT failed after the write: {error:?}").into(),
                });
            }
            other => {
                return Err(Error::Ambiguous {
                    backend: BACKEND,
                    source: format!("WAIT answered {other:?} after the write").into(),
                });
            }
        };
        if confirmed >= self.replicas_to_wait {
            Ok(())
        } else {
            Err(Error::Ambiguous {
                backend: BACKEND,
                source: ReplicationShortfall {
                    wanted: self.replicas_to_wait,
                    confirmed,
                }
                .into(),
            })
        }
    }

    /// Sends one write command for `account` (followed by `WAIT` when writes wait for
    /// replicas) and returns its reply once the replicas confirmed it.
    async fn write(&self, kind: Op, what: &str, account: AccountId, command: Cmd) -> Result<Value> {
        let route = self.route(account);
        let mut pipe = redis::pipe();
        pipe.ignore_errors().add_command(command);
        self.push_wait(&mut pipe);
        let mut replies: Vec<Value> = self
            .with_retries(kind, what, route, |mut connection| {
                let pipe = pipe.clone();
                async move { pipe.query_async(&mut connection).await }
            })
            .await?;
        let wait = (replies.len() > 1).then(|| replies.pop()).flatten();
        let reply = replies.pop().ok_or_else(|| corrupt(what, &Value::Nil))?;
        if let Value::ServerError(error) = reply {
            return Err(classify(error.into(), kind, what));
        }
        self.confirm(wait.as_ref())?;
        Ok(reply)
    }

    /// Deletes `keys` of `account` in one `DEL` (atomic; all of an account's keys share a
    /// hash tag).
    async fn del(&self, kind: Op, account: AccountId, keys: [String; 2]) -> Result<()> {
        let mut command = redis::cmd("DEL");
        command.arg(&keys[..]);
        self.write(kind, "DEL", account, command).await.map(drop)
    }

    /// Writes `id → number` fields of one hash in one `HSET`: atomic, and safe to repeat (the
    /// same values again), so retried like a read. For an id listed twice Redis keeps the later
    /// value.
    async fn hset_numbers(
        &self,
        account: AccountId,
        key: String,
        entries: Vec<(i64, i64)>,
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut command = redis::cmd("HSET");
        command.arg(&key);
        for (id, number) in &entries {
            command.arg(id).arg(number);
        }
        self.write(Op::Read, "HSET", account, command)
            .await
            .map(drop)
    }

    /// The `EVALSHA` of `script` on `keys` with `args`.
    fn evalsha(script: &Script, keys: &[String], args: impl redis::ToRedisArgs) -> Cmd {
        let mut command = redis::cmd("EVALSHA");
        command
            .arg(script.get_hash())
            .arg(keys.len())
            .arg(keys)
            .arg(args);
        command
    }

    /// The run of the commit script for one account's commit (fenced: the fence as a third
    /// key and the token as the last argument).
    fn commit_run(&self, account: AccountId, token: Option<FencingToken>, commit: &Commit) -> Run {
        let mut keys = vec![self.state_key(account), self.channels_key(account)];
        if token.is_some() {
            keys.push(self.fence_key(account));
        }
        let mut command = Self::evalsha(&self.commit, &keys, commit_args(commit));
        if let Some(token) = token {
            command.arg(token.0);
        }
        Run {
            route: self.route(account),
            command,
        }
    }

    /// Loads `script` on the master of `route`'s slot (the node that answered NOSCRIPT: each
    /// node has its own script cache, empty after a restart or a promotion).
    async fn load_script(&self, script: &Script, route: Route) -> Result<()> {
        self.with_retries(
            Op::Read,
            "SCRIPT LOAD",
            route,
            |mut connection| async move { script.load_async(&mut connection).await },
        )
        .await
        .map(drop)
    }

    /// Runs one script run (and `WAIT` after it when `durable` and writes wait for replicas)
    /// on its slot's master, loading the script there once if it answers NOSCRIPT (which it
    /// did not run).
    async fn eval_one(
        &self,
        script: &Script,
        kind: Op,
        durable: bool,
        run: &Run,
    ) -> Result<Evaluated> {
        let waits = durable && self.durable();
        for round in 0..2 {
            let mut pipe = redis::pipe();
            pipe.ignore_errors().add_command(run.command.clone());
            if waits {
                self.push_wait(&mut pipe);
            }
            let mut replies: Vec<Value> = self
                .with_retries(kind, "EVALSHA", run.route, |mut connection| {
                    let pipe = pipe.clone();
                    async move { pipe.query_async(&mut connection).await }
                })
                .await?;
            let wait = if waits { replies.pop() } else { None };
            let reply = replies
                .pop()
                .ok_or_else(|| corrupt("script reply", &Value::Nil))?;
            match reply {
                Value::ServerError(error)
                    if error.kind() == Some(ServerErrorKind::NoScript) && round == 0 =>
                {
                    self.load_script(script, run.route).await?;
                }
                Value::ServerError(error) => {
                    return Err(classify(error.into(), kind, "EVALSHA"));
                }
                reply => {
                    let replicated = if waits {
                        self.confirm(wait.as_ref())
                    } else {
                        Ok(())
                    };
                    return Ok(Evaluated { reply, replicated });
                }
            }
        }
        Err(Error::Unavailable {
            backend: BACKEND,
            source: "the server kept answering NOSCRIPT".into(),
        })
    }

    /// Runs many script runs in one round trip. On one server: one pipeline of `EVALSHA`s
    /// (and one `WAIT` after them when `durable`: it covers every write sent before it on
    /// the connection); the outer error is for the transport (nothing is known to have
    /// run). On a cluster the runs' slots live on different nodes and a pipeline must stay
    /// in one slot, so every run is its own request to its slot's master, all sent at once
    /// (the client pipelines them per node): each may fail on its own, so transport failures
    /// are reported per run and the outer result is `Ok`.
    async fn eval_many(
        &self,
        script: &Script,
        kind: Op,
        durable: bool,
        runs: &[Run],
    ) -> Result<Vec<Result<Evaluated>>> {
        if let Connection::Cluster(_) = self.connection {
            return Ok(futures::future::join_all(
                runs.iter()
                    .map(|run| self.eval_one(script, kind, durable, run)),
            )
            .await);
        }
        let Some(first) = runs.first() else {
            return Ok(Vec::new());
        };
        let waits = durable && self.durable();
        let mut results: Vec<Option<Result<Evaluated>>> = runs.iter().map(|_| None).collect();
        // Two rounds at most: the second only re-sends the runs the server rejected with
        // NOSCRIPT (its script cache was empty, e.g. after a restart), which never ran.
        for round in 0..2 {
            let pending: Vec<usize> = (0..runs.len()).filter(|&i| results[i].is_none()).collect();
            if pending.is_empty() {
                break;
            }
            if round > 0 {
                self.load_script(script, first.route).await?;
            }
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for &i in &pending {
                pipe.add_command(runs[i].command.clone());
            }
            if waits {
                self.push_wait(&mut pipe);
            }
            let mut replies: Vec<Value> = self
                .with_retries(kind, "EVALSHA pipeline", first.route, |mut connection| {
                    let pipe = pipe.clone();
                    async move { pipe.query_async(&mut connection).await }
                })
                .await?;
            let wait = if waits { replies.pop() } else { None };
            let replicated = if waits {
                self.confirm(wait.as_ref())
            } else {
                Ok(())
            };
            for (&i, reply) in pending.iter().zip(replies) {
                results[i] = match reply {
                    Value::ServerError(error)
                        if error.kind() == Some(ServerErrorKind::NoScript) && round == 0 =>
                    {
                        None
                    }
                    Value::ServerError(error) => Some(Err(classify(error.into(), kind, "EVALSHA"))),
                    reply => Some(Ok(Evaluated {
                        reply,
                        replicated: replicated.as_ref().map(|_| ()).map_err(|error| {
                            Error::Ambiguous {
                                backend: BACKEND,
                                source: error.to_string().into(),
                            }
                        }),
                    })),
                };
            }
        }
        Ok(results
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|| {
                    Err(Error::Unavailable {
                        backend: BACKEND,
                        source: "the server kept answering NOSCRIPT".into(),
                    })
                })
            })
            .collect())
    }

    /// Runs one commit and reads its outcome; a commit that wrote is acknowledged only once
    /// the replicas confirmed it (a refused one wrote nothing to confirm).
    async fn commit_one(
        &self,
        account: AccountId,
        token: Option<FencingToken>,
        run: Run,
    ) -> Result<()> {
        let evaluated = self.eval_one(&self.commit, Op::Write, true, &run).await?;
        commit_outcome(account, token, evaluated.reply)?;
        evaluated.replicated
    }

    /// Applies many commits (of one or many accounts) in one round trip. Each commit is
    /// atomic and monotonic on its own, exactly as with [`StateStorage::apply`]; the inner
    /// results say how each commit fared, in order.
    ///
    /// On one server it is one pipeline of `EVALSHA`s (and one `WAIT` after them when writes
    /// wait for replicas); the outer error is for the transport (nothing is known to be
    /// applied). On a cluster the accounts' slots live on different nodes, and a pipeline
    /// must stay in one slot, so every commit is its own request to its slot's master, all
    /// sent at once (the client pipelines them per node): each may fail on its own, so
    /// transport failures are reported per commit and the outer result is always `Ok`.
    pub async fn apply_many(&self, commits: &[(AccountId, &Commit)]) -> Result<Vec<Result<()>>> {
        let commits: Vec<_> = commits
            .iter()
            .map(|&(account, commit)| (account, None, commit))
            .collect();
        self.commit_many(&commits).await
    }

    /// [`RedisStorage::apply_many`] for fenced commits: each applies only if its token is its
    /// account's current one, as with
    /// [`LeaseStorage::apply_fenced`](crate::LeaseStorage::apply_fenced) (a refused one is
    /// [`Error::Fenced`] in its place), still in one round trip.
    pub async fn apply_many_fenced(
        &self,
        commits: &[(AccountId, FencingToken, &Commit)],
    ) -> Result<Vec<Result<()>>> {
        let commits: Vec<_> = commits
            .iter()
            .map(|&(account, token, commit)| (account, Some(token), commit))
            .collect();
        self.commit_many(&commits).await
    }

    async fn commit_many(
        &self,
        commits: &[(AccountId, Option<FencingToken>, &Commit)],
    ) -> Result<Vec<Result<()>>> {
        let runs: Vec<Run> = commits
            .iter()
            .map(|&(account, token, commit)| self.commit_run(account, token, commit))
            .collect();
        let results = self.eval_many(&self.commit, Op::Write, true, &runs).await?;
        Ok(commits
            .iter()
            .zip(results)
            .map(|(&(account, token, _), result)| {
                let evaluated = result?;
                commit_outcome(account, token, evaluated.reply)?;
                evaluated.replicated
            })
            .collect())
    }

    /// Runs `op` on the connection routed to `route`'s slot, retrying with exponential
    /// backoff as long as `kind` allows for the error met, at most `retries` times.
    async fn with_retries<T, F, Fut>(
        &self,
        kind: Op,
        what: &str,
        route: Route,
        mut op: F,
    ) -> Result<T>
    where
        F: FnMut(Routed) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let routed = Routed {
            connection: self.connection.clone(),
            route,
        };
        let mut attempt = 0;
        loop {
            match op(routed.clone()).await {
                Ok(value) => return Ok(value),
                Err(error) if attempt < self.retries && may_retry(&error, kind) => {
                    tracing::debug!(%error, attempt, what, "redis storage: retrying");
                    let delay = self.retry_delay.saturating_mul(1 << attempt.min(16));
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(error) => return Err(classify(error, kind, what)),
            }
        }
    }
}

/// What an operation does, which decides how its failures are retried and reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Safe to repeat: a read, or a write of the same value (access hashes).
    Read,
    /// A sequence write, not to be repeated once it may have reached the server.
    Write,
}

/// True when the command cannot have been executed by the server. A cluster's redirects
/// (`MOVED`, `ASK`) and a demoted master's `READONLY` refuse a command before running it,
/// like a server still loading; so does the cluster client when it has no connection to the
/// slot's node.
fn not_executed(error: &RedisError) -> bool {
    error.is_connection_refusal()
        || error.kind() == ErrorKind::ClusterConnectionNotFound
        || matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::Moved
                    | ServerErrorKind::Ask
                    | ServerErrorKind::ReadOnly
            )
        )
}

fn may_retry(error: &RedisError, kind: Op) -> bool {
    not_executed(error)
        || (kind == Op::Read
            && (error.is_timeout() || error.is_connection_dropped() || error.is_io_error()))
}

/// Sorts a Redis failure into the crate's error kinds.
fn classify(error: RedisError, kind: Op, what: &str) -> Error {
    let wrong_type = error.code() == Some("WRONGTYPE")
        || error
            .detail()
            .is_some_and(|detail| detail.contains("WRONGTYPE"));
    if wrong_type {
        return Error::Corrupt {
            backend: BACKEND,
            location: what.to_owned(),
            detail: error.to_string(),
        };
    }
    if matches!(error.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM")) {
        return Error::Config(format!("Redis refused the credentials: {error}"));
    }
    match error.kind() {
        ErrorKind::AuthenticationFailed
        | ErrorKind::InvalidClientConfig
        | ErrorKind::Server(ServerErrorKind::NoPerm) => Error::Config(error.to_string()),
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => Error::Corrupt {
            backend: BACKEND,
            location: what.to_owned(),
            detail: error.to_string(),
        },
        _ if not_executed(&error) => Error::Unavailable {
            backend: BACKEND,
            source: error.into(),
        },
        // A timeout or a connection lost after the command went out: a write may have run.
        _ if kind == Op::Write
            && (error.is_timeout() || error.is_connection_dropped() || error.is_io_error()) =>
        {
            Error::Ambiguous {
                backend: BACKEND,
                source: error.into(),
            }
        }
        _ => Error::Unavailable {
            backend: BACKEND,
            source: error.into(),
        },
    }
}

/// The commit script's ARGV (see the layout at the top of `commit.lua`).
fn commit_args(commit: &Commit) -> Vec<i64> {
    let mut args =
        Vec::with_capacity(8 + commit.removed_channels.len() + 3 * commit.channels.len());
    let state = commit.state.unwrap_or_default();
    args.extend([
        i64::from(commit.state.is_some()),
        i64::from(commit.state_reset),
        i64::from(state.pts),
        i64::from(state.qts),
        i64::from(state.date),
        i64::from(state.seq),
    ]);
    args.push(len_arg(commit.removed_channels.len()));
    args.extend(&commit.removed_channels);
    args.push(len_arg(commit.channels.len()));
    for channel in &commit.channels {
        args.extend([
            channel.channel_id,
            i64::from(channel.pts),
            i64::from(channel.reset),
        ]);
    }
    args
}

fn len_arg(len: usize) -> i64 {
    // A commit with more than i64::MAX entries cannot exist in memory.
    i64::try_from(len).unwrap_or(i64::MAX)
}

/// Reads the commit script's answer (`token`: what a fenced commit carried).
fn commit_outcome(account: AccountId, token: Option<FencingToken>, reply: Value) -> Result<()> {
    let parts = strings(&reply).ok_or_else(|| corrupt("commit script reply", &reply))?;
    match parts.as_slice() {
        [ok] if ok == "ok" => Ok(()),
        [tag, current] if tag == "fenced" => match (token, current.parse()) {
            (Some(token), Ok(current)) => Err(Error::Fenced {
                account,
                token: token.0,
                current,
            }),
            _ => Err(corrupt("commit script reply", &reply)),
        },
        [tag, sequence, stored, attempted] if tag == "stale" => {
            let sequence = match sequence.as_str() {
                "pts" => Some(StaleSequence::Pts),
                "qts" => Some(StaleSequence::Qts),
                "seq" => Some(StaleSequence::Seq),
                other => other
                    .strip_prefix("channel:")
                    .and_then(|id| id.parse().ok())
                    .map(StaleSequence::Channel),
            };
            match (sequence, stored.parse(), attempted.parse()) {
                (Some(sequence), Ok(stored), Ok(attempted)) => Err(Error::Stale {
                    account,
                    sequence,
                    stored,
                    attempted,
                }),
                _ => Err(corrupt("commit script reply", &reply)),
            }
        }
        [tag, key, field, detail] if tag == "corrupt" => Err(Error::Corrupt {
            backend: BACKEND,
            location: if field.is_empty() {
                key.clone()
            } else {
                format!("{key} field {field}")
            },
            detail: detail.clone(),
        }),
        _ => Err(corrupt("commit script reply", &reply)),
    }
}

fn corrupt(location: impl Into<String>, value: &Value) -> Error {
    Error::Corrupt {
        backend: BACKEND,
        location: location.into(),
        detail: format!("unexpected value {value:?}"),
    }
}

/// An array of strings (bulk or simple), as the scripts return.
fn strings(value: &Value) -> Option<Vec<String>> {
    let Value::Array(items) = value else {
        return None;
    };
    items
        .iter()
        .map(|item| match item {
            Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
            Value::SimpleString(text) => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// A stored decimal number, `None` when absent, [`Error::Corrupt`] when it does not parse.
fn parse_number<T: std::str::FromStr>(
    value: &Value,
    location: impl Fn() -> String,
) -> Result<Option<T>> {
    let bad = |detail: String| Error::Corrupt {
        backend: BACKEND,
        location: location(),
        detail,
    };
    match value {
        Value::Nil => Ok(None),
        Value::BulkString(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| text.parse().ok())
            .map(Some)
            .ok_or_else(|| {
                bad(format!(
                    "{:?} is not a number of the expected range",
                    String::from_utf8_lossy(bytes)
                ))
            }),
        Value::Int(number) => (*number)
            .to_string()
            .parse()
            .map(Some)
            .map_err(|_| bad(format!("{number} is out of range"))),
        other => Err(bad(format!("unexpected value {other:?}"))),
    }
}

/// The four state fields as HMGET returns them: all absent, or all present and valid.
fn parse_state(values: &[Value], key: &str) -> Result<Option<State>> {
    let [pts, qts, date, seq] = values else {
        return Err(Error::Corrupt {
            backend: BACKEND,
            location: key.to_owned(),
            detail: format!("expected 4 fields, got {}", values.len()),
        });
    };
    let field =
        |value: &Value, name: &str| parse_number::<i32>(value, || format!("{key} field {name}"));
    match (
        field(pts, "pts")?,
        field(qts, "qts")?,
        field(date, "date")?,
        field(seq, "seq")?,
    ) {
        (Some(pts), Some(qts), Some(date), Some(seq)) => Ok(Some(State {
            pts,
            qts,
            date,
            seq,
        })),
        (None, None, None, None) => Ok(None),
        _ => Err(Error::Corrupt {
            backend: BACKEND,
            location: key.to_owned(),
            detail: "the state hash lacks a field".into(),
        }),
    }
}

/// A hash as HGETALL returns it (a flat array in RESP2, a map in RESP3), parsed as
/// channel id → number.
fn parse_hash<T: std::str::FromStr>(value: &Value, key: &str) -> Result<BTreeMap<ChannelId, T>> {
    let pairs: Vec<(&Value, &Value)> = match value {
        Value::Array(items) if items.len() % 2 == 0 => items
            .chunks_exact(2)
            .map(|pair| (&pair[0], &pair[1]))
            .collect(),
        Value::Map(items) => items.iter().map(|(k, v)| (k, v)).collect(),
        other => return Err(corrupt(key, other)),
    };
    let mut map = BTreeMap::new();
    for (field, value) in pairs {
        let id: ChannelId = parse_number(field, || format!("{key} (a field name)"))?
            .ok_or_else(|| corrupt(key, field))?;
        let number = parse_number(value, || format!("{key} field {id}"))?
            .ok_or_else(|| corrupt(key, value))?;
        map.insert(id, number);
    }
    Ok(map)
}

impl RedisStorage {
    /// One field of a hash (a channel's pts or access hash), read with retries and parsed as a
    /// number: `None` when absent, [`Error::Corrupt`] when it does not parse.
    async fn hget_number<T: std::str::FromStr>(
        &self,
        account: AccountId,
        key: String,
        channel: ChannelId,
    ) -> Result<Option<T>> {
        let value: Value = self
            .with_retries(Op::Read, "HGET", self.route(account), |mut connection| {
                let key = key.clone();
                async move {
                    redis::cmd("HGET")
                        .arg(key)
                        .arg(channel)
                        .query_async(&mut connection)
                        .await
                }
            })
            .await?;
        parse_number(&value, || format!("{key} field {channel}"))
    }
}

impl StateStorage for RedisStorage {
    async fn get_state(&self, account: AccountId) -> Result<Option<State>> {
        let key = self.state_key(account);
        let values: Vec<Value> = self
            .with_retries(Op::Read, "HMGET", self.route(account), |mut connection| {
                let key = key.clone();
                async move {
                    redis::cmd("HMGET")
                        .arg(key)
                        .arg(&["pts", "qts", "date", "seq"])
                        .query_async(&mut connection)
                        .await
                }
            })
            .await?;
        parse_state(&values, &key)
    }

    async fn get_channel_pts(&self, account: AccountId, channel: ChannelId) -> Result<Option<i32>> {
        self.hget_number(account, self.channels_key(account), channel)
            .await
    }

    async fn channels(&self, account: AccountId) -> Result<BTreeMap<ChannelId, i32>> {
        let key = self.channels_key(account);
        let value: Value = self
            .with_retries(
                Op::Read,
                "HGETALL",
                self.route(account),
                |mut connection| {
                    let key = key.clone();
                    async move {
                        redis::cmd("HGETALL")
                            .arg(key)
                            .query_async(&mut connection)
                            .await
                    }
                },
            )
            .await?;
        parse_hash(&value, &key)
    }

    fn apply(
        &self,
        account: AccountId,
        commit: &Commit,
    ) -> impl Future<Output = Result<()>> + Send {
        let run = self.commit_run(account, None, commit);
        self.commit_one(account, None, run)
    }

    async fn load(&self, account: AccountId) -> Result<Snapshot> {
        let (state_key, channels_key) = (self.state_key(account), self.channels_key(account));
        let reply: Value = self
            .with_retries(
                Op::Read,
                "load script",
                self.route(account),
                |mut connection| {
                    let mut invocation = self.load.prepare_invoke();
                    invocation.key(&state_key).key(&channels_key);
                    async move { invocation.invoke_async(&mut connection).await }
                },
            )
            .await?;
        let Value::Array(parts) = &reply else {
            return Err(corrupt("load script reply", &reply));
        };
        let [Value::Array(state), channels] = parts.as_slice() else {
            return Err(corrupt("load script reply", &reply));
        };
        Ok(Snapshot {
            state: parse_state(state, &state_key)?,
            channels: parse_hash(channels, &channels_key)?,
        })
    }

    async fn delete(&self, account: AccountId) -> Result<()> {
        let keys = [self.state_key(account), self.channels_key(account)];
        self.del(Op::Write, account, keys).await
    }
}

impl AccessHashStorage for RedisStorage {
    async fn get_access_hash(&self, account: AccountId, channel: ChannelId) -> Result<Option<i64>> {
        self.hget_number(account, self.access_hashes_key(account), channel)
            .await
    }

    fn set_access_hashes(
        &self,
        account: AccountId,
        hashes: &[(ChannelId, i64)],
    ) -> impl Future<Output = Result<()>> + Send {
        self.hset_numbers(account, self.access_hashes_key(account), hashes.to_vec())
    }

    async fn get_user_access_hash(&self, account: AccountId, user: UserId) -> Result<Option<i64>> {
        self.hget_number(account, self.user_access_hashes_key(account), user)
            .await
    }

    fn set_user_access_hashes(
        &self,
        account: AccountId,
        hashes: &[(UserId, i64)],
    ) -> impl Future<Output = Result<()>> + Send {
        self.hset_numbers(
            account,
            self.user_access_hashes_key(account),
            hashes.to_vec(),
        )
    }

    async fn delete_access_hashes(&self, account: AccountId) -> Result<()> {
        let keys = [
            self.access_hashes_key(account),
            self.user_access_hashes_key(account),
        ];
        self.del(Op::Read, account, keys).await
    }
}

/// Decodes stored values built from arbitrary bytes, for the fuzz target: decoding returns the
/// value or a [`Error::Corrupt`], never anything else, and never panics.
pub(crate) fn fuzz_decode(data: &[u8]) -> std::result::Result<(), String> {
    // Each value: a tag byte, a length byte, then that many bytes.
    let mut values = Vec::new();
    let mut rest = data;
    while let [tag, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (bytes, tail) = tail.split_at(len);
        values.push(match tag % 5 {
            0 => Value::Nil,
            1 => Value::BulkString(bytes.to_vec()),
            2 => Value::Int(
                bytes
                    .iter()
                    .fold(0i64, |n, &b| n.wrapping_mul(257).wrapping_add(i64::from(b))),
            ),
            3 => Value::SimpleString(String::from_utf8_lossy(bytes).into_owned()),
            _ => Value::Array(
                bytes
                    .iter()
                    .map(|&b| Value::BulkString(b.to_string().into_bytes()))
                    .collect(),
            ),
        });
        rest = tail;
    }
    let check = |outcome: Result<()>| match outcome {
        Ok(()) => Ok(()),
        Err(error) if error.is_corrupt() => Ok(()),
        Err(error) => Err(format!("decoding failed with a non-corrupt error: {error}")),
    };
    check(parse_state(&values, "fuzz").map(|_| ()))?;
    if let Ok(Some(state)) = parse_state(&values, "fuzz") {
        // What decodes must be what was stored.
        let expected: Vec<Option<i32>> = values
            .iter()
            .map(|v| parse_number::<i32>(v, String::new).ok().flatten())
            .collect();
        if expected
            != [
                Some(state.pts),
                Some(state.qts),
                Some(state.date),
                Some(state.seq),
            ]
        {
            return Err(format!("{values:?} decoded as {state:?}"));
        }
    }
    let array = Value::Array(values.clone());
    check(parse_hash::<i32>(&array, "fuzz").map(|_| ()))?;
    check(parse_hash::<i64>(&array, "fuzz").map(|_| ()))?;
    let map = Value::Map(
        values
            .chunks_exact(2)
            .map(|p| (p[0].clone(), p[1].clone()))
            .collect(),
    );
    check(parse_hash::<i32>(&map, "fuzz").map(|_| ()))?;
    for value in &values {
        check(parse_number::<i32>(value, String::new).map(|_| ()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use sync_core::ChannelCommit;

    use super::*;

    #[test]
    fn arguments_follow_the_script_layout() {
        let commit = Commit {
            state: Some(State {
                pts: 1,
                qts: 2,
                date: 3,
                seq: 4,
            }),
            state_reset: true,
            channels: vec![ChannelCommit {
                channel_id: 1 << 40,
                pts: 9,
                reset: false,
            }],
            removed_channels: vec![5, 6],
        };
        assert_eq!(
            commit_args(&commit),
            vec![1, 1, 1, 2, 3, 4, 2, 5, 6, 1, 1 << 40, 9, 0]
        );
    }

    #[test]
    fn script_replies_are_read() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        assert!(commit_outcome(1, None, Value::Array(vec![bulk("ok")])).is_ok());
        let stale = Value::Array(vec![
            bulk("stale"),
            bulk("channel:77"),
            bulk("10"),
            bulk("9"),
        ]);
        assert!(matches!(
            commit_outcome(1, None, stale),
            Err(Error::Stale {
                sequence: StaleSequence::Channel(77),
                stored: 10,
                attempted: 9,
                ..
            })
        ));
        assert!(commit_outcome(1, None, Value::Int(1)).is_err_and(|e| e.is_corrupt()));
        let fenced = Value::Array(vec![bulk("fenced"), bulk("7")]);
        assert!(matches!(
            commit_outcome(1, Some(FencingToken(6)), fenced.clone()),
            Err(Error::Fenced {
                account: 1,
                token: 6,
                current: 7
            })
        ));
        // Only a fenced commit can be refused as fenced.
        assert!(commit_outcome(1, None, fenced).is_err_and(|e| e.is_corrupt()));
    }

    #[test]
    fn garbage_numbers_are_corrupt_not_panics() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let key = "k";
        assert!(
            parse_state(&[bulk("1"), bulk("x"), bulk("3"), bulk("4")], key)
                .is_err_and(|e| e.is_corrupt())
        );
        assert!(
            parse_state(&[bulk("1"), Value::Nil, Value::Nil, Value::Nil], key)
                .is_err_and(|e| e.is_corrupt())
        );
        assert!(
            parse_state(&[bulk("99999999999"), bulk("1"), bulk("1"), bulk("1")], key)
                .is_err_and(|e| e.is_corrupt())
        );
        assert!(
            parse_hash::<i32>(&Value::Array(vec![bulk("abc"), bulk("1")]), key)
                .is_err_and(|e| e.is_corrupt())
        );
        assert!(
            parse_hash::<i32>(&Value::Array(vec![bulk("1")]), key).is_err_and(|e| e.is_corrupt())
        );
    }
}
