//! Sinks: where formatted records go. Each sink states its commit protocol; the pipeline
//! advances a checkpoint only after `write_batch` returned, i.e. after the batch is durable.

pub mod dynamodb;
pub mod file;
pub mod http;
pub mod kafka;
pub mod kinesis;
pub mod on_failure;
pub mod partition_key;
pub mod s3;
pub mod stdout;

use async_trait::async_trait;

use crate::aws::AwsSettings;
use crate::format::{self, FormatKind, FormatMismatch};
use crate::settings::TableReader;
use crate::source::record::SourceRecord;
use crate::source::sequence::SequenceNumber;

/// How a sink keeps records from being lost or repeated (README, "Guarantees"; src/commit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitProtocol {
    /// Made durable, then checkpointed: a crash between the two re-sends the batch in flight,
    /// and nothing before the last checkpoint (stdout, file).
    FlushThenCheckpoint,
    /// One transaction holds the records and the commit record (Kafka).
    Transactional,
    /// The output of a range is a pure function of it, re-written on recovery (S3).
    Idempotent,
    /// Recovery reads the target back and sends only what is missing (Kinesis).
    Reconciling,
}

impl CommitProtocol {
    pub fn exactly_once(self) -> bool {
        !matches!(self, CommitProtocol::FlushThenCheckpoint)
    }
}

/// One formatted record and where it came from.
#[derive(Clone, Debug)]
pub struct OutputRecord {
    pub sequence_number: SequenceNumber,
    /// When the record entered the stream (ms since the epoch), if known.
    pub created_millis: Option<i64>,
    /// Where a keyed sink (Kinesis) puts it; None for sinks without keys.
    pub partition_key: Option<String>,
    /// INSERT, MODIFY or REMOVE for a DynamoDB change; None for a Kinesis record.
    pub event_name: Option<&'static str>,
    /// The record's lane within its shard (`parallelization_factor`; 0 without lanes).
    pub lane: u8,
    pub payload: Vec<u8>,
}

impl OutputRecord {
    /// A record of a table snapshot (only those carry a resume position): its
    /// `created_millis` is when the snapshot began, not when the item entered a stream, so
    /// it has no age for `max_record_age_ms` and no end-to-end latency.
    pub fn is_snapshot(&self) -> bool {
        self.sequence_number.resume().is_some()
    }
}

/// The records of one shard between two checkpoints, in sequence order.
#[derive(Clone, Debug)]
pub struct Batch {
    /// The source stream's ARN (a DynamoDB stream or a Kinesis stream).
    pub stream_arn: String,
    pub shard_id: String,
    pub records: Vec<OutputRecord>,
    /// Set when this batch is the range of an intent a previous owner left: the sink may have
    /// written part of it already.
    pub recovery: Option<Recovery>,
    /// For the transactional protocol: the batch's number in its shard (its commit record
    /// counts n+1 batches once it committed).
    pub number: Option<u64>,
}

/// What is known of an earlier, unfinished attempt at a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// When the earlier attempt wrote its intent (ms since the epoch, its clock); None for an
    /// intent that did not say (nothing of the range can predate the intent).
    pub intent_millis: Option<i64>,
}

impl Batch {
    pub fn bytes(&self) -> usize {
        self.records.iter().map(|r| r.payload.len()).sum()
    }

    pub fn first(&self) -> Option<&OutputRecord> {
        self.records.first()
    }

    pub fn last(&self) -> Option<&OutputRecord> {
        self.records.last()
    }
}

/// When a shard worker hands its accumulated records to the sink: whichever limit comes first.
/// Sinks that write each page as it comes keep the default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_records: usize,
    pub max_bytes: usize,
    pub max_interval: std::time::Duration,
}

impl BatchLimits {
    /// Every GetRecords page is its own batch.
    pub const PER_PAGE: BatchLimits = BatchLimits {
        max_records: 1,
        max_bytes: 1,
        max_interval: std::time::Duration::ZERO,
    };
}

