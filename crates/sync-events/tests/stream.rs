//! Behaviour of the event stream: ordering, pinning, backpressure, shutdown, panics, receipts.
//!
//! No test sleeps: threads meet on barriers and channels, and the one wait for a sender to
//! block polls the stream's own counter of blocked senders.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;

use sync_events::{
    AsyncObserver, Both, Builder, ConfigError, Event, EventStream, NotHandled, Observer, Overflow,
    PanicPhase, SendFailure, shard_for_key,
};

/// `(key, (producer, sequence number))`.
type Ev = (u64, (usize, u64));

/// What an observer saw, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen<T> {
    Event(T),
    Shutdown,
}

/// Records everything it sees and sends the log, with its shard, at shutdown.
struct Recorder<T> {
    shard: usize,
    log: Vec<Seen<T>>,
    out: Sender<(usize, Vec<Seen<T>>)>,
}

impl<T: Send + 'static> Observer<T> for Recorder<T> {
    fn handle(&mut self, event: T) {
        self.log.push(Seen::Event(event));
    }

    fn shutdown(&mut self) {
        self.log.push(Seen::Shutdown);
        let _ = self.out.send((self.shard, std::mem::take(&mut self.log)));
    }
}

/// Where each recorder sends its shard's log.
type Logs<T> = Receiver<(usize, Vec<Seen<T>>)>;

fn recorders<T: Send + 'static>() -> (impl FnMut(usize) -> Recorder<T>, Logs<T>) {
    let (tx, rx) = mpsc::channel();
    (
        move |shard| Recorder {
            shard,
            log: Vec::new(),
            out: tx.clone(),
        },
        rx,
    )
}

/// Collects the logs after shutdown: shard → log. Panics if a shard reported twice.
fn collect_logs<T>(rx: &Logs<T>) -> BTreeMap<usize, Vec<Seen<T>>> {
    let mut logs = BTreeMap::new();
    for (shard, log) in rx.try_iter() {
        assert!(
            logs.insert(shard, log).is_none(),
            "shard {shard} shut down twice"
        );
    }
    logs
}

/// Checks the logs: one shutdown per shard, last; per-(producer, key) order; each event once;
/// each key on its own shard.
fn check_logs(logs: &BTreeMap<usize, Vec<Seen<Ev>>>, shards: usize, expected: usize) {
    assert_eq!(logs.len(), shards, "every observer shuts down once");
    let mut seen = HashMap::new();
    let mut last: HashMap<(usize, u64), u64> = HashMap::new();
    for (&shard, log) in logs {
        assert_eq!(log.last(), Some(&Seen::Shutdown), "shutdown comes last");
        assert_eq!(log.iter().filter(|s| **s == Seen::Shutdown).count(), 1);
        for entry in log {
            let Seen::Event((key, (producer, seq))) = *entry else {
                continue;
            };
            assert_eq!(
                shard,
                shard_for_key(&key, shards),
                "key {key} on the wrong shard"
            );
            assert!(
                seen.insert((producer, seq), shard).is_none(),
                "event ({producer}, {seq}) twice"
            );
            if let Some(prev) = last.insert((producer, key), seq) {
                assert!(
                    prev < seq,
                    "producer {producer}, key {key}: {prev} before {seq}"
                );
            }
        }
    }
    assert_eq!(seen.len(), expected, "every event delivered");
}

