//! The simulated Telegram side of one account: the true state, the log of everything that
//! happened, and answers to getState / getDifference / getChannelDifference.

use std::collections::{HashMap, HashSet};

use sync_core::{
    ChannelDifference, ChannelDifferenceKind, ChannelHash, ChannelId, Difference, Sequence, State,
    Updates,
};

use crate::rng::Rng;
use crate::update::{TestEntities, TestUpdate};

/// What the server generates, as relative weights of event kinds and of push shapes.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Channels of the account (ids `1..=channels`). Thousands are cheap.
    pub channels: usize,
    /// Weight of new messages in private chats and groups (common pts, count 1).
    pub messages: u32,
    /// Weight of deletions and read-history updates (common pts, count 2–4).
    pub multi_pts: u32,
    /// Weight of common updates with `pts_count == 0`.
    pub zero_count: u32,
    /// Weight of secret-chat and bot events (qts).
    pub qts: u32,
    /// Weight of channel posts and edits (channel pts).
    pub channel_posts: u32,
    /// Weight of unordered updates that ride in `seq` containers (user name changes, …).
    pub seq_updates: u32,
    /// Weight of ephemeral unordered updates (typing, status): never in a difference.
    pub ephemeral: u32,
    /// Chance that a push is a container of several events rather than a short update.
    pub container_chance: f64,
    /// Largest number of events in one container.
    pub max_container: u64,
    /// Chance that a container carries a `seq` (the others have `seq == 0`).
    pub seq_chance: f64,
    /// Chance that a channel mentioned in a container comes as a "min" constructor.
    pub min_channel_chance: f64,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            channels: 8,
            messages: 40,
            multi_pts: 6,
            zero_count: 2,
            qts: 8,
            channel_posts: 34,
            seq_updates: 5,
            ephemeral: 5,
            container_chance: 0.3,
            max_container: 5,
            seq_chance: 0.6,
            min_channel_chance: 0.2,
        }
    }
}

/// How the server caps its answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Most events in one `updates.difference` when the client sets no `pts_total_limit`;
    /// past it the server answers with a slice.
    pub difference_limit: usize,
    /// Past this many missed events the server answers `differenceTooLong`.
    pub difference_too_long_after: usize,
    /// Past this many missed channel events the server answers `channelDifferenceTooLong`.
    pub channel_too_long_after: usize,
    /// The `timeout` hint of channel differences, in seconds.
    pub channel_timeout: Option<i32>,
    /// How many of the channel's latest messages a `channelDifferenceTooLong` carries (the
    /// newest of the events it skips, as unordered updates with the events' ids).
    pub channel_too_long_messages: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            difference_limit: 100,
            difference_too_long_after: 100_000,
            channel_too_long_after: 100_000,
            channel_timeout: Some(30),
            channel_too_long_messages: 3,
        }
    }
}

/// How an event must reach the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A numbered update: exactly once (unless a too-long answer skipped it).
    Durable,
    /// An unordered update of the `seq` container `seq`: at most once, in `seq` order.
    SeqOrdered {
        /// The container's `seq`.
        seq: i32,
    },
    /// An ephemeral update: at most once.
    Ephemeral,
}

#[derive(Debug)]
struct SimChannel {
    id: ChannelId,
    access_hash: i64,
    pts: i32,
    log: Vec<TestUpdate>,
    /// The client missed a push of this channel: the next getDifference mentions it
    /// (`updateChannelTooLong`), as Telegram does for channels whose news a client missed.
    dirty: bool,
}

