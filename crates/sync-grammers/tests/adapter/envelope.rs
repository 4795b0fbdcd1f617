//! `Updates` constructors → the engine's envelope, by hand and through bytes.

use sync_core::{Affected, Updates};
use sync_grammers::tl::{self, Serializable};
use sync_grammers::{AllKnown, ConvertError, Converter, Incoming, TlUpdate};

use crate::common::*;

fn fed(incoming: Incoming) -> Updates<TlUpdate, sync_grammers::TlEntities> {
    match incoming {
        Incoming::Updates(updates) => updates,
        other => panic!("expected updates to feed, got {other:?}"),
    }
}

fn short_update(incoming: Incoming) -> (tl::enums::Update, i32) {
    match fed(incoming) {
        Updates::Short { update, date } => (update.into_inner(), date),
        other => panic!("expected a short envelope, got {other:?}"),
    }
}

fn expanded_message(update: &tl::enums::Update) -> (&tl::types::Message, i32, i32) {
    let tl::enums::Update::NewMessage(u) = update else {
        panic!("expected updateNewMessage, got {update:?}")
    };
    let tl::enums::Message::Message(m) = &u.message else {
        panic!("expected a message")
    };
    (m, u.pts, u.pts_count)
}

#[test]
fn too_long() {
    let converter = Converter::new(AllKnown);
    assert_eq!(
        fed(converter.updates(tl::enums::Updates::TooLong)),
        Updates::TooLong
    );
}

#[test]
fn short_message_becomes_private_new_message() {
    let converter = Converter::new(AllKnown).with_self_id(99);
    let mut incoming = short_message(5, 12);
    incoming.entities = Some(vec![
        tl::types::MessageEntityBold {
            offset: 0,
            length: 1,
        }
        .into(),
    ]);
    let (update, date) = short_update(converter.updates(incoming.clone().into()));
    assert_eq!(date, incoming.date);
    let (m, pts, pts_count) = expanded_message(&update);
    assert_eq!((pts, pts_count), (12, 1));
    assert_eq!(m.peer_id, user_peer(5));
    assert_eq!(m.from_id, Some(user_peer(5)));
    assert_eq!(
        (m.id, m.date, m.message.as_str()),
        (12, incoming.date, "short 12")
    );
    assert_eq!(m.entities, incoming.entities);
    assert!(!m.out);

    // Outgoing: the chat is still the partner's, the sender is the account itself.
    let outgoing = tl::types::UpdateShortMessage {
        out: true,
        ..short_message(5, 13)
    };
    let (update, _) = short_update(converter.updates(outgoing.clone().into()));
    let (m, _, _) = expanded_message(&update);
    assert_eq!(m.peer_id, user_peer(5));
    assert_eq!(m.from_id, Some(user_peer(99)));
    assert!(m.out);
    // Without the own id, the sender is left out rather than guessed.
    let (update, _) = short_update(Converter::new(AllKnown).updates(outgoing.into()));
    assert_eq!(expanded_message(&update).0.from_id, None);
}

#[test]
fn short_chat_message_becomes_group_new_message() {
    let converter = Converter::new(AllKnown);
    let incoming = tl::types::UpdateShortChatMessage {
        pts_count: 2,
        ..short_chat_message(5, 300, 14)
    };
    let (update, _) = short_update(converter.updates(incoming.into()));
    let (m, pts, pts_count) = expanded_message(&update);
    assert_eq!((pts, pts_count), (14, 2));
    assert_eq!(m.peer_id, chat_peer(300));
    assert_eq!(m.from_id, Some(user_peer(5)));
}

#[test]
fn update_short_keeps_its_update() {
    let converter = Converter::new(AllKnown);
    let short = tl::types::UpdateShort {
        update: delete_messages(20, 2),
        date: 77,
    };
    assert_eq!(
        short_update(converter.updates(short.into())),
        (delete_messages(20, 2), 77)
    );
}

