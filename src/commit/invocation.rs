//! Lambda's rules for a batch handed to a function (the `http` sink): what is sent next after
//! a success, a partial batch response (`batchItemFailures`) or a function error, when a
//! failed part is bisected, and when it is set aside. Pure: the commit driver does the I/O.
//!
//! The batch is worked through front to back as a queue of parts (index ranges of its records),
//! so an item's changes are always handled in their order:
//! - success: the part is done;
//! - partial: the records before the lowest failed one are done; the rest of the part is tried
//!   again (one failure of that part);
//! - function error (a non-2xx answer, a timeout, no connection): with bisection, a part of
//!   more than one record is split in two halves, tried one after the other; bisecting does not
//!   count as a retry, so a poison record is isolated however small `max_retry_attempts` is.
//!   A part that cannot be split (or without bisection) counts one failure;
//! - a part whose failures exceed `max_retry_attempts` is set aside (Lambda's
//!   `RetryAttemptsExhausted`), and the batch goes on with the next part (the driver also sets
//!   a failed part aside once its records are older than `max_record_age_ms`).

use std::collections::VecDeque;
use std::ops::Range;

/// The mapping's settings that decide what happens after a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// Lambda's BisectBatchOnFunctionError.
    pub bisect: bool,
    /// Lambda's MaximumRetryAttempts (None: retried for as long as it fails).
    pub max_retry_attempts: Option<u32>,
}

/// How one invocation of the front part ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// A partial batch response: `handled` records of the part (from its start) are done, the
    /// one after them is the lowest the function reported failed.
    Partial {
        handled: usize,
    },
    /// A function error: nothing of the part is known to be done.
    Error,
}

/// What the driver does after recording an outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send the front part (again or for the first time); `after_failure` when the previous
    /// invocation failed, so the driver backs off first.
    Send {
        part: Range<usize>,
        after_failure: bool,
    },
    /// Set this part aside (it failed `attempts` times); then ask again.
    SetAside { part: Range<usize>, attempts: u32 },
    /// Every record of the batch is done or set aside.
    Done,
}

/// A batch's records (their sizes, in order) cut into invocations of at most `max_records`
/// records and `max_bytes` bytes (a record larger than that is an invocation of its own).
pub fn chunks(sizes: &[usize], max_records: usize, max_bytes: usize) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::new();
    let mut bytes = 0;
    for (i, size) in sizes.iter().enumerate() {
        match out.last_mut() {
            Some(r) if r.len() < max_records && bytes + size <= max_bytes => {
                r.end = i + 1;
                bytes += size;
            }
            _ => {
                out.push(i..i + 1);
                bytes = *size;
            }
        }
    }
    out
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Part {
    range: Range<usize>,
    failures: u32,
}

/// A batch of `len` records being worked through.
#[derive(Debug)]
pub struct Invocations {
    rules: Rules,
    parts: VecDeque<Part>,
    last_failed: bool,
    bisections: u64,
}

impl Invocations {
    /// A batch cut into `parts` (consecutive, in order: see `chunks`).
    pub fn new(parts: Vec<Range<usize>>, rules: Rules) -> Self {
        let parts = parts
            .into_iter()
            .filter(|r| !r.is_empty())
            .map(|range| Part { range, failures: 0 })
            .collect();
        Invocations {
            rules,
            parts,
            last_failed: false,
            bisections: 0,
        }
    }

    /// What to do now.
    pub fn next(&self) -> Decision {
        let Some(front) = self.parts.front() else {
            return Decision::Done;
        };
        let exhausted = self
            .rules
            .max_retry_attempts
            .is_some_and(|max| front.failures > max);
        if exhausted {
            Decision::SetAside {
                part: front.range.clone(),
                attempts: front.failures,
            }
        } else {
            Decision::Send {
                part: front.range.clone(),
                after_failure: self.last_failed,
            }
        }
    }

    /// The front part was set aside.
    pub fn set_aside(&mut self) {
        self.parts.pop_front();
        self.last_failed = false;
    }

