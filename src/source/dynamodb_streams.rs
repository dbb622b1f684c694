//! DynamoDB Streams through the AWS SDK: stream resolution, paginated and rate-limited
//! DescribeStream, iterators and GetRecords, with every error mapped to a `SourceError` class.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex as StdMutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodbstreams::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodbstreams::types::{
    self as sdk, ShardFilter, ShardFilterType, ShardIteratorType, StreamStatus,
};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextMut;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::DateTime;
use bytes::Bytes;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::aws::AwsErrorClass;

use super::record::{
    AttributeValue, ChangeRecord, Item, OperationType, SourceIdentity, SourceRecord,
    StreamViewType, UserIdentity,
};
use super::sequence::SequenceNumber;
use super::stream_page::{self, PageError, PageOrigin};
use super::{IteratorPosition, RecordPage, Shard, ShardIterator, ShardSource, SourceError};

/// DescribeStream allows 10 calls/s per account; one process stays well under it.
const DESCRIBE_STREAM_MIN_INTERVAL: Duration = Duration::from_millis(200);

pub struct DynamoDbStreamsSource {
    client: aws_sdk_dynamodbstreams::Client,
    stream_arn: String,
    table_name: String,
    last_describe: Mutex<Option<Instant>>,
}

impl DynamoDbStreamsSource {
    /// Resolves the table's latest stream (when given a table) and checks that it is enabled.
    pub async fn connect(
        sdk_config: &aws_config::SdkConfig,
        stream: &super::StreamRef,
    ) -> Result<Self, SourceError> {
        let stream_arn = match stream {
            super::StreamRef::Kinesis(_) => {
                return Err(SourceError::Fatal(
                    "a Kinesis stream is not a DynamoDB stream".into(),
                ))
            }
            super::StreamRef::StreamArn(arn) => arn.clone(),
            super::StreamRef::Table(table) => {
                let ddb = aws_sdk_dynamodb::Client::new(sdk_config);
                let out = ddb
                    .describe_table()
                    .table_name(table)
                    .send()
                    .await
                    .map_err(|e| classify("DescribeTable", e))?;
                let desc = out.table().ok_or_else(|| {
                    SourceError::StreamNotFound(format!("table {table}: no description returned"))
                })?;
                let enabled = desc
                    .stream_specification()
                    .map(|s| s.stream_enabled())
                    .unwrap_or(false);
                match desc.latest_stream_arn() {
                    Some(arn) if enabled => arn.to_string(),
                    _ => {
                        return Err(SourceError::StreamDisabled(format!(
                            "table {table} has no enabled stream (enable DynamoDB Streams on it)"
                        )))
                    }
                }
            }
        };
        let table_name = table_name_of(&stream_arn).unwrap_or_default().to_string();
        let source = DynamoDbStreamsSource {
            client: aws_sdk_dynamodbstreams::Client::new(sdk_config),
            stream_arn,
            table_name,
            last_describe: Mutex::new(None),
        };
        Ok(source)
    }

    async fn pace_describe(&self) {
        let mut last = self.last_describe.lock().await;
        if let Some(at) = *last {
            let wait = DESCRIBE_STREAM_MIN_INTERVAL.saturating_sub(at.elapsed());
            if !wait.is_zero() {
                crate::metrics::events::rate_limit_wait("DescribeStream", wait);
                tokio::time::sleep(wait).await;
            }
        }
        *last = Some(Instant::now());
    }
}

/// `arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL` → NAME.
pub fn table_name_of(stream_arn: &str) -> Option<&str> {
    let rest = stream_arn.split_once(":table/")?.1;
    rest.split('/').next()
}

#[async_trait]
impl ShardSource for DynamoDbStreamsSource {
    fn stream_arn(&self) -> &str {
        &self.stream_arn
    }

