//! The oracle: checks what a client delivered against the server's log.

use std::collections::{HashMap, HashSet};

use sync_core::{ChannelId, Sequence, State};

use crate::server::{Delivery, Server};
use crate::update::TestUpdate;

/// Where the client's deliveries stand in each sequence (the end of the last delivered range).
#[derive(Debug, Clone, Default)]
struct Positions {
    pts: i32,
    qts: i32,
    seq: i32,
    channels: HashMap<ChannelId, i32>,
}

/// Where a client that did not start from stored state began to know its sequences: the
/// events at or below these positions happened before it knew where it stood, and need not
/// reach it.
#[derive(Debug, Clone, Default)]
struct Floors {
    /// The client started without stored state.
    fresh: bool,
    pts: i32,
    qts: i32,
    channels: HashMap<ChannelId, i32>,
}

/// Follows every delivery as it happens, and judges the whole run at the end.
///
/// The rules: every durable event is delivered exactly once unless a too-long answer allowed it
/// to be skipped, or a crash lost its acknowledgement (then it may repeat once per crash);
/// each sequence is delivered in ascending order (checked as it happens: an update whose range
/// starts before the last delivered end is out of order or a repeat); unordered updates of
/// `seq` containers at most once and in `seq` order. Updates with `pts_count == 0` cannot be
/// told from their duplicates by Telegram's numbers, so they are exempt from exactly-once.
///
/// The latest messages that a `channelDifferenceTooLong` carries are skipped events delivered
/// outside their sequence: accepted only for events the server sent that way, at most once
/// (like any event, repeats only inside a crash window), never moving a position, and never
/// required (skipped events need not be delivered).
///
/// A client that starts without stored state ([`Oracle::started_fresh`]) or begins tracking a
/// channel it did not know ([`Oracle::learned_channel`]) owes nothing from before: events at or
/// below where it began need not be delivered (and, if delivered, still at most once).
#[derive(Debug, Default)]
pub struct Oracle {
    delivered: HashMap<u64, u32>,
    at: Positions,
    floors: Floors,
    /// Events delivered but not committed when the client crashed.
    may_repeat: HashSet<u64>,
    /// Deliveries of events in `may_repeat` beyond the first.
    repeats: u64,
    /// Events delivered since the last crash, for computing `may_repeat`.
    epoch_deliveries: Vec<TestUpdate>,
    /// Deliveries of latest messages of `channelDifferenceTooLong` answers.
    latest_messages: u64,
}

impl Oracle {
    /// An oracle for a client that starts at `state` with `channels`.
    pub fn new(state: State, channels: impl IntoIterator<Item = (ChannelId, i32)>) -> Self {
        let mut oracle = Self::default();
        oracle.reset_positions(state, channels);
        oracle
    }

    fn reset_positions(
        &mut self,
        state: State,
        channels: impl IntoIterator<Item = (ChannelId, i32)>,
    ) {
        self.at = Positions {
            pts: state.pts,
            qts: state.qts,
            seq: state.seq,
            channels: channels.into_iter().collect(),
        };
    }

    /// The client had no stored state, and its first `getState` answered `state`: common
    /// events up to it need not be delivered, and deliveries go on from it.
    pub fn started_fresh(&mut self, state: State) {
        self.floors.fresh = true;
        self.floors.pts = self.floors.pts.max(state.pts);
        self.floors.qts = self.floors.qts.max(state.qts);
        self.at.pts = state.pts;
        self.at.qts = state.qts;
        self.at.seq = state.seq;
    }

    /// The client began tracking a channel it did not know, at `pts` (where it learned of the
    /// channel): the channel's events ending at or below it need not be delivered.
    pub fn learned_channel(&mut self, channel_id: ChannelId, pts: i32) {
        let floor = self.floors.channels.entry(channel_id).or_insert(pts);
        *floor = (*floor).max(pts);
    }

    /// How many deliveries repeated an event after a crash (the un-acknowledged window).
    pub fn repeats(&self) -> u64 {
        self.repeats
    }

    /// How many latest messages of `channelDifferenceTooLong` answers were delivered.
    pub fn latest_messages(&self) -> u64 {
        self.latest_messages
    }

