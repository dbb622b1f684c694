//! Kill -9 in the middle of a run and restart: nothing lost, and nothing that was written before
//! the last checkpoint is written again.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, StreamViewType};
use common::workload;
use common::*;

fn config(
    endpoint: &str,
    table: &str,
    leases: &str,
    out: &std::path::Path,
    worker: &str,
    renewal: &str,
) -> String {
    format!(
        r#"
[worker]
id = "{worker}"
listen = "127.0.0.1:{port}"

[aws]
region = "us-east-1"
endpoint_url = "{endpoint}"

[[connectors]]
name = "crash"
[connectors.source]
type = "dynamodb-streams"
table = "{table}"
max_records = 25
poll_idle_ms = 50
[connectors.leases]
table = "{leases}"
failover_ms = 3000
renewal = "{renewal}"
[connectors.format]
type = "plain"
[connectors.sink]
type = "file"
path = "{out}"
"#,
        port = free_port(),
        out = out.display()
    )
}

async fn checkpoint_of(ddb: &aws_sdk_dynamodb::Client, leases: &str) -> HashMap<String, String> {
    let out = ddb
        .scan()
        .table_name(leases)
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    out.items()
        .iter()
        // Leases only, not the workers' heartbeat rows (renewal mode heartbeat).
        .filter(|i| !i["leaseKey"].as_s().unwrap().starts_with("heartbeat:"))
        .map(|i| {
            let key = i["leaseKey"].as_s().unwrap().clone();
            let cp = i["checkpoint"].as_s().unwrap().clone();
            (key, cp)
        })
        .collect()
}

/// The distinct sequence numbers in the file's complete lines (a batch being appended may end
/// in the middle of one).
fn distinct_sequence_numbers(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["seq"].as_str().map(str::to_string))
        .collect::<std::collections::HashSet<_>>()
        .len()
}

fn seq_le(a: &str, b: &str) -> bool {
    (a.len(), a) <= (b.len(), b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_loses_nothing_and_repeats_nothing_before_the_checkpoint() {
    kill_and_restart("per_lease").await;
}

/// The same with renewal mode heartbeat: the new worker takes the lease once the dead one's
/// heartbeat has been still for the failover time, and resumes from its checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_heartbeat_renewal_kill_9_and_restart_loses_nothing_and_repeats_nothing_before_the_checkpoint(
) {
    kill_and_restart("heartbeat").await;
}

async fn kill_and_restart(renewal: &str) {
    let endpoint = aws_endpoint();
    let sdk = sdk_config(&endpoint).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let dir = tempfile::tempdir().unwrap();
    let table = unique("crash");
    let leases = unique("crash-leases");
    workload::create_table(&ddb, &table, StreamViewType::NewAndOldImages).await;
    let plan = workload::plan(200, 2000);
    workload::apply(&ddb, &table, &plan).await;

    let out = dir.path().join("out.jsonl");
    // The restarted process may come up under another name (a new pod): it takes the dead
    // worker's lease once it expires.
    let first_cfg = dir.path().join("first.toml");
    std::fs::write(
        &first_cfg,
        config(&endpoint, &table, &leases, &out, "worker-first", renewal),
    )
    .unwrap();
    let mut first = Running::start(&first_cfg, &dir.path().join("first.log"));
    wait_for("a few hundred records", Duration::from_secs(60), || {
        (line_count(&out) >= 300).then_some(())
    });
    first.signal("KILL");
    first.wait(Duration::from_secs(10));
    let before_restart = line_count(&out);
    assert!(
        before_restart < 2000,
        "killed too late to prove anything ({before_restart} lines)"
    );
    let checkpoints = checkpoint_of(&ddb, &leases).await;
    assert_eq!(
        checkpoints.len(),
        1,
        "moto's stream has one shard: {checkpoints:?}"
    );
    let checkpoint = checkpoints.values().next().unwrap().clone();
    assert!(
        checkpoint.bytes().all(|b| b.is_ascii_digit()),
        "a sequence number was checkpointed: {checkpoint}"
    );

    let second_cfg = dir.path().join("second.toml");
    std::fs::write(
        &second_cfg,
        config(&endpoint, &table, &leases, &out, "worker-second", renewal),
    )
    .unwrap();
    let mut second = Running::start(&second_cfg, &dir.path().join("second.log"));
    // Distinct changes, not lines: records after the checkpoint are written again.
    wait_for("all 2000 changes", Duration::from_secs(90), || {
        (distinct_sequence_numbers(&out) >= 2000).then_some(())
    });
    assert_eq!(
        second.stop(Duration::from_secs(30)),
        0,
        "{}",
        second.log_text()
    );
    assert!(
        second.log_text().contains("took lease"),
        "{}",
        second.log_text()
    );

    let lines = read_lines(&out);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for l in &lines {
        *seen
            .entry(l["seq"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    // Nothing lost: every change of every item, in order.
    let by_item = workload::by_item(&lines, |l| l["keys"]["id"].as_str().unwrap().to_string());
    for (id, changes) in &plan {
        // Re-sent records (after the checkpoint) count once; order is by first appearance.
        let mut first_seen = std::collections::HashSet::new();
        let distinct: Vec<&serde_json::Value> = by_item[id]
            .iter()
            .filter(|l| first_seen.insert(l["seq"].as_str().unwrap().to_string()))
            .copied()
            .collect();
        let want: Vec<String> = changes.iter().map(|c| c.op.to_lowercase()).collect();
        let got: Vec<String> = distinct
            .iter()
            .map(|l| l["op"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(got, want, "item {id}: changes in order");
    }
    assert_eq!(seen.len(), 2000, "every change present");
    // Nothing at or before the last checkpoint was written twice.
    for (seq, n) in &seen {
        if seq_le(seq, &checkpoint) {
            assert_eq!(
                *n, 1,
                "record {seq} (before checkpoint {checkpoint}) written {n} times"
            );
        }
    }
    let repeated = seen.values().filter(|n| **n > 1).count();
    eprintln!("{before_restart} lines before the kill, checkpoint {checkpoint}, {repeated} records re-sent after it");
    // The lease row is KCL-shaped.
    let row = ddb
        .get_item()
        .table_name(&leases)
        .key(
            "leaseKey",
            AttributeValue::S(checkpoints.keys().next().unwrap().clone()),
        )
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    let item = row.item().unwrap();
    // A graceful stop releases the lease so that another worker can take it at once.
    assert!(
        !item.contains_key("leaseOwner"),
        "released on SIGTERM: {item:?}"
    );
    assert!(item["leaseCounter"].as_n().is_ok());
    assert_eq!(item["checkpointSubSequenceNumber"].as_n().unwrap(), "0");
}
