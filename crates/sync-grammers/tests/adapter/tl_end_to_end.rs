//! End to end in TL: the simulated server's pushes and replies rendered as real TL values,
//! carried as bytes through a faulty network, fed by the reader into a manager whose
//! `GrammersApi` asks a fake transport that answers from the same server, and every delivery
//! judged by the oracle.
//!
//! | server value | TL |
//! | --- | --- |
//! | common pts, count 1 | `updateNewMessage` (a `message` in the private chat with [`USER`], text = the id); alone, `updateShortMessage` |
//! | common pts, count > 1 | `updatePinnedMessages` (the id in `messages`) |
//! | common pts, count 0 | `updateReadHistoryInbox` (the id in `max_id` / `still_unread_count`) |
//! | qts | `updateNewEncryptedMessage` (the id as `random_id`) |
//! | channel pts | `updateNewChannelMessage` (`peerChannel`, text = the id) |
//! | unordered, of a `seq` container | `updateUserName` (first name = the id) |
//! | unordered, ephemeral | `updateUserTyping` (the id as `top_msg_id`) |
//! | channel too long, pts changed | `updateChannelTooLong`, `updatePtsChanged` |
//! | short push, container, too long | `updateShort` / `updateShortMessage`, `updates` / `updatesCombined`, `updatesTooLong` |
//! | difference | `updates.differenceEmpty` / `difference` / `differenceSlice` / `differenceTooLong` |
//! | channel difference | `updates.channelDifferenceEmpty` / `channelDifference` / `channelDifferenceTooLong` (with its dialog) |
//!
//! The network drops, repeats, holds back and summarises pushes, adds absurd, malformed and
//! `updatePtsChanged` ones (sync-testkit's `Network`); the transport fails requests
//! (`FLOOD_WAIT_n`, RPC 500) and answers some with bytes that decode as nothing.
//!
//! A difference carries its leading messages as `new_messages`, which have no pts (the handler
//! gives them back their place from the server's log, unless the server sent them as the latest
//! messages of a `channelDifferenceTooLong`), and the rest as `other_updates` with their
//! numbers: Telegram's order between the two lists is not the numbering's, so only a prefix can
//! go first and still be judged in order.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use grammers_mtsender::{InvocationError, RpcError};
use grammers_session::updates::UpdatesLike;
use sync_core::{
    ChannelCommit, ChannelDifference, ChannelDifferenceKind, Commit, Difference, Sequence, State,
    Updates,
};
use sync_grammers::client::{GrammersApi, Invoke, feed};
use sync_grammers::tl::{self, Deserializable, Identifiable, Serializable};
use sync_grammers::{Converter, MentionedPeer, PeerCache, TlEntities, TlUpdate, sequence_of};
use sync_runtime::{BoxError, Handler, Manager, ManagerConfig};
use sync_storage::{AccessHashStorage, MemoryStorage, StateStorage};
use sync_testkit::{
    ChannelRefusal, Delivery, Faults, Limits, Network, Oracle, Rng, Server, TestEntities,
    TestUpdate, Workload,
};
use tokio::time::Instant;

use crate::common::{channel, channel_peer, user, user_peer};

const ACCOUNT: i64 = 4_242;
/// The one private chat partner: every common-box message is with them.
const USER: i64 = 7;
const USER_HASH: i64 = 77_777;
/// The secret chat the encrypted messages come from.
const SECRET_CHAT: i32 = 3;
/// What an id that the TL form cannot carry decodes to: never made by the server.
const UNREADABLE: u64 = u64::MAX;

// --- The server's values as TL ---------------------------------------------------------------

fn split(id: u64) -> (i32, i32) {
    // The two halves, bit for bit.
    let low = u32::try_from(id & 0xffff_ffff).unwrap_or(0);
    let high = u32::try_from(id >> 32).unwrap_or(0);
    (
        i32::from_ne_bytes(low.to_ne_bytes()),
        i32::from_ne_bytes(high.to_ne_bytes()),
    )
}

