//! Three worker processes on one DynamoDB stream (moto): the lease moves when its holder is
//! killed (within failover + one renew interval) or stopped (within one renew interval), and
//! nothing is lost.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::StreamViewType;
use common::workload;
use common::*;

const FAILOVER_MS: u64 = 3000;
const RENEW_MS: u64 = 1000;

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
name = "fleet"
[connectors.source]
type = "dynamodb-streams"
table = "{table}"
poll_idle_ms = 50
[connectors.leases]
table = "{leases}"
failover_ms = {FAILOVER_MS}
renew_interval_ms = {RENEW_MS}
safety_margin_ms = 500
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

async fn owner(ddb: &aws_sdk_dynamodb::Client, leases: &str) -> Option<String> {
    let out = ddb
        .scan()
        .table_name(leases)
        .consistent_read(true)
        .send()
        .await
        .ok()?;
    // The lease, not a worker's heartbeat row (renewal mode heartbeat).
    let item = out.items().iter().find(|i| {
        i.get("leaseKey")
            .and_then(|k| k.as_s().ok())
            .is_some_and(|k| !k.starts_with("heartbeat:"))
    })?;
    item.get("leaseOwner").and_then(|v| v.as_s().ok()).cloned()
}

async fn wait_owner(
    ddb: &aws_sdk_dynamodb::Client,
    leases: &str,
    limit: Duration,
    ok: impl Fn(&str) -> bool,
) -> (String, Duration) {
    let started = Instant::now();
    loop {
        if let Some(o) = owner(ddb, leases).await.filter(|o| ok(o)) {
            return (o, started.elapsed());
        }
        assert!(
            started.elapsed() < limit,
            "the lease did not move within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn delivered(files: &[std::path::PathBuf]) -> HashSet<String> {
    files
        .iter()
        .flat_map(|f| read_lines(f))
        .map(|l| l["seq"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_move_on_kill_and_on_stop_and_nothing_is_lost() {
    leases_move_and_nothing_is_lost("per_lease").await;
}

/// The same with renewal mode heartbeat: the killed worker's lease moves once its heartbeat
/// has been still for the failover time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_heartbeat_renewal_leases_move_on_kill_and_on_stop_and_nothing_is_lost() {
    leases_move_and_nothing_is_lost("heartbeat").await;
}

async fn leases_move_and_nothing_is_lost(renewal: &str) {
    let endpoint = aws_endpoint();
    let ddb = aws_sdk_dynamodb::Client::new(&sdk_config(&endpoint).await);
    let dir = tempfile::tempdir().unwrap();
    let table = unique("fleet");
    let leases = unique("fleet-leases");
    workload::create_table(&ddb, &table, StreamViewType::NewImage).await;

    let names = ["w1", "w2", "w3"];
    let files: Vec<_> = names
        .iter()
        .map(|n| dir.path().join(format!("{n}.jsonl")))
        .collect();
    let mut workers: Vec<Running> = names
        .iter()
        .zip(&files)
        .map(|(n, f)| {
            let cfg = dir.path().join(format!("{n}.toml"));
            std::fs::write(&cfg, config(&endpoint, &table, &leases, f, n, renewal)).unwrap();
            Running::start(&cfg, &dir.path().join(format!("{n}.log")))
        })
        .collect();

    let plan = workload::plan(50, 300);
    workload::apply(&ddb, &table, &plan).await;
    wait_for("300 records", Duration::from_secs(60), || {
        (delivered(&files).len() >= 300).then_some(())
    });
    let (first, _) = wait_owner(&ddb, &leases, Duration::from_secs(10), |_| true).await;
    let first_ix = names.iter().position(|n| *n == first).unwrap();

    // SIGKILL the holder: another worker takes the lease once it has expired.
    workers[first_ix].signal("KILL");
    workers[first_ix].wait(Duration::from_secs(10));
    let (second, took) = wait_owner(&ddb, &leases, Duration::from_secs(30), |o| o != first).await;
    eprintln!("after SIGKILL of {first}: {second} took the lease in {took:?} (failover {FAILOVER_MS} ms + renew {RENEW_MS} ms)");
    assert!(
        took <= Duration::from_millis(FAILOVER_MS + RENEW_MS + 1500),
        "took {took:?}, want ≤ failover + one renew interval (+1.5 s for polling and scheduling)"
    );
    workload::apply(&ddb, &table, &workload::plan(50, 300)[..25]).await;

    // SIGTERM the new holder: it releases the lease and the third worker takes it at once.
    let second_ix = names.iter().position(|n| *n == second).unwrap();
    workers[second_ix].signal("TERM");
    let (third, moved) = wait_owner(&ddb, &leases, Duration::from_secs(30), |o| o != second).await;
    assert_eq!(workers[second_ix].wait(Duration::from_secs(30)), 0);
    eprintln!(
        "after SIGTERM of {second}: {third} took the lease in {moved:?} (renew {RENEW_MS} ms)"
    );
    assert!(third != first && third != second);
    assert!(
        moved <= Duration::from_millis(RENEW_MS + 1500),
        "moved in {moved:?}, want ≤ one renew interval (+1.5 s for polling and scheduling)"
    );

    // Nothing lost: every change written so far is in some worker's file.
    let total = 300 + plan[..25].iter().map(|(_, c)| c.len()).sum::<usize>();
    wait_for("every change", Duration::from_secs(60), || {
        (delivered(&files).len() >= total).then_some(())
    });
    assert_eq!(delivered(&files).len(), total);
    let third_ix = names.iter().position(|n| *n == third).unwrap();
    assert_eq!(workers[third_ix].stop(Duration::from_secs(30)), 0);
}
