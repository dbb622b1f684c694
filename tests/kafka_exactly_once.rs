//! The crash harness with the Kafka sink (tansu) on a resharding Kinesis source (kinesalite):
//! three workers, SIGKILLs, and workers that abort themselves at each step of the
//! transactional protocol (after the intent, inside the transaction, after the commit before
//! the checkpoint). The verifier reads the topic's raw batches and counts only records whose
//! transaction committed: nothing lost, nothing duplicated, per-key order kept, and no
//! transaction left open.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::harness::{self, Delivery, Fleet};
use common::kafka::{self, TopicRead};
use common::*;

const PARTITIONS: i32 = 4;

fn config(kinesis: &str, aws: &str, stream: &str, leases: &str, sink: &str, id: &str) -> String {
    harness::kinesis_raw_worker(id, "kafkaeo", aws, kinesis, stream, leases, free_port()) + sink
}

async fn read(bootstrap: &str, topic: &str) -> TopicRead {
    harness::read_kafka(bootstrap, topic, PARTITIONS).await
}

fn deliveries(read: &TopicRead) -> Vec<Delivery> {
    harness::kafka_deliveries(read)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_harness_with_the_kafka_sink_is_exactly_once() {
    let aws = aws_endpoint();
    let kinesis = kinesis_endpoint();
    let bootstrap = kafka::bootstrap();
    let k = harness::kinesis_client(&kinesis).await;
    let stream = unique("kafkaeo");
    let topic = unique("kafkaeo");
    kafka::create_topic(&bootstrap, &topic, PARTITIONS).await;
    harness::create_stream(&k, &stream, 4).await;
    let dir = tempfile::tempdir().unwrap();
    let leases = unique("kafkaeo-leases");
    let sink = format!(
        r#"[connectors.sink]
type = "kafka"
brokers = "{bootstrap}"
topic = "{topic}"
max_records = 200
max_interval_ms = 300
call_timeout_ms = 10000
"#
    );
    let (kk, a, s, l) = (kinesis.clone(), aws.clone(), stream.clone(), leases.clone());
    let mut fleet = Fleet::new(dir.path(), move |id| config(&kk, &a, &s, &l, &sink, id));
    let ids = ["w1", "w2", "w3"];
    for id in ids {
        fleet.start(id);
    }
    let keys: Vec<String> = (0..300).map(|i| format!("key-{i:03}")).collect();
    let faults = ["after_intent", "inside_transaction", "after_upload"];
    let versions = harness::write_with_faults(&mut fleet, &k, &stream, &keys, ids, faults, 9).await;
    let expected: BTreeMap<String, u64> = keys.iter().map(|k| (k.clone(), versions)).collect();
    let started = Instant::now();
    loop {
        harness::restart_exited(&mut fleet, ids);
        let got = read(&bootstrap, &topic).await;
        let v = harness::verify(&expected, &deliveries(&got));
        if v.lost == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "not done after 240 s: {v}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    fleet.stop_all();
    let got = read(&bootstrap, &topic).await;
    let v = harness::verify(&expected, &deliveries(&got));
    let replayed =
        harness::logs_containing(dir.path(), "wrote the batch of a pending intent again");
    let found_committed = harness::logs_containing(dir.path(), "the pending batch was committed");
    eprintln!(
        "verifier: {v}; {} aborted records, {} commit and {} abort markers; {replayed} intents \
         replayed, {found_committed} found committed",
        got.aborted, got.commit_markers, got.abort_markers
    );
    assert_eq!((v.lost, v.duplicated, v.out_of_order), (0, 0, 0), "{v}");
    assert_eq!(got.open, 0, "no transaction left open");
    assert!(
        got.aborted > 0,
        "the worker that died inside a transaction left records that were aborted"
    );
    assert!(
        replayed >= 1,
        "a batch begun by a dead worker was sent again"
    );
    assert!(
        found_committed >= 1,
        "a batch committed by a worker that died before its checkpoint was found committed"
    );
}
