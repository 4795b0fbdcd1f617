//! Shared test code: the contract suite and a reference model (the redis-server launcher is
//! `sync_testkit::redis_server`).
//!
//! Each test binary uses a different part of it, so unused-item lints are off here.
#![allow(dead_code, unreachable_pub)]

pub mod contract;
pub mod lifecycle;
pub mod model;

/// The number of property-test cases: `PROPTEST_CASES`, or a small default so tests stay fast.
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
