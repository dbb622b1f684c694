//! Bounded, jittered exponential back-off: a pure schedule, so that every retry loop in the
//! service waits the same way and the schedule can be tested without sleeping.

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    /// Failed attempts tolerated in a row; the next failure is given up on.
    pub max_retries: u32,
}

impl Backoff {
    pub const fn new(base_ms: u64, cap_ms: u64, max_retries: u32) -> Self {
        Backoff {
            base: Duration::from_millis(base_ms),
            cap: Duration::from_millis(cap_ms),
            max_retries,
        }
    }

    /// The wait before retry number `attempt` (1 = first retry), or None once the retries are
    /// used up. "Equal jitter": half the exponential step is fixed, half is random (`jitter` in
    /// 0..1), so waits never collapse to zero and workers retrying together spread out.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Option<Duration> {
        if attempt == 0 || attempt > self.max_retries {
            return None;
        }
        let exp = self
            .base
            .saturating_mul(1u32 << (attempt - 1).min(20))
            .min(self.cap);
        let half = exp / 2;
        Some(half + half.mul_f64(jitter.clamp(0.0, 1.0)))
    }

    /// `delay` with a random jitter.
    pub fn delay_random(&self, attempt: u32) -> Option<Duration> {
        self.delay(attempt, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const B: Backoff = Backoff::new(100, 5_000, 6);

    #[test]
    fn grows_then_caps_then_gives_up() {
        assert_eq!(B.delay(1, 1.0), Some(Duration::from_millis(100)));
        assert_eq!(B.delay(2, 1.0), Some(Duration::from_millis(200)));
        assert_eq!(B.delay(3, 0.0), Some(Duration::from_millis(200)));
        assert_eq!(B.delay(6, 1.0), Some(Duration::from_millis(3_200)));
        assert_eq!(
            Backoff::new(100, 1_000, 50).delay(30, 1.0),
            Some(Duration::from_millis(1_000))
        );
        assert_eq!(B.delay(7, 0.5), None);
        assert_eq!(B.delay(0, 0.5), None);
    }

    proptest! {
        #[test]
        fn always_within_half_step_and_cap(attempt in 1u32..=6, jitter in 0.0f64..=1.0) {
            let d = B.delay(attempt, jitter).unwrap();
            let step = (100u64 << (attempt - 1)).min(5_000);
            prop_assert!(d >= Duration::from_millis(step / 2));
            prop_assert!(d <= Duration::from_millis(step));
        }
    }
}
