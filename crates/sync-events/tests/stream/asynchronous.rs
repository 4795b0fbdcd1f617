//! Async observers on tokio: order, receipts, panics.

use std::collections::BTreeMap;
use std::sync::mpsc::{self};

use sync_events::{AsyncObserver, Builder};

use crate::common::*;

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
