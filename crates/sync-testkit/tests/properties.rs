//! Property tests of the engine against the simulated server and the oracle.
//!
//! Every case is a seeded scenario; a failure prints the seed, the settings and the last steps.
//! `PROPTEST_CASES` raises the number of cases (e.g. `PROPTEST_CASES=10000 cargo xtask test`).
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{cases, check};
use proptest::prelude::*;
use sync_core::EngineConfig;
use sync_testkit::{Faults, Limits, Scenario, Workload};

fn faults() -> impl Strategy<Value = Faults> {
    (
        (0.0..0.3f64, 0.0..0.3f64, 0.0..0.4f64, 0u64..3_000),
        (0.0..0.03f64, 0.0..0.08f64, 0.0..0.02f64, 1u64..100),
        (0.0..0.3f64, 0.0..0.15f64),
        (0.0..0.05f64, 0.0..0.1f64, 0.0..0.03f64),
    )
        .prop_map(
            |(
                (drop, duplicate, reorder, window),
                (too_long, channel_too_long, silence, silence_length),
                (request_failure, corrupt_reply),
                (absurd_push, malformed_update, pts_changed),
            )| Faults {
                drop,
                duplicate,
                reorder,
                reorder_window: Duration::from_millis(window),
                too_long,
                channel_too_long,
                silence,
                silence_length,
                request_failure,
                corrupt_reply,
                absurd_push,
                malformed_update,
                pts_changed,
            },
        )
}

fn limits() -> impl Strategy<Value = Limits> {
    (1usize..200, 20usize..2_000, 10usize..500).prop_map(
        |(difference_limit, too_long, channel_too_long)| Limits {
            difference_limit,
            difference_too_long_after: too_long,
            channel_too_long_after: channel_too_long,
            channel_timeout: Some(30),
            ..Limits::default()
        },
    )
}

fn config() -> impl Strategy<Value = EngineConfig> {
    (1usize..64, 4usize..256, 1usize..8, any::<bool>(), 1i32..150).prop_map(
        |(per_sequence, total, concurrent, catch_up, channel_limit)| EngineConfig {
            max_buffered_per_sequence: per_sequence,
            max_buffered_total: total,
            max_concurrent_channel_requests: concurrent,
            catch_up_channels: catch_up,
            channel_difference_limit: channel_limit,
            pts_total_limit: None,
            ..EngineConfig::default()
        },
    )
}

proptest! {
    #![proptest_config(cases(256))]

    /// Random workloads × random fault schedules, resuming from stored state or starting
    /// fresh (no stored state, no channel tracked): the oracle holds.
    #[test]
    fn every_update_exactly_once_in_order(
        seed in any::<u64>(),
        events in 1u64..600,
        channels in 0usize..30,
        faults in faults(),
        limits in limits(),
        config in config(),
        fresh in any::<bool>(),
    ) {
        check(&Scenario::new(seed).events(events).channels(channels).faults(faults).limits(limits).config(config).fresh_start(fresh))?;
    }

    /// Crashes at random points, restarting from the last committed state: nothing is lost,
    /// and repeats stay inside the unacknowledged window.
    #[test]
    fn crash_restart_loses_nothing(
        seed in any::<u64>(),
        events in 50u64..500,
        channels in 1usize..20,
        crashes in 1u32..5,
        ack_delay in 0u64..400,
        faults in faults(),
        fresh in any::<bool>(),
    ) {
        check(&
            Scenario::new(seed)
                .events(events)
                .channels(channels)
                .faults(faults)
                .crashes(crashes)
                .ack_delay(Duration::from_millis(ack_delay))
                .fresh_start(fresh),
        )?;
    }

    /// Tiny buffer caps under heavy reordering: memory stays bounded (the driver checks the
    /// total after every step) and the differences recover what the caps dropped.
    #[test]
    fn buffers_stay_within_their_caps(
        seed in any::<u64>(),
        per_sequence in 1usize..8,
        total in 1usize..16,
    ) {
        let config = EngineConfig { max_buffered_per_sequence: per_sequence, max_buffered_total: total, ..EngineConfig::default() };
        let faults = Faults { reorder: 0.6, reorder_window: Duration::from_secs(3), ..Faults::moderate() };
        check(&Scenario::new(seed).events(400).channels(6).faults(faults).config(config))?;
    }

    /// Every reply may first arrive corrupted: it is refused, changes nothing, and the correct
    /// reply that follows is applied.
    #[test]
    fn malformed_replies_are_refused(seed in any::<u64>()) {
        let faults = Faults { corrupt_reply: 0.9, ..Faults::moderate() };
        check(&Scenario::new(seed).events(300).channels(5).faults(faults))?;
    }
}

#[test]
fn a_perfect_network_needs_no_difference() {
    let report = Scenario::new(1).events(1_000).channels(10).run().unwrap();
    assert_eq!(report.stats.gaps_detected, 0);
    // The startup getDifference, and the idle one at the end.
    assert_eq!(report.stats.difference_requests, 2);
    assert_eq!(report.repeats, 0);
}

#[test]
fn thousands_of_channels_are_cheap() {
    let workload = Workload {
        channels: 5_000,
        ..Workload::default()
    };
    let report = Scenario::new(9)
        .events(2_000)
        .workload(workload)
        .faults(Faults::moderate())
        .run()
        .unwrap();
    assert_eq!(report.stats.channels_tracked, 5_000);
}

#[test]
fn too_long_answers_are_survived() {
    let limits = Limits {
        difference_limit: 10,
        difference_too_long_after: 30,
        channel_too_long_after: 15,
        channel_timeout: None,
        ..Limits::default()
    };
    let faults = Faults {
        silence: 0.02,
        silence_length: 60,
        ..Faults::moderate()
    };
    let report = Scenario::new(5)
        .events(1_500)
        .channels(3)
        .limits(limits)
        .faults(faults)
        .run()
        .unwrap();
    assert!(report.stats.too_long > 0, "{report:?}");
}

#[test]
fn a_violation_names_its_seed() {
    let violation = Scenario::new(77).events(50).max_steps(5).run().unwrap_err();
    assert_eq!(violation.seed, 77);
    assert!(violation.message.contains("livelock"), "{violation}");
    assert!(violation.to_string().contains("seed 77"));
}
