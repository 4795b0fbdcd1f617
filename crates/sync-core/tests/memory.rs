//! Memory, measured with a counting allocator: bytes per tracked channel, bytes per buffered
//! update, and no allocation per update on the in-order path.
//!
//! The figures are printed (`cargo test -p sync-core --test memory -- --nocapture`) and
//! checked against the budgets the crate promises.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::disallowed_methods,
    clippy::print_stdout
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use sync_core::{Sequence, Updates};
use sync_testkit::lean::{Lean, drain, ready_engine};

/// Counts live bytes and allocation calls of the current thread: the test harness allocates
/// on its own threads meanwhile, and that must not count.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn live() -> isize {
    LIVE.with(Cell::get)
}

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

fn count(bytes: isize, calls: usize) {
    // `try_with`: the thread-local may already be gone while a thread shuts down.
    let _ = LIVE.try_with(|live| live.set(live.get() + bytes));
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + calls));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize, 1);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize), 0);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize, 1);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn a_million_tracked_channels_fit_in_64_mb() {
    let channels = 1_000_000;
    let before = live();
    let (engine, _) = ready_engine(channels);
    let bytes = live() - before;
    let per_channel = bytes as f64 / channels as f64;
    println!(
        "{channels} tracked channels: {bytes} bytes of engine state, {per_channel:.1} bytes per channel"
    );
    assert_eq!(engine.stats().channels_tracked, channels as usize);
    assert!(bytes <= 64 * 1024 * 1024, "{bytes} bytes");
}

#[test]
fn buffered_updates_cost_little() {
    let (mut engine, now) = ready_engine(0);
    let count = 900; // under the default per-sequence cap of 1,000
    let before = live();
    // pts 2 is missing: every later update waits.
    for pts in 3..3 + count {
        let update = Lean(Sequence::Common { pts, pts_count: 1 });
        engine
            .handle_updates(now, Updates::Short { update, date: 0 })
            .unwrap();
    }
    let bytes = live() - before;
    assert_eq!(engine.stats().buffered_now, count as usize);
    let per_update = bytes as f64 / f64::from(count);
    println!(
        "{count} buffered updates: {bytes} bytes, {per_update:.1} bytes per buffered update (update type of {} bytes)",
        size_of::<Lean>()
    );
    assert!(per_update <= 128.0, "{per_update}");
}

#[test]
fn the_in_order_path_allocates_nothing_per_update() {
    for channels in [0i64, 1_000] {
        let (mut engine, now) = ready_engine(channels);
        let update = |i: i32| {
            if channels == 0 {
                Lean(Sequence::Common {
                    pts: i + 2,
                    pts_count: 1,
                })
            } else {
                Lean(Sequence::Channel {
                    channel_id: i64::from(i) % channels + 1,
                    pts: i / channels as i32 + 2,
                    pts_count: 1,
                })
            }
        };
        // Warm up: the output queue, the pending-commit queue and the batch vector reach their
        // working size.
        for i in 0..1_000 {
            engine
                .handle_updates(
                    now,
                    Updates::Short {
                        update: update(i),
                        date: 0,
                    },
                )
                .unwrap();
            drain(&mut engine);
        }
        let before = allocations();
        let n = 100_000;
        for i in 1_000..1_000 + n {
            engine
                .handle_updates(
                    now,
                    Updates::Short {
                        update: update(i),
                        date: 0,
                    },
                )
                .unwrap();
            drain(&mut engine);
        }
        let allocations = allocations() - before;
        println!(
            "{n} in-order updates over {channels} channels, polled after each: {allocations} allocations"
        );
        if channels == 0 {
            assert_eq!(allocations, 0, "the common in-order path allocated");
        } else {
            // A channel commit names its channels in a vector: one allocation per commit.
            assert!(
                allocations <= n as usize,
                "{allocations} allocations for {n} updates"
            );
        }
    }
}
