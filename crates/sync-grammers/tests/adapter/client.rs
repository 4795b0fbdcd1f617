//! The `client` feature: Peer keys, grammers' errors, the retry policy, `GrammersApi` over a
//! fake transport, and the raw updates reader feeding a running manager.

use std::collections::VecDeque;
use std::future::Future;
use std::num::NonZeroU32;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grammers_mtsender::{AutoSleep, InvocationError, RetryContext, RetryPolicy, RpcError};
use grammers_session::updates::UpdatesLike;
use sync_core::ChannelId;
use sync_grammers::client::{
    GrammersApi, Invoke, ReaderEnd, TlHandle, api_error, connection_params, feed, peer_key,
    run_reader,
};
use sync_grammers::tl::{self, Deserializable, Identifiable, Serializable};
use sync_grammers::{
    AllKnown, Converter, MentionedPeer, PeerCache, TlEntities, TlUpdate, blank_message,
};
use sync_runtime::{
    Api, ApiError, BoxError, ChannelDifferenceRequest, DifferenceRequest, Handler, Manager, Peer,
    PeerKey, Summary,
};
use sync_storage::MemoryStorage;

use crate::common::{
    channel, channel_peer, chat_peer, delete_messages, new_channel_message, new_message,
    short_message, typing, user_peer,
};

// --- Peer keys -------------------------------------------------------------------------------

#[test]
fn updates_are_keyed_by_their_chat() {
    let read_inbox = |peer| -> tl::enums::Update {
        tl::types::UpdateReadHistoryInbox {
            folder_id: None,
            peer,
            top_msg_id: None,
            max_id: 5,
            still_unread_count: 0,
            pts: 3,
            pts_count: 1,
        }
        .into()
    };
    let cases: Vec<(&str, tl::enums::Update, Option<PeerKey>)> = vec![
        (
            "private message",
            new_message(user_peer(7), 1, 1),
            Some(PeerKey::User(7)),
        ),
        (
            "group message",
            new_message(chat_peer(8), 1, 1),
            Some(PeerKey::Chat(8)),
        ),
        (
            "channel message",
            new_channel_message(9, 1),
            Some(PeerKey::Channel(9)),
        ),
        (
            "channel message as updateNewMessage",
            new_message(channel_peer(9), 1, 1),
            Some(PeerKey::Channel(9)),
        ),
        (
            "edit in a group",
            tl::types::UpdateEditMessage {
                message: blank_message(1, chat_peer(8), 1, "e".into()).into(),
                pts: 2,
                pts_count: 1,
            }
            .into(),
            Some(PeerKey::Chat(8)),
        ),
        (
            "message without a peer",
            tl::types::UpdateNewMessage {
                message: tl::types::MessageEmpty {
                    id: 1,
                    peer_id: None,
                }
                .into(),
                pts: 1,
                pts_count: 1,
            }
            .into(),
            None,
        ),
        (
            "read inbox, private",
            read_inbox(user_peer(7)),
            Some(PeerKey::User(7)),
        ),
        (
            "read inbox, group",
            read_inbox(chat_peer(8)),
            Some(PeerKey::Chat(8)),
        ),
        (
            "delete in a channel",
            tl::types::UpdateDeleteChannelMessages {
                channel_id: 9,
                messages: vec![1],
                pts: 2,
                pts_count: 1,
            }
            .into(),
            Some(PeerKey::Channel(9)),
        ),
        (
            "read channel inbox",
            tl::types::UpdateReadChannelInbox {
                folder_id: None,
                channel_id: 9,
                max_id: 1,
                still_unread_count: 0,
                pts: 3,
            }
            .into(),
            Some(PeerKey::Channel(9)),
        ),
        (
            "channel too long",
            tl::types::UpdateChannelTooLong {
                channel_id: 9,
                pts: None,
            }
            .into(),
            Some(PeerKey::Channel(9)),
        ),
        ("user typing", typing(7), Some(PeerKey::User(7))),
        (
            "group typing",
            tl::types::UpdateChatUserTyping {
                chat_id: 8,
                from_id: user_peer(7),
                action: tl::enums::SendMessageAction::SendMessageTypingAction,
            }
            .into(),
            Some(PeerKey::Chat(8)),
        ),
        (
            "user joined a group",
            tl::types::UpdateChatParticipantAdd {
                chat_id: 8,
                user_id: 7,
                inviter_id: 6,
                date: 1,
                version: 1,
            }
            .into(),
            Some(PeerKey::Chat(8)),
        ),
        (
            "bot stopped",
            tl::types::UpdateBotStopped {
                user_id: 7,
                date: 1,
                stopped: true,
                qts: 4,
            }
            .into(),
            Some(PeerKey::User(7)),
        ),
        ("deleted messages name no chat", delete_messages(2, 1), None),
        ("pts changed", tl::enums::Update::PtsChanged, None),
        ("config", tl::enums::Update::Config, None),
    ];
    for (name, update, expected) in cases {
        assert_eq!(peer_key(&update), expected, "{name}");
        assert_eq!(
            TlUpdate::from(update).peer(),
            expected,
            "{name} through Peer"
        );
    }
}

