//! What /readyz reports: the state of every connector of this process, and within a running
//! connector the state of each shard it works on. A connector is as well as its worst shard, so
//! one shard recovering does not hide another whose sink is still down.

use std::collections::BTreeMap;
use std::sync::RwLock;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectorState {
    Starting,
    Running,
    /// Running, but waiting on an unavailable sink or source (back-pressure).
    Degraded(String),
    Failed(String),
    Stopped,
}

#[derive(Default)]
struct ConnectorHealth {
    state: Option<ConnectorState>,
    /// Shards of a running connector that are waiting on something, with why.
    degraded_shards: BTreeMap<String, String>,
}

impl ConnectorHealth {
    /// The connector's own state, made worse by its worst shard while it runs.
    fn effective(&self) -> ConnectorState {
        let state = self.state.clone().unwrap_or(ConnectorState::Starting);
        match (&state, self.degraded_shards.iter().next()) {
            (ConnectorState::Running | ConnectorState::Degraded(_), Some((shard, why))) => {
                let more = self.degraded_shards.len() - 1;
                let tail = if more > 0 {
                    format!(" (and {more} more shard(s))")
                } else {
                    String::new()
                };
                ConnectorState::Degraded(format!("shard {shard}: {why}{tail}"))
            }
            _ => state,
        }
    }
}

#[derive(Default)]
pub struct Health {
    connectors: RwLock<BTreeMap<String, ConnectorHealth>>,
}

impl Health {
    /// The connector's own state (starting, running, failed, stopped).
    pub fn set(&self, connector: &str, state: ConnectorState) {
        let running = matches!(state, ConnectorState::Running | ConnectorState::Degraded(_));
        crate::metrics::events::connector_running(connector, running);
        let mut all = self.connectors.write().unwrap_or_else(|p| p.into_inner());
        let entry = all.entry(connector.to_string()).or_default();
        if !running {
            entry.degraded_shards.clear();
        }
        entry.state = Some(state);
    }

    /// One shard waits on something (its sink is down, say): the connector reads degraded
    /// until every such shard is well again.
    pub fn shard_degraded(&self, connector: &str, shard: &str, why: String) {
        let mut all = self.connectors.write().unwrap_or_else(|p| p.into_inner());
        all.entry(connector.to_string())
            .or_default()
            .degraded_shards
            .insert(shard.to_string(), why);
    }

    /// The shard is well again, or no longer worked on here.
    pub fn shard_well(&self, connector: &str, shard: &str) {
        let mut all = self.connectors.write().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = all.get_mut(connector) {
            c.degraded_shards.remove(shard);
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, ConnectorState> {
        self.connectors
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, c)| (name.clone(), c.effective()))
            .collect()
    }
}

/// Ready when there is at least one connector and every one is running normally.
pub fn is_ready(states: &BTreeMap<String, ConnectorState>) -> bool {
    !states.is_empty() && states.values().all(|s| *s == ConnectorState::Running)
}

/// One line per connector, for the /readyz body.
pub fn describe(states: &BTreeMap<String, ConnectorState>) -> String {
    let mut out = String::new();
    for (name, state) in states {
        let line = match state {
            ConnectorState::Starting => "starting".to_string(),
            ConnectorState::Running => "running".to_string(),
            ConnectorState::Degraded(why) => format!("degraded: {why}"),
            ConnectorState::Failed(why) => format!("failed: {why}"),
            ConnectorState::Stopped => "stopped".to_string(),
        };
        out.push_str(&format!("{name}: {line}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_connector_runs() {
        let mut s = BTreeMap::new();
        assert!(!is_ready(&s));
        s.insert("a".to_string(), ConnectorState::Starting);
        assert!(!is_ready(&s));
        s.insert("a".to_string(), ConnectorState::Running);
        assert!(is_ready(&s));
        s.insert("b".to_string(), ConnectorState::Failed("x".into()));
        assert!(!is_ready(&s));
        s.insert(
            "b".to_string(),
            ConnectorState::Degraded("sink down".into()),
        );
        assert!(!is_ready(&s));
        assert!(describe(&s).contains("b: degraded: sink down"));
    }

    #[test]
    fn a_connector_is_as_well_as_its_worst_shard() {
        let h = Health::default();
        h.set("c", ConnectorState::Running);
        h.shard_degraded("c", "s1", "sink: down".into());
        h.shard_degraded("c", "s2", "sink: down".into());
        h.shard_well("c", "s1");
        assert_eq!(
            h.snapshot()["c"],
            ConnectorState::Degraded("shard s2: sink: down".into()),
            "s1 recovering does not hide s2"
        );
        h.shard_degraded("c", "s1", "sink: slow".into());
        assert!(describe(&h.snapshot()).contains("and 1 more shard"));
        h.shard_well("c", "s1");
        h.shard_well("c", "s2");
        assert!(is_ready(&h.snapshot()));
        h.shard_degraded("c", "s1", "x".into());
        h.set("c", ConnectorState::Failed("boom".into()));
        assert_eq!(h.snapshot()["c"], ConnectorState::Failed("boom".into()));
    }
}