/// The `max_records`, `max_bytes` and `max_interval_ms` keys of a streaming sink (Kinesis,
/// Kafka): one batch is one intent and one checkpoint (and, for Kafka, one transaction).
pub(crate) fn read_batch_limits(
    t: &mut TableReader,
    (records, bytes, interval_ms): (usize, usize, u64),
) -> (usize, usize, u64) {
    let max_records = t
        .opt_u64("max_records", 1, 1_000_000)
        .map_or(records, |n| n as usize);
    let max_bytes = t
        .opt_u64("max_bytes", 1, 1024 * 1024 * 1024)
        .map_or(bytes, |n| n as usize);
    let max_interval_ms = t
        .opt_u64("max_interval_ms", 0, 3_600_000)
        .unwrap_or(interval_ms);
    (max_records, max_bytes, max_interval_ms)
}

/// Whether this worker may still send for a shard's lease (its last renewal is recent enough).
#[async_trait]
pub trait SendPermit: Send + Sync {
    async fn may_send(&self) -> bool;
}

/// A permit that is never withdrawn: for a sink used on its own (tools, tests).
pub struct Unconditional;

#[async_trait]
impl SendPermit for Unconditional {
    async fn may_send(&self) -> bool {
        true
    }
}

/// How a function sink's failed batches are retried (Lambda's BisectBatchOnFunctionError).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FunctionRules {
    pub bisect_on_error: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying with back-off (the destination is down or slow): back-pressure.
    #[error("sink unavailable: {0}")]
    Transient(String),
    #[error("sink failed: {0}")]
    Fatal(String),
    /// The send permit was withdrawn (the lease is in doubt) before the batch was complete:
    /// nothing more was sent, and the sink remembers what was written; call again with the
    /// same batch once the lease is renewed.
    #[error("sending paused: the lease is in doubt")]
    NotPermitted,
    /// Another worker's producer took over the shard at the sink (a transactional producer
    /// was fenced): nothing of this batch is committed, and this worker must give the lease
    /// up without sending again.
    #[error("fenced: {0}")]
    Fenced(String),
    /// A function sink (http) failed the batch: an answer other than 2xx (`status`), a
    /// timeout or no connection (no status). Retried, bisected, set aside by Lambda's rules.
    #[error("function error: {message}")]
    FunctionError {
        status: Option<u16>,
        message: String,
    },
    /// A function sink's partial batch response: the batch's first `handled` records are done,
    /// the one after them is the lowest the function reported failed.
    #[error("{message}")]
    Partial { handled: usize, message: String },
}

impl SinkError {
    /// What went wrong, without the class prefix.
    pub fn message(&self) -> &str {
        match self {
            SinkError::Transient(m) | SinkError::Fatal(m) | SinkError::Fenced(m) => m,
            SinkError::FunctionError { message, .. } | SinkError::Partial { message, .. } => {
                message
            }
            SinkError::NotPermitted => "sending paused: the lease is in doubt",
        }
    }
}

