//! Kinesis Data Streams through the AWS SDK: stream resolution, paginated and paced ListShards,
//! iterators and GetRecords, with every error mapped to a `SourceError` class.
//!
//! Records are forwarded as Kinesis stores them: `data` is the producer's bytes (records written
//! by the KPL with aggregation stay aggregated).

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::types::{self as sdk, ShardIteratorType, StreamStatus};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::aws::AwsErrorClass;

use super::record::{KinesisRecord, SourceIdentity, SourceRecord};
use super::sequence::SequenceNumber;
use super::{IteratorPosition, RecordPage, Shard, ShardIterator, ShardSource, SourceError};

/// ListShards allows 100 calls/s per stream; one process keeps well under it.
const LIST_SHARDS_MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Shards per ListShards page (the service's maximum is 10,000, its default 1,000).
const LIST_SHARDS_PAGE: i32 = 1000;
/// GetRecords' largest `Limit`.
pub const MAX_GET_RECORDS_LIMIT: u32 = 10_000;

/// The stream to read, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KinesisStreamRef {
    Name(String),
    Arn(String),
}

impl std::fmt::Display for KinesisStreamRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KinesisStreamRef::Name(s) | KinesisStreamRef::Arn(s) => f.write_str(s),
        }
    }
}

pub struct KinesisSource {
    client: aws_sdk_kinesis::Client,
    stream_name: String,
    stream_arn: String,
    region: String,
    /// Address the stream by ARN (when it was configured by ARN: that is what cross-account
    /// access through a resource policy needs) rather than by name.
    by_arn: bool,
    last_list: Mutex<Option<Instant>>,
}

impl KinesisSource {
    /// Resolves the stream (DescribeStreamSummary) to its ARN and region. A stream given by ARN
    /// is read in the ARN's region, whatever the configured default region.
    pub async fn connect(
        sdk_config: &aws_config::SdkConfig,
        stream: &KinesisStreamRef,
    ) -> Result<Self, SourceError> {
        let mut conf = aws_sdk_kinesis::config::Builder::from(sdk_config);
        if let KinesisStreamRef::Arn(arn) = stream {
            let parsed = parse_stream_arn(arn).ok_or_else(|| {
                SourceError::Fatal(format!(
                    "{arn:?} is not a Kinesis stream ARN \
                     (arn:PARTITION:kinesis:REGION:ACCOUNT:stream/NAME)"
                ))
            })?;
            conf = conf.region(aws_sdk_kinesis::config::Region::new(
                parsed.region.to_string(),
            ));
        }
        let client = aws_sdk_kinesis::Client::from_conf(conf.build());
        let (name_param, arn_param) = match stream {
            KinesisStreamRef::Name(name) => (Some(name.clone()), None),
            KinesisStreamRef::Arn(arn) => (None, Some(arn.clone())),
        };
        let out = client
            .describe_stream_summary()
            .set_stream_name(name_param)
            .set_stream_arn(arn_param)
            .send()
            .await
            .map_err(|e| classify("DescribeStreamSummary", e))?;
        let summary = out.stream_description_summary().ok_or_else(|| {
            SourceError::Transient("DescribeStreamSummary returned no description".into())
        })?;
        if *summary.stream_status() == StreamStatus::Deleting {
            return Err(SourceError::StreamNotFound(format!(
                "stream {} is being deleted",
                summary.stream_arn()
            )));
        }
        let stream_arn = summary.stream_arn().to_string();
        let region = parse_stream_arn(&stream_arn)
            .map(|a| a.region.to_string())
            .or_else(|| sdk_config.region().map(|r| r.to_string()))
            .unwrap_or_default();
        Ok(KinesisSource {
            client,
            stream_name: summary.stream_name().to_string(),
            stream_arn,
            region,
            by_arn: matches!(stream, KinesisStreamRef::Arn(_)),
            last_list: Mutex::new(None),
        })
    }

    pub fn stream_name(&self) -> &str {
        &self.stream_name
    }

    /// The client, for writing to the stream (the Kinesis sink reads its target through this
    /// source and writes through the same client).
    pub fn client(&self) -> &aws_sdk_kinesis::Client {
        &self.client
    }

