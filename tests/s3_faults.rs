//! The S3 sink under faults: a worker paused (SIGSTOP) past the failover time and resumed after
//! another took its lease writes no duplicate; S3 unreachable for 60 s loses nothing, keeps
//! memory bounded, and the run completes once it is back.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::harness::{self, Fleet};
use common::*;

#[allow(clippy::too_many_arguments)]
fn config(
    kinesis: &str,
    aws: &str,
    s3: &str,
    stream: &str,
    leases: &str,
    bucket: &str,
    port: u16,
    id: &str,
) -> String {
    harness::kinesis_raw_worker(id, "s3faults", aws, kinesis, stream, leases, port)
        + &format!(
            r#"[connectors.sink]
type = "s3"
bucket = "{bucket}"
max_records = 100
max_interval_ms = 300
force_path_style = true
[connectors.sink.aws]
endpoint_url = "{s3}"
"#
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
    out.items().first()?.get("leaseOwner")?.as_s().ok().cloned()
}

fn signal(pid: u32, sig: &str) {
    assert!(Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success());
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_resumed_after_losing_its_lease_writes_no_duplicate() {
    let (aws, kinesis) = (aws_endpoint(), kinesis_endpoint());
    let k = harness::kinesis_client(&kinesis).await;
    let s3 = harness::s3_client(&aws).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk_config(&aws).await);
    let (stream, leases, bucket) = (
        unique("pause"),
        unique("pause-leases"),
        unique("pause").to_lowercase(),
    );
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    harness::create_stream(&k, &stream, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let (kk, a, s, l, b) = (
        kinesis.clone(),
        aws.clone(),
        stream.clone(),
        leases.clone(),
        bucket.clone(),
    );
    let mut fleet = Fleet::new(dir.path(), move |id| {
        config(&kk, &a, &a, &s, &l, &b, free_port(), id)
    });
    fleet.start("a");
    fleet.start("b");
    let keys: Vec<String> = (0..100).map(|i| format!("key-{i:03}")).collect();
    let versions = 30u64;
    let mut paused: Option<(String, u32)> = None;
    for v in 1..=versions {
        harness::put_version(&k, &stream, &keys, v).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        if v == 5 {
            // Pause the holder mid-stream, past the failover time (on a loaded machine the
            // first lease may take a few seconds to be taken).
            let mut holder = owner(&ddb, &leases).await;
            let waiting = std::time::Instant::now();
            while holder.is_none() && waiting.elapsed() < Duration::from_secs(30) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                holder = owner(&ddb, &leases).await;
            }
            let holder = holder.expect("a holder within 30 s");
            let pid = fleet.workers[&holder].child.id();
            signal(pid, "STOP");
            paused = Some((holder, pid));
        }
        if v == 25 {
            let (holder, pid) = paused.clone().unwrap();
            // Paused past the failover time: wait until another worker has taken the lease
            // (fast puts can bring version 25 sooner than failover + a renew interval).
            let mut now = owner(&ddb, &leases).await;
            let waiting = std::time::Instant::now();
            while now.as_deref() == Some(holder.as_str())
                && waiting.elapsed() < Duration::from_secs(15)
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
                now = owner(&ddb, &leases).await;
            }
            assert!(
                now.is_some() && now.as_deref() != Some(holder.as_str()),
                "the lease moved while {holder} was paused: {now:?}"
            );
            signal(pid, "CONT");
        }
    }
    let expected: BTreeMap<String, u64> = keys.iter().map(|k| (k.clone(), versions)).collect();
    let started = Instant::now();
    while harness::verify(&expected, &harness::read_s3_objects(&s3, &bucket).await.0).lost > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not all delivered"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Give the resumed worker time to do whatever it would still do.
    tokio::time::sleep(Duration::from_secs(3)).await;
    fleet.stop_all();
    let v = harness::verify(&expected, &harness::read_s3_objects(&s3, &bucket).await.0);
    eprintln!("after SIGSTOP/SIGCONT: {v}");
    assert_eq!((v.lost, v.duplicated, v.out_of_order), (0, 0, 0), "{v}");
}

/// A private moto for S3, so that pausing it stops nobody else's tests.
struct PrivateMoto {
    child: Child,
    url: String,
}

impl PrivateMoto {
    fn start() -> Self {
        let port = free_port();
        let bin = format!("{}/.venv/bin/moto_server", env!("CARGO_MANIFEST_DIR"));
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{bin}: {e} (run scripts/dev-servers.sh start first)"));
        let url = format!("http://127.0.0.1:{port}");
        wait_for("the private moto server", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        PrivateMoto { child, url }
    }
}

impl Drop for PrivateMoto {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_unreachable_for_60_seconds_loses_nothing_and_keeps_memory_bounded() {
    let (aws, kinesis) = (aws_endpoint(), kinesis_endpoint());
    let moto = PrivateMoto::start();
    let k = harness::kinesis_client(&kinesis).await;
    let s3 = harness::s3_client(&moto.url).await;
    let (stream, leases, bucket) = (
        unique("outage"),
        unique("outage-leases"),
        unique("outage").to_lowercase(),
    );
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    harness::create_stream(&k, &stream, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = dir.path().join("w.toml");
    std::fs::write(
        &cfg,
        config(
            &kinesis, &aws, &moto.url, &stream, &leases, &bucket, port, "w",
        ),
    )
    .unwrap();
    let mut worker = Running::start(&cfg, &dir.path().join("w.log"));
    let keys: Vec<String> = (0..200).map(|i| format!("key-{i:03}")).collect();
    harness::put_version(&k, &stream, &keys, 1).await;
    wait_for("the first objects", Duration::from_secs(30), || {
        let (_, m) = http_get(port, "/metrics")?;
        (metric_value(
            &m,
            "shardbridge_sink_objects_written_total",
            "connector=\"s3faults\"",
        )? > 0.0)
            .then_some(())
    });
    let rss_before = rss_kib(worker.child.id());

    signal(moto.child.id(), "STOP");
    let outage = Instant::now();
    let mut v = 1;
    let mut degraded_seen = false;
    let mut rss_max = rss_before;
    while outage.elapsed() < Duration::from_secs(60) {
        v += 1;
        harness::put_version(&k, &stream, &keys, v).await;
        if let Some((503, body)) = http_get(port, "/readyz") {
            degraded_seen |= body.contains("degraded");
        }
        rss_max = rss_max.max(rss_kib(worker.child.id()));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    signal(moto.child.id(), "CONT");
    eprintln!("S3 paused for {:?} while {v} versions of {} keys were written; worker RSS {rss_before} KiB before, at most {rss_max} KiB during", outage.elapsed(), keys.len());
    assert!(degraded_seen, "/readyz said the sink was down");
    assert!(
        rss_max < rss_before + 64 * 1024,
        "memory grew from {rss_before} to {rss_max} KiB"
    );

    let expected: BTreeMap<String, u64> = keys.iter().map(|k| (k.clone(), v)).collect();
    let started = Instant::now();
    while harness::verify(&expected, &harness::read_s3_objects(&s3, &bucket).await.0).lost > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not all delivered after the outage"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        worker.stop(Duration::from_secs(60)),
        0,
        "{}",
        worker.log_text()
    );
    let verdict = harness::verify(&expected, &harness::read_s3_objects(&s3, &bucket).await.0);
    eprintln!("after the outage: {verdict}");
    assert_eq!(
        (verdict.lost, verdict.duplicated, verdict.out_of_order),
        (0, 0, 0),
        "{verdict}"
    );
    assert_eq!(http_get(port, "/readyz"), None, "stopped");
}
