//! The contract every backend must keep, as generic async functions.
//!
//! A backend gets the whole suite with one line: `contract_suite!(make_storage);` where
//! `make_storage()` is an async fn returning `Option<(guard, storage)>` (`None` skips the
//! test, e.g. when redis-server is missing; the guard keeps a temp dir or server alive).

use std::collections::BTreeMap;

use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sync_storage::{
    AccessHashStorage, AccountId, ChannelCommit, Commit, Error, StaleSequence, State, StateStorage,
    WriteMode,
};

// Through here so that `contract_suite!` finds every contract function in one place; a test
// binary that does not run the suite does not use them.
#[allow(unused_imports)]
pub use super::lifecycle::{
    delete_access_hashes_forgets_channels_and_users, delete_forgets_state_and_channels_only,
    user_access_hashes_last_write_wins,
};
use super::model::{Model, commit_strategy, describe};

/// What the suite needs of a backend.
pub trait Storage: StateStorage + AccessHashStorage + Clone + 'static {}
impl<S: StateStorage + AccessHashStorage + Clone + 'static> Storage for S {}

/// Generates one `#[tokio::test]` per contract function for the backend `make()` builds.
#[macro_export]
macro_rules! contract_suite {
    ($make:path) => {
        $crate::contract_suite!(@tests $make;
            empty_account_reads_nothing,
            state_round_trips_and_never_goes_back,
            date_travels_with_its_state,
            channel_pts_round_trips_and_never_goes_back,
            accounts_are_isolated,
            commit_is_all_or_nothing,
            commit_resets_are_honoured,
            removed_channels_forget_pts_but_keep_hashes,
            order_inside_a_commit,
            empty_commit_changes_nothing,
            access_hashes_last_write_wins,
            extreme_values_round_trip,
            load_matches_the_single_reads,
            concurrent_writers_end_at_the_maximum,
            random_commits_match_the_model,
            delete_forgets_state_and_channels_only,
            delete_access_hashes_forgets_channels_and_users,
            user_access_hashes_last_write_wins,
        );
    };
    (@tests $make:path; $($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some((_guard, storage)) = $make().await else { return };
            common::contract::$name(storage).await;
        }
    )*};
}

fn state(pts: i32, qts: i32, date: i32, seq: i32) -> State {
    State {
        pts,
        qts,
        date,
        seq,
    }
}

fn channel(channel_id: i64, pts: i32) -> ChannelCommit {
    ChannelCommit {
        channel_id,
        pts,
        reset: false,
    }
}

#[track_caller]
fn assert_stale(result: Result<(), Error>, expected: StaleSequence, stored: i32, attempted: i32) {
    match result {
        Err(Error::Stale {
            sequence,
            stored: s,
            attempted: a,
            ..
        }) => {
            assert_eq!(
                (sequence, s, a),
                (expected, stored, attempted),
                "wrong stale report"
            );
        }
        other => {
            panic!("expected a stale {expected} write ({stored} -> {attempted}), got {other:?}")
        }
    }
}

pub async fn empty_account_reads_nothing(s: impl Storage) {
    let account = 1;
    assert_eq!(s.get_state(account).await.expect("get_state"), None);
    assert_eq!(
        s.get_channel_pts(account, 10)
            .await
            .expect("get_channel_pts"),
        None
    );
    assert!(s.channels(account).await.expect("channels").is_empty());
    assert_eq!(
        s.get_access_hash(account, 10)
            .await
            .expect("get_access_hash"),
        None
    );
    let snapshot = s.load(account).await.expect("load");
    assert_eq!((snapshot.state, snapshot.channels.len()), (None, 0));
}

