//! What the DynamoDB sink writes for a batch, decided without I/O: each record (taken in the
//! `lambda` form, whatever the connector's format) becomes a put of its new image or a delete
//! of its key, and within a batch only each item's last change is written.
//!
//! Why the last change per item is enough, and safe: the batch's range is fixed by its intent
//! before anything is written (commit protocol `Idempotent`), batches are written one after
//! the other per shard, and an item's changes are all in one shard's lineage, in order. So
//! while batch k is written, the target holds each item of k either as it was before k or as
//! k leaves it; writing k again after a crash (the same range, the same last changes) only
//! moves items forward. An older change never overwrites a newer one and a deleted item never
//! comes back, without a version attribute in the target or tombstones left in it. What
//! fences a previous owner out is the lease: it sends only while its renewal is fresh, and a
//! new owner recovering its intent waits for that deadline first.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Value;

use crate::sink::OutputRecord;

/// One item's change, as the target gets it.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    Put(BTreeMap<String, AttributeValue>),
    Delete(BTreeMap<String, AttributeValue>),
}

impl Write {
    pub fn is_put(&self) -> bool {
        matches!(self, Write::Put(_))
    }
}

/// Why a record cannot be written to a table.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChangeError {
    /// A change without its new image: the stream's view type is KEYS_ONLY or OLD_IMAGE.
    #[error("record {sequence}: an {event} without its new image; the dynamodb sink needs a stream of view type NEW_IMAGE or NEW_AND_OLD_IMAGES")]
    NoNewImage { sequence: String, event: String },
    #[error("record {sequence}: {why}")]
    Malformed { sequence: String, why: String },
}

/// The writes of a batch: each item's last change, in the order of those last changes, and
/// how many earlier changes they made unnecessary.
pub fn last_changes(records: &[OutputRecord]) -> Result<(Vec<Write>, usize), ChangeError> {
    // By the item's key (its canonical JSON): the index of its last change.
    let mut last: BTreeMap<String, usize> = BTreeMap::new();
    let mut writes = Vec::with_capacity(records.len());
    for r in records {
        let (key, write) = change_of(r)?;
        last.insert(key, writes.len());
        writes.push(Some(write));
    }
    let superseded = writes.len() - last.len();
    let mut keep: Vec<usize> = last.into_values().collect();
    keep.sort_unstable();
    let out = keep
        .into_iter()
        .filter_map(|i| writes.get_mut(i).and_then(Option::take))
        .collect();
    Ok((out, superseded))
}

/// A record's item key (canonical, for grouping) and its write.
fn change_of(r: &OutputRecord) -> Result<(String, Write), ChangeError> {
    let sequence = r.sequence_number.to_string();
    let malformed = |why: String| ChangeError::Malformed {
        sequence: sequence.clone(),
        why,
    };
    let record: Value = serde_json::from_slice(&r.payload)
        .map_err(|e| malformed(format!("not a lambda record: {e}")))?;
    let event = record["eventName"].as_str().unwrap_or_default().to_string();
    let ddb = &record["dynamodb"];
    let keys = ddb["Keys"]
        .as_object()
        .ok_or_else(|| malformed("no dynamodb.Keys".into()))?;
    let key_text = Value::Object(keys.clone()).to_string();
    let keys = item(keys).map_err(malformed)?;
    let write = match event.as_str() {
        "REMOVE" => Write::Delete(keys),
        "INSERT" | "MODIFY" => match ddb["NewImage"].as_object() {
            Some(image) => Write::Put(item(image).map_err(malformed)?),
            None => {
                return Err(ChangeError::NoNewImage {
                    sequence: sequence.clone(),
                    event,
                })
            }
        },
        other => return Err(malformed(format!("eventName {other:?}"))),
    };
    Ok((key_text, write))
}

fn item(map: &serde_json::Map<String, Value>) -> Result<BTreeMap<String, AttributeValue>, String> {
    map.iter()
        .map(|(name, v)| {
            Ok((
                name.clone(),
                attribute(v).map_err(|e| format!("{name}: {e}"))?,
            ))
        })
        .collect()
}

