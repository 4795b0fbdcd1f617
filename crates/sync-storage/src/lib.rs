//! Storage for a Telegram account's update state: the common `pts`, `qts`, `seq` and `date`,
//! every channel's `pts`, and the access hashes of channels and users, keyed by account.
//!
//! The sans-IO engine in `sync-core` emits [`Commit`]s (what to persist once the application
//! has handled a batch) and learned access hashes; the runtime writes them through the two
//! traits of this crate and reads everything back at startup with [`StateStorage::load`].
//!
//! # The contract
//!
//! - **Per account.** Every call names an [`AccountId`] (the Telegram user id); accounts never
//!   see each other's data.
//! - **Sequences never move backwards** (`pts`, `qts`, `seq`, each channel's `pts`). A write
//!   that would lower one is rejected whole with [`Error::Stale`], unless it is a forced reset
//!   ([`WriteMode::Reset`], or the `state_reset` / `reset` flags of a [`Commit`]), which is how
//!   the too-long cases (`differenceTooLong`, `channelDifferenceTooLong`) jump. Writing the
//!   same value again succeeds, so repeating a write is harmless.
//! - **`date` goes with its state.** It is not a sequence: a state write that passes the checks
//!   stores its `date` as given (even if smaller), so the stored date is always the one that
//!   came with the stored sequences; a rejected write changes no date either.
//! - **A commit is all or nothing** ([`StateStorage::apply`]): either every change is stored,
//!   or none is (a stale entry anywhere rejects the whole commit). Inside one commit,
//!   `removed_channels` are applied first (their pts are forgotten, their access hashes kept),
//!   then `state`, then `channels` in order.
//! - **Access hashes are not sequences**: the last write wins. Channels' and users' hashes are
//!   kept apart.
//! - **Deleting is all or nothing**: [`StateStorage::delete`] forgets the account's common
//!   state and channel pts together (the account then reads as never stored, and nothing is
//!   stale any more); [`AccessHashStorage::delete_access_hashes`] forgets its access hashes.
//!   To forget an account entirely (a logout), call both.
//! - **One owner per account** ([`LeaseStorage`], see [`lease`]): a lease with a fencing
//!   token that grows with every new owner (and never goes back: not on release, expiry or
//!   [`StateStorage::delete`]); a commit carrying a token that was fenced off is refused
//!   ([`Error::Fenced`]) and changes nothing, checked atomically with the sequence checks
//!   ([`LeaseStorage::apply_fenced`]).
//! - **A fleet's registry** ([`RegistryStorage`], see [`registry`]): the set of accounts, and
//!   the members alive to run them (a heartbeat with a ttl, on the backend's clock).
//! - **Errors are typed** ([`Error`]): unavailable (not done), ambiguous (maybe done), stale
//!   (refused on purpose), fenced (another owner took over), corrupt (a stored value does not
//!   parse), config.
//!
//! # Backends
//!
//! | backend | feature | for |
//! | --- | --- | --- |
//! | [`MemoryStorage`] | (always) | tests, and bots that may start from `getState` after a restart |
//! | `FileStorage` | `file` | one process that must survive restarts: a redb file, every commit fsynced before it is acknowledged |
//! | `RedisStorage` | `redis` (`redis-tls` for `rediss://`) | many processes sharing state; monotonicity and fencing enforced server-side by Lua scripts |
//!
//! All three keep the whole contract: [`StateStorage`], [`AccessHashStorage`],
//! [`LeaseStorage`] and [`RegistryStorage`]. Leases and heartbeats expire on a
//! [`Clock`](lease::Clock) in memory and in the file (`MemoryStorage::with_clock`,
//! `FileStorage::open_with_clock`; the system clock by default), and on the server's clock in
//! Redis (`PEXPIRE`, `TIME`).
//!
//! # Where things are
//!
//! | file | holds |
//! | --- | --- |
//! | `lib.rs` | the traits, [`Snapshot`], [`AccountId`] |
//! | `rules.rs` | the write rules every Rust backend enforces (monotonic unless reset) |
//! | `lease.rs` | account ownership: [`LeaseStorage`], [`Lease`], [`FencingToken`], the clocks |
//! | `registry.rs` | a fleet's accounts and live members: [`RegistryStorage`] |
//! | `memory.rs`, `file.rs`, `redis/` | the backends (`redis/commit.lua` repeats the rules server-side and checks the fence of a fenced commit; `load.lua` reads a snapshot; `redis/lease.rs` with `lease.lua` and `heartbeat.lua` keeps leases and the registry) |
//! | `error.rs` | [`Error`] and [`StaleSequence`] |
//! | `fuzzing.rs` | fuzz bodies for stored-value decoding |
//!
//! # Async traits
//!
//! The traits use `fn … -> impl Future<Output = …> + Send` (native async in traits), so a
//! runtime generic over `S: StateStorage + AccessHashStorage` pays no boxing and can spawn the
//! futures on a multi-threaded executor. They are not `dyn`-compatible; a program that picks
//! the backend at run time can wrap the concrete types in its own enum. Shared handles work
//! directly: the traits are implemented for `&S` and `Arc<S>`.
//!
//! # Example
//!
//! ```
//! use sync_core::{ChannelCommit, Commit, State};
//! use sync_storage::{AccessHashStorage, MemoryStorage, StateStorage};
//!
//! # fn main() -> Result<(), sync_storage::Error> {
//! # futures_lite_block_on(async {
//! let storage = MemoryStorage::new();
//! let account = 777_000;
//!
//! // What the engine asked to persist after a handled batch.
//! let commit = Commit {
//!     state: Some(State { pts: 120, qts: 4, date: 1_700_000_000, seq: 31 }),
//!     channels: vec![ChannelCommit { channel_id: 1_234, pts: 56, reset: false }],
//!     ..Commit::default()
//! };
//! storage.apply(account, &commit).await?;
//! storage.set_access_hash(account, 1_234, -987_654_321).await?;
//!
//! // An older write is refused, not applied.
//! let older = Commit { state: Some(State { pts: 100, ..commit.state.unwrap_or_default() }), ..Commit::default() };
//! assert!(storage.apply(account, &older).await.is_err_and(|e| e.is_stale()));
//!
//! // At startup: everything in one call.
//! let snapshot = storage.load(account).await?;
//! assert_eq!(snapshot.state.map(|s| s.pts), Some(120));
//! assert_eq!(snapshot.channels.get(&1_234), Some(&56));
//! # Ok(())
//! # })
//! # }
//! # // The memory backend never awaits anything, so polling once is enough here.
//! # fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
//! #     let mut future = std::pin::pin!(future);
//! #     let mut context = std::task::Context::from_waker(std::task::Waker::noop());
//! #     loop {
//! #         if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut context) { return out; }
//! #     }
//! # }
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

