//! Unknown senders and channels → refetch; entities → channel access hashes.

use std::time::Instant;

use sync_core::{ChannelHash, Entities, Output, State, Updates};
use sync_grammers::tl;
use sync_grammers::{ChannelRefetch, Converter, Incoming, MentionedPeer, Refetch, TlUpdate};

use crate::common::*;

#[test]
fn short_message_from_unknown_user_is_withheld() {
    let converter = Converter::new(Cache::knowing(&[MentionedPeer::User(1)]));
    assert!(matches!(
        converter.updates(short_message(1, 10).into()),
        Incoming::Updates(Updates::Short { .. })
    ));
    assert_eq!(
        withheld(converter.updates(short_message(2, 10).into())),
        (None, common_refetch())
    );
    assert_eq!(
        converter.cache().asked.borrow().as_slice(),
        [MentionedPeer::User(1), MentionedPeer::User(2)]
    );
}

#[test]
fn closures_answer_known() {
    let converter =
        Converter::new(|peer: MentionedPeer| matches!(peer, MentionedPeer::User(id) if id < 10));
    assert!(matches!(
        converter.updates(short_message(9, 10).into()),
        Incoming::Updates(_)
    ));
    assert!(matches!(
        converter.updates(short_message(10, 10).into()),
        Incoming::NeedsDifference { .. }
    ));
}

#[test]
fn channel_message_with_unknown_channel_refetches_that_channel() {
    let converter = Converter::new(Cache::knowing(&[]));
    let short = tl::types::UpdateShort {
        update: tl::types::UpdateNewChannelMessage {
            message: message(1, channel_peer(7)).into(),
            pts: 30,
            pts_count: 2,
        }
        .into(),
        date: 1,
    };
    assert_eq!(
        withheld(converter.updates(short.into())),
        (
            None,
            Refetch {
                common: false,
                channels: vec![ChannelRefetch {
                    channel_id: 7,
                    pts_before: 28
                }]
            }
        )
    );
}

#[test]
fn container_entities_resolve_but_min_ones_do_not() {
    let converter = Converter::new(Cache::knowing(&[]));
    let container = |users| tl::types::Updates {
        updates: vec![new_message(user_peer(5), 10, 1)],
        users,
        chats: vec![],
        date: 1,
        seq: 0,
    };
    assert!(matches!(
        converter.updates(container(vec![user(5, Some(55), false)]).into()),
        Incoming::Updates(_)
    ));
    // A min user (or one without a hash) is not enough: the cache is asked, and says no.
    for weak in [user(5, Some(55), true), user(5, None, false)] {
        let (rest, refetch) = withheld(converter.updates(container(vec![weak]).into()));
        assert_eq!(refetch, common_refetch());
        let Some(Updates::Combined { updates, .. }) = rest else {
            panic!("the container is still fed")
        };
        assert!(updates.is_empty());
    }
}

#[test]
fn only_unknown_numbered_updates_are_withheld_from_a_container() {
    let converter = Converter::new(Cache::knowing(&[MentionedPeer::User(1)]));
    let kept_unordered = new_message(user_peer(2), 0, 0); // no position: cannot be refetched
    let updates = vec![
        new_message(user_peer(1), 10, 1),
        new_message(user_peer(2), 11, 1),
        typing(2),
        kept_unordered.clone(),
        new_channel_message(7, 40),
        new_channel_message(7, 41),
        new_message(user_peer(1), 12, 1),
    ];
    let container = tl::types::UpdatesCombined {
        updates,
        users: vec![],
        chats: vec![],
        date: 5,
        seq_start: 3,
        seq: 4,
    };
    let (rest, refetch) = withheld(converter.updates(container.into()));
    assert_eq!(
        refetch,
        Refetch {
            common: true,
            channels: vec![ChannelRefetch {
                channel_id: 7,
                pts_before: 39
            }]
        }
    );
    let Some(Updates::Combined {
        updates,
        date,
        seq_start,
        seq,
        ..
    }) = rest
    else {
        panic!("the rest is fed")
    };
    assert_eq!((date, seq_start, seq), (5, 3, 4));
    assert_eq!(
        updates
            .into_iter()
            .map(TlUpdate::into_inner)
            .collect::<Vec<_>>(),
        vec![
            new_message(user_peer(1), 10, 1),
            typing(2),
            kept_unordered,
            new_message(user_peer(1), 12, 1),
        ]
    );
}

#[test]
fn channel_hashes_mark_min_and_hashless_channels() {
    let e = entities(
        vec![user(1, Some(11), false)],
        vec![
            channel(7, Some(77), false),
            channel(8, Some(88), true),
            channel(9, None, false),
            channel_forbidden(10, 100),
            tl::types::ChatEmpty { id: 11 }.into(),
        ],
    );
    let hashes: Vec<ChannelHash> = e.channel_hashes().collect();
    let hash = |channel_id, access_hash, min| ChannelHash {
        channel_id,
        access_hash,
        min,
    };
    assert_eq!(
        hashes,
        [
            hash(7, 77, false),
            hash(8, 88, true),
            hash(9, 0, true),
            hash(10, 100, false)
        ]
    );
    assert!(!e.is_empty());
    assert!(entities(vec![], vec![]).is_empty());
    assert!(e.has_full_channel(7) && !e.has_full_channel(8) && !e.has_full_channel(9));
    assert!(e.has_full_user(1) && !e.has_full_user(2));
}

#[test]
fn a_min_channel_never_overwrites_a_known_hash() {
    let now = Instant::now();
    let mut engine = engine_at(
        now,
        State {
            pts: 1,
            qts: 0,
            date: 1,
            seq: 0,
        },
    );
    let converter = Converter::new(sync_grammers::AllKnown);
    let mut learned = Vec::new();
    for chat in [
        channel(7, Some(77), false),
        channel(7, Some(12), true),
        channel(7, None, false),
    ] {
        let container = tl::types::Updates {
            updates: vec![typing(1)],
            users: vec![],
            chats: vec![chat],
            date: 2,
            seq: 0,
        };
        converter
            .updates(container.into())
            .apply(&mut engine, now)
            .unwrap();
        while let Some(output) = engine.poll_output() {
            match output {
                Output::AccessHashes(hashes) => learned.extend(hashes),
                Output::Deliver(batch) => engine.ack(batch.id).unwrap(),
                _ => {}
            }
        }
    }
    assert_eq!(
        learned,
        [ChannelHash {
            channel_id: 7,
            access_hash: 77,
            min: false
        }]
    );
}
