//! Parallel lanes within a shard (Lambda's ParallelizationFactor): a batch's records are dealt
//! to N lanes by a hash of their item key, so one item always lands in one lane, and each lane
//! goes to the sink in calls of its own, concurrently with the other lanes. Pure: the commit
//! driver does the I/O.
//!
//! How this fits the commit protocols: the batch read from the shard (handed over when one
//! lane's share reaches the sink's batch limits, so up to N times a batch) is still one intent
//! and one checkpoint. Every lane's calls finish before the
//! checkpoint moves to the batch's last record, so it only ever passes records every lane is
//! done with. A new owner that finds the intent replays the range as one batch, without lanes:
//! a reconciling sink (Kinesis) reads the target back and sends only what is missing, which
//! works however the lanes had split it, since each key's records were written in order.
//! Protocols whose recovery depends on how a batch was cut into calls (idempotent S3 objects,
//! transactional Kafka batches) refuse lanes in `validate`.

use crate::sink::{BatchLimits, OutputRecord};
use crate::source::record::SourceRecord;

/// The largest `parallelization_factor` (Lambda's limit).
pub const MAX_LANES: u8 = 10;

/// The lane of `record` among `lanes`: a stable hash (FNV-1a, the same in every process and
/// version) of its item key (DynamoDB: the key attributes; Kinesis: the partition key).
pub fn lane_of(record: &SourceRecord, lanes: u8) -> u8 {
    if lanes <= 1 {
        return 0;
    }
    let key = match record {
        SourceRecord::DynamoDb(c) => crate::sink::partition_key::item_key(&c.keys),
        SourceRecord::Kinesis(k) => k.partition_key.clone(),
    };
    (fnv1a(key.as_bytes()) % u64::from(lanes)) as u8
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Deals `records` (one batch, in sequence order) to their lanes, each lane cut into calls of
/// at most the sink's limits (a single record larger than `max_bytes` is a call of its own); a
/// sink that takes every page as it comes gets a lane's share as one call. Empty lanes are
/// left out; every record is in exactly one call, in its original order within its lane.
pub fn split(records: Vec<OutputRecord>, lanes: u8, sink: BatchLimits) -> Vec<Lane> {
    let mut by_lane: Vec<Vec<OutputRecord>> = (0..lanes.max(1)).map(|_| Vec::new()).collect();
    let last = by_lane.len() - 1;
    for r in records {
        let i = usize::from(r.lane).min(last);
        by_lane[i].push(r);
    }
    let (max_records, max_bytes) = if sink == BatchLimits::PER_PAGE {
        (usize::MAX, usize::MAX)
    } else {
        (sink.max_records.max(1), sink.max_bytes.max(1))
    };
    by_lane
        .into_iter()
        .enumerate()
        .filter(|(_, records)| !records.is_empty())
        .map(|(lane, records)| {
            let mut calls: Vec<Vec<OutputRecord>> = Vec::new();
            let mut bytes = 0;
            for r in records {
                let size = r.payload.len();
                match calls.last_mut() {
                    Some(call) if call.len() < max_records && bytes + size <= max_bytes => {
                        bytes += size;
                        call.push(r);
                    }
                    _ => {
                        bytes = size;
                        calls.push(vec![r]);
                    }
                }
            }
            Lane {
                lane: lane as u8,
                calls,
            }
        })
        .collect()
}

/// One lane's share of a batch, as the sink calls that carry it, in order.
#[derive(Debug)]
pub struct Lane {
    pub lane: u8,
    pub calls: Vec<Vec<OutputRecord>>,
}

/// Batches of a shard whose lanes are still at work (flush-then-checkpoint sinks, whose lanes
/// run ahead of each other across batches: a lane that retries holds back only its own keys,
/// and the checkpoint). A batch is done when every lane it gave calls to has finished them;
/// the checkpoint may pass a batch once it and every batch before it are done. Each lane
/// works through its batches in order, so a lane is done with batch n only after n-1.
#[derive(Debug)]
pub struct InFlight<T> {
    /// Oldest first: the batch's number, the lanes still at it, what the caller keeps for it.
    batches: std::collections::VecDeque<(u64, usize, T)>,
}

impl<T> Default for InFlight<T> {
    fn default() -> Self {
        InFlight {
            batches: std::collections::VecDeque::new(),
        }
    }
}

impl<T> InFlight<T> {
    /// Batches not yet passed by the checkpoint.
    pub fn len(&self) -> usize {
        self.batches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// A new batch, numbered after every earlier one, that gave calls to `lanes` lanes (0: all
    /// its records were passed over). Returns the batches the checkpoint may pass now.
    pub fn register(&mut self, number: u64, lanes: usize, kept: T) -> Vec<T> {
        // Numbers only grow (the caller counts them): else the checkpoint could go back.
        assert!(self.batches.back().map_or(true, |(n, _, _)| *n < number));
        self.batches.push_back((number, lanes, kept));
        self.take_done()
    }

    /// One lane finished its calls of batch `number`. Returns the batches the checkpoint may
    /// pass now, oldest first. A number not in flight is ignored (it was never registered).
    pub fn lane_done(&mut self, number: u64) -> Vec<T> {
        if let Some((_, left, _)) = self.batches.iter_mut().find(|(n, _, _)| *n == number) {
            *left = left.saturating_sub(1);
        }
        self.take_done()
    }

    fn take_done(&mut self) -> Vec<T> {
        let mut done = Vec::new();
        while self.batches.front().is_some_and(|(_, left, _)| *left == 0) {
            if let Some((_, _, kept)) = self.batches.pop_front() {
                done.push(kept);
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::sequence::SequenceNumber;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn out(seq: u64, lane: u8, bytes: usize) -> OutputRecord {
        OutputRecord {
            sequence_number: SequenceNumber::parse(&(1000 + seq).to_string()).unwrap(),
            created_millis: None,
            partition_key: None,
            event_name: None,
            lane,
            payload: vec![b'x'; bytes],
        }
    }

    fn limits(max_records: usize, max_bytes: usize) -> BatchLimits {
        BatchLimits {
            max_records,
            max_bytes,
            max_interval: Duration::from_secs(1),
        }
    }

    #[test]
    fn one_lane_is_the_batch_cut_by_the_sink_limits() {
        let records: Vec<_> = (0..5).map(|i| out(i, 0, 10)).collect();
        let lanes = split(records, 1, limits(2, 1000));
        assert_eq!(lanes.len(), 1);
        let sizes: Vec<usize> = lanes[0].calls.iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 2, 1]);
    }

    #[test]
    fn a_per_page_sink_gets_each_lane_as_one_call() {
        let records: Vec<_> = (0..6).map(|i| out(i, (i % 3) as u8, 10)).collect();
        let lanes = split(records, 3, BatchLimits::PER_PAGE);
        let shape: Vec<(u8, Vec<usize>)> = lanes
            .iter()
            .map(|l| (l.lane, l.calls.iter().map(Vec::len).collect()))
            .collect();
        assert_eq!(shape, [(0, vec![2]), (1, vec![2]), (2, vec![2])]);
    }

    #[test]
    fn bytes_cut_calls_and_an_oversized_record_goes_alone() {
        let records = vec![out(0, 0, 40), out(1, 0, 40), out(2, 0, 500), out(3, 0, 10)];
        let lanes = split(records, 1, limits(100, 100));
        let sizes: Vec<usize> = lanes[0].calls.iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 1, 1]);
    }

    #[test]
    fn lanes_follow_the_item_key_and_spread() {
        use crate::source::record::{
            AttributeValue, ChangeRecord, OperationType, SourceIdentity, StreamViewType,
        };
        let change = |key: &str| {
            let keys = BTreeMap::from([("id".to_string(), AttributeValue::S(key.into()))]);
            SourceRecord::DynamoDb(ChangeRecord {
                event_id: "e".into(),
                operation: OperationType::Insert,
                event_version: "1.1".into(),
                aws_region: "us-east-1".into(),
                table_name: "t".into(),
                source: SourceIdentity {
                    stream_arn: "arn".into(),
                    shard_id: "s".into(),
                    sequence_number: SequenceNumber::parse("1").unwrap(),
                },
                approximate_creation_millis: None,
                keys: keys.clone(),
                new_image: Some(keys),
                old_image: None,
                size_bytes: 1,
                view_type: StreamViewType::NewImage,
                user_identity: None,
            })
        };
        assert_eq!(lane_of(&change("a"), 1), 0);
        let mut used = [0usize; 10];
        for i in 0..1000 {
            let key = format!("order-{i}");
            let lane = lane_of(&change(&key), 10);
            assert_eq!(lane, lane_of(&change(&key), 10), "stable");
            used[usize::from(lane)] += 1;
        }
        assert!(
            used.iter().all(|&n| n > 50),
            "1000 keys spread over every lane: {used:?}"
        );
        // The same value in every process and version: FNV-1a of the key.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    proptest! {
        #[test]
        fn every_record_in_one_call_in_order_within_its_lane(
            specs in proptest::collection::vec((0u8..10, 0usize..300), 0..200),
            lanes in 1u8..=10,
            max_records in 1usize..50,
            max_bytes in 1usize..2000,
        ) {
            let records: Vec<_> = specs
                .iter()
                .enumerate()
                .map(|(i, (lane, bytes))| out(i as u64, lane % lanes, *bytes))
                .collect();
            let split = split(records, lanes, limits(max_records, max_bytes));
            let mut seen = Vec::new();
            for lane in &split {
                prop_assert!(!lane.calls.is_empty());
                let mut previous = None;
                for call in &lane.calls {
                    prop_assert!(!call.is_empty());
                    prop_assert!(call.len() <= max_records);
                    let bytes: usize = call.iter().map(|r| r.payload.len()).sum();
                    prop_assert!(bytes <= max_bytes || call.len() == 1);
                    for r in call {
                        prop_assert_eq!(r.lane, lane.lane);
                        prop_assert!(previous < Some(r.sequence_number.clone()));
                        previous = Some(r.sequence_number.clone());
                        seen.push(r.sequence_number.clone());
                    }
                }
            }
            seen.sort();
            let want: Vec<_> = (0..specs.len()).map(|i| out(i as u64, 0, 0).sequence_number).collect();
            prop_assert_eq!(seen, want);
        }
    }

    #[test]
    fn a_batch_passed_over_entirely_is_done_as_soon_as_those_before_it_are() {
        let mut f = InFlight::default();
        assert_eq!(f.register(0, 2, "a"), Vec::<&str>::new());
        assert_eq!(f.register(1, 0, "b"), Vec::<&str>::new());
        assert_eq!(f.lane_done(0), Vec::<&str>::new());
        assert_eq!(f.lane_done(0), vec!["a", "b"]);
        assert!(f.is_empty());
        assert_eq!(f.register(2, 0, "c"), vec!["c"]);
        assert_eq!(
            f.lane_done(7),
            Vec::<&str>::new(),
            "an unknown number changes nothing"
        );
    }

    proptest! {
        /// Lanes finishing in any interleaving (each lane in its own order): every batch is
        /// given back exactly once, in order, and only once it and all before it are done.
        #[test]
        fn in_flight_gives_batches_back_in_order_once_every_lane_is_done(
            uses in proptest::collection::vec(proptest::collection::btree_set(0u8..4, 0..4), 1..12),
            picks in proptest::collection::vec(0usize..4, 0..200),
        ) {
            let mut f = InFlight::default();
            let mut queues: Vec<Vec<u64>> = vec![Vec::new(); 4];
            let mut given: Vec<u64> = Vec::new();
            let mut left: Vec<usize> = Vec::new();
            for (n, lanes) in uses.iter().enumerate() {
                for &l in lanes {
                    queues[usize::from(l)].push(n as u64);
                }
                left.push(lanes.len());
                given.extend(f.register(n as u64, lanes.len(), n as u64));
            }
            // The lanes, each at its next batch; a pick finishes that lane's next batch.
            let mut next = [0usize; 4];
            let picks = picks.into_iter().chain((0..4).flat_map(|l| std::iter::repeat(l).take(12)));
            for lane in picks {
                let Some(&n) = queues[lane].get(next[lane]) else { continue };
                next[lane] += 1;
                left[n as usize] -= 1;
                given.extend(f.lane_done(n));
                // Given back: the batches with every lane done and every batch before them too.
                let ready = left.iter().take_while(|l| **l == 0).count();
                prop_assert_eq!(&given, &(0..ready as u64).collect::<Vec<_>>());
            }
            prop_assert_eq!(given, (0..uses.len() as u64).collect::<Vec<_>>());
            prop_assert!(f.is_empty());
        }
    }
}
