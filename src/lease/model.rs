//! A lease row of the KCL-compatible lease table, and its conversion to and from DynamoDB items.
//! Attribute names and types are KCL's, so a table written by a KCL application (or the
//! DynamoDB Streams Kinesis Adapter) reads here, and the other way round.

use std::collections::{BTreeSet, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;

use crate::source::sequence::SequenceNumber;

pub const LEASE_KEY: &str = "leaseKey";
pub const LEASE_OWNER: &str = "leaseOwner";
pub const LEASE_COUNTER: &str = "leaseCounter";
pub const CHECKPOINT: &str = "checkpoint";
pub const CHECKPOINT_SUB_SEQUENCE_NUMBER: &str = "checkpointSubSequenceNumber";
pub const OWNER_SWITCHES_SINCE_CHECKPOINT: &str = "ownerSwitchesSinceCheckpoint";
pub const PARENT_SHARD_ID: &str = "parentShardId";
pub const CHILD_SHARD_IDS: &str = "childShardIds";
pub const PENDING_CHECKPOINT: &str = "pendingCheckpoint";
/// Extra attributes (KCL ignores them), for `shardbridge status`: when the owner last took or
/// renewed the lease, when the checkpoint was written, and when the newest record it covers
/// entered the stream (ms since the epoch, the writer's clock).
pub const RENEWED_AT_MILLIS: &str = "renewedAtMillis";
pub const CHECKPOINTED_AT_MILLIS: &str = "checkpointedAtMillis";
pub const CHECKPOINT_RECORD_MILLIS: &str = "checkpointRecordMillis";
/// On the lease of a table snapshot's segment: when the snapshot began (ms since the epoch, the
/// clock of the worker that created the lease). The stream is read from a little before the
/// earliest of them.
pub const SNAPSHOT_STARTED_AT_MILLIS: &str = "snapshotStartedAtMillis";

/// The lease key of a worker's heartbeat row (renewal mode `heartbeat`). Its `leaseOwner` is the
/// worker, its `leaseCounter` is bumped by every heartbeat. Shard ids and snapshot segments
/// never contain a colon.
pub fn heartbeat_key(worker: &str) -> String {
    format!("{HEARTBEAT_PREFIX}{worker}")
}

pub const HEARTBEAT_PREFIX: &str = "heartbeat:";

/// Whether a row of the lease table is a worker's heartbeat, not a lease.
pub fn is_heartbeat(key: &str) -> bool {
    key.starts_with(HEARTBEAT_PREFIX)
}

/// Where a shard's processing stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checkpoint {
    TrimHorizon,
    Latest,
    /// KCL's sentinel for a timestamp start; the timestamp lives in the configuration.
    AtTimestamp,
    /// Every record up to and including this one was delivered.
    Sequence(SequenceNumber),
    /// The shard is closed and every record of it was delivered.
    ShardEnd,
}

impl Checkpoint {
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "TRIM_HORIZON" => Checkpoint::TrimHorizon,
            "LATEST" => Checkpoint::Latest,
            "AT_TIMESTAMP" => Checkpoint::AtTimestamp,
            "SHARD_END" => Checkpoint::ShardEnd,
            other => Checkpoint::Sequence(
                SequenceNumber::parse_with_resume(other).map_err(|e| format!("checkpoint: {e}"))?,
            ),
        })
    }

    pub fn as_string(&self) -> String {
        match self {
            Checkpoint::TrimHorizon => "TRIM_HORIZON".into(),
            Checkpoint::Latest => "LATEST".into(),
            Checkpoint::AtTimestamp => "AT_TIMESTAMP".into(),
            Checkpoint::ShardEnd => "SHARD_END".into(),
            Checkpoint::Sequence(s) => s.checkpoint_text(),
        }
    }
}

