//! Retry delays: exponential backoff with jitter, and FLOOD_WAIT with a little spread.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// A small deterministic generator (SplitMix64) for jitter: no cryptographic needs here.
#[derive(Debug, Clone)]
pub(crate) struct Jitter {
    state: u64,
}

impl Jitter {
    /// Seeded, or from the process's random hasher keys when `seed` is `None`.
    pub(crate) fn new(seed: Option<u64>) -> Self {
        let state = seed.unwrap_or_else(|| RandomState::new().hash_one(0x5eed_u64));
        Self { state }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform fraction in `[0, 1)`.
    fn fraction(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Retry number `attempt` (0-based): `base * 2^attempt` capped at `max`, then scaled by a
    /// random factor in `[0.5, 1)` ("equal jitter"): never less than half the nominal delay, so
    /// retries still back off, but spread so that many clients do not retry in step.
    pub(crate) fn backoff(&mut self, base: Duration, max: Duration, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
        let nominal = base.checked_mul(factor).map_or(max, |d| d.min(max));
        nominal.mul_f64(0.5 + self.fraction() / 2.0)
    }

    /// A FLOOD_WAIT: at least what the server asked, plus up to `spread`.
    pub(crate) fn flood_wait(&mut self, after: Duration, spread: Duration) -> Duration {
        after + spread.mul_f64(self.fraction())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let mut jitter = Jitter::new(Some(1));
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for attempt in 0..40 {
            let nominal = base
                .checked_mul(1 << attempt.min(20))
                .map_or(max, |d| d.min(max));
            let delay = jitter.backoff(base, max, attempt);
            assert!(
                delay >= nominal / 2 && delay <= nominal,
                "{attempt}: {delay:?}"
            );
        }
    }

    #[test]
    fn flood_wait_is_never_shorter_than_asked() {
        let mut jitter = Jitter::new(Some(2));
        for seconds in 0..20 {
            let after = Duration::from_secs(seconds);
            let delay = jitter.flood_wait(after, Duration::from_secs(1));
            assert!(delay >= after && delay <= after + Duration::from_secs(1));
        }
    }
}