// --- Errors and retries ------------------------------------------------------------------------

/// An RPC error as grammers builds it from the server's `rpc_error`.
fn rpc(code: i32, message: &str) -> InvocationError {
    InvocationError::Rpc(RpcError::from(tl::types::RpcError {
        error_code: code,
        error_message: message.into(),
    }))
}

#[test]
fn grammers_errors_are_classified() {
    let wait = |error| match api_error(error) {
        ApiError::FloodWait { after } => Some(after.as_secs()),
        _ => None,
    };
    assert_eq!(wait(rpc(420, "FLOOD_WAIT_31")), Some(31));
    assert_eq!(wait(rpc(420, "FLOOD_PREMIUM_WAIT_5")), Some(5));
    assert_eq!(wait(rpc(420, "SLOWMODE_WAIT_12")), Some(12));
    assert_eq!(wait(rpc(420, "FLOOD_WAIT_0")), Some(0));
    // A name that kept its number, as a hand-built error would.
    let unsplit = InvocationError::Rpc(RpcError {
        code: 420,
        name: "FLOOD_WAIT_7".into(),
        value: None,
        caused_by: None,
    });
    assert_eq!(wait(unsplit), Some(7));

    for name in [
        "AUTH_KEY_UNREGISTERED",
        "AUTH_KEY_INVALID",
        "SESSION_REVOKED",
        "SESSION_EXPIRED",
        "USER_DEACTIVATED",
        "USER_DEACTIVATED_BAN",
    ] {
        assert!(
            matches!(api_error(rpc(401, name)), ApiError::Unauthorized { .. }),
            "{name}"
        );
    }
    assert!(matches!(
        api_error(rpc(406, "AUTH_KEY_DUPLICATED")),
        ApiError::Unauthorized { .. }
    ));
    for name in [
        "CHANNEL_PRIVATE",
        "CHANNEL_INVALID",
        "CHANNEL_PUBLIC_GROUP_NA",
    ] {
        assert!(
            matches!(
                api_error(rpc(400, name)),
                ApiError::ChannelInaccessible { .. }
            ),
            "{name}"
        );
    }
    let transient = |error| matches!(api_error(error), ApiError::Transient { .. });
    assert!(transient(rpc(500, "PERSISTENT_TIMESTAMP_OUTDATED")));
    assert!(transient(rpc(500, "INTERDC_2_CALL_ERROR")));
    assert!(transient(rpc(-503, "Timeout")));
    assert!(transient(rpc(400, "PEER_ID_INVALID")));
    assert!(transient(InvocationError::Io(std::io::Error::other(
        "reset"
    ))));
    assert!(transient(InvocationError::Dropped("runner gone")));
    assert!(transient(InvocationError::InvalidDc));
    assert!(matches!(
        api_error(InvocationError::Io(std::io::Error::other("reset"))),
        ApiError::Transient {
            source: Some(_),
            ..
        }
    ));
}

