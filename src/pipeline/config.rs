//! What a process runs: its worker settings and its connectors, each composed of the settings
//! of its source, lease table, format and sink (read and checked by the `config` module).

use std::net::SocketAddr;

use crate::format::FormatKind;
use crate::lease::LeaseConfig;
use crate::sink::SinkConfig;
use crate::source::SourceConfig;

#[derive(Clone, Debug)]
pub struct Config {
    pub worker: WorkerConfig,
    pub connectors: Vec<ConnectorConfig>,
}

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Lease owner name; unique per process in a fleet.
    pub id: String,
    /// Address of /metrics, /healthz and /readyz.
    pub listen: SocketAddr,
    /// How long a graceful stop may take before batches in flight are abandoned.
    pub shutdown_timeout_ms: u64,
}

#[derive(Clone, Debug)]
pub struct ConnectorConfig {
    pub name: String,
    pub source: SourceConfig,
    pub leases: LeaseConfig,
    pub format: FormatKind,
    /// `format.invoke_identity_arn`: the `invokeIdentityArn` of Kinesis records in `lambda`
    /// (unset: the caller identity, asked of STS at start).
    pub invoke_identity_arn: Option<String>,
    /// Where STS is asked for that identity: the source's region and role, the global
    /// endpoint (an `endpoint_url` of the source names the stream service's endpoint only).
    pub identity_aws: crate::aws::AwsSettings,
    pub sink: SinkConfig,
    /// Lambda FilterCriteria: records that match no pattern are passed over (checkpointed,
    /// counted), not sent.
    pub filter: crate::filter::FilterCriteria,
}
