//! Every peer a message names (mentions, headers, media, service actions) is checked.

use sync_core::Updates;
use sync_grammers::tl;
use sync_grammers::{Converter, Incoming, MentionedPeer};

use crate::common::*;

#[test]
fn every_mention_of_a_short_message_is_checked() {
    let converter = Converter::new(Cache::knowing(&[MentionedPeer::User(1)]));
    let forwarded = tl::types::UpdateShortMessage {
        fwd_from: Some(
            tl::types::MessageFwdHeader {
                imported: false,
                saved_out: false,
                from_id: Some(user_peer(3)),
                from_name: None,
                date: 1,
                channel_post: None,
                post_author: None,
                saved_from_peer: None,
                saved_from_msg_id: None,
                saved_from_id: None,
                saved_from_name: None,
                saved_date: None,
                psa_type: None,
            }
            .into(),
        ),
        ..short_message(1, 10)
    };
    let via_bot = tl::types::UpdateShortMessage {
        via_bot_id: Some(4),
        ..short_message(1, 10)
    };
    let mention = tl::types::UpdateShortMessage {
        entities: Some(vec![
            tl::types::MessageEntityBold {
                offset: 0,
                length: 1,
            }
            .into(),
            tl::types::MessageEntityMentionName {
                offset: 0,
                length: 1,
                user_id: 5,
            }
            .into(),
        ]),
        ..short_message(1, 10)
    };
    for update in [forwarded, via_bot, mention] {
        assert_eq!(
            withheld(converter.updates(update.into())).1,
            common_refetch()
        );
    }
    // The sender of a basic-group message; the group itself needs no hash.
    assert_eq!(
        withheld(converter.updates(short_chat_message(6, 300, 10).into())).1,
        common_refetch()
    );
    assert!(matches!(
        converter.updates(short_chat_message(1, 300, 10).into()),
        Incoming::Updates(_)
    ));
}

#[test]
fn service_message_naming_an_unknown_user_is_withheld() {
    let converter = Converter::new(Cache::knowing(&[MentionedPeer::User(1)]));
    let added = |users: Vec<i64>| {
        let service = tl::types::MessageService {
            out: false,
            mentioned: false,
            media_unread: false,
            reactions_are_possible: false,
            silent: false,
            post: false,
            legacy: false,
            id: 9,
            from_id: Some(user_peer(1)),
            peer_id: chat_peer(300),
            saved_peer_id: None,
            reply_to: None,
            date: 1,
            action: tl::types::MessageActionChatAddUser { users }.into(),
            reactions: None,
            ttl_period: None,
        };
        tl::types::UpdateShort {
            update: tl::types::UpdateNewMessage {
                message: service.into(),
                pts: 40,
                pts_count: 1,
            }
            .into(),
            date: 1,
        }
    };
    // Every user it names is known: delivered.
    assert!(matches!(
        converter.updates(added(vec![1]).into()),
        Incoming::Updates(Updates::Short { .. })
    ));
    // User 2 was added, and nobody can resolve them: fetched by difference instead.
    assert_eq!(
        withheld(converter.updates(added(vec![1, 2]).into())),
        (None, common_refetch())
    );
}

/// A forward header naming nobody.
fn forward_header() -> tl::types::MessageFwdHeader {
    tl::types::MessageFwdHeader {
        imported: false,
        saved_out: false,
        from_id: None,
        from_name: None,
        date: 1,
        channel_post: None,
        post_author: None,
        saved_from_peer: None,
        saved_from_msg_id: None,
        saved_from_id: None,
        saved_from_name: None,
        saved_date: None,
        psa_type: None,
    }
}

/// A reply header naming nobody.
fn reply_header() -> tl::types::MessageReplyHeader {
    tl::types::MessageReplyHeader {
        reply_to_scheduled: false,
        forum_topic: false,
        quote: false,
        reply_to_ephemeral: false,
        reply_to_msg_id: Some(5),
        reply_to_peer_id: None,
        reply_from: None,
        reply_media: None,
        reply_to_top_id: None,
        quote_text: None,
        quote_entities: None,
        quote_offset: None,
        todo_item_id: None,
        poll_option: None,
    }
}

