//! The grammers `Session` behind the `client` feature: `SessionStorage` against the storage
//! contract, and the unknown-peer check answered by the session (`SessionPeers`).
#![allow(clippy::unwrap_used)]

// sync-storage's contract suite, shared with its own backends' tests.
#[path = "../../../sync-storage/tests/common/mod.rs"]
mod common;
mod peers;
mod storage;
