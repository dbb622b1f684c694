//! The Kinesis sink's `[sink]` table, with its defaults and checks.

use super::super::partition_key::PartitionKeyRule;
use crate::aws::AwsSettings;
use crate::settings::TableReader;
use crate::source::config::read_kinesis_stream;
use crate::source::kinesis::KinesisStreamRef;

/// What to do with a record over Kinesis' 1 MiB limit (data plus partition key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnOversize {
    /// Stop the connector, naming the record: nothing is passed over silently.
    Fail,
    /// Leave it out, counted and logged with its source identity.
    Skip,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KinesisSinkConfig {
    pub stream: KinesisStreamRef,
    pub partition_key: PartitionKeyRule,
    pub on_oversize: OnOversize,
    /// PutRecords calls in flight at once, per shard being written.
    pub max_in_flight: usize,
    pub max_records: usize,
    pub max_bytes: usize,
    pub max_interval_ms: u64,
    /// How far before an intent's time a new owner starts reading the target back: covers
    /// the clock difference between the old owner and the Kinesis service.
    pub reconcile_margin_ms: u64,
}

/// Defaults: batches big enough that the two lease-table writes per batch (intent and
/// checkpoint) cost little, small enough for low latency.
pub const DEFAULT_MAX_RECORDS: usize = 10_000;
pub const DEFAULT_MAX_BYTES: usize = 8 * 1024 * 1024;
pub const DEFAULT_MAX_INTERVAL_MS: u64 = 200;
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4;
pub const DEFAULT_RECONCILE_MARGIN_MS: u64 = 60_000;

impl KinesisSinkConfig {
    /// Reads the `[sink]` table of `type = "kinesis"` (the type is read by the caller).
    pub fn read(
        t: &mut TableReader,
        global_aws: &AwsSettings,
    ) -> Option<(KinesisSinkConfig, AwsSettings)> {
        let stream = read_kinesis_stream(t);
        let partition_key = match t.opt_string("partition_key") {
            None => Some(PartitionKeyRule::ItemKey),
            Some(s) => {
                let rule = PartitionKeyRule::parse(&s);
                if rule.is_none() {
                    t.problem(
                    "partition_key",
                    format!(
                        "{s:?} is not one of \"item-key\", \"shard\", \"attribute:NAME\", \"random\""
                    ),
                );
                }
                rule
            }
        };
        let on_oversize = if t.has("on_oversize") {
            t.choice(
                "on_oversize",
                &[("fail", OnOversize::Fail), ("skip", OnOversize::Skip)],
            )
        } else {
            Some(OnOversize::Fail)
        };
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
        let reconcile_margin_ms = t
            .opt_u64("reconcile_margin_ms", 0, 3_600_000)
            .unwrap_or(DEFAULT_RECONCILE_MARGIN_MS);
        let aws = AwsSettings::read(t, "aws").or(global_aws);
        Some((
            KinesisSinkConfig {
                stream: stream?,
                partition_key: partition_key?,
                on_oversize: on_oversize?,
                max_in_flight: max_in_flight as usize,
                max_records,
                max_bytes,
                max_interval_ms,
                reconcile_margin_ms,
            },
            aws,
        ))
    }
}
