//! How far behind a connector is: the largest lag over its shards, so that one slow shard shows;
//! and which shards are behind yet have not moved for a while (stalled).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A shard at least this far behind is "behind" for stall detection.
pub const BEHIND_MS: i64 = 1_000;

/// A shard behind that has read nothing for this long is stalled: /readyz says so.
pub const STALL_AFTER: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct ConnectorLag {
    /// Per shard: its lag in milliseconds, and when it last moved (read a page).
    shards: Mutex<HashMap<String, (i64, Instant)>>,
}

/// A shard that is behind and has not moved for a while.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stall {
    pub shard: String,
    pub behind_ms: i64,
    pub still_for: Duration,
}

impl ConnectorLag {
    /// Records a shard's lag in milliseconds after it read a page (it moved); returns the
    /// connector's lag (the largest).
    pub fn update(&self, shard: &str, millis: i64) -> i64 {
        let mut m = self.shards.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(shard.to_string(), (millis.max(0), Instant::now()));
        m.values().map(|(ms, _)| *ms).max().unwrap_or(0)
    }

    /// Forgets a shard this worker no longer reads; returns the connector's lag.
    pub fn remove(&self, shard: &str) -> i64 {
        let mut m = self.shards.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(shard);
        m.values().map(|(ms, _)| *ms).max().unwrap_or(0)
    }

    /// The shards behind by `BEHIND_MS` or more that have not moved for `STALL_AFTER`, the
    /// one still for longest first.
    pub fn stalled(&self, now: Instant) -> Vec<Stall> {
        let m = self.shards.lock().unwrap_or_else(|p| p.into_inner());
        let mut stalls: Vec<Stall> = m
            .iter()
            .filter_map(|(shard, (behind_ms, moved))| {
                let still_for = now.saturating_duration_since(*moved);
                (*behind_ms >= BEHIND_MS && still_for >= STALL_AFTER).then(|| Stall {
                    shard: shard.clone(),
                    behind_ms: *behind_ms,
                    still_for,
                })
            })
            .collect();
        stalls.sort_by(|a, b| b.still_for.cmp(&a.still_for).then(a.shard.cmp(&b.shard)));
        stalls
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slowest_shard_is_the_connectors_lag() {
        let lag = ConnectorLag::default();
        assert_eq!(lag.update("a", 100), 100);
        assert_eq!(lag.update("b", 5_000), 5_000);
        assert_eq!(lag.update("b", 0), 100);
        assert_eq!(
            lag.update("a", -3),
            0,
            "clock skew never shows as negative lag"
        );
        assert_eq!(lag.update("c", 42), 42);
        assert_eq!(lag.remove("c"), 0);
    }

    #[test]
    fn a_shard_behind_that_does_not_move_is_stalled() {
        let lag = ConnectorLag::default();
        lag.update("behind", 5_000);
        lag.update("caught-up", 0);
        lag.update("barely", BEHIND_MS - 1);
        let now = Instant::now();
        assert_eq!(lag.stalled(now), vec![]);
        assert_eq!(
            lag.stalled(now + STALL_AFTER - Duration::from_millis(1)),
            vec![]
        );
        let later = now + STALL_AFTER + Duration::from_secs(1);
        let stalls = lag.stalled(later);
        assert_eq!(stalls.len(), 1, "{stalls:?}");
        assert_eq!(stalls[0].shard, "behind");
        assert_eq!(stalls[0].behind_ms, 5_000);
        assert!(stalls[0].still_for >= STALL_AFTER);
        // Moving again (a page read) ends the stall; a shard let go is forgotten.
        lag.update("behind", 4_000);
        assert_eq!(lag.stalled(Instant::now() + Duration::from_secs(1)), vec![]);
        lag.remove("behind");
        assert_eq!(lag.stalled(later + STALL_AFTER), vec![]);
    }
}
