//! The Redis backend: state shared by many processes, kept monotonic by a server-side script.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, Script, ServerErrorKind, Value};
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
/// Build it with [`RedisConfig::new`] and change the public fields as needed
/// (`RedisConfig { retries: 5, ..RedisConfig::new(url) }`).
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Where the server is: `redis://[user:password@]host:port/db`, `rediss://…` for TLS
    /// (feature `redis-tls`), or `redis+unix:///path/to.sock?user=…&pass=…`.
    pub url: String,
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
}

impl RedisConfig {
    /// The defaults, for the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "tgsync".into(),
            retries: 3,
            retry_delay: Duration::from_millis(25),
            response_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(2),
        }
    }

    /// The same configuration with another key prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }
}

/// Keeps the state on a Redis server, shared by every process that uses the same server and
/// prefix.
///
/// - **Monotonic and atomic server-side.** Every sequence write runs one Lua script
///   (`EVALSHA` through [`redis::Script`]) that checks the whole commit against the stored
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
/// - **Connection.** One [`ConnectionManager`] (a multiplexed connection that reconnects on
///   its own); clones of a `RedisStorage` share it.
/// - **Retries.** Reads and access-hash writes are retried with exponential backoff on
///   connection failures and timeouts. Sequence writes are retried only when the command
///   cannot have reached the server (connection refused, server still loading): after an
///   unanswered send, repeating a commit could undo a newer writer's reset, so the caller
///   gets [`Error::Ambiguous`] and decides (reading the state back tells what happened).
/// - **Deletes.** [`StateStorage::delete`] is one `DEL` of the state and channel hashes, and
///   [`AccessHashStorage::delete_access_hashes`] one `DEL` of the two access-hash hashes: each
///   atomic. Deleting the state is a write (retried only when it cannot have run, like a
///   commit); deleting access hashes is retried like a read.
/// - **Pipelining.** [`RedisStorage::apply_many`] (and [`RedisStorage::apply_many_fenced`])
///   sends many accounts' commits in one round trip; [`AccessHashStorage::set_access_hashes`]
///   is one `HSET`; [`LeaseStorage::renew_many`](crate::LeaseStorage::renew_many) is one
///   pipeline of renewals.
/// - **Leases** ([`LeaseStorage`](crate::LeaseStorage)): each operation is one run of
///   `redis/lease.lua` on the account's `…:lease` and `…:fence` keys, timed by the server
///   (`PEXPIRE`, `PTTL`), never by a client clock. The fence is a counter with no expiry that
///   no delete touches, so a token never goes back. A fenced commit is the commit script with
///   the fence as a third key and the token as a last argument: the token is checked in the
///   same script as the sequences. Acquiring is retried only when it cannot have run (a repeat
///   would bump the token again: harmless, but the caller should know), else
///   [`Error::Ambiguous`]; renewing and releasing are safe to repeat and retried like reads.
/// - **Registry** ([`RegistryStorage`](crate::RegistryStorage)): `SADD`/`SREM`/`SMEMBERS` on
///   `{prefix}:{registry}:accounts`; the heartbeat is `redis/heartbeat.lua`, which scores the
///   member by the server's `TIME` plus its ttl in `{prefix}:{registry}:members` and prunes
///   the ended beats in the same step.
///
/// The client talks to one server (or a primary); the key layout is ready for Redis Cluster,
/// but a cluster client is not wired in.
#[derive(Clone)]
pub struct RedisStorage {
    connection: ConnectionManager,
    prefix: String,
    retries: u32,
    retry_delay: Duration,
    commit: Script,
    load: Script,
    lease: Script,
    heartbeat: Script,
}

