//! Behaviour of the event stream: ordering, pinning, backpressure, shutdown, panics, receipts.
//!
//! No test sleeps: threads meet on barriers and channels, and the one wait for a sender to
//! block polls the stream's own counter of blocked senders.

mod asynchronous;
mod backpressure;
mod common;
mod lifecycle;
mod ordering;
mod panics;
