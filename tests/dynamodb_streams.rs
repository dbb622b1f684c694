//! End to end against the moto server: DynamoDB tables with streams of every view type, the
//! shardbridge binary with the file sink in every format, and what lands in the files.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use aws_sdk_dynamodb::types::StreamViewType;
use common::workload::{self, Change};
use common::*;
use serde_json::Value;

const VIEWS: [&str; 4] = ["KEYS_ONLY", "NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES"];
const FORMATS: [&str; 3] = ["lambda", "kinesis-ddb", "plain"];

fn connector_toml(
    name: &str,
    table: &str,
    leases: &str,
    format: &str,
    out: &Path,
    extra_source: &str,
) -> String {
    format!(
        r#"
[[connectors]]
name = "{name}"
[connectors.source]
type = "dynamodb-streams"
table = "{table}"
poll_idle_ms = 100
{extra_source}
[connectors.leases]
table = "{leases}"
failover_ms = 6000
[connectors.format]
type = "{format}"
[connectors.sink]
type = "file"
path = "{}"
"#,
        out.display()
    )
}

fn header(endpoint: &str, port: u16) -> String {
    format!(
        r#"
[worker]
id = "{}"
listen = "127.0.0.1:{port}"
shutdown_timeout_ms = 10000

[aws]
region = "us-east-1"
endpoint_url = "{endpoint}"
"#,
        unique("worker")
    )
}

fn expected_images(
    view: &str,
    c: &Change,
    render: fn(&workload::Item) -> Value,
) -> (Option<Value>, Option<Value>) {
    let (old, new) = workload::images(view, c);
    (old.as_ref().map(render), new.as_ref().map(render))
}

fn keys_of(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|s| s.to_string()).collect()
}

fn normalized(v: Option<&Value>) -> Option<Value> {
    v.map(|v| {
        let mut v = v.clone();
        workload::normalize_sets(&mut v);
        v
    })
}

