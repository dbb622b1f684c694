//! How far behind a connector is: the largest lag over its shards, so that one slow shard shows.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct ConnectorLag {
    shards: Mutex<HashMap<String, i64>>,
}

impl ConnectorLag {
    /// Records a shard's lag in milliseconds; returns the connector's (the largest).
    pub fn update(&self, shard: &str, millis: i64) -> i64 {
        let mut m = self.shards.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(shard.to_string(), millis.max(0));
        m.values().copied().max().unwrap_or(0)
    }

    /// Forgets a shard this worker no longer reads; returns the connector's lag.
    pub fn remove(&self, shard: &str) -> i64 {
        let mut m = self.shards.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(shard);
        m.values().copied().max().unwrap_or(0)
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
}
