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
    let faults = ["after_intent", "during_upload", "after_upload"];
    let versions = harness::write_with_faults(&mut fleet, &k, &stream, &keys, ids, faults, 9).await;
    let expected: BTreeMap<String, u64> = keys.iter().map(|k| (k.clone(), versions)).collect();
    let started = Instant::now();
    loop {
        harness::restart_exited(&mut fleet, ids);
        let (deliveries, _) = harness::read_s3_objects(&s3, &bucket).await;
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
    let (deliveries, objects) = harness::read_s3_objects(&s3, &bucket).await;
    let v = harness::verify(&expected, &deliveries);
    let replayed =
        harness::logs_containing(dir.path(), "wrote the batch of a pending intent again");
    eprintln!("verifier over {objects} objects: {v}; {replayed} intents replayed");
    assert_eq!((v.lost, v.duplicated, v.out_of_order), (0, 0, 0), "{v}");
    assert!(
        replayed >= 1,
        "a worker that died with an intent pending: its batch was written again"
    );
}