fn join(low: i32, high: i32) -> u64 {
    let low = u32::from_ne_bytes(low.to_ne_bytes());
    let high = u32::from_ne_bytes(high.to_ne_bytes());
    (u64::from(high) << 32) | u64::from(low)
}

/// A message id for an event: its low half (the text carries the whole id).
fn message_id(id: u64) -> i32 {
    split(id).0
}

fn text_message(id: u64, peer: tl::enums::Peer, date: i32) -> tl::enums::Message {
    tl::types::Message {
        from_id: Some(user_peer(USER)),
        ..sync_grammers::blank_message(message_id(id), peer, date, id.to_string())
    }
    .into()
}

/// The TL update that carries `update`.
fn render_update(server: &Server, update: &TestUpdate, date: i32) -> tl::enums::Update {
    let id = update.id;
    match update.sequence {
        Sequence::Common { pts, pts_count: 1 } => tl::types::UpdateNewMessage {
            message: text_message(id, user_peer(USER), date),
            pts,
            pts_count: 1,
        }
        .into(),
        Sequence::Common { pts, pts_count: 0 } => {
            let (max_id, still_unread_count) = split(id);
            tl::types::UpdateReadHistoryInbox {
                folder_id: None,
                peer: user_peer(USER),
                top_msg_id: None,
                max_id,
                still_unread_count,
                pts,
                pts_count: 0,
            }
            .into()
        }
        Sequence::Common { pts, pts_count } => {
            let (low, high) = split(id);
            tl::types::UpdatePinnedMessages {
                pinned: true,
                peer: user_peer(USER),
                messages: vec![low, high],
                pts,
                pts_count,
            }
            .into()
        }
        Sequence::Qts { qts } => tl::types::UpdateNewEncryptedMessage {
            message: encrypted(id, date),
            qts,
        }
        .into(),
        Sequence::Channel {
            channel_id,
            pts,
            pts_count,
        } => tl::types::UpdateNewChannelMessage {
            message: text_message(id, channel_peer(channel_id), date),
            pts,
            pts_count,
        }
        .into(),
        Sequence::Unordered => match server.delivery(id) {
            Some(Delivery::Ephemeral) => tl::types::UpdateUserTyping {
                user_id: USER,
                top_msg_id: Some(i32::try_from(id).unwrap_or(-1)),
                action: tl::enums::SendMessageAction::SendMessageTypingAction,
            }
            .into(),
            _ => tl::types::UpdateUserName {
                user_id: USER,
                first_name: id.to_string(),
                last_name: String::new(),
                usernames: Vec::new(),
            }
            .into(),
        },
        Sequence::ChannelTooLong { channel_id, pts } => {
            tl::types::UpdateChannelTooLong { channel_id, pts }.into()
        }
        Sequence::PtsChanged => tl::enums::Update::PtsChanged,
    }
}

fn encrypted(id: u64, date: i32) -> tl::enums::EncryptedMessage {
    tl::types::EncryptedMessage {
        random_id: i64::from_ne_bytes(id.to_ne_bytes()),
        chat_id: SECRET_CHAT,
        date,
        bytes: vec![0; 16],
        file: tl::enums::EncryptedFile::Empty,
    }
    .into()
}

/// How the pushes' containers present [`USER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Users {
    /// With their access hash, always.
    Full,
    /// As a "min" constructor in every third container (by date): the converter must ask its
    /// cache, which does not know them, and withhold the container's messages.
    SometimesMin,
}

fn users(mode: Users, date: i32) -> Vec<tl::enums::User> {
    let min = mode == Users::SometimesMin && date % 3 == 0;
    vec![user(USER, Some(USER_HASH), min)]
}

fn chats(entities: &TestEntities) -> Vec<tl::enums::Chat> {
    entities
        .channels
        .iter()
        .map(|c| channel(c.channel_id, Some(c.access_hash), c.min))
        .collect()
}

