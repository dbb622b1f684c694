//! Test inputs and reference decoders shared by the format tests.

use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use proptest::prelude::*;
use serde_json::Value;

use crate::source::record::{
    AttributeValue, ChangeRecord, Item, KinesisRecord, OperationType, SourceIdentity,
    StreamViewType, UserIdentity,
};
use crate::source::sequence::SequenceNumber;

use AttributeValue as A;

pub fn s(v: &str) -> AttributeValue {
    A::S(v.to_string())
}

pub fn n(v: &str) -> AttributeValue {
    A::N(v.to_string())
}

pub fn item<const K: usize>(entries: [(&str, AttributeValue); K]) -> Item {
    entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

pub const BIG_N: &str = "12345678901234567890123456789012345678";

/// An item with every attribute type, including a 38-digit number, a negative decimal, binary
/// that needs the '+' and '/' base64 characters, and nested maps and lists.
pub fn all_types_item() -> Item {
    item([
        ("pk", s("user#42")),
        ("sk", n("1700000000")),
        ("big", n(BIG_N)),
        ("neg", n("-273.15")),
        ("bin", A::B(vec![0x00, 0x01, 0xfe, 0xff])),
        ("ss", A::Ss(vec!["a".into(), "b".into()])),
        ("ns", A::Ns(vec!["1".into(), "-2.5".into(), "1E+5".into()])),
        ("bs", A::Bs(vec![b"hello".to_vec(), vec![0xfb, 0xff]])),
        (
            "nested",
            A::M(item([
                ("depth", n("2")),
                ("empty", A::M(Item::new())),
                (
                    "inner",
                    A::M(item([
                        ("leaf", s("deep")),
                        ("list", A::L(vec![n("1"), s("two")])),
                    ])),
                ),
            ])),
        ),
        (
            "list",
            A::L(vec![
                s("x"),
                n("3.14"),
                A::Bool(true),
                A::Null(true),
                A::M(item([("k", s("v"))])),
                A::L(vec![]),
                A::B(vec![0x01]),
            ]),
        ),
        ("nothing", A::Null(true)),
        ("flag", A::Bool(false)),
        ("text", s("héllo \"wörld\"\n\t✓")),
    ])
}

pub fn ttl_identity() -> UserIdentity {
    UserIdentity {
        principal_id: "dynamodb.amazonaws.com".into(),
        kind: "Service".into(),
    }
}

/// A MODIFY of the all-types item in a NEW_AND_OLD_IMAGES stream.
pub fn modify_all_types() -> ChangeRecord {
    ChangeRecord {
        event_id: "7f1c3b2a9e8d4c6b5a4f3e2d1c0b9a88".into(),
        operation: OperationType::Modify,
        event_version: "1.1".into(),
        aws_region: "us-east-1".into(),
        table_name: "Orders".into(),
        source: SourceIdentity {
            stream_arn: "arn:aws:dynamodb:us-east-1:123456789012:table/Orders/stream/2026-11-20T08:15:30.123".into(),
            shard_id: "shardId-00000001763626530123-1a2b3c4d".into(),
            sequence_number: SequenceNumber::parse("4960000000000001234567890123456789").unwrap(),
        },
        // 2026-11-24T03:24:30.123Z
        approximate_creation_millis: Some(1_795_490_670_123),
        keys: item([("pk", s("user#42")), ("sk", n("1700000000"))]),
        new_image: Some(all_types_item()),
        old_image: Some(item([
            ("pk", s("user#42")),
            ("sk", n("1700000000")),
            ("big", n("1")),
            ("text", s("old")),
        ])),
        size_bytes: 412,
        view_type: StreamViewType::NewAndOldImages,
        user_identity: None,
    }
}

/// A delete by Time To Live: DynamoDB marks it with the service's user identity.
pub fn ttl_remove() -> ChangeRecord {
    ChangeRecord {
        event_id: "0a1b2c3d4e5f60718293a4b5c6d7e8f9".into(),
        operation: OperationType::Remove,
        event_version: "1.1".into(),
        aws_region: "eu-west-1".into(),
        table_name: "Sessions".into(),
        source: SourceIdentity {
            stream_arn: "arn:aws:dynamodb:eu-west-1:123456789012:table/Sessions/stream/2016-11-18T20:00:00.000".into(),
            shard_id: "shardId-00000001479499000000-aabbccdd".into(),
            sequence_number: SequenceNumber::parse("300000000000000499659").unwrap(),
        },
        // A whole second: 2016-11-18T20:09:00Z.
        approximate_creation_millis: Some(1_479_499_740_000),
        keys: item([("session", s("s-1"))]),
        new_image: None,
        old_image: Some(item([("expires", n("1479499700")), ("session", s("s-1"))])),
        size_bytes: 58,
        view_type: StreamViewType::NewAndOldImages,
        user_identity: Some(ttl_identity()),
    }
}

/// A MODIFY as a stream of the given view type delivers it: only the images that view carries.
pub fn modify_with_view(view: StreamViewType) -> ChangeRecord {
    let new = item([("id", s("a-1")), ("qty", n("5"))]);
    let old = item([("id", s("a-1")), ("qty", n("4"))]);
    let (new_image, old_image) = match view {
        StreamViewType::KeysOnly => (None, None),
        StreamViewType::NewImage => (Some(new), None),
        StreamViewType::OldImage => (None, Some(old)),
        StreamViewType::NewAndOldImages => (Some(new), Some(old)),
    };
    ChangeRecord {
        event_id: "e0000000000000000000000000000001".into(),
        operation: OperationType::Modify,
        event_version: "1.1".into(),
        aws_region: "us-east-2".into(),
        table_name: "Stock".into(),
        source: SourceIdentity {
            stream_arn:
                "arn:aws:dynamodb:us-east-2:123456789012:table/Stock/stream/2026-01-01T00:00:00.000"
                    .into(),
            shard_id: "shardId-00000001767225600000-00000001".into(),
            sequence_number: SequenceNumber::parse("100000000000000000001").unwrap(),
        },
        approximate_creation_millis: match view {
            // One record without a creation time, to show the field is omitted.
            StreamViewType::KeysOnly => None,
            _ => Some(1_767_225_601_500),
        },
        keys: item([("id", s("a-1"))]),
        new_image,
        old_image,
        size_bytes: 20,
        view_type: view,
        user_identity: None,
    }
}

/// The example record of AWS's Lambda documentation for DynamoDB streams ("Using AWS Lambda
/// with Amazon DynamoDB", the first record of the sample event; see
/// tests/golden/lambda_aws_doc_insert.json).
pub fn aws_doc_insert() -> ChangeRecord {
    ChangeRecord {
        event_id: "1".into(),
        operation: OperationType::Insert,
        event_version: "1.0".into(),
        aws_region: "us-west-2".into(),
        table_name: "ExampleTableWithStream".into(),
        source: SourceIdentity {
            stream_arn: "arn:aws:dynamodb:us-west-2:account-id:table/ExampleTableWithStream/stream/2015-06-27T00:48:05.899".into(),
            shard_id: "shardId-00000001435366085899-00000001".into(),
            sequence_number: SequenceNumber::parse("111").unwrap(),
        },
        approximate_creation_millis: None,
        keys: item([("Id", n("101"))]),
        new_image: Some(item([("Message", s("New item!")), ("Id", n("101"))])),
        old_image: None,
        size_bytes: 26,
        view_type: StreamViewType::NewAndOldImages,
        user_identity: None,
    }
}

/// The first record of the example event in AWS's Lambda documentation for Kinesis ("Using
/// AWS Lambda with Amazon Kinesis"; see tests/golden/lambda_kinesis_aws_doc.json). Its data is
/// "Hello, this is a test.".
pub fn aws_doc_kinesis() -> KinesisRecord {
    KinesisRecord {
        source: SourceIdentity {
            stream_arn: "arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream".into(),
            shard_id: "shardId-000000000006".into(),
            sequence_number: SequenceNumber::parse(
                "49590338271490256608559692538361571095921575989136588898",
            )
            .unwrap(),
        },
        partition_key: "1".into(),
        data: b"Hello, this is a test.".to_vec(),
        approximate_arrival_millis: Some(1_545_084_650_987),
        aws_region: "us-east-2".into(),
    }
}

/// A Kinesis record whose data is not text (base64 needs '+', '/' and padding) and whose
/// partition key needs JSON escapes, arriving on a whole second.
pub fn kinesis_binary() -> KinesisRecord {
    KinesisRecord {
        source: SourceIdentity {
            stream_arn: "arn:aws:kinesis:eu-west-1:123456789012:stream/orders.v2".into(),
            shard_id: "shardId-000000000004".into(),
            sequence_number: SequenceNumber::parse(
                "49659215328429367618227474103318046548385356283264450626",
            )
            .unwrap(),
        },
        partition_key: "user#42 \"ü\"\n✓".into(),
        data: vec![0x00, 0x01, 0xfb, 0xff, 0xfe, b'{', b'"', 0x0a],
        // 2026-11-24T03:24:30Z
        approximate_arrival_millis: Some(1_795_490_670_000),
        aws_region: "eu-west-1".into(),
    }
}

/// A Kinesis record without an arrival time (only test sources make one) and with empty data.
pub fn kinesis_no_arrival() -> KinesisRecord {
    KinesisRecord {
        source: SourceIdentity {
            stream_arn: "arn:aws:kinesis:us-east-1:123456789012:stream/empty".into(),
            shard_id: "shardId-000000000000".into(),
            sequence_number: SequenceNumber::parse("7").unwrap(),
        },
        partition_key: "k".into(),
        data: Vec::new(),
        approximate_arrival_millis: None,
        aws_region: "us-east-1".into(),
    }
}

/// Reference decoder of DynamoDB's typed JSON, written independently of the encoder.
pub fn parse_typed(v: &Value) -> Result<AttributeValue, String> {
    let obj = v.as_object().ok_or_else(|| format!("not an object: {v}"))?;
    if obj.len() != 1 {
        return Err(format!("expected exactly one type tag: {v}"));
    }
    let (tag, inner) = obj.iter().next().unwrap();
    let string = |v: &Value| {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("{tag}: not a string: {v}"))
    };
    let binary = |v: &Value| {
        let text = v
            .as_str()
            .ok_or_else(|| format!("{tag}: not a string: {v}"))?;
        STANDARD
            .decode(text)
            .map_err(|e| format!("{tag}: bad base64 {text:?}: {e}"))
    };
    let array = |v: &Value| {
        v.as_array()
            .cloned()
            .ok_or_else(|| format!("{tag}: not an array: {v}"))
    };
    let boolean = |v: &Value| v.as_bool().ok_or_else(|| format!("{tag}: not a bool: {v}"));
    Ok(match tag.as_str() {
        "S" => A::S(string(inner)?),
        "N" => A::N(string(inner)?),
        "B" => A::B(binary(inner)?),
        "SS" => A::Ss(array(inner)?.iter().map(string).collect::<Result<_, _>>()?),
        "NS" => A::Ns(array(inner)?.iter().map(string).collect::<Result<_, _>>()?),
        "BS" => A::Bs(array(inner)?.iter().map(binary).collect::<Result<_, _>>()?),
        "M" => A::M(parse_typed_item(inner)?),
        "L" => A::L(
            array(inner)?
                .iter()
                .map(parse_typed)
                .collect::<Result<_, _>>()?,
        ),
        "NULL" => A::Null(boolean(inner)?),
        "BOOL" => A::Bool(boolean(inner)?),
        other => return Err(format!("unknown type tag {other:?}")),
    })
}

