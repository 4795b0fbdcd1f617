//! The engine: sequences, gaps, buffers, deadlines, requests and commits of one account.
//!
//! [`Engine`] and its constructors, queries and outputs live here; the rest is split by the
//! engine's own sections, each an `impl Engine` of its own:
//!
//! | file | what |
//! | --- | --- |
//! | `intake.rs` | pushes in: checking numbers, classifying, routing to a sequence, refusals and their recovery, `updatePtsChanged` |
//! | `boxes.rs` | the common box (pts, qts, seq) and channel boxes: buffers, applying, draining, gap bookkeeping |
//! | `fetch.rs` | requests out and replies in: getState, getDifference, getChannelDifference, failures, the channel queue |
//! | `timers.rs` | deadlines: gap waits, retries, open-channel polls, the idle rule |
//! | `commit.rs` | deliveries, sealing batches, acknowledgements and the commits that trail them |

use std::collections::{BTreeSet, VecDeque};
use std::time::Instant;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::buffer::Buffer;
use crate::config::EngineConfig;
use crate::error::Error;
use crate::output::{Output, RequestId, Stats};
use crate::state::{ChannelId, State};
use crate::update::{Entities, Update};

use self::boxes::{ChannelBox, CommonBox, Rebase};
use self::commit::{Change, PendingCommit};
use self::fetch::{FetchState, Fetcher, RequestFor};
use self::intake::{Place, check_channel, check_non_negative};
use self::timers::Timer;

mod boxes;
mod commit;
mod fetch;
mod intake;
mod timers;

/// The sans-IO update engine of one account. See the [crate docs](crate) for the model.
#[derive(Debug)]
pub struct Engine<U, E = ()> {
    config: EngineConfig,
    /// The applied state: what has been delivered (not necessarily acknowledged).
    state: State,
    /// False until the first `getState` is answered on a fresh start.
    has_state: bool,
    common: CommonBox<U>,
    /// Every tracked channel and its applied pts.
    channels: FxHashMap<ChannelId, i32>,
    channel_boxes: FxHashMap<ChannelId, ChannelBox<U>>,
    open_channels: FxHashSet<ChannelId>,
    channel_queue: VecDeque<ChannelId>,
    channel_requests_in_flight: usize,
    requests: FxHashMap<RequestId, RequestFor>,
    next_request: u64,
    /// Every pending deadline, at most once per key.
    timers: BTreeSet<(Instant, Timer)>,
    /// When a push last arrived; the idle timer is re-armed from it lazily.
    last_activity: Instant,
    idle_scheduled: Option<Instant>,
    outputs: VecDeque<Output<U, E>>,
    /// Deliveries and changes since the last sealed batch.
    open_updates: Vec<U>,
    open_entities: Vec<E>,
    open_change: Change,
    /// Sealed changes in delivery order, waiting for acknowledgement.
    unacked: VecDeque<PendingCommit>,
    next_batch: u64,
    buffered_total: usize,
    /// Updates buffered so far, ever: stamps each buffered entry with its arrival.
    arrivals: u64,
    /// Reused for classifying a container's updates without allocating.
    scratch: Vec<Place>,
    /// The last access hash reported per channel: pushes mention the same channels over and
    /// over, and only a new or changed hash is reported again. One entry per channel whose
    /// hash was learned (forgetting a channel drops its entry).
    reported_hashes: FxHashMap<ChannelId, i64>,
    stats: Stats,
}

impl<U: Update, E: Entities> Engine<U, E> {
    /// An engine for an account with no stored state: its first output is a `getState`
    /// request. Pushes that arrive before the answer are held back and reconciled with it.
    pub fn new(config: EngineConfig, now: Instant) -> Self {
        let mut engine = Self::empty(config, now, State::default(), false);
        engine.start_common_fetch();
        engine
    }

