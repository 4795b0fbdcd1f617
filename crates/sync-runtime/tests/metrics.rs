//! The `metrics` export (feature `metrics`) of a manager run against the simulated server,
//! through a recorder local to each test: the engine's counters match the stats, the
//! histograms are recorded, the `account` label is there only when asked for, managers
//! without it share their handles, and `commits_written` counts storage writes.
#![cfg(feature = "metrics")]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use common::{ACCOUNT, Sim, config, producer};
use metrics::{
    Counter, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use sync_core::{ChannelId, Commit, State};
use sync_runtime::sim::ApiFaults;
use sync_runtime::{Manager, MetricsConfig, Stats};
use sync_storage::{AccountId, MemoryStorage, Result, Snapshot, StateStorage};
use sync_testkit::Faults;

/// One series: its name and labels, sorted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Series {
    name: String,
    labels: Vec<(String, String)>,
}

impl Series {
    fn of(key: &Key) -> Self {
        let mut labels: Vec<(String, String)> = key
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        labels.sort();
        Self {
            name: key.name().to_owned(),
            labels,
        }
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A gauge as `f64` bits.
#[derive(Debug, Default)]
struct GaugeCell(AtomicU64);

impl GaugeFn for GaugeCell {
    fn increment(&self, value: f64) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }
    fn decrement(&self, value: f64) {
        self.increment(-value);
    }
    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Release);
    }
}

/// A histogram's samples.
#[derive(Debug, Default)]
struct Samples(Mutex<Vec<f64>>);

impl HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(value);
    }
}

#[derive(Debug, Default)]
struct Registry {
    counters: HashMap<Series, Arc<AtomicU64>>,
    gauges: HashMap<Series, Arc<GaugeCell>>,
    histograms: HashMap<Series, Arc<Samples>>,
    /// Registrations per series, of whatever type.
    registered: HashMap<Series, u64>,
}

/// A recorder that keeps every series in memory.
#[derive(Debug, Default)]
struct TestRecorder(Mutex<Registry>);

impl TestRecorder {
    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every series of every type.
    fn series(&self) -> Vec<Series> {
        self.registry().registered.keys().cloned().collect()
    }

    /// The sum of the counters named `name` over their label sets.
    fn counter(&self, name: &str) -> u64 {
        self.registry()
            .counters
            .iter()
            .filter(|(series, _)| series.name == name)
            .map(|(_, value)| value.load(Ordering::Acquire))
            .sum()
    }

    /// The sum of the gauges named `name` over their label sets.
    fn gauge(&self, name: &str) -> f64 {
        self.registry()
            .gauges
            .iter()
            .filter(|(series, _)| series.name == name)
            .map(|(_, value)| f64::from_bits(value.0.load(Ordering::Acquire)))
            .sum()
    }

    /// Samples of the histograms named `name` with the label `kind` (if given) over their
    /// label sets.
    fn samples(&self, name: &str, kind: Option<&str>) -> usize {
        self.registry()
            .histograms
            .iter()
            .filter(|(series, _)| {
                series.name == name && kind.is_none_or(|kind| series.label("kind") == Some(kind))
            })
            .map(|(_, samples)| {
                samples
                    .0
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .len()
            })
            .sum()
    }

    /// The sum of the samples of the histograms named `name`.
    fn sum(&self, name: &str) -> f64 {
        self.registry()
            .histograms
            .iter()
            .filter(|(series, _)| series.name == name)
            .map(|(_, samples)| {
                samples
                    .0
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .sum::<f64>()
            })
            .sum()
    }

    /// How often the series was registered.
    fn registrations(&self, name: &str) -> u64 {
        self.registry()
            .registered
            .iter()
            .filter(|(series, _)| series.name == name)
            .map(|(_, n)| n)
            .sum()
    }

