//! Racing owners: random interleavings of several owners acquiring, renewing, releasing,
//! losing their lease to expiry and committing with their last token, checked step by step
//! against a model of the contract. What must hold: a commit is applied only under the
//! then-current token (so the stored state only ever holds values committed by the owner of
//! the moment), every acquisition gets a strictly greater token, and at most one owner holds
//! the lease at any time.
//!
//! Memory always (256 cases), the file store with feature `file` and Redis with feature
//! `redis` (32 cases each: every step is an fsync or a round trip); `PROPTEST_CASES` sets all.

mod common;
#[cfg(feature = "redis")]
mod server_time;

use std::sync::atomic::{AtomicI64, Ordering};

use common::lease::{LONG, Time};
use common::{proptest_cases, uniform_commit, uniform_state};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sync_storage::{AccountId, Acquired, Error, FencingToken, Lease, LeaseStorage};

const OWNERS: usize = 3;
const NAMES: [&str; OWNERS] = ["owner-a", "owner-b", "owner-c"];

#[derive(Debug, Clone, Copy)]
enum Step {
    Acquire(usize),
    Renew(usize),
    Release(usize),
    /// The lease runs out (forced: the clock jumps, or the key goes).
    Expire,
    /// The owner commits the next position with its last token (0 before it had one).
    Commit(usize),
}

fn step() -> impl Strategy<Value = Step> {
    let owner = 0..OWNERS;
    prop_oneof![
        3 => owner.clone().prop_map(Step::Acquire),
        2 => owner.clone().prop_map(Step::Renew),
        2 => owner.clone().prop_map(Step::Release),
        1 => Just(Step::Expire),
        5 => owner.prop_map(Step::Commit),
    ]
}

/// What the contract says the account looks like.
#[derive(Debug, Default)]
struct Model {
    /// The account's current token (0: never acquired).
    current: u64,
    /// Who holds the lease now.
    holder: Option<usize>,
    /// Each owner's last lease.
    leases: [Option<Lease>; OWNERS],
    /// The position of the last applied commit.
    stored: Option<i32>,
    /// The next position to commit: positions only grow, so a fenced-off commit would pass
    /// every sequence check and only the token can stop it.
    next: i32,
}

fn fail(step: usize, what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(format!("step {step}: {what}"))
}