#[async_trait]
pub trait Sink: Send + Sync {
    fn commit_protocol(&self) -> CommitProtocol;
    /// How much to accumulate before `write_batch`.
    fn batch_limits(&self) -> BatchLimits {
        BatchLimits::PER_PAGE
    }
    /// Returns once every record of `batch` is durable at the destination. For the idempotent
    /// protocol the output must be a pure function of the batch (and the configuration): a
    /// recovering worker writes the same range again and must produce the same bytes. A sink
    /// that makes several calls for one batch checks `permit` before each: a worker that may
    /// have lost its lease must not keep writing.
    async fn write_batch(&self, batch: &Batch, permit: &dyn SendPermit) -> Result<(), SinkError>;
    /// The partition key of each record, for sinks that route by key.
    fn partition_key(&self, _record: &SourceRecord) -> Option<String> {
        None
    }
    /// A shard's lease was taken: a sink that keeps state per shard sets it up. For the
    /// transactional protocol this fences the producer of any earlier owner of the shard (its
    /// open transaction is aborted, it can commit nothing more) and returns the number of the
    /// shard's next batch as its commit record says; a previous owner's batch n committed
    /// exactly when this is n+1. Other sinks return None.
    async fn open_shard(&self, _stream_arn: &str, _shard: &str) -> Result<Option<u64>, SinkError> {
        Ok(None)
    }
    /// The shard's lease ended (shard end, stop, loss, failure): whatever `open_shard` set up
    /// is let go of.
    async fn close_shard(&self, _shard: &str) {}
    /// Whether the `raw` format hands over the source record's bytes unchanged (a
    /// stream-to-stream sink) rather than its JSON line.
    fn takes_raw_bytes(&self) -> bool {
        false
    }
    /// For a sink that invokes a function (http): Lambda's rules for its batches (calls of at
    /// most `batch_limits`, partial batch responses, bisection; src/commit/invocation.rs).
    fn function_rules(&self) -> Option<FunctionRules> {
        None
    }
    /// The largest record (payload and partition key) the sink can ever take, if it has such
    /// a limit: with a failure destination, larger ones are set aside before the batch is sent.
    fn max_record_bytes(&self) -> Option<usize> {
        None
    }
    /// For a sink that reads the changes it writes (dynamodb): the format it takes every
    /// record in, whatever the connector's format.
    fn own_format(&self) -> Option<FormatKind> {
        None
    }
}

/// A record as `sink` takes it: its encoding in the connector's format (stream to stream in
/// `raw`, the source record's own bytes, when the sink takes them) and its partition key.
pub fn encode(
    sink: &dyn Sink,
    kind: FormatKind,
    invoke_identity_arn: Option<&str>,
    record: &SourceRecord,
) -> Result<OutputRecord, FormatMismatch> {
    let kind = sink.own_format().unwrap_or(kind);
    let payload = match record {
        SourceRecord::Kinesis(k) if kind == FormatKind::Raw && sink.takes_raw_bytes() => {
            k.data.clone()
        }
        _ => {
            let mut payload = Vec::with_capacity(512);
            format::encode_as(kind, invoke_identity_arn, record, &mut payload)?;
            payload
        }
    };
    Ok(OutputRecord {
        sequence_number: record.sequence_number().clone(),
        created_millis: record.created_millis(),
        partition_key: sink.partition_key(record),
        event_name: match record {
            SourceRecord::DynamoDb(c) => Some(c.operation.event_name()),
            SourceRecord::Kinesis(_) => None,
        },
        lane: 0,
        payload,
    })
}

/// A connector's `[sink]`: one variant per sink, each with its own settings (read and checked
/// in the sink's folder). Adding a sink: its folder, a variant here, a line in `read` and in
/// `build`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkConfig {
    Stdout,
    File(file::FileSinkConfig),
    S3 {
        s3: s3::S3SinkConfig,
        aws: AwsSettings,
    },
    Kinesis {
        kinesis: kinesis::KinesisSinkConfig,
        aws: AwsSettings,
    },
    Kafka {
        kafka: kafka::config::KafkaSinkConfig,
        aws: AwsSettings,
    },
    Http(http::HttpSinkConfig),
    DynamoDb {
        dynamodb: dynamodb::DynamoDbSinkConfig,
        aws: AwsSettings,
    },
}

