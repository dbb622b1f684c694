//! Bounded, jittered exponential back-off: a pure schedule (`Backoff`), so that it can be tested
//! without sleeping, and the one retry loop (`run`) that every caller uses: each wait is counted
//! in `shardbridge_retry_wait_milliseconds_total` by reason, and a stop request cuts it short.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::metrics::events;

/// How long a dependency may keep failing before /readyz says degraded, however few calls
/// that took (a call that waits out its timeout fails once in many seconds).
pub const DEGRADED_AFTER: Duration = Duration::from_secs(10);

/// Whether a dependency that failed `failures` times in a row, for `failing_for`, is reported
/// degraded: from the `max_retries`-th failure or after `DEGRADED_AFTER`, whichever is first.
pub fn degraded(failures: u32, failing_for: Duration, backoff: &Backoff) -> bool {
    failures > 0 && (failures >= backoff.max_retries.max(1) || failing_for >= DEGRADED_AFTER)
}

/// The failures in a row of one dependency, and since when it has not answered well: since
/// its last success (or since the streak was made), not since the first failure ended, so a
/// call that waits out a long timeout counts its whole wait.
#[derive(Debug)]
pub struct FailureStreak {
    count: u32,
    well_at: Instant,
}

impl Default for FailureStreak {
    fn default() -> Self {
        FailureStreak {
            count: 0,
            well_at: Instant::now(),
        }
    }
}

impl FailureStreak {
    /// One more failure; returns how many in a row.
    pub fn failed(&mut self) -> u32 {
        self.count += 1;
        self.count
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn is_degraded(&self, backoff: &Backoff) -> bool {
        degraded(self.count, self.well_at.elapsed(), backoff)
    }

    /// Nothing is failing now (a call that says nothing about this dependency succeeded):
    /// with no streak in progress, the dependency counts as well until now.
    pub fn still_well(&mut self) {
        if self.count == 0 {
            self.well_at = Instant::now();
        }
    }

    /// A success ends the streak; returns whether it had been reported degraded.
    pub fn succeeded(&mut self, backoff: &Backoff) -> bool {
        let was = self.is_degraded(backoff);
        *self = FailureStreak::default();
        was
    }
}

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

    /// The wait before retry number `attempt` for a call retried for as long as it takes: it
    /// grows for `max_retries` attempts, then stays at that step (at most `cap`).
    pub fn delay_capped(&self, attempt: u32, jitter: f64) -> Duration {
        let step = attempt.clamp(1, self.max_retries.max(1));
        Backoff {
            max_retries: step,
            ..*self
        }
        .delay(step, jitter)
        .unwrap_or(self.cap)
    }

    /// `delay` with a random jitter.
    pub fn delay_random(&self, attempt: u32) -> Option<Duration> {
        self.delay(attempt, rand::random::<f64>())
    }
}

/// How `run` retries one kind of call.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy<'a> {
    pub backoff: Backoff,
    /// Keep retrying after `backoff.max_retries` with capped waits (back-pressure: a sink that
    /// is down is waited for as long as it takes); otherwise give up then.
    pub forever: bool,
    /// Label of the wait metric, and of the log line.
    pub reason: &'static str,
    pub connector: &'a str,
}

impl<'a> RetryPolicy<'a> {
    pub fn bounded(connector: &'a str, reason: &'static str, backoff: Backoff) -> Self {
        RetryPolicy {
            backoff,
            forever: false,
            reason,
            connector,
        }
    }

    pub fn forever(connector: &'a str, reason: &'static str, backoff: Backoff) -> Self {
        RetryPolicy {
            backoff,
            forever: true,
            reason,
            connector,
        }
    }

    /// The wait before retry number `attempt`, or None when it is time to give up.
    fn wait(&self, attempt: u32) -> Option<Duration> {
        let attempt = if self.forever {
            attempt.min(self.backoff.max_retries.max(1))
        } else {
            attempt
        };
        self.backoff.delay_random(attempt)
    }
}

/// Why `run` returned without a result.
#[derive(Debug, PartialEq, Eq)]
pub enum RetryError<E> {
    /// Asked to stop while waiting to retry.
    Stopped,
    /// A failure that is not worth retrying, or the last one when the retries ran out.
    Failed { error: E, attempts: u32 },
}