#[test]
fn per_key_order_and_pinning_under_concurrent_producers() {
    const PRODUCERS: usize = 8;
    const EACH: u64 = 600;
    let shards = 4;
    let (factory, rx) = recorders::<Ev>();
    // A small capacity makes producers block and interleave.
    let (stream, workers) = Builder::new()
        .shards(shards)
        .capacity(16)
        .build(factory)
        .expect("valid config");
    let threads = workers.spawn_threads().expect("threads");
    let start = Arc::new(Barrier::new(PRODUCERS));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let stream = stream.clone();
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                let events: Vec<Ev> = (0..EACH).map(|seq| (seq % 13, (p, seq))).collect();
                // Half one by one, half in batches of 7.
                let (singles, batched) = events.split_at(events.len() / 2);
                for &e in singles {
                    stream.send(e).expect("open");
                }
                for chunk in batched.chunks(7) {
                    let receipt = stream.send_batch(chunk.iter().copied()).expect("open");
                    assert_eq!(receipt.accepted(), chunk.len());
                }
            })
        })
        .collect();
    for p in producers {
        p.join().expect("producer");
    }
    stream.shutdown_and_wait();
    threads.join();
    check_logs(&collect_logs(&rx), shards, PRODUCERS * EACH as usize);
    let total = stream.stats().total();
    assert_eq!(total.sent, PRODUCERS as u64 * EACH);
    assert_eq!(total.delivered, total.sent);
    assert_eq!(
        (total.dropped, total.rejected, total.lost, total.queued),
        (0, 0, 0, 0)
    );
    assert!(total.finished);
}

#[test]
fn keyless_events_all_go_to_shard_zero() {
    #[derive(Debug)]
    struct Tick(u32);
    impl Event for Tick {
        type Key = u32;
        fn stream_key(&self) -> Option<u32> {
            None
        }
    }
    let (tx, rx) = mpsc::channel();
    let (stream, workers) = Builder::new()
        .shards(3)
        .build(move |shard| {
            let tx = tx.clone();
            move |Tick(n): Tick| {
                let _ = tx.send((shard, n));
            }
        })
        .expect("valid config");
    let threads = workers.spawn_threads().expect("threads");
    stream.send_batch((0..50).map(Tick)).expect("open");
    stream.shutdown_and_wait();
    threads.join();
    let got: Vec<(usize, u32)> = rx.try_iter().collect();
    assert_eq!(got, (0..50).map(|n| (0, n)).collect::<Vec<_>>());
}

/// An observer that tells when it starts an event and then waits for a go-ahead per event.
struct Gated {
    started: Sender<u64>,
    go: Receiver<()>,
    log: Arc<Mutex<Vec<Seen<u64>>>>,
}

impl Observer<(u8, u64)> for Gated {
    fn handle(&mut self, (_, n): (u8, u64)) {
        let _ = self.started.send(n);
        // The test holds the gate; a closed gate lets everything through.
        let _ = self.go.recv();
        self.log.lock().expect("log").push(Seen::Event(n));
    }

    fn shutdown(&mut self) {
        self.log.lock().expect("log").push(Seen::Shutdown);
    }
}

struct GatedStream {
    stream: EventStream<(u8, u64)>,
    started: Receiver<u64>,
    go: Sender<()>,
    log: Arc<Mutex<Vec<Seen<u64>>>>,
    threads: sync_events::WorkerThreads,
}

/// One shard, `capacity`, `overflow`; event 0 is sent and in the observer's hands on return,
/// so the queue is empty and the worker busy.
fn gated(capacity: usize, overflow: Overflow) -> GatedStream {
    let (started_tx, started) = mpsc::channel();
    let (go, go_rx) = mpsc::channel();
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut parts = Some((started_tx, go_rx, Arc::clone(&log)));
    let (stream, workers) = Builder::new()
        .shards(1)
        .capacity(capacity)
        .overflow(overflow)
        .build(move |_| {
            let (started, go, log) = parts.take().expect("one shard");
            Gated { started, go, log }
        })
        .expect("valid config");
    let threads = workers.spawn_threads().expect("threads");
    stream.send((0, 0)).expect("open");
    assert_eq!(started.recv().expect("worker started"), 0);
    GatedStream {
        stream,
        started,
        go,
        log,
        threads,
    }
}

impl GatedStream {
    /// Waits until `n` senders are blocked on shard 0 (spins on the stream's own counter).
    fn await_blocked(&self, n: usize) {
        while self.stream.stats().shards[0].blocked_senders != n {
            thread::yield_now();
        }
    }

    fn finish(self) -> Vec<Seen<u64>> {
        drop(self.go); // open the gate for good
        self.stream.shutdown_and_wait();
        self.threads.join();
        let log = self.log.lock().expect("log").clone();
        drop(self.started);
        log
    }
}