impl SinkConfig {
    /// Reads a `[sink]` table by its `type`; the sink's `aws` keys override `global_aws`.
    pub fn read(t: &mut TableReader, global_aws: &AwsSettings) -> Option<SinkConfig> {
        #[derive(Clone, Copy)]
        enum Kind {
            Stdout,
            File,
            S3,
            Kinesis,
            Kafka,
            Http,
            DynamoDb,
        }
        if !t.has("type") {
            t.problem("type", "missing");
            t.ignore_rest();
            return None;
        }
        let kinds = [
            ("stdout", Kind::Stdout),
            ("file", Kind::File),
            ("s3", Kind::S3),
            ("kinesis", Kind::Kinesis),
            ("kafka", Kind::Kafka),
            ("http", Kind::Http),
            ("dynamodb", Kind::DynamoDb),
        ];
        let Some(kind) = t.choice("type", &kinds) else {
            t.ignore_rest();
            return None;
        };
        match kind {
            Kind::Stdout => Some(SinkConfig::Stdout),
            Kind::File => file::FileSinkConfig::read(t).map(SinkConfig::File),
            Kind::S3 => {
                s3::S3SinkConfig::read(t, global_aws).map(|(s3, aws)| SinkConfig::S3 { s3, aws })
            }
            Kind::Kinesis => kinesis::KinesisSinkConfig::read(t, global_aws)
                .map(|(kinesis, aws)| SinkConfig::Kinesis { kinesis, aws }),
            Kind::Kafka => kafka::config::KafkaSinkConfig::read(t, global_aws)
                .map(|(kafka, aws)| SinkConfig::Kafka { kafka, aws }),
            Kind::Http => http::HttpSinkConfig::read(t).map(SinkConfig::Http),
            Kind::DynamoDb => dynamodb::DynamoDbSinkConfig::read(t, global_aws)
                .map(|(dynamodb, aws)| SinkConfig::DynamoDb { dynamodb, aws }),
        }
    }

    /// Why this sink cannot take a shard's records in parallel lanes (`parallelization_factor`
    /// over 1), if it cannot: its recovery depends on how a batch was cut into calls.
    pub fn refuses_lanes(&self) -> Option<&'static str> {
        match self {
            SinkConfig::Stdout
            | SinkConfig::File(_)
            | SinkConfig::Kinesis { .. }
            | SinkConfig::Http(_) => None,
            SinkConfig::S3 { .. } => Some(
                "the s3 sink writes a batch as one object, named by its range, so that a new owner rewrites the same objects; lanes would cut it into objects a recovery cannot name again (raise max_records / max_bytes to write more per call)",
            ),
            SinkConfig::DynamoDb { .. } => Some(
                "the dynamodb sink already writes a batch's items in parallel calls (max_in_flight), and writes only each item's last change of a batch",
            ),
            SinkConfig::Kafka { .. } => Some(
                "the kafka sink commits a batch in one transaction, counted by its commit record, and already sends its records pipelined; lanes would need a transaction each (raise max_records to send more per transaction)",
            ),
        }
    }
}

pub async fn build(config: &SinkConfig, connector: &str) -> Result<Box<dyn Sink>, SinkError> {
    Ok(match config {
        SinkConfig::Stdout => Box::new(stdout::StdoutSink),
        SinkConfig::File(f) => Box::new(file::FileSink::open(&f.path, f.fsync)?),
        SinkConfig::S3 { s3, aws } => {
            let sdk = crate::aws::sdk_config(aws).await;
            Box::new(s3::S3Sink::new(&sdk, s3.clone(), connector))
        }
        SinkConfig::Kinesis { kinesis, aws } => {
            let sdk = crate::aws::sdk_config(aws).await;
            Box::new(kinesis::KinesisSink::new(&sdk, kinesis.clone(), connector))
        }
        SinkConfig::Kafka { kafka, aws } => {
            Box::new(kafka::KafkaSink::new(kafka.clone(), aws, connector).await?)
        }
        SinkConfig::Http(http) => Box::new(http::HttpSink::new(http.clone(), connector)?),
        SinkConfig::DynamoDb { dynamodb, aws } => {
            let sdk = crate::aws::sdk_config(aws).await;
            Box::new(dynamodb::DynamoDbSink::new(
                &sdk,
                dynamodb.clone(),
                connector,
            ))
        }
    })
}
