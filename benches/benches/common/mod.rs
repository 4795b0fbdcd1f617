//! What the runtime benches share: a counting handler that adds no contention of its own, and
//! the environment knobs.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sync_runtime::{BoxError, Handler};
use sync_testkit::{TestEntities, TestUpdate};

/// One thread's share of the count, on a cache line of its own.
#[derive(Default)]
#[repr(align(128))]
struct Stripe(AtomicU64);

/// A handler that counts what it is given. Each thread counts on its own cache line, so that
/// the count does not add contention of its own between the dispatch workers (one shared
/// counter costs about a quarter of the live figure on two cores).
#[derive(Default)]
pub(crate) struct Count([Stripe; 16]);

impl Count {
    /// Everything counted so far.
    pub(crate) fn total(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

static THREADS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static STRIPE: usize = (THREADS.fetch_add(1, Ordering::Relaxed) % 16) as usize;
}

impl Handler<TestUpdate, TestEntities> for Count {
    async fn handle(&self, _: TestUpdate, _: Arc<[TestEntities]>) -> Result<(), BoxError> {
        let stripe = STRIPE.with(|s| *s);
        self.0[stripe].0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// A number from the environment, or `default`.
pub(crate) fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
