//! Scripted exchanges with the engine on a fake clock, one rule each.
#![allow(missing_docs, clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::{Ents, Harness, STATE, Up, pts};
use sync_core::{
    Affected, ChannelCommit, ChannelDifference, ChannelDifferenceKind, ChannelHash, Difference,
    Engine, EngineConfig, Error, Failure, Notice, Output, Request, RequestId, RequestKind, State,
    Updates,
};

const GAP: Duration = Duration::from_millis(500);

fn difference(updates: Vec<Up>, state: State) -> Difference<Up, Ents> {
    Difference::Difference {
        updates,
        entities: Ents::default(),
        state,
        slice: false,
    }
}

fn channel_difference(
    channel_id: i64,
    updates: Vec<Up>,
    pts: i32,
    is_final: bool,
) -> ChannelDifference<Up, Ents> {
    ChannelDifference {
        channel_id,
        kind: ChannelDifferenceKind::Difference {
            updates,
            entities: Ents::default(),
            pts,
            is_final,
            timeout: None,
        },
    }
}

fn combined(updates: Vec<Up>, seq_start: i32, seq: i32) -> Updates<Up, Ents> {
    Updates::Combined {
        updates,
        entities: Ents::default(),
        date: 2_000,
        seq_start,
        seq,
    }
}

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
fn channels_apply_in_order_and_fetch_their_own_difference() {
    let mut h = Harness::ready_with(EngineConfig::default(), [(7, 10)]);
    h.push_all([Up::Chan(7, 11, 1), Up::Chan(7, 14, 1), Up::Chan(7, 11, 1)]);
    assert_eq!(h.take_delivered(), [Up::Chan(7, 11, 1)]);
    h.fire_next();
    let request = h.take_request();
    assert_eq!(
        request.kind,
        RequestKind::GetChannelDifference {
            channel_id: 7,
            pts: 11,
            limit: 100
        }
    );
    // Not final: the engine asks again at once, from the new pts.
    h.engine
        .handle_channel_difference(
            h.now,
            request.id,
            channel_difference(7, vec![Up::Chan(7, 12, 1)], 12, false),
        )
        .unwrap();
    h.pump();
    let again = h.take_request();
    assert_eq!(
        again.kind,
        RequestKind::GetChannelDifference {
            channel_id: 7,
            pts: 12,
            limit: 100
        }
    );
    h.engine
        .handle_channel_difference(
            h.now,
            again.id,
            channel_difference(7, vec![Up::Chan(7, 13, 1), Up::Chan(7, 14, 1)], 14, true),
        )
        .unwrap();
    h.pump();
    assert_eq!(
        h.take_delivered(),
        [Up::Chan(7, 12, 1), Up::Chan(7, 13, 1), Up::Chan(7, 14, 1)]
    );
    assert_eq!(h.engine.channel_pts(7), Some(14));
    assert!(h.requests.is_empty());
    let last = h.commits.last().unwrap();
    assert_eq!(
        last.channels,
        [ChannelCommit {
            channel_id: 7,
            pts: 14,
            reset: false
        }]
    );
}

#[test]
fn bots_ask_for_large_channel_differences() {
    let mut h = Harness::ready_with(EngineConfig::bot(), [(7, 10)]);
    h.push(Up::Chan(7, 12, 1));
    h.fire_next();
    let request = h.take_request();
    assert_eq!(
        request.kind,
        RequestKind::GetChannelDifference {
            channel_id: 7,
            pts: 10,
            limit: 100_000
        }
    );
}

