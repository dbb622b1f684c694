//! Which leases this worker takes: a pure function of the lease table and what this worker has
//! observed of it. A lease held by another worker counts as expired when its counter has not
//! moved for the failover time, by this worker's own clock (KCL's rule: no shared clocks).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::model::{Checkpoint, Lease};

/// The last counter seen for each lease, and since when it has not changed.
#[derive(Default, Debug)]
pub struct Observations {
    seen: HashMap<String, (u64, Instant)>,
}

impl Observations {
    pub fn update(&mut self, leases: &[Lease], now: Instant) {
        let keys: HashSet<&str> = leases.iter().map(|l| l.lease_key.as_str()).collect();
        self.seen.retain(|k, _| keys.contains(k.as_str()));
        for l in leases {
            match self.seen.get(&l.lease_key) {
                Some((counter, _)) if *counter == l.lease_counter => {}
                _ => {
                    self.seen
                        .insert(l.lease_key.clone(), (l.lease_counter, now));
                }
            }
        }
    }

    /// True when the lease's counter has been still for at least `failover`.
    pub fn is_expired(&self, lease: &Lease, now: Instant, failover: Duration) -> bool {
        match self.seen.get(&lease.lease_key) {
            Some((counter, since)) if *counter == lease.lease_counter => {
                now.saturating_duration_since(*since) >= failover
            }
            _ => false,
        }
    }
}

/// Leases to take now: not finished, not already running here, and free, left by an earlier
/// run of this worker, or expired. `ready` says whether a shard's parents allow reading it.
pub fn leases_to_take<'a>(
    leases: &'a [Lease],
    me: &str,
    running: &HashSet<String>,
    observed: &Observations,
    now: Instant,
    failover: Duration,
    ready: impl Fn(&Lease) -> bool,
) -> Vec<&'a Lease> {
    leases
        .iter()
        .filter(|l| l.checkpoint != Checkpoint::ShardEnd)
        .filter(|l| !running.contains(&l.lease_key))
        .filter(|l| match l.lease_owner.as_deref() {
            None => true,
            Some(owner) if owner == me => true,
            Some(_) => observed.is_expired(l, now, failover),
        })
        .filter(|l| ready(l))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn lease(key: &str, owner: Option<&str>, counter: u64, cp: Checkpoint) -> Lease {
        let mut l = Lease::new(key, cp, BTreeSet::new());
        l.lease_owner = owner.map(Into::into);
        l.lease_counter = counter;
        l
    }

    #[test]
    fn takes_free_own_and_expired_leases_only() {
        let t0 = Instant::now();
        let f = Duration::from_secs(10);
        let mut leases = vec![
            lease("free", None, 3, Checkpoint::TrimHorizon),
            lease("mine-from-before", Some("me"), 7, Checkpoint::TrimHorizon),
            lease("busy", Some("other"), 5, Checkpoint::TrimHorizon),
            lease("done", None, 9, Checkpoint::ShardEnd),
            lease("running", Some("me"), 2, Checkpoint::TrimHorizon),
            lease("blocked", None, 1, Checkpoint::TrimHorizon),
        ];
        let running = HashSet::from(["running".to_string()]);
        let mut obs = Observations::default();
        obs.update(&leases, t0);
        let ready = |l: &Lease| l.lease_key != "blocked";
        let keys = |v: Vec<&Lease>| v.iter().map(|l| l.lease_key.clone()).collect::<Vec<_>>();
        assert_eq!(
            keys(leases_to_take(
                &leases,
                "me",
                &running,
                &obs,
                t0 + f - Duration::from_millis(1),
                f,
                ready
            )),
            ["free", "mine-from-before"]
        );
        // "busy" keeps renewing: never expires.
        leases[2].lease_counter = 6;
        obs.update(&leases, t0 + f);
        assert_eq!(
            keys(leases_to_take(
                &leases,
                "me",
                &running,
                &obs,
                t0 + f + f / 2,
                f,
                ready
            ))
            .len(),
            2
        );
        // It stops renewing: expired a full failover after the last change we saw.
        assert_eq!(
            keys(leases_to_take(
                &leases,
                "me",
                &running,
                &obs,
                t0 + f * 2,
                f,
                ready
            )),
            ["free", "mine-from-before", "busy"]
        );
    }
}