/// Checks one output file: every change exactly once, in per-item order, each field as the
/// format defines it.
fn verify(
    format: &str,
    view: &str,
    table: &str,
    stream_arn: &str,
    lines: &[Value],
    plan: &[(String, Vec<Change>)],
) {
    let total: usize = plan.iter().map(|(_, c)| c.len()).sum();
    assert_eq!(
        lines.len(),
        total,
        "{format}/{view}: every change exactly once"
    );
    let seq_of = |l: &Value| -> String {
        match format {
            "lambda" => l["dynamodb"]["SequenceNumber"]
                .as_str()
                .unwrap()
                .to_string(),
            "plain" => l["seq"].as_str().unwrap().to_string(),
            _ => String::new(),
        }
    };
    if format != "kinesis-ddb" {
        // One shard: the whole file is in sequence order, each sequence number once.
        let seqs: Vec<String> = lines.iter().map(seq_of).collect();
        for w in seqs.windows(2) {
            assert!(
                (w[0].len(), &w[0]) < (w[1].len(), &w[1]),
                "{format}/{view}: sequence numbers not strictly increasing: {} then {}",
                w[0],
                w[1]
            );
        }
    }
    let id_of = |l: &Value| -> String {
        match format {
            "plain" => l["keys"]["id"].as_str().unwrap().to_string(),
            _ => l["dynamodb"]["Keys"]["id"]["S"]
                .as_str()
                .unwrap()
                .to_string(),
        }
    };
    let got = workload::by_item(lines, id_of);
    for (id, changes) in plan {
        let outs = got.get(id).cloned().unwrap_or_default();
        assert_eq!(
            outs.len(),
            changes.len(),
            "{format}/{view}: item {id}: number of changes"
        );
        for (n, (out, c)) in outs.iter().zip(changes).enumerate() {
            let ctx = format!("{format}/{view}: item {id} change {n} ({})", c.op);
            match format {
                "lambda" => {
                    assert_eq!(
                        keys_of(out),
                        set(&[
                            "eventID",
                            "eventName",
                            "eventVersion",
                            "eventSource",
                            "awsRegion",
                            "dynamodb",
                            "eventSourceARN"
                        ]),
                        "{ctx}: top-level fields"
                    );
                    assert_eq!(out["eventName"], c.op, "{ctx}");
                    assert_eq!(out["eventSource"], "aws:dynamodb", "{ctx}");
                    assert_eq!(out["awsRegion"], "us-east-1", "{ctx}");
                    assert_eq!(out["eventSourceARN"], stream_arn, "{ctx}");
                    assert!(out["eventVersion"].is_string(), "{ctx}");
                    assert!(!out["eventID"].as_str().unwrap().is_empty(), "{ctx}");
                    let d = &out["dynamodb"];
                    let (old, new) = expected_images(view, c, workload::typed_item);
                    let mut want = set(&["Keys", "SequenceNumber", "SizeBytes", "StreamViewType"]);
                    if d.get("ApproximateCreationDateTime").is_some() {
                        assert!(d["ApproximateCreationDateTime"].is_number(), "{ctx}");
                        want.insert("ApproximateCreationDateTime".into());
                    }
                    if old.is_some() {
                        want.insert("OldImage".into());
                    }
                    if new.is_some() {
                        want.insert("NewImage".into());
                    }
                    assert_eq!(keys_of(d), want, "{ctx}: dynamodb fields");
                    assert_eq!(d["Keys"], serde_json::json!({"id": {"S": id}}), "{ctx}");
                    assert_eq!(d["StreamViewType"], view, "{ctx}");
                    assert!(d["SizeBytes"].as_u64().unwrap() > 0, "{ctx}");
                    assert!(
                        d["SequenceNumber"]
                            .as_str()
                            .unwrap()
                            .bytes()
                            .all(|b| b.is_ascii_digit()),
                        "{ctx}"
                    );
                    assert_eq!(
                        normalized(d.get("OldImage")),
                        normalized(old.as_ref()),
                        "{ctx}: OldImage"
                    );
                    assert_eq!(
                        normalized(d.get("NewImage")),
                        normalized(new.as_ref()),
                        "{ctx}: NewImage"
                    );
                }
                "kinesis-ddb" => {
                    assert_eq!(
                        keys_of(out),
                        set(&[
                            "awsRegion",
                            "eventID",
                            "eventName",
                            "userIdentity",
                            "recordFormat",
                            "tableName",
                            "dynamodb",
                            "eventSource"
                        ]),
                        "{ctx}: top-level fields"
                    );
                    assert_eq!(out["eventName"], c.op, "{ctx}");
                    assert_eq!(out["recordFormat"], "application/json", "{ctx}");
                    assert_eq!(out["tableName"], table, "{ctx}");
                    assert_eq!(out["eventSource"], "aws:dynamodb", "{ctx}");
                    assert!(out["userIdentity"].is_null(), "{ctx}");
                    let d = &out["dynamodb"];
                    let (old, new) = expected_images(view, c, workload::typed_item);
                    assert_eq!(d["Keys"], serde_json::json!({"id": {"S": id}}), "{ctx}");
                    assert!(d["SizeBytes"].as_u64().unwrap() > 0, "{ctx}");
                    assert_eq!(
                        normalized(d.get("OldImage")),
                        normalized(old.as_ref()),
                        "{ctx}: OldImage"
                    );
                    assert_eq!(
                        normalized(d.get("NewImage")),
                        normalized(new.as_ref()),
                        "{ctx}: NewImage"
                    );
                }
                "plain" => {
                    assert_eq!(
                        keys_of(out),
                        set(&["op", "table", "stream", "shard", "seq", "ts", "keys", "new", "old"]),
                        "{ctx}"
                    );
                    assert_eq!(out["op"], c.op.to_lowercase(), "{ctx}");
                    assert_eq!(out["table"], table, "{ctx}");
                    assert_eq!(out["stream"], stream_arn, "{ctx}");
                    assert!(
                        out["shard"].as_str().unwrap().starts_with("shardId-"),
                        "{ctx}"
                    );
                    assert_eq!(out["keys"], serde_json::json!({"id": id}), "{ctx}");
                    let (old, new) = expected_images(view, c, workload::plain_item);
                    let null = |v: Option<Value>| v.unwrap_or(Value::Null);
                    assert_eq!(
                        normalized(Some(&out["old"])),
                        normalized(Some(&null(old))),
                        "{ctx}: old"
                    );
                    assert_eq!(
                        normalized(Some(&out["new"])),
                        normalized(Some(&null(new))),
                        "{ctx}: new"
                    );
                }
                _ => unreachable!(),
            }
        }
    }
}

