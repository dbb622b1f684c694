//! The Kafka sink end to end: a DynamoDB stream (moto) into 4-partition topics on the tansu
//! broker, read back by the raw-batch verifier (tests/common/kafka.rs), which counts a record as
//! committed only when its transaction's COMMIT marker follows it.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::types::StreamViewType;
use common::kafka::{self, KafkaRecord, TopicRead};
use common::workload;
use common::*;
use serde_json::Value;

const PARTITIONS: i32 = 4;

fn worker(endpoint: &str, port: u16) -> String {
    format!(
        r#"
[worker]
id = "{}"
listen = "127.0.0.1:{}"
shutdown_timeout_ms = 20000

[aws]
region = "us-east-1"
endpoint_url = "{endpoint}"
"#,
        unique("worker"),
        port
    )
}

fn connector(name: &str, table: &str, leases: &str, format: &str, sink: &str) -> String {
    format!(
        r#"
[[connectors]]
name = "{name}"
[connectors.source]
type = "dynamodb-streams"
table = "{table}"
poll_idle_ms = 100
max_records = 100
[connectors.leases]
table = "{leases}"
failover_ms = 6000
[connectors.format]
type = "{format}"
[connectors.sink]
type = "kafka"
{sink}
"#
    )
}

async fn read(bootstrap: &str, topic: &str) -> TopicRead {
    common::harness::read_kafka(bootstrap, topic, PARTITIONS).await
}

/// The Java client's murmur2 (org.apache.kafka.common.utils.Utils.murmur2).
fn murmur2(data: &[u8]) -> i32 {
    let (seed, m, r) = (0x9747b28cu32 as i32, 0x5bd1e995u32 as i32, 24);
    let len = data.len() as i32;
    let mut h = seed ^ len;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = i32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(m);
        k ^= ((k as u32) >> r) as i32;
        k = k.wrapping_mul(m);
        h = h.wrapping_mul(m);
        h ^= k;
    }
    if tail.len() >= 3 {
        h ^= (tail[2] as i32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as i32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as i32;
        h = h.wrapping_mul(m);
    }
    h ^= ((h as u32) >> 13) as i32;
    h = h.wrapping_mul(m);
    h ^= ((h as u32) >> 15) as i32;
    h
}

/// The partition the Java client's default partitioner picks for a keyed record.
fn java_partition(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fffffff) % partitions
}

#[test]
fn murmur2_matches_the_java_client() {
    // Values from the Java client's own tests (UtilsTest.testMurmur2).
    let cases: [(&[u8], i32); 3] = [
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
    ];
    for (data, want) in cases {
        assert_eq!(murmur2(data), want, "{:?}", std::str::from_utf8(data));
    }
}

fn seq_key(s: &str) -> (usize, String) {
    (s.len(), s.to_string())
}

