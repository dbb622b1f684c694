//! The initial snapshot of a DynamoDB table (`[connectors.snapshot]`): the items that predate
//! the stream, read by a parallel Scan whose segments are leased like shards.
//!
//! `SnapshotSource` puts the segments beside the stream's shards behind the one `ShardSource`
//! trait, so shard workers, commit protocols and sinks treat a segment as a shard that ends:
//! - A segment is the pseudo-shard `snapshot-0003-of-0016`; its records are the items of Scan
//!   segment 3 of 16, in scan order, as `OperationType::Snapshot` records.
//! - A record's sequence number is its place in the segment (1, 2, …) and carries the item's
//!   key (`SequenceNumber::resume`): the checkpoint after it is `17~<key>`, and a new owner
//!   resumes the Scan with that key as ExclusiveStartKey, so a crash costs at most the batch
//!   in flight, never the segment. A Scan resumed from an item's key returns every item after
//!   it in scan order as the table is then, so nothing that was there all along is missed
//!   whatever was written meanwhile.
//! - When the Scan has no LastEvaluatedKey the segment ends (SHARD_END), with no children.
//!
//! The connector decides when segments exist and holds the stream back until they are all
//! done (`pipeline::connector`); this module only reads.

pub mod config;
pub mod pace;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue as SdkValue, ReturnConsumedCapacity};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

pub use config::{SnapshotConfig, SnapshotMode};
use pace::ScanPace;

use super::dynamodb_streams::{classify, table_name_of};
use super::record::{
    AttributeValue, ChangeRecord, Item, OperationType, SourceIdentity, SourceRecord, StreamViewType,
};
use super::sequence::SequenceNumber;
use super::{IteratorPosition, RecordPage, Shard, ShardIterator, ShardSource, SourceError};
use crate::metrics::events;

const SEGMENT_PREFIX: &str = "snapshot-";

/// The lease key (and shard id) of segment `i` of `n`.
pub fn segment_id(i: u32, n: u32) -> String {
    format!("{SEGMENT_PREFIX}{i:04}-of-{n:04}")
}

/// Whether a lease key names a snapshot segment (stream shard ids start with "shardId-").
pub fn is_segment(key: &str) -> bool {
    key.starts_with(SEGMENT_PREFIX)
}

/// Segment `i` of `n`, from its id.
pub fn parse_segment_id(id: &str) -> Option<(u32, u32)> {
    let (i, n) = id.strip_prefix(SEGMENT_PREFIX)?.split_once("-of-")?;
    let (i, n) = (i.parse().ok()?, n.parse().ok()?);
    (i < n).then_some((i, n))
}

/// An item's key as resume text: its key attributes as DynamoDB JSON, URL-safe base64 (no
/// checkpoint separator, no spaces).
pub fn encode_key(key: &Item) -> Result<String, String> {
    let mut map = serde_json::Map::new();
    for (name, v) in key {
        let typed = match v {
            AttributeValue::S(s) => serde_json::json!({ "S": s }),
            AttributeValue::N(n) => serde_json::json!({ "N": n }),
            AttributeValue::B(b) => serde_json::json!({ "B": STANDARD.encode(b) }),
            other => {
                return Err(format!(
                    "key attribute {name} has a type keys cannot have: {other:?}"
                ))
            }
        };
        map.insert(name.clone(), typed);
    }
    Ok(URL_SAFE_NO_PAD.encode(serde_json::Value::Object(map).to_string()))
}

