//! An in-process lease store with the same conditional semantics as the DynamoDB table: for the
//! deterministic stream model and property tests, where a fleet of workers shares one store.
//! (A test helper: the release library has only the DynamoDB table.)

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use shardbridge::lease::model::{now_millis, Checkpoint, CheckpointWrite, Intent, Lease};
use shardbridge::lease::table::{LeaseError, LeaseStore};

#[derive(Default)]
pub struct MemoryLeaseStore {
    leases: Mutex<BTreeMap<String, Lease>>,
    calls: Mutex<HashMap<&'static str, u64>>,
}

impl MemoryLeaseStore {
    fn count(&self, op: &'static str) {
        *self
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(op)
            .or_default() += 1;
    }

    /// Calls made, by operation.
    pub fn calls(&self) -> HashMap<&'static str, u64> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Applies `f` to the lease if owner and counter match; Lost otherwise.
    fn update<T>(
        &self,
        key: &str,
        owner: &str,
        counter: u64,
        f: impl FnOnce(&mut Lease) -> T,
    ) -> Result<T, LeaseError> {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        match leases.get_mut(key) {
            Some(l) if l.lease_owner.as_deref() == Some(owner) && l.lease_counter == counter => {
                Ok(f(l))
            }
            _ => Err(LeaseError::Lost(key.to_string())),
        }
    }
}

#[async_trait]
impl LeaseStore for MemoryLeaseStore {
    async fn ensure_exists(&self) -> Result<(), LeaseError> {
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Lease>, LeaseError> {
        self.count("Scan");
        let leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        Ok(leases.values().cloned().collect())
    }

    async fn create_if_absent(&self, lease: &Lease) -> Result<bool, LeaseError> {
        self.count("PutItem");
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        if leases.contains_key(&lease.lease_key) {
            return Ok(false);
        }
        leases.insert(lease.lease_key.clone(), lease.clone());
        Ok(true)
    }

    async fn take(&self, lease: &Lease, owner: &str) -> Result<Lease, LeaseError> {
        self.count("UpdateItem");
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        match leases.get_mut(&lease.lease_key) {
            Some(l) if l.lease_counter == lease.lease_counter => {
                if l.lease_owner.as_deref() != Some(owner) {
                    l.owner_switches_since_checkpoint += 1;
                }
                l.lease_owner = Some(owner.to_string());
                l.lease_counter += 1;
                l.renewed_at_millis = Some(now_millis());
                Ok(l.clone())
            }
            _ => Err(LeaseError::Lost(lease.lease_key.clone())),
        }
    }

    async fn renew(&self, key: &str, owner: &str, counter: u64) -> Result<u64, LeaseError> {
        self.count("UpdateItem");
        self.update(key, owner, counter, |l| {
            l.lease_counter += 1;
            l.renewed_at_millis = Some(now_millis());
            l.lease_counter
        })
    }

    async fn checkpoint(
        &self,
        key: &str,
        owner: &str,
        counter: u64,
        write: &CheckpointWrite<'_>,
    ) -> Result<(), LeaseError> {
        self.count("UpdateItem");
        let applied = self.update(key, owner, counter, |l| {
            if l.checkpoint != *write.from {
                return false;
            }
            l.checkpoint = write.to.clone();
            l.owner_switches_since_checkpoint = 0;
            l.pending_checkpoint = write.intent.cloned();
            l.checkpointed_at_millis = Some(now_millis());
            if let Some(ms) = write.record_millis {
                l.checkpoint_record_millis = Some(ms);
            }
            if let Some(c) = write.children.filter(|c| !c.is_empty()) {
                l.child_shard_ids = c.clone();
            }
            true
        })?;
        if applied {
            Ok(())
        } else {
            Err(LeaseError::Lost(key.to_string()))
        }
    }

    async fn write_intent(
        &self,
        key: &str,
        owner: &str,
        counter: u64,
        intent: &Intent,
    ) -> Result<(), LeaseError> {
        self.count("UpdateItem");
        self.update(key, owner, counter, |l| {
            l.pending_checkpoint = Some(intent.clone());
        })
    }

    async fn release(&self, key: &str, owner: &str, counter: u64) -> Result<(), LeaseError> {
        self.count("UpdateItem");
        self.update(key, owner, counter, |l| {
            l.lease_owner = None;
            l.lease_counter += 1;
        })
    }

    async fn heartbeat(&self, owner: &str) -> Result<(), LeaseError> {
        self.count("UpdateItem");
        let key = shardbridge::lease::model::heartbeat_key(owner);
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        let row = leases
            .entry(key.clone())
            .or_insert_with(|| Lease::new(&key, Checkpoint::TrimHorizon, Default::default()));
        row.lease_owner = Some(owner.to_string());
        row.lease_counter += 1;
        Ok(())
    }

    async fn delete_heartbeat(&self, owner: &str, counter: Option<u64>) -> Result<(), LeaseError> {
        self.count("DeleteItem");
        let key = shardbridge::lease::model::heartbeat_key(owner);
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        match (leases.get(&key), counter) {
            (Some(l), Some(c)) if l.lease_counter != c => Err(LeaseError::Lost(key)),
            _ => {
                leases.remove(&key);
                Ok(())
            }
        }
    }

    async fn delete_finished(&self, key: &str) -> Result<(), LeaseError> {
        self.count("DeleteItem");
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        match leases.get(key) {
            Some(l) if l.checkpoint == Checkpoint::ShardEnd => {
                leases.remove(key);
                Ok(())
            }
            _ => Err(LeaseError::Lost(key.to_string())),
        }
    }
}

/// A checkpoint write from `from` to `to`, nothing else.
pub fn cw<'a>(from: &'a Checkpoint, to: &'a Checkpoint) -> CheckpointWrite<'a> {
    CheckpointWrite {
        from,
        to,
        children: None,
        record_millis: None,
        intent: None,
    }
}