pub async fn state_round_trips_and_never_goes_back(s: impl Storage) {
    let a = 2;
    s.set_state(a, state(10, 20, 1000, 30), WriteMode::Advance)
        .await
        .expect("first write");
    assert_eq!(
        s.get_state(a).await.expect("get"),
        Some(state(10, 20, 1000, 30))
    );
    // Repeating the same write is harmless, moving forward is allowed.
    s.set_state(a, state(10, 20, 1000, 30), WriteMode::Advance)
        .await
        .expect("same again");
    s.set_state(a, state(11, 20, 1001, 31), WriteMode::Advance)
        .await
        .expect("forward");
    // Each sequence on its own is checked, and a rejected write changes nothing.
    assert_stale(
        s.set_state(a, state(9, 99, 2000, 99), WriteMode::Advance)
            .await,
        StaleSequence::Pts,
        11,
        9,
    );
    assert_stale(
        s.set_state(a, state(99, 19, 2000, 99), WriteMode::Advance)
            .await,
        StaleSequence::Qts,
        20,
        19,
    );
    assert_stale(
        s.set_state(a, state(99, 99, 2000, 30), WriteMode::Advance)
            .await,
        StaleSequence::Seq,
        31,
        30,
    );
    assert_eq!(
        s.get_state(a).await.expect("get"),
        Some(state(11, 20, 1001, 31))
    );
    // A forced reset may go back.
    s.set_state(a, state(1, 2, 3, 4), WriteMode::Reset)
        .await
        .expect("reset");
    assert_eq!(s.get_state(a).await.expect("get"), Some(state(1, 2, 3, 4)));
}

pub async fn date_travels_with_its_state(s: impl Storage) {
    let a = 3;
    s.set_state(a, state(10, 1, 5000, 1), WriteMode::Advance)
        .await
        .expect("write");
    // `date` is not a sequence: a write that advances the sequences stores its date as given.
    s.set_state(a, state(11, 1, 4000, 1), WriteMode::Advance)
        .await
        .expect("older date");
    assert_eq!(
        s.get_state(a).await.expect("get").map(|st| st.date),
        Some(4000)
    );
    // A rejected write does not touch the date either.
    assert!(
        s.set_state(a, state(5, 1, 9000, 1), WriteMode::Advance)
            .await
            .is_err()
    );
    assert_eq!(
        s.get_state(a).await.expect("get").map(|st| st.date),
        Some(4000)
    );
}

pub async fn channel_pts_round_trips_and_never_goes_back(s: impl Storage) {
    let a = 4;
    s.set_channel_pts(a, 100, 50, WriteMode::Advance)
        .await
        .expect("write");
    s.set_channel_pts(a, 100, 50, WriteMode::Advance)
        .await
        .expect("same again");
    s.set_channel_pts(a, 100, 60, WriteMode::Advance)
        .await
        .expect("forward");
    assert_stale(
        s.set_channel_pts(a, 100, 59, WriteMode::Advance).await,
        StaleSequence::Channel(100),
        60,
        59,
    );
    assert_eq!(s.get_channel_pts(a, 100).await.expect("get"), Some(60));
    s.set_channel_pts(a, 100, 7, WriteMode::Reset)
        .await
        .expect("reset");
    assert_eq!(s.get_channel_pts(a, 100).await.expect("get"), Some(7));
    s.set_channel_pts(a, 200, 1, WriteMode::Advance)
        .await
        .expect("second channel");
    assert_eq!(
        s.channels(a).await.expect("channels"),
        BTreeMap::from([(100, 7), (200, 1)])
    );
}

pub async fn accounts_are_isolated(s: impl Storage) {
    let (a, b) = (5, 6);
    s.apply(
        a,
        &Commit {
            state: Some(state(100, 100, 100, 100)),
            channels: vec![channel(1, 100)],
            ..Commit::default()
        },
    )
    .await
    .expect("a");
    s.set_access_hash(a, 1, 42).await.expect("hash a");
    // A lower value for another account is not stale: it is another account.
    s.apply(
        b,
        &Commit {
            state: Some(state(1, 1, 1, 1)),
            channels: vec![channel(1, 1)],
            ..Commit::default()
        },
    )
    .await
    .expect("b");
    assert_eq!(s.get_state(a).await.expect("a").map(|st| st.pts), Some(100));
    assert_eq!(s.get_state(b).await.expect("b").map(|st| st.pts), Some(1));
    assert_eq!(s.channels(b).await.expect("b"), BTreeMap::from([(1, 1)]));
    assert_eq!(s.get_access_hash(b, 1).await.expect("b"), None);
}

