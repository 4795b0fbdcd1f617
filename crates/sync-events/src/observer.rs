//! Observers, the factories that make one per shard, and ways to combine them.

use std::future::{Future, ready};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use crate::panic::catch_future;

/// A synchronous observer: counters, metrics, logs — anything that does not wait.
///
/// Each shard owns one observer and calls it from a single worker, so the observer can keep
/// per-stream state in plain fields without locks. A shard's events arrive in the order they
/// were sent for each key; [`Observer::shutdown`] is called exactly once, after the last event.
///
/// Closures `FnMut(E)` are observers.
pub trait Observer<E>: Send + 'static {
    /// Handles one event.
    fn handle(&mut self, event: E);

    /// Called once when the stream has shut down and this shard is drained; nothing is
    /// delivered afterwards.
    fn shutdown(&mut self) {}
}

impl<E, F> Observer<E> for F
where
    F: FnMut(E) + Send + 'static,
{
    fn handle(&mut self, event: E) {
        self(event);
    }
}

/// An asynchronous observer: a handler that awaits (network calls, storage, …).
///
/// The worker awaits each `handle` future before taking the next event, so a shard's events are
/// handled strictly one after another and an observer may keep per-stream state in plain
/// fields. Implement it with `async fn`:
///
/// ```
/// use sync_events::AsyncObserver;
///
/// struct Handler;
///
/// impl AsyncObserver<u64> for Handler {
///     async fn handle(&mut self, event: u64) {
///         // e.g. `client.send_reply(event).await`
///         let _ = event;
///     }
/// }
/// ```
pub trait AsyncObserver<E>: Send + 'static {
    /// Handles one event; the next event of this shard is not started before this completes.
    fn handle(&mut self, event: E) -> impl Future<Output = ()> + Send;

    /// Called once when the stream has shut down and this shard is drained; nothing is
    /// delivered afterwards.
    fn shutdown(&mut self) -> impl Future<Output = ()> + Send {
        ready(())
    }
}

/// Makes the observer of each shard.
///
/// Closures `FnMut(usize) -> O` (taking the shard index) are factories.
pub trait ObserverFactory<E> {
    /// The observer type.
    type Observer: Observer<E>;

    /// Makes the observer of shard `shard` (`0..shards`); called once per shard at build time.
    fn make(&mut self, shard: usize) -> Self::Observer;
}

impl<E, O, F> ObserverFactory<E> for F
where
    F: FnMut(usize) -> O,
    O: Observer<E>,
{
    type Observer = O;

    fn make(&mut self, shard: usize) -> O {
        self(shard)
    }
}

/// Makes the asynchronous observer of each shard.
///
/// Closures `FnMut(usize) -> O` (taking the shard index) are factories.
pub trait AsyncObserverFactory<E> {
    /// The observer type.
    type Observer: AsyncObserver<E>;

    /// Makes the observer of shard `shard` (`0..shards`); called once per shard at build time.
    fn make(&mut self, shard: usize) -> Self::Observer;
}

impl<E, O, F> AsyncObserverFactory<E> for F
where
    F: FnMut(usize) -> O,
    O: AsyncObserver<E>,
{
    type Observer = O;

    fn make(&mut self, shard: usize) -> O {
        self(shard)
    }
}

/// Adapts a synchronous [`Observer`] (or [`ObserverFactory`]) to the asynchronous traits, so it
/// can be combined with asynchronous observers or run by an async worker.
#[derive(Clone, Debug, Default)]
pub struct AsAsync<T>(pub T);

impl<E, O> AsyncObserver<E> for AsAsync<O>
where
    O: Observer<E>,
{
    fn handle(&mut self, event: E) -> impl Future<Output = ()> + Send {
        // Handled eagerly: the returned future is already complete, so a synchronous observer
        // costs one direct call per event on the async path too.
        self.0.handle(event);
        ready(())
    }

    fn shutdown(&mut self) -> impl Future<Output = ()> + Send {
        self.0.shutdown();
        ready(())
    }
}

impl<E, F> AsyncObserverFactory<E> for AsAsync<F>
where
    F: ObserverFactory<E>,
{
    type Observer = AsAsync<F::Observer>;

    fn make(&mut self, shard: usize) -> Self::Observer {
        AsAsync(self.0.make(shard))
    }
}

/// An observer (and factory) that ignores every event.
#[derive(Clone, Copy, Debug, Default)]
pub struct Noop;

impl<E> Observer<E> for Noop {
    fn handle(&mut self, _event: E) {}
}

impl<E> ObserverFactory<E> for Noop {
    type Observer = Noop;

    fn make(&mut self, _shard: usize) -> Noop {
        Noop
    }
}

/// Two observers (or two factories) combined: every event reaches both, `A` first, in order.
///
/// Nest it for more (`Both::new(a, Both::new(b, c))`). Both observers live in the same shard
/// worker, so combining adds no task and no queue per event; the event is cloned once for `A`.
/// If `A` panics on an event, `B` still receives that event and the panic is then reported by
/// the worker as usual. Shutdown reaches `A` then `B`, each exactly once.
#[derive(Clone, Debug, Default)]
pub struct Both<A, B> {
    /// The first observer or factory.
    pub first: A,
    /// The second observer or factory.
    pub second: B,
}

impl<A, B> Both<A, B> {
    /// Combines `first` and `second`.
    pub fn new(first: A, second: B) -> Self {
        Self { first, second }
    }
}

impl<E, A, B> Observer<E> for Both<A, B>
where
    E: Clone,
    A: Observer<E>,
    B: Observer<E>,
{
    fn handle(&mut self, event: E) {
        let first = catch_unwind(AssertUnwindSafe(|| self.first.handle(event.clone())));
        self.second.handle(event);
        if let Err(payload) = first {
            resume_unwind(payload);
        }
    }

    fn shutdown(&mut self) {
        let first = catch_unwind(AssertUnwindSafe(|| self.first.shutdown()));
        self.second.shutdown();
        if let Err(payload) = first {
            resume_unwind(payload);
        }
    }
}

impl<E, A, B> AsyncObserver<E> for Both<A, B>
where
    E: Clone + Send,
    A: AsyncObserver<E>,
    B: AsyncObserver<E>,
{
    async fn handle(&mut self, event: E) {
        let copy = event.clone();
        let first = catch_future(|| self.first.handle(copy)).await;
        self.second.handle(event).await;
        if let Err(payload) = first {
            resume_unwind(payload);
        }
    }

    async fn shutdown(&mut self) {
        let first = catch_future(|| self.first.shutdown()).await;
        self.second.shutdown().await;
        if let Err(payload) = first {
            resume_unwind(payload);
        }
    }
}

impl<E, A, B> ObserverFactory<E> for Both<A, B>
where
    E: Clone,
    A: ObserverFactory<E>,
    B: ObserverFactory<E>,
{
    type Observer = Both<A::Observer, B::Observer>;

    fn make(&mut self, shard: usize) -> Self::Observer {
        Both::new(self.first.make(shard), self.second.make(shard))
    }
}

impl<E, A, B> AsyncObserverFactory<E> for Both<A, B>
where
    E: Clone + Send,
    A: AsyncObserverFactory<E>,
    B: AsyncObserverFactory<E>,
{
    type Observer = Both<A::Observer, B::Observer>;

    fn make(&mut self, shard: usize) -> Self::Observer {
        Both::new(self.first.make(shard), self.second.make(shard))
    }
}
