//! Lease planning at scale: one worker's planning pass over a lease table of 10,000 leases
//! (a fleet of 20 workers, some leases free, some expired), and the observation update that
//! precedes it each renew interval. Pure functions, no I/O: this is the CPU a scan costs.

use std::collections::{BTreeSet, HashSet};
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardbridge::lease::model::{Checkpoint, Lease};
use shardbridge::lease::planning::{plan, Observations, WorkerView};
use shardbridge::source::sequence::SequenceNumber;
use tokio::time::Instant;

const LEASES: usize = 10_000;
const WORKERS: usize = 20;

/// 10,000 leases: most held by one of 20 workers, every 50th free, every 100th finished.
fn table() -> Vec<Lease> {
    (0..LEASES)
        .map(|i| {
            let checkpoint = if i % 100 == 99 {
                Checkpoint::ShardEnd
            } else {
                Checkpoint::Sequence(SequenceNumber::parse(&format!("{}", 1000 + i)).unwrap())
            };
            let mut l = Lease::new(&format!("shardId-{i:012}"), checkpoint, BTreeSet::new());
            if i % 50 != 7 {
                l.lease_owner = Some(format!("worker-{}", i % WORKERS));
                l.lease_counter = i as u64;
            }
            l
        })
        .collect()
}

fn planning(c: &mut Criterion) {
    let leases = table();
    let now = Instant::now();
    let mut observed = Observations::default();
    observed.update(&leases, now);
    let running: HashSet<String> = leases
        .iter()
        .filter(|l| l.lease_owner.as_deref() == Some("worker-3"))
        .map(|l| l.lease_key.clone())
        .collect();
    let view = WorkerView {
        me: "worker-3",
        running: &running,
        failover: Duration::from_secs(10),
        max_leases: usize::MAX,
    };
    let mut group = c.benchmark_group("lease_planning");
    group.throughput(Throughput::Elements(LEASES as u64));
    group.bench_function("plan_10000_leases", |b| {
        b.iter(|| {
            let p = plan(black_box(&leases), &view, &observed, now, |_| true);
            black_box(p.take.len() + p.steal.len())
        })
    });
    group.bench_function("observe_10000_leases", |b| {
        let mut o = Observations::default();
        b.iter(|| o.update(black_box(&leases), now))
    });
    group.finish();
}

criterion_group!(benches, planning);
criterion_main!(benches);
