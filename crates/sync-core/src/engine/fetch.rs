//! Requests out and replies in: `getState`, `getDifference`, `getChannelDifference`, their
//! failures, and the queue that bounds concurrent channel requests. Every reply is checked
//! whole before anything of it is applied.

use std::mem;
use std::time::Instant;

use crate::error::Error;
use crate::output::{Failure, Notice, Output, Request, RequestId, RequestKind};
use crate::state::{ChannelId, State};
use crate::update::{ChannelDifference, ChannelDifferenceKind, Difference, Entities, Update};

use super::boxes::{ChannelBox, Rebase, SLOTS, Source};
use super::intake::{Place, check_non_negative, classify};
use super::timers::Timer;
use super::{Engine, check_state};

/// Where a box's difference fetch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FetchState {
    /// No fetch pending.
    Idle,
    /// Waiting for a free channel-request slot.
    Queued,
    /// A request is in flight: updates of this box are held back until it is answered, so that
    /// nothing the reply carries is delivered twice.
    InFlight(RequestId),
    /// The last request failed; retry at this instant.
    Backoff(Instant),
}

/// The fetch and timer bookkeeping of one box (the common box, or one channel).
#[derive(Debug)]
pub(super) struct Fetcher {
    pub(super) state: FetchState,
    /// When the open gap stops waiting for pushes and the difference is fetched.
    pub(super) gap_deadline: Option<Instant>,
    /// When an open channel is polled next.
    pub(super) poll_at: Option<Instant>,
    /// The instant this box is registered under in the engine's timer set.
    pub(super) scheduled: Option<Instant>,
    pub(super) attempts: u32,
    /// Updates were dropped while a request was in flight: fetch again once it is answered.
    pub(super) refetch: bool,
    /// A gap is open (counted in the stats once, when it opened).
    pub(super) gap_open: bool,
    /// The engine's arrival count when the last request was sent: what was buffered before
    /// it, and lies beyond the final answer, never existed (see [`Buffer::discard_beyond`]).
    pub(super) asked_at: u64,
}

impl Fetcher {
    pub(super) const fn new() -> Self {
        Self {
            state: FetchState::Idle,
            gap_deadline: None,
            poll_at: None,
            scheduled: None,
            attempts: 0,
            refetch: false,
            gap_open: false,
            asked_at: 0,
        }
    }

    pub(super) fn in_flight(&self) -> bool {
        matches!(self.state, FetchState::InFlight(_))
    }

    /// The next instant at which this box needs [`Engine::handle_timeout`].
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self.state {
            FetchState::Idle => match (self.gap_deadline, self.poll_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            FetchState::Backoff(until) => Some(until),
            FetchState::Queued | FetchState::InFlight(_) => None,
        }
    }
}

/// What a request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RequestFor {
    State,
    Difference,
    Channel(ChannelId),
}

impl RequestFor {
    pub(super) fn describe(self) -> &'static str {
        match self {
            RequestFor::State => "getState",
            RequestFor::Difference => "getDifference",
            RequestFor::Channel(_) => "getChannelDifference",
        }
    }
}

impl<U: Update, E: Entities> Engine<U, E> {
    /// The answer to a `getState` request: on a fresh start, or re-basing after
    /// `updatePtsChanged` ([`Sequence::PtsChanged`](crate::Sequence::PtsChanged)). On a fresh start the state is taken as
    /// it is. On a re-base a lower pts means the server renumbered: the state replaces the
    /// local one and is committed as a reset; otherwise the local numbers still hold, and a
    /// difference fetches whatever the server has beyond them.
    pub fn handle_state(&mut self, now: Instant, id: RequestId, state: State) -> Result<(), Error> {
        self.expect_request(id, RequestFor::State)?;
        check_state(&state)?;
        self.requests.remove(&id);
        let rebase = mem::replace(&mut self.common.rebase, Rebase::No);
        if rebase == Rebase::State && state.pts >= self.state.pts {
            // Not renumbered downwards: the local numbers still hold. What arrived meanwhile
            // applies to them, and a difference fetches whatever the server has beyond.
            self.discard_beyond_common(state);
            if state.pts > self.state.pts || state.qts > self.state.qts {
                self.common.fetch.refetch = true;
            }
            self.finish_common(now);
            return Ok(());
        }
        self.state = state;
        self.has_state = true;
        self.open_change.state = true;
        self.open_change.state_reset = true;
        self.arm_idle();
        self.discard_beyond_common(state);
        self.finish_common(now);
        Ok(())
    }

