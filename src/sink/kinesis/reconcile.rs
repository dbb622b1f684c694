//! Recovery for the reconciling protocol (README, "Guarantees", Kinesis): which records of an
//! intent's range a crashed owner already wrote to the target stream.
//!
//! What makes this decidable: the old owner sent each partition key's records strictly in order,
//! one at a time, so what it wrote of a key is a prefix of that key's records in the range. A
//! record is recognised by its partition key and its bytes, which carry its source identity
//! (stream, shard, sequence number) in every JSON format. Matching the range's records of a key
//! as a subsequence of what the target holds for that key, oldest first, finds that prefix and
//! ignores anything else written with the same key (earlier batches, other writers).
//!
//! Records the old owner never sent at all (`left_out`: skipped as over the size limit, or set
//! aside) are not part of that sequence: a key's written records are a prefix of its records
//! that were to be sent. Counting a left-out record into the sequence would stop the match at
//! it and take everything after it for unwritten (duplicates on re-send).
//!
//! Limit: `raw` records put the source's bytes unchanged, with no identity of their own; two
//! records with the same key and the same bytes within the read-back window can be taken for
//! one another.

use std::collections::HashMap;

/// For each record of the range (partition key, bytes), whether the target already has it.
/// `left_out[i]`: record i was never to be sent (it is reported not written); missing entries
/// count as false. `target`: the target's records since the intent (minus a margin), each
/// key's in order.
pub fn already_written<'a>(
    range: &[(&'a str, &'a [u8])],
    left_out: &[bool],
    target: &[(String, Vec<u8>)],
) -> Vec<bool> {
    let mut by_key: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, (key, _)) in range.iter().enumerate() {
        if !left_out.get(i).copied().unwrap_or(false) {
            by_key.entry(key).or_default().push(i);
        }
    }
    // Per key, how far into its range records the target has matched so far.
    let mut matched: HashMap<&str, usize> = HashMap::new();
    for (key, data) in target {
        let Some(indexes) = by_key.get(key.as_str()) else {
            continue;
        };
        let next = matched.entry(key.as_str()).or_insert(0);
        if let Some(&i) = indexes.get(*next) {
            if range[i].1 == data.as_slice() {
                *next += 1;
            }
        }
    }
    let mut written = vec![false; range.len()];
    for (key, n) in matched {
        for &i in &by_key[key][..n] {
            written[i] = true;
        }
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn target(records: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        records
            .iter()
            .map(|(k, d)| (k.to_string(), d.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn finds_each_keys_written_prefix() {
        let range: Vec<(&str, &[u8])> = vec![
            ("a", b"a1"),
            ("b", b"b1"),
            ("a", b"a2"),
            ("b", b"b2"),
            ("c", b"c1"),
        ];
        // Earlier batches and other keys around what the old owner wrote: a1, b1, a2.
        let t = target(&[
            ("a", "a0"),
            ("x", "x"),
            ("b", "b1"),
            ("a", "a1"),
            ("a", "a2"),
        ]);
        assert_eq!(
            already_written(&range, &[], &t),
            [true, true, true, false, false]
        );
    }

    #[test]
    fn nothing_written_nothing_found() {
        let range: Vec<(&str, &[u8])> = vec![("a", b"a1")];
        assert_eq!(already_written(&range, &[], &[]), [false]);
        let t = target(&[("b", "a1")]);
        assert_eq!(
            already_written(&range, &[], &t),
            [false],
            "same bytes, other key"
        );
    }

    #[test]
    fn repeated_bytes_of_one_key_are_counted() {
        let range: Vec<(&str, &[u8])> = vec![("a", b"x"), ("a", b"x"), ("a", b"y")];
        let t = target(&[("a", "x")]);
        assert_eq!(already_written(&range, &[], &t), [true, false, false]);
    }

    /// Issue 9: a key's skipped record between two written ones does not hide the second.
    #[test]
    fn records_left_out_are_not_in_a_keys_sequence() {
        let range: Vec<(&str, &[u8])> =
            vec![("a", b"a1"), ("a", b"big"), ("a", b"a3"), ("b", b"b1")];
        let left_out = [false, true, false, false];
        let t = target(&[("a", "a1"), ("a", "a3")]);
        assert_eq!(
            already_written(&range, &left_out, &t),
            [true, false, true, false]
        );
        assert_eq!(
            already_written(&range, &[], &t),
            [true, false, false, false],
            "without the left-out mark the match stops at the skipped record"
        );
    }

    proptest! {
        /// Whatever is left out and whatever prefix of each key's remaining records was
        /// written, exactly that prefix is found, and nothing left out.
        #[test]
        fn exactly_the_written_prefixes_around_left_out_records(
            keys in prop::collection::vec(0u8..5, 0..40),
            left_out in prop::collection::vec(any::<bool>(), 40),
            written_per_key in prop::collection::vec(0usize..10, 5),
        ) {
            let names: Vec<String> = keys.iter().map(|k| format!("k{k}")).collect();
            let datas: Vec<Vec<u8>> = (0..names.len()).map(|i| format!("r{i}").into_bytes()).collect();
            let range: Vec<(&str, &[u8])> = names.iter().zip(&datas).map(|(k, d)| (k.as_str(), d.as_slice())).collect();
            let mut expected = vec![false; range.len()];
            let mut t = Vec::new();
            let mut count: HashMap<&str, usize> = HashMap::new();
            for (i, (k, d)) in range.iter().enumerate() {
                if left_out[i] {
                    continue;
                }
                let c = count.entry(k).or_insert(0);
                if *c < written_per_key[k[1..].parse::<usize>().unwrap()] {
                    expected[i] = true;
                    t.push((k.to_string(), d.to_vec()));
                }
                *c += 1;
            }
            prop_assert_eq!(already_written(&range, &left_out, &t), expected);
        }

        /// With unique records, whatever prefix of each key was written, and whatever else the
        /// target holds, exactly that prefix is found.
        #[test]
        fn exactly_the_written_prefixes(
            keys in prop::collection::vec(0u8..5, 0..40),
            written_per_key in prop::collection::vec(0usize..10, 5),
            noise in prop::collection::vec((0u8..5, 0u32..1000), 0..20),
        ) {
            let names: Vec<String> = keys.iter().map(|k| format!("k{k}")).collect();
            let datas: Vec<Vec<u8>> = (0..names.len()).map(|i| format!("r{i}").into_bytes()).collect();
            let range: Vec<(&str, &[u8])> = names.iter().zip(&datas).map(|(k, d)| (k.as_str(), d.as_slice())).collect();
            let mut expected = vec![false; range.len()];
            let mut t: Vec<(String, Vec<u8>)> = noise.iter().map(|(k, n)| (format!("k{k}"), format!("noise{n}").into_bytes())).collect();
            let mut count: HashMap<&str, usize> = HashMap::new();
            for (i, (k, d)) in range.iter().enumerate() {
                let c = count.entry(k).or_insert(0);
                let key_index = k[1..].parse::<usize>().unwrap();
                if *c < written_per_key[key_index] {
                    expected[i] = true;
                    t.push((k.to_string(), d.to_vec()));
                }
                *c += 1;
            }
            prop_assert_eq!(already_written(&range, &[], &t), expected);
        }
    }
}