    /// (StreamName, StreamARN) as a request addresses the stream: one of them.
    pub fn address(&self) -> (Option<String>, Option<String>) {
        (self.name_param(), self.arn_param())
    }

    /// An iterator at the first record that arrived at or after `millis` (AT_TIMESTAMP, by
    /// the service's arrival clock). Kinesis only: DynamoDB Streams has no such iterator.
    pub async fn open_iterator_at(
        &self,
        shard_id: &str,
        millis: i64,
    ) -> Result<ShardIterator, SourceError> {
        let req = self
            .iterator_request(shard_id)
            .shard_iterator_type(ShardIteratorType::AtTimestamp)
            .timestamp(aws_smithy_types::DateTime::from_millis(millis));
        send_iterator_request(req, shard_id).await
    }

    /// GetShardIterator for one of this stream's shards, position still to set.
    fn iterator_request(
        &self,
        shard_id: &str,
    ) -> aws_sdk_kinesis::operation::get_shard_iterator::builders::GetShardIteratorFluentBuilder
    {
        self.client
            .get_shard_iterator()
            .set_stream_name(self.name_param())
            .set_stream_arn(self.arn_param())
            .shard_id(shard_id)
    }

    /// The stream's region: every record's `aws_region`.
    pub fn region(&self) -> &str {
        &self.region
    }

    fn name_param(&self) -> Option<String> {
        (!self.by_arn).then(|| self.stream_name.clone())
    }

    fn arn_param(&self) -> Option<String> {
        self.by_arn.then(|| self.stream_arn.clone())
    }

    /// One ListShards page: the first names the stream; the next ones carry only the NextToken,
    /// since the service rejects StreamName (and StreamARN) alongside it.
    fn list_shards_request(
        &self,
        token: Option<&str>,
    ) -> aws_sdk_kinesis::operation::list_shards::builders::ListShardsFluentBuilder {
        let req = self.client.list_shards().max_results(LIST_SHARDS_PAGE);
        match token {
            Some(t) => req.next_token(t),
            None => req
                .set_stream_name(self.name_param())
                .set_stream_arn(self.arn_param()),
        }
    }

    async fn pace_list(&self) {
        let mut last = self.last_list.lock().await;
        if let Some(at) = *last {
            let wait = LIST_SHARDS_MIN_INTERVAL.saturating_sub(at.elapsed());
            if !wait.is_zero() {
                crate::metrics::events::rate_limit_wait("ListShards", wait);
                tokio::time::sleep(wait).await;
            }
        }
        *last = Some(Instant::now());
    }
}

/// The parts of `arn:PARTITION:kinesis:REGION:ACCOUNT:stream/NAME`.
#[derive(Debug, PartialEq, Eq)]
pub struct StreamArn<'a> {
    pub region: &'a str,
    pub account: &'a str,
    pub name: &'a str,
}

pub fn parse_stream_arn(arn: &str) -> Option<StreamArn<'_>> {
    let mut parts = arn.splitn(6, ':');
    let (prefix, _partition, service) = (parts.next()?, parts.next()?, parts.next()?);
    let (region, account, resource) = (parts.next()?, parts.next()?, parts.next()?);
    let name = resource.strip_prefix("stream/")?;
    if prefix != "arn" || service != "kinesis" || region.is_empty() || name.is_empty() {
        return None;
    }
    // A consumer ARN (`stream/NAME/consumer/...`) is not a stream.
    if name.contains('/') {
        return None;
    }
    Some(StreamArn {
        region,
        account,
        name,
    })
}

/// GetRecords' `Limit` for a requested batch size: at least 1, at most the service's maximum.
pub fn get_records_limit(limit: u32) -> i32 {
    limit.clamp(1, MAX_GET_RECORDS_LIMIT) as i32
}

#[async_trait]
impl ShardSource for KinesisSource {
    fn stream_arn(&self) -> &str {
        &self.stream_arn
    }

