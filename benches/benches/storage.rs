//! Commit throughput of `sync-storage`: commits/s for each backend (memory, redb file with an
//! fsync per commit, Redis one at a time, concurrent and pipelined), and, for comparison, the
//! raw rate of pipelined `EVALSHA` of a one-line script on the same Redis server.
//!
//! The Redis parts start their own `redis-server` (no persistence, unix socket in a temp
//! dir); it is found through `REDIS_SERVER` or `PATH`, and the Redis parts are skipped with a
//! message when it is missing.
//!
//! Run: `cargo bench -p sync-benches --bench storage` (figures in `docs/STORAGE.md`).
#![allow(clippy::print_stderr)] // The skip note is for the person running the bench.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sync_storage::{
    ChannelCommit, Commit, FileStorage, MemoryStorage, RedisStorage, State, StateStorage,
};
use tokio::runtime::Runtime;

/// Commits per pipeline (and per concurrent batch).
const BATCH: usize = 100;
const ACCOUNT: i64 = 1;

/// A typical commit: the common state and two channels.
fn commit(v: i32) -> Commit {
    Commit {
        state: Some(State {
            pts: v,
            qts: v / 4,
            date: 1_700_000_000 + v,
            seq: v / 2,
        }),
        state_reset: false,
        channels: vec![
            ChannelCommit {
                channel_id: 1_000_000_001,
                pts: v,
                reset: false,
            },
            ChannelCommit {
                channel_id: 1_000_000_002 + i64::from(v % 8),
                pts: v,
                reset: false,
            },
        ],
        removed_channels: Vec::new(),
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Commits one at a time; each iteration moves the account forward.
fn bench_sequential<S: StateStorage>(c: &mut Criterion, name: &str, rt: &Runtime, storage: &S) {
    let mut group = c.benchmark_group("storage");
    group.throughput(Throughput::Elements(1));
    let mut v = 0;
    group.bench_function(name, |b| {
        b.iter(|| {
            v += 1;
            rt.block_on(storage.apply(ACCOUNT, &commit(v)))
                .expect("commit");
        });
    });
    group.finish();
}

fn memory(c: &mut Criterion) {
    let rt = runtime();
    bench_sequential(c, "memory/apply", &rt, &MemoryStorage::new());
}

fn file(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = FileStorage::open(dir.path().join("bench.redb")).expect("open");
    bench_sequential(c, "file/apply (fsync each)", &rt, &storage);
}

/// A private redis-server, killed on drop.
struct Server {
    child: Child,
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Option<Self> {
        let binary = std::env::var_os("REDIS_SERVER")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                let paths = std::env::var_os("PATH")?;
                std::env::split_paths(&paths)
                    .map(|d| d.join("redis-server"))
                    .find(|p| p.is_file())
            });
        let Some(binary) = binary else {
            eprintln!(
                "note: redis-server not found (REDIS_SERVER or PATH): skipping the Redis benches"
            );
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("rb")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let socket = dir.path().join("redis.sock");
        let child = Command::new(binary)
            .args([
                "--port",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--unixsocket",
            ])
            .arg(&socket)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        for _ in 0..500 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(Self { child, dir })
    }

    fn url(&self) -> String {
        format!(
            "redis+unix://{}",
            self.dir.path().join("redis.sock").display()
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis(c: &mut Criterion) {
    let Some(server) = Server::start() else {
        return;
    };
    let rt = runtime();
    let storage = rt
        .block_on(RedisStorage::connect(&server.url()))
        .expect("connect");
    bench_sequential(c, "redis/apply", &rt, &storage);

    let mut group = c.benchmark_group("storage");
    group.throughput(Throughput::Elements(BATCH as u64));

    // Many callers at once on the shared multiplexed connection (one account each).
    let shared = Arc::new(storage.clone());
    let mut v = 0;
    group.bench_function("redis/apply x100 concurrent", |b| {
        b.iter(|| {
            v += 1;
            rt.block_on(async {
                let mut tasks = tokio::task::JoinSet::new();
                for account in 0..BATCH as i64 {
                    let storage = Arc::clone(&shared);
                    tasks.spawn(async move { storage.apply(1_000 + account, &commit(v)).await });
                }
                while let Some(done) = tasks.join_next().await {
                    done.expect("task").expect("commit");
                }
            });
        });
    });

    // Our pipelined path: 100 commits (100 accounts) per round trip.
    let mut v = 0;
    group.bench_function("redis/apply_many x100 pipelined", |b| {
        b.iter(|| {
            v += 1;
            let commit = commit(v);
            let batch: Vec<_> = (0..BATCH as i64).map(|a| (2_000 + a, &commit)).collect();
            for result in rt.block_on(storage.apply_many(&batch)).expect("pipeline") {
                result.expect("commit");
            }
        });
    });

    // The floor: pipelined EVALSHA of a one-line script (one HSET, no checks) on the same
    // server, straight through the redis crate.
    let script = redis::Script::new("return redis.call('HSET', KEYS[1], 'pts', ARGV[1])");
    let client = redis::Client::open(server.url()).expect("client");
    let mut connection = rt
        .block_on(client.get_multiplexed_async_connection())
        .expect("connect");
    rt.block_on(script.load_async(&mut connection))
        .expect("script load");
    let mut v = 0;
    group.bench_function("redis/raw EVALSHA x100 pipelined", |b| {
        b.iter(|| {
            v += 1;
            let mut pipe = redis::pipe();
            for a in 0..BATCH {
                pipe.cmd("EVALSHA")
                    .arg(script.get_hash())
                    .arg(1)
                    .arg(format!("raw:{{{a}}}"))
                    .arg(v)
                    .ignore();
            }
            rt.block_on(pipe.exec_async(&mut connection))
                .expect("pipeline");
        });
    });
    group.finish();
    drop(server);
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = memory, file, redis
}
criterion_main!(benches);