/// The ExclusiveStartKey a resume text stands for.
pub fn decode_key(text: &str) -> Result<HashMap<String, SdkValue>, String> {
    let bad = |why: String| format!("snapshot resume position {text:?}: {why}");
    let json = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|e| bad(e.to_string()))?;
    let value: serde_json::Value = serde_json::from_slice(&json).map_err(|e| bad(e.to_string()))?;
    let obj = value
        .as_object()
        .ok_or_else(|| bad("not a JSON object".into()))?;
    let mut key = HashMap::new();
    for (name, typed) in obj {
        let v = match typed.as_object().and_then(|t| t.iter().next()) {
            Some((t, serde_json::Value::String(s))) if t == "S" => SdkValue::S(s.clone()),
            Some((t, serde_json::Value::String(s))) if t == "N" => SdkValue::N(s.clone()),
            Some((t, serde_json::Value::String(s))) if t == "B" => SdkValue::B(
                STANDARD
                    .decode(s)
                    .map_err(|e| bad(format!("{name}: {e}")))?
                    .into(),
            ),
            _ => return Err(bad(format!("{name}: not an S, N or B value"))),
        };
        key.insert(name.clone(), v);
    }
    Ok(key)
}

/// A snapshot record's eventID: the same for the same item of the same table whenever it is
/// read, so that a consumer recognises the copies a crash may repeat.
pub fn event_id(table: &str, key_text: &str) -> String {
    let digest = Sha256::digest(format!("{table}\n{key_text}"));
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("snapshot-{hex}")
}

/// What a Scan needs to know of the table once.
#[derive(Clone, Debug)]
struct TableShape {
    key_names: Vec<String>,
    view_type: StreamViewType,
}

/// A DynamoDB stream with the table's snapshot segments in front of it.
pub struct SnapshotSource {
    stream: Arc<dyn ShardSource>,
    client: aws_sdk_dynamodb::Client,
    table: String,
    region: String,
    config: SnapshotConfig,
    connector: String,
    shape: tokio::sync::OnceCell<TableShape>,
    /// Each segment's pace, while this process reads it.
    paces: Mutex<HashMap<u32, ScanPace>>,
    /// When the snapshot began (ms; 0 until the connector knows): every snapshot record's
    /// ApproximateCreationDateTime, so that a batch read again after a crash is the same
    /// records (an S3 object's key has the date and hour of its first record).
    started_millis: AtomicI64,
}

impl SnapshotSource {
    pub fn new(
        sdk: &aws_config::SdkConfig,
        stream: Arc<dyn ShardSource>,
        config: SnapshotConfig,
        connector: &str,
    ) -> Result<Self, SourceError> {
        let arn = stream.stream_arn().to_string();
        let table = table_name_of(&arn)
            .ok_or_else(|| SourceError::Fatal(format!("{arn:?} is not a DynamoDB stream ARN")))?
            .to_string();
        // arn:aws:dynamodb:REGION:ACCOUNT:table/...
        let region = arn.split(':').nth(3).unwrap_or_default().to_string();
        events::snapshot_registered(connector);
        Ok(SnapshotSource {
            stream,
            client: aws_sdk_dynamodb::Client::new(sdk),
            table,
            region,
            config,
            connector: connector.to_string(),
            shape: tokio::sync::OnceCell::new(),
            paces: Mutex::new(HashMap::new()),
            started_millis: AtomicI64::new(0),
        })
    }

    /// The snapshot began at `millis` (the earliest segment lease's `snapshotStartedAtMillis`).
    pub fn set_started_millis(&self, millis: i64) {
        self.started_millis.store(millis, Ordering::Relaxed);
    }

    pub fn segment_ids(&self) -> Vec<String> {
        (0..self.config.segments)
            .map(|i| segment_id(i, self.config.segments))
            .collect()
    }