fn full_channel(server: &Server, channel_id: i64) -> Vec<tl::enums::Chat> {
    server
        .access_hashes()
        .filter(|&(id, _)| id == channel_id)
        .map(|(id, hash)| channel(id, Some(hash), false))
        .collect()
}

/// A push as Telegram sends it.
fn render_push(
    server: &Server,
    push: &Updates<TestUpdate, TestEntities>,
    mode: Users,
) -> tl::enums::Updates {
    match push {
        Updates::TooLong => tl::enums::Updates::TooLong,
        Updates::Short { update, date } => match update.sequence {
            Sequence::Common { pts, pts_count: 1 } => tl::types::UpdateShortMessage {
                out: false,
                mentioned: false,
                media_unread: false,
                silent: false,
                id: message_id(update.id),
                user_id: USER,
                message: update.id.to_string(),
                pts,
                pts_count: 1,
                date: *date,
                fwd_from: None,
                via_bot_id: None,
                reply_to: None,
                entities: None,
                ttl_period: None,
            }
            .into(),
            _ => tl::types::UpdateShort {
                update: render_update(server, update, *date),
                date: *date,
            }
            .into(),
        },
        Updates::Combined {
            updates,
            entities,
            date,
            seq_start,
            seq,
        } => {
            let updates = updates
                .iter()
                .map(|u| render_update(server, u, *date))
                .collect();
            if seq_start == seq {
                tl::types::Updates {
                    updates,
                    users: users(mode, *date),
                    chats: chats(entities),
                    date: *date,
                    seq: *seq,
                }
                .into()
            } else {
                tl::types::UpdatesCombined {
                    updates,
                    users: users(mode, *date),
                    chats: chats(entities),
                    date: *date,
                    seq_start: *seq_start,
                    seq: *seq,
                }
                .into()
            }
        }
    }
}

fn render_state(state: State) -> tl::enums::updates::State {
    tl::types::updates::State {
        pts: state.pts,
        qts: state.qts,
        date: state.date,
        seq: state.seq,
        unread_count: 0,
    }
    .into()
}

fn render_difference(
    server: &Server,
    difference: &Difference<TestUpdate, TestEntities>,
) -> tl::enums::updates::Difference {
    let date = server.state().date;
    match difference {
        Difference::Empty { date, seq } => tl::types::updates::DifferenceEmpty {
            date: *date,
            seq: *seq,
        }
        .into(),
        Difference::TooLong { pts } => tl::types::updates::DifferenceTooLong { pts: *pts }.into(),
        Difference::Difference {
            updates,
            entities,
            state,
            slice,
        } => {
            // The leading messages as `new_messages` (without their pts, as Telegram sends
            // them), the rest as `other_updates`: the order stays the numbering's.
            let leading = updates
                .iter()
                .take_while(|u| matches!(u.sequence, Sequence::Common { pts_count: 1, .. }))
                .count();
            let new_messages = updates[..leading]
                .iter()
                .map(|u| text_message(u.id, user_peer(USER), date))
                .collect();
            let other_updates = updates[leading..]
                .iter()
                .map(|u| render_update(server, u, date))
                .collect();
            let users = vec![user(USER, Some(USER_HASH), false)];
            if *slice {
                tl::types::updates::DifferenceSlice {
                    new_messages,
                    new_encrypted_messages: Vec::new(),
                    other_updates,
                    chats: chats(entities),
                    users,
                    intermediate_state: render_state(*state),
                }
                .into()
            } else {
                tl::types::updates::Difference {
                    new_messages,
                    new_encrypted_messages: Vec::new(),
                    other_updates,
                    chats: chats(entities),
                    users,
                    state: render_state(*state),
                }
                .into()
            }
        }
    }
}

