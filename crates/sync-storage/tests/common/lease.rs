//! The lease and registry contract every backend must keep (see `sync_storage::lease` and
//! `sync_storage::registry`), as generic async functions.
//!
//! A backend gets the suite with `lease_suite!(make)`, where `make()` is an async fn
//! returning `Option<(guard, storage, time)>`: `time` ([`Time`]) lets a lease or a heartbeat
//! run out, with a `ManualClock` on the in-process backends and on the server for Redis.

use std::future::Future;
use std::time::Duration;

use sync_storage::lease::ManualClock;
use sync_storage::{
    AccountId, Acquired, ChannelCommit, Commit, Error, FencingToken, Lease, LeaseStorage,
    RegistryStorage, StaleSequence,
};

use super::{uniform_commit, uniform_state};

/// What the suite needs of a backend.
pub trait Storage: LeaseStorage + RegistryStorage + Clone + 'static {}
impl<S: LeaseStorage + RegistryStorage + Clone + 'static> Storage for S {}

/// How a test lets time pass on a backend.
pub trait Time: Send + Sync + 'static {
    /// Ends the account's lease as its expiry would (other accounts' leases may end too).
    fn expire_lease(&self, account: AccountId) -> impl Future<Output = ()> + Send;
    /// Lets at least `ttl` pass on the backend's clock.
    fn outlive(&self, ttl: Duration) -> impl Future<Output = ()> + Send;
}

/// Time for the memory and file backends: a [`ManualClock`] they were built with.
#[derive(Debug, Clone, Default)]
pub struct Manual(pub ManualClock);

impl Time for Manual {
    async fn expire_lease(&self, _account: AccountId) {
        self.0.advance(LONG + Duration::from_millis(1));
    }

    async fn outlive(&self, ttl: Duration) {
        self.0.advance(ttl + Duration::from_millis(1));
    }
}

/// A ttl no test outlives unless it lets time pass on purpose.
pub const LONG: Duration = Duration::from_secs(600);
/// A ttl a test waits out (on Redis, for real).
pub const SHORT: Duration = Duration::from_millis(100);

/// Generates one `#[tokio::test]` per lease/registry contract function for the backend
/// `make()` builds.
#[macro_export]
macro_rules! lease_suite {
    ($make:path) => {
        $crate::lease_suite!(@tests $make;
            acquire_free_busy_and_again,
            token_never_goes_back,
            renew_current_and_fenced,
            release_lets_a_standby_in_at_once,
            fenced_commits_change_nothing,
            renew_many_answers_per_lease,
            registry_accounts_are_a_sorted_set,
            heartbeat_lists_live_members,
        );
    };
    (@tests $make:path; $($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some((_guard, storage, time)) = $make().await else { return };
            common::lease::$name(storage, time).await;
        }
    )*};
}

#[track_caller]
fn held(acquired: Result<Acquired, Error>) -> Lease {
    match acquired {
        Ok(Acquired::Held(lease)) => lease,
        other => panic!("expected the lease, got {other:?}"),
    }
}

#[track_caller]
fn assert_fenced(result: Result<(), Error>, account: AccountId, token: u64, current: u64) {
    match result {
        Err(Error::Fenced {
            account: a,
            token: t,
            current: c,
        }) => assert_eq!((a, t, c), (account, token, current), "fenced"),
        other => panic!("expected Fenced (token {token}, current {current}), got {other:?}"),
    }
}

/// A free lease is taken; a held one is busy for others; the holder may take it again, with
/// a new token.
pub async fn acquire_free_busy_and_again(s: impl Storage, _time: impl Time) {
    assert_eq!(s.lease_holder(1).await.expect("holder"), None);
    let a = held(s.acquire(1, "a", LONG).await);
    assert_eq!((a.account, &*a.owner, a.ttl), (1, "a", LONG));
    assert!(a.token > FencingToken(0), "{a:?}");
    match s.acquire(1, "b", LONG).await.expect("acquire") {
        Acquired::Busy(info) => {
            assert_eq!((info.owner.as_str(), info.token), ("a", a.token));
            assert!(
                info.expires_in > Duration::ZERO && info.expires_in <= LONG,
                "{info:?}"
            );
        }
        other => panic!("b took a held lease: {other:?}"),
    }
    let again = held(s.acquire(1, "a", LONG).await);
    assert!(again.token > a.token, "{again:?} after {a:?}");
    let info = s.lease_holder(1).await.expect("holder").expect("held");
    assert_eq!((info.owner.as_str(), info.token), ("a", again.token));
    // Accounts are leased apart.
    let other = held(s.acquire(2, "b", LONG).await);
    assert_eq!(&*other.owner, "b");
}

