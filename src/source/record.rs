//! The change record as read from a DynamoDB stream, independent of the AWS SDK's types so that
//! formats and tests need no SDK, and the in-process stream model can produce the same thing.

use std::collections::BTreeMap;

use super::sequence::SequenceNumber;

/// A DynamoDB item: attribute name → typed value. Sorted, so that every output is a pure,
/// deterministic function of the record (same bytes on every re-send).
pub type Item = BTreeMap<String, AttributeValue>;

/// DynamoDB's typed attribute value. Numbers stay decimal strings: DynamoDB numbers have up to
/// 38 digits of precision, which no float keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttributeValue {
    S(String),
    N(String),
    B(Vec<u8>),
    Ss(Vec<String>),
    Ns(Vec<String>),
    Bs(Vec<Vec<u8>>),
    M(Item),
    L(Vec<AttributeValue>),
    Null(bool),
    Bool(bool),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperationType {
    Insert,
    Modify,
    Remove,
    /// An item as a table snapshot read it (`source::snapshot`), before the stream's changes.
    Snapshot,
}

impl OperationType {
    /// The eventName DynamoDB Streams uses. A snapshot record is an INSERT, as a consumer of
    /// stream records expects to see an item arrive; `event_source` tells it apart.
    pub fn event_name(self) -> &'static str {
        match self {
            OperationType::Insert | OperationType::Snapshot => "INSERT",
            OperationType::Modify => "MODIFY",
            OperationType::Remove => "REMOVE",
        }
    }

    /// The eventSource of the Lambda-shaped formats.
    pub fn event_source(self) -> &'static str {
        match self {
            OperationType::Snapshot => SNAPSHOT_EVENT_SOURCE,
            _ => "aws:dynamodb",
        }
    }
}

/// The eventSource of snapshot records.
pub const SNAPSHOT_EVENT_SOURCE: &str = "shardbridge:snapshot";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamViewType {
    KeysOnly,
    NewImage,
    OldImage,
    NewAndOldImages,
}

impl StreamViewType {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamViewType::KeysOnly => "KEYS_ONLY",
            StreamViewType::NewImage => "NEW_IMAGE",
            StreamViewType::OldImage => "OLD_IMAGE",
            StreamViewType::NewAndOldImages => "NEW_AND_OLD_IMAGES",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "KEYS_ONLY" => StreamViewType::KeysOnly,
            "NEW_IMAGE" => StreamViewType::NewImage,
            "OLD_IMAGE" => StreamViewType::OldImage,
            "NEW_AND_OLD_IMAGES" => StreamViewType::NewAndOldImages,
            _ => return None,
        })
    }
}

/// Who made the change, when it was not a user: DynamoDB sets it for deletes by Time To Live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserIdentity {
    pub principal_id: String,
    pub kind: String,
}

/// Where a record came from: together these identify it uniquely, so a consumer can
/// de-duplicate on them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceIdentity {
    pub stream_arn: String,
    pub shard_id: String,
    pub sequence_number: SequenceNumber,
}

/// One DynamoDB Streams change record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeRecord {
    pub event_id: String,
    pub operation: OperationType,
    pub event_version: String,
    pub aws_region: String,
    pub table_name: String,
    pub source: SourceIdentity,
    /// Milliseconds since the Unix epoch, when DynamoDB provides it.
    pub approximate_creation_millis: Option<i64>,
    pub keys: Item,
    pub new_image: Option<Item>,
    pub old_image: Option<Item>,
    pub size_bytes: i64,
    pub view_type: StreamViewType,
    pub user_identity: Option<UserIdentity>,
}

/// One Kinesis Data Streams record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KinesisRecord {
    pub source: SourceIdentity,
    pub partition_key: String,
    pub data: Vec<u8>,
    /// Milliseconds since the Unix epoch.
    pub approximate_arrival_millis: Option<i64>,
    pub aws_region: String,
}

/// A record as a source delivers it: a DynamoDB change, or a Kinesis record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceRecord {
    DynamoDb(ChangeRecord),
    Kinesis(KinesisRecord),
}

impl SourceRecord {
    pub fn identity(&self) -> &SourceIdentity {
        match self {
            SourceRecord::DynamoDb(r) => &r.source,
            SourceRecord::Kinesis(r) => &r.source,
        }
    }

    pub fn sequence_number(&self) -> &SequenceNumber {
        &self.identity().sequence_number
    }

    /// When the record entered the stream, if known (ms since the epoch).
    pub fn created_millis(&self) -> Option<i64> {
        match self {
            SourceRecord::DynamoDb(r) => r.approximate_creation_millis,
            SourceRecord::Kinesis(r) => r.approximate_arrival_millis,
        }
    }

    /// Size as the stream accounts it.
    pub fn size_bytes(&self) -> u64 {
        match self {
            SourceRecord::DynamoDb(r) => r.size_bytes.max(0) as u64,
            SourceRecord::Kinesis(r) => (r.data.len() + r.partition_key.len()) as u64,
        }
    }
}
