//! The `http` sink against a handler in the test (an HTTP server on loopback) that behaves as a
//! Lambda function would: a DynamoDB stream on moto, the worker as a process, Lambda's rules
//! for what follows a partial batch response, a function error and a timeout.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::StreamViewType;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use common::harness;
use common::*;
use serde_json::Value;

/// One POST the handler received: its records as (item id, version, sequence number), and the
/// batch headers.
#[derive(Clone, Debug)]
struct Call {
    records: Vec<(String, u64, String)>,
    first_header: String,
    count_header: String,
    authorization: String,
}

type Behaviour = dyn Fn(&Handler, &Call) -> (StatusCode, String, Duration) + Send + Sync;

/// What the handler saw and did.
#[derive(Default)]
struct Handler {
    calls: Mutex<Vec<Call>>,
    /// Records handled, in the order handled: (item id, version).
    handled: Mutex<Vec<(String, u64)>>,
    /// Times a record (by id and version) is still to fail.
    fail: Mutex<BTreeMap<(String, u64), u32>>,
    /// The record each call was answered failed at, by the call's index.
    reported: Mutex<BTreeMap<usize, String>>,
}

/// Serves `behaviour` on a free loopback port; returns the invoke URL.
async fn serve(handler: Arc<Handler>, behaviour: Arc<Behaviour>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/invoke", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/invoke",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (handler, behaviour) = (handler.clone(), behaviour.clone());
            async move {
                let event: Value = serde_json::from_slice(&body).expect("a JSON event");
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                let call = Call {
                    records: event["Records"]
                        .as_array()
                        .expect("a Records list")
                        .iter()
                        .map(|r| {
                            let image = &r["dynamodb"]["NewImage"];
                            (
                                image["id"]["S"].as_str().unwrap().to_string(),
                                image["version"]["N"].as_str().unwrap().parse().unwrap(),
                                r["dynamodb"]["SequenceNumber"]
                                    .as_str()
                                    .unwrap()
                                    .to_string(),
                            )
                        })
                        .collect(),
                    first_header: header("x-shardbridge-first-sequence-number"),
                    count_header: header("x-shardbridge-record-count"),
                    authorization: header("authorization"),
                };
                handler.calls.lock().unwrap().push(call.clone());
                let (status, body, delay) = behaviour(&handler, &call);
                tokio::time::sleep(delay).await;
                (status, body)
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// A new table keyed by `id` with a NEW_AND_OLD_IMAGES stream: the moto endpoint, a client and
/// the table's name.
async fn new_table(prefix: &str) -> (String, aws_sdk_dynamodb::Client, String) {
    let endpoint = aws_endpoint();
    let ddb = aws_sdk_dynamodb::Client::new(&sdk_config(&endpoint).await);
    let table = unique(prefix);
    workload::create_table(&ddb, &table, StreamViewType::NewAndOldImages).await;
    (endpoint, ddb, table)
}

/// Puts `versions` versions of each of `ids`, version by version (so items interleave).
async fn write_items(ddb: &aws_sdk_dynamodb::Client, table: &str, ids: &[&str], versions: u32) {
    for v in 1..=versions {
        for id in ids {
            put(ddb, table, id, v).await;
        }
    }
}

async fn put(ddb: &aws_sdk_dynamodb::Client, table: &str, id: &str, version: u32) {
    ddb.put_item()
        .table_name(table)
        .set_item(Some(workload::item(id, version)))
        .send()
        .await
        .unwrap();
}

fn config(port: u16, endpoint: &str, table: &str, sink: &str, extra: &str) -> String {
    format!(
        r#"
[worker]
listen = "127.0.0.1:{port}"
[aws]
region = "us-east-1"
endpoint_url = "{endpoint}"
[[connectors]]
name = "handler"
{extra}
[connectors.source]
type = "dynamodb-streams"
table = "{table}"
poll_idle_ms = 50
[connectors.leases]
table = "{leases}"
[connectors.sink]
type = "http"
{sink}
"#,
        leases = unique("http-leases")
    )
}

/// Each item's handled versions, in the order handled.
fn by_item(handled: &[(String, u64)]) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (id, v) in handled {
        out.entry(id.clone()).or_default().push(*v);
    }
    out
}

fn metric(port: u16, name: &str, labels: &str) -> f64 {
    let (_, text) = http_get(port, "/metrics").expect("metrics");
    metric_value(&text, name, labels).unwrap_or(0.0)
}

async fn wait_until(what: &str, run: &mut Running, check: impl Fn() -> bool) {
    let started = std::time::Instant::now();
    while !check() {
        assert!(
            run.child.try_wait().unwrap().is_none(),
            "the worker ended; log:\n{}",
            run.log_text()
        );
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "not done after 90 s: {what}; log:\n{}",
            run.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A handler that handles records in order and reports the first one it fails (Powertools'
/// stream processor with `ReportBatchItemFailures` does the same): only the records from that
/// one on are sent again, the records before it are never sent again, and every change is
/// handled once, in its item's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_batch_response_resends_only_from_the_lowest_failed_record() {
    let (endpoint, ddb, table) = new_table("http-partial").await;
    let ids = ["a", "b", "c"];
    write_items(&ddb, &table, &ids, 5).await;

    let handler = Arc::new(Handler::default());
    handler
        .fail
        .lock()
        .unwrap()
        .extend([(("b".to_string(), 3), 2), (("c".to_string(), 5), 1)]);
    let behaviour: Arc<Behaviour> = Arc::new(|h: &Handler, call: &Call| {
        for (id, v, seq) in &call.records {
            let mut fail = h.fail.lock().unwrap();
            if let Some(left @ 1..) = fail.get_mut(&(id.clone(), *v)) {
                *left -= 1;
                let index = h.calls.lock().unwrap().len() - 1;
                h.reported.lock().unwrap().insert(index, seq.clone());
                let body = format!(r#"{{"batchItemFailures": [{{"itemIdentifier": "{seq}"}}]}}"#);
                return (StatusCode::OK, body, Duration::ZERO);
            }
            h.handled.lock().unwrap().push((id.clone(), *v));
        }
        (
            StatusCode::OK,
            r#"{"batchItemFailures": []}"#.into(),
            Duration::ZERO,
        )
    });
    let url = serve(handler.clone(), behaviour).await;

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let sink = format!(
        "url = \"{url}\"\nmax_records = 4\nreport_batch_item_failures = true\n\
         headers = {{ Authorization = \"Bearer ${{HANDLER_TOKEN}}\" }}"
    );
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config(port, &endpoint, &table, &sink, "")).unwrap();
    // The token is named in the file, its value only in the environment.
    let token = "s3cret-handler-token";
    let mut run = Running::start_with_env(
        &path,
        &dir.path().join("run.log"),
        &[("HANDLER_TOKEN", token), ("RUST_LOG", "debug")],
    );
    wait_until("15 changes handled", &mut run, || {
        handler.handled.lock().unwrap().len() >= 15
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let handled = handler.handled.lock().unwrap().clone();
    let want: BTreeMap<String, Vec<u64>> = ids
        .iter()
        .map(|id| (id.to_string(), (1..=5).collect()))
        .collect();
    assert_eq!(
        by_item(&handled),
        want,
        "every change once, in its item's order"
    );
    let calls = handler.calls.lock().unwrap().clone();
    assert!(calls.iter().all(|c| c.records.len() <= 4), "max_records");
    // After each failure report, the next call begins with the record reported.
    let reported = handler.reported.lock().unwrap().clone();
    assert_eq!(reported.len(), 3, "b@3 failed twice, c@5 once: {calls:?}");
    for (i, seq) in &reported {
        assert_eq!(
            &calls[i + 1].records[0].2,
            seq,
            "resent from the failed record"
        );
    }
    for c in &calls {
        assert_eq!(c.authorization, format!("Bearer {token}"));
        assert_eq!(
            c.first_header, c.records[0].2,
            "the batch's first sequence number"
        );
        assert_eq!(c.count_header, c.records.len().to_string());
    }
    let labels = "connector=\"handler\",result=\"partial\"";
    assert_eq!(
        metric(port, "shardbridge_http_invocations_total", labels),
        3.0
    );
    assert_eq!(
        metric(
            port,
            "shardbridge_http_records_reported_failed_total",
            "connector=\"handler\""
        ),
        3.0
    );
    assert_eq!(run.stop(Duration::from_secs(30)), 0, "{}", run.log_text());
    assert!(
        !run.log_text().contains(token),
        "the token never reaches the log"
    );

    // Without the variable the connector does not start, and says which key needs it.
    let mut run = Running::start(&path, &dir.path().join("unset.log"));
    assert_eq!(run.wait(Duration::from_secs(30)), 1);
    let log = run.log_text();
    assert!(
        log.contains(
            "sink.headers.Authorization: the environment variable HANDLER_TOKEN is not set"
        ),
        "{log}"
    );
}

/// A poison record (the handler answers 500 whenever the batch holds it) and a slow one (the
/// handler takes longer than `timeout_ms`) are isolated by bisection and go to the SQS failure
/// destination after `max_retry_attempts`, with Lambda's OnFailure document; every other change
/// is handled, once, in its item's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bisection_isolates_a_poison_and_a_slow_record_and_sets_them_aside() {
    let endpoint = aws_endpoint();
    let sdk = sdk_config(&endpoint).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue_url = sqs
        .create_queue()
        .queue_name(unique("http-dlq"))
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let table = unique("http-bisect");
    workload::create_table(&ddb, &table, StreamViewType::NewAndOldImages).await;
    let ids = ["a", "b", "c", "d", "e", "f"];
    let mut writes: Vec<(&str, u32)> = ids.iter().map(|id| (*id, 1)).collect();
    writes.push(("poison", 1));
    writes.extend(ids[..3].iter().map(|id| (*id, 2)));
    writes.push(("slow", 1));
    writes.extend(ids[3..].iter().map(|id| (*id, 2)));
    for (id, v) in writes {
        put(&ddb, &table, id, v).await;
    }

    let handler = Arc::new(Handler::default());
    let behaviour: Arc<Behaviour> = Arc::new(|h: &Handler, call: &Call| {
        let holds = |name: &str| call.records.iter().any(|(id, _, _)| id == name);
        if holds("poison") {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "poison pill".into(),
                Duration::ZERO,
            );
        }
        if holds("slow") {
            return (StatusCode::OK, String::new(), Duration::from_secs(3));
        }
        let mut handled = h.handled.lock().unwrap();
        handled.extend(call.records.iter().map(|(id, v, _)| (id.clone(), *v)));
        (StatusCode::OK, String::new(), Duration::ZERO)
    });
    let url = serve(handler.clone(), behaviour).await;

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let sink =
        format!("url = \"{url}\"\ntimeout_ms = 500\nmax_records = 10\nbisect_on_error = true");
    let extra = format!(
        "max_retry_attempts = 1\n[connectors.on_failure]\ntype = \"sqs\"\nqueue_url = \"{queue_url}\""
    );
    let text = config(port, &endpoint, &table, &sink, &extra);
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let mut run = Running::start(&path, &dir.path().join("run.log"));

    let mut docs: Vec<Value> = Vec::new();
    let started = std::time::Instant::now();
    while docs.len() < 2 || handler.handled.lock().unwrap().len() < 12 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{} documents, {} handled; log:\n{}",
            docs.len(),
            handler.handled.lock().unwrap().len(),
            run.log_text()
        );
        let out = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        for m in out.messages() {
            docs.push(serde_json::from_str(m.body().unwrap()).unwrap());
            sqs.delete_message()
                .queue_url(&queue_url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let handled = handler.handled.lock().unwrap().clone();
    let want: BTreeMap<String, Vec<u64>> =
        ids.iter().map(|id| (id.to_string(), vec![1, 2])).collect();
    let calls = handler.calls.lock().unwrap().clone();
    let shapes: Vec<Vec<String>> = calls
        .iter()
        .map(|c| {
            c.records
                .iter()
                .map(|(id, v, _)| format!("{id}{v}"))
                .collect()
        })
        .collect();
    assert_eq!(
        by_item(&handled),
        want,
        "every other change once, in order: {shapes:?}; log:\n{}",
        run.log_text()
    );

    let mut aside = BTreeMap::new();
    for doc in &docs {
        let records = doc["records"].as_array().unwrap();
        assert_eq!(records.len(), 1, "isolated: {doc}");
        let id = records[0]["dynamodb"]["NewImage"]["id"]["S"]
            .as_str()
            .unwrap();
        assert_eq!(doc["requestContext"]["condition"], "RetryAttemptsExhausted");
        assert_eq!(doc["requestContext"]["approximateInvokeCount"], 2, "{doc}");
        assert_eq!(doc["responseContext"]["functionError"], "Unhandled");
        aside.insert(id.to_string(), doc["responseContext"].clone());
    }
    assert_eq!(
        aside.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from(["poison".to_string(), "slow".to_string()])
    );
    assert_eq!(aside["poison"]["statusCode"], 500);
    let poison_error = aside["poison"]["errorMessage"].as_str().unwrap();
    assert!(
        poison_error.contains("HTTP 500: poison pill"),
        "{poison_error}"
    );
    let slow_error = aside["slow"]["errorMessage"].as_str().unwrap();
    assert!(
        slow_error.contains("timed out after 500 ms"),
        "{slow_error}"
    );
    assert!(
        metric(
            port,
            "shardbridge_http_bisections_total",
            "connector=\"handler\""
        ) >= 4.0
    );
    let timeouts = "connector=\"handler\",result=\"timeout\"";
    assert!(metric(port, "shardbridge_http_invocations_total", timeouts) >= 2.0);
    assert_eq!(run.stop(Duration::from_secs(30)), 0, "{}", run.log_text());
}

/// A handler written with Powertools for AWS Lambda (its parser models and batch processor,
/// tests/support/powertools_handler.py) behind the sink: every event it receives validates
/// against Powertools' model for the source (DynamoDB Streams: inserts, modifies and removes
/// of every attribute type; Kinesis: the `lambda` format's records), its partial batch
/// responses are honoured, and every record is handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_powertools_handler_validates_every_event() {
    // DynamoDB Streams: 40 changes to 5 items, each item's version 3 failing once.
    let (_, ddb, table) = new_table("http-powertools").await;
    let plan = workload::plan(5, 40);
    workload::apply(&ddb, &table, &plan).await;
    let changes: usize = plan.iter().map(|(_, c)| c.len()).sum();
    let source = format!(
        "[connectors.source]\ntype = \"dynamodb-streams\"\ntable = \"{table}\"\npoll_idle_ms = 50"
    );
    powertools_run("dynamodb", &source, "", changes).await;

    // Kinesis: 3 versions of 8 keys over 2 shards; the key "fail-1"'s records fail once.
    let kinesis = kinesis_endpoint();
    let k = harness::kinesis_client(&kinesis).await;
    let stream = unique("http-powertools");
    harness::create_stream(&k, &stream, 2).await;
    let mut keys: Vec<String> = (0..7).map(|i| format!("key-{i}")).collect();
    keys.push("fail-1".into());
    for version in 1..=3 {
        harness::put_version(&k, &stream, &keys, version).await;
    }
    let source = format!(
        "[connectors.source]\ntype = \"kinesis\"\nstream = \"{stream}\"\npoll_idle_ms = 50\n\
         [connectors.source.aws]\nendpoint_url = \"{kinesis}\""
    );
    let format = "[connectors.format]\ntype = \"lambda\"\n\
                  invoke_identity_arn = \"arn:aws:iam::123456789012:role/handler\"";
    powertools_run("kinesis", &source, format, keys.len() * 3).await;
}

/// Runs the Powertools handler for `kind` and a worker from `source` to it until `records`
/// distinct records were handled; checks what the handler wrote.
async fn powertools_run(kind: &str, source: &str, format: &str, records: usize) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("handled.jsonl");
    let handler_port = free_port();
    let mut handler = std::process::Command::new(test_python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/powertools_handler.py"
        ))
        .arg(handler_port.to_string())
        .arg(&out)
        .arg(kind)
        .stderr(std::fs::File::create(dir.path().join("handler.log")).unwrap())
        .spawn()
        .expect("start the Powertools handler");
    let port = free_port();
    let text = format!(
        r#"
[worker]
listen = "127.0.0.1:{port}"
[aws]
region = "us-east-1"
endpoint_url = "{endpoint}"
[[connectors]]
name = "powertools"
{source}
[connectors.leases]
table = "{leases}"
{format}
[connectors.sink]
type = "http"
url = "http://127.0.0.1:{handler_port}/invoke"
max_records = 7
report_batch_item_failures = true
"#,
        endpoint = aws_endpoint(),
        leases = unique("powertools-leases")
    );
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let mut run = Running::start(&path, &dir.path().join("run.log"));
    let handled = |lines: &[Value]| -> BTreeSet<String> {
        lines
            .iter()
            .flat_map(|l| l["handled"].as_array().cloned().unwrap_or_default())
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let started = std::time::Instant::now();
    loop {
        let lines = if out.exists() {
            read_lines(&out)
        } else {
            Vec::new()
        };
        let invalid: Vec<&Value> = lines
            .iter()
            .filter(|l| l.get("invalid").is_some())
            .collect();
        assert!(
            invalid.is_empty(),
            "{kind}: events Powertools refused: {invalid:?}"
        );
        if handled(&lines).len() >= records {
            break;
        }
        assert!(
            handler.try_wait().unwrap().is_none(),
            "the handler ended: {}",
            std::fs::read_to_string(dir.path().join("handler.log")).unwrap_or_default()
        );
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{kind}: {} of {records} records handled; log:\n{}",
            handled(&lines).len(),
            run.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = handler.kill();
    let _ = handler.wait();
    let lines = read_lines(&out);
    let validated: u64 = lines.iter().map(|l| l["validated"].as_u64().unwrap()).sum();
    assert!(
        validated as usize >= records,
        "{kind}: {validated} records validated"
    );
    assert_eq!(
        handled(&lines).len(),
        records,
        "{kind}: every record handled"
    );
    let partial = metric(
        port,
        "shardbridge_http_invocations_total",
        "connector=\"powertools\",result=\"partial\"",
    );
    assert!(
        partial >= 1.0,
        "{kind}: the handler's partial responses were read"
    );
    assert_eq!(run.stop(Duration::from_secs(30)), 0, "{}", run.log_text());
}

/// SIGKILL while the handler holds an invocation: after a restart the batch is delivered
/// again, and every change reaches the handler (at-least-once: nothing skipped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_in_flight_at_a_crash_is_delivered_again_after_restart() {
    let (endpoint, ddb, table) = new_table("http-crash").await;
    let ids = ["a", "b", "c", "d"];
    write_items(&ddb, &table, &ids, 3).await;

    let handler = Arc::new(Handler::default());
    // The first call is held for long (the worker is killed meanwhile); the others are handled.
    let behaviour: Arc<Behaviour> = Arc::new(|h: &Handler, call: &Call| {
        if h.calls.lock().unwrap().len() == 1 {
            return (StatusCode::OK, String::new(), Duration::from_secs(30));
        }
        let mut handled = h.handled.lock().unwrap();
        handled.extend(call.records.iter().map(|(id, v, _)| (id.clone(), *v)));
        (StatusCode::OK, String::new(), Duration::ZERO)
    });
    let url = serve(handler.clone(), behaviour).await;

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let sink = format!("url = \"{url}\"\nmax_records = 5");
    let text = config(port, &endpoint, &table, &sink, "")
        .replace("[connectors.sink]", "failover_ms = 2000\n[connectors.sink]");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let mut run = Running::start(&path, &dir.path().join("run.log"));
    wait_until("the first invocation", &mut run, || {
        !handler.calls.lock().unwrap().is_empty()
    })
    .await;
    let held: Vec<String> = handler.calls.lock().unwrap()[0]
        .records
        .iter()
        .map(|(_, _, seq)| seq.clone())
        .collect();
    run.signal("KILL");
    run.wait(Duration::from_secs(10));

    let mut run = Running::start(&path, &dir.path().join("restart.log"));
    wait_until("12 changes handled after the restart", &mut run, || {
        handler.handled.lock().unwrap().len() >= 12
    })
    .await;
    let calls = handler.calls.lock().unwrap().clone();
    let again = calls[1..]
        .iter()
        .any(|c| c.records.iter().map(|(_, _, s)| s).eq(held.iter()));
    assert!(again, "the held batch {held:?} was sent again: {calls:?}");
    let handled = handler.handled.lock().unwrap().clone();
    let want: BTreeMap<String, Vec<u64>> = ids
        .iter()
        .map(|id| (id.to_string(), vec![1, 2, 3]))
        .collect();
    assert_eq!(by_item(&handled), want, "every change, in its item's order");
    assert_eq!(run.stop(Duration::from_secs(30)), 0, "{}", run.log_text());
}

/// https: the handler's certificate is signed by a CA of the test's; with `tls.ca_file` naming
/// it every change is delivered, without it nothing is (the certificate is refused, retried as
/// a function error, and said so in the log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_trusts_the_configured_ca_and_only_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    std::fs::write(d.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=shardbridge test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "san.ext",
    ]);
    // A handler over TLS that counts the records it receives.
    let handler_port = free_port();
    let received = d.join("received.txt");
    let server = format!(
        r#"
import http.server, json, ssl
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with open({received:?}, "a") as f:
            f.write("%d\n" % len(body["Records"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", {handler_port}), H)
c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
c.load_cert_chain({cert:?}, {key:?})
s.socket = c.wrap_socket(s.socket, server_side=True)
s.serve_forever()
"#,
        received = received.display().to_string(),
        cert = d.join("server.pem").display().to_string(),
        key = d.join("server.key").display().to_string(),
    );
    let mut tls_server = std::process::Command::new(test_python())
        .arg("-c")
        .arg(server)
        .spawn()
        .unwrap();
    let count = || -> usize {
        std::fs::read_to_string(&received)
            .unwrap_or_default()
            .lines()
            .map(|l| l.parse::<usize>().unwrap())
            .sum()
    };

    for (trusted, run_name) in [(false, "untrusted"), (true, "trusted")] {
        let (endpoint, ddb, table) = new_table("http-tls").await;
        write_items(&ddb, &table, &["a", "b"], 2).await;
        let url = format!("https://127.0.0.1:{handler_port}/invoke");
        let mut sink = format!("url = \"{url}\"\ntimeout_ms = 2000");
        if trusted {
            let ca = d.join("ca.pem");
            sink += &format!("\n[connectors.sink.tls]\nca_file = \"{}\"", ca.display());
        }
        let port = free_port();
        let path = d.join(format!("{run_name}.toml"));
        std::fs::write(&path, config(port, &endpoint, &table, &sink, "")).unwrap();
        let mut run = Running::start(&path, &d.join(format!("{run_name}.log")));
        if trusted {
            wait_until("4 changes received over TLS", &mut run, || count() >= 4).await;
        } else {
            let log_path = d.join(format!("{run_name}.log"));
            wait_until("a refused certificate in the log", &mut run, || {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                log.contains("sink write failed") && log.to_lowercase().contains("certificate")
            })
            .await;
            assert_eq!(
                count(),
                0,
                "nothing is sent to a server the worker does not trust"
            );
        }
        assert_eq!(run.stop(Duration::from_secs(30)), 0, "{}", run.log_text());
    }
    let _ = tls_server.kill();
    let _ = tls_server.wait();
}

/// Lambda's MaximumRecordAgeInSeconds holds for retries: a record the handler keeps failing is
/// retried until it is older than `max_record_age_ms`, then set aside (condition
/// `RecordAgeExceeded`), without `max_retry_attempts`; the rest is handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_failing_past_the_maximum_age_is_set_aside() {
    let (endpoint, ddb, table) = new_table("http-age").await;
    for (id, v) in [("a", 1), ("stuck", 1), ("b", 1), ("a", 2)] {
        put(&ddb, &table, id, v).await;
    }
    let handler = Arc::new(Handler::default());
    let behaviour: Arc<Behaviour> = Arc::new(|h: &Handler, call: &Call| {
        if call.records.iter().any(|(id, _, _)| id == "stuck") {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "busy".into(),
                Duration::ZERO,
            );
        }
        let mut handled = h.handled.lock().unwrap();
        handled.extend(call.records.iter().map(|(id, v, _)| (id.clone(), *v)));
        (StatusCode::OK, String::new(), Duration::ZERO)
    });
    let url = serve(handler.clone(), behaviour).await;
    let dir = tempfile::tempdir().unwrap();
    let dlq = dir.path().join("dlq.jsonl");
    let port = free_port();
    let sink = format!("url = \"{url}\"\nbisect_on_error = true");
    let extra = format!(
        "max_record_age_ms = 3000\n[connectors.on_failure]\ntype = \"file\"\npath = \"{}\"",
        dlq.display()
    );
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config(port, &endpoint, &table, &sink, &extra)).unwrap();
    let mut run = Running::start(&path, &dir.path().join("run.log"));
    wait_until("the stuck record set aside", &mut run, || {
        dlq.exists() && !read_lines(&dlq).is_empty()
    })
    .await;
    wait_until("the rest handled", &mut run, || {
        handler.handled.lock().unwrap().len() >= 3
    })
    .await;
    let docs = read_lines(&dlq);
    assert_eq!(docs.len(), 1, "{docs:?}");
    assert_eq!(docs[0]["requestContext"]["condition"], "RecordAgeExceeded");
    let records = docs[0]["records"].as_array().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["dynamodb"]["NewImage"]["id"]["S"], "stuck");
    assert_eq!(docs[0]["responseContext"]["statusCode"], 503);
    let want: BTreeMap<String, Vec<u64>> =
        BTreeMap::from([("a".to_string(), vec![1, 2]), ("b".to_string(), vec![1])]);
    assert_eq!(by_item(&handler.handled.lock().unwrap()), want);
    assert_eq!(run.stop(Duration::from_secs(30)), 0, "{}", run.log_text());
}