    fn note(&self, key: &Key) -> Series {
        let series = Series::of(key);
        *self
            .registry()
            .registered
            .entry(series.clone())
            .or_insert(0) += 1;
        series
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let series = self.note(key);
        Counter::from_arc(Arc::clone(
            self.registry().counters.entry(series).or_default(),
        ))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let series = self.note(key);
        Gauge::from_arc(Arc::clone(
            self.registry().gauges.entry(series).or_default(),
        ))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let series = self.note(key);
        Histogram::from_arc(Arc::clone(
            self.registry().histograms.entry(series).or_default(),
        ))
    }
}

/// A memory storage that counts the commits it wrote, each taking a while (on the paused
/// clock), so that the engine's commits queue up behind a write and are folded into the next.
#[derive(Debug, Default)]
struct Counting {
    inner: MemoryStorage,
    applied: AtomicU64,
}

/// How long a commit takes to write.
const WRITE: Duration = Duration::from_millis(150);

impl StateStorage for Counting {
    async fn get_state(&self, account: AccountId) -> Result<Option<State>> {
        self.inner.get_state(account).await
    }
    async fn get_channel_pts(&self, account: AccountId, channel: ChannelId) -> Result<Option<i32>> {
        self.inner.get_channel_pts(account, channel).await
    }
    async fn channels(&self, account: AccountId) -> Result<BTreeMap<ChannelId, i32>> {
        self.inner.channels(account).await
    }
    async fn apply(&self, account: AccountId, commit: &Commit) -> Result<()> {
        tokio::time::sleep(WRITE).await;
        self.inner.apply(account, commit).await?;
        self.applied.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
    async fn load(&self, account: AccountId) -> Result<Snapshot> {
        self.inner.load(account).await
    }
    async fn delete(&self, account: AccountId) -> Result<()> {
        self.inner.delete(account).await
    }
}

common::forward_access_hashes!(Counting);

/// Reads one of the engine's counters.
type Field = fn(&sync_core::Stats) -> u64;

/// Every engine counter's series and its value in the stats.
const ENGINE: &[(&str, Field)] = &[
    ("sync_engine_updates_delivered_total", |s| {
        s.updates_delivered
    }),
    ("sync_engine_batches_delivered_total", |s| {
        s.batches_delivered
    }),
    ("sync_engine_duplicates_dropped_total", |s| {
        s.duplicates_dropped
    }),
    ("sync_engine_gaps_detected_total", |s| s.gaps_detected),
    ("sync_engine_gaps_filled_by_wait_total", |s| {
        s.gaps_filled_by_wait
    }),
    ("sync_engine_gaps_resolved_by_difference_total", |s| {
        s.gaps_resolved_by_difference
    }),
    ("sync_engine_buffer_overflows_total", |s| s.buffer_overflows),
    ("sync_engine_get_state_requests_total", |s| {
        s.get_state_requests
    }),
    ("sync_engine_difference_requests_total", |s| {
        s.difference_requests
    }),
    ("sync_engine_channel_difference_requests_total", |s| {
        s.channel_difference_requests
    }),
    ("sync_engine_requests_failed_total", |s| s.requests_failed),
    ("sync_engine_too_long_total", |s| s.too_long),
    ("sync_engine_updates_discarded_total", |s| {
        s.updates_discarded
    }),
    ("sync_engine_pushes_refused_total", |s| s.pushes_refused),
    ("sync_engine_rebases_total", |s| s.rebases),
];

/// One run of `seed` with moderate network faults and failing calls, under `recorder`: the
/// final stats, the storage writes counted, and the notices the handler got.
async fn run(seed: u64, metrics: MetricsConfig) -> (Stats, u64, usize) {
    let mut sim = Sim::new(seed, 8, ApiFaults::default());
    let storage = Arc::new(Counting::default());
    sim.seed(&storage.inner).await;
    let (handle, run) = sim.start(
        &storage,
        sync_runtime::ManagerConfig {
            metrics,
            ..config(seed, false)
        },
    );
    sim.produce(&handle, producer(seed, 400, Faults::moderate(), false))
        .await
        .expect("producer");
    handle.caught_up().await.expect("caught up");
    handle.shutdown();
    let summary = run.await.expect("join").expect("run");
    assert!(summary.persisted);
    let notices = sim.recorder.notices().len();
    sim.finish(&storage.inner).await.expect("oracle");
    (
        summary.stats,
        storage.applied.load(Ordering::Acquire),
        notices,
    )
}

#[tokio::test(start_paused = true)]
async fn without_the_account_label_the_series_match_the_stats() {
    let recorder = TestRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let (stats, applied, notices) = run(21, MetricsConfig::default()).await;

    for (name, value) in ENGINE {
        assert_eq!(recorder.registrations(name), 1, "{name}");
        assert_eq!(recorder.counter(name), value(&stats.engine), "{name}");
    }
    assert!(stats.engine.gaps_detected > 0 && stats.engine.difference_requests > 0);
    assert_eq!(
        recorder.counter("sync_runtime_updates_dispatched_total"),
        stats.runtime.updates_dispatched
    );

    // commits_written counts storage writes; the engine commits folded into them apart.
    assert_eq!(
        stats.runtime.commits_stale + stats.runtime.commits_failed,
        0
    );
    assert!(applied > 0);
    assert_eq!(stats.runtime.commits_written, applied);
    assert_eq!(
        recorder.counter("sync_runtime_commits_written_total"),
        applied
    );
    // Commits came faster than storage took them: several were folded into one write.
    assert!(stats.runtime.engine_commits_persisted > applied);
    assert_eq!(
        recorder.counter("sync_runtime_engine_commits_persisted_total"),
        stats.runtime.engine_commits_persisted
    );

    // Every difference sent was timed (none was in flight at the shutdown of a run caught
    // up), every handler call, every commit write.
    let common = recorder.samples("sync_runtime_difference_seconds", Some("common"));
    let channel = recorder.samples("sync_runtime_difference_seconds", Some("channel"));
    assert!(common > 0 && channel > 0, "{common} {channel}");
    assert_eq!(
        (common + channel) as u64,
        stats.engine.difference_requests + stats.engine.channel_difference_requests
    );
    assert_eq!(
        recorder.samples("sync_runtime_handler_seconds", None) as u64,
        stats.runtime.updates_dispatched + notices as u64
    );
    assert_eq!(
        recorder.samples("sync_runtime_commit_seconds", None) as u64,
        applied
    );
    let total: f64 = recorder.sum("sync_runtime_commit_seconds");
    assert!(total >= WRITE.as_secs_f64() * applied as f64, "{total}");

    // The gauges were raised while the manager ran and taken back out when it stopped.
    assert!(stats.engine.channels_tracked > 0);
    assert_eq!(recorder.gauge("sync_runtime_channels_tracked"), 0.0);

    let series = recorder.series();
    assert!(series.len() > ENGINE.len());
    for series in series {
        assert_eq!(series.label("account"), None, "{series:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn per_account_labels_every_series() {
    let recorder = TestRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let metrics = MetricsConfig {
        labels: vec![("pool".into(), "blue".into())],
        ..MetricsConfig::per_account()
    };
    let (stats, _, _) = run(22, metrics).await;

    let account = ACCOUNT.to_string();
    let series = recorder.series();
    assert!(series.len() > ENGINE.len());
    for series in &series {
        assert_eq!(
            series.label("account"),
            Some(account.as_str()),
            "{series:?}"
        );
        assert_eq!(series.label("pool"), Some("blue"), "{series:?}");
    }
    for (name, value) in ENGINE {
        assert_eq!(recorder.counter(name), value(&stats.engine), "{name}");
    }
    assert!(recorder.samples("sync_runtime_handler_seconds", None) > 0);
}

fn manager(
    account: AccountId,
    metrics: MetricsConfig,
) -> Manager<sync_runtime::sim::SimulatedApi, MemoryStorage, sync_runtime::sim::Recorder> {
    let sim = Sim::new(1, 1, ApiFaults::default());
    Manager::with_config(
        account,
        sim.api,
        MemoryStorage::new(),
        sim.recorder,
        sync_runtime::ManagerConfig {
            metrics,
            ..config(1, false)
        },
    )
}

#[test]
fn managers_without_the_account_label_share_their_handles() {
    let recorder = TestRecorder::default();
    metrics::with_local_recorder(&recorder, || {
        let shared: Vec<_> = (1..=3)
            .map(|account| manager(account, MetricsConfig::default()))
            .collect();
        assert_eq!(recorder.registrations("sync_runtime_requests_total"), 1);
        assert_eq!(recorder.registrations("sync_engine_gaps_detected_total"), 1);
        // Another label set is another set of series.
        let pooled = MetricsConfig {
            labels: vec![("pool".into(), "green".into())],
            ..MetricsConfig::default()
        };
        let other = [manager(4, pooled.clone()), manager(5, pooled)];
        assert_eq!(recorder.registrations("sync_runtime_requests_total"), 2);
        // Each manager with the label has its own.
        let own: Vec<_> = (6..=7)
            .map(|account| manager(account, MetricsConfig::per_account()))
            .collect();
        assert_eq!(recorder.registrations("sync_runtime_requests_total"), 4);
        drop((shared, other, own));

        // Once no manager holds the shared set, the next one registers it again.
        let _again = manager(8, MetricsConfig::default());
        assert_eq!(recorder.registrations("sync_runtime_requests_total"), 5);
    });
}

/// A fleet's factory for the metrics test: a simulated server per account, a recorder each.
struct Accounts;

impl sync_runtime::AccountFactory for Accounts {
    type Api = sync_runtime::sim::SimulatedApi;
    type Handler = sync_runtime::sim::Recorder;

    async fn build(
        &self,
        account: AccountId,
    ) -> std::result::Result<(Self::Api, Self::Handler), sync_runtime::BoxError> {
        let server = sync_testkit::Server::new(
            account as u64,
            sync_testkit::Workload::default(),
            sync_testkit::Limits::default(),
        );
        let api = sync_runtime::sim::SimulatedApi::new(
            server,
            ApiFaults::none(Duration::from_millis(1)),
            account as u64,
        );
        Ok((api, sync_runtime::sim::Recorder::new()))
    }
}

#[tokio::test(start_paused = true)]
async fn a_fleet_exports_its_members_accounts_and_lease_counts() {
    use sync_storage::RegistryStorage;

    let recorder = TestRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let storage = Arc::new(MemoryStorage::with_clock(common::TokioClock(
        tokio::time::Instant::now(),
    )));
    storage.register(&[1, 2, 3]).await.expect("register");
    let config = sync_runtime::FleetConfig {
        member: "only".into(),
        tick: Duration::from_millis(100),
        ..sync_runtime::FleetConfig::new()
    };
    let fleet = sync_runtime::Fleet::new(Arc::clone(&storage), Accounts, config);
    let handle = fleet.handle();
    let run = tokio::spawn(fleet.run());
    while handle.accounts().len() < 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(recorder.gauge("sync_fleet_accounts_running"), 3.0);
    assert_eq!(recorder.gauge("sync_fleet_accounts_assigned"), 3.0);
    assert_eq!(recorder.gauge("sync_fleet_members"), 1.0);
    assert_eq!(recorder.counter("sync_fleet_claims_total"), 3);
    assert!(
        recorder
            .series()
            .iter()
            .filter(|s| s.name.starts_with("sync_fleet_"))
            .all(|s| s.label("member") == Some("only")),
        "every fleet series names its member"
    );

    handle.shutdown();
    let stats = run.await.expect("join").expect("fleet");
    assert_eq!(stats.released, 3);
    assert_eq!(recorder.counter("sync_fleet_releases_total"), 3);
    assert_eq!(recorder.gauge("sync_fleet_accounts_running"), 0.0);
}
