//! Shared test code: the contract suite, a reference model and a redis-server launcher.
//!
//! Each test binary uses a different part of it, so unused-item lints are off here.
#![allow(dead_code, unreachable_pub)]

pub mod contract;
pub mod model;
#[cfg(feature = "redis")]
pub mod redis_server;

/// True when running under CI (`CI` set, and not "false" or "0").
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| !value.is_empty() && value != "false" && value != "0")
}

/// The number of property-test cases: `PROPTEST_CASES`, or a small default so tests stay fast.
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
