//! What idle accounts cost: many `Manager`s started on in-memory storage against an API that
//! answers an empty difference, with a no-op handler, each with its own dispatch or all on one
//! shared `DispatchPool`. Reports, per account: heap bytes (a counting global allocator), tokio
//! tasks alive, resident memory (`/proc/self/statm`), and the time until every manager is idle
//! after its first `getDifference`; then how often the idle managers' futures were polled over
//! a quiet window (each run future is wrapped in a poll counter).
//!
//! `cargo bench -p sync-benches --bench idle` runs 1,000 and 10,000 accounts;
//! `IDLE_ACCOUNTS=1000,10000,100000` picks the sizes, `IDLE_MODES=private,pool` the modes,
//! `IDLE_WINDOW_MS` (default 2,000) the quiet window; `IDLE_BREAKDOWN=1` also prints the size of
//! a manager's run future and the live allocations per account by size.
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use sync_core::{ChannelDifference, Commit, Difference, Sequence, State, Update};
use sync_runtime::{
    Api, ApiError, BoxError, ChannelDifferenceRequest, DifferenceRequest, DispatchPool, Handler,
    Manager, Peer, PeerKey,
};
use sync_storage::{MemoryStorage, StateStorage};

/// Counts the bytes live on the heap.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Live allocations by size (the last bucket takes every larger one), for `IDLE_BREAKDOWN`.
static BY_SIZE: [AtomicIsize; SIZES + 1] = [const { AtomicIsize::new(0) }; SIZES + 1];
const SIZES: usize = 16_384;

fn by_size(size: usize, delta: isize) {
    BY_SIZE[size.min(SIZES)].fetch_add(delta, Ordering::Relaxed);
}

fn sizes() -> Vec<isize> {
    BY_SIZE.iter().map(|n| n.load(Ordering::Relaxed)).collect()
}

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        by_size(layout.size(), 1);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        by_size(layout.size(), -1);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        by_size(layout.size(), 1);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        by_size(new_size, 1);
        by_size(layout.size(), -1);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[derive(Debug, Clone)]
struct Message {
    chat: i64,
    pts: i32,
}

impl Update for Message {
    fn sequence(&self) -> Sequence {
        Sequence::Common {
            pts: self.pts,
            pts_count: 1,
        }
    }
}

impl Peer for Message {
    fn peer(&self) -> Option<PeerKey> {
        Some(PeerKey::Chat(self.chat))
    }
}

/// A server with nothing new: every difference is empty.
struct Client(Arc<AtomicUsize>);

impl Api for Client {
    type Update = Message;
    type Entities = ();

    async fn get_state(&self) -> Result<State, ApiError> {
        Ok(STATE)
    }

    async fn get_difference(&self, r: DifferenceRequest) -> Result<Difference<Message>, ApiError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(Difference::Empty {
            date: r.date,
            seq: STATE.seq,
        })
    }

    async fn get_channel_difference(
        &self,
        _: ChannelDifferenceRequest,
    ) -> Result<ChannelDifference<Message>, ApiError> {
        Err(ApiError::rpc(400, "CHANNEL_INVALID"))
    }
}

const STATE: State = State {
    pts: 100,
    qts: 1,
    date: 1_700_000_000,
    seq: 1,
};

struct Noop;

impl Handler<Message, ()> for Noop {
    async fn handle(&self, _: Message, _: Arc<[()]>) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Counts the polls of the future it wraps.
struct Polled<F> {
    inner: Pin<Box<F>>,
    polls: Arc<AtomicU64>,
}

impl<F: Future> Future for Polled<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.inner.as_mut().poll(cx)
    }
}

/// `IDLE_BREAKDOWN=1`: also print the run future's size and the live allocations by size.
fn breakdown() -> bool {
    std::env::var_os("IDLE_BREAKDOWN").is_some()
}

fn rss() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

