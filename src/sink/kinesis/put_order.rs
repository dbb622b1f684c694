//! Which records go into the next PutRecords call, so that each partition key's records land
//! in order although Kinesis does not promise order within a call.
//!
//! The rule (README, "Guarantees", Kinesis): a call carries at most one record per key,
//! and a key's next record goes only after the previous one was acknowledged. A record that
//! failed stays at the head of its key's queue, so it is retried before anything newer with
//! that key, while other keys keep flowing. Pure: the sink does the I/O.
//!
//! Records can also be done without being sent: skipped (over the size limit), found already
//! written by reconciliation, or (later) set aside to a failure destination. Those are not a
//! per-key prefix: a key's legal record may come before or after its skipped one. Marking a
//! record done therefore removes exactly that record from its key's queue, wherever it stands,
//! and every answer names the record it is for; a mismatch is an error in every build, never a
//! silently acknowledged neighbour.

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

/// Where a record stands in the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting in its key's queue (sendable when it is the head and nothing of its key is in
    /// flight).
    Queued,
    /// In a call that has not been answered.
    InFlight,
    /// Acknowledged, or done without sending (skipped, already written, set aside).
    Done,
}

/// An answer or a mark that does not fit the plan: the caller's bookkeeping is wrong, and
/// going on could acknowledge a record that was never written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("record {index} of the batch was answered but is not in flight ({state})")]
    NotInFlight { index: usize, state: &'static str },
    #[error("record {index} of the batch cannot be marked done while it is {state}")]
    NotQueued { index: usize, state: &'static str },
    #[error("record {index} is not in the batch of {len}")]
    OutOfRange { index: usize, len: usize },
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::InFlight => "in flight",
            State::Done => "done",
        }
    }
}

/// The sending state of one batch: records by index (sequence order), each with its key and
/// its size as Kinesis counts it.
#[derive(Debug)]
pub struct PutOrder {
    sizes: Vec<usize>,
    key_of: Vec<String>,
    state: Vec<State>,
    /// Per key, the indexes queued or in flight, oldest first. Only the head can be in flight.
    queues: HashMap<String, VecDeque<usize>>,
    /// Heads of queues whose key has nothing in flight: sendable now, in sequence order.
    ready: BTreeSet<usize>,
    in_flight: usize,
    unacked: usize,
}

