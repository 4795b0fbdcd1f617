//! The common sequence (pts, qts, seq): order, gaps, and the differences that close them.

use std::time::Duration;

use crate::common::{Ents, GAP, Harness, STATE, Up, combined, difference, pts};
use sync_core::{Affected, Difference, EngineConfig, Notice, Output, RequestKind, State, Updates};

#[test]
fn in_order_updates_are_delivered_and_committed_after_ack() {
    let mut h = Harness::ready();
    h.push_all([pts(101), pts(102), Up::Pts(105, 3)]);
    assert_eq!(h.take_delivered(), [pts(101), pts(102), Up::Pts(105, 3)]);
    assert_eq!(h.engine.state().unwrap().pts, 105);
    assert_eq!(h.last_commit_state().unwrap().pts, 105);
    assert_eq!(h.engine.stats().updates_delivered, 3);
    assert!(h.requests.is_empty());
}

#[test]
fn duplicates_are_skipped() {
    let mut h = Harness::ready();
    h.push_all([pts(101), pts(101), pts(100), pts(102), Up::Pts(102, 2)]);
    assert_eq!(h.take_delivered(), [pts(101), pts(102)]);
    assert_eq!(h.engine.stats().duplicates_dropped, 3);
}

#[test]
fn zero_count_update_applies_at_its_pts() {
    let mut h = Harness::ready();
    h.push_all([Up::Pts(100, 0), pts(101), Up::Pts(100, 0)]);
    assert_eq!(h.take_delivered(), [Up::Pts(100, 0), pts(101)]);
    assert_eq!(h.engine.state().unwrap().pts, 101);
}

#[test]
fn gap_filled_within_the_wait_needs_no_request() {
    let mut h = Harness::ready();
    h.push_all([pts(102), pts(103)]);
    assert!(
        h.take_delivered().is_empty(),
        "nothing after a gap is delivered"
    );
    assert_eq!(h.engine.poll_timeout(), Some(h.now + GAP));
    h.advance(Duration::from_millis(300));
    h.push(pts(101));
    assert_eq!(h.take_delivered(), [pts(101), pts(102), pts(103)]);
    h.advance(Duration::from_secs(1));
    assert!(h.requests.is_empty());
    let stats = h.engine.stats();
    assert_eq!((stats.gaps_detected, stats.gaps_filled_by_wait), (1, 1));
    assert_eq!(stats.buffered_now, 0);
}

#[test]
fn gap_not_filled_fetches_the_difference_and_drops_what_it_covers() {
    let mut h = Harness::ready();
    h.push(pts(103));
    h.fire_next();
    let request = h.take_request();
    assert_eq!(
        request.kind,
        RequestKind::GetDifference {
            pts: 100,
            qts: 50,
            date: STATE.date,
            pts_total_limit: Some(5_000)
        }
    );
    // Newer than the answer: it arrives while the request is in flight.
    h.push(pts(104));
    let state = State { pts: 103, ..STATE };
    h.engine
        .handle_difference(
            h.now,
            request.id,
            difference(vec![pts(101), pts(102), pts(103)], state),
        )
        .unwrap();
    h.pump();
    assert_eq!(h.take_delivered(), [pts(101), pts(102), pts(103), pts(104)]);
    assert_eq!(h.engine.state().unwrap().pts, 104);
    assert_eq!(h.engine.stats().gaps_resolved_by_difference, 1);
    assert_eq!(h.engine.stats().duplicates_dropped, 1);
}

#[test]
fn updates_during_an_in_flight_difference_are_held_and_reconciled() {
    let mut h = Harness::ready();
    h.push(pts(102));
    h.fire_next();
    let request = h.take_request();
    // While the difference is in flight even contiguous pushes wait: the reply may carry them.
    h.push_all([pts(103), pts(101)]);
    h.push(pts(104));
    assert!(h.take_delivered().is_empty());
    let state = State { pts: 103, ..STATE };
    h.engine
        .handle_difference(
            h.now,
            request.id,
            difference(vec![pts(101), pts(102), pts(103)], state),
        )
        .unwrap();
    h.pump();
    assert_eq!(h.take_delivered(), [pts(101), pts(102), pts(103), pts(104)]);
}

