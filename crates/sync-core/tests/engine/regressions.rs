//! Regressions found by the property tests against the simulated server.

use std::time::{Duration, Instant};

use crate::common::{Ents, Harness, STATE, Up, empty_channel_difference, pts};
use sync_core::{ChannelCommit, Difference, Engine, EngineConfig, RequestKind, State};

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

/// A push from a buggy client or adapter names a channel the engine does not track yet (a
/// fresh start tracks none) with an absurd pts. Taken as the channel's start, it made every
/// later real update of the channel look old and dropped it. Now the pushed pts is only a
/// claim: the server's lower answer re-bases the channel, and the real updates are delivered.
#[test]
fn an_absurd_pts_does_not_poison_a_channel_first_seen_in_a_push() {
    let mut h = Harness::wrap(
        Engine::new(EngineConfig::default(), Instant::now()),
        Instant::now(),
    );
    let request = h.take_request();
    assert_eq!(request.kind, RequestKind::GetState);
    h.engine.handle_state(h.now, request.id, STATE).unwrap();
    h.pump();
    h.commits.clear();

    h.push(Up::Chan(5, i32::MAX - 5, 1));
    assert!(
        h.take_delivered().is_empty(),
        "an absurd update is never delivered"
    );
    assert!(h.commits.is_empty(), "an unverified pts is never committed");
    let request = h.take_request();
    assert_eq!(
        request.kind,
        RequestKind::GetChannelDifference {
            channel_id: 5,
            pts: i32::MAX - 6,
            limit: 100
        }
    );
    // A real update arrives while the server is asked: it waits for the answer.
    h.push(Up::Chan(5, 11, 1));
    assert!(h.take_delivered().is_empty());

    // The server does not know that pts and answers with its own, lower one.
    h.engine
        .handle_channel_difference(h.now, request.id, empty_channel_difference(5, 10, None))
        .unwrap();
    h.pump();
    assert_eq!(h.take_delivered(), [Up::Chan(5, 11, 1)]);
    assert_eq!(h.engine.channel_pts(5), Some(11));
    assert_eq!(h.engine.stats().updates_discarded, 1);
    let channels: Vec<ChannelCommit> = h.commits.iter().flat_map(|c| c.channels.clone()).collect();
    assert_eq!(
        channels,
        [ChannelCommit {
            channel_id: 5,
            pts: 11,
            reset: true
        }],
        "the re-base is committed as a reset"
    );

    h.push_all([Up::Chan(5, 12, 1), Up::Chan(5, 13, 1)]);
    assert_eq!(h.take_delivered(), [Up::Chan(5, 12, 1), Up::Chan(5, 13, 1)]);
    assert_eq!(h.engine.channel_pts(5), Some(13));
    assert!(h.requests.is_empty());
}
