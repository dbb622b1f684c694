//! Record formats: how a [`SourceRecord`] becomes the bytes a sink writes.
//!
//! Each format is a pure function of the record. Sinks re-send records after a crash or a lost
//! lease, and consumers de-duplicate on what a record says, so the same record must always give
//! the same bytes: fields come in a fixed order, items in their sorted (`BTreeMap`) order, and
//! nothing depends on the clock, the host or the run.
//!
//! - `lambda`: one element of the `Records` array a Lambda function receives from the source: from
//!   a DynamoDB stream (typed attribute JSON, `{"N":"12.5"}`) or from a Kinesis stream
//!   (`kinesis.data` in base64).
//! - `kinesis-ddb` (DynamoDB only): the record DynamoDB's "Kinesis Data Streams for DynamoDB"
//!   feature writes.
//! - `plain` (DynamoDB only): the change with values unmarshalled to ordinary JSON.
//! - `raw` (Kinesis only): the record's bytes in base64 with its partition key and identity.
//!
//! Every format carries the record's source identity, so a consumer can de-duplicate re-sends:
//! `lambda` through `eventID`, `eventSourceARN` (the stream ARN) and `dynamodb.SequenceNumber`
//! or `kinesis.sequenceNumber` (a Kinesis `eventID` is `<shardId>:<sequenceNumber>`);
//! `kinesis-ddb` through `eventID` only, as DynamoDB's own Kinesis records do (DynamoDB makes
//! event IDs unique per stream record); `plain` through `stream`, `shard` and `seq`; `raw`
//! through `stream`, `shard` and `sequenceNumber`.

mod attribute;
mod json;
mod kinesis_ddb;
mod lambda;
mod lambda_kinesis;
mod plain;
mod raw;

#[cfg(test)]
mod golden_tests;
#[cfg(test)]
pub(crate) mod test_support;

use crate::source::record::{ChangeRecord, SourceRecord};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatKind {
    Lambda,
    KinesisDdb,
    Plain,
    Raw,
}

impl FormatKind {
    /// The accepted names, for config error messages.
    pub const ALL: [&'static str; 4] = ["lambda", "kinesis-ddb", "plain", "raw"];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "lambda" => FormatKind::Lambda,
            "kinesis-ddb" => FormatKind::KinesisDdb,
            "plain" => FormatKind::Plain,
            "raw" => FormatKind::Raw,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FormatKind::Lambda => "lambda",
            FormatKind::KinesisDdb => "kinesis-ddb",
            FormatKind::Plain => "plain",
            FormatKind::Raw => "raw",
        }
    }

    /// Whether this format encodes the records of a Kinesis source (`kinesis`) or of a DynamoDB
    /// stream (`!kinesis`). [`encode`] returns [`FormatMismatch`] exactly when this is false.
    pub fn accepts(self, kinesis: bool) -> bool {
        match self {
            FormatKind::Lambda => true,
            FormatKind::KinesisDdb | FormatKind::Plain => !kinesis,
            FormatKind::Raw => kinesis,
        }
    }
}

/// A format that has no encoding for this kind of record (configuration validation prevents
/// it; the pipeline reports it with the record's identity).
#[derive(Debug, thiserror::Error)]
#[error("format {format} cannot encode a {record} record")]
pub struct FormatMismatch {
    pub format: &'static str,
    pub record: &'static str,
}

/// Appends exactly one JSON object (no newline) for `record` to `out`, or nothing and
/// `FormatMismatch` when `kind` does not encode this kind of record (see
/// [`FormatKind::accepts`]).
pub fn encode(
    kind: FormatKind,
    record: &SourceRecord,
    out: &mut Vec<u8>,
) -> Result<(), FormatMismatch> {
    encode_as(kind, None, record, out)
}