fn events(log: &[Seen<u64>]) -> Vec<u64> {
    log.iter()
        .filter_map(|s| match s {
            Seen::Event(n) => Some(*n),
            Seen::Shutdown => None,
        })
        .collect()
}

#[test]
fn a_full_queue_blocks_the_sender_until_the_worker_makes_room() {
    let g = gated(2, Overflow::Block);
    g.stream.send_batch([(0, 1), (0, 2)]).expect("fits");
    let done = Arc::new(AtomicUsize::new(0));
    let sender = {
        let stream = g.stream.clone();
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let receipt = stream.send((0, 3));
            done.store(1, Ordering::SeqCst);
            receipt
        })
    };
    g.await_blocked(1);
    assert_eq!(
        done.load(Ordering::SeqCst),
        0,
        "the sender must still be waiting"
    );
    assert_eq!(
        g.stream.stats().shards[0].queued,
        3,
        "event 0 in hand, 1 and 2 queued"
    );
    // A non-waiting send is refused and handed back.
    let err = g.stream.try_send((0, 9)).expect_err("full");
    assert_eq!((err.failure, err.unsent), (SendFailure::Full, vec![(0, 9)]));
    g.go.send(()).expect("gate"); // event 0 done: the worker takes 1 and 2, room for 3
    let receipt = sender.join().expect("sender").expect("accepted");
    assert_eq!(receipt.accepted(), 1);
    let stats = g.stream.stats().total();
    let log = g.finish();
    assert_eq!(events(&log), vec![0, 1, 2, 3]);
    assert_eq!(log.last(), Some(&Seen::Shutdown));
    assert_eq!((stats.dropped, stats.rejected), (0, 1));
}

#[test]
fn drop_newest_discards_and_counts_what_does_not_fit() {
    let g = gated(2, Overflow::DropNewest);
    let receipt = g
        .stream
        .send_batch((1..=5).map(|n| (0, n)))
        .expect("never fails");
    assert_eq!((receipt.accepted(), receipt.dropped()), (2, 3));
    let receipt = g.stream.send((0, 6)).expect("never fails");
    assert_eq!((receipt.accepted(), receipt.dropped()), (0, 1));
    let stream = g.stream.clone();
    let log = g.finish();
    assert_eq!(events(&log), vec![0, 1, 2]);
    let stats = stream.stats().total();
    assert_eq!(
        (stats.sent, stats.delivered, stats.dropped, stats.rejected),
        (3, 3, 4, 0)
    );
}

#[test]
fn fail_fast_hands_back_what_does_not_fit() {
    let g = gated(2, Overflow::FailFast);
    let err = g
        .stream
        .send_batch((1..=5).map(|n| (0, n)))
        .expect_err("full");
    assert_eq!(err.failure, SendFailure::Full);
    assert_eq!(err.unsent, vec![(0, 3), (0, 4), (0, 5)]);
    assert_eq!(err.receipt.accepted(), 2);
    let err = g.stream.send((0, 6)).expect_err("full");
    assert_eq!(err.unsent, vec![(0, 6)]);
    let stream = g.stream.clone();
    let log = g.finish();
    assert_eq!(events(&log), vec![0, 1, 2]);
    let stats = stream.stats().total();
    assert_eq!(
        (stats.sent, stats.delivered, stats.dropped, stats.rejected),
        (3, 3, 0, 4)
    );
}