#[test]
fn the_pool_is_configured_not_to_retry() {
    let context = |error| RetryContext {
        fail_count: NonZeroU32::MIN,
        slept_so_far: Duration::ZERO,
        error,
    };
    let ours = connection_params();
    assert_eq!(
        ours.retry_policy
            .should_retry(&context(rpc(420, "FLOOD_WAIT_31"))),
        ControlFlow::Break(())
    );
    assert_eq!(
        ours.retry_policy
            .should_retry(&context(InvocationError::Io(std::io::Error::other(
                "reset"
            )))),
        ControlFlow::Break(())
    );
    // grammers' default would have slept 31 s inside `invoke`.
    assert_eq!(
        AutoSleep::default().should_retry(&context(rpc(420, "FLOOD_WAIT_31"))),
        ControlFlow::Continue(Duration::from_secs(31))
    );
}

// --- GrammersApi over a fake transport ---------------------------------------------------------

/// A transport answering like a server at pts 10 with nothing new, or with scripted replies
/// first; it records each request it receives.
#[derive(Default)]
struct Fake {
    scripted: Mutex<VecDeque<Result<Vec<u8>, InvocationError>>>,
    calls: Mutex<Vec<Call>>,
    /// Messages the server stored after pts 10, one pts each: what `getDifference` returns.
    stored: Mutex<Vec<tl::enums::Message>>,
    /// The channels' pts as the server knows them: `getChannelDifference` from below answers
    /// "nothing new" at this pts (a server never answers below its own position), from above
    /// at the asked pts.
    channel_top: Mutex<i32>,
}

#[derive(Debug, Clone, PartialEq)]
/// A request the fake received.
enum Call {
    State,
    Difference(tl::functions::updates::GetDifference),
    ChannelDifference(tl::functions::updates::GetChannelDifference),
}

