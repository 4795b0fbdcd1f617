//! `Update` constructors → sequences.

use sync_core::{Sequence, Update};
use sync_grammers::tl;
use sync_grammers::{TlUpdate, sequence_of};

use crate::common::*;

fn common(pts: i32, pts_count: i32) -> Sequence {
    Sequence::Common { pts, pts_count }
}

fn channel(channel_id: i64, pts: i32, pts_count: i32) -> Sequence {
    Sequence::Channel {
        channel_id,
        pts,
        pts_count,
    }
}

fn web_page() -> tl::enums::WebPage {
    tl::types::WebPageEmpty { id: 1, url: None }.into()
}

#[test]
fn common_pts_constructors() {
    let cases: Vec<(tl::enums::Update, Sequence)> = vec![
        (new_message(user_peer(1), 10, 1), common(10, 1)),
        (
            tl::types::UpdateEditMessage {
                message: message(3, chat_peer(2)).into(),
                pts: 11,
                pts_count: 1,
            }
            .into(),
            common(11, 1),
        ),
        // Deleting several messages consumes several pts.
        (delete_messages(15, 3), common(15, 3)),
        (
            tl::types::UpdateReadHistoryInbox {
                folder_id: None,
                peer: user_peer(1),
                top_msg_id: None,
                max_id: 5,
                still_unread_count: 0,
                pts: 16,
                pts_count: 1,
            }
            .into(),
            common(16, 1),
        ),
        (
            tl::types::UpdateReadHistoryOutbox {
                peer: user_peer(1),
                max_id: 5,
                pts: 17,
                pts_count: 1,
            }
            .into(),
            common(17, 1),
        ),
        (
            tl::types::UpdateWebPage {
                webpage: web_page(),
                pts: 18,
                pts_count: 0,
            }
            .into(),
            common(18, 0),
        ),
        (
            tl::types::UpdateReadMessagesContents {
                messages: vec![1, 2],
                pts: 20,
                pts_count: 2,
                date: None,
            }
            .into(),
            common(20, 2),
        ),
        (
            tl::types::UpdateFolderPeers {
                folder_peers: vec![],
                pts: 21,
                pts_count: 1,
            }
            .into(),
            common(21, 1),
        ),
        (
            tl::types::UpdatePinnedMessages {
                pinned: true,
                peer: chat_peer(3),
                messages: vec![1],
                pts: 22,
                pts_count: 1,
            }
            .into(),
            common(22, 1),
        ),
    ];
    for (update, expected) in cases {
        assert_eq!(sequence_of(&update), expected, "{update:?}");
        // The wrapper reports the same, and unwraps to the same value.
        let wrapped = TlUpdate::from(update.clone());
        assert_eq!(wrapped.sequence(), expected);
        assert_eq!(wrapped.into_inner(), update);
    }
}

#[test]
fn channel_pts_constructors() {
    let cases: Vec<(tl::enums::Update, Sequence)> = vec![
        (new_channel_message(7, 30), channel(7, 30, 1)),
        (
            tl::types::UpdateEditChannelMessage {
                message: message(1, channel_peer(7)).into(),
                pts: 31,
                pts_count: 1,
            }
            .into(),
            channel(7, 31, 1),
        ),
        // A message update whose message is a channel's belongs to that channel.
        (new_message(channel_peer(8), 40, 1), channel(8, 40, 1)),
        (
            tl::types::UpdateEditMessage {
                message: message(1, channel_peer(8)).into(),
                pts: 41,
                pts_count: 1,
            }
            .into(),
            channel(8, 41, 1),
        ),
        (
            tl::types::UpdateDeleteChannelMessages {
                channel_id: 7,
                messages: vec![1, 2, 3, 4],
                pts: 35,
                pts_count: 4,
            }
            .into(),
            channel(7, 35, 4),
        ),
        (
            tl::types::UpdateChannelWebPage {
                channel_id: 7,
                webpage: web_page(),
                pts: 36,
                pts_count: 1,
            }
            .into(),
            channel(7, 36, 1),
        ),
        (
            tl::types::UpdatePinnedChannelMessages {
                pinned: false,
                channel_id: 7,
                messages: vec![1],
                pts: 37,
                pts_count: 1,
            }
            .into(),
            channel(7, 37, 1),
        ),
        // A read receipt carries a pts and no count: it consumes none.
        (
            tl::types::UpdateReadChannelInbox {
                folder_id: None,
                channel_id: 7,
                max_id: 9,
                still_unread_count: 0,
                pts: 37,
            }
            .into(),
            channel(7, 37, 0),
        ),
    ];
    for (update, expected) in cases {
        assert_eq!(sequence_of(&update), expected, "{update:?}");
    }
}

