//! The sans-IO engine's hot paths, on a lean update type.
//!
//! `cargo bench -p sync-benches --bench core`
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sync_core::{Difference, Engine, Output, Sequence, State, Updates};
use sync_testkit::lean::{Lean, START, drain, ready_engine};

const N: i32 = 10_000;

fn feed(engine: &mut Engine<Lean>, now: Instant, updates: &[Lean]) -> usize {
    let mut delivered = 0;
    for &update in updates {
        engine
            .handle_updates(now, Updates::Short { update, date: 0 })
            .unwrap();
        delivered += drain(engine);
    }
    delivered
}

/// Like [`feed`], for a driver that polls after every 64 pushes.
fn feed_batched(engine: &mut Engine<Lean>, now: Instant, updates: &[Lean]) -> usize {
    let mut delivered = 0;
    for chunk in updates.chunks(64) {
        for &update in chunk {
            engine
                .handle_updates(now, Updates::Short { update, date: 0 })
                .unwrap();
        }
        delivered += drain(engine);
    }
    delivered
}

fn common(range: std::ops::RangeInclusive<i32>) -> Vec<Lean> {
    range
        .map(|pts| Lean(Sequence::Common { pts, pts_count: 1 }))
        .collect()
}

fn bench_core(c: &mut Criterion) {
    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Elements(N as u64));
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));

    let in_order = common(2..=N + 1);
    // A driver that takes 64 pushes from its socket before polling (as the runtime does with
    // its intake): the per-poll work is shared by the batch.
    group.bench_function("in_order_common_pts_polled_every_64", |b| {
        b.iter_batched_ref(
            || ready_engine(0),
            |(e, now)| black_box(feed_batched(e, *now, &in_order)),
            BatchSize::LargeInput,
        );
    });
    group.bench_function("in_order_common_pts", |b| {
        b.iter_batched_ref(
            || ready_engine(0),
            |(e, now)| black_box(feed(e, *now, &in_order)),
            BatchSize::LargeInput,
        );
    });

    for channels in [1i64, 1_000, 100_000] {
        let updates: Vec<Lean> = (0..N as i64)
            .map(|i| {
                let channel_id = i % channels + 1;
                let pts = (i / channels) as i32 + 2;
                Lean(Sequence::Channel {
                    channel_id,
                    pts,
                    pts_count: 1,
                })
            })
            .collect();
        group.bench_function(format!("channels_round_robin_{channels}"), |b| {
            b.iter_batched_ref(
                || ready_engine(channels),
                |(e, now)| black_box(feed(e, *now, &updates)),
                BatchSize::LargeInput,
            );
        });
    }

    for percent in [1usize, 10] {
        // Swap `percent`% of neighbouring pairs: each swap opens a gap the next push closes.
        let mut updates = common(2..=N + 1);
        let step = 100 / percent;
        for i in (0..updates.len() - 1).step_by(step) {
            updates.swap(i, i + 1);
        }
        group.bench_function(format!("reordered_{percent}_percent"), |b| {
            b.iter_batched_ref(
                || ready_engine(0),
                |(e, now)| black_box(feed(e, *now, &updates)),
                BatchSize::LargeInput,
            );
        });
        group.bench_function(
            format!("reordered_{percent}_percent_polled_every_64"),
            |b| {
                b.iter_batched_ref(
                    || ready_engine(0),
                    |(e, now)| black_box(feed_batched(e, *now, &updates)),
                    BatchSize::LargeInput,
                );
            },
        );
    }

    let duplicated: Vec<Lean> = common(2..=N / 2 + 1)
        .into_iter()
        .flat_map(|u| [u, u])
        .collect();
    group.bench_function("every_update_twice", |b| {
        b.iter_batched_ref(
            || ready_engine(0),
            |(e, now)| black_box(feed(e, *now, &duplicated)),
            BatchSize::LargeInput,
        );
    });

    let containers: Vec<Vec<Lean>> = common(2..=N + 1).chunks(10).map(<[Lean]>::to_vec).collect();
    group.bench_function("seq_containers_of_10", |b| {
        b.iter_batched_ref(
            || (ready_engine(0), containers.clone()),
            |((e, now), containers)| {
                let mut delivered = 0;
                for (i, updates) in containers.drain(..).enumerate() {
                    let seq = i as i32 + 2;
                    e.handle_updates(
                        *now,
                        Updates::Combined {
                            updates,
                            entities: (),
                            date: 0,
                            seq_start: seq,
                            seq,
                        },
                    )
                    .unwrap();
                    delivered += drain(e);
                }
                black_box(delivered)
            },
            BatchSize::LargeInput,
        );
    });

    group.bench_function("difference_of_10k", |b| {
        b.iter_batched_ref(
            || {
                let (mut e, now) = ready_engine(0);
                e.request_difference(now);
                let Some(Output::Request(request)) = e.poll_output() else {
                    unreachable!()
                };
                (e, now, request.id, common(2..=N + 1))
            },
            |(e, now, id, updates)| {
                let state = State {
                    pts: N + 1,
                    ..START
                };
                let difference = Difference::Difference {
                    updates: std::mem::take(updates),
                    entities: (),
                    state,
                    slice: false,
                };
                e.handle_difference(*now, *id, difference).unwrap();
                black_box(drain(e))
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(benches, bench_core);
criterion_main!(benches);
