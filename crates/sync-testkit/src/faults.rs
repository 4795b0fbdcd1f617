//! What the simulated network and server do wrong: the chances of each fault, with presets.

use std::time::Duration;

/// What the network and the server do wrong, as chances per push or per request.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// A push is lost.
    pub drop: f64,
    /// A push arrives twice (the copy up to two seconds later).
    pub duplicate: f64,
    /// A push is held back by up to `reorder_window`, letting later pushes overtake it.
    pub reorder: f64,
    /// How long a reordered push may be held back.
    pub reorder_window: Duration,
    /// A push is replaced by `updatesTooLong`.
    pub too_long: f64,
    /// A push with a channel update is replaced by `updateChannelTooLong`.
    pub channel_too_long: f64,
    /// A run of `silence_length` pushes is lost.
    pub silence: f64,
    /// How many pushes a silence loses.
    pub silence_length: u64,
    /// A request fails (transient error, or FLOOD_WAIT for half of them).
    pub request_failure: f64,
    /// A reply first arrives corrupted (wrong channel, negative numbers, regressed state): the
    /// engine must refuse it and accept the correct reply that follows.
    pub corrupt_reply: f64,
    /// After a push, an extra push that the server never made arrives: far-future numbers
    /// (a common pts, a channel pts or a qts near `i32::MAX`; the channel may be one the
    /// client does not track yet, on a fresh start), which the engine must accept
    /// and never deliver, or malformed ones (negative numbers, `pts_count > pts`, a channel
    /// id that is not positive, a `seq_start` beyond `seq`), which it must refuse whole. Their
    /// updates have ids the server never logged: delivering one is a violation.
    pub absurd_push: f64,
    /// A container push gets one update with a malformed number among its good ones: the
    /// engine must refuse the push whole, and the good updates must come back by difference
    /// (the server is not told that the push was lost).
    pub malformed_update: f64,
    /// After a push, an extra `updatePtsChanged` arrives. The server keeps its numbering: the
    /// client's refetch and `getState` must lose nothing and repeat nothing.
    pub pts_changed: f64,
}

impl Faults {
    /// A perfect network.
    pub fn none() -> Self {
        Self {
            drop: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_window: Duration::ZERO,
            too_long: 0.0,
            channel_too_long: 0.0,
            silence: 0.0,
            silence_length: 0,
            request_failure: 0.0,
            corrupt_reply: 0.0,
            absurd_push: 0.0,
            malformed_update: 0.0,
            pts_changed: 0.0,
        }
    }

    /// A bad but ordinary day: a few percent of every fault.
    pub fn moderate() -> Self {
        Self {
            drop: 0.03,
            duplicate: 0.03,
            reorder: 0.05,
            reorder_window: Duration::from_millis(800),
            too_long: 0.005,
            channel_too_long: 0.01,
            silence: 0.002,
            silence_length: 30,
            request_failure: 0.05,
            corrupt_reply: 0.02,
            absurd_push: 0.005,
            malformed_update: 0.01,
            pts_changed: 0.002,
        }
    }

    /// Everything goes wrong often.
    pub fn harsh() -> Self {
        Self {
            drop: 0.2,
            duplicate: 0.2,
            reorder: 0.3,
            reorder_window: Duration::from_secs(2),
            too_long: 0.03,
            channel_too_long: 0.05,
            silence: 0.01,
            silence_length: 80,
            request_failure: 0.25,
            corrupt_reply: 0.1,
            absurd_push: 0.02,
            malformed_update: 0.03,
            pts_changed: 0.01,
        }
    }
}