    /// The answer to a `getDifference` request. A difference is authoritative: its updates are
    /// delivered (channel updates through their channel's sequence), its state replaces the
    /// local one, and buffered updates it covers are dropped.
    pub fn handle_difference(
        &mut self,
        now: Instant,
        id: RequestId,
        difference: Difference<U, E>,
    ) -> Result<(), Error> {
        // Invariant (malformed input changes nothing): everything is checked before the first
        // change.
        self.expect_request(id, RequestFor::Difference)?;
        self.check_difference(&difference)?;
        self.requests.remove(&id);
        self.last_activity = now;
        self.common.fetch.attempts = 0;
        match difference {
            Difference::Empty { date, seq } => {
                self.state.date = date;
                self.state.seq = seq;
                self.open_change.state = true;
                self.discard_beyond_common(self.state);
                self.finish_common(now);
            }
            Difference::Difference {
                updates,
                entities,
                state,
                slice,
            } => {
                self.learn(entities);
                for update in updates {
                    // Checked by `check_difference`; an unordered fallback cannot be reached.
                    let place = classify(update.sequence()).unwrap_or(Place::Unordered);
                    match place {
                        Place::Unordered | Place::Pts { .. } | Place::Qts { .. } => {
                            self.deliver(update);
                        }
                        _ => {
                            self.route(now, place, update, None, Source::Server);
                        }
                    }
                }
                // Invariant (exactly once): the difference starts at the local state, so none of
                // its updates was delivered before; what waits in the buffers and is covered by
                // the new state is dropped as old when they are drained.
                self.state = state;
                self.open_change.state = true;
                if slice {
                    self.common.fetch.state = FetchState::Idle;
                    self.start_common_fetch();
                } else {
                    self.discard_beyond_common(state);
                    self.finish_common(now);
                }
            }
            Difference::TooLong { pts } => {
                let moved = pts != self.state.pts;
                self.state.pts = pts;
                let asked_at = self.common.fetch.asked_at;
                let discarded = self.common.pts.discard_beyond(pts, asked_at);
                self.discarded(discarded);
                self.open_change.state = true;
                self.open_change.state_reset = true;
                self.stats.too_long += 1;
                self.notify(Notice::DifferenceTooLong { pts });
                if moved {
                    // The rest of the state (qts, seq, date) still has to be caught up.
                    self.common.fetch.state = FetchState::Idle;
                    self.start_common_fetch();
                } else {
                    // "Too long" without moving on would repeat forever: stop here; pushes and
                    // the idle rule bring the next attempt.
                    self.finish_common(now);
                }
            }
        }
        Ok(())
    }

