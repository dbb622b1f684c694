//! Chaos against the local servers: three workers (Kinesis source → Kinesis sink, exactly-once,
//! on kinesalite, the lease table on moto) with changes flowing, while one dependency fails for a
//! while: the lease table's server paused 60 s, the source's server stopped 60 s, the sink's
//! server stopped 60 s, the source black-holed past the operation timeout. The shared servers
//! are never touched: each dependency is reached through its own fault proxy
//! (tests/common/fault_proxy.rs), and the fault is injected there. Every process stays up,
//! /readyz says degraded naming the cause within the threshold and ready again after, and the
//! crash harness' verifier finds nothing lost, duplicated or out of order.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::fault_proxy::FaultProxy;
use common::harness::{self, Fleet};
use common::*;

const IDS: [&str; 3] = ["w1", "w2", "w3"];
/// Short AWS timeouts, so that a black hole is noticed; every connector's `aws` table inherits
/// them from `[aws]`.
const TIMEOUTS: &str =
    "connect_timeout_ms = 1000\nattempt_timeout_ms = 2000\noperation_timeout_ms = 5000\n";
/// /readyz names the cause within about 10 s; the assertion allows for a loaded machine.
const DEGRADED_WITHIN: Duration = Duration::from_secs(20);
/// After the fault ends, every worker is ready again within this.
const READY_AGAIN_WITHIN: Duration = Duration::from_secs(45);
/// After the fault ends, every version written has arrived within this.
const DELIVERED_WITHIN: Duration = Duration::from_secs(90);
/// A new version of every key is written this often while the fault lasts.
const WRITE_EVERY: Duration = Duration::from_secs(3);

/// Which dependency fails.
#[derive(Clone, Copy, Debug)]
enum Dependency {
    LeaseTable,
    Source,
    Sink,
}