#[test]
fn shutdown_drains_what_was_accepted_and_refuses_the_rest() {
    let g = gated(4, Overflow::Block);
    let receipt = g.stream.send_batch((1..=4).map(|n| (0, n))).expect("fits");
    assert!(!g.stream.is_handled(&receipt));
    assert!(g.stream.shutdown(), "first shutdown");
    assert!(!g.stream.shutdown(), "second shutdown is a no-op");
    let err = g.stream.send((0, 5)).expect_err("shut down");
    assert_eq!(
        (err.failure, err.unsent),
        (SendFailure::Closed, vec![(0, 5)])
    );
    let err = g
        .stream
        .send_batch([(0, 6), (0, 7)])
        .expect_err("shut down");
    assert_eq!(err.unsent, vec![(0, 6), (0, 7)]);
    let err = g.stream.try_send((0, 8)).expect_err("shut down");
    assert_eq!(err.failure, SendFailure::Closed);
    let stream = g.stream.clone();
    let log = g.finish();
    assert_eq!(
        log,
        [0, 1, 2, 3, 4]
            .map(Seen::Event)
            .into_iter()
            .chain([Seen::Shutdown])
            .collect::<Vec<_>>()
    );
    assert!(stream.is_handled(&receipt));
    assert_eq!(stream.wait_handled(&receipt), Ok(()));
    let stats = stream.stats().total();
    assert_eq!(
        (stats.sent, stats.delivered, stats.queued, stats.rejected),
        (5, 5, 0, 0)
    );
}

#[test]
fn a_blocked_sender_fails_with_closed_on_shutdown() {
    let g = gated(1, Overflow::Block);
    g.stream.send((0, 1)).expect("fits");
    let sender = {
        let stream = g.stream.clone();
        thread::spawn(move || stream.send_batch([(0, 2), (0, 3)]))
    };
    g.await_blocked(1);
    g.stream.shutdown();
    let err = sender
        .join()
        .expect("sender")
        .expect_err("closed while waiting");
    assert_eq!(
        (err.failure, err.unsent),
        (SendFailure::Closed, vec![(0, 2), (0, 3)])
    );
    assert_eq!(events(&g.finish()), vec![0, 1]);
}

#[test]
fn shutdown_from_many_threads_shuts_each_observer_down_once() {
    let shards = 3;
    let counts: Arc<Vec<AtomicUsize>> =
        Arc::new((0..shards).map(|_| AtomicUsize::new(0)).collect());
    struct CountShutdown(usize, Arc<Vec<AtomicUsize>>);
    impl Observer<(u64, u64)> for CountShutdown {
        fn handle(&mut self, _: (u64, u64)) {}
        fn shutdown(&mut self) {
            self.1[self.0].fetch_add(1, Ordering::SeqCst);
        }
    }
    let factory_counts = Arc::clone(&counts);
    let (stream, workers) = Builder::new()
        .shards(shards)
        .build(move |shard| CountShutdown(shard, Arc::clone(&factory_counts)))
        .expect("valid config");
    let threads = workers.spawn_threads().expect("threads");
    stream.send_batch((0..100).map(|n| (n, n))).expect("open");
    let start = Arc::new(Barrier::new(4));
    let closers: Vec<_> = (0..4)
        .map(|_| {
            let stream = stream.clone();
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                let first = stream.shutdown();
                stream.wait_drained();
                first
            })
        })
        .collect();
    let firsts = closers
        .into_iter()
        .map(|c| c.join().expect("closer"))
        .filter(|&first| first)
        .count();
    assert_eq!(firsts, 1, "exactly one shutdown call does the work");
    stream.shutdown_and_wait();
    threads.join();
    for (shard, count) in counts.iter().enumerate() {
        assert_eq!(count.load(Ordering::SeqCst), 1, "shard {shard}");
    }
    assert_eq!(stream.stats().total().delivered, 100);
}