impl std::fmt::Debug for RedisStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStorage")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStorage {
    /// Connects to the server at `url` with the default configuration.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::with_config(RedisConfig::new(url)).await
    }

    /// Connects with the given configuration. Fails with [`Error::Config`] for a bad URL,
    /// prefix or credentials, and with [`Error::Unavailable`] if the server cannot be reached.
    pub async fn with_config(config: RedisConfig) -> Result<Self> {
        if config.prefix.contains(['{', '}']) {
            return Err(Error::Config(format!(
                "the key prefix {:?} must not contain braces: they would change the cluster hash tag",
                config.prefix
            )));
        }
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
        let connection = ConnectionManager::new_with_config(client, manager_config)
            .await
            .map_err(|e| classify(e, Op::Read, "connect"))?;
        Ok(Self {
            connection,
            prefix: config.prefix,
            retries: config.retries,
            retry_delay: config.retry_delay,
            commit: Script::new(COMMIT_LUA),
            load: Script::new(LOAD_LUA),
            lease: Script::new(LEASE_LUA),
            heartbeat: Script::new(HEARTBEAT_LUA),
        })
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

    /// Deletes `keys` in one `DEL` (atomic; all of an account's keys share a hash tag).
    async fn del(&self, kind: Op, keys: [String; 2]) -> Result<()> {
        self.with_retries(kind, "DEL", |mut connection| {
            let keys = keys.clone();
            async move {
                redis::cmd("DEL")
                    .arg(&keys[..])
                    .query_async::<()>(&mut connection)
                    .await
            }
        })
        .await
    }

    /// Writes `id → number` fields of one hash in one `HSET`: atomic, and safe to repeat (the
    /// same values again), so retried like a read. For an id listed twice Redis keeps the later
    /// value.
    async fn hset_numbers(&self, key: String, entries: Vec<(i64, i64)>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.with_retries(Op::Read, "HSET", |mut connection| {
            let mut command = redis::cmd("HSET");
            command.arg(&key);
            for (id, number) in &entries {
                command.arg(id).arg(number);
            }
            async move { command.query_async::<()>(&mut connection).await }
        })
        .await
    }

    /// Applies many commits (of one or many accounts) in one round trip: a pipeline of
    /// `EVALSHA`s. Each commit is atomic and monotonic on its own, exactly as with
    /// [`StateStorage::apply`]; the outer error is for the transport (nothing is known to
    /// be applied), the inner results say how each commit fared, in order.
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
        let replies = self
            .eval_pipeline(&self.commit, Op::Write, commits.len(), |pipe, i| {
                let (account, token, commit) = commits[i];
                pipe.arg(if token.is_some() { 3 } else { 2 })
                    .arg(self.state_key(account))
                    .arg(self.channels_key(account));
                if token.is_some() {
                    pipe.arg(self.fence_key(account));
                }
                pipe.arg(commit_args(commit));
                if let Some(token) = token {
                    pipe.arg(token.0);
                }
            })
            .await?;
        Ok(commits
            .iter()
            .zip(replies)
            .map(|(&(account, token, _), reply)| commit_outcome(account, token, reply?))
            .collect())
    }

    /// Runs `script` `count` times in one pipeline of `EVALSHA`s, `add(pipe, i)` appending the
    /// number of keys, the keys and the arguments of run `i`. The outer error is for the
    /// transport; the inner results are each run's reply or its error, in order.
    async fn eval_pipeline(
        &self,
        script: &Script,
        kind: Op,
        count: usize,
        add: impl Fn(&mut redis::Pipeline, usize),
    ) -> Result<Vec<Result<Value>>> {
        let mut results: Vec<Option<Result<Value>>> = (0..count).map(|_| None).collect();
        // Two rounds at most: the second only re-sends the runs the server rejected with
        // NOSCRIPT (its script cache was empty, e.g. after a restart), which never ran.
        for round in 0..2 {
            let pending: Vec<usize> = (0..count).filter(|&i| results[i].is_none()).collect();
            if pending.is_empty() {
                break;
            }
            if round > 0 {
                let mut connection = self.connection.clone();
                script
                    .load_async(&mut connection)
                    .await
                    .map_err(|e| classify(e, Op::Read, "SCRIPT LOAD"))?;
            }
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for &i in &pending {
                pipe.cmd("EVALSHA").arg(script.get_hash());
                add(&mut pipe, i);
            }
            let replies: Vec<Value> = self
                .with_retries(kind, "EVALSHA pipeline", |mut connection| {
                    let pipe = pipe.clone();
                    async move { pipe.query_async(&mut connection).await }
                })
                .await?;
            for (&i, reply) in pending.iter().zip(replies) {
                results[i] = match reply {
                    Value::ServerError(error)
                        if error.kind() == Some(ServerErrorKind::NoScript) && round == 0 =>
                    {
                        None
                    }
                    Value::ServerError(error) => Some(Err(classify(error.into(), kind, "EVALSHA"))),
                    reply => Some(Ok(reply)),
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

    /// Runs `op` on a clone of the shared connection, retrying with exponential backoff
    /// as long as `kind` allows for the error met, at most `retries` times.
    async fn with_retries<T, F, Fut>(&self, kind: Op, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let mut attempt = 0;
        loop {
            match op(self.connection.clone()).await {
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

/// True when the command cannot have been executed by the server.
fn not_executed(error: &RedisError) -> bool {
    error.is_connection_refusal()
        || matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
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
        key: String,
        channel: ChannelId,
    ) -> Result<Option<T>> {
        let value: Value = self
            .with_retries(Op::Read, "HGET", |mut connection| {
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
            .with_retries(Op::Read, "HMGET", |mut connection| {
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
        self.hget_number(self.channels_key(account), channel).await
    }

    async fn channels(&self, account: AccountId) -> Result<BTreeMap<ChannelId, i32>> {
        let key = self.channels_key(account);
        let value: Value = self
            .with_retries(Op::Read, "HGETALL", |mut connection| {
                let key = key.clone();
                async move {
                    redis::cmd("HGETALL")
                        .arg(key)
                        .query_async(&mut connection)
                        .await
                }
            })
            .await?;
        parse_hash(&value, &key)
    }

    fn apply(
        &self,
        account: AccountId,
        commit: &Commit,
    ) -> impl Future<Output = Result<()>> + Send {
        let args = commit_args(commit);
        async move {
            let (state_key, channels_key) = (self.state_key(account), self.channels_key(account));
            let reply: Value = self
                .with_retries(Op::Write, "commit script", |mut connection| {
                    let mut invocation = self.commit.prepare_invoke();
                    invocation.key(&state_key).key(&channels_key).arg(&args);
                    async move { invocation.invoke_async(&mut connection).await }
                })
                .await?;
            commit_outcome(account, None, reply)
        }
    }

    async fn load(&self, account: AccountId) -> Result<Snapshot> {
        let (state_key, channels_key) = (self.state_key(account), self.channels_key(account));
        let reply: Value = self
            .with_retries(Op::Read, "load script", |mut connection| {
                let mut invocation = self.load.prepare_invoke();
                invocation.key(&state_key).key(&channels_key);
                async move { invocation.invoke_async(&mut connection).await }
            })
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
        self.del(Op::Write, keys).await
    }
}

impl AccessHashStorage for RedisStorage {
    async fn get_access_hash(&self, account: AccountId, channel: ChannelId) -> Result<Option<i64>> {
        self.hget_number(self.access_hashes_key(account), channel)
            .await
    }

    fn set_access_hashes(
        &self,
        account: AccountId,
        hashes: &[(ChannelId, i64)],
    ) -> impl Future<Output = Result<()>> + Send {
        self.hset_numbers(self.access_hashes_key(account), hashes.to_vec())
    }

    async fn get_user_access_hash(&self, account: AccountId, user: UserId) -> Result<Option<i64>> {
        self.hget_number(self.user_access_hashes_key(account), user)
            .await
    }

    fn set_user_access_hashes(
        &self,
        account: AccountId,
        hashes: &[(UserId, i64)],
    ) -> impl Future<Output = Result<()>> + Send {
        self.hset_numbers(self.user_access_hashes_key(account), hashes.to_vec())
    }

    async fn delete_access_hashes(&self, account: AccountId) -> Result<()> {
        let keys = [
            self.access_hashes_key(account),
            self.user_access_hashes_key(account),
        ];
        self.del(Op::Read, keys).await
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
