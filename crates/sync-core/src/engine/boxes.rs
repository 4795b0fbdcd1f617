//! The boxes: the common one (pts, qts, seq) and one per channel with a gap, a fetch or a
//! poll. Each buffers what cannot apply yet, applies what fits, and keeps its gap's
//! bookkeeping.

use std::mem;
use std::time::Instant;

use crate::buffer::{Buffer, Fit, fit};
use crate::output::Stats;
use crate::state::{ChannelId, State};
use crate::update::{Entities, Update};

use super::Engine;
use super::fetch::{FetchState, Fetcher};

/// What waits in a buffer.
#[derive(Debug)]
pub(super) enum Entry<U> {
    /// A numbered update.
    Update(U),
    /// The pts range of one of the application's own calls: advances without a delivery.
    Affected,
    /// A `seq` container's unordered updates (its numbered ones wait in their own sequences).
    Container { updates: Vec<U>, date: i32 },
}

impl<U> Entry<U> {
    pub(super) fn update_count(&self) -> u64 {
        match self {
            Entry::Update(_) => 1,
            Entry::Affected => 0,
            Entry::Container { updates, .. } => updates.len() as u64,
        }
    }
}

/// The three sequences of the common box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    Pts,
    Qts,
    Seq,
}

pub(super) const SLOTS: [Slot; 3] = [Slot::Pts, Slot::Qts, Slot::Seq];

#[derive(Debug)]
pub(super) struct CommonBox<U> {
    pub(super) pts: Buffer<Entry<U>>,
    pub(super) qts: Buffer<Entry<U>>,
    pub(super) seq: Buffer<Entry<U>>,
    pub(super) fetch: Fetcher,
    pub(super) rebase: Rebase,
    /// The arrival count at the last `updatePtsChanged`: entries buffered before it are under
    /// the old numbers.
    pub(super) rebase_mark: u64,
}

/// Where a re-base after `updatePtsChanged` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rebase {
    /// None under way.
    No,
    /// Fetching what is pending under the old numbers (`getDifference`), until a final answer.
    Pending,
    /// Asking `getState` for the new numbers.
    State,
}

impl<U> CommonBox<U> {
    pub(super) fn buffer(&mut self, slot: Slot) -> &mut Buffer<Entry<U>> {
        match slot {
            Slot::Pts => &mut self.pts,
            Slot::Qts => &mut self.qts,
            Slot::Seq => &mut self.seq,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pts.is_empty() && self.qts.is_empty() && self.seq.is_empty()
    }
}

/// The sparse part of a channel's state: only channels with a gap, a fetch or a poll have one.
/// A tracked channel otherwise costs one map entry (its id and pts).
#[derive(Debug)]
pub(super) struct ChannelBox<U> {
    pub(super) buffer: Buffer<Entry<U>>,
    pub(super) fetch: Fetcher,
    /// The channel's pts came from a push that first named it, not from the application,
    /// storage or the server: see [`Engine::track_unverified`].
    pub(super) unverified: bool,
}

impl<U> ChannelBox<U> {
    pub(super) fn new() -> Self {
        Self {
            buffer: Buffer::default(),
            fetch: Fetcher::new(),
            unverified: false,
        }
    }
}

/// Where an input comes from: a channel it is the first to name is trusted only from the
/// server's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// A push (`handle_updates`): its numbers may be anything a buggy client or adapter sent.
    Push,
    /// An answer of the server (a difference, or the pts of the application's own call).
    Server,
}

/// Gap bookkeeping shared by the common box and channels: a box whose buffers hold something
/// while no fetch is pending has a gap, which waits `gap_timeout` from when it opened.
///
/// Invariant (liveness): the deadline is set when the gap opens and is not pushed back by later
/// arrivals, so a steady stream of early updates cannot postpone the difference forever.
pub(super) fn settle(
    fetch: &mut Fetcher,
    stats: &mut Stats,
    empty: bool,
    idle: bool,
    now: Instant,
    gap_timeout: std::time::Duration,
) {
    if empty {
        fetch.gap_deadline = None;
        if idle && fetch.gap_open {
            fetch.gap_open = false;
            stats.gaps_filled_by_wait += 1;
        }
    } else if idle {
        if fetch.gap_deadline.is_none() {
            fetch.gap_deadline = Some(now + gap_timeout);
        }
        if !fetch.gap_open {
            fetch.gap_open = true;
            stats.gaps_detected += 1;
        }
    }
}

