//! The engine's requests, answered by the simulated server after a round trip: sometimes
//! failing (transient, FLOOD_WAIT) or first corrupted, except in the quiet tail.

use std::time::Duration;

use sync_core::{
    ChannelDifference, ChannelId, Difference, Failure, Request, RequestId, RequestKind, Sequence,
    State,
};

use crate::rng::Rng;
use crate::update::{TestEntities, TestUpdate};

use super::Violation;
use super::run::{Event, Run};

#[derive(Debug)]
pub(super) enum Reply {
    State(State),
    Difference(Difference<TestUpdate, TestEntities>),
    Channel(ChannelDifference<TestUpdate, TestEntities>),
    Failure(Failure),
    CorruptDifference(Difference<TestUpdate, TestEntities>),
    CorruptChannel(ChannelDifference<TestUpdate, TestEntities>),
}

impl Run<'_> {
    /// Answers a request the engine made, after a round trip.
    pub(super) fn request(&mut self, request: Request) -> Result<(), Violation> {
        let faults = &self.scenario.faults;
        let round_trip = self.scenario.latency * 2;
        let epoch = self.epoch;
        self.log(|| format!("request {} {:?}", request.id, request.kind));
        // In the quiet tail the network no longer fails.
        let quiet = self.tail.is_some();
        if let Some(tail) = self.tail.as_mut()
            && !tail.idle
        {
            tail.requests += 1;
        }
        if !quiet && self.rng.chance(faults.request_failure) {
            let after = self
                .rng
                .chance(0.5)
                .then(|| Duration::from_secs(self.rng.between(1, 5)));
            let reply = Reply::Failure(Failure::Retry { after });
            self.schedule(
                round_trip,
                Event::Reply {
                    epoch,
                    id: request.id,
                    reply,
                },
            );
            return Ok(());
        }
        let corrupt = !quiet && self.rng.chance(faults.corrupt_reply);
        let reply = match request.kind {
            RequestKind::GetState => Reply::State(self.server.state()),
            RequestKind::GetDifference {
                pts,
                qts,
                pts_total_limit,
                ..
            } => {
                if corrupt {
                    let bad = corrupt_difference(&mut self.rng, pts);
                    self.schedule(
                        round_trip,
                        Event::Reply {
                            epoch,
                            id: request.id,
                            reply: Reply::CorruptDifference(bad),
                        },
                    );
                }
                Reply::Difference(self.server.get_difference(pts, qts, pts_total_limit))
            }
            RequestKind::GetChannelDifference {
                channel_id,
                pts,
                limit,
            } => {
                let Some(&hash) = self.hashes.get(&channel_id) else {
                    return Err(self.violation(format!(
                        "channel {channel_id} requested without a known access hash"
                    )));
                };
                match self
                    .server
                    .get_channel_difference(channel_id, hash, pts, limit)
                {
                    Ok(difference) => {
                        if corrupt {
                            let verified = self.verified.contains(&channel_id);
                            let bad = corrupt_channel_difference(
                                &mut self.rng,
                                channel_id,
                                pts,
                                verified,
                            );
                            self.schedule(
                                round_trip,
                                Event::Reply {
                                    epoch,
                                    id: request.id,
                                    reply: Reply::CorruptChannel(bad),
                                },
                            );
                        }
                        Reply::Channel(difference)
                    }
                    Err(refusal) => {
                        return Err(self.violation(format!(
                            "channel {channel_id} request refused: {refusal:?}"
                        )));
                    }
                }
            }
        };
        self.schedule(
            round_trip + Duration::from_millis(1),
            Event::Reply {
                epoch,
                id: request.id,
                reply,
            },
        );
        Ok(())
    }

    pub(super) fn reply(&mut self, id: RequestId, reply: Reply) -> Result<(), Violation> {
        let now = self.instant();
        let before = (self.engine.state(), self.engine.stats());
        let outcome = match reply {
            Reply::State(state) => {
                let outcome = self.engine.handle_state(now, id, state);
                if before.0.is_none() && outcome.is_ok() {
                    // A fresh client's first state: it owes nothing from before.
                    self.oracle.started_fresh(state);
                }
                outcome
            }
            Reply::Difference(difference) => {
                self.log(|| format!("difference for {id}: {}", describe_difference(&difference)));
                self.engine.handle_difference(now, id, difference)
            }
            Reply::Channel(difference) => {
                self.log(|| {
                    format!(
                        "channel difference for {id}: {:?}",
                        difference.kind_summary()
                    )
                });
                let channel_id = difference.channel_id;
                let outcome = self.engine.handle_channel_difference(now, id, difference);
                if outcome.is_ok() {
                    self.verified.insert(channel_id);
                }
                outcome
            }
            Reply::Failure(failure) => {
                self.log(|| format!("failure for {id}: {failure:?}"));
                self.engine.handle_failure(now, id, failure)
            }
            Reply::CorruptDifference(difference) => {
                self.report.corrupt_refused += 1;
                return match self.engine.handle_difference(now, id, difference) {
                    Err(_) if (self.engine.state(), self.engine.stats()) == before => Ok(()),
                    Err(_) => Err(self.violation("a refused difference changed the engine")),
                    Ok(()) => Err(self.violation("a corrupted difference was accepted")),
                };
            }
            Reply::CorruptChannel(difference) => {
                self.report.corrupt_refused += 1;
                return match self.engine.handle_channel_difference(now, id, difference) {
                    Err(_) if (self.engine.state(), self.engine.stats()) == before => Ok(()),
                    Err(_) => {
                        Err(self.violation("a refused channel difference changed the engine"))
                    }
                    Ok(()) => Err(self.violation("a corrupted channel difference was accepted")),
                };
            }
        };
        outcome.map_err(|error| {
            self.violation(format!("a correct reply to {id} was refused: {error}"))
        })
    }
}

