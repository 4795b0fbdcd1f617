//! Throughput of `sync-events`: events/s from P producers through S shards to a trivial
//! observer, sent one by one or in batches, against a naive baseline (one bounded
//! `std::sync::mpsc::sync_channel` per shard, one event per message).
//!
//! Run: `cargo bench -p sync-benches --bench events` (figures in `docs/EVENTS.md`).

use std::hint::black_box;
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sync_events::{Builder, Observer, shard_for_key};

/// Events per measured iteration, split evenly over the producers.
const EVENTS: u64 = 1 << 20;
/// Queue capacity per shard, for both designs.
const CAPACITY: usize = 1024;

/// `(key, payload)`: routed by the key.
type Ev = (u64, u64);

/// The trivial observer: sums the payloads.
struct Sum(u64);

impl Observer<Ev> for Sum {
    fn handle(&mut self, (_, value): Ev) {
        self.0 = self.0.wrapping_add(value);
    }

    fn shutdown(&mut self) {
        black_box(self.0);
    }
}

/// Producer `p`'s `i`-th event: keys spread over 4096 streams.
fn event(p: u64, i: u64) -> Ev {
    ((i.wrapping_mul(31) ^ p.wrapping_mul(0x9e37)) & 4095, i)
}

/// One run of the sharded stream; returns the time from the producers' start to the end of
/// the drain.
fn run_stream(shards: usize, producers: usize, batch: u64) -> Duration {
    let (stream, workers) = Builder::new()
        .shards(shards)
        .capacity(CAPACITY)
        .build(|_| Sum(0))
        .expect("valid config");
    let threads = workers.spawn_threads().expect("threads");
    let per_producer = EVENTS / producers as u64;
    let start = Arc::new(Barrier::new(producers + 1));
    let handles: Vec<_> = (0..producers as u64)
        .map(|p| {
            let stream = stream.clone();
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                let mut i = 0;
                while i < per_producer {
                    let end = (i + batch).min(per_producer);
                    if batch == 1 {
                        stream.send(event(p, i)).expect("open");
                    } else {
                        stream
                            .send_batch((i..end).map(|j| event(p, j)))
                            .expect("open");
                    }
                    i = end;
                }
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    for h in handles {
        h.join().expect("producer");
    }
    stream.shutdown_and_wait();
    let elapsed = began.elapsed();
    threads.join();
    elapsed
}

/// One run of the naive design: one bounded channel per shard, one event per message.
fn run_naive(shards: usize, producers: usize) -> Duration {
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..shards).map(|_| sync_channel::<Ev>(CAPACITY)).unzip();
    let workers: Vec<_> = receivers
        .into_iter()
        .map(|rx| {
            thread::spawn(move || {
                let mut sum = Sum(0);
                for e in rx {
                    sum.handle(e);
                }
                sum.shutdown();
            })
        })
        .collect();
    let per_producer = EVENTS / producers as u64;
    let start = Arc::new(Barrier::new(producers + 1));
    let handles: Vec<_> = (0..producers as u64)
        .map(|p| {
            let senders = senders.clone();
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                for i in 0..per_producer {
                    let e = event(p, i);
                    senders[shard_for_key(&e.0, senders.len())]
                        .send(e)
                        .expect("open");
                }
            })
        })
        .collect();
    drop(senders);
    start.wait();
    let began = Instant::now();
    for h in handles {
        h.join().expect("producer");
    }
    for w in workers {
        w.join().expect("worker");
    }
    began.elapsed()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("events");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(EVENTS));
    for shards in [1, 2, 4] {
        for producers in [1, 4, 16] {
            for batch in [1_u64, 64, 256] {
                let id = BenchmarkId::new("stream", format!("s{shards}/p{producers}/b{batch}"));
                group.bench_function(id, |b| {
                    b.iter_custom(|iters| {
                        (0..iters)
                            .map(|_| run_stream(shards, producers, batch))
                            .sum()
                    })
                });
            }
            let id = BenchmarkId::new("naive_sync_channel", format!("s{shards}/p{producers}"));
            group.bench_function(id, |b| {
                b.iter_custom(|iters| (0..iters).map(|_| run_naive(shards, producers)).sum())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