#[test]
fn channel_too_long() {
    let with_pts = tl::types::UpdateChannelTooLong {
        channel_id: 9,
        pts: Some(100),
    }
    .into();
    let without = tl::types::UpdateChannelTooLong {
        channel_id: 9,
        pts: None,
    }
    .into();
    assert_eq!(
        sequence_of(&with_pts),
        Sequence::ChannelTooLong {
            channel_id: 9,
            pts: Some(100)
        }
    );
    assert_eq!(
        sequence_of(&without),
        Sequence::ChannelTooLong {
            channel_id: 9,
            pts: None
        }
    );
}

fn business_message(qts: i32, edit: bool) -> tl::enums::Update {
    let message = message(1, user_peer(4)).into();
    if edit {
        tl::types::UpdateBotEditBusinessMessage {
            connection_id: "c".into(),
            message,
            reply_to_message: None,
            qts,
        }
        .into()
    } else {
        tl::types::UpdateBotNewBusinessMessage {
            connection_id: "c".into(),
            message,
            reply_to_message: None,
            qts,
        }
        .into()
    }
}

fn qts_updates(qts: i32) -> Vec<tl::enums::Update> {
    let invite: tl::enums::ExportedChatInvite =
        tl::enums::ExportedChatInvite::ChatInvitePublicJoinRequests;
    vec![
        tl::types::UpdateNewEncryptedMessage {
            message: tl::types::EncryptedMessageService {
                random_id: 1,
                chat_id: 2,
                date: 3,
                bytes: vec![1, 2, 3],
            }
            .into(),
            qts,
        }
        .into(),
        tl::types::UpdateMessagePollVote {
            poll_id: 1,
            peer: user_peer(1),
            options: vec![],
            positions: vec![],
            qts,
        }
        .into(),
        tl::types::UpdateChatParticipant {
            chat_id: 1,
            date: 2,
            actor_id: 3,
            user_id: 4,
            prev_participant: None,
            new_participant: None,
            invite: None,
            qts,
        }
        .into(),
        tl::types::UpdateChannelParticipant {
            via_chatlist: false,
            channel_id: 1,
            date: 2,
            actor_id: 3,
            user_id: 4,
            prev_participant: None,
            new_participant: None,
            invite: None,
            qts,
        }
        .into(),
        tl::types::UpdateBotStopped {
            user_id: 1,
            date: 2,
            stopped: true,
            qts,
        }
        .into(),
        tl::types::UpdateBotChatInviteRequester {
            peer: chat_peer(1),
            date: 2,
            user_id: 3,
            about: String::new(),
            invite,
            qts,
            query_id: None,
        }
        .into(),
        tl::types::UpdateBotChatBoost {
            peer: channel_peer(1),
            boost: tl::types::Boost {
                gift: false,
                giveaway: false,
                unclaimed: false,
                id: "b".into(),
                user_id: None,
                giveaway_msg_id: None,
                date: 1,
                expires: 2,
                used_gift_slug: None,
                multiplier: None,
                stars: None,
            }
            .into(),
            qts,
        }
        .into(),
        tl::types::UpdateBotMessageReaction {
            peer: user_peer(1),
            msg_id: 1,
            date: 2,
            actor: user_peer(2),
            old_reactions: vec![],
            new_reactions: vec![],
            qts,
        }
        .into(),
        tl::types::UpdateBotMessageReactions {
            peer: user_peer(1),
            msg_id: 1,
            date: 2,
            reactions: vec![],
            qts,
        }
        .into(),
        tl::types::UpdateBotBusinessConnect {
            connection: tl::types::BotBusinessConnection {
                disabled: false,
                connection_id: "c".into(),
                user_id: 1,
                dc_id: 2,
                date: 3,
                rights: None,
            }
            .into(),
            qts,
        }
        .into(),
        business_message(qts, false),
        business_message(qts, true),
        tl::types::UpdateBotDeleteBusinessMessage {
            connection_id: "c".into(),
            peer: user_peer(1),
            messages: vec![1],
            qts,
        }
        .into(),
        tl::types::UpdateBotPurchasedPaidMedia {
            user_id: 1,
            payload: "p".into(),
            qts,
        }
        .into(),
        tl::types::UpdateManagedBot {
            user_id: 1,
            bot_id: 2,
            qts,
        }
        .into(),
        tl::types::UpdateBotGuestChatQuery {
            query_id: 1,
            message: message(1, user_peer(1)).into(),
            reference_messages: None,
            qts,
        }
        .into(),
        tl::types::UpdateBotStarsSubscription {
            canceled: false,
            payment_failed: false,
            restored: false,
            user_id: 1,
            payload: vec![],
            qts,
        }
        .into(),
    ]
}

