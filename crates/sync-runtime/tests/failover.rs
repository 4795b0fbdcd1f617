//! Fail-over across real processes: three processes run a [`Fleet`] each over one Redis,
//! sharing the accounts of its registry; one of them is killed with SIGKILL mid-run, the
//! other two take its accounts over; later another one is frozen (SIGSTOP) past its leases
//! and resumed, and must hand its handlers nothing for the accounts taken over meanwhile; and
//! the oracle judges every account's whole history.
//!
//! Every process sees the same history per account: account `X`'s server is
//! `Server::new(seed_of(X), …)` everywhere, and its pushes follow a [`Timetable`] on the
//! wall clock from a start instant `T0` the parent hands out. A process that starts running
//! an account (a first claim, a hand-over, a takeover) fast-forwards its copy of the server to
//! the pushes due by then, as pushes it never received (only `getDifference` brings them
//! back), then produces the rest on time through a faulty network.
//!
//! Each child logs, with one unbuffered `write` per line (a SIGKILL loses nothing handled):
//!
//! - `S <micros> <member> <account> <pts> <qts> <seq> <date> <channels>` when it starts an
//!   account, with the stored state it starts from (read in [`AccountFactory::build`], under
//!   the lease, so nobody writes between this read and the manager's own);
//! - `D <micros> <member> <account> <id> <sequence>` per update handled;
//! - `N <micros> <member> <account> <notice>` per notice.
//!
//! The parent rebuilds each account's server to its final push, and feeds the oracle the
//! account's runs in the order they started: each run begins with `crash` at the state it
//! started from, then its deliveries. A run that ended in a hand-over between live
//! processes must have persisted everything it handled (checked); the killed process's last
//! runs may be repeated, inside their unacknowledged window only (the oracle checks that, and
//! the test counts the repeats). `finish` then compares with what Redis holds.
//!
//! Needs `redis-server` (env `REDIS_SERVER`, or on `PATH`); skipped with a note when missing,
//! except under `CI=true`, where it fails. `SYNC_RUNTIME_FAILOVER_ACCOUNTS` (default 18) and
//! `SYNC_RUNTIME_FAILOVER_SECONDS` (of history, default 12) make a bigger run.
#![allow(clippy::print_stderr)] // The figures of the run are for the person running it.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::env_or;
use sync_core::{ChannelId, Commit, Notice, Sequence, State};
use sync_runtime::sim::{ApiFaults, Producer, SimulatedApi, Timetable};
use sync_runtime::{
    AccountFactory, BoxError, Fleet, FleetConfig, Handler, ManagerConfig, ManagerHandle,
};
use sync_storage::{
    AccessHashStorage, AccountId, ChannelCommit, LeaseStorage, RedisConfig, RedisStorage,
    RegistryStorage, StateStorage,
};
use sync_testkit::redis_server::RedisServer;
use sync_testkit::{Faults, Limits, Oracle, Server, TestEntities, TestUpdate, Workload};

const MEMBER_VAR: &str = "SYNC_FAILOVER_MEMBER";
const REDIS_VAR: &str = "SYNC_FAILOVER_REDIS";
const T0_VAR: &str = "SYNC_FAILOVER_T0_MILLIS";
const LOG_VAR: &str = "SYNC_FAILOVER_LOG";
const PUSHES_VAR: &str = "SYNC_FAILOVER_PUSHES";

const PREFIX: &str = "failover";
const MEMBERS: [&str; 3] = ["a", "b", "c"];
/// The member that joins after the kill.
const JOINER: &str = "d";
/// Time between two pushes of one account.
const INTERVAL: Duration = Duration::from_millis(40);
const LEASE_TTL: Duration = Duration::from_secs(2);
const RENEW_EVERY: Duration = Duration::from_millis(500);
const TICK: Duration = Duration::from_millis(200);
/// How long the application takes per update.
const HANDLING: Duration = Duration::from_millis(10);
/// The bound on a takeover, from the kill to the taker's start: the lease's ttl plus a second.
const TAKEOVER_BOUND: Duration = Duration::from_secs(3);

/// The first account id (ids are consecutive from here).
const FIRST_ACCOUNT: AccountId = 7_001;

fn seed_of(account: AccountId) -> u64 {
    (account as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xFA11_0FE5
}

fn workload() -> Workload {
    Workload {
        channels: 6,
        ..Workload::default()
    }
}

fn fresh_server(account: AccountId) -> Server {
    Server::new(seed_of(account), workload(), Limits::default())
}

fn unix_micros() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    u64::try_from(since.as_micros()).expect("micros fit")
}

