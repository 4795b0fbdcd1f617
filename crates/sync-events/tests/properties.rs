//! Property test: per-key order and exactly-once delivery over random keys, producers, batch
//! shapes, shard counts and queue capacities.
//!
//! Runs a modest number of cases by default; set `PROPTEST_CASES` for a longer run.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;

use proptest::prelude::*;
use sync_events::{Builder, Observer, shard_for_key};

/// `(key, (producer, sequence number))`.
type Ev = (u8, (usize, u32));

struct Recorder {
    shard: usize,
    log: Vec<Ev>,
    shutdowns: usize,
    out: mpsc::Sender<(usize, Vec<Ev>)>,
}

impl Observer<Ev> for Recorder {
    fn handle(&mut self, event: Ev) {
        assert_eq!(self.shutdowns, 0, "event after shutdown");
        self.log.push(event);
    }

    fn shutdown(&mut self) {
        self.shutdowns += 1;
        let _ = self.out.send((self.shard, std::mem::take(&mut self.log)));
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

/// Per producer, a list of batches, each a list of keys.
fn workload() -> impl Strategy<Value = Vec<Vec<Vec<u8>>>> {
    prop::collection::vec(
        prop::collection::vec(prop::collection::vec(0_u8..12, 1..9), 0..12),
        1..5,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn order_and_exactly_once(shards in 1_usize..5, capacity in 1_usize..9, producers in workload()) {
        let (tx, rx) = mpsc::channel();
        let (stream, workers) = Builder::new()
            .shards(shards)
            .capacity(capacity)
            .build(move |shard| Recorder { shard, log: Vec::new(), shutdowns: 0, out: tx.clone() })
            .expect("valid config");
        let threads = workers.spawn_threads().expect("threads");
        let start = Arc::new(Barrier::new(producers.len()));
        let mut expected = 0;
        let handles: Vec<_> = producers
            .into_iter()
            .enumerate()
            .map(|(p, batches)| {
                expected += batches.iter().map(Vec::len).sum::<usize>();
                let stream = stream.clone();
                let start = Arc::clone(&start);
                thread::spawn(move || {
                    start.wait();
                    let mut seq = 0_u32;
                    for keys in batches {
                        let batch: Vec<Ev> = keys
                            .into_iter()
                            .map(|k| {
                                seq += 1;
                                (k, (p, seq))
                            })
                            .collect();
                        if let [one] = batch[..] {
                            stream.send(one).expect("open");
                        } else {
                            stream.send_batch(batch).expect("open");
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("producer");
        }
        stream.shutdown_and_wait();
        threads.join();

        let logs: Vec<(usize, Vec<Ev>)> = rx.try_iter().collect();
        prop_assert_eq!(logs.len(), shards, "one shutdown per observer");
        let mut seen = HashMap::new();
        let mut last: HashMap<(usize, u8), u32> = HashMap::new();
        for (shard, log) in logs {
            for (key, (p, seq)) in log {
                prop_assert_eq!(shard, shard_for_key(&key, shards));
                prop_assert!(seen.insert((p, seq), shard).is_none(), "delivered twice");
                if let Some(prev) = last.insert((p, key), seq) {
                    prop_assert!(prev < seq, "out of order");
                }
            }
        }
        prop_assert_eq!(seen.len(), expected, "every event delivered");
        let total = stream.stats().total();
        prop_assert_eq!(total.sent, expected as u64);
        prop_assert_eq!(total.delivered, expected as u64);
    }
}