/// The simulated server. Deterministic for a given seed and workload.
#[derive(Debug)]
pub struct Server {
    rng: Rng,
    workload: Workload,
    limits: Limits,
    state: State,
    next_id: u64,
    /// Every event's delivery class, indexed by id - 1.
    classes: Vec<Delivery>,
    /// Every event's place in the numbering, indexed by id - 1.
    places: Vec<Sequence>,
    /// Common-pts and qts events in the order they happened.
    common: Vec<TestUpdate>,
    /// `(pts, index in common)` of common-pts events, ascending.
    pts_index: Vec<(i32, usize)>,
    /// `(qts, index in common)` of qts events, ascending.
    qts_index: Vec<(i32, usize)>,
    channels: Vec<SimChannel>,
    channel_index: HashMap<ChannelId, usize>,
    /// Events a too-long answer told the client to skip.
    skipped: Vec<u64>,
    /// Skipped events that a `channelDifferenceTooLong` carried as latest messages.
    latest: HashSet<u64>,
}

/// Why the server refused a channel request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelRefusal {
    /// No such channel.
    Invalid,
    /// The access hash is wrong.
    BadAccessHash,
}

impl Server {
    /// A server with a seeded generator. The account starts at pts 1, qts 1, seq 1 and every
    /// channel at pts 1.
    pub fn new(seed: u64, workload: Workload, limits: Limits) -> Self {
        let mut rng = Rng::new(seed);
        let channels: Vec<SimChannel> = (1..=workload.channels as i64)
            .map(|id| SimChannel {
                id,
                access_hash: (rng.next_u64() >> 1) as i64,
                pts: 1,
                log: Vec::new(),
                dirty: false,
            })
            .collect();
        let channel_index = channels
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id, i))
            .collect();
        Self {
            rng,
            workload,
            limits,
            state: State {
                pts: 1,
                qts: 1,
                date: 1_700_000_000,
                seq: 1,
            },
            next_id: 1,
            classes: Vec::new(),
            places: Vec::new(),
            common: Vec::new(),
            pts_index: Vec::new(),
            qts_index: Vec::new(),
            channels,
            channel_index,
            skipped: Vec::new(),
            latest: HashSet::new(),
        }
    }

    /// The true common state (`updates.getState`).
    pub fn state(&self) -> State {
        self.state
    }

    /// The channels and their true pts.
    pub fn channel_states(&self) -> impl Iterator<Item = (ChannelId, i32)> + '_ {
        self.channels.iter().map(|c| (c.id, c.pts))
    }

    /// The channels and their access hashes, as the client's dialogs would give them.
    pub fn access_hashes(&self) -> impl Iterator<Item = (ChannelId, i64)> + '_ {
        self.channels.iter().map(|c| (c.id, c.access_hash))
    }

    /// How event `id` must be delivered, if the server made it.
    pub fn delivery(&self, id: u64) -> Option<Delivery> {
        let index = usize::try_from(id.checked_sub(1)?).ok()?;
        self.classes.get(index).copied()
    }

    /// Event `id` as the server made it (with its true place), if it made it.
    pub fn event(&self, id: u64) -> Option<TestUpdate> {
        let index = usize::try_from(id.checked_sub(1)?).ok()?;
        let sequence = *self.places.get(index)?;
        Some(TestUpdate { id, sequence })
    }

    /// True when a `channelDifferenceTooLong` carried event `id` among the channel's latest
    /// messages (delivered outside its sequence, at most once).
    pub fn is_latest_message(&self, id: u64) -> bool {
        self.latest.contains(&id)
    }

    /// How many events the server made.
    pub fn events(&self) -> u64 {
        self.next_id - 1
    }

    /// Events that too-long answers, and answers to a channel pts the server never reached,
    /// allowed the client to skip.
    pub fn skipped(&self) -> &[u64] {
        &self.skipped
    }

    /// Every durable event, with its place.
    pub fn durable_events(&self) -> impl Iterator<Item = TestUpdate> + '_ {
        self.common
            .iter()
            .copied()
            .chain(self.channels.iter().flat_map(|c| c.log.iter().copied()))
    }

    /// The network lost `push` (or replaced it by a too-long summary): the channels it
    /// carried are mentioned in the next difference, so the client learns of their news even
    /// when no later push of theirs reveals the gap.
    pub fn push_lost(&mut self, push: &Updates<TestUpdate, TestEntities>) {
        let Updates::Combined { updates, .. } = push else {
            return;
        };
        for update in updates {
            if let Sequence::Channel { channel_id, .. } = update.sequence
                && let Some(&index) = self.channel_index.get(&channel_id)
            {
                self.channels[index].dirty = true;
            }
        }
    }

    /// The client reconnected from scratch: mention every channel in the next difference.
    pub fn client_restarted(&mut self) {
        for channel in &mut self.channels {
            channel.dirty = true;
        }
    }

    fn new_id(&mut self, class: Delivery) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.classes.push(class);
        self.places.push(Sequence::Unordered);
        id
    }

    /// Records where event `update.id` sits in the numbering.
    fn place(&mut self, update: TestUpdate) -> TestUpdate {
        if let Some(index) = usize::try_from(update.id - 1)
            .ok()
            .filter(|&i| i < self.places.len())
        {
            self.places[index] = update.sequence;
        }
        update
    }

    /// Makes one event happen and returns it (not yet pushed).
    fn happen(&mut self, in_seq_container: bool, entities: &mut TestEntities) -> TestUpdate {
        let update = self.happen_unplaced(in_seq_container, entities);
        self.place(update)
    }

    fn happen_unplaced(
        &mut self,
        in_seq_container: bool,
        entities: &mut TestEntities,
    ) -> TestUpdate {
        let w = &self.workload;
        let channel_weight = if self.channels.is_empty() {
            0
        } else {
            w.channel_posts
        };
        let seq_weight = if in_seq_container { w.seq_updates } else { 0 };
        let weights = [
            w.messages,
            w.multi_pts,
            w.zero_count,
            w.qts,
            channel_weight,
            seq_weight,
            w.ephemeral,
        ];
        let total: u64 = weights.iter().map(|&x| u64::from(x)).sum();
        let mut pick = self.rng.below(total.max(1));
        let mut kind = 0;
        for (i, &weight) in weights.iter().enumerate() {
            if pick < u64::from(weight) {
                kind = i;
                break;
            }
            pick -= u64::from(weight);
        }
        match kind {
            0..=2 => {
                let pts_count = match kind {
                    0 => 1,
                    1 => self.rng.between(2, 4) as i32,
                    _ => 0,
                };
                self.state.pts += pts_count;
                let id = self.new_id(Delivery::Durable);
                let update = TestUpdate {
                    id,
                    sequence: Sequence::Common {
                        pts: self.state.pts,
                        pts_count,
                    },
                };
                self.pts_index.push((self.state.pts, self.common.len()));
                self.common.push(update);
                update
            }
            3 => {
                self.state.qts += 1;
                let id = self.new_id(Delivery::Durable);
                let update = TestUpdate {
                    id,
                    sequence: Sequence::Qts {
                        qts: self.state.qts,
                    },
                };
                self.qts_index.push((self.state.qts, self.common.len()));
                self.common.push(update);
                update
            }
            4 => {
                let index = self.rng.below(self.channels.len() as u64) as usize;
                let pts_count = if self.rng.chance(0.1) { 2 } else { 1 };
                let id = self.new_id(Delivery::Durable);
                let min = self.rng.chance(self.workload.min_channel_chance);
                let garbage = self.rng.next_u64() as i64;
                let channel = &mut self.channels[index];
                channel.pts += pts_count;
                let update = TestUpdate {
                    id,
                    sequence: Sequence::Channel {
                        channel_id: channel.id,
                        pts: channel.pts,
                        pts_count,
                    },
                };
                channel.log.push(update);
                entities.channels.push(ChannelHash {
                    channel_id: channel.id,
                    access_hash: if min { garbage } else { channel.access_hash },
                    min,
                });
                update
            }
            5 => {
                let id = self.new_id(Delivery::SeqOrdered {
                    seq: self.state.seq + 1,
                });
                TestUpdate {
                    id,
                    sequence: Sequence::Unordered,
                }
            }
            _ => {
                let id = self.new_id(Delivery::Ephemeral);
                TestUpdate {
                    id,
                    sequence: Sequence::Unordered,
                }
            }
        }
    }

    /// Makes the next push happen: a short update or a container of several events.
    pub fn produce(&mut self) -> Updates<TestUpdate, TestEntities> {
        self.state.date += 1;
        let date = self.state.date;
        if !self.rng.chance(self.workload.container_chance) {
            let mut entities = TestEntities::default();
            let update = self.happen(false, &mut entities);
            return match update.sequence {
                // A channel post needs its channel in the entities: send it in a container.
                Sequence::Channel { .. } => Updates::Combined {
                    updates: vec![update],
                    entities,
                    date,
                    seq_start: 0,
                    seq: 0,
                },
                _ => Updates::Short { update, date },
            };
        }
        let with_seq = self.rng.chance(self.workload.seq_chance);
        let count = self.rng.between(1, self.workload.max_container.max(1));
        let mut entities = TestEntities::default();
        let updates = (0..count)
            .map(|_| self.happen(with_seq, &mut entities))
            .collect();
        let (seq_start, seq) = if with_seq {
            self.state.seq += 1;
            (self.state.seq, self.state.seq)
        } else {
            (0, 0)
        };
        Updates::Combined {
            updates,
            entities,
            date,
            seq_start,
            seq,
        }
    }

    /// `updates.getDifference` from the client's `pts` and `qts`.
    pub fn get_difference(
        &mut self,
        pts: i32,
        qts: i32,
        pts_total_limit: Option<i32>,
    ) -> Difference<TestUpdate, TestEntities> {
        let first_pts = self.pts_index.partition_point(|&(p, _)| p <= pts);
        let first_qts = self.qts_index.partition_point(|&(q, _)| q <= qts);
        let missed = (self.pts_index.len() - first_pts) + (self.qts_index.len() - first_qts);
        let start = [self.pts_index.get(first_pts), self.qts_index.get(first_qts)]
            .into_iter()
            .flatten()
            .map(|&(_, index)| index)
            .min();

        if self.pts_index.len() - first_pts > self.limits.difference_too_long_after {
            // Too much: the client jumps to the current pts; the common events in between are
            // skipped (qts events are still fetched from the client's qts afterwards).
            self.skipped.extend(
                self.pts_index[first_pts..]
                    .iter()
                    .map(|&(_, i)| self.common[i].id),
            );
            return Difference::TooLong {
                pts: self.state.pts,
            };
        }

        let limit = pts_total_limit
            .and_then(|limit| usize::try_from(limit).ok())
            .filter(|&limit| limit > 0)
            .unwrap_or(self.limits.difference_limit);
        let mut updates = Vec::new();
        let mut reached = State {
            pts,
            qts,
            ..self.state
        };
        if let Some(start) = start {
            for update in &self.common[start..] {
                if updates.len() >= limit {
                    break;
                }
                match update.sequence {
                    Sequence::Common { pts: end, .. } if end > pts => reached.pts = end,
                    Sequence::Qts { qts: end } if end > qts => reached.qts = end,
                    _ => continue,
                }
                updates.push(*update);
            }
        }
        let slice = updates.len() < missed;
        let mut entities = TestEntities::default();
        if !slice {
            for channel in self.channels.iter_mut().filter(|c| c.dirty) {
                channel.dirty = false;
                updates.push(TestUpdate {
                    id: 0,
                    sequence: Sequence::ChannelTooLong {
                        channel_id: channel.id,
                        pts: Some(channel.pts),
                    },
                });
                entities.channels.push(ChannelHash {
                    channel_id: channel.id,
                    access_hash: channel.access_hash,
                    min: false,
                });
            }
        }
        if updates.is_empty() {
            return Difference::Empty {
                date: self.state.date,
                seq: self.state.seq,
            };
        }
        Difference::Difference {
            updates,
            entities,
            state: reached,
            slice,
        }
    }

    /// `updates.getChannelDifference` from the client's `pts`. A `pts` beyond the channel's is
    /// answered as Telegram does: `channelDifferenceEmpty` with the channel's real (lower) pts.
    pub fn get_channel_difference(
        &mut self,
        channel_id: ChannelId,
        access_hash: i64,
        pts: i32,
        limit: i32,
    ) -> Result<ChannelDifference<TestUpdate, TestEntities>, ChannelRefusal> {
        let &index = self
            .channel_index
            .get(&channel_id)
            .ok_or(ChannelRefusal::Invalid)?;
        let channel = &self.channels[index];
        if channel.access_hash != access_hash {
            return Err(ChannelRefusal::BadAccessHash);
        }
        let timeout = self.limits.channel_timeout;
        let first = channel.log.partition_point(|u| match u.sequence {
            Sequence::Channel { pts: end, .. } => end <= pts,
            _ => true,
        });
        let missed = &channel.log[first..];
        let kind = if pts > channel.pts {
            // A pts this channel never reached: Telegram does not know it and answers with the
            // channel's real pts, which is lower. A client that takes it starts the channel
            // over from there, so none of the channel's events so far need reach it.
            self.skipped.extend(channel.log.iter().map(|u| u.id));
            ChannelDifferenceKind::Empty {
                pts: channel.pts,
                is_final: true,
                timeout,
            }
        } else if missed.is_empty() {
            ChannelDifferenceKind::Empty {
                pts: channel.pts,
                is_final: true,
                timeout,
            }
        } else if missed.len() > self.limits.channel_too_long_after {
            self.skipped.extend(missed.iter().map(|u| u.id));
            // The newest skipped messages come along, outside the sequence.
            let latest = self.limits.channel_too_long_messages.min(missed.len());
            let updates: Vec<TestUpdate> = missed[missed.len() - latest..]
                .iter()
                .map(|u| TestUpdate {
                    id: u.id,
                    sequence: Sequence::Unordered,
                })
                .collect();
            self.latest.extend(updates.iter().map(|u| u.id));
            let entities = TestEntities {
                channels: vec![ChannelHash {
                    channel_id,
                    access_hash: channel.access_hash,
                    min: false,
                }],
            };
            ChannelDifferenceKind::TooLong {
                pts: channel.pts,
                updates,
                entities,
                timeout,
            }
        } else {
            let limit = usize::try_from(limit).unwrap_or(1).max(1);
            let updates: Vec<TestUpdate> = missed.iter().take(limit).copied().collect();
            let reached = match updates.last().map(|u| u.sequence) {
                Some(Sequence::Channel { pts, .. }) => pts,
                _ => channel.pts,
            };
            ChannelDifferenceKind::Difference {
                is_final: updates.len() == missed.len(),
                updates,
                entities: TestEntities::default(),
                pts: reached,
                timeout,
            }
        };
        Ok(ChannelDifference { channel_id, kind })
    }

    /// How many common-pts and qts events lie beyond `pts` and `qts`.
    pub fn missed_common(&self, pts: i32, qts: i32) -> usize {
        let first_pts = self.pts_index.partition_point(|&(p, _)| p <= pts);
        let first_qts = self.qts_index.partition_point(|&(q, _)| q <= qts);
        (self.pts_index.len() - first_pts) + (self.qts_index.len() - first_qts)
    }

    /// How many events of a channel lie beyond `pts` (0 for a channel the server does not
    /// have).
    pub fn missed_channel(&self, channel_id: ChannelId, pts: i32) -> usize {
        self.channel_index.get(&channel_id).map_or(0, |&index| {
            let log = &self.channels[index].log;
            let first = log.partition_point(|u| match u.sequence {
                Sequence::Channel { pts: end, .. } => end <= pts,
                _ => true,
            });
            log.len() - first
        })
    }

    /// The true pts of a channel.
    pub fn channel_pts(&self, channel_id: ChannelId) -> Option<i32> {
        self.channel_index
            .get(&channel_id)
            .map(|&i| self.channels[i].pts)
    }
}
