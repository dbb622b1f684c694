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
    /// Bytes of pages fetched ahead by all shards of the process together (read_ahead::).
    pub read_ahead_bytes: u64,
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
    /// What cannot go to the sink, and where it goes instead.
    pub set_aside: SetAsidePolicy,
    /// Lanes per shard (Lambda's ParallelizationFactor, 1-10): records are dealt to lanes by
    /// item key and each lane is written concurrently (src/commit/lanes.rs).
    pub parallelization_factor: u8,
    /// `[connectors.snapshot]`: the table's items first (DynamoDB Streams sources only).
    pub snapshot: crate::source::snapshot::SnapshotConfig,
}

/// Lambda's MaximumRetryAttempts, MaximumRecordAgeInSeconds and OnFailure destination.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetAsidePolicy {
    /// Retries of a batch the sink refuses before it is set aside (None: for as long as it
    /// takes, i.e. back-pressure).
    pub max_retry_attempts: Option<u32>,
    /// Records older than this when their batch is about to be sent are set aside.
    pub max_record_age_ms: Option<u64>,
    /// Where set-aside records go; with none, nothing is set aside (records too large for
    /// the sink stop the connector, naming the record).
    pub on_failure: Option<crate::sink::on_failure::OnFailureConfig>,
}
