//! Deadlines: each box registers at most one instant in the timer set (its gap wait, retry or
//! poll), and the idle rule one more.

use std::collections::BTreeSet;
use std::time::Instant;

use crate::state::ChannelId;
use crate::update::{Entities, Update};

use super::Engine;
use super::fetch::FetchState;

/// Timer keys. A key is in the timer set at most once, under its box's `scheduled` instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    Idle,
    Common,
    Channel(ChannelId),
}

/// Moves `key` in the timer set from `scheduled` to `wanted`.
pub(super) fn reschedule(
    timers: &mut BTreeSet<(Instant, Timer)>,
    scheduled: &mut Option<Instant>,
    wanted: Option<Instant>,
    key: Timer,
) {
    if *scheduled == wanted {
        return;
    }
    if let Some(at) = scheduled.take() {
        timers.remove(&(at, key));
    }
    if let Some(at) = wanted {
        timers.insert((at, key));
        *scheduled = Some(at);
    }
}

impl<U: Update, E: Entities> Engine<U, E> {
    /// Time has passed: fire every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = Vec::new();
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            due.push(timer);
        }
        for timer in due {
            match timer {
                Timer::Idle => {
                    self.idle_scheduled = None;
                    let idle_until = self.last_activity + self.config.idle_timeout;
                    if idle_until <= now {
                        // Idle for long enough: ask for the difference (unless a fetch is under
                        // way anyway), and count the idle period afresh from now.
                        self.last_activity = now;
                        if self.common.fetch.state == FetchState::Idle && self.has_state {
                            self.start_common_fetch();
                        }
                    }
                    self.arm_idle();
                }
                Timer::Common => {
                    self.common.fetch.scheduled = None;
                    let fetch = &mut self.common.fetch;
                    match fetch.state {
                        FetchState::Backoff(until) if until <= now => {
                            fetch.state = FetchState::Idle;
                            self.start_common_fetch();
                        }
                        FetchState::Idle if fetch.gap_deadline.is_some_and(|at| at <= now) => {
                            self.start_common_fetch();
                        }
                        _ => self.reschedule_common(),
                    }
                }
                Timer::Channel(channel_id) => {
                    let Some(channel) = self.channel_boxes.get_mut(&channel_id) else {
                        continue;
                    };
                    let fetch = &mut channel.fetch;
                    fetch.scheduled = None;
                    let due = |at: Option<Instant>| at.is_some_and(|at| at <= now);
                    match fetch.state {
                        FetchState::Backoff(until) if until <= now => {
                            fetch.state = FetchState::Idle;
                            self.start_channel_fetch(channel_id);
                        }
                        FetchState::Idle if due(fetch.gap_deadline) || due(fetch.poll_at) => {
                            self.start_channel_fetch(channel_id);
                        }
                        _ => self.reschedule_channel(channel_id),
                    }
                }
            }
        }
    }

    pub(super) fn reschedule_common(&mut self) {
        let wanted = self.common.fetch.deadline();
        let scheduled = &mut self.common.fetch.scheduled;
        reschedule(&mut self.timers, scheduled, wanted, Timer::Common);
    }

    pub(super) fn reschedule_channel(&mut self, channel_id: ChannelId) {
        if let Some(channel) = self.channel_boxes.get_mut(&channel_id) {
            let wanted = channel.fetch.deadline();
            let scheduled = &mut channel.fetch.scheduled;
            reschedule(
                &mut self.timers,
                scheduled,
                wanted,
                Timer::Channel(channel_id),
            );
        }
    }

    /// Drops a channel's box once it holds nothing, keeping idle channels at one map entry.
    pub(super) fn release_channel(&mut self, channel_id: ChannelId) {
        let idle = self.channel_boxes.get(&channel_id).is_some_and(|c| {
            c.buffer.is_empty()
                && c.fetch.state == FetchState::Idle
                && c.fetch.scheduled.is_none()
                && !c.fetch.gap_open
                && !c.fetch.refetch
                && !c.unverified
        });
        if idle && !self.open_channels.contains(&channel_id) {
            self.channel_boxes.remove(&channel_id);
        }
    }

    /// Registers the idle timer from the last activity. Pushes only move `last_activity`; the
    /// timer is moved when it fires, which keeps the hot path free of timer-set updates.
    pub(super) fn arm_idle(&mut self) {
        let wanted = Some(self.last_activity + self.config.idle_timeout);
        reschedule(
            &mut self.timers,
            &mut self.idle_scheduled,
            wanted,
            Timer::Idle,
        );
    }
}
