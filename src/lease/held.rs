//! A lease this worker holds: its fencing counter and when it was last renewed. Renewals and
//! checkpoints go through one lock, so each write uses the counter the previous one left. The
//! send permit (renewed recently enough, not lost) is read without that lock: a sink checking
//! it between calls never waits for a renewal in flight.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use super::model::{CheckpointWrite, Intent, Lease};
use super::table::{LeaseError, LeaseStore};

/// A worker may send for a lease only while its last renewal is younger than
/// `failover - safety_margin`, by its own monotonic clock: by then nobody else may have taken it.
pub fn may_send(since_renewal: Duration, failover: Duration, safety_margin: Duration) -> bool {
    since_renewal < failover.saturating_sub(safety_margin)
}

/// Renewal mode `heartbeat`: when this worker's heartbeat row was last written (the time the
/// write was sent). Shared by the worker's leases of one connector.
#[derive(Default)]
pub struct HeartbeatClock {
    last: std::sync::Mutex<Option<Instant>>,
}

impl HeartbeatClock {
    /// A heartbeat write sent at `sent` succeeded.
    pub fn beat(&self, sent: Instant) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.map_or(true, |l| l < sent) {
            *last = Some(sent);
        }
    }

    fn fresh(&self, failover: Duration, safety_margin: Duration) -> bool {
        self.age()
            .is_some_and(|age| may_send(age, failover, safety_margin))
    }

    fn age(&self) -> Option<Duration> {
        let last = *self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.map(|at| at.elapsed())
    }
}

struct HeldState {
    counter: u64,
    lost: bool,
}

/// Why a worker may not send for a lease now (for logs).
#[derive(Debug, PartialEq, Eq)]
pub enum NoPermit {
    Lost,
    /// The lease (per-lease mode), or the last scan confirming it (heartbeat mode), is this old.
    NotRenewed(Duration),
    /// Heartbeat mode: the worker's last heartbeat write is this old (None: none yet).
    NoHeartbeat(Option<Duration>),
}

/// When the lease was last renewed and whether it is lost, readable without waiting.
struct Freshness {
    renewed_at: Instant,
    lost: bool,
}

pub struct HeldLease {
    table: Arc<dyn LeaseStore>,
    shard_id: String,
    owner: String,
    failover: Duration,
    safety_margin: Duration,
    state: Mutex<HeldState>,
    /// The fencing counter, readable without waiting for a write in flight (`confirm`).
    counter: std::sync::atomic::AtomicU64,
    freshness: std::sync::Mutex<Freshness>,
    /// Renewal mode `heartbeat`: the lease is not renewed by itself; the worker's heartbeat
    /// keeps it alive for the others, and a scan of the table that shows it still ours
    /// (`confirm`) stands for a renewal here.
    heartbeat: Option<Arc<HeartbeatClock>>,
}

impl HeldLease {
    /// `lease` as just taken by `owner` (its counter is ours).
    pub fn new(
        table: Arc<dyn LeaseStore>,
        lease: &Lease,
        owner: &str,
        failover: Duration,
        safety_margin: Duration,
    ) -> Self {
        HeldLease {
            table,
            shard_id: lease.lease_key.clone(),
            owner: owner.to_string(),
            failover,
            safety_margin,
            state: Mutex::new(HeldState {
                counter: lease.lease_counter,
                lost: false,
            }),
            counter: std::sync::atomic::AtomicU64::new(lease.lease_counter),
            freshness: std::sync::Mutex::new(Freshness {
                // Conservative: the take happened no later than now.
                renewed_at: Instant::now(),
                lost: false,
            }),
            heartbeat: None,
        }
    }

    /// Renewal mode `heartbeat`: the permit needs this worker's heartbeat to be fresh too.
    pub fn with_heartbeat(mut self, clock: Arc<HeartbeatClock>) -> Self {
        self.heartbeat = Some(clock);
        self
    }