pub async fn commit_is_all_or_nothing(s: impl Storage) {
    let a = 7;
    let base = Commit {
        state: Some(state(10, 10, 10, 10)),
        channels: vec![channel(1, 10), channel(2, 10)],
        ..Commit::default()
    };
    s.apply(a, &base).await.expect("base");
    let before = s.load(a).await.expect("load");

    // Good state, one stale channel among good ones: nothing is applied.
    let stale_channel = Commit {
        state: Some(state(20, 20, 20, 20)),
        channels: vec![channel(1, 20), channel(2, 9), channel(3, 1)],
        removed_channels: vec![],
        state_reset: false,
    };
    assert_stale(
        s.apply(a, &stale_channel).await,
        StaleSequence::Channel(2),
        10,
        9,
    );
    assert_eq!(
        s.load(a).await.expect("load"),
        before,
        "a rejected commit changed something"
    );

    // Stale state, good channels, a removal: nothing is applied.
    let stale_state = Commit {
        state: Some(state(20, 9, 20, 20)),
        channels: vec![channel(1, 20)],
        removed_channels: vec![2],
        state_reset: false,
    };
    assert_stale(s.apply(a, &stale_state).await, StaleSequence::Qts, 10, 9);
    assert_eq!(
        s.load(a).await.expect("load"),
        before,
        "a rejected commit changed something"
    );

    // The same commit without the stale part goes through whole.
    let good = Commit {
        channels: vec![channel(1, 20), channel(2, 11), channel(3, 1)],
        ..stale_channel
    };
    s.apply(a, &good).await.expect("good");
    let after = s.load(a).await.expect("load");
    assert_eq!(after.state, Some(state(20, 20, 20, 20)));
    assert_eq!(after.channels, BTreeMap::from([(1, 20), (2, 11), (3, 1)]));
}

pub async fn commit_resets_are_honoured(s: impl Storage) {
    let a = 8;
    s.apply(
        a,
        &Commit {
            state: Some(state(50, 50, 50, 50)),
            channels: vec![channel(1, 50), channel(2, 50)],
            ..Commit::default()
        },
    )
    .await
    .expect("base");
    // The state reset lets the state go back, but not an unflagged channel.
    let reset_state_only = Commit {
        state: Some(state(5, 5, 5, 5)),
        state_reset: true,
        channels: vec![channel(1, 40)],
        ..Commit::default()
    };
    assert_stale(
        s.apply(a, &reset_state_only).await,
        StaleSequence::Channel(1),
        50,
        40,
    );
    // A flagged channel may go back, an unflagged one beside it may not.
    let reset_channel = Commit {
        state: Some(state(5, 5, 5, 5)),
        state_reset: true,
        channels: vec![
            ChannelCommit {
                channel_id: 1,
                pts: 40,
                reset: true,
            },
            channel(2, 50),
        ],
        ..Commit::default()
    };
    s.apply(a, &reset_channel).await.expect("resets");
    let snapshot = s.load(a).await.expect("load");
    assert_eq!(snapshot.state, Some(state(5, 5, 5, 5)));
    assert_eq!(snapshot.channels, BTreeMap::from([(1, 40), (2, 50)]));
}

pub async fn removed_channels_forget_pts_but_keep_hashes(s: impl Storage) {
    let a = 9;
    s.apply(
        a,
        &Commit {
            channels: vec![channel(1, 30), channel(2, 30)],
            ..Commit::default()
        },
    )
    .await
    .expect("base");
    s.set_access_hash(a, 1, 111).await.expect("hash");
    s.apply(
        a,
        &Commit {
            removed_channels: vec![1, 99],
            ..Commit::default()
        },
    )
    .await
    .expect("remove");
    assert_eq!(s.get_channel_pts(a, 1).await.expect("get"), None);
    assert_eq!(
        s.channels(a).await.expect("channels"),
        BTreeMap::from([(2, 30)])
    );
    assert_eq!(s.get_access_hash(a, 1).await.expect("hash"), Some(111));
    // Once forgotten, a channel starts afresh: a lower pts than before is accepted.
    s.set_channel_pts(a, 1, 3, WriteMode::Advance)
        .await
        .expect("fresh");
    assert_eq!(s.get_channel_pts(a, 1).await.expect("get"), Some(3));
}

