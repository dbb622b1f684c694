//! The `kinesis-ddb` format: the record DynamoDB's own "Kinesis Data Streams for DynamoDB"
//! feature writes, so consumers built for that feature can read this bridge's output.

use super::attribute::write_typed_item;
use super::json::{write_i64, write_str};
use super::lambda::write_user_identity;
use crate::source::record::ChangeRecord;

pub(super) fn encode(record: &ChangeRecord, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"awsRegion\":");
    write_str(out, &record.aws_region);
    out.extend_from_slice(b",\"eventID\":");
    write_str(out, &record.event_id);
    out.extend_from_slice(b",\"eventName\":\"");
    out.extend_from_slice(record.operation.event_name().as_bytes());
    // This format always has the field: null unless DynamoDB set an identity (TTL deletes).
    out.extend_from_slice(b"\",\"userIdentity\":");
    match &record.user_identity {
        Some(identity) => write_user_identity(out, identity),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"recordFormat\":\"application/json\",\"tableName\":");
    write_str(out, &record.table_name);

    out.extend_from_slice(b",\"dynamodb\":{");
    if let Some(millis) = record.approximate_creation_millis {
        // Milliseconds here, unlike the seconds of the Lambda record.
        out.extend_from_slice(b"\"ApproximateCreationDateTime\":");
        write_i64(out, millis);
        out.push(b',');
    }
    out.extend_from_slice(b"\"Keys\":");
    write_typed_item(out, &record.keys);
    if let Some(image) = &record.new_image {
        out.extend_from_slice(b",\"NewImage\":");
        write_typed_item(out, image);
    }
    if let Some(image) = &record.old_image {
        out.extend_from_slice(b",\"OldImage\":");
        write_typed_item(out, image);
    }
    out.extend_from_slice(b",\"SizeBytes\":");
    write_i64(out, record.size_bytes);
    out.extend_from_slice(b"},\"eventSource\":\"");
    out.extend_from_slice(record.operation.event_source().as_bytes());
    out.extend_from_slice(b"\"}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::test_support::*;
    use crate::source::record::StreamViewType;
    use serde_json::{json, Value};

    fn kinesis(record: &ChangeRecord) -> Value {
        let mut out = Vec::new();
        encode(record, &mut out);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn user_identity_is_null_unless_set() {
        let plain_modify = kinesis(&modify_all_types());
        assert_eq!(plain_modify.get("userIdentity"), Some(&Value::Null));

        let ttl = kinesis(&ttl_remove());
        assert_eq!(
            ttl["userIdentity"],
            json!({"type": "Service", "principalId": "dynamodb.amazonaws.com"})
        );
    }

    #[test]
    fn creation_time_is_epoch_millis() {
        let out = kinesis(&modify_all_types());
        assert_eq!(
            out["dynamodb"]["ApproximateCreationDateTime"],
            json!(1_795_490_670_123_i64)
        );
        let none = kinesis(&modify_with_view(StreamViewType::KeysOnly));
        assert!(none["dynamodb"]
            .get("ApproximateCreationDateTime")
            .is_none());
    }

    #[test]
    fn stream_position_fields_are_not_part_of_this_format() {
        // The identity here is eventID; DynamoDB's Kinesis records have no sequence number or
        // view type of the DynamoDB stream.
        let out = kinesis(&modify_all_types());
        assert_eq!(out["eventID"], json!("7f1c3b2a9e8d4c6b5a4f3e2d1c0b9a88"));
        assert_eq!(
            keys(&out["dynamodb"]),
            [
                "ApproximateCreationDateTime",
                "Keys",
                "NewImage",
                "OldImage",
                "SizeBytes"
            ]
        );
        assert!(out.get("eventSourceARN").is_none());
        assert!(out.get("eventVersion").is_none());
    }

    #[test]
    fn omitted_images_are_absent() {
        let out = kinesis(&modify_with_view(StreamViewType::KeysOnly));
        assert_eq!(keys(&out["dynamodb"]), ["Keys", "SizeBytes"]);
    }
}
