//! A DynamoDB Streams GetRecords answer, parsed from its JSON body straight into
//! `ChangeRecord`s. The SDK's own parsing builds its typed records (a HashMap and an owned
//! String per attribute, through a token iterator) that shardbridge then copied into its own
//! types: on a drained stream that parse and copy were about a third of the process's CPU
//! (docs/benchmarks.md). Pure: a body in, records out; getting the body is `dynamodb_streams`'.
//!
//! It reads the body as the SDK does: members it does not know are skipped, a `null` member is
//! an absent one, a typed value's `__type` is ignored. What it cannot represent (an unknown
//! eventName, view type or attribute type) is an error naming the record, never a skip.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

use super::record::{
    AttributeValue, ChangeRecord, Item, OperationType, SourceIdentity, StreamViewType, UserIdentity,
};
use super::sequence::SequenceNumber;

/// The records of one GetRecords answer, and where to read next (None: SHARD_END).
#[derive(Debug)]
pub struct StreamPage {
    pub records: Vec<ChangeRecord>,
    pub next_shard_iterator: Option<String>,
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PageError {
    /// Not the JSON GetRecords answers with (cut short, or not JSON at all): worth a retry.
    #[error("GetRecords: unreadable answer: {0}")]
    Unreadable(String),
    /// A record that cannot be represented: retrying reads the same record again.
    #[error("{0}")]
    Record(String),
}

/// Where the records come from: stamped on each as its source identity.
#[derive(Clone, Copy, Debug)]
pub struct PageOrigin<'a> {
    pub stream_arn: &'a str,
    pub table_name: &'a str,
    pub shard_id: &'a str,
}

pub fn parse(body: &[u8], origin: PageOrigin<'_>) -> Result<StreamPage, PageError> {
    // An empty body is an empty answer, as the SDK reads it.
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    let wire: WirePage<'_> = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => PageError::Record(format!("GetRecords: {e}")),
        _ => PageError::Unreadable(e.to_string()),
    })?;
    let records = wire
        .records
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.into_change_record(origin))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(StreamPage {
        records,
        next_shard_iterator: wire.next_shard_iterator,
    })
}

#[derive(Deserialize)]
struct WirePage<'a> {
    #[serde(rename = "Records", borrow)]
    records: Option<Vec<WireRecord<'a>>>,
    #[serde(rename = "NextShardIterator")]
    next_shard_iterator: Option<String>,
}

#[derive(Deserialize)]
struct WireRecord<'a> {
    #[serde(rename = "eventID")]
    event_id: Option<String>,
    #[serde(rename = "eventName", borrow)]
    event_name: Option<Cow<'a, str>>,
    #[serde(rename = "eventVersion")]
    event_version: Option<String>,
    #[serde(rename = "awsRegion")]
    aws_region: Option<String>,
    #[serde(borrow)]
    dynamodb: Option<WireStreamRecord<'a>>,
    #[serde(rename = "userIdentity")]
    user_identity: Option<WireIdentity>,
}

#[derive(Deserialize)]
struct WireStreamRecord<'a> {
    #[serde(rename = "ApproximateCreationDateTime")]
    approximate_creation_date_time: Option<serde_json::Number>,
    #[serde(rename = "Keys")]
    keys: Option<WireItem>,
    #[serde(rename = "NewImage")]
    new_image: Option<WireItem>,
    #[serde(rename = "OldImage")]
    old_image: Option<WireItem>,
    #[serde(rename = "SequenceNumber", borrow)]
    sequence_number: Option<Cow<'a, str>>,
    #[serde(rename = "SizeBytes")]
    size_bytes: Option<i64>,
    #[serde(rename = "StreamViewType", borrow)]
    stream_view_type: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct WireIdentity {
    #[serde(rename = "PrincipalId")]
    principal_id: Option<String>,
    #[serde(rename = "Type")]
    kind: Option<String>,
}

