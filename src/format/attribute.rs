//! JSON forms of DynamoDB attribute values: the typed form DynamoDB itself uses
//! (`{"N":"12.5"}`), and the plain form ordinary JSON consumers want (`12.5`).

use super::json::{is_json_number, write_base64, write_str};
use crate::source::record::{AttributeValue, Item};

/// Writes `value` in DynamoDB's typed JSON, e.g. `{"S":"x"}`, `{"N":"12.5"}`, `{"NULL":true}`.
pub(super) fn write_typed(out: &mut Vec<u8>, value: &AttributeValue) {
    match value {
        AttributeValue::S(s) => {
            out.extend_from_slice(b"{\"S\":");
            write_str(out, s);
        }
        // Numbers stay strings in the typed form, exactly as DynamoDB sends them.
        AttributeValue::N(n) => {
            out.extend_from_slice(b"{\"N\":");
            write_str(out, n);
        }
        AttributeValue::B(b) => {
            out.extend_from_slice(b"{\"B\":");
            write_base64(out, b);
        }
        AttributeValue::Ss(items) => {
            out.extend_from_slice(b"{\"SS\":");
            write_array(out, items, |out, s| write_str(out, s));
        }
        AttributeValue::Ns(items) => {
            out.extend_from_slice(b"{\"NS\":");
            write_array(out, items, |out, n| write_str(out, n));
        }
        AttributeValue::Bs(items) => {
            out.extend_from_slice(b"{\"BS\":");
            write_array(out, items, |out, b| write_base64(out, b));
        }
        AttributeValue::M(item) => {
            out.extend_from_slice(b"{\"M\":");
            write_typed_item(out, item);
        }
        AttributeValue::L(items) => {
            out.extend_from_slice(b"{\"L\":");
            write_array(out, items, write_typed);
        }
        AttributeValue::Null(b) => {
            out.extend_from_slice(b"{\"NULL\":");
            write_bool(out, *b);
        }
        AttributeValue::Bool(b) => {
            out.extend_from_slice(b"{\"BOOL\":");
            write_bool(out, *b);
        }
    }
    out.push(b'}');
}

/// Writes an item as a JSON object of typed values, in the item's (sorted) key order.
pub(super) fn write_typed_item(out: &mut Vec<u8>, item: &Item) {
    write_object(out, item, write_typed);
}

/// Writes `value` unmarshalled to ordinary JSON: strings, numbers, booleans, null, arrays,
/// objects; binary as base64 strings.
pub(super) fn write_plain(out: &mut Vec<u8>, value: &AttributeValue) {
    match value {
        AttributeValue::S(s) => write_str(out, s),
        AttributeValue::N(n) => write_plain_number(out, n),
        AttributeValue::B(b) => write_base64(out, b),
        AttributeValue::Ss(items) => write_array(out, items, |out, s| write_str(out, s)),
        AttributeValue::Ns(items) => write_array(out, items, |out, n| write_plain_number(out, n)),
        AttributeValue::Bs(items) => write_array(out, items, |out, b| write_base64(out, b)),
        AttributeValue::M(item) => write_plain_item(out, item),
        AttributeValue::L(items) => write_array(out, items, write_plain),
        AttributeValue::Null(_) => out.extend_from_slice(b"null"),
        AttributeValue::Bool(b) => write_bool(out, *b),
    }
}

/// Writes an item as a JSON object of plain values, in the item's (sorted) key order.
pub(super) fn write_plain_item(out: &mut Vec<u8>, item: &Item) {
    write_object(out, item, write_plain);
}

/// A DynamoDB number as a JSON number with its text copied verbatim: DynamoDB numbers carry up
/// to 38 significant digits, which a round trip through f64 would lose. Text that is not JSON
/// number syntax (DynamoDB accepts e.g. a leading `+` or `.5`) becomes a string rather than
/// invalid JSON.
fn write_plain_number(out: &mut Vec<u8>, n: &str) {
    if is_json_number(n) {
        out.extend_from_slice(n.as_bytes());
    } else {
        write_str(out, n);
    }
}

fn write_bool(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

fn write_array<T>(out: &mut Vec<u8>, items: &[T], mut write: impl FnMut(&mut Vec<u8>, &T)) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(out, item);
    }
    out.push(b']');
}

