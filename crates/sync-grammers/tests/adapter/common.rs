//! TL values built by hand, and a few by decoding hand-written bytes.

use std::cell::RefCell;
use std::collections::HashSet;
use std::time::Instant;

use sync_core::{Batch, EngineConfig, Output, Request, State, Updates};
use sync_grammers::tl::{self, Deserializable, Serializable};
use sync_grammers::{Incoming, MentionedPeer, Refetch, TlEngine, TlEntities, TlUpdate};

pub(crate) fn user_peer(user_id: i64) -> tl::enums::Peer {
    tl::types::PeerUser { user_id }.into()
}

pub(crate) fn chat_peer(chat_id: i64) -> tl::enums::Peer {
    tl::types::PeerChat { chat_id }.into()
}

pub(crate) fn channel_peer(channel_id: i64) -> tl::enums::Peer {
    tl::types::PeerChannel { channel_id }.into()
}

/// A `message` with only id, peer, date and text set.
pub(crate) fn message(id: i32, peer_id: tl::enums::Peer) -> tl::types::Message {
    sync_grammers::blank_message(id, peer_id, 1_700_000_000, format!("message {id}"))
}

pub(crate) fn new_message(peer: tl::enums::Peer, pts: i32, pts_count: i32) -> tl::enums::Update {
    tl::types::UpdateNewMessage {
        message: message(pts, peer).into(),
        pts,
        pts_count,
    }
    .into()
}

pub(crate) fn new_channel_message(channel_id: i64, pts: i32) -> tl::enums::Update {
    tl::types::UpdateNewChannelMessage {
        message: message(pts, channel_peer(channel_id)).into(),
        pts,
        pts_count: 1,
    }
    .into()
}

pub(crate) fn delete_messages(pts: i32, pts_count: i32) -> tl::enums::Update {
    tl::types::UpdateDeleteMessages {
        messages: (0..pts_count).collect(),
        pts,
        pts_count,
    }
    .into()
}

pub(crate) fn typing(user_id: i64) -> tl::enums::Update {
    tl::types::UpdateUserTyping {
        user_id,
        top_msg_id: None,
        action: tl::enums::SendMessageAction::SendMessageTypingAction,
    }
    .into()
}

pub(crate) fn short_message(user_id: i64, pts: i32) -> tl::types::UpdateShortMessage {
    tl::types::UpdateShortMessage {
        out: false,
        mentioned: false,
        media_unread: false,
        silent: false,
        id: pts,
        user_id,
        message: format!("short {pts}"),
        pts,
        pts_count: 1,
        date: 1_700_000_000 + pts,
        fwd_from: None,
        via_bot_id: None,
        reply_to: None,
        entities: None,
        ttl_period: None,
    }
}

pub(crate) fn short_chat_message(
    from_id: i64,
    chat_id: i64,
    pts: i32,
) -> tl::types::UpdateShortChatMessage {
    tl::types::UpdateShortChatMessage {
        out: false,
        mentioned: false,
        media_unread: false,
        silent: false,
        id: pts,
        from_id,
        chat_id,
        message: format!("chat {pts}"),
        pts,
        pts_count: 1,
        date: 1_700_000_000 + pts,
        fwd_from: None,
        via_bot_id: None,
        reply_to: None,
        entities: None,
        ttl_period: None,
    }
}

fn push_u32(bytes: &mut Vec<u8>, value: u32) {
    bytes.extend_from_slice(&value.to_le_bytes());
}

fn push_i64(bytes: &mut Vec<u8>, value: i64) {
    bytes.extend_from_slice(&value.to_le_bytes());
}

/// `user#b1b8cc83` decoded from bytes: flags (bit 0: access_hash, bit 20: min), flags2, id,
/// access_hash.
pub(crate) fn user(id: i64, access_hash: Option<i64>, min: bool) -> tl::enums::User {
    let mut bytes = Vec::new();
    push_u32(&mut bytes, 0xb1b8_cc83);
    let flags = u32::from(access_hash.is_some()) | if min { 1 << 20 } else { 0 };
    push_u32(&mut bytes, flags);
    push_u32(&mut bytes, 0);
    push_i64(&mut bytes, id);
    if let Some(hash) = access_hash {
        push_i64(&mut bytes, hash);
    }
    tl::enums::User::from_bytes(&bytes).unwrap()
}

