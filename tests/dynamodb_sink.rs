//! The DynamoDB sink: a table's changes replicated into a table in another region (moto serves
//! both), by three workers killed with SIGKILL at random and restarted while the changes run. The
//! target is sampled all along: no item may go back to an older state (an older version, or a
//! deleted item coming back), and at the end it equals the source item by item.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue as Av, StreamViewType};
use common::*;

/// A replication connector: `source` (us-east-1) into `target` (us-west-2).
struct Replica<'a> {
    name: &'a str,
    endpoint: &'a str,
    source: &'a str,
    target: &'a str,
    leases: &'a str,
    /// A `[connectors.snapshot]` table, or "".
    snapshot: &'a str,
    max_records: u32,
}

/// One configuration file per worker (`w{i}`, listening on `ports[i]`) in `dir`.
fn worker_configs(dir: &std::path::Path, ports: &[u16], r: &Replica) -> Vec<std::path::PathBuf> {
    let Replica {
        name,
        endpoint,
        source,
        target,
        leases,
        snapshot,
        max_records,
    } = r;
    ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let text = format!(
                r#"
[worker]
id = "w{i}"
listen = "127.0.0.1:{port}"
[aws]
region = "us-east-1"
endpoint_url = "{endpoint}"
[[connectors]]
name = "{name}"
[connectors.source]
type = "dynamodb-streams"
table = "{source}"
poll_idle_ms = 50
{snapshot}[connectors.leases]
table = "{leases}"
failover_ms = 2000
[connectors.sink]
type = "dynamodb"
table = "{target}"
max_records = {max_records}
[connectors.sink.aws]
region = "us-west-2"
"#
            );
            let path = dir.join(format!("w{i}.toml"));
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect()
}

fn version(item: &workload::Item) -> u64 {
    match item.get("version") {
        Some(Av::N(n)) => n.parse().unwrap(),
        other => panic!("no version: {other:?}"),
    }
}

/// What the samples of the target showed of one item: its newest version seen, and whether it
/// was seen gone since.
#[derive(Default)]
struct Seen {
    version: Option<u64>,
    gone_since: bool,
}

/// A source table in us-east-1 (with a stream of both images) and an empty target table in
/// us-west-2, both on moto.
struct Tables {
    endpoint: String,
    source: aws_sdk_dynamodb::Client,
    target: aws_sdk_dynamodb::Client,
    source_table: String,
    target_table: String,
}

