//! The `lambda` format for Kinesis records: one element of the `Records` array that an AWS Lambda
//! function receives from a Kinesis stream, so existing Lambda handlers can consume the output
//! unchanged. Field order as in AWS's documented example.

use super::json::{write_base64, write_str};
use super::lambda::write_epoch_seconds;
use crate::source::record::KinesisRecord;

pub(super) fn encode(record: &KinesisRecord, invoke_identity_arn: Option<&str>, out: &mut Vec<u8>) {
    let sequence_number = record.source.sequence_number.as_str();
    out.extend_from_slice(b"{\"kinesis\":{\"kinesisSchemaVersion\":\"1.0\",\"partitionKey\":");
    write_str(out, &record.partition_key);
    out.extend_from_slice(b",\"sequenceNumber\":\"");
    // Validated decimal digits: nothing to escape.
    out.extend_from_slice(sequence_number.as_bytes());
    out.extend_from_slice(b"\",\"data\":");
    write_base64(out, &record.data);
    // Kinesis always reports it; a record without it (only a test source makes one) leaves the
    // field out rather than writing something Lambda never sends.
    if let Some(millis) = record.approximate_arrival_millis {
        out.extend_from_slice(b",\"approximateArrivalTimestamp\":");
        write_epoch_seconds(out, millis);
    }
    out.extend_from_slice(
        b"},\"eventSource\":\"aws:kinesis\",\"eventVersion\":\"1.0\",\"eventID\":",
    );
    // `<shardId>:<sequenceNumber>`: the record's source identity.
    let mut event_id =
        String::with_capacity(record.source.shard_id.len() + 1 + sequence_number.len());
    event_id.push_str(&record.source.shard_id);
    event_id.push(':');
    event_id.push_str(sequence_number);
    write_str(out, &event_id);
    out.extend_from_slice(b",\"eventName\":\"aws:kinesis:record\"");
    // Lambda's `invokeIdentityArn`: the function's execution role; here the identity shardbridge
    // reads the stream as (typed consumers such as Powertools' models require the field).
    if let Some(arn) = invoke_identity_arn {
        out.extend_from_slice(b",\"invokeIdentityArn\":");
        write_str(out, arn);
    }
    out.extend_from_slice(b",\"awsRegion\":");
    write_str(out, &record.aws_region);
    out.extend_from_slice(b",\"eventSourceARN\":");
    write_str(out, &record.source.stream_arn);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::test_support::*;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn lambda(record: &KinesisRecord) -> Value {
        let mut out = Vec::new();
        encode(record, None, &mut out);
        serde_json::from_slice(&out).unwrap()
    }

    /// Every field that Powertools for AWS Lambda's `KinesisDataStreamRecord` parser model
    /// requires (Python and TypeScript alike), with its type, in the order of AWS's example.
    #[test]
    fn has_every_field_the_powertools_model_requires() {
        let record = aws_doc_kinesis();
        let arn = "arn:aws:iam::123456789012:role/shardbridge";
        let mut out = Vec::new();
        encode(&record, Some(arn), &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        let strings = [
            ("eventSource", Some("aws:kinesis")),
            ("eventVersion", None),
            ("eventID", None),
            ("eventName", Some("aws:kinesis:record")),
            ("invokeIdentityArn", Some(arn)),
            ("awsRegion", None),
            ("eventSourceARN", None),
        ];
        for (field, value) in strings {
            let got = v[field].as_str().unwrap_or_else(|| panic!("{field}: {v}"));
            if let Some(value) = value {
                assert_eq!(got, value, "{field}");
            }
        }
        let payload = &v["kinesis"];
        for field in [
            "kinesisSchemaVersion",
            "partitionKey",
            "sequenceNumber",
            "data",
        ] {
            assert!(payload[field].is_string(), "kinesis.{field}: {v}");
        }
        assert!(payload["approximateArrivalTimestamp"].is_number(), "{v}");
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "kinesis",
                "eventSource",
                "eventVersion",
                "eventID",
                "eventName",
                "invokeIdentityArn",
                "awsRegion",
                "eventSourceARN"
            ]
        );
    }

    #[test]
    fn carries_the_source_identity() {
        let record = kinesis_binary();
        let out = lambda(&record);
        assert_eq!(out["eventSourceARN"], json!(record.source.stream_arn));
        assert_eq!(
            out["eventID"],
            json!(format!(
                "{}:{}",
                record.source.shard_id, record.source.sequence_number
            ))
        );
        assert_eq!(
            out["kinesis"]["sequenceNumber"],
            json!(record.source.sequence_number.as_str())
        );
        assert_eq!(out["awsRegion"], json!(record.aws_region));
    }

    #[test]
    fn no_invoke_identity_and_arrival_only_when_known() {
        let mut record = aws_doc_kinesis();
        assert!(lambda(&record).get("invokeIdentityArn").is_none());
        // A JSON number of seconds with the milliseconds.
        assert_eq!(
            serde_json::to_string(&lambda(&record)["kinesis"]["approximateArrivalTimestamp"])
                .unwrap(),
            "1545084650.987"
        );
        record.approximate_arrival_millis = None;
        assert_eq!(
            keys(&lambda(&record)["kinesis"]),
            [
                "kinesisSchemaVersion",
                "partitionKey",
                "sequenceNumber",
                "data"
            ]
        );
    }

    proptest! {
        /// Whatever the bytes and the key, a handler decoding `kinesis.data` gets them back.
        #[test]
        fn data_and_partition_key_round_trip(
            data in prop::collection::vec(any::<u8>(), 0..64),
            key in arb_text(),
        ) {
            let mut record = kinesis_binary();
            record.data = data;
            record.partition_key = key;
            let out = lambda(&record);
            prop_assert_eq!(
                STANDARD.decode(out["kinesis"]["data"].as_str().unwrap()).unwrap(),
                record.data
            );
            prop_assert_eq!(
                out["kinesis"]["partitionKey"].as_str().unwrap(),
                record.partition_key
            );
        }
    }
}
