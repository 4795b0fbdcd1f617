//! A deliberately plain statement of the storage contract, to check the backends against.

use std::collections::BTreeMap;

use proptest::prelude::*;
use sync_storage::{ChannelCommit, ChannelId, Commit, Snapshot, StaleSequence, State};

/// One account's stored state, as the contract says it must evolve.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    pub snapshot: Snapshot,
}

impl Model {
    /// Applies a commit: removals, then the state, then each channel in order; the first
    /// sequence that would go back without a reset rejects the whole commit.
    pub fn apply(&mut self, commit: &Commit) -> Result<(), StaleSequence> {
        let mut next = self.snapshot.clone();
        for id in &commit.removed_channels {
            next.channels.remove(id);
        }
        if let Some(new) = commit.state {
            if let (Some(old), false) = (next.state, commit.state_reset) {
                if new.pts < old.pts {
                    return Err(StaleSequence::Pts);
                }
                if new.qts < old.qts {
                    return Err(StaleSequence::Qts);
                }
                if new.seq < old.seq {
                    return Err(StaleSequence::Seq);
                }
            }
            next.state = Some(new);
        }
        for channel in &commit.channels {
            if let Some(&old) = next.channels.get(&channel.channel_id)
                && !channel.reset
                && channel.pts < old
            {
                return Err(StaleSequence::Channel(channel.channel_id));
            }
            next.channels.insert(channel.channel_id, channel.pts);
        }
        self.snapshot = next;
        Ok(())
    }
}

/// Small numbers, so that stale writes, resets and repeated channels happen often.
pub fn commit_strategy() -> impl Strategy<Value = Commit> {
    let state =
        (0..12i32, 0..12i32, 0..1000i32, 0..12i32).prop_map(|(pts, qts, date, seq)| State {
            pts,
            qts,
            date,
            seq,
        });
    let channel = (1..5 as ChannelId, 0..12i32, prop::bool::weighted(0.15)).prop_map(
        |(channel_id, pts, reset)| ChannelCommit {
            channel_id,
            pts,
            reset,
        },
    );
    (
        prop::option::weighted(0.7, state),
        prop::bool::weighted(0.15),
        prop::collection::vec(channel, 0..4),
        prop::collection::vec(1..5 as ChannelId, 0..2),
    )
        .prop_map(|(state, state_reset, channels, removed_channels)| Commit {
            state,
            state_reset,
            channels,
            removed_channels,
        })
}

/// The channels map of a snapshot, for messages.
pub fn describe(snapshot: &Snapshot) -> String {
    let channels: BTreeMap<_, _> = snapshot.channels.clone();
    format!("state {:?}, channels {channels:?}", snapshot.state)
}
