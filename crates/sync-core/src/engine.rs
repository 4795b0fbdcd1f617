//! The engine: sequences, gaps, buffers, deadlines, requests and commits of one account.

use std::collections::{BTreeSet, VecDeque};
use std::mem;
use std::time::Instant;

use std::collections::hash_map::Entry as MapEntry;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::buffer::{Buffer, Fit, fit};
use crate::config::Config;
use crate::error::Error;
use crate::output::{Batch, BatchId, Failure, Output, Request, RequestId, RequestKind, Stats};
use crate::state::{ChannelCommit, ChannelId, Commit, State};
use crate::update::{
    Affected, ChannelDifference, ChannelDifferenceKind, ChannelHash, Difference, Entities,
    Sequence, Update, Updates,
};

/// An update's place, checked and normalised: every numbered place is a range
/// `start..=end` (see [`crate::buffer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Unordered,
    Pts {
        start: i32,
        end: i32,
    },
    Qts {
        start: i32,
        end: i32,
    },
    Channel {
        channel_id: ChannelId,
        start: i32,
        end: i32,
    },
    ChannelTooLong {
        channel_id: ChannelId,
        pts: Option<i32>,
    },
    PtsChanged,
}

fn invalid(field: &'static str, value: i32) -> Error {
    Error::InvalidNumber {
        field,
        value: value.into(),
    }
}

fn check_channel(channel_id: ChannelId) -> Result<ChannelId, Error> {
    if channel_id > 0 {
        Ok(channel_id)
    } else {
        Err(Error::InvalidChannel(channel_id))
    }
}

fn check_non_negative(field: &'static str, value: i32) -> Result<i32, Error> {
    if value >= 0 {
        Ok(value)
    } else {
        Err(invalid(field, value))
    }
}

/// The range a `pts` + `pts_count` occupies, or `None` for pts 0 (no position).
#[inline(always)]
fn pts_range(pts: i32, pts_count: i32) -> Result<Option<(i32, i32)>, Error> {
    check_non_negative("pts", pts)?;
    check_non_negative("pts_count", pts_count)?;
    if pts == 0 {
        return Ok(None);
    }
    if pts_count > pts {
        return Err(invalid("pts_count", pts_count));
    }
    Ok(Some((pts - pts_count, pts)))
}

/// Checks an update's numbers. Zero pts / qts mean "no position": such updates are unordered
/// and never move or reset the state.
#[inline(always)]
fn classify(sequence: Sequence) -> Result<Place, Error> {
    Ok(match sequence {
        Sequence::Unordered => Place::Unordered,
        Sequence::Common { pts, pts_count } => match pts_range(pts, pts_count)? {
            Some((start, end)) => Place::Pts { start, end },
            None => Place::Unordered,
        },
        Sequence::Qts { qts } => match check_non_negative("qts", qts)? {
            0 => Place::Unordered,
            qts => Place::Qts {
                start: qts - 1,
                end: qts,
            },
        },
        Sequence::Channel {
            channel_id,
            pts,
            pts_count,
        } => {
            let channel_id = check_channel(channel_id)?;
            match pts_range(pts, pts_count)? {
                Some((start, end)) => Place::Channel {
                    channel_id,
                    start,
                    end,
                },
                None => Place::Unordered,
            }
        }
        Sequence::ChannelTooLong { channel_id, pts } => {
            let channel_id = check_channel(channel_id)?;
            let pts = match pts {
                Some(pts) => Some(check_non_negative("pts", pts)?).filter(|&pts| pts > 0),
                None => None,
            };
            Place::ChannelTooLong { channel_id, pts }
        }
        Sequence::PtsChanged => Place::PtsChanged,
    })
}

/// What waits in a buffer.
#[derive(Debug)]
enum Entry<U> {
    /// A numbered update.
    Update(U),
    /// The pts range of one of the application's own calls: advances without a delivery.
    Affected,
    /// A `seq` container's unordered updates (its numbered ones wait in their own sequences).
    Container { updates: Vec<U>, date: i32 },
}

impl<U> Entry<U> {
    fn update_count(&self) -> u64 {
        match self {
            Entry::Update(_) => 1,
            Entry::Affected => 0,
            Entry::Container { updates, .. } => updates.len() as u64,
        }
    }
}

/// The three sequences of the common box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Pts,
    Qts,
    Seq,
}

const SLOTS: [Slot; 3] = [Slot::Pts, Slot::Qts, Slot::Seq];

/// Where a box's difference fetch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FetchState {
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
struct Fetcher {
    state: FetchState,
    /// When the open gap stops waiting for pushes and the difference is fetched.
    gap_deadline: Option<Instant>,
    /// When an open channel is polled next.
    poll_at: Option<Instant>,
    /// The instant this box is registered under in the engine's timer set.
    scheduled: Option<Instant>,
    attempts: u32,
    /// Updates were dropped while a request was in flight: fetch again once it is answered.
    refetch: bool,
    /// A gap is open (counted in the stats once, when it opened).
    gap_open: bool,
    /// The engine's arrival count when the last request was sent: what was buffered before
    /// it, and lies beyond the final answer, never existed (see [`Buffer::discard_beyond`]).
    asked_at: u64,
}

