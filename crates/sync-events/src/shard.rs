//! One shard: a bounded queue, its worker's and senders' wake-ups, and delivery watchers.
//!
//! Invariants kept here (each at the code that keeps it):
//!
//! 1. Events enter the queue only while the shard is open, and the worker reports "drained"
//!    only when the shard is closed *and* the queue is empty; both checks happen under the
//!    same lock, so every accepted event is delivered before the observer's shutdown, and none
//!    after it.
//! 2. The queue never holds more than `capacity` events; the worker takes the whole queue at
//!    each wake-up, so at most `2 × capacity` events are in memory per shard (queued plus the
//!    batch in hand).
//! 3. A waiter (worker, blocked sender, delivery watcher) is registered under the lock that
//!    guards the condition it waits for, and whoever changes that condition takes the
//!    registered wakers under the same lock: no wake-up is lost.

use std::mem;
use std::task::{Context, Poll, Waker};

use crate::sync::{AtomicU64, Mutex, Ordering, fence, lock};

/// What [`Shard::push`] did.
pub(crate) struct Pushed {
    /// The shard's accepted count after the push, if it accepted anything.
    pub(crate) position: Option<u64>,
    /// How many events it accepted.
    pub(crate) accepted: usize,
    /// The shard is closed; nothing was accepted.
    pub(crate) closed: bool,
    /// The id under which the sender's waker was registered, if it was.
    pub(crate) registered: Option<u64>,
}

/// What a delivery watcher waits for.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Target {
    /// The shard has delivered this many events.
    Delivered(u64),
    /// The worker has finished (observer shut down, or the worker was dropped).
    Finished,
}

/// A delivery watcher: a task waiting for [`Target`].
struct Watcher {
    id: u64,
    /// The delivered count that wakes it (`u64::MAX` for [`Target::Finished`]).
    at: u64,
    waker: Waker,
}

struct State<E> {
    queue: Vec<E>,
    /// Events ever accepted; the position of the newest one.
    accepted: u64,
    closed: bool,
    /// The worker, when it is waiting for events.
    worker: Option<Waker>,
    /// Senders waiting for room, by id.
    senders: Vec<(u64, Waker)>,
    next_sender: u64,
}

struct Watch {
    watchers: Vec<Watcher>,
    next_id: u64,
    /// The worker has finished: nothing more will be delivered.
    finished: bool,
    last_panic: Option<String>,
}

/// One shard of a stream.
pub(crate) struct Shard<E> {
    state: Mutex<State<E>>,
    watch: Mutex<Watch>,
    /// The lowest `Watcher::at` (`u64::MAX` when none): lets the worker skip the watch lock
    /// after each event unless somebody waits for that point.
    wake_at: AtomicU64,
    /// Mirror of `State::accepted`, for stats without the lock.
    pub(crate) sent: AtomicU64,
    /// Events handed to the observer and returned from it (panicked ones included).
    pub(crate) delivered: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) panics: AtomicU64,
}