    async fn list_shards(&self) -> Result<Vec<Shard>, SourceError> {
        let mut shards = Vec::new();
        let mut token: Option<String> = None;
        let mut seen_tokens = HashSet::new();
        loop {
            self.pace_list().await;
            let req = self.list_shards_request(token.as_deref());
            let out = req.send().await.map_err(|e| classify("ListShards", e))?;
            for s in out.shards() {
                shards.push(convert_shard(s)?);
            }
            match out.next_token() {
                // Guard against a server that hands out the same page again.
                Some(t) if seen_tokens.insert(t.to_string()) => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(shards)
    }

    async fn open_iterator(
        &self,
        shard_id: &str,
        position: &IteratorPosition,
    ) -> Result<ShardIterator, SourceError> {
        let req = self.iterator_request(shard_id);
        let req = match position {
            IteratorPosition::TrimHorizon => {
                req.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            IteratorPosition::Latest => req.shard_iterator_type(ShardIteratorType::Latest),
            IteratorPosition::AfterSequenceNumber(seq) => req
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(seq.as_str()),
            IteratorPosition::AtTimestamp(millis) => req
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(aws_smithy_types::DateTime::from_millis(*millis)),
        };
        send_iterator_request(req, shard_id).await
    }

    async fn get_records(
        &self,
        iterator: &ShardIterator,
        limit: u32,
    ) -> Result<RecordPage, SourceError> {
        let out = self
            .client
            .get_records()
            .shard_iterator(&iterator.token)
            .limit(get_records_limit(limit))
            .set_stream_arn(self.arn_param())
            .send()
            .await
            .map_err(|e| classify("GetRecords", e))?;
        let shard_id = &iterator.shard_id;
        let mut records = Vec::with_capacity(out.records().len());
        for r in out.records() {
            let record = convert_record(r, &self.stream_arn, shard_id, &self.region)?;
            records.push(SourceRecord::Kinesis(record));
        }
        Ok(RecordPage {
            records,
            // Absent (or null) only once a closed shard has been read to its end.
            next_iterator: out.next_shard_iterator().map(|s| ShardIterator {
                shard_id: shard_id.clone(),
                token: s.to_string(),
            }),
            millis_behind_latest: out.millis_behind_latest(),
        })
    }
}

async fn send_iterator_request(
    req: aws_sdk_kinesis::operation::get_shard_iterator::builders::GetShardIteratorFluentBuilder,
    shard_id: &str,
) -> Result<ShardIterator, SourceError> {
    let out = req
        .send()
        .await
        .map_err(|e| classify("GetShardIterator", e))?;
    out.shard_iterator()
        .map(|s| ShardIterator {
            shard_id: shard_id.to_string(),
            token: s.to_string(),
        })
        .ok_or_else(|| SourceError::Transient("GetShardIterator returned no iterator".into()))
}

/// Maps an SDK error to a source error class (codes through `crate::aws::classify`).
pub fn classify<E, R>(operation: &str, err: SdkError<E, R>) -> SourceError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: crate::aws::ResponseStatus + std::fmt::Debug + 'static,
{
    let (class, text) = crate::aws::classify(operation, &err);
    match class {
        AwsErrorClass::ExpiredIterator => SourceError::ExpiredIterator,
        AwsErrorClass::TrimmedData => SourceError::TrimmedData(text),
        AwsErrorClass::Throttled => SourceError::Throttled(text),
        AwsErrorClass::NotFound => SourceError::StreamNotFound(text),
        AwsErrorClass::Transient => SourceError::Transient(text),
        AwsErrorClass::ConditionFailed | AwsErrorClass::Fatal => SourceError::Fatal(text),
    }
}

fn shard_seq(shard_id: &str, what: &str, s: &str) -> Result<SequenceNumber, SourceError> {
    SequenceNumber::parse(s)
        .map_err(|e| SourceError::Fatal(format!("shard {shard_id}: {what}: {e}")))
}

/// A listed shard as ours: both parents (a merge has two), its sequence number range.
pub fn convert_shard(s: &sdk::Shard) -> Result<Shard, SourceError> {
    let shard_id = s.shard_id();
    if shard_id.is_empty() {
        return Err(SourceError::Transient(
            "ListShards: shard without an id".into(),
        ));
    }
    let range = s.sequence_number_range();
    Ok(Shard {
        shard_id: shard_id.to_string(),
        parent_shard_id: s.parent_shard_id().map(str::to_string),
        adjacent_parent_shard_id: s.adjacent_parent_shard_id().map(str::to_string),
        starting_sequence_number: range
            .map(|r| {
                shard_seq(
                    shard_id,
                    "starting sequence number",
                    r.starting_sequence_number(),
                )
            })
            .transpose()?,
        ending_sequence_number: range
            .and_then(|r| r.ending_sequence_number())
            .map(|v| shard_seq(shard_id, "ending sequence number", v))
            .transpose()?,
    })
}

/// A record the service sent that cannot be represented is an error naming it, never a silent
/// skip.
pub fn convert_record(
    r: &sdk::Record,
    stream_arn: &str,
    shard_id: &str,
    region: &str,
) -> Result<KinesisRecord, SourceError> {
    let bad = |what: String| {
        SourceError::Fatal(format!(
            "record {:?} (partition key {:?}) of shard {shard_id} in stream {stream_arn}: {what}",
            r.sequence_number(),
            r.partition_key().unwrap_or("?"),
        ))
    };
    let sequence_number = SequenceNumber::parse(r.sequence_number())
        .map_err(|e| bad(format!("sequence number is not decimal: {e}")))?;
    let partition_key = r
        .partition_key()
        .ok_or_else(|| bad("no partition key".into()))?
        .to_string();
    Ok(KinesisRecord {
        source: SourceIdentity {
            stream_arn: stream_arn.to_string(),
            shard_id: shard_id.to_string(),
            sequence_number,
        },
        partition_key,
        data: r.data().as_ref().to_vec(),
        approximate_arrival_millis: r
            .approximate_arrival_timestamp()
            .and_then(|t| t.to_millis().ok()),
        aws_region: region.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kinesis::operation::get_records::GetRecordsError;
    use aws_sdk_kinesis::operation::list_shards::ListShardsError;
    use aws_sdk_kinesis::primitives::{Blob, DateTime};
    use aws_sdk_kinesis::types::SequenceNumberRange;
    use aws_smithy_types::error::ErrorMetadata;

    const ARN: &str = "arn:aws:kinesis:eu-west-1:123456789012:stream/orders";
    const SEQ: &str = "49590338271490256608559692538361571095921575989136588898";

    fn seq(s: &str) -> SequenceNumber {
        SequenceNumber::parse(s).unwrap()
    }

    fn sdk_record(sequence: &str) -> sdk::builders::RecordBuilder {
        sdk::Record::builder()
            .sequence_number(sequence)
            .partition_key("user#42")
            .data(Blob::new(vec![0x00, 0xfe, 0xff, b'x']))
            .approximate_arrival_timestamp(DateTime::from_millis(1_545_084_650_987))
    }

    #[test]
    fn record_keeps_bytes_key_arrival_and_identity() {
        let r = sdk_record(SEQ).build().unwrap();
        let record = convert_record(&r, ARN, "shardId-000000000006", "eu-west-1").unwrap();
        assert_eq!(
            record,
            KinesisRecord {
                source: SourceIdentity {
                    stream_arn: ARN.into(),
                    shard_id: "shardId-000000000006".into(),
                    sequence_number: seq(SEQ),
                },
                partition_key: "user#42".into(),
                data: vec![0x00, 0xfe, 0xff, b'x'],
                approximate_arrival_millis: Some(1_545_084_650_987),
                aws_region: "eu-west-1".into(),
            }
        );
    }

    #[test]
    fn record_without_arrival_time_and_with_empty_data() {
        let r = sdk::Record::builder()
            .sequence_number("1")
            .partition_key("")
            .data(Blob::new(Vec::new()))
            .build()
            .unwrap();
        let record = convert_record(&r, ARN, "shardId-000000000000", "eu-west-1").unwrap();
        assert_eq!(record.approximate_arrival_millis, None);
        assert!(record.data.is_empty());
        assert_eq!(record.partition_key, "");
    }

    #[test]
    fn non_decimal_sequence_number_is_fatal_and_names_shard_and_record() {
        for bad in ["", "12a4", "-1", "1.5"] {
            let r = sdk_record(bad).build().unwrap();
            match convert_record(&r, ARN, "shardId-000000000003", "eu-west-1") {
                Err(SourceError::Fatal(text)) => {
                    assert!(text.contains("shardId-000000000003"), "{text}");
                    assert!(text.contains(&format!("{bad:?}")), "{text}");
                    assert!(text.contains("user#42"), "{text}");
                    assert!(text.contains(ARN), "{text}");
                }
                other => panic!("{bad:?}: expected Fatal, got {other:?}"),
            }
        }
    }

    #[test]
    fn record_without_partition_key_is_fatal() {
        let r = sdk::Record::builder()
            .sequence_number(SEQ)
            .data(Blob::new(b"x".to_vec()))
            .build()
            .unwrap();
        let err = convert_record(&r, ARN, "shardId-000000000001", "eu-west-1").unwrap_err();
        assert!(
            matches!(&err, SourceError::Fatal(t) if t.contains(SEQ) && t.contains("shardId-000000000001")),
            "{err:?}"
        );
    }

    fn range(start: &str, end: Option<&str>) -> SequenceNumberRange {
        SequenceNumberRange::builder()
            .starting_sequence_number(start)
            .set_ending_sequence_number(end.map(str::to_string))
            .build()
            .unwrap()
    }

    #[test]
    fn shards_open_closed_split_and_merged() {
        let open = sdk::Shard::builder()
            .shard_id("shardId-000000000002")
            .parent_shard_id("shardId-000000000000")
            .sequence_number_range(range(
                "49600000000000000000000000000000000000000000000000000034",
                None,
            ))
            .build()
            .unwrap();
        assert_eq!(
            convert_shard(&open).unwrap(),
            Shard {
                shard_id: "shardId-000000000002".into(),
                parent_shard_id: Some("shardId-000000000000".into()),
                adjacent_parent_shard_id: None,
                starting_sequence_number: Some(seq(
                    "49600000000000000000000000000000000000000000000000000034"
                )),
                ending_sequence_number: None,
            }
        );

        let closed = sdk::Shard::builder()
            .shard_id("shardId-000000000000")
            .sequence_number_range(range(
                "0049",
                Some("49599999999999999999999999999999999999999999999999999999"),
            ))
            .build()
            .unwrap();
        let closed = convert_shard(&closed).unwrap();
        assert_eq!(closed.parents().count(), 0);
        assert_eq!(closed.starting_sequence_number, Some(seq("49")));
        assert_eq!(
            closed.ending_sequence_number,
            Some(seq(
                "49599999999999999999999999999999999999999999999999999999"
            ))
        );

        let merged = sdk::Shard::builder()
            .shard_id("shardId-000000000004")
            .parent_shard_id("shardId-000000000003")
            .adjacent_parent_shard_id("shardId-000000000001")
            .sequence_number_range(range("5", None))
            .build()
            .unwrap();
        let merged = convert_shard(&merged).unwrap();
        assert_eq!(
            merged.parents().collect::<Vec<_>>(),
            ["shardId-000000000003", "shardId-000000000001"]
        );
    }

    #[test]
    fn shard_with_a_bad_sequence_number_is_fatal() {
        let s = sdk::Shard::builder()
            .shard_id("shardId-000000000009")
            .sequence_number_range(range("1", Some("x")))
            .build()
            .unwrap();
        let err = convert_shard(&s).unwrap_err();
        assert!(
            matches!(&err, SourceError::Fatal(t) if t.contains("shardId-000000000009")),
            "{err:?}"
        );
    }

    #[test]
    fn stream_arns() {
        assert_eq!(
            parse_stream_arn(ARN),
            Some(StreamArn {
                region: "eu-west-1",
                account: "123456789012",
                name: "orders"
            })
        );
        assert_eq!(
            parse_stream_arn("arn:aws-cn:kinesis:cn-north-1:123456789012:stream/a.b-c_d")
                .map(|a| (a.region, a.name)),
            Some(("cn-north-1", "a.b-c_d"))
        );
        for bad in [
            "",
            "orders",
            "arn:aws:dynamodb:us-east-1:1:table/orders/stream/2026-01-01T00:00:00.000",
            "arn:aws:kinesis:us-east-1:1:stream/",
            "arn:aws:kinesis::1:stream/orders",
            "arn:aws:kinesis:us-east-1:1:stream/orders/consumer/c:1",
            "arn:aws:kinesis:us-east-1:1:deliverystream/orders",
        ] {
            assert_eq!(parse_stream_arn(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn get_records_limit_is_within_the_service_range() {
        assert_eq!(get_records_limit(0), 1);
        assert_eq!(get_records_limit(1), 1);
        assert_eq!(get_records_limit(1000), 1000);
        assert_eq!(get_records_limit(10_000), 10_000);
        assert_eq!(get_records_limit(10_001), 10_000);
        assert_eq!(get_records_limit(u32::MAX), 10_000);
    }

    fn offline_source(by_arn: bool) -> KinesisSource {
        let config = aws_sdk_kinesis::Config::builder()
            .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
            .region(aws_sdk_kinesis::config::Region::new("eu-west-1"))
            .build();
        KinesisSource {
            client: aws_sdk_kinesis::Client::from_conf(config),
            stream_name: "orders".into(),
            stream_arn: ARN.into(),
            region: "eu-west-1".into(),
            by_arn,
            last_list: Mutex::new(None),
        }
    }

    #[test]
    fn list_shards_pages_after_the_first_carry_only_the_token() {
        for by_arn in [false, true] {
            let source = offline_source(by_arn);
            let first = source.list_shards_request(None);
            assert_eq!(first.get_next_token(), &None);
            assert_eq!(first.get_max_results(), &Some(LIST_SHARDS_PAGE));
            if by_arn {
                assert_eq!(first.get_stream_name(), &None);
                assert_eq!(first.get_stream_arn().as_deref(), Some(ARN));
            } else {
                assert_eq!(first.get_stream_name().as_deref(), Some("orders"));
                assert_eq!(first.get_stream_arn(), &None);
            }
            let next = source.list_shards_request(Some("token-2"));
            assert_eq!(next.get_next_token().as_deref(), Some("token-2"));
            assert_eq!(next.get_stream_name(), &None);
            assert_eq!(next.get_stream_arn(), &None);
            // Everything else as on the first page: every shard, open and closed.
            assert_eq!(next.get_shard_filter(), &None);
            assert_eq!(next.get_exclusive_start_shard_id(), &None);
        }
    }

    fn service_error<E>(err: E) -> SdkError<E, ()> {
        SdkError::service_error(err, ())
    }

    fn get_records_error(code: &str) -> SourceError {
        let meta = ErrorMetadata::builder().code(code).message("m").build();
        classify("GetRecords", service_error(GetRecordsError::generic(meta)))
    }

    #[test]
    fn error_classes() {
        assert!(matches!(
            get_records_error("ExpiredIteratorException"),
            SourceError::ExpiredIterator
        ));
        for throttled in [
            "ProvisionedThroughputExceededException",
            "KMSThrottlingException",
            "LimitExceededException",
        ] {
            assert!(
                matches!(get_records_error(throttled), SourceError::Throttled(_)),
                "{throttled}"
            );
        }
        assert!(matches!(
            get_records_error("ResourceNotFoundException"),
            SourceError::StreamNotFound(_)
        ));
        for fatal in ["AccessDeniedException", "InvalidArgumentException"] {
            assert!(
                matches!(get_records_error(fatal), SourceError::Fatal(_)),
                "{fatal}"
            );
        }
        assert!(matches!(
            get_records_error("InternalFailureException"),
            SourceError::Transient(_)
        ));
        // An expired ListShards token: retrying lists again from the start.
        let meta = ErrorMetadata::builder()
            .code("ExpiredNextTokenException")
            .build();
        assert!(matches!(
            classify("ListShards", service_error(ListShardsError::generic(meta))),
            SourceError::Transient(_)
        ));
    }
}