/// [`encode`], with the `invokeIdentityArn` that `lambda` writes on Kinesis records (Lambda
/// always sets it: the identity that reads the stream).
pub fn encode_as(
    kind: FormatKind,
    invoke_identity_arn: Option<&str>,
    record: &SourceRecord,
    out: &mut Vec<u8>,
) -> Result<(), FormatMismatch> {
    use FormatKind::*;
    match (kind, record) {
        (Lambda | KinesisDdb | Plain, SourceRecord::DynamoDb(r)) => encode_change(kind, r, out),
        (Lambda, SourceRecord::Kinesis(r)) => lambda_kinesis::encode(r, invoke_identity_arn, out),
        (Raw, SourceRecord::Kinesis(r)) => raw::encode(r, out),
        (Raw, SourceRecord::DynamoDb(_)) | (KinesisDdb | Plain, SourceRecord::Kinesis(_)) => {
            return Err(FormatMismatch {
                format: kind.as_str(),
                record: match record {
                    SourceRecord::DynamoDb(_) => "DynamoDB",
                    SourceRecord::Kinesis(_) => "Kinesis",
                },
            })
        }
    }
    Ok(())
}

/// Appends exactly one JSON object (no newline) for a DynamoDB change record to `out`.
///
/// # Panics
///
/// If `kind` has no encoding for DynamoDB records (`raw`): use [`encode`], which reports that
/// as [`FormatMismatch`].
pub fn encode_change(kind: FormatKind, record: &ChangeRecord, out: &mut Vec<u8>) {
    match kind {
        FormatKind::Lambda => lambda::encode(record, out),
        FormatKind::KinesisDdb => kinesis_ddb::encode(record, out),
        FormatKind::Plain => plain::encode(record, out),
        FormatKind::Raw => panic!(
            "format raw cannot encode a DynamoDB record (event {})",
            record.event_id
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::source::record::{AttributeValue, KinesisRecord, StreamViewType};
    use serde_json::Value;

    const ALL_KINDS: [FormatKind; 4] = [
        FormatKind::Lambda,
        FormatKind::KinesisDdb,
        FormatKind::Plain,
        FormatKind::Raw,
    ];

    /// The formats of DynamoDB records.
    const DDB_KINDS: [FormatKind; 3] = [
        FormatKind::Lambda,
        FormatKind::KinesisDdb,
        FormatKind::Plain,
    ];

    /// A snapshot record reads as an INSERT everywhere; what tells it apart is the
    /// eventSource of the Lambda-shaped formats and the op of `plain`.
    #[test]
    fn snapshot_records_are_inserts_from_shardbridge_snapshot() {
        let mut record = aws_doc_insert();
        record.operation = crate::source::record::OperationType::Snapshot;
        record.old_image = None;
        for kind in DDB_KINDS {
            let mut out = Vec::new();
            encode_change(kind, &record, &mut out);
            let v: Value = serde_json::from_slice(&out).unwrap();
            match kind {
                FormatKind::Plain => assert_eq!(v["op"], "snapshot"),
                FormatKind::Lambda => {
                    assert_eq!(v["eventName"], "INSERT");
                    assert_eq!(v["eventSource"], "shardbridge:snapshot");
                }
                _ => {
                    assert_eq!(v["eventName"], "INSERT", "{kind:?}");
                    assert_eq!(v["eventSource"], "shardbridge:snapshot", "{kind:?}");
                }
            }
        }
        record.operation = crate::source::record::OperationType::Insert;
        let mut out = Vec::new();
        encode_change(FormatKind::Lambda, &record, &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["eventSource"], "aws:dynamodb");
    }

    /// The formats of Kinesis records.
    const KINESIS_KINDS: [FormatKind; 2] = [FormatKind::Lambda, FormatKind::Raw];

    fn encoded(kind: FormatKind, record: &ChangeRecord) -> Vec<u8> {
        let mut out = Vec::new();
        encode_change(kind, record, &mut out);
        out
    }

    fn encoded_kinesis(kind: FormatKind, record: &KinesisRecord) -> Vec<u8> {
        let mut out = Vec::new();
        encode(kind, &SourceRecord::Kinesis(record.clone()), &mut out).unwrap();
        out
    }

    fn kinesis_records() -> [KinesisRecord; 3] {
        [aws_doc_kinesis(), kinesis_binary(), kinesis_no_arrival()]
    }

    #[test]
    fn names_round_trip() {
        for (kind, name) in ALL_KINDS.into_iter().zip(FormatKind::ALL) {
            assert_eq!(kind.as_str(), name);
            assert_eq!(FormatKind::parse(name), Some(kind));
        }
        for bad in [
            "",
            "Lambda",
            "kinesis_ddb",
            "kinesis",
            "json",
            "plain ",
            "RAW",
            "raw ",
        ] {
            assert_eq!(FormatKind::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn accepts_says_which_pairs_encode() {
        for kind in ALL_KINDS {
            assert_eq!(kind.accepts(false), DDB_KINDS.contains(&kind), "{kind:?}");
            assert_eq!(
                kind.accepts(true),
                KINESIS_KINDS.contains(&kind),
                "{kind:?}"
            );
        }
        let records = [
            SourceRecord::DynamoDb(modify_all_types()),
            SourceRecord::Kinesis(aws_doc_kinesis()),
        ];
        for kind in ALL_KINDS {
            for record in &records {
                let kinesis = matches!(record, SourceRecord::Kinesis(_));
                let mut out = b"prefix".to_vec();
                match encode(kind, record, &mut out) {
                    Ok(()) => assert!(kind.accepts(kinesis), "{kind:?} {kinesis}"),
                    Err(e) => {
                        assert!(!kind.accepts(kinesis), "{kind:?} {kinesis}: {e}");
                        // A mismatch writes nothing.
                        assert_eq!(out, b"prefix");
                        let text = e.to_string();
                        assert!(text.contains(kind.as_str()), "{text}");
                        let source = if kinesis { "Kinesis" } else { "DynamoDB" };
                        assert!(text.contains(source), "{text}");
                    }
                }
            }
        }
    }

    #[test]
    fn encode_of_a_dynamodb_record_is_encode_change() {
        let record = modify_all_types();
        for kind in DDB_KINDS {
            let mut out = Vec::new();
            encode(kind, &SourceRecord::DynamoDb(record.clone()), &mut out).unwrap();
            assert_eq!(out, encoded(kind, &record), "{kind:?}");
        }
    }

    #[test]
    #[should_panic(expected = "format raw cannot encode a DynamoDB record")]
    fn encode_change_refuses_raw() {
        encoded(FormatKind::Raw, &modify_all_types());
    }

    #[test]
    fn same_record_same_bytes() {
        let records = [
            modify_all_types(),
            ttl_remove(),
            aws_doc_insert(),
            modify_with_view(StreamViewType::KeysOnly),
        ];
        for kind in DDB_KINDS {
            for record in &records {
                let first = encoded(kind, record);
                assert_eq!(encoded(kind, record), first, "{kind:?}");
                assert_eq!(encoded(kind, &record.clone()), first, "{kind:?}");
            }
        }
        for kind in KINESIS_KINDS {
            for record in &kinesis_records() {
                let first = encoded_kinesis(kind, record);
                assert_eq!(encoded_kinesis(kind, record), first, "{kind:?}");
                assert_eq!(encoded_kinesis(kind, &record.clone()), first, "{kind:?}");
            }
        }
    }

    #[test]
    fn attribute_insertion_order_does_not_matter() {
        let mut forward = modify_all_types();
        let mut backward = modify_all_types();
        let attributes: Vec<(String, AttributeValue)> = all_types_item().into_iter().collect();
        forward.new_image = Some(attributes.iter().cloned().collect());
        backward.new_image = Some(attributes.into_iter().rev().collect());
        for kind in DDB_KINDS {
            assert_eq!(
                encoded(kind, &forward),
                encoded(kind, &backward),
                "{kind:?}"
            );
        }
    }

    fn assert_one_object_appended(what: &str, out: &[u8]) {
        assert!(out.starts_with(b"prefix"), "{what}");
        let appended = &out[b"prefix".len()..];
        assert_eq!(appended.first(), Some(&b'{'), "{what}");
        assert_eq!(appended.last(), Some(&b'}'), "{what}");
        assert!(!appended.contains(&b'\n'), "{what}: raw newline in output");
        let value: Value = serde_json::from_slice(appended).unwrap();
        assert!(value.is_object(), "{what}");
    }

    #[test]
    fn appends_exactly_one_object_without_newline() {
        for kind in DDB_KINDS {
            let mut out = b"prefix".to_vec();
            encode_change(kind, &modify_all_types(), &mut out);
            assert_one_object_appended(kind.as_str(), &out);
        }
        for kind in KINESIS_KINDS {
            for record in kinesis_records() {
                let mut out = b"prefix".to_vec();
                encode(kind, &SourceRecord::Kinesis(record), &mut out).unwrap();
                assert_one_object_appended(kind.as_str(), &out);
            }
        }
    }
}