impl Fetcher {
    const fn new() -> Self {
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

    fn in_flight(&self) -> bool {
        matches!(self.state, FetchState::InFlight(_))
    }

    /// The next instant at which this box needs [`Engine::handle_timeout`].
    fn deadline(&self) -> Option<Instant> {
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

#[derive(Debug)]
struct CommonBox<U> {
    pts: Buffer<Entry<U>>,
    qts: Buffer<Entry<U>>,
    seq: Buffer<Entry<U>>,
    fetch: Fetcher,
    rebase: Rebase,
    /// The arrival count at the last `updatePtsChanged`: entries buffered before it are under
    /// the old numbers.
    rebase_mark: u64,
}

/// Where a re-base after `updatePtsChanged` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rebase {
    /// None under way.
    No,
    /// Fetching what is pending under the old numbers (`getDifference`), until a final answer.
    Pending,
    /// Asking `getState` for the new numbers.
    State,
}

impl<U> CommonBox<U> {
    fn buffer(&mut self, slot: Slot) -> &mut Buffer<Entry<U>> {
        match slot {
            Slot::Pts => &mut self.pts,
            Slot::Qts => &mut self.qts,
            Slot::Seq => &mut self.seq,
        }
    }

    fn is_empty(&self) -> bool {
        self.pts.is_empty() && self.qts.is_empty() && self.seq.is_empty()
    }
}

/// The sparse part of a channel's state: only channels with a gap, a fetch or a poll have one.
/// A tracked channel otherwise costs one map entry (its id and pts).
#[derive(Debug)]
struct ChannelBox<U> {
    buffer: Buffer<Entry<U>>,
    fetch: Fetcher,
}

impl<U> ChannelBox<U> {
    fn new() -> Self {
        Self {
            buffer: Buffer::default(),
            fetch: Fetcher::new(),
        }
    }
}

/// What a request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestFor {
    State,
    Difference,
    Channel(ChannelId),
}

impl RequestFor {
    fn describe(self) -> &'static str {
        match self {
            RequestFor::State => "getState",
            RequestFor::Difference => "getDifference",
            RequestFor::Channel(_) => "getChannelDifference",
        }
    }
}

/// Timer keys. A key is in the timer set at most once, under its box's `scheduled` instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Idle,
    Common,
    Channel(ChannelId),
}

/// What changed since the last sealed batch; turned into a [`Commit`] when sealed.
#[derive(Debug, Default)]
struct Change {
    state: bool,
    state_reset: bool,
    /// Channels whose pts moved, with their reset flag; may repeat an id.
    channels: Vec<(ChannelId, bool)>,
    removed: Vec<ChannelId>,
}

impl Change {
    fn is_empty(&self) -> bool {
        !self.state && self.channels.is_empty() && self.removed.is_empty()
    }

    #[inline(always)]
    fn channel(&mut self, channel_id: ChannelId, reset: bool) {
        // Runs of one channel's updates are common: skip the repeat cheaply here, and
        // deduplicate the rest when the batch is sealed.
        if !reset
            && self
                .channels
                .last()
                .is_some_and(|&(last, _)| last == channel_id)
        {
            return;
        }
        self.channels.push((channel_id, reset));
    }
}

/// A sealed change waiting for its batch to be acknowledged.
#[derive(Debug)]
struct PendingCommit {
    batch: Option<BatchId>,
    acked: bool,
    commit: Commit,
}

/// Folds `later` into `earlier`: removals first, then positions, later values winning.
fn merge_commit(earlier: &mut Commit, later: Commit) {
    if later.state.is_some() {
        earlier.state = later.state;
    }
    earlier.state_reset |= later.state_reset;
    if !later.removed_channels.is_empty() {
        earlier
            .channels
            .retain(|c| !later.removed_channels.contains(&c.channel_id));
        earlier.removed_channels.extend(later.removed_channels);
    }
    earlier.channels.extend(later.channels);
    dedup_channels(&mut earlier.channels, true);
}

/// Keeps one entry per channel: the last one, with every reset flag of the run folded in.
/// `stable` keeps later entries after earlier ones of the same channel (needed when they may
/// differ); without it the sort never allocates.
fn dedup_channels(channels: &mut Vec<ChannelCommit>, stable: bool) {
    if channels.len() < 2 {
        return;
    }
    if stable {
        channels.sort_by_key(|c| c.channel_id);
    } else {
        channels.sort_unstable_by_key(|c| c.channel_id);
    }
    channels.dedup_by(|later, earlier| {
        if later.channel_id != earlier.channel_id {
            return false;
        }
        earlier.pts = later.pts;
        earlier.reset |= later.reset;
        true
    });
}