pub async fn order_inside_a_commit(s: impl Storage) {
    let a = 10;
    s.set_channel_pts(a, 1, 30, WriteMode::Advance)
        .await
        .expect("base");
    // Removed first, then set: the channel is stored fresh, lower than before.
    let readd = Commit {
        removed_channels: vec![1],
        channels: vec![channel(1, 2)],
        ..Commit::default()
    };
    s.apply(a, &readd).await.expect("remove then set");
    assert_eq!(s.get_channel_pts(a, 1).await.expect("get"), Some(2));
    // Duplicate entries are checked against each other, in order.
    let backwards = Commit {
        channels: vec![channel(1, 9), channel(1, 8)],
        ..Commit::default()
    };
    assert_stale(
        s.apply(a, &backwards).await,
        StaleSequence::Channel(1),
        9,
        8,
    );
    assert_eq!(s.get_channel_pts(a, 1).await.expect("get"), Some(2));
    let forwards = Commit {
        channels: vec![channel(1, 8), channel(1, 9)],
        ..Commit::default()
    };
    s.apply(a, &forwards).await.expect("in order");
    assert_eq!(s.get_channel_pts(a, 1).await.expect("get"), Some(9));
}

pub async fn empty_commit_changes_nothing(s: impl Storage) {
    let a = 11;
    s.apply(a, &Commit::default())
        .await
        .expect("empty on nothing");
    assert_eq!(s.get_state(a).await.expect("get"), None);
    s.set_state(a, state(1, 2, 3, 4), WriteMode::Advance)
        .await
        .expect("write");
    s.apply(a, &Commit::default()).await.expect("empty");
    assert_eq!(s.get_state(a).await.expect("get"), Some(state(1, 2, 3, 4)));
}

pub async fn access_hashes_last_write_wins(s: impl Storage) {
    let a = 12;
    s.set_access_hash(a, 1, 500).await.expect("set");
    s.set_access_hash(a, 1, -3)
        .await
        .expect("lower is fine: not a sequence");
    assert_eq!(s.get_access_hash(a, 1).await.expect("get"), Some(-3));
    s.set_access_hashes(a, &[(1, 7), (2, 8), (1, 9)])
        .await
        .expect("batch");
    assert_eq!(
        s.get_access_hash(a, 1).await.expect("get"),
        Some(9),
        "later entry wins"
    );
    assert_eq!(s.get_access_hash(a, 2).await.expect("get"), Some(8));
    s.set_access_hashes(a, &[]).await.expect("empty batch");
}

pub async fn extreme_values_round_trip(s: impl Storage) {
    let a = i64::MAX;
    let big = State {
        pts: i32::MAX,
        qts: i32::MAX,
        date: i32::MIN,
        seq: i32::MAX,
    };
    s.set_state(a, big, WriteMode::Advance)
        .await
        .expect("state");
    assert_eq!(s.get_state(a).await.expect("get"), Some(big));
    for id in [i64::MAX, i64::MIN, -1_001_234_567_890, 1 << 53 | 1] {
        s.set_channel_pts(a, id, i32::MAX, WriteMode::Advance)
            .await
            .expect("channel");
        assert_eq!(s.get_channel_pts(a, id).await.expect("get"), Some(i32::MAX));
        s.set_access_hash(a, id, i64::MIN).await.expect("hash");
        assert_eq!(s.get_access_hash(a, id).await.expect("get"), Some(i64::MIN));
        s.set_access_hash(a, id, i64::MAX).await.expect("hash");
        assert_eq!(s.get_access_hash(a, id).await.expect("get"), Some(i64::MAX));
    }
    assert_eq!(s.channels(a).await.expect("channels").len(), 4);
    // Negative account ids are just ids.
    s.set_channel_pts(-5, 1, -7, WriteMode::Advance)
        .await
        .expect("negative");
    assert_stale(
        s.set_channel_pts(-5, 1, -8, WriteMode::Advance).await,
        StaleSequence::Channel(1),
        -7,
        -8,
    );
}

