//! Looking a batch's users and chats up by id.

use sync_grammers::tl;
use sync_grammers::{EntityIndex, PeerEntity, TlEntities};

use crate::common::{channel, channel_forbidden, channel_peer, chat_peer, user, user_peer};

fn group(id: i64) -> tl::enums::Chat {
    tl::types::ChatEmpty { id }.into()
}

#[test]
fn finds_users_groups_and_channels_across_a_batch() {
    let batch = [
        TlEntities::new(vec![user(7, None, true)], vec![channel(9, None, true)]),
        TlEntities::new(
            vec![user(7, Some(70), false), user(8, Some(80), false)],
            vec![
                channel(9, Some(90), false),
                group(5),
                channel_forbidden(10, 100),
            ],
        ),
    ];
    let index = EntityIndex::new(&batch);
    assert_eq!(index.len(), 5);
    // The full user and channel win over the min ones seen first.
    assert_eq!(index.user(7).and_then(|u| u.access_hash), Some(70));
    assert!(
        matches!(index.channel(9), Some(tl::enums::Chat::Channel(c)) if c.access_hash == Some(90))
    );
    assert!(matches!(
        index.channel(10),
        Some(tl::enums::Chat::ChannelForbidden(_))
    ));
    assert!(index.chat(5).is_some());
    // Groups and channels are separate id spaces.
    assert!(index.channel(5).is_none() && index.chat(9).is_none());
    assert!(index.user(6).is_none());
    assert!(matches!(index.peer(&user_peer(8)), Some(PeerEntity::User(u)) if u.id == 8));
    assert!(matches!(
        index.peer(&chat_peer(5)),
        Some(PeerEntity::Chat(_))
    ));
    assert!(matches!(
        index.peer(&channel_peer(10)),
        Some(PeerEntity::Channel(_))
    ));
    assert!(EntityIndex::new(&[]).is_empty());

    // The same lookups on one list.
    let list = &batch[1];
    assert_eq!(list.user(8).map(|u| u.id), Some(8));
    assert!(list.chat(5).is_some() && list.channel(5).is_none());
    assert!(matches!(
        list.peer(&channel_peer(9)),
        Some(PeerEntity::Channel(_))
    ));
    assert!(batch[0].user(7).is_some_and(|u| u.min));
}
