//! Partition keys for a Kinesis sink: which records share a target shard and an order.
//!
//! Order is kept per partition key, so the key must be a pure function of the record's item
//! (or of whatever the user names): one item always lands on one target shard, in order.
//! Kinesis allows 1 to 256 Unicode characters; a longer key is shortened deterministically
//! (a prefix and a digest of the whole), so the same item still always gets the same key.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::source::record::{AttributeValue, Item, SourceRecord};

/// Kinesis' limit on a partition key, in Unicode characters.
pub const MAX_CHARS: usize = 256;
/// Characters kept from a key that is too long; the rest of the limit holds `#` and a digest.
const KEPT_CHARS: usize = MAX_CHARS - 1 - 64;

/// How the Kinesis sink derives each record's partition key (`partition_key` in the config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartitionKeyRule {
    /// DynamoDB: the item's key attributes; Kinesis: the source record's own partition key.
    ItemKey,
    /// The source shard id: the source's order, one target shard per source shard.
    Shard,
    /// The named top-level attribute of the new image (else the old image, else the keys);
    /// an item without it falls back to its item key.
    Attribute(String),
    /// A random key per record: spreads load evenly, promises no order.
    Random,
}

impl PartitionKeyRule {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "item-key" => PartitionKeyRule::ItemKey,
            "shard" => PartitionKeyRule::Shard,
            "random" => PartitionKeyRule::Random,
            _ => {
                let name = s.strip_prefix("attribute:")?;
                if name.is_empty() {
                    return None;
                }
                PartitionKeyRule::Attribute(name.to_string())
            }
        })
    }

    /// Whether records with one key keep their order (all but `random`).
    pub fn keeps_order(&self) -> bool {
        !matches!(self, PartitionKeyRule::Random)
    }
}

/// The partition key of `record` under `rule`: 1..=256 characters.
pub fn derive(rule: &PartitionKeyRule, record: &SourceRecord) -> String {
    fit(key_text(rule, record))
}

/// The key of `record` under `rule` at full length (a Kafka record key has no length limit).
pub fn key_text(rule: &PartitionKeyRule, record: &SourceRecord) -> String {
    match (rule, record) {
        (PartitionKeyRule::Shard, r) => r.identity().shard_id.clone(),
        (PartitionKeyRule::Random, _) => format!("{:032x}", rand::random::<u128>()),
        (PartitionKeyRule::ItemKey, SourceRecord::DynamoDb(c)) => item_key(&c.keys),
        (PartitionKeyRule::ItemKey, SourceRecord::Kinesis(k)) => k.partition_key.clone(),
        (PartitionKeyRule::Attribute(name), SourceRecord::DynamoDb(c)) => {
            let found = [c.new_image.as_ref(), c.old_image.as_ref(), Some(&c.keys)]
                .into_iter()
                .flatten()
                .find_map(|item| item.get(name))
                .and_then(attribute_text);
            found.unwrap_or_else(|| item_key(&c.keys))
        }
        // Config validation refuses attributes for Kinesis sources; keep their order anyway.
        (PartitionKeyRule::Attribute(_), SourceRecord::Kinesis(k)) => k.partition_key.clone(),
    }
}

/// The key attributes' values in attribute-name order, joined by `|`: the hash key's value
/// alone for a table without a sort key, so keys read naturally ("order-17").
pub fn item_key(keys: &Item) -> String {
    let mut out = String::new();
    for (i, value) in keys.values().enumerate() {
        if i > 0 {
            out.push('|');
        }
        match attribute_text(value) {
            Some(text) => out.push_str(&text),
            None => out.push('?'),
        }
    }
    out
}

