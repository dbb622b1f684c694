//! Sequence numbers of DynamoDB Streams and Kinesis shards.
//!
//! They are decimal strings of varying length (up to 40 digits in DynamoDB Streams, 56 in
//! Kinesis). Order is numeric order: compare by length, then lexically. Never parse them into a
//! float or a fixed-width integer: both lose digits.

use std::cmp::Ordering;
use std::fmt;

/// A validated decimal sequence number without leading zeros (except "0" itself).
///
/// A record of a table snapshot (`source::snapshot`) numbers its place in its Scan segment and
/// carries, beside the number, where the Scan resumes after it (`resume`): that travels with
/// the checkpoint (`<digits>~<resume>`), so a crash resumes the segment where it was. Order,
/// equality and hashing look at the number only.
#[derive(Clone, Debug)]
pub struct SequenceNumber(String, Option<std::sync::Arc<str>>);

impl PartialEq for SequenceNumber {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for SequenceNumber {}

impl std::hash::Hash for SequenceNumber {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

/// Separates a sequence number from its resume position in a checkpoint's text.
pub const RESUME_SEPARATOR: char = '~';

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid sequence number {0:?}: expected a non-empty string of decimal digits")]
pub struct InvalidSequenceNumber(pub String);

impl SequenceNumber {
    pub fn parse(s: &str) -> Result<Self, InvalidSequenceNumber> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidSequenceNumber(s.to_string()));
        }
        // Normalise leading zeros so that the length-then-lexical order is numeric order.
        let trimmed = s.trim_start_matches('0');
        let canonical = if trimmed.is_empty() { "0" } else { trimmed };
        Ok(SequenceNumber(canonical.to_string(), None))
    }

    /// A number with where to resume after it (URL-safe base64: no separator, no spaces).
    pub fn with_resume(n: u64, resume: &str) -> Self {
        SequenceNumber(n.to_string(), Some(resume.into()))
    }

    /// Parses `<digits>` or `<digits>~<resume>` (a checkpoint's text).
    pub fn parse_with_resume(s: &str) -> Result<Self, InvalidSequenceNumber> {
        match s.split_once(RESUME_SEPARATOR) {
            Some((digits, resume)) if !resume.is_empty() => {
                let mut n = SequenceNumber::parse(digits)?;
                n.1 = Some(resume.into());
                Ok(n)
            }
            Some(_) => Err(InvalidSequenceNumber(s.to_string())),
            None => SequenceNumber::parse(s),
        }
    }

    /// Where a snapshot segment's Scan resumes after this record, if it is one.
    pub fn resume(&self) -> Option<&str> {
        self.1.as_deref()
    }

    /// The number as a u64, when it fits (a snapshot segment's ordinal always does).
    pub fn as_u64(&self) -> Option<u64> {
        self.0.parse().ok()
    }

    /// The text a checkpoint stores: the number, and its resume position when it has one.
    pub fn checkpoint_text(&self) -> String {
        match &self.1 {
            Some(r) => format!("{}{RESUME_SEPARATOR}{r}", self.0),
            None => self.0.clone(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Zero-padded to `width` digits, so that lexical order of the padded strings is numeric
    /// order (object keys, file names). Numbers longer than `width` are returned unpadded.
    pub fn padded(&self, width: usize) -> String {
        format!("{:0>width$}", self.0, width = width)
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seq(s: &str) -> SequenceNumber {
        SequenceNumber::parse(s).unwrap()
    }

    #[test]
    fn shorter_is_smaller_whatever_the_digits() {
        assert!(seq("999") < seq("1000"));
        assert!(seq("49590338271490256608559692538361571095921575989136588898") > seq("9"));
    }

    #[test]
    fn leading_zeros_do_not_change_the_value() {
        assert_eq!(seq("000123"), seq("123"));
        assert_eq!(seq("0000"), seq("0"));
        assert_eq!(seq("42").padded(6), "000042");
    }

    #[test]
    fn rejects_non_digits() {
        assert!(SequenceNumber::parse("").is_err());
        assert!(SequenceNumber::parse("12a").is_err());
        assert!(SequenceNumber::parse("-1").is_err());
        assert!(SequenceNumber::parse("1.5").is_err());
    }

    #[test]
    fn a_resume_position_rides_along_without_changing_order_or_equality() {
        let a = SequenceNumber::with_resume(17, "eyJpZCI6MX0");
        assert_eq!(a, seq("17"));
        assert!(a < seq("18") && a > seq("9"));
        assert_eq!(a.checkpoint_text(), "17~eyJpZCI6MX0");
        let back = SequenceNumber::parse_with_resume("17~eyJpZCI6MX0").unwrap();
        assert_eq!(back.resume(), Some("eyJpZCI6MX0"));
        assert_eq!(
            back.to_string(),
            "17",
            "Display is the number only (object keys, intents)"
        );
        assert_eq!(
            SequenceNumber::parse_with_resume("42").unwrap().resume(),
            None
        );
        assert!(SequenceNumber::parse_with_resume("42~").is_err());
        assert!(SequenceNumber::parse_with_resume("x~abc").is_err());
    }

    proptest! {
        #[test]
        fn order_matches_u128_order(a in any::<u128>(), b in any::<u128>()) {
            prop_assert_eq!(seq(&a.to_string()).cmp(&seq(&b.to_string())), a.cmp(&b));
        }

        #[test]
        fn order_matches_padded_lexical_order(a in "[0-9]{1,56}", b in "[0-9]{1,56}") {
            let (x, y) = (seq(&a), seq(&b));
            prop_assert_eq!(x.cmp(&y), x.padded(56).cmp(&y.padded(56)));
        }
    }
}