fn render_channel_difference(
    server: &Server,
    difference: &ChannelDifference<TestUpdate, TestEntities>,
) -> tl::enums::updates::ChannelDifference {
    let date = server.state().date;
    let channel_id = difference.channel_id;
    let users = || vec![user(USER, Some(USER_HASH), false)];
    match &difference.kind {
        ChannelDifferenceKind::Empty {
            pts,
            is_final,
            timeout,
        } => tl::types::updates::ChannelDifferenceEmpty {
            r#final: *is_final,
            pts: *pts,
            timeout: *timeout,
        }
        .into(),
        ChannelDifferenceKind::Difference {
            updates,
            pts,
            is_final,
            timeout,
            ..
        } => tl::types::updates::ChannelDifference {
            r#final: *is_final,
            pts: *pts,
            timeout: *timeout,
            new_messages: Vec::new(),
            other_updates: updates
                .iter()
                .map(|u| render_update(server, u, date))
                .collect(),
            chats: full_channel(server, channel_id),
            users: users(),
        }
        .into(),
        ChannelDifferenceKind::TooLong {
            pts,
            updates,
            entities,
            timeout,
        } => {
            let dialog = tl::types::Dialog {
                pinned: false,
                unread_mark: false,
                view_forum_as_messages: false,
                peer: channel_peer(channel_id),
                top_message: updates.last().map_or(0, |u| message_id(u.id)),
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
                pts: Some(*pts),
                draft: None,
                folder_id: None,
                ttl_period: None,
            };
            tl::types::updates::ChannelDifferenceTooLong {
                r#final: true,
                timeout: *timeout,
                dialog: dialog.into(),
                messages: updates
                    .iter()
                    .map(|u| text_message(u.id, channel_peer(channel_id), date))
                    .collect(),
                chats: chats(entities),
                users: users(),
            }
            .into()
        }
    }
}

// --- And back ----------------------------------------------------------------------------------

fn message_event(message: &tl::enums::Message) -> u64 {
    match message {
        tl::enums::Message::Message(m) => m.message.parse().unwrap_or(UNREADABLE),
        _ => UNREADABLE,
    }
}

/// The server event a delivered TL update carries, with the place its numbers give it.
fn event_of(update: &tl::enums::Update) -> TestUpdate {
    use tl::enums::Update as U;
    let id = match update {
        U::NewMessage(u) => message_event(&u.message),
        U::NewChannelMessage(u) => message_event(&u.message),
        U::PinnedMessages(u) => match u.messages[..] {
            [low, high] => join(low, high),
            _ => UNREADABLE,
        },
        U::ReadHistoryInbox(u) => join(u.max_id, u.still_unread_count),
        U::NewEncryptedMessage(u) => match &u.message {
            tl::enums::EncryptedMessage::Message(m) => {
                u64::from_ne_bytes(m.random_id.to_ne_bytes())
            }
            tl::enums::EncryptedMessage::Service(_) => UNREADABLE,
        },
        U::UserName(u) => u.first_name.parse().unwrap_or(UNREADABLE),
        U::UserTyping(u) => u
            .top_msg_id
            .and_then(|id| u64::try_from(id).ok())
            .unwrap_or(UNREADABLE),
        U::ChannelTooLong(_) | U::PtsChanged => 0,
        _ => UNREADABLE,
    };
    TestUpdate {
        id,
        sequence: sequence_of(update),
    }
}

// --- The account: server, oracle, transport, handler --------------------------------------------

/// What the transport and the handler share.
struct World {
    server: Server,
    oracle: Oracle,
    /// The first broken rule.
    violation: Option<String>,
    /// Deliveries judged.
    delivered: u64,
    /// Randomness of the request faults.
    rng: Rng,
    faults: Faults,
    report: Calls,
    /// How often each constructor of a push or a reply was sent.
    sent: BTreeMap<&'static str, u64>,
}

impl World {
    fn sent(&mut self, constructor: &'static str) {
        *self.sent.entry(constructor).or_default() += 1;
    }
}

