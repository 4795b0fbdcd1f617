//! Channel sequences: their own differences, too-long, open channels and hashes.

use std::time::Duration;

use crate::common::{
    Ents, Harness, STATE, Up, channel_difference, difference, empty_channel_difference, pts,
};
use sync_core::{
    ChannelCommit, ChannelDifference, ChannelDifferenceKind, ChannelHash, EngineConfig, Error,
    Failure, Notice, Output, RequestKind, State, Updates,
};

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
fn a_channel_first_seen_in_a_push_starts_where_the_server_confirms() {
    let mut h = Harness::ready();
    h.push_all([Up::Chan(3, 20, 1), Up::Chan(3, 21, 1)]);
    // A pushed pts is only a claim: nothing applies until the server answers from it.
    assert!(h.take_delivered().is_empty());
    assert!(h.commits.is_empty());
    let request = h.take_request();
    assert_eq!(
        request.kind,
        RequestKind::GetChannelDifference {
            channel_id: 3,
            pts: 19,
            limit: 100
        }
    );
    h.engine
        .handle_channel_difference(
            h.now,
            request.id,
            channel_difference(3, vec![Up::Chan(3, 20, 1)], 20, true),
        )
        .unwrap();
    h.pump();
    // The first update came by the difference, the second was waiting for it: each once.
    assert_eq!(h.take_delivered(), [Up::Chan(3, 20, 1), Up::Chan(3, 21, 1)]);
    assert_eq!(h.engine.channel_pts(3), Some(21));
    h.push(Up::Chan(3, 22, 1));
    assert_eq!(h.take_delivered(), [Up::Chan(3, 22, 1)]);
    assert!(h.requests.is_empty());
}

#[test]
fn a_channel_first_seen_in_a_difference_starts_its_sequence() {
    let mut h = Harness::ready();
    h.engine.request_difference(h.now);
    h.pump();
    let request = h.take_request();
    h.engine
        .handle_difference(
            h.now,
            request.id,
            difference(vec![Up::Chan(3, 20, 1)], State { pts: 100, ..STATE }),
        )
        .unwrap();
    h.pump();
    assert_eq!(h.take_delivered(), [Up::Chan(3, 20, 1)]);
    assert_eq!(h.engine.channel_pts(3), Some(20));
    assert!(h.requests.is_empty());
}

#[test]
fn a_verified_channel_still_refuses_a_lower_pts() {
    let mut h = Harness::ready();
    h.push(Up::Chan(3, 20, 1));
    let request = h.take_request();
    h.engine
        .handle_channel_difference(h.now, request.id, empty_channel_difference(3, 20, None))
        .unwrap();
    h.pump();
    h.engine.open_channel(3).unwrap();
    h.pump();
    let request = h.take_request();
    let lower = empty_channel_difference(3, 12, None);
    assert!(matches!(
        h.engine.handle_channel_difference(h.now, request.id, lower),
        Err(Error::Regression { .. })
    ));
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
        .handle_channel_difference(h.now, first.id, empty_channel_difference(1, 10, None))
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
fn open_channels_are_polled_on_the_server_hint() {
    let mut h = Harness::ready_with(EngineConfig::default(), [(7, 10)]);
    h.engine.open_channel(7).unwrap();
    h.pump();
    let request = h.take_request();
    h.engine
        .handle_channel_difference(h.now, request.id, empty_channel_difference(7, 10, Some(20)))
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
        .handle_channel_difference(h.now, request.id, empty_channel_difference(7, 10, Some(20)))
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