/// A difference the engine must refuse: a regressed state or a negative number.
pub(super) fn corrupt_difference(
    rng: &mut Rng,
    client_pts: i32,
) -> Difference<TestUpdate, TestEntities> {
    let bad_update = TestUpdate {
        id: 0,
        sequence: Sequence::Common {
            pts: -3,
            pts_count: 1,
        },
    };
    if client_pts > 0 && rng.chance(0.5) {
        let state = State {
            pts: client_pts - 1,
            qts: 0,
            date: 0,
            seq: 0,
        };
        return Difference::Difference {
            updates: Vec::new(),
            entities: TestEntities::default(),
            state,
            slice: false,
        };
    }
    Difference::Difference {
        updates: vec![bad_update],
        entities: TestEntities::default(),
        state: State {
            pts: i32::MAX,
            qts: i32::MAX,
            date: 0,
            seq: i32::MAX,
        },
        slice: false,
    }
}

/// A channel difference the engine must refuse: the wrong channel, or a regressed pts when
/// the channel's position is `verified` (for a position the engine has not had confirmed, a
/// lower pts is the server's correction, which it must accept).
pub(super) fn corrupt_channel_difference(
    rng: &mut Rng,
    channel_id: ChannelId,
    pts: i32,
    verified: bool,
) -> ChannelDifference<TestUpdate, TestEntities> {
    use sync_core::ChannelDifferenceKind;
    if pts > 0 && rng.chance(0.5) && verified {
        let kind = ChannelDifferenceKind::Empty {
            pts: pts - 1,
            is_final: true,
            timeout: None,
        };
        return ChannelDifference { channel_id, kind };
    }
    let kind = ChannelDifferenceKind::Empty {
        pts,
        is_final: true,
        timeout: None,
    };
    ChannelDifference {
        channel_id: channel_id + 1_000_000,
        kind,
    }
}

pub(super) fn describe_difference(difference: &Difference<TestUpdate, TestEntities>) -> String {
    match difference {
        Difference::Empty { seq, .. } => format!("empty, seq {seq}"),
        Difference::Difference {
            updates,
            state,
            slice,
            ..
        } => {
            format!(
                "{} updates to {state:?}{}",
                updates.len(),
                if *slice { " (slice)" } else { "" }
            )
        }
        Difference::TooLong { pts } => format!("too long, pts {pts}"),
    }
}

pub(super) trait KindSummary {
    fn kind_summary(&self) -> String;
}

impl KindSummary for ChannelDifference<TestUpdate, TestEntities> {
    fn kind_summary(&self) -> String {
        use sync_core::ChannelDifferenceKind as K;
        match &self.kind {
            K::Empty { pts, .. } => format!("channel {} empty at {pts}", self.channel_id),
            K::Difference {
                updates,
                pts,
                is_final,
                ..
            } => {
                format!(
                    "channel {} {} updates to {pts}, final {is_final}",
                    self.channel_id,
                    updates.len()
                )
            }
            K::TooLong { pts, .. } => format!("channel {} too long, pts {pts}", self.channel_id),
        }
    }
}
