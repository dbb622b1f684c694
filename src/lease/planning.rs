//! Which leases this worker takes: a pure function of the lease table and what this worker has
//! observed of it, tested from scenario files (tests/lease_scenarios/*.json).
//!
//! - A lease held by another worker is expired when its counter has not moved for the failover
//!   time, by this worker's own clock (KCL's rule: no shared clocks).
//! - Balance: every live worker's fair share is ceil(active leases / live workers), capped by
//!   `max_leases_per_worker`. A worker below its share takes free and expired leases first, then
//!   steals from workers above the share — as many as it needs in one cycle, not one per cycle.
//!   Nobody steals from a worker that holds no more than the share, so a fleet within one lease
//!   of balance never moves leases (no storms on idle shards).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use super::model::{heartbeat_key, Checkpoint, Lease};

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

    /// When the earliest lease held by another worker will expire if it and its owner's
    /// heartbeat stay still: a scan then takes it without waiting for the next periodic one.
    pub fn next_expiry(&self, leases: &[Lease], me: &str, failover: Duration) -> Option<Instant> {
        leases
            .iter()
            .filter(|l| l.checkpoint != Checkpoint::ShardEnd)
            .filter(|l| l.lease_owner.as_deref().is_some_and(|o| o != me))
            .filter_map(|l| {
                let (_, since) = self.seen.get(&l.lease_key)?;
                Some(match self.heartbeat_still_since(l) {
                    Some(beat) => (*since).max(beat),
                    None => *since,
                })
            })
            .map(|since| since + failover)
            .min()
    }

    /// Since when the owner's heartbeat row has been still, when it has one.
    fn heartbeat_still_since(&self, lease: &Lease) -> Option<Instant> {
        let owner = lease.lease_owner.as_deref()?;
        self.seen
            .get(&heartbeat_key(owner))
            .map(|(_, since)| *since)
    }

    /// True when the lease's counter has been still for at least `failover`, and so has its
    /// owner's heartbeat row if the owner writes one (renewal mode `heartbeat`, where the
    /// lease's own counter moves only when it changes hands). Both modes read both, so a
    /// fleet that mixes them (a rolling change of mode) never takes a live worker's lease.
    pub fn is_expired(&self, lease: &Lease, now: Instant, failover: Duration) -> bool {
        let lease_still = match self.seen.get(&lease.lease_key) {
            Some((counter, since)) if *counter == lease.lease_counter => {
                now.saturating_duration_since(*since) >= failover
            }
            _ => false,
        };
        lease_still
            && self.heartbeat_still_since(lease).map_or(true, |since| {
                now.saturating_duration_since(since) >= failover
            })
    }

    /// How long a row (a worker's heartbeat) has been still.
    pub fn still_for(&self, key: &str, now: Instant) -> Option<Duration> {
        self.seen
            .get(key)
            .map(|(_, since)| now.saturating_duration_since(*since))
    }
}

/// This worker's side of the planning.
pub struct WorkerView<'a> {
    pub me: &'a str,
    /// Shards this worker is running now.
    pub running: &'a HashSet<String>,
    pub failover: Duration,
    pub max_leases: usize,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan<'a> {
    /// Free, expired, or left by an earlier run of this worker.
    pub take: Vec<&'a Lease>,
    /// Held by a live worker above its fair share.
    pub steal: Vec<&'a Lease>,
}

impl Plan<'_> {
    pub fn all(&self) -> impl Iterator<Item = &Lease> {
        self.take.iter().chain(self.steal.iter()).copied()
    }
}

