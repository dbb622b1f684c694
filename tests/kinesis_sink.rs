//! The Kinesis sink end to end: a DynamoDB stream (moto) into 4-shard Kinesis streams
//! (kinesalite) in the `kinesis-ddb` and `lambda` formats; PutRecords partial failures and
//! throttling injected by a proxy; records over Kinesis' 1 MiB limit.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::StreamViewType;
use aws_sdk_kinesis::primitives::Blob;
use common::harness;
use common::workload::{self, Change};
use common::*;
use serde_json::Value;

fn header(port: u16, aws: &str) -> String {
    format!(
        r#"
[worker]
id = "{}"
listen = "127.0.0.1:{port}"
shutdown_timeout_ms = 10000
[aws]
region = "us-east-1"
endpoint_url = "{aws}"
"#,
        unique("worker")
    )
}

fn ddb_connector(name: &str, table: &str, format: &str, kinesis: &str, target: &str) -> String {
    format!(
        r#"
[[connectors]]
name = "{name}"
[connectors.source]
type = "dynamodb-streams"
table = "{table}"
poll_idle_ms = 100
[connectors.leases]
table = "{leases}"
failover_ms = 6000
[connectors.format]
type = "{format}"
[connectors.sink]
type = "kinesis"
stream = "{target}"
[connectors.sink.aws]
endpoint_url = "{kinesis}"
"#,
        leases = unique("kleases")
    )
}

