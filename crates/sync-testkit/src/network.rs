//! The faulty network between the simulated server and a client: what becomes of each push
//! the server makes (lost, held back, duplicated, summarised as too long, given a malformed
//! update), and the pushes it adds that the server never made (absurd numbers,
//! `updatePtsChanged`). The engine's [`Scenario`](crate::Scenario) and the runtime's
//! simulated producer share it, so both see the same faults.
//!
//! Every push it loses or replaces is reported to the [`Server`] (`push_lost`), which then
//! answers differences with it; a push given a malformed update is not reported: the client's
//! own recovery must bring its good updates back.

use std::time::Duration;

use sync_core::{ChannelHash, ChannelId, Sequence, Updates};

use crate::faults::Faults;
use crate::rng::Rng;
use crate::server::Server;
use crate::update::{TestEntities, TestUpdate};

/// Ids of updates the server never made (absurd pushes, malformed updates): far above any
/// event id, so the oracle knows them for what they are.
pub const ABSURD_IDS: u64 = 1 << 60;

/// A push on its way to the client.
#[derive(Debug, Clone, PartialEq)]
pub struct Arrival {
    /// How long after it was sent it arrives.
    pub after: Duration,
    /// The push as it arrives.
    pub updates: Updates<TestUpdate, TestEntities>,
    /// True when it carries a malformed number: the client must refuse it.
    pub malformed: bool,
}

/// What the network did to the pushes it carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Pushes sent through it (the server's, before faults).
    pub pushes: u64,
    /// Pushes lost (drops and silences).
    pub lost: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Pushes replaced by `updatesTooLong` or `updateChannelTooLong`.
    pub too_long: u64,
    /// Containers given a malformed update among their good ones.
    pub malformed: u64,
    /// Absurd pushes added (see [`Faults::absurd_push`]), malformed ones included.
    pub absurd: u64,
    /// `updatePtsChanged` pushes added.
    pub pts_changed: u64,
}

/// The faulty network: [`Faults`], a one-way latency, and the state a silence or the absurd
/// ids carry from push to push. Randomness comes from the caller's [`Rng`], so a run stays
/// one seeded stream.
#[derive(Debug, Clone)]
pub struct Network {
    faults: Faults,
    latency: Duration,
    silence_left: u64,
    next_absurd: u64,
    traffic: Traffic,
}

impl Network {
    /// A network with these faults and this one-way latency.
    pub fn new(faults: Faults, latency: Duration) -> Self {
        Self {
            faults,
            latency,
            silence_left: 0,
            next_absurd: ABSURD_IDS,
            traffic: Traffic::default(),
        }
    }

    /// What it did so far.
    pub fn traffic(&self) -> Traffic {
        self.traffic
    }

    /// Sends one push the server made: returns what arrives, in the order to schedule it
    /// (extra pushes first; none when the push was lost). Lost and replaced pushes are
    /// reported to `server`.
    pub fn send(
        &mut self,
        rng: &mut Rng,
        server: &mut Server,
        push: Updates<TestUpdate, TestEntities>,
    ) -> Vec<Arrival> {
        self.traffic.pushes += 1;
        let mut arrivals = Vec::with_capacity(2);
        if chance(rng, self.faults.absurd_push) {
            let (updates, malformed) = self.absurd_push(rng, server);
            self.traffic.absurd += 1;
            arrivals.push(self.extra(rng, updates, malformed));
        }
        if chance(rng, self.faults.pts_changed) {
            self.traffic.pts_changed += 1;
            let update = TestUpdate {
                id: 0,
                sequence: Sequence::PtsChanged,
            };
            let date = server.state().date;
            arrivals.push(self.extra(rng, Updates::Short { update, date }, false));
        }
        self.real(rng, server, push, &mut arrivals);
        arrivals
    }

    /// An extra push: it may be held back, but is neither lost nor duplicated.
    fn extra(
        &self,
        rng: &mut Rng,
        updates: Updates<TestUpdate, TestEntities>,
        malformed: bool,
    ) -> Arrival {
        Arrival {
            after: self.delay(rng),
            updates,
            malformed,
        }
    }

    /// The latency, plus a hold-back when the push is reordered.
    fn delay(&self, rng: &mut Rng) -> Duration {
        let mut delay = self.latency;
        if rng.chance(self.faults.reorder) {
            let window = u64::try_from(self.faults.reorder_window.as_millis()).unwrap_or(u64::MAX);
            delay += Duration::from_millis(rng.below(window.saturating_add(1)));
        }
        delay
    }

    fn absurd_id(&mut self) -> u64 {
        self.next_absurd += 1;
        self.next_absurd
    }