pub use sync_core::{ChannelCommit, ChannelId, Commit, State};

mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod lease;
mod memory;
pub mod registry;
pub mod rules;

#[cfg(feature = "file")]
mod file;
#[cfg(feature = "redis")]
mod redis;

pub use error::{BackendError, Error, Result, StaleSequence};
#[cfg(feature = "file")]
pub use file::FileStorage;
pub use lease::{Acquired, FencingToken, Lease, LeaseInfo, LeaseStorage};
pub use memory::MemoryStorage;
#[cfg(feature = "redis")]
pub use redis::{RedisConfig, RedisStorage, ReplicationShortfall};
pub use registry::RegistryStorage;

/// An account's identifier: the Telegram user id of the logged-in user or bot.
pub type AccountId = i64;

/// A user's identifier (whose access hash [`AccessHashStorage`] keeps).
pub type UserId = i64;

/// How a single-value write treats a value lower than the stored one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WriteMode {
    /// The normal case: a lower value is rejected with [`Error::Stale`].
    #[default]
    Advance,
    /// A forced reset (a too-long case): the value is stored even if it is lower.
    Reset,
}

impl WriteMode {
    fn is_reset(self) -> bool {
        self == Self::Reset
    }
}

/// Everything stored for an account's update state, as read at startup.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// The common state, `None` on first run (call `getState`).
    pub state: Option<State>,
    /// Every tracked channel's pts, by channel id.
    pub channels: BTreeMap<ChannelId, i32>,
}

/// Stores an account's update state: the common state and each channel's pts.
///
/// Implementations keep the crate's contract (see the crate docs): sequences never move
/// backwards unless a write is a forced reset, a stale write is rejected with
/// [`Error::Stale`] and changes nothing, and [`apply`](Self::apply) is all or nothing.
pub trait StateStorage: Send + Sync {
    /// The account's common state, `None` if none was ever stored.
    fn get_state(&self, account: AccountId) -> impl Future<Output = Result<Option<State>>> + Send;

    /// Stores the common state. With [`WriteMode::Advance`], fails with [`Error::Stale`] if
    /// `pts`, `qts` or `seq` is lower than stored; `date` is stored as given.
    fn set_state(
        &self,
        account: AccountId,
        state: State,
        mode: WriteMode,
    ) -> impl Future<Output = Result<()>> + Send {
        let commit = Commit {
            state: Some(state),
            state_reset: mode.is_reset(),
            ..Commit::default()
        };
        async move { self.apply(account, &commit).await }
    }