    /// The answer to a `getChannelDifference` request.
    ///
    /// A pts below the channel's is refused ([`Error::Regression`]), except for a channel
    /// first seen in a push and not yet answered for (unverified): the server did not know
    /// the pushed pts, and its own is where the channel starts (committed as a reset).
    pub fn handle_channel_difference(
        &mut self,
        now: Instant,
        id: RequestId,
        difference: ChannelDifference<U, E>,
    ) -> Result<(), Error> {
        let channel_id = match self.requests.get(&id) {
            Some(&RequestFor::Channel(channel_id)) => channel_id,
            Some(&other) => {
                return Err(Error::UnexpectedReply {
                    id,
                    expected: other.describe(),
                });
            }
            None => return Err(Error::UnknownRequest(id)),
        };
        if difference.channel_id != channel_id {
            return Err(Error::ChannelMismatch {
                id,
                expected: channel_id,
                received: difference.channel_id,
            });
        }
        let local = self.channels.get(&channel_id).copied().unwrap_or(0);
        let (pts, is_final, timeout) = match &difference.kind {
            ChannelDifferenceKind::Empty {
                pts,
                is_final,
                timeout,
            } => (*pts, *is_final, *timeout),
            ChannelDifferenceKind::Difference {
                updates,
                pts,
                is_final,
                timeout,
                ..
            } => {
                for update in updates {
                    classify(update.sequence())?;
                }
                (*pts, *is_final, *timeout)
            }
            ChannelDifferenceKind::TooLong { pts, timeout, .. } => (*pts, true, *timeout),
        };
        check_non_negative("channel pts", pts)?;
        // An unverified channel's pts came from a push (see `Engine::track_unverified`): the
        // server's answer is taken even when lower. A verified pts never goes back.
        let unverified = self
            .channel_boxes
            .get(&channel_id)
            .is_some_and(|c| c.unverified);
        if pts < local && !unverified {
            return Err(Error::Regression {
                sequence: "channel pts",
                local,
                received: pts,
            });
        }

        self.requests.remove(&id);
        self.channel_requests_in_flight = self.channel_requests_in_flight.saturating_sub(1);
        let too_long = matches!(difference.kind, ChannelDifferenceKind::TooLong { .. });
        // A verified re-base below the pushed pts is committed as a reset. It skips nothing
        // the engine knew of (it had delivered nothing of the channel): no notice.
        let reset = too_long || pts < local;
        if let Some(channel) = self.channel_boxes.get_mut(&channel_id) {
            channel.fetch.attempts = 0;
            channel.unverified = false;
        }
        let mut latest = None;
        match difference.kind {
            ChannelDifferenceKind::Empty { .. } => {}
            ChannelDifferenceKind::Difference {
                updates, entities, ..
            } => {
                self.learn(entities);
                for update in updates {
                    let place = classify(update.sequence()).unwrap_or(Place::Unordered);
                    match place {
                        Place::Channel { channel_id: of, .. } if of == channel_id => {
                            self.deliver(update);
                        }
                        Place::Unordered => self.deliver(update),
                        _ => {
                            self.route(now, place, update, None, Source::Server);
                        }
                    }
                }
            }
            ChannelDifferenceKind::TooLong {
                updates, entities, ..
            } => {
                self.stats.too_long += 1;
                latest = Some((updates, entities));
            }
        }
        // A channel just verified is committed for the first time, even at the pts it had.
        if pts != local || reset || unverified || !self.channels.contains_key(&channel_id) {
            self.channels.insert(channel_id, pts);
            self.open_change.channel(channel_id, reset);
        }
        if too_long {
            self.notify(Notice::ChannelTooLong {
                channel_id,
                pts: Some(pts),
            });
        }
        if let Some((updates, entities)) = latest {
            // The channel's latest messages, after the notice that history was skipped: they
            // are outside the sequence and delivered as they are.
            self.learn(entities);
            let latest = !updates.is_empty();
            for update in updates {
                self.deliver(update);
            }
            if latest {
                // A batch of their own: what the jump releases from the buffer comes after.
                self.seal();
            }
        }
        if is_final {
            let discarded = match self.channel_boxes.get_mut(&channel_id) {
                Some(channel) => channel.buffer.discard_beyond(pts, channel.fetch.asked_at),
                None => Vec::new(),
            };
            self.discarded(discarded);
            self.finish_channel(now, channel_id, timeout);
        } else {
            self.send_channel_request(channel_id);
        }
        self.pump_channel_queue();
        Ok(())
    }

    /// A request failed. Retryable failures are retried after their delay; a channel that can
    /// no longer be read stops being tracked.
    pub fn handle_failure(
        &mut self,
        now: Instant,
        id: RequestId,
        failure: Failure,
    ) -> Result<(), Error> {
        let target = *self.requests.get(&id).ok_or(Error::UnknownRequest(id))?;
        match (target, failure) {
            (RequestFor::Channel(channel_id), Failure::ChannelInaccessible) => {
                self.requests.remove(&id);
                self.stats.requests_failed += 1;
                self.channel_requests_in_flight = self.channel_requests_in_flight.saturating_sub(1);
                self.forget(channel_id);
                self.notify(Notice::ChannelClosed { channel_id });
                self.pump_channel_queue();
            }
            (other, Failure::ChannelInaccessible) => {
                return Err(Error::UnexpectedReply {
                    id,
                    expected: other.describe(),
                });
            }
            (RequestFor::State | RequestFor::Difference, Failure::Retry { after }) => {
                self.requests.remove(&id);
                self.stats.requests_failed += 1;
                let fetch = &mut self.common.fetch;
                let delay = after.unwrap_or_else(|| self.config.backoff(fetch.attempts));
                fetch.attempts = fetch.attempts.saturating_add(1);
                fetch.state = FetchState::Backoff(now + delay);
                // The retry asks from the local state as it will be then, so what is contiguous
                // now can be applied meanwhile.
                fetch.refetch = false;
                if !self.common_held() {
                    self.drain_common();
                }
                self.settle_common(now);
            }
            (RequestFor::Channel(channel_id), Failure::Retry { after }) => {
                self.requests.remove(&id);
                self.stats.requests_failed += 1;
                self.channel_requests_in_flight = self.channel_requests_in_flight.saturating_sub(1);
                let backoff = &self.config;
                if let Some(channel) = self.channel_boxes.get_mut(&channel_id) {
                    let fetch = &mut channel.fetch;
                    let delay = after.unwrap_or_else(|| backoff.backoff(fetch.attempts));
                    fetch.attempts = fetch.attempts.saturating_add(1);
                    fetch.state = FetchState::Backoff(now + delay);
                    fetch.refetch = false;
                }
                self.drain_channel(channel_id);
                self.settle_channel(now, channel_id);
                self.pump_channel_queue();
            }
        }
        Ok(())
    }