pub async fn load_matches_the_single_reads(s: impl Storage) {
    let a = 13;
    let commit = Commit {
        state: Some(state(3, 4, 5, 6)),
        channels: (1..=50).map(|id| channel(id, id as i32 * 2)).collect(),
        ..Commit::default()
    };
    s.apply(a, &commit).await.expect("apply");
    let snapshot = s.load(a).await.expect("load");
    assert_eq!(snapshot.state, s.get_state(a).await.expect("get"));
    assert_eq!(snapshot.channels, s.channels(a).await.expect("channels"));
    assert_eq!(snapshot.channels.len(), 50);
    assert_eq!(snapshot.channels.get(&50), Some(&100));
}

/// Several tasks write interleaved, increasing positions to one account at once; whatever
/// the interleaving, each write either lands or is rejected as stale, and the stored values
/// end at the maximum written.
pub async fn concurrent_writers_end_at_the_maximum(s: impl Storage) {
    let a = 14;
    let writers = 4;
    let per_writer = 40;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut landed = 0;
            let mut last_landed = None;
            let mut last_seen = 0;
            for i in 0..per_writer {
                let v = i * writers + w + 1;
                let commit = Commit {
                    state: Some(state(v, v, v, v)),
                    channels: vec![channel(1, v), channel(2 + i64::from(w), v)],
                    ..Commit::default()
                };
                match s.apply(a, &commit).await {
                    Ok(()) => {
                        landed += 1;
                        last_landed = Some(v);
                    }
                    Err(Error::Stale {
                        stored, attempted, ..
                    }) => {
                        assert!(stored > attempted, "stale report {stored} -> {attempted}");
                    }
                    Err(other) => panic!("writer {w}: {other}"),
                }
                // Reads never go back: each one sees at least what the previous one saw.
                let seen = s.get_state(a).await.expect("get").map_or(0, |st| st.pts);
                assert!(
                    seen >= last_seen,
                    "read {seen} after having read {last_seen}"
                );
                last_seen = seen;
            }
            (landed, last_landed)
        }));
    }
    let mut landed = 0;
    let mut last_landed = Vec::new();
    for task in tasks {
        let (count, last) = task.await.expect("writer task");
        landed += count;
        last_landed.push(last);
    }
    assert!(landed > 0);
    let max = writers * per_writer;
    let snapshot = s.load(a).await.expect("load");
    assert_eq!(snapshot.state, Some(state(max, max, max, max)));
    assert_eq!(snapshot.channels.get(&1), Some(&max));
    // A writer's own channel holds the value of that writer's last commit that landed
    // (its later, rejected commits changed nothing).
    for (w, last) in (0..writers).zip(last_landed) {
        assert_eq!(
            snapshot.channels.get(&(2 + i64::from(w))).copied(),
            last,
            "writer {w}"
        );
    }
}

/// Random commit sequences give the same results and end in the same state as the model.
pub async fn random_commits_match_the_model(s: impl Storage) {
    let cases = super::proptest_cases(24);
    let handle = tokio::runtime::Handle::current();
    // proptest drives synchronously; each case runs its async part on this runtime from a
    // blocking thread (the runtime's workers stay free to drive the backend's I/O).
    tokio::task::spawn_blocking(move || {
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        let next_account = std::sync::atomic::AtomicI64::new(1_000);
        let strategy = proptest::collection::vec(commit_strategy(), 1..24);
        let result = runner.run(&strategy, |commits| {
            let account: AccountId =
                next_account.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            handle.block_on(check_against_model(&s, account, &commits))
        });
        if let Err(error) = result {
            panic!("{error}");
        }
    })
    .await
    .expect("property test");
}

async fn check_against_model(
    s: &impl Storage,
    account: AccountId,
    commits: &[Commit],
) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    for (i, commit) in commits.iter().enumerate() {
        let expected = model.apply(commit);
        let got = match s.apply(account, commit).await {
            Ok(()) => Ok(()),
            Err(Error::Stale { sequence, .. }) => Err(sequence),
            Err(other) => return Err(TestCaseError::fail(format!("commit {i}: {other}"))),
        };
        if got != expected {
            return Err(TestCaseError::fail(format!(
                "commit {i} {commit:?}: backend {got:?}, model {expected:?}"
            )));
        }
    }
    let stored = s
        .load(account)
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    if stored != model.snapshot {
        return Err(TestCaseError::fail(format!(
            "backend ends with {}, model with {}",
            describe(&stored),
            describe(&model.snapshot)
        )));
    }
    Ok(())
}
