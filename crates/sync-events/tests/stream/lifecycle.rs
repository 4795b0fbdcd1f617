//! Shutdown, dropped workers and handles, the no-op stream, invalid settings.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use sync_events::{Builder, ConfigError, EventStream, NotHandled, Observer, Overflow, SendFailure};

use crate::common::*;

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