/// A write-ahead intent as stored in the lease row (`pendingCheckpoint`), for the commit
/// protocols that write one (README, "Guarantees"):
/// `first..last@millis`, the range of the batch being written and when its writing began
/// (ms since the epoch, the writer's clock). The time tells a reconciling sink how far back
/// to read its target; an intent without it (`first..last`) is read back from the start.
/// The transactional protocol adds the batch's number: `first..last@millis#n` (its commit
/// record at the sink says n+1 once the batch committed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Intent {
    pub first: SequenceNumber,
    pub last: SequenceNumber,
    pub written_millis: Option<i64>,
    /// The batch's number, for the transactional protocol.
    pub batch: Option<u64>,
}

impl Intent {
    pub fn parse(s: &str) -> Option<Intent> {
        let (s, batch) = match s.split_once('#') {
            Some((rest, n)) => (rest, Some(n.parse().ok()?)),
            None => (s, None),
        };
        let (range, written_millis) = match s.split_once('@') {
            Some((range, millis)) => (range, Some(millis.parse().ok()?)),
            None => (s, None),
        };
        let (first, last) = range.split_once("..")?;
        Some(Intent {
            first: SequenceNumber::parse(first).ok()?,
            last: SequenceNumber::parse(last).ok()?,
            written_millis,
            batch,
        })
    }
}

impl std::fmt::Display for Intent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..{}", self.first, self.last)?;
        if let Some(millis) = self.written_millis {
            write!(f, "@{millis}")?;
        }
        if let Some(n) = self.batch {
            write!(f, "#{n}")?;
        }
        Ok(())
    }
}

/// How a worker came to hold a lease: decides whether its previous owner may still be sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquired {
    /// Nobody held it.
    Free,
    /// It was this worker's (by id) from an earlier run of the process.
    Own,
    /// Its owner had not renewed it for the failover time.
    Expired,
    /// Taken from a live owner to balance the fleet.
    Stolen,
}

impl Acquired {
    pub fn as_str(self) -> &'static str {
        match self {
            Acquired::Free => "free",
            Acquired::Own => "own",
            Acquired::Expired => "expired",
            Acquired::Stolen => "stolen",
        }
    }

    /// Whether the previous holder may still be sending (until its own send deadline): a
    /// live owner it was stolen from, or an earlier incarnation of this worker whose last
    /// calls may still be in flight. An expired owner has been silent for the failover time.
    pub fn previous_owner_may_send(self) -> bool {
        matches!(self, Acquired::Own | Acquired::Stolen)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub lease_key: String,
    pub lease_owner: Option<String>,
    /// Bumped on every renew and take; every write is conditional on it (the fencing token).
    pub lease_counter: u64,
    pub checkpoint: Checkpoint,
    pub checkpoint_sub_sequence_number: u64,
    pub owner_switches_since_checkpoint: u64,
    pub parent_shard_ids: BTreeSet<String>,
    pub child_shard_ids: BTreeSet<String>,
    /// Write-ahead intent of the batch in flight, for the exactly-once sinks. A value this
    /// program did not write (KCL's own two-phase checkpoint) reads as none.
    pub pending_checkpoint: Option<Intent>,
    pub renewed_at_millis: Option<i64>,
    pub checkpointed_at_millis: Option<i64>,
    pub checkpoint_record_millis: Option<i64>,
    /// A snapshot segment's lease: when the snapshot began.
    pub snapshot_started_millis: Option<i64>,
}

/// A checkpoint write: from the stored checkpoint to the new one.
#[derive(Clone, Copy, Debug)]
pub struct CheckpointWrite<'a> {
    pub from: &'a Checkpoint,
    pub to: &'a Checkpoint,
    /// At SHARD_END: the shard's children, recorded in the same write.
    pub children: Option<&'a BTreeSet<String>>,
    /// When the newest record of what is checkpointed entered the stream, if known.
    pub record_millis: Option<i64>,
    /// The next batch's intent, written in the same write (one lease write per batch); None
    /// clears the intent.
    pub intent: Option<&'a Intent>,
}

