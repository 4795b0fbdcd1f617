//! A small scripted driver for the engine's tests: a fake clock, and a record of everything
//! the engine asked for.
// Tests are the driver: they own the clock and hand `now` to the engine.
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::disallowed_methods,
    clippy::unwrap_used
)]

use std::time::{Duration, Instant};

use sync_core::{
    ChannelDifference, ChannelDifferenceKind, ChannelHash, Commit, Difference, Engine,
    EngineConfig, Entities, Failure, Output, Request, RequestId, RequestKind, Sequence, State,
    Update, Updates,
};

/// A lean update type covering every sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Up {
    Pts(i32, i32),
    Qts(i32),
    Chan(i64, i32, i32),
    Plain(u32),
    ChanTooLong(i64, Option<i32>),
    PtsChanged,
}

impl Update for Up {
    fn sequence(&self) -> Sequence {
        match *self {
            Up::Pts(pts, pts_count) => Sequence::Common { pts, pts_count },
            Up::Qts(qts) => Sequence::Qts { qts },
            Up::Chan(channel_id, pts, pts_count) => Sequence::Channel {
                channel_id,
                pts,
                pts_count,
            },
            Up::Plain(_) => Sequence::Unordered,
            Up::ChanTooLong(channel_id, pts) => Sequence::ChannelTooLong { channel_id, pts },
            Up::PtsChanged => Sequence::PtsChanged,
        }
    }
}

/// Entities that carry channel hashes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ents(pub Vec<ChannelHash>);

impl Entities for Ents {
    fn channel_hashes(&self) -> impl Iterator<Item = ChannelHash> + '_ {
        self.0.iter().copied()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

pub fn pts(pts: i32) -> Up {
    Up::Pts(pts, 1)
}

pub struct Harness {
    pub engine: Engine<Up, Ents>,
    pub start: Instant,
    pub now: Instant,
    pub delivered: Vec<Up>,
    pub requests: Vec<Request>,
    pub commits: Vec<Commit>,
    pub notes: Vec<Output<Up, Ents>>,
    pub unacked: Vec<sync_core::BatchId>,
    pub auto_ack: bool,
}

pub const STATE: State = State {
    pts: 100,
    qts: 50,
    date: 1_000,
    seq: 10,
};

impl Harness {
    /// An engine resumed from `STATE` whose startup getDifference was answered empty.
    pub fn ready() -> Self {
        Self::ready_with(EngineConfig::default(), [])
    }

    pub fn ready_with(
        config: EngineConfig,
        channels: impl IntoIterator<Item = (i64, i32)>,
    ) -> Self {
        let mut h = Self::resumed(config, channels);
        let request = h.take_request();
        assert!(matches!(
            request.kind,
            RequestKind::GetDifference {
                pts: 100,
                qts: 50,
                ..
            }
        ));
        h.engine
            .handle_difference(
                h.now,
                request.id,
                sync_core::Difference::Empty {
                    date: STATE.date,
                    seq: STATE.seq,
                },
            )
            .unwrap();
        h.pump();
        h.commits.clear();
        h
    }

    pub fn resumed(config: EngineConfig, channels: impl IntoIterator<Item = (i64, i32)>) -> Self {
        let now = Instant::now();
        let engine = Engine::from_state(config, now, STATE, channels).unwrap();
        Self::wrap(engine, now)
    }

    pub fn wrap(engine: Engine<Up, Ents>, now: Instant) -> Self {
        let mut h = Harness {
            engine,
            start: now,
            now,
            delivered: Vec::new(),
            requests: Vec::new(),
            commits: Vec::new(),
            notes: Vec::new(),
            unacked: Vec::new(),
            auto_ack: true,
        };
        h.pump();
        h
    }

    pub fn pump(&mut self) {
        while let Some(output) = self.engine.poll_output() {
            match output {
                Output::Deliver(batch) => {
                    self.delivered.extend(batch.updates);
                    if self.auto_ack {
                        self.engine.ack(batch.id).unwrap();
                    } else {
                        self.unacked.push(batch.id);
                    }
                }
                Output::Request(request) => self.requests.push(request),
                Output::Commit(commit) => self.commits.push(commit),
                other => self.notes.push(other),
            }
        }
    }

    /// The request `id` failed with a plain retry (no flood wait); takes the outputs.
    pub fn fail_retry(&mut self, id: RequestId) {
        self.engine
            .handle_failure(self.now, id, Failure::Retry { after: None })
            .unwrap();
        self.pump();
    }

    pub fn push(&mut self, update: Up) {
        self.engine
            .handle_updates(self.now, sync_core::Updates::Short { update, date: 0 })
            .unwrap();
        self.pump();
    }

    pub fn push_all(&mut self, updates: impl IntoIterator<Item = Up>) {
        for update in updates {
            self.push(update);
        }
    }

    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        self.engine.handle_timeout(self.now);
        self.pump();
    }

    /// Advances the clock to the engine's next deadline and fires it.
    pub fn fire_next(&mut self) {
        let at = self.engine.poll_timeout().expect("a deadline");
        assert!(at >= self.now);
        self.now = at;
        self.engine.handle_timeout(self.now);
        self.pump();
    }

    pub fn take_request(&mut self) -> Request {
        assert!(!self.requests.is_empty(), "expected a request");
        self.requests.remove(0)
    }

    pub fn take_delivered(&mut self) -> Vec<Up> {
        std::mem::take(&mut self.delivered)
    }

    pub fn last_commit_state(&self) -> Option<State> {
        self.commits.iter().rev().find_map(|c| c.state)
    }
}

/// How long the engine waits for a gap to fill before it asks for the difference.
pub const GAP: Duration = Duration::from_millis(500);

pub fn difference(updates: Vec<Up>, state: State) -> Difference<Up, Ents> {
    Difference::Difference {
        updates,
        entities: Ents::default(),
        state,
        slice: false,
    }
}

pub fn channel_difference(
    channel_id: i64,
    updates: Vec<Up>,
    pts: i32,
    is_final: bool,
) -> ChannelDifference<Up, Ents> {
    ChannelDifference {
        channel_id,
        kind: ChannelDifferenceKind::Difference {
            updates,
            entities: Ents::default(),
            pts,
            is_final,
            timeout: None,
        },
    }
}

pub fn combined(updates: Vec<Up>, seq_start: i32, seq: i32) -> Updates<Up, Ents> {
    Updates::Combined {
        updates,
        entities: Ents::default(),
        date: 2_000,
        seq_start,
        seq,
    }
}

/// An empty, final channel difference that tells the engine to poll again after `timeout`.
pub fn empty_channel_difference(
    channel_id: i64,
    pts: i32,
    timeout: Option<i32>,
) -> ChannelDifference<Up, Ents> {
    ChannelDifference {
        channel_id,
        kind: ChannelDifferenceKind::Empty {
            pts,
            is_final: true,
            timeout,
        },
    }
}
