//! The contract's deletes and user access hashes, run by every backend through
//! `contract_suite!` (re-exported by `contract.rs`).

use sync_storage::{ChannelCommit, Commit, State, WriteMode};

use super::contract::Storage;

fn state(v: i32) -> State {
    State {
        pts: v,
        qts: v,
        date: v,
        seq: v,
    }
}

/// Stores a state, two channels and their hashes, and a user hash for `account`.
async fn fill(s: &impl Storage, account: i64, v: i32) {
    let commit = Commit {
        state: Some(state(v)),
        channels: vec![
            ChannelCommit {
                channel_id: 10,
                pts: v,
                reset: false,
            },
            ChannelCommit {
                channel_id: i64::MAX,
                pts: v + 1,
                reset: false,
            },
        ],
        ..Commit::default()
    };
    s.apply(account, &commit).await.expect("apply");
    s.set_access_hashes(account, &[(10, -1), (i64::MAX, 2)])
        .await
        .expect("channel hashes");
    s.set_user_access_hash(account, 10, 3)
        .await
        .expect("user hash");
}

pub async fn delete_forgets_state_and_channels_only(s: impl Storage) {
    let (a, b) = (31, 32);
    fill(&s, a, 100).await;
    fill(&s, b, 200).await;
    s.delete(a).await.expect("delete");
    // The account reads as never stored.
    assert_eq!(s.get_state(a).await.expect("get_state"), None);
    assert_eq!(
        s.get_channel_pts(a, 10).await.expect("get_channel_pts"),
        None
    );
    assert!(s.channels(a).await.expect("channels").is_empty());
    let snapshot = s.load(a).await.expect("load");
    assert_eq!((snapshot.state, snapshot.channels.len()), (None, 0));
    // Its access hashes are kept.
    assert_eq!(s.get_access_hash(a, 10).await.expect("hash"), Some(-1));
    assert_eq!(
        s.get_user_access_hash(a, 10).await.expect("user hash"),
        Some(3)
    );
    // Other accounts are untouched.
    let other = s.load(b).await.expect("load b");
    assert_eq!(other.state, Some(state(200)));
    assert_eq!(other.channels.len(), 2);
    // Nothing is stale any more: lower values are written without a reset.
    s.set_state(a, state(1), WriteMode::Advance)
        .await
        .expect("lower state after delete");
    s.set_channel_pts(a, 10, 1, WriteMode::Advance)
        .await
        .expect("lower channel pts after delete");
    assert_eq!(s.get_state(a).await.expect("get_state"), Some(state(1)));
    // Deleting again, or what was never stored, succeeds.
    s.delete(a).await.expect("delete again");
    s.delete(a).await.expect("delete what is gone");
    s.delete(33).await.expect("delete an unknown account");
    assert_eq!(s.get_state(a).await.expect("get_state"), None);
}

pub async fn delete_access_hashes_forgets_channels_and_users(s: impl Storage) {
    let (a, b) = (41, 42);
    fill(&s, a, 100).await;
    fill(&s, b, 200).await;
    s.delete_access_hashes(a).await.expect("delete hashes");
    assert_eq!(s.get_access_hash(a, 10).await.expect("hash"), None);
    assert_eq!(s.get_access_hash(a, i64::MAX).await.expect("hash"), None);
    assert_eq!(
        s.get_user_access_hash(a, 10).await.expect("user hash"),
        None
    );
    // The state stays, and so do other accounts' hashes.
    assert_eq!(s.get_state(a).await.expect("get_state"), Some(state(100)));
    assert_eq!(s.channels(a).await.expect("channels").len(), 2);
    assert_eq!(s.get_access_hash(b, 10).await.expect("hash"), Some(-1));
    assert_eq!(
        s.get_user_access_hash(b, 10).await.expect("user hash"),
        Some(3)
    );
    s.delete_access_hashes(a).await.expect("again");
    s.delete_access_hashes(43).await.expect("unknown account");
    // Hashes are written again after a delete.
    s.set_access_hash(a, 10, 7).await.expect("write again");
    assert_eq!(s.get_access_hash(a, 10).await.expect("hash"), Some(7));
}

pub async fn user_access_hashes_last_write_wins(s: impl Storage) {
    let (a, b) = (51, 52);
    assert_eq!(s.get_user_access_hash(a, 5).await.expect("get"), None);
    s.set_user_access_hash(a, 5, 100).await.expect("set");
    assert_eq!(s.get_user_access_hash(a, 5).await.expect("get"), Some(100));
    s.set_user_access_hash(a, 5, -100).await.expect("replace");
    assert_eq!(s.get_user_access_hash(a, 5).await.expect("get"), Some(-100));
    // A batch: all at once, the later entry of a user listed twice wins.
    s.set_user_access_hashes(
        a,
        &[(6, 1), (i64::MIN, i64::MAX), (6, 2), (i64::MAX, i64::MIN)],
    )
    .await
    .expect("batch");
    assert_eq!(s.get_user_access_hash(a, 6).await.expect("get"), Some(2));
    assert_eq!(
        s.get_user_access_hash(a, i64::MIN).await.expect("get"),
        Some(i64::MAX)
    );
    assert_eq!(
        s.get_user_access_hash(a, i64::MAX).await.expect("get"),
        Some(i64::MIN)
    );
    s.set_user_access_hashes(a, &[]).await.expect("empty batch");
    // Users and channels are kept apart, and so are accounts.
    s.set_access_hash(a, 5, 9).await.expect("channel hash");
    assert_eq!(s.get_user_access_hash(a, 5).await.expect("get"), Some(-100));
    assert_eq!(s.get_access_hash(a, 6).await.expect("channel"), None);
    assert_eq!(
        s.get_user_access_hash(b, 5).await.expect("other account"),
        None
    );
    // User hashes are not update state.
    assert_eq!(s.get_state(a).await.expect("get_state"), None);
}
