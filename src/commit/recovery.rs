//! What a new owner of a lease does first, by commit protocol: a pure decision, so that every
//! combination is tested without I/O.

use crate::lease::model::{Acquired, Intent};
use crate::sink::CommitProtocol;

/// Whether a protocol writes the range of a batch to the lease row before sending it.
pub fn writes_intent(protocol: CommitProtocol) -> bool {
    match protocol {
        CommitProtocol::FlushThenCheckpoint => false,
        CommitProtocol::Idempotent
        | CommitProtocol::Reconciling
        | CommitProtocol::Transactional => true,
    }
}

/// The first steps for a lease as taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoveryPlan {
    /// Nothing unfinished: read on from the checkpoint.
    Nothing,
    /// A batch was begun and its commit record is at the sink (a transaction's group offset
    /// says it committed): only the checkpoint is missing.
    Checkpoint { intent: Intent },
    /// A batch was begun and not checkpointed: read exactly the intent's range again and
    /// commit it as one batch, marked as a recovery for the sink, before anything newer.
    Recover {
        intent: Intent,
        /// Wait until the previous owner's send deadline has passed before looking at the
        /// sink: it may still be writing the batch (reconciling reads the target back).
        wait_for_previous_owner: bool,
    },
}

/// `next_batch`: for the transactional protocol, the number of the shard's next batch as the
/// sink's commit record says (the batches committed so far), read after the previous owner's
/// producer was fenced, so it cannot change under us.
pub fn plan(
    protocol: CommitProtocol,
    intent: Option<&Intent>,
    acquired: Acquired,
    next_batch: Option<u64>,
) -> RecoveryPlan {
    let Some(intent) = intent.filter(|_| writes_intent(protocol)) else {
        // At-least-once sinks write no intents; one left by another configuration is moot:
        // the batch after the checkpoint is read and sent again anyway.
        return RecoveryPlan::Nothing;
    };
    if protocol == CommitProtocol::Transactional && batch_committed(intent, next_batch) {
        return RecoveryPlan::Checkpoint {
            intent: intent.clone(),
        };
    }
    RecoveryPlan::Recover {
        intent: intent.clone(),
        wait_for_previous_owner: protocol == CommitProtocol::Reconciling
            && acquired.previous_owner_may_send(),
    }
}

/// Batch n committed exactly when the commit record counts n+1 batches. An intent without a
/// number (another protocol wrote it) or a count that says anything else (the batch did not
/// commit, or the commit record expired) means: send the range again.
pub fn batch_committed(intent: &Intent, next_batch: Option<u64>) -> bool {
    match (intent.batch, next_batch) {
        (Some(n), Some(next)) => n.checked_add(1) == Some(next),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROTOCOLS: [CommitProtocol; 4] = [
        CommitProtocol::FlushThenCheckpoint,
        CommitProtocol::Idempotent,
        CommitProtocol::Reconciling,
        CommitProtocol::Transactional,
    ];
    const HOW: [Acquired; 4] = [
        Acquired::Free,
        Acquired::Own,
        Acquired::Expired,
        Acquired::Stolen,
    ];

    #[test]
    fn a_batch_committed_only_when_the_count_is_one_past_it() {
        let numbered = Intent::parse("1..2@0#41").unwrap();
        assert!(batch_committed(&numbered, Some(42)));
        for next in [None, Some(0), Some(41), Some(43), Some(u64::MAX)] {
            assert!(!batch_committed(&numbered, next), "{next:?}");
        }
        let max = Intent::parse(&format!("1..2@0#{}", u64::MAX)).unwrap();
        assert!(!batch_committed(&max, Some(0)), "no wrap-around");
        let unnumbered = Intent::parse("1..2@0").unwrap();
        assert!(!batch_committed(&unnumbered, Some(1)));
    }

    #[test]
    fn without_an_intent_there_is_nothing_to_recover() {
        for p in PROTOCOLS {
            for how in HOW {
                for next in [None, Some(0), Some(8)] {
                    assert_eq!(
                        plan(p, None, how, next),
                        RecoveryPlan::Nothing,
                        "{p:?} {how:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_combination() {
        for text in ["10..20@1700000000000", "10..20@1700000000000#7"] {
            let intent = Intent::parse(text).unwrap();
            for p in PROTOCOLS {
                for how in HOW {
                    for next in [None, Some(0), Some(7), Some(8), Some(9)] {
                        let got = plan(p, Some(&intent), how, next);
                        let committed = p == CommitProtocol::Transactional
                            && intent.batch == Some(7)
                            && next == Some(8);
                        let want = match p {
                            CommitProtocol::FlushThenCheckpoint => RecoveryPlan::Nothing,
                            _ if committed => RecoveryPlan::Checkpoint {
                                intent: intent.clone(),
                            },
                            _ => RecoveryPlan::Recover {
                                intent: intent.clone(),
                                // Only reconciling reads what the previous owner wrote, so
                                // only it must wait until that owner can write no more.
                                wait_for_previous_owner: p == CommitProtocol::Reconciling
                                    && matches!(how, Acquired::Own | Acquired::Stolen),
                            },
                        };
                        assert_eq!(got, want, "{text} {p:?} {how:?} {next:?}");
                    }
                }
            }
        }
    }
}