fn push_name(updates: &tl::enums::Updates) -> &'static str {
    use tl::enums::Updates as T;
    match updates {
        T::TooLong => "updatesTooLong",
        T::UpdateShortMessage(_) => "updateShortMessage",
        T::UpdateShortChatMessage(_) => "updateShortChatMessage",
        T::UpdateShort(_) => "updateShort",
        T::Combined(_) => "updatesCombined",
        T::Updates(_) => "updates",
        T::UpdateShortSentMessage(_) => "updateShortSentMessage",
    }
}

fn difference_name(difference: &tl::enums::updates::Difference) -> &'static str {
    use tl::enums::updates::Difference as D;
    match difference {
        D::Empty(_) => "updates.differenceEmpty",
        D::Difference(_) => "updates.difference",
        D::Slice(_) => "updates.differenceSlice",
        D::TooLong(_) => "updates.differenceTooLong",
    }
}

fn channel_difference_name(difference: &tl::enums::updates::ChannelDifference) -> &'static str {
    use tl::enums::updates::ChannelDifference as D;
    match difference {
        D::Empty(_) => "updates.channelDifferenceEmpty",
        D::Difference(_) => "updates.channelDifference",
        D::TooLong(_) => "updates.channelDifferenceTooLong",
    }
}

/// What the transport was asked and what went wrong with it.
#[derive(Debug, Default, Clone, Copy)]
struct Calls {
    calls: u64,
    failed: u64,
    corrupted: u64,
    channel_refusals: u64,
}

#[derive(Clone)]
struct Account(Arc<Mutex<World>>);

impl Account {
    fn lock(&self) -> MutexGuard<'_, World> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn rpc(code: i32, message: String) -> InvocationError {
    InvocationError::Rpc(RpcError::from(tl::types::RpcError {
        error_code: code,
        error_message: message,
    }))
}

/// The fake transport: decodes each request, answers it from the server after a round trip,
/// failing or corrupting some replies.
struct Transport {
    account: Account,
    latency: Duration,
}

impl Transport {
    fn answer(&self, request: &[u8]) -> Result<Vec<u8>, InvocationError> {
        let mut world = self.account.lock();
        let world = &mut *world;
        world.report.calls += 1;
        let faults = world.faults.clone();
        if world.rng.chance(faults.request_failure) {
            world.report.failed += 1;
            return Err(if world.rng.chance(0.5) {
                let seconds = world.rng.below(4);
                rpc(420, format!("FLOOD_WAIT_{seconds}"))
            } else {
                rpc(500, "INTERNAL_SERVER_ERROR".into())
            });
        }
        if world.rng.chance(faults.corrupt_reply) {
            // Bytes that decode as nothing: asked before the server, which keeps its books.
            world.report.corrupted += 1;
            return Ok(vec![0xde, 0xad, 0xbe, 0xef]);
        }
        let id = u32::from_le_bytes(request[..4].try_into().unwrap());
        let body = &request[4..];
        let server = &mut world.server;
        Ok(match id {
            tl::functions::updates::GetState::CONSTRUCTOR_ID => {
                render_state(server.state()).to_bytes()
            }
            tl::functions::updates::GetDifference::CONSTRUCTOR_ID => {
                let call = tl::functions::updates::GetDifference::from_bytes(body).unwrap();
                let difference = server.get_difference(call.pts, call.qts, call.pts_total_limit);
                let reply = render_difference(server, &difference);
                world.sent(difference_name(&reply));
                if let tl::enums::updates::Difference::Difference(tl::types::updates::Difference {
                    new_messages,
                    ..
                })
                | tl::enums::updates::Difference::Slice(tl::types::updates::DifferenceSlice {
                    new_messages,
                    ..
                }) = &reply
                    && !new_messages.is_empty()
                {
                    world.sent("new_messages");
                }
                reply.to_bytes()
            }
            tl::functions::updates::GetChannelDifference::CONSTRUCTOR_ID => {
                let call = tl::functions::updates::GetChannelDifference::from_bytes(body).unwrap();
                let tl::enums::InputChannel::Channel(input) = call.channel else {
                    panic!("channel request without a hash: {:?}", call.channel)
                };
                match server.get_channel_difference(
                    input.channel_id,
                    input.access_hash,
                    call.pts,
                    call.limit,
                ) {
                    Ok(difference) => {
                        let reply = render_channel_difference(server, &difference);
                        world.sent(channel_difference_name(&reply));
                        reply.to_bytes()
                    }
                    Err(ChannelRefusal::Invalid | ChannelRefusal::BadAccessHash) => {
                        world.report.channel_refusals += 1;
                        return Err(rpc(400, "CHANNEL_INVALID".into()));
                    }
                }
            }
            other => panic!("unexpected request {other:#x}"),
        })
    }
}

