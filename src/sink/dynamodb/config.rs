//! The DynamoDB sink's `[sink]` table, with its defaults and checks.

use crate::aws::AwsSettings;
use crate::settings::TableReader;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DynamoDbSinkConfig {
    /// The target table's name (or ARN), in the sink's own region and account (`[sink.aws]`).
    pub table: String,
    /// BatchWriteItem calls in flight at once, per shard being written.
    pub max_in_flight: usize,
    pub max_records: usize,
    pub max_bytes: usize,
    pub max_interval_ms: u64,
}

/// Defaults: a batch is one intent and one checkpoint, and its items go out in calls of 25
/// (BatchWriteItem's limit), `DEFAULT_MAX_IN_FLIGHT` at a time.
pub const DEFAULT_MAX_RECORDS: usize = 1_000;
pub const DEFAULT_MAX_BYTES: usize = 4 * 1024 * 1024;
pub const DEFAULT_MAX_INTERVAL_MS: u64 = 200;
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4;

impl DynamoDbSinkConfig {
    /// Reads the `[sink]` table of `type = "dynamodb"` (the type is read by the caller).
    pub fn read(
        t: &mut TableReader,
        global_aws: &AwsSettings,
    ) -> Option<(DynamoDbSinkConfig, AwsSettings)> {
        let table = t.string("table");
        if let Some(name) = &table {
            if name.is_empty() {
                t.problem("table", "must not be empty");
            }
        }
        let max_in_flight = t
            .opt_u64("max_in_flight", 1, 64)
            .unwrap_or(DEFAULT_MAX_IN_FLIGHT as u64);
        let (max_records, max_bytes, max_interval_ms) = super::super::read_batch_limits(
            t,
            (
                DEFAULT_MAX_RECORDS,
                DEFAULT_MAX_BYTES,
                DEFAULT_MAX_INTERVAL_MS,
            ),
        );
        let aws = AwsSettings::read(t, "aws").or(global_aws);
        Some((
            DynamoDbSinkConfig {
                table: table.filter(|n| !n.is_empty())?,
                max_in_flight: max_in_flight as usize,
                max_records,
                max_bytes,
                max_interval_ms,
            },
            aws,
        ))
    }
}
