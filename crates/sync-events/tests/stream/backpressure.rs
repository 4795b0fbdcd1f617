//! A full queue: blocking, dropping the newest, failing fast, waiting for room.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use sync_events::{Overflow, SendFailure};

use crate::common::*;

#[test]
fn a_full_queue_blocks_the_sender_until_the_worker_makes_room() {
    let g = gated(2, Overflow::Block);
    g.stream.send_batch([(0, 1), (0, 2)]).expect("fits");
    let done = Arc::new(AtomicUsize::new(0));
    let sender = {
        let stream = g.stream.clone();
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let receipt = stream.send((0, 3));
            done.store(1, Ordering::SeqCst);
            receipt
        })
    };
    g.await_blocked(1);
    assert_eq!(
        done.load(Ordering::SeqCst),
        0,
        "the sender must still be waiting"
    );
    assert_eq!(
        g.stream.stats().shards[0].queued,
        3,
        "event 0 in hand, 1 and 2 queued"
    );
    // A non-waiting send is refused and handed back.
    let err = g.stream.try_send((0, 9)).expect_err("full");
    assert_eq!((err.failure, err.unsent), (SendFailure::Full, vec![(0, 9)]));
    g.go.send(()).expect("gate"); // event 0 done: the worker takes 1 and 2, room for 3
    let receipt = sender.join().expect("sender").expect("accepted");
    assert_eq!(receipt.accepted(), 1);
    let stats = g.stream.stats().total();
    let log = g.finish();
    assert_eq!(events(&log), vec![0, 1, 2, 3]);
    assert_eq!(log.last(), Some(&Seen::Shutdown));
    assert_eq!((stats.dropped, stats.rejected), (0, 1));
}

#[test]
fn drop_newest_discards_and_counts_what_does_not_fit() {
    let g = gated(2, Overflow::DropNewest);
    let receipt = g
        .stream
        .send_batch((1..=5).map(|n| (0, n)))
        .expect("never fails");
    assert_eq!((receipt.accepted(), receipt.dropped()), (2, 3));
    let receipt = g.stream.send((0, 6)).expect("never fails");
    assert_eq!((receipt.accepted(), receipt.dropped()), (0, 1));
    let stream = g.stream.clone();
    let log = g.finish();
    assert_eq!(events(&log), vec![0, 1, 2]);
    let stats = stream.stats().total();
    assert_eq!(
        (stats.sent, stats.delivered, stats.dropped, stats.rejected),
        (3, 3, 4, 0)
    );
}

#[test]
fn fail_fast_hands_back_what_does_not_fit() {
    let g = gated(2, Overflow::FailFast);
    let err = g
        .stream
        .send_batch((1..=5).map(|n| (0, n)))
        .expect_err("full");
    assert_eq!(err.failure, SendFailure::Full);
    assert_eq!(err.unsent, vec![(0, 3), (0, 4), (0, 5)]);
    assert_eq!(err.receipt.accepted(), 2);
    let err = g.stream.send((0, 6)).expect_err("full");
    assert_eq!(err.unsent, vec![(0, 6)]);
    let stream = g.stream.clone();
    let log = g.finish();
    assert_eq!(events(&log), vec![0, 1, 2]);
    let stats = stream.stats().total();
    assert_eq!(
        (stats.sent, stats.delivered, stats.dropped, stats.rejected),
        (3, 3, 0, 4)
    );
}

#[test]
fn room_resolves_once_the_worker_makes_room_and_forgets_itself_when_dropped() {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    let g = gated(2, Overflow::Block);
    let mut cx = Context::from_waker(Waker::noop());
    // Room now: ready at once, nothing registered.
    assert_eq!(pin!(g.stream.room(0)).poll(&mut cx), Poll::Ready(()));
    g.stream.send_batch([(0, 1), (0, 2)]).expect("fits");
    // Full: pending and registered, and a dropped wait leaves nothing behind.
    {
        let mut room = pin!(g.stream.room(0));
        assert_eq!(room.as_mut().poll(&mut cx), Poll::Pending);
        assert_eq!(room.as_mut().poll(&mut cx), Poll::Pending);
        assert_eq!(g.stream.stats().shards[0].blocked_senders, 1);
    }
    assert_eq!(g.stream.stats().shards[0].blocked_senders, 0);
    // A waiting task is woken when the worker takes the queue.
    let waiter = {
        let stream = g.stream.clone();
        thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            runtime.block_on(stream.room(0));
            stream.try_send((0, 3)).expect("room")
        })
    };
    g.await_blocked(1);
    g.go.send(()).expect("gate"); // event 0 done: the worker takes 1 and 2
    assert_eq!(waiter.join().expect("waiter").accepted(), 1);
    // A shut-down stream has "room": the next send fails instead of waiting.
    let stream = g.stream.clone();
    let log = g.finish();
    assert_eq!(events(&log), vec![0, 1, 2, 3]);
    assert_eq!(pin!(stream.room(0)).poll(&mut cx), Poll::Ready(()));
    assert_eq!(pin!(stream.room(7)).poll(&mut cx), Poll::Ready(()));
}

#[test]
fn try_send_batch_takes_what_fits_and_hands_back_the_rest_in_order() {
    let g = gated(2, Overflow::Block);
    // Event 0 is in the observer's hands: room for 2 of these 4.
    let sent = g.stream.try_send_batch([(0, 1), (0, 2), (0, 3), (0, 4)]);
    assert_eq!(sent.receipt.accepted(), 2);
    assert_eq!(sent.unsent, vec![(0, 3), (0, 4)]);
    assert_eq!((sent.full, sent.closed), (Some(0), false));
    assert!(!g.stream.is_handled(&sent.receipt));
    g.go.send(()).expect("gate"); // event 0 done: the worker takes 1 and 2
    let again = g.stream.try_send_batch(sent.unsent);
    assert!(again.unsent.is_empty() || again.full == Some(0));
    let rest = again.unsent;
    let stats = g.stream.stats().total();
    assert!(stats.rejected >= 2, "{stats:?}");
    if !rest.is_empty() {
        g.stream.send_batch(rest).expect("accepted");
    }
    let log = g.finish();
    assert_eq!(events(&log), vec![0, 1, 2, 3, 4]);
    // After shutdown nothing is taken, and the batch comes back whole.
    let closed = g_closed();
    let sent = closed.try_send_batch([(0, 5), (0, 6)]);
    assert!(sent.closed);
    assert_eq!(sent.unsent, vec![(0, 5), (0, 6)]);
}

/// A stream of one shard, shut down.
fn g_closed() -> sync_events::EventStream<(u8, u64)> {
    let (stream, workers) = sync_events::Builder::new()
        .shards(1)
        .build(|_| sync_events::Noop)
        .expect("valid");
    stream.shutdown();
    drop(workers);
    stream
}
