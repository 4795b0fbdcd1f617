//! The leanest update an application could have, and a bare engine of it that is past its
//! startup: for measuring the engine itself (the benches, the memory budgets).

use std::time::Instant;

use sync_core::{Difference, Engine, EngineConfig, Output, Sequence, State, Update};

/// An update that is just its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lean(pub Sequence);

impl Update for Lean {
    fn sequence(&self) -> Sequence {
        self.0
    }
}

/// The state a [`ready_engine`] starts from: every common number at 1, date 0.
pub const START: State = State {
    pts: 1,
    qts: 1,
    date: 0,
    seq: 1,
};

/// An engine at [`START`] with the default config, tracking `channels` channels (ids
/// `1..=channels`) at pts 1, that has had its startup difference answered (empty) and every
/// output taken: the next push is the first thing it handles. Returns it with the instant it
/// was made at.
///
/// # Panics
///
/// If the engine refuses the stored state or asks for something other than the startup
/// difference.
#[must_use]
pub fn ready_engine(channels: i64) -> (Engine<Lean>, Instant) {
    let now = Instant::now();
    let mut engine = Engine::from_state(
        EngineConfig::default(),
        now,
        START,
        (1..=channels).map(|id| (id, 1)),
    )
    .expect("a valid stored state");
    let Some(Output::Request(request)) = engine.poll_output() else {
        panic!("a restored engine first asks for the difference")
    };
    engine
        .handle_difference(now, request.id, Difference::Empty { date: 0, seq: 1 })
        .expect("the startup difference is accepted");
    while engine.poll_output().is_some() {}
    (engine, now)
}

/// Does what a driver does after each input: takes every output and acknowledges (and
/// recycles) each delivered batch. Returns how many updates were delivered.
///
/// # Panics
///
/// If the engine refuses the acknowledgement of a batch it just delivered.
pub fn drain(engine: &mut Engine<Lean>) -> usize {
    let mut delivered = 0;
    while let Some(output) = engine.poll_output() {
        if let Output::Deliver(batch) = output {
            delivered += batch.updates.len();
            engine.ack(batch.id).expect("a batch just delivered");
            engine.recycle(batch.updates);
        }
    }
    delivered
}