/// The text of a scalar attribute (key attributes are always S, N or B).
fn attribute_text(value: &AttributeValue) -> Option<String> {
    match value {
        AttributeValue::S(s) => Some(s.clone()),
        AttributeValue::N(n) => Some(n.clone()),
        AttributeValue::B(b) => Some(STANDARD.encode(b)),
        AttributeValue::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Makes any string a valid partition key: empty becomes `-`; over 256 characters becomes its
/// first 191 characters, `#` and the hex SHA-256 of the whole (stable across builds and hosts).
pub fn fit(key: String) -> String {
    if key.is_empty() {
        return "-".to_string();
    }
    if key.chars().count() <= MAX_CHARS {
        return key;
    }
    let digest = Sha256::digest(key.as_bytes());
    let mut out: String = key.chars().take(KEPT_CHARS).collect();
    out.push('#');
    for byte in digest.iter() {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::test_support::*;
    use crate::source::record::ChangeRecord;
    use proptest::prelude::*;

    fn change(
        keys: &[(&str, AttributeValue)],
        new: Option<&[(&str, AttributeValue)]>,
    ) -> SourceRecord {
        let mut record: ChangeRecord = aws_doc_insert();
        record.keys = keys
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        record.new_image = new.map(|n| n.iter().map(|(k, v)| (k.to_string(), v.clone())).collect());
        record.old_image = None;
        SourceRecord::DynamoDb(record)
    }

    #[test]
    fn rules_parse_and_reject() {
        assert_eq!(
            PartitionKeyRule::parse("item-key"),
            Some(PartitionKeyRule::ItemKey)
        );
        assert_eq!(
            PartitionKeyRule::parse("shard"),
            Some(PartitionKeyRule::Shard)
        );
        assert_eq!(
            PartitionKeyRule::parse("random"),
            Some(PartitionKeyRule::Random)
        );
        assert_eq!(
            PartitionKeyRule::parse("attribute:customer"),
            Some(PartitionKeyRule::Attribute("customer".into()))
        );
        assert_eq!(PartitionKeyRule::parse("attribute:"), None);
        assert_eq!(PartitionKeyRule::parse("item_key"), None);
        assert!(!PartitionKeyRule::Random.keeps_order());
        assert!(PartitionKeyRule::ItemKey.keeps_order());
    }

    #[test]
    fn item_keys_are_the_key_values_in_name_order() {
        let simple = change(&[("id", AttributeValue::S("order-17".into()))], None);
        assert_eq!(derive(&PartitionKeyRule::ItemKey, &simple), "order-17");
        let composite = change(
            &[
                ("sk", AttributeValue::N("42".into())),
                ("pk", AttributeValue::B(vec![1, 2, 3])),
            ],
            None,
        );
        assert_eq!(derive(&PartitionKeyRule::ItemKey, &composite), "AQID|42");
    }

    #[test]
    fn attributes_come_from_the_newest_image_else_the_item_key() {
        let keys = [("id", AttributeValue::S("a".into()))];
        let with = change(&keys, Some(&[("tenant", AttributeValue::S("t1".into()))]));
        let rule = PartitionKeyRule::Attribute("tenant".into());
        assert_eq!(derive(&rule, &with), "t1");
        let without = change(&keys, Some(&[("other", AttributeValue::N("1".into()))]));
        assert_eq!(derive(&rule, &without), "a");
        let key_attr = PartitionKeyRule::Attribute("id".into());
        assert_eq!(derive(&key_attr, &without), "a");
    }

    #[test]
    fn shard_and_kinesis_keys() {
        let mut k = aws_doc_kinesis();
        k.partition_key = "user-9".into();
        let record = SourceRecord::Kinesis(k.clone());
        assert_eq!(derive(&PartitionKeyRule::ItemKey, &record), "user-9");
        assert_eq!(derive(&PartitionKeyRule::Shard, &record), k.source.shard_id);
        let a = derive(&PartitionKeyRule::Random, &record);
        let b = derive(&PartitionKeyRule::Random, &record);
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn empty_keys_become_a_dash() {
        assert_eq!(fit(String::new()), "-");
    }

    proptest! {
        #[test]
        fn every_key_fits_and_is_stable(s in "\\PC{0,400}") {
            let a = fit(s.clone());
            prop_assert!((1..=MAX_CHARS).contains(&a.chars().count()));
            prop_assert_eq!(&a, &fit(s.clone()));
            if !s.is_empty() && s.chars().count() <= MAX_CHARS {
                prop_assert_eq!(a, s);
            }
        }

        #[test]
        fn long_keys_differ_when_their_tails_differ(prefix in "[a-z]{300}", a in "[a-z]{1,20}", b in "[a-z]{1,20}") {
            prop_assume!(a != b);
            prop_assert_ne!(fit(format!("{prefix}{a}")), fit(format!("{prefix}{b}")));
        }
    }
}