#[test]
fn containers_keep_order_entities_and_seq() {
    let converter = Converter::new(AllKnown);
    let users = vec![user(5, Some(55), false)];
    let chats = vec![channel(7, Some(77), false)];
    let updates = vec![
        new_message(user_peer(5), 10, 1),
        typing(5),
        new_channel_message(7, 3),
    ];
    let combined = tl::types::UpdatesCombined {
        updates: updates.clone(),
        users: users.clone(),
        chats: chats.clone(),
        date: 100,
        seq_start: 4,
        seq: 6,
    };
    let Updates::Combined {
        updates: got,
        entities: got_entities,
        date,
        seq_start,
        seq,
    } = fed(converter.updates(combined.into()))
    else {
        panic!("expected a container")
    };
    assert_eq!(
        got.into_iter()
            .map(TlUpdate::into_inner)
            .collect::<Vec<_>>(),
        updates
    );
    assert_eq!(got_entities, entities(users.clone(), chats.clone()));
    assert_eq!((date, seq_start, seq), (100, 4, 6));

    // `updates` is a container whose seq_start equals its seq.
    let plain = tl::types::Updates {
        updates: updates.clone(),
        users,
        chats,
        date: 101,
        seq: 9,
    };
    let Updates::Combined {
        date,
        seq_start,
        seq,
        ..
    } = fed(converter.updates(plain.into()))
    else {
        panic!("expected a container")
    };
    assert_eq!((date, seq_start, seq), (101, 9, 9));
}

fn sent(pts: i32, pts_count: i32) -> tl::types::UpdateShortSentMessage {
    tl::types::UpdateShortSentMessage {
        out: true,
        id: 500,
        pts,
        pts_count,
        date: 1_700_000_500,
        media: None,
        entities: None,
        ttl_period: Some(60),
    }
}

#[test]
fn short_sent_message_advances_without_delivery() {
    let converter = Converter::new(AllKnown);
    assert_eq!(
        converter.updates(sent(30, 1).into()),
        Incoming::Affected(Affected::Common {
            pts: 30,
            pts_count: 1
        })
    );
}

#[test]
fn short_sent_message_with_its_request_becomes_a_message() {
    let converter = Converter::new(AllKnown).with_self_id(99);
    let incoming = converter.sent_message(sent(30, 1), chat_peer(300), "sent text".into());
    let (update, date) = short_update(incoming);
    assert_eq!(date, 1_700_000_500);
    let (m, pts, pts_count) = expanded_message(&update);
    assert_eq!((pts, pts_count), (30, 1));
    assert_eq!((m.id, m.message.as_str(), m.out), (500, "sent text", true));
    assert_eq!(m.peer_id, chat_peer(300));
    assert_eq!(m.from_id, Some(user_peer(99)));
    assert_eq!(m.ttl_period, Some(60));
}

/// Every constructor serialized and decoded back through the adapter's byte path gives what
/// the hand-built value gives.
#[test]
fn every_constructor_through_bytes() {
    let converter = Converter::new(AllKnown).with_self_id(99);
    let values: Vec<tl::enums::Updates> = vec![
        tl::enums::Updates::TooLong,
        short_message(5, 12).into(),
        short_chat_message(5, 300, 13).into(),
        tl::types::UpdateShort {
            update: typing(5),
            date: 1,
        }
        .into(),
        tl::types::UpdatesCombined {
            updates: vec![new_message(user_peer(5), 10, 1), new_channel_message(7, 3)],
            users: vec![user(5, Some(55), false), user(6, None, true)],
            chats: vec![channel(7, Some(77), false), channel(8, Some(88), true)],
            date: 100,
            seq_start: 4,
            seq: 6,
        }
        .into(),
        tl::types::Updates {
            updates: vec![delete_messages(11, 1)],
            users: vec![],
            chats: vec![channel_forbidden(9, 99)],
            date: 101,
            seq: 7,
        }
        .into(),
        sent(30, 2).into(),
    ];
    for value in values {
        let bytes = value.to_bytes();
        let decoded = converter.updates_from_bytes(&bytes).unwrap();
        assert_eq!(decoded, converter.updates(value.clone()), "{value:?}");
        assert_eq!(round_trip(&value), value);
    }
}

#[test]
fn undecodable_bytes_are_a_typed_error() {
    let converter = Converter::new(AllKnown);
    // Truncated: a valid constructor whose fields are cut short.
    let mut bytes = short_message(5, 12).to_bytes();
    let whole = tl::enums::Updates::from(short_message(5, 12)).to_bytes();
    bytes.truncate(3);
    assert!(matches!(
        converter.updates_from_bytes(&bytes),
        Err(ConvertError::Undecodable(_))
    ));
    assert!(matches!(
        converter.updates_from_bytes(&whole[..whole.len() - 2]),
        Err(ConvertError::Undecodable(_))
    ));
    // A constructor this layer does not know.
    assert!(matches!(
        converter.updates_from_bytes(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0]),
        Err(ConvertError::Undecodable(_))
    ));
    assert!(matches!(
        converter.updates_from_bytes(&[]),
        Err(ConvertError::Undecodable(_))
    ));
}