impl Fake {
    fn script(&self, reply: Result<Vec<u8>, InvocationError>) {
        self.scripted.lock().unwrap().push_back(reply);
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn differences(&self) -> usize {
        self.calls()
            .iter()
            .filter(|c| matches!(c, Call::Difference(_)))
            .count()
    }

    fn answer(&self, request: &[u8]) -> Result<Vec<u8>, InvocationError> {
        // A function decodes from what follows its constructor id.
        let id = u32::from_le_bytes(request[..4].try_into().unwrap());
        let call = match id {
            tl::functions::updates::GetState::CONSTRUCTOR_ID => Call::State,
            tl::functions::updates::GetDifference::CONSTRUCTOR_ID => Call::Difference(
                tl::functions::updates::GetDifference::from_bytes(&request[4..]).unwrap(),
            ),
            tl::functions::updates::GetChannelDifference::CONSTRUCTOR_ID => {
                Call::ChannelDifference(
                    tl::functions::updates::GetChannelDifference::from_bytes(&request[4..])
                        .unwrap(),
                )
            }
            other => panic!("unexpected request {other:#x}"),
        };
        self.calls.lock().unwrap().push(call.clone());
        if let Some(reply) = self.scripted.lock().unwrap().pop_front() {
            return reply;
        }
        Ok(match call {
            Call::State => tl::enums::updates::State::from(tl::types::updates::State {
                pts: 10,
                qts: 0,
                date: 1,
                seq: 0,
                unread_count: 0,
            })
            .to_bytes(),
            Call::Difference(d) => self.difference(d.pts, d.date).to_bytes(),
            Call::ChannelDifference(d) => tl::enums::updates::ChannelDifference::from(
                tl::types::updates::ChannelDifferenceEmpty {
                    r#final: true,
                    pts: d.pts.max(*self.channel_top.lock().unwrap()),
                    timeout: None,
                },
            )
            .to_bytes(),
        })
    }
}

impl Fake {
    fn difference(&self, pts: i32, date: i32) -> tl::enums::updates::Difference {
        let stored = self.stored.lock().unwrap();
        let known = usize::try_from(pts - 10).unwrap();
        if known >= stored.len() {
            return tl::types::updates::DifferenceEmpty { date, seq: 0 }.into();
        }
        let top = 10 + i32::try_from(stored.len()).unwrap();
        tl::types::updates::Difference {
            new_messages: stored[known..].to_vec(),
            new_encrypted_messages: Vec::new(),
            other_updates: Vec::new(),
            chats: Vec::new(),
            users: Vec::new(),
            state: tl::types::updates::State {
                pts: top,
                qts: 0,
                date,
                seq: 0,
                unread_count: 0,
            }
            .into(),
        }
        .into()
    }
}

impl Invoke for Fake {
    fn invoke<R>(
        &self,
        request: &R,
    ) -> impl Future<Output = Result<R::Return, InvocationError>> + Send
    where
        R: tl::RemoteCall + Send + Sync,
        R::Return: Send,
    {
        let reply = self
            .answer(&request.to_bytes())
            .and_then(|bytes| R::Return::from_bytes(&bytes).map_err(InvocationError::from));
        async move { reply }
    }
}

#[tokio::test]
async fn api_sends_the_calls_and_converts_replies_and_errors() {
    let fake = Arc::new(Fake::default());
    let api = GrammersApi::new(Arc::clone(&fake));

    let state = api.get_state().await.unwrap();
    assert_eq!((state.pts, state.date), (10, 1));

    // A fresh state's date 0 goes out as 1.
    let request = DifferenceRequest {
        pts: 10,
        qts: 0,
        date: 0,
        pts_total_limit: None,
    };
    let difference = api.get_difference(request).await.unwrap();
    assert!(matches!(
        difference,
        sync_core::Difference::Empty { date: 1, .. }
    ));
    let Call::Difference(sent) = &fake.calls()[1] else {
        panic!()
    };
    assert_eq!((sent.pts, sent.date, sent.qts), (10, 1, 0));

    let channel_request = ChannelDifferenceRequest {
        channel_id: 50,
        access_hash: 99,
        pts: 200,
        limit: 100,
    };
    let reply = api.get_channel_difference(channel_request).await.unwrap();
    assert_eq!(reply.channel_id, 50);
    let Call::ChannelDifference(sent) = &fake.calls()[2] else {
        panic!()
    };
    assert_eq!((sent.pts, sent.limit, sent.force), (200, 100, false));
    assert_eq!(
        sent.channel,
        tl::types::InputChannel {
            channel_id: 50,
            access_hash: 99
        }
        .into()
    );

    fake.script(Err(rpc(420, "FLOOD_WAIT_31")));
    let error = api.get_state().await.unwrap_err();
    assert!(matches!(error, ApiError::FloodWait { after } if after.as_secs() == 31));
    fake.script(Err(rpc(400, "CHANNEL_PRIVATE")));
    let error = api
        .get_channel_difference(channel_request)
        .await
        .unwrap_err();
    assert!(matches!(error, ApiError::ChannelInaccessible { .. }));
    fake.script(Err(rpc(401, "AUTH_KEY_UNREGISTERED")));
    let error = api.get_difference(request).await.unwrap_err();
    assert!(matches!(error, ApiError::Unauthorized { .. }));
}

// --- The reader, into a running manager --------------------------------------------------------

/// Records what the manager delivers.
#[derive(Clone, Default)]
struct Record(Arc<Mutex<Vec<tl::enums::Update>>>);

impl Record {
    fn updates(&self) -> Vec<tl::enums::Update> {
        self.0.lock().unwrap().clone()
    }
}

impl Handler<TlUpdate, TlEntities> for Record {
    async fn handle(&self, update: TlUpdate, _: Arc<[TlEntities]>) -> Result<(), BoxError> {
        self.0.lock().unwrap().push(update.into_inner());
        Ok(())
    }
}

/// A manager over a [`Fake`] server at pts 10, started and caught up.
struct Running {
    fake: Arc<Fake>,
    record: Record,
    handle: TlHandle,
    run: tokio::task::JoinHandle<Result<Summary, sync_runtime::RunError>>,
}

async fn start() -> Running {
    let fake = Arc::new(Fake::default());
    let record = Record::default();
    let storage = Arc::new(MemoryStorage::new());
    let manager = Manager::new(
        1,
        GrammersApi::new(Arc::clone(&fake)),
        storage,
        record.clone(),
    );
    let handle = manager.handle();
    let run = tokio::spawn(manager.run());
    handle.caught_up().await.unwrap();
    Running {
        fake,
        record,
        handle,
        run,
    }
}

impl Running {
    async fn feed<C: PeerCache>(&self, converter: &Converter<C>, updates: UpdatesLike) {
        feed(&self.handle, converter, updates).await.unwrap();
        self.handle.caught_up().await.unwrap();
    }

