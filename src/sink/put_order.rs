//! Which records go into the next PutRecords call, so that each partition key's records land
//! in order although Kinesis does not promise order within a call.
//!
//! The rule (design.md, "Ordering into Kinesis"): a call carries at most one record per key,
//! and a key's next record goes only after the previous one was acknowledged. A record that
//! failed stays at the head of its key's queue, so it is retried before anything newer with
//! that key, while other keys keep flowing. Pure: the sink does the I/O.

use std::collections::{BTreeSet, HashMap, VecDeque};

/// Kinesis' PutRecords limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PutLimits {
    pub max_records: usize,
    /// Data plus partition keys of one call.
    pub max_bytes: usize,
}

impl PutLimits {
    pub const KINESIS: PutLimits = PutLimits {
        max_records: 500,
        max_bytes: 5 * 1024 * 1024,
    };
}

/// A record's data plus partition key may not exceed this (Kinesis' 1 MiB).
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// The sending state of one batch: records by index (sequence order), each with its key and
/// its size as Kinesis counts it.
#[derive(Debug)]
pub struct PutOrder {
    sizes: Vec<usize>,
    /// Per key, the indexes not yet acknowledged, oldest first.
    queues: HashMap<String, VecDeque<usize>>,
    key_of: Vec<String>,
    /// Heads of queues whose key has nothing in flight: sendable now, in sequence order.
    ready: BTreeSet<usize>,
    in_flight: usize,
    unacked: usize,
}

