//! Crash safety of the redb file store: a child process writes commits in a loop and prints
//! each one the store acknowledged; the parent kills it with SIGKILL at some point (most
//! likely inside a commit, which is where a writer spends its time), reopens the file, and
//! checks that the last acknowledged commit is there, whole, and nothing went back.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use common::uniform_state;
use sync_storage::{AccessHashStorage, ChannelCommit, Commit, FileStorage, StateStorage};

const FILE_VAR: &str = "SYNC_STORAGE_CRASH_FILE";
const ACCOUNT: i64 = 5;

fn commit(v: i32) -> Commit {
    let channel = |channel_id| ChannelCommit {
        channel_id,
        pts: v,
        reset: false,
    };
    let mut channels = vec![channel(1), channel(2)];
    // Channel 3 comes and goes, so removals are inside the crash window too.
    let removed_channels = if v % 2 == 0 {
        vec![3]
    } else {
        channels.push(channel(3));
        vec![]
    };
    Commit {
        state: Some(uniform_state(v)),
        state_reset: false,
        channels,
        removed_channels,
    }
}

/// The child's body: not a test on its own (it is ignored), run by the test below.
#[test]
#[ignore = "child process of `killed_writer_keeps_every_acknowledged_commit`"]
fn crash_child_writes_until_killed() {
    let Some(path) = std::env::var_os(FILE_VAR) else {
        eprintln!("{FILE_VAR} is not set: this only runs as a child of the crash test");
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let storage = FileStorage::open(&path).expect("open");
        let start = storage
            .get_state(ACCOUNT)
            .await
            .expect("read")
            .map_or(0, |s| s.pts);
        let mut stdout = std::io::stdout();
        for v in start + 1..start + 1_000_000 {
            storage.apply(ACCOUNT, &commit(v)).await.expect("commit");
            if v % 10 == 0 {
                storage
                    .set_access_hash(ACCOUNT, 1, i64::from(v))
                    .await
                    .expect("hash");
            }
            writeln!(stdout, "ack {v}").expect("stdout");
            stdout.flush().expect("stdout");
        }
    });
}

/// Runs the child until it has acknowledged `acks` commits, kills it, and returns the last
/// commit it acknowledged (reading everything it printed before dying).
fn run_and_kill(path: &Path, acks: usize) -> i32 {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "crash_child_writes_until_killed",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FILE_VAR, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut last = None;
    let mut seen = 0;
    while seen < acks {
        let line = lines
            .next()
            .expect("the child stopped early")
            .expect("read");
        if let Some(v) = line.strip_prefix("ack ") {
            last = Some(v.parse::<i32>().expect("ack number"));
            seen += 1;
        }
    }
    // SIGKILL: no destructors, no flush, no clean close of the database.
    child.kill().expect("kill");
    child.wait().expect("wait");
    // Acks printed between our last read and the kill are still in the pipe.
    for line in lines {
        if let Some(v) = line.expect("read").strip_prefix("ack ") {
            last = Some(v.parse().expect("ack number"));
        }
    }
    last.expect("at least one ack")
}

#[test]
fn killed_writer_keeps_every_acknowledged_commit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("state.redb");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut previous = 0;
    for (round, acks) in [7, 23, 3, 41, 12].into_iter().enumerate() {
        let last_ack = run_and_kill(&path, acks);
        // The file opens after the crash and holds one whole commit: the last acknowledged
        // one, or the one that was being committed (it may have reached the disk before
        // its ack was printed).
        let storage = FileStorage::open(&path).expect("the file opens after a crash");
        let snapshot = runtime.block_on(storage.load(ACCOUNT)).expect("load");
        let pts = snapshot.state.expect("state after a crash").pts;
        assert!(
            pts == last_ack || pts == last_ack + 1,
            "round {round}: stored pts {pts}, last acknowledged {last_ack}"
        );
        assert!(
            pts >= previous,
            "round {round}: went back from {previous} to {pts}"
        );
        assert_eq!(
            snapshot.state,
            commit(pts).state,
            "round {round}: state not whole"
        );
        let expected: std::collections::BTreeMap<_, _> = if pts % 2 == 1 {
            [(1, pts), (2, pts), (3, pts)].into()
        } else {
            [(1, pts), (2, pts)].into()
        };
        assert_eq!(
            snapshot.channels, expected,
            "round {round}: channels not from the same commit"
        );
        let hash = runtime
            .block_on(storage.get_access_hash(ACCOUNT, 1))
            .expect("hash");
        if pts >= 10 {
            assert!(
                hash.is_some_and(|h| h <= i64::from(pts) && h > i64::from(pts) - 11),
                "hash {hash:?} at {pts}"
            );
        }
        previous = pts;
        drop(storage);
    }
}