    async fn stop(self) -> (Summary, Vec<tl::enums::Update>, Vec<Call>) {
        self.handle.shutdown();
        let summary = self.run.await.unwrap().unwrap();
        (summary, self.record.updates(), self.fake.calls())
    }
}

fn message_text(update: &tl::enums::Update) -> Option<(&tl::enums::Peer, &str)> {
    match update {
        tl::enums::Update::NewMessage(tl::types::UpdateNewMessage {
            message: tl::enums::Message::Message(m),
            ..
        }) => Some((&m.peer_id, m.message.as_str())),
        _ => None,
    }
}

fn affected(pts: i32, pts_count: i32) -> tl::types::messages::AffectedMessages {
    tl::types::messages::AffectedMessages { pts, pts_count }
}

fn send_message(peer: tl::enums::InputPeer, text: &str) -> tl::functions::messages::SendMessage {
    tl::functions::messages::SendMessage {
        no_webpage: false,
        silent: false,
        background: false,
        clear_draft: false,
        noforwards: false,
        update_stickersets_order: false,
        invert_media: false,
        allow_paid_floodskip: false,
        peer,
        reply_to: None,
        message: text.into(),
        random_id: 1,
        reply_markup: None,
        entities: None,
        schedule_date: None,
        schedule_repeat_period: None,
        send_as: None,
        quick_reply_shortcut: None,
        effect: None,
        allow_paid_stars: None,
        suggested_post: None,
        rich_message: None,
    }
}

fn short_sent(pts: i32) -> tl::types::UpdateShortSentMessage {
    tl::types::UpdateShortSentMessage {
        out: true,
        id: 77,
        pts,
        pts_count: 1,
        date: 5,
        media: None,
        entities: None,
        ttl_period: None,
    }
}

/// `updates` with one update and the given chats.
fn container(update: tl::enums::Update, chats: Vec<tl::enums::Chat>) -> tl::enums::Updates {
    tl::types::Updates {
        updates: vec![update],
        users: Vec::new(),
        chats,
        date: 5,
        seq: 0,
    }
    .into()
}

#[tokio::test]
async fn pushed_updates_are_delivered() {
    let running = start().await;
    let converter = Converter::new(AllKnown);
    running
        .feed(
            &converter,
            UpdatesLike::Updates(short_message(7, 11).into()),
        )
        .await;
    let (summary, delivered, _) = running.stop().await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        message_text(&delivered[0]).map(|(p, _)| p),
        Some(&user_peer(7))
    );
    assert_eq!(summary.state.map(|s| s.pts), Some(11));
}

#[tokio::test]
async fn a_short_sent_message_becomes_the_message_sent() {
    let running = start().await;
    let converter = Converter::new(AllKnown).with_self_id(1);
    let to_user = tl::types::InputPeerUser {
        user_id: 7,
        access_hash: 3,
    }
    .into();
    running
        .feed(
            &converter,
            UpdatesLike::ShortSentMessage {
                request: send_message(to_user, "hello"),
                update: short_sent(11),
            },
        )
        .await;
    // To oneself, through inputPeerSelf.
    running
        .feed(
            &converter,
            UpdatesLike::ShortSentMessage {
                request: send_message(tl::enums::InputPeer::PeerSelf, "note"),
                update: short_sent(12),
            },
        )
        .await;
    let (summary, delivered, _) = running.stop().await;
    let texts: Vec<_> = delivered.iter().filter_map(message_text).collect();
    assert_eq!(texts, [(&user_peer(7), "hello"), (&user_peer(1), "note")]);
    assert_eq!(summary.state.map(|s| s.pts), Some(12));
}

#[tokio::test]
async fn a_short_sent_message_to_no_known_chat_advances_the_pts_only() {
    let running = start().await;
    // No own id: inputPeerSelf names no chat.
    let converter = Converter::new(AllKnown);
    running
        .feed(
            &converter,
            UpdatesLike::ShortSentMessage {
                request: send_message(tl::enums::InputPeer::PeerSelf, "note"),
                update: short_sent(11),
            },
        )
        .await;
    let (summary, delivered, _) = running.stop().await;
    assert!(delivered.is_empty());
    assert_eq!(summary.state.map(|s| s.pts), Some(11));
}