    /// Starts (or queues behind the in-flight one) a fetch of the common box.
    pub(super) fn start_common_fetch(&mut self) {
        let fetch = &mut self.common.fetch;
        if fetch.in_flight() {
            fetch.refetch = true;
            return;
        }
        let (kind, target) = if self.has_state && self.common.rebase != Rebase::State {
            self.stats.difference_requests += 1;
            let kind = RequestKind::GetDifference {
                pts: self.state.pts,
                qts: self.state.qts,
                date: self.state.date,
                pts_total_limit: self.config.pts_total_limit,
            };
            (kind, RequestFor::Difference)
        } else {
            self.stats.get_state_requests += 1;
            (RequestKind::GetState, RequestFor::State)
        };
        let id = self.send(kind, target);
        let fetch = &mut self.common.fetch;
        fetch.state = FetchState::InFlight(id);
        fetch.gap_deadline = None;
        fetch.asked_at = self.arrivals;
        self.reschedule_common();
    }

    /// A common fetch ended with the final answer: reconcile what waited.
    pub(super) fn finish_common(&mut self, now: Instant) {
        let fetch = &mut self.common.fetch;
        fetch.state = FetchState::Idle;
        fetch.attempts = 0;
        if mem::take(&mut fetch.gap_open) {
            self.stats.gaps_resolved_by_difference += 1;
        }
        // Under a re-base the buffers hold updates under the new numbers too: they wait for
        // `getState`.
        if self.common.rebase == Rebase::No {
            self.drain_common();
        }
        if mem::take(&mut self.common.fetch.refetch) {
            self.start_common_fetch();
        } else if self.common.rebase == Rebase::Pending {
            // Everything the old numbers reach was fetched, and the final answer covers what
            // waited under them: none of it will ever apply.
            self.common.rebase = Rebase::State;
            let mark = self.common.rebase_mark;
            for slot in SLOTS {
                let discarded = self.common.buffer(slot).discard_beyond(-1, mark);
                self.discarded(discarded);
            }
            self.start_common_fetch();
        } else {
            self.settle_common(now);
        }
    }

    /// Starts a channel fetch, or queues it when too many are in flight.
    pub(super) fn start_channel_fetch(&mut self, channel_id: ChannelId) {
        if !self.channels.contains_key(&channel_id) {
            return;
        }
        let channel = self
            .channel_boxes
            .entry(channel_id)
            .or_insert_with(ChannelBox::new);
        match channel.fetch.state {
            FetchState::InFlight(_) => channel.fetch.refetch = true,
            FetchState::Queued => {}
            FetchState::Idle | FetchState::Backoff(_) => {
                if self.channel_requests_in_flight >= self.config.max_concurrent_channel_requests {
                    channel.fetch.state = FetchState::Queued;
                    channel.fetch.gap_deadline = None;
                    self.channel_queue.push_back(channel_id);
                    self.reschedule_channel(channel_id);
                } else {
                    self.send_channel_request(channel_id);
                }
            }
        }
    }

    pub(super) fn send_channel_request(&mut self, channel_id: ChannelId) {
        let pts = self.channels.get(&channel_id).copied().unwrap_or(0);
        let kind = RequestKind::GetChannelDifference {
            channel_id,
            pts,
            limit: self.config.channel_difference_limit,
        };
        self.stats.channel_difference_requests += 1;
        let id = self.send(kind, RequestFor::Channel(channel_id));
        self.channel_requests_in_flight += 1;
        let channel = self
            .channel_boxes
            .entry(channel_id)
            .or_insert_with(ChannelBox::new);
        channel.fetch.state = FetchState::InFlight(id);
        channel.fetch.gap_deadline = None;
        channel.fetch.poll_at = None;
        channel.fetch.asked_at = self.arrivals;
        self.reschedule_channel(channel_id);
    }

