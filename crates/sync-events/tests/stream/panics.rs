//! A panicking observer is reported and isolated; a panicking shutdown still drains.

use std::sync::Mutex;
use std::sync::mpsc::{self};

use sync_events::{Builder, Observer, PanicPhase, shard_for_key};

use crate::common::*;

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
