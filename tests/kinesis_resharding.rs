//! The lease and lineage machinery on real resharding (kinesalite): a 4-shard stream split twice
//! and merged once while a fleet of workers reads it and 500 keys are written; with and without
//! SIGKILLs. Every worker appends to one shared file (O_APPEND, one write per batch), so its line
//! order is the global delivery order and the verifier can check per-key order across workers.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::harness::{self, Delivery, Fleet};
use common::*;

fn config(
    endpoint: &str,
    stream: &str,
    leases: &str,
    out: &std::path::Path,
    aws: &str,
    id: &str,
) -> String {
    harness::kinesis_raw_worker(id, "reshard", aws, endpoint, stream, leases, free_port())
        + &format!(
            "[connectors.sink]\ntype = \"file\"\npath = \"{}\"\nfsync = false\n",
            out.display()
        )
}

#[test]
fn the_verifier_finds_loss_duplicates_and_disorder() {
    let d = |k: &str, v| Delivery {
        key: k.into(),
        version: v,
    };
    let expected = BTreeMap::from([("a".to_string(), 3), ("b".to_string(), 2)]);
    let good = [d("a", 1), d("b", 1), d("a", 2), d("b", 2), d("a", 3)];
    let v = harness::verify(&expected, &good);
    assert_eq!((v.lost, v.duplicated, v.out_of_order), (0, 0, 0), "{v}");
    // A re-sent record after a crash is a duplicate, not disorder.
    let resent = [
        d("a", 1),
        d("a", 2),
        d("a", 2),
        d("a", 3),
        d("b", 1),
        d("b", 2),
    ];
    let v = harness::verify(&expected, &resent);
    assert_eq!((v.lost, v.duplicated, v.out_of_order), (0, 1, 0), "{v}");
    let bad = [d("a", 2), d("a", 1), d("b", 1)];
    let v = harness::verify(&expected, &bad);
    assert_eq!((v.lost, v.duplicated, v.out_of_order), (2, 0, 1), "{v}");
}

struct Run {
    kills: usize,
    /// From a parent's SHARD_END to its child's first GetRecords, as the workers logged it.
    child_start_delays_ms: Vec<u64>,
    /// Leases of closed shards still in the table at the end.
    parent_leases_left: Vec<String>,
}

fn child_start_delays(dir: &std::path::Path) -> Vec<u64> {
    let mut delays: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .flat_map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|l| l.contains("child shard read after its parent ended"))
        .filter_map(|l| {
            l.split("delay_ms=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    delays.sort();
    delays
}

async fn reshard_under_load(kill_every: Option<Duration>) -> (harness::Verdict, Run) {
    let aws = aws_endpoint();
    let endpoint = kinesis_endpoint();
    let k = harness::kinesis_client(&endpoint).await;
    let stream = unique("reshard");
    harness::create_stream(&k, &stream, 4).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let leases = unique("reshard-leases");
    let (e, s, l, o, a) = (
        endpoint.clone(),
        stream.clone(),
        leases.clone(),
        out.clone(),
        aws.clone(),
    );
    let mut fleet = Fleet::new(dir.path(), move |id| config(&e, &s, &l, &o, &a, id));
    let ids = ["w1", "w2", "w3"];
    for id in ids {
        fleet.start(id);
    }
    let keys: Vec<String> = (0..500).map(|i| format!("key-{i:03}")).collect();
    let versions = 8u64;
    let mut run = Run {
        kills: 0,
        child_start_delays_ms: Vec::new(),
        parent_leases_left: Vec::new(),
    };
    let mut last_kill = Instant::now();
    let mut rng = 0x9e3779b97f4a7c15u64;
    for v in 1..=versions {
        harness::put_version(&k, &stream, &keys, v).await;
        match v {
            2 | 4 => {
                harness::split(&k, &stream).await;
            }
            6 => {
                harness::merge(&k, &stream).await;
            }
            _ => {}
        }
        if let Some(every) = kill_every {
            if last_kill.elapsed() >= every || v % 2 == 0 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let id = ids[(rng % 3) as usize];
                fleet.kill(id);
                run.kills += 1;
                tokio::time::sleep(Duration::from_millis(300 + rng % 700)).await;
                fleet.start(id);
                last_kill = Instant::now();
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let expected: BTreeMap<String, u64> = keys.iter().map(|k| (k.clone(), versions)).collect();
    let started = Instant::now();
    let verdict = loop {
        let v = harness::verify(&expected, &harness::read_raw(&out));
        if v.lost == 0 || started.elapsed() > Duration::from_secs(120) {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // The closed parents' leases stay while the stream lists them (they say the shard is done).
    let ddb = aws_sdk_dynamodb::Client::new(&sdk_config(&aws).await);
    let closed = harness::closed_shards(&k, &stream).await;
    assert_eq!(closed.len(), 4, "two splits and a merge close four shards");
    let started = Instant::now();
    run.parent_leases_left = loop {
        let rows = ddb
            .scan()
            .table_name(&leases)
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        let left: Vec<String> = rows
            .items()
            .iter()
            .filter_map(|i| i["leaseKey"].as_s().ok().cloned())
            .filter(|key| closed.contains(key))
            .collect();
        if left.len() == closed.len() || started.elapsed() > Duration::from_secs(15) {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    fleet.stop_all();
    run.child_start_delays_ms = child_start_delays(dir.path());
    let final_verdict = harness::verify(&expected, &harness::read_raw(&out));
    assert!(final_verdict.lost <= verdict.lost);
    (final_verdict, run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_twice_and_merge_once_under_three_workers_keeps_every_key_in_order() {
    let (v, run) = reshard_under_load(None).await;
    eprintln!("verifier: {v}");
    assert_eq!((v.lost, v.out_of_order), (0, 0), "{v}");
    // The closed parents are still listed (retention), so their finished leases stay: they
    // are what says those shards are done.
    assert_eq!(
        run.parent_leases_left.len(),
        4,
        "{:?}",
        run.parent_leases_left
    );
    // Two splits and a merge close 4 parents; children are read at once, not at the next sync.
    let d = &run.child_start_delays_ms;
    eprintln!("child start delays (ms, same worker): {d:?}");
    assert!(!d.is_empty(), "no child start was measured");
    assert!(
        *d.last().unwrap() < 1000,
        "a child started {} ms after its parent ended",
        d.last().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_harness_sigkills_lose_nothing_and_keep_order() {
    let (v, run) = reshard_under_load(Some(Duration::from_secs(2))).await;
    eprintln!("verifier after {} SIGKILLs: {v}", run.kills);
    assert!(run.kills >= 4);
    assert_eq!((v.lost, v.out_of_order), (0, 0), "{v}");
}