/// The token grows across a release, an expiry and a delete of the account's state.
pub async fn token_never_goes_back(s: impl Storage, time: impl Time) {
    let first = held(s.acquire(3, "a", LONG).await);
    s.release(&first).await.expect("release");
    assert_eq!(s.lease_holder(3).await.expect("holder"), None);
    let second = held(s.acquire(3, "b", LONG).await);
    assert!(second.token > first.token);

    time.expire_lease(3).await;
    assert_eq!(s.lease_holder(3).await.expect("holder"), None, "expired");
    let third = held(s.acquire(3, "a", LONG).await);
    assert!(third.token > second.token);

    s.apply_fenced(3, third.token, &uniform_commit(5))
        .await
        .expect("commit");
    s.delete(3).await.expect("delete");
    assert_eq!(s.get_state(3).await.expect("read"), None);
    // The lease survives the delete of the state, and so does the token.
    let info = s.lease_holder(3).await.expect("holder").expect("held");
    assert_eq!(info.token, third.token);
    s.release(&third).await.expect("release");
    let fourth = held(s.acquire(3, "c", LONG).await);
    assert!(fourth.token > third.token, "{fourth:?} after {third:?}");
}

/// Renewing with the current token works (and re-creates an expired lease); with an old one
/// it is fenced.
pub async fn renew_current_and_fenced(s: impl Storage, time: impl Time) {
    let a = held(s.acquire(4, "a", LONG).await);
    s.renew(&a).await.expect("renew");
    time.expire_lease(4).await;
    assert_eq!(s.lease_holder(4).await.expect("holder"), None);
    // Nobody took it meanwhile: the renewal brings it back.
    s.renew(&a).await.expect("renew after expiry");
    let info = s.lease_holder(4).await.expect("holder").expect("held");
    assert_eq!((info.owner.as_str(), info.token), ("a", a.token));
    assert!(matches!(
        s.acquire(4, "b", LONG).await,
        Ok(Acquired::Busy(_))
    ));

    time.expire_lease(4).await;
    let b = held(s.acquire(4, "b", LONG).await);
    assert_fenced(s.renew(&a).await, 4, a.token.0, b.token.0);
    // The refused renewal did not touch b's lease.
    let info = s.lease_holder(4).await.expect("holder").expect("held");
    assert_eq!((info.owner.as_str(), info.token), ("b", b.token));
}

/// Releasing frees the lease at once; releasing with an old token changes nothing.
pub async fn release_lets_a_standby_in_at_once(s: impl Storage, _time: impl Time) {
    let a = held(s.acquire(5, "a", LONG).await);
    assert!(matches!(
        s.acquire(5, "standby", LONG).await,
        Ok(Acquired::Busy(_))
    ));
    s.release(&a).await.expect("release");
    let standby = held(s.acquire(5, "standby", LONG).await);
    // The old holder releasing again (a retry, a late shutdown) must not free the standby's.
    s.release(&a).await.expect("release of an old lease");
    let info = s.lease_holder(5).await.expect("holder").expect("held");
    assert_eq!(
        (info.owner.as_str(), info.token),
        ("standby", standby.token)
    );
    assert!(matches!(
        s.acquire(5, "a", LONG).await,
        Ok(Acquired::Busy(_))
    ));
    // Releasing what nobody holds succeeds.
    s.release(&standby).await.expect("release");
    s.release(&standby).await.expect("release again");
}