impl WireRecord<'_> {
    fn into_change_record(self, origin: PageOrigin<'_>) -> Result<ChangeRecord, PageError> {
        let event_id = self.event_id.unwrap_or_default();
        let Some(d) = self.dynamodb else {
            return Err(PageError::Record(format!(
                "record {event_id:?} without a dynamodb part"
            )));
        };
        let sequence = d.sequence_number.as_deref().unwrap_or("");
        let bad = |what: &str| {
            PageError::Record(format!(
                "record {} (shard {}, sequence number {}): {what}",
                if event_id.is_empty() { "?" } else { &event_id },
                origin.shard_id,
                if sequence.is_empty() { "?" } else { sequence },
            ))
        };
        let sequence_number = SequenceNumber::parse(sequence)
            .map_err(|e| PageError::Record(format!("record sequence number: {e}")))?;
        let operation = match self.event_name.as_deref() {
            Some("INSERT") => OperationType::Insert,
            Some("MODIFY") => OperationType::Modify,
            Some("REMOVE") => OperationType::Remove,
            other => return Err(bad(&format!("unknown eventName {other:?}"))),
        };
        let view_type = d
            .stream_view_type
            .as_deref()
            .and_then(StreamViewType::parse)
            .ok_or_else(|| bad("missing or unknown StreamViewType"))?;
        let image = |i: Option<WireItem>| i.map(|i| i.0.map_err(|e| bad(&e))).transpose();
        let keys = image(d.keys)?.unwrap_or_default();
        let new_image = image(d.new_image)?;
        let old_image = image(d.old_image)?;
        let approximate_creation_millis =
            match &d.approximate_creation_date_time {
                None => None,
                Some(n) => Some(epoch_seconds_to_millis(&n.to_string()).ok_or_else(|| {
                    bad(&format!("ApproximateCreationDateTime {n} is not a time"))
                })?),
            };
        Ok(ChangeRecord {
            operation,
            event_version: self.event_version.unwrap_or_else(|| "1.1".to_string()),
            aws_region: self.aws_region.unwrap_or_default(),
            table_name: origin.table_name.to_string(),
            source: SourceIdentity {
                stream_arn: origin.stream_arn.to_string(),
                shard_id: origin.shard_id.to_string(),
                sequence_number,
            },
            approximate_creation_millis,
            keys,
            new_image,
            old_image,
            size_bytes: d.size_bytes.unwrap_or(0),
            view_type,
            user_identity: self.user_identity.map(|u| UserIdentity {
                principal_id: u.principal_id.unwrap_or_default(),
                kind: u.kind.unwrap_or_default(),
            }),
            event_id,
        })
    }
}

/// Epoch seconds as JSON writes them (`1479499740`, `1479499740.12`, `1.47949974E9`) → whole
/// milliseconds, exactly (decimal arithmetic, no float), truncated toward the past. None for
/// what is not a number or is out of range.
pub fn epoch_seconds_to_millis(text: &str) -> Option<i64> {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], text[at + 1..].parse::<i64>().ok()?),
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = format!("{whole}{fraction}");
    if whole.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = digits.trim_start_matches('0');
    // value = digits × 10^(exponent − fraction digits); in milliseconds, 3 more.
    let scale = exponent
        .checked_sub(fraction.len() as i64)?
        .checked_add(3)?;
    let (kept, dropped) = if scale >= 0 {
        (digits, "")
    } else {
        digits.split_at(digits.len().saturating_sub(scale.unsigned_abs() as usize))
    };
    if kept.len() > 19 {
        return None;
    }
    let mut millis: i128 = if kept.is_empty() {
        0
    } else {
        kept.parse().ok()?
    };
    if millis != 0 && scale > 0 {
        millis = millis.checked_mul(10i128.checked_pow(u32::try_from(scale).ok()?)?)?;
    }
    if negative {
        // Truncated toward the past: -1.0005 s is -1001 ms.
        millis = -millis - i128::from(dropped.bytes().any(|b| b != b'0'));
    }
    i64::try_from(millis).ok()
}

/// A typed item (`{"name": {"S": "x"}, …}`); the error of an attribute it cannot represent is
/// kept, so that it can be reported with the record's identity.
struct WireItem(Result<Item, String>);

impl<'de> Deserialize<'de> for WireItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ItemVisitor)
    }
}

