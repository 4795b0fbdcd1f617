//! Start-up, timers, buffer caps, acknowledgements and back-off.

use std::time::Duration;

use crate::common::{Harness, STATE, Up, difference, pts};
use sync_core::{Engine, EngineConfig, Error, Failure, RequestKind, State};

#[test]
fn fresh_start_asks_for_the_state_and_holds_pushes_meanwhile() {
    let now = std::time::Instant::now();
    let mut h = Harness::wrap(Engine::new(EngineConfig::default(), now), now);
    let request = h.take_request();
    assert_eq!(request.kind, RequestKind::GetState);
    h.push_all([pts(100), pts(101)]);
    assert!(h.take_delivered().is_empty());
    h.engine.handle_state(h.now, request.id, STATE).unwrap();
    h.pump();
    assert_eq!(
        h.take_delivered(),
        [pts(101)],
        "pts 100 is covered by the state"
    );
    let commit = &h.commits[0];
    assert!(commit.state_reset);
}

#[test]
fn idle_timeout_asks_for_the_difference() {
    let mut h = Harness::ready();
    h.advance(Duration::from_secs(14 * 60));
    h.push(pts(101));
    h.advance(Duration::from_secs(2 * 60));
    assert!(
        h.requests.is_empty(),
        "the idle clock restarts on every push"
    );
    h.advance(Duration::from_secs(14 * 60));
    let request = h.take_request();
    assert!(matches!(
        request.kind,
        RequestKind::GetDifference { pts: 101, .. }
    ));
}

#[test]
fn buffer_cap_overflow_switches_to_the_difference() {
    let config = EngineConfig {
        max_buffered_per_sequence: 3,
        ..EngineConfig::default()
    };
    let mut h = Harness::ready_with(config, []);
    h.push_all([pts(102), pts(103), pts(104)]);
    assert!(h.requests.is_empty());
    h.push(pts(105));
    let request = h.take_request();
    assert!(matches!(
        request.kind,
        RequestKind::GetDifference { pts: 100, .. }
    ));
    assert_eq!(h.engine.stats().buffered_now, 0);
    assert_eq!(h.engine.stats().buffer_overflows, 1);
    let state = State { pts: 105, ..STATE };
    h.engine
        .handle_difference(
            h.now,
            request.id,
            difference((101..=105).map(pts).collect(), state),
        )
        .unwrap();
    h.pump();
    assert_eq!(h.take_delivered(), (101..=105).map(pts).collect::<Vec<_>>());
}

#[test]
fn total_cap_is_shared_by_all_sequences() {
    let config = EngineConfig {
        max_buffered_total: 2,
        ..EngineConfig::default()
    };
    let mut h = Harness::ready_with(config, [(1, 10)]);
    h.push_all([pts(102), Up::Chan(1, 12, 1)]);
    assert_eq!(h.engine.stats().buffered_now, 2);
    h.push(Up::Qts(52));
    assert_eq!(h.engine.stats().buffered_now, 2);
    assert!(matches!(
        h.take_request().kind,
        RequestKind::GetDifference { .. }
    ));
}

#[test]
fn commits_never_run_ahead_of_acknowledgements() {
    let mut h = Harness::ready();
    h.auto_ack = false;
    h.push(pts(101));
    h.push(pts(102));
    assert_eq!(h.unacked.len(), 2);
    assert!(h.commits.is_empty());
    // Acknowledging the second batch alone commits nothing: the first is not handled yet.
    h.engine.ack(h.unacked[1]).unwrap();
    h.pump();
    assert!(h.commits.is_empty());
    h.engine.ack(h.unacked[0]).unwrap();
    h.pump();
    assert_eq!(h.commits.len(), 1);
    assert_eq!(h.commits[0].state.unwrap().pts, 102);
    assert_eq!(
        h.engine.ack(h.unacked[0]),
        Err(Error::UnknownBatch(h.unacked[0]))
    );
}

#[test]
fn failures_back_off_and_honour_flood_wait() {
    let mut h = Harness::ready();
    h.engine.request_difference(h.now);
    h.pump();
    let request = h.take_request();
    h.engine
        .handle_failure(
            h.now,
            request.id,
            Failure::Retry {
                after: Some(Duration::from_secs(7)),
            },
        )
        .unwrap();
    h.pump();
    assert_eq!(
        h.engine.poll_timeout(),
        Some(h.now + Duration::from_secs(7))
    );
    h.advance(Duration::from_secs(6));
    assert!(h.requests.is_empty());
    h.advance(Duration::from_secs(1));
    let retry = h.take_request();
    assert_ne!(retry.id, request.id);
    h.fail_retry(retry.id);
    // The second failure in a row waits twice the base delay.
    assert_eq!(
        h.engine.poll_timeout(),
        Some(h.now + Duration::from_secs(1))
    );
    // Pushes during the backoff apply when contiguous.
    h.push(pts(101));
    assert_eq!(h.take_delivered(), [pts(101)]);
    h.fire_next();
    let third = h.take_request();
    assert!(matches!(
        third.kind,
        RequestKind::GetDifference { pts: 101, .. }
    ));
    h.fail_retry(third.id);
    assert_eq!(
        h.engine.poll_timeout(),
        Some(h.now + Duration::from_secs(2)),
        "doubled"
    );
}
