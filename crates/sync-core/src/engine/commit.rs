//! Deliveries out: updates gather into one open batch until the next poll, which seals it; its
//! change waits for the batch's acknowledgement, and commits are emitted for the
//! acknowledged prefix only.

use std::mem;

use crate::error::Error;
use crate::output::{Batch, BatchId, Notice, Output};
use crate::state::{ChannelCommit, ChannelId, Commit};
use crate::update::{ChannelHash, Entities, Update};

use super::Engine;

/// What changed since the last sealed batch; turned into a [`Commit`] when sealed.
#[derive(Debug, Default)]
pub(super) struct Change {
    pub(super) state: bool,
    pub(super) state_reset: bool,
    /// Channels whose pts moved, with their reset flag; may repeat an id.
    pub(super) channels: Vec<(ChannelId, bool)>,
    pub(super) removed: Vec<ChannelId>,
}

impl Change {
    pub(super) fn is_empty(&self) -> bool {
        !self.state && self.channels.is_empty() && self.removed.is_empty()
    }

    #[inline(always)]
    pub(super) fn channel(&mut self, channel_id: ChannelId, reset: bool) {
        // Runs of one channel's updates are common: skip the repeat cheaply here, and
        // deduplicate the rest when the batch is sealed.
        if !reset
            && self
                .channels
                .last()
                .is_some_and(|&(last, _)| last == channel_id)
        {
            return;
        }
        self.channels.push((channel_id, reset));
    }
}

/// A sealed change waiting for its batch to be acknowledged.
#[derive(Debug)]
pub(super) struct PendingCommit {
    pub(super) batch: Option<BatchId>,
    pub(super) acked: bool,
    pub(super) commit: Commit,
}

/// Folds `later` into `earlier`: removals first, then positions, later values winning.
pub(super) fn merge_commit(earlier: &mut Commit, later: Commit) {
    if later.state.is_some() {
        earlier.state = later.state;
    }
    earlier.state_reset |= later.state_reset;
    if !later.removed_channels.is_empty() {
        earlier
            .channels
            .retain(|c| !later.removed_channels.contains(&c.channel_id));
        earlier.removed_channels.extend(later.removed_channels);
    }
    earlier.channels.extend(later.channels);
    dedup_channels(&mut earlier.channels, true);
}

/// Keeps one entry per channel: the last one, with every reset flag of the run folded in.
/// `stable` keeps later entries after earlier ones of the same channel (needed when they may
/// differ); without it the sort never allocates.
pub(super) fn dedup_channels(channels: &mut Vec<ChannelCommit>, stable: bool) {
    if channels.len() < 2 {
        return;
    }
    if stable {
        channels.sort_by_key(|c| c.channel_id);
    } else {
        channels.sort_unstable_by_key(|c| c.channel_id);
    }
    channels.dedup_by(|later, earlier| {
        if later.channel_id != earlier.channel_id {
            return false;
        }
        earlier.pts = later.pts;
        earlier.reset |= later.reset;
        true
    });
}

impl<U: Update, E: Entities> Engine<U, E> {
    /// The application handled a delivered batch: commits up to it may now be emitted.
    pub fn ack(&mut self, batch: BatchId) -> Result<(), Error> {
        let pending = self
            .unacked
            .iter_mut()
            .find(|p| p.batch == Some(batch) && !p.acked)
            .ok_or(Error::UnknownBatch(batch))?;
        pending.acked = true;
        self.flush_commits();
        Ok(())
    }

    #[inline(always)]
    pub(super) fn deliver(&mut self, update: U) {
        self.stats.updates_delivered += 1;
        self.open_updates.push(update);
    }

    #[inline]
    pub(super) fn advance_date(&mut self, date: i32) {
        if date > self.state.date && self.has_state {
            self.state.date = date;
            self.open_change.state = true;
        }
    }

    pub(super) fn learn(&mut self, entities: E) {
        let reported = &mut self.reported_hashes;
        let hashes: Vec<ChannelHash> = entities
            .channel_hashes()
            .filter(|h| {
                !h.min && reported.insert(h.channel_id, h.access_hash) != Some(h.access_hash)
            })
            .collect();
        if !hashes.is_empty() {
            self.outputs.push_back(Output::AccessHashes(hashes));
        }
        if !entities.is_empty() {
            self.open_entities.push(entities);
        }
    }

    /// Pushes a notification after sealing what was delivered before it, so the application
    /// sees them in order.
    pub(super) fn notify(&mut self, notice: Notice) {
        self.seal();
        self.outputs.push_back(Output::Notice(notice));
    }

    /// Closes the open batch: emits its deliveries, and queues its change behind them.
    ///
    /// Invariant (commits trail acknowledgements): a change is committed only once every batch
    /// delivered up to it has been acknowledged, so storage never runs ahead of the application.
    #[inline]
    pub(super) fn seal(&mut self) {
        // Checked here, inlined into every poll: most polls find nothing open.
        let has_delivery = !self.open_updates.is_empty() || !self.open_entities.is_empty();
        if has_delivery || !self.open_change.is_empty() {
            self.seal_open(has_delivery);
        }
    }

    pub(super) fn seal_open(&mut self, has_delivery: bool) {
        // The change's channel list keeps its capacity from batch to batch.
        let change = &mut self.open_change;
        let (state, state_reset) = (
            mem::take(&mut change.state),
            mem::take(&mut change.state_reset),
        );
        let removed_channels = mem::take(&mut change.removed);
        let mut channels: Vec<ChannelCommit> = Vec::new();
        if !change.channels.is_empty() {
            let tracked = &self.channels;
            channels.extend(change.channels.drain(..).filter_map(|(channel_id, reset)| {
                let pts = *tracked.get(&channel_id)?;
                Some(ChannelCommit {
                    channel_id,
                    pts,
                    reset,
                })
            }));
        }
        // All entries of one channel carry its current pts: order among them does not matter.
        dedup_channels(&mut channels, false);
        let commit = Commit {
            state: state.then_some(self.state),
            state_reset,
            channels,
            removed_channels,
        };
        let batch = has_delivery.then(|| {
            let id = BatchId(self.next_batch);
            self.next_batch += 1;
            self.stats.batches_delivered += 1;
            self.outputs.push_back(Output::Deliver(Batch {
                id,
                updates: mem::take(&mut self.open_updates),
                entities: mem::take(&mut self.open_entities),
            }));
            id
        });
        self.unacked.push_back(PendingCommit {
            batch,
            acked: batch.is_none(),
            commit,
        });
        self.flush_commits();
    }

    /// Emits one commit for the acknowledged prefix of sealed changes.
    pub(super) fn flush_commits(&mut self) {
        if !self.unacked.front().is_some_and(|p| p.acked) {
            return;
        }
        let Some(PendingCommit { mut commit, .. }) = self.unacked.pop_front() else {
            return;
        };
        while self.unacked.front().is_some_and(|p| p.acked) {
            if let Some(pending) = self.unacked.pop_front() {
                merge_commit(&mut commit, pending.commit);
            }
        }
        if !commit.is_empty() {
            self.outputs.push_back(Output::Commit(commit));
        }
    }
}
