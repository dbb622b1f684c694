//! Record formats: how a [`ChangeRecord`] becomes the bytes a sink writes.
//!
//! Each format is a pure function of the record. Sinks re-send records after a crash or a lost
//! lease, and consumers de-duplicate on what a record says, so the same record must always give
//! the same bytes: fields come in a fixed order, items in their sorted (`BTreeMap`) order, and
//! nothing depends on the clock, the host or the run.
//!
//! - `lambda`: one element of the `Records` array a Lambda function receives from a DynamoDB
//!   stream, with typed attribute JSON (`{"N":"12.5"}`).
//! - `kinesis-ddb`: the record DynamoDB's "Kinesis Data Streams for DynamoDB" feature writes.
//! - `plain`: the change with values unmarshalled to ordinary JSON.
//!
//! Every format carries the record's source identity, so a consumer can de-duplicate re-sends:
//! `lambda` through `eventID`, `eventSourceARN` (the stream ARN) and `dynamodb.SequenceNumber`;
//! `kinesis-ddb` through `eventID` only, as DynamoDB's own Kinesis records do (DynamoDB makes
//! event IDs unique per stream record); `plain` through `stream`, `shard` and `seq`.

mod attribute;
mod json;
mod kinesis_ddb;
mod lambda;
mod plain;

#[cfg(test)]
mod golden_tests;
#[cfg(test)]
mod test_support;

use crate::source::record::{ChangeRecord, SourceRecord};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatKind {
    Lambda,
    KinesisDdb,
    Plain,
}

impl FormatKind {
    /// The accepted names, for config error messages.
    pub const ALL: [&'static str; 3] = ["lambda", "kinesis-ddb", "plain"];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "lambda" => FormatKind::Lambda,
            "kinesis-ddb" => FormatKind::KinesisDdb,
            "plain" => FormatKind::Plain,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FormatKind::Lambda => "lambda",
            FormatKind::KinesisDdb => "kinesis-ddb",
            FormatKind::Plain => "plain",
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

/// Appends exactly one JSON object (no newline) for `record` to `out`.
pub fn encode(
    kind: FormatKind,
    record: &SourceRecord,
    out: &mut Vec<u8>,
) -> Result<(), FormatMismatch> {
    match record {
        SourceRecord::DynamoDb(r) => {
            encode_change(kind, r, out);
            Ok(())
        }
        SourceRecord::Kinesis(_) => Err(FormatMismatch {
            format: kind.as_str(),
            record: "Kinesis",
        }),
    }
}

/// Appends exactly one JSON object (no newline) for a DynamoDB change record to `out`.
pub fn encode_change(kind: FormatKind, record: &ChangeRecord, out: &mut Vec<u8>) {
    match kind {
        FormatKind::Lambda => lambda::encode(record, out),
        FormatKind::KinesisDdb => kinesis_ddb::encode(record, out),
        FormatKind::Plain => plain::encode(record, out),
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::source::record::{AttributeValue, StreamViewType};
    use serde_json::Value;

    const KINDS: [FormatKind; 3] = [
        FormatKind::Lambda,
        FormatKind::KinesisDdb,
        FormatKind::Plain,
    ];

    fn encoded(kind: FormatKind, record: &ChangeRecord) -> Vec<u8> {
        let mut out = Vec::new();
        encode_change(kind, record, &mut out);
        out
    }

    #[test]
    fn names_round_trip() {
        for (kind, name) in KINDS.into_iter().zip(FormatKind::ALL) {
            assert_eq!(kind.as_str(), name);
            assert_eq!(FormatKind::parse(name), Some(kind));
        }
        for bad in ["", "Lambda", "kinesis_ddb", "kinesis", "json", "plain "] {
            assert_eq!(FormatKind::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn same_record_same_bytes() {
        let records = [
            modify_all_types(),
            ttl_remove(),
            aws_doc_insert(),
            modify_with_view(StreamViewType::KeysOnly),
        ];
        for kind in KINDS {
            for record in &records {
                let first = encoded(kind, record);
                assert_eq!(encoded(kind, record), first, "{kind:?}");
                assert_eq!(encoded(kind, &record.clone()), first, "{kind:?}");
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
        for kind in KINDS {
            assert_eq!(
                encoded(kind, &forward),
                encoded(kind, &backward),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn appends_exactly_one_object_without_newline() {
        for kind in KINDS {
            let mut out = b"prefix".to_vec();
            encode_change(kind, &modify_all_types(), &mut out);
            let appended = &out[b"prefix".len()..];
            assert!(out.starts_with(b"prefix"));
            assert_eq!(appended.first(), Some(&b'{'));
            assert_eq!(appended.last(), Some(&b'}'));
            assert!(
                !appended.contains(&b'\n'),
                "{kind:?}: raw newline in output"
            );
            let value: Value = serde_json::from_slice(appended).unwrap();
            assert!(value.is_object());
        }
    }
}