/// 2,000 changes over 200 items on a table of each view type, read by one process running
/// twelve connectors (every view type × every format) into files.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_change_once_in_item_order_for_every_view_type_and_format() {
    let endpoint = aws_endpoint();
    let sdk = sdk_config(&endpoint).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let plan = workload::plan(200, 2000);

    let mut config = header(&endpoint, port);
    let mut tables = HashMap::new();
    for view in VIEWS {
        let table = unique(&format!("orders-{}", view.to_lowercase().replace('_', "-")));
        let arn = workload::create_table(&ddb, &table, StreamViewType::from(view)).await;
        for format in FORMATS {
            let name = format!("{}-{format}", view.to_lowercase());
            let out = dir.path().join(format!("{name}.jsonl"));
            config.push_str(&connector_toml(
                &name,
                &table,
                &unique("leases"),
                format,
                &out,
                "",
            ));
        }
        tables.insert(view, (table, arn));
    }
    let config_path = dir.path().join("connectors.toml");
    std::fs::write(&config_path, &config).unwrap();
    let mut run = Running::start(&config_path, &dir.path().join("shardbridge.log"));

    // Ready once every connector runs.
    wait_for("/readyz 200", Duration::from_secs(60), || {
        http_get(port, "/readyz").filter(|(s, _)| *s == 200)
    });
    assert_eq!(http_get(port, "/healthz").unwrap().0, 200);

    let writers: Vec<_> = tables
        .values()
        .map(|(table, _)| {
            let (ddb, table, plan) = (ddb.clone(), table.clone(), plan.clone());
            tokio::spawn(async move { workload::apply(&ddb, &table, &plan).await })
        })
        .collect();
    let started = std::time::Instant::now();
    for w in writers {
        w.await.unwrap();
    }
    eprintln!("wrote 4 x 2000 changes in {:?}", started.elapsed());

    let total = 2000;
    for view in VIEWS {
        for format in FORMATS {
            let path = dir
                .path()
                .join(format!("{}-{format}.jsonl", view.to_lowercase()));
            wait_for(
                &format!("{} lines in {}", total, path.display()),
                Duration::from_secs(120),
                || (line_count(&path) >= total).then_some(()),
            );
        }
    }

    eprintln!(
        "all forwarded {:?} after the writes began",
        started.elapsed()
    );
    let (status, metrics) = http_get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    let label = "connector=\"new_and_old_images-lambda\"";
    for (name, at_least) in [
        ("shardbridge_source_records_read_total", 2000.0),
        ("shardbridge_source_bytes_read_total", 2000.0),
        ("shardbridge_sink_records_written_total", 2000.0),
        ("shardbridge_source_get_records_calls_total", 2.0),
        ("shardbridge_checkpoint_writes_total", 2.0),
        ("shardbridge_connector_running", 1.0),
    ] {
        let v = metric_value(&metrics, name, label)
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{metrics}"));
        assert!(v >= at_least, "{name} = {v}, expected at least {at_least}");
    }
    assert!(metric_value(
        &metrics,
        "shardbridge_source_iterator_age_milliseconds",
        label
    )
    .is_some());

    assert_eq!(
        run.stop(Duration::from_secs(30)),
        0,
        "clean stop; log:\n{}",
        run.log_text()
    );

    for view in VIEWS {
        let (table, arn) = &tables[view];
        for format in FORMATS {
            let path = dir
                .path()
                .join(format!("{}-{format}.jsonl", view.to_lowercase()));
            verify(format, view, table, arn, &read_lines(&path), &plan);
        }
    }
}