    async fn shape(&self) -> Result<&TableShape, SourceError> {
        self.shape
            .get_or_try_init(|| async {
                let out = self
                    .client
                    .describe_table()
                    .table_name(&self.table)
                    .send()
                    .await
                    .map_err(|e| classify("DescribeTable", e))?;
                let desc = out.table().ok_or_else(|| {
                    SourceError::Transient(format!("DescribeTable {}: no description", self.table))
                })?;
                let key_names: Vec<String> = desc
                    .key_schema()
                    .iter()
                    .map(|k| k.attribute_name().to_string())
                    .collect();
                if key_names.is_empty() {
                    return Err(SourceError::Transient(format!(
                        "DescribeTable {}: no key schema",
                        self.table
                    )));
                }
                let view_type = desc
                    .stream_specification()
                    .and_then(|s| s.stream_view_type())
                    .and_then(|v| StreamViewType::parse(v.as_str()))
                    .unwrap_or(StreamViewType::NewAndOldImages);
                Ok(TableShape {
                    key_names,
                    view_type,
                })
            })
            .await
    }

    /// Waits for the segment's share of the rate, and says how many items to ask for.
    async fn pace(&self, segment: u32) -> u32 {
        let Some(per_second) = pace::share(self.config.rate_limit, self.config.segments) else {
            return self.config.page_size;
        };
        let (wait, limit) = {
            let mut paces = self.paces.lock().unwrap_or_else(|p| p.into_inner());
            let p = paces
                .entry(segment)
                .or_insert_with(|| ScanPace::new(per_second, Instant::now()));
            (
                p.wait(Instant::now()),
                p.page_limit(self.config.consistent_read, self.config.page_size),
            )
        };
        if !wait.is_zero() {
            // A stop drops this future: the wait is cut short with it.
            tokio::time::sleep(wait).await;
        }
        limit
    }

    fn spent(&self, segment: u32, units: f64, items: usize, bytes: u64) {
        let mut paces = self.paces.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = paces.get_mut(&segment) {
            p.spent(units, items, bytes, Instant::now());
        }
    }

    async fn scan_page(&self, it: &ShardIterator) -> Result<RecordPage, SourceError> {
        let (segment, total) = parse_segment_id(&it.shard_id).ok_or_else(|| {
            SourceError::Fatal(format!("{:?} is not a snapshot segment", it.shard_id))
        })?;
        let position = SequenceNumber::parse_with_resume(&it.token)
            .map_err(|e| SourceError::Fatal(format!("segment {}: {e}", it.shard_id)))?;
        let ordinal = position.as_u64().ok_or_else(|| {
            SourceError::Fatal(format!(
                "segment {}: position {position} is too large",
                it.shard_id
            ))
        })?;
        let start = position
            .resume()
            .map(decode_key)
            .transpose()
            .map_err(SourceError::Fatal)?;
        let shape = self.shape().await?.clone();
        let limit = self.pace(segment).await;
        let out = self
            .client
            .scan()
            .table_name(&self.table)
            .segment(segment as i32)
            .total_segments(total as i32)
            .set_exclusive_start_key(start)
            .limit(limit as i32)
            .consistent_read(self.config.consistent_read)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| {
                let e = classify("Scan", e);
                if matches!(e, SourceError::Throttled(_)) {
                    events::snapshot_scan_throttled(&self.connector);
                }
                e
            })?;
        let created = match self.started_millis.load(Ordering::Relaxed) {
            // Not known yet (never, once the connector has read the segment leases).
            0 => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            t0 => t0,
        };
        let mut records = Vec::with_capacity(out.items().len());
        let mut bytes = 0u64;
        let mut n = ordinal;
        for raw in out.items() {
            let item = convert_item(raw)
                .map_err(|e| SourceError::Fatal(format!("Scan {}: an item: {e}", self.table)))?;
            let keys: Item = shape
                .key_names
                .iter()
                .filter_map(|k| item.get(k).map(|v| (k.clone(), v.clone())))
                .collect();
            if keys.len() != shape.key_names.len() {
                return Err(SourceError::Fatal(format!(
                    "Scan {}: an item without its key attributes {:?}",
                    self.table, shape.key_names
                )));
            }
            let key_text = encode_key(&keys).map_err(SourceError::Fatal)?;
            let size = pace::item_size(&item);
            bytes += size;
            n += 1;
            records.push(SourceRecord::DynamoDb(ChangeRecord {
                event_id: event_id(&self.table, &key_text),
                operation: OperationType::Snapshot,
                event_version: "1.1".into(),
                aws_region: self.region.clone(),
                table_name: self.table.clone(),
                source: SourceIdentity {
                    stream_arn: self.stream.stream_arn().to_string(),
                    shard_id: it.shard_id.clone(),
                    sequence_number: SequenceNumber::with_resume(n, &key_text),
                },
                approximate_creation_millis: Some(created),
                keys,
                new_image: Some(item),
                old_image: None,
                size_bytes: size as i64,
                view_type: shape.view_type,
                user_identity: None,
            }));
        }
        let reported = out
            .consumed_capacity()
            .and_then(|c| c.capacity_units())
            .unwrap_or(0.0);
        let units = reported.max(pace::capacity_units(bytes, self.config.consistent_read));
        self.spent(segment, units, records.len(), bytes);
        events::snapshot_page(&self.connector, records.len(), units);
        let next_iterator = match out.last_evaluated_key() {
            None => None,
            Some(last) => {
                let key: Item = convert_item(last).map_err(SourceError::Fatal)?;
                Some(ShardIterator {
                    shard_id: it.shard_id.clone(),
                    token: SequenceNumber::with_resume(
                        n,
                        &encode_key(&key).map_err(SourceError::Fatal)?,
                    )
                    .checkpoint_text(),
                })
            }
        };
        Ok(RecordPage {
            records,
            next_iterator,
            millis_behind_latest: None,
        })
    }
}

