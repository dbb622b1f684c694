//! Shard lineage: when a shard may be read, so that every item's changes leave in order across
//! splits, merges and DynamoDB's shard rollover.

use std::collections::{HashMap, HashSet};

use super::model::{Checkpoint, Lease};
use crate::source::{Shard, StartingPosition};

/// A shard is ready when each parent is checkpointed at SHARD_END, or is gone from a complete
/// listing of the stream (trimmed past retention: nothing is left to wait for, whether or not
/// its lease remains). With only a partial view (`listing_complete` false: the last listing
/// plus children learned of since) a parent missing from it may be new, so it blocks. A shard
/// that has made progress (a sequence-number checkpoint) was ready before and stays so,
/// whatever became of its parents' leases since.
pub fn is_ready(
    shard: &Shard,
    leases: &HashMap<String, Lease>,
    listed: &HashSet<&str>,
    listing_complete: bool,
) -> bool {
    if let Some(Checkpoint::Sequence(_)) = leases.get(&shard.shard_id).map(|l| &l.checkpoint) {
        return true;
    }
    shard.parents().all(|parent| match leases.get(parent) {
        Some(lease) if lease.checkpoint == Checkpoint::ShardEnd => true,
        _ => listing_complete && !listed.contains(parent),
    })
}

/// Leases of shards that are gone from a complete listing before they were finished: their
/// unread records were trimmed away (data loss, to be reported).
pub fn trimmed_unfinished<'a>(leases: &'a [Lease], listed: &HashSet<&str>) -> Vec<&'a str> {
    leases
        .iter()
        .filter(|l| l.checkpoint != Checkpoint::ShardEnd && !listed.contains(l.lease_key.as_str()))
        .map(|l| l.lease_key.as_str())
        .collect()
}

/// Listed shards that need a lease: those without one, unless a descendant's lease has left
/// TRIM_HORIZON — then the shard was finished and its lease deleted (which waits until its
/// children have started, here as in KCL), and a new lease would read it all again. A descendant
/// lease still at TRIM_HORIZON proves nothing: a merge child's lease may have been created
/// before its other parent's (by an older version, or a sync that stopped half-way), and that
/// parent must still be leased and read or the child waits for it forever.
pub fn shards_needing_leases<'a>(
    shards: &'a [Shard],
    leases: &HashMap<String, Lease>,
) -> Vec<&'a Shard> {
    let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
    for s in shards {
        for p in s.parents() {
            children.entry(p).or_default().push(&s.shard_id);
        }
    }
    for l in leases.values() {
        for p in &l.parent_shard_ids {
            children.entry(p).or_default().push(&l.lease_key);
        }
    }
    let has_started_descendant = |root: &str| {
        let mut stack: Vec<&str> = children.get(root).cloned().unwrap_or_default();
        let mut seen = HashSet::new();
        while let Some(s) = stack.pop() {
            if !seen.insert(s) {
                continue;
            }
            if leases
                .get(s)
                .is_some_and(|l| l.checkpoint != Checkpoint::TrimHorizon)
            {
                return true;
            }
            stack.extend(children.get(s).into_iter().flatten());
        }
        false
    };
    shards
        .iter()
        .filter(|s| !leases.contains_key(&s.shard_id) && !has_started_descendant(&s.shard_id))
        .collect()
}

/// The children of `finished` (just checkpointed at SHARD_END) whose leases may be created at
/// once: those whose other parents (a merge's other parent) already have a lease row. A merge
/// child leased before its other parent would make that parent look finished and deleted to
/// every later sync (see `shards_needing_leases`), so it waits for a complete listing, which
/// leases the parent first. KCL's ShutdownTask defers a merge child the same way.
pub fn children_to_lease<'a>(
    finished: &str,
    children: &'a [Shard],
    leases: &HashMap<String, Lease>,
) -> Vec<&'a Shard> {
    children
        .iter()
        .filter(|c| c.parents().all(|p| p == finished || leases.contains_key(p)))
        .collect()
}

/// True when deciding `children_to_lease` needs the lease table (a merge child).
pub fn has_other_parents(finished: &str, children: &[Shard]) -> bool {
    children.iter().any(|c| c.parents().any(|p| p != finished))
}