impl Invoke for Transport {
    fn invoke<R>(
        &self,
        request: &R,
    ) -> impl Future<Output = Result<R::Return, InvocationError>> + Send
    where
        R: tl::RemoteCall + Send + Sync,
        R::Return: Send,
    {
        let request = request.to_bytes();
        let latency = self.latency;
        async move {
            tokio::time::sleep(latency).await;
            let reply = self.answer(&request)?;
            R::Return::from_bytes(&reply).map_err(InvocationError::from)
        }
    }
}

/// The handler: each delivered TL update, mapped back to its event, goes to the oracle.
///
/// The batch's entities are not checked against its messages: the engine hands entities over
/// when it learns them, so an update that waited behind a gap comes in a later batch than the
/// users of its container.
#[derive(Clone)]
struct Judge(Account);

impl Handler<TlUpdate, TlEntities> for Judge {
    async fn handle(&self, update: TlUpdate, _: Arc<[TlEntities]>) -> Result<(), BoxError> {
        let mut event = event_of(&update);
        let mut world = self.0.lock();
        let world = &mut *world;
        // A message of a difference: its place is the one the server logged.
        if event.sequence == Sequence::Unordered
            && world.server.delivery(event.id) == Some(Delivery::Durable)
            && !world.server.is_latest_message(event.id)
            && let Some(logged) = world.server.event(event.id)
        {
            event = logged;
        }
        world.delivered += 1;
        if world.violation.is_some() {
            return Ok(());
        }
        if let Err(message) = world.oracle.deliver(&world.server, &event) {
            world.violation = Some(format!("{message} (as {update:?})"));
        }
        Ok(())
    }
}

/// The application's peer cache: the channels of its dialogs, and [`USER`] unless told not to.
struct Dialogs {
    channels: HashSet<i64>,
    knows_user: bool,
}

impl PeerCache for Dialogs {
    fn is_known(&self, peer: MentionedPeer) -> bool {
        match peer {
            MentionedPeer::User(id) => self.knows_user && id == USER,
            MentionedPeer::Channel(id) => self.channels.contains(&id),
        }
    }
}

// --- A run ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Run {
    seed: u64,
    events: u64,
    faults: Faults,
    users: Users,
    /// The server's answers capped small ([`tight_limits`]), and the client letting the
    /// server choose the size of a difference and asking for few channel events at once.
    tight: bool,
}

#[derive(Debug)]
struct Outcome {
    delivered: u64,
    calls: Calls,
    traffic: sync_testkit::Traffic,
    sent: BTreeMap<&'static str, u64>,
}

/// Answers small enough that a few lost pushes make slices, and a silence too-long answers.
fn tight_limits() -> Limits {
    Limits {
        difference_limit: 8,
        difference_too_long_after: 60,
        channel_too_long_after: 10,
        ..Limits::default()
    }
}

