//! The process's budget for read-ahead: pages fetched while the sink writes the batch before
//! them (shard_worker). Each shard holds at most one such page; this bounds them all together,
//! so a worker with many busy shards (Kinesis pages reach 10 MB) does not hold a page for each.
//! A shard reserves room for its next page before fetching it ahead, estimated by the size of
//! its last page; without room it reads that page after the write instead (back-pressure: the
//! shard goes at the pace of read plus write, nothing is dropped).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// `[worker] read_ahead_bytes` when unset.
pub const DEFAULT_BYTES: u64 = 64 << 20;
/// The least a page is reserved for (an estimate from a tiny page would let many through).
const MIN_RESERVATION: u64 = 64 << 10;

#[derive(Debug)]
pub struct ReadAheadBudget {
    kib: Arc<Semaphore>,
    total_kib: u32,
}

impl ReadAheadBudget {
    pub fn new(bytes: u64) -> Self {
        // 0 turns read-ahead off.
        let total_kib = u32::try_from(bytes >> 10).unwrap_or(u32::MAX >> 4);
        ReadAheadBudget {
            kib: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }

    /// Room for a page of about `bytes`, held until the page is taken in; None when the budget
    /// is used up.
    pub fn try_reserve(&self, bytes: u64) -> Option<OwnedSemaphorePermit> {
        if self.total_kib == 0 {
            return None;
        }
        let kib = reservation_kib(bytes, self.total_kib);
        self.kib.clone().try_acquire_many_owned(kib).ok()
    }

    /// Bytes reserved now.
    pub fn in_use(&self) -> u64 {
        u64::from(self.total_kib).saturating_sub(self.kib.available_permits() as u64) << 10
    }
}

/// KiB reserved for a page estimated at `bytes`: at least `MIN_RESERVATION`, at most the whole
/// budget (so one large page can always go ahead when nothing else is).
fn reservation_kib(bytes: u64, total_kib: u32) -> u32 {
    let kib = bytes.max(MIN_RESERVATION).div_ceil(1024);
    u32::try_from(kib).unwrap_or(u32::MAX).min(total_kib)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_bounded_by_the_budget_and_given_back() {
        let budget = ReadAheadBudget::new(1 << 20);
        assert_eq!(reservation_kib(10, 1024), 64, "at least 64 KiB");
        assert_eq!(reservation_kib(100 << 10, 1024), 100);
        assert_eq!(
            reservation_kib(100 << 20, 1024),
            1024,
            "at most the whole budget"
        );
        let a = budget.try_reserve(600 << 10).expect("room");
        assert_eq!(budget.in_use(), 600 << 10);
        assert!(
            budget.try_reserve(600 << 10).is_none(),
            "the budget is used"
        );
        let b = budget.try_reserve(300 << 10).expect("what is left");
        drop(a);
        assert_eq!(budget.in_use(), 300 << 10);
        assert!(
            budget.try_reserve(10 << 20).is_none(),
            "a large page waits for the rest"
        );
        drop(b);
        assert_eq!(budget.in_use(), 0);
        let whole = budget.try_reserve(10 << 20);
        assert!(whole.is_some(), "a large page fits once the rest is free");
        assert_eq!(budget.in_use(), 1 << 20);
        drop(whole);
        assert!(
            ReadAheadBudget::new(0).try_reserve(1).is_none(),
            "0: no read-ahead"
        );
    }
}
