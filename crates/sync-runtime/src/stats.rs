//! The runtime's counters, and the snapshot that combines them with the engine's.

use std::sync::atomic::{AtomicU64, Ordering};

use sync_storage::AccountId;

/// What the runtime did around the engine, from [`ManagerHandle::stats`](crate::ManagerHandle::stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RuntimeStats {
    /// Pushes accepted by [`ManagerHandle::push`](crate::ManagerHandle::push).
    pub pushes_accepted: u64,
    /// Pushes dropped because the intake was full, or taken off the intake and dropped because
    /// the dispatch was backed up (recovered by a difference either way).
    pub pushes_dropped: u64,
    /// Pushes the engine refused as malformed (a difference is fetched instead).
    pub pushes_refused: u64,
    /// Differences requested because pushes had been dropped at intake (or while the dispatch
    /// was backed up).
    pub intake_recoveries: u64,
    /// Calls made to the [`Api`](crate::Api).
    pub requests_sent: u64,
    /// Calls that failed transiently and were retried with backoff.
    pub requests_retried: u64,
    /// Calls answered with FLOOD_WAIT.
    pub flood_waits: u64,
    /// Channel calls that found the channel inaccessible.
    pub channels_closed: u64,
    /// Replies the engine refused as malformed (retried).
    pub replies_refused: u64,
    /// Commits written to storage.
    pub commits_written: u64,
    /// Storage writes retried after an unavailable or ambiguous outcome.
    pub commit_retries: u64,
    /// Commits storage rejected as stale (skipped: storage already holds a newer position).
    pub commits_stale: u64,
    /// Commits that failed for good (corrupt data, configuration) or were abandoned at
    /// shutdown.
    pub commits_failed: u64,
    /// Access hashes written to storage.
    pub access_hashes_written: u64,
    /// Updates handed to the dispatch (accepted by its shards, to be handled in turn).
    pub updates_dispatched: u64,
    /// Batches whose updates were all handled and acknowledged to the engine.
    pub batches_acknowledged: u64,
    /// Handler calls that returned an error.
    pub handler_errors: u64,
    /// Handler calls that panicked.
    pub handler_panics: u64,
}

/// A snapshot of a manager: the engine's counters and the runtime's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// The engine's counters and gauges.
    pub engine: sync_core::Stats,
    /// The runtime's counters.
    pub runtime: RuntimeStats,
    /// True when the engine waits for nothing and every delivered batch was handed to the
    /// dispatch, handled and acknowledged.
    pub idle: bool,
}

/// One counter: an atomic, mirrored to `metrics` when that feature is on.
#[derive(Debug)]
pub(crate) struct Counter {
    value: AtomicU64,
    #[cfg(feature = "metrics")]
    metric: metrics::Counter,
}

impl Counter {
    fn new(_account: AccountId, _name: &'static str) -> Self {
        Self {
            value: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            metric: metrics::counter!(_name, "account" => _account.to_string()),
        }
    }

    pub(crate) fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.metric.increment(n);
    }

    pub(crate) fn incr(&self) {
        self.add(1);
    }

    fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

macro_rules! counters {
    ($($field:ident => $metric:literal,)*) => {
        /// The live counters, shared by the manager's loop, its writer, the dispatch observers
        /// and the handles.
        #[derive(Debug)]
        pub(crate) struct Counters {
            $(pub(crate) $field: Counter,)*
        }

        impl Counters {
            pub(crate) fn new(account: AccountId) -> Self {
                Self { $($field: Counter::new(account, $metric),)* }
            }

            pub(crate) fn snapshot(&self) -> RuntimeStats {
                RuntimeStats { $($field: self.$field.get(),)* }
            }
        }
    };
}

counters! {
    pushes_accepted => "sync_runtime_pushes_accepted_total",
    pushes_dropped => "sync_runtime_pushes_dropped_total",
    pushes_refused => "sync_runtime_pushes_refused_total",
    intake_recoveries => "sync_runtime_intake_recoveries_total",
    requests_sent => "sync_runtime_requests_total",
    requests_retried => "sync_runtime_requests_retried_total",
    flood_waits => "sync_runtime_flood_waits_total",
    channels_closed => "sync_runtime_channels_closed_total",
    replies_refused => "sync_runtime_replies_refused_total",
    commits_written => "sync_runtime_commits_written_total",
    commit_retries => "sync_runtime_commit_retries_total",
    commits_stale => "sync_runtime_commits_stale_total",
    commits_failed => "sync_runtime_commits_failed_total",
    access_hashes_written => "sync_runtime_access_hashes_written_total",
    updates_dispatched => "sync_runtime_updates_dispatched_total",
    batches_acknowledged => "sync_runtime_batches_acknowledged_total",
    handler_errors => "sync_runtime_handler_errors_total",
    handler_panics => "sync_runtime_handler_panics_total",
}

/// The engine's gauges mirrored to `metrics`, registered once per run.
#[cfg(feature = "metrics")]
pub(crate) struct Gauges {
    buffered: metrics::Gauge,
    channels: metrics::Gauge,
    unacknowledged: metrics::Gauge,
}

#[cfg(feature = "metrics")]
impl Gauges {
    pub(crate) fn new(account: AccountId) -> Self {
        let account = account.to_string();
        Self {
            buffered: metrics::gauge!("sync_runtime_buffered_updates", "account" => account.clone()),
            channels: metrics::gauge!("sync_runtime_channels_tracked", "account" => account.clone()),
            unacknowledged: metrics::gauge!("sync_runtime_unacknowledged_batches", "account" => account),
        }
    }

    pub(crate) fn set(&self, engine: &sync_core::Stats) {
        self.buffered.set(engine.buffered_now as f64);
        self.channels.set(engine.channels_tracked as f64);
        self.unacknowledged
            .set(engine.unacknowledged_batches as f64);
    }
}
