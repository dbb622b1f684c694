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
    /// What a running (or starting) connector waits on — `shard X`, `lease table`, `source` —
    /// with why.
    degraded: BTreeMap<String, String>,
}

impl ConnectorHealth {
    /// The connector's own state, made worse by its worst shard while it runs.
    fn effective(&self) -> ConnectorState {
        let state = self.state.clone().unwrap_or(ConnectorState::Starting);
        let Some((subject, why)) = self.degraded.iter().next() else {
            return state;
        };
        let more = self.degraded.len() - 1;
        let tail = if more > 0 {
            format!(" (and {more} more)")
        } else {
            String::new()
        };
        match state {
            ConnectorState::Running | ConnectorState::Degraded(_) => {
                ConnectorState::Degraded(format!("{subject}: {why}{tail}"))
            }
            ConnectorState::Starting => {
                ConnectorState::Degraded(format!("starting; {subject}: {why}{tail}"))
            }
            other => other,
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
        if !running && state != ConnectorState::Starting {
            entry.degraded.clear();
        }
        entry.state = Some(state);
    }

    /// One shard waits on something (its sink is down, say): the connector reads degraded
    /// until every such shard is well again.
    pub fn shard_degraded(&self, connector: &str, shard: &str, why: String) {
        self.degraded(connector, &format!("shard {shard}"), why);
    }

    /// The shard is well again, or no longer worked on here.
    pub fn shard_well(&self, connector: &str, shard: &str) {
        self.well(connector, &format!("shard {shard}"));
    }

    /// Something the whole connector needs (`lease table`, `source`) is failing: the connector
    /// reads degraded, naming it, until it is well again.
    pub fn degraded(&self, connector: &str, subject: &str, why: String) {
        let mut all = self.connectors.write().unwrap_or_else(|p| p.into_inner());
        all.entry(connector.to_string())
            .or_default()
            .degraded
            .insert(subject.to_string(), why);
    }

    pub fn well(&self, connector: &str, subject: &str) {
        let mut all = self.connectors.write().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = all.get_mut(connector) {
            c.degraded.remove(subject);
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
        assert!(describe(&h.snapshot()).contains("(and 1 more)"));
        h.shard_well("c", "s1");
        h.shard_well("c", "s2");
        assert!(is_ready(&h.snapshot()));
        h.shard_degraded("c", "s1", "x".into());
        h.set("c", ConnectorState::Failed("boom".into()));
        assert_eq!(h.snapshot()["c"], ConnectorState::Failed("boom".into()));
    }

    #[test]
    fn what_a_connector_needs_is_named_while_starting_and_running() {
        let h = Health::default();
        h.set("c", ConnectorState::Starting);
        assert_eq!(h.snapshot()["c"], ConnectorState::Starting);
        h.degraded("c", "lease_table", "10 failures in a row: timed out".into());
        assert_eq!(
            h.snapshot()["c"],
            ConnectorState::Degraded(
                "starting; lease_table: 10 failures in a row: timed out".into()
            )
        );
        h.set("c", ConnectorState::Running);
        h.well("c", "lease_table");
        assert!(is_ready(&h.snapshot()));
        h.degraded("c", "lease table", "renewal failed: throttled".into());
        assert!(!is_ready(&h.snapshot()));
        assert!(describe(&h.snapshot()).contains("lease table: renewal failed: throttled"));
        h.well("c", "lease table");
        assert!(is_ready(&h.snapshot()));
    }
}
