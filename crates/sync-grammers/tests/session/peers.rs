//! The unknown-peer check answered by a grammers session: `Converter::unknown_peers`,
//! `SessionPeers`, and the session reader in front of a manager that stores into the same
//! session (`SessionStorage`).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grammers_mtsender::InvocationError;
use grammers_session::Session;
use grammers_session::storages::MemorySession;
use grammers_session::types::{PeerAuth, PeerId, PeerInfo};
use grammers_session::updates::UpdatesLike;
use sync_grammers::client::{
    GrammersApi, Invoke, ReaderEnd, SessionPeers, SessionStorage, run_session_reader,
};
use sync_grammers::tl::{self, Deserializable, Identifiable, Serializable};
use sync_grammers::{Converter, MentionedPeer, PeerCache, TlEntities, TlUpdate, blank_message};
use sync_runtime::{BoxError, Handler, Manager};
use sync_storage::StateStorage;

const ME: i64 = 1;

fn user_peer(user_id: i64) -> tl::enums::Peer {
    tl::types::PeerUser { user_id }.into()
}

fn user(id: i64, access_hash: Option<i64>, min: bool) -> tl::enums::User {
    tl::types::User {
        id,
        access_hash,
        min,
        first_name: Some(format!("user {id}")),
        ..blank_user()
    }
    .into()
}

fn blank_user() -> tl::types::User {
    tl::types::User {
        is_self: false,
        contact: false,
        mutual_contact: false,
        deleted: false,
        bot: false,
        bot_chat_history: false,
        bot_nochats: false,
        verified: false,
        restricted: false,
        min: false,
        bot_inline_geo: false,
        support: false,
        scam: false,
        apply_min_photo: false,
        fake: false,
        bot_attach_menu: false,
        premium: false,
        attach_menu_enabled: false,
        bot_can_edit: false,
        close_friend: false,
        stories_hidden: false,
        stories_unavailable: false,
        contact_require_premium: false,
        bot_business: false,
        bot_has_main_app: false,
        bot_forum_view: false,
        bot_forum_can_manage_topics: false,
        bot_can_manage_bots: false,
        bot_guestchat: false,
        bot_guard: false,
        id: 0,
        access_hash: None,
        first_name: None,
        last_name: None,
        username: None,
        phone: None,
        photo: None,
        status: None,
        bot_info_version: None,
        restriction_reason: None,
        bot_inline_placeholder: None,
        lang_code: None,
        emoji_status: None,
        usernames: None,
        stories_max_id: None,
        color: None,
        profile_color: None,
        bot_active_users: None,
        bot_verification_icon: None,
        send_paid_messages_stars: None,
        linked_community_id: None,
    }
}

/// A private message from `user_id` at `pts`, as a short update.
fn short_message(user_id: i64, pts: i32) -> tl::enums::Updates {
    tl::types::UpdateShortMessage {
        out: false,
        mentioned: false,
        media_unread: false,
        silent: false,
        id: pts,
        user_id,
        message: format!("message {pts}"),
        pts,
        pts_count: 1,
        date: 1_700_000_000 + pts,
        fwd_from: None,
        via_bot_id: None,
        reply_to: None,
        entities: None,
        ttl_period: None,
    }
    .into()
}

/// The same message as the server stores it (what a difference returns).
fn stored_message(user_id: i64, pts: i32) -> tl::enums::Message {
    tl::types::Message {
        from_id: Some(user_peer(user_id)),
        ..blank_message(
            pts,
            user_peer(user_id),
            1_700_000_000 + pts,
            format!("message {pts}"),
        )
    }
    .into()
}

/// An `updates` container with one `updateNewMessage` from `user_id` and the given users.
fn container(user_id: i64, pts: i32, users: Vec<tl::enums::User>) -> tl::enums::Updates {
    tl::types::Updates {
        updates: vec![
            tl::types::UpdateNewMessage {
                message: stored_message(user_id, pts),
                pts,
                pts_count: 1,
            }
            .into(),
        ],
        users,
        chats: Vec::new(),
        date: 1_700_000_000,
        seq: 0,
    }
    .into()
}

// --- Converter::unknown_peers ------------------------------------------------------------------

#[test]
fn unknown_peers_lists_what_neither_the_container_nor_the_cache_knows() {
    let converter = Converter::new(|peer| peer == MentionedPeer::User(7)).with_self_id(ME);
    // Known to the cache, the own user: nothing to ask.
    assert!(converter.unknown_peers(&short_message(7, 11)).is_empty());
    let outgoing = match short_message(8, 11) {
        tl::enums::Updates::UpdateShortMessage(mut m) => {
            m.out = true;
            m.user_id = 7;
            tl::enums::Updates::from(m)
        }
        _ => unreachable!(),
    };
    assert!(converter.unknown_peers(&outgoing).is_empty());
    assert_eq!(
        converter.unknown_peers(&short_message(8, 11)),
        [MentionedPeer::User(8)],
        "chat and sender are one peer, listed once"
    );
    // A full user in the container is known; a min one is not.
    assert!(
        converter
            .unknown_peers(&container(9, 11, vec![user(9, Some(90), false)]))
            .is_empty()
    );
    assert_eq!(
        converter.unknown_peers(&container(9, 11, vec![user(9, Some(90), true)])),
        [MentionedPeer::User(9)]
    );
    // Unnumbered updates are never withheld, so never asked about.
    let typing: tl::enums::Updates = tl::types::UpdateShort {
        update: tl::types::UpdateUserTyping {
            user_id: 9,
            top_msg_id: None,
            action: tl::enums::SendMessageAction::SendMessageTypingAction,
        }
        .into(),
        date: 1,
    }
    .into();
    assert!(converter.unknown_peers(&typing).is_empty());
}

