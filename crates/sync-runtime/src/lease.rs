//! Account ownership for a manager: acquiring the account's lease (waiting as a standby while
//! another owner holds it), keeping it renewed, and fencing the writer's commits with its
//! token, so that an owner that lost the account can no longer change its state.
//!
//! The lease itself is a storage contract ([`sync_storage::lease`]); this module only drives
//! it. The manager's storage type is not required to keep leases: [`Manager::with_lease`]
//! (which does require it) turns the storage into a [`Fencing`] object here, so a manager
//! without a lease pays nothing and needs no extra trait.
//!
//! [`Manager::with_lease`]: crate::Manager::with_lease

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sync_core::Commit;
use sync_storage::{AccountId, Acquired, FencingToken, Lease, LeaseStorage};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::dispatch::BoxFuture;

/// How a [`Manager`](crate::Manager) holds its account's lease (see
/// [`Manager::with_lease`](crate::Manager::with_lease)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Who holds the lease: unique per manager instance, and stable for its lifetime (a
    /// standby and the owner must differ). [`LeaseConfig::new`] picks a unique one.
    pub owner: Arc<str>,
    /// How long the lease lasts after each renewal: a crashed owner's account is taken over
    /// within this time. Default 10 s.
    pub ttl: Duration,
    /// How often the lease is renewed. Default a third of the default `ttl`.
    pub renew_every: Duration,
    /// How often a standby asks whether the lease is free (never later than the holder's lease
    /// ends). A released lease is taken over within this time. Default 250 ms.
    pub standby_poll: Duration,
}

impl LeaseConfig {
    /// The defaults, with a unique owner ([`unique_owner`]).
    pub fn new() -> Self {
        Self::with_owner(unique_owner())
    }

    /// The defaults, held by `owner`.
    pub fn with_owner(owner: impl Into<Arc<str>>) -> Self {
        Self {
            owner: owner.into(),
            ttl: Duration::from_secs(10),
            renew_every: Duration::from_millis(3_333),
            standby_poll: Duration::from_millis(250),
        }
    }
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// An owner id unique to this process and call: the host name (if known), the process id and
/// a random suffix, e.g. `worker-3.1234.9f2c41d07a3e55b1`.
pub fn unique_owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_default();
    let host = if host.is_empty() { "host".into() } else { host };
    format!("{host}.{}.{:016x}", std::process::id(), fastrand::u64(..))
}

/// Why a manager lost its account's lease (in
/// [`RunError::LeaseLost`](crate::RunError::LeaseLost)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseLoss {
    /// Another owner acquired the account: its token is newer, and storage refuses this
    /// manager's commits and renewals.
    #[error("another owner took the account over (its token is {current})")]
    TakenOver {
        /// The account's current token.
        current: u64,
    },
    /// The lease could not be renewed for as long as it lasts (storage unreachable), so
    /// another owner may have taken over: the manager stops rather than risk running beside it.
    #[error("the lease could not be renewed within its ttl: {last_error}")]
    Expired {
        /// The last renewal's error.
        last_error: String,
    },
}

/// The storage's lease operations as an object, so that the manager's type does not carry them.
pub(crate) trait Fencing: Send + Sync {
    fn acquire(
        &self,
        account: AccountId,
        owner: Arc<str>,
        ttl: Duration,
    ) -> BoxFuture<sync_storage::Result<Acquired>>;
    fn renew(&self, lease: Lease) -> BoxFuture<sync_storage::Result<()>>;
    fn release(&self, lease: Lease) -> BoxFuture<sync_storage::Result<()>>;
    fn apply_fenced(
        &self,
        account: AccountId,
        token: FencingToken,
        commit: Commit,
    ) -> BoxFuture<sync_storage::Result<()>>;
}

impl<S: LeaseStorage + 'static> Fencing for Arc<S> {
    fn acquire(
        &self,
        account: AccountId,
        owner: Arc<str>,
        ttl: Duration,
    ) -> BoxFuture<sync_storage::Result<Acquired>> {
        let storage = Arc::clone(self);
        Box::pin(async move { LeaseStorage::acquire(&*storage, account, &owner, ttl).await })
    }

    fn renew(&self, lease: Lease) -> BoxFuture<sync_storage::Result<()>> {
        let storage = Arc::clone(self);
        Box::pin(async move { LeaseStorage::renew(&*storage, &lease).await })
    }

    fn release(&self, lease: Lease) -> BoxFuture<sync_storage::Result<()>> {
        let storage = Arc::clone(self);
        Box::pin(async move { LeaseStorage::release(&*storage, &lease).await })
    }

    fn apply_fenced(
        &self,
        account: AccountId,
        token: FencingToken,
        commit: Commit,
    ) -> BoxFuture<sync_storage::Result<()>> {
        let storage = Arc::clone(self);
        Box::pin(
            async move { LeaseStorage::apply_fenced(&*storage, account, token, &commit).await },
        )
    }
}

