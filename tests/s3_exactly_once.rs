//! The crash harness with the S3 sink (moto) on a resharding Kinesis source (kinesalite): three
//! workers, SIGKILLs, and workers that abort themselves at each step of the idempotent commit
//! protocol (after the intent, during the upload, after the upload before the checkpoint). The
//! verifier reads every object back: nothing lost, nothing duplicated, per-key order kept.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::harness::{self, Fleet};
use common::*;

fn config(kinesis: &str, aws: &str, stream: &str, leases: &str, bucket: &str, id: &str) -> String {
    harness::kinesis_raw_worker(id, "s3eo", aws, kinesis, stream, leases, free_port())
        + &format!(
            r#"[connectors.sink]
type = "s3"
bucket = "{bucket}"
prefix = "raw/"
max_records = 200
max_interval_ms = 300
force_path_style = true
"#
        )
}

fn logs_containing(dir: &std::path::Path, needle: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .matches(needle)
                .count()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_harness_with_the_s3_sink_is_exactly_once() {
    let aws = aws_endpoint();
    let kinesis = kinesis_endpoint();
    let k = harness::kinesis_client(&kinesis).await;
    let s3 = harness::s3_client(&aws).await;
    let stream = unique("s3eo");
    let bucket = unique("s3eo").to_lowercase();
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    harness::create_stream(&k, &stream, 4).await;
    let dir = tempfile::tempdir().unwrap();
    let leases = unique("s3eo-leases");
    let (kk, a, s, l, b) = (
        kinesis.clone(),
        aws.clone(),
        stream.clone(),
        leases.clone(),
        bucket.clone(),
    );
    let mut fleet = Fleet::new(dir.path(), move |id| config(&kk, &a, &s, &l, &b, id));
    let ids = ["w1", "w2", "w3"];
    for id in ids {
        fleet.start(id);
    }
    let keys: Vec<String> = (0..300).map(|i| format!("key-{i:03}")).collect();
    let versions = 9u64;
    let faults = ["after_intent", "during_upload", "after_upload"];
    for v in 1..=versions {
        harness::put_version(&k, &stream, &keys, v).await;
        match v {
            2 | 4 => drop(harness::split(&k, &stream).await),
            6 => drop(harness::merge(&k, &stream).await),
            _ => {}
        }
        // Restart a worker armed to abort itself at one step of the protocol.
        if let Some(point) = [1, 3, 5].iter().position(|x| *x == v).map(|i| faults[i]) {
            let id = ids[(v as usize / 2) % 3];
            fleet.kill(id);
            fleet.start_with_env(id, &[("SHARDBRIDGE_FAULT", point)]);
        }
        if v == 7 {
            fleet.kill("w2");
            fleet.start("w2");
        }
        // A worker that aborted itself comes back without the fault.
        for id in ids {
            if fleet.exited(id).is_some() {
                fleet.start(id);
            }
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let expected: BTreeMap<String, u64> = keys.iter().map(|k| (k.clone(), versions)).collect();
    let started = Instant::now();
    loop {
        for id in ids {
            if fleet.exited(id).is_some() {
                fleet.start(id);
            }
        }
        let (deliveries, _) = harness::read_s3_objects(&s3, &bucket).await;
        let aborted = faults
            .iter()
            .filter(|p| {
                logs_containing(dir.path(), &format!("fault injection: aborting at {p}")) > 0
                    || (**p == "during_upload"
                        && logs_containing(dir.path(), "aborting during the step") > 0)
            })
            .count();
        if harness::verify(&expected, &deliveries).lost == 0 && aborted == faults.len() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not done after 120 s: {} of 3 faults hit; {}",
            aborted,
            harness::verify(&expected, &deliveries)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    fleet.stop_all();
    let (deliveries, objects) = harness::read_s3_objects(&s3, &bucket).await;
    let v = harness::verify(&expected, &deliveries);
    let replayed = logs_containing(dir.path(), "wrote the batch of a pending intent again");
    eprintln!("verifier over {objects} objects: {v}; {replayed} intents replayed");
    assert_eq!((v.lost, v.duplicated, v.out_of_order), (0, 0, 0), "{v}");
    assert!(
        replayed >= 1,
        "a worker that died with an intent pending: its batch was written again"
    );
}