async fn connect(url: &str) -> Arc<RedisStorage> {
    let config = RedisConfig {
        retries: 1,
        retry_delay: Duration::from_millis(5),
        response_timeout: Duration::from_millis(500),
        connection_timeout: Duration::from_millis(500),
        ..RedisConfig::new(url).with_prefix(PREFIX)
    };
    Arc::new(
        RedisStorage::with_config(config)
            .await
            .expect("connect to Redis"),
    )
}

// ---------------------------------------------------------------------------------------------
// The log lines.

fn encode_sequence(sequence: Sequence) -> String {
    match sequence {
        Sequence::Unordered => "u".into(),
        Sequence::Common { pts, pts_count } => format!("c/{pts}/{pts_count}"),
        Sequence::Qts { qts } => format!("q/{qts}"),
        Sequence::Channel {
            channel_id,
            pts,
            pts_count,
        } => format!("h/{channel_id}/{pts}/{pts_count}"),
        // Never delivered; logged so that the oracle rejects it.
        Sequence::ChannelTooLong { channel_id, .. } => format!("t/{channel_id}"),
        Sequence::PtsChanged => "p".into(),
    }
}

fn decode_sequence(text: &str) -> Option<Sequence> {
    let parts: Vec<&str> = text.split('/').collect();
    let int = |i: usize| parts.get(i).and_then(|p| p.parse::<i32>().ok());
    Some(match *parts.first()? {
        "u" => Sequence::Unordered,
        "c" => Sequence::Common {
            pts: int(1)?,
            pts_count: int(2)?,
        },
        "q" => Sequence::Qts { qts: int(1)? },
        "h" => Sequence::Channel {
            channel_id: parts.get(1)?.parse().ok()?,
            pts: int(2)?,
            pts_count: int(3)?,
        },
        "t" => Sequence::ChannelTooLong {
            channel_id: parts.get(1)?.parse().ok()?,
            pts: None,
        },
        "p" => Sequence::PtsChanged,
        _ => return None,
    })
}