fn mention(user_id: i64) -> tl::enums::MessageEntity {
    tl::types::MessageEntityMentionName {
        offset: 0,
        length: 1,
        user_id,
    }
    .into()
}

fn contact(user_id: i64) -> tl::enums::MessageMedia {
    tl::types::MessageMediaContact {
        phone_number: "+1".into(),
        first_name: "a".into(),
        last_name: String::new(),
        vcard: String::new(),
        user_id,
    }
    .into()
}

/// `updateShort` with an `updateNewMessage` of `message`.
fn pushed(message: impl Into<tl::enums::Message>) -> tl::enums::Updates {
    tl::types::UpdateShort {
        update: tl::types::UpdateNewMessage {
            message: message.into(),
            pts: 50,
            pts_count: 1,
        }
        .into(),
        date: 1,
    }
    .into()
}

fn is_delivered(incoming: &Incoming) -> bool {
    matches!(incoming, Incoming::Updates(_))
}

#[test]
fn every_peer_of_a_forward_header_is_checked() {
    // Known: users 1 and 3, channel 8.
    let known = [
        MentionedPeer::User(1),
        MentionedPeer::User(3),
        MentionedPeer::Channel(8),
    ];
    let converter = Converter::new(Cache::knowing(&known));
    let forwarded = |header: tl::types::MessageFwdHeader| tl::types::UpdateShortMessage {
        fwd_from: Some(header.into()),
        ..short_message(1, 10)
    };
    let everyone_known = tl::types::MessageFwdHeader {
        from_id: Some(user_peer(3)),
        saved_from_peer: Some(channel_peer(8)),
        saved_from_id: Some(user_peer(3)),
        ..forward_header()
    };
    assert!(is_delivered(
        &converter.updates(forwarded(everyone_known).into())
    ));
    let unknown_saved_from_peer = tl::types::MessageFwdHeader {
        from_id: Some(user_peer(3)),
        saved_from_peer: Some(channel_peer(9)),
        ..forward_header()
    };
    let unknown_saved_from_id = tl::types::MessageFwdHeader {
        saved_from_peer: Some(chat_peer(300)),
        saved_from_id: Some(user_peer(4)),
        ..forward_header()
    };
    for header in [unknown_saved_from_peer, unknown_saved_from_id] {
        assert_eq!(
            withheld(converter.updates(forwarded(header.clone()).into())),
            (None, common_refetch()),
            "{header:?}"
        );
        // The same in a full message of a basic group.
        let full = tl::types::Message {
            fwd_from: Some(header.into()),
            from_id: Some(user_peer(1)),
            ..message(11, chat_peer(300))
        };
        assert_eq!(
            withheld(converter.updates(pushed(full))).1,
            common_refetch()
        );
    }
}

