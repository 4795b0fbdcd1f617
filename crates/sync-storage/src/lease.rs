//! Account ownership: a lease per account with a fencing token, kept in the same storage as
//! the account's state, so that the commit path can check the token atomically with the
//! sequence checks.
//!
//! # The contract
//!
//! - **One owner at a time.** [`LeaseStorage::acquire`] gives the lease to `owner` when nobody
//!   holds it (never taken, released, or expired) or when `owner` itself holds it; otherwise it
//!   answers [`Acquired::Busy`] with the holder and how long its lease still runs.
//! - **The token grows with every acquisition.** Each successful `acquire` (a new owner, or the
//!   same owner again) stores and returns a token greater than every token the account had
//!   before; it never goes back, not even when the lease is released or expires, nor when the
//!   account's state is deleted.
//! - **Fencing.** [`LeaseStorage::apply_fenced`] applies a commit only if its token is the
//!   account's current token, checked atomically with the commit's own checks (in Redis:
//!   inside the commit script). A commit from an owner that was fenced off (someone acquired
//!   since) is refused with [`Error::Fenced`](crate::Error::Fenced) and changes nothing. A
//!   current token passes even if its lease has expired: nobody else became owner, so the
//!   write cannot race one (a lease that expired stops the owner at its next renewal).
//! - **Renewal** ([`LeaseStorage::renew`]) extends the lease by its `ttl` from now if the
//!   token is still current (re-creating the lease if it had expired meanwhile and nobody took
//!   it), and fails with [`Error::Fenced`](crate::Error::Fenced) otherwise.
//! - **Release** ([`LeaseStorage::release`]) frees the lease at once if the token is still
//!   current, so a standby takes over without waiting for the expiry; releasing a lease that
//!   is no longer held succeeds and changes nothing.
//! - **Time.** Redis expires leases with the server's clock; the memory and file backends use
//!   a [`Clock`] (the system's wall clock by default; a [`ManualClock`] in tests).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sync_core::Commit;

use crate::{AccountId, Result, StateStorage};

/// An account's fencing token: it grows with every new owner (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(pub u64);

impl FencingToken {
    /// The number, for an application that fences its own writes with it.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A lease held on an account: who holds it, with which token, for how long each renewal
/// extends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The account.
    pub account: AccountId,
    /// The holder's identifier (unique per process, or per manager).
    pub owner: Arc<str>,
    /// The token of this ownership.
    pub token: FencingToken,
    /// How long the lease lasts after each acquisition or renewal.
    pub ttl: Duration,
}

/// What [`LeaseStorage::acquire`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// The lease is ours, with a new token.
    Held(Lease),
    /// Someone else holds it.
    Busy(LeaseInfo),
}

/// Who holds an account's lease, as storage sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The holder's identifier.
    pub owner: String,
    /// The holder's token.
    pub token: FencingToken,
    /// How long the lease runs unless renewed.
    pub expires_in: Duration,
}

/// Storage that keeps account leases next to the state, so commits can be fenced (see the
/// [module docs](self) for the contract).
pub trait LeaseStorage: StateStorage {
    /// Takes the account's lease for `owner` for `ttl`, if it is free or already `owner`'s.
    /// Every success carries a new, greater token.
    fn acquire(
        &self,
        account: AccountId,
        owner: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<Acquired>> + Send;

    /// Extends the lease by its `ttl` from now, if its token is still current; fails with
    /// [`Error::Fenced`](crate::Error::Fenced) if someone acquired the account since.
    fn renew(&self, lease: &Lease) -> impl Future<Output = Result<()>> + Send;

    /// Renews many leases (of one owner, typically) in one round trip where the backend can:
    /// one result per lease, in order. The outer error is for the transport.
    fn renew_many(&self, leases: &[Lease]) -> impl Future<Output = Result<Vec<Result<()>>>> + Send {
        async move {
            let mut results = Vec::with_capacity(leases.len());
            for lease in leases {
                results.push(self.renew(lease).await);
            }
            Ok(results)
        }
    }

    /// Frees the lease at once if its token is still current; succeeds without a change if it
    /// is not.
    fn release(&self, lease: &Lease) -> impl Future<Output = Result<()>> + Send;

    /// Who holds the account's lease now, `None` if nobody does.
    fn lease_holder(
        &self,
        account: AccountId,
    ) -> impl Future<Output = Result<Option<LeaseInfo>>> + Send;

    /// [`StateStorage::apply`], only if `token` is the account's current fencing token
    /// (checked atomically with the commit's checks); otherwise fails with
    /// [`Error::Fenced`](crate::Error::Fenced) and changes nothing.
    fn apply_fenced(
        &self,
        account: AccountId,
        token: FencingToken,
        commit: &Commit,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// Where the memory and file backends read the time of their leases.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Now, as a duration since a fixed origin (the Unix epoch for [`SystemClock`]).
    fn now(&self) -> Duration;
}

/// The system's wall clock (time since the Unix epoch), the default. A clock set backwards
/// makes leases last longer, never shorter.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    }
}

/// A clock that only moves when told: for tests of expiry.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    millis: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by` (clones share the time).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.millis.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_millis(self.millis.load(Ordering::SeqCst))
    }
}

/// One account's lease record, as the memory and file backends keep it: the last token given
/// out (kept forever) and the current holder, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LeaseRecord {
    /// The account's current token (0: never acquired).
    pub(crate) token: u64,
    /// The holder and when its lease ends, on the backend's clock.
    pub(crate) holder: Option<(String, Duration)>,
}

impl LeaseRecord {
    /// The holder, unless its lease ended by `now`.
    pub(crate) fn live_holder(&self, now: Duration) -> Option<LeaseInfo> {
        let (owner, until) = self.holder.as_ref()?;
        (*until > now).then(|| LeaseInfo {
            owner: owner.clone(),
            token: FencingToken(self.token),
            expires_in: *until - now,
        })
    }

    /// The acquisition rule: free or ours → a new token.
    pub(crate) fn acquire(
        &mut self,
        account: AccountId,
        owner: &str,
        ttl: Duration,
        now: Duration,
    ) -> Acquired {
        match self.live_holder(now) {
            Some(info) if info.owner != owner => Acquired::Busy(info),
            _ => {
                self.token += 1;
                self.holder = Some((owner.to_owned(), now.saturating_add(ttl)));
                Acquired::Held(Lease {
                    account,
                    owner: owner.into(),
                    token: FencingToken(self.token),
                    ttl,
                })
            }
        }
    }

    /// The fencing rule: only the current token passes.
    pub(crate) fn check(&self, account: AccountId, token: FencingToken) -> Result<()> {
        if token.0 == self.token {
            Ok(())
        } else {
            Err(crate::Error::Fenced {
                account,
                token: token.0,
                current: self.token,
            })
        }
    }

    /// The renewal rule: the current token extends (or re-creates) its lease.
    pub(crate) fn renew(&mut self, lease: &Lease, now: Duration) -> Result<()> {
        self.check(lease.account, lease.token)?;
        self.holder = Some((lease.owner.to_string(), now.saturating_add(lease.ttl)));
        Ok(())
    }

    /// The release rule: the current token frees the lease; any other changes nothing.
    pub(crate) fn release(&mut self, lease: &Lease) {
        if lease.token.0 == self.token {
            self.holder = None;
        }
    }
}