/// `channel#d49f34c6` decoded from bytes: flags (bit 12: min, bit 13: access_hash), flags2,
/// id, access_hash, title, photo (`chatPhotoEmpty`), date.
pub(crate) fn channel(id: i64, access_hash: Option<i64>, min: bool) -> tl::enums::Chat {
    let mut bytes = Vec::new();
    push_u32(&mut bytes, 0xd49f_34c6);
    let flags = if access_hash.is_some() { 1 << 13 } else { 0 } | if min { 1 << 12 } else { 0 };
    push_u32(&mut bytes, flags);
    push_u32(&mut bytes, 0);
    push_i64(&mut bytes, id);
    if let Some(hash) = access_hash {
        push_i64(&mut bytes, hash);
    }
    "title".to_owned().serialize(&mut bytes);
    push_u32(&mut bytes, 0x37c1_011c);
    push_u32(&mut bytes, 1_700_000_000);
    tl::enums::Chat::from_bytes(&bytes).unwrap()
}

pub(crate) fn channel_forbidden(id: i64, access_hash: i64) -> tl::enums::Chat {
    tl::types::ChannelForbidden {
        broadcast: true,
        megagroup: false,
        monoforum: false,
        id,
        access_hash,
        title: "gone".into(),
        until_date: None,
    }
    .into()
}

/// Serializes a TL value and decodes it back, as a value arriving from the network would.
pub(crate) fn round_trip<T: Serializable + Deserializable>(value: &T) -> T {
    T::from_bytes(&value.to_bytes()).unwrap()
}

/// An engine resumed from `state` whose start-up getDifference was answered empty.
pub(crate) fn engine_at(now: Instant, state: State) -> TlEngine {
    let mut engine = TlEngine::from_state(EngineConfig::default(), now, state, []).unwrap();
    let request = next_request(&mut engine);
    engine
        .handle_difference(
            now,
            request.id,
            sync_core::Difference::Empty {
                date: state.date,
                seq: state.seq,
            },
        )
        .unwrap();
    drain(&mut engine);
    engine
}

pub(crate) fn next_request(engine: &mut TlEngine) -> Request {
    loop {
        match engine.poll_output() {
            Some(Output::Request(request)) => return request,
            Some(_) => {}
            None => panic!("no request"),
        }
    }
}

/// Polls every output, acknowledging deliveries; returns the delivered TL updates and requests.
pub(crate) fn drain(engine: &mut TlEngine) -> (Vec<tl::enums::Update>, Vec<Request>) {
    let mut delivered = Vec::new();
    let mut requests = Vec::new();
    while let Some(output) = engine.poll_output() {
        match output {
            Output::Deliver(Batch { id, updates, .. }) => {
                delivered.extend(updates.into_iter().map(TlUpdate::into_inner));
                engine.ack(id).unwrap();
            }
            Output::Request(request) => requests.push(request),
            _ => {}
        }
    }
    (delivered, requests)
}

pub(crate) fn pts_of(updates: &[tl::enums::Update]) -> Vec<i32> {
    updates
        .iter()
        .map(|u| match sync_grammers::sequence_of(u) {
            sync_core::Sequence::Common { pts, .. } | sync_core::Sequence::Channel { pts, .. } => {
                pts
            }
            sync_core::Sequence::Qts { qts } => qts,
            _ => 0,
        })
        .collect()
}

pub(crate) fn entities(users: Vec<tl::enums::User>, chats: Vec<tl::enums::Chat>) -> TlEntities {
    TlEntities::new(users, chats)
}

/// A peer cache that knows a fixed set and records what it was asked.
pub(crate) struct Cache {
    known: HashSet<MentionedPeer>,
    pub(crate) asked: RefCell<Vec<MentionedPeer>>,
}

impl Cache {
    pub(crate) fn knowing(peers: &[MentionedPeer]) -> Self {
        Self {
            known: peers.iter().copied().collect(),
            asked: RefCell::new(Vec::new()),
        }
    }
}

impl sync_grammers::PeerCache for Cache {
    fn is_known(&self, peer: MentionedPeer) -> bool {
        self.asked.borrow_mut().push(peer);
        self.known.contains(&peer)
    }
}

/// The refetch that asks for the common difference only.
pub(crate) fn common_refetch() -> Refetch {
    Refetch {
        common: true,
        channels: vec![],
    }
}

/// What a refetch kept back, and what it asks for; panics on anything else.
pub(crate) fn withheld(
    incoming: Incoming,
) -> (
    Option<Updates<TlUpdate, sync_grammers::TlEntities>>,
    Refetch,
) {
    match incoming {
        Incoming::NeedsDifference { rest, refetch } => (rest, refetch),
        other => panic!("expected a refetch, got {other:?}"),
    }
}
