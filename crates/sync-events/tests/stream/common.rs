//! Observers that record what they see, a gated observer that holds the worker, and the checks of their logs.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;

use sync_events::{Builder, EventStream, Observer, Overflow, shard_for_key};

/// `(key, (producer, sequence number))`.
pub(crate) type Ev = (u64, (usize, u64));

/// What an observer saw, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seen<T> {
    Event(T),
    Shutdown,
}

/// Records everything it sees and sends the log, with its shard, at shutdown.
pub(crate) struct Recorder<T> {
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
pub(crate) type Logs<T> = Receiver<(usize, Vec<Seen<T>>)>;

pub(crate) fn recorders<T: Send + 'static>() -> (impl FnMut(usize) -> Recorder<T>, Logs<T>) {
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
pub(crate) fn collect_logs<T>(rx: &Logs<T>) -> BTreeMap<usize, Vec<Seen<T>>> {
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
pub(crate) fn check_logs(logs: &BTreeMap<usize, Vec<Seen<Ev>>>, shards: usize, expected: usize) {
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

/// An observer that tells when it starts an event and then waits for a go-ahead per event.
pub(crate) struct Gated {
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

pub(crate) struct GatedStream {
    pub(crate) stream: EventStream<(u8, u64)>,
    pub(crate) started: Receiver<u64>,
    pub(crate) go: Sender<()>,
    pub(crate) log: Arc<Mutex<Vec<Seen<u64>>>>,
    pub(crate) threads: sync_events::WorkerThreads,
}

/// One shard, `capacity`, `overflow`; event 0 is sent and in the observer's hands on return,
/// so the queue is empty and the worker busy.
pub(crate) fn gated(capacity: usize, overflow: Overflow) -> GatedStream {
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
    pub(crate) fn await_blocked(&self, n: usize) {
        while self.stream.stats().shards[0].blocked_senders != n {
            thread::yield_now();
        }
    }

    pub(crate) fn finish(self) -> Vec<Seen<u64>> {
        drop(self.go); // open the gate for good
        self.stream.shutdown_and_wait();
        self.threads.join();
        let log = self.log.lock().expect("log").clone();
        drop(self.started);
        log
    }
}

pub(crate) fn events(log: &[Seen<u64>]) -> Vec<u64> {
    log.iter()
        .filter_map(|s| match s {
            Seen::Event(n) => Some(*n),
            Seen::Shutdown => None,
        })
        .collect()
}
