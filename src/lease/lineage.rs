//! Shard lineage: when a shard may be read, so that every item's changes leave in order across
//! splits, merges and DynamoDB's shard rollover.

use std::collections::{HashMap, HashSet};

use super::model::{Checkpoint, Lease};
use crate::source::Shard;

/// A shard is ready when each parent is checkpointed at SHARD_END, or has no lease and is gone
/// from the stream (trimmed past retention).
pub fn is_ready(shard: &Shard, leases: &HashMap<String, Lease>, listed: &HashSet<&str>) -> bool {
    shard.parents().all(|parent| match leases.get(parent) {
        Some(lease) => lease.checkpoint == Checkpoint::ShardEnd,
        None => !listed.contains(parent),
    })
}

/// The checkpoint a new lease starts from. Only shards that exist when a connector first starts
/// (no leases yet) honour `latest`; every shard discovered later is read from its start, since
/// its records are newer than where the connector already is.
pub fn initial_checkpoint(shard: &Shard, first_start: bool, latest: bool) -> Checkpoint {
    if first_start && latest {
        if shard.ending_sequence_number.is_some() {
            Checkpoint::ShardEnd
        } else {
            Checkpoint::Latest
        }
    } else {
        Checkpoint::TrimHorizon
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn shard(id: &str, parent: Option<&str>, adjacent: Option<&str>) -> Shard {
        Shard {
            shard_id: id.into(),
            parent_shard_id: parent.map(Into::into),
            adjacent_parent_shard_id: adjacent.map(Into::into),
            starting_sequence_number: None,
            ending_sequence_number: None,
        }
    }

    fn lease(id: &str, cp: Checkpoint) -> (String, Lease) {
        (id.to_string(), Lease::new(id, cp, BTreeSet::new()))
    }

    #[test]
    fn waits_for_every_parent() {
        let child = shard("c", Some("p1"), Some("p2"));
        let listed = HashSet::from(["p1", "p2", "c"]);
        let mut leases = HashMap::from([
            lease("p1", Checkpoint::ShardEnd),
            lease("p2", Checkpoint::TrimHorizon),
        ]);
        assert!(!is_ready(&child, &leases, &listed));
        leases.insert(
            "p2".into(),
            Lease::new("p2", Checkpoint::ShardEnd, BTreeSet::new()),
        );
        assert!(is_ready(&child, &leases, &listed));
    }

    #[test]
    fn a_trimmed_parent_does_not_block() {
        let child = shard("c", Some("gone"), None);
        assert!(is_ready(&child, &HashMap::new(), &HashSet::from(["c"])));
        // Listed but not yet leased: wait for its lease.
        assert!(!is_ready(
            &child,
            &HashMap::new(),
            &HashSet::from(["c", "gone"])
        ));
    }

    #[test]
    fn roots_are_ready() {
        assert!(is_ready(
            &shard("r", None, None),
            &HashMap::new(),
            &HashSet::new()
        ));
    }

    #[test]
    fn latest_applies_only_at_first_start_and_to_open_shards() {
        let open = shard("o", None, None);
        let mut closed = shard("c", None, None);
        closed.ending_sequence_number =
            Some(crate::source::sequence::SequenceNumber::parse("9").unwrap());
        assert_eq!(initial_checkpoint(&open, true, true), Checkpoint::Latest);
        assert_eq!(
            initial_checkpoint(&closed, true, true),
            Checkpoint::ShardEnd
        );
        assert_eq!(
            initial_checkpoint(&open, false, true),
            Checkpoint::TrimHorizon
        );
        assert_eq!(
            initial_checkpoint(&open, true, false),
            Checkpoint::TrimHorizon
        );
    }
}
