//! The `lambda` format: one element of the `Records` array that an AWS Lambda function receives
//! from a DynamoDB stream, so existing Lambda handlers can consume the output unchanged.

use super::attribute::write_typed_item;
use super::json::{write_i64, write_padded, write_str, write_u64};
use crate::source::record::{ChangeRecord, UserIdentity};

pub(super) fn encode(record: &ChangeRecord, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"eventID\":");
    write_str(out, &record.event_id);
    out.extend_from_slice(b",\"eventName\":\"");
    out.extend_from_slice(record.operation.event_name().as_bytes());
    out.extend_from_slice(b"\",\"eventVersion\":");
    write_str(out, &record.event_version);
    out.extend_from_slice(b",\"eventSource\":\"");
    out.extend_from_slice(record.operation.event_source().as_bytes());
    out.extend_from_slice(b"\",\"awsRegion\":");
    write_str(out, &record.aws_region);

    out.extend_from_slice(b",\"dynamodb\":{");
    if let Some(millis) = record.approximate_creation_millis {
        out.extend_from_slice(b"\"ApproximateCreationDateTime\":");
        write_epoch_seconds(out, millis);
        out.push(b',');
    }
    out.extend_from_slice(b"\"Keys\":");
    write_typed_item(out, &record.keys);
    // Images are written only when the record has them (the stream's view type decides), and
    // then absent rather than null, as Lambda delivers them.
    if let Some(image) = &record.new_image {
        out.extend_from_slice(b",\"NewImage\":");
        write_typed_item(out, image);
    }
    if let Some(image) = &record.old_image {
        out.extend_from_slice(b",\"OldImage\":");
        write_typed_item(out, image);
    }
    out.extend_from_slice(b",\"SequenceNumber\":\"");
    // Validated decimal digits: nothing to escape.
    out.extend_from_slice(record.source.sequence_number.as_str().as_bytes());
    out.extend_from_slice(b"\",\"SizeBytes\":");
    write_i64(out, record.size_bytes);
    out.extend_from_slice(b",\"StreamViewType\":\"");
    out.extend_from_slice(record.view_type.as_str().as_bytes());
    out.extend_from_slice(b"\"}");

    out.extend_from_slice(b",\"eventSourceARN\":");
    write_str(out, &record.source.stream_arn);
    if let Some(identity) = &record.user_identity {
        out.extend_from_slice(b",\"userIdentity\":");
        write_user_identity(out, identity);
    }
    out.push(b'}');
}

/// `{"type":"Service","principalId":"dynamodb.amazonaws.com"}` for deletes by Time To Live.
pub(super) fn write_user_identity(out: &mut Vec<u8>, identity: &UserIdentity) {
    out.extend_from_slice(b"{\"type\":");
    write_str(out, &identity.kind);
    out.extend_from_slice(b",\"principalId\":");
    write_str(out, &identity.principal_id);
    out.push(b'}');
}

