//! `updates.State`, `updates.Difference`, `updates.ChannelDifference` → engine inputs.

use sync_core::{Affected, ChannelDifferenceKind, Difference, State};
use sync_grammers::tl::{self, Serializable};
use sync_grammers::{ConvertError, TlUpdate, channel_difference, decode, difference, state};

use crate::common::*;

fn tl_state(pts: i32, qts: i32, date: i32, seq: i32) -> tl::enums::updates::State {
    tl::types::updates::State {
        pts,
        qts,
        date,
        seq,
        unread_count: 3,
    }
    .into()
}

fn encrypted() -> tl::enums::EncryptedMessage {
    tl::types::EncryptedMessageService {
        random_id: 1,
        chat_id: 2,
        date: 3,
        bytes: vec![9],
    }
    .into()
}

#[test]
fn get_state_reply() {
    let reply = tl_state(10, 20, 30, 40);
    assert_eq!(
        state(decode(&reply.to_bytes()).unwrap()),
        State {
            pts: 10,
            qts: 20,
            date: 30,
            seq: 40
        }
    );
}

#[test]
fn empty_and_too_long_differences() {
    let empty = tl::types::updates::DifferenceEmpty { date: 5, seq: 6 }.into();
    assert_eq!(difference(empty), Difference::Empty { date: 5, seq: 6 });
    let too_long = tl::types::updates::DifferenceTooLong { pts: 900 }.into();
    assert_eq!(difference(too_long), Difference::TooLong { pts: 900 });
}

#[test]
fn difference_wraps_messages_then_other_updates() {
    let private = message(1, user_peer(5));
    let in_channel = message(2, channel_peer(7));
    let full = tl::types::updates::Difference {
        new_messages: vec![private.clone().into(), in_channel.clone().into()],
        new_encrypted_messages: vec![encrypted()],
        other_updates: vec![delete_messages(12, 1)],
        chats: vec![channel(7, Some(77), false)],
        users: vec![user(5, Some(55), false)],
        state: tl_state(12, 4, 100, 8),
    };
    let expect_updates: Vec<tl::enums::Update> = vec![
        tl::types::UpdateNewMessage {
            message: private.into(),
            pts: 0,
            pts_count: 0,
        }
        .into(),
        tl::types::UpdateNewChannelMessage {
            message: in_channel.into(),
            pts: 0,
            pts_count: 0,
        }
        .into(),
        tl::types::UpdateNewEncryptedMessage {
            message: encrypted(),
            qts: 0,
        }
        .into(),
        delete_messages(12, 1),
    ];
    // Through bytes, as the reply arrives.
    let bytes = tl::enums::updates::Difference::from(full.clone()).to_bytes();
    let Difference::Difference {
        updates,
        entities: got_entities,
        state: got_state,
        slice,
    } = difference(decode(&bytes).unwrap())
    else {
        panic!("expected a difference")
    };
    assert_eq!(
        updates
            .into_iter()
            .map(TlUpdate::into_inner)
            .collect::<Vec<_>>(),
        expect_updates
    );
    assert_eq!(
        got_entities,
        entities(full.users.clone(), full.chats.clone())
    );
    assert_eq!(
        got_state,
        State {
            pts: 12,
            qts: 4,
            date: 100,
            seq: 8
        }
    );
    assert!(!slice);
    // Wrapped messages carry no position: the difference's state covers them.
    assert!(pts_of(&expect_updates[..3]).iter().all(|&p| p == 0));
}

#[test]
fn slice_uses_its_intermediate_state() {
    let slice = tl::types::updates::DifferenceSlice {
        new_messages: vec![],
        new_encrypted_messages: vec![],
        other_updates: vec![],
        chats: vec![],
        users: vec![],
        intermediate_state: tl_state(50, 1, 2, 3),
    };
    let Difference::Difference { state, slice, .. } = difference(slice.into()) else {
        panic!("expected a difference")
    };
    assert!(slice);
    assert_eq!(state.pts, 50);
}

fn dialog(peer: tl::enums::Peer, pts: Option<i32>) -> tl::enums::Dialog {
    tl::types::Dialog {
        pinned: false,
        unread_mark: false,
        view_forum_as_messages: false,
        peer,
        top_message: 1,
        read_inbox_max_id: 0,
        read_outbox_max_id: 0,
        unread_count: 0,
        unread_mentions_count: 0,
        unread_reactions_count: 0,
        unread_poll_votes_count: 0,
        notify_settings: tl::types::PeerNotifySettings {
            show_previews: None,
            silent: None,
            mute_until: None,
            ios_sound: None,
            android_sound: None,
            other_sound: None,
            stories_muted: None,
            stories_hide_sender: None,
            stories_ios_sound: None,
            stories_android_sound: None,
            stories_other_sound: None,
        }
        .into(),
        pts,
        draft: None,
        folder_id: None,
        ttl_period: None,
    }
    .into()
}