/// Sleeps for `wait` unless `stop` comes first; false when stopped.
pub async fn pause(stop: &CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

/// Calls `call` until it succeeds, retrying the failures `transient` accepts with the policy's
/// back-off. Every wait is counted and logged; `stop` ends a wait at once.
pub async fn run<T, E, F, Fut>(
    policy: &RetryPolicy<'_>,
    stop: &CancellationToken,
    transient: impl Fn(&E) -> bool,
    mut call: F,
) -> Result<T, RetryError<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut attempt = 0u32;
    loop {
        let error = match call().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        attempt += 1;
        let wait = match transient(&error).then(|| policy.wait(attempt)).flatten() {
            Some(wait) => wait,
            None => {
                return Err(RetryError::Failed {
                    error,
                    attempts: attempt,
                })
            }
        };
        if let Some(left_out) = events::may_warn(policy.reason, policy.connector) {
            tracing::warn!(
                connector = policy.connector,
                reason = policy.reason,
                attempt,
                wait_ms = wait.as_millis() as u64,
                %error,
                similar_left_out = left_out,
                "retrying"
            );
        }
        events::retry_wait(policy.connector, policy.reason, wait);
        if !pause(stop, wait).await {
            return Err(RetryError::Stopped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    const B: Backoff = Backoff::new(100, 5_000, 6);

    #[test]
    fn a_streak_counts_from_the_last_time_all_was_well() {
        let long_ago = Instant::now() - DEGRADED_AFTER - Duration::from_secs(1);
        // Quiet for long, then one failure: failing since the last success, not since the
        // quiet began, when something in between said all was well.
        let mut s = FailureStreak {
            count: 0,
            well_at: long_ago,
        };
        s.still_well();
        s.failed();
        assert!(!s.is_degraded(&B), "one failure after a recent all-well");
        // Without that: failing since long ago.
        let mut s = FailureStreak {
            count: 0,
            well_at: long_ago,
        };
        s.failed();
        assert!(s.is_degraded(&B));
        // A streak in progress is not ended by an all-well of something else.
        s.still_well();
        assert!(s.is_degraded(&B));
        assert!(s.succeeded(&B), "it had been degraded");
        assert_eq!(s.count(), 0);
        assert!(!s.is_degraded(&B));
        // Many quick failures are degraded too.
        for _ in 0..6 {
            s.failed();
        }
        assert!(s.is_degraded(&B));
    }

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

    fn failing_until(n: u32, calls: &AtomicU32) -> Result<u32, String> {
        let c = calls.fetch_add(1, Ordering::SeqCst) + 1;
        if c > n {
            Ok(c)
        } else {
            Err(format!("failure {c}"))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_failures_then_succeeds() {
        let calls = AtomicU32::new(0);
        let policy = RetryPolicy::bounded("t", "test", Backoff::new(100, 1_000, 3));
        let stop = CancellationToken::new();
        let got = run(
            &policy,
            &stop,
            |_: &String| true,
            || async { failing_until(3, &calls) },
        )
        .await;
        assert_eq!(got, Ok(4));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_bounded_retries_and_at_once_on_a_fatal_failure() {
        let policy = RetryPolicy::bounded("t", "test", Backoff::new(100, 1_000, 3));
        let stop = CancellationToken::new();
        let calls = AtomicU32::new(0);
        let got = run(
            &policy,
            &stop,
            |_: &String| true,
            || async { failing_until(10, &calls) },
        )
        .await;
        assert_eq!(
            got,
            Err(RetryError::Failed {
                error: "failure 4".into(),
                attempts: 4
            })
        );
        let calls = AtomicU32::new(0);
        let got = run(
            &policy,
            &stop,
            |_: &String| false,
            || async { failing_until(10, &calls) },
        )
        .await;
        assert_eq!(
            got,
            Err(RetryError::Failed {
                error: "failure 1".into(),
                attempts: 1
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn forever_keeps_going_with_capped_waits() {
        let policy = RetryPolicy::forever("t", "test", Backoff::new(100, 1_000, 2));
        let stop = CancellationToken::new();
        let calls = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let got = run(
            &policy,
            &stop,
            |_: &String| true,
            || async { failing_until(20, &calls) },
        )
        .await;
        assert_eq!(got, Ok(21));
        // 20 waits, none above the step of the last bounded retry (200 ms).
        assert!(started.elapsed() <= Duration::from_millis(20 * 200));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_cuts_the_wait_short() {
        let policy = RetryPolicy::forever("t", "test", Backoff::new(60_000, 60_000, 5));
        let stop = CancellationToken::new();
        let calls = AtomicU32::new(0);
        let canceller = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                stop.cancel();
            })
        };
        let started = tokio::time::Instant::now();
        let got = run(
            &policy,
            &stop,
            |_: &String| true,
            || async { failing_until(u32::MAX, &calls) },
        )
        .await;
        assert_eq!(got, Err(RetryError::Stopped));
        assert!(started.elapsed() < Duration::from_millis(1_100));
        canceller.await.unwrap();
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
