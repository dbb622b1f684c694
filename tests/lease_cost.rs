//! What holding 100 leases costs in lease-table calls per worker-minute, with KCL's default
//! timings (failover 10 s, renew every 3.3 s): measured from the worker's own metrics on a
//! 100-shard Kinesis stream (kinesalite) with the lease table on moto.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;

fn calls_by_operation(port: u16) -> BTreeMap<String, f64> {
    let (_, text) = http_get(port, "/metrics").expect("/metrics");
    text.lines()
        .filter(|l| {
            l.starts_with("shardbridge_lease_table_calls_total{")
                && l.contains("connector=\"cost\"")
        })
        .filter_map(|l| {
            let op = l
                .split("operation=\"")
                .nth(1)?
                .split('"')
                .next()?
                .to_string();
            let value: f64 = l.rsplit_once(' ')?.1.parse().ok()?;
            Some((op, value))
        })
        .fold(BTreeMap::new(), |mut m, (op, v)| {
            *m.entry(op).or_default() += v;
            m
        })
}

/// Lease-table calls per minute by operation, of one worker holding 100 leases for 30 s with
/// the given `[connectors.leases] renewal`.
async fn calls_per_minute_holding_100_leases(renewal: &str) -> BTreeMap<String, f64> {
    let aws = aws_endpoint();
    let kinesis = kinesis_endpoint();
    let k = common::harness::kinesis_client(&kinesis).await;
    let stream = unique("cost");
    common::harness::create_stream(&k, &stream, 100).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!(
        r#"
[worker]
id = "cost-worker"
listen = "127.0.0.1:{port}"
[aws]
region = "us-east-1"
endpoint_url = "{aws}"
[[connectors]]
name = "cost"
[connectors.source]
type = "kinesis"
stream = "{stream}"
poll_idle_ms = 1000
[connectors.source.aws]
endpoint_url = "{kinesis}"
[connectors.leases]
table = "{leases}"
renewal = "{renewal}"
[connectors.format]
type = "raw"
[connectors.sink]
type = "file"
path = "{out}"
"#,
        leases = unique("cost-leases"),
        out = dir.path().join("out.jsonl").display()
    );
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config).unwrap();
    let mut run = Running::start(&path, &dir.path().join("log"));
    wait_for("100 leases held", Duration::from_secs(90), || {
        let (_, text) = http_get(port, "/metrics")?;
        (metric_value(&text, "shardbridge_shards_owned", "connector=\"cost\"")? >= 100.0)
            .then_some(())
    });
    let before = calls_by_operation(port);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let after = calls_by_operation(port);
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let per_minute: BTreeMap<String, f64> = after
        .iter()
        .map(|(op, v)| {
            let d = v - before.get(op).copied().unwrap_or(0.0);
            (op.clone(), d / minutes)
        })
        .collect();
    let total: f64 = per_minute.values().sum();
    eprintln!("lease-table calls per worker-minute holding 100 leases, renewal {renewal}: {total:.0} in all; by operation: {per_minute:?}");
    assert_eq!(run.stop(Duration::from_secs(60)), 0, "{}", run.log_text());
    per_minute
}

fn per_minute(calls: &BTreeMap<String, f64>, op: &str) -> f64 {
    calls.get(op).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_table_calls_per_worker_minute_with_100_leases() {
    let calls = calls_per_minute_holding_100_leases("per_lease").await;
    // Renewals dominate: 100 leases every 3.33 s = 1,800 UpdateItem a minute; a lease scan per
    // renew interval (18) and a shard sync a minute on top. Anything well above is waste.
    let (updates, scans) = (per_minute(&calls, "UpdateItem"), per_minute(&calls, "Scan"));
    assert!(
        (1_500.0..=2_100.0).contains(&updates),
        "UpdateItem per minute: {updates:.0}"
    );
    assert!(scans <= 40.0, "Scan per minute: {scans:.0}");
}

/// Renewal mode heartbeat: one heartbeat row written per renew interval (18 a minute) instead
/// of 100 leases renewed, so at most 1/50 of the per-lease mode's 1,800 writes a minute; and
/// one more scan per renew interval, which confirms the leases are still this worker's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_renewal_writes_a_fiftieth_with_100_leases() {
    let calls = calls_per_minute_holding_100_leases("heartbeat").await;
    let writes: f64 = ["UpdateItem", "PutItem", "DeleteItem"]
        .iter()
        .map(|op| per_minute(&calls, op))
        .sum();
    let scans = per_minute(&calls, "Scan");
    assert!(
        writes <= 1_800.0 / 50.0,
        "writes per minute: {writes:.0} (per-lease renewal: 1,800)"
    );
    assert!(
        writes >= 12.0,
        "the heartbeat is written: {writes:.0} a minute"
    );
    assert!(scans <= 60.0, "Scan per minute: {scans:.0}");
}