    /// An engine resuming from stored state: its first output is a `getDifference` request
    /// (Telegram's startup rule); stored channels are caught up when the server says so
    /// (`updateChannelTooLong`), on a gap, or at once with [`EngineConfig::catch_up_channels`].
    pub fn from_state(
        config: EngineConfig,
        now: Instant,
        state: State,
        channels: impl IntoIterator<Item = (ChannelId, i32)>,
    ) -> Result<Self, Error> {
        check_state(&state)?;
        let mut tracked = FxHashMap::default();
        for (channel_id, pts) in channels {
            tracked.insert(
                check_channel(channel_id)?,
                check_non_negative("channel pts", pts)?,
            );
        }
        let catch_up = config.catch_up_channels;
        let mut engine = Self::empty(config, now, state, true);
        engine.channels = tracked;
        engine.arm_idle();
        engine.start_common_fetch();
        if catch_up {
            let mut ids: Vec<ChannelId> = engine.channels.keys().copied().collect();
            ids.sort_unstable(); // deterministic order
            for channel_id in ids {
                engine.start_channel_fetch(channel_id);
            }
        }
        Ok(engine)
    }

    fn empty(config: EngineConfig, now: Instant, state: State, has_state: bool) -> Self {
        Self {
            config,
            state,
            has_state,
            common: CommonBox {
                pts: Buffer::default(),
                qts: Buffer::default(),
                seq: Buffer::default(),
                fetch: Fetcher::new(),
                rebase: Rebase::No,
                rebase_mark: 0,
            },
            channels: FxHashMap::default(),
            channel_boxes: FxHashMap::default(),
            open_channels: FxHashSet::default(),
            channel_queue: VecDeque::new(),
            channel_requests_in_flight: 0,
            requests: FxHashMap::default(),
            next_request: 0,
            timers: BTreeSet::new(),
            last_activity: now,
            idle_scheduled: None,
            outputs: VecDeque::new(),
            open_updates: Vec::new(),
            open_entities: Vec::new(),
            open_change: Change::default(),
            unacked: VecDeque::new(),
            next_batch: 0,
            buffered_total: 0,
            arrivals: 0,
            scratch: Vec::new(),
            reported_hashes: FxHashMap::default(),
            stats: Stats::default(),
        }
    }

    /// The applied common state (delivered, not necessarily acknowledged), or `None` before the
    /// first `getState` is answered.
    pub fn state(&self) -> Option<State> {
        self.has_state.then_some(self.state)
    }

    /// A tracked channel's applied pts.
    pub fn channel_pts(&self, channel_id: ChannelId) -> Option<i32> {
        self.channels.get(&channel_id).copied()
    }

    /// True when the engine waits for nothing: no request in flight or planned, no update
    /// buffered. A driver can use it to tell when the account is caught up.
    pub fn is_idle(&self) -> bool {
        self.requests.is_empty()
            && self.buffered_total == 0
            && self.common.fetch.state == FetchState::Idle
            && self.channel_queue.is_empty()
            && self
                .channel_boxes
                .values()
                .all(|c| c.fetch.state == FetchState::Idle)
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// A snapshot of the counters and gauges.
    pub fn stats(&self) -> Stats {
        Stats {
            buffered_now: self.buffered_total,
            channels_tracked: self.channels.len(),
            unacknowledged_batches: self
                .unacked
                .iter()
                .filter(|p| p.batch.is_some() && !p.acked)
                .count(),
            ..self.stats
        }
    }

    /// The next thing to do, or `None` when there is nothing. Call it until it returns `None`
    /// after every input; deliveries are gathered into one batch until then.
    pub fn poll_output(&mut self) -> Option<Output<U, E>> {
        if self.outputs.is_empty() {
            self.seal();
        }
        self.outputs.pop_front()
    }

    /// Hands back a delivered batch's vector once its updates have been taken out, so the next
    /// batch reuses its memory instead of allocating: with it, the in-order path allocates
    /// nothing per update. Optional.
    pub fn recycle(&mut self, mut updates: Vec<U>) {
        if self.open_updates.capacity() < updates.capacity() && self.open_updates.is_empty() {
            updates.clear();
            self.open_updates = updates;
        }
    }

    /// When to call [`Engine::handle_timeout`] next, if ever. Call it after draining
    /// [`Engine::poll_output`]; an earlier call of `handle_timeout` is harmless.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|&(at, _)| at)
    }

