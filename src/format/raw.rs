//! The `raw` format for Kinesis records: the record's bytes (base64) and partition key with its
//! source identity, one JSON object per record. A line-based sink writes it as it is; a Kinesis
//! sink puts `data` again under the same `partitionKey`.

use super::json::{write_base64, write_str};
use super::lambda::write_epoch_seconds;
use crate::source::record::KinesisRecord;

pub(super) fn encode(record: &KinesisRecord, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"stream\":");
    write_str(out, &record.source.stream_arn);
    out.extend_from_slice(b",\"shard\":");
    write_str(out, &record.source.shard_id);
    out.extend_from_slice(b",\"sequenceNumber\":\"");
    // Validated decimal digits: nothing to escape.
    out.extend_from_slice(record.source.sequence_number.as_str().as_bytes());
    out.extend_from_slice(b"\",\"partitionKey\":");
    write_str(out, &record.partition_key);
    // Always present: null when the source did not say when the record arrived.
    out.extend_from_slice(b",\"approximateArrivalTimestamp\":");
    match record.approximate_arrival_millis {
        Some(millis) => write_epoch_seconds(out, millis),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"data\":");
    write_base64(out, &record.data);
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

    fn raw(record: &KinesisRecord) -> Value {
        let mut out = Vec::new();
        encode(record, &mut out);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn fields_in_order_with_the_source_identity() {
        let record = aws_doc_kinesis();
        let out = raw(&record);
        assert_eq!(
            keys(&out),
            [
                "stream",
                "shard",
                "sequenceNumber",
                "partitionKey",
                "approximateArrivalTimestamp",
                "data"
            ]
        );
        assert_eq!(out["stream"], json!(record.source.stream_arn));
        assert_eq!(out["shard"], json!(record.source.shard_id));
        assert_eq!(
            out["sequenceNumber"],
            json!(record.source.sequence_number.as_str())
        );
        assert_eq!(out["data"], json!("SGVsbG8sIHRoaXMgaXMgYSB0ZXN0Lg=="));
    }

    #[test]
    fn arrival_time_is_epoch_seconds_or_null() {
        let mut record = aws_doc_kinesis();
        let text = |r: &KinesisRecord| {
            let mut out = Vec::new();
            encode(r, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert!(text(&record).contains(r#""approximateArrivalTimestamp":1545084650.987,"#));
        record.approximate_arrival_millis = Some(1_545_084_650_000);
        assert!(text(&record).contains(r#""approximateArrivalTimestamp":1545084650,"#));
        record.approximate_arrival_millis = None;
        assert_eq!(raw(&record)["approximateArrivalTimestamp"], Value::Null);
    }

    proptest! {
        /// Whatever the bytes and the key, the output is JSON that gives them back exactly.
        #[test]
        fn data_and_partition_key_round_trip(
            data in prop::collection::vec(any::<u8>(), 0..64),
            key in arb_text(),
        ) {
            let mut record = aws_doc_kinesis();
            record.data = data;
            record.partition_key = key;
            let out = raw(&record);
            prop_assert_eq!(
                STANDARD.decode(out["data"].as_str().unwrap()).unwrap(),
                record.data
            );
            prop_assert_eq!(out["partitionKey"].as_str().unwrap(), record.partition_key);
        }
    }
}