impl<E> Shard<E> {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                queue: Vec::new(),
                accepted: 0,
                closed: false,
                worker: None,
                senders: Vec::new(),
                next_sender: 0,
            }),
            watch: Mutex::new(Watch {
                watchers: Vec::new(),
                next_id: 0,
                finished: false,
                last_panic: None,
            }),
            wake_at: AtomicU64::new(u64::MAX),
            sent: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            panics: AtomicU64::new(0),
        }
    }

    /// Accepts one event if the shard is open and has room; otherwise hands it back with
    /// whether the shard is closed.
    pub(crate) fn try_push_one(&self, event: E, capacity: usize) -> Result<u64, (E, bool)> {
        let mut st = lock(&self.state);
        // Invariant 1: nothing enters a closed shard.
        if st.closed {
            return Err((event, true));
        }
        // Invariant 2: the queue stays within capacity.
        if st.queue.len() >= capacity {
            return Err((event, false));
        }
        st.queue.push(event);
        st.accepted += 1;
        let position = st.accepted;
        self.sent.store(position, Ordering::Relaxed);
        let worker = st.worker.take();
        drop(st);
        if let Some(worker) = worker {
            worker.wake();
        }
        Ok(position)
    }

    /// Moves as many events from the front of `pending` into the queue as there is room for.
    ///
    /// If some remain and `waker` is given, registers it to be woken when the worker makes
    /// room (or the shard closes).
    pub(crate) fn push(
        &self,
        pending: &mut Vec<E>,
        capacity: usize,
        waker: Option<&Waker>,
    ) -> Pushed {
        let mut st = lock(&self.state);
        // Invariant 1.
        if st.closed {
            return Pushed {
                position: None,
                accepted: 0,
                closed: true,
                registered: None,
            };
        }
        // Invariant 2.
        let room = capacity.saturating_sub(st.queue.len());
        let n = room.min(pending.len());
        let mut position = None;
        let mut worker = None;
        if n > 0 {
            if n == pending.len() {
                st.queue.append(pending);
            } else {
                st.queue.extend(pending.drain(..n));
            }
            st.accepted += n as u64;
            self.sent.store(st.accepted, Ordering::Relaxed);
            position = Some(st.accepted);
            worker = st.worker.take();
        }
        let mut registered = None;
        if let Some(waker) = waker.filter(|_| !pending.is_empty()) {
            // Invariant 3: registered under the lock the worker takes to make room.
            let id = st.next_sender;
            st.next_sender += 1;
            st.senders.push((id, waker.clone()));
            registered = Some(id);
        }
        drop(st);
        if let Some(worker) = worker {
            worker.wake();
        }
        Pushed {
            position,
            accepted: n,
            closed: false,
            registered,
        }
    }

    /// A wait for room: `Ready` when the queue has room for one more event or the shard is
    /// closed, else registers `cx`'s waker among the blocked senders (replacing the one
    /// registered under `id` earlier), to be woken when the worker makes room.
    pub(crate) fn poll_room(
        &self,
        cx: &mut Context<'_>,
        capacity: usize,
        id: &mut Option<u64>,
    ) -> Poll<()> {
        let mut st = lock(&self.state);
        if let Some(old) = id.take() {
            st.senders.retain(|(other, _)| *other != old);
        }
        if st.closed || st.queue.len() < capacity {
            return Poll::Ready(());
        }
        // Invariant 3: registered under the lock the worker takes to make room.
        let new = st.next_sender;
        st.next_sender += 1;
        st.senders.push((new, cx.waker().clone()));
        *id = Some(new);
        Poll::Pending
    }

    /// Forgets a blocked sender's registration (it was woken, or it gave up).
    pub(crate) fn unregister_sender(&self, id: u64) {
        let mut st = lock(&self.state);
        st.senders.retain(|(other, _)| *other != id);
    }

    /// The worker's wait: swaps the queued events into `batch` (which must be empty) and
    /// returns `true`, or returns `false` once the shard is closed and drained.
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>, batch: &mut Vec<E>) -> Poll<bool> {
        let mut st = lock(&self.state);
        if !st.queue.is_empty() {
            // Swapping keeps both buffers' allocations: the queue gets the worker's emptied
            // batch back, so a steady stream allocates nothing.
            mem::swap(&mut st.queue, batch);
            let senders = mem::take(&mut st.senders);
            drop(st);
            for (_, waker) in senders {
                waker.wake();
            }
            return Poll::Ready(true);
        }
        // Invariant 1: closed and empty under one lock; no event can follow.
        if st.closed {
            return Poll::Ready(false);
        }
        // Invariant 3: registered under the lock senders take to push.
        match &st.worker {
            Some(old) if old.will_wake(cx.waker()) => {}
            _ => st.worker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Closes the shard: no event is accepted after this. Wakes the worker (to drain and shut
    /// its observer down) and every blocked sender (to fail with `Closed`).
    pub(crate) fn close(&self) {
        let mut st = lock(&self.state);
        st.closed = true;
        let worker = st.worker.take();
        let senders = mem::take(&mut st.senders);
        drop(st);
        if let Some(worker) = worker {
            worker.wake();
        }
        for (_, waker) in senders {
            waker.wake();
        }
    }

    /// Called by the worker after each event: publishes the delivered count, and wakes the
    /// watchers it satisfies when the cheap check sees one.
    ///
    /// The check is opportunistic (relaxed); [`Shard::publish`] at the end of every batch is
    /// the one that guarantees no watcher is missed.
    pub(crate) fn progress(&self, delivered: u64) {
        self.delivered.store(delivered, Ordering::Release);
        if delivered >= self.wake_at.load(Ordering::Relaxed) {
            self.wake_watchers(delivered);
        }
    }

    /// Called by the worker after each batch: publishes the count and wakes every watcher it
    /// satisfies.
    ///
    /// This is the store-buffering (Dekker) pattern: the worker stores `delivered` then loads
    /// `wake_at`; a watcher stores `wake_at` then loads `delivered` (see
    /// [`Shard::poll_watch`]). A `SeqCst` fence between the store and the load on both sides
    /// guarantees that at least one of them sees the other's store, so a watcher is either
    /// woken here or sees its target reached itself.
    pub(crate) fn publish(&self, delivered: u64) {
        self.delivered.store(delivered, Ordering::Release);
        fence(Ordering::SeqCst);
        if delivered >= self.wake_at.load(Ordering::Relaxed) {
            self.wake_watchers(delivered);
        }
    }

    fn wake_watchers(&self, delivered: u64) {
        let mut due = Vec::new();
        let mut w = lock(&self.watch);
        w.watchers.retain(|watcher| {
            if watcher.at <= delivered {
                due.push(watcher.waker.clone());
                false
            } else {
                true
            }
        });
        let min = w.watchers.iter().map(|x| x.at).min().unwrap_or(u64::MAX);
        self.wake_at.store(min, Ordering::Relaxed);
        drop(w);
        for waker in due {
            waker.wake();
        }
    }

    /// A watcher's poll: `Ready(true)` when the target is reached, `Ready(false)` when it never
    /// will be (the worker finished first), else registers `cx`'s waker under `id`.
    pub(crate) fn poll_watch(
        &self,
        cx: &mut Context<'_>,
        target: Target,
        id: &mut Option<u64>,
    ) -> Poll<bool> {
        let at = match target {
            Target::Delivered(n) => n,
            Target::Finished => u64::MAX,
        };
        // Acquire: the observer's work on the awaited events happens-before the caller's next
        // step.
        if at != u64::MAX && self.delivered.load(Ordering::Acquire) >= at {
            self.unwatch(id);
            return Poll::Ready(true);
        }
        let mut w = lock(&self.watch);
        if w.finished {
            // `delivered` is final once `finished` is set (the worker stored it before).
            let reached = at == u64::MAX || self.delivered.load(Ordering::Acquire) >= at;
            if let Some(old) = id.take() {
                w.watchers.retain(|x| x.id != old);
            }
            return Poll::Ready(reached);
        }
        let my_id = match *id {
            Some(i) => i,
            None => {
                let i = w.next_id;
                w.next_id += 1;
                *id = Some(i);
                i
            }
        };
        match w.watchers.iter_mut().find(|x| x.id == my_id) {
            Some(entry) => {
                if !entry.waker.will_wake(cx.waker()) {
                    entry.waker = cx.waker().clone();
                }
            }
            None => w.watchers.push(Watcher {
                id: my_id,
                at,
                waker: cx.waker().clone(),
            }),
        }
        let min = w.watchers.iter().map(|x| x.at).min().unwrap_or(u64::MAX);
        self.wake_at.store(min, Ordering::Relaxed);
        drop(w);
        // Invariant 3 for watchers: the other half of the fence pairing in `publish`.
        fence(Ordering::SeqCst);
        if at != u64::MAX && self.delivered.load(Ordering::Acquire) >= at {
            self.unwatch(id);
            return Poll::Ready(true);
        }
        Poll::Pending
    }

    /// Forgets a watcher's registration, if any.
    pub(crate) fn unwatch(&self, id: &mut Option<u64>) {
        if let Some(old) = id.take() {
            let mut w = lock(&self.watch);
            w.watchers.retain(|x| x.id != old);
        }
    }

    /// Records a caught observer panic's message.
    pub(crate) fn record_panic(&self, message: String) {
        self.panics.fetch_add(1, Ordering::Relaxed);
        lock(&self.watch).last_panic = Some(message);
    }

    /// The worker is done (its observer has shut down): wakes every watcher.
    pub(crate) fn finish(&self) {
        let mut w = lock(&self.watch);
        w.finished = true;
        let watchers = mem::take(&mut w.watchers);
        self.wake_at.store(u64::MAX, Ordering::Relaxed);
        drop(w);
        for watcher in watchers {
            watcher.waker.wake();
        }
    }

    /// The worker was dropped before it finished: closes the shard, counts what it will never
    /// deliver as lost, and releases everyone waiting. Does nothing if the worker finished.
    pub(crate) fn abandon(&self) {
        if lock(&self.watch).finished {
            return;
        }
        let mut st = lock(&self.state);
        st.closed = true;
        let queued = mem::take(&mut st.queue);
        let worker = st.worker.take();
        let senders = mem::take(&mut st.senders);
        // The worker will never run again, so `delivered` is final and `accepted` cannot grow.
        let lost = st
            .accepted
            .saturating_sub(self.delivered.load(Ordering::Acquire));
        drop(st);
        self.lost.store(lost, Ordering::Relaxed);
        // Dropped outside the lock: an event's destructor is user code.
        drop(queued);
        drop(worker);
        for (_, waker) in senders {
            waker.wake();
        }
        self.finish();
    }

    /// A snapshot for [`crate::Stats`].
    pub(crate) fn snapshot(&self) -> crate::ShardStats {
        let blocked_senders = lock(&self.state).senders.len();
        let (finished, last_panic) = {
            let w = lock(&self.watch);
            (w.finished, w.last_panic.clone())
        };
        let sent = self.sent.load(Ordering::Relaxed);
        let delivered = self.delivered.load(Ordering::Relaxed);
        let lost = self.lost.load(Ordering::Relaxed);
        crate::ShardStats {
            sent,
            delivered,
            dropped: self.dropped.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            lost,
            panics: self.panics.load(Ordering::Relaxed),
            queued: sent.saturating_sub(delivered).saturating_sub(lost),
            blocked_senders,
            finished,
            last_panic,
        }
    }
}