    /// Checks one delivered update, in delivery order.
    pub fn deliver(&mut self, server: &Server, update: &TestUpdate) -> Result<(), String> {
        let class = server
            .delivery(update.id)
            .ok_or_else(|| format!("delivered update {} that the server never made", update.id))?;
        if update.sequence == Sequence::Unordered && class == Delivery::Durable {
            // A numbered event outside its sequence: only as a too-long answer's latest
            // message. It counts as a delivery of the event, with the event's true place (so
            // that a crash before its channel's jump is committed allows it to repeat).
            if !server.is_latest_message(update.id) {
                return Err(format!(
                    "numbered update {} was delivered outside its sequence, but the server never sent it as a latest message",
                    update.id
                ));
            }
            let Some(event) = server.event(update.id) else {
                return Err(format!("update {} has no place on the server", update.id));
            };
            *self.delivered.entry(update.id).or_default() += 1;
            self.epoch_deliveries.push(event);
            self.latest_messages += 1;
            return Ok(());
        }
        *self.delivered.entry(update.id).or_default() += 1;
        self.epoch_deliveries.push(*update);
        let out_of_order = |what: &str, start: i32, last: i32| {
            format!(
                "{what} update {} starts at {start}, before the last delivered end {last} (out of order or repeated)",
                update.id
            )
        };
        match (update.sequence, class) {
            (Sequence::Common { pts, pts_count }, _) => {
                let start = pts - pts_count;
                if start < self.at.pts {
                    return Err(out_of_order("pts", start, self.at.pts));
                }
                self.at.pts = pts;
            }
            (Sequence::Qts { qts }, _) => {
                if qts <= self.at.qts {
                    return Err(out_of_order("qts", qts - 1, self.at.qts));
                }
                self.at.qts = qts;
            }
            (
                Sequence::Channel {
                    channel_id,
                    pts,
                    pts_count,
                },
                _,
            ) => {
                let start = pts - pts_count;
                let last = self.at.channels.entry(channel_id).or_insert(start);
                if start < *last {
                    return Err(out_of_order("channel", start, *last));
                }
                *last = pts;
            }
            (Sequence::Unordered, Delivery::SeqOrdered { seq }) => {
                if seq < self.at.seq {
                    return Err(format!(
                        "seq update {} of seq {seq} after seq {}",
                        update.id, self.at.seq
                    ));
                }
                self.at.seq = seq;
            }
            (Sequence::Unordered, _) => {}
            (Sequence::ChannelTooLong { .. }, _) => {
                return Err(format!("updateChannelTooLong {} was delivered", update.id));
            }
            (Sequence::PtsChanged, _) => {
                return Err(format!("updatePtsChanged {} was delivered", update.id));
            }
        }
        Ok(())
    }

    /// The client crashed and restarts from `state` and `channels` (what storage holds): the
    /// events it delivered beyond them may be delivered again.
    pub fn crash(&mut self, state: State, channels: &HashMap<ChannelId, i32>) {
        for update in self.epoch_deliveries.drain(..) {
            let committed = match update.sequence {
                Sequence::Common { pts, .. } => pts <= state.pts,
                Sequence::Qts { qts } => qts <= state.qts,
                Sequence::Channel {
                    channel_id, pts, ..
                } => channels
                    .get(&channel_id)
                    .is_some_and(|&stored| pts <= stored),
                _ => true,
            };
            if !committed {
                self.may_repeat.insert(update.id);
            }
        }
        self.reset_positions(state, channels.iter().map(|(&id, &pts)| (id, pts)));
    }

    /// Judges the run: nothing lost, nothing repeated outside the crash windows, and the client
    /// ends where the server is.
    pub fn finish(
        &mut self,
        server: &Server,
        client: Option<State>,
        client_channel: impl Fn(ChannelId) -> Option<i32>,
    ) -> Result<(), String> {
        let skipped: HashSet<u64> = server.skipped().iter().copied().collect();
        for event in server.durable_events() {
            let count = self.delivered.get(&event.id).copied().unwrap_or(0);
            let zero_count = matches!(
                event.sequence,
                Sequence::Common { pts_count: 0, .. } | Sequence::Channel { pts_count: 0, .. }
            );
            let before_start = match event.sequence {
                Sequence::Common { pts, .. } => pts <= self.floors.pts,
                Sequence::Qts { qts } => qts <= self.floors.qts,
                Sequence::Channel {
                    channel_id, pts, ..
                } => self
                    .floors
                    .channels
                    .get(&channel_id)
                    .is_some_and(|&floor| pts <= floor),
                _ => false,
            };
            if count == 0 && !skipped.contains(&event.id) && !zero_count && !before_start {
                return Err(format!(
                    "update {} ({:?}) was never delivered",
                    event.id, event.sequence
                ));
            }
            if count > 1 && !zero_count {
                if !self.may_repeat.contains(&event.id) {
                    return Err(format!(
                        "update {} ({:?}) was delivered {count} times",
                        event.id, event.sequence
                    ));
                }
                self.repeats += u64::from(count - 1);
            }
        }
        for (&id, &count) in &self.delivered {
            if count > 1 && matches!(server.delivery(id), Some(Delivery::SeqOrdered { .. })) {
                return Err(format!(
                    "seq-ordered update {id} was delivered {count} times"
                ));
            }
        }
        let server_state = server.state();
        let Some(client) = client else {
            return Err("the client never learned its state".into());
        };
        if (client.pts, client.qts, client.seq)
            != (server_state.pts, server_state.qts, server_state.seq)
        {
            return Err(format!(
                "client ended at {client:?}, the server at {server_state:?}"
            ));
        }
        for (channel_id, pts) in server.channel_states() {
            let local = client_channel(channel_id);
            // A client that started with no channels learns of one from its events: one that
            // never had any may stay unknown.
            let unheard_of =
                local.is_none() && self.floors.fresh && server.missed_channel(channel_id, 0) == 0;
            if local != Some(pts) && !unheard_of {
                return Err(format!(
                    "channel {channel_id} ended at {local:?}, the server at {pts}"
                ));
            }
        }
        Ok(())
    }
}
