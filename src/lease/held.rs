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

struct HeldState {
    counter: u64,
    lost: bool,
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
    freshness: std::sync::Mutex<Freshness>,
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
            freshness: std::sync::Mutex::new(Freshness {
                // Conservative: the take happened no later than now.
                renewed_at: Instant::now(),
                lost: false,
            }),
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
        let f = self.freshness();
        !f.lost && may_send(f.renewed_at.elapsed(), self.failover, self.safety_margin)
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