#[test]
fn channel_difference_constructors() {
    let empty = tl::types::updates::ChannelDifferenceEmpty {
        r#final: true,
        pts: 40,
        timeout: Some(30),
    };
    assert_eq!(
        channel_difference(7, empty.into()).unwrap().kind,
        ChannelDifferenceKind::Empty {
            pts: 40,
            is_final: true,
            timeout: Some(30)
        }
    );

    let news = tl::types::updates::ChannelDifference {
        r#final: false,
        pts: 45,
        timeout: None,
        new_messages: vec![message(44, channel_peer(7)).into()],
        other_updates: vec![new_channel_message(7, 45)],
        chats: vec![channel(7, Some(77), false)],
        users: vec![],
    };
    let bytes = tl::enums::updates::ChannelDifference::from(news.clone()).to_bytes();
    let converted = channel_difference(7, decode(&bytes).unwrap()).unwrap();
    assert_eq!(converted.channel_id, 7);
    let ChannelDifferenceKind::Difference {
        updates,
        entities: got_entities,
        pts,
        is_final,
        timeout,
    } = converted.kind
    else {
        panic!("expected a difference")
    };
    assert_eq!((pts, is_final, timeout), (45, false, None));
    assert_eq!(got_entities, entities(vec![], news.chats.clone()));
    let updates: Vec<_> = updates.into_iter().map(TlUpdate::into_inner).collect();
    assert_eq!(
        updates,
        vec![
            tl::types::UpdateNewChannelMessage {
                message: message(44, channel_peer(7)).into(),
                pts: 0,
                pts_count: 0
            }
            .into(),
            new_channel_message(7, 45),
        ]
    );

    let too_long = tl::types::updates::ChannelDifferenceTooLong {
        r#final: true,
        timeout: Some(5),
        dialog: dialog(channel_peer(7), Some(500)),
        messages: vec![message(500, channel_peer(7)).into()],
        chats: vec![channel(7, Some(77), false)],
        users: vec![],
    };
    assert_eq!(
        channel_difference(7, too_long.clone().into()).unwrap().kind,
        ChannelDifferenceKind::TooLong {
            pts: 500,
            // The latest messages come along, outside the sequence.
            updates: vec![TlUpdate::from(tl::enums::Update::from(
                tl::types::UpdateNewChannelMessage {
                    message: message(500, channel_peer(7)).into(),
                    pts: 0,
                    pts_count: 0
                }
            ))],
            entities: entities(vec![], too_long.chats.clone()),
            timeout: Some(5)
        }
    );

    // Shapes that cannot reset the channel are typed errors.
    let other_peer = tl::types::updates::ChannelDifferenceTooLong {
        dialog: dialog(channel_peer(8), Some(500)),
        ..too_long.clone()
    };
    assert_eq!(
        channel_difference(7, other_peer.into()),
        Err(ConvertError::UnexpectedDialog(7))
    );
    let no_pts = tl::types::updates::ChannelDifferenceTooLong {
        dialog: dialog(channel_peer(7), None),
        ..too_long.clone()
    };
    assert_eq!(
        channel_difference(7, no_pts.into()),
        Err(ConvertError::DialogWithoutPts(7))
    );
    let folder = tl::types::updates::ChannelDifferenceTooLong {
        dialog: tl::types::DialogFolder {
            pinned: false,
            folder: tl::types::Folder {
                autofill_new_broadcasts: false,
                autofill_public_groups: false,
                autofill_new_correspondents: false,
                id: 1,
                title: "f".into(),
                photo: None,
            }
            .into(),
            peer: channel_peer(7),
            top_message: 1,
            unread_muted_peers_count: 0,
            unread_unmuted_peers_count: 0,
            unread_muted_messages_count: 0,
            unread_unmuted_messages_count: 0,
        }
        .into(),
        ..too_long
    };
    assert_eq!(
        channel_difference(7, folder.into()),
        Err(ConvertError::UnexpectedDialog(7))
    );
}

#[test]
fn affected_replies() {
    let messages: tl::enums::messages::AffectedMessages = tl::types::messages::AffectedMessages {
        pts: 20,
        pts_count: 3,
    }
    .into();
    assert_eq!(
        sync_grammers::affected_messages(&messages, None),
        Affected::Common {
            pts: 20,
            pts_count: 3
        }
    );
    assert_eq!(
        sync_grammers::affected_messages(&messages, Some(7)),
        Affected::Channel {
            channel_id: 7,
            pts: 20,
            pts_count: 3
        }
    );
    let history: tl::enums::messages::AffectedHistory = tl::types::messages::AffectedHistory {
        pts: 21,
        pts_count: 1,
        offset: 0,
    }
    .into();
    assert_eq!(
        sync_grammers::affected_history(&history, None),
        Affected::Common {
            pts: 21,
            pts_count: 1
        }
    );
}