/// What the acceptance asks of one topic: every change once among committed records, each
/// item's changes in stream order within one partition (the Java client's), keys and headers.
fn check_topic(
    format: &str,
    read: &TopicRead,
    plan: &[(String, Vec<workload::Change>)],
    stream_arn: &str,
) {
    let total: usize = plan.iter().map(|(_, c)| c.len()).sum();
    assert_eq!(read.open, 0, "{format}: no transaction left open");
    assert!(read.commit_markers > 0, "{format}: written in transactions");
    let mut by_seq: HashMap<String, usize> = HashMap::new();
    let mut by_item: BTreeMap<String, Vec<&KafkaRecord>> = BTreeMap::new();
    for r in &read.committed {
        assert!(r.transactional, "{format}: every record in a transaction");
        let v: Value = serde_json::from_slice(&r.value).expect("a JSON value");
        let (id, seq, op) = match format {
            "lambda" => (
                v["dynamodb"]["Keys"]["id"]["S"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                v["dynamodb"]["SequenceNumber"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                v["eventName"].as_str().unwrap().to_string(),
            ),
            _ => (
                v["keys"]["id"].as_str().unwrap().to_string(),
                v["seq"].as_str().unwrap().to_string(),
                // `plain` names operations in lower case.
                v["op"].as_str().unwrap().to_uppercase(),
            ),
        };
        let key = r.key.clone().expect("a keyed record");
        assert_eq!(
            String::from_utf8(key.clone()).unwrap(),
            id,
            "{format}: key = item key"
        );
        assert_eq!(
            r.partition,
            java_partition(&key, PARTITIONS),
            "{format}: {id} on the partition a Java producer would choose"
        );
        assert_eq!(r.header("shardbridge.stream").as_deref(), Some(stream_arn));
        assert!(r.header("shardbridge.shard").is_some_and(|s| !s.is_empty()));
        assert_eq!(r.header("shardbridge.sequence"), Some(seq.clone()));
        assert_eq!(r.header("shardbridge.event"), Some(op));
        *by_seq.entry(seq).or_default() += 1;
        by_item.entry(id).or_default().push(r);
    }
    let dups = by_seq.values().filter(|n| **n > 1).count();
    assert_eq!(dups, 0, "{format}: changes committed more than once");
    assert_eq!(read.committed.len(), total, "{format}: every change once");
    for (id, changes) in plan {
        let got = &by_item[id];
        assert_eq!(got.len(), changes.len(), "{format}: {id}");
        assert!(got
            .windows(2)
            .all(|w| w[0].partition == w[1].partition && w[0].offset < w[1].offset));
        let seqs: Vec<_> = got
            .iter()
            .map(|r| seq_key(&r.header("shardbridge.sequence").unwrap()))
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{format}: {id} in stream order"
        );
        for (r, c) in got.iter().zip(changes) {
            assert_eq!(
                r.header("shardbridge.event").as_deref(),
                Some(c.op),
                "{format}: {id}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dynamodb_stream_lands_in_kafka_once_in_item_order() {
    let endpoint = aws_endpoint();
    let bootstrap = kafka::bootstrap();
    let ddb = aws_sdk_dynamodb::Client::new(&sdk_config(&endpoint).await);
    let table = unique("kafka");
    let stream_arn = workload::create_table(&ddb, &table, StreamViewType::NewAndOldImages).await;
    let plan = workload::plan(200, 2000);
    workload::apply(&ddb, &table, &plan).await;
    let (lambda_topic, plain_topic) = (unique("lambda"), unique("plain"));
    kafka::create_topic(&bootstrap, &lambda_topic, PARTITIONS).await;
    kafka::create_topic(&bootstrap, &plain_topic, PARTITIONS).await;

    let dir = tempfile::tempdir().unwrap();
    let sink = |topic: &str| {
        format!("brokers = \"{bootstrap}\"\ntopic = \"{topic}\"\nmax_records = 150\n")
    };
    let port = free_port();
    let cfg = worker(&endpoint, port)
        + &connector(
            "k-lambda",
            &table,
            &unique("kl"),
            "lambda",
            &sink(&lambda_topic),
        )
        + &connector(
            "k-plain",
            &table,
            &unique("kp"),
            "plain",
            &sink(&plain_topic),
        );
    let path = dir.path().join("kafka.toml");
    std::fs::write(&path, cfg).unwrap();
    let mut run = Running::start(&path, &dir.path().join("kafka.log"));
    let total: usize = plan.iter().map(|(_, c)| c.len()).sum();
    let started = std::time::Instant::now();
    loop {
        let (a, b) = (
            read(&bootstrap, &lambda_topic).await,
            read(&bootstrap, &plain_topic).await,
        );
        if a.committed.len() >= total && b.committed.len() >= total {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "after 120 s: {} and {} of {total} committed; log:\n{}",
            a.committed.len(),
            b.committed.len(),
            run.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The sink's own metrics say the same, per connector.
    let metrics = wait_for("/metrics", Duration::from_secs(10), || {
        http_get(port, "/metrics").map(|(_, body)| body)
    });
    for c in ["k-lambda", "k-plain"] {
        let label = format!("connector=\"{c}\"");
        let produced = metric_value(&metrics, "shardbridge_kafka_records_produced_total", &label);
        assert_eq!(
            produced,
            Some(total as f64),
            "{c}: records produced\n{metrics}"
        );
        let committed = metric_value(
            &metrics,
            "shardbridge_kafka_transactions_total",
            &format!("{label},outcome=\"committed\""),
        );
        assert!(
            committed.unwrap_or(0.0) >= 1.0,
            "{c}: transactions\n{metrics}"
        );
        let producers = metric_value(&metrics, "shardbridge_kafka_producers", &label);
        assert_eq!(producers, Some(1.0), "{c}: one producer per leased shard");
    }
    assert_eq!(run.stop(Duration::from_secs(30)), 0, "{}", run.log_text());
    for (format, topic) in [("lambda", &lambda_topic), ("plain", &plain_topic)] {
        let got = read(&bootstrap, topic).await;
        check_topic(format, &got, &plan, &stream_arn);
        eprintln!(
            "{format}: {} committed ({} commit markers), {} aborted",
            got.committed.len(),
            got.commit_markers,
            got.aborted
        );
    }
}

/// A record larger than the producer accepts stops the connector naming the record; nothing of
/// its batch is committed (the transaction is aborted), and it is not skipped silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_too_large_stops_the_connector_naming_it() {
    use aws_sdk_kinesis::primitives::Blob;
    let (aws, kinesis, bootstrap) = (aws_endpoint(), kinesis_endpoint(), kafka::bootstrap());
    let k = common::harness::kinesis_client(&kinesis).await;
    let (stream, topic) = (unique("big"), unique("big"));
    kafka::create_topic(&bootstrap, &topic, PARTITIONS).await;
    common::harness::create_stream(&k, &stream, 1).await;
    let mut sequences = Vec::new();
    for size in [100, 5000] {
        let put = k
            .put_record()
            .stream_name(&stream)
            .partition_key("p")
            .data(Blob::new(vec![b'x'; size]))
            .send()
            .await
            .unwrap();
        sequences.push(put.sequence_number().to_string());
    }
    let dir = tempfile::tempdir().unwrap();
    let config = common::harness::kinesis_raw_worker(
        "b1",
        "big",
        &aws,
        &kinesis,
        &stream,
        &unique("big-leases"),
        free_port(),
    ) + &format!(
        "[connectors.sink]\ntype = \"kafka\"\nbrokers = \"{bootstrap}\"\ntopic = \"{topic}\"\n\
         [connectors.sink.options]\n\"message.max.bytes\" = 2000\n"
    );
    let path = dir.path().join("big.toml");
    std::fs::write(&path, config).unwrap();
    let mut run = Running::start(&path, &dir.path().join("big.log"));
    let code = run.wait(Duration::from_secs(60));
    let log = run.log_text();
    assert_eq!(code, 1, "the connector stops with an error:\n{log}");
    let named = format!("the record {} of shard shardId-000000000000", sequences[1]);
    assert!(
        log.contains(&named),
        "the error names the record ({named}):\n{log}"
    );
    assert!(log.contains("5000 bytes"), "{log}");
    eprintln!(
        "{}",
        log.lines()
            .rfind(|l| l.contains("larger than"))
            .unwrap_or_default()
    );
    let got = read(&bootstrap, &topic).await;
    assert_eq!(got.committed.len(), 0, "nothing of the batch is committed");
}
