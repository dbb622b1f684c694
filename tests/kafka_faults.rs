//! The Kafka sink under faults: a worker paused past the failover time (a zombie), a broker
//! that stops answering for 30 s, and the at-least-once mode. Records are read back by the
//! raw-batch verifier (tests/common/kafka.rs).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::harness::{self, Delivery, Fleet};
use common::kafka::{self, TopicRead};
use common::kafka_broker::{rss_kib, PrivateBroker};
use common::*;

const PARTITIONS: i32 = 4;

async fn read(bootstrap: &str, topic: &str) -> TopicRead {
    harness::read_kafka(bootstrap, topic, PARTITIONS).await
}

fn deliveries(read: &TopicRead) -> Vec<Delivery> {
    harness::kafka_deliveries(read)
}

fn sink(bootstrap: &str, topic: &str, extra: &str) -> String {
    format!(
        r#"[connectors.sink]
type = "kafka"
brokers = "{bootstrap}"
topic = "{topic}"
max_records = 100
max_interval_ms = 200
call_timeout_ms = 5000
{extra}
"#
    )
}

/// Waits until every version up to `versions` of every key is among the committed records.
async fn wait_all(bootstrap: &str, topic: &str, expected: &BTreeMap<String, u64>, what: &str) {
    let started = Instant::now();
    loop {
        let v = harness::verify(expected, &deliveries(&read(bootstrap, topic).await));
        if v.lost == 0 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{what}: not done after 120 s: {v}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("key-{i:03}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_paused_inside_a_transaction_past_failover_commits_nothing() {
    zombie("inside_transaction").await;
}

/// Paused after its last look at the lease: on resuming it asks for the commit, which the
/// broker refuses (its producer was fenced by the new owner's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_paused_just_before_its_commit_is_fenced_and_commits_nothing() {
    zombie("before_commit").await;
}

async fn zombie(point: &str) {
    let (aws, kinesis, bootstrap) = (aws_endpoint(), kinesis_endpoint(), kafka::bootstrap());
    let k = harness::kinesis_client(&kinesis).await;
    let (stream, topic, leases) = (unique("zombie"), unique(point), unique("zombie-leases"));
    kafka::create_topic(&bootstrap, &topic, PARTITIONS).await;
    harness::create_stream(&k, &stream, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(&bootstrap, &topic, "");
    let (kk, a, s, l) = (kinesis.clone(), aws.clone(), stream.clone(), leases.clone());
    let mut fleet = Fleet::new(dir.path(), move |id| {
        harness::kinesis_raw_worker(id, "zombie", &a, &kk, &s, &l, free_port()) + &sink
    });
    let keys = keys(50);
    // w1 takes the one shard, commits a batch, then stops itself inside its second
    // transaction: records and commit record sent, the commit not yet asked for.
    let fault = format!("{point}:2:pause");
    fleet.start_with_env("w1", &[("SHARDBRIDGE_FAULT", &fault)]);
    harness::put_version(&k, &stream, &keys, 1).await;
    let mut expected: BTreeMap<String, u64> = keys.iter().map(|k| (k.clone(), 1)).collect();
    wait_all(&bootstrap, &topic, &expected, "version 1").await;
    harness::put_version(&k, &stream, &keys, 2).await;
    let pausing = format!("fault injection: pausing at {point}");
    wait_for(
        "w1 paused inside a transaction",
        Duration::from_secs(60),
        || (harness::logs_containing(dir.path(), &pausing) > 0).then_some(()),
    );
    // w2 takes the lease once it expires (failover 3 s): its producer fences w1's and aborts
    // w1's open transaction, then it sends the batch again.
    fleet.start("w2");
    harness::put_version(&k, &stream, &keys, 3).await;
    expected.values_mut().for_each(|v| *v = 3);
    wait_all(&bootstrap, &topic, &expected, "w2 after the takeover").await;
    fleet.workers["w1"].signal("CONT");
    wait_for("w1 gives the lease up", Duration::from_secs(60), || {
        let log = std::fs::read_to_string(&fleet.workers["w1"].log).unwrap_or_default();
        (log.contains("fault injection: resumed")
            && (log.contains("lease lost to another worker") || log.contains("fenced")))
        .then_some(())
    });
    harness::put_version(&k, &stream, &keys, 4).await;
    expected.values_mut().for_each(|v| *v = 4);
    wait_all(&bootstrap, &topic, &expected, "after w1 resumed").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let w1_log = fleet.workers["w1"].log.clone();
    fleet.stop_all();
    let w1 = std::fs::read_to_string(&w1_log).unwrap_or_default();
    let after: Vec<&str> = w1
        .lines()
        .skip_while(|l| !l.contains("fault injection: resumed"))
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    eprintln!("w1 after it resumed:\n{}", after.join("\n"));
    let got = read(&bootstrap, &topic).await;
    let v = harness::verify(&expected, &deliveries(&got));
    eprintln!(
        "verifier: {v}; {} aborted records, {} abort markers",
        got.aborted, got.abort_markers
    );
    assert_eq!((v.lost, v.duplicated, v.out_of_order), (0, 0, 0), "{v}");
    assert!(
        got.aborted > 0,
        "the zombie's transaction was aborted, not committed"
    );
    assert_eq!(got.open, 0, "no transaction left open");
}

/// How a broker is unavailable for 30 s.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Outage {
    /// Frozen (SIGSTOP): connections hang, calls time out.
    Frozen,
    /// Stopped: connections are refused; started again on the same storage.
    Stopped,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_stops_answering_for_30_s_loses_nothing() {
    broker_outage(Outage::Frozen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_is_stopped_for_30_s_loses_nothing() {
    broker_outage(Outage::Stopped).await;
}

async fn broker_outage(how: Outage) {
    let (aws, kinesis) = (aws_endpoint(), kinesis_endpoint());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("tansu.out");
    let mut broker = match how {
        Outage::Frozen => PrivateBroker::start(&log),
        Outage::Stopped => PrivateBroker::start_on_s3(&log, &unique("tansu").to_lowercase()).await,
    };
    let k = harness::kinesis_client(&kinesis).await;
    let (stream, topic, leases) = (unique("outage"), unique("outage"), unique("outage-leases"));
    kafka::create_topic(&broker.bootstrap, &topic, PARTITIONS).await;
    harness::create_stream(&k, &stream, 2).await;
    let port = free_port();
    let config =
        harness::kinesis_raw_worker("o1", "outage", &aws, &kinesis, &stream, &leases, port)
            + &sink(&broker.bootstrap, &topic, "");
    let path = dir.path().join("o1.toml");
    std::fs::write(&path, config).unwrap();
    let mut run = Running::start(&path, &dir.path().join("o1.log"));
    let keys = keys(100);
    harness::put_version(&k, &stream, &keys, 1).await;
    let mut expected: BTreeMap<String, u64> = keys.iter().map(|k| (k.clone(), 1)).collect();
    wait_all(&broker.bootstrap, &topic, &expected, "before the outage").await;
    let ready = || http_get(port, "/readyz").map(|(status, _)| status);
    assert_eq!(ready(), Some(200));

    match how {
        Outage::Frozen => broker.signal("STOP"),
        Outage::Stopped => broker.kill(),
    }
    let outage = Instant::now();
    let mut degraded = false;
    let mut max_rss = 0;
    let mut v = 1;
    while outage.elapsed() < Duration::from_secs(30) {
        if v < 6 {
            v += 1;
            harness::put_version(&k, &stream, &keys, v).await;
        }
        degraded |= ready() == Some(503);
        max_rss = max_rss.max(rss_kib(run.child.id()).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    match how {
        Outage::Frozen => broker.signal("CONT"),
        Outage::Stopped => broker.start_again(),
    }
    expected.values_mut().for_each(|x| *x = v);
    wait_all(&broker.bootstrap, &topic, &expected, "after the outage").await;
    wait_for("/readyz ready again", Duration::from_secs(30), || {
        (ready() == Some(200)).then_some(())
    });
    assert_eq!(run.stop(Duration::from_secs(30)), 0, "{}", run.log_text());
    let got = read(&broker.bootstrap, &topic).await;
    let verdict = harness::verify(&expected, &deliveries(&got));
    eprintln!(
        "{how:?}: verifier: {verdict}; during the outage: max RSS {max_rss} KiB, /readyz degraded: {degraded}"
    );
    assert_eq!(
        (verdict.lost, verdict.duplicated, verdict.out_of_order),
        (0, 0, 0),
        "{verdict}"
    );
    assert!(
        degraded,
        "/readyz reported the shard degraded while the broker was down"
    );
    assert!(
        max_rss > 0 && max_rss < 256 * 1024,
        "memory stayed bounded: {max_rss} KiB"
    );
    assert_eq!(got.open, 0, "no transaction left open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_transactions_every_change_arrives_at_least_once_in_order() {
    let (aws, kinesis, bootstrap) = (aws_endpoint(), kinesis_endpoint(), kafka::bootstrap());
    let k = harness::kinesis_client(&kinesis).await;
    let (stream, topic, leases) = (unique("alo"), unique("alo"), unique("alo-leases"));
    kafka::create_topic(&bootstrap, &topic, PARTITIONS).await;
    harness::create_stream(&k, &stream, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let config =
        harness::kinesis_raw_worker("a1", "alo", &aws, &kinesis, &stream, &leases, free_port())
            + &sink(&bootstrap, &topic, "exactly_once = false");
    let path = dir.path().join("a1.toml");
    std::fs::write(&path, config).unwrap();
    let mut run = Running::start(&path, &dir.path().join("a1.log"));
    let keys = keys(100);
    for v in 1..=3 {
        harness::put_version(&k, &stream, &keys, v).await;
    }
    let expected: BTreeMap<String, u64> = keys.iter().map(|k| (k.clone(), 3)).collect();
    wait_all(&bootstrap, &topic, &expected, "at least once").await;
    assert_eq!(run.stop(Duration::from_secs(30)), 0, "{}", run.log_text());
    let got = read(&bootstrap, &topic).await;
    let v = harness::verify(&expected, &deliveries(&got));
    eprintln!("verifier: {v}");
    assert_eq!((v.lost, v.out_of_order), (0, 0), "{v}");
    assert!(
        got.committed.iter().all(|r| !r.transactional),
        "an idempotent producer, no transactions"
    );
    assert_eq!(got.commit_markers, 0);
}