impl<U: Update, E: Entities> Engine<U, E> {
    /// Pushes to the common box wait: there is no state yet, a request is in flight, or a
    /// re-base is under way (what arrives after `updatePtsChanged` is under the new numbers,
    /// which only `getState` tells).
    #[inline]
    pub(super) fn common_held(&self) -> bool {
        !self.has_state || self.common.fetch.in_flight() || self.common.rebase != Rebase::No
    }

    /// Offers a numbered entry to a common sequence. Returns true when it waits.
    ///
    /// Invariant (nothing after a gap is delivered early): an entry is applied only when its
    /// range starts exactly at the local value, and held back whenever a request is in flight
    /// for the box, because the reply may carry it too.
    #[inline(always)]
    pub(super) fn offer_common(
        &mut self,
        now: Instant,
        slot: Slot,
        start: i32,
        end: i32,
        entry: Entry<U>,
    ) -> bool {
        if self.common_held() {
            return self.buffer_common(now, slot, start, end, entry);
        }
        match fit(start, self.local(slot)) {
            Fit::Next => {
                self.apply_common(slot, end, entry);
                // The in-order path: with nothing buffered and no gap open there is nothing
                // to drain and no deadline to move.
                if self.common.fetch.gap_open || !self.common.buffer(slot).is_empty() {
                    self.drain_slot(slot);
                    self.settle_common(now);
                }
                false
            }
            Fit::Old => {
                self.stats.duplicates_dropped += entry.update_count();
                false
            }
            Fit::Gap => self.buffer_common(now, slot, start, end, entry),
        }
    }

    pub(super) fn buffer_common(
        &mut self,
        now: Instant,
        slot: Slot,
        start: i32,
        end: i32,
        entry: Entry<U>,
    ) -> bool {
        let over_cap = self.common.buffer(slot).len() >= self.config.max_buffered_per_sequence
            || self.buffered_total >= self.config.max_buffered_total;
        if over_cap {
            // Invariant (bounded memory): past a cap, stop buffering; the difference brings
            // back everything dropped here.
            self.stats.buffer_overflows += 1;
            let dropped = self.common.buffer(slot).clear();
            self.buffered_total -= dropped;
            if !mem::replace(&mut self.common.fetch.gap_open, true) {
                self.stats.gaps_detected += 1;
            }
            if self.common_held() {
                self.common.fetch.refetch = true;
            } else {
                self.start_common_fetch();
            }
            return true;
        }
        let arrival = self.arrival();
        if !self.common.buffer(slot).insert(start, end, arrival, entry) {
            self.stats.duplicates_dropped += 1;
            return true;
        }
        self.buffered_total += 1;
        self.settle_common(now);
        true
    }

    #[inline]
    pub(super) fn local(&self, slot: Slot) -> i32 {
        match slot {
            Slot::Pts => self.state.pts,
            Slot::Qts => self.state.qts,
            Slot::Seq => self.state.seq,
        }
    }

    #[inline(always)]
    pub(super) fn apply_common(&mut self, slot: Slot, end: i32, entry: Entry<U>) {
        match slot {
            Slot::Pts => self.state.pts = end,
            Slot::Qts => self.state.qts = end,
            Slot::Seq => self.state.seq = end,
        }
        self.open_change.state = true;
        match entry {
            Entry::Update(update) => self.deliver(update),
            Entry::Affected => {}
            Entry::Container { updates, date } => {
                for update in updates {
                    self.deliver(update);
                }
                self.advance_date(date);
            }
        }
    }

    /// Applies whatever the buffer of `slot` holds that has become contiguous.
    pub(super) fn drain_slot(&mut self, slot: Slot) {
        loop {
            let local = self.local(slot);
            let Some((kind, pending)) = self.common.buffer(slot).pop_ready(local) else {
                break;
            };
            self.buffered_total -= 1;
            match kind {
                Fit::Next => self.apply_common(slot, pending.end, pending.item),
                _ => self.stats.duplicates_dropped += pending.item.update_count(),
            }
        }
    }

