//! The runtime's counters, the snapshot that combines them with the engine's, and the
//! measuring points of the `metrics` facade (see `facade.rs`; without the `metrics` feature
//! they are empty and cost nothing).

#[cfg(feature = "metrics")]
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sync_core::RequestKind;
use sync_storage::AccountId;

use crate::config::MetricsConfig;
use crate::dispatch::BoxFuture;

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
    /// Storage writes of commits that succeeded. The writer folds the engine's commits queued
    /// together into one write, so this is at most
    /// [`engine_commits_persisted`](Self::engine_commits_persisted).
    pub commits_written: u64,
    /// The engine's commits persisted by those writes (several folded into one write count
    /// once each here).
    pub engine_commits_persisted: u64,
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
        /// and the handles, and (feature `metrics`) the manager's metric handles.
        #[derive(Debug)]
        pub(crate) struct Counters {
            $(pub(crate) $field: Counter,)*
            #[cfg(feature = "metrics")]
            metrics: Arc<crate::facade::Metrics>,
        }

        impl Counters {
            /// The counters of `account`'s manager, exported as `config` says.
            pub(crate) fn new(_account: AccountId, _config: &MetricsConfig) -> Self {
                #[cfg(feature = "metrics")]
                let metrics = crate::facade::Metrics::get(_account, _config);
                Self {
                    $($field: Counter {
                        value: AtomicU64::new(0),
                        #[cfg(feature = "metrics")]
                        metric: metrics.runtime.$field.clone(),
                    },)*
                    #[cfg(feature = "metrics")]
                    metrics,
                }
            }

            pub(crate) fn snapshot(&self) -> RuntimeStats {
                RuntimeStats { $($field: self.$field.get(),)* }
            }
        }

        /// The runtime's counters in the `metrics` facade.
        #[cfg(feature = "metrics")]
        #[derive(Debug)]
        pub(crate) struct RuntimeMetrics {
            $(pub(crate) $field: metrics::Counter,)*
        }

        #[cfg(feature = "metrics")]
        impl RuntimeMetrics {
            pub(crate) fn register(labels: &[metrics::Label]) -> Self {
                Self { $($field: metrics::counter!($metric, labels.to_vec()),)* }
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
    engine_commits_persisted => "sync_runtime_engine_commits_persisted_total",
    commit_retries => "sync_runtime_commit_retries_total",
    commits_stale => "sync_runtime_commits_stale_total",
    commits_failed => "sync_runtime_commits_failed_total",
    access_hashes_written => "sync_runtime_access_hashes_written_total",
    updates_dispatched => "sync_runtime_updates_dispatched_total",
    batches_acknowledged => "sync_runtime_batches_acknowledged_total",
    handler_errors => "sync_runtime_handler_errors_total",
    handler_panics => "sync_runtime_handler_panics_total",
}

impl Counters {
    /// One storage write of a commit ended (after its retries), started at `timer`: counted
    /// when `written`, with the `commits` engine commits folded into it, and timed either way.
    pub(crate) fn commit_ended(&self, _timer: Timer, written: bool, commits: u64) {
        if written {
            self.commits_written.incr();
            self.engine_commits_persisted.add(commits);
        }
        #[cfg(feature = "metrics")]
        self.metrics.commit.record(_timer.elapsed());
    }

    /// One handler call (an update or a notice), started at `timer`, returned.
    pub(crate) fn handled(&self, _timer: Timer) {
        #[cfg(feature = "metrics")]
        self.metrics.handler.record(_timer.elapsed());
    }

    /// The timer of a request about to be sent: differences are timed from now to their
    /// reply (see [`RequestTimer::time`]); `getState` is not.
    pub(crate) fn request_timer(&self, _kind: &RequestKind) -> RequestTimer {
        RequestTimer {
            #[cfg(feature = "metrics")]
            timed: match _kind {
                RequestKind::GetState => None,
                RequestKind::GetDifference { .. } => {
                    Some((Timer::start(), self.metrics.difference.clone()))
                }
                RequestKind::GetChannelDifference { .. } => {
                    Some((Timer::start(), self.metrics.channel_difference.clone()))
                }
            },
        }
    }

    /// The engine's counters and gauges, mirrored to `metrics` as they change.
    pub(crate) fn engine_metrics(&self) -> EngineMetrics {
        EngineMetrics {
            #[cfg(feature = "metrics")]
            metrics: Arc::clone(&self.metrics),
            #[cfg(feature = "metrics")]
            last: sync_core::Stats::default(),
        }
    }
}

/// When a measured piece of work began (feature `metrics`; empty without it, and the clock is
/// not read).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timer {
    #[cfg(feature = "metrics")]
    start: tokio::time::Instant,
}

impl Timer {
    /// Now, on tokio's clock (the real one outside paused tests).
    #[inline]
    pub(crate) fn start() -> Self {
        Self {
            #[cfg(feature = "metrics")]
            start: tokio::time::Instant::now(),
        }
    }

    #[cfg(feature = "metrics")]
    fn elapsed(self) -> std::time::Duration {
        self.start.elapsed()
    }
}

/// Times one request from [`Counters::request_timer`] to its reply.
pub(crate) struct RequestTimer {
    #[cfg(feature = "metrics")]
    timed: Option<(Timer, metrics::Histogram)>,
}

impl RequestTimer {
    /// `request` (the call in flight), recording its time when it finishes, whatever its
    /// outcome. Without the `metrics` feature, `request` itself.
    pub(crate) fn time<T: 'static>(self, request: BoxFuture<T>) -> BoxFuture<T> {
        #[cfg(feature = "metrics")]
        if let Some((timer, histogram)) = self.timed {
            return Box::pin(async move {
                let reply = request.await;
                histogram.record(timer.elapsed());
                reply
            });
        }
        request
    }
}

/// The engine's counters and gauges as last published to `metrics` by one run, so that the
/// next publication adds what changed (the runs of a process add into shared series). At the
/// end of the run the gauges take its share back out.
pub(crate) struct EngineMetrics {
    #[cfg(feature = "metrics")]
    metrics: Arc<crate::facade::Metrics>,
    #[cfg(feature = "metrics")]
    last: sync_core::Stats,
}

impl EngineMetrics {
    /// Publishes the engine's `stats` (a no-op without the `metrics` feature).
    #[inline]
    pub(crate) fn publish(&mut self, _stats: &sync_core::Stats) {
        #[cfg(feature = "metrics")]
        if *_stats != self.last {
            self.metrics.engine.publish(&self.last, _stats);
            self.last = *_stats;
        }
    }
}

#[cfg(feature = "metrics")]
impl Drop for EngineMetrics {
    fn drop(&mut self) {
        self.metrics
            .engine
            .publish(&self.last, &sync_core::Stats::default());
    }
}