#[test]
fn channel_too_long_fetches_and_never_rewinds() {
    let mut h = Harness::ready_with(EngineConfig::default(), [(7, 10)]);
    h.push(Up::ChanTooLong(7, Some(5)));
    assert!(h.requests.is_empty(), "an older pts is no news");
    h.push(Up::ChanTooLong(7, None));
    let request = h.take_request();
    assert_eq!(
        request.kind,
        RequestKind::GetChannelDifference {
            channel_id: 7,
            pts: 10,
            limit: 100
        }
    );
    let too_long = ChannelDifference {
        channel_id: 7,
        kind: ChannelDifferenceKind::TooLong {
            pts: 500,
            updates: Vec::new(),
            entities: Ents::default(),
            timeout: None,
        },
    };
    h.engine
        .handle_channel_difference(h.now, request.id, too_long)
        .unwrap();
    h.pump();
    assert!(h.notes.contains(&Output::Notice(Notice::ChannelTooLong {
        channel_id: 7,
        pts: Some(500)
    })));
    assert_eq!(h.engine.channel_pts(7), Some(500));
    assert!(h.commits.last().unwrap().channels.contains(&ChannelCommit {
        channel_id: 7,
        pts: 500,
        reset: true
    }));
    h.push(Up::Chan(7, 501, 1));
    assert_eq!(h.take_delivered(), [Up::Chan(7, 501, 1)]);
}

#[test]
fn unknown_channel_too_long_is_reported() {
    let mut h = Harness::ready();
    h.push(Up::ChanTooLong(9, None));
    assert!(h.notes.contains(&Output::Notice(Notice::ChannelTooLong {
        channel_id: 9,
        pts: None
    })));
    assert!(h.requests.is_empty());
    h.engine.track_channel(9, 40).unwrap();
    h.push(Up::Chan(9, 41, 1));
    assert_eq!(h.take_delivered(), [Up::Chan(9, 41, 1)]);
}

#[test]
fn first_seen_channel_starts_its_sequence() {
    let mut h = Harness::ready();
    h.push_all([Up::Chan(3, 20, 1), Up::Chan(3, 21, 1)]);
    assert_eq!(h.take_delivered(), [Up::Chan(3, 20, 1), Up::Chan(3, 21, 1)]);
    assert_eq!(h.engine.channel_pts(3), Some(21));
}

#[test]
fn channel_updates_in_a_common_difference_follow_the_channel_sequence() {
    let mut h = Harness::ready_with(EngineConfig::default(), [(7, 10)]);
    h.push(pts(102));
    h.fire_next();
    let request = h.take_request();
    let updates = vec![
        pts(101),
        Up::Chan(7, 11, 1),
        Up::Chan(7, 13, 1),
        pts(102),
        Up::ChanTooLong(8, Some(3)),
    ];
    h.engine
        .handle_difference(
            h.now,
            request.id,
            difference(updates, State { pts: 102, ..STATE }),
        )
        .unwrap();
    h.pump();
    assert_eq!(h.take_delivered(), [pts(101), Up::Chan(7, 11, 1), pts(102)]);
    assert!(h.notes.contains(&Output::Notice(Notice::ChannelTooLong {
        channel_id: 8,
        pts: Some(3)
    })));
}

#[test]
fn channel_requests_are_bounded() {
    let config = EngineConfig {
        max_concurrent_channel_requests: 2,
        ..EngineConfig::default()
    };
    let mut h = Harness::ready_with(config, [(1, 10), (2, 10), (3, 10)]);
    for channel in 1..=3 {
        h.push(Up::ChanTooLong(channel, None));
    }
    assert_eq!(h.requests.len(), 2, "the third waits for a free slot");
    let first = h.take_request();
    h.engine
        .handle_channel_difference(
            h.now,
            first.id,
            ChannelDifference {
                channel_id: 1,
                kind: ChannelDifferenceKind::Empty {
                    pts: 10,
                    is_final: true,
                    timeout: None,
                },
            },
        )
        .unwrap();
    h.pump();
    assert_eq!(h.requests.len(), 2);
    assert!(matches!(
        h.requests[1].kind,
        RequestKind::GetChannelDifference { channel_id: 3, .. }
    ));
}

#[test]
fn startup_catches_up_stored_channels_only_when_asked() {
    let h = Harness::resumed(EngineConfig::default(), [(1, 10), (2, 10)]);
    assert_eq!(h.requests.len(), 1, "getDifference only");
    let config = EngineConfig {
        catch_up_channels: true,
        max_concurrent_channel_requests: 1,
        ..EngineConfig::default()
    };
    let h = Harness::resumed(config, [(1, 10), (2, 10)]);
    assert_eq!(
        h.requests.len(),
        2,
        "getDifference and one channel, the other queued"
    );
}

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
    h.engine
        .handle_failure(h.now, retry.id, Failure::Retry { after: None })
        .unwrap();
    h.pump();
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
    h.engine
        .handle_failure(h.now, third.id, Failure::Retry { after: None })
        .unwrap();
    h.pump();
    assert_eq!(
        h.engine.poll_timeout(),
        Some(h.now + Duration::from_secs(2)),
        "doubled"
    );
}

