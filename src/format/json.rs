//! Minimal JSON writing primitives shared by the formats.
//!
//! The formats write JSON by hand instead of building a `serde_json::Value`: field order is then
//! fixed by the code (not by a map type), DynamoDB number text is copied verbatim instead of being
//! re-rendered, and no intermediate tree is allocated per record. String escaping matches
//! `serde_json` byte for byte (checked by a property test below).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `s` as a quoted JSON string.
pub(super) fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        // Multi-byte UTF-8 sequences only contain bytes >= 0x80, so a byte-wise scan is safe.
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Writes `bytes` as a quoted string of standard, padded base64 (what DynamoDB's JSON uses).
pub(super) fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    let start = out.len();
    // base64 output is 4 bytes per started 3-byte group; encode straight into `out`.
    out.resize(start + bytes.len().div_ceil(3) * 4, 0);
    let written = STANDARD
        .encode_slice(bytes, &mut out[start..])
        .expect("buffer sized for padded base64");
    out.truncate(start + written);
    out.push(b'"');
}

pub(super) fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

pub(super) fn write_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    write_u64(out, n.unsigned_abs());
}

/// Writes `n` zero-padded to `width` digits (`n` must fit).
pub(super) fn write_padded(out: &mut Vec<u8>, n: u32, width: u32) {
    let mut place = 10u32.pow(width - 1);
    while place > 0 {
        out.push(b'0' + ((n / place) % 10) as u8);
        place /= 10;
    }
}

/// Whether `s` is a number in JSON's grammar (RFC 8259 §6): `-? int frac? exp?`.
///
/// DynamoDB's number text is copied into the output only when this holds, so the output is
/// always valid JSON while keeping every digit the table stored.
pub(super) fn is_json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    if b.first() == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::test_support::arb_text;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn str_json(s: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_quotes_backslashes_and_control_characters() {
        assert_eq!(str_json(""), r#""""#);
        assert_eq!(str_json("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(str_json("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(str_json("\u{0}\u{1f}"), r#""\u0000\u001f""#);
        // Non-ASCII and DEL are valid unescaped in JSON and are left as they are.
        assert_eq!(str_json("é✓\u{7f}"), "\"é✓\u{7f}\"");
    }

    #[test]
    fn base64_is_standard_and_padded() {
        let b64 = |b: &[u8]| {
            let mut out = Vec::new();
            write_base64(&mut out, b);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(b64(b""), r#""""#);
        assert_eq!(b64(b"f"), r#""Zg==""#);
        assert_eq!(b64(b"fo"), r#""Zm8=""#);
        assert_eq!(b64(b"foo"), r#""Zm9v""#);
        // The standard alphabet uses '+' and '/', not the URL-safe '-' and '_'.
        assert_eq!(b64(&[0xfb, 0xff]), r#""+/8=""#);
        assert_eq!(b64(&[0x00, 0x01, 0xfe, 0xff]), r#""AAH+/w==""#);
    }

    #[test]
    fn integers() {
        let int = |n: i64| {
            let mut out = Vec::new();
            write_i64(&mut out, n);
            String::from_utf8(out).unwrap()
        };
        for n in [0, 7, -7, 1_000, i64::MAX, i64::MIN] {
            assert_eq!(int(n), n.to_string());
        }
        let mut out = Vec::new();
        write_padded(&mut out, 7, 3);
        write_padded(&mut out, 2026, 4);
        assert_eq!(out, b"0072026");
    }

    #[test]
    fn number_grammar() {
        for ok in [
            "0",
            "-0",
            "7",
            "-273.15",
            "1E+5",
            "1e-7",
            "0.0e0",
            "12345678901234567890123456789012345678",
        ] {
            assert!(is_json_number(ok), "{ok}");
        }
        for bad in [
            "", "-", "007", ".5", "5.", "+1", " 1", "1 ", "1e", "1e+", "NaN", "Infinity", "0x10",
            "1_000",
        ] {
            assert!(!is_json_number(bad), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn string_escaping_matches_serde_json(s in arb_text()) {
            prop_assert_eq!(str_json(&s), serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn number_grammar_matches_serde_json(s in "[-+0-9.eE ]{0,10}") {
            prop_assert_eq!(is_json_number(&s), serde_json::Number::from_str(&s).is_ok());
        }
    }
}