    /// One channel's pts, `None` if the channel is not tracked.
    fn get_channel_pts(
        &self,
        account: AccountId,
        channel: ChannelId,
    ) -> impl Future<Output = Result<Option<i32>>> + Send;

    /// Stores one channel's pts. With [`WriteMode::Advance`], fails with [`Error::Stale`] if it
    /// is lower than stored.
    fn set_channel_pts(
        &self,
        account: AccountId,
        channel: ChannelId,
        pts: i32,
        mode: WriteMode,
    ) -> impl Future<Output = Result<()>> + Send {
        let commit = Commit {
            channels: vec![ChannelCommit {
                channel_id: channel,
                pts,
                reset: mode.is_reset(),
            }],
            ..Commit::default()
        };
        async move { self.apply(account, &commit).await }
    }

    /// Every tracked channel of the account with its pts.
    fn channels(
        &self,
        account: AccountId,
    ) -> impl Future<Output = Result<BTreeMap<ChannelId, i32>>> + Send;

    /// Applies a whole commit atomically: every change, or (on any error) none.
    fn apply(&self, account: AccountId, commit: &Commit)
    -> impl Future<Output = Result<()>> + Send;

    /// The common state and every channel's pts, read together (for startup).
    fn load(&self, account: AccountId) -> impl Future<Output = Result<Snapshot>> + Send {
        async move {
            let state = self.get_state(account).await?;
            let channels = self.channels(account).await?;
            Ok(Snapshot { state, channels })
        }
    }

    /// Forgets the account's update state: its common state and every channel's pts, at once
    /// (all or nothing). Afterwards the account reads as never stored, so the next start calls
    /// `getState`, and any values may be written again (nothing is stale). For an account that
    /// logged out, or whose stored state is to be thrown away. Other accounts and this
    /// account's access hashes are untouched (forget those with
    /// [`AccessHashStorage::delete_access_hashes`]). Deleting what is not stored succeeds.
    fn delete(&self, account: AccountId) -> impl Future<Output = Result<()>> + Send;
}

/// Stores the access hashes of an account's channels (needed to call channel methods) and
/// users (needed to name a user in a call, and to tell a known user from one that must be
/// fetched again). Channels and users are kept apart: a channel and a user with the same id
/// have a hash each.
///
/// These are not sequences: the last write wins. Callers must not store the hash of a "min"
/// channel or user, which is not usable and would overwrite a good one.
pub trait AccessHashStorage: Send + Sync {
    /// The channel's access hash, `None` if unknown.
    fn get_access_hash(
        &self,
        account: AccountId,
        channel: ChannelId,
    ) -> impl Future<Output = Result<Option<i64>>> + Send;

    /// Stores the channel's access hash, replacing any stored one.
    fn set_access_hash(
        &self,
        account: AccountId,
        channel: ChannelId,
        access_hash: i64,
    ) -> impl Future<Output = Result<()>> + Send {
        async move {
            self.set_access_hashes(account, &[(channel, access_hash)])
                .await
        }
    }

    /// Stores many access hashes at once (as learned from one batch's `chats`). All are
    /// written together; for a channel listed twice the later entry wins.
    fn set_access_hashes(
        &self,
        account: AccountId,
        hashes: &[(ChannelId, i64)],
    ) -> impl Future<Output = Result<()>> + Send;

    /// The user's access hash, `None` if unknown.
    fn get_user_access_hash(
        &self,
        account: AccountId,
        user: UserId,
    ) -> impl Future<Output = Result<Option<i64>>> + Send;

    /// Stores the user's access hash, replacing any stored one.
    fn set_user_access_hash(
        &self,
        account: AccountId,
        user: UserId,
        access_hash: i64,
    ) -> impl Future<Output = Result<()>> + Send {
        async move {
            self.set_user_access_hashes(account, &[(user, access_hash)])
                .await
        }
    }

    /// Stores many users' access hashes at once (as learned from one batch's `users`). All
    /// are written together; for a user listed twice the later entry wins.
    fn set_user_access_hashes(
        &self,
        account: AccountId,
        hashes: &[(UserId, i64)],
    ) -> impl Future<Output = Result<()>> + Send;

    /// Forgets every access hash of the account, channels' and users' (all or nothing).
    /// Other accounts and this account's update state are untouched.
    fn delete_access_hashes(&self, account: AccountId) -> impl Future<Output = Result<()>> + Send;
}