fn encode_channels(channels: &BTreeMap<ChannelId, i32>) -> String {
    if channels.is_empty() {
        return "-".into();
    }
    channels
        .iter()
        .map(|(id, pts)| format!("{id}:{pts}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn decode_channels(text: &str) -> Option<HashMap<ChannelId, i32>> {
    if text == "-" {
        return Some(HashMap::new());
    }
    text.split(',')
        .map(|pair| {
            let (id, pts) = pair.split_once(':')?;
            Some((id.parse().ok()?, pts.parse().ok()?))
        })
        .collect()
}

/// A child's log file: one `write` per line, appended, unbuffered.
struct Log {
    member: String,
    file: File,
}

impl Log {
    fn line(&self, kind: &str, account: AccountId, rest: &str) {
        let line = format!(
            "{kind} {} {} {account} {rest}\n",
            unix_micros(),
            self.member
        );
        // One write of a short line to a file opened for appending: the line is whole in the
        // file or not there at all, whatever kills the process next.
        let written = (&self.file).write(line.as_bytes()).expect("write the log");
        assert_eq!(written, line.len(), "short write to the log");
    }
}

/// One line of a child's log, parsed.
#[derive(Debug, Clone)]
enum Line {
    Start {
        at: u64,
        member: String,
        account: AccountId,
        state: State,
        channels: HashMap<ChannelId, i32>,
    },
    Delivered {
        at: u64,
        account: AccountId,
        update: TestUpdate,
    },
    Notice {
        account: AccountId,
        text: String,
    },
}

fn parse_line(line: &str) -> Option<Line> {
    let fields: Vec<&str> = line.split(' ').collect();
    let at = fields.get(1)?.parse().ok()?;
    let member = (*fields.get(2)?).to_owned();
    let account = fields.get(3)?.parse().ok()?;
    match *fields.first()? {
        "S" => {
            let int = |i: usize| fields.get(i).and_then(|f| f.parse::<i32>().ok());
            Some(Line::Start {
                at,
                member,
                account,
                state: State {
                    pts: int(4)?,
                    qts: int(5)?,
                    seq: int(6)?,
                    date: int(7)?,
                },
                channels: decode_channels(fields.get(8)?)?,
            })
        }
        "D" if fields.len() == 6 => Some(Line::Delivered {
            at,
            account,
            update: TestUpdate {
                id: fields.get(4)?.parse().ok()?,
                sequence: decode_sequence(fields.get(5)?)?,
            },
        }),
        "N" => Some(Line::Notice {
            account,
            text: fields[4..].join(" "),
        }),
        _ => None,
    }
}

/// Reads a child's log. A last line without its newline (cut by the kill, if a write can be
/// cut at all) is left out: that update was not handled, so it is not acknowledged either.
fn read_log(path: &Path) -> Vec<Line> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    complete
        .lines()
        .map(|line| parse_line(line).unwrap_or_else(|| panic!("bad log line {line:?}")))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The child: a fleet over Redis whose accounts log what they handle.

struct LogHandler {
    account: AccountId,
    log: Arc<Log>,
}

impl Handler<TestUpdate, TestEntities> for LogHandler {
    async fn handle(&self, update: TestUpdate, _: Arc<[TestEntities]>) -> Result<(), BoxError> {
        let rest = format!("{} {}", update.id, encode_sequence(update.sequence));
        self.log.line("D", self.account, &rest);
        // An application takes a while per update: an update logged here is delivered but not
        // acknowledged until this returns, so a kill leaves an unacknowledged window behind.
        tokio::time::sleep(HANDLING).await;
        Ok(())
    }

    async fn notice(&self, notice: Notice) {
        self.log
            .line("N", self.account, &format!("{notice:?}").replace('\n', " "));
    }
}

struct Factory {
    storage: Arc<RedisStorage>,
    log: Arc<Log>,
    timetable: Timetable,
    /// The API built for an account, and the pushes its server made, until its producer starts.
    built: Mutex<HashMap<AccountId, (SimulatedApi, u64)>>,
}

impl AccountFactory for Factory {
    type Api = SimulatedApi;
    type Handler = LogHandler;

    async fn build(&self, account: AccountId) -> Result<(SimulatedApi, LogHandler), BoxError> {
        // The lease is held already: what is read here is what the manager starts from.
        let snapshot = self.storage.load(account).await?;
        let state = snapshot.state.ok_or("the account has no stored state")?;
        self.log.line(
            "S",
            account,
            &format!(
                "{} {} {} {} {}",
                state.pts,
                state.qts,
                state.seq,
                state.date,
                encode_channels(&snapshot.channels)
            ),
        );
        let api = SimulatedApi::new(
            fresh_server(account),
            ApiFaults {
                latency: Duration::from_millis(2),
                failure: 0.03,
                flood_wait_share: 0.0,
                flood_wait_max_seconds: 0,
            },
            fastrand::u64(..),
        );
        let made = self.timetable.fast_forward(&api, 0);
        self.built
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(account, (api.clone(), made));
        let handler = LogHandler {
            account,
            log: Arc::clone(&self.log),
        };
        Ok((api, handler))
    }

    fn started(&self, account: AccountId, handle: ManagerHandle<TestUpdate, TestEntities>) {
        let Some((api, made)) = self
            .built
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&account)
        else {
            return;
        };
        let producer = Producer {
            events: 0,
            interval: INTERVAL,
            burst: 1,
            latency: Duration::from_millis(1),
            faults: Faults {
                reorder_window: Duration::from_millis(100),
                ..Faults::moderate()
            },
            seed: fastrand::u64(..),
            batched: false,
        };
        let timetable = self.timetable;
        tokio::spawn(async move {
            producer
                .run_on(timetable, made, &api, &handle, |_| {})
                .await;
        });
    }
}

fn manager_config() -> ManagerConfig {
    let mut config = common::config(fastrand::u64(..), true);
    // The last pushes may be lost with nothing after them to reveal the gap: an idle account
    // asks for the difference soon.
    config.engine.idle_timeout = Duration::from_secs(1);
    config.shutdown_grace = Duration::from_secs(5);
    config.shutdown_timeout = Duration::from_secs(5);
    config
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

/// The child's body: not a test on its own (it is ignored), run by the test below.
#[test]
#[ignore = "child process of `fleet_fails_over_a_process_killed_mid_run`"]
fn failover_child() {
    let Ok(member) = std::env::var(MEMBER_VAR) else {
        eprintln!("{MEMBER_VAR} is not set: this only runs as a child of the fail-over test");
        return;
    };
    let url = var(REDIS_VAR);
    let t0: u64 = var(T0_VAR).parse().expect("T0 in Unix millis");
    let pushes: u64 = var(PUSHES_VAR).parse().expect("pushes");
    let log = File::options()
        .create(true)
        .append(true)
        .open(var(LOG_VAR))
        .expect("open the log");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let stats = runtime.block_on(async {
        // T0 on tokio's clock: the same wall instant in every process.
        let t0 = UNIX_EPOCH + Duration::from_millis(t0);
        let now = tokio::time::Instant::now();
        let start = match t0.duration_since(SystemTime::now()) {
            Ok(ahead) => now + ahead,
            Err(behind) => now
                .checked_sub(behind.duration())
                .expect("T0 within tokio's clock"),
        };
        let storage = connect(&url).await;
        let factory = Factory {
            storage: Arc::clone(&storage),
            log: Arc::new(Log {
                member: member.clone(),
                file: log,
            }),
            timetable: Timetable {
                start,
                interval: INTERVAL,
                pushes,
            },
            built: Mutex::default(),
        };
        let config = FleetConfig {
            member: member.clone().into(),
            lease_ttl: LEASE_TTL,
            renew_every: RENEW_EVERY,
            tick: TICK,
            registry_every: Duration::from_secs(1),
            restart_base: Duration::from_millis(200),
            restart_max: Duration::from_secs(2),
            manager: manager_config(),
            ..FleetConfig::new()
        };
        let fleet = Fleet::new(storage, factory, config);
        let handle = fleet.handle();
        // The parent closes our stdin to stop us cleanly (and so does its death).
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = [0u8; 64];
            while stdin.read(&mut buf).is_ok_and(|n| n > 0) {}
            handle.shutdown();
        });
        fleet.run().await.expect("the fleet runs")
    });
    eprintln!("member {member} stopped: {stats:?}");
}