#[async_trait]
impl ShardSource for SnapshotSource {
    fn stream_arn(&self) -> &str {
        self.stream.stream_arn()
    }

    /// The segments, then the stream's shards.
    async fn list_shards(&self) -> Result<Vec<Shard>, SourceError> {
        let mut shards: Vec<Shard> = self
            .segment_ids()
            .into_iter()
            .map(|shard_id| Shard {
                shard_id,
                parent_shard_id: None,
                adjacent_parent_shard_id: None,
                starting_sequence_number: None,
                ending_sequence_number: None,
            })
            .collect();
        shards.extend(self.stream.list_shards().await?);
        Ok(shards)
    }

    async fn child_shards(&self, parent: &str) -> Result<Vec<Shard>, SourceError> {
        if is_segment(parent) {
            return Ok(Vec::new());
        }
        self.stream.child_shards(parent).await
    }

    async fn open_iterator(
        &self,
        shard_id: &str,
        position: &IteratorPosition,
    ) -> Result<ShardIterator, SourceError> {
        if !is_segment(shard_id) {
            return self.stream.open_iterator(shard_id, position).await;
        }
        let token = match position {
            IteratorPosition::AfterSequenceNumber(seq) => match seq.resume() {
                Some(_) => seq.checkpoint_text(),
                None if seq.as_u64() == Some(0) => "0".to_string(),
                None => {
                    return Err(SourceError::Fatal(format!(
                        "snapshot segment {shard_id}: checkpoint {seq} has no resume position \
                         (it was not written by a snapshot; set it to TRIM_HORIZON to scan the \
                         segment again)"
                    )))
                }
            },
            // A segment starts at its beginning, whatever the stream's starting position.
            _ => "0".to_string(),
        };
        Ok(ShardIterator {
            shard_id: shard_id.to_string(),
            token,
        })
    }

    async fn get_records(
        &self,
        iterator: &ShardIterator,
        limit: u32,
    ) -> Result<RecordPage, SourceError> {
        if is_segment(&iterator.shard_id) {
            self.scan_page(iterator).await
        } else {
            self.stream.get_records(iterator, limit).await
        }
    }
}

fn convert_item(item: &HashMap<String, SdkValue>) -> Result<Item, String> {
    let mut out = Item::new();
    for (k, v) in item {
        out.insert(k.clone(), convert_value(v)?);
    }
    Ok(out)
}