/// How its server fails.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Connections are accepted and nothing answers (a SIGSTOPped server).
    Paused,
    /// The port refuses connections and open ones are closed; then it listens again.
    Stopped,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_tables_server_paused_for_60_s() {
    chaos(Dependency::LeaseTable, Fault::Paused, 60, "lease").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sources_server_stopped_for_60_s_then_started_again() {
    chaos(Dependency::Source, Fault::Stopped, 60, "source").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sinks_server_stopped_for_60_s_then_started_again() {
    chaos(Dependency::Sink, Fault::Stopped, 60, "sink").await;
}

/// Black-holed for four times the operation timeout (5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_black_holed_past_the_operation_timeout() {
    chaos(Dependency::Source, Fault::Paused, 20, "source").await;
}

/// The workers' proxies: the lease table (`[aws]`), the source and the sink.
struct Proxies {
    leases: FaultProxy,
    source: FaultProxy,
    sink: FaultProxy,
}

impl Proxies {
    fn of(&self, d: Dependency) -> &FaultProxy {
        match d {
            Dependency::LeaseTable => &self.leases,
            Dependency::Source => &self.source,
            Dependency::Sink => &self.sink,
        }
    }
}

/// Worker `id`'s configuration: the crash harness' Kinesis worker with the short timeouts and a
/// Kinesis sink, every dependency through its proxy.
fn config(
    id: &str,
    port: u16,
    urls: &[String; 3],
    stream: &str,
    leases: &str,
    target: &str,
) -> String {
    let [lease_url, source_url, sink_url] = urls;
    let worker =
        harness::kinesis_raw_worker(id, "chaos", lease_url, source_url, stream, leases, port)
            .replacen("[aws]\n", &format!("[aws]\n{TIMEOUTS}"), 1);
    assert!(worker.contains(TIMEOUTS), "{worker}");
    worker
        + &format!(
            r#"[connectors.sink]
type = "kinesis"
stream = "{target}"
max_records = 400
max_interval_ms = 500
[connectors.sink.aws]
endpoint_url = "{sink_url}"
"#
        )
}

/// What the workers' /readyz said, as it changed, timed from the start of the fault.
struct Readiness {
    ports: BTreeMap<String, u16>,
    fault_started: Instant,
    last: BTreeMap<String, Option<(u16, String)>>,
    /// The first 503 naming the cause: (seconds into the fault, worker, body).
    degraded: Option<(f64, String, String)>,
    cause: &'static str,
}

impl Readiness {
    fn new(ports: &BTreeMap<String, u16>, cause: &'static str) -> Self {
        Readiness {
            ports: ports.clone(),
            fault_started: Instant::now(),
            last: BTreeMap::new(),
            degraded: None,
            cause,
        }
    }

    fn at(&self) -> f64 {
        self.fault_started.elapsed().as_secs_f64()
    }

    /// Asks every worker once; prints what changed. True when every one says 200.
    fn poll(&mut self) -> bool {
        let mut all_ready = true;
        for (id, port) in &self.ports {
            let now = http_get(*port, "/readyz").map(|(s, b)| (s, b.trim().to_string()));
            all_ready &= matches!(now, Some((200, _)));
            if let Some((503, body)) = &now {
                let lower = body.to_lowercase();
                if self.degraded.is_none()
                    && lower.contains("degraded")
                    && lower.contains(self.cause)
                {
                    self.degraded = Some((self.at(), id.clone(), body.clone()));
                }
            }
            if self.last.get(id) != Some(&now) {
                match &now {
                    Some((status, body)) => {
                        eprintln!("[{:+6.1} s] {id} /readyz {status}: {body}", self.at())
                    }
                    None => eprintln!("[{:+6.1} s] {id} /readyz: no answer", self.at()),
                }
                self.last.insert(id.clone(), now);
            }
        }
        all_ready
    }
}

/// The verdict over the target stream for `version` of every key.
async fn verdict(
    k: &aws_sdk_kinesis::Client,
    target: &str,
    keys: &[String],
    version: u64,
) -> (harness::Verdict, usize) {
    let expected: BTreeMap<String, u64> = keys.iter().map(|key| (key.clone(), version)).collect();
    let records = harness::read_stream(k, target).await;
    let v = harness::verify(&expected, &harness::kinesis_deliveries(&records));
    (v, records.len())
}

/// Workers that ended by themselves (each is a failure of the acceptance), with their logs'
/// last lines; /readyz is no longer asked of them.
fn exits(fleet: &mut Fleet, ready: &mut Readiness, when: &str, problems: &mut Vec<String>) {
    for id in IDS {
        if !fleet.workers.contains_key(id) {
            continue;
        }
        let log = fleet.workers[id].log.clone();
        if let Some(code) = fleet.exited(id) {
            ready.ports.remove(id);
            problems.push(format!(
                "worker {id} exited with status {code} {when}; its log ends:\n{}",
                tail(&log, 20)
            ));
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Three workers with changes flowing while `dependency`'s server has `fault` for
/// `outage_secs`; /readyz must name `cause` (lower case) while it lasts.
async fn chaos(dependency: Dependency, fault: Fault, outage_secs: u64, cause: &'static str) {
    let outage = Duration::from_secs(outage_secs);
    let started = Instant::now();
    let (aws, kinesis) = (aws_endpoint(), kinesis_endpoint());
    let k = harness::kinesis_client(&kinesis).await;
    let proxies = Proxies {
        leases: FaultProxy::start(&aws).await,
        source: FaultProxy::start(&kinesis).await,
        sink: FaultProxy::start(&kinesis).await,
    };
    let urls = [
        proxies.leases.url(),
        proxies.source.url(),
        proxies.sink.url(),
    ];
    let (stream, target, leases) = (
        unique("chaos-src"),
        unique("chaos-dst"),
        unique("chaos-leases"),
    );
    harness::create_stream(&k, &stream, 4).await;
    harness::create_stream(&k, &target, 4).await;
    // The workers' logs stay when the test fails; they are removed at the end when it passes.
    let dir = tempfile::Builder::new()
        .prefix("chaos")
        .disable_cleanup(true)
        .tempdir()
        .unwrap();
    eprintln!(
        "{dependency:?} {fault:?} for {outage:?}; worker logs in {}",
        dir.path().display()
    );
    let ports: BTreeMap<String, u16> = IDS.iter().map(|id| (id.to_string(), free_port())).collect();
    let (p, s, l, t) = (
        ports.clone(),
        stream.clone(),
        leases.clone(),
        target.clone(),
    );
    let mut fleet = Fleet::new(dir.path(), move |id| config(id, p[id], &urls, &s, &l, &t));
    for id in IDS {
        fleet.start(id);
    }
    let keys: Vec<String> = (0..100).map(|i| format!("key-{i:03}")).collect();
    let mut problems = Vec::new();

    // Before: two versions delivered, every worker ready.
    let mut version = 0;
    for _ in 0..2 {
        version += 1;
        harness::put_version(&k, &stream, &keys, version).await;
    }
    let before = Instant::now();
    let mut r = Readiness::new(&ports, cause);
    loop {
        let (v, _) = verdict(&k, &target, &keys, version).await;
        if v.lost == 0 && r.poll() {
            break;
        }
        exits(&mut fleet, &mut r, "before the fault", &mut problems);
        assert!(
            problems.is_empty() && before.elapsed() < Duration::from_secs(60),
            "not delivering and ready before the fault after {:?}: {v}\n{}",
            before.elapsed(),
            problems.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "before the fault: versions 1..={version} delivered, all ready, after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The fault, changes flowing.
    let proxy = proxies.of(dependency);
    match fault {
        Fault::Paused => proxy.pause(),
        Fault::Stopped => proxy.stop().await,
    }
    let mut ready = Readiness::new(&ports, cause);
    let mut next_write = Instant::now();
    while ready.fault_started.elapsed() < outage {
        if Instant::now() >= next_write {
            version += 1;
            harness::put_version(&k, &stream, &keys, version).await;
            next_write += WRITE_EVERY;
        }
        ready.poll();
        exits(&mut fleet, &mut ready, "during the fault", &mut problems);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    match fault {
        Fault::Paused => proxy.resume(),
        Fault::Stopped => proxy.start_again(),
    }
    let ended = Instant::now();
    eprintln!("[{:+6.1} s] the fault ends", ready.at());
    match &ready.degraded {
        Some((at, id, body)) => {
            eprintln!("first /readyz naming the cause: {id} at {at:.1} s into the fault: {body}");
            if *at > DEGRADED_WITHIN.as_secs_f64() {
                problems.push(format!(
                    "/readyz named the cause ({cause:?}) only {at:.1} s into the fault \
                     (expected within {DEGRADED_WITHIN:?}): {id}: {body}"
                ));
            }
        }
        None => problems.push(format!(
            "no worker's /readyz said 503 degraded naming {cause:?} during the {outage:?} fault"
        )),
    }

    // After: more versions, every worker ready again, everything delivered.
    let mut ready_again = None;
    let mut delivered = None;
    let mut after_writes = 0;
    let mut last = None;
    while ended.elapsed() < DELIVERED_WITHIN.max(READY_AGAIN_WITHIN) {
        if after_writes < 3 && Instant::now() >= next_write {
            version += 1;
            after_writes += 1;
            harness::put_version(&k, &stream, &keys, version).await;
            next_write = Instant::now() + WRITE_EVERY;
        }
        if ready.poll() && ready_again.is_none() {
            ready_again = Some(ended.elapsed());
        }
        exits(&mut fleet, &mut ready, "after the fault", &mut problems);
        if after_writes == 3 && delivered.is_none() {
            let (v, n) = verdict(&k, &target, &keys, version).await;
            if v.lost == 0 {
                delivered = Some(ended.elapsed());
            }
            last = Some((v, n));
        }
        if ready_again.is_some() && delivered.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    match ready_again {
        Some(d) => {
            eprintln!(
                "every running worker ready again {:.1} s after the fault",
                d.as_secs_f64()
            );
            if d > READY_AGAIN_WITHIN {
                problems.push(format!("ready again only after {d:?}"));
            }
        }
        None => problems.push(format!(
            "not every worker said 200 within {:?} after the fault: {:?}",
            ended.elapsed(),
            ready.last
        )),
    }
    match delivered {
        Some(d) => eprintln!(
            "every version (1..={version}) delivered {:.1} s after the fault",
            d.as_secs_f64()
        ),
        None => problems.push(format!(
            "delivery did not resume: after {:?}: {}",
            ended.elapsed(),
            last.map(|(v, _)| v.to_string()).unwrap_or_default()
        )),
    }

    exits(&mut fleet, &mut ready, "at the end", &mut problems);
    let all_up = fleet.workers.len() == IDS.len();
    fleet.stop_all();
    let (v, n) = verdict(&k, &target, &keys, version).await;
    eprintln!(
        "{dependency:?} {fault:?} {outage:?}: verifier over the target stream ({n} records, \
         {version} versions of {} keys): {v}; wall time {:.1} s",
        keys.len(),
        started.elapsed().as_secs_f64()
    );
    for p in &problems {
        eprintln!("FAILED: {p}");
    }
    assert_eq!((v.lost, v.duplicated, v.out_of_order), (0, 0, 0), "{v}");
    assert!(all_up, "every worker stayed up: {}", problems.join("\n"));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let _ = std::fs::remove_dir_all(dir.path());
}
