//! The `lambda` format for Kinesis records: one element of the `Records` array that an AWS Lambda
//! function receives from a Kinesis stream, so existing Lambda handlers can consume the output
//! unchanged. Field order as in AWS's documented example.

use super::json::{write_base64, write_str};
use super::lambda::write_epoch_seconds;
use crate::source::record::KinesisRecord;

pub(super) fn encode(record: &KinesisRecord, out: &mut Vec<u8>) {
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
    // Real Lambda adds `invokeIdentityArn` here: the ARN of the function's execution role. There
    // is no function and no role here, so the field is left out rather than invented.
    out.extend_from_slice(b",\"eventName\":\"aws:kinesis:record\",\"awsRegion\":");
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
        encode(record, &mut out);
        serde_json::from_slice(&out).unwrap()
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
