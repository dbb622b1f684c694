//! Lambda's MaximumRecordAgeInSeconds and MaximumRetryAttempts with an OnFailure destination
//! (a file, a Kinesis stream, a Kafka topic): records too old when their batch is about to be
//! sent, and batches the sink refused too often, go to the destination as OnFailure documents;
//! nothing is dropped. (Records too large for the sink, with SQS and S3 destinations and a
//! crash: tests/kinesis_sink.rs.)

mod common;

use std::time::Duration;

use aws_sdk_dynamodb::types::StreamViewType;
use common::*;

/// A failure destination of the test's, and how to read its documents back.
enum Dlq {
    File(std::path::PathBuf),
    Kinesis(String),
    Kafka(String),
}

impl Dlq {
    async fn new(kind: &str, dir: &std::path::Path) -> Dlq {
        match kind {
            "file" => Dlq::File(dir.join("dlq.jsonl")),
            "kinesis" => {
                let stream = unique("dlq");
                let k = common::harness::kinesis_client(&kinesis_endpoint()).await;
                common::harness::create_stream(&k, &stream, 1).await;
                Dlq::Kinesis(stream)
            }
            _ => {
                let topic = unique("dlq");
                common::kafka::create_topic(&common::kafka::bootstrap(), &topic, 1).await;
                Dlq::Kafka(topic)
            }
        }
    }

    /// The `[connectors.on_failure]` keys.
    fn toml(&self) -> String {
        match self {
            Dlq::File(path) => format!("type = \"file\"\npath = \"{}\"", path.display()),
            Dlq::Kinesis(stream) => format!(
                "type = \"kinesis\"\nstream = \"{stream}\"\n[connectors.on_failure.aws]\nendpoint_url = \"{}\"",
                kinesis_endpoint()
            ),
            Dlq::Kafka(topic) => format!(
                "type = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{topic}\"",
                common::kafka::bootstrap()
            ),
        }
    }

    async fn documents(&self) -> Vec<serde_json::Value> {
        let bodies: Vec<Vec<u8>> = match self {
            Dlq::File(path) => return read_lines(path),
            Dlq::Kinesis(stream) => {
                let k = common::harness::kinesis_client(&kinesis_endpoint()).await;
                common::harness::read_stream(&k, stream)
                    .await
                    .into_iter()
                    .map(|(_, _, data)| data)
                    .collect()
            }
            Dlq::Kafka(topic) => common::harness::read_kafka(&common::kafka::bootstrap(), topic, 1)
                .await
                .committed
                .into_iter()
                .map(|r| r.value)
                .collect(),
        };
        bodies
            .iter()
            .map(|b| serde_json::from_slice(b).unwrap())
            .collect()
    }
}