    async fn list_shards(&self) -> Result<Vec<Shard>, SourceError> {
        let mut shards = Vec::new();
        let mut start: Option<String> = None;
        loop {
            self.pace_describe().await;
            let out = self
                .client
                .describe_stream()
                .stream_arn(&self.stream_arn)
                .set_exclusive_start_shard_id(start.clone())
                .limit(100)
                .send()
                .await
                .map_err(|e| classify("DescribeStream", e))?;
            let desc = out.stream_description().ok_or_else(|| {
                SourceError::Transient("DescribeStream returned no description".into())
            })?;
            if let Some(StreamStatus::Disabled) = desc.stream_status() {
                return Err(SourceError::StreamDisabled(format!(
                    "stream {} is disabled",
                    self.stream_arn
                )));
            }
            for s in desc.shards() {
                shards.push(convert_shard(s)?);
            }
            match desc.last_evaluated_shard_id() {
                // Guard against a server that repeats the same page.
                Some(id) if start.as_deref() != Some(id) => start = Some(id.to_string()),
                _ => break,
            }
        }
        Ok(shards)
    }

    /// DescribeStream with the CHILD_SHARDS filter: one call instead of a full listing.
    /// (Filtered again here: some emulators ignore the filter.)
    async fn child_shards(&self, parent: &str) -> Result<Vec<Shard>, SourceError> {
        self.pace_describe().await;
        let filter = ShardFilter::builder()
            .r#type(ShardFilterType::ChildShards)
            .shard_id(parent)
            .build();
        let out = self
            .client
            .describe_stream()
            .stream_arn(&self.stream_arn)
            .shard_filter(filter)
            .send()
            .await
            .map_err(|e| classify("DescribeStream", e))?;
        let shards = out
            .stream_description()
            .map(|d| d.shards())
            .unwrap_or_default();
        let mut children = Vec::new();
        for s in shards {
            let shard = convert_shard(s)?;
            if shard.parents().any(|p| p == parent) {
                children.push(shard);
            }
        }
        Ok(children)
    }