    /// Fetch the common difference now: the session was lost (`new_session_created`), an
    /// update could not be decoded, or a pushed update mentions peers the application cannot
    /// resolve.
    pub fn request_difference(&mut self, now: Instant) {
        self.last_activity = now;
        self.start_common_fetch();
    }

    /// Fetch a tracked channel's difference now (e.g. its update mentioned unknown peers).
    pub fn request_channel_difference(&mut self, channel_id: ChannelId) -> Result<(), Error> {
        if !self.channels.contains_key(&channel_id) {
            return Err(Error::UnknownChannel(channel_id));
        }
        self.start_channel_fetch(channel_id);
        Ok(())
    }

    /// Start tracking a channel from `pts` (learned from the dialogs, or after
    /// [`Notice::ChannelTooLong`](crate::Notice::ChannelTooLong) with no pts). For a channel tracked already, a higher `pts`
    /// means news: its difference is fetched (the pts is never jumped to, nor rewound). For a
    /// channel first seen in a push whose difference is still being asked, the server's
    /// answer decides where it stands.
    pub fn track_channel(&mut self, channel_id: ChannelId, pts: i32) -> Result<(), Error> {
        let channel_id = check_channel(channel_id)?;
        check_non_negative("channel pts", pts)?;
        match self.channels.get(&channel_id) {
            None => {
                self.channels.insert(channel_id, pts);
                self.open_change.channel(channel_id, false);
            }
            Some(&local) if pts > local => self.start_channel_fetch(channel_id),
            Some(_) => {}
        }
        Ok(())
    }

    /// Stop tracking a channel (the user left it): its buffered updates are dropped and storage
    /// is asked to forget it. A reply to its in-flight request will be refused.
    pub fn forget_channel(&mut self, channel_id: ChannelId) {
        if let Some(id) = self.channel_request(channel_id) {
            self.requests.remove(&id);
            self.channel_requests_in_flight = self.channel_requests_in_flight.saturating_sub(1);
        }
        self.forget(channel_id);
        self.reported_hashes.remove(&channel_id);
        self.pump_channel_queue();
    }

    /// The application shows this channel: it is caught up now and then polled on the server's
    /// `timeout` hint (or [`EngineConfig::open_channel_poll`]) until closed.
    pub fn open_channel(&mut self, channel_id: ChannelId) -> Result<(), Error> {
        if !self.channels.contains_key(&channel_id) {
            return Err(Error::UnknownChannel(channel_id));
        }
        if !self.open_channels.contains(&channel_id) {
            if self.open_channels.len() >= self.config.max_open_channels {
                return Err(Error::TooManyOpenChannels {
                    limit: self.config.max_open_channels,
                });
            }
            self.open_channels.insert(channel_id);
        }
        self.start_channel_fetch(channel_id);
        Ok(())
    }

    /// The application no longer shows this channel: polling stops (pushes still apply).
    pub fn close_channel(&mut self, channel_id: ChannelId) {
        if self.open_channels.remove(&channel_id) {
            if let Some(channel) = self.channel_boxes.get_mut(&channel_id) {
                channel.fetch.poll_at = None;
            }
            self.reschedule_channel(channel_id);
            self.release_channel(channel_id);
        }
    }
}

fn check_state(state: &State) -> Result<(), Error> {
    check_non_negative("pts", state.pts)?;
    check_non_negative("qts", state.qts)?;
    check_non_negative("seq", state.seq)?;
    Ok(())
}