/// DynamoDB's typed JSON (`{"S": "x"}`, `{"N": "1"}`, ...) as an SDK attribute value.
pub fn attribute(v: &Value) -> Result<AttributeValue, String> {
    let obj = v.as_object().filter(|o| o.len() == 1);
    let Some((kind, inner)) = obj.and_then(|o| o.iter().next()) else {
        return Err(format!("not a typed attribute value: {v}"));
    };
    let text = |x: &Value| {
        x.as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("{kind}: not a string: {x}"))
    };
    let list = |x: &Value| {
        x.as_array()
            .cloned()
            .ok_or_else(|| format!("{kind}: not a list: {x}"))
    };
    let blob = |x: &Value| -> Result<Blob, String> {
        use base64::Engine;
        let s = text(x)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map(Blob::new)
            .map_err(|e| format!("{kind}: not base64: {e}"))
    };
    Ok(match kind.as_str() {
        "S" => AttributeValue::S(text(inner)?),
        "N" => AttributeValue::N(text(inner)?),
        "B" => AttributeValue::B(blob(inner)?),
        "SS" => AttributeValue::Ss(list(inner)?.iter().map(text).collect::<Result<_, _>>()?),
        "NS" => AttributeValue::Ns(list(inner)?.iter().map(text).collect::<Result<_, _>>()?),
        "BS" => AttributeValue::Bs(list(inner)?.iter().map(blob).collect::<Result<_, _>>()?),
        "M" => AttributeValue::M(
            item(
                inner
                    .as_object()
                    .ok_or_else(|| format!("M: not a map: {inner}"))?,
            )?
            .into_iter()
            .collect(),
        ),
        "L" => AttributeValue::L(
            list(inner)?
                .iter()
                .map(attribute)
                .collect::<Result<_, _>>()?,
        ),
        "NULL" => AttributeValue::Null(inner.as_bool().unwrap_or(true)),
        "BOOL" => AttributeValue::Bool(
            inner
                .as_bool()
                .ok_or_else(|| format!("BOOL: not a boolean: {inner}"))?,
        ),
        other => return Err(format!("unknown attribute type {other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::sequence::SequenceNumber;

    fn rec(seq: u64, event: &str, id: &str, version: Option<u64>) -> OutputRecord {
        let image = version.map_or(String::new(), |v| {
            format!(r#","NewImage":{{"id":{{"S":"{id}"}},"v":{{"N":"{v}"}}}}"#)
        });
        let payload = format!(
            r#"{{"eventName":"{event}","dynamodb":{{"Keys":{{"id":{{"S":"{id}"}}}}{image}}}}}"#
        );
        OutputRecord {
            sequence_number: SequenceNumber::parse(&seq.to_string()).unwrap(),
            created_millis: None,
            partition_key: None,
            event_name: None,
            lane: 0,
            payload: payload.into_bytes(),
        }
    }

    fn key(id: &str) -> BTreeMap<String, AttributeValue> {
        BTreeMap::from([("id".to_string(), AttributeValue::S(id.into()))])
    }

    fn put(id: &str, v: u64) -> Write {
        let mut item = key(id);
        item.insert("v".into(), AttributeValue::N(v.to_string()));
        Write::Put(item)
    }

    #[test]
    fn each_items_last_change_in_the_order_of_the_last_changes() {
        let records = [
            rec(1, "INSERT", "a", Some(1)),
            rec(2, "INSERT", "b", Some(1)),
            rec(3, "MODIFY", "a", Some(2)),
            rec(4, "REMOVE", "b", None),
            rec(5, "INSERT", "c", Some(1)),
            rec(6, "REMOVE", "c", None),
            rec(7, "INSERT", "c", Some(2)),
        ];
        let (writes, superseded) = last_changes(&records).unwrap();
        assert_eq!(
            writes,
            vec![put("a", 2), Write::Delete(key("b")), put("c", 2)]
        );
        assert_eq!(superseded, 4);
    }

    #[test]
    fn a_change_without_its_new_image_names_the_view_types_needed() {
        let err = last_changes(&[rec(9, "MODIFY", "a", None)]).unwrap_err();
        assert!(matches!(err, ChangeError::NoNewImage { .. }));
        assert!(err.to_string().contains("NEW_IMAGE or NEW_AND_OLD_IMAGES"));
        assert!(err.to_string().contains("record 9"));
    }

    #[test]
    fn every_attribute_type_converts() {
        let v: Value = serde_json::from_str(
            r#"{"M":{"s":{"S":"x"},"n":{"N":"1.5"},"b":{"B":"AAE="},"ss":{"SS":["a","b"]},
                "ns":{"NS":["1","2"]},"bs":{"BS":["AQ=="]},"l":{"L":[{"BOOL":true},{"NULL":true}]}}}"#,
        )
        .unwrap();
        let AttributeValue::M(m) = attribute(&v).unwrap() else {
            panic!("a map")
        };
        assert_eq!(m["s"], AttributeValue::S("x".into()));
        assert_eq!(m["n"], AttributeValue::N("1.5".into()));
        assert_eq!(m["b"], AttributeValue::B(Blob::new(vec![0, 1])));
        assert_eq!(m["ss"], AttributeValue::Ss(vec!["a".into(), "b".into()]));
        assert_eq!(m["ns"], AttributeValue::Ns(vec!["1".into(), "2".into()]));
        assert_eq!(m["bs"], AttributeValue::Bs(vec![Blob::new(vec![1])]));
        assert_eq!(
            m["l"],
            AttributeValue::L(vec![AttributeValue::Bool(true), AttributeValue::Null(true)])
        );
        assert!(attribute(&serde_json::json!({"X": 1})).is_err());
        assert!(attribute(&serde_json::json!("plain")).is_err());
    }

    proptest::proptest! {
        /// Writing each item's last change leaves the target as writing every change in order
        /// would, each item once, in the order of the last changes.
        #[test]
        fn the_last_changes_leave_what_every_change_would(
            changes in proptest::collection::vec((0u8..5, proptest::option::of(0u64..100)), 0..60),
        ) {
            let records: Vec<OutputRecord> = changes
                .iter()
                .enumerate()
                .map(|(i, (id, v))| {
                    let event = if v.is_some() { "MODIFY" } else { "REMOVE" };
                    rec(i as u64 + 1, event, &format!("i{id}"), *v)
                })
                .collect();
            let (writes, superseded) = last_changes(&records).unwrap();
            let apply = |ws: &[Write]| {
                let mut table: BTreeMap<String, Option<Write>> = BTreeMap::new();
                for w in ws {
                    let (Write::Put(m) | Write::Delete(m)) = w;
                    let AttributeValue::S(id) = &m["id"] else { unreachable!() };
                    table.insert(id.clone(), w.is_put().then(|| w.clone()));
                }
                table
            };
            let every: Vec<Write> = records.iter().map(|r| change_of(r).unwrap().1).collect();
            proptest::prop_assert_eq!(apply(&writes), apply(&every));
            let ids: std::collections::BTreeSet<u8> = changes.iter().map(|(id, _)| *id).collect();
            proptest::prop_assert_eq!(writes.len(), ids.len());
            proptest::prop_assert_eq!(superseded, changes.len() - ids.len());
            let mut last_at: Vec<(usize, u8)> = ids
                .iter()
                .map(|id| (changes.iter().rposition(|(i, _)| i == id).unwrap(), *id))
                .collect();
            last_at.sort_unstable();
            let order: Vec<String> = writes
                .iter()
                .map(|w| {
                    let (Write::Put(m) | Write::Delete(m)) = w;
                    match &m["id"] { AttributeValue::S(id) => id.clone(), _ => unreachable!() }
                })
                .collect();
            let want: Vec<String> = last_at.iter().map(|(_, id)| format!("i{id}")).collect();
            proptest::prop_assert_eq!(order, want);
        }
    }
}
