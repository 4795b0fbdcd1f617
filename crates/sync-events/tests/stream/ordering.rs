//! Per-key order and pinning, keyless events, combined observers, receipts.

use std::sync::mpsc::{self};
use std::sync::{Arc, Barrier};
use std::thread;

use sync_events::{Both, Builder, Event, Overflow, shard_for_key};

use crate::common::*;

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