fn convert_value(v: &SdkValue) -> Result<AttributeValue, String> {
    Ok(match v {
        SdkValue::S(s) => AttributeValue::S(s.clone()),
        SdkValue::N(n) => AttributeValue::N(n.clone()),
        SdkValue::B(b) => AttributeValue::B(b.as_ref().to_vec()),
        SdkValue::Ss(v) => AttributeValue::Ss(v.clone()),
        SdkValue::Ns(v) => AttributeValue::Ns(v.clone()),
        SdkValue::Bs(v) => AttributeValue::Bs(v.iter().map(|b| b.as_ref().to_vec()).collect()),
        SdkValue::M(m) => AttributeValue::M(convert_item(m)?),
        SdkValue::L(l) => AttributeValue::L(l.iter().map(convert_value).collect::<Result<_, _>>()?),
        SdkValue::Null(b) => AttributeValue::Null(*b),
        SdkValue::Bool(b) => AttributeValue::Bool(*b),
        other => return Err(format!("attribute value of an unknown type: {other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn segment_ids_round_trip_and_never_look_like_shards() {
        assert_eq!(segment_id(3, 16), "snapshot-0003-of-0016");
        assert_eq!(parse_segment_id("snapshot-0003-of-0016"), Some((3, 16)));
        assert_eq!(parse_segment_id("snapshot-0016-of-0016"), None);
        assert_eq!(
            parse_segment_id("shardId-00000001700000000000-abcdef12"),
            None
        );
        assert!(is_segment(&segment_id(0, 1)));
        assert!(!is_segment("shardId-000000000000"));
    }

    #[test]
    fn event_ids_depend_on_table_and_key_only() {
        let a = event_id("orders", "eyJpZCI6eyJTIjoiMSJ9fQ");
        assert_eq!(a, event_id("orders", "eyJpZCI6eyJTIjoiMSJ9fQ"));
        assert_ne!(a, event_id("orders", "eyJpZCI6eyJTIjoiMiJ9fQ"));
        assert_ne!(a, event_id("other", "eyJpZCI6eyJTIjoiMSJ9fQ"));
        assert_eq!(a.len(), "snapshot-".len() + 32);
    }

    #[test]
    fn a_key_of_another_type_is_refused() {
        let key = Item::from([("id".to_string(), AttributeValue::Bool(true))]);
        assert!(encode_key(&key).is_err());
        assert!(decode_key("not base64!").is_err());
    }

    fn arb_key_value() -> impl Strategy<Value = AttributeValue> {
        prop_oneof![
            ".{0,40}".prop_map(AttributeValue::S),
            "-?[0-9]{1,38}(\\.[0-9]{1,5})?".prop_map(AttributeValue::N),
            prop::collection::vec(any::<u8>(), 0..40).prop_map(AttributeValue::B),
        ]
    }

    proptest! {
        /// A resume text is a checkpoint's tail: no separator, no space, and it decodes to
        /// the same key.
        #[test]
        fn keys_round_trip_through_resume_text(
            pk in arb_key_value(),
            sk in prop::option::of(arb_key_value()),
            n in any::<u64>(),
        ) {
            let mut key = Item::from([("pk".to_string(), pk)]);
            if let Some(sk) = sk {
                key.insert("sk".to_string(), sk);
            }
            let text = encode_key(&key).unwrap();
            prop_assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            let back = decode_key(&text).unwrap();
            let back: Item = back.iter().map(|(k, v)| (k.clone(), convert_value(v).unwrap())).collect();
            prop_assert_eq!(&back, &key);
            let seq = SequenceNumber::with_resume(n, &text);
            let parsed = SequenceNumber::parse_with_resume(&seq.checkpoint_text()).unwrap();
            prop_assert_eq!(parsed.resume(), Some(text.as_str()));
            prop_assert_eq!(parsed.as_u64(), Some(n));
        }
    }
}