async fn run(setup: Run) -> Outcome {
    let Run {
        seed,
        events,
        faults,
        users,
        tight,
    } = setup;
    let limits = if tight {
        tight_limits()
    } else {
        Limits::default()
    };
    let server = Server::new(
        seed,
        Workload {
            channels: 8,
            ..Workload::default()
        },
        limits,
    );
    let start = server.state();
    let channels: Vec<(i64, i32)> = server.channel_states().collect();
    let hashes: Vec<(i64, i64)> = server.access_hashes().collect();
    let account = Account(Arc::new(Mutex::new(World {
        oracle: Oracle::new(start, channels.clone()),
        server,
        violation: None,
        delivered: 0,
        rng: Rng::new(seed ^ 0x0A91_C0DE),
        faults: faults.clone(),
        report: Calls::default(),
        sent: BTreeMap::new(),
    })));

    // Storage as a client that loaded its dialogs.
    let storage = Arc::new(MemoryStorage::new());
    let commit = Commit {
        state: Some(start),
        channels: channels
            .iter()
            .map(|&(channel_id, pts)| ChannelCommit {
                channel_id,
                pts,
                reset: false,
            })
            .collect(),
        ..Commit::default()
    };
    storage.apply(ACCOUNT, &commit).await.unwrap();
    storage.set_access_hashes(ACCOUNT, &hashes).await.unwrap();

    let transport = Transport {
        account: account.clone(),
        latency: Duration::from_millis(40),
    };
    let mut config = ManagerConfig {
        jitter_seed: Some(seed),
        shards: 4,
        ..ManagerConfig::default()
    };
    if tight {
        config.engine.pts_total_limit = None;
        config.engine.channel_difference_limit = 4;
    }
    let manager = Manager::with_config(
        ACCOUNT,
        GrammersApi::new(transport),
        Arc::clone(&storage),
        Judge(account.clone()),
        config,
    );
    let handle = manager.handle();
    let running = tokio::spawn(manager.run());
    let converter = Converter::new(Dialogs {
        channels: hashes.iter().map(|&(id, _)| id).collect(),
        knows_user: users == Users::Full,
    });

    // The producer: a push every 20 ms through the faulty network, each arriving as bytes.
    let mut rng = Rng::new(seed ^ 0x5EED_F00D);
    let mut network = Network::new(faults, Duration::from_millis(40));
    let mut transit: BTreeMap<(Instant, u64), Vec<u8>> = BTreeMap::new();
    let mut sent = 0u64;
    let mut next_round = Instant::now();
    let interval = Duration::from_millis(20);
    loop {
        let producing = account.lock().server.events() < events;
        let next_arrival = transit.first_key_value().map(|(&(at, _), _)| at);
        let wake = match (producing, next_arrival) {
            (true, Some(at)) => at.min(next_round),
            (true, None) => next_round,
            (false, Some(at)) => at,
            (false, None) => break,
        };
        tokio::time::sleep_until(wake).await;
        let now = Instant::now();
        if producing && now >= next_round {
            next_round += interval;
            let mut world = account.lock();
            let push = world.server.produce();
            for arrival in network.send(&mut rng, &mut world.server, push) {
                let push = render_push(&world.server, &arrival.updates, users);
                world.sent(push_name(&push));
                let bytes = push.to_bytes();
                sent += 1;
                transit.insert((now + arrival.after, sent), bytes);
            }
        }
        while let Some(entry) = transit.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let bytes = entry.remove();
            let updates = tl::enums::Updates::from_bytes(&bytes).unwrap();
            feed(&handle, &converter, UpdatesLike::Updates(updates))
                .await
                .unwrap();
        }
    }
    handle.caught_up().await.unwrap();
    handle.shutdown();
    let summary = running.await.unwrap().unwrap();
    assert!(summary.persisted, "seed {seed}: final state not persisted");

    let snapshot = storage.load(ACCOUNT).await.unwrap();
    let mut world = account.lock();
    let world = &mut *world;
    if let Some(violation) = world.violation.take() {
        panic!("seed {seed}: {violation}");
    }
    let verdict = world.oracle.finish(&world.server, snapshot.state, |id| {
        snapshot.channels.get(&id).copied()
    });
    if let Err(message) = verdict {
        panic!("seed {seed}: {message}");
    }
    assert_eq!(
        world.oracle.repeats(),
        0,
        "seed {seed}: repeats without a crash"
    );
    Outcome {
        delivered: world.delivered,
        calls: world.report,
        traffic: network.traffic(),
        sent: std::mem::take(&mut world.sent),
    }
}