// ---------------------------------------------------------------------------------------------
// The parent.

struct Member {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
    stderr: PathBuf,
}

/// The children, killed if the test fails before it stops them.
struct Members(Vec<Member>);

impl Drop for Members {
    fn drop(&mut self) {
        for member in &mut self.0 {
            if let Some(mut child) = member.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Starts the member `name` as a child process running [`failover_child`].
fn spawn_member(name: &'static str, dir: &Path, url: &str, t0_millis: u64, pushes: u64) -> Member {
    let exe = std::env::current_exe().expect("the test binary");
    let log = dir.join(format!("{name}.log"));
    let stderr = dir.join(format!("{name}.stderr"));
    let child = Command::new(&exe)
        .args([
            "--exact",
            "failover_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(MEMBER_VAR, name)
        .env(REDIS_VAR, url)
        .env(T0_VAR, t0_millis.to_string())
        .env(LOG_VAR, &log)
        .env(PUSHES_VAR, pushes.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("spawn a member");
    Member {
        name,
        child: Some(child),
        log,
        stderr,
    }
}

impl Members {
    /// Fails if a member that should run has exited.
    fn check_alive(&mut self) {
        for member in &mut self.0 {
            if let Some(child) = member.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let stderr = std::fs::read_to_string(&member.stderr).unwrap_or_default();
                panic!(
                    "member {} exited early with {status}:\n{stderr}",
                    member.name
                );
            }
        }
    }

    fn lines(&self) -> Vec<Line> {
        self.0.iter().flat_map(|m| read_log(&m.log)).collect()
    }
}

/// Which member runs each account now, by the last start line of each account.
fn current_owners(lines: &[Line]) -> HashMap<AccountId, (u64, String)> {
    let mut owners: HashMap<AccountId, (u64, String)> = HashMap::new();
    for line in lines {
        if let Line::Start {
            at,
            member,
            account,
            ..
        } = line
            && owners.get(account).is_none_or(|(last, _)| at > last)
        {
            owners.insert(*account, (*at, member.clone()));
        }
    }
    owners
}

/// One account's run on one member: the state it started from and what it handled.
#[derive(Debug)]
struct Run {
    at: u64,
    member: String,
    state: State,
    channels: HashMap<ChannelId, i32>,
    deliveries: Vec<(u64, TestUpdate)>,
}

/// Every account's runs, in the order they started.
fn runs(members: &Members) -> HashMap<AccountId, Vec<Run>> {
    let mut runs: HashMap<AccountId, Vec<Run>> = HashMap::new();
    for member in &members.0 {
        // The run each account is in on this member, as an index into its runs.
        let mut current: HashMap<AccountId, usize> = HashMap::new();
        for line in read_log(&member.log) {
            match line {
                Line::Start {
                    at,
                    member,
                    account,
                    state,
                    channels,
                } => {
                    let list = runs.entry(account).or_default();
                    current.insert(account, list.len());
                    list.push(Run {
                        at,
                        member,
                        state,
                        channels,
                        deliveries: Vec::new(),
                    });
                }
                Line::Delivered {
                    at,
                    account,
                    update,
                } => {
                    let index = *current
                        .get(&account)
                        .unwrap_or_else(|| panic!("{account} handled before it started"));
                    runs.get_mut(&account).expect("runs of the account")[index]
                        .deliveries
                        .push((at, update));
                }
                Line::Notice { account, text } => {
                    eprintln!("notice on account {account}: {text}");
                }
            }
        }
    }
    for list in runs.values_mut() {
        list.sort_by_key(|run| run.at);
    }
    runs
}

/// Whether the state a run starts from covers an update delivered before it.
fn committed(update: &TestUpdate, state: State, channels: &HashMap<ChannelId, i32>) -> bool {
    match update.sequence {
        Sequence::Common { pts, .. } => pts <= state.pts,
        Sequence::Qts { qts } => qts <= state.qts,
        Sequence::Channel {
            channel_id, pts, ..
        } => channels
            .get(&channel_id)
            .is_some_and(|&stored| pts <= stored),
        _ => true,
    }
}

async fn seed(storage: &RedisStorage, account: AccountId) {
    let server = fresh_server(account);
    let commit = Commit {
        state: Some(server.state()),
        channels: server
            .channel_states()
            .map(|(channel_id, pts)| ChannelCommit {
                channel_id,
                pts,
                reset: false,
            })
            .collect(),
        ..Commit::default()
    };
    storage.apply(account, &commit).await.expect("seed state");
    let hashes: Vec<_> = server.access_hashes().collect();
    storage
        .set_access_hashes(account, &hashes)
        .await
        .expect("seed hashes");
}

/// Whether storage holds the server's final state for the account.
async fn caught_up(storage: &RedisStorage, account: AccountId, server: &Server) -> bool {
    let Ok(snapshot) = storage.load(account).await else {
        return false;
    };
    let ours = server.state();
    snapshot
        .state
        .is_some_and(|s| (s.pts, s.qts, s.seq) == (ours.pts, ours.qts, ours.seq))
        && server
            .channel_states()
            .all(|(id, pts)| snapshot.channels.get(&id) == Some(&pts))
}

#[test]
fn fleet_fails_over_a_process_killed_mid_run() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let wall = std::time::Instant::now();
    let accounts = env_or("SYNC_RUNTIME_FAILOVER_ACCOUNTS", 18);
    let seconds = env_or("SYNC_RUNTIME_FAILOVER_SECONDS", 12);
    let pushes = seconds * 1_000 / u64::try_from(INTERVAL.as_millis()).expect("interval");
    let accounts: Vec<AccountId> = (0..accounts)
        .map(|i| FIRST_ACCOUNT + i64::try_from(i).expect("account count"))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let storage = runtime.block_on(connect(&redis.url()));
    runtime.block_on(async {
        for &account in &accounts {
            seed(&storage, account).await;
        }
        storage.register(&accounts).await.expect("register");
    });
    // The final servers, for the catch-up wait and the verdicts.
    let finals: HashMap<AccountId, Server> = accounts
        .iter()
        .map(|&account| {
            let mut server = fresh_server(account);
            for _ in 0..pushes {
                server.produce();
            }
            (account, server)
        })
        .collect();

    // The history starts once the members are up and have shared the accounts out.
    let t0 = SystemTime::now() + Duration::from_secs(2);
    let t0_millis = u64::try_from(
        t0.duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("millis fit");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut members = Members(
        MEMBERS
            .iter()
            .map(|&name| spawn_member(name, dir.path(), &redis.url(), t0_millis, pushes))
            .collect(),
    );
    let history = INTERVAL * u32::try_from(pushes).expect("pushes fit");
    let until = |at: SystemTime, members: &mut Members| {
        while SystemTime::now() < at {
            members.check_alive();
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    // Kill the member that runs the most accounts, 30 % into the history.
    until(t0 + history * 3 / 10, &mut members);
    let owners = current_owners(&members.lines());
    let victim_index = (0..MEMBERS.len())
        .max_by_key(|&i| owners.values().filter(|(_, m)| m == MEMBERS[i]).count())
        .expect("members");
    let victim = MEMBERS[victim_index];
    let killed_at = {
        let member = &mut members.0[victim_index];
        let mut child = member.child.take().expect("the victim runs");
        child.kill().expect("SIGKILL");
        // Once the signal is sent the victim writes nothing more: its log is final.
        let killed_at = unix_micros();
        child.wait().expect("reap the victim");
        killed_at
    };
    // The accounts it ran when it died: those whose last start line before the kill is its
    // own.
    let before_kill: Vec<Line> = members
        .lines()
        .into_iter()
        .filter(|line| matches!(line, Line::Start { at, .. } if *at < killed_at))
        .collect();
    let mut killed: Vec<AccountId> = current_owners(&before_kill)
        .into_iter()
        .filter(|(_, (_, member))| member == victim)
        .map(|(account, _)| account)
        .collect();
    killed.sort_unstable();
    assert!(!killed.is_empty(), "the victim {victim} ran no account");

    // At 58 % (the takeovers are over) another member stalls (SIGSTOP) for twice the lease's ttl: its leases expire and
    // the others take its accounts over while it is frozen. When it resumes it must hand its
    // handlers nothing more for those accounts, although its renewals have not run yet to
    // tell it: each handler call checks the lease is still fresh.
    until(t0 + history * 29 / 50, &mut members);
    let owners = current_owners(&members.lines());
    let stalled_index = (0..MEMBERS.len())
        .filter(|&i| i != victim_index)
        .max_by_key(|&i| owners.values().filter(|(_, m)| m == MEMBERS[i]).count())
        .expect("a survivor");
    let stalled = MEMBERS[stalled_index];
    let stalled_accounts: HashSet<AccountId> = owners
        .iter()
        .filter(|(_, (_, member))| member == stalled)
        .map(|(&account, _)| account)
        .collect();
    let stalled_pid = members.0[stalled_index]
        .child
        .as_ref()
        .expect("the stalled member runs")
        .id()
        .to_string();
    let signal = |name: &str| {
        let status = Command::new("kill")
            .args([name, &stalled_pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {name} {stalled_pid} failed");
    };
    signal("-STOP");
    let stopped_at = unix_micros();
    std::thread::sleep(LEASE_TTL * 2);
    let resumed_at = unix_micros();
    signal("-CONT");

    // A new member joins at 70 %: the survivors hand it its share back, cleanly, mid-history.
    until(t0 + history * 7 / 10, &mut members);
    members.0.push(spawn_member(
        JOINER,
        dir.path(),
        &redis.url(),
        t0_millis,
        pushes,
    ));

    // Everything due, then every account caught up (generous bounds).
    until(t0 + history, &mut members);
    runtime.block_on(async {
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        for &account in &accounts {
            while !caught_up(&storage, account, &finals[&account]).await {
                members.check_alive();
                let stored = storage.load(account).await.ok().and_then(|s| s.state);
                assert!(
                    std::time::Instant::now() < deadline,
                    "account {account} never caught up: stored {stored:?}, server {:?}",
                    finals[&account].state()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });

    // Stop the survivors cleanly: closing their stdin shuts their fleets down.
    for member in &mut members.0 {
        let Some(mut child) = member.child.take() else {
            continue;
        };
        drop(child.stdin.take());
        member.child = Some(child);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for member in &mut members.0 {
        let Some(child) = member.child.as_mut() else {
            continue;
        };
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for a member") {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "member {} did not stop",
                member.name
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = std::fs::read_to_string(&member.stderr).unwrap_or_default();
        assert!(
            status.success(),
            "member {} failed ({status}):\n{stderr}",
            member.name
        );
        member.child = None;
        eprintln!("{}", stderr.trim());
    }

    // Takeovers: from the kill to the first start line of each of the victim's accounts.
    let lines = members.lines();
    let mut takeovers = Vec::new();
    for &account in &killed {
        let taken = lines
            .iter()
            .filter_map(|line| match line {
                Line::Start {
                    at,
                    member,
                    account: a,
                    ..
                } if *a == account && *at > killed_at && member != victim => Some(*at),
                _ => None,
            })
            .min()
            .unwrap_or_else(|| panic!("account {account} of {victim} was never taken over"));
        takeovers.push(Duration::from_micros(taken - killed_at));
    }
    let slowest = takeovers.iter().max().copied().unwrap_or_default();

    // The verdicts.
    let runs = runs(&members);
    let killed_set: HashSet<AccountId> = killed.iter().copied().collect();
    let mut events = 0;
    let mut deliveries = 0;
    let mut repeats_total = 0;
    let mut windows_total = 0;
    let mut hand_overs = 0;
    // Hand-overs of runs that had handled something (the others were before the history).
    let mut busy_hand_overs = 0;
    let mut repeated_accounts = Vec::new();
    runtime.block_on(async {
        for &account in &accounts {
            let server = &finals[&account];
            let start = fresh_server(account);
            let mut oracle = Oracle::new(start.state(), start.channel_states());
            let list = runs.get(&account).map_or(&[][..], Vec::as_slice);
            assert!(!list.is_empty(), "account {account} never ran");
            let mut window = 0;
            for (i, run) in list.iter().enumerate() {
                if let Some(previous) = i.checked_sub(1).map(|p| &list[p]) {
                    // At most one owner at a time: the previous run handled nothing after
                    // this one started.
                    if let Some(&(last, _)) = previous.deliveries.last() {
                        assert!(
                            last <= run.at,
                            "account {account}: {} handled an update after {} started it",
                            previous.member,
                            run.member
                        );
                    }
                    let unacknowledged = previous
                        .deliveries
                        .iter()
                        .filter(|(_, u)| !committed(u, run.state, &run.channels))
                        .count();
                    let bound = u64::try_from(TAKEOVER_BOUND.as_micros()).expect("bound");
                    let crashed = (previous.member == victim && run.at > killed_at)
                        || (previous.member == stalled
                            && run.at > stopped_at
                            && run.at <= resumed_at + bound);
                    if crashed {
                        window += unacknowledged;
                    } else {
                        hand_overs += 1;
                        busy_hand_overs += usize::from(!previous.deliveries.is_empty());
                        assert_eq!(
                            unacknowledged, 0,
                            "account {account}: {} handed over to {} without persisting {unacknowledged} handled updates",
                            previous.member, run.member
                        );
                    }
                }
                oracle.crash(run.state, &run.channels);
                for (_, update) in &run.deliveries {
                    oracle.deliver(server, update).unwrap_or_else(|e| {
                        panic!("account {account}, run of {}: {e}", run.member)
                    });
                }
                deliveries += run.deliveries.len();
            }
            let snapshot = storage.load(account).await.expect("load");
            oracle
                .finish(server, snapshot.state, |id| {
                    snapshot.channels.get(&id).copied()
                })
                .unwrap_or_else(|e| panic!("account {account}: {e}"));
            let repeats = oracle.repeats();
            if !killed_set.contains(&account) && !stalled_accounts.contains(&account) {
                assert_eq!(repeats, 0, "account {account} repeated, but neither {victim} (killed) nor {stalled} (stalled) ran it then");
            }
            assert!(
                repeats <= window as u64,
                "account {account}: {repeats} repeats beyond its unacknowledged window of {window}"
            );
            if repeats > 0 {
                repeated_accounts.push((account, repeats, window));
            }
            repeats_total += repeats;
            windows_total += window;
            events += server.events();
            let holder = storage.lease_holder(account).await.expect("lease holder");
            assert!(
                holder.is_none(),
                "account {account}'s lease is still held after a clean shutdown: {holder:?}"
            );
        }
    });

    let stalled_count = stalled_accounts.len();
    eprintln!(
        "fail-over: {} accounts, {} pushes and {events} events in all, {deliveries} deliveries; \
         {victim} killed holding {} accounts {killed:?}; {stalled} stalled holding {stalled_count} accounts; takeovers {:?} (slowest {slowest:?}, \
         bound {TAKEOVER_BOUND:?}); {hand_overs} clean hand-overs ({busy_hand_overs} mid-history); {repeats_total} repeats \
         inside unacknowledged windows of {windows_total} updates, per account \
         (account, repeats, window): {repeated_accounts:?}; {:?} wall",
        accounts.len(),
        pushes * accounts.len() as u64,
        killed.len(),
        takeovers,
        wall.elapsed()
    );
    assert!(
        slowest <= TAKEOVER_BOUND,
        "a takeover took {slowest:?}, beyond the lease's ttl plus a second ({TAKEOVER_BOUND:?})"
    );
}
