//! The adapter driving a real engine.

use std::collections::HashMap;
use std::time::Instant;

use sync_core::{RequestKind, State};
use sync_grammers::tl;
use sync_grammers::{
    AllKnown, Converter, MentionedPeer, TlRequest, channel_difference, difference,
};

use crate::common::*;

fn start() -> (Instant, sync_grammers::TlEngine) {
    let now = Instant::now();
    let engine = engine_at(
        now,
        State {
            pts: 10,
            qts: 0,
            date: 1,
            seq: 0,
        },
    );
    (now, engine)
}

#[test]
fn swapped_pairs_are_delivered_in_order() {
    let (now, mut engine) = start();
    let converter = Converter::new(AllKnown);
    let mut delivered = Vec::new();
    for pair in 0..50 {
        let first = 11 + 2 * pair;
        for pts in [first + 1, first] {
            converter
                .updates(short_message(5, pts).into())
                .apply(&mut engine, now)
                .unwrap();
            delivered.extend(drain(&mut engine).0);
        }
    }
    assert_eq!(pts_of(&delivered), (11..111).collect::<Vec<_>>());
    assert_eq!(engine.stats().gaps_filled_by_wait, 50);
}

#[test]
fn withheld_update_is_fetched_by_difference() {
    let (now, mut engine) = start();
    let converter = Converter::new(|peer: MentionedPeer| peer != MentionedPeer::User(666));
    converter
        .updates(short_message(5, 11).into())
        .apply(&mut engine, now)
        .unwrap();
    converter
        .updates(short_message(666, 12).into())
        .apply(&mut engine, now)
        .unwrap();
    converter
        .updates(short_message(5, 13).into())
        .apply(&mut engine, now)
        .unwrap();
    let (delivered, requests) = drain(&mut engine);
    // 13 waits behind the withheld 12, which is fetched at once.
    assert_eq!(pts_of(&delivered), [11]);
    let [request] = requests[..] else {
        panic!("expected one request, got {requests:?}")
    };
    assert!(matches!(
        request.kind,
        RequestKind::GetDifference { pts: 11, .. }
    ));

    // The difference brings 12 (and 13) with the user's full hash.
    let reply = tl::types::updates::Difference {
        new_messages: vec![
            message(12, user_peer(666)).into(),
            message(13, user_peer(5)).into(),
        ],
        new_encrypted_messages: vec![],
        other_updates: vec![],
        chats: vec![],
        users: vec![user(666, Some(6), false)],
        state: tl::types::updates::State {
            pts: 13,
            qts: 0,
            date: 2,
            seq: 0,
            unread_count: 0,
        }
        .into(),
    };
    engine
        .handle_difference(now, request.id, difference(reply.into()))
        .unwrap();
    let (delivered, _) = drain(&mut engine);
    let ids: Vec<i32> = delivered
        .iter()
        .map(|u| match u {
            tl::enums::Update::NewMessage(m) => m.message.id(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(ids, [12, 13]);
    assert_eq!(engine.state().map(|s| s.pts), Some(13));
}

#[test]
fn withheld_channel_update_tracks_and_fetches_the_channel() {
    let (now, mut engine) = start();
    let converter = Converter::new(|peer: MentionedPeer| peer != MentionedPeer::Channel(7));
    let short = tl::types::UpdateShort {
        update: new_channel_message(7, 41),
        date: 2,
    };
    converter
        .updates(short.into())
        .apply(&mut engine, now)
        .unwrap();
    let (delivered, requests) = drain(&mut engine);
    assert!(delivered.is_empty());
    let [request] = requests[..] else {
        panic!("expected one request, got {requests:?}")
    };
    assert_eq!(
        request.kind,
        RequestKind::GetChannelDifference {
            channel_id: 7,
            pts: 40,
            limit: 100
        }
    );
    // The request is built from the stored hash, and its reply converted back.
    let hashes = HashMap::from([(7, 77)]);
    let Ok(TlRequest::GetChannelDifference { channel_id, .. }) =
        sync_grammers::request(&request, &hashes)
    else {
        panic!("expected getChannelDifference")
    };
    let reply = tl::types::updates::ChannelDifference {
        r#final: true,
        pts: 41,
        timeout: None,
        new_messages: vec![message(41, channel_peer(7)).into()],
        other_updates: vec![],
        chats: vec![channel(7, Some(77), false)],
        users: vec![],
    };
    engine
        .handle_channel_difference(
            now,
            request.id,
            channel_difference(channel_id, reply.into()).unwrap(),
        )
        .unwrap();
    let (delivered, _) = drain(&mut engine);
    assert_eq!(delivered.len(), 1);
    assert_eq!(engine.channel_pts(7), Some(41));
}

#[test]
fn short_sent_message_closes_its_place_in_the_sequence() {
    let (now, mut engine) = start();
    let converter = Converter::new(AllKnown);
    // 12 arrives first and waits for 11, which is the application's own send.
    converter
        .updates(short_message(5, 12).into())
        .apply(&mut engine, now)
        .unwrap();
    assert!(drain(&mut engine).0.is_empty());
    let sent = tl::types::UpdateShortSentMessage {
        out: true,
        id: 1,
        pts: 11,
        pts_count: 1,
        date: 2,
        media: None,
        entities: None,
        ttl_period: None,
    };
    converter
        .updates(sent.into())
        .apply(&mut engine, now)
        .unwrap();
    let (delivered, requests) = drain(&mut engine);
    assert_eq!(pts_of(&delivered), [12]);
    assert!(requests.is_empty());
    assert_eq!(engine.state().map(|s| s.pts), Some(12));
}

#[test]
fn channel_too_long_in_a_container_fetches_the_channel() {
    let (now, mut engine) = start();
    engine.track_channel(9, 100).unwrap();
    let converter = Converter::new(AllKnown);
    let container = tl::types::Updates {
        updates: vec![
            tl::types::UpdateChannelTooLong {
                channel_id: 9,
                pts: Some(150),
            }
            .into(),
        ],
        users: vec![],
        chats: vec![channel(9, Some(99), false)],
        date: 3,
        seq: 0,
    };
    converter
        .updates(container.into())
        .apply(&mut engine, now)
        .unwrap();
    let (_, requests) = drain(&mut engine);
    assert!(requests.iter().any(|r| r.kind
        == RequestKind::GetChannelDifference {
            channel_id: 9,
            pts: 100,
            limit: 100
        }));
}