/// Lambda FilterCriteria on a connector: a pattern on `eventName` and one on a `NewImage`
/// attribute (any may match) pass exactly the matching changes, in order; the checkpoint moves
/// past the rest, and they are counted.
#[test]
fn filters_pass_exactly_the_matching_changes_and_the_checkpoint_moves_past_the_rest() {
    let endpoint = aws_endpoint();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ddb = rt.block_on(async { aws_sdk_dynamodb::Client::new(&sdk_config(&endpoint).await) });
    let table = unique("filtered");
    let plan = workload::plan(40, 400);
    rt.block_on(async {
        workload::create_table(&ddb, &table, StreamViewType::NewAndOldImages).await;
        workload::apply(&ddb, &table, &plan).await;
    });
    // Removes, and changes whose new image has flag = true (a TOML table pattern).
    let filter = r#"filter = ['{"eventName": ["REMOVE"]}', { dynamodb = { NewImage = { flag = { BOOL = [true] } } } }]"#;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let leases = unique("filtered-leases");
    let port = free_port();
    let mut cfg =
        header(&endpoint, port) + &connector_toml("filtered", &table, &leases, "lambda", &out, "");
    cfg = cfg.replace(
        "[connectors.source]",
        &format!("{filter}\n[connectors.source]"),
    );
    let path = dir.path().join("c.toml");
    std::fs::write(&path, &cfg).unwrap();
    let expected: Vec<(&str, &str)> = {
        let mut v = Vec::new();
        for (id, changes) in &plan {
            for c in changes {
                let flag = c
                    .new
                    .as_ref()
                    .and_then(|n| n.get("flag"))
                    .is_some_and(|f| f.as_bool().ok() == Some(&true));
                if c.op == "REMOVE" || flag {
                    v.push((id.as_str(), c.op));
                }
            }
        }
        v
    };
    assert!(
        !expected.is_empty() && expected.len() < 400,
        "{}",
        expected.len()
    );
    let mut run = Running::start(&path, &dir.path().join("run.log"));
    // Every change is read: the counter of filtered records reaches the rest.
    let filtered = (400 - expected.len()) as f64;
    wait_for("every change read", Duration::from_secs(90), || {
        let (_, body) = http_get(port, "/metrics")?;
        let n = metric_value(
            &body,
            "shardbridge_source_records_skipped_total",
            "reason=\"filtered\"",
        )?;
        (n >= filtered && line_count(&out) >= expected.len()).then_some(())
    });
    assert_eq!(run.stop(Duration::from_secs(30)), 0, "{}", run.log_text());
    let lines = read_lines(&out);
    assert_eq!(lines.len(), expected.len(), "exactly the matching changes");
    let got = workload::by_item(&lines, |l| {
        l["dynamodb"]["Keys"]["id"]["S"]
            .as_str()
            .unwrap()
            .to_string()
    });
    for (id, changes) in &plan {
        let want: Vec<&str> = expected
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, op)| *op)
            .collect();
        let have: Vec<&str> = got
            .get(id.as_str())
            .map(|ls| {
                ls.iter()
                    .map(|l| l["eventName"].as_str().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            have,
            want,
            "{id}: the matching changes, in order ({} in all)",
            changes.len()
        );
    }
    // The checkpoint is past the last change, matching or not.
    let last_seq = rt.block_on(async {
        let scan = ddb
            .scan()
            .table_name(&leases)
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        scan.items()[0]["checkpoint"].as_s().unwrap().clone()
    });
    let streams =
        rt.block_on(async { aws_sdk_dynamodbstreams::Client::new(&sdk_config(&endpoint).await) });
    let arn = rt.block_on(async {
        ddb.describe_table()
            .table_name(&table)
            .send()
            .await
            .unwrap()
            .table()
            .unwrap()
            .latest_stream_arn()
            .unwrap()
            .to_string()
    });
    let newest = rt.block_on(async {
        let d = streams
            .describe_stream()
            .stream_arn(&arn)
            .send()
            .await
            .unwrap();
        let shard = d.stream_description().unwrap().shards()[0]
            .shard_id()
            .unwrap()
            .to_string();
        let mut it = streams
            .get_shard_iterator()
            .stream_arn(&arn)
            .shard_id(&shard)
            .shard_iterator_type(aws_sdk_dynamodbstreams::types::ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator()
            .map(str::to_string);
        let mut last = String::new();
        while let Some(i) = it.take() {
            let page = streams
                .get_records()
                .shard_iterator(i)
                .send()
                .await
                .unwrap();
            if let Some(r) = page.records().last() {
                last = r.dynamodb().unwrap().sequence_number().unwrap().to_string();
            }
            if !page.records().is_empty() {
                it = page.next_shard_iterator().map(str::to_string);
            }
        }
        last
    });
    assert_eq!(
        last_seq, newest,
        "checkpointed past the records filtered out"
    );
}

/// shardbridge parses GetRecords bodies itself (src/source/stream_page.rs) instead of taking
/// the SDK's typed records. Against moto, every record of a stream with every attribute type
/// (the workload's items: S, N, B, SS, NS, BS, M, L, NULL, BOOL) and every event (INSERT,
/// MODIFY, REMOVE) reads the same both ways: the SDK's parse, converted as before, and
/// shardbridge's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_parsed_from_the_body_equal_the_sdks_typed_records() {
    use shardbridge::source::dynamodb_streams::{convert_record, DynamoDbStreamsSource};
    use shardbridge::source::record::SourceRecord;
    use shardbridge::source::{IteratorPosition, ShardSource, StreamRef};

    let endpoint = aws_endpoint();
    let config = sdk_config(&endpoint).await;
    let ddb = aws_sdk_dynamodb::Client::new(&config);
    let table = unique("parse");
    let stream_arn = workload::create_table(&ddb, &table, StreamViewType::NewAndOldImages).await;
    let plan = workload::plan(5, 60);
    workload::apply(&ddb, &table, &plan).await;
    let total: usize = plan.iter().map(|(_, c)| c.len()).sum();

    let source = DynamoDbStreamsSource::connect(&config, &StreamRef::StreamArn(stream_arn.clone()))
        .await
        .unwrap();
    let streams = aws_sdk_dynamodbstreams::Client::new(&config);
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for shard in source.list_shards().await.unwrap() {
        let mut iterator = Some(
            source
                .open_iterator(&shard.shard_id, &IteratorPosition::TrimHorizon)
                .await
                .unwrap(),
        );
        let mut typed = streams
            .get_shard_iterator()
            .stream_arn(&stream_arn)
            .shard_id(&shard.shard_id)
            .shard_iterator_type(aws_sdk_dynamodbstreams::types::ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator()
            .map(str::to_string);
        // An open shard has no end: read until a page comes back empty.
        while let Some(it) = iterator.take() {
            let page = source.get_records(&it, 1000).await.unwrap();
            if page.records.is_empty() {
                break;
            }
            ours.extend(page.records);
            iterator = page.next_iterator;
        }
        while let Some(it) = typed.take() {
            let out = streams
                .get_records()
                .shard_iterator(it)
                .send()
                .await
                .unwrap();
            if out.records().is_empty() {
                break;
            }
            for r in out.records() {
                let table_name = &table;
                theirs.push(convert_record(r, &stream_arn, table_name, &shard.shard_id).unwrap());
            }
            typed = out.next_shard_iterator().map(str::to_string);
        }
    }
    assert_eq!(ours.len(), total, "every change read");
    assert_eq!(theirs.len(), total, "every change read the SDK's way");
    let mut kinds = BTreeSet::new();
    for (ours, theirs) in ours.into_iter().zip(theirs) {
        let SourceRecord::DynamoDb(mut ours) = ours else {
            panic!("a DynamoDB record")
        };
        kinds.insert(ours.operation.event_name().to_string());
        // The SDK reads the epoch seconds as a float, shardbridge as the exact decimal: they
        // may differ by the float's last millisecond.
        let (a, b) = (
            ours.approximate_creation_millis.expect("a creation time"),
            theirs.approximate_creation_millis.expect("a creation time"),
        );
        assert!(
            (a - b).abs() <= 1,
            "creation time {a} against the SDK's {b}"
        );
        ours.approximate_creation_millis = theirs.approximate_creation_millis;
        assert_eq!(ours, theirs);
    }
    assert_eq!(kinds, set(&["INSERT", "MODIFY", "REMOVE"]));
}