pub fn parse_typed_item(v: &Value) -> Result<Item, String> {
    v.as_object()
        .ok_or_else(|| format!("item is not an object: {v}"))?
        .iter()
        .map(|(k, v)| Ok((k.clone(), parse_typed(v)?)))
        .collect()
}

/// Reference unmarshaller to `serde_json::Value`, written independently of the encoder.
pub fn plain_value(v: &AttributeValue) -> Value {
    let number = |n: &String| {
        serde_json::Number::from_str(n)
            .map(Value::Number)
            .unwrap_or_else(|_| Value::String(n.clone()))
    };
    let binary = |b: &Vec<u8>| Value::String(STANDARD.encode(b));
    match v {
        A::S(s) => Value::String(s.clone()),
        A::N(n) => number(n),
        A::B(b) => binary(b),
        A::Ss(v) => v.iter().cloned().map(Value::String).collect(),
        A::Ns(v) => v.iter().map(number).collect(),
        A::Bs(v) => v.iter().map(binary).collect(),
        A::M(m) => plain_item_value(m),
        A::L(v) => v.iter().map(plain_value).collect(),
        A::Null(_) => Value::Null,
        A::Bool(b) => Value::Bool(*b),
    }
}

pub fn plain_item_value(m: &Item) -> Value {
    Value::Object(m.iter().map(|(k, v)| (k.clone(), plain_value(v))).collect())
}