    pub(super) fn finish_channel(
        &mut self,
        now: Instant,
        channel_id: ChannelId,
        timeout: Option<i32>,
    ) {
        let poll = self.open_channels.contains(&channel_id).then(|| {
            match timeout.filter(|&seconds| seconds > 0) {
                Some(seconds) => {
                    now + std::time::Duration::from_secs(seconds.unsigned_abs().into())
                }
                None => now + self.config.open_channel_poll,
            }
        });
        let refetch = match self.channel_boxes.get_mut(&channel_id) {
            Some(channel) => {
                let fetch = &mut channel.fetch;
                fetch.state = FetchState::Idle;
                fetch.attempts = 0;
                fetch.poll_at = poll;
                if mem::take(&mut fetch.gap_open) {
                    self.stats.gaps_resolved_by_difference += 1;
                }
                mem::take(&mut fetch.refetch)
            }
            None => false,
        };
        self.drain_channel(channel_id);
        if refetch {
            self.start_channel_fetch(channel_id);
        } else {
            self.settle_channel(now, channel_id);
        }
    }

    pub(super) fn pump_channel_queue(&mut self) {
        while self.channel_requests_in_flight < self.config.max_concurrent_channel_requests {
            let Some(channel_id) = self.channel_queue.pop_front() else {
                return;
            };
            let queued = self
                .channel_boxes
                .get(&channel_id)
                .is_some_and(|c| c.fetch.state == FetchState::Queued);
            if queued && self.channels.contains_key(&channel_id) {
                self.send_channel_request(channel_id);
            }
        }
    }

    pub(super) fn channel_request(&self, channel_id: ChannelId) -> Option<RequestId> {
        match self.channel_boxes.get(&channel_id)?.fetch.state {
            FetchState::InFlight(id) => Some(id),
            _ => None,
        }
    }

    /// Drops everything about a channel and asks storage to forget it.
    pub(super) fn forget(&mut self, channel_id: ChannelId) {
        if let Some(mut channel) = self.channel_boxes.remove(&channel_id) {
            self.buffered_total -= channel.buffer.clear();
            if let Some(at) = channel.fetch.scheduled {
                self.timers.remove(&(at, Timer::Channel(channel_id)));
            }
        }
        self.open_channels.remove(&channel_id);
        if self.channels.remove(&channel_id).is_some() {
            self.open_change.removed.push(channel_id);
        }
    }

    pub(super) fn send(&mut self, kind: RequestKind, target: RequestFor) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.requests.insert(id, target);
        self.outputs
            .push_back(Output::Request(Request { id, kind }));
        id
    }

    pub(super) fn expect_request(&self, id: RequestId, expected: RequestFor) -> Result<(), Error> {
        match self.requests.get(&id) {
            Some(&target) if target == expected => Ok(()),
            Some(&target) => Err(Error::UnexpectedReply {
                id,
                expected: target.describe(),
            }),
            None => Err(Error::UnknownRequest(id)),
        }
    }

    /// Checks a difference before anything of it is applied.
    pub(super) fn check_difference(&self, difference: &Difference<U, E>) -> Result<(), Error> {
        let regression = |sequence, local: i32, received: i32| {
            if received < local {
                Err(Error::Regression {
                    sequence,
                    local,
                    received,
                })
            } else {
                Ok(())
            }
        };
        match difference {
            Difference::Empty { seq, .. } => {
                check_non_negative("seq", *seq)?;
                regression("seq", self.state.seq, *seq)
            }
            Difference::Difference { updates, state, .. } => {
                check_state(state)?;
                regression("pts", self.state.pts, state.pts)?;
                regression("qts", self.state.qts, state.qts)?;
                regression("seq", self.state.seq, state.seq)?;
                for update in updates {
                    classify(update.sequence())?;
                }
                Ok(())
            }
            Difference::TooLong { pts } => {
                check_non_negative("pts", *pts)?;
                regression("pts", self.state.pts, *pts)
            }
        }
    }
}
