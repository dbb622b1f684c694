//! The typed configuration: what connectors.toml means once read and checked.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::format::FormatKind;

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

/// Where and as whom AWS calls go. Connector-level tables override the global `[aws]` key by key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AwsSettings {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub role_arn: Option<String>,
}

impl AwsSettings {
    /// `self` with every unset key taken from `defaults`.
    pub fn or(&self, defaults: &AwsSettings) -> AwsSettings {
        AwsSettings {
            region: self.region.clone().or_else(|| defaults.region.clone()),
            endpoint_url: self
                .endpoint_url
                .clone()
                .or_else(|| defaults.endpoint_url.clone()),
            role_arn: self.role_arn.clone().or_else(|| defaults.role_arn.clone()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ConnectorConfig {
    pub name: String,
    pub source: SourceConfig,
    pub leases: LeaseConfig,
    pub format: FormatKind,
    pub sink: SinkConfig,
}

/// The stream a connector reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamRef {
    /// DynamoDB Streams: the table's latest stream, resolved at start.
    Table(String),
    /// DynamoDB Streams: a stream ARN.
    StreamArn(String),
    /// Kinesis Data Streams, by name.
    KinesisName(String),
    /// Kinesis Data Streams, by ARN.
    KinesisArn(String),
}

impl StreamRef {
    pub fn is_kinesis(&self) -> bool {
        matches!(self, StreamRef::KinesisName(_) | StreamRef::KinesisArn(_))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartingPosition {
    TrimHorizon,
    Latest,
    /// Records older than this (milliseconds since the epoch) are skipped. DynamoDB Streams has
    /// no AT_TIMESTAMP iterator, so reading starts at the trim horizon and filters.
    AtTimestamp(i64),
}

#[derive(Clone, Debug)]
pub struct SourceConfig {
    pub stream: StreamRef,
    pub starting_position: StartingPosition,
    /// Wait after an empty GetRecords before polling the shard again.
    pub poll_idle_ms: u64,
    /// GetRecords limit (1..=1000).
    pub max_records: u32,
    /// Consecutive failed calls tolerated (with back-off) before the connector stops.
    pub max_retries: u32,
    pub aws: AwsSettings,
}

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub table: String,
    pub failover_ms: u64,
    pub renew_interval_ms: u64,
    /// A worker stops sending for a lease it has not renewed for `failover_ms - safety_margin_ms`.
    pub safety_margin_ms: u64,
    pub shard_sync_interval_ms: u64,
    /// At most this many leases per worker (KCL's maxLeasesForWorker); unlimited by default.
    pub max_leases_per_worker: usize,
    pub aws: AwsSettings,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkConfig {
    Stdout,
    File {
        path: PathBuf,
        fsync: bool,
    },
    S3 {
        s3: crate::sink::s3::S3SinkConfig,
        aws: AwsSettings,
    },
    Kinesis {
        kinesis: crate::sink::kinesis::KinesisSinkConfig,
        aws: AwsSettings,
    },
}
