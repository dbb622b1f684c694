//! The crash harness with the Kinesis sink on a resharding Kinesis source (both kinesalite):
//! three workers, SIGKILLs at random moments, and workers that abort themselves at each step of
//! the reconciling protocol (after the intent, between two PutRecords calls of a batch, after the
//! last put before the checkpoint). The verifier reads the whole target stream: nothing lost,
//! nothing duplicated, per-key order kept. Once as configured by default, once with each shard
//! written in four parallel lanes (`parallelization_factor`).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::harness::{self, Fleet};
use common::*;

fn config(
    (kinesis, aws, stream, leases, target): (&str, &str, &str, &str, &str),
    lanes: u8,
    renewal: &str,
    id: &str,
) -> String {
    harness::kinesis_raw_worker(id, "keo", aws, kinesis, stream, leases, free_port())
        .replace(
            "[connectors.source]",
            &format!("parallelization_factor = {lanes}\n[connectors.source]"),
        )
        .replace(
            "[connectors.leases]",
            &format!("[connectors.leases]\nrenewal = \"{renewal}\""),
        )
        + &format!(
            r#"[connectors.sink]
type = "kinesis"
stream = "{target}"
max_records = 400
max_interval_ms = 1000
[connectors.sink.aws]
endpoint_url = "{kinesis}"
"#
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_harness_with_the_kinesis_sink_is_exactly_once() {
    crash_harness(1, "per_lease").await;
}

/// Lease renewal mode heartbeat: leases move when a killed worker's heartbeat goes still, and
/// are stolen for balance from live workers that find out by their next scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_harness_with_the_kinesis_sink_and_heartbeat_renewal_is_exactly_once() {
    crash_harness(1, "heartbeat").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_harness_with_the_kinesis_sink_in_parallel_lanes_is_exactly_once() {
    crash_harness(4, "per_lease").await;
}

async fn crash_harness(lanes: u8, renewal: &'static str) {
    let aws = aws_endpoint();
    let kinesis = kinesis_endpoint();
    let k = harness::kinesis_client(&kinesis).await;
    let stream = unique("keo-src");
    let target = unique("keo-dst");
    harness::create_stream(&k, &stream, 4).await;
    harness::create_stream(&k, &target, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let leases = unique("keo-leases");
    let (kk, a, s, l, b) = (
        kinesis.clone(),
        aws.clone(),
        stream.clone(),
        leases.clone(),
        target.clone(),
    );
    let mut fleet = Fleet::new(dir.path(), move |id| {
        config((&kk, &a, &s, &l, &b), lanes, renewal, id)
    });
    let ids = ["w1", "w2", "w3"];
    for id in ids {
        fleet.start(id);
    }
    let keys: Vec<String> = (0..300).map(|i| format!("key-{i:03}")).collect();
    let faults = ["after_intent", "between_puts", "after_upload"];
    let versions = harness::write_with_faults(&mut fleet, &k, &stream, &keys, ids, faults, 9).await;
    let expected: BTreeMap<String, u64> = keys.iter().map(|k| (k.clone(), versions)).collect();
    let started = Instant::now();
    loop {
        harness::restart_exited(&mut fleet, ids);
        let deliveries = harness::kinesis_deliveries(&harness::read_stream(&k, &target).await);
        let aborted = faults
            .iter()
            .filter(|p| harness::fault_hit(dir.path(), p))
            .count();
        if harness::verify(&expected, &deliveries).lost == 0 && aborted == faults.len() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "not done after 240 s: {} of 3 faults hit; {}",
            aborted,
            harness::verify(&expected, &deliveries)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    fleet.stop_all();
    let records = harness::read_stream(&k, &target).await;
    let v = harness::verify(&expected, &harness::kinesis_deliveries(&records));
    let replayed =
        harness::logs_containing(dir.path(), "wrote the batch of a pending intent again");
    let found = reconciled_found(dir.path());
    eprintln!(
        "verifier over the target stream ({} records): {v}; {replayed} intents replayed, \
         {found} records found already written by reconciliation",
        records.len()
    );
    assert_eq!((v.lost, v.duplicated, v.out_of_order), (0, 0, 0), "{v}");
    assert!(
        replayed >= 1,
        "a worker that died with an intent pending: its batch was written again"
    );
    assert!(
        found >= 1,
        "a worker that died after putting records: the new owner found them in the target"
    );
}

/// The sum of `found=N` over the workers' "reconciled a pending intent" log lines.
fn reconciled_found(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .flat_map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("reconciled a pending intent"))
                .filter_map(|l| {
                    let rest = &l[l.find("found=")? + 6..];
                    rest.split(|c: char| !c.is_ascii_digit())
                        .next()?
                        .parse::<usize>()
                        .ok()
                })
                .collect::<Vec<_>>()
        })
        .sum()
}
