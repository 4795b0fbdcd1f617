//! Malformed pushes, replies and stored state are refused whole.

use std::time::Duration;

use crate::common::{Ents, Harness, STATE, Up, channel_difference, combined, difference, pts};
use sync_core::{
    Affected, Difference, Engine, EngineConfig, Error, Failure, Notice, Output, Request, RequestId,
    RequestKind, State, Updates,
};

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
