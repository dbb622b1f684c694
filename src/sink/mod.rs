//! Sinks: where formatted records go. Each sink states its commit protocol; the pipeline
//! advances a checkpoint only after `write_batch` returned, i.e. after the batch is durable.

pub mod file;
pub mod s3;
pub mod stdout;

use async_trait::async_trait;

use crate::config::SinkConfig;
use crate::source::sequence::SequenceNumber;

/// How a sink keeps records from being lost or repeated (see design.md).
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
    pub payload: Vec<u8>,
}

/// The records of one shard between two checkpoints, in sequence order.
#[derive(Clone, Debug)]
pub struct Batch {
    /// The source stream's ARN (a DynamoDB stream or a Kinesis stream).
    pub stream_arn: String,
    pub shard_id: String,
    pub records: Vec<OutputRecord>,
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

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying with back-off (the destination is down or slow): back-pressure.
    #[error("sink unavailable: {0}")]
    Transient(String),
    #[error("sink failed: {0}")]
    Fatal(String),
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
    /// recovering worker writes the same range again and must produce the same bytes.
    async fn write_batch(&self, batch: &Batch) -> Result<(), SinkError>;
}

pub async fn build(config: &SinkConfig, connector: &str) -> Result<Box<dyn Sink>, SinkError> {
    Ok(match config {
        SinkConfig::Stdout => Box::new(stdout::StdoutSink),
        SinkConfig::File { path, fsync } => Box::new(file::FileSink::open(path, *fsync)?),
        SinkConfig::S3 { s3, aws } => {
            let sdk = crate::aws::sdk_config(aws).await;
            Box::new(s3::S3Sink::new(&sdk, s3.clone(), connector))
        }
    })
}