#[test]
fn every_peer_of_a_reply_header_is_checked() {
    let known = [
        MentionedPeer::User(1),
        MentionedPeer::User(3),
        MentionedPeer::Channel(8),
    ];
    let converter = Converter::new(Cache::knowing(&known));
    let replying = |header: tl::enums::MessageReplyHeader| tl::types::UpdateShortMessage {
        reply_to: Some(header),
        ..short_message(1, 10)
    };
    let everyone_known = tl::types::MessageReplyHeader {
        reply_to_peer_id: Some(channel_peer(8)),
        reply_from: Some(
            tl::types::MessageFwdHeader {
                from_id: Some(user_peer(3)),
                ..forward_header()
            }
            .into(),
        ),
        reply_media: Some(contact(3)),
        quote_entities: Some(vec![mention(1)]),
        ..reply_header()
    };
    assert!(is_delivered(
        &converter.updates(replying(everyone_known.into()).into())
    ));
    let unknown: Vec<tl::enums::MessageReplyHeader> = vec![
        // A reply to a message of a channel nobody can resolve.
        tl::types::MessageReplyHeader {
            reply_to_peer_id: Some(channel_peer(9)),
            ..reply_header()
        }
        .into(),
        // The replied-to message was forwarded from an unknown user, or saved from an unknown
        // channel.
        tl::types::MessageReplyHeader {
            reply_from: Some(
                tl::types::MessageFwdHeader {
                    from_id: Some(user_peer(4)),
                    ..forward_header()
                }
                .into(),
            ),
            ..reply_header()
        }
        .into(),
        tl::types::MessageReplyHeader {
            reply_from: Some(
                tl::types::MessageFwdHeader {
                    saved_from_peer: Some(channel_peer(9)),
                    ..forward_header()
                }
                .into(),
            ),
            ..reply_header()
        }
        .into(),
        // Its media is an unknown user's contact; its quote mentions an unknown user.
        tl::types::MessageReplyHeader {
            reply_media: Some(contact(4)),
            ..reply_header()
        }
        .into(),
        tl::types::MessageReplyHeader {
            quote_entities: Some(vec![mention(4)]),
            ..reply_header()
        }
        .into(),
        // A reply to a story of an unknown channel.
        tl::types::MessageReplyStoryHeader {
            peer: channel_peer(9),
            story_id: 1,
        }
        .into(),
    ];
    for header in unknown {
        assert_eq!(
            withheld(converter.updates(replying(header.clone()).into())),
            (None, common_refetch()),
            "{header:?}"
        );
        // A service message's reply header (a pin, a game score) is checked the same way.
        let pinned = tl::types::MessageService {
            out: false,
            mentioned: false,
            media_unread: false,
            reactions_are_possible: false,
            silent: false,
            post: false,
            legacy: false,
            id: 9,
            from_id: Some(user_peer(1)),
            peer_id: chat_peer(300),
            saved_peer_id: None,
            reply_to: Some(header),
            date: 1,
            action: tl::enums::MessageAction::PinMessage,
            reactions: None,
            ttl_period: None,
        };
        assert_eq!(
            withheld(converter.updates(pushed(pinned))).1,
            common_refetch()
        );
    }
}

#[test]
fn the_own_user_is_known_without_asking_the_cache() {
    const ME: i64 = 42;
    let converter = Converter::new(Cache::knowing(&[MentionedPeer::User(1)])).with_self_id(ME);
    // Saved Messages: the chat with oneself, as a short message either way.
    let saved = short_message(ME, 10);
    let saved_out = tl::types::UpdateShortMessage {
        out: true,
        ..short_message(ME, 11)
    };
    // One's own message forwarded, or mentioned, in a chat with user 1.
    let forwarded_own = tl::types::UpdateShortMessage {
        fwd_from: Some(
            tl::types::MessageFwdHeader {
                from_id: Some(user_peer(ME)),
                saved_from_peer: Some(user_peer(ME)),
                ..forward_header()
            }
            .into(),
        ),
        entities: Some(vec![mention(ME)]),
        ..short_message(1, 12)
    };
    for short in [saved, saved_out, forwarded_own] {
        assert!(is_delivered(&converter.updates(short.into())));
    }
    // A full message in Saved Messages, in a container without users.
    let container = tl::types::Updates {
        updates: vec![
            tl::types::UpdateNewMessage {
                message: tl::types::Message {
                    out: true,
                    from_id: Some(user_peer(ME)),
                    saved_peer_id: Some(user_peer(ME)),
                    ..message(13, user_peer(ME))
                }
                .into(),
                pts: 13,
                pts_count: 1,
            }
            .into(),
        ],
        users: vec![],
        chats: vec![],
        date: 1,
        seq: 0,
    };
    assert!(is_delivered(&converter.updates(container.into())));
    // The cache was only asked about user 1.
    assert!(
        converter
            .cache()
            .asked
            .borrow()
            .iter()
            .all(|&peer| peer == MentionedPeer::User(1))
    );
    // Without the own id, nothing says who user 42 is.
    let stranger = Converter::new(Cache::knowing(&[MentionedPeer::User(1)]));
    assert_eq!(
        withheld(stranger.updates(short_message(ME, 10).into())),
        (None, common_refetch())
    );
}