impl Lease {
    pub fn new(shard_id: &str, checkpoint: Checkpoint, parents: BTreeSet<String>) -> Self {
        Lease {
            lease_key: shard_id.to_string(),
            lease_owner: None,
            lease_counter: 0,
            checkpoint,
            checkpoint_sub_sequence_number: 0,
            owner_switches_since_checkpoint: 0,
            parent_shard_ids: parents,
            child_shard_ids: BTreeSet::new(),
            pending_checkpoint: None,
            renewed_at_millis: None,
            checkpointed_at_millis: None,
            checkpoint_record_millis: None,
            snapshot_started_millis: None,
        }
    }

    pub fn to_item(&self) -> HashMap<String, AttributeValue> {
        let mut item = HashMap::new();
        item.insert(LEASE_KEY.into(), AttributeValue::S(self.lease_key.clone()));
        if let Some(owner) = &self.lease_owner {
            item.insert(LEASE_OWNER.into(), AttributeValue::S(owner.clone()));
        }
        item.insert(LEASE_COUNTER.into(), n(self.lease_counter));
        item.insert(
            CHECKPOINT.into(),
            AttributeValue::S(self.checkpoint.as_string()),
        );
        item.insert(
            CHECKPOINT_SUB_SEQUENCE_NUMBER.into(),
            n(self.checkpoint_sub_sequence_number),
        );
        item.insert(
            OWNER_SWITCHES_SINCE_CHECKPOINT.into(),
            n(self.owner_switches_since_checkpoint),
        );
        // DynamoDB rejects empty sets: absent means none.
        if !self.parent_shard_ids.is_empty() {
            item.insert(
                PARENT_SHARD_ID.into(),
                AttributeValue::Ss(self.parent_shard_ids.iter().cloned().collect()),
            );
        }
        if !self.child_shard_ids.is_empty() {
            item.insert(
                CHILD_SHARD_IDS.into(),
                AttributeValue::Ss(self.child_shard_ids.iter().cloned().collect()),
            );
        }
        if let Some(p) = &self.pending_checkpoint {
            item.insert(PENDING_CHECKPOINT.into(), AttributeValue::S(p.to_string()));
        }
        for (k, v) in [
            (RENEWED_AT_MILLIS, self.renewed_at_millis),
            (CHECKPOINTED_AT_MILLIS, self.checkpointed_at_millis),
            (CHECKPOINT_RECORD_MILLIS, self.checkpoint_record_millis),
            (SNAPSHOT_STARTED_AT_MILLIS, self.snapshot_started_millis),
        ] {
            if let Some(v) = v {
                item.insert(k.into(), AttributeValue::N(v.to_string()));
            }
        }
        item
    }

