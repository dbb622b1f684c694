//! Stream sources: the shard model shared by DynamoDB Streams and Kinesis, behind one trait so
//! that the pipeline, the lease coordinator and the tests' deterministic stream model share it.

pub mod config;
pub mod dynamodb_streams;
pub mod kinesis;
pub mod poll;
pub mod record;
pub mod sequence;
pub mod snapshot;
pub mod stream_page;

use async_trait::async_trait;

pub use config::{SourceConfig, StartingPosition, StreamRef};

use record::SourceRecord;
use sequence::SequenceNumber;

/// One shard as listed by the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    pub shard_id: String,
    pub parent_shard_id: Option<String>,
    /// Kinesis merges have two parents.
    pub adjacent_parent_shard_id: Option<String>,
    pub starting_sequence_number: Option<SequenceNumber>,
    /// Set once the shard is closed: it takes no new records.
    pub ending_sequence_number: Option<SequenceNumber>,
}

impl Shard {
    pub fn parents(&self) -> impl Iterator<Item = &str> {
        self.parent_shard_id
            .iter()
            .chain(self.adjacent_parent_shard_id.iter())
            .map(String::as_str)
    }
}

/// Where to open a shard iterator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IteratorPosition {
    TrimHorizon,
    Latest,
    AfterSequenceNumber(SequenceNumber),
    /// The first record written at or after this time (milliseconds since the epoch):
    /// Kinesis' AT_TIMESTAMP. Sources without such an iterator start at the trim horizon
    /// (the shard worker skips the older records either way).
    AtTimestamp(i64),
}

/// An opaque iterator token, tagged with its shard (GetRecords' answer does not name it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardIterator {
    pub shard_id: String,
    pub token: String,
}

/// What one GetRecords call returned.
#[derive(Debug, Default)]
pub struct RecordPage {
    pub records: Vec<SourceRecord>,
    /// None: the shard is closed and every record has been read (SHARD_END).
    pub next_iterator: Option<ShardIterator>,
    /// How far the newest record read is behind now, when the source says so (Kinesis does).
    pub millis_behind_latest: Option<i64>,
}

/// Error classes of a source call: each has its own action in the shard worker.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("shard iterator expired")]
    ExpiredIterator,
    #[error("requested records were trimmed past retention: {0}")]
    TrimmedData(String),
    #[error("throttled: {0}")]
    Throttled(String),
    /// The text names what was not found (the service's message says so).
    #[error("{0}")]
    StreamNotFound(String),
    #[error("stream disabled: {0}")]
    StreamDisabled(String),
    /// The text says what failed (operation, code, message).
    #[error("{0}")]
    Transient(String),
    #[error("{0}")]
    Fatal(String),
}

impl SourceError {
    /// A bounded label for metrics.
    pub fn class(&self) -> &'static str {
        match self {
            SourceError::ExpiredIterator => "expired_iterator",
            SourceError::TrimmedData(_) => "trimmed_data",
            SourceError::Throttled(_) => "throttled",
            SourceError::StreamNotFound(_) => "stream_not_found",
            SourceError::StreamDisabled(_) => "stream_disabled",
            SourceError::Transient(_) => "transient",
            SourceError::Fatal(_) => "fatal",
        }
    }
}

#[async_trait]
pub trait ShardSource: Send + Sync {
    /// The stream's ARN: the `stream` part of every record's source identity.
    fn stream_arn(&self) -> &str;
    /// Every shard of the stream, open and closed (paginated as the API requires).
    async fn list_shards(&self) -> Result<Vec<Shard>, SourceError>;
    /// The children of a shard that has just ended. Sources with a cheaper call than a full
    /// listing (DynamoDB Streams' CHILD_SHARDS filter) override this.
    async fn child_shards(&self, parent: &str) -> Result<Vec<Shard>, SourceError> {
        let shards = self.list_shards().await?;
        Ok(shards
            .into_iter()
            .filter(|s| s.parents().any(|p| p == parent))
            .collect())
    }
    async fn open_iterator(
        &self,
        shard_id: &str,
        position: &IteratorPosition,
    ) -> Result<ShardIterator, SourceError>;
    async fn get_records(
        &self,
        iterator: &ShardIterator,
        limit: u32,
    ) -> Result<RecordPage, SourceError>;
}