// --- SessionPeers ------------------------------------------------------------------------------

#[tokio::test]
async fn learned_peers_are_known_and_written_into_the_session() {
    let session = Arc::new(MemorySession::default());
    let peers = SessionPeers::new(Arc::clone(&session));
    let channel: tl::enums::Chat = tl::types::ChannelForbidden {
        broadcast: true,
        megagroup: false,
        monoforum: false,
        id: 50,
        access_hash: -5,
        title: "gone".into(),
        until_date: None,
    }
    .into();
    let entities = TlEntities::new(
        vec![
            user(7, Some(70), false),
            user(8, Some(80), true),
            user(9, None, false),
            user(0x100_0000_0000, Some(1), false),
        ],
        vec![channel],
    );
    peers.learn(&entities).await.unwrap();
    assert!(peers.is_known(MentionedPeer::User(7)));
    assert!(peers.is_known(MentionedPeer::Channel(50)));
    for unknown in [8, 9, 0x100_0000_0000] {
        assert!(
            !peers.is_known(MentionedPeer::User(unknown)),
            "user {unknown}"
        );
    }
    let cached = session.peer(PeerId::user(7).unwrap()).await.unwrap();
    assert_eq!(cached.and_then(|p| p.auth()), Some(PeerAuth::from_hash(70)));
    let cached = session.peer(PeerId::channel(50).unwrap()).await.unwrap();
    assert_eq!(cached.and_then(|p| p.auth()), Some(PeerAuth::from_hash(-5)));
    assert_eq!(session.peer(PeerId::user(8).unwrap()).await.unwrap(), None);
}

#[tokio::test]
async fn resolve_remembers_what_the_session_holds() {
    let session = Arc::new(MemorySession::default());
    session
        .cache_peer(PeerInfo::User {
            id: 7,
            auth: Some(PeerAuth::from_hash(70)),
            bot: Some(false),
            is_self: Some(false),
        })
        .await
        .unwrap();
    let peers = SessionPeers::new(Arc::clone(&session));
    assert!(
        !peers.is_known(MentionedPeer::User(7)),
        "nothing is loaded at start"
    );
    let asked = [
        MentionedPeer::User(7),
        MentionedPeer::User(8),
        MentionedPeer::Channel(i64::MAX),
    ];
    assert_eq!(peers.resolve(&asked).await.unwrap(), 1);
    assert_eq!(peers.access_hash(MentionedPeer::User(7)), Some(70));
    assert!(!peers.is_known(MentionedPeer::User(8)));
    // Learned by the session later (grammers-client's own calls): asked again, found.
    session
        .cache_peer(PeerInfo::User {
            id: 8,
            auth: Some(PeerAuth::from_hash(80)),
            bot: None,
            is_self: None,
        })
        .await
        .unwrap();
    assert_eq!(peers.resolve(&asked).await.unwrap(), 2);
}

// --- The session reader into a manager ---------------------------------------------------------

/// A server at pts 10 whose later messages (one pts each) are `stored`, with their senders
/// in `users`: what `getDifference` returns.
#[derive(Default)]
struct Server {
    stored: Mutex<Vec<tl::enums::Message>>,
    users: Mutex<Vec<tl::enums::User>>,
    differences: Mutex<usize>,
}

impl Server {
    fn store(&self, user_id: i64, pts: i32) {
        let mut stored = self.stored.lock().unwrap();
        assert_eq!(stored.len(), usize::try_from(pts - 11).unwrap());
        stored.push(stored_message(user_id, pts));
    }

    fn differences(&self) -> usize {
        *self.differences.lock().unwrap()
    }