#[tokio::test]
async fn affected_messages_advance_the_common_pts() {
    let running = start().await;
    let converter = Converter::new(AllKnown);
    running
        .feed(&converter, UpdatesLike::AffectedMessages(affected(12, 2)))
        .await;
    let (summary, delivered, calls) = running.stop().await;
    assert!(delivered.is_empty());
    assert_eq!(summary.state.map(|s| s.pts), Some(12));
    // No gap was seen: only the start and the catch-ups asked for anything.
    assert!(
        !calls
            .iter()
            .any(|c| matches!(c, Call::ChannelDifference(_)))
    );
}

#[tokio::test]
async fn affected_channel_messages_advance_the_channel() {
    const CHANNEL: ChannelId = 50;
    let running = start().await;
    let converter = Converter::new(AllKnown);
    *running.fake.channel_top.lock().unwrap() = 100;
    // The channel's hash arrives with an update, which the server confirms at pts 100.
    let first = container(
        new_channel_message(CHANNEL, 100),
        vec![channel(CHANNEL, Some(99), false)],
    );
    running.feed(&converter, UpdatesLike::Updates(first)).await;
    running
        .feed(
            &converter,
            UpdatesLike::AffectedChannelMessages {
                affected: affected(101, 1),
                channel_id: CHANNEL,
                message_ids: vec![1],
            },
        )
        .await;
    running
        .handle
        .request_channel_difference(CHANNEL)
        .await
        .unwrap();
    running.handle.caught_up().await.unwrap();
    let (_, _, calls) = running.stop().await;
    let asked: Vec<i32> = calls
        .iter()
        .filter_map(|c| match c {
            Call::ChannelDifference(d) => Some(d.pts),
            _ => None,
        })
        .collect();
    assert_eq!(asked.last(), Some(&101), "{calls:?}");
}

#[tokio::test]
async fn invited_users_and_joined_chats_carry_updates() {
    let running = start().await;
    let converter = Converter::new(AllKnown);
    let invited = tl::types::messages::InvitedUsers {
        updates: container(new_message(chat_peer(8), 11, 1), Vec::new()),
        missing_invitees: Vec::new(),
    };
    running
        .feed(&converter, UpdatesLike::InvitedUsers(invited))
        .await;
    let joined = tl::types::messages::ChatInviteJoinResultOk {
        updates: container(new_message(chat_peer(9), 12, 1), Vec::new()),
    };
    running
        .feed(&converter, UpdatesLike::ChatInviteJoinResult(joined))
        .await;
    let (summary, delivered, _) = running.stop().await;
    let chats: Vec<_> = delivered
        .iter()
        .filter_map(|u| message_text(u).map(|(p, _)| p.clone()))
        .collect();
    assert_eq!(chats, [chat_peer(8), chat_peer(9)]);
    assert_eq!(summary.state.map(|s| s.pts), Some(12));
}

#[tokio::test]
async fn a_closed_connection_or_malformed_updates_fetch_the_difference() {
    for signal in [UpdatesLike::ConnectionClosed, UpdatesLike::MalformedUpdates] {
        let running = start().await;
        let before = running.fake.differences();
        feed(&running.handle, &Converter::new(AllKnown), signal)
            .await
            .unwrap();
        // Let the manager take the signal before the catch-up's own difference.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let after = running.fake.differences();
        let (_, delivered, _) = running.stop().await;
        assert!(after > before, "no difference was fetched");
        assert!(delivered.is_empty());
    }
}