    /// Renewal mode `heartbeat`: a consistent scan sent at `sent` found the row with `owner` and
    /// `counter`. Still ours at our counter: as good as a renewal sent then (nobody took it
    /// before the scan read it). Anyone else's, or another counter: lost.
    /// Never waits for a write in flight: the renewal task that calls it keeps the heartbeat.
    pub fn confirm(&self, owner: Option<&str>, counter: u64, sent: Instant) -> bool {
        let ours = owner == Some(self.owner.as_str())
            && counter == self.counter.load(std::sync::atomic::Ordering::Acquire);
        let mut f = self.freshness();
        if f.lost {
            return false;
        }
        if ours {
            if f.renewed_at < sent {
                f.renewed_at = sent;
            }
        } else {
            // The writes see it at their next attempt (they check `lost` on the permit, and
            // the table refuses them anyway: the counter moved).
            f.lost = true;
        }
        ours
    }

    /// Why this worker may not send for the lease now; None: it may.
    pub fn permit(&self) -> Option<NoPermit> {
        {
            let f = self.freshness();
            if f.lost {
                return Some(NoPermit::Lost);
            }
            let age = f.renewed_at.elapsed();
            if !may_send(age, self.failover, self.safety_margin) {
                return Some(NoPermit::NotRenewed(age));
            }
        }
        match &self.heartbeat {
            Some(h) if !h.fresh(self.failover, self.safety_margin) => {
                Some(NoPermit::NoHeartbeat(h.age()))
            }
            _ => None,
        }
    }

    pub fn shard_id(&self) -> &str {
        &self.shard_id
    }

    /// The fleet's failover time: a previous owner's send deadline is at most this far off.
    pub fn failover(&self) -> Duration {
        self.failover
    }

    fn freshness(&self) -> std::sync::MutexGuard<'_, Freshness> {
        self.freshness.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the lease lost, for the writes and the permit alike.
    fn lose(&self, s: &mut HeldState) {
        s.lost = true;
        self.freshness().lost = true;
    }

    pub async fn is_lost(&self) -> bool {
        self.freshness().lost
    }

    /// True while this worker may still send for the lease.
    pub async fn may_send(&self) -> bool {
        self.permit().is_none()
    }

    pub async fn renew(&self) -> Result<(), LeaseError> {
        let mut s = self.state.lock().await;
        if s.lost {
            return Err(LeaseError::Lost(self.shard_id.clone()));
        }
        let started = Instant::now();
        match self
            .table
            .renew(&self.shard_id, &self.owner, s.counter)
            .await
        {
            Ok(counter) => {
                s.counter = counter;
                self.counter
                    .store(counter, std::sync::atomic::Ordering::Release);
                // The write may have landed any time after we sent it: count from the send.
                self.freshness().renewed_at = started;
                Ok(())
            }
            Err(e) => {
                if matches!(e, LeaseError::Lost(_)) {
                    self.lose(&mut s);
                }
                Err(e)
            }
        }
    }

    /// Moves the checkpoint from `from` (the stored one) to `to`; see `LeaseStore::checkpoint`.
    pub async fn checkpoint(&self, write: &CheckpointWrite<'_>) -> Result<(), LeaseError> {
        let mut s = self.state.lock().await;
        if s.lost {
            return Err(LeaseError::Lost(self.shard_id.clone()));
        }
        let res = self
            .table
            .checkpoint(&self.shard_id, &self.owner, s.counter, write)
            .await;
        if matches!(res, Err(LeaseError::Lost(_))) {
            self.lose(&mut s);
        }
        res
    }

    /// Writes the intent of the batch in flight, conditional on owning the lease.
    pub async fn write_intent(&self, intent: &Intent) -> Result<(), LeaseError> {
        let mut s = self.state.lock().await;
        if s.lost {
            return Err(LeaseError::Lost(self.shard_id.clone()));
        }
        let res = self
            .table
            .write_intent(&self.shard_id, &self.owner, s.counter, intent)
            .await;
        if matches!(res, Err(LeaseError::Lost(_))) {
            self.lose(&mut s);
        }
        res
    }