#[test]
fn other_peers_a_message_names_are_checked() {
    let known = [
        MentionedPeer::User(1),
        MentionedPeer::User(3),
        MentionedPeer::Channel(8),
    ];
    let converter = Converter::new(Cache::knowing(&known));
    let base = || tl::types::Message {
        from_id: Some(user_peer(1)),
        ..message(11, chat_peer(300))
    };
    let everyone_known = tl::types::Message {
        saved_peer_id: Some(user_peer(3)),
        via_business_bot_id: Some(3),
        guestchat_via_from: Some(channel_peer(8)),
        media: Some(contact(0)), // a contact without an account names nobody
        ..base()
    };
    assert!(is_delivered(&converter.updates(pushed(everyone_known))));
    let story = |peer| {
        tl::enums::MessageMedia::from(tl::types::MessageMediaStory {
            via_mention: false,
            peer,
            id: 1,
            story: None,
        })
    };
    let giveaway = |channels| {
        tl::enums::MessageMedia::from(tl::types::MessageMediaGiveaway {
            only_new_subscribers: false,
            winners_are_visible: false,
            channels,
            countries_iso2: None,
            prize_description: None,
            quantity: 1,
            months: Some(3),
            stars: None,
            until_date: 1,
        })
    };
    let results = |channel_id, winners| {
        tl::enums::MessageMedia::from(tl::types::MessageMediaGiveawayResults {
            only_new_subscribers: false,
            refunded: false,
            channel_id,
            additional_peers_count: None,
            launch_msg_id: 1,
            winners_count: 1,
            unclaimed_count: 0,
            winners,
            months: Some(3),
            stars: None,
            prize_description: None,
            until_date: 1,
        })
    };
    for media in [
        story(user_peer(3)),
        giveaway(vec![8]),
        results(8, vec![1, 3]),
    ] {
        let known_media = tl::types::Message {
            media: Some(media),
            ..base()
        };
        assert!(is_delivered(&converter.updates(pushed(known_media))));
    }
    let unknown = [
        tl::types::Message {
            saved_peer_id: Some(user_peer(4)),
            ..base()
        },
        tl::types::Message {
            via_business_bot_id: Some(4),
            ..base()
        },
        tl::types::Message {
            guestchat_via_from: Some(user_peer(4)),
            ..base()
        },
        tl::types::Message {
            media: Some(contact(4)),
            ..base()
        },
        tl::types::Message {
            media: Some(story(channel_peer(9))),
            ..base()
        },
        tl::types::Message {
            media: Some(giveaway(vec![8, 9])),
            ..base()
        },
        tl::types::Message {
            media: Some(results(9, vec![1])),
            ..base()
        },
        tl::types::Message {
            media: Some(results(8, vec![1, 4])),
            ..base()
        },
    ];
    for message in unknown {
        assert_eq!(
            withheld(converter.updates(pushed(message.clone()))).1,
            common_refetch(),
            "{message:?}"
        );
    }
    // A service message filed under an unknown user's Saved Messages dialog.
    let service = tl::types::MessageService {
        out: false,
        mentioned: false,
        media_unread: false,
        reactions_are_possible: false,
        silent: false,
        post: false,
        legacy: false,
        id: 9,
        from_id: Some(user_peer(1)),
        peer_id: chat_peer(300),
        saved_peer_id: Some(user_peer(4)),
        reply_to: None,
        date: 1,
        action: tl::enums::MessageAction::PinMessage,
        reactions: None,
        ttl_period: None,
    };
    assert_eq!(
        withheld(converter.updates(pushed(service))).1,
        common_refetch()
    );
}

#[test]
fn a_business_message_and_the_message_it_replies_to_are_checked() {
    let converter = Converter::new(Cache::knowing(&[MentionedPeer::User(1)]));
    let business = |reply_from: i64| tl::types::UpdatesCombined {
        updates: vec![
            tl::types::UpdateBotNewBusinessMessage {
                connection_id: "c".into(),
                message: tl::types::Message {
                    from_id: Some(user_peer(1)),
                    ..message(11, user_peer(1))
                }
                .into(),
                reply_to_message: Some(
                    tl::types::Message {
                        from_id: Some(user_peer(reply_from)),
                        ..message(10, user_peer(1))
                    }
                    .into(),
                ),
                qts: 5,
            }
            .into(),
        ],
        users: vec![],
        chats: vec![],
        date: 1,
        seq_start: 0,
        seq: 0,
    };
    assert!(is_delivered(&converter.updates(business(1).into())));
    assert_eq!(
        withheld(converter.updates(business(4).into())).1,
        common_refetch()
    );
}