struct ItemVisitor;

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = WireItem;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of typed attribute values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WireItem, A::Error> {
        let mut item = BTreeMap::new();
        let mut failed = None;
        while let Some(name) = map.next_key::<String>()? {
            match map.next_value::<Option<WireValue>>()? {
                None => {}
                Some(WireValue(Ok(value))) => {
                    item.insert(name, value);
                }
                Some(WireValue(Err(e))) => {
                    failed.get_or_insert(format!("attribute {name:?}: {e}"));
                }
            }
        }
        Ok(WireItem(match failed {
            Some(e) => Err(e),
            None => Ok(item),
        }))
    }
}

/// One typed value, `{"S": "x"}`.
struct WireValue(Result<AttributeValue, String>);

impl<'de> Deserialize<'de> for WireValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = WireValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a typed attribute value such as {\"S\": \"x\"}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WireValue, A::Error> {
        let mut value: Option<Result<AttributeValue, String>> = None;
        while let Some(kind) = map.next_key::<Cow<'de, str>>()? {
            if kind == "__type" {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let read = match kind.as_ref() {
                "S" => map
                    .next_value::<Option<String>>()?
                    .map(|s| Ok(AttributeValue::S(s))),
                "N" => map
                    .next_value::<Option<String>>()?
                    .map(|s| Ok(AttributeValue::N(s))),
                "B" => map
                    .next_value::<Option<Cow<'de, str>>>()?
                    .map(|b| decode_base64(&b).map(AttributeValue::B)),
                "SS" => map
                    .next_value::<Option<Vec<String>>>()?
                    .map(|v| Ok(AttributeValue::Ss(v))),
                "NS" => map
                    .next_value::<Option<Vec<String>>>()?
                    .map(|v| Ok(AttributeValue::Ns(v))),
                "BS" => map.next_value::<Option<Vec<Cow<'de, str>>>>()?.map(|v| {
                    v.iter()
                        .map(|b| decode_base64(b))
                        .collect::<Result<_, _>>()
                        .map(AttributeValue::Bs)
                }),
                "M" => map
                    .next_value::<Option<WireItem>>()?
                    .map(|m| m.0.map(AttributeValue::M)),
                "L" => map.next_value::<Option<Vec<WireValue>>>()?.map(|l| {
                    l.into_iter()
                        .map(|v| v.0)
                        .collect::<Result<_, _>>()
                        .map(AttributeValue::L)
                }),
                "NULL" => map
                    .next_value::<Option<bool>>()?
                    .map(|b| Ok(AttributeValue::Null(b))),
                "BOOL" => map
                    .next_value::<Option<bool>>()?
                    .map(|b| Ok(AttributeValue::Bool(b))),
                other => {
                    map.next_value::<IgnoredAny>()?;
                    Some(Err(format!("attribute value of an unknown type {other:?}")))
                }
            };
            let Some(read) = read else { continue };
            if value.is_some() {
                return Err(de::Error::custom(
                    "a typed attribute value with more than one type",
                ));
            }
            value = Some(read);
        }
        value
            .map(WireValue)
            .ok_or_else(|| de::Error::custom("a typed attribute value without a type"))
    }
}

fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    STANDARD
        .decode(text)
        .map_err(|e| format!("binary value not base64: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: PageOrigin<'static> = PageOrigin {
        stream_arn:
            "arn:aws:dynamodb:eu-west-1:123456789012:table/orders/stream/2026-01-01T00:00:00.000",
        table_name: "orders",
        shard_id: "shardId-00000001",
    };

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.to_string())
    }

    fn item(pairs: &[(&str, AttributeValue)]) -> Item {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn a_record_with_every_attribute_type_and_the_next_iterator() {
        let body = br#"{
          "NextShardIterator": "it-2",
          "Records": [{
            "eventID": "e1", "eventName": "MODIFY", "eventVersion": "1.1",
            "eventSource": "aws:dynamodb", "awsRegion": "eu-west-1",
            "dynamodb": {
              "ApproximateCreationDateTime": 1.47949974012E9,
              "Keys": {"id": {"S": "a\"b\u00e9"}},
              "NewImage": {
                "id": {"S": "a\"b\u00e9"}, "n": {"N": "12.50"}, "b": {"B": "AAEC"},
                "ss": {"SS": ["x", "y"]}, "ns": {"NS": ["1", "2"]}, "bs": {"BS": ["AQ==", ""]},
                "m": {"M": {"inner": {"L": [{"NULL": true}, {"BOOL": false}, {"M": {}}]}}},
                "gone": null, "typed": {"__type": "x", "S": "v", "N": null}
              },
              "OldImage": {"id": {"S": "a\"b\u00e9"}},
              "SequenceNumber": "000000000000000000042", "SizeBytes": 97,
              "StreamViewType": "NEW_AND_OLD_IMAGES", "SomethingNew": [1, {"x": 2}]
            },
            "userIdentity": {"PrincipalId": "dynamodb.amazonaws.com", "Type": "Service"}
          }]
        }"#;
        let page = parse(body, ORIGIN).unwrap();
        assert_eq!(page.next_shard_iterator.as_deref(), Some("it-2"));
        let [r] = &page.records[..] else {
            panic!("one record: {:?}", page.records)
        };
        let id = s("a\"b\u{e9}");
        assert_eq!(
            *r,
            ChangeRecord {
                event_id: "e1".into(),
                operation: OperationType::Modify,
                event_version: "1.1".into(),
                aws_region: "eu-west-1".into(),
                table_name: "orders".into(),
                source: SourceIdentity {
                    stream_arn: ORIGIN.stream_arn.into(),
                    shard_id: ORIGIN.shard_id.into(),
                    sequence_number: SequenceNumber::parse("000000000000000000042").unwrap(),
                },
                approximate_creation_millis: Some(1_479_499_740_120),
                keys: item(&[("id", id.clone())]),
                new_image: Some(item(&[
                    ("id", id.clone()),
                    ("n", AttributeValue::N("12.50".into())),
                    ("b", AttributeValue::B(vec![0, 1, 2])),
                    ("ss", AttributeValue::Ss(vec!["x".into(), "y".into()])),
                    ("ns", AttributeValue::Ns(vec!["1".into(), "2".into()])),
                    ("bs", AttributeValue::Bs(vec![vec![1], vec![]])),
                    (
                        "m",
                        AttributeValue::M(item(&[(
                            "inner",
                            AttributeValue::L(vec![
                                AttributeValue::Null(true),
                                AttributeValue::Bool(false),
                                AttributeValue::M(Item::new()),
                            ]),
                        )])),
                    ),
                    ("typed", s("v")),
                ])),
                old_image: Some(item(&[("id", id)])),
                size_bytes: 97,
                view_type: StreamViewType::NewAndOldImages,
                user_identity: Some(UserIdentity {
                    principal_id: "dynamodb.amazonaws.com".into(),
                    kind: "Service".into(),
                }),
            }
        );
    }

    #[test]
    fn absent_and_null_members_read_as_the_sdk_reads_them() {
        // No NextShardIterator: the shard has ended. An empty body is an empty answer.
        for body in [
            &b"{}"[..],
            b"",
            b"  ",
            br#"{"Records": null, "NextShardIterator": null}"#,
        ] {
            let page = parse(body, ORIGIN).unwrap();
            assert!(page.records.is_empty() && page.next_shard_iterator.is_none());
        }
        let body = br#"{"Records": [{"eventName": "REMOVE", "dynamodb": {
            "Keys": {"id": {"N": "7"}}, "SequenceNumber": "9", "StreamViewType": "KEYS_ONLY",
            "NewImage": null}}], "NextShardIterator": "next"}"#;
        let page = parse(body, ORIGIN).unwrap();
        let r = &page.records[0];
        assert_eq!(r.operation, OperationType::Remove);
        assert_eq!(r.keys, item(&[("id", AttributeValue::N("7".into()))]));
        assert_eq!((r.new_image.is_none(), r.old_image.is_none()), (true, true));
        assert_eq!(r.event_version, "1.1");
        assert_eq!((r.approximate_creation_millis, r.size_bytes), (None, 0));
        assert_eq!(r.user_identity, None);
    }

    fn record_with(event_name: &str, view: &str, image: &str) -> Vec<u8> {
        format!(
            r#"{{"Records": [{{"eventID": "e7", "eventName": "{event_name}", "dynamodb": {{
                "Keys": {{"id": {{"S": "k"}}}}, "NewImage": {image},
                "SequenceNumber": "31", "StreamViewType": "{view}"}}}}]}}"#
        )
        .into_bytes()
    }

    #[test]
    fn what_cannot_be_represented_is_an_error_naming_the_record() {
        let cases = [
            (
                record_with("UPSERT", "NEW_IMAGE", "{}"),
                "unknown eventName Some(\"UPSERT\")",
            ),
            (
                record_with("INSERT", "ALL", "{}"),
                "missing or unknown StreamViewType",
            ),
            (
                record_with("INSERT", "NEW_IMAGE", r#"{"v": {"X": 1}}"#),
                "attribute \"v\": attribute value of an unknown type \"X\"",
            ),
            (
                record_with(
                    "INSERT",
                    "NEW_IMAGE",
                    r#"{"v": {"L": [{"M": {"w": {"Q": []}}}]}}"#,
                ),
                "attribute \"v\": attribute \"w\": attribute value of an unknown type \"Q\"",
            ),
            (
                record_with("INSERT", "NEW_IMAGE", r#"{"v": {"B": "not base64!"}}"#),
                "attribute \"v\": binary value not base64",
            ),
        ];
        for (body, why) in cases {
            let err = parse(&body, ORIGIN).unwrap_err();
            let PageError::Record(text) = &err else {
                panic!("{err:?}")
            };
            assert!(
                text.starts_with("record e7 (shard shardId-00000001, sequence number 31): ")
                    && text.contains(why),
                "{text}"
            );
        }
        let no_part = br#"{"Records": [{"eventID": "e8", "eventName": "INSERT"}]}"#;
        assert_eq!(
            parse(no_part, ORIGIN).unwrap_err(),
            PageError::Record("record \"e8\" without a dynamodb part".into())
        );
        // Shapes JSON cannot be read as: data errors, not a reason to retry.
        for body in [
            &br#"{"Records": [{"eventName": "INSERT", "dynamodb": {"Keys": {"id": {"S": "a", "N": "1"}}}}]}"#[..],
            br#"{"Records": [{"eventName": "INSERT", "dynamodb": {"Keys": {"id": {}}}}]}"#,
            br#"{"Records": {"a": 1}}"#,
        ] {
            assert!(matches!(parse(body, ORIGIN), Err(PageError::Record(_))), "{body:?}");
        }
    }

    #[test]
    fn a_body_cut_short_is_worth_a_retry() {
        for body in [
            &br#"{"Records": [{"eventID": "#[..],
            b"<html>",
            b"{\"Records\": []} x",
        ] {
            assert!(
                matches!(parse(body, ORIGIN), Err(PageError::Unreadable(_))),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn epoch_seconds_become_exact_milliseconds() {
        for (text, millis) in [
            ("0", Some(0)),
            ("1479499740", Some(1_479_499_740_000)),
            ("1479499740.12", Some(1_479_499_740_120)),
            ("1479499740.1234", Some(1_479_499_740_123)),
            ("1.47949974E9", Some(1_479_499_740_000)),
            ("1.4794997401239E9", Some(1_479_499_740_123)),
            ("14794997401e-1", Some(1_479_499_740_100)),
            ("0.0005", Some(0)),
            ("-1.0005", Some(-1001)),
            ("-1.5", Some(-1500)),
            ("-0.000", Some(0)),
            ("000001.000", Some(1000)),
            ("9223372036854775.807", Some(i64::MAX)),
            ("9223372036854775.808", None),
            ("1e400", None),
            ("1e-400", Some(0)),
            ("", None),
            (".5", None),
            ("1.2.3", None),
            ("1x", None),
        ] {
            assert_eq!(epoch_seconds_to_millis(text), millis, "{text:?}");
        }
    }
}