    /// Gives the lease back (graceful stop); a lease already lost needs nothing.
    pub async fn release(&self) -> Result<(), LeaseError> {
        let mut s = self.state.lock().await;
        if s.lost {
            return Ok(());
        }
        self.lose(&mut s);
        self.table
            .release(&self.shard_id, &self.owner, s.counter)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_worker_sends_while_both_its_heartbeat_and_a_scan_are_fresh() {
        let f = Duration::from_secs(10);
        let m = Duration::from_secs(2);
        let clock = Arc::new(HeartbeatClock::default());
        let lease = Lease::new(
            "s",
            super::super::model::Checkpoint::TrimHorizon,
            Default::default(),
        );
        let store: Arc<dyn LeaseStore> = Arc::new(NoStore);
        let held = HeldLease::new(store, &lease, "me", f, m).with_heartbeat(clock.clone());
        assert!(!held.may_send().await, "no heartbeat written yet");
        clock.beat(Instant::now());
        assert!(held.may_send().await);
        tokio::time::advance(Duration::from_secs(7)).await;
        clock.beat(Instant::now());
        assert!(held.confirm(Some("me"), 0, Instant::now()));
        tokio::time::advance(Duration::from_secs(7)).await;
        assert!(held.may_send().await, "both 7 s old");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!held.may_send().await, "8 s old: failover - margin");
        clock.beat(Instant::now());
        assert!(
            !held.may_send().await,
            "the heartbeat is fresh, the last scan is not"
        );
        assert!(held.confirm(Some("me"), 0, Instant::now()));
        assert!(held.may_send().await);
        assert!(!held.confirm(Some("thief"), 1, Instant::now()));
        assert!(
            held.is_lost().await && !held.may_send().await,
            "taken: lost"
        );
    }

    struct NoStore;

    #[async_trait::async_trait]
    impl LeaseStore for NoStore {
        async fn ensure_exists(&self) -> Result<(), LeaseError> {
            Ok(())
        }
        async fn list(&self) -> Result<Vec<Lease>, LeaseError> {
            Ok(Vec::new())
        }
        async fn create_if_absent(&self, _: &Lease) -> Result<bool, LeaseError> {
            Ok(true)
        }
        async fn take(&self, lease: &Lease, _: &str) -> Result<Lease, LeaseError> {
            Ok(lease.clone())
        }
        async fn renew(&self, _: &str, _: &str, c: u64) -> Result<u64, LeaseError> {
            Ok(c + 1)
        }
        async fn checkpoint(
            &self,
            _: &str,
            _: &str,
            _: u64,
            _: &CheckpointWrite<'_>,
        ) -> Result<(), LeaseError> {
            Ok(())
        }
        async fn write_intent(
            &self,
            _: &str,
            _: &str,
            _: u64,
            _: &Intent,
        ) -> Result<(), LeaseError> {
            Ok(())
        }
        async fn release(&self, _: &str, _: &str, _: u64) -> Result<(), LeaseError> {
            Ok(())
        }
        async fn delete_finished(&self, _: &str) -> Result<(), LeaseError> {
            Ok(())
        }
    }

    #[test]
    fn stops_sending_before_anyone_may_take_the_lease() {
        let f = Duration::from_secs(10);
        let m = Duration::from_secs(2);
        assert!(may_send(Duration::ZERO, f, m));
        assert!(may_send(Duration::from_millis(7_999), f, m));
        assert!(!may_send(Duration::from_secs(8), f, m));
        assert!(!may_send(Duration::from_secs(11), f, m));
        assert!(
            !may_send(Duration::ZERO, m, f),
            "margin above failover never sends"
        );
    }
}
