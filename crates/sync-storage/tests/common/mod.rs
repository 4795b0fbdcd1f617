//! Shared test code: the contract suite and a reference model (the redis-server launcher is
//! `sync_testkit::redis_server`).
//!
//! Each test binary uses a different part of it, so unused-item lints are off here.
#![allow(dead_code, unreachable_pub)]

pub mod contract;
pub mod lease;
pub mod lifecycle;
pub mod model;

use sync_storage::{ChannelCommit, Commit, State};

/// The number of property-test cases: `PROPTEST_CASES`, or a small default so tests stay fast.
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A state whose four numbers are all `v`.
pub fn uniform_state(v: i32) -> State {
    State {
        pts: v,
        qts: v,
        date: v,
        seq: v,
    }
}

/// A commit of [`uniform_state`]`(v)` and channel 1 at pts `v`.
pub fn uniform_commit(v: i32) -> Commit {
    Commit {
        state: Some(uniform_state(v)),
        channels: vec![ChannelCommit {
            channel_id: 1,
            pts: v,
            reset: false,
        }],
        ..Commit::default()
    }
}