/// Epoch seconds as Lambda shows them: an integer for a whole second, else a decimal with the
/// milliseconds and no trailing zeros (`1479499740.12`). Exact decimal arithmetic, no float.
pub(super) fn write_epoch_seconds(out: &mut Vec<u8>, millis: i64) {
    if millis < 0 {
        out.push(b'-');
    }
    let abs = millis.unsigned_abs();
    write_u64(out, abs / 1000);
    let mut frac = (abs % 1000) as u32;
    if frac != 0 {
        out.push(b'.');
        let mut width = 3;
        while frac % 10 == 0 {
            frac /= 10;
            width -= 1;
        }
        write_padded(out, frac, width);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::test_support::*;
    use crate::source::record::StreamViewType;
    use aws_smithy_types::date_time::Format;
    use aws_smithy_types::DateTime;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn lambda(record: &ChangeRecord) -> Value {
        let mut out = Vec::new();
        encode(record, &mut out);
        serde_json::from_slice(&out).unwrap()
    }

    fn seconds(millis: i64) -> String {
        let mut out = Vec::new();
        write_epoch_seconds(&mut out, millis);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn creation_time_is_epoch_seconds() {
        assert_eq!(seconds(1_479_499_740_000), "1479499740");
        assert_eq!(seconds(1_479_499_740_123), "1479499740.123");
        assert_eq!(seconds(1_479_499_740_120), "1479499740.12");
        assert_eq!(seconds(1_479_499_740_001), "1479499740.001");
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(-1_500), "-1.5");
        assert_eq!(seconds(-5), "-0.005");
        assert_eq!(seconds(i64::MIN), "-9223372036854775.808");

        let mut record = modify_all_types();
        record.approximate_creation_millis = Some(1_479_499_740_000);
        // A JSON integer, not a string and not 1479499740.0.
        assert_eq!(
            lambda(&record)["dynamodb"]["ApproximateCreationDateTime"],
            json!(1479499740)
        );
        record.approximate_creation_millis = None;
        assert!(lambda(&record)["dynamodb"]
            .get("ApproximateCreationDateTime")
            .is_none());
    }

    #[test]
    fn omitted_images_are_absent_not_null() {
        let keys_only = lambda(&modify_with_view(StreamViewType::KeysOnly));
        assert_eq!(
            keys(&keys_only["dynamodb"]),
            ["Keys", "SequenceNumber", "SizeBytes", "StreamViewType"]
        );

        let new_only = lambda(&modify_with_view(StreamViewType::NewImage));
        assert!(new_only["dynamodb"].get("NewImage").is_some());
        assert!(new_only["dynamodb"].get("OldImage").is_none());

        let old_only = lambda(&modify_with_view(StreamViewType::OldImage));
        assert!(old_only["dynamodb"].get("NewImage").is_none());
        assert!(old_only["dynamodb"].get("OldImage").is_some());

        let insert = lambda(&aws_doc_insert());
        assert!(insert["dynamodb"].get("OldImage").is_none());
    }

    #[test]
    fn ttl_user_identity_only_when_set() {
        let ttl = lambda(&ttl_remove());
        assert_eq!(
            ttl["userIdentity"],
            json!({"type": "Service", "principalId": "dynamodb.amazonaws.com"})
        );
        assert_eq!(keys(&ttl["userIdentity"]), ["type", "principalId"]);

        let mut user_delete = ttl_remove();
        user_delete.user_identity = None;
        assert!(lambda(&user_delete).get("userIdentity").is_none());
    }

    #[test]
    fn carries_the_source_identity() {
        let record = modify_all_types();
        let out = lambda(&record);
        assert_eq!(out["eventID"], json!(record.event_id));
        assert_eq!(out["eventSourceARN"], json!(record.source.stream_arn));
        assert_eq!(
            out["dynamodb"]["SequenceNumber"],
            json!(record.source.sequence_number.as_str())
        );
    }

    #[test]
    fn binary_is_base64() {
        let out = lambda(&modify_all_types());
        assert_eq!(out["dynamodb"]["NewImage"]["bin"], json!({"B": "AAH+/w=="}));
        assert_eq!(
            out["dynamodb"]["NewImage"]["bs"],
            json!({"BS": ["aGVsbG8=", "+/8="]})
        );
    }

    proptest! {
        #[test]
        fn epoch_seconds_match_smithy(millis in any::<i64>()) {
            let expected = DateTime::from_millis(millis).fmt(Format::EpochSeconds).unwrap();
            prop_assert_eq!(seconds(millis), expected);
        }

        /// Whatever the attribute trees, the typed JSON Lambda receives decodes back to them.
        #[test]
        fn typed_images_parse_back_to_the_same_items(
            keys in arb_item(),
            new in prop::option::of(arb_item()),
            old in prop::option::of(arb_item()),
        ) {
            let mut record = modify_all_types();
            record.keys = keys;
            record.new_image = new;
            record.old_image = old;
            let out = lambda(&record);
            let dynamodb = &out["dynamodb"];
            prop_assert_eq!(parse_typed_item(&dynamodb["Keys"]).unwrap(), record.keys);
            let image = |name: &str| dynamodb.get(name).map(|v| parse_typed_item(v).unwrap());
            prop_assert_eq!(image("NewImage"), record.new_image);
            prop_assert_eq!(image("OldImage"), record.old_image);
        }
    }
}