#[test]
fn difference_slices_are_followed_until_the_end() {
    let mut h = Harness::ready();
    h.push(Up::Pts(200, 1));
    h.fire_next();
    let first = h.take_request();
    let middle = State { pts: 150, ..STATE };
    let slice = Difference::Difference {
        updates: (101..=150).map(pts).collect(),
        entities: Ents::default(),
        state: middle,
        slice: true,
    };
    h.engine.handle_difference(h.now, first.id, slice).unwrap();
    h.pump();
    let second = h.take_request();
    assert!(matches!(
        second.kind,
        RequestKind::GetDifference { pts: 150, .. }
    ));
    let rest = difference((151..=200).map(pts).collect(), State { pts: 200, ..STATE });
    h.engine.handle_difference(h.now, second.id, rest).unwrap();
    h.pump();
    let delivered = h.take_delivered();
    assert_eq!(delivered, (101..=200).map(pts).collect::<Vec<_>>());
    assert!(h.requests.is_empty());
}

#[test]
fn updates_too_long_and_difference_too_long_jump_and_refetch() {
    let mut h = Harness::ready();
    h.engine.handle_updates(h.now, Updates::TooLong).unwrap();
    h.pump();
    let request = h.take_request();
    h.engine
        .handle_difference(h.now, request.id, Difference::TooLong { pts: 5_000 })
        .unwrap();
    h.pump();
    assert!(
        h.notes
            .contains(&Output::Notice(Notice::DifferenceTooLong { pts: 5_000 }))
    );
    let commit = h.commits.last().unwrap();
    assert!(commit.state_reset);
    assert_eq!(commit.state.unwrap().pts, 5_000);
    // The rest of the state is caught up from the new pts.
    let again = h.take_request();
    assert!(matches!(
        again.kind,
        RequestKind::GetDifference { pts: 5_000, .. }
    ));
    h.engine
        .handle_difference(
            h.now,
            again.id,
            Difference::Empty {
                date: 3_000,
                seq: 12,
            },
        )
        .unwrap();
    h.pump();
    assert_eq!(
        h.engine.state().unwrap(),
        State {
            pts: 5_000,
            qts: 50,
            date: 3_000,
            seq: 12
        }
    );
    h.push(pts(5_001));
    assert_eq!(h.take_delivered(), [pts(5_001)]);
}

#[test]
fn short_forms_and_qts_follow_their_rules() {
    let mut h = Harness::ready();
    h.push_all([Up::Qts(51), Up::Qts(53), Up::Qts(51), Up::Plain(7)]);
    assert_eq!(h.take_delivered(), [Up::Qts(51), Up::Plain(7)]);
    h.push(Up::Qts(52));
    assert_eq!(h.take_delivered(), [Up::Qts(52), Up::Qts(53)]);
    assert_eq!(h.engine.state().unwrap().qts, 53);
}

#[test]
fn zero_pts_or_qts_is_unordered_and_never_resets() {
    let mut h = Harness::ready();
    h.push_all([Up::Pts(0, 0), Up::Qts(0), Up::Chan(5, 0, 0)]);
    assert_eq!(h.take_delivered().len(), 3);
    assert_eq!(h.engine.state().unwrap(), STATE);
    assert_eq!(h.engine.channel_pts(5), None);
}

#[test]
fn seq_containers_order_their_unordered_updates() {
    let mut h = Harness::ready();
    // seq 12 arrives before 11: its pts update applies at once (pts is in order), its plain
    // update waits for seq 11.
    h.engine
        .handle_updates(h.now, combined(vec![pts(101), Up::Plain(2)], 12, 12))
        .unwrap();
    h.pump();
    assert_eq!(h.take_delivered(), [pts(101)]);
    h.engine
        .handle_updates(h.now, combined(vec![Up::Plain(1)], 11, 11))
        .unwrap();
    h.pump();
    assert_eq!(h.take_delivered(), [Up::Plain(1), Up::Plain(2)]);
    let state = h.engine.state().unwrap();
    assert_eq!((state.seq, state.date), (12, 2_000));
}

#[test]
fn all_duplicate_container_still_advances_seq_and_date() {
    let mut h = Harness::ready();
    h.push(pts(101));
    h.take_delivered();
    h.engine
        .handle_updates(h.now, combined(vec![pts(101)], 11, 11))
        .unwrap();
    h.pump();
    assert!(h.take_delivered().is_empty());
    let state = h.engine.state().unwrap();
    assert_eq!((state.seq, state.date), (11, 2_000));
    assert_eq!(h.last_commit_state().unwrap().seq, 11);
    // A container already applied is dropped whole.
    h.engine
        .handle_updates(h.now, combined(vec![Up::Plain(9)], 9, 10))
        .unwrap();
    h.pump();
    assert!(h.take_delivered().is_empty());
}