#[test]
fn qts_constructors() {
    let updates = qts_updates(50);
    assert_eq!(updates.len(), 17);
    for update in &updates {
        assert_eq!(sequence_of(update), Sequence::Qts { qts: 50 }, "{update:?}");
    }
}

#[test]
fn zero_pts_and_qts_are_unordered() {
    let mut zero = qts_updates(0);
    zero.push(new_message(user_peer(1), 0, 0));
    zero.push(new_message(channel_peer(1), 0, 0));
    zero.push(delete_messages(0, 0));
    zero.push(
        tl::types::UpdateReadChannelInbox {
            folder_id: None,
            channel_id: 7,
            max_id: 9,
            still_unread_count: 0,
            pts: 0,
        }
        .into(),
    );
    for update in &zero {
        assert_eq!(sequence_of(update), Sequence::Unordered, "{update:?}");
    }
}

#[test]
fn unnumbered_and_surprising_shapes_are_unordered() {
    let updates: Vec<tl::enums::Update> = vec![
        typing(1),
        tl::types::UpdateChannel { channel_id: 3 }.into(),
        tl::types::UpdateChannelMessageViews {
            channel_id: 3,
            id: 1,
            views: 5,
        }
        .into(),
        // A channel message update whose message names no channel.
        tl::types::UpdateNewChannelMessage {
            message: message(1, user_peer(1)).into(),
            pts: 5,
            pts_count: 1,
        }
        .into(),
        tl::types::UpdateEditChannelMessage {
            message: tl::types::MessageEmpty {
                id: 1,
                peer_id: None,
            }
            .into(),
            pts: 5,
            pts_count: 1,
        }
        .into(),
    ];
    for update in &updates {
        assert_eq!(sequence_of(update), Sequence::Unordered, "{update:?}");
    }
    // The server renumbered the common box: the engine re-bases.
    assert_eq!(
        sequence_of(&tl::enums::Update::PtsChanged),
        Sequence::PtsChanged
    );
    // An empty message without a peer in the common box stays common.
    let empty = tl::types::UpdateNewMessage {
        message: tl::types::MessageEmpty {
            id: 1,
            peer_id: None,
        }
        .into(),
        pts: 3,
        pts_count: 1,
    }
    .into();
    assert_eq!(sequence_of(&empty), common(3, 1));
}