/// A lease a manager runs under: the lease, until when it surely holds, and how it was lost,
/// once it is.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) lease: Lease,
    /// Cancelled once the lease is lost; the manager stops at once.
    pub(crate) lost: CancellationToken,
    loss: Mutex<Option<LeaseLoss>>,
    /// The last renewal that succeeded (or the acquisition), as *sent*, plus the ttl: storage
    /// cannot let the lease expire before then.
    fresh_until: Mutex<Instant>,
}

impl Held {
    /// A lease acquired by a request sent at `sent` (storage started its ttl no earlier).
    pub(crate) fn new(lease: Lease, sent: Instant) -> Arc<Self> {
        let fresh_until = sent + lease.ttl;
        Arc::new(Self {
            lease,
            lost: CancellationToken::new(),
            loss: Mutex::new(None),
            fresh_until: Mutex::new(fresh_until),
        })
    }

    /// A renewal sent at `sent` succeeded.
    pub(crate) fn renewed(&self, sent: Instant) {
        let mut until = self
            .fresh_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *until = (*until).max(sent + self.lease.ttl);
    }

    /// Whether the lease surely still holds: not lost, and renewed within its ttl.
    ///
    /// Invariant (no handler runs beside a newer owner, unless the process stalls between
    /// this check and the handler's own effects): every handler call checks it first, so a
    /// process that was paused or starved past its lease (SIGSTOP, a long GC-like stall of
    /// the runtime) stops before it hands a handler anything, even if its renewal task has
    /// not run yet to find out. Storage fences the commits either way; an application
    /// fences its own side effects with [`ManagerHandle::fencing_token`].
    ///
    /// [`ManagerHandle::fencing_token`]: crate::ManagerHandle::fencing_token
    pub(crate) fn is_fresh(&self) -> bool {
        !self.lost.is_cancelled() && Instant::now() < self.fresh_until()
    }

    /// Until when the lease surely holds: the last renewal that succeeded (or the
    /// acquisition), as sent, plus the ttl. Past it, a renewal that still fails means the
    /// lease is lost.
    pub(crate) fn fresh_until(&self) -> Instant {
        *self
            .fresh_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the first loss and stops the manager.
    pub(crate) fn lose(&self, loss: LeaseLoss) {
        let mut recorded = self.loss.lock().unwrap_or_else(PoisonError::into_inner);
        if recorded.is_none() {
            tracing::error!(%loss, token = %self.lease.token, "account lease lost: stopping");
            *recorded = Some(loss);
        }
        self.lost.cancel();
    }

    pub(crate) fn loss(&self) -> Option<LeaseLoss> {
        self.loss
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The lease as the manager's writer sees it: its commits go through `apply_fenced` with the
/// lease's token, and a refusal marks the lease lost.
#[derive(Clone)]
pub(crate) struct Fence {
    pub(crate) fencing: Arc<dyn Fencing>,
    pub(crate) held: Arc<Held>,
}

/// Publishes the token to the handles (0: none).
pub(crate) fn publish_token(slot: &AtomicU64, token: Option<FencingToken>) {
    slot.store(token.map_or(0, FencingToken::get), Ordering::Release);
}

/// Renews `held` every `renew_every` until it is lost or the future is dropped.
///
/// Invariant (never run beside a newer owner): the lease counts as lost once `ttl` has passed
/// since the last renewal that succeeded was *sent*, which is no later than when storage
/// itself lets it expire; a refused renewal means a newer owner exists and stops it at once.
pub(crate) async fn keep_renewed(fencing: Arc<dyn Fencing>, held: Arc<Held>, config: LeaseConfig) {
    // Renewing less often than twice per ttl would let a slow renewal lose a live lease.
    let renew_every = config.renew_every.min(config.ttl / 2);
    let retry = (renew_every / 4).max(Duration::from_millis(10));
    let mut next = Instant::now() + renew_every;
    loop {
        tokio::select! {
            () = held.lost.cancelled() => return,
            () = tokio::time::sleep_until(next) => {}
        }
        let sent = Instant::now();
        let outcome = tokio::select! {
            () = held.lost.cancelled() => return,
            // A renewal that outlives the lease is as good as failed.
            outcome = tokio::time::timeout_at(held.fresh_until(), fencing.renew(held.lease.clone())) => outcome,
        };
        match outcome {
            Ok(Ok(())) => {
                held.renewed(sent);
                next = sent + renew_every;
            }
            Ok(Err(sync_storage::Error::Fenced { current, .. })) => {
                held.lose(LeaseLoss::TakenOver { current });
                return;
            }
            Ok(Err(error)) if Instant::now() < held.fresh_until() => {
                tracing::warn!(%error, "account lease not renewed; retrying");
                next = (Instant::now() + retry).min(held.fresh_until());
            }
            Ok(Err(error)) => {
                held.lose(LeaseLoss::Expired {
                    last_error: error.to_string(),
                });
                return;
            }
            Err(_elapsed) => {
                held.lose(LeaseLoss::Expired {
                    last_error: "the renewal did not answer within the lease's ttl".into(),
                });
                return;
            }
        }
    }
}