#[test]
fn seq_gap_is_resolved_by_difference() {
    let mut h = Harness::ready();
    h.engine
        .handle_updates(h.now, combined(vec![Up::Plain(3)], 13, 13))
        .unwrap();
    h.pump();
    h.fire_next();
    let request = h.take_request();
    h.engine
        .handle_difference(
            h.now,
            request.id,
            difference(
                vec![Up::Plain(1), Up::Plain(2), Up::Plain(3)],
                State { seq: 13, ..STATE },
            ),
        )
        .unwrap();
    h.pump();
    assert_eq!(
        h.take_delivered(),
        [Up::Plain(1), Up::Plain(2), Up::Plain(3)]
    );
    assert_eq!(h.engine.stats().duplicates_dropped, 1);
}

#[test]
fn affected_pts_advances_and_closes_gaps() {
    let mut h = Harness::ready_with(EngineConfig::default(), [(7, 10)]);
    h.push(pts(103));
    h.engine
        .handle_affected(
            h.now,
            Affected::Common {
                pts: 102,
                pts_count: 2,
            },
        )
        .unwrap();
    h.pump();
    assert_eq!(h.take_delivered(), [pts(103)]);
    assert_eq!(h.engine.state().unwrap().pts, 103);
    h.engine
        .handle_affected(
            h.now,
            Affected::Channel {
                channel_id: 7,
                pts: 12,
                pts_count: 2,
            },
        )
        .unwrap();
    h.pump();
    assert_eq!(h.engine.channel_pts(7), Some(12));
    h.advance(Duration::from_secs(1));
    assert!(h.requests.is_empty());
}

#[test]
fn pts_changed_fetches_what_is_pending_then_rebases_on_get_state() {
    let mut h = Harness::ready();
    h.push(pts(101));
    h.push(pts(103)); // waits behind a gap, under the old numbers
    h.push(Up::PtsChanged);
    assert_eq!(h.take_delivered(), [pts(101)]);
    let pending = h.take_request();
    assert!(matches!(
        pending.kind,
        RequestKind::GetDifference { pts: 101, .. }
    ));
    let state = State { pts: 102, ..STATE };
    h.engine
        .handle_difference(h.now, pending.id, difference(vec![pts(102)], state))
        .unwrap();
    h.pump();
    assert_eq!(h.take_delivered(), [pts(102)]);
    let get_state = h.take_request();
    assert_eq!(get_state.kind, RequestKind::GetState);
    // Pushes under the new numbers wait until the state is known.
    h.push(pts(8));
    assert!(h.take_delivered().is_empty());
    let renumbered = State { pts: 7, ..STATE };
    h.engine
        .handle_state(h.now, get_state.id, renumbered)
        .unwrap();
    h.pump();
    assert_eq!(h.take_delivered(), [pts(8)]);
    assert_eq!(h.engine.state().map(|s| s.pts), Some(8));
    let stats = h.engine.stats();
    assert_eq!((stats.rebases, stats.updates_discarded), (1, 1));
    // The lower state is committed as a reset.
    assert!(
        h.commits
            .iter()
            .any(|c| c.state_reset && c.state.is_some_and(|s| s.pts == 8))
    );
    assert!(h.engine.is_idle());
}

#[test]
fn pts_changed_without_renumbering_loses_nothing() {
    let mut h = Harness::ready();
    h.push(Up::PtsChanged);
    let pending = h.take_request();
    h.push(pts(101)); // under the same numbers: it must not be lost
    h.engine
        .handle_difference(h.now, pending.id, difference(vec![], STATE))
        .unwrap();
    h.pump();
    let get_state = h.take_request();
    assert_eq!(get_state.kind, RequestKind::GetState);
    h.push(pts(103));
    let ahead = State { pts: 103, ..STATE };
    h.engine.handle_state(h.now, get_state.id, ahead).unwrap();
    h.pump();
    assert_eq!(h.take_delivered(), [pts(101)]);
    // The server is ahead: the difference brings the rest.
    let rest = h.take_request();
    assert!(matches!(
        rest.kind,
        RequestKind::GetDifference { pts: 101, .. }
    ));
    h.engine
        .handle_difference(h.now, rest.id, difference(vec![pts(102), pts(103)], ahead))
        .unwrap();
    h.pump();
    assert_eq!(h.take_delivered(), [pts(102), pts(103)]);
    assert!(h.commits.iter().all(|c| !c.state_reset));
    assert!(h.engine.is_idle());
}