    /// Records before this index are done or set aside: the batch's handled prefix.
    pub fn handled(&self, len: usize) -> usize {
        self.parts.front().map_or(len, |p| p.range.start)
    }

    /// How often the front part failed so far.
    pub fn failures(&self) -> u32 {
        self.parts.front().map_or(0, |p| p.failures)
    }

    /// Splits done so far.
    pub fn bisections(&self) -> u64 {
        self.bisections
    }

    /// Records how the invocation of the front part ended.
    pub fn record(&mut self, outcome: Outcome) {
        let Some(front) = self.parts.front_mut() else {
            return;
        };
        match outcome {
            Outcome::Success => {
                self.parts.pop_front();
                self.last_failed = false;
            }
            Outcome::Partial { handled } if handled >= front.range.len() => {
                // Every failure named lies outside the part: treated as the sink said, done.
                self.parts.pop_front();
                self.last_failed = false;
            }
            Outcome::Partial { handled } => {
                front.range.start += handled;
                front.failures += 1;
                self.last_failed = true;
            }
            Outcome::Error => {
                self.last_failed = true;
                let split = if self.rules.bisect && front.range.len() > 1 {
                    let middle = front.range.start + front.range.len() / 2;
                    let tail = middle..front.range.end;
                    front.range.end = middle;
                    Some(Part {
                        range: tail,
                        failures: front.failures,
                    })
                } else {
                    front.failures += 1;
                    None
                };
                if let Some(tail) = split {
                    self.parts.insert(1, tail);
                    self.bisections += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FOREVER: Rules = Rules {
        bisect: false,
        max_retry_attempts: None,
    };

    /// A batch of `n` records as one invocation.
    fn whole(n: usize) -> Vec<Range<usize>> {
        chunks(&vec![1; n], n, usize::MAX)
    }

    fn send(part: Range<usize>, after_failure: bool) -> Decision {
        Decision::Send {
            part,
            after_failure,
        }
    }

    #[test]
    fn a_batch_is_cut_into_invocations_by_count_and_bytes() {
        assert_eq!(chunks(&[1, 1, 1, 1, 1], 2, 100), [0..2, 2..4, 4..5]);
        assert_eq!(chunks(&[40, 40, 500, 10], 100, 100), [0..2, 2..3, 3..4]);
        assert_eq!(chunks(&[], 2, 100), Vec::<Range<usize>>::new());
        let mut inv = Invocations::new(chunks(&[1, 1, 1], 2, 100), FOREVER);
        assert_eq!(inv.next(), send(0..2, false));
        inv.record(Outcome::Success);
        assert_eq!(inv.handled(3), 2);
        assert_eq!(inv.next(), send(2..3, false));
    }

    #[test]
    fn a_successful_batch_is_one_invocation() {
        let mut inv = Invocations::new(whole(10), FOREVER);
        assert_eq!(inv.next(), send(0..10, false));
        inv.record(Outcome::Success);
        assert_eq!(inv.next(), Decision::Done);
        assert_eq!(inv.handled(10), 10);
        assert_eq!(Invocations::new(vec![], FOREVER).next(), Decision::Done);
    }

    #[test]
    fn a_partial_response_resends_from_the_lowest_failed_record() {
        let mut inv = Invocations::new(whole(10), FOREVER);
        inv.record(Outcome::Partial { handled: 4 });
        assert_eq!(inv.handled(10), 4, "the records before it are done");
        assert_eq!(inv.next(), send(4..10, true));
        inv.record(Outcome::Partial { handled: 0 });
        assert_eq!(
            inv.next(),
            send(4..10, true),
            "the first record failed again"
        );
        inv.record(Outcome::Success);
        assert_eq!(inv.next(), Decision::Done);
    }

    #[test]
    fn without_bisection_an_error_retries_the_batch_until_the_limit() {
        let rules = Rules {
            bisect: false,
            max_retry_attempts: Some(2),
        };
        let mut inv = Invocations::new(whole(6), rules);
        for _ in 0..3 {
            assert!(matches!(inv.next(), Decision::Send { part, .. } if part == (0..6)));
            inv.record(Outcome::Error);
        }
        assert_eq!(
            inv.next(),
            Decision::SetAside {
                part: 0..6,
                attempts: 3
            },
            "the first invocation and two retries"
        );
        assert_eq!(inv.failures(), 3);
        inv.set_aside();
        assert_eq!(inv.next(), Decision::Done);
        assert_eq!(inv.handled(6), 6);
    }

    #[test]
    fn bisection_isolates_a_poison_record_even_with_no_retries() {
        let rules = Rules {
            bisect: true,
            max_retry_attempts: Some(0),
        };
        let poison = 5;
        let mut inv = Invocations::new(whole(8), rules);
        let mut handled = Vec::new();
        let mut aside = Vec::new();
        loop {
            match inv.next() {
                Decision::Send { part, .. } => {
                    if part.contains(&poison) {
                        inv.record(Outcome::Error);
                    } else {
                        handled.extend(part);
                        inv.record(Outcome::Success);
                    }
                }
                Decision::SetAside { part, attempts } => {
                    assert_eq!(attempts, 1);
                    aside.extend(part);
                    inv.set_aside();
                }
                Decision::Done => break,
            }
        }
        assert_eq!(aside, [poison]);
        assert_eq!(handled, [0, 1, 2, 3, 4, 6, 7], "in order, poison left out");
        assert_eq!(inv.bisections(), 3, "8 -> 4 -> 2 -> 1");
    }

    #[test]
    fn a_partial_response_with_bisection_resends_only_the_rest() {
        let rules = Rules {
            bisect: true,
            max_retry_attempts: None,
        };
        let mut inv = Invocations::new(whole(10), rules);
        inv.record(Outcome::Partial { handled: 7 });
        assert_eq!(inv.next(), send(7..10, true));
        assert_eq!(inv.bisections(), 0);
    }

    #[test]
    fn failures_named_outside_the_part_count_as_success() {
        let mut inv = Invocations::new(whole(3), FOREVER);
        inv.record(Outcome::Partial { handled: 3 });
        assert_eq!(inv.next(), Decision::Done);
    }

    proptest! {
        /// Whatever the function answers, every record ends handled or set aside exactly once,
        /// in order, and a part is never sent past the retry limit.
        #[test]
        fn every_record_ends_handled_or_set_aside_in_order(
            len in 0usize..40,
            bisect: bool,
            max in proptest::option::of(0u32..3),
            answers in proptest::collection::vec((0u8..3, 0usize..40), 1..400),
        ) {
            let rules = Rules { bisect, max_retry_attempts: max.or(Some(5)) };
            let sizes = vec![10; len];
            let mut inv = Invocations::new(chunks(&sizes, 7, 50), rules);
            let mut done = Vec::new();
            let mut answers = answers.into_iter().cycle();
            let mut steps = 0;
            loop {
                steps += 1;
                prop_assert!(steps < 10_000, "terminates");
                match inv.next() {
                    Decision::Send { part, .. } => {
                        prop_assert!(!part.is_empty());
                        prop_assert_eq!(part.start, done.len(), "the front of what is left");
                        let (kind, n) = answers.next().unwrap();
                        match kind {
                            0 => {
                                done.extend(part.clone());
                                inv.record(Outcome::Success);
                            }
                            1 => {
                                let handled = n % (part.len() + 1);
                                done.extend(part.start..part.start + handled);
                                inv.record(Outcome::Partial { handled });
                                if handled == part.len() {
                                    prop_assert_eq!(inv.handled(len), part.end);
                                }
                            }
                            _ => inv.record(Outcome::Error),
                        }
                    }
                    Decision::SetAside { part, attempts } => {
                        prop_assert!(attempts > rules.max_retry_attempts.unwrap());
                        prop_assert_eq!(part.start, done.len());
                        done.extend(part);
                        inv.set_aside();
                    }
                    Decision::Done => break,
                }
                prop_assert_eq!(inv.handled(len), done.len());
            }
            prop_assert_eq!(done, (0..len).collect::<Vec<_>>());
        }
    }
}
