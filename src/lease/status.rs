//! What `shardbridge status` says of each shard, decided from the lease rows alone: a pure
//! function of the rows, the time and the failover time, so every case is tested without I/O.

use std::collections::HashMap;

use super::model::{heartbeat_key, is_heartbeat, Checkpoint, Lease};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardState {
    /// Owned, but a parent shard is not finished yet: the owner waits (per-item order).
    WaitingOnParents,
    /// Owned by a live worker and being read.
    Reading,
    /// Checkpointed at SHARD_END: every record delivered.
    Ended,
    /// Nobody holds it: the next worker to look takes it.
    Unowned,
    /// Its owner has not renewed it within the failover time: another worker may take it.
    Expired,
}

impl ShardState {
    pub fn as_str(self) -> &'static str {
        match self {
            ShardState::WaitingOnParents => "waiting_on_parents",
            ShardState::Reading => "reading",
            ShardState::Ended => "ended",
            ShardState::Unowned => "unowned",
            ShardState::Expired => "expired",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardStatus {
    pub shard_id: String,
    pub parents: Vec<String>,
    pub owner: Option<String>,
    pub lease_counter: u64,
    pub checkpoint: String,
    pub pending_intent: Option<String>,
    pub state: ShardState,
    /// How far the checkpoint was behind the stream when it was written: the age of the
    /// newest record it covers at that moment (0 at SHARD_END); None when the row cannot tell.
    pub behind_ms: Option<i64>,
    /// How long ago the checkpoint was written.
    pub checkpoint_age_ms: Option<i64>,
    /// How long ago the owner last took or renewed the lease.
    pub renewed_ms_ago: Option<i64>,
}

/// One status per lease, in shard id order. `now`: ms since the epoch.
pub fn shard_statuses(leases: &[Lease], now: i64, failover_ms: u64) -> Vec<ShardStatus> {
    let by_key: HashMap<&str, &Lease> = leases.iter().map(|l| (l.lease_key.as_str(), l)).collect();
    let mut out: Vec<ShardStatus> = leases
        .iter()
        .filter(|l| !is_heartbeat(&l.lease_key))
        .map(|l| {
            // Renewal mode heartbeat: the owner's heartbeat row says when it was last alive;
            // the lease's own time is when it was taken, or renewed by a per-lease renewer.
            let beat = l
                .lease_owner
                .as_deref()
                .and_then(|o| by_key.get(heartbeat_key(o).as_str()))
                .and_then(|h| h.renewed_at_millis);
            let renewed = match (l.renewed_at_millis, beat) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            let renewed_ms_ago = renewed.map(|t| (now - t).max(0));
            // A parent without a row was finished and deleted (or trimmed): not waited on.
            let parent_open = l.parent_shard_ids.iter().any(|p| {
                by_key
                    .get(p.as_str())
                    .is_some_and(|pl| pl.checkpoint != Checkpoint::ShardEnd)
            });
            let state = if l.checkpoint == Checkpoint::ShardEnd {
                ShardState::Ended
            } else if l.lease_owner.is_none() {
                ShardState::Unowned
            } else if renewed_ms_ago.is_some_and(|ago| ago > failover_ms as i64) {
                ShardState::Expired
            } else if parent_open {
                ShardState::WaitingOnParents
            } else {
                ShardState::Reading
            };
            let behind_ms = if state == ShardState::Ended {
                Some(0)
            } else {
                match (l.checkpointed_at_millis, l.checkpoint_record_millis) {
                    (Some(at), Some(record)) => Some((at - record).max(0)),
                    _ => None,
                }
            };
            ShardStatus {
                shard_id: l.lease_key.clone(),
                parents: l.parent_shard_ids.iter().cloned().collect(),
                owner: l.lease_owner.clone(),
                lease_counter: l.lease_counter,
                checkpoint: l.checkpoint.as_string(),
                pending_intent: l.pending_checkpoint.as_ref().map(|i| i.to_string()),
                state,
                behind_ms,
                checkpoint_age_ms: l.checkpointed_at_millis.map(|t| (now - t).max(0)),
                renewed_ms_ago,
            }
        })
        .collect();
    out.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
    out
}

/// Whether an operator may move the checkpoint without `--force`: nobody holds the lease, or
/// its holder has not renewed it within the failover time (a row without a renewal time,
/// written by KCL or an older version, counts as held while it has an owner).
pub fn held_by_live_owner(lease: &Lease, now: i64, failover_ms: u64) -> bool {
    lease.lease_owner.is_some()
        && lease.checkpoint != Checkpoint::ShardEnd
        && lease
            .renewed_at_millis
            .map_or(true, |t| now - t <= failover_ms as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::sequence::SequenceNumber;
    use std::collections::BTreeSet;

    const NOW: i64 = 1_800_000_000_000;

    fn lease(key: &str, owner: Option<&str>, cp: Checkpoint, parents: &[&str]) -> Lease {
        let mut l = Lease::new(
            key,
            cp,
            parents
                .iter()
                .map(|p| p.to_string())
                .collect::<BTreeSet<_>>(),
        );
        l.lease_owner = owner.map(str::to_string);
        l.renewed_at_millis = owner.map(|_| NOW - 1_000);
        l
    }

    fn seq(n: u64) -> Checkpoint {
        Checkpoint::Sequence(SequenceNumber::parse(&n.to_string()).unwrap())
    }

    #[test]
    fn every_state() {
        let mut expired = lease("e", Some("w2"), seq(5), &[]);
        expired.renewed_at_millis = Some(NOW - 10_001);
        let mut kcl_row = lease("k", Some("java"), seq(5), &[]);
        kcl_row.renewed_at_millis = None;
        let rows = vec![
            lease("parent", Some("w1"), seq(9), &[]),
            lease("child", Some("w1"), Checkpoint::TrimHorizon, &["parent"]),
            lease("orphan", Some("w1"), Checkpoint::TrimHorizon, &["deleted"]),
            lease("done", None, Checkpoint::ShardEnd, &[]),
            lease("free", None, Checkpoint::TrimHorizon, &[]),
            expired,
            kcl_row,
        ];
        let got: Vec<(String, &str)> = shard_statuses(&rows, NOW, 10_000)
            .into_iter()
            .map(|s| (s.shard_id, s.state.as_str()))
            .collect();
        let want = [
            ("child", "waiting_on_parents"),
            ("done", "ended"),
            ("e", "expired"),
            ("free", "unowned"),
            ("k", "reading"),
            ("orphan", "reading"),
            ("parent", "reading"),
        ];
        let want: Vec<(String, &str)> = want.iter().map(|(k, s)| (k.to_string(), *s)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_finished_parent_no_longer_holds_its_child() {
        let rows = vec![
            lease("parent", None, Checkpoint::ShardEnd, &[]),
            lease("child", Some("w1"), Checkpoint::TrimHorizon, &["parent"]),
        ];
        let child = &shard_statuses(&rows, NOW, 10_000)[0];
        assert_eq!(
            (child.shard_id.as_str(), child.state),
            ("child", ShardState::Reading)
        );
    }

    #[test]
    fn behind_is_the_age_of_the_newest_record_when_it_was_checkpointed() {
        let mut l = lease("s", Some("w"), seq(5), &[]);
        assert_eq!(shard_statuses(&[l.clone()], NOW, 10_000)[0].behind_ms, None);
        l.checkpointed_at_millis = Some(NOW - 2_000);
        l.checkpoint_record_millis = Some(NOW - 2_500);
        let s = &shard_statuses(&[l.clone()], NOW, 10_000)[0];
        assert_eq!((s.behind_ms, s.checkpoint_age_ms), (Some(500), Some(2_000)));
        l.checkpoint = Checkpoint::ShardEnd;
        assert_eq!(shard_statuses(&[l], NOW, 10_000)[0].behind_ms, Some(0));
    }

    #[test]
    fn a_live_owner_holds_the_lease_an_expired_one_does_not() {
        let mut l = lease("s", Some("w"), seq(5), &[]);
        assert!(held_by_live_owner(&l, NOW, 10_000));
        l.renewed_at_millis = Some(NOW - 10_001);
        assert!(!held_by_live_owner(&l, NOW, 10_000));
        l.renewed_at_millis = None;
        assert!(held_by_live_owner(&l, NOW, 10_000), "unknown: held");
        l.lease_owner = None;
        assert!(!held_by_live_owner(&l, NOW, 10_000));
    }
}
