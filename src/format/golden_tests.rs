//! Golden tests: each format's output for fixed records against hand-written fixtures in
//! tests/golden/. The fixtures are pretty-printed for review; a record must equal its fixture
//! both as a parsed JSON value and, once the fixture's layout whitespace is removed, byte for
//! byte (which also pins the field order and the number text).

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

use super::test_support::*;
use super::{encode_change, FormatKind};
use crate::source::record::{ChangeRecord, StreamViewType};

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

/// Output equals the fixture as a JSON value and, whitespace aside, byte for byte.
fn assert_golden(name: &str, kind: FormatKind, record: &ChangeRecord) {
    let text = fixture(name);
    let expected: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let actual_text = encoded(kind, record);
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

const AWS_DOC_INSERT: &str = "lambda_aws_doc_insert.json";

#[test]
fn outputs_match_golden_files() {
    for (name, kind, record) in goldens() {
        assert_golden(name, kind, &record);
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
        .chain([AWS_DOC_INSERT.to_string()])
        .collect();
    assert_eq!(on_disk, used);
}
