//! The registry of a fleet: which accounts exist, and which processes (members) are alive to
//! run them. Who runs which account is not kept here: that is each account's lease
//! ([`crate::lease`]).
//!
//! # The contract
//!
//! - **Accounts** are a set: [`RegistryStorage::register`] and
//!   [`RegistryStorage::unregister`] add and remove ids (repeating either is harmless);
//!   [`RegistryStorage::registered`] lists them in ascending order.
//! - **Members** announce themselves with [`RegistryStorage::heartbeat`], which keeps the
//!   member alive for `ttl` from now and answers every live member (itself included) in
//!   ascending order; a member that stops beating drops out once its `ttl` has passed, and
//!   [`RegistryStorage::leave`] removes one at once (a clean shutdown).
//! - **Time** is the backend's, as for leases: Redis uses the server's clock, the memory and
//!   file backends their [`Clock`](crate::lease::Clock).

use std::future::Future;
use std::time::Duration;

use crate::{AccountId, Result};

/// Storage for a fleet's registry of accounts and live members (see the [module
/// docs](self)).
pub trait RegistryStorage: Send + Sync {
    /// Adds accounts to the registry.
    fn register(&self, accounts: &[AccountId]) -> impl Future<Output = Result<()>> + Send;

    /// Removes accounts from the registry (their state and leases are untouched).
    fn unregister(&self, accounts: &[AccountId]) -> impl Future<Output = Result<()>> + Send;

    /// Every registered account, in ascending order.
    fn registered(&self) -> impl Future<Output = Result<Vec<AccountId>>> + Send;

    /// Marks `member` alive for `ttl` from now and returns every live member, in ascending
    /// order (`member` included).
    fn heartbeat(
        &self,
        member: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// Removes `member` from the live members at once.
    fn leave(&self, member: &str) -> impl Future<Output = Result<()>> + Send;
}