    pub(super) fn drain_common(&mut self) {
        for slot in SLOTS {
            self.drain_slot(slot);
        }
    }

    /// Brings the common box's gap bookkeeping up to date after its buffers changed.
    pub(super) fn settle_common(&mut self, now: Instant) {
        let empty = self.common.is_empty();
        let idle = self.common.fetch.state == FetchState::Idle && self.has_state;
        settle(
            &mut self.common.fetch,
            &mut self.stats,
            empty,
            idle,
            now,
            self.config.gap_timeout,
        );
        self.reschedule_common();
    }

    #[inline(always)]
    pub(super) fn offer_channel(
        &mut self,
        now: Instant,
        channel_id: ChannelId,
        start: i32,
        end: i32,
        entry: Entry<U>,
        source: Source,
    ) -> bool {
        // Most channels have no box (nothing buffered, nothing fetched): skip the lookup then.
        let channel_box = if self.channel_boxes.is_empty() {
            None
        } else {
            self.channel_boxes.get(&channel_id)
        };
        let (boxed, held) = match channel_box {
            // An unverified channel's pushes wait for the server's answer too.
            Some(channel) => (true, channel.fetch.in_flight() || channel.unverified),
            None => (false, false),
        };
        let Some(local) = self.channels.get_mut(&channel_id) else {
            return self.first_seen_channel(channel_id, start, end, entry, source);
        };
        if held {
            return self.buffer_channel(now, channel_id, start, end, entry);
        }
        match fit(start, *local) {
            Fit::Next => {
                *local = end;
                self.open_change.channel(channel_id, false);
                self.apply_entry(entry);
                if boxed {
                    self.drain_channel(channel_id);
                    self.settle_channel(now, channel_id);
                }
                false
            }
            Fit::Old => {
                self.stats.duplicates_dropped += entry.update_count();
                false
            }
            Fit::Gap => self.buffer_channel(now, channel_id, start, end, entry),
        }
    }

    pub(super) fn buffer_channel(
        &mut self,
        now: Instant,
        channel_id: ChannelId,
        start: i32,
        end: i32,
        entry: Entry<U>,
    ) -> bool {
        let total_full = self.buffered_total >= self.config.max_buffered_total;
        let per_sequence = self.config.max_buffered_per_sequence;
        let arrival = self.arrival();
        let channel = self
            .channel_boxes
            .entry(channel_id)
            .or_insert_with(ChannelBox::new);
        if total_full || channel.buffer.len() >= per_sequence {
            // Invariant (bounded memory), as for the common box.
            self.stats.buffer_overflows += 1;
            self.buffered_total -= channel.buffer.clear();
            if !mem::replace(&mut channel.fetch.gap_open, true) {
                self.stats.gaps_detected += 1;
            }
            if channel.fetch.in_flight() {
                channel.fetch.refetch = true;
            } else {
                self.start_channel_fetch(channel_id);
            }
            return true;
        }
        if !channel.buffer.insert(start, end, arrival, entry) {
            self.stats.duplicates_dropped += 1;
            return true;
        }
        self.buffered_total += 1;
        self.settle_channel(now, channel_id);
        true
    }

    /// The first update of a channel the engine does not track. Returns true when it waits.
    ///
    /// From the server it starts the channel's sequence: nothing is known about earlier
    /// history. From a push it is not trusted (see [`Engine::track_unverified`]): it waits,
    /// and the server's difference from where it starts decides.
    #[cold]
    #[inline(never)]
    fn first_seen_channel(
        &mut self,
        channel_id: ChannelId,
        start: i32,
        end: i32,
        entry: Entry<U>,
        source: Source,
    ) -> bool {
        if source == Source::Server {
            self.channels.insert(channel_id, end);
            self.open_change.channel(channel_id, false);
            self.apply_entry(entry);
            return false;
        }
        self.track_unverified(channel_id, start);
        // Buffered before the request is sent, so a final answer below it discards it.
        if self.buffered_total < self.config.max_buffered_total {
            let arrival = self.arrival();
            if let Some(channel) = self.channel_boxes.get_mut(&channel_id)
                && channel.buffer.insert(start, end, arrival, entry)
            {
                self.buffered_total += 1;
            }
        }
        // Past the cap the update is dropped: the difference from `start` brings it back.
        self.start_channel_fetch(channel_id);
        true
    }

