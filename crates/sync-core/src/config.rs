//! Tunables of the engine, with Telegram's recommended defaults.

use std::time::Duration;

/// How the engine behaves. [`EngineConfig::default`] follows Telegram's guidance for user accounts;
/// [`EngineConfig::bot`] for bots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// How long a gap may stay open, waiting for the missing pushes, before the engine fetches
    /// the difference. Telegram suggests 0.5 s.
    pub gap_timeout: Duration,
    /// How long without any push before the engine asks for the common difference anyway.
    /// Telegram suggests 15 minutes.
    pub idle_timeout: Duration,
    /// `pts_total_limit` for `updates.getDifference`; `None` lets the server choose.
    /// Telegram suggests 1,000–10,000 for user accounts.
    pub pts_total_limit: Option<i32>,
    /// `limit` for `updates.getChannelDifference`: 100 for users, 100,000 for bots.
    pub channel_difference_limit: i32,
    /// Most updates buffered for one sequence (the common pts, qts, seq, or one channel) while
    /// a gap is open. Past it the engine drops that buffer and fetches the difference instead.
    pub max_buffered_per_sequence: usize,
    /// Most updates buffered across all sequences. Past it the engine drops the buffer of the
    /// sequence that overflowed and fetches its difference.
    pub max_buffered_total: usize,
    /// Most `getChannelDifference` requests in flight at once; more wait their turn.
    pub max_concurrent_channel_requests: usize,
    /// Most channels the application may mark open (polled on the server's `timeout` hint).
    pub max_open_channels: usize,
    /// Poll interval for open channels when the server gives no `timeout`.
    pub open_channel_poll: Duration,
    /// First retry delay after a failed request (doubled per attempt, up to `retry_max`),
    /// unless the failure names its own delay (FLOOD_WAIT).
    ///
    /// The one setting for retrying failed requests: `sync-runtime`'s manager computes its
    /// own delays from it and `retry_max` too (the same doubling, each delay then jittered
    /// down to between half and all of it), and names them in every failure it reports.
    pub retry_base: Duration,
    /// Longest retry delay the engine picks by itself (and the longest `sync-runtime`'s
    /// manager picks before jitter), FLOOD_WAIT excepted.
    pub retry_max: Duration,
    /// At start from stored state, also fetch the difference of every stored channel (bounded by
    /// `max_concurrent_channel_requests`). Off by default: Telegram's guidance is to wait for
    /// `updateChannelTooLong` rather than poll every channel.
    pub catch_up_channels: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            gap_timeout: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(15 * 60),
            pts_total_limit: Some(5_000),
            channel_difference_limit: 100,
            max_buffered_per_sequence: 1_000,
            max_buffered_total: 10_000,
            max_concurrent_channel_requests: 8,
            max_open_channels: 64,
            open_channel_poll: Duration::from_secs(30),
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(60),
            catch_up_channels: false,
        }
    }
}

impl EngineConfig {
    /// The defaults for a bot account: channel differences of up to 100,000 updates and no
    /// `pts_total_limit`.
    pub fn bot() -> Self {
        Self {
            pts_total_limit: None,
            channel_difference_limit: 100_000,
            ..Self::default()
        }
    }

    /// The delay before retry number `attempt` (0-based): exponential, capped at `retry_max`.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
        self.retry_base
            .checked_mul(factor)
            .map_or(self.retry_max, |delay| delay.min(self.retry_max))
    }
}