#[test]
fn a_panicking_observer_is_reported_and_isolated() {
    let shards = 2;
    // Keys 0..40 spread over both shards; the observer of whichever shard gets key 7 panics on
    // it, once.
    let bad_shard = shard_for_key(&7_u64, shards);
    let (reports_tx, reports) = mpsc::channel();
    let reports_tx = Mutex::new(reports_tx);
    let (factory, rx) = recorders::<(u64, u64)>();
    let mut factory = factory;
    let (stream, workers) = Builder::new()
        .shards(shards)
        .on_panic(move |report| {
            let _ = reports_tx.lock().expect("hook").send(report.clone());
        })
        .build(move |shard| {
            let mut inner = factory(shard);
            move |event: (u64, u64)| {
                assert!(event != (7, 7), "observer failure on {event:?}");
                inner.handle(event);
                if event.1 == u64::MAX {
                    inner.shutdown();
                }
            }
        })
        .expect("valid config");
    let threads = workers.spawn_threads().expect("threads");
    stream.send_batch((0..40).map(|n| (n, n))).expect("open");
    // A last event per shard makes each recorder send its log (closures have no shutdown).
    for shard in 0..shards {
        let key = (100..)
            .find(|k| shard_for_key(k, shards) == shard)
            .expect("some key");
        stream.send((key, u64::MAX)).expect("open");
    }
    stream.shutdown_and_wait();
    threads.join();
    let logs = collect_logs(&rx);
    let delivered: Vec<u64> = logs
        .values()
        .flatten()
        .filter_map(|s| match s {
            Seen::Event((k, _)) if *k < 40 => Some(*k),
            _ => None,
        })
        .collect();
    let mut sorted = delivered.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..40).filter(|&k| k != 7).collect::<Vec<_>>());
    let stats = stream.stats();
    assert_eq!(stats.shards[bad_shard].panics, 1);
    assert_eq!(stats.shards[1 - bad_shard].panics, 0);
    assert!(
        stats.shards[bad_shard]
            .last_panic
            .as_deref()
            .is_some_and(|m| m.contains("observer failure"))
    );
    assert_eq!(
        stats.total().delivered,
        42,
        "the panicked event counts as delivered"
    );
    let reports: Vec<_> = reports.try_iter().collect();
    assert_eq!(reports.len(), 1);
    assert_eq!(
        (reports[0].shard, reports[0].phase),
        (bad_shard, PanicPhase::Handle)
    );
}

#[test]
fn a_panicking_shutdown_is_reported_and_the_drain_completes() {
    struct BadShutdown;
    impl Observer<(u8, u8)> for BadShutdown {
        fn handle(&mut self, _: (u8, u8)) {}
        fn shutdown(&mut self) {
            panic!("shutdown failure");
        }
    }
    let (stream, workers) = Builder::new()
        .shards(2)
        .build(|_| BadShutdown)
        .expect("valid config");
    let threads = workers.spawn_threads().expect("threads");
    stream.send((1, 1)).expect("open");
    stream.shutdown_and_wait();
    threads.join();
    let total = stream.stats().total();
    assert_eq!((total.panics, total.delivered), (2, 1));
    assert!(total.finished);
}

#[test]
fn combined_observers_each_see_every_event_in_order() {
    let (first, first_rx) = recorders::<(u64, u64)>();
    let (second, second_rx) = recorders::<(u64, u64)>();
    let shards = 3;
    let (stream, workers) = Builder::new()
        .shards(shards)
        .build(Both::new(first, second))
        .expect("valid config");
    let threads = workers.spawn_threads().expect("threads");
    let sent: Vec<(u64, u64)> = (0..300).map(|n| (n % 11, n)).collect();
    stream.send_batch(sent.iter().copied()).expect("open");
    stream.shutdown_and_wait();
    threads.join();
    let (a, b) = (collect_logs(&first_rx), collect_logs(&second_rx));
    assert_eq!(a, b, "both observers of a shard see the same sequence");
    assert_eq!(a.len(), shards);
    for (shard, log) in &a {
        let expected: Vec<Seen<(u64, u64)>> = sent
            .iter()
            .filter(|(k, _)| shard_for_key(k, shards) == *shard)
            .map(|&e| Seen::Event(e))
            .chain([Seen::Shutdown])
            .collect();
        assert_eq!(log, &expected);
    }
}

#[test]
fn receipts_tell_when_events_were_handled() {
    let g = gated(8, Overflow::Block);
    let mut receipt = g.stream.send_batch([(0, 1), (0, 2)]).expect("fits");
    let later = g.stream.send((0, 3)).expect("fits");
    receipt.merge(&later);
    assert_eq!(receipt.accepted(), 3);
    assert!(!g.stream.is_handled(&receipt));
    let waiter = {
        let stream = g.stream.clone();
        let receipt = receipt.clone();
        thread::spawn(move || stream.wait_handled(&receipt))
    };
    for _ in 0..4 {
        g.go.send(()).expect("gate");
    }
    assert_eq!(waiter.join().expect("waiter"), Ok(()));
    assert!(g.stream.is_handled(&receipt));
    assert_eq!(events(&g.finish()), vec![0, 1, 2, 3]);
}