/// Finished leases that can be deleted: at SHARD_END, with children recorded, every child's
/// lease has made progress (so no reader needs the parent's checkpoint any more), and the shard
/// is gone from a complete listing. While the stream still lists a shard its finished lease
/// stays: it is what says the shard is done, even when the shards between it and the leased
/// descendants have left the listing and the table.
pub fn finished_parents<'a>(
    leases: &'a HashMap<String, Lease>,
    listed: &HashSet<&str>,
) -> Vec<&'a str> {
    let progressed = |key: &String| {
        leases
            .get(key)
            .is_some_and(|c| matches!(c.checkpoint, Checkpoint::Sequence(_) | Checkpoint::ShardEnd))
    };
    let mut out: Vec<&str> = leases
        .values()
        .filter(|l| l.checkpoint == Checkpoint::ShardEnd && !listed.contains(l.lease_key.as_str()))
        .filter(|l| !l.child_shard_ids.is_empty() && l.child_shard_ids.iter().all(progressed))
        .map(|l| l.lease_key.as_str())
        .collect();
    out.sort();
    out
}

/// The checkpoint a new lease starts from. Only shards that exist when a connector first starts
/// (no leases yet) honour `latest` and a timestamp (KCL's AT_TIMESTAMP sentinel: the reader
/// opens the shard at that time); every shard discovered later is read from its start, since
/// its records are newer than where the connector already is.
pub fn initial_checkpoint(
    shard: &Shard,
    first_start: bool,
    position: StartingPosition,
) -> Checkpoint {
    match position {
        _ if !first_start => Checkpoint::TrimHorizon,
        StartingPosition::Latest if shard.ending_sequence_number.is_some() => Checkpoint::ShardEnd,
        StartingPosition::Latest => Checkpoint::Latest,
        StartingPosition::AtTimestamp(_) => Checkpoint::AtTimestamp,
        StartingPosition::TrimHorizon => Checkpoint::TrimHorizon,
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
        assert!(!is_ready(&child, &leases, &listed, true));
        leases.insert(
            "p2".into(),
            Lease::new("p2", Checkpoint::ShardEnd, BTreeSet::new()),
        );
        assert!(is_ready(&child, &leases, &listed, true));
        assert!(is_ready(&child, &leases, &listed, false));
    }

    #[test]
    fn a_trimmed_parent_does_not_block() {
        let child = shard("c", Some("gone"), None);
        let only_child = HashSet::from(["c"]);
        assert!(is_ready(&child, &HashMap::new(), &only_child, true));
        // Listed but not yet leased: wait for its lease.
        assert!(!is_ready(
            &child,
            &HashMap::new(),
            &HashSet::from(["c", "gone"]),
            true
        ));
        // Trimmed before it was finished: its lease remains, but nothing is left to read.
        let leases = HashMap::from([lease("gone", Checkpoint::TrimHorizon)]);
        assert!(is_ready(&child, &leases, &only_child, true));
        let rows = [leases["gone"].clone()];
        assert_eq!(trimmed_unfinished(&rows, &only_child), ["gone"]);
        // Missing from a partial view only: it may be new; wait for a complete listing.
        assert!(!is_ready(&child, &leases, &only_child, false));
        assert!(!is_ready(&child, &HashMap::new(), &only_child, false));
    }

    #[test]
    fn a_child_that_made_progress_stays_ready() {
        let child = shard("c", Some("p"), None);
        let listed = HashSet::from(["p", "c"]);
        let leases = HashMap::from([lease("c", Checkpoint::Sequence(seq("5")))]);
        assert!(
            is_ready(&child, &leases, &listed, true),
            "parent lease deleted, child in progress"
        );
        let leases = HashMap::from([lease("c", Checkpoint::TrimHorizon)]);
        assert!(!is_ready(&child, &leases, &listed, true));
    }

    fn seq(s: &str) -> crate::source::sequence::SequenceNumber {
        crate::source::sequence::SequenceNumber::parse(s).unwrap()
    }

    fn with_parents(
        id: &str,
        cp: Checkpoint,
        parents: &[&str],
        children: &[&str],
    ) -> (String, Lease) {
        let mut l = Lease::new(id, cp, parents.iter().map(|p| p.to_string()).collect());
        l.child_shard_ids = children.iter().map(|c| c.to_string()).collect();
        (id.to_string(), l)
    }

    #[test]
    fn finished_ancestors_are_not_leased_again() {
        // p → c → g, all still listed (within retention); p's and c's leases were deleted.
        let shards = [
            shard("p", None, None),
            shard("c", Some("p"), None),
            shard("g", Some("c"), None),
            shard("new", None, None),
        ];
        let leases = HashMap::from([with_parents(
            "g",
            Checkpoint::Sequence(seq("9")),
            &["c"],
            &[],
        )]);
        let need: Vec<&str> = shards_needing_leases(&shards, &leases)
            .iter()
            .map(|s| s.shard_id.as_str())
            .collect();
        assert_eq!(need, ["new"]);
        // A fresh table: every listed shard gets a lease.
        let need = shards_needing_leases(&shards, &HashMap::new());
        assert_eq!(need.len(), 4);
    }

    #[test]
    fn a_merge_parent_without_a_lease_is_leased_despite_its_child() {
        // Seed 968: 4 and 6 merged into 7. 7's lease was created when 4 ended, before 6 had
        // one; 7 has not started. 6 must be leased (and read), or 7 waits for it forever.
        let shards = [
            shard("2", None, None),
            shard("4", None, None),
            shard("6", Some("2"), None),
            shard("7", Some("6"), Some("4")),
        ];
        let mut leases = HashMap::from([
            with_parents("2", Checkpoint::ShardEnd, &[], &["6"]),
            with_parents("4", Checkpoint::ShardEnd, &[], &["7"]),
            with_parents("7", Checkpoint::TrimHorizon, &["4", "6"], &[]),
        ]);
        let need: Vec<&str> = shards_needing_leases(&shards, &leases)
            .iter()
            .map(|s| s.shard_id.as_str())
            .collect();
        assert_eq!(need, ["6"]);
        // Once 7 has started, 6 was finished (and may have been deleted by KCL).
        leases.insert(
            "7".into(),
            with_parents("7", Checkpoint::Sequence(seq("1")), &["4", "6"], &[]).1,
        );
        assert!(shards_needing_leases(&shards, &leases).is_empty());
    }

    #[test]
    fn a_merge_child_is_leased_at_shard_end_only_after_its_other_parent() {
        let children = [shard("7", Some("6"), Some("4"))];
        let ids = |v: Vec<&Shard>| v.iter().map(|s| s.shard_id.clone()).collect::<Vec<_>>();
        assert!(has_other_parents("4", &children));
        let only_4 = HashMap::from([lease("4", Checkpoint::ShardEnd)]);
        assert!(
            children_to_lease("4", &children, &only_4).is_empty(),
            "6 has no lease yet: the complete listing leases both"
        );
        let both = HashMap::from([
            lease("4", Checkpoint::ShardEnd),
            lease("6", Checkpoint::TrimHorizon),
        ]);
        assert_eq!(ids(children_to_lease("4", &children, &both)), ["7"]);
        // A split or rollover: the one parent is the shard that ended; no table needed.
        let split = [shard("a", Some("p"), None), shard("b", Some("p"), None)];
        assert!(!has_other_parents("p", &split));
        assert_eq!(
            ids(children_to_lease("p", &split, &HashMap::new())),
            ["a", "b"]
        );
    }

    #[test]
    fn parents_are_deleted_only_after_every_child_made_progress() {
        let mut leases = HashMap::from([
            with_parents("p", Checkpoint::ShardEnd, &[], &["c1", "c2"]),
            with_parents("c1", Checkpoint::Sequence(seq("3")), &["p"], &[]),
            with_parents("c2", Checkpoint::TrimHorizon, &["p"], &[]),
            with_parents("q", Checkpoint::ShardEnd, &[], &[]),
        ]);
        assert!(
            finished_parents(&leases, &HashSet::new()).is_empty(),
            "c2 has not started; q's children are unknown"
        );
        leases.insert(
            "c2".into(),
            with_parents("c2", Checkpoint::ShardEnd, &["p"], &[]).1,
        );
        assert_eq!(finished_parents(&leases, &HashSet::new()), ["p"]);
        assert!(
            finished_parents(&leases, &HashSet::from(["p"])).is_empty(),
            "still listed: kept"
        );
        leases.remove("c1");
        assert!(
            finished_parents(&leases, &HashSet::new()).is_empty(),
            "a child without a lease is not known to have progressed"
        );
    }

    #[test]
    fn roots_are_ready() {
        assert!(is_ready(
            &shard("r", None, None),
            &HashMap::new(),
            &HashSet::new(),
            false
        ));
    }

    #[test]
    fn latest_and_timestamps_apply_only_at_first_start() {
        use StartingPosition::*;
        let open = shard("o", None, None);
        let mut closed = shard("c", None, None);
        closed.ending_sequence_number =
            Some(crate::source::sequence::SequenceNumber::parse("9").unwrap());
        assert_eq!(initial_checkpoint(&open, true, Latest), Checkpoint::Latest);
        assert_eq!(
            initial_checkpoint(&closed, true, Latest),
            Checkpoint::ShardEnd
        );
        assert_eq!(
            initial_checkpoint(&open, true, AtTimestamp(5)),
            Checkpoint::AtTimestamp
        );
        assert_eq!(
            initial_checkpoint(&closed, true, AtTimestamp(5)),
            Checkpoint::AtTimestamp
        );
        for later in [Latest, AtTimestamp(5), TrimHorizon] {
            assert_eq!(
                initial_checkpoint(&open, false, later),
                Checkpoint::TrimHorizon
            );
        }
        assert_eq!(
            initial_checkpoint(&open, true, TrimHorizon),
            Checkpoint::TrimHorizon
        );
    }
}