/// Arbitrary Unicode mixed with strings dense in characters JSON must escape.
pub fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\\x00-\\x20\"\\\\a-z\\x7f-\\u{2030}]{0,8}"
    ]
}

pub fn arb_number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "-?(0|[1-9][0-9]{0,37})(\\.[0-9]{1,12})?([eE][+-]?[0-9]{1,3})?",
        // Text DynamoDB might hold that is not JSON number syntax.
        1 => "[+.0-9eE-]{1,6}",
    ]
}

fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..12)
}

/// Random attribute value trees, up to 4 levels of maps and lists.
pub fn arb_attribute() -> impl Strategy<Value = AttributeValue> {
    let leaf = prop_oneof![
        arb_text().prop_map(A::S),
        arb_number_text().prop_map(A::N),
        arb_bytes().prop_map(A::B),
        prop::collection::vec(arb_text(), 0..4).prop_map(A::Ss),
        prop::collection::vec(arb_number_text(), 0..4).prop_map(A::Ns),
        prop::collection::vec(arb_bytes(), 0..4).prop_map(A::Bs),
        any::<bool>().prop_map(A::Null),
        any::<bool>().prop_map(A::Bool),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::btree_map(arb_text(), inner.clone(), 0..6).prop_map(A::M),
            prop::collection::vec(inner, 0..6).prop_map(A::L),
        ]
    })
}

pub fn arb_item() -> impl Strategy<Value = Item> {
    prop::collection::btree_map(arb_text(), arb_attribute(), 0..6)
}

/// Removes the whitespace between tokens of a (trusted, pretty-printed) JSON text, keeping
/// everything inside strings: the compact bytes a golden file stands for.
pub fn minify(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}

/// The keys of a JSON object, in order.
pub fn keys(v: &Value) -> Vec<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}