async fn race(
    s: &impl LeaseStorage,
    time: &impl Time,
    account: AccountId,
    steps: &[Step],
) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    for (i, &step) in steps.iter().enumerate() {
        match step {
            Step::Acquire(owner) => {
                let got = s
                    .acquire(account, NAMES[owner], LONG)
                    .await
                    .map_err(|e| fail(i, e))?;
                match (model.holder, got) {
                    (Some(holder), Acquired::Busy(info)) if holder != owner => {
                        if (info.owner.as_str(), info.token.0) != (NAMES[holder], model.current) {
                            return Err(fail(i, format!("busy with {info:?}, model {model:?}")));
                        }
                    }
                    (holder, Acquired::Held(lease)) if holder.is_none_or(|h| h == owner) => {
                        if lease.token.0 <= model.current {
                            return Err(fail(
                                i,
                                format!("token {} after {}", lease.token, model.current),
                            ));
                        }
                        model.current = lease.token.0;
                        model.holder = Some(owner);
                        model.leases[owner] = Some(lease);
                    }
                    (holder, got) => {
                        return Err(fail(
                            i,
                            format!("{owner} got {got:?} while {holder:?} held it"),
                        ));
                    }
                }
            }
            Step::Renew(owner) => {
                let Some(lease) = &model.leases[owner] else {
                    continue;
                };
                let got = s.renew(lease).await;
                if lease.token.0 == model.current {
                    got.map_err(|e| fail(i, format!("current renewal: {e}")))?;
                    model.holder = Some(owner);
                } else {
                    expect_fenced(i, got, lease.token.0, model.current)?;
                }
            }
            Step::Release(owner) => {
                let Some(lease) = &model.leases[owner] else {
                    continue;
                };
                s.release(lease).await.map_err(|e| fail(i, e))?;
                if lease.token.0 == model.current {
                    model.holder = None;
                }
            }
            Step::Expire => {
                time.expire_lease(account).await;
                model.holder = None;
            }
            Step::Commit(owner) => {
                let token = model.leases[owner].as_ref().map_or(0, |l| l.token.0);
                let position = model.next;
                model.next += 1;
                let got = s
                    .apply_fenced(account, FencingToken(token), &uniform_commit(position))
                    .await;
                if token == model.current {
                    got.map_err(|e| fail(i, format!("current commit: {e}")))?;
                    model.stored = Some(position);
                } else {
                    expect_fenced(i, got, token, model.current)?;
                }
            }
        }
        // After every step: the state holds exactly the commits of then-current tokens, and
        // the storage sees the one holder the model sees (or none).
        let state = s.load(account).await.map_err(|e| fail(i, e))?.state;
        if state != model.stored.map(uniform_state) {
            return Err(fail(
                i,
                format!("{step:?}: stored {state:?}, model {model:?}"),
            ));
        }
        let holder = s.lease_holder(account).await.map_err(|e| fail(i, e))?;
        let holder = holder.map(|info| (info.owner, info.token.0));
        let expected = model.holder.map(|h| (NAMES[h].to_owned(), model.current));
        if holder != expected {
            return Err(fail(
                i,
                format!("{step:?}: holder {holder:?}, model {expected:?}"),
            ));
        }
    }
    Ok(())
}

fn expect_fenced(
    step: usize,
    got: Result<(), Error>,
    token: u64,
    current: u64,
) -> Result<(), TestCaseError> {
    match got {
        Err(Error::Fenced {
            token: t,
            current: c,
            ..
        }) if (t, c) == (token, current) => Ok(()),
        other => Err(fail(
            step,
            format!("token {token} (current {current}) answered {other:?}"),
        )),
    }
}

/// Runs `cases` random races on `s`, each on a fresh account.
async fn run<S, T>(s: S, time: T, cases: u32)
where
    S: LeaseStorage + 'static,
    T: Time,
{
    let handle = tokio::runtime::Handle::current();
    // proptest drives synchronously; each case runs its async part on this runtime from a
    // blocking thread (the runtime's workers stay free to drive the backend's I/O).
    tokio::task::spawn_blocking(move || {
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        let next_account = AtomicI64::new(1);
        let strategy = proptest::collection::vec(step(), 1..40);
        let result = runner.run(&strategy, |steps| {
            let account = next_account.fetch_add(1, Ordering::Relaxed);
            handle.block_on(race(&s, &time, account, &steps))
        });
        if let Err(error) = result {
            panic!("{error}");
        }
    })
    .await
    .expect("property test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_racing_owners_match_the_model() {
    let time = common::lease::Manual::default();
    let s = sync_storage::MemoryStorage::with_clock(time.0.clone());
    run(s, time, proptest_cases(256)).await;
}

#[cfg(feature = "file")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_racing_owners_match_the_model() {
    let dir = tempfile::tempdir().expect("temp dir");
    let time = common::lease::Manual::default();
    let s =
        sync_storage::FileStorage::open_with_clock(dir.path().join("race.redb"), time.0.clone())
            .expect("open");
    run(s, time, proptest_cases(32)).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_racing_owners_match_the_model() {
    let Some(server) = sync_testkit::redis_server::RedisServer::start() else {
        return;
    };
    let server = std::sync::Arc::new(server);
    let s = sync_storage::RedisStorage::connect(&server.url())
        .await
        .expect("connect");
    let time = server_time::ServerTime {
        server,
        storage: s.clone(),
    };
    run(s, time, proptest_cases(32)).await;
}