/// Every event the server makes (and the network's absurd ones) comes back from its TL form,
/// through bytes, as the same id in the same place.
#[test]
fn every_event_survives_its_tl_form() {
    let mut server = Server::new(5, Workload::default(), Limits::default());
    let mut network = Network::new(Faults::harsh(), Duration::ZERO);
    let mut rng = Rng::new(5);
    let mut seen = 0;
    for _ in 0..1_000 {
        let push = server.produce();
        for arrival in network.send(&mut rng, &mut server, push) {
            let updates = match arrival.updates {
                Updates::Combined { updates, .. } => updates,
                Updates::Short { update, .. } => vec![update],
                Updates::TooLong => Vec::new(),
            };
            for update in updates {
                let tl = crate::common::round_trip(&render_update(&server, &update, 1));
                assert_eq!(event_of(&tl), update, "{tl:?}");
                seen += 1;
            }
        }
    }
    assert!(seen > 500);
}

/// One run, bounded on the virtual clock: a run that does not end within an hour of it is a
/// failure, not a hang.
async fn bounded(setup: Run) -> Outcome {
    let seed = setup.seed;
    tokio::time::timeout(Duration::from_secs(3_600), run(setup))
        .await
        .unwrap_or_else(|_| panic!("seed {seed}: the run did not end"))
}

/// The moderate and harsh fault mixes, a few seeds each, with the user known to the cache or
/// not, and with the server's default and tight answer limits.
#[tokio::test(start_paused = true)]
async fn tl_pushes_and_replies_pass_the_oracle() {
    let mixes = [("moderate", Faults::moderate()), ("harsh", Faults::harsh())];
    let mut sent: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut calls = Calls::default();
    let mut traffic = sync_testkit::Traffic::default();
    for seed in 1..=4 {
        for (name, faults) in &mixes {
            for users in [Users::Full, Users::SometimesMin] {
                for tight in [false, true] {
                    let outcome = bounded(Run {
                        seed: seed * 100 + name.len() as u64,
                        events: 500,
                        faults: faults.clone(),
                        users,
                        tight,
                    })
                    .await;
                    assert!(outcome.delivered > 0, "seed {seed}: nothing delivered");
                    for (constructor, count) in outcome.sent {
                        *sent.entry(constructor).or_default() += count;
                    }
                    calls.calls += outcome.calls.calls;
                    calls.failed += outcome.calls.failed;
                    calls.corrupted += outcome.calls.corrupted;
                    traffic.lost += outcome.traffic.lost;
                    traffic.duplicated += outcome.traffic.duplicated;
                    traffic.too_long += outcome.traffic.too_long;
                    traffic.malformed += outcome.traffic.malformed;
                    traffic.absurd += outcome.traffic.absurd;
                    traffic.pts_changed += outcome.traffic.pts_changed;
                }
            }
        }
    }
    // Every constructor the rendering knows was sent, and every fault happened.
    for constructor in [
        "updatesTooLong",
        "updateShortMessage",
        "updateShort",
        "updates",
        "updatesCombined",
        "updates.differenceEmpty",
        "updates.difference",
        "updates.differenceSlice",
        "updates.differenceTooLong",
        "new_messages",
        "updates.channelDifferenceEmpty",
        "updates.channelDifference",
        "updates.channelDifferenceTooLong",
    ] {
        assert!(sent.contains_key(constructor), "{constructor} never sent");
    }
    assert!(calls.failed > 0 && calls.corrupted > 0, "{calls:?}");
    assert!(
        traffic.lost > 0
            && traffic.duplicated > 0
            && traffic.too_long > 0
            && traffic.malformed > 0
            && traffic.absurd > 0
            && traffic.pts_changed > 0,
        "{traffic:?}"
    );
}