/// The sans-IO update engine of one account. See the [crate docs](crate) for the model.
#[derive(Debug)]
pub struct Engine<U, E = ()> {
    config: Config,
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
    pub fn new(config: Config, now: Instant) -> Self {
        let mut engine = Self::empty(config, now, State::default(), false);
        engine.start_common_fetch();
        engine
    }

    /// An engine resuming from stored state: its first output is a `getDifference` request
    /// (Telegram's startup rule); stored channels are caught up when the server says so
    /// (`updateChannelTooLong`), on a gap, or at once with [`Config::catch_up_channels`].
    pub fn from_state(
        config: Config,
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

    fn empty(config: Config, now: Instant, state: State, has_state: bool) -> Self {
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

    // ----------------------------------------------------------------------------------------
    // Queries

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
    pub fn config(&self) -> &Config {
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

    // ----------------------------------------------------------------------------------------
    // Outputs

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

    // ----------------------------------------------------------------------------------------
    // Inputs

    /// A pushed `Updates` value. Numbers are checked before anything is applied.
    ///
    /// A push with a malformed number is refused whole (an error; nothing of it is applied or
    /// delivered), but it is not forgotten: the engine fetches the difference of every
    /// sequence it names (the common box, and each channel it names), so its good updates
    /// come back that way. A channel the engine did not track yet is tracked from where its
    /// good update starts; one whose own numbers are bad is reported with
    /// [`Output::ChannelTooLong`] and `pts: None`.
    pub fn handle_updates(&mut self, now: Instant, updates: Updates<U, E>) -> Result<(), Error> {
        match self.check_updates(&updates) {
            Ok(place) => {
                self.apply_updates(now, updates, place);
                Ok(())
            }
            Err(error) => {
                self.recover(now, &updates);
                Err(error)
            }
        }
    }

    /// Checks a push's numbers: returns a short update's place, and leaves a container's
    /// places in `scratch`.
    #[inline(always)]
    fn check_updates(&mut self, updates: &Updates<U, E>) -> Result<Place, Error> {
        match updates {
            Updates::TooLong => Ok(Place::Unordered),
            Updates::Short { update, .. } => classify(update.sequence()),
            Updates::Combined {
                updates,
                seq_start,
                seq,
                ..
            } => {
                check_non_negative("seq", *seq)?;
                if *seq != 0 && !(1..=*seq).contains(seq_start) {
                    return Err(invalid("seq_start", *seq_start));
                }
                let places = &mut self.scratch;
                places.clear();
                for update in updates {
                    places.push(classify(update.sequence())?);
                }
                Ok(Place::Unordered)
            }
        }
    }

    /// A refused push: fetch the difference of every sequence it names.
    fn recover(&mut self, now: Instant, updates: &Updates<U, E>) {
        self.stats.pushes_refused += 1;
        self.last_activity = now;
        let named: &[U] = match updates {
            Updates::TooLong => &[],
            Updates::Short { update, .. } => std::slice::from_ref(update),
            Updates::Combined { updates, .. } => updates,
        };
        let mut channels: Vec<(ChannelId, Option<i32>)> = named
            .iter()
            .filter_map(|update| match update.sequence() {
                Sequence::Channel {
                    channel_id,
                    pts,
                    pts_count,
                } => Some((channel_id, pts_range(pts, pts_count).ok().flatten())),
                Sequence::ChannelTooLong { channel_id, .. } => Some((channel_id, None)),
                _ => None,
            })
            .map(|(channel_id, range)| (channel_id, range.map(|(start, _)| start)))
            .filter(|&(channel_id, _)| channel_id > 0)
            .collect();
        channels.sort_unstable();
        channels.dedup_by_key(|&mut (channel_id, _)| channel_id);
        self.start_common_fetch();
        for (channel_id, start) in channels {
            self.recover_channel(channel_id, start);
        }
    }

    /// A refused update named this channel: fetch its difference from where it stands, or,
    /// if it was not tracked, from `start` (where the refused update starts, when its own
    /// numbers are good). A channel nobody knows the position of is reported.
    fn recover_channel(&mut self, channel_id: ChannelId, start: Option<i32>) {
        match (self.channels.entry(channel_id), start) {
            (MapEntry::Occupied(_), _) => {}
            (MapEntry::Vacant(vacant), Some(start)) => {
                // What the server has from where the update starts includes it.
                vacant.insert(start);
                self.open_change.channel(channel_id, false);
            }
            (MapEntry::Vacant(_), None) => {
                self.notify(Output::ChannelTooLong {
                    channel_id,
                    pts: None,
                });
                return;
            }
        }
        self.start_channel_fetch(channel_id);
    }

    /// Applies a push checked by [`check_updates`](Self::check_updates), with the place it
    /// returned.
    #[inline(always)]
    fn apply_updates(&mut self, now: Instant, updates: Updates<U, E>, short: Place) {
        match updates {
            Updates::TooLong => {
                self.last_activity = now;
                self.stats.too_long += 1;
                self.start_common_fetch();
            }
            Updates::Short { update, date } => {
                self.last_activity = now;
                let waiting = self.route(now, short, update, None);
                if !waiting {
                    self.advance_date(date);
                }
            }
            Updates::Combined {
                updates,
                entities,
                date,
                seq_start,
                seq,
            } => {
                let places = mem::take(&mut self.scratch);
                self.last_activity = now;
                self.learn(entities);
                // Updates inside a container are checked against their own sequences first;
                // the container's seq then orders only its unordered updates.
                let mut unordered = (seq != 0).then(Vec::new);
                let mut waiting = false;
                for (update, &place) in updates.into_iter().zip(&places) {
                    waiting |= self.route(now, place, update, unordered.as_mut());
                }
                self.scratch = places;
                match unordered {
                    None if !waiting => self.advance_date(date),
                    None => {}
                    Some(updates) => {
                        let entry = Entry::Container { updates, date };
                        self.offer_common(now, Slot::Seq, seq_start - 1, seq, entry);
                    }
                }
            }
        }
    }

    /// The pts an application's own call returned (`messages.affectedMessages`,
    /// `affectedHistory`, …): it advances the sequence like an update without a delivery, and
    /// may close a gap.
    ///
    /// Malformed numbers are refused (an error) and lead to a difference of the sequence
    /// named, as for a refused push.
    pub fn handle_affected(&mut self, now: Instant, affected: Affected) -> Result<(), Error> {
        let result = self.take_affected(now, affected);
        if result.is_err() {
            self.stats.pushes_refused += 1;
            match affected {
                Affected::Common { .. } => self.start_common_fetch(),
                Affected::Channel { channel_id, .. } if channel_id > 0 => {
                    self.recover_channel(channel_id, None);
                }
                Affected::Channel { .. } => {}
            }
        }
        result
    }

    fn take_affected(&mut self, now: Instant, affected: Affected) -> Result<(), Error> {
        match affected {
            Affected::Common { pts, pts_count } => {
                if let Some((start, end)) = pts_range(pts, pts_count)? {
                    self.offer_common(now, Slot::Pts, start, end, Entry::Affected);
                }
            }
            Affected::Channel {
                channel_id,
                pts,
                pts_count,
            } => {
                let channel_id = check_channel(channel_id)?;
                if let Some((start, end)) = pts_range(pts, pts_count)? {
                    self.offer_channel(now, channel_id, start, end, Entry::Affected);
                }
            }
        }
        Ok(())
    }

    /// The answer to a `getState` request: on a fresh start, or re-basing after
    /// `updatePtsChanged` ([`Sequence::PtsChanged`]). On a fresh start the state is taken as
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
                            self.route(now, place, update, None);
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
                self.notify(Output::DifferenceTooLong { pts });
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
        if pts < local {
            return Err(Error::Regression {
                sequence: "channel pts",
                local,
                received: pts,
            });
        }

        self.requests.remove(&id);
        self.channel_requests_in_flight = self.channel_requests_in_flight.saturating_sub(1);
        let reset = matches!(difference.kind, ChannelDifferenceKind::TooLong { .. });
        if let Some(channel) = self.channel_boxes.get_mut(&channel_id) {
            channel.fetch.attempts = 0;
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
                            self.route(now, place, update, None);
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
        if pts != local || reset || !self.channels.contains_key(&channel_id) {
            self.channels.insert(channel_id, pts);
            self.open_change.channel(channel_id, reset);
        }
        if reset {
            self.notify(Output::ChannelTooLong {
                channel_id,
                pts: Some(pts),
            });
        }
        if let Some((updates, entities)) = latest {
            // The channel's latest messages, after the notice that history was skipped: they
            // are outside the sequence and delivered as they are.
            self.learn(entities);
            for update in updates {
                self.deliver(update);
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
                self.notify(Output::ChannelClosed { channel_id });
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

    /// The application handled a delivered batch: commits up to it may now be emitted.
    pub fn ack(&mut self, batch: BatchId) -> Result<(), Error> {
        let pending = self
            .unacked
            .iter_mut()
            .find(|p| p.batch == Some(batch) && !p.acked)
            .ok_or(Error::UnknownBatch(batch))?;
        pending.acked = true;
        self.flush_commits();
        Ok(())
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
    /// [`Output::ChannelTooLong`] with no pts). For a channel tracked already, a higher `pts`
    /// means news: its difference is fetched (the pts is never jumped to, nor rewound).
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
    /// `timeout` hint (or [`Config::open_channel_poll`]) until closed.
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

    // ----------------------------------------------------------------------------------------
    // Routing

    /// Sends one checked update to its sequence. Unordered updates are delivered, or kept for
    /// their container's `seq` when `container` is given. Returns true when the update waits
    /// (buffered behind a gap or an in-flight request).
    #[inline(always)]
    fn route(
        &mut self,
        now: Instant,
        place: Place,
        update: U,
        container: Option<&mut Vec<U>>,
    ) -> bool {
        match place {
            Place::Unordered => {
                match container {
                    Some(updates) => updates.push(update),
                    None => self.deliver(update),
                }
                false
            }
            Place::Pts { start, end } => {
                self.offer_common(now, Slot::Pts, start, end, Entry::Update(update))
            }
            Place::Qts { start, end } => {
                self.offer_common(now, Slot::Qts, start, end, Entry::Update(update))
            }
            Place::Channel {
                channel_id,
                start,
                end,
            } => self.offer_channel(now, channel_id, start, end, Entry::Update(update)),
            Place::ChannelTooLong { channel_id, pts } => {
                self.channel_too_long(channel_id, pts);
                false
            }
            Place::PtsChanged => {
                self.rebase();
                false
            }
        }
    }

    /// Stamps an entry about to be buffered with its arrival.
    #[inline]
    fn arrival(&mut self) -> u64 {
        let arrival = self.arrivals;
        self.arrivals += 1;
        arrival
    }

    /// `updatePtsChanged`: fetch what is pending under the old numbers, then re-base on
    /// `getState`. Before the first state there is nothing to re-base: the pending `getState`
    /// answers with the new numbers.
    fn rebase(&mut self) {
        if !self.has_state {
            return;
        }
        self.stats.rebases += 1;
        if self.common.rebase != Rebase::State {
            self.common.rebase = Rebase::Pending;
            self.common.rebase_mark = self.arrivals;
        }
        self.start_common_fetch();
    }

    /// Pushes to the common box wait: there is no state yet, a request is in flight, or a
    /// re-base is under way (what arrives after `updatePtsChanged` is under the new numbers,
    /// which only `getState` tells).
    #[inline]
    fn common_held(&self) -> bool {
        !self.has_state || self.common.fetch.in_flight() || self.common.rebase != Rebase::No
    }

    /// Offers a numbered entry to a common sequence. Returns true when it waits.
    ///
    /// Invariant (nothing after a gap is delivered early): an entry is applied only when its
    /// range starts exactly at the local value, and held back whenever a request is in flight
    /// for the box, because the reply may carry it too.
    #[inline(always)]
    fn offer_common(
        &mut self,
        now: Instant,
        slot: Slot,
        start: i32,
        end: i32,
        entry: Entry<U>,
    ) -> bool {
        if self.common_held() {
            return self.buffer_common(now, slot, start, end, entry);
        }
        match fit(start, self.local(slot)) {
            Fit::Next => {
                self.apply_common(slot, end, entry);
                // The in-order path: with nothing buffered and no gap open there is nothing
                // to drain and no deadline to move.
                if self.common.fetch.gap_open || !self.common.buffer(slot).is_empty() {
                    self.drain_slot(slot);
                    self.settle_common(now);
                }
                false
            }
            Fit::Old => {
                self.stats.duplicates_dropped += entry.update_count();
                false
            }
            Fit::Gap => self.buffer_common(now, slot, start, end, entry),
        }
    }

    fn buffer_common(
        &mut self,
        now: Instant,
        slot: Slot,
        start: i32,
        end: i32,
        entry: Entry<U>,
    ) -> bool {
        let over_cap = self.common.buffer(slot).len() >= self.config.max_buffered_per_sequence
            || self.buffered_total >= self.config.max_buffered_total;
        if over_cap {
            // Invariant (bounded memory): past a cap, stop buffering; the difference brings
            // back everything dropped here.
            self.stats.buffer_overflows += 1;
            let dropped = self.common.buffer(slot).clear();
            self.buffered_total -= dropped;
            if !mem::replace(&mut self.common.fetch.gap_open, true) {
                self.stats.gaps_detected += 1;
            }
            if self.common_held() {
                self.common.fetch.refetch = true;
            } else {
                self.start_common_fetch();
            }
            return true;
        }
        let arrival = self.arrival();
        if !self.common.buffer(slot).insert(start, end, arrival, entry) {
            self.stats.duplicates_dropped += 1;
            return true;
        }
        self.buffered_total += 1;
        self.settle_common(now);
        true
    }

    #[inline]
    fn local(&self, slot: Slot) -> i32 {
        match slot {
            Slot::Pts => self.state.pts,
            Slot::Qts => self.state.qts,
            Slot::Seq => self.state.seq,
        }
    }

    #[inline(always)]
    fn apply_common(&mut self, slot: Slot, end: i32, entry: Entry<U>) {
        match slot {
            Slot::Pts => self.state.pts = end,
            Slot::Qts => self.state.qts = end,
            Slot::Seq => self.state.seq = end,
        }
        self.open_change.state = true;
        match entry {
            Entry::Update(update) => self.deliver(update),
            Entry::Affected => {}
            Entry::Container { updates, date } => {
                for update in updates {
                    self.deliver(update);
                }
                self.advance_date(date);
            }
        }
    }

    /// Applies whatever the buffer of `slot` holds that has become contiguous.
    fn drain_slot(&mut self, slot: Slot) {
        loop {
            let local = self.local(slot);
            let Some((kind, pending)) = self.common.buffer(slot).pop_ready(local) else {
                break;
            };
            self.buffered_total -= 1;
            match kind {
                Fit::Next => self.apply_common(slot, pending.end, pending.item),
                _ => self.stats.duplicates_dropped += pending.item.update_count(),
            }
        }
    }

    fn drain_common(&mut self) {
        for slot in SLOTS {
            self.drain_slot(slot);
        }
    }

    /// Brings the common box's gap bookkeeping up to date after its buffers changed.
    fn settle_common(&mut self, now: Instant) {
        let empty = self.common.is_empty();
        let idle = self.common.fetch.state == FetchState::Idle && self.has_state;
        settle(
            &mut self.common.fetch,
            &mut self.stats,
            empty,
            idle,
            now,
            self.config.gap_timeout,
        );
        self.reschedule_common();
    }

    #[inline(always)]
    fn offer_channel(
        &mut self,
        now: Instant,
        channel_id: ChannelId,
        start: i32,
        end: i32,
        entry: Entry<U>,
    ) -> bool {
        // Most channels have no box (nothing buffered, nothing fetched): skip the lookup then.
        let channel_box = if self.channel_boxes.is_empty() {
            None
        } else {
            self.channel_boxes.get(&channel_id)
        };
        let (boxed, held) = match channel_box {
            Some(channel) => (true, channel.fetch.in_flight()),
            None => (false, false),
        };
        let Some(local) = self.channels.get_mut(&channel_id) else {
            // First seen: nothing is known about earlier history, so the update starts the
            // channel's sequence.
            self.channels.insert(channel_id, end);
            self.open_change.channel(channel_id, false);
            self.apply_entry(entry);
            return false;
        };
        if held {
            return self.buffer_channel(now, channel_id, start, end, entry);
        }
        match fit(start, *local) {
            Fit::Next => {
                *local = end;
                self.open_change.channel(channel_id, false);
                self.apply_entry(entry);
                if boxed {
                    self.drain_channel(channel_id);
                    self.settle_channel(now, channel_id);
                }
                false
            }
            Fit::Old => {
                self.stats.duplicates_dropped += entry.update_count();
                false
            }
            Fit::Gap => self.buffer_channel(now, channel_id, start, end, entry),
        }
    }

    fn buffer_channel(
        &mut self,
        now: Instant,
        channel_id: ChannelId,
        start: i32,
        end: i32,
        entry: Entry<U>,
    ) -> bool {
        let total_full = self.buffered_total >= self.config.max_buffered_total;
        let per_sequence = self.config.max_buffered_per_sequence;
        let arrival = self.arrival();
        let channel = self
            .channel_boxes
            .entry(channel_id)
            .or_insert_with(ChannelBox::new);
        if total_full || channel.buffer.len() >= per_sequence {
            // Invariant (bounded memory), as for the common box.
            self.stats.buffer_overflows += 1;
            self.buffered_total -= channel.buffer.clear();
            if !mem::replace(&mut channel.fetch.gap_open, true) {
                self.stats.gaps_detected += 1;
            }
            if channel.fetch.in_flight() {
                channel.fetch.refetch = true;
            } else {
                self.start_channel_fetch(channel_id);
            }
            return true;
        }
        if !channel.buffer.insert(start, end, arrival, entry) {
            self.stats.duplicates_dropped += 1;
            return true;
        }
        self.buffered_total += 1;
        self.settle_channel(now, channel_id);
        true
    }

    fn apply_channel(&mut self, channel_id: ChannelId, end: i32, entry: Entry<U>) {
        self.channels.insert(channel_id, end);
        self.open_change.channel(channel_id, false);
        self.apply_entry(entry);
    }

    #[inline(always)]
    fn apply_entry(&mut self, entry: Entry<U>) {
        match entry {
            Entry::Update(update) => self.deliver(update),
            Entry::Affected => {}
            Entry::Container { updates, .. } => {
                for update in updates {
                    self.deliver(update);
                }
            }
        }
    }

    fn drain_channel(&mut self, channel_id: ChannelId) {
        loop {
            let Some(&local) = self.channels.get(&channel_id) else {
                return;
            };
            let Some(channel) = self.channel_boxes.get_mut(&channel_id) else {
                return;
            };
            let Some((kind, pending)) = channel.buffer.pop_ready(local) else {
                return;
            };
            self.buffered_total -= 1;
            match kind {
                Fit::Next => self.apply_channel(channel_id, pending.end, pending.item),
                _ => self.stats.duplicates_dropped += pending.item.update_count(),
            }
        }
    }

    fn settle_channel(&mut self, now: Instant, channel_id: ChannelId) {
        if let Some(channel) = self.channel_boxes.get_mut(&channel_id) {
            let empty = channel.buffer.is_empty();
            let idle = channel.fetch.state == FetchState::Idle;
            settle(
                &mut channel.fetch,
                &mut self.stats,
                empty,
                idle,
                now,
                self.config.gap_timeout,
            );
        }
        self.reschedule_channel(channel_id);
        self.release_channel(channel_id);
    }

    /// `updateChannelTooLong`: fetch the channel's difference. Never rewinds a known pts.
    fn channel_too_long(&mut self, channel_id: ChannelId, pts: Option<i32>) {
        match (self.channels.get(&channel_id).copied(), pts) {
            (Some(local), Some(pts)) if pts <= local => {} // nothing newer than what we have
            (Some(_), _) => {
                self.stats.too_long += 1;
                self.start_channel_fetch(channel_id);
            }
            (None, Some(pts)) => {
                self.stats.too_long += 1;
                self.channels.insert(channel_id, pts);
                self.open_change.channel(channel_id, true);
                self.notify(Output::ChannelTooLong {
                    channel_id,
                    pts: Some(pts),
                });
            }
            (None, None) => self.notify(Output::ChannelTooLong {
                channel_id,
                pts: None,
            }),
        }
    }

    // ----------------------------------------------------------------------------------------
    // Fetching

    /// Starts (or queues behind the in-flight one) a fetch of the common box.
    fn start_common_fetch(&mut self) {
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
    fn finish_common(&mut self, now: Instant) {
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

    /// Counts buffered entries discarded without delivery.
    fn discarded(&mut self, entries: Vec<Entry<U>>) {
        self.buffered_total -= entries.len();
        self.stats.updates_discarded += entries.iter().map(Entry::update_count).sum::<u64>();
    }

    /// A final answer named the common box's `state`: what was buffered before it was asked
    /// and lies beyond it never existed.
    ///
    /// Invariant (liveness): without this, one push with a far-future number would reopen
    /// the gap after every difference, and the engine would ask forever.
    fn discard_beyond_common(&mut self, named: State) {
        let asked_at = self.common.fetch.asked_at;
        for (slot, value) in [
            (Slot::Pts, named.pts),
            (Slot::Qts, named.qts),
            (Slot::Seq, named.seq),
        ] {
            let discarded = self.common.buffer(slot).discard_beyond(value, asked_at);
            self.discarded(discarded);
        }
    }

    /// Starts a channel fetch, or queues it when too many are in flight.
    fn start_channel_fetch(&mut self, channel_id: ChannelId) {
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

    fn send_channel_request(&mut self, channel_id: ChannelId) {
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

    fn finish_channel(&mut self, now: Instant, channel_id: ChannelId, timeout: Option<i32>) {
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

    fn pump_channel_queue(&mut self) {
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

    fn channel_request(&self, channel_id: ChannelId) -> Option<RequestId> {
        match self.channel_boxes.get(&channel_id)?.fetch.state {
            FetchState::InFlight(id) => Some(id),
            _ => None,
        }
    }

    /// Drops everything about a channel and asks storage to forget it.
    fn forget(&mut self, channel_id: ChannelId) {
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

    fn send(&mut self, kind: RequestKind, target: RequestFor) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.requests.insert(id, target);
        self.outputs
            .push_back(Output::Request(Request { id, kind }));
        id
    }

    fn expect_request(&self, id: RequestId, expected: RequestFor) -> Result<(), Error> {
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
    fn check_difference(&self, difference: &Difference<U, E>) -> Result<(), Error> {
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

    // ----------------------------------------------------------------------------------------
    // Timers

    fn reschedule_common(&mut self) {
        let wanted = self.common.fetch.deadline();
        let scheduled = &mut self.common.fetch.scheduled;
        reschedule(&mut self.timers, scheduled, wanted, Timer::Common);
    }

    fn reschedule_channel(&mut self, channel_id: ChannelId) {
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
    fn release_channel(&mut self, channel_id: ChannelId) {
        let idle = self.channel_boxes.get(&channel_id).is_some_and(|c| {
            c.buffer.is_empty()
                && c.fetch.state == FetchState::Idle
                && c.fetch.scheduled.is_none()
                && !c.fetch.gap_open
                && !c.fetch.refetch
        });
        if idle && !self.open_channels.contains(&channel_id) {
            self.channel_boxes.remove(&channel_id);
        }
    }

    /// Registers the idle timer from the last activity. Pushes only move `last_activity`; the
    /// timer is moved when it fires, which keeps the hot path free of timer-set updates.
    fn arm_idle(&mut self) {
        let wanted = Some(self.last_activity + self.config.idle_timeout);
        reschedule(
            &mut self.timers,
            &mut self.idle_scheduled,
            wanted,
            Timer::Idle,
        );
    }

    // ----------------------------------------------------------------------------------------
    // Deliveries and commits

    #[inline(always)]
    fn deliver(&mut self, update: U) {
        self.stats.updates_delivered += 1;
        self.open_updates.push(update);
    }

    #[inline]
    fn advance_date(&mut self, date: i32) {
        if date > self.state.date && self.has_state {
            self.state.date = date;
            self.open_change.state = true;
        }
    }

    fn learn(&mut self, entities: E) {
        let reported = &mut self.reported_hashes;
        let hashes: Vec<ChannelHash> = entities
            .channel_hashes()
            .filter(|h| {
                !h.min && reported.insert(h.channel_id, h.access_hash) != Some(h.access_hash)
            })
            .collect();
        if !hashes.is_empty() {
            self.outputs.push_back(Output::AccessHashes(hashes));
        }
        if !entities.is_empty() {
            self.open_entities.push(entities);
        }
    }

    /// Pushes a notification after sealing what was delivered before it, so the application
    /// sees them in order.
    fn notify(&mut self, output: Output<U, E>) {
        self.seal();
        self.outputs.push_back(output);
    }

    /// Closes the open batch: emits its deliveries, and queues its change behind them.
    ///
    /// Invariant (commits trail acknowledgements): a change is committed only once every batch
    /// delivered up to it has been acknowledged, so storage never runs ahead of the application.
    #[inline]
    fn seal(&mut self) {
        // Checked here, inlined into every poll: most polls find nothing open.
        let has_delivery = !self.open_updates.is_empty() || !self.open_entities.is_empty();
        if has_delivery || !self.open_change.is_empty() {
            self.seal_open(has_delivery);
        }
    }

    fn seal_open(&mut self, has_delivery: bool) {
        // The change's channel list keeps its capacity from batch to batch.
        let change = &mut self.open_change;
        let (state, state_reset) = (
            mem::take(&mut change.state),
            mem::take(&mut change.state_reset),
        );
        let removed_channels = mem::take(&mut change.removed);
        let mut channels: Vec<ChannelCommit> = Vec::new();
        if !change.channels.is_empty() {
            let tracked = &self.channels;
            channels.extend(change.channels.drain(..).filter_map(|(channel_id, reset)| {
                let pts = *tracked.get(&channel_id)?;
                Some(ChannelCommit {
                    channel_id,
                    pts,
                    reset,
                })
            }));
        }
        // All entries of one channel carry its current pts: order among them does not matter.
        dedup_channels(&mut channels, false);
        let commit = Commit {
            state: state.then_some(self.state),
            state_reset,
            channels,
            removed_channels,
        };
        let batch = has_delivery.then(|| {
            let id = BatchId(self.next_batch);
            self.next_batch += 1;
            self.stats.batches_delivered += 1;
            self.outputs.push_back(Output::Deliver(Batch {
                id,
                updates: mem::take(&mut self.open_updates),
                entities: mem::take(&mut self.open_entities),
            }));
            id
        });
        self.unacked.push_back(PendingCommit {
            batch,
            acked: batch.is_none(),
            commit,
        });
        self.flush_commits();
    }

    /// Emits one commit for the acknowledged prefix of sealed changes.
    fn flush_commits(&mut self) {
        if !self.unacked.front().is_some_and(|p| p.acked) {
            return;
        }
        let Some(PendingCommit { mut commit, .. }) = self.unacked.pop_front() else {
            return;
        };
        while self.unacked.front().is_some_and(|p| p.acked) {
            if let Some(pending) = self.unacked.pop_front() {
                merge_commit(&mut commit, pending.commit);
            }
        }
        if !commit.is_empty() {
            self.outputs.push_back(Output::Commit(commit));
        }
    }
}

/// Moves `key` in the timer set from `scheduled` to `wanted`.
fn reschedule(
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

/// Gap bookkeeping shared by the common box and channels: a box whose buffers hold something
/// while no fetch is pending has a gap, which waits `gap_timeout` from when it opened.
///
/// Invariant (liveness): the deadline is set when the gap opens and is not pushed back by later
/// arrivals, so a steady stream of early updates cannot postpone the difference forever.
fn settle(
    fetch: &mut Fetcher,
    stats: &mut Stats,
    empty: bool,
    idle: bool,
    now: Instant,
    gap_timeout: std::time::Duration,
) {
    if empty {
        fetch.gap_deadline = None;
        if idle && fetch.gap_open {
            fetch.gap_open = false;
            stats.gaps_filled_by_wait += 1;
        }
    } else if idle {
        if fetch.gap_deadline.is_none() {
            fetch.gap_deadline = Some(now + gap_timeout);
        }
        if !fetch.gap_open {
            fetch.gap_open = true;
            stats.gaps_detected += 1;
        }
    }
}

fn check_state(state: &State) -> Result<(), Error> {
    check_non_negative("pts", state.pts)?;
    check_non_negative("qts", state.qts)?;
    check_non_negative("seq", state.seq)?;
    Ok(())
}