impl PutOrder {
    /// `records`: (partition key, size) of each record of the batch, in sequence order; all
    /// of them to be sent.
    pub fn new<'a>(records: impl IntoIterator<Item = (&'a str, usize)>) -> Self {
        PutOrder::with_done(records, &[])
    }

    /// A plan in which the records marked in `done` (any of them, in any pattern) are already
    /// finished and are never sent. `done` may be shorter than the batch: missing entries are
    /// not done.
    pub fn with_done<'a>(
        records: impl IntoIterator<Item = (&'a str, usize)>,
        done: &[bool],
    ) -> Self {
        let mut order = PutOrder {
            sizes: Vec::new(),
            key_of: Vec::new(),
            state: Vec::new(),
            queues: HashMap::new(),
            ready: BTreeSet::new(),
            in_flight: 0,
            unacked: 0,
        };
        for (i, (key, size)) in records.into_iter().enumerate() {
            order.sizes.push(size);
            order.key_of.push(key.to_string());
            if done.get(i).copied().unwrap_or(false) {
                order.state.push(State::Done);
                continue;
            }
            order.state.push(State::Queued);
            let queue = order.queues.entry(key.to_string()).or_default();
            if queue.is_empty() {
                order.ready.insert(i);
            }
            queue.push_back(i);
            order.unacked += 1;
        }
        order
    }

    /// The next call's records, oldest first: at most one per key, none whose key is in
    /// flight, within the call limits. Empty when nothing can be sent until an answer comes.
    pub fn next_call(&mut self, limits: &PutLimits) -> Vec<usize> {
        let mut call = Vec::new();
        let mut bytes = 0;
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
        }
        for &i in &call {
            self.ready.remove(&i);
            self.state[i] = State::InFlight;
        }
        self.in_flight += call.len();
        call
    }

    /// Record `i` was acknowledged: exactly it leaves its key's queue, and the key's next
    /// record becomes sendable.
    pub fn acked(&mut self, i: usize) -> Result<(), PlanError> {
        self.expect_state(i, State::InFlight)?;
        self.in_flight -= 1;
        self.finish(i);
        Ok(())
    }

    /// Record `i` was not written: it goes again, before anything newer with its key.
    pub fn failed(&mut self, i: usize) -> Result<(), PlanError> {
        self.expect_state(i, State::InFlight)?;
        self.in_flight -= 1;
        self.state[i] = State::Queued;
        self.ready.insert(i);
        Ok(())
    }

    /// Record `i`, queued and not sent, is done without sending (skipped, found written, set
    /// aside): exactly it leaves its key's queue, wherever it stands there.
    pub fn mark_done(&mut self, i: usize) -> Result<(), PlanError> {
        match self.state.get(i) {
            Some(State::Queued) => {}
            Some(other) => {
                return Err(PlanError::NotQueued {
                    index: i,
                    state: other.name(),
                })
            }
            None => {
                return Err(PlanError::OutOfRange {
                    index: i,
                    len: self.state.len(),
                })
            }
        }
        self.ready.remove(&i);
        self.finish(i);
        Ok(())
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

    fn expect_state(&self, i: usize, want: State) -> Result<(), PlanError> {
        match self.state.get(i) {
            Some(&s) if s == want => Ok(()),
            Some(&s) => Err(PlanError::NotInFlight {
                index: i,
                state: s.name(),
            }),
            None => Err(PlanError::OutOfRange {
                index: i,
                len: self.state.len(),
            }),
        }
    }

    /// Removes exactly `i` (queued or in flight) from its key's queue. When it was the head,
    /// the key's next record becomes sendable (only a head can be in flight, so the new head
    /// is free to go).
    fn finish(&mut self, i: usize) {
        self.state[i] = State::Done;
        self.unacked -= 1;
        let key = &self.key_of[i];
        let Some(queue) = self.queues.get_mut(key) else {
            unreachable!("a queued or in-flight record has a queue");
        };
        let Some(pos) = queue.iter().position(|&j| j == i) else {
            unreachable!("a queued or in-flight record is in its key's queue");
        };
        queue.remove(pos);
        if pos == 0 {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    const LIMITS: PutLimits = PutLimits {
        max_records: 3,
        max_bytes: 100,
    };

    /// Sends until done, acknowledging every call; returns the calls made.
    fn drain_all(o: &mut PutOrder) -> Vec<Vec<usize>> {
        let mut calls = Vec::new();
        while !o.is_done() {
            let call = o.next_call(&LIMITS);
            assert!(!call.is_empty(), "no progress");
            for &i in &call {
                o.acked(i).unwrap();
            }
            calls.push(call);
        }
        calls
    }

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
        o.acked(0).unwrap();
        assert_eq!(o.next_call(&LIMITS), [1]);
        for i in [1, 2, 3, 4] {
            o.acked(i).unwrap();
        }
        assert!(o.is_done());
    }

    #[test]
    fn a_failed_record_goes_again_before_its_key_moves_on() {
        let mut o = PutOrder::new([("a", 1), ("a", 1), ("b", 1), ("b", 1)]);
        assert_eq!(o.next_call(&LIMITS), [0, 2]);
        o.failed(0).unwrap();
        o.acked(2).unwrap();
        assert_eq!(o.next_call(&LIMITS), [0, 3], "a retried, b moved on");
        o.acked(0).unwrap();
        o.acked(3).unwrap();
        assert_eq!(o.next_call(&LIMITS), [1]);
        o.acked(1).unwrap();
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
        assert_eq!(drain_all(&mut o), [vec![1, 2]]);
    }

    /// Issue 9: a legal record followed by a skipped one of the same key. The legal record
    /// must be sent; the skipped one never.
    #[test]
    fn a_skipped_record_after_a_legal_one_of_its_key() {
        let mut o = PutOrder::with_done([("a", 1), ("a", 1)], &[false, true]);
        assert_eq!(drain_all(&mut o), [vec![0]]);
    }

    #[test]
    fn a_skipped_record_before_a_legal_one_of_its_key() {
        let mut o = PutOrder::with_done([("a", 1), ("a", 1)], &[true, false]);
        assert_eq!(drain_all(&mut o), [vec![1]]);
    }

    #[test]
    fn skipped_records_among_interleaved_keys() {
        // a: 0 1(skip) 4 ; b: 2(skip) 3 6 ; c: 5 7(skip)
        let keys = [
            ("a", 1),
            ("a", 1),
            ("b", 1),
            ("b", 1),
            ("a", 1),
            ("c", 1),
            ("b", 1),
            ("c", 1),
        ];
        let done = [false, true, true, false, false, false, false, true];
        let mut o = PutOrder::with_done(keys, &done);
        assert_eq!(drain_all(&mut o), [vec![0, 3, 5], vec![4, 6]]);
    }

    #[test]
    fn marking_a_queued_record_done_removes_exactly_it() {
        let mut o = PutOrder::new([("a", 1), ("a", 1), ("a", 1)]);
        assert_eq!(o.next_call(&LIMITS), [0]);
        o.mark_done(1).unwrap();
        assert!(o.next_call(&LIMITS).is_empty(), "0 is still in flight");
        o.acked(0).unwrap();
        assert_eq!(o.next_call(&LIMITS), [2], "1 is never sent");
        o.acked(2).unwrap();
        assert!(o.is_done());
    }

    #[test]
    fn marking_the_head_done_frees_the_next() {
        let mut o = PutOrder::new([("a", 1), ("a", 1)]);
        o.mark_done(0).unwrap();
        assert_eq!(o.next_call(&LIMITS), [1]);
    }

    #[test]
    fn answers_that_do_not_fit_the_plan_are_errors_in_every_build() {
        let mut o = PutOrder::with_done([("a", 1), ("a", 1), ("b", 1)], &[false, false, true]);
        assert_eq!(
            o.acked(1),
            Err(PlanError::NotInFlight {
                index: 1,
                state: "queued"
            }),
            "a record never sent cannot be acknowledged"
        );
        assert!(o.acked(2).is_err(), "a done record cannot be acknowledged");
        assert!(o.failed(0).is_err());
        assert!(o.acked(9).is_err());
        assert_eq!(o.next_call(&LIMITS), [0]);
        assert!(o.mark_done(0).is_err(), "in flight: its answer decides");
        o.acked(0).unwrap();
        assert!(o.acked(0).is_err(), "acknowledged twice");
        assert!(o.mark_done(0).is_err());
        assert_eq!(o.next_call(&LIMITS), [1]);
        o.acked(1).unwrap();
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
            check_plan(&keys, &[], &[], &outcomes, in_flight_calls)?;
        }

        /// Any set of records done before sending, and any further records marked done while
        /// the batch is under way: every record not done is sent and acknowledged exactly
        /// once, in its key's order; no done record is ever sent.
        #[test]
        fn arbitrary_done_sets(
            keys in prop::collection::vec(0u8..6, 1..60),
            done in prop::collection::vec(any::<bool>(), 60),
            marks in prop::collection::vec(0usize..60, 0..10),
            outcomes in prop::collection::vec(any::<bool>(), 400),
            in_flight_calls in 1usize..4,
        ) {
            check_plan(&keys, &done, &marks, &outcomes, in_flight_calls)?;
        }
    }

    fn check_plan(
        keys: &[u8],
        done: &[bool],
        marks: &[usize],
        outcomes: &[bool],
        in_flight_calls: usize,
    ) -> Result<(), TestCaseError> {
        let names: Vec<String> = keys.iter().map(|k| format!("k{k}")).collect();
        let done = &done[..done.len().min(names.len())];
        let mut o = PutOrder::with_done(names.iter().map(|k| (k.as_str(), 10)), done);
        let mut not_sent: HashSet<usize> = (0..names.len())
            .filter(|&i| done.get(i).copied().unwrap_or(false))
            .collect();
        let mut marks = marks.iter().copied().filter(|&m| m < names.len());
        let mut outcomes = outcomes.iter().copied().cycle();
        let mut sent: HashSet<usize> = HashSet::new();
        let mut acked_per_key: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut calls: VecDeque<Vec<usize>> = VecDeque::new();
        let mut rounds = 0;
        while !o.is_done() {
            rounds += 1;
            prop_assert!(rounds < 10_000, "no progress");
            // Now and then a queued record is set aside mid-batch.
            if rounds % 3 == 0 {
                if let Some(m) = marks.next() {
                    let in_flight = calls.iter().any(|c| c.contains(&m));
                    if in_flight || sent.contains(&m) || not_sent.contains(&m) {
                        prop_assert!(o.mark_done(m).is_err(), "{} is not queued", m);
                    } else {
                        o.mark_done(m).unwrap();
                        not_sent.insert(m);
                    }
                }
            }
            while calls.len() < in_flight_calls {
                let call = o.next_call(&LIMITS);
                if call.is_empty() {
                    break;
                }
                let mut seen = HashSet::new();
                for &i in &call {
                    prop_assert!(seen.insert(&names[i]), "a key twice in one call");
                    prop_assert!(!not_sent.contains(&i), "a done record was sent: {}", i);
                }
                prop_assert!(call.len() <= LIMITS.max_records);
                calls.push_back(call);
            }
            let Some(call) = calls.pop_front() else {
                prop_assert!(o.is_done(), "nothing in flight and nothing sendable");
                break;
            };
            for i in call {
                // Every fifth round succeeds, so that an all-failing draw still ends.
                if outcomes.next().unwrap() || rounds % 5 == 0 {
                    o.acked(i).unwrap();
                    prop_assert!(sent.insert(i), "acknowledged twice: {}", i);
                    acked_per_key.entry(names[i].as_str()).or_default().push(i);
                } else {
                    o.failed(i).unwrap();
                }
            }
        }
        prop_assert!(calls.is_empty());
        for (k, name) in names.iter().enumerate() {
            let expected: Vec<usize> = (0..names.len())
                .filter(|&i| names[i] == *name && !not_sent.contains(&i))
                .collect();
            let got = acked_per_key
                .get(name.as_str())
                .cloned()
                .unwrap_or_default();
            prop_assert_eq!(got, expected, "key {} (record {})", name, k);
        }
        Ok(())
    }
}