    /// Reads a lease row; unknown attributes (KCL writes a few more) are ignored.
    pub fn from_item(item: &HashMap<String, AttributeValue>) -> Result<Self, String> {
        let s = |k: &str| -> Result<Option<String>, String> {
            match item.get(k) {
                None | Some(AttributeValue::Null(_)) => Ok(None),
                Some(AttributeValue::S(v)) => Ok(Some(v.clone())),
                Some(other) => Err(format!("{k}: expected a string, found {other:?}")),
            }
        };
        let num = |k: &str| -> Result<u64, String> {
            match item.get(k) {
                None => Ok(0),
                Some(AttributeValue::N(v)) => v
                    .parse::<u64>()
                    .map_err(|_| format!("{k}: {v:?} is not a whole number")),
                Some(other) => Err(format!("{k}: expected a number, found {other:?}")),
            }
        };
        let set = |k: &str| -> Result<BTreeSet<String>, String> {
            match item.get(k) {
                None => Ok(BTreeSet::new()),
                Some(AttributeValue::Ss(v)) => Ok(v.iter().cloned().collect()),
                // Some tools write a single parent as a plain string.
                Some(AttributeValue::S(v)) => Ok(BTreeSet::from([v.clone()])),
                Some(other) => Err(format!("{k}: expected a string set, found {other:?}")),
            }
        };
        let millis = |k: &str| -> Result<Option<i64>, String> {
            match item.get(k) {
                None | Some(AttributeValue::Null(_)) => Ok(None),
                Some(AttributeValue::N(v)) => v
                    .parse::<i64>()
                    .map(Some)
                    .map_err(|_| format!("{k}: {v:?} is not a whole number")),
                Some(other) => Err(format!("{k}: expected a number, found {other:?}")),
            }
        };
        let lease_key = s(LEASE_KEY)?.ok_or_else(|| format!("{LEASE_KEY}: missing"))?;
        Ok(Lease {
            lease_owner: s(LEASE_OWNER)?,
            lease_counter: num(LEASE_COUNTER)?,
            checkpoint: match s(CHECKPOINT)? {
                Some(c) => Checkpoint::parse(&c)?,
                None => Checkpoint::TrimHorizon,
            },
            checkpoint_sub_sequence_number: num(CHECKPOINT_SUB_SEQUENCE_NUMBER)?,
            owner_switches_since_checkpoint: num(OWNER_SWITCHES_SINCE_CHECKPOINT)?,
            parent_shard_ids: set(PARENT_SHARD_ID)?,
            child_shard_ids: set(CHILD_SHARD_IDS)?,
            pending_checkpoint: s(PENDING_CHECKPOINT)?.as_deref().and_then(Intent::parse),
            renewed_at_millis: millis(RENEWED_AT_MILLIS)?,
            checkpointed_at_millis: millis(CHECKPOINTED_AT_MILLIS)?,
            checkpoint_record_millis: millis(CHECKPOINT_RECORD_MILLIS)?,
            snapshot_started_millis: millis(SNAPSHOT_STARTED_AT_MILLIS)?,
            lease_key,
        })
    }
}

