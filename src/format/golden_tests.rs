//! Golden tests: each format's output for fixed records against hand-written fixtures in
//! tests/golden/. The fixtures are pretty-printed for review; a record must equal its fixture
//! both as a parsed JSON value and, once the fixture's layout whitespace is removed, byte for
//! byte (which also pins the field order and the number text).

use std::collections::BTreeSet;
use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::Value;

use super::test_support::*;
use super::{encode, encode_change, FormatKind};
use crate::source::record::{ChangeRecord, KinesisRecord, SourceRecord, StreamViewType};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn fixture(name: &str) -> String {
    let path = golden_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn encoded(kind: FormatKind, record: &ChangeRecord) -> String {
    let mut out = Vec::new();
    encode_change(kind, record, &mut out);
    String::from_utf8(out).expect("output is UTF-8")
}

fn encoded_kinesis(kind: FormatKind, record: &KinesisRecord) -> String {
    let mut out = Vec::new();
    encode(kind, &SourceRecord::Kinesis(record.clone()), &mut out)
        .unwrap_or_else(|e| panic!("{e}"));
    String::from_utf8(out).expect("output is UTF-8")
}

/// Output equals the fixture as a JSON value and, whitespace aside, byte for byte.
fn assert_golden(name: &str, kind: FormatKind, record: &ChangeRecord) {
    assert_golden_text(name, encoded(kind, record));
}

fn assert_golden_text(name: &str, actual_text: String) {
    let text = fixture(name);
    let expected: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let actual: Value = serde_json::from_str(&actual_text)
        .unwrap_or_else(|e| panic!("{name}: output is not JSON ({e}): {actual_text}"));
    assert_eq!(
        actual, expected,
        "{name}: value differs; output:\n{actual_text}"
    );
    assert_eq!(
        actual_text,
        minify(&text),
        "{name}: field order or text differs"
    );
}

/// (fixture, format, record) for every byte-exact golden.
fn goldens() -> Vec<(&'static str, FormatKind, ChangeRecord)> {
    use FormatKind::*;
    vec![
        ("lambda_modify_all_types.json", Lambda, modify_all_types()),
        ("lambda_ttl_remove.json", Lambda, ttl_remove()),
        (
            "lambda_keys_only.json",
            Lambda,
            modify_with_view(StreamViewType::KeysOnly),
        ),
        (
            "lambda_new_image.json",
            Lambda,
            modify_with_view(StreamViewType::NewImage),
        ),
        (
            "lambda_old_image.json",
            Lambda,
            modify_with_view(StreamViewType::OldImage),
        ),
        ("kinesis_ddb_modify.json", KinesisDdb, modify_all_types()),
        ("kinesis_ddb_ttl_remove.json", KinesisDdb, ttl_remove()),
        ("plain_all_types.json", Plain, modify_all_types()),
        ("plain_ttl_remove.json", Plain, ttl_remove()),
    ]
}

/// (fixture, format, record) for every byte-exact golden of a Kinesis record.
fn kinesis_goldens() -> Vec<(&'static str, FormatKind, KinesisRecord)> {
    use FormatKind::*;
    vec![
        ("lambda_kinesis_binary.json", Lambda, kinesis_binary()),
        ("raw_kinesis_aws_doc.json", Raw, aws_doc_kinesis()),
        ("raw_kinesis_binary.json", Raw, kinesis_binary()),
        ("raw_kinesis_no_arrival.json", Raw, kinesis_no_arrival()),
    ]
}

const AWS_DOC_INSERT: &str = "lambda_aws_doc_insert.json";
const AWS_DOC_KINESIS: &str = "lambda_kinesis_aws_doc.json";

#[test]
fn outputs_match_golden_files() {
    for (name, kind, record) in goldens() {
        assert_golden(name, kind, &record);
    }
    for (name, kind, record) in kinesis_goldens() {
        assert_golden_text(name, encoded_kinesis(kind, &record));
    }
}

/// The fixture is the first record of the example event in AWS's Lambda documentation for
/// Kinesis ("Using AWS Lambda with Amazon Kinesis"), copied unchanged. The output is that record
/// without `invokeIdentityArn` (the function's execution role, which only real Lambda has), as a
/// JSON value and in the same field order.
#[test]
fn lambda_matches_the_aws_documented_kinesis_record() {
    let mut expected: Value = serde_json::from_str(&fixture(AWS_DOC_KINESIS)).unwrap();
    let role = expected
        .as_object_mut()
        .unwrap()
        .shift_remove("invokeIdentityArn");
    assert_eq!(
        role,
        Some(Value::String(
            "arn:aws:iam::123456789012:role/lambda-role".into()
        ))
    );
    let text = encoded_kinesis(FormatKind::Lambda, &aws_doc_kinesis());
    let actual: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(actual, expected, "output:\n{text}");
    assert_eq!(keys(&actual), keys(&expected));
    assert_eq!(keys(&actual["kinesis"]), keys(&expected["kinesis"]));
    // Byte for byte too, once the documented record's role is left out.
    assert_eq!(text, serde_json::to_string(&expected).unwrap());
}

/// The fixtures' `data` decodes to the records' bytes, so the fixtures themselves are checked
/// against the inputs and not only against the encoder.
#[test]
fn golden_kinesis_data_decodes_to_the_inputs() {
    let mut checked = kinesis_goldens();
    checked.push((AWS_DOC_KINESIS, FormatKind::Lambda, aws_doc_kinesis()));
    for (name, kind, record) in checked {
        let golden: Value = serde_json::from_str(&fixture(name)).unwrap();
        let (data, key) = match kind {
            FormatKind::Lambda => (
                &golden["kinesis"]["data"],
                &golden["kinesis"]["partitionKey"],
            ),
            _ => (&golden["data"], &golden["partitionKey"]),
        };
        assert_eq!(
            STANDARD.decode(data.as_str().unwrap()).unwrap(),
            record.data,
            "{name}"
        );
        assert_eq!(key.as_str(), Some(record.partition_key.as_str()), "{name}");
    }
}

/// The fixture is the first record of the sample event in AWS's Lambda documentation for
/// DynamoDB ("Using AWS Lambda with Amazon DynamoDB"), copied unchanged, field order included.
/// JSON objects are unordered and AWS's own examples list the fields in different orders, so
/// here the value must be equal, and the order is checked against the one this format fixes
/// (the order Lambda delivers, as in `sam local generate-event dynamodb update`).
#[test]
fn lambda_matches_the_aws_documented_record() {
    let expected: Value = serde_json::from_str(&fixture(AWS_DOC_INSERT)).unwrap();
    let text = encoded(FormatKind::Lambda, &aws_doc_insert());
    let actual: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(actual, expected, "output:\n{text}");
    assert_eq!(
        keys(&actual),
        [
            "eventID",
            "eventName",
            "eventVersion",
            "eventSource",
            "awsRegion",
            "dynamodb",
            "eventSourceARN"
        ]
    );
    assert_eq!(
        keys(&actual["dynamodb"]),
        [
            "Keys",
            "NewImage",
            "SequenceNumber",
            "SizeBytes",
            "StreamViewType"
        ]
    );
}

/// The typed JSON in the fixtures decodes back to the records' items, so the fixtures themselves
/// are checked against the inputs and not only against the encoder.
#[test]
fn golden_typed_images_decode_to_the_inputs() {
    for (name, kind, record) in goldens() {
        if kind == FormatKind::Plain {
            continue;
        }
        let golden: Value = serde_json::from_str(&fixture(name)).unwrap();
        let dynamodb = &golden["dynamodb"];
        assert_eq!(
            parse_typed_item(&dynamodb["Keys"]).unwrap(),
            record.keys,
            "{name}"
        );
        let image = |field: &str| dynamodb.get(field).map(|v| parse_typed_item(v).unwrap());
        assert_eq!(image("NewImage"), record.new_image, "{name}");
        assert_eq!(image("OldImage"), record.old_image, "{name}");
    }
}

/// Every file in tests/golden is used by a test, so none silently goes stale.
#[test]
fn every_golden_file_is_checked() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let used: BTreeSet<String> = goldens()
        .into_iter()
        .map(|(name, _, _)| name.to_string())
        .chain(
            kinesis_goldens()
                .into_iter()
                .map(|(name, _, _)| name.to_string()),
        )
        .chain([AWS_DOC_INSERT.to_string(), AWS_DOC_KINESIS.to_string()])
        .collect();
    assert_eq!(on_disk, used);
}