#[tokio::test]
async fn an_update_with_an_unknown_peer_is_fetched_again() {
    let running = start().await;
    let knows_nobody = Converter::new(|_: MentionedPeer| false);
    let before = running.fake.differences();
    feed(
        &running.handle,
        &knows_nobody,
        UpdatesLike::Updates(short_message(7, 11).into()),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(running.fake.differences() > before);
    let (_, delivered, _) = running.stop().await;
    // Withheld: the (empty) difference is authoritative.
    assert!(delivered.is_empty());
}

#[tokio::test]
async fn an_unknown_peer_in_an_untracked_channel_tracks_and_fetches_it() {
    const CHANNEL: ChannelId = 50;
    let running = start().await;
    let knows_nobody = Converter::new(|_: MentionedPeer| false);
    let mut message = crate::common::message(201, channel_peer(CHANNEL));
    message.from_id = Some(user_peer(7));
    let update = tl::types::UpdateNewChannelMessage {
        message: message.into(),
        pts: 201,
        pts_count: 1,
    };
    let updates = container(update.into(), vec![channel(CHANNEL, Some(99), false)]);
    running
        .feed(&knows_nobody, UpdatesLike::Updates(updates))
        .await;
    let (_, delivered, calls) = running.stop().await;
    assert!(delivered.is_empty());
    let asked = calls.iter().find_map(|c| match c {
        Call::ChannelDifference(d) => Some((d.pts, d.channel.clone())),
        _ => None,
    });
    let input = tl::types::InputChannel {
        channel_id: CHANNEL,
        access_hash: 99,
    }
    .into();
    assert_eq!(asked, Some((200, input)));
}

#[tokio::test]
async fn the_reader_ends_when_the_pool_closes_or_the_manager_stops() {
    let running = start().await;
    let (sender, receiver) = tokio::sync::mpsc::channel(8);
    let reader = tokio::spawn(run_reader(
        receiver,
        running.handle.clone(),
        Converter::new(AllKnown),
    ));
    sender
        .send(UpdatesLike::Updates(short_message(7, 11).into()))
        .await
        .unwrap();
    drop(sender);
    assert_eq!(reader.await.unwrap(), ReaderEnd::Closed);
    running.handle.caught_up().await.unwrap();
    assert_eq!(running.record.updates().len(), 1);

    let (sender, receiver) = tokio::sync::mpsc::channel(8);
    let reader = tokio::spawn(run_reader(
        receiver,
        running.handle.clone(),
        Converter::new(AllKnown),
    ));
    let (summary, _, _) = running.stop().await;
    assert_eq!(reader.await.unwrap(), ReaderEnd::Stopped);
    assert_eq!(summary.state.map(|s| s.pts), Some(11));
    drop(sender);
}

/// Pushes as a socket delivers them (serialized, decoded again), some lost, some twice, some
/// out of order: every message is delivered once, in order, the lost ones from the difference.
#[tokio::test]
async fn pushes_from_bytes_with_faults_are_delivered_once_in_order() {
    const MESSAGES: i32 = 40;
    let running = start().await;
    let pushes: Vec<Vec<u8>> = (1..=MESSAGES)
        .map(|id| {
            let message = crate::common::message(id, user_peer(7));
            running
                .fake
                .stored
                .lock()
                .unwrap()
                .push(message.clone().into());
            let update = tl::types::UpdateNewMessage {
                message: message.into(),
                pts: 10 + id,
                pts_count: 1,
            };
            container(update.into(), Vec::new()).to_bytes()
        })
        .collect();
    let mut wire = Vec::new();
    for (i, push) in pushes.into_iter().enumerate() {
        match i % 7 {
            3 => {}                                 // lost
            5 => wire.extend([push.clone(), push]), // delivered twice
            _ => wire.push(push),
        }
    }
    for pair in wire.chunks_mut(2).step_by(3) {
        pair.reverse(); // neighbours swapped
    }
    let converter = Converter::new(AllKnown);
    for bytes in wire {
        let updates = tl::enums::Updates::from_bytes(&bytes).unwrap();
        feed(&running.handle, &converter, UpdatesLike::Updates(updates))
            .await
            .unwrap();
    }
    running.handle.caught_up().await.unwrap();
    let (summary, delivered, _) = running.stop().await;
    let ids: Vec<i32> = delivered
        .iter()
        .filter_map(|u| match u {
            tl::enums::Update::NewMessage(m) => Some(m.message.id()),
            _ => None,
        })
        .collect();
    assert_eq!(ids, (1..=MESSAGES).collect::<Vec<_>>());
    assert_eq!(summary.state.map(|s| s.pts), Some(10 + MESSAGES));
}