#[test]
fn dropped_workers_close_their_shards_and_count_the_loss() {
    let (stream, workers) = Builder::new()
        .shards(2)
        .build(|_| |_: (u8, u8)| {})
        .expect("valid config");
    let receipt = stream.send_batch((0..10).map(|n| (n, n))).expect("queued");
    drop(workers);
    let total = stream.stats().total();
    assert_eq!(
        (total.sent, total.delivered, total.lost, total.queued),
        (10, 0, 10, 0)
    );
    assert!(total.finished);
    assert!(matches!(
        stream.wait_handled(&receipt),
        Err(NotHandled { .. })
    ));
    let err = stream.send((1, 1)).expect_err("closed");
    assert_eq!(err.failure, SendFailure::Closed);
    stream.wait_drained(); // returns: the workers are gone
}

#[test]
fn dropping_the_last_handle_stops_the_workers() {
    let (stream, workers) = Builder::new()
        .shards(2)
        .build(|_| |_: (u8, u8)| {})
        .expect("valid config");
    let threads = workers.spawn_threads().expect("threads");
    let other = stream.clone();
    stream.send((1, 1)).expect("open");
    drop(stream);
    other.send((2, 2)).expect("still open: a handle is alive");
    drop(other);
    threads.join(); // would never return if the workers kept waiting
}

#[test]
fn the_noop_stream_accepts_until_shut_down() {
    let stream: EventStream<(u8, u8)> = EventStream::noop();
    assert_eq!(stream.shards(), 0);
    let receipt = stream.send((1, 1)).expect("accepted");
    assert_eq!(receipt.accepted(), 1);
    assert!(stream.is_handled(&receipt));
    assert_eq!(
        stream
            .send_batch([(1, 2), (3, 4)])
            .expect("accepted")
            .accepted(),
        2
    );
    assert!(stream.shutdown());
    stream.wait_drained();
    let err = stream.send_batch([(5, 6)]).expect_err("shut down");
    assert_eq!(
        (err.failure, err.unsent),
        (SendFailure::Closed, vec![(5, 6)])
    );
    assert_eq!(
        stream.try_send((7, 8)).expect_err("shut down").failure,
        SendFailure::Closed
    );
    assert!(stream.stats().shards.is_empty());
}

#[test]
fn invalid_settings_are_errors() {
    let zero_shards = Builder::new()
        .shards(0)
        .build::<(u8, u8), _>(|_| |_: (u8, u8)| {});
    assert_eq!(zero_shards.err(), Some(ConfigError::ZeroShards));
    let zero_capacity = Builder::new()
        .capacity(0)
        .build::<(u8, u8), _>(|_| |_: (u8, u8)| {});
    assert_eq!(zero_capacity.err(), Some(ConfigError::ZeroCapacity));
}

/// An async observer that yields to the executor in the middle of each event, so a shard's
/// events really are awaited one after another.
struct AsyncRecorder {
    shard: usize,
    log: Vec<Seen<Ev>>,
    out: tokio::sync::mpsc::UnboundedSender<(usize, Vec<Seen<Ev>>)>,
}

impl AsyncObserver<Ev> for AsyncRecorder {
    async fn handle(&mut self, event: Ev) {
        tokio::task::yield_now().await;
        self.log.push(Seen::Event(event));
    }

    async fn shutdown(&mut self) {
        tokio::task::yield_now().await;
        self.log.push(Seen::Shutdown);
        let _ = self.out.send((self.shard, std::mem::take(&mut self.log)));
    }
}