/// Parallel lanes: the handler fails every call holding item `stuck` until the other items'
/// later versions (written after `stuck`'s first call, so read into later batches) have been
/// handled. Those go on meanwhile: a failing lane holds back only its own items. Then every
/// change is handled once, in its item's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_lanes_a_failing_lane_holds_back_only_its_own_items() {
    let (endpoint, ddb, table) = new_table("http-lanes").await;
    let others = ["a", "b", "c", "d", "e", "f"];
    write_items(&ddb, &table, &["stuck"], 1).await;
    write_items(&ddb, &table, &others, 1).await;

    let handler = Arc::new(Handler::default());
    let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = std::time::Instant::now();
    let behaviour: Arc<Behaviour> = {
        let released = released.clone();
        Arc::new(move |h: &Handler, call: &Call| {
            use std::sync::atomic::Ordering::SeqCst;
            let mut handled = h.handled.lock().unwrap();
            if call.records.iter().any(|(id, _, _)| id == "stuck") && !released.load(SeqCst) {
                // Released once some other item reached version 4, or after 60 s (so that
                // without lanes running ahead the test fails on its assertions, not a hang).
                let later = handled.iter().filter(|(_, v)| *v >= 4).count();
                if later == 0 && started.elapsed() < Duration::from_secs(60) {
                    return (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "busy".into(),
                        Duration::ZERO,
                    );
                }
                released.store(true, SeqCst);
            }
            handled.extend(call.records.iter().map(|(id, v, _)| (id.clone(), *v)));
            (StatusCode::OK, String::new(), Duration::ZERO)
        })
    };
    let url = serve(handler.clone(), behaviour).await;

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let sink = format!("url = \"{url}\"\nmax_records = 2");
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        config(
            port,
            &endpoint,
            &table,
            &sink,
            "parallelization_factor = 10",
        ),
    )
    .unwrap();
    let mut run = Running::start(&path, &dir.path().join("run.log"));
    wait_until("the stuck item's first call", &mut run, || {
        let calls = handler.calls.lock().unwrap();
        calls
            .iter()
            .any(|c| c.records.iter().any(|(id, _, _)| id == "stuck"))
    })
    .await;
    // Later batches: each version written after the batch before it was read.
    for v in 2..=4 {
        for id in others {
            put(&ddb, &table, id, v).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    put(&ddb, &table, "stuck", 2).await;
    wait_until("every change handled", &mut run, || {
        handler.handled.lock().unwrap().len() >= 2 + others.len() * 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let handled = handler.handled.lock().unwrap().clone();
    let stuck_at = handled.iter().position(|(id, _)| id == "stuck").unwrap();
    let before: Vec<_> = handled[..stuck_at]
        .iter()
        .filter(|(_, v)| *v >= 2)
        .collect();
    assert!(
        !before.is_empty(),
        "the other lanes handled later batches while the stuck one retried: {handled:?}"
    );
    let mut want: BTreeMap<String, Vec<u64>> = others
        .iter()
        .map(|id| (id.to_string(), vec![1, 2, 3, 4]))
        .collect();
    want.insert("stuck".into(), vec![1, 2]);
    assert_eq!(
        by_item(&handled),
        want,
        "every change once, in its item's order"
    );
    assert_eq!(run.stop(Duration::from_secs(30)), 0, "{}", run.log_text());
}
