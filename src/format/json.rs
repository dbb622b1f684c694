//! JSON writing primitives shared by the formats.
//!
//! The formats write JSON straight into the output buffer instead of building a
//! `serde_json::Value`: field order is then fixed by the code (not by a map type), DynamoDB
//! number text is copied verbatim instead of being re-rendered, and no intermediate tree is
//! allocated per record. Escaping and number syntax are serde_json's.

use std::io::Write as _;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// Writes `s` as a quoted JSON string.
pub(super) fn write_str(out: &mut Vec<u8>, s: &str) {
    // Most text needs no escape: copied whole after a check of 8 bytes at a time (serde_json
    // looks at each byte as it writes it; on a drained stream that was 5 % of the CPU).
    if needs_escape(s.as_bytes()) {
        serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// Whether JSON needs any byte of `s` escaped: the control characters below 0x20, `"` and `\`
/// (exactly what serde_json escapes).
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Some byte of x is below n (n <= 0x80); exact for whether one is.
    let has_below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS != 0;
    let has_byte = |x: u64, b: u8| has_below(x ^ (ONES * u64::from(b)), 1);
    let mut chunks = s.chunks_exact(8);
    for chunk in &mut chunks {
        let x = u64::from_ne_bytes(chunk.try_into().expect("8 bytes"));
        if has_below(x, 0x20) || has_byte(x, b'"') || has_byte(x, b'\\') {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// Writes `bytes` as a quoted string of standard, padded base64 (what DynamoDB's JSON uses).
pub(super) fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    let start = out.len();
    // Encode straight into `out`: 4 bytes per started 3-byte group.
    out.resize(start + bytes.len().div_ceil(3) * 4, 0);
    let written = STANDARD
        .encode_slice(bytes, &mut out[start..])
        .expect("buffer sized for padded base64");
    out.truncate(start + written);
    out.push(b'"');
}

pub(super) fn write_u64(out: &mut Vec<u8>, n: u64) {
    write!(out, "{n}").expect("writing to a Vec cannot fail");
}

pub(super) fn write_i64(out: &mut Vec<u8>, n: i64) {
    write!(out, "{n}").expect("writing to a Vec cannot fail");
}

/// Writes `n` zero-padded to `width` digits.
pub(super) fn write_padded(out: &mut Vec<u8>, n: u32, width: u32) {
    write!(out, "{n:0width$}", width = width as usize).expect("writing to a Vec cannot fail");
}

/// Whether `s` is a number in JSON's grammar (RFC 8259 §6): DynamoDB's number text is copied
/// into the output only when this holds, so the output is always valid JSON while keeping every
/// digit the table stored.
pub(super) fn is_json_number(s: &str) -> bool {
    serde_json::Number::from_str(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn text_is_escaped_exactly_as_serde_json_escapes_it() {
        // Every byte that matters at every position of a word, and in the tail after it.
        for len in 0..20 {
            for at in 0..len {
                for c in (0u8..0x80).map(char::from).chain(['é', '\u{7f}', '✓']) {
                    let mut text: String = "a".repeat(len);
                    text.replace_range(at..at + 1, c.encode_utf8(&mut [0; 4]));
                    assert_eq!(str_json(&text), serde_json::to_string(&text).unwrap());
                }
            }
        }
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
}
