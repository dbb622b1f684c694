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
    /// A batch was begun and not checkpointed: unless the sink says it was committed, read
    /// exactly the intent's range again and commit it as one batch, marked as a recovery for
    /// the sink, before anything newer.
    Recover {
        intent: Intent,
        /// Ask the sink whether the batch was committed (a transaction's commit record); if
        /// it was, only the checkpoint is missing.
        ask_sink: bool,
        /// Wait until the previous owner's send deadline has passed before looking at the
        /// sink: it may still be writing the batch (reconciling reads the target back).
        wait_for_previous_owner: bool,
    },
}

pub fn plan(protocol: CommitProtocol, intent: Option<&Intent>, acquired: Acquired) -> RecoveryPlan {
    let Some(intent) = intent.filter(|_| writes_intent(protocol)) else {
        // At-least-once sinks write no intents; one left by another configuration is moot:
        // the batch after the checkpoint is read and sent again anyway.
        return RecoveryPlan::Nothing;
    };
    RecoveryPlan::Recover {
        intent: intent.clone(),
        ask_sink: protocol == CommitProtocol::Transactional,
        wait_for_previous_owner: protocol == CommitProtocol::Reconciling
            && acquired.previous_owner_may_send(),
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
    fn without_an_intent_there_is_nothing_to_recover() {
        for p in PROTOCOLS {
            for how in HOW {
                assert_eq!(plan(p, None, how), RecoveryPlan::Nothing, "{p:?} {how:?}");
            }
        }
    }

    #[test]
    fn every_combination() {
        let intent = Intent::parse("10..20@1700000000000").unwrap();
        for p in PROTOCOLS {
            for how in HOW {
                let got = plan(p, Some(&intent), how);
                let want = match p {
                    CommitProtocol::FlushThenCheckpoint => RecoveryPlan::Nothing,
                    _ => RecoveryPlan::Recover {
                        intent: intent.clone(),
                        ask_sink: p == CommitProtocol::Transactional,
                        // Only reconciling reads what the previous owner wrote, so only it
                        // must wait until that owner can write no more.
                        wait_for_previous_owner: p == CommitProtocol::Reconciling
                            && matches!(how, Acquired::Own | Acquired::Stolen),
                    },
                };
                assert_eq!(got, want, "{p:?} {how:?}");
            }
        }
    }
}
