//! What a shard worker does after each GetRecords answer: pure decisions, apart from the I/O.

use std::time::Duration;

use super::SourceError;
use crate::retry::Backoff;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollAction {
    /// Records are flowing: ask again at once.
    PollNow,
    /// Nothing new: wait the idle interval.
    PollAfter(Duration),
    /// The shard is closed and fully read.
    ShardEnd,
}

/// The wait after the `empty_pages`-th empty page in a row (1 = the first): `floor`, doubling
/// with each further one, at most `ceiling`. An idle shard costs fewer calls; the first record
/// resets the count, so a busy shard is read at once again.
pub fn idle_interval(empty_pages: u32, floor: Duration, ceiling: Duration) -> Duration {
    let doublings = empty_pages.saturating_sub(1).min(20);
    floor
        .saturating_mul(1u32 << doublings)
        .min(ceiling.max(floor))
}

pub fn after_page(records: usize, has_next_iterator: bool, idle: Duration) -> PollAction {
    if !has_next_iterator {
        PollAction::ShardEnd
    } else if records > 0 {
        PollAction::PollNow
    } else {
        PollAction::PollAfter(idle)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorAction {
    /// Open a new iterator after the last record delivered (nothing lost), after waiting.
    Reopen { after: Duration },
    /// The position was trimmed away: count the loss and continue from the trim horizon.
    ReopenAtTrimHorizon,
    /// The connector cannot go on; the message says why.
    Stop(String),
}

/// `consecutive_failures` counts this error too (1 for the first failure in a row).
pub fn after_error(
    error: &SourceError,
    consecutive_failures: u32,
    backoff: &Backoff,
    jitter: f64,
) -> ErrorAction {
    match error {
        // An expired iterator is routine after a long wait; reopening is the whole fix.
        SourceError::ExpiredIterator if consecutive_failures <= 1 => ErrorAction::Reopen {
            after: Duration::ZERO,
        },
        SourceError::TrimmedData(_) => ErrorAction::ReopenAtTrimHorizon,
        SourceError::StreamNotFound(_) | SourceError::StreamDisabled(_) | SourceError::Fatal(_) => {
            ErrorAction::Stop(error.to_string())
        }
        // What heals by itself is waited out for as long as it takes (the back-off stops
        // growing after `max_retries`; `degraded` tells /readyz).
        SourceError::ExpiredIterator | SourceError::Throttled(_) | SourceError::Transient(_) => {
            ErrorAction::Reopen {
                after: backoff.delay_capped(consecutive_failures, jitter),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff::new(100, 2_000, 3);
    const IDLE: Duration = Duration::from_millis(250);

    #[test]
    fn an_idle_shard_backs_off_to_the_ceiling() {
        let (floor, ceiling) = (Duration::from_millis(250), Duration::from_millis(1000));
        let waits: Vec<u128> = (1..=6)
            .map(|n| idle_interval(n, floor, ceiling).as_millis())
            .collect();
        assert_eq!(waits, [250, 500, 1000, 1000, 1000, 1000]);
        assert_eq!(idle_interval(0, floor, ceiling), floor);
        assert_eq!(idle_interval(u32::MAX, floor, ceiling), ceiling);
        // A ceiling below the floor is the floor (validate refuses it anyway); no floor, no wait.
        assert_eq!(idle_interval(5, floor, Duration::ZERO), floor);
        assert_eq!(idle_interval(5, Duration::ZERO, ceiling), Duration::ZERO);
    }

    #[test]
    fn pages() {
        assert_eq!(after_page(1000, true, IDLE), PollAction::PollNow);
        assert_eq!(after_page(3, true, IDLE), PollAction::PollNow);
        assert_eq!(after_page(0, true, IDLE), PollAction::PollAfter(IDLE));
        assert_eq!(after_page(0, false, IDLE), PollAction::ShardEnd);
        assert_eq!(after_page(7, false, IDLE), PollAction::ShardEnd);
    }

    #[test]
    fn each_error_class_has_its_action() {
        let t = |e: SourceError, n| after_error(&e, n, &B, 1.0);
        assert_eq!(
            t(SourceError::ExpiredIterator, 1),
            ErrorAction::Reopen {
                after: Duration::ZERO
            }
        );
        assert_eq!(
            t(SourceError::ExpiredIterator, 2),
            ErrorAction::Reopen {
                after: Duration::from_millis(200)
            }
        );
        assert_eq!(
            t(SourceError::TrimmedData("x".into()), 1),
            ErrorAction::ReopenAtTrimHorizon
        );
        assert_eq!(
            t(SourceError::Throttled("x".into()), 1),
            ErrorAction::Reopen {
                after: Duration::from_millis(100)
            }
        );
        assert_eq!(
            t(SourceError::Transient("x".into()), 3),
            ErrorAction::Reopen {
                after: Duration::from_millis(400)
            }
        );
        // Past max_retries (3 here) the wait stays at its last step: never given up on.
        for n in [4, 10, 1000] {
            assert_eq!(
                t(SourceError::Transient("x".into()), n),
                ErrorAction::Reopen {
                    after: Duration::from_millis(400)
                },
                "{n}"
            );
        }
        use crate::retry::{degraded, DEGRADED_AFTER};
        let soon = Duration::from_secs(1);
        assert!(!degraded(0, DEGRADED_AFTER, &B));
        assert!(!degraded(2, soon, &B));
        assert!(degraded(3, soon, &B) && degraded(50, soon, &B));
        // Few failures over a long time (calls that wait out their timeouts) count too.
        assert!(degraded(1, DEGRADED_AFTER, &B));
        assert!(!degraded(1, DEGRADED_AFTER - Duration::from_millis(1), &B));
        assert!(matches!(
            t(SourceError::StreamNotFound("s".into()), 1),
            ErrorAction::Stop(_)
        ));
        assert!(matches!(
            t(SourceError::StreamDisabled("s".into()), 1),
            ErrorAction::Stop(_)
        ));
        assert!(matches!(
            t(SourceError::Fatal("f".into()), 1),
            ErrorAction::Stop(_)
        ));
    }
}