#[test]
fn async_observers_on_tokio_keep_order_and_report_handling() {
    const PRODUCERS: usize = 6;
    const EACH: u64 = 300;
    let shards = 3;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let logs = runtime.block_on(async move {
        let (stream, workers) = Builder::new()
            .shards(shards)
            .capacity(8)
            .build_async(move |shard| AsyncRecorder {
                shard,
                log: Vec::new(),
                out: tx.clone(),
            })
            .expect("valid config");
        workers.spawn_with(|worker| {
            tokio::spawn(worker);
        });
        let tasks: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let stream = stream.clone();
                tokio::spawn(async move {
                    let mut all = sync_events::Receipt::default();
                    for seq in 0..EACH / 2 {
                        all.merge(&stream.send_async((seq % 5, (p, seq))).await.expect("open"));
                    }
                    let rest = (EACH / 2..EACH).map(|seq| (seq % 5, (p, seq)));
                    all.merge(&stream.send_batch_async(rest).await.expect("open"));
                    stream.handled(&all).await.expect("handled");
                    assert!(stream.is_handled(&all));
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("producer");
        }
        stream.shutdown();
        stream.drained().await;
        let mut logs = BTreeMap::new();
        while let Ok((shard, log)) = rx.try_recv() {
            assert!(logs.insert(shard, log).is_none());
        }
        logs
    });
    check_logs(&logs, shards, PRODUCERS * EACH as usize);
}

#[test]
fn a_panicking_async_observer_is_isolated() {
    struct Flaky(Vec<u64>, std::sync::mpsc::Sender<Vec<u64>>);
    impl AsyncObserver<(u64, u64)> for Flaky {
        async fn handle(&mut self, (_, n): (u64, u64)) {
            tokio::task::yield_now().await;
            assert!(n != 3, "async observer failure");
            self.0.push(n);
        }
        async fn shutdown(&mut self) {
            let _ = self.1.send(std::mem::take(&mut self.0));
        }
    }
    let (tx, rx) = mpsc::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let stats = runtime.block_on(async move {
        let (stream, workers) = Builder::new()
            .shards(1)
            .build_async(move |_| Flaky(Vec::new(), tx.clone()))
            .expect("valid config");
        workers.spawn_with(|w| {
            tokio::spawn(w);
        });
        stream
            .send_batch_async((0..6).map(|n| (0, n)))
            .await
            .expect("open");
        stream.shutdown();
        stream.drained().await;
        stream.stats().total()
    });
    assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![vec![0, 1, 2, 4, 5]]);
    assert_eq!((stats.panics, stats.delivered), (1, 6));
    assert!(
        stats
            .last_panic
            .is_some_and(|m| m.contains("async observer failure"))
    );
}

#[test]
fn room_resolves_once_the_worker_makes_room_and_forgets_itself_when_dropped() {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    let g = gated(2, Overflow::Block);
    let mut cx = Context::from_waker(Waker::noop());
    // Room now: ready at once, nothing registered.
    assert_eq!(pin!(g.stream.room(0)).poll(&mut cx), Poll::Ready(()));
    g.stream.send_batch([(0, 1), (0, 2)]).expect("fits");
    // Full: pending and registered, and a dropped wait leaves nothing behind.
    {
        let mut room = pin!(g.stream.room(0));
        assert_eq!(room.as_mut().poll(&mut cx), Poll::Pending);
        assert_eq!(room.as_mut().poll(&mut cx), Poll::Pending);
        assert_eq!(g.stream.stats().shards[0].blocked_senders, 1);
    }
    assert_eq!(g.stream.stats().shards[0].blocked_senders, 0);
    // A waiting task is woken when the worker takes the queue.
    let waiter = {
        let stream = g.stream.clone();
        thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            runtime.block_on(stream.room(0));
            stream.try_send((0, 3)).expect("room")
        })
    };
    g.await_blocked(1);
    g.go.send(()).expect("gate"); // event 0 done: the worker takes 1 and 2
    assert_eq!(waiter.join().expect("waiter").accepted(), 1);
    // A shut-down stream has "room": the next send fails instead of waiting.
    let stream = g.stream.clone();
    let log = g.finish();
    assert_eq!(events(&log), vec![0, 1, 2, 3]);
    assert_eq!(pin!(stream.room(0)).poll(&mut cx), Poll::Ready(()));
    assert_eq!(pin!(stream.room(7)).poll(&mut cx), Poll::Ready(()));
}