async fn tables(prefix: &str) -> Tables {
    let endpoint = aws_endpoint();
    let sdk = sdk_config(&endpoint).await;
    let source = aws_sdk_dynamodb::Client::new(&sdk);
    let target = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .region(aws_sdk_dynamodb::config::Region::new("us-west-2"))
            .build(),
    );
    let (source_table, target_table) = (
        unique(&format!("{prefix}-src")),
        unique(&format!("{prefix}-dst")),
    );
    workload::create_table(&source, &source_table, StreamViewType::NewAndOldImages).await;
    workload::create_table(&target, &target_table, StreamViewType::NewImage).await;
    Tables {
        endpoint,
        source,
        target,
        source_table,
        target_table,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_into_another_region_through_kills_never_going_back() {
    let Tables {
        endpoint,
        source,
        target,
        source_table,
        target_table,
    } = tables("repl").await;
    assert!(
        source
            .describe_table()
            .table_name(&target_table)
            .send()
            .await
            .is_err(),
        "the target table exists only in us-west-2"
    );

    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let leases = unique("repl-leases");
    let paths = worker_configs(
        dir.path(),
        &ports,
        &Replica {
            name: "replica",
            endpoint: &endpoint,
            source: &source_table,
            target: &target_table,
            leases: &leases,
            snapshot: "",
            max_records: 40,
        },
    );
    let log = |name: &str| dir.path().join(format!("{name}.log"));
    let mut workers = vec![
        Running::start(&paths[0], &log("w0")),
        Running::start(&paths[1], &log("w1")),
        Running::start(&paths[2], &log("w2")),
    ];

    // The target, sampled while everything runs.
    let regressions = Arc::new(Mutex::new(Vec::<String>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = sample_for_regressions(
        target.clone(),
        target_table.clone(),
        regressions.clone(),
        done.clone(),
    );

    // The changes, in three parts, with a worker killed and restarted between them.
    // Few items, many changes: a batch often holds several changes of one item.
    let plan = workload::plan(8, 600);
    let parts: Vec<Vec<(String, Vec<workload::Change>)>> = (0..3)
        .map(|p| {
            plan.iter()
                .map(|(id, changes)| {
                    let n = changes.len();
                    let part = changes[p * n / 3..(p + 1) * n / 3].to_vec();
                    (id.clone(), part)
                })
                .collect()
        })
        .collect();
    // Victims and moments from a seed printed for a rerun: a kill lands anywhere in a part.
    let seed: u64 = std::env::var("SHARDBRIDGE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::process::id() as u64);
    eprintln!("SHARDBRIDGE_TEST_SEED={seed}");
    let mut rng = seed;
    let mut next = move |n: u64| {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng >> 33) % n
    };
    for (p, part) in parts.iter().enumerate() {
        let cut = 1 + next(part.len() as u64 - 1) as usize;
        workload::apply(&source, &source_table, &part[..cut]).await;
        let victim = next(3) as usize;
        workers[victim].signal("KILL");
        workers[victim].wait(Duration::from_secs(10));
        workload::apply(&source, &source_table, &part[cut..]).await;
        workers[victim] = Running::start(&paths[victim], &log(&format!("w{victim}-{p}")));
    }

    // Until the target equals the source.
    let want = workload::scan_items(&source, &source_table).await;
    let started = std::time::Instant::now();
    loop {
        let got = workload::scan_items(&target, &target_table).await;
        if got == want {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the target differs after 90 s: {} items in the source, {} in the target; first \
             difference: {:?}\nlog w0:\n{}\nlog w1:\n{}\nlog w2:\n{}",
            want.len(),
            got.len(),
            want.iter()
                .find(|(id, item)| got.get(*id) != Some(item))
                .map(|(id, _)| id),
            workers[0].log_text(),
            workers[1].log_text(),
            workers[2].log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    done.store(true, Ordering::SeqCst);
    let samples = sampler.await.unwrap();
    assert!(samples >= 10, "the target was sampled {samples} times");
    assert_eq!(
        regressions.lock().unwrap().clone(),
        Vec::<String>::new(),
        "items went back to an older state in the target"
    );
    assert!(want.len() >= 4, "the workload left items: {}", want.len());
    let metric = |name: &str| -> f64 {
        ports
            .iter()
            .filter_map(|p| http_get(*p, "/metrics"))
            .filter_map(|(_, text)| metric_value(&text, name, "connector=\"replica\""))
            .sum()
    };
    assert!(
        metric("shardbridge_dynamodb_items_written_total") > 0.0,
        "items written, by the metric"
    );
    assert!(
        metric("shardbridge_dynamodb_changes_superseded_total") > 0.0,
        "batches held several changes of an item, and only the last was written"
    );
    for mut w in workers {
        assert_eq!(w.stop(Duration::from_secs(30)), 0, "{}", w.log_text());
    }
}

/// The target's items sampled every 100 ms until `done`: each sample is checked against the
/// newest version seen of each item before it (an older version, or a deleted item back).
fn sample_for_regressions(
    target: aws_sdk_dynamodb::Client,
    table: String,
    regressions: Arc<Mutex<Vec<String>>>,
    done: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
        let mut samples = 0;
        while !done.load(Ordering::SeqCst) {
            let now = workload::scan_items(&target, &table).await;
            for (id, s) in seen.iter_mut() {
                if !now.contains_key(id) && s.version.is_some() {
                    s.gone_since = true;
                }
            }
            for (id, item) in &now {
                let v = version(item);
                let s = seen.entry(id.clone()).or_default();
                match s.version {
                    Some(old) if v < old => regressions
                        .lock()
                        .unwrap()
                        .push(format!("{id}: version {v} after {old}")),
                    Some(old) if v == old && s.gone_since => regressions
                        .lock()
                        .unwrap()
                        .push(format!("{id}: version {v} came back after it was deleted")),
                    _ => {}
                }
                s.version = Some(v);
                s.gone_since = false;
            }
            samples += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        samples
    })
}

/// Puts `items` with version `v` (BatchWriteItem, 25 at a time).
async fn put_all(client: &aws_sdk_dynamodb::Client, table: &str, ids: &[String], v: u32) {
    for chunk in ids.chunks(25) {
        let writes = chunk
            .iter()
            .map(|id| {
                aws_sdk_dynamodb::types::WriteRequest::builder()
                    .put_request(
                        aws_sdk_dynamodb::types::PutRequest::builder()
                            .set_item(Some(workload::item(id, v)))
                            .build()
                            .unwrap(),
                    )
                    .build()
            })
            .collect();
        let out = client
            .batch_write_item()
            .request_items(table, writes)
            .send()
            .await
            .expect("BatchWriteItem");
        assert!(
            out.unprocessed_items().map_or(true, |u| u.is_empty()),
            "moto left items unprocessed"
        );
    }
}

/// Until the target equals the source (within `limit`), naming the first difference.
async fn wait_equal(
    source: (&aws_sdk_dynamodb::Client, &str),
    target: (&aws_sdk_dynamodb::Client, &str),
    limit: Duration,
    logs: impl Fn() -> String,
) -> BTreeMap<String, workload::Item> {
    let started = std::time::Instant::now();
    loop {
        let want = workload::scan_items(source.0, source.1).await;
        let got = workload::scan_items(target.0, target.1).await;
        if got == want {
            return want;
        }
        assert!(
            started.elapsed() < limit,
            "the target differs after {limit:?}: {} items in the source, {} in the target; \
             first difference: {:?}\n{}",
            want.len(),
            got.len(),
            want.iter()
                .find(|(id, item)| got.get(*id) != Some(item))
                .map(|(id, _)| id)
                .or_else(|| got.keys().find(|id| !want.contains_key(*id))),
            logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Replication from scratch: a table whose items predate the stream's reading is copied into a
/// table in another region by a snapshot, while its items are updated, deleted and added, by
/// three workers each SIGKILLed and restarted once during the scan. At the end the target
/// equals the source item by item; the items written before the snapshot reached the target
/// through it (the stream's records of them are older than the snapshot, so skipped); and once
/// the stream has caught up, further changes never take an item back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_a_table_from_scratch_through_a_snapshot_and_kills() {
    let Tables {
        endpoint,
        source,
        target,
        source_table,
        target_table,
    } = tables("scratch").await;
    // The table's history: items written well before the connector starts (older than its
    // clock margin, so the stream's records of them are skipped: only the snapshot has them).
    let existing: Vec<String> = (0..2000).map(|i| format!("old-{i:05}")).collect();
    put_all(&source, &source_table, &existing, 1).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let leases = unique("scratch-leases");
    // rate_limit: 2,000 items of about 170 bytes are about 42 units eventually consistent;
    // 4 units/s makes the scan last about 10 s, long enough for the kills.
    let paths = worker_configs(
        dir.path(),
        &ports,
        &Replica {
            name: "scratch",
            endpoint: &endpoint,
            source: &source_table,
            target: &target_table,
            leases: &leases,
            snapshot: "[connectors.snapshot]\nmode = \"initial\"\nsegments = 6\nrate_limit = 4\nclock_margin_ms = 1000\n",
            max_records: 100,
        },
    );
    let log = |name: &str| dir.path().join(format!("{name}.log"));
    let mut workers: Vec<Running> = (0..3)
        .map(|i| Running::start(&paths[i], &log(&format!("w{i}"))))
        .collect();
    let metric = |name: &str| -> f64 {
        ports
            .iter()
            .filter_map(|p| http_get(*p, "/metrics"))
            .filter_map(|(_, text)| metric_value(&text, name, "connector=\"scratch\""))
            .sum()
    };

    // During the scan: old items updated (their snapshot record may be newer than the stream's
    // record of the change, which follows it) and deleted, new items added; a worker killed
    // and restarted after each part.
    let plan = workload::plan(40, 400);
    for p in 0..3usize {
        let updated: Vec<String> = existing.iter().skip(p).step_by(7).cloned().collect();
        put_all(&source, &source_table, &updated, 2 + p as u32).await;
        for id in existing.iter().skip(p).step_by(50) {
            source
                .delete_item()
                .table_name(&source_table)
                .key("id", Av::S(id.clone()))
                .send()
                .await
                .expect("delete");
        }
        let part: Vec<(String, Vec<workload::Change>)> = plan
            .iter()
            .map(|(id, changes)| {
                let n = changes.len();
                (id.clone(), changes[p * n / 3..(p + 1) * n / 3].to_vec())
            })
            .collect();
        workload::apply(&source, &source_table, &part).await;
        assert!(
            metric("shardbridge_snapshot_segments_done") < 6.0 * 3.0,
            "the scan was over before kill {p}: make it slower"
        );
        workers[p].signal("KILL");
        workers[p].wait(Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(300)).await;
        workers[p] = Running::start(&paths[p], &log(&format!("w{p}-again")));
    }
    let logs = || {
        (0..3)
            .map(|i| format!("log w{i}:\n{}", workers[i].log_text()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let want = wait_equal(
        (&source, &source_table),
        (&target, &target_table),
        Duration::from_secs(120),
        logs,
    )
    .await;
    let untouched = existing
        .iter()
        .enumerate()
        .filter(|(i, id)| i % 7 > 2 && i % 50 > 2 && want.get(*id).map(version) == Some(1))
        .count();
    assert!(
        untouched > 1000,
        "items written before the snapshot and never changed reached the target through it: {untouched}"
    );
    // Counters restart with a killed worker: the live ones delivered some, and every worker
    // sees all six segments done.
    assert!(
        metric("shardbridge_snapshot_items_delivered_total") > 0.0,
        "snapshot records delivered, by the metric"
    );
    assert_eq!(
        metric("shardbridge_snapshot_segments_done"),
        18.0,
        "6 segments done, as each of the 3 workers sees it"
    );

    // Caught up: from now on no item goes back.
    let regressions = Arc::new(Mutex::new(Vec::<String>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = sample_for_regressions(
        target.clone(),
        target_table.clone(),
        regressions.clone(),
        done.clone(),
    );
    // A scan of the target takes about a second on moto: rounds long enough for several.
    for round in 0..8u32 {
        let ids: Vec<String> = want
            .keys()
            .skip(round as usize)
            .step_by(8)
            .take(100)
            .cloned()
            .collect();
        put_all(&source, &source_table, &ids, 10 + round).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let logs = || {
        (0..3)
            .map(|i| format!("log w{i}:\n{}", workers[i].log_text()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    wait_equal(
        (&source, &source_table),
        (&target, &target_table),
        Duration::from_secs(60),
        logs,
    )
    .await;
    done.store(true, Ordering::SeqCst);
    let samples = sampler.await.unwrap();
    assert!(samples >= 4, "the target was sampled {samples} times");
    assert_eq!(
        regressions.lock().unwrap().clone(),
        Vec::<String>::new(),
        "after the catch-up, items went back to an older state in the target"
    );
    for mut w in workers {
        assert_eq!(w.stop(Duration::from_secs(30)), 0, "{}", w.log_text());
    }
}
