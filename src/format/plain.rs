//! The `plain` format: the change with values unmarshalled to ordinary JSON, for consumers that
//! know nothing of DynamoDB's typed attribute JSON.

use super::attribute::write_plain_item;
use std::io::Write as _;

use aws_smithy_types::date_time::{DateTime, Format};

use super::json::write_str;
use crate::source::record::{ChangeRecord, Item, OperationType};

pub(super) fn encode(record: &ChangeRecord, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"op\":\"");
    out.extend_from_slice(match record.operation {
        OperationType::Insert => b"insert",
        OperationType::Modify => b"modify",
        OperationType::Remove => b"remove",
        OperationType::Snapshot => b"snapshot",
    });
    out.extend_from_slice(b"\",\"table\":");
    write_str(out, &record.table_name);
    out.extend_from_slice(b",\"stream\":");
    write_str(out, &record.source.stream_arn);
    out.extend_from_slice(b",\"shard\":");
    write_str(out, &record.source.shard_id);
    // A string: sequence numbers have up to 40 digits, more than JSON consumers keep in numbers.
    out.extend_from_slice(b",\"seq\":\"");
    out.extend_from_slice(record.source.sequence_number.as_str().as_bytes());
    out.extend_from_slice(b"\",\"ts\":");
    if !record
        .approximate_creation_millis
        .is_some_and(|millis| write_rfc3339_millis(out, millis))
    {
        out.extend_from_slice(b"null");
    }
    out.extend_from_slice(b",\"keys\":");
    write_plain_item(out, &record.keys);
    out.extend_from_slice(b",\"new\":");
    write_image(out, record.new_image.as_ref());
    out.extend_from_slice(b",\"old\":");
    write_image(out, record.old_image.as_ref());
    out.push(b'}');
}

fn write_image(out: &mut Vec<u8>, image: Option<&Item>) {
    match image {
        Some(item) => write_plain_item(out, item),
        None => out.extend_from_slice(b"null"),
    }
}