#[test]
fn inaccessible_channel_is_forgotten() {
    let mut h = Harness::ready_with(EngineConfig::default(), [(7, 10)]);
    h.push(Up::Chan(7, 13, 1));
    h.fire_next();
    let request = h.take_request();
    h.engine
        .handle_failure(h.now, request.id, Failure::ChannelInaccessible)
        .unwrap();
    h.pump();
    assert!(
        h.notes
            .contains(&Output::Notice(Notice::ChannelClosed { channel_id: 7 }))
    );
    assert_eq!(h.engine.channel_pts(7), None);
    assert_eq!(h.engine.stats().buffered_now, 0);
    assert_eq!(h.commits.last().unwrap().removed_channels, [7]);
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
fn open_channels_are_polled_on_the_server_hint() {
    let mut h = Harness::ready_with(EngineConfig::default(), [(7, 10)]);
    h.engine.open_channel(7).unwrap();
    h.pump();
    let request = h.take_request();
    h.engine
        .handle_channel_difference(
            h.now,
            request.id,
            ChannelDifference {
                channel_id: 7,
                kind: ChannelDifferenceKind::Empty {
                    pts: 10,
                    is_final: true,
                    timeout: Some(20),
                },
            },
        )
        .unwrap();
    h.pump();
    assert_eq!(
        h.engine.poll_timeout(),
        Some(h.now + Duration::from_secs(20))
    );
    h.fire_next();
    assert!(matches!(
        h.take_request().kind,
        RequestKind::GetChannelDifference { channel_id: 7, .. }
    ));
    // Closed channels are not polled, and a closed channel's timeout never delays pushes.
    let mut h = Harness::ready_with(EngineConfig::default(), [(7, 10)]);
    h.push(Up::ChanTooLong(7, None));
    let request = h.take_request();
    h.engine
        .handle_channel_difference(
            h.now,
            request.id,
            ChannelDifference {
                channel_id: 7,
                kind: ChannelDifferenceKind::Empty {
                    pts: 10,
                    is_final: true,
                    timeout: Some(20),
                },
            },
        )
        .unwrap();
    h.pump();
    assert_eq!(
        h.engine.poll_timeout(),
        Some(h.start + Duration::from_secs(15 * 60))
    );
    h.push(Up::Chan(7, 11, 1));
    assert_eq!(h.take_delivered(), [Up::Chan(7, 11, 1)]);
}

#[test]
fn too_many_open_channels_is_an_error() {
    let config = EngineConfig {
        max_open_channels: 1,
        ..EngineConfig::default()
    };
    let mut h = Harness::ready_with(config, [(1, 1), (2, 1)]);
    h.engine.open_channel(1).unwrap();
    assert_eq!(
        h.engine.open_channel(2),
        Err(Error::TooManyOpenChannels { limit: 1 })
    );
    assert_eq!(h.engine.open_channel(3), Err(Error::UnknownChannel(3)));
    h.engine.close_channel(1);
    h.engine.open_channel(2).unwrap();
}

#[test]
fn min_channel_hashes_are_never_reported() {
    let mut h = Harness::ready();
    let entities = Ents(vec![
        ChannelHash {
            channel_id: 1,
            access_hash: 11,
            min: false,
        },
        ChannelHash {
            channel_id: 2,
            access_hash: 22,
            min: true,
        },
    ]);
    h.engine
        .handle_updates(
            h.now,
            Updates::Combined {
                updates: vec![pts(101)],
                entities: entities.clone(),
                date: 0,
                seq_start: 0,
                seq: 0,
            },
        )
        .unwrap();
    h.pump();
    assert_eq!(
        h.notes,
        [Output::AccessHashes(vec![ChannelHash {
            channel_id: 1,
            access_hash: 11,
            min: false
        }])]
    );
}

#[test]
fn a_hash_is_reported_when_new_or_changed_only() {
    let mut h = Harness::ready();
    let hash = |access_hash| ChannelHash {
        channel_id: 1,
        access_hash,
        min: false,
    };
    // Pushes 101..=104 mention channel 1 with hashes 11, 11, 12, 12.
    for (pts_value, access_hash) in [(101, 11), (102, 11), (103, 12), (104, 12)] {
        h.engine
            .handle_updates(
                h.now,
                Updates::Combined {
                    updates: vec![pts(pts_value)],
                    entities: Ents(vec![hash(access_hash)]),
                    date: 0,
                    seq_start: 0,
                    seq: 0,
                },
            )
            .unwrap();
        h.pump();
    }
    assert_eq!(
        h.notes,
        [
            Output::AccessHashes(vec![hash(11)]),
            Output::AccessHashes(vec![hash(12)])
        ]
    );
}

#[test]
fn malformed_pushes_are_refused_whole() {
    let mut h = Harness::ready();
    let bad = [
        Updates::Short {
            update: Up::Pts(-1, 1),
            date: 0,
        },
        Updates::Short {
            update: Up::Pts(5, 6),
            date: 0,
        },
        Updates::Short {
            update: Up::Pts(5, -1),
            date: 0,
        },
        Updates::Short {
            update: Up::Qts(-3),
            date: 0,
        },
        Updates::Short {
            update: Up::Chan(0, 5, 1),
            date: 0,
        },
        Updates::Short {
            update: Up::Chan(-4, 5, 1),
            date: 0,
        },
        Updates::Short {
            update: Up::ChanTooLong(1, Some(-1)),
            date: 0,
        },
        combined(vec![pts(101)], 0, 11),
        combined(vec![pts(101)], 12, 11),
        combined(vec![pts(101)], 1, -1),
        combined(vec![pts(101), Up::Pts(i32::MIN, 1)], 11, 11),
    ];
    let count = bad.len() as u64;
    for updates in bad {
        let before = h.engine.stats();
        assert!(h.engine.handle_updates(h.now, updates).is_err());
        h.pump();
        assert_eq!(h.engine.state(), Some(STATE));
        assert!(h.delivered.is_empty());
        assert_eq!(h.engine.stats().updates_delivered, before.updates_delivered);
        // Refused, not forgotten: the common difference is fetched.
        let request = h.take_request();
        assert!(matches!(
            request.kind,
            RequestKind::GetDifference { pts: 100, .. }
        ));
        let empty = Difference::Empty {
            date: STATE.date,
            seq: STATE.seq,
        };
        h.engine
            .handle_difference(h.now, request.id, empty)
            .unwrap();
        h.pump();
        assert!(h.requests.is_empty(), "{:?}", h.requests);
    }
    assert_eq!(h.engine.stats().pushes_refused, count);
    // A channel whose own numbers are bad and that was not tracked: nobody knows where it
    // stands, and the application is told.
    assert!(h.notes.contains(&Output::Notice(Notice::ChannelTooLong {
        channel_id: 1,
        pts: None
    })));
    let affected = Affected::Common {
        pts: 3,
        pts_count: 4,
    };
    assert!(h.engine.handle_affected(h.now, affected).is_err());
    h.pump();
    assert!(matches!(
        h.take_request().kind,
        RequestKind::GetDifference { pts: 100, .. }
    ));
}

#[test]
fn a_refused_container_recovers_every_sequence_it_names() {
    let mut h = Harness::ready_with(EngineConfig::default(), [(7, 10)]);
    let container = combined(
        vec![
            pts(101),
            Up::Chan(7, 11, 1),
            Up::Chan(8, 31, 1),
            Up::Pts(-1, 1),
        ],
        11,
        11,
    );
    assert!(h.engine.handle_updates(h.now, container).is_err());
    h.pump();
    assert!(h.take_delivered().is_empty());
    let kinds: Vec<RequestKind> = h.requests.drain(..).map(|r| r.kind).collect();
    assert!(matches!(
        kinds[0],
        RequestKind::GetDifference { pts: 100, .. }
    ));
    // The tracked channel from its pts, the new one from where its good update starts.
    assert_eq!(
        kinds[1..],
        [
            RequestKind::GetChannelDifference {
                channel_id: 7,
                pts: 10,
                limit: 100
            },
            RequestKind::GetChannelDifference {
                channel_id: 8,
                pts: 30,
                limit: 100
            },
        ]
    );
}

#[test]
fn a_far_future_push_is_discarded_by_the_final_answer() {
    let mut h = Harness::ready_with(EngineConfig::default(), [(7, 10)]);
    h.push(Up::Pts(i32::MAX, 1));
    h.push(Up::Chan(7, i32::MAX - 5, 1));
    h.fire_next();
    let mut requests: Vec<Request> = h.requests.drain(..).collect();
    requests.sort_by_key(|r| matches!(r.kind, RequestKind::GetChannelDifference { .. }));
    let [common, channel] = &requests[..] else {
        panic!("{requests:?}")
    };
    // A push that arrives while the requests are in flight may be newer than the answers:
    // it is kept.
    h.push(pts(102));
    let state = State { pts: 101, ..STATE };
    h.engine
        .handle_difference(h.now, common.id, difference(vec![pts(101)], state))
        .unwrap();
    h.engine
        .handle_channel_difference(h.now, channel.id, channel_difference(7, vec![], 10, true))
        .unwrap();
    h.pump();
    assert_eq!(h.take_delivered(), [pts(101), pts(102)]);
    assert_eq!(h.engine.stats().updates_discarded, 2);
    assert_eq!(h.engine.stats().buffered_now, 0);
    // Nothing reopens a gap: the engine is idle, and no deadline but the idle rule is left.
    assert!(h.engine.is_idle());
    assert!(h.requests.is_empty());
    let next = h.engine.poll_timeout().unwrap();
    assert!(next > h.now + Duration::from_secs(60), "{:?}", next - h.now);
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

#[test]
fn channel_too_long_delivers_its_latest_messages_after_the_notice() {
    let mut h = Harness::ready_with(EngineConfig::default(), [(7, 10)]);
    h.engine.request_channel_difference(7).unwrap();
    h.pump();
    let request = h.take_request();
    let too_long = ChannelDifference {
        channel_id: 7,
        kind: ChannelDifferenceKind::TooLong {
            pts: 500,
            updates: vec![Up::Plain(499), Up::Plain(500)],
            entities: Ents::default(),
            timeout: None,
        },
    };
    h.engine
        .handle_channel_difference(h.now, request.id, too_long)
        .unwrap();
    let mut outputs = Vec::new();
    while let Some(output) = h.engine.poll_output() {
        outputs.push(output);
    }
    let notice = outputs
        .iter()
        .position(|o| {
            matches!(
                o,
                Output::Notice(Notice::ChannelTooLong {
                    channel_id: 7,
                    pts: Some(500)
                })
            )
        })
        .expect("the notice");
    let delivery = outputs
        .iter()
        .position(
            |o| matches!(o, Output::Deliver(b) if b.updates == [Up::Plain(499), Up::Plain(500)]),
        )
        .expect("the latest messages");
    assert!(notice < delivery, "{outputs:?}");
    assert_eq!(h.engine.channel_pts(7), Some(500));
}

#[test]
fn malformed_replies_are_refused_and_change_nothing() {
    let mut h = Harness::ready_with(EngineConfig::default(), [(7, 10)]);
    let stranger = RequestId(999);
    assert_eq!(
        h.engine.handle_state(h.now, stranger, STATE),
        Err(Error::UnknownRequest(stranger))
    );
    assert_eq!(
        h.engine
            .handle_failure(h.now, stranger, Failure::Retry { after: None }),
        Err(Error::UnknownRequest(stranger))
    );

    h.push(pts(102));
    h.fire_next();
    let request = h.take_request();
    // Wrong kind of reply, and states that move backwards.
    assert!(matches!(
        h.engine.handle_state(h.now, request.id, STATE),
        Err(Error::UnexpectedReply { .. })
    ));
    assert!(matches!(
        h.engine.handle_channel_difference(
            h.now,
            request.id,
            channel_difference(7, vec![], 10, true)
        ),
        Err(Error::UnexpectedReply { .. })
    ));
    for state in [
        State { pts: 99, ..STATE },
        State { qts: 1, ..STATE },
        State { seq: 2, ..STATE },
    ] {
        assert!(matches!(
            h.engine
                .handle_difference(h.now, request.id, difference(vec![], state)),
            Err(Error::Regression { .. })
        ));
    }
    assert!(matches!(
        h.engine
            .handle_difference(h.now, request.id, Difference::TooLong { pts: 3 }),
        Err(Error::Regression { .. })
    ));
    assert!(matches!(
        h.engine
            .handle_difference(h.now, request.id, Difference::Empty { date: 0, seq: 1 }),
        Err(Error::Regression { .. })
    ));
    assert!(matches!(
        h.engine
            .handle_difference(h.now, request.id, difference(vec![Up::Qts(-1)], STATE)),
        Err(Error::InvalidNumber { .. })
    ));
    assert!(matches!(
        h.engine
            .handle_failure(h.now, request.id, Failure::ChannelInaccessible),
        Err(Error::UnexpectedReply { .. })
    ));
    assert_eq!(h.engine.state(), Some(STATE));
    assert!(h.take_delivered().is_empty());
    // The request is still awaited, and a correct reply is accepted.
    h.engine
        .handle_difference(
            h.now,
            request.id,
            difference(vec![pts(101), pts(102)], State { pts: 102, ..STATE }),
        )
        .unwrap();
    h.pump();
    assert_eq!(h.take_delivered(), [pts(101), pts(102)]);
    // A reply to an answered request is refused.
    assert_eq!(
        h.engine
            .handle_difference(h.now, request.id, Difference::Empty { date: 0, seq: 10 }),
        Err(Error::UnknownRequest(request.id))
    );

    h.push(Up::Chan(7, 12, 1));
    h.fire_next();
    let channel = h.take_request();
    assert!(matches!(
        h.engine.handle_channel_difference(
            h.now,
            channel.id,
            channel_difference(8, vec![], 12, true)
        ),
        Err(Error::ChannelMismatch {
            expected: 7,
            received: 8,
            ..
        })
    ));
    assert!(matches!(
        h.engine.handle_channel_difference(
            h.now,
            channel.id,
            channel_difference(7, vec![], 9, true)
        ),
        Err(Error::Regression { .. })
    ));
    assert_eq!(h.engine.channel_pts(7), Some(10));
    h.engine
        .handle_channel_difference(
            h.now,
            channel.id,
            channel_difference(7, vec![Up::Chan(7, 11, 1), Up::Chan(7, 12, 1)], 12, true),
        )
        .unwrap();
    h.pump();
    assert_eq!(h.take_delivered(), [Up::Chan(7, 11, 1), Up::Chan(7, 12, 1)]);
}

#[test]
fn malformed_stored_state_is_refused() {
    let now = std::time::Instant::now();
    let negative = State { pts: -1, ..STATE };
    assert!(Engine::<Up, Ents>::from_state(EngineConfig::default(), now, negative, []).is_err());
    assert!(Engine::<Up, Ents>::from_state(EngineConfig::default(), now, STATE, [(0, 1)]).is_err());
    assert!(
        Engine::<Up, Ents>::from_state(EngineConfig::default(), now, STATE, [(1, -1)]).is_err()
    );
}

#[test]
fn forgetting_a_channel_with_a_request_in_flight() {
    let mut h = Harness::ready_with(EngineConfig::default(), [(7, 10)]);
    h.push(Up::ChanTooLong(7, None));
    let request = h.take_request();
    h.engine.forget_channel(7);
    h.pump();
    assert_eq!(h.commits.last().unwrap().removed_channels, [7]);
    assert_eq!(
        h.engine.handle_channel_difference(
            h.now,
            request.id,
            channel_difference(7, vec![], 11, true)
        ),
        Err(Error::UnknownRequest(request.id))
    );
}

// Regressions found by the property tests against the simulated server.

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
    h.engine
        .handle_failure(h.now, first.id, Failure::Retry { after: None })
        .unwrap();
    h.pump();
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
    h.engine
        .handle_failure(h.now, third.id, Failure::Retry { after: None })
        .unwrap();
    h.pump();
    assert_eq!(
        h.engine.poll_timeout(),
        Some(h.now + Duration::from_millis(500))
    );
}
