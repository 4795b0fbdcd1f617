//! Runs the sans-IO engine against the simulated server on a virtual clock, through a faulty
//! network, and asks the oracle whether the client got everything right.
//!
//! This file holds the builder ([`Scenario`]) and what a run returns ([`Report`],
//! [`Violation`]); `run.rs` is the run itself (the virtual timeline, pushes, deliveries,
//! acknowledgements, crashes, the quiet tail), and `requests.rs` answers the engine's
//! requests, with failures and corrupted replies.

use std::fmt;
use std::time::Duration;

use sync_core::{EngineConfig, Stats};

use crate::faults::Faults;
use crate::network::Traffic;
use crate::server::{Limits, Workload};

use self::run::Run;

mod requests;
mod run;

/// A failed run: what went wrong, the seed that replays it, and the last steps before it.
#[derive(Debug, Clone)]
pub struct Violation {
    /// Replays the run with the same builder settings.
    pub seed: u64,
    /// What the oracle or the driver saw.
    pub message: String,
    /// The last steps of the run, oldest first.
    pub trace: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed {}: {}", self.seed, self.message)?;
        writeln!(f, "last steps:")?;
        for step in &self.trace {
            writeln!(f, "  {step}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Violation {}

/// What a successful run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Events the server made.
    pub events: u64,
    /// Pushes the server made (before faults).
    pub pushes: u64,
    /// Updates the client delivered (repeats included).
    pub delivered: u64,
    /// Deliveries that repeated an event after a crash.
    pub repeats: u64,
    /// Crashes survived.
    pub crashes: u32,
    /// Corrupted replies refused.
    pub corrupt_refused: u64,
    /// What the network did to the pushes (losses, copies, too-long summaries, malformed
    /// updates, absurd and `updatePtsChanged` pushes).
    pub traffic: Traffic,
    /// Pushes sent with a malformed number (absurd or with a malformed update inside), which
    /// the engine refused.
    pub malformed_refused: u64,
    /// Latest messages of `channelDifferenceTooLong` answers delivered.
    pub latest_messages: u64,
    /// Requests the engine made once the network went quiet (every push arrived, no crash
    /// left, faults off) until it was idle.
    pub tail_requests: u64,
    /// The most requests the quiet tail was allowed: a few, plus one per channel, plus the
    /// slices of what the client had still to fetch, plus a retry per request then in flight.
    pub tail_bound: u64,
    /// The engine's counters, summed over its restarts.
    pub stats: Stats,
    /// Virtual time the run took.
    pub virtual_time: Duration,
    /// Driver steps.
    pub steps: u64,
}

/// A reproducible run: a workload, faults, limits and engine settings, from one seed.
///
/// ```
/// use sync_testkit::{Faults, Scenario};
///
/// let report = Scenario::new(7).events(300).channels(5).faults(Faults::moderate()).run().unwrap();
/// assert!(report.delivered > 0);
/// ```
#[derive(Debug, Clone)]
pub struct Scenario {
    seed: u64,
    events: u64,
    workload: Workload,
    limits: Limits,
    faults: Faults,
    config: EngineConfig,
    crashes: u32,
    ack_delay: Duration,
    push_interval: Duration,
    latency: Duration,
    max_steps: u64,
    fresh_start: bool,
}

impl Scenario {
    /// A run of 500 events over 8 channels on a perfect network.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            events: 500,
            workload: Workload::default(),
            limits: Limits::default(),
            faults: Faults::none(),
            config: EngineConfig::default(),
            crashes: 0,
            ack_delay: Duration::ZERO,
            push_interval: Duration::from_millis(20),
            latency: Duration::from_millis(40),
            max_steps: 0,
            fresh_start: false,
        }
    }

    /// How many events the server makes.
    pub fn events(mut self, events: u64) -> Self {
        self.events = events;
        self
    }

    /// How many channels the account has.
    pub fn channels(mut self, channels: usize) -> Self {
        self.workload.channels = channels;
        self
    }

    /// The event mix.
    pub fn workload(mut self, workload: Workload) -> Self {
        self.workload = workload;
        self
    }

    /// The server's answer limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The faults.
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// The engine's configuration.
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// How many times the client crashes (without a clean shutdown) and restarts from what it
    /// committed.
    pub fn crashes(mut self, crashes: u32) -> Self {
        self.crashes = crashes;
        self
    }

    /// How long the application takes to handle (acknowledge) a batch.
    pub fn ack_delay(mut self, delay: Duration) -> Self {
        self.ack_delay = delay;
        self
    }

    /// Virtual time between two pushes of the server.
    pub fn push_interval(mut self, interval: Duration) -> Self {
        self.push_interval = interval;
        self
    }

    /// A step budget; a run that needs more is reported as a livelock. 0 picks one from the
    /// workload size.
    pub fn max_steps(mut self, steps: u64) -> Self {
        self.max_steps = steps;
        self
    }

    /// Whether the client starts with no stored state (a first login): it asks `getState`,
    /// tracks no channel, and learns each channel from its events. Otherwise (the default) it
    /// resumes from the server's initial state with every channel stored.
    pub fn fresh_start(mut self, fresh: bool) -> Self {
        self.fresh_start = fresh;
        self
    }

    /// Runs the scenario and judges it.
    pub fn run(&self) -> Result<Report, Violation> {
        Run::new(self).go()
    }
}
