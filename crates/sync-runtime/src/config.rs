//! Tunables of the manager.

use std::time::Duration;

/// How a [`Manager`](crate::Manager) behaves. [`ManagerConfig::default`] suits a user account;
/// `ManagerConfig { engine: sync_core::EngineConfig::bot(), ..ManagerConfig::default() }` a bot.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagerConfig {
    /// The engine's settings (gap timeout, limits, buffer caps, concurrent channel requests),
    /// and the retry policy of failed calls: the manager waits
    /// [`retry_base`](sync_core::EngineConfig::retry_base) after a first failure, doubled per
    /// further attempt up to [`retry_max`](sync_core::EngineConfig::retry_max), each delay jittered
    /// down to between half and all of it at random (FLOOD_WAIT waits what the server asks,
    /// plus `flood_wait_jitter`).
    pub engine: sync_core::EngineConfig,
    /// How many pushes [`ManagerHandle::push`](crate::ManagerHandle::push) and
    /// [`ManagerHandle::push_batch`](crate::ManagerHandle::push_batch) queue before they
    /// drop the newest (they are recovered by a difference). A batch counts its pushes and is
    /// taken or dropped whole; one larger than this is taken only into an empty intake.
    /// Default 4,096.
    pub intake_capacity: usize,
    /// Dispatch shards: how many peers are handled at the same time. Default 8. Unused by a
    /// manager on a [`DispatchPool`](crate::DispatchPool), whose own shards and capacity apply
    /// (the same holds for `shard_capacity`).
    pub shards: usize,
    /// Updates queued per shard. The manager never waits for a full shard: what does not fit
    /// waits in the manager's backlog, in order, and is handed over as the handlers make room.
    /// While the backlog holds more than `shards × shard_capacity` events (a handler is slow
    /// or blocked), the manager holds its requests back and takes no more pushes: they wait in
    /// the intake, where a reader watching [`ManagerHandle::queued`](crate::ManagerHandle::queued)
    /// sees them and can hold back. Should the intake fill meanwhile, the manager empties it,
    /// dropping those pushes (counted in
    /// [`RuntimeStats::pushes_dropped`](crate::RuntimeStats::pushes_dropped)), so that whoever
    /// waits for room gets it; once the backlog is back within its bound it fetches the
    /// difference, which recovers them. Memory stays bounded either way. Default 1,024.
    pub shard_capacity: usize,
    /// Extra random delay added to a FLOOD_WAIT, up to this much, so that many accounts do not
    /// retry at the same instant. Default 1 s.
    pub flood_wait_jitter: Duration,
    /// First retry delay of a failed storage write (doubled per attempt up to
    /// `storage_retry_max`, then jittered like the retries of failed calls). Default 50 ms.
    pub storage_retry_base: Duration,
    /// Longest retry delay of a failed storage write. Default 5 s.
    pub storage_retry_max: Duration,
    /// At shutdown, how long the handlers get to finish the updates already dispatched (and
    /// the backlog) before the manager stops them (aborting their tasks, however far they
    /// got; on a [`DispatchPool`](crate::DispatchPool), dropping this manager's handler futures
    /// at their next poll and skipping its queued events, while the pool and the other managers
    /// go on). What they did not finish is not acknowledged, so it is not persisted and the next
    /// start delivers it again; [`Summary::abandoned`](crate::Summary::abandoned) counts it.
    /// Default 30 s.
    pub shutdown_grace: Duration,
    /// At shutdown, how long the final commits may take to reach storage before the manager
    /// gives up on them (they are safe to lose: the next start fetches the difference from the
    /// older stored state). Default 10 s.
    pub shutdown_timeout: Duration,
    /// Seed of the retry jitter; `None` picks one at random. Set it to make simulated runs
    /// repeatable.
    pub jitter_seed: Option<u64>,
    /// At start from stored state, fetch what happened while the client was away (`true`,
    /// the default: `getDifference` from the stored state, as Telegram asks), or skip it
    /// (`false`: a bot that only answers what comes next). Skipping starts with `getState`,
    /// as a first run does: nothing from before the start is delivered, the server's state is
    /// committed as a reset, and the stored channels are kept at their stored pts (tracked,
    /// not caught up; they catch up when the server says so or on a gap). grammers calls this
    /// `catch_up`.
    pub catch_up: bool,
    /// What to do when the stored state cannot be used: storage reports it corrupt
    /// ([`sync_storage::Error::Corrupt`]) or it holds invalid numbers (a negative pts, a bad
    /// channel id). Default [`BadStatePolicy::Stop`]. Other load failures are not about the
    /// state: an unavailable storage is retried, a configuration error stops the manager.
    pub on_bad_state: BadStatePolicy,
    /// How the manager's series are labelled in the `metrics` facade (feature `metrics`;
    /// without it nothing is exported and this is ignored). Default: no `account` label, so
    /// the managers of a process add into the same series, and share one set of metric
    /// handles.
    pub metrics: MetricsConfig,
}

/// The labels of a manager's series in the `metrics` facade (see
/// [`ManagerConfig::metrics`] and `docs/METRICS.md` for the series).
///
/// The default suits a process of any size: every series is labelled only by what
/// [`labels`](Self::labels) adds (nothing by default), so 100,000 managers add into the same
/// few dozen series, and the managers share one set of metric handles, registered once (per
/// recorder and label set) with the recorder that is current when the first of them is built
/// (install the recorder before building managers). [`per_account`](Self::per_account) labels
/// every series with the account as well: one set of series and of handles per manager, for a
/// process that runs a handful of accounts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct MetricsConfig {
    /// Label every series with `account` (the account id in decimal). Off by default: the
    /// number of series grows with the number of accounts.
    pub per_account: bool,
    /// Labels added to every series, as `(key, value)` pairs: a deployment, a pool of
    /// accounts, a process. Managers with the same labels share their series.
    pub labels: Vec<(String, String)>,
}

impl MetricsConfig {
    /// Every series labelled with the account (one set of series per manager).
    pub fn per_account() -> Self {
        Self {
            per_account: true,
            labels: Vec::new(),
        }
    }
}

/// What a [`Manager`](crate::Manager) does with stored state it cannot use (see
/// [`ManagerConfig::on_bad_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BadStatePolicy {
    /// [`Manager::run`](crate::Manager::run) returns
    /// [`RunError::Storage`](crate::RunError::Storage) (corrupt) or
    /// [`RunError::InvalidState`](crate::RunError::InvalidState) (invalid numbers) before
    /// anything is fetched, and storage is left as it is for an operator to look at.
    #[default]
    Stop,
    /// Throw the stored state away and start as on a first run: the manager logs a warning,
    /// deletes the account's update state ([`StateStorage::delete`](sync_storage::StateStorage::delete);
    /// access hashes are kept), tells the handler
    /// ([`Handler::state_discarded`](crate::Handler::state_discarded)), and starts with
    /// `getState`, whose state is committed as a reset. What happened while the client was
    /// away is not delivered, and no channel is tracked until the application tracks them
    /// again ([`ManagerHandle::track_channel`](crate::ManagerHandle::track_channel)).
    StartFresh,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            engine: sync_core::EngineConfig::default(),
            intake_capacity: 4_096,
            shards: 8,
            shard_capacity: 1_024,
            flood_wait_jitter: Duration::from_secs(1),
            storage_retry_base: Duration::from_millis(50),
            storage_retry_max: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
            jitter_seed: None,
            catch_up: true,
            on_bad_state: BadStatePolicy::Stop,
            metrics: MetricsConfig::default(),
        }
    }
}