    async fn open_iterator(
        &self,
        shard_id: &str,
        position: &IteratorPosition,
    ) -> Result<ShardIterator, SourceError> {
        let req = self
            .client
            .get_shard_iterator()
            .stream_arn(&self.stream_arn)
            .shard_id(shard_id);
        let req = match position {
            // No AT_TIMESTAMP iterator here: from the trim horizon, older records skipped.
            IteratorPosition::TrimHorizon | IteratorPosition::AtTimestamp(_) => {
                req.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            IteratorPosition::Latest => req.shard_iterator_type(ShardIteratorType::Latest),
            IteratorPosition::AfterSequenceNumber(seq) => req
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(seq.as_str()),
        };
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

    async fn get_records(
        &self,
        iterator: &ShardIterator,
        limit: u32,
    ) -> Result<RecordPage, SourceError> {
        let body = TakeBody::default();
        let out = self
            .client
            .get_records()
            .shard_iterator(&iterator.token)
            .limit(limit as i32)
            .customize()
            .interceptor(body.clone())
            .send()
            .await
            .map_err(|e| classify("GetRecords", e))?;
        let shard_id = &iterator.shard_id;
        if let Some(body) = body.take() {
            let origin = PageOrigin {
                stream_arn: &self.stream_arn,
                table_name: &self.table_name,
                shard_id,
            };
            let page = stream_page::parse(&body, origin).map_err(|e| match e {
                PageError::Unreadable(_) => SourceError::Transient(e.to_string()),
                PageError::Record(_) => SourceError::Fatal(e.to_string()),
            })?;
            return Ok(RecordPage {
                records: page
                    .records
                    .into_iter()
                    .map(SourceRecord::DynamoDb)
                    .collect(),
                next_iterator: page.next_shard_iterator.map(|token| ShardIterator {
                    shard_id: shard_id.clone(),
                    token,
                }),
                millis_behind_latest: None,
            });
        }
        // The body was not taken (no success status reached the interceptor): what the SDK
        // parsed is the answer.
        let mut records = Vec::with_capacity(out.records().len());
        for r in out.records() {
            let record = convert_record(r, &self.stream_arn, &self.table_name, shard_id)?;
            records.push(SourceRecord::DynamoDb(record));
        }
        Ok(RecordPage {
            records,
            next_iterator: out.next_shard_iterator().map(|s| ShardIterator {
                shard_id: shard_id.clone(),
                token: s.to_string(),
            }),
            millis_behind_latest: None,
        })
    }
}

/// Takes a successful GetRecords answer's body for `stream_page` to parse, and leaves the SDK
/// an empty one (which it reads as an answer without records). Parsing the body straight into
/// shardbridge's records skips building the SDK's typed records and copying them (7 % less CPU
/// per record on the fast fake, docs/benchmarks.md). Everything else (signing, retries, error answers, whose bodies it leaves alone)
/// stays the SDK's. One per call.
#[derive(Clone, Debug, Default)]
struct TakeBody {
    taken: Arc<StdMutex<Option<Vec<u8>>>>,
}

impl TakeBody {
    fn take(&self) -> Option<Vec<u8>> {
        self.taken.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Intercept for TakeBody {
    fn name(&self) -> &'static str {
        "TakeGetRecordsBody"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let response = context.response_mut();
        if !response.status().is_success() {
            return Ok(());
        }
        let body = std::mem::replace(response.body_mut(), SdkBody::taken());
        *response.body_mut() = match body.bytes() {
            Some(bytes) => {
                *self.taken.lock().unwrap_or_else(|e| e.into_inner()) = Some(bytes.to_vec());
                SdkBody::empty()
            }
            None => SdkBody::from_body_1_x(SwallowedBody {
                // A page is up to 1 MB: sized once from Content-Length, not grown by copying.
                read: Some(Vec::with_capacity(
                    usize::try_from(http_body::Body::size_hint(&body).lower())
                        .unwrap_or(0)
                        .min(16 << 20),
                )),
                inner: body,
                taken: self.taken.clone(),
            }),
        };
        Ok(())
    }
}

/// Reads the whole of a body, hands it over at its end, and yields none of it.
struct SwallowedBody {
    inner: SdkBody,
    /// None once handed over.
    read: Option<Vec<u8>>,
    taken: Arc<StdMutex<Option<Vec<u8>>>>,
}

impl http_body::Body for SwallowedBody {
    type Data = Bytes;
    type Error = aws_smithy_types::body::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        loop {
            match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let (Ok(data), Some(read)) = (frame.into_data(), self.read.as_mut()) {
                        read.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                // Handed over once: a body is polled again at its end (for trailers).
                None => {
                    if let Some(read) = self.read.take() {
                        *self.taken.lock().unwrap_or_else(|e| e.into_inner()) = Some(read);
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }
}

/// Maps an SDK error to a source error class.
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

fn seq(s: &str, what: &str) -> Result<SequenceNumber, SourceError> {
    SequenceNumber::parse(s).map_err(|e| SourceError::Fatal(format!("{what}: {e}")))
}

fn convert_shard(s: &sdk::Shard) -> Result<Shard, SourceError> {
    let range = s.sequence_number_range();
    Ok(Shard {
        shard_id: s
            .shard_id()
            .ok_or_else(|| SourceError::Transient("DescribeStream: shard without an id".into()))?
            .to_string(),
        parent_shard_id: s.parent_shard_id().map(str::to_string),
        adjacent_parent_shard_id: None,
        starting_sequence_number: range
            .and_then(|r| r.starting_sequence_number())
            .map(|v| seq(v, "starting sequence number"))
            .transpose()?,
        ending_sequence_number: range
            .and_then(|r| r.ending_sequence_number())
            .map(|v| seq(v, "ending sequence number"))
            .transpose()?,
    })
}

/// A record the service sent that cannot be represented is an error with its identity, never a
/// silent skip.
pub fn convert_record(
    r: &sdk::Record,
    stream_arn: &str,
    table_name: &str,
    shard_id: &str,
) -> Result<ChangeRecord, SourceError> {
    let d = r.dynamodb().ok_or_else(|| {
        SourceError::Fatal(format!("record {:?} without a dynamodb part", r.event_id()))
    })?;
    let sequence_number = seq(d.sequence_number().unwrap_or(""), "record sequence number")?;
    let bad = |what: &str| {
        SourceError::Fatal(format!(
            "record {} (shard {shard_id}, sequence number {}): {what}",
            r.event_id().unwrap_or("?"),
            d.sequence_number().unwrap_or("?")
        ))
    };
    let operation = match r.event_name() {
        Some(sdk::OperationType::Insert) => OperationType::Insert,
        Some(sdk::OperationType::Modify) => OperationType::Modify,
        Some(sdk::OperationType::Remove) => OperationType::Remove,
        other => return Err(bad(&format!("unknown eventName {other:?}"))),
    };
    let view_type = d
        .stream_view_type()
        .and_then(|v| StreamViewType::parse(v.as_str()))
        .ok_or_else(|| bad("missing or unknown StreamViewType"))?;
    let item =
        |m: Option<&HashMap<String, sdk::AttributeValue>>| -> Result<Option<Item>, SourceError> {
            m.map(|m| convert_item(m).map_err(|e| bad(&e))).transpose()
        };
    Ok(ChangeRecord {
        event_id: r.event_id().unwrap_or_default().to_string(),
        operation,
        event_version: r.event_version().unwrap_or("1.1").to_string(),
        aws_region: r.aws_region().unwrap_or_default().to_string(),
        table_name: table_name.to_string(),
        source: SourceIdentity {
            stream_arn: stream_arn.to_string(),
            shard_id: shard_id.to_string(),
            sequence_number,
        },
        approximate_creation_millis: d.approximate_creation_date_time().and_then(to_millis),
        keys: item(d.keys())?.unwrap_or_default(),
        new_image: item(d.new_image())?,
        old_image: item(d.old_image())?,
        size_bytes: d.size_bytes().unwrap_or(0),
        view_type,
        user_identity: r.user_identity().map(|u| UserIdentity {
            principal_id: u.principal_id().unwrap_or_default().to_string(),
            kind: u.r#type().unwrap_or_default().to_string(),
        }),
    })
}

fn to_millis(t: &DateTime) -> Option<i64> {
    t.to_millis().ok()
}

fn convert_item(m: &HashMap<String, sdk::AttributeValue>) -> Result<Item, String> {
    let mut out = BTreeMap::new();
    for (k, v) in m {
        out.insert(k.clone(), convert_value(v)?);
    }
    Ok(out)
}

fn convert_value(v: &sdk::AttributeValue) -> Result<AttributeValue, String> {
    Ok(match v {
        sdk::AttributeValue::S(s) => AttributeValue::S(s.clone()),
        sdk::AttributeValue::N(n) => AttributeValue::N(n.clone()),
        sdk::AttributeValue::B(b) => AttributeValue::B(b.as_ref().to_vec()),
        sdk::AttributeValue::Ss(v) => AttributeValue::Ss(v.clone()),
        sdk::AttributeValue::Ns(v) => AttributeValue::Ns(v.clone()),
        sdk::AttributeValue::Bs(v) => {
            AttributeValue::Bs(v.iter().map(|b| b.as_ref().to_vec()).collect())
        }
        sdk::AttributeValue::M(m) => AttributeValue::M(convert_item(m)?),
        sdk::AttributeValue::L(l) => {
            AttributeValue::L(l.iter().map(convert_value).collect::<Result<_, _>>()?)
        }
        sdk::AttributeValue::Null(b) => AttributeValue::Null(*b),
        sdk::AttributeValue::Bool(b) => AttributeValue::Bool(*b),
        other => return Err(format!("attribute value of an unknown type: {other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_name_from_stream_arn() {
        assert_eq!(
            table_name_of("arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-11-24T00:00:00.000"),
            Some("orders")
        );
        assert_eq!(table_name_of("arn:aws:kinesis:us-east-1:1:stream/x"), None);
    }
}