/// `ready` says whether a lease's shard may be read (its parents are done); leases that are not
/// ready, or finished, are nobody's work and count for nobody's share.
pub fn plan<'a>(
    leases: &'a [Lease],
    view: &WorkerView,
    observed: &Observations,
    now: Instant,
    ready: impl Fn(&Lease) -> bool,
) -> Plan<'a> {
    let active: Vec<&Lease> = leases
        .iter()
        .filter(|l| l.checkpoint != Checkpoint::ShardEnd && ready(l))
        .collect();
    let mut mine = 0usize;
    let mut free: Vec<&Lease> = Vec::new();
    // Per live worker: how many leases the table gives it, and those of them we may steal.
    let mut by_worker: BTreeMap<&str, (usize, Vec<&Lease>)> = BTreeMap::new();
    for l in &active {
        if view.running.contains(&l.lease_key) {
            // Never a second task for a shard running here. If the table names someone else
            // (or nobody, after a thief released it), our task finds out at its next write.
            // Until then the lease counts for its new owner's load but is never stolen back:
            // that would start a second task next to ours, and both would send.
            match l.lease_owner.as_deref() {
                Some(o) if o == view.me => mine += 1,
                Some(o) if !observed.is_expired(l, now, view.failover) => {
                    by_worker.entry(o).or_default().0 += 1
                }
                _ => {}
            }
            continue;
        }
        match l.lease_owner.as_deref() {
            // Ours from an earlier run (we are not running it), unowned, or expired.
            Some(o) if o == view.me => free.push(l),
            None => free.push(l),
            Some(_) if observed.is_expired(l, now, view.failover) => free.push(l),
            Some(o) => {
                let (load, stealable) = by_worker.entry(o).or_default();
                *load += 1;
                stealable.push(l);
            }
        }
    }
    let workers = by_worker.len() + 1;
    let share = active.len().div_ceil(workers).min(view.max_leases);
    let mut need = share.saturating_sub(mine);
    let mut plan = Plan::default();
    // Our own earlier leases first (no owner switch), then the rest in key order.
    free.sort_by_key(|l| {
        (
            l.lease_owner.as_deref() != Some(view.me),
            l.lease_key.as_str(),
        )
    });
    plan.take = free.into_iter().take(need).collect();
    need -= plan.take.len();
    // Steal from the most loaded first, never taking a worker below the share.
    let mut victims: Vec<(&str, (usize, Vec<&Lease>))> = by_worker.into_iter().collect();
    victims.sort_by_key(|(name, (load, _))| (std::cmp::Reverse(*load), *name));
    for (_, (load, stealable)) in victims {
        if need == 0 {
            break;
        }
        let spare = load.saturating_sub(share);
        let n = spare.min(need).min(stealable.len());
        plan.steal.extend(stealable.into_iter().take(n));
        need -= n;
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeSet;

    /// A scenario file: the table as this worker sees it, and the plan it must make.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Scenario {
        description: String,
        me: String,
        #[serde(default = "default_failover")]
        failover_ms: u64,
        max_leases_per_worker: Option<usize>,
        #[serde(default)]
        running: Vec<String>,
        leases: Vec<ScenarioLease>,
        take: Vec<String>,
        steal: Vec<String>,
    }

    fn default_failover() -> u64 {
        10_000
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ScenarioLease {
        key: String,
        owner: Option<String>,
        #[serde(default = "default_checkpoint")]
        checkpoint: String,
        /// How long this worker has seen the counter unchanged.
        #[serde(default)]
        still_ms: u64,
        #[serde(default = "yes")]
        ready: bool,
    }

    fn default_checkpoint() -> String {
        "TRIM_HORIZON".into()
    }

    fn yes() -> bool {
        true
    }

    fn run(s: &Scenario) -> (Vec<String>, Vec<String>) {
        let now = Instant::now() + Duration::from_secs(3600);
        let leases: Vec<Lease> = s
            .leases
            .iter()
            .map(|l| {
                let mut lease = Lease::new(
                    &l.key,
                    Checkpoint::parse(&l.checkpoint).unwrap(),
                    BTreeSet::new(),
                );
                lease.lease_owner = l.owner.clone();
                lease.lease_counter = 7;
                lease
            })
            .collect();
        let observed = Observations {
            seen: leases
                .iter()
                .zip(&s.leases)
                .map(|(lease, l)| {
                    (
                        lease.lease_key.clone(),
                        (lease.lease_counter, now - Duration::from_millis(l.still_ms)),
                    )
                })
                .collect(),
        };
        let running: HashSet<String> = s.running.iter().cloned().collect();
        let view = WorkerView {
            me: &s.me,
            running: &running,
            failover: Duration::from_millis(s.failover_ms),
            max_leases: s.max_leases_per_worker.unwrap_or(usize::MAX),
        };
        let not_ready: HashSet<&str> = s
            .leases
            .iter()
            .filter(|l| !l.ready)
            .map(|l| l.key.as_str())
            .collect();
        let p = plan(&leases, &view, &observed, now, |l| {
            !not_ready.contains(l.lease_key.as_str())
        });
        let keys = |v: &[&Lease]| v.iter().map(|l| l.lease_key.clone()).collect::<Vec<_>>();
        (keys(&p.take), keys(&p.steal))
    }

    #[test]
    fn scenarios() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lease_scenarios");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(files.len() >= 8, "scenario files in {}", dir.display());
        for f in files {
            let s: Scenario = serde_json::from_str(&std::fs::read_to_string(&f).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            let (take, steal) = run(&s);
            assert_eq!(
                (take, steal),
                (s.take.clone(), s.steal.clone()),
                "{}: {}",
                f.display(),
                s.description
            );
        }
    }

    /// Renewal mode `heartbeat`: the lease's counter stays still while its owner's heartbeat
    /// row moves; the lease expires only once both have been still for the failover time.
    #[test]
    fn a_moving_heartbeat_keeps_its_owners_still_leases() {
        let t0 = Instant::now();
        let f = Duration::from_secs(10);
        let mut lease = Lease::new("s", Checkpoint::TrimHorizon, BTreeSet::new());
        lease.lease_owner = Some("other".into());
        let mut beat = Lease::new(
            &heartbeat_key("other"),
            Checkpoint::TrimHorizon,
            BTreeSet::new(),
        );
        beat.lease_owner = Some("other".into());
        let mut obs = Observations::default();
        let mut t = t0;
        for _ in 0..5 {
            obs.update(&[lease.clone(), beat.clone()], t);
            assert!(!obs.is_expired(&lease, t, f));
            beat.lease_counter += 1;
            t += f / 2;
        }
        obs.update(&[lease.clone(), beat.clone()], t);
        assert_eq!(
            obs.next_expiry(std::slice::from_ref(&lease), "me", f),
            Some(t + f),
            "from the heartbeat's last move"
        );
        assert!(!obs.is_expired(&lease, t + f - Duration::from_millis(1), f));
        assert!(obs.is_expired(&lease, t + f, f), "the heartbeat stopped");
        // A per-lease renewer with an old heartbeat row (it changed mode) is alive by its lease.
        let mut renewed = lease.clone();
        renewed.lease_counter += 1;
        obs.update(&[renewed.clone(), beat.clone()], t + f);
        assert!(!obs.is_expired(&renewed, t + f + f / 2, f));
        assert_eq!(obs.still_for(&heartbeat_key("other"), t + f), Some(f));
    }

    #[test]
    fn expiry_counts_from_the_last_change_seen() {
        let t0 = Instant::now();
        let f = Duration::from_secs(10);
        let mut lease = Lease::new("s", Checkpoint::TrimHorizon, BTreeSet::new());
        lease.lease_owner = Some("other".into());
        let mut obs = Observations::default();
        obs.update(std::slice::from_ref(&lease), t0);
        assert!(!obs.is_expired(&lease, t0 + f - Duration::from_millis(1), f));
        assert!(obs.is_expired(&lease, t0 + f, f));
        assert_eq!(
            obs.next_expiry(std::slice::from_ref(&lease), "me", f),
            Some(t0 + f)
        );
        assert_eq!(
            obs.next_expiry(std::slice::from_ref(&lease), "other", f),
            None,
            "own leases do not expire for us"
        );
        // A renewal restarts the clock.
        lease.lease_counter += 1;
        obs.update(std::slice::from_ref(&lease), t0 + f);
        assert_eq!(
            obs.next_expiry(std::slice::from_ref(&lease), "me", f),
            Some(t0 + f * 2)
        );
        assert!(!obs.is_expired(&lease, t0 + f + f / 2, f));
        assert!(obs.is_expired(&lease, t0 + f * 2, f));
    }
}
