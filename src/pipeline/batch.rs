//! Accumulating a shard's records into batches for the sink: when to hand them over, and how a
//! batch whose range is fixed in advance is cut exactly. Pure, apart from the I/O.

use std::time::Duration;

use tokio::time::Instant;

use crate::sink::{BatchLimits, OutputRecord};
use crate::source::record::SourceRecord;
use crate::source::sequence::SequenceNumber;

/// Records read but not yet committed.
#[derive(Debug, Default)]
pub struct PendingBatch {
    pub records: Vec<OutputRecord>,
    pub bytes: usize,
    /// The last sequence number read into the batch, skipped records included: the checkpoint
    /// the batch leads to.
    pub last_read: Option<SequenceNumber>,
    /// When the batch's first page was read.
    pub since: Option<Instant>,
    /// Records and bytes per lane (`parallelization_factor`; all in lane 0 without lanes): the
    /// sink's limits apply to each lane's share, since each lane is written in calls of its own.
    pub lanes: Vec<(usize, usize)>,
}

impl PendingBatch {
    pub fn push(&mut self, records: Vec<OutputRecord>, last_read: SequenceNumber, now: Instant) {
        for r in &records {
            let lane = usize::from(r.lane);
            if self.lanes.len() <= lane {
                self.lanes.resize(lane + 1, (0, 0));
            }
            self.lanes[lane].0 += 1;
            self.lanes[lane].1 += r.payload.len();
            self.bytes += r.payload.len();
        }
        self.records.extend(records);
        self.last_read = Some(last_read);
        self.since.get_or_insert(now);
    }

    pub fn is_empty(&self) -> bool {
        self.last_read.is_none()
    }

    /// Hands the batch over: its records and the checkpoint it leads to.
    pub fn take(&mut self) -> Option<(Vec<OutputRecord>, SequenceNumber)> {
        let last = self.last_read.take()?;
        let records = std::mem::take(&mut self.records);
        *self = PendingBatch::default();
        Some((records, last))
    }

    /// When the interval limit makes the batch due.
    pub fn due_at(&self, limits: &BatchLimits) -> Option<Instant> {
        self.since.map(|s| s + limits.max_interval)
    }
}

/// Whichever limit comes first; with lanes, the record and byte limits are reached when one
/// lane's share reaches them.
pub fn should_flush(limits: &BatchLimits, pending: &PendingBatch, now: Instant) -> bool {
    let Some(since) = pending.since else {
        return false;
    };
    let fullest = |f: fn(&(usize, usize)) -> usize| pending.lanes.iter().map(f).max().unwrap_or(0);
    fullest(|l| l.0) >= limits.max_records
        || fullest(|l| l.1) >= limits.max_bytes
        || now.saturating_duration_since(since) >= limits.max_interval
}

/// Splits a page at a batch's required end: the records up to and including `last`, and the
/// rest.
pub fn split_at(
    records: Vec<SourceRecord>,
    last: &SequenceNumber,
) -> (Vec<SourceRecord>, Vec<SourceRecord>) {
    records
        .into_iter()
        .partition(|r| r.sequence_number() <= last)
}

/// How long to wait before the next poll: the idle interval, or less if the batch falls due
/// sooner.
pub fn idle_wait(idle: Duration, due_at: Option<Instant>, now: Instant) -> Duration {
    match due_at {
        Some(at) => idle.min(at.saturating_duration_since(now)),
        None => idle,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(seq: &str, bytes: usize) -> OutputRecord {
        OutputRecord {
            sequence_number: SequenceNumber::parse(seq).unwrap(),
            created_millis: None,
            partition_key: None,
            event_name: None,
            lane: 0,
            payload: vec![b'x'; bytes],
        }
    }

    fn seq(s: &str) -> SequenceNumber {
        SequenceNumber::parse(s).unwrap()
    }

    const LIMITS: BatchLimits = BatchLimits {
        max_records: 3,
        max_bytes: 100,
        max_interval: Duration::from_secs(60),
    };

    #[test]
    fn whichever_limit_comes_first() {
        let t0 = Instant::now();
        let mut p = PendingBatch::default();
        assert!(!should_flush(&LIMITS, &p, t0), "nothing pending");
        p.push(vec![out("1", 10)], seq("1"), t0);
        assert!(!should_flush(&LIMITS, &p, t0 + Duration::from_secs(59)));
        assert!(
            should_flush(&LIMITS, &p, t0 + Duration::from_secs(60)),
            "interval"
        );
        p.push(
            vec![out("2", 10), out("3", 10)],
            seq("3"),
            t0 + Duration::from_secs(1),
        );
        assert!(should_flush(&LIMITS, &p, t0), "records");
        let (records, last) = p.take().unwrap();
        assert_eq!((records.len(), last), (3, seq("3")));
        assert!(p.is_empty() && p.take().is_none());
        p.push(vec![out("4", 100)], seq("4"), t0);
        assert!(should_flush(&LIMITS, &p, t0), "bytes");
    }

    #[test]
    fn with_lanes_the_limits_apply_to_each_lanes_share() {
        let t0 = Instant::now();
        let mut p = PendingBatch::default();
        let in_lane = |seq: &str, lane: u8, bytes: usize| OutputRecord {
            lane,
            ..out(seq, bytes)
        };
        p.push(
            vec![
                in_lane("1", 0, 10),
                in_lane("2", 1, 10),
                in_lane("3", 2, 10),
            ],
            seq("3"),
            t0,
        );
        p.push(vec![in_lane("4", 1, 10), in_lane("5", 2, 60)], seq("5"), t0);
        assert!(
            !should_flush(&LIMITS, &p, t0),
            "no lane has 3 records or 100 bytes"
        );
        p.push(vec![in_lane("6", 1, 10)], seq("6"), t0);
        assert!(should_flush(&LIMITS, &p, t0), "lane 1 has 3 records");
        p.take();
        p.push(vec![in_lane("7", 2, 60), in_lane("8", 2, 40)], seq("8"), t0);
        assert!(should_flush(&LIMITS, &p, t0), "lane 2 has 100 bytes");
    }

    #[test]
    fn a_page_of_skipped_records_still_moves_the_checkpoint() {
        let t0 = Instant::now();
        let mut p = PendingBatch::default();
        p.push(vec![], seq("9"), t0);
        assert!(should_flush(&BatchLimits::PER_PAGE, &p, t0));
        let (records, last) = p.take().unwrap();
        assert!(records.is_empty());
        assert_eq!(last, seq("9"));
    }

    #[test]
    fn every_page_is_a_batch_by_default() {
        let t0 = Instant::now();
        let mut p = PendingBatch::default();
        p.push(vec![out("1", 1)], seq("1"), t0);
        assert!(should_flush(&BatchLimits::PER_PAGE, &p, t0));
    }

    #[test]
    fn idle_waits_less_when_a_batch_falls_due() {
        let t0 = Instant::now();
        let idle = Duration::from_millis(250);
        assert_eq!(idle_wait(idle, None, t0), idle);
        assert_eq!(
            idle_wait(idle, Some(t0 + Duration::from_millis(100)), t0),
            Duration::from_millis(100)
        );
        assert_eq!(
            idle_wait(idle, Some(t0), t0 + Duration::from_secs(1)),
            Duration::ZERO
        );
    }
}