/// Now, in ms since the epoch (this machine's clock): the time attributes of a lease row.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row as the Java KCL 1.x/2.x with the DynamoDB Streams Kinesis Adapter writes it.
    fn kcl_item() -> HashMap<String, AttributeValue> {
        HashMap::from([
            (
                "leaseKey".to_string(),
                AttributeValue::S("shardId-00000001700000000000-abcdef12".into()),
            ),
            (
                "leaseOwner".to_string(),
                AttributeValue::S("worker-7:5f0c".into()),
            ),
            ("leaseCounter".to_string(), AttributeValue::N("1337".into())),
            (
                "checkpoint".to_string(),
                AttributeValue::S("000000000000000000001234567890123456789".into()),
            ),
            (
                "checkpointSubSequenceNumber".to_string(),
                AttributeValue::N("0".into()),
            ),
            (
                "ownerSwitchesSinceCheckpoint".to_string(),
                AttributeValue::N("2".into()),
            ),
            (
                "parentShardId".to_string(),
                AttributeValue::Ss(vec!["shardId-00000001690000000000-00aa11bb".into()]),
            ),
            // Attributes KCL 2.x adds that we do not use.
            ("leaseState".to_string(), AttributeValue::S("ACTIVE".into())),
            ("startingHashKey".to_string(), AttributeValue::S("0".into())),
        ])
    }

    #[test]
    fn reads_a_kcl_written_row() {
        let lease = Lease::from_item(&kcl_item()).unwrap();
        assert_eq!(lease.lease_key, "shardId-00000001700000000000-abcdef12");
        assert_eq!(lease.lease_owner.as_deref(), Some("worker-7:5f0c"));
        assert_eq!(lease.lease_counter, 1337);
        assert_eq!(
            lease.checkpoint,
            Checkpoint::Sequence(SequenceNumber::parse("1234567890123456789").unwrap())
        );
        assert_eq!(lease.owner_switches_since_checkpoint, 2);
        assert_eq!(
            lease.parent_shard_ids,
            BTreeSet::from(["shardId-00000001690000000000-00aa11bb".to_string()])
        );
    }

    #[test]
    fn writes_kcl_names_and_types_and_round_trips() {
        let mut lease = Lease::new(
            "shardId-1",
            Checkpoint::ShardEnd,
            BTreeSet::from(["shardId-0".into()]),
        );
        lease.lease_owner = Some("w".into());
        lease.lease_counter = 4;
        lease.child_shard_ids = BTreeSet::from(["shardId-2".into(), "shardId-3".into()]);
        lease.pending_checkpoint = Intent::parse("10..20");
        let item = lease.to_item();
        assert_eq!(item["checkpoint"], AttributeValue::S("SHARD_END".into()));
        assert_eq!(item["leaseCounter"], AttributeValue::N("4".into()));
        assert_eq!(
            item["checkpointSubSequenceNumber"],
            AttributeValue::N("0".into())
        );
        assert!(matches!(item["parentShardId"], AttributeValue::Ss(_)));
        assert!(matches!(item["childShardIds"], AttributeValue::Ss(_)));
        assert_eq!(Lease::from_item(&item).unwrap(), lease);
    }

    #[test]
    fn sentinels_round_trip() {
        for c in ["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP", "SHARD_END", "42"] {
            assert_eq!(Checkpoint::parse(c).unwrap().as_string(), c);
        }
        assert!(Checkpoint::parse("garbage").is_err());
    }

    #[test]
    fn rejects_wrong_types_naming_the_attribute() {
        let mut item = kcl_item();
        item.insert("leaseCounter".into(), AttributeValue::S("x".into()));
        assert!(Lease::from_item(&item)
            .unwrap_err()
            .contains("leaseCounter"));
    }

    #[test]
    fn intents_round_trip() {
        let intent = Intent {
            first: SequenceNumber::parse("10").unwrap(),
            last: SequenceNumber::parse("20").unwrap(),
            written_millis: Some(1_700_000_000_123),
            batch: None,
        };
        assert_eq!(intent.to_string(), "10..20@1700000000123");
        assert_eq!(Intent::parse("10..20@1700000000123"), Some(intent.clone()));
        let numbered = Intent {
            batch: Some(41),
            ..intent
        };
        assert_eq!(numbered.to_string(), "10..20@1700000000123#41");
        assert_eq!(Intent::parse("10..20@1700000000123#41"), Some(numbered));
        let old = Intent::parse("10..20").unwrap();
        assert_eq!(
            (&old.last, old.written_millis),
            (&SequenceNumber::parse("20").unwrap(), None)
        );
        assert_eq!(old.to_string(), "10..20");
        for bad in [
            "garbage",
            "10..x",
            "10..20@",
            "10..20@soon",
            "..20",
            "10..20@1#",
            "10..20@1#-1",
        ] {
            assert_eq!(Intent::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_status_times_round_trip_and_a_kcl_row_has_none() {
        let mut lease = Lease::new("s", Checkpoint::TrimHorizon, BTreeSet::new());
        lease.renewed_at_millis = Some(1);
        lease.checkpointed_at_millis = Some(2);
        lease.checkpoint_record_millis = Some(-3);
        assert_eq!(Lease::from_item(&lease.to_item()).unwrap(), lease);
        let kcl = Lease::from_item(&kcl_item()).unwrap();
        assert_eq!(
            (
                kcl.renewed_at_millis,
                kcl.checkpointed_at_millis,
                kcl.checkpoint_record_millis
            ),
            (None, None, None)
        );
    }

    #[test]
    fn a_pending_checkpoint_this_program_did_not_write_reads_as_none() {
        let mut item = kcl_item();
        item.insert(
            "pendingCheckpoint".into(),
            AttributeValue::S("12345".into()),
        );
        assert_eq!(Lease::from_item(&item).unwrap().pending_checkpoint, None);
    }
}
