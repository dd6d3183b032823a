//! How long a failed record waits before it goes out again: capped exponential backoff with
//! full jitter, from a random source that a test can seed.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Full-jitter backoff: attempt `n` waits a uniform time in `[0, min(cap, base · 2^(n-1))]`.
/// Jitter spreads the retries of records that failed together, so they do not come back in
/// one burst.
#[derive(Debug)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    rng: StdRng,
}

impl Backoff {
    /// Waits from `base` doubling up to `cap`, jittered by a generator seeded with `seed`
    /// (the same seed, the same waits).
    pub(crate) fn new(base: Duration, cap: Duration, seed: u64) -> Self {
        Self {
            base,
            cap,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The wait before attempt `attempts + 1`, after `attempts` failures (at least one).
    pub(crate) fn delay(&mut self, attempts: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
        let ceiling = exp.min(self.cap);
        ceiling.mul_f64(self.rng.random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn waits_stay_under_the_doubled_base_and_the_cap(
            base_ms in 0u64..2_000,
            cap_ms in 0u64..60_000,
            attempts in 1u32..200,
            seed: u64,
        ) {
            let (base, cap) = (Duration::from_millis(base_ms), Duration::from_millis(cap_ms));
            let mut backoff = Backoff::new(base, cap, seed);
            let ceiling = base.saturating_mul(1u32 << (attempts - 1).min(20)).min(cap);
            prop_assert!(backoff.delay(attempts) <= ceiling);
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_waits() {
        let waits = |seed| {
            let mut backoff =
                Backoff::new(Duration::from_millis(100), Duration::from_secs(5), seed);
            (1..10).map(|n| backoff.delay(n)).collect::<Vec<_>>()
        };
        assert_eq!(waits(7), waits(7));
        assert_ne!(waits(7), waits(8));
    }
}
