//! The manager's series in the `metrics` facade (feature `metrics`): the handles, registered
//! once per manager with its `account` label, or once per recorder and label set for every
//! manager of the process without it. `docs/METRICS.md` lists the series.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use metrics::{Counter, Gauge, Histogram, Label};
use sync_storage::AccountId;

use crate::config::MetricsConfig;
use crate::stats::RuntimeMetrics;

/// Every handle a manager records through.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// The runtime's counters (cloned into each manager's [`Counters`](crate::stats::Counters)).
    pub(crate) runtime: RuntimeMetrics,
    /// The engine's counters and gauges.
    pub(crate) engine: EngineSeries,
    /// `getDifference` round trips.
    pub(crate) difference: Histogram,
    /// `getChannelDifference` round trips.
    pub(crate) channel_difference: Histogram,
    /// Handler calls.
    pub(crate) handler: Histogram,
    /// Storage writes of commits, retries included.
    pub(crate) commit: Histogram,
}

/// Handle sets shared by the managers without an `account` label: the recorder they were
/// registered with (its address), their extra labels, and the set while a manager holds it.
type Shared = Vec<(usize, Vec<(String, String)>, Weak<Metrics>)>;

static SHARED: Mutex<Shared> = Mutex::new(Vec::new());

impl Metrics {
    /// The handles of `account`'s manager: its own with the `account` label, or the ones the
    /// managers with the same labels share (registered now if none of them is alive).
    pub(crate) fn get(account: AccountId, config: &MetricsConfig) -> Arc<Self> {
        let mut labels: Vec<Label> = config
            .labels
            .iter()
            .map(|(key, value)| Label::new(key.clone(), value.clone()))
            .collect();
        if config.per_account {
            labels.push(Label::new("account", account.to_string()));
            return Arc::new(Self::register(&labels));
        }
        // Handles belong to the recorder that registered them: a set is shared only among
        // managers built under the same recorder (a test's local one, or the global one).
        let recorder = metrics::with_recorder(|recorder| std::ptr::from_ref(recorder).addr());
        let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        shared.retain(|(_, _, set)| set.strong_count() > 0);
        let found = shared
            .iter()
            .filter(|(at, known, _)| *at == recorder && *known == config.labels)
            .find_map(|(_, _, set)| set.upgrade());
        if let Some(set) = found {
            return set;
        }
        let set = Arc::new(Self::register(&labels));
        shared.push((recorder, config.labels.clone(), Arc::downgrade(&set)));
        set
    }

    fn register(labels: &[Label]) -> Self {
        let with_kind = |kind: &'static str| {
            let mut labels = labels.to_vec();
            labels.push(Label::new("kind", kind));
            labels
        };
        Self {
            runtime: RuntimeMetrics::register(labels),
            engine: EngineSeries::register(labels),
            difference: metrics::histogram!("sync_runtime_difference_seconds", with_kind("common")),
            channel_difference: metrics::histogram!(
                "sync_runtime_difference_seconds",
                with_kind("channel")
            ),
            handler: metrics::histogram!("sync_runtime_handler_seconds", labels.to_vec()),
            commit: metrics::histogram!("sync_runtime_commit_seconds", labels.to_vec()),
        }
    }
}

macro_rules! engine_series {
    (
        counters { $($counter:ident => $counter_name:literal,)* }
        gauges { $($gauge:ident => $gauge_name:literal,)* }
    ) => {
        /// The engine's counters and gauges in the facade.
        #[derive(Debug)]
        pub(crate) struct EngineSeries {
            $($counter: Counter,)*
            $($gauge: Gauge,)*
        }

        impl EngineSeries {
            fn register(labels: &[Label]) -> Self {
                Self {
                    $($counter: metrics::counter!($counter_name, labels.to_vec()),)*
                    $($gauge: metrics::gauge!($gauge_name, labels.to_vec()),)*
                }
            }

            /// Adds what changed from `last` to `now`: the counters' increase (the engine's
            /// counters only grow), the gauges' change either way (their series add up the
            /// managers that share them).
            pub(crate) fn publish(&self, last: &sync_core::Stats, now: &sync_core::Stats) {
                $(
                    let added = now.$counter.saturating_sub(last.$counter);
                    if added > 0 {
                        self.$counter.increment(added);
                    }
                )*
                $(
                    if now.$gauge != last.$gauge {
                        self.$gauge.increment(now.$gauge as f64 - last.$gauge as f64);
                    }
                )*
            }
        }
    };
}

engine_series! {
    counters {
        updates_delivered => "sync_engine_updates_delivered_total",
        batches_delivered => "sync_engine_batches_delivered_total",
        duplicates_dropped => "sync_engine_duplicates_dropped_total",
        gaps_detected => "sync_engine_gaps_detected_total",
        gaps_filled_by_wait => "sync_engine_gaps_filled_by_wait_total",
        gaps_resolved_by_difference => "sync_engine_gaps_resolved_by_difference_total",
        buffer_overflows => "sync_engine_buffer_overflows_total",
        get_state_requests => "sync_engine_get_state_requests_total",
        difference_requests => "sync_engine_difference_requests_total",
        channel_difference_requests => "sync_engine_channel_difference_requests_total",
        requests_failed => "sync_engine_requests_failed_total",
        too_long => "sync_engine_too_long_total",
        updates_discarded => "sync_engine_updates_discarded_total",
        pushes_refused => "sync_engine_pushes_refused_total",
        rebases => "sync_engine_rebases_total",
    }
    gauges {
        buffered_now => "sync_runtime_buffered_updates",
        channels_tracked => "sync_runtime_channels_tracked",
        unacknowledged_batches => "sync_runtime_unacknowledged_batches",
    }
}
