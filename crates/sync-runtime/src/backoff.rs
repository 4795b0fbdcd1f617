//! Retry delays: exponential backoff with jitter, and FLOOD_WAIT with a little spread.
//!
//! One implementation for every retry of the manager: failed calls ([`Policy::api`]), and
//! storage reads and writes ([`Policy::storage`]).

use std::time::Duration;

use crate::config::ManagerConfig;

/// Where exponential backoff starts and where it stops growing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    /// The nominal delay of the first retry.
    pub(crate) base: Duration,
    /// The longest nominal delay.
    pub(crate) max: Duration,
}

impl Policy {
    /// Failed calls: the engine's own retry settings, so that there is one set of them
    /// ([`sync_core::EngineConfig::retry_base`], [`sync_core::EngineConfig::retry_max`]).
    pub(crate) fn api(config: &ManagerConfig) -> Self {
        Self {
            base: config.engine.retry_base,
            max: config.engine.retry_max,
        }
    }

    /// Storage that is unavailable ([`ManagerConfig::storage_retry_base`],
    /// [`ManagerConfig::storage_retry_max`]).
    pub(crate) fn storage(config: &ManagerConfig) -> Self {
        Self {
            base: config.storage_retry_base,
            max: config.storage_retry_max,
        }
    }
}

/// The random spread of retry delays: no cryptographic needs here.
#[derive(Debug, Clone)]
pub(crate) struct Jitter {
    rng: fastrand::Rng,
}

impl Jitter {
    /// Seeded (the same seed gives the same delays), or seeded at random when `seed` is `None`.
    pub(crate) fn new(seed: Option<u64>) -> Self {
        let rng = seed.map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed);
        Self { rng }
    }

    /// A generator of its own, seeded from this one (so a seeded run stays repeatable).
    pub(crate) fn fork(&mut self) -> Self {
        Self {
            rng: self.rng.fork(),
        }
    }

    /// Retry number `attempt` (0-based): `base * 2^attempt` capped at `max`, then scaled by a
    /// random factor in `[0.5, 1)` ("equal jitter"): never less than half the nominal delay, so
    /// retries still back off, but spread so that many clients do not retry in step.
    pub(crate) fn backoff(&mut self, policy: Policy, attempt: u32) -> Duration {
        let Policy { base, max } = policy;
        let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
        let nominal = base.checked_mul(factor).map_or(max, |d| d.min(max));
        nominal.mul_f64(0.5 + self.rng.f64() / 2.0)
    }

    /// A FLOOD_WAIT: at least what the server asked, plus up to `spread`.
    pub(crate) fn flood_wait(&mut self, after: Duration, spread: Duration) -> Duration {
        after + spread.mul_f64(self.rng.f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let mut jitter = Jitter::new(Some(1));
        let policy = Policy {
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        for attempt in 0..40 {
            let nominal = policy
                .base
                .checked_mul(1 << attempt.min(20))
                .map_or(policy.max, |d| d.min(policy.max));
            let delay = jitter.backoff(policy, attempt);
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

    #[test]
    fn a_seed_repeats_its_delays() {
        let policy = Policy {
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        let delays = |seed| {
            let mut jitter = Jitter::new(Some(seed));
            let mut fork = jitter.fork();
            (0..8)
                .map(|attempt| {
                    (
                        jitter.backoff(policy, attempt),
                        fork.backoff(policy, attempt),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(delays(7), delays(7));
    }
}
