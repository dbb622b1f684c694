//! Lambda's MaximumRecordAgeInSeconds and MaximumRetryAttempts with an OnFailure destination
//! (here a file): records too old when their batch is about to be sent, and batches the sink
//! refused too often, go to the destination as OnFailure documents; nothing is dropped.
//! (Records too large for the sink, with SQS and S3 destinations and a crash: tests/kinesis_sink.rs.)

mod common;

use std::time::Duration;

use aws_sdk_dynamodb::types::StreamViewType;
use common::*;

/// One connector from the DynamoDB `table` into `sink`, with `extra` keys at the connector
/// level and a file failure destination at `dlq`.
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
type = "file"
path = "{dlq}"
[connectors.sink]
{sink}
"#,
        leases = unique("poison-leases")
    )
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
    let endpoint = aws_endpoint();
    let ddb = aws_sdk_dynamodb::Client::new(&sdk_config(&endpoint).await);
    let table = unique("aged");
    workload::create_table(&ddb, &table, StreamViewType::NewAndOldImages).await;
    let old = workload::plan(5, 20);
    workload::apply(&ddb, &table, &old).await;
    // Older than the maximum age by the time the connector reads them.
    tokio::time::sleep(Duration::from_secs(4)).await;

    let dir = tempfile::tempdir().unwrap();
    let (out, dlq) = (dir.path().join("out.jsonl"), dir.path().join("dlq.jsonl"));
    let port = free_port();
    let sink = format!("type = \"file\"\npath = \"{}\"", out.display());
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        config(
            port,
            &endpoint,
            &table,
            &sink,
            "max_record_age_ms = 2000",
            &dlq.display().to_string(),
        ),
    )
    .unwrap();
    let mut run = Running::start(&path, &dir.path().join("run.log"));
    let docs = wait_for("20 old records set aside", Duration::from_secs(60), || {
        let docs = read_lines(&dlq);
        (set_aside_sequences(&docs).len() >= 20).then_some(docs)
    });
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

    assert_eq!(set_aside_sequences(&docs).len(), 20);
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
    let endpoint = aws_endpoint();
    let ddb = aws_sdk_dynamodb::Client::new(&sdk_config(&endpoint).await);
    let table = unique("refused");
    workload::create_table(&ddb, &table, StreamViewType::NewAndOldImages).await;
    let plan = workload::plan(4, 12);
    workload::apply(&ddb, &table, &plan).await;

    let dir = tempfile::tempdir().unwrap();
    let dlq = dir.path().join("dlq.jsonl");
    let port = free_port();
    // A Kinesis sink whose endpoint refuses every connection: each attempt fails transiently.
    let sink = format!(
        "type = \"kinesis\"\nstream = \"nowhere\"\n[connectors.sink.aws]\nendpoint_url = \"http://127.0.0.1:{}\"",
        free_port()
    );
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        config(
            port,
            &endpoint,
            &table,
            &sink,
            "max_retry_attempts = 1",
            &dlq.display().to_string(),
        ),
    )
    .unwrap();
    let mut run = Running::start(&path, &dir.path().join("run.log"));
    let docs = wait_for("12 records set aside", Duration::from_secs(90), || {
        let docs = read_lines(&dlq);
        (set_aside_sequences(&docs).len() >= 12).then_some(docs)
    });
    assert!(run.child.try_wait().unwrap().is_none(), "still running");
    assert_eq!(run.stop(Duration::from_secs(30)), 0, "{}", run.log_text());
    // Every change once, in stream order within its shard.
    let seqs = set_aside_sequences(&docs);
    assert_eq!(seqs.len(), 12, "{seqs:?}");
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