/// Writes `"YYYY-MM-DDTHH:MM:SS.mmmZ"` (RFC 3339, UTC) and returns true, or writes nothing and
/// returns false when the time cannot be represented (a year outside 0001-9999).
///
/// The milliseconds are always three digits (aws-smithy-types' formatter drops a zero fraction
/// and trailing zeros) so that every timestamp has the same shape and sorts as text.
fn write_rfc3339_millis(out: &mut Vec<u8>, millis: i64) -> bool {
    let Ok(text) = DateTime::from_millis(millis).fmt(Format::DateTime) else {
        return false;
    };
    let Some(body) = text.strip_suffix('Z') else {
        return false;
    };
    let (whole, fraction) = body.split_once('.').unwrap_or((body, ""));
    out.push(b'"');
    out.extend_from_slice(whole.as_bytes());
    out.push(b'.');
    write!(out, "{fraction:0<3}").expect("writing to a Vec cannot fail");
    out.extend_from_slice(b"Z\"");
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::test_support::*;
    use crate::source::record::AttributeValue;
    use aws_smithy_types::date_time::Format;
    use aws_smithy_types::DateTime;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn plain(record: &ChangeRecord) -> (String, Value) {
        let mut out = Vec::new();
        encode(record, &mut out);
        let text = String::from_utf8(out).unwrap();
        let value = serde_json::from_str(&text).unwrap();
        (text, value)
    }

    fn ts(millis: i64) -> Option<String> {
        let mut out = Vec::new();
        write_rfc3339_millis(&mut out, millis).then(|| String::from_utf8(out).unwrap())
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(
            ts(1_795_490_670_123).unwrap(),
            r#""2026-11-24T03:24:30.123Z""#
        );
        assert_eq!(
            ts(1_795_490_670_000).unwrap(),
            r#""2026-11-24T03:24:30.000Z""#
        );
        assert_eq!(ts(0).unwrap(), r#""1970-01-01T00:00:00.000Z""#);
        assert_eq!(ts(-1).unwrap(), r#""1969-12-31T23:59:59.999Z""#);
        assert_eq!(
            ts(951_782_400_000).unwrap(),
            r#""2000-02-29T00:00:00.000Z""#
        );
        assert_eq!(
            ts(4_107_542_399_999).unwrap(),
            r#""2100-02-28T23:59:59.999Z""#
        );
        assert_eq!(
            ts(4_107_542_400_000).unwrap(),
            r#""2100-03-01T00:00:00.000Z""#
        );
        assert_eq!(
            ts(-62_135_596_800_000).unwrap(),
            r#""0001-01-01T00:00:00.000Z""#
        );
        assert_eq!(
            ts(253_402_300_799_999).unwrap(),
            r#""9999-12-31T23:59:59.999Z""#
        );
        assert_eq!(ts(-62_135_596_800_001), None);
        assert_eq!(ts(253_402_300_800_000), None);
        assert_eq!(ts(i64::MIN), None);
        assert_eq!(ts(i64::MAX), None);
    }

    #[test]
    fn missing_or_unrepresentable_time_is_null() {
        let mut record = modify_all_types();
        record.approximate_creation_millis = None;
        assert_eq!(plain(&record).1["ts"], Value::Null);
        record.approximate_creation_millis = Some(i64::MAX);
        assert_eq!(plain(&record).1["ts"], Value::Null);
    }

    #[test]
    fn fields_in_order_and_missing_images_null() {
        let (_, out) = plain(&ttl_remove());
        assert_eq!(
            keys(&out),
            ["op", "table", "stream", "shard", "seq", "ts", "keys", "new", "old"]
        );
        assert_eq!(out["op"], json!("remove"));
        assert_eq!(out["new"], Value::Null);
        assert_eq!(out["old"], json!({"expires": 1479499700, "session": "s-1"}));
    }

    #[test]
    fn carries_the_source_identity() {
        let record = modify_all_types();
        let (_, out) = plain(&record);
        assert_eq!(out["stream"], json!(record.source.stream_arn));
        assert_eq!(out["shard"], json!(record.source.shard_id));
        assert_eq!(out["seq"], json!("4960000000000001234567890123456789"));
    }

    #[test]
    fn numbers_keep_their_exact_text() {
        let mut record = modify_all_types();
        let image = record.new_image.as_mut().unwrap();
        image.insert("exp".into(), AttributeValue::N("1E+5".into()));
        image.insert(
            "frac".into(),
            AttributeValue::N("123.4500000000000000000001".into()),
        );
        let (text, out) = plain(&record);
        assert!(text.contains(&format!(r#""big":{BIG_N},"#)), "{text}");
        assert!(text.contains(r#""exp":1E+5,"#), "{text}");
        assert!(
            text.contains(r#""frac":123.4500000000000000000001,"#),
            "{text}"
        );
        assert!(text.contains(r#""neg":-273.15,"#), "{text}");
        // And a JSON parser that keeps precision reads back every digit.
        assert_eq!(out["new"]["big"].to_string(), BIG_N);
    }

    #[test]
    fn binary_is_base64() {
        let (_, out) = plain(&modify_all_types());
        assert_eq!(out["new"]["bin"], json!("AAH+/w=="));
        assert_eq!(out["new"]["bs"], json!(["aGVsbG8=", "+/8="]));
    }

    proptest! {
        #[test]
        fn timestamps_agree_with_smithy(millis in -62_135_596_800_000_i64..=253_402_300_799_999) {
            let text = ts(millis).unwrap();
            let parsed = DateTime::from_str(text.trim_matches('"'), Format::DateTime).unwrap();
            prop_assert_eq!(parsed.to_millis().unwrap(), millis);
        }

        #[test]
        fn images_unmarshal_like_the_reference(
            keys in arb_item(),
            new in prop::option::of(arb_item()),
            old in prop::option::of(arb_item()),
        ) {
            let mut record = modify_all_types();
            record.keys = keys;
            record.new_image = new;
            record.old_image = old;
            let (_, out) = plain(&record);
            let reference =
                |image: &Option<Item>| image.as_ref().map_or(Value::Null, plain_item_value);
            prop_assert_eq!(&out["keys"], &plain_item_value(&record.keys));
            prop_assert_eq!(&out["new"], &reference(&record.new_image));
            prop_assert_eq!(&out["old"], &reference(&record.old_image));
        }
    }
}