    /// A push the server never made, and whether its numbers are malformed.
    fn absurd_push(
        &mut self,
        rng: &mut Rng,
        server: &Server,
    ) -> (Updates<TestUpdate, TestEntities>, bool) {
        let date = server.state().date;
        let id = self.absurd_id();
        let channel = {
            let channels: Vec<(ChannelId, i64)> = server.access_hashes().collect();
            (!channels.is_empty()).then(|| channels[pick(rng, channels.len())])
        };
        let near_max = i32::MAX - small(rng, 16);
        let short = |sequence| Updates::Short {
            update: TestUpdate { id, sequence },
            date,
        };
        let container =
            |sequence, hash: Option<(ChannelId, i64)>, seq_start, seq| Updates::Combined {
                updates: vec![TestUpdate { id, sequence }],
                entities: TestEntities {
                    channels: hash
                        .map(|(channel_id, access_hash)| ChannelHash {
                            channel_id,
                            access_hash,
                            min: false,
                        })
                        .into_iter()
                        .collect(),
                },
                date,
                seq_start,
                seq,
            };
        match (rng.below(8), channel) {
            (0, _) => (
                short(Sequence::Common {
                    pts: near_max,
                    pts_count: 1,
                }),
                false,
            ),
            (1, _) => (short(Sequence::Qts { qts: near_max }), false),
            (2, Some(hash)) => {
                let sequence = Sequence::Channel {
                    channel_id: hash.0,
                    pts: near_max - 5,
                    pts_count: 1,
                };
                (container(sequence, Some(hash), 0, 0), false)
            }
            (3, _) => {
                let pts = -1 - small(rng, 5);
                (short(Sequence::Common { pts, pts_count: 1 }), true)
            }
            (4, _) => {
                let pts = 1 + small(rng, 3);
                let pts_count = pts + 1 + small(rng, 3);
                (short(Sequence::Common { pts, pts_count }), true)
            }
            (5, Some(hash)) => {
                let sequence = Sequence::Channel {
                    channel_id: hash.0,
                    pts: -3,
                    pts_count: 1,
                };
                (container(sequence, Some(hash), 0, 0), true)
            }
            (6, _) => {
                let sequence = Sequence::Channel {
                    channel_id: -i64::from(small(rng, 3)),
                    pts: 5,
                    pts_count: 1,
                };
                (container(sequence, None, 0, 0), true)
            }
            (7, _) => {
                let seq = server.state().seq + 1;
                let seq_start = seq + 1 + small(rng, 3);
                (container(Sequence::Unordered, None, seq_start, seq), true)
            }
            _ => (short(Sequence::Qts { qts: -1 }), true),
        }
    }

    /// A real push through the faulty network.
    fn real(
        &mut self,
        rng: &mut Rng,
        server: &mut Server,
        updates: Updates<TestUpdate, TestEntities>,
        arrivals: &mut Vec<Arrival>,
    ) {
        let faults = &self.faults;
        let lost = if self.silence_left > 0 {
            self.silence_left -= 1;
            true
        } else if rng.chance(faults.silence) {
            self.silence_left = faults.silence_length;
            true
        } else {
            rng.chance(faults.drop)
        };
        if lost {
            self.traffic.lost += 1;
            server.push_lost(&updates);
            return;
        }
        let updates = if rng.chance(faults.too_long) {
            self.traffic.too_long += 1;
            server.push_lost(&updates);
            Updates::TooLong
        } else if let Some(channel_id) =
            channel_of(&updates).filter(|_| rng.chance(faults.channel_too_long))
        {
            self.traffic.too_long += 1;
            server.push_lost(&updates);
            let pts = if rng.chance(0.5) {
                server.channel_pts(channel_id)
            } else {
                None
            };
            let update = TestUpdate {
                id: 0,
                sequence: Sequence::ChannelTooLong { channel_id, pts },
            };
            Updates::Short {
                update,
                date: server.state().date,
            }
        } else {
            updates
        };
        let (updates, malformed) = match updates {
            Updates::Combined {
                mut updates,
                entities,
                date,
                seq_start,
                seq,
            } if chance(rng, self.faults.malformed_update) => {
                self.traffic.malformed += 1;
                let sequence = match (rng.below(3), channel_of_updates(&updates)) {
                    (0, _) | (_, None) => Sequence::Common {
                        pts: -1,
                        pts_count: 1,
                    },
                    (1, Some(channel_id)) => Sequence::Channel {
                        channel_id,
                        pts: -2,
                        pts_count: 1,
                    },
                    (_, Some(channel_id)) => Sequence::Channel {
                        channel_id,
                        pts: 1,
                        pts_count: 3,
                    },
                };
                let bad = TestUpdate {
                    id: self.absurd_id(),
                    sequence,
                };
                let at = pick(rng, updates.len() + 1);
                updates.insert(at, bad);
                let push = Updates::Combined {
                    updates,
                    entities,
                    date,
                    seq_start,
                    seq,
                };
                (push, true)
            }
            updates => (updates, false),
        };
        let after = self.delay(rng);
        if rng.chance(self.faults.duplicate) {
            self.traffic.duplicated += 1;
            arrivals.push(Arrival {
                after: after + Duration::from_millis(rng.below(2_000)),
                updates: updates.clone(),
                malformed,
            });
        }
        arrivals.push(Arrival {
            after,
            updates,
            malformed,
        });
    }
}

/// A chance that draws nothing when it is 0, so that faults left off keep a run's stream of
/// random numbers as it was.
pub(crate) fn chance(rng: &mut Rng, p: f64) -> bool {
    p > 0.0 && rng.chance(p)
}

/// An index below `len` (at least 1).
fn pick(rng: &mut Rng, len: usize) -> usize {
    let index = rng.below(u64::try_from(len).unwrap_or(u64::MAX));
    usize::try_from(index).unwrap_or(0)
}

/// A small number below `bound` (at most a few dozen).
fn small(rng: &mut Rng, bound: u64) -> i32 {
    i32::try_from(rng.below(bound)).unwrap_or(0)
}

/// The channel of a container's first channel update.
pub(crate) fn channel_of(updates: &Updates<TestUpdate, TestEntities>) -> Option<ChannelId> {
    let Updates::Combined { updates, .. } = updates else {
        return None;
    };
    channel_of_updates(updates)
}

fn channel_of_updates(updates: &[TestUpdate]) -> Option<ChannelId> {
    updates.iter().find_map(|u| match u.sequence {
        Sequence::Channel { channel_id, .. } => Some(channel_id),
        _ => None,
    })
}
