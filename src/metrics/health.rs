//! What /readyz reports: the state of every connector of this process.

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
pub struct Health {
    connectors: RwLock<BTreeMap<String, ConnectorState>>,
}

impl Health {
    pub fn set(&self, connector: &str, state: ConnectorState) {
        let running = matches!(state, ConnectorState::Running | ConnectorState::Degraded(_));
        crate::metrics::events::connector_running(connector, running);
        self.connectors
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(connector.to_string(), state);
    }

    pub fn snapshot(&self) -> BTreeMap<String, ConnectorState> {
        self.connectors
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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
}