macro_rules! forward_impls {
    ($($ty:ty),*) => {$(
        impl<S: StateStorage + ?Sized> StateStorage for $ty {
            fn get_state(&self, account: AccountId) -> impl Future<Output = Result<Option<State>>> + Send {
                (**self).get_state(account)
            }
            fn set_state(&self, account: AccountId, state: State, mode: WriteMode) -> impl Future<Output = Result<()>> + Send {
                (**self).set_state(account, state, mode)
            }
            fn get_channel_pts(&self, account: AccountId, channel: ChannelId) -> impl Future<Output = Result<Option<i32>>> + Send {
                (**self).get_channel_pts(account, channel)
            }
            fn set_channel_pts(&self, account: AccountId, channel: ChannelId, pts: i32, mode: WriteMode) -> impl Future<Output = Result<()>> + Send {
                (**self).set_channel_pts(account, channel, pts, mode)
            }
            fn channels(&self, account: AccountId) -> impl Future<Output = Result<BTreeMap<ChannelId, i32>>> + Send {
                (**self).channels(account)
            }
            fn apply(&self, account: AccountId, commit: &Commit) -> impl Future<Output = Result<()>> + Send {
                (**self).apply(account, commit)
            }
            fn load(&self, account: AccountId) -> impl Future<Output = Result<Snapshot>> + Send {
                (**self).load(account)
            }
            fn delete(&self, account: AccountId) -> impl Future<Output = Result<()>> + Send {
                (**self).delete(account)
            }
        }

        impl<S: AccessHashStorage + ?Sized> AccessHashStorage for $ty {
            fn get_access_hash(&self, account: AccountId, channel: ChannelId) -> impl Future<Output = Result<Option<i64>>> + Send {
                (**self).get_access_hash(account, channel)
            }
            fn set_access_hash(&self, account: AccountId, channel: ChannelId, access_hash: i64) -> impl Future<Output = Result<()>> + Send {
                (**self).set_access_hash(account, channel, access_hash)
            }
            fn set_access_hashes(&self, account: AccountId, hashes: &[(ChannelId, i64)]) -> impl Future<Output = Result<()>> + Send {
                (**self).set_access_hashes(account, hashes)
            }
            fn get_user_access_hash(&self, account: AccountId, user: UserId) -> impl Future<Output = Result<Option<i64>>> + Send {
                (**self).get_user_access_hash(account, user)
            }
            fn set_user_access_hash(&self, account: AccountId, user: UserId, access_hash: i64) -> impl Future<Output = Result<()>> + Send {
                (**self).set_user_access_hash(account, user, access_hash)
            }
            fn set_user_access_hashes(&self, account: AccountId, hashes: &[(UserId, i64)]) -> impl Future<Output = Result<()>> + Send {
                (**self).set_user_access_hashes(account, hashes)
            }
            fn delete_access_hashes(&self, account: AccountId) -> impl Future<Output = Result<()>> + Send {
                (**self).delete_access_hashes(account)
            }
        }
    )*};
}

forward_impls!(&S, Arc<S>);

macro_rules! forward_lease_impls {
    ($($ty:ty),*) => {$(
        impl<S: LeaseStorage + ?Sized> LeaseStorage for $ty {
            fn acquire(&self, account: AccountId, owner: &str, ttl: std::time::Duration) -> impl Future<Output = Result<Acquired>> + Send {
                (**self).acquire(account, owner, ttl)
            }
            fn renew(&self, lease: &Lease) -> impl Future<Output = Result<()>> + Send {
                (**self).renew(lease)
            }
            fn renew_many(&self, leases: &[Lease]) -> impl Future<Output = Result<Vec<Result<()>>>> + Send {
                (**self).renew_many(leases)
            }
            fn release(&self, lease: &Lease) -> impl Future<Output = Result<()>> + Send {
                (**self).release(lease)
            }
            fn lease_holder(&self, account: AccountId) -> impl Future<Output = Result<Option<LeaseInfo>>> + Send {
                (**self).lease_holder(account)
            }
            fn apply_fenced(&self, account: AccountId, token: FencingToken, commit: &Commit) -> impl Future<Output = Result<()>> + Send {
                (**self).apply_fenced(account, token, commit)
            }
        }

        impl<S: RegistryStorage + ?Sized> RegistryStorage for $ty {
            fn register(&self, accounts: &[AccountId]) -> impl Future<Output = Result<()>> + Send {
                (**self).register(accounts)
            }
            fn unregister(&self, accounts: &[AccountId]) -> impl Future<Output = Result<()>> + Send {
                (**self).unregister(accounts)
            }
            fn registered(&self) -> impl Future<Output = Result<Vec<AccountId>>> + Send {
                (**self).registered()
            }
            fn heartbeat(&self, member: &str, ttl: std::time::Duration) -> impl Future<Output = Result<Vec<String>>> + Send {
                (**self).heartbeat(member, ttl)
            }
            fn leave(&self, member: &str) -> impl Future<Output = Result<()>> + Send {
                (**self).leave(member)
            }
        }
    )*};
}

forward_lease_impls!(&S, Arc<S>);