/// Polls `dlq` until its documents hold `records` set-aside records.
async fn wait_for_documents(
    dlq: &Dlq,
    records: usize,
    run: &mut Running,
) -> Vec<serde_json::Value> {
    let started = std::time::Instant::now();
    loop {
        let docs = dlq.documents().await;
        if set_aside_sequences(&docs).len() >= records {
            return docs;
        }
        assert!(
            run.child.try_wait().unwrap().is_none(),
            "the worker ended; log:\n{}",
            run.log_text()
        );
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{} of {records} records set aside; log:\n{}",
            set_aside_sequences(&docs).len(),
            run.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// One connector from the DynamoDB `table` into `sink`, with `extra` keys at the connector
/// level and the failure destination `dlq` (its `[connectors.on_failure]` keys).
fn config(port: u16, endpoint: &str, table: &str, sink: &str, extra: &str, dlq: &str) -> String {
    format!(
        r#"
[worker]
listen = "127.0.0.1:{port}"
[aws]
region = "us-east-1"
endpoint_url = "{endpoint}"
[[connectors]]
name = "poison"
{extra}
[connectors.source]
type = "dynamodb-streams"
table = "{table}"
poll_idle_ms = 50
[connectors.leases]
table = "{leases}"
[connectors.on_failure]
{dlq}
[connectors.sink]
{sink}
"#,
        leases = unique("poison-leases")
    )
}

/// A new table with a stream and `changes` changes over `items` items already made: the
/// moto endpoint, a client and the table's name.
async fn table_with_changes(
    prefix: &str,
    items: usize,
    changes: usize,
) -> (String, aws_sdk_dynamodb::Client, String) {
    let endpoint = aws_endpoint();
    let ddb = aws_sdk_dynamodb::Client::new(&sdk_config(&endpoint).await);
    let table = unique(prefix);
    workload::create_table(&ddb, &table, StreamViewType::NewAndOldImages).await;
    workload::apply(&ddb, &table, &workload::plan(items, changes)).await;
    (endpoint, ddb, table)
}

/// A worker on `config`, its log in `dir`.
fn start(dir: &std::path::Path, config: &str) -> Running {
    let path = dir.join("c.toml");
    std::fs::write(&path, config).unwrap();
    Running::start(&path, &dir.join("run.log"))
}

/// The set-aside records' sequence numbers, from every document in the destination file.
fn set_aside_sequences(docs: &[serde_json::Value]) -> Vec<String> {
    docs.iter()
        .flat_map(|d| d["records"].as_array().cloned().unwrap_or_default())
        .map(|r| {
            r["dynamodb"]["SequenceNumber"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_older_than_the_maximum_age_go_to_the_destination_not_the_sink() {
    for kind in ["file", "kinesis"] {
        records_too_old(kind).await;
    }
}

async fn records_too_old(kind: &str) {
    let (endpoint, ddb, table) = table_with_changes("aged", 5, 20).await;
    // Older than the maximum age by the time the connector reads them.
    tokio::time::sleep(Duration::from_secs(4)).await;

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let dlq = Dlq::new(kind, dir.path()).await;
    let port = free_port();
    let sink = format!("type = \"file\"\npath = \"{}\"", out.display());
    let mut run = start(
        dir.path(),
        &config(
            port,
            &endpoint,
            &table,
            &sink,
            "max_record_age_ms = 2000",
            &dlq.toml(),
        ),
    );
    let docs = wait_for_documents(&dlq, 20, &mut run).await;
    // Fresh changes made now reach the sink.
    for i in 0..6 {
        let item = workload::item(&format!("fresh-{i}"), 1);
        ddb.put_item()
            .table_name(&table)
            .set_item(Some(item))
            .send()
            .await
            .unwrap();
    }
    wait_for(
        "6 fresh records in the sink",
        Duration::from_secs(60),
        || (line_count(&out) >= 6).then_some(()),
    );
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    assert_eq!(run.stop(Duration::from_secs(30)), 0, "{}", run.log_text());

    assert_eq!(set_aside_sequences(&docs).len(), 20, "{kind}");
    for doc in &docs {
        assert_eq!(
            doc["requestContext"]["condition"], "RecordAgeExceeded",
            "{doc}"
        );
        assert_eq!(
            doc["requestContext"]["approximateInvokeCount"], 0,
            "never sent"
        );
        assert!(doc["DDBStreamBatchInfo"]["shardId"].is_string());
    }
    let sent = read_lines(&out);
    assert_eq!(sent.len(), 6, "only the fresh changes reach the sink");
    assert!(sent.iter().all(|r| r["dynamodb"]["Keys"]["id"]["S"]
        .as_str()
        .unwrap()
        .starts_with("fresh-")));
    assert_eq!(
        metric_value(
            &metrics,
            "shardbridge_on_failure_records_total",
            r#"condition="RecordAgeExceeded""#
        ),
        Some(20.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_sink_refuses_too_often_goes_to_the_destination() {
    for (kind, lanes) in [("file", 1), ("kafka", 1), ("file", 3)] {
        refused_batches(kind, lanes).await;
    }
}

/// With `lanes` > 1 each lane's refused calls are set aside on their own.
async fn refused_batches(kind: &str, lanes: u8) {
    let (endpoint, _, table) = table_with_changes("refused", 4, 12).await;

    let dir = tempfile::tempdir().unwrap();
    let dlq = Dlq::new(kind, dir.path()).await;
    let port = free_port();
    // A Kinesis sink whose endpoint refuses every connection: each attempt fails transiently.
    let sink = format!(
        "type = \"kinesis\"\nstream = \"nowhere\"\n[connectors.sink.aws]\nendpoint_url = \"http://127.0.0.1:{}\"",
        free_port()
    );
    let mut run = start(
        dir.path(),
        &config(
            port,
            &endpoint,
            &table,
            &sink,
            &format!("max_retry_attempts = 1\nparallelization_factor = {lanes}"),
            &dlq.toml(),
        ),
    );
    let docs = wait_for_documents(&dlq, 12, &mut run).await;
    assert!(run.child.try_wait().unwrap().is_none(), "still running");
    assert_eq!(run.stop(Duration::from_secs(30)), 0, "{}", run.log_text());
    // Every change once, in stream order within its shard.
    let mut seqs = set_aside_sequences(&docs);
    assert_eq!(seqs.len(), 12, "{kind}, {lanes} lanes: {seqs:?}");
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), 12, "{kind}, {lanes} lanes: each change once");
    if lanes > 1 {
        // 4 items over 3 lanes: the lanes' calls were refused, and set aside, separately.
        assert!(docs.len() >= 2, "{} documents", docs.len());
    }
    for doc in &docs {
        let ctx = &doc["requestContext"];
        assert_eq!(ctx["condition"], "RetryAttemptsExhausted", "{doc}");
        // The first attempt and one retry.
        assert_eq!(ctx["approximateInvokeCount"], 2, "{doc}");
        let response = &doc["responseContext"];
        assert_eq!(response["functionError"], "Unhandled");
        assert!(
            response["errorMessage"]
                .as_str()
                .unwrap()
                .contains("Connection refused"),
            "{response}"
        );
    }
}