async fn measure(accounts: usize, pooled: bool, window: Duration) {
    let storage = Arc::new(MemoryStorage::new());
    // Each account has a stored state, so each starts with one `getDifference`.
    for account in 0..accounts {
        let commit = Commit {
            state: Some(STATE),
            ..Commit::default()
        };
        storage.apply(account as i64, &commit).await.unwrap();
    }
    let differences = Arc::new(AtomicUsize::new(0));
    let polls = Arc::new(AtomicU64::new(0));
    let metrics = tokio::runtime::Handle::current().metrics();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let sizes0 = sizes();
    let (heap0, tasks0, rss0) = (
        LIVE.load(Ordering::Relaxed),
        metrics.num_alive_tasks(),
        rss(),
    );

    let started = Instant::now();
    let pool = pooled.then(|| DispatchPool::new(8, 1_024).unwrap());
    let mut handles = Vec::with_capacity(accounts);
    let mut runs = Vec::with_capacity(accounts);
    for account in 0..accounts {
        let mut manager = Manager::new(
            account as i64,
            Client(Arc::clone(&differences)),
            Arc::clone(&storage),
            Noop,
        );
        if let Some(pool) = &pool {
            manager = manager.with_pool(pool);
        }
        handles.push(manager.handle());
        let run = manager.run();
        if account == 0 && breakdown() {
            println!(
                "run future: {} bytes, handle: {} bytes",
                std::mem::size_of_val(&run),
                std::mem::size_of_val(&handles[0])
            );
        }
        runs.push(tokio::spawn(Polled {
            inner: Box::pin(run),
            polls: Arc::clone(&polls),
        }));
    }
    while differences.load(Ordering::Relaxed) < accounts
        || !handles.iter().all(|handle| handle.stats().idle)
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let startup = started.elapsed();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let heap = LIVE.load(Ordering::Relaxed).saturating_sub(heap0);
    let tasks = metrics.num_alive_tasks().saturating_sub(tasks0);
    let resident = rss().saturating_sub(rss0);
    if breakdown() {
        // Per account: how many allocations of each size are live, largest share first.
        let mut live: Vec<(usize, f64)> = sizes()
            .iter()
            .zip(&sizes0)
            .enumerate()
            .map(|(size, (n, n0))| (size, (n - n0) as f64 / accounts as f64))
            .filter(|(_, n)| n.abs() >= 0.01)
            .collect();
        live.sort_by(|a, b| (b.0 as f64 * b.1).total_cmp(&(a.0 as f64 * a.1)));
        for (size, n) in live.iter().take(40) {
            println!("  {size:>6} B x {n:>5.2} = {:>7.0} B", *size as f64 * n);
        }
    }

    let before = polls.load(Ordering::Relaxed);
    tokio::time::sleep(window).await;
    let quiet = polls.load(Ordering::Relaxed) - before;

    let stopping = Instant::now();
    for handle in &handles {
        handle.shutdown();
    }
    for run in runs {
        let summary = run.await.unwrap().unwrap();
        assert_eq!(summary.abandoned, 0);
    }
    let shutdown = stopping.elapsed();
    if let Some(pool) = pool {
        pool.shutdown();
        pool.drained().await;
    }
    let n = accounts as f64;
    println!(
        "| {accounts} | {} | {:.0} | {:.2} | {:.0} | {:.0} ms | {quiet} | {:.0} ms |",
        if pooled {
            "shared pool (8 shards)"
        } else {
            "own dispatch (8 shards)"
        },
        heap as f64 / n,
        tasks as f64 / n,
        resident as f64 / n,
        startup.as_secs_f64() * 1e3,
        shutdown.as_secs_f64() * 1e3,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    let sizes: Vec<usize> = env_list("IDLE_ACCOUNTS", "1000,10000")
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    let modes = env_list("IDLE_MODES", "private,pool");
    let window = Duration::from_millis(
        std::env::var("IDLE_WINDOW_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2_000),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| accounts | dispatch | heap bytes / account | tasks / account | RSS bytes / account | start-up (all idle) | polls in {} ms idle | shutdown |",
        window.as_millis()
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for &accounts in &sizes {
        for mode in &modes {
            runtime.block_on(measure(accounts, mode == "pool", window));
        }
    }
}