    fn answer(&self, request: &[u8]) -> Vec<u8> {
        let id = u32::from_le_bytes(request[..4].try_into().unwrap());
        let state = |pts| tl::types::updates::State {
            pts,
            qts: 0,
            date: 1,
            seq: 0,
            unread_count: 0,
        };
        match id {
            tl::functions::updates::GetState::CONSTRUCTOR_ID => {
                tl::enums::updates::State::from(state(10)).to_bytes()
            }
            tl::functions::updates::GetDifference::CONSTRUCTOR_ID => {
                *self.differences.lock().unwrap() += 1;
                let call =
                    tl::functions::updates::GetDifference::from_bytes(&request[4..]).unwrap();
                let stored = self.stored.lock().unwrap();
                let known = usize::try_from(call.pts - 10).unwrap();
                let reply: tl::enums::updates::Difference = if known >= stored.len() {
                    tl::types::updates::DifferenceEmpty { date: 1, seq: 0 }.into()
                } else {
                    tl::types::updates::Difference {
                        new_messages: stored[known..].to_vec(),
                        new_encrypted_messages: Vec::new(),
                        other_updates: Vec::new(),
                        chats: Vec::new(),
                        users: self.users.lock().unwrap().clone(),
                        state: state(10 + i32::try_from(stored.len()).unwrap()).into(),
                    }
                    .into()
                };
                reply.to_bytes()
            }
            other => panic!("unexpected request {other:#x}"),
        }
    }
}

impl Invoke for Server {
    fn invoke<R>(
        &self,
        request: &R,
    ) -> impl Future<Output = Result<R::Return, InvocationError>> + Send
    where
        R: tl::RemoteCall + Send + Sync,
        R::Return: Send,
    {
        let reply =
            R::Return::from_bytes(&self.answer(&request.to_bytes())).map_err(InvocationError::from);
        async move { reply }
    }
}

/// The text of each delivered message.
#[derive(Clone, Default)]
struct Texts(Arc<Mutex<Vec<String>>>);

impl Handler<TlUpdate, TlEntities> for Texts {
    async fn handle(&self, update: TlUpdate, _: Arc<[TlEntities]>) -> Result<(), BoxError> {
        if let tl::enums::Update::NewMessage(u) = &*update
            && let tl::enums::Message::Message(m) = &u.message
        {
            self.0.lock().unwrap().push(m.message.clone());
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_user_the_session_knows_is_delivered_and_an_unknown_one_fetched_by_difference() {
    // The session grammers-client signed in with: it knows user 7.
    let session = Arc::new(MemorySession::default());
    session
        .cache_peer(PeerInfo::User {
            id: 7,
            auth: Some(PeerAuth::from_hash(70)),
            bot: Some(false),
            is_self: Some(false),
        })
        .await
        .unwrap();
    let server = Arc::new(Server::default());
    server.users.lock().unwrap().push(user(8, Some(80), false));
    let peers = SessionPeers::new(Arc::clone(&session));
    let api = GrammersApi::new(Arc::clone(&server)).with_peers(peers.clone());
    let storage = SessionStorage::new(Arc::clone(&session), ME);
    let texts = Texts::default();
    let manager = Manager::new(ME, api, storage.clone(), texts.clone());
    let handle = manager.handle();
    let run = tokio::spawn(manager.run());
    handle.caught_up().await.unwrap();
    let (pool, receiver) = tokio::sync::mpsc::channel(8);
    let converter = Converter::new(peers.clone()).with_self_id(ME);
    let reader = tokio::spawn(run_session_reader(receiver, handle.clone(), converter));

    // From user 7, whom the session knows: delivered as pushed.
    server.store(7, 11);
    pool.send(UpdatesLike::Updates(short_message(7, 11)))
        .await
        .unwrap();
    let differences = server.differences();
    eventually(|| texts.0.lock().unwrap().len() == 1).await;
    assert_eq!(
        server.differences(),
        differences,
        "no difference for a known user"
    );

    // From user 8, whom it does not know: withheld, then fetched with user 8's full entry.
    server.store(8, 12);
    pool.send(UpdatesLike::Updates(short_message(8, 12)))
        .await
        .unwrap();
    eventually(|| texts.0.lock().unwrap().len() == 2).await;
    assert!(server.differences() > differences);
    // Learned from the difference, in memory and in the session.
    assert!(peers.is_known(MentionedPeer::User(8)));
    let cached = session.peer(PeerId::user(8).unwrap()).await.unwrap();
    assert_eq!(cached.and_then(|p| p.auth()), Some(PeerAuth::from_hash(80)));

    // So user 8's next message needs no difference.
    let differences = server.differences();
    server.store(8, 13);
    pool.send(UpdatesLike::Updates(short_message(8, 13)))
        .await
        .unwrap();
    eventually(|| texts.0.lock().unwrap().len() == 3).await;
    assert_eq!(server.differences(), differences);
    assert_eq!(
        *texts.0.lock().unwrap(),
        ["message 11", "message 12", "message 13"],
        "each once, in order"
    );

    // The manager stored its position in the session.
    handle.caught_up().await.unwrap();
    drop(pool);
    assert_eq!(reader.await.unwrap(), ReaderEnd::Closed);
    handle.shutdown();
    run.await.unwrap().unwrap();
    assert_eq!(
        storage.get_state(ME).await.unwrap().map(|s| s.pts),
        Some(13)
    );
    assert_eq!(session.updates_state().await.unwrap().pts, 13);
}

/// Waits up to two seconds for `done`.
async fn eventually(done: impl Fn() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out");
}
