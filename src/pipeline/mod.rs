//! The pipeline: every connector of the configuration, each with a worker per owned shard.

pub mod batch;
pub mod config;
pub mod connector;
pub mod lag;
pub mod read_ahead;
pub mod shard_worker;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::health::{ConnectorState, Health};
pub use config::{Config, ConnectorConfig, SetAsidePolicy, WorkerConfig};
use connector::Connector;

/// Runs every connector until `stop` (or until all of them have ended). A failing connector is
/// reported and does not stop the others. Returns the connectors that failed, each with why.
pub async fn run_all(
    config: Config,
    health: Arc<Health>,
    stop: CancellationToken,
) -> Vec<(String, String)> {
    let shutdown_timeout = Duration::from_millis(config.worker.shutdown_timeout_ms);
    let mut tasks = tokio::task::JoinSet::new();
    // One budget for the whole process, shared by every connector's shards.
    let read_ahead = Arc::new(read_ahead::ReadAheadBudget::new(
        config.worker.read_ahead_bytes,
    ));
    for c in &config.connectors {
        health.set(&c.name, ConnectorState::Starting);
    }
    for c in config.connectors {
        let worker_id = config.worker.id.clone();
        let health = health.clone();
        let stop = stop.clone();
        let read_ahead = read_ahead.clone();
        tasks.spawn(async move {
            let name = c.name.clone();
            let result = tokio::select! {
                _ = stop.cancelled() => Ok(()),
                started = Connector::start(c, worker_id, health.clone(), read_ahead) => match started {
                    Ok(connector) => connector.run(stop, shutdown_timeout).await,
                    Err(e) => Err(e),
                },
            };
            let failure = match result {
                Ok(()) => {
                    health.set(&name, ConnectorState::Stopped);
                    None
                }
                Err(e) => {
                    tracing::error!(connector = %name, error = %e, "connector failed");
                    health.set(&name, ConnectorState::Failed(e.to_string()));
                    Some(e.to_string())
                }
            };
            (name, failure)
        });
    }
    let mut failed = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((_, None)) => {}
            Ok((name, Some(why))) => failed.push((name, why)),
            Err(e) => failed.push(("(task)".to_string(), e.to_string())),
        }
    }
    failed
}
