//! A connector's `[source]` table: which stream, where to start, how to poll.

use aws_smithy_types::date_time::{DateTime, Format};

use super::kinesis::KinesisStreamRef;
use crate::aws::AwsSettings;
use crate::settings::TableReader;

/// The stream a connector reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamRef {
    /// DynamoDB Streams: the table's latest stream, resolved at start.
    Table(String),
    /// DynamoDB Streams: a stream ARN.
    StreamArn(String),
    /// Kinesis Data Streams, by name or ARN.
    Kinesis(KinesisStreamRef),
}

impl StreamRef {
    pub fn is_kinesis(&self) -> bool {
        matches!(self, StreamRef::Kinesis(_))
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
    /// Wait after an empty GetRecords before polling the shard again (the floor).
    pub poll_idle_ms: u64,
    /// The longest wait an idle shard backs off to (doubling from `poll_idle_ms` with each
    /// empty page in a row; the first record snaps it back).
    pub poll_idle_max_ms: u64,
    /// GetRecords limit (1..=1000).
    pub max_records: u32,
    /// Failed calls in a row after which the connector is reported degraded; transient
    /// failures are retried for as long as they last (the back-off stops growing here).
    pub max_retries: u32,
    pub aws: AwsSettings,
}

pub const DEFAULT_POLL_IDLE_MS: u64 = 250;
/// An idle shard backs off to this many times `poll_idle_ms` unless `poll_idle_max_ms` says.
pub const DEFAULT_IDLE_BACKOFF_FACTOR: u64 = 4;
pub const DEFAULT_MAX_RECORDS: u64 = 1000;
pub const DEFAULT_MAX_RETRIES: u64 = 10;

impl SourceConfig {
    /// Reads a `[source]` table; connector-level `aws` keys override `global_aws`.
    pub fn read(t: &mut TableReader, global_aws: &AwsSettings) -> Option<SourceConfig> {
        #[derive(Clone, Copy)]
        enum Kind {
            DynamoDbStreams,
            Kinesis,
        }
        let kind = if t.has("type") {
            t.choice(
                "type",
                &[
                    ("dynamodb-streams", Kind::DynamoDbStreams),
                    ("kinesis", Kind::Kinesis),
                ],
            )
        } else {
            t.problem("type", "missing");
            None
        };
        let stream = match kind {
            Some(Kind::DynamoDbStreams) => dynamodb_stream(t),
            Some(Kind::Kinesis) => read_kinesis_stream(t).map(StreamRef::Kinesis),
            None => {
                // Which keys belong depends on the type: judge none of them.
                t.ignore_rest();
                return None;
            }
        };
        let timestamp_key = t.opt_string("starting_position_timestamp");
        let position_key = t.opt_string("starting_position");
        let starting_position = match position_key.as_deref() {
            None | Some("trim_horizon") => Some(StartingPosition::TrimHorizon),
            Some("latest") => Some(StartingPosition::Latest),
            // Lambda's shape: AT_TIMESTAMP with StartingPositionTimestamp beside it.
            Some("at_timestamp") => match &timestamp_key {
                Some(ts) => parse_timestamp(t, "starting_position_timestamp", ts),
                None => {
                    t.problem(
                        "starting_position_timestamp",
                        "missing: starting_position = \"at_timestamp\" needs an RFC 3339 timestamp",
                    );
                    None
                }
            },
            Some(other) => parse_timestamp(t, "starting_position", other),
        };
        if timestamp_key.is_some() && position_key.as_deref() != Some("at_timestamp") {
            t.problem(
                "starting_position_timestamp",
                "only with starting_position = \"at_timestamp\"",
            );
        }
        let poll_idle_ms = t
            .opt_u64("poll_idle_ms", 0, 60_000)
            .unwrap_or(DEFAULT_POLL_IDLE_MS);
        let poll_idle_max_ms = match t.opt_u64("poll_idle_max_ms", 0, 300_000) {
            Some(max) if max < poll_idle_ms => {
                t.problem(
                    "poll_idle_max_ms",
                    format!("{max} is less than poll_idle_ms ({poll_idle_ms})"),
                );
                poll_idle_ms
            }
            Some(max) => max,
            None => poll_idle_ms * DEFAULT_IDLE_BACKOFF_FACTOR,
        };
        let max_records = t
            .opt_u64("max_records", 1, 1000)
            .unwrap_or(DEFAULT_MAX_RECORDS) as u32;
        let max_retries = t
            .opt_u64("max_retries", 0, 1000)
            .unwrap_or(DEFAULT_MAX_RETRIES) as u32;
        let aws = AwsSettings::read(t, "aws").or(global_aws);
        Some(SourceConfig {
            stream: stream?,
            starting_position: starting_position?,
            poll_idle_ms,
            poll_idle_max_ms,
            max_records,
            max_retries,
            aws,
        })
    }
}

/// An RFC 3339 timestamp as a starting position, or a problem at `key`.
fn parse_timestamp(t: &mut TableReader, key: &str, text: &str) -> Option<StartingPosition> {
    match DateTime::from_str(text, Format::DateTime) {
        Ok(ts) => ts.to_millis().ok().map(StartingPosition::AtTimestamp),
        Err(_) => {
            let expected = if key == "starting_position" {
                "expected \"trim_horizon\", \"latest\", \"at_timestamp\" or an RFC 3339 timestamp"
            } else {
                "expected an RFC 3339 timestamp such as \"2026-11-30T12:00:00Z\""
            };
            t.problem(key, format!("{text:?}: {expected}"));
            None
        }
    }
}

fn dynamodb_stream(t: &mut TableReader) -> Option<StreamRef> {
    let table = t.opt_string("table");
    let arn = t.opt_string("stream_arn");
    match (table, arn) {
        (Some(table), None) => Some(StreamRef::Table(table)),
        (None, Some(arn)) => {
            if arn.starts_with("arn:") && arn.contains(":table/") && arn.contains("/stream/") {
                Some(StreamRef::StreamArn(arn))
            } else {
                t.problem(
                    "stream_arn",
                    format!("{arn:?} is not a DynamoDB stream ARN"),
                );
                None
            }
        }
        (Some(_), Some(_)) => {
            t.problem("stream_arn", "give either table or stream_arn, not both");
            None
        }
        (None, None) => {
            t.problem("table", "missing (or give stream_arn)");
            None
        }
    }
}

/// A Kinesis stream named by `stream` or `stream_arn` (a source's, or the Kinesis sink's).
pub fn read_kinesis_stream(t: &mut TableReader) -> Option<KinesisStreamRef> {
    let name = t.opt_string("stream");
    let arn = t.opt_string("stream_arn");
    match (name, arn) {
        (Some(name), None) => Some(KinesisStreamRef::Name(name)),
        (None, Some(arn)) => {
            if arn.starts_with("arn:") && arn.contains(":kinesis:") && arn.contains(":stream/") {
                Some(KinesisStreamRef::Arn(arn))
            } else {
                t.problem("stream_arn", format!("{arn:?} is not a Kinesis stream ARN"));
                None
            }
        }
        (Some(_), Some(_)) => {
            t.problem("stream_arn", "give either stream or stream_arn, not both");
            None
        }
        (None, None) => {
            t.problem("stream", "missing (or give stream_arn)");
            None
        }
    }
}
