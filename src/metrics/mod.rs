//! Prometheus metrics and health endpoints.
//!
//! Naming scheme: `shardbridge_<area>_<what>_<unit>[_total]`; areas are `source`, `sink`,
//! `checkpoint`, `lease_table`, `retry`, `connector`. Labels are bounded: `connector` (from the
//! configuration), and a closed set of `class`, `operation`, `reason` or `result` values. Shard
//! ids are never labels (they are unbounded over time).

pub mod events;
pub mod health;
pub mod server;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Installs the global recorder. Call once per process.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ],
        )?
        // From a record's arrival in the stream to the sink's acknowledgement: seconds when
        // all is well, minutes or hours when a fleet catches up.
        .set_buckets_for_metric(
            Matcher::Full("shardbridge_end_to_end_latency_seconds".into()),
            &[
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0,
                86400.0,
            ],
        )?
        .install_recorder()?;
    events::describe();
    Ok(handle)
}