impl PutOrder {
    /// `records`: (partition key, size) of each record still to send, in sequence order.
    /// Records already written (`skip`) are left out of the plan.
    pub fn new<'a>(records: impl IntoIterator<Item = (&'a str, usize)>) -> Self {
        let mut order = PutOrder {
            sizes: Vec::new(),
            queues: HashMap::new(),
            key_of: Vec::new(),
            ready: BTreeSet::new(),
            in_flight: 0,
            unacked: 0,
        };
        for (i, (key, size)) in records.into_iter().enumerate() {
            order.sizes.push(size);
            order.key_of.push(key.to_string());
            let queue = order.queues.entry(key.to_string()).or_default();
            if queue.is_empty() {
                order.ready.insert(i);
            }
            queue.push_back(i);
            order.unacked += 1;
        }
        order
    }

    /// A plan in which the records marked in `done` are already acknowledged.
    pub fn with_done<'a>(
        records: impl IntoIterator<Item = (&'a str, usize)>,
        done: &[bool],
    ) -> Self {
        let mut order = PutOrder::new(records);
        for (i, &d) in done.iter().enumerate() {
            if d {
                order.ready.remove(&i);
                order.remove_acked(i);
            }
        }
        order
    }

    /// The next call's records, oldest first: at most one per key, none whose key is in
    /// flight, within the call limits. Empty when nothing can be sent until an answer comes.
    pub fn next_call(&mut self, limits: &PutLimits) -> Vec<usize> {
        let mut call = Vec::new();
        let mut bytes = 0;
        let mut taken = Vec::new();
        for &i in &self.ready {
            if call.len() == limits.max_records {
                break;
            }
            let size = self.sizes[i];
            if !call.is_empty() && bytes + size > limits.max_bytes {
                // Smaller records further on could fit, but skipping ahead would only reorder
                // across keys; the next call takes it.
                break;
            }
            bytes += size;
            call.push(i);
            taken.push(i);
        }
        for i in taken {
            self.ready.remove(&i);
        }
        self.in_flight += call.len();
        call
    }

    /// The record was acknowledged: its key's next record becomes sendable.
    pub fn acked(&mut self, i: usize) {
        self.in_flight -= 1;
        self.remove_acked(i);
    }

    /// The record was not written: it goes again, before anything newer with its key.
    pub fn failed(&mut self, i: usize) {
        self.in_flight -= 1;
        self.ready.insert(i);
    }

    pub fn is_done(&self) -> bool {
        self.unacked == 0
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Records sendable now.
    pub fn ready(&self) -> usize {
        self.ready.len()
    }

    pub fn key(&self, i: usize) -> &str {
        &self.key_of[i]
    }

    fn remove_acked(&mut self, i: usize) {
        let key = &self.key_of[i];
        let queue = self.queues.get_mut(key).expect("a queued key");
        debug_assert_eq!(queue.front(), Some(&i), "acknowledged out of key order");
        queue.pop_front();
        self.unacked -= 1;
        match queue.front() {
            Some(&next) => {
                self.ready.insert(next);
            }
            None => {
                self.queues.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: PutLimits = PutLimits {
        max_records: 3,
        max_bytes: 100,
    };

    #[test]
    fn one_record_per_key_per_call() {
        let mut o = PutOrder::new([("a", 1), ("a", 1), ("b", 1), ("c", 1), ("d", 1)]);
        assert_eq!(
            o.next_call(&LIMITS),
            [0, 2, 3],
            "a's second record waits; 3 per call"
        );
        assert_eq!(o.next_call(&LIMITS), [4]);
        assert!(
            o.next_call(&LIMITS).is_empty(),
            "everything else waits on an answer"
        );
        o.acked(0);
        assert_eq!(o.next_call(&LIMITS), [1]);
        for i in [1, 2, 3, 4] {
            o.acked(i);
        }
        assert!(o.is_done());
    }

    #[test]
    fn a_failed_record_goes_again_before_its_key_moves_on() {
        let mut o = PutOrder::new([("a", 1), ("a", 1), ("b", 1), ("b", 1)]);
        assert_eq!(o.next_call(&LIMITS), [0, 2]);
        o.failed(0);
        o.acked(2);
        assert_eq!(o.next_call(&LIMITS), [0, 3], "a retried, b moved on");
        o.acked(0);
        o.acked(3);
        assert_eq!(o.next_call(&LIMITS), [1]);
        o.acked(1);
        assert!(o.is_done());
    }

    #[test]
    fn calls_stay_within_the_byte_limit() {
        let mut o = PutOrder::new([("a", 60), ("b", 60), ("c", 30), ("d", 100)]);
        assert_eq!(o.next_call(&LIMITS), [0]);
        assert_eq!(o.next_call(&LIMITS), [1, 2]);
        assert_eq!(
            o.next_call(&LIMITS),
            [3],
            "a record at the limit goes alone"
        );
    }

    #[test]
    fn records_already_written_are_not_sent() {
        let mut o = PutOrder::with_done([("a", 1), ("a", 1), ("b", 1)], &[true, false, false]);
        assert_eq!(o.next_call(&LIMITS), [1, 2]);
        o.acked(1);
        o.acked(2);
        assert!(o.is_done());
    }

    proptest! {
        /// Whatever fails and whenever answers come, each key's records are acknowledged in
        /// order, no call repeats a key or breaks a limit, and everything is acknowledged.
        #[test]
        fn order_per_key_under_any_failures(
            keys in prop::collection::vec(0u8..6, 1..60),
            outcomes in prop::collection::vec(any::<bool>(), 400),
            in_flight_calls in 1usize..4,
        ) {
            let names: Vec<String> = keys.iter().map(|k| format!("k{k}")).collect();
            let mut o = PutOrder::new(names.iter().map(|k| (k.as_str(), 10)));
            let mut outcomes = outcomes.into_iter().cycle();
            let mut acked_per_key: HashMap<&str, Vec<usize>> = HashMap::new();
            let mut calls: VecDeque<Vec<usize>> = VecDeque::new();
            let mut rounds = 0;
            while !o.is_done() {
                rounds += 1;
                prop_assert!(rounds < 10_000, "no progress");
                while calls.len() < in_flight_calls {
                    let call = o.next_call(&LIMITS);
                    if call.is_empty() { break; }
                    let mut seen = std::collections::HashSet::new();
                    for &i in &call { prop_assert!(seen.insert(&names[i]), "a key twice in one call"); }
                    prop_assert!(call.len() <= LIMITS.max_records);
                    calls.push_back(call);
                }
                let call = calls.pop_front().expect("something in flight");
                for i in call {
                    // Every fifth round succeeds, so that an all-failing draw still ends.
                    if outcomes.next().unwrap() || rounds % 5 == 0 {
                        o.acked(i);
                        acked_per_key.entry(names[i].as_str()).or_default().push(i);
                    } else {
                        o.failed(i);
                    }
                }
            }
            for (key, acked) in acked_per_key {
                let expected: Vec<usize> = (0..names.len()).filter(|&i| names[i] == key).collect();
                prop_assert_eq!(acked, expected);
            }
        }
    }
}