/// What a user checks: every change once, each item's changes in the order they were made,
/// each item on one target shard under its own key.
fn verify_items(
    format: &str,
    records: &[(String, String, Vec<u8>)],
    plan: &[(String, Vec<Change>)],
) {
    let total: usize = plan.iter().map(|(_, c)| c.len()).sum();
    assert_eq!(records.len(), total, "{format}: every change exactly once");
    let mut ids = HashSet::new();
    let mut by_item: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
    for (shard, pk, data) in records {
        let v: Value = serde_json::from_slice(data).unwrap();
        let identity = match format {
            "lambda" => v["dynamodb"]["SequenceNumber"]
                .as_str()
                .unwrap()
                .to_string(),
            _ => v["eventID"].as_str().unwrap().to_string(),
        };
        assert!(ids.insert(identity.clone()), "{format}: {identity} twice");
        let id = v["dynamodb"]["Keys"]["id"]["S"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(pk, &id, "{format}: the partition key is the item key");
        by_item.entry(id).or_default().push((shard.clone(), v));
    }
    let version =
        |image: &Value| -> Option<String> { image["version"]["N"].as_str().map(str::to_string) };
    for (id, changes) in plan {
        let got = by_item.remove(id).unwrap_or_default();
        let shards: BTreeSet<&str> = got.iter().map(|(s, _)| s.as_str()).collect();
        assert!(shards.len() <= 1, "{format}: {id} on shards {shards:?}");
        let got: Vec<(String, Option<String>, Option<String>)> = got
            .iter()
            .map(|(_, v)| {
                (
                    v["eventName"].as_str().unwrap().to_string(),
                    version(&v["dynamodb"]["NewImage"]),
                    version(&v["dynamodb"]["OldImage"]),
                )
            })
            .collect();
        let want: Vec<(String, Option<String>, Option<String>)> = changes
            .iter()
            .map(|c| {
                let v = |i: &Option<workload::Item>| {
                    i.as_ref().map(|i| match &i["version"] {
                        aws_sdk_dynamodb::types::AttributeValue::N(n) => n.clone(),
                        other => panic!("version {other:?}"),
                    })
                };
                (c.op.to_string(), v(&c.new), v(&c.old))
            })
            .collect();
        assert_eq!(got, want, "{format}: changes of {id}, in order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_changes_land_once_in_item_order_on_a_four_shard_stream() {
    let aws = aws_endpoint();
    let kinesis = kinesis_endpoint();
    let sdk = sdk_config(&aws).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let k = harness::kinesis_client(&kinesis).await;
    let table = unique("ksink");
    workload::create_table(&ddb, &table, StreamViewType::NewAndOldImages).await;
    let formats = ["kinesis-ddb", "lambda"];
    let mut targets = Vec::new();
    for format in formats {
        let target = unique(&format!("ksink-{format}"));
        harness::create_stream(&k, &target, 4).await;
        targets.push(target);
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut config = header(port, &aws);
    for (format, target) in formats.iter().zip(&targets) {
        config.push_str(&ddb_connector(format, &table, format, &kinesis, target));
    }
    let cfg = dir.path().join("connectors.toml");
    std::fs::write(&cfg, config).unwrap();
    let mut run = Running::start(&cfg, &dir.path().join("log"));

    let plan = workload::plan(200, 2000);
    workload::apply(&ddb, &table, &plan).await;
    let total: usize = plan.iter().map(|(_, c)| c.len()).sum();
    let started = Instant::now();
    for target in &targets {
        loop {
            let n = harness::read_stream(&k, target).await.len();
            if n >= total {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{target}: {n} of {total} records after 120 s; log:\n{}",
                run.log_text()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    assert_eq!(run.stop(Duration::from_secs(30)), 0, "{}", run.log_text());
    for (format, target) in formats.iter().zip(&targets) {
        let records = harness::read_stream(&k, target).await;
        verify_items(format, &records, &plan);
        let shards: BTreeSet<&str> = records.iter().map(|(s, _, _)| s.as_str()).collect();
        assert_eq!(
            shards.len(),
            4,
            "{format}: items spread over the target's shards"
        );
        let put = metric_value(
            &metrics,
            "shardbridge_kinesis_records_put_total",
            &format!("connector=\"{format}\""),
        );
        assert_eq!(put, Some(total as f64), "{format}: records put");
    }
}

/// The fault-injecting proxy in front of kinesalite (scripts/kinesis_fault_proxy.py).
struct Proxy {
    child: Child,
    url: String,
}

impl Proxy {
    fn start(upstream: &str, args: &[&str]) -> Proxy {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kinesis_fault_proxy.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--listen", "127.0.0.1:0", "--upstream", upstream])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the proxy");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("LISTENING ")
            .unwrap_or_else(|| panic!("proxy said {line:?}"))
            .to_string();
        Proxy {
            child,
            url: format!("http://{addr}"),
        }
    }

    fn stats(&self) -> Value {
        let port: u16 = self.url.rsplit(':').next().unwrap().parse().unwrap();
        let (_, body) = http_get(port, "/__proxy/stats").unwrap();
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kinesis_to_kinesis(
    header: &str,
    source: &str,
    source_endpoint: &str,
    format: &str,
    target: &str,
    target_endpoint: &str,
    sink_extra: &str,
) -> String {
    format!(
        r#"{header}
[[connectors]]
name = "k2k"
[connectors.source]
type = "kinesis"
stream = "{source}"
poll_idle_ms = 50
[connectors.source.aws]
endpoint_url = "{source_endpoint}"
[connectors.leases]
table = "{leases}"
failover_ms = 6000
[connectors.format]
type = "{format}"
[connectors.sink]
type = "kinesis"
stream = "{target}"
{sink_extra}
[connectors.sink.aws]
endpoint_url = "{target_endpoint}"
"#,
        leases = unique("k2k-leases")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partly_failed_puts_are_retried_before_newer_records_of_their_key() {
    let aws = aws_endpoint();
    let kinesis = kinesis_endpoint();
    let k = harness::kinesis_client(&kinesis).await;
    let (source, target) = (unique("pf-src"), unique("pf-dst"));
    harness::create_stream(&k, &source, 2).await;
    harness::create_stream(&k, &target, 4).await;
    // A third of the records of each call fail, and the first calls are throttled whole.
    let proxy = Proxy::start(
        &kinesis,
        &[
            "--fail-fraction",
            "0.3",
            "--throttle-calls",
            "3",
            "--seed",
            "11",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = dir.path().join("connectors.toml");
    std::fs::write(
        &cfg,
        kinesis_to_kinesis(
            &header(port, &aws),
            &source,
            &kinesis,
            "raw",
            &target,
            &proxy.url,
            "",
        ),
    )
    .unwrap();
    let mut run = Running::start(&cfg, &dir.path().join("log"));
    let keys: Vec<String> = (0..100).map(|i| format!("key-{i:03}")).collect();
    let versions = 8u64;
    for v in 1..=versions {
        harness::put_version(&k, &source, &keys, v).await;
    }
    let expected: BTreeMap<String, u64> = keys.iter().map(|k| (k.clone(), versions)).collect();
    let started = Instant::now();
    let verdict = loop {
        let records = harness::read_stream(&k, &target).await;
        let v = harness::verify(&expected, &harness::kinesis_deliveries(&records));
        if v.lost == 0 {
            break v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "not done after 90 s: {v}; log:\n{}",
            run.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    assert_eq!(run.stop(Duration::from_secs(30)), 0, "{}", run.log_text());
    let records = harness::read_stream(&k, &target).await;
    let verdict_after = harness::verify(&expected, &harness::kinesis_deliveries(&records));
    eprintln!("{verdict_after}");
    assert_eq!(
        (
            verdict_after.lost,
            verdict_after.duplicated,
            verdict_after.out_of_order
        ),
        (0, 0, 0),
        "{verdict}"
    );
    // Byte for byte: the target holds exactly what the source holds.
    let source_records = harness::read_stream(&k, &source).await;
    let mut a: Vec<(String, Vec<u8>)> =
        source_records.into_iter().map(|(_, p, d)| (p, d)).collect();
    let mut b: Vec<(String, Vec<u8>)> = records.into_iter().map(|(_, p, d)| (p, d)).collect();
    a.sort();
    b.sort();
    assert!(a == b, "raw replication keeps keys and bytes");
    let stats = proxy.stats();
    let injected = stats["entries_failed_injected"].as_u64().unwrap();
    assert!(injected > 100, "failures were injected: {stats}");
    assert!(stats["calls_throttled"].as_u64().unwrap() >= 3, "{stats}");
    let failed = metric_value(
        &metrics,
        "shardbridge_kinesis_failed_records_total",
        "code=\"ProvisionedThroughputExceededException\"",
    )
    .unwrap_or(0.0);
    assert_eq!(failed, injected as f64, "every injected failure counted");
    let retried =
        metric_value(&metrics, "shardbridge_kinesis_records_retried_total", "").unwrap_or(0.0);
    assert!(
        retried >= injected as f64,
        "retried {retried}, injected {injected}"
    );
    let partial =
        metric_value(&metrics, "shardbridge_kinesis_partial_failures_total", "").unwrap_or(0.0);
    assert!(partial > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_the_limit_is_skipped_or_stops_the_connector_by_name() {
    let aws = aws_endpoint();
    let kinesis = kinesis_endpoint();
    let k = harness::kinesis_client(&kinesis).await;
    for (on_oversize, expect_exit) in [("skip", 0), ("fail", 1)] {
        let (source, target) = (unique("big-src"), unique("big-dst"));
        harness::create_stream(&k, &source, 1).await;
        harness::create_stream(&k, &target, 1).await;
        // 900 KB of data: within the source's limit, over the sink's once the lambda format
        // has base64-encoded it.
        for (key, size) in [("small-1", 10), ("huge", 900_000), ("small-2", 10)] {
            k.put_record()
                .stream_name(&source)
                .partition_key(key)
                .data(Blob::new(vec![b'x'; size]))
                .send()
                .await
                .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let cfg = dir.path().join("connectors.toml");
        let extra = format!("on_oversize = \"{on_oversize}\"");
        std::fs::write(
            &cfg,
            kinesis_to_kinesis(
                &header(port, &aws),
                &source,
                &kinesis,
                "lambda",
                &target,
                &kinesis,
                &extra,
            ),
        )
        .unwrap();
        let mut run = Running::start(&cfg, &dir.path().join("log"));
        if expect_exit == 0 {
            let records = wait_for("the small records", Duration::from_secs(60), || {
                let records = futures_block(harness::read_stream(&k, &target));
                (records.len() >= 2).then_some(records)
            });
            let keys: Vec<&str> = records.iter().map(|(_, p, _)| p.as_str()).collect();
            assert_eq!(
                keys,
                ["small-1", "small-2"],
                "the shard went on past the big one"
            );
            let (_, metrics) = http_get(port, "/metrics").unwrap();
            assert_eq!(
                metric_value(
                    &metrics,
                    "shardbridge_kinesis_records_oversize_total",
                    "action=\"skip\""
                ),
                Some(1.0)
            );
            assert_eq!(run.stop(Duration::from_secs(30)), 0, "{}", run.log_text());
            let log = run.log_text();
            assert!(
                log.contains("over Kinesis' 1048576 byte limit") && log.contains("skipped"),
                "the skipped record is logged: {log}"
            );
        } else {
            let code = run.wait(Duration::from_secs(60));
            let log = run.log_text();
            assert_eq!(code, 1, "{log}");
            assert!(
                log.contains("over Kinesis' 1048576 byte limit") && log.contains(&source),
                "the error names the record and its stream: {log}"
            );
            let records = harness::read_stream(&k, &target).await;
            assert!(
                records.iter().all(|(_, p, _)| p != "huge"),
                "nothing over the limit was sent"
            );
        }
    }
}

/// An item with a binary `payload` of `blob` bytes.
fn big_item(id: &str, version: u32, blob: usize) -> workload::Item {
    use aws_sdk_dynamodb::types::AttributeValue as Av;
    let mut m = workload::Item::new();
    m.insert("id".into(), Av::S(id.into()));
    m.insert("version".into(), Av::N(version.to_string()));
    m.insert(
        "payload".into(),
        Av::B(aws_sdk_dynamodb::primitives::Blob::new(vec![
            b'a' + version
                as u8;
            blob
        ])),
    );
    m
}

/// Four items with a 400,000-byte binary (INSERT ~533 KB in `lambda`, MODIFY with old and new
/// image ~1,067,000 bytes: over Kinesis' 1 MiB, REMOVE ~533 KB) and six small items changing
/// around them: every change in write order, and the changes that fit Kinesis' limit.
#[allow(clippy::type_complexity)]
fn oversize_plan() -> (Vec<(String, Vec<Change>)>, Vec<(String, Vec<Change>)>) {
    let change =
        |op, old: Option<workload::Item>, new: Option<workload::Item>| Change { op, old, new };
    let mut plan: Vec<(String, Vec<Change>)> = Vec::new();
    let mut legal: Vec<(String, Vec<Change>)> = Vec::new();
    for i in 0..4 {
        let id = format!("big-{i}");
        let (v1, v2) = (big_item(&id, 1, 400_000), big_item(&id, 2, 400_000));
        let insert = change("INSERT", None, Some(v1.clone()));
        let modify = change("MODIFY", Some(v1), Some(v2.clone()));
        let remove = change("REMOVE", Some(v2), None);
        plan.push((id.clone(), vec![insert.clone(), modify, remove.clone()]));
        legal.push((id, vec![insert, remove]));
    }
    for i in 0..6 {
        let id = format!("small-{i}");
        let versions: Vec<workload::Item> = (1..=3).map(|v| big_item(&id, v, 16)).collect();
        let changes = vec![
            change("INSERT", None, Some(versions[0].clone())),
            change(
                "MODIFY",
                Some(versions[0].clone()),
                Some(versions[1].clone()),
            ),
            change(
                "MODIFY",
                Some(versions[1].clone()),
                Some(versions[2].clone()),
            ),
        ];
        plan.push((id.clone(), changes.clone()));
        legal.push((id, changes));
    }
    (plan, legal)
}

/// Issue 9: with `on_oversize = "skip"`, a record over the limit that follows a legal record of
/// the same item in one batch must cost only itself. Items with a 400,000-byte binary: the
/// INSERT is ~533 KB in the `lambda` format, the MODIFY (old and new image) ~1,067,000 bytes,
/// the REMOVE (old image) ~533 KB again; small items change around them in the same batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_modifies_are_skipped_and_every_legal_change_arrives_in_item_order() {
    let aws = aws_endpoint();
    let kinesis = kinesis_endpoint();
    let sdk = sdk_config(&aws).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let k = harness::kinesis_client(&kinesis).await;
    let table = unique("ksink-big");
    workload::create_table(&ddb, &table, StreamViewType::NewAndOldImages).await;
    let target = unique("ksink-big-dst");
    harness::create_stream(&k, &target, 4).await;

    let (plan, mut legal) = oversize_plan();
    // Written before the connector starts, round-robin: each item's legal INSERT and its
    // oversize MODIFY are read in one page and so handed to the sink in one batch.
    workload::apply(&ddb, &table, &plan).await;

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut config = header(port, &aws);
    config.push_str(
        &ddb_connector("big", &table, "lambda", &kinesis, &target).replace(
            "[connectors.sink.aws]",
            "on_oversize = \"skip\"\n[connectors.sink.aws]",
        ),
    );
    let cfg = dir.path().join("connectors.toml");
    std::fs::write(&cfg, config).unwrap();
    let mut run = Running::start(&cfg, &dir.path().join("log"));

    let total: usize = legal.iter().map(|(_, c)| c.len()).sum();
    let started = Instant::now();
    loop {
        let n = harness::read_stream(&k, &target).await.len();
        if n >= total {
            break;
        }
        assert!(
            run.child.try_wait().unwrap().is_none(),
            "the connector stopped; log:\n{}",
            run.log_text()
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{n} of {total} records after 120 s; log:\n{}",
            run.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Still running: a change made after the skips arrives too.
    let later = big_item("small-0", 4, 16);
    ddb.put_item()
        .table_name(&table)
        .set_item(Some(later.clone()))
        .send()
        .await
        .unwrap();
    let previous = legal[4].1.last().unwrap().new.clone();
    legal[4].1.push(Change {
        op: "MODIFY",
        old: previous,
        new: Some(later),
    });
    let records = wait_for(
        "the change after the skips",
        Duration::from_secs(60),
        || {
            let records = futures_block(harness::read_stream(&k, &target));
            (records.len() > total).then_some(records)
        },
    );
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    assert_eq!(
        metric_value(
            &metrics,
            "shardbridge_kinesis_records_oversize_total",
            "action=\"skip\""
        ),
        Some(4.0),
        "each oversize MODIFY counted as skipped"
    );
    assert_eq!(
        metric_value(
            &metrics,
            "shardbridge_kinesis_records_put_total",
            "connector=\"big\""
        ),
        Some(total as f64 + 1.0)
    );
    assert_eq!(run.stop(Duration::from_secs(30)), 0, "{}", run.log_text());
    // Every legal change exactly once, each item's in write order, on one shard per item.
    verify_items("lambda", &records, &legal);
    assert!(
        records.iter().all(|(_, _, d)| d.len() + 16 < 1024 * 1024),
        "nothing over the limit was sent"
    );
}

/// Runs a future to completion from synchronous code inside the multi-threaded test runtime.
fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// Every OnFailure document in the SQS queue at `url` (read, then deleted), by request id.
async fn drain_queue(sqs: &aws_sdk_sqs::Client, url: &str) -> BTreeMap<String, serde_json::Value> {
    let mut docs = BTreeMap::new();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        let messages = out.messages();
        if messages.is_empty() {
            return docs;
        }
        for m in messages {
            let doc: serde_json::Value = serde_json::from_str(m.body().unwrap()).unwrap();
            let id = doc["requestContext"]["requestId"]
                .as_str()
                .unwrap()
                .to_string();
            docs.insert(id, doc);
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
}

/// Every OnFailure document in `bucket`, by request id.
async fn bucket_documents(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
) -> BTreeMap<String, serde_json::Value> {
    let mut docs = BTreeMap::new();
    let listed = s3.list_objects_v2().bucket(bucket).send().await.unwrap();
    for o in listed.contents() {
        let body = s3
            .get_object()
            .bucket(bucket)
            .key(o.key().unwrap())
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let id = doc["requestContext"]["requestId"]
            .as_str()
            .unwrap()
            .to_string();
        docs.insert(id, doc);
    }
    docs
}

/// Issue 13: with `[connectors.on_failure]`, records too large for the sink are set aside to
/// the destination (an SQS queue, an S3 bucket) as Lambda's OnFailure document, everything
/// else flows in item order, and the shard never stalls. A worker that dies right after
/// setting records aside, before its checkpoint, repeats the document at worst (same request
/// id) and loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_too_large_go_to_the_failure_destination_and_the_rest_flows() {
    let aws = aws_endpoint();
    let kinesis = kinesis_endpoint();
    let sdk = sdk_config(&aws).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let s3 = harness::s3_client(&aws).await;
    let k = harness::kinesis_client(&kinesis).await;
    let table = unique("poison");
    workload::create_table(&ddb, &table, StreamViewType::NewAndOldImages).await;
    let (to_sqs, to_s3) = (unique("poison-sqs-dst"), unique("poison-s3-dst"));
    harness::create_stream(&k, &to_sqs, 2).await;
    harness::create_stream(&k, &to_s3, 2).await;
    let queue_url = sqs
        .create_queue()
        .queue_name(unique("poison-dlq"))
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let bucket = unique("poison-dlq");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let (plan, legal) = oversize_plan();
    workload::apply(&ddb, &table, &plan).await;

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let with_destination = |name: &str, target: &str, destination: String| {
        ddb_connector(name, &table, "lambda", &kinesis, target).replace(
            "[connectors.sink]",
            &format!("[connectors.on_failure]\n{destination}\n[connectors.sink]"),
        )
    };
    let config = header(port, &aws)
        + &with_destination(
            "to-sqs",
            &to_sqs,
            format!("type = \"sqs\"\nqueue_url = \"{queue_url}\""),
        )
        + &with_destination(
            "to-s3",
            &to_s3,
            format!(
                "type = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"dlq/\"\nforce_path_style = true"
            ),
        );
    let cfg = dir.path().join("connectors.toml");
    std::fs::write(&cfg, &config).unwrap();
    // The first worker dies right after its first set-aside document, before the checkpoint.
    let mut run = Running::start_with_env(
        &cfg,
        &dir.path().join("first.log"),
        &[("SHARDBRIDGE_FAULT", "after_set_aside")],
    );
    assert_ne!(
        run.wait(Duration::from_secs(60)),
        0,
        "the armed worker aborts"
    );
    assert!(
        run.log_text()
            .contains("fault injection: aborting at after_set_aside"),
        "{}",
        run.log_text()
    );
    let mut run = Running::start(&cfg, &dir.path().join("second.log"));
    let total: usize = legal.iter().map(|(_, c)| c.len()).sum();
    // The shard never stalls: each big item's REMOVE, after its set-aside MODIFY, arrives.
    let s3_docs = wait_for_async(Duration::from_secs(120), &mut run, || async {
        let sent = harness::read_stream(&k, &to_sqs).await.len()
            + harness::read_stream(&k, &to_s3).await.len();
        let s3_docs = bucket_documents(&s3, &bucket).await;
        let set_aside: u64 = s3_docs
            .values()
            .map(|d| d["DDBStreamBatchInfo"]["batchSize"].as_u64().unwrap())
            .sum();
        (sent >= 2 * total && set_aside >= 4).then_some(s3_docs)
    })
    .await;
    let queue_docs = drain_queue(&sqs, &queue_url).await;
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    assert_eq!(run.stop(Duration::from_secs(30)), 0, "{}", run.log_text());

    // Every legal change once, in item order, in both targets; nothing over the limit sent.
    for target in [&to_sqs, &to_s3] {
        let records = harness::read_stream(&k, target).await;
        verify_items("lambda", &records, &legal);
    }
    // Each oversize MODIFY is set aside (a batch's set-aside records share one document; a
    // document set aside again after the crash has the same request id, so it counts once).
    for (docs, with_records) in [(&queue_docs, false), (&s3_docs, true)] {
        let mut items = BTreeSet::new();
        let mut set_aside = 0;
        for doc in docs.values() {
            assert_eq!(
                doc["requestContext"]["condition"], "RecordTooLarge",
                "{doc}"
            );
            assert_eq!(doc["version"], "1.0");
            let info = &doc["DDBStreamBatchInfo"];
            set_aside += info["batchSize"].as_u64().unwrap();
            assert!(info["streamArn"].as_str().unwrap().contains(&table));
            assert!(info["approximateArrivalOfFirstRecord"].is_string());
            // SQS takes 256 KiB: the ~1 MB records are left out there, kept in S3.
            assert_eq!(doc["recordsIncluded"], with_records, "{info}");
            if with_records {
                let records = doc["records"].as_array().unwrap();
                assert_eq!(records.len() as u64, info["batchSize"].as_u64().unwrap());
                assert_eq!(
                    records[0]["dynamodb"]["SequenceNumber"],
                    info["startSequenceNumber"]
                );
                for record in records {
                    assert_eq!(record["eventName"], "MODIFY");
                    let id = record["dynamodb"]["Keys"]["id"]["S"].as_str().unwrap();
                    items.insert(id.to_string());
                }
            }
        }
        assert_eq!(set_aside, 4, "{:?}", docs.keys());
        if with_records {
            assert_eq!(items.len(), 4, "each big item's MODIFY: {items:?}");
        }
    }
    for connector in ["to-sqs", "to-s3"] {
        let set_aside = metric_value(
            &metrics,
            "shardbridge_on_failure_records_total",
            &format!(r#"connector="{connector}",condition="RecordTooLarge""#),
        );
        // The restarted worker counts what it set aside; the dead one's first may repeat.
        assert!(
            set_aside.is_some_and(|n| (3.0..=4.0).contains(&n)),
            "{connector}: {set_aside:?}"
        );
    }
}

/// Polls `check` until it gives a value (failing if `run` exits or `limit` passes).
async fn wait_for_async<T, F, Fut>(limit: Duration, run: &mut Running, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            run.child.try_wait().unwrap().is_none(),
            "the worker stopped; log:\n{}",
            run.log_text()
        );
        assert!(
            started.elapsed() < limit,
            "not done after {limit:?}; log:\n{}",
            run.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