fn write_object(
    out: &mut Vec<u8>,
    item: &Item,
    mut write: impl FnMut(&mut Vec<u8>, &AttributeValue),
) {
    out.push(b'{');
    for (i, (name, value)) in item.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, name);
        out.push(b':');
        write(out, value);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::test_support::{all_types_item, arb_attribute, parse_typed, plain_value};
    use proptest::prelude::*;
    use serde_json::{json, Value};
    use AttributeValue as A;

    fn typed(v: &AttributeValue) -> String {
        let mut out = Vec::new();
        write_typed(&mut out, v);
        String::from_utf8(out).unwrap()
    }

    fn plain(v: &AttributeValue) -> String {
        let mut out = Vec::new();
        write_plain(&mut out, v);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn typed_json_of_every_type() {
        let cases: [(AttributeValue, &str); 12] = [
            (A::S("x".into()), r#"{"S":"x"}"#),
            (A::N("12.5".into()), r#"{"N":"12.5"}"#),
            (A::B(vec![0xde, 0xad, 0xbe, 0xef]), r#"{"B":"3q2+7w=="}"#),
            (A::Ss(vec!["a".into(), "b".into()]), r#"{"SS":["a","b"]}"#),
            (A::Ns(vec!["1".into(), "2".into()]), r#"{"NS":["1","2"]}"#),
            (
                A::Bs(vec![b"hello".to_vec(), vec![0xfb, 0xff]]),
                r#"{"BS":["aGVsbG8=","+/8="]}"#,
            ),
            (A::M(Item::new()), r#"{"M":{}}"#),
            (
                A::M(Item::from([
                    ("b".into(), A::N("1".into())),
                    ("a".into(), A::S("2".into())),
                ])),
                r#"{"M":{"a":{"S":"2"},"b":{"N":"1"}}}"#,
            ),
            (A::L(vec![]), r#"{"L":[]}"#),
            (
                A::L(vec![A::Bool(true), A::L(vec![A::Null(true)])]),
                r#"{"L":[{"BOOL":true},{"L":[{"NULL":true}]}]}"#,
            ),
            (A::Null(true), r#"{"NULL":true}"#),
            (A::Bool(false), r#"{"BOOL":false}"#),
        ];
        for (value, expected) in cases {
            assert_eq!(typed(&value), expected, "{value:?}");
        }
    }

    #[test]
    fn plain_json_of_every_type() {
        let cases: [(AttributeValue, &str); 11] = [
            (A::S("x\"y".into()), r#""x\"y""#),
            (A::N("-12.5".into()), "-12.5"),
            (A::B(vec![0xde, 0xad, 0xbe, 0xef]), r#""3q2+7w==""#),
            (A::Ss(vec!["a".into(), "b".into()]), r#"["a","b"]"#),
            (A::Ns(vec!["1".into(), "2.50".into()]), "[1,2.50]"),
            (
                A::Bs(vec![b"hello".to_vec(), vec![0xfb, 0xff]]),
                r#"["aGVsbG8=","+/8="]"#,
            ),
            (
                A::M(Item::from([
                    ("b".into(), A::N("1".into())),
                    ("a".into(), A::Null(true)),
                ])),
                r#"{"a":null,"b":1}"#,
            ),
            (
                A::L(vec![A::Bool(true), A::L(vec![]), A::M(Item::new())]),
                "[true,[],{}]",
            ),
            (A::Null(true), "null"),
            (A::Bool(true), "true"),
            (A::Bool(false), "false"),
        ];
        for (value, expected) in cases {
            assert_eq!(plain(&value), expected, "{value:?}");
        }
    }

    #[test]
    fn plain_numbers_keep_every_digit() {
        let big = "12345678901234567890123456789012345678";
        assert_eq!(plain(&A::N(big.into())), big);
        // f64 would print this as 1.2345678901234568e37.
        let parsed: Value = serde_json::from_str(&plain(&A::N(big.into()))).unwrap();
        assert_eq!(parsed.to_string(), big);

        let tiny = "-0.00000000000000000000000000000000000001";
        assert_eq!(plain(&A::N(tiny.into())), tiny);
        assert_eq!(
            plain(&A::N("123.4500000000000000000001".into())),
            "123.4500000000000000000001"
        );
        // Exponent text is copied as DynamoDB sent it, not normalised.
        assert_eq!(plain(&A::N("1E+5".into())), "1E+5");
        assert_eq!(plain(&A::N("2.50".into())), "2.50");
        assert_eq!(
            plain(&A::Ns(vec![big.into(), "1E+5".into()])),
            format!("[{big},1E+5]")
        );
    }

    #[test]
    fn plain_number_text_that_is_not_json_becomes_a_string() {
        for text in ["+1", ".5", "5.", "007", "NaN", " 1"] {
            let out = plain(&A::N(text.into()));
            assert_eq!(
                serde_json::from_str::<Value>(&out).unwrap(),
                json!(text),
                "{text:?}"
            );
        }
        assert_eq!(plain(&A::Ns(vec!["1".into(), "+2".into()])), r#"[1,"+2"]"#);
    }

    #[test]
    fn items_follow_the_sorted_key_order() {
        let item = all_types_item();
        let text = {
            let mut out = Vec::new();
            write_plain_item(&mut out, &item);
            String::from_utf8(out).unwrap()
        };
        let parsed: Value = serde_json::from_str(&text).unwrap();
        let keys: Vec<&String> = parsed.as_object().unwrap().keys().collect();
        let expected: Vec<&String> = item.keys().collect();
        assert_eq!(keys, expected);
    }

    proptest! {
        #[test]
        fn typed_json_parses_back_to_the_same_value(value in arb_attribute()) {
            let text = typed(&value);
            let parsed: Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(parse_typed(&parsed).unwrap(), value);
        }

        #[test]
        fn plain_json_is_valid_and_unmarshals_each_type(value in arb_attribute()) {
            let parsed: Value = serde_json::from_str(&plain(&value)).unwrap();
            prop_assert_eq!(parsed, plain_value(&value));
        }
    }
}