    /// Tracks a channel first named by a push at `pts`, *unverified*.
    ///
    /// Invariant (a push cannot poison a channel): a pushed pts for a channel that neither
    /// the application, storage nor the server told the engine about is only a claim. Taken
    /// as the channel's start, an absurd one (`i32::MAX - 5`) would make every real update
    /// of the channel look old. So until the server's first answer about it:
    /// - its updates wait (nothing is delivered or applied, [`Engine::drain_channel`] holds
    ///   back too), and its pts is not committed;
    /// - the caller asks `getChannelDifference` from `pts`, and that answer is taken even
    ///   when it is lower than `pts` (the server does not know such a pts and answers with its
    ///   own): a verified re-base, committed as a reset. Buffered updates beyond a final
    ///   answer that waited before the request are discarded, as for any final answer.
    ///
    /// A real first update is then delivered by the difference (which starts where it
    /// starts), exactly once and in order. This is a cold path: at most one request per
    /// channel the engine first meets in a push.
    pub(super) fn track_unverified(&mut self, channel_id: ChannelId, pts: i32) {
        self.channels.insert(channel_id, pts);
        // A change left from an earlier tracking of the channel would commit this pts.
        self.open_change
            .channels
            .retain(|&(id, _)| id != channel_id);
        self.channel_boxes
            .entry(channel_id)
            .or_insert_with(ChannelBox::new)
            .unverified = true;
    }

    pub(super) fn apply_channel(&mut self, channel_id: ChannelId, end: i32, entry: Entry<U>) {
        self.channels.insert(channel_id, end);
        self.open_change.channel(channel_id, false);
        self.apply_entry(entry);
    }

    #[inline(always)]
    pub(super) fn apply_entry(&mut self, entry: Entry<U>) {
        match entry {
            Entry::Update(update) => self.deliver(update),
            Entry::Affected => {}
            Entry::Container { updates, .. } => {
                for update in updates {
                    self.deliver(update);
                }
            }
        }
    }

    pub(super) fn drain_channel(&mut self, channel_id: ChannelId) {
        loop {
            let Some(&local) = self.channels.get(&channel_id) else {
                return;
            };
            let Some(channel) = self.channel_boxes.get_mut(&channel_id) else {
                return;
            };
            if channel.unverified {
                return; // its pts is only a claim until the server answers
            }
            let Some((kind, pending)) = channel.buffer.pop_ready(local) else {
                return;
            };
            self.buffered_total -= 1;
            match kind {
                Fit::Next => self.apply_channel(channel_id, pending.end, pending.item),
                _ => self.stats.duplicates_dropped += pending.item.update_count(),
            }
        }
    }

    pub(super) fn settle_channel(&mut self, now: Instant, channel_id: ChannelId) {
        if let Some(channel) = self.channel_boxes.get_mut(&channel_id) {
            let empty = channel.buffer.is_empty();
            let idle = channel.fetch.state == FetchState::Idle;
            settle(
                &mut channel.fetch,
                &mut self.stats,
                empty,
                idle,
                now,
                self.config.gap_timeout,
            );
        }
        self.reschedule_channel(channel_id);
        self.release_channel(channel_id);
    }

    /// Counts buffered entries discarded without delivery.
    pub(super) fn discarded(&mut self, entries: Vec<Entry<U>>) {
        self.buffered_total -= entries.len();
        self.stats.updates_discarded += entries.iter().map(Entry::update_count).sum::<u64>();
    }

    /// A final answer named the common box's `state`: what was buffered before it was asked
    /// and lies beyond it never existed.
    ///
    /// Invariant (liveness): without this, one push with a far-future number would reopen
    /// the gap after every difference, and the engine would ask forever.
    pub(super) fn discard_beyond_common(&mut self, named: State) {
        let asked_at = self.common.fetch.asked_at;
        for (slot, value) in [
            (Slot::Pts, named.pts),
            (Slot::Qts, named.qts),
            (Slot::Seq, named.seq),
        ] {
            let discarded = self.common.buffer(slot).discard_beyond(value, asked_at);
            self.discarded(discarded);
        }
    }
}
