//! Regressions found by the property tests against the simulated server.

use std::time::Duration;

use crate::common::{Ents, Harness, STATE, pts};
use sync_core::{Difference, State};

#[test]
fn the_idle_timer_never_fires_in_a_loop() {
    let mut h = Harness::ready();
    h.advance(Duration::from_secs(15 * 60));
    let request = h.take_request();
    // While the idle difference is in flight, and after it, the next deadline lies ahead.
    assert!(h.engine.poll_timeout().is_some_and(|at| at > h.now));
    h.engine
        .handle_difference(h.now, request.id, Difference::Empty { date: 0, seq: 10 })
        .unwrap();
    h.pump();
    assert!(h.engine.poll_timeout().is_some_and(|at| at > h.now));
    h.advance(Duration::from_secs(1));
    assert!(h.requests.is_empty());
}

#[test]
fn too_long_at_the_same_pts_does_not_repeat_forever() {
    let mut h = Harness::ready();
    h.engine.request_difference(h.now);
    h.pump();
    let request = h.take_request();
    h.engine
        .handle_difference(h.now, request.id, Difference::TooLong { pts: 100 })
        .unwrap();
    h.pump();
    assert!(
        h.requests.is_empty(),
        "no new request for a too-long that moved nothing"
    );
    assert!(h.engine.is_idle());
}

#[test]
fn a_successful_reply_resets_the_backoff() {
    let mut h = Harness::ready();
    h.engine.request_difference(h.now);
    h.pump();
    let first = h.take_request();
    h.fail_retry(first.id);
    h.fire_next();
    let second = h.take_request();
    // A slice succeeds: the next failure starts from the base delay again.
    let slice = Difference::Difference {
        updates: vec![pts(101)],
        entities: Ents::default(),
        state: State { pts: 101, ..STATE },
        slice: true,
    };
    h.engine.handle_difference(h.now, second.id, slice).unwrap();
    h.pump();
    let third = h.take_request();
    h.fail_retry(third.id);
    assert_eq!(
        h.engine.poll_timeout(),
        Some(h.now + Duration::from_millis(500))
    );
}
