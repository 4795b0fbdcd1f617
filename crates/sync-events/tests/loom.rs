//! Model-checked concurrency of the crate's own synchronisation (queue, wake-ups, receipts,
//! shutdown), with loom.
//!
//! Opt in (it rebuilds the crate against loom's primitives, so use a separate target dir):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test -p sync-events --release --test loom
//! ```
//!
//! `LOOM_MAX_PREEMPTIONS` (default here: 2) bounds the search.
#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::Mutex;
use loom::thread;
use sync_events::{Builder, Observer, SendFailure};

struct Log(Arc<Mutex<Vec<Option<u8>>>>);

impl Observer<(u8, u8)> for Log {
    fn handle(&mut self, (_, n): (u8, u8)) {
        self.0.lock().expect("log").push(Some(n));
    }

    fn shutdown(&mut self) {
        // `None` marks the shutdown.
        self.0.lock().expect("log").push(None);
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(2);
    }
    builder.check(f);
}

/// A producer blocked on a full queue, the worker and shutdown: everything accepted is
/// delivered in order, then the observer is shut down once.
#[test]
fn blocking_send_drain_and_shutdown() {
    model(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let for_factory = Arc::clone(&log);
        let (stream, workers) = Builder::new()
            .shards(1)
            .capacity(1)
            .build(move |_| Log(Arc::clone(&for_factory)))
            .expect("valid config");
        let mut workers = workers.into_iter();
        let worker = workers.next().expect("one worker");
        let worker = thread::spawn(move || worker.run_blocking());
        let producer = {
            let stream = stream.clone();
            thread::spawn(move || {
                stream.send((0, 1)).expect("open");
                stream.send((0, 2)).expect("open");
            })
        };
        producer.join().expect("producer");
        stream.shutdown();
        worker.join().expect("worker");
        assert_eq!(*log.lock().expect("log"), vec![Some(1), Some(2), None]);
    });
}

/// A receipt waited on while the worker delivers: the wait returns, and only after delivery.
#[test]
fn receipt_wait_sees_delivery() {
    model(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let for_factory = Arc::clone(&log);
        let (stream, workers) = Builder::new()
            .shards(1)
            .capacity(2)
            .build(move |_| Log(Arc::clone(&for_factory)))
            .expect("valid config");
        let worker = workers.into_iter().next().expect("one worker");
        let worker = thread::spawn(move || worker.run_blocking());
        let receipt = stream.send((0, 7)).expect("open");
        stream.wait_handled(&receipt).expect("handled");
        assert_eq!(log.lock().expect("log").first(), Some(&Some(7)));
        stream.shutdown();
        worker.join().expect("worker");
    });
}

/// A send racing shutdown is either delivered before the observer's shutdown or refused.
#[test]
fn send_racing_shutdown() {
    model(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let for_factory = Arc::clone(&log);
        let (stream, workers) = Builder::new()
            .shards(1)
            .capacity(1)
            .build(move |_| Log(Arc::clone(&for_factory)))
            .expect("valid config");
        let worker = workers.into_iter().next().expect("one worker");
        let worker = thread::spawn(move || worker.run_blocking());
        let sender = {
            let stream = stream.clone();
            thread::spawn(move || stream.send((0, 3)).map(|_| ()).map_err(|e| e.failure))
        };
        stream.shutdown();
        let sent = sender.join().expect("sender");
        worker.join().expect("worker");
        let log = log.lock().expect("log").clone();
        match sent {
            Ok(()) => assert_eq!(log, vec![Some(3), None]),
            Err(failure) => {
                assert_eq!(failure, SendFailure::Closed);
                assert_eq!(log, vec![None]);
            }
        }
    });
}