/// A fenced commit with the current token applies (still under the sequence checks); one
/// with an old token is refused and changes nothing.
pub async fn fenced_commits_change_nothing(s: impl Storage, time: impl Time) {
    let account = 6;
    let a = held(s.acquire(account, "a", LONG).await);
    s.apply_fenced(account, a.token, &uniform_commit(5))
        .await
        .expect("current token");
    s.release(&a).await.expect("release");
    let b = held(s.acquire(account, "b", LONG).await);

    let before = s.load(account).await.expect("load");
    assert_eq!(before.state, Some(uniform_state(5)));
    // Higher positions, a removal and a new channel: everything would pass the sequence
    // checks, only the token is wrong.
    let late = Commit {
        removed_channels: vec![1],
        channels: vec![ChannelCommit {
            channel_id: 2,
            pts: 50,
            reset: false,
        }],
        ..uniform_commit(9)
    };
    assert_fenced(
        s.apply_fenced(account, a.token, &late).await,
        account,
        a.token.0,
        b.token.0,
    );
    // A token from the future is not current either.
    let ahead = FencingToken(b.token.0 + 1);
    assert_fenced(
        s.apply_fenced(account, ahead, &late).await,
        account,
        ahead.0,
        b.token.0,
    );
    assert_eq!(
        s.load(account).await.expect("load"),
        before,
        "changed nothing"
    );

    // Under the current token the sequence checks still apply.
    let stale = s.apply_fenced(account, b.token, &uniform_commit(3)).await;
    assert!(
        matches!(
            stale,
            Err(Error::Stale {
                sequence: StaleSequence::Pts,
                stored: 5,
                attempted: 3,
                ..
            })
        ),
        "{stale:?}"
    );
    s.apply_fenced(account, b.token, &late)
        .await
        .expect("current token");
    let after = s.load(account).await.expect("load");
    assert_eq!(after.state, Some(uniform_state(9)));
    assert_eq!(
        after.channels.into_iter().collect::<Vec<_>>(),
        vec![(2, 50)]
    );

    // A current token passes even when its lease ran out: nobody else became owner.
    time.expire_lease(account).await;
    s.apply_fenced(account, b.token, &uniform_commit(10))
        .await
        .expect("expired but current");
    // A plain apply is not fenced at all.
    s.apply(account, &uniform_commit(11)).await.expect("plain");
    assert_eq!(
        s.get_state(account).await.expect("read"),
        Some(uniform_state(11))
    );
}

/// `renew_many` answers each lease on its own, in order.
pub async fn renew_many_answers_per_lease(s: impl Storage, _time: impl Time) {
    let leases: Vec<Lease> = {
        let mut leases = Vec::new();
        for account in [7, 8, 9] {
            leases.push(held(s.acquire(account, "a", LONG).await));
        }
        leases
    };
    s.release(&leases[1]).await.expect("release");
    let b = held(s.acquire(8, "b", LONG).await);
    let results = s.renew_many(&leases).await.expect("transport");
    assert_eq!(results.len(), 3, "{results:?}");
    assert!(results[0].is_ok(), "{results:?}");
    assert!(
        matches!(results[1], Err(Error::Fenced { account: 8, current, .. }) if current == b.token.0),
        "{results:?}"
    );
    assert!(results[2].is_ok(), "{results:?}");
    assert!(s.renew_many(&[]).await.expect("empty").is_empty());
    let info = s.lease_holder(8).await.expect("holder").expect("held");
    assert_eq!(info.owner, "b");
}

/// The registry's accounts: a set, listed in ascending order.
pub async fn registry_accounts_are_a_sorted_set(s: impl Storage, _time: impl Time) {
    assert!(s.registered().await.expect("registered").is_empty());
    s.register(&[30, -1, 20]).await.expect("register");
    s.register(&[20, i64::MAX]).await.expect("register again");
    s.register(&[]).await.expect("register nothing");
    assert_eq!(
        s.registered().await.expect("registered"),
        vec![-1, 20, 30, i64::MAX]
    );
    s.unregister(&[20, 99]).await.expect("unregister");
    s.unregister(&[]).await.expect("unregister nothing");
    assert_eq!(
        s.registered().await.expect("registered"),
        vec![-1, 30, i64::MAX]
    );
    // Unregistering touches no lease.
    let lease = held(s.acquire(30, "a", LONG).await);
    s.unregister(&[30]).await.expect("unregister");
    let info = s.lease_holder(30).await.expect("holder").expect("held");
    assert_eq!(info.token, lease.token);
}

/// Heartbeats list the live members, sorted; a member that stops beating drops out after its
/// ttl; `leave` removes one at once.
pub async fn heartbeat_lists_live_members(s: impl Storage, time: impl Time) {
    assert_eq!(s.heartbeat("m2", LONG).await.expect("beat"), ["m2"]);
    assert_eq!(s.heartbeat("m1", LONG).await.expect("beat"), ["m1", "m2"]);
    assert_eq!(
        s.heartbeat("short", SHORT).await.expect("beat"),
        ["m1", "m2", "short"]
    );
    // Bounded: on a real clock the ttl may need a little more than one wait to be seen over.
    let mut live = Vec::new();
    for _ in 0..100 {
        time.outlive(SHORT).await;
        live = s.heartbeat("m1", LONG).await.expect("beat");
        if !live.iter().any(|m| m == "short") {
            break;
        }
    }
    assert_eq!(live, ["m1", "m2"], "the short member dropped out");
    s.leave("m2").await.expect("leave");
    s.leave("never-there").await.expect("leave unknown");
    assert_eq!(s.heartbeat("m1", LONG).await.expect("beat"), ["m1"]);
    // A member that left may come back.
    assert_eq!(s.heartbeat("m2", LONG).await.expect("beat"), ["m1", "m2"]);
}
