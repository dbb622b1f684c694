//! The crash harness: a fleet of shardbridge processes against the local servers, a workload of
//! versioned writes per key, resharding and SIGKILLs while it runs, and a verifier that reports
//! lost, duplicated and out-of-order records per key. Sink issues reuse it with their sinks.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, Shard, StreamStatus};
use base64::Engine;

use super::Running;

/// One delivered record: its key and version, in delivery order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub key: String,
    pub version: u64,
}

/// What the verifier found. `expected` is the last version written per key (versions 1..=n).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub delivered: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub out_of_order: usize,
    /// A few examples per problem, for the failure message.
    pub examples: Vec<String>,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} delivered: {} lost, {} duplicated, {} out of order",
            self.delivered, self.lost, self.duplicated, self.out_of_order
        )?;
        for e in &self.examples {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

/// Checks deliveries (in delivery order) against the versions written per key.
pub fn verify(expected: &BTreeMap<String, u64>, deliveries: &[Delivery]) -> Verdict {
    let mut v = Verdict {
        delivered: deliveries.len(),
        ..Verdict::default()
    };
    let mut first_seen: HashMap<&str, Vec<u64>> = HashMap::new();
    let mut count: HashMap<(&str, u64), usize> = HashMap::new();
    for d in deliveries {
        let n = count.entry((&d.key, d.version)).or_default();
        *n += 1;
        if *n == 1 {
            first_seen.entry(&d.key).or_default().push(d.version);
        } else {
            v.duplicated += 1;
        }
    }
    for (key, last) in expected {
        let seen = first_seen.get(key.as_str()).cloned().unwrap_or_default();
        let missing = (1..=*last)
            .filter(|ver| !count.contains_key(&(key.as_str(), *ver)))
            .count();
        if missing > 0 {
            v.lost += missing;
            if v.examples.len() < 10 {
                v.examples
                    .push(format!("{key}: {missing} of {last} versions lost"));
            }
        }
        for w in seen.windows(2) {
            if w[1] < w[0] {
                v.out_of_order += 1;
                if v.examples.len() < 10 {
                    v.examples
                        .push(format!("{key}: version {} delivered before {}", w[0], w[1]));
                }
            }
        }
    }
    v
}

/// Deliveries in a file of the `raw` format whose data is `{"key":…,"version":…}`.
pub fn read_raw(path: &Path) -> Vec<Delivery> {
    super::read_lines(path)
        .iter()
        .map(|l| {
            let data = base64::engine::general_purpose::STANDARD
                .decode(l["data"].as_str().expect("data"))
                .expect("base64");
            let v: serde_json::Value = serde_json::from_slice(&data).expect("JSON data");
            Delivery {
                key: v["key"].as_str().unwrap().to_string(),
                version: v["version"].as_u64().unwrap(),
            }
        })
        .collect()
}

pub async fn kinesis_client(endpoint: &str) -> aws_sdk_kinesis::Client {
    aws_sdk_kinesis::Client::new(&super::sdk_config(endpoint).await)
}

pub async fn wait_active(k: &aws_sdk_kinesis::Client, stream: &str) {
    for _ in 0..200 {
        let d = k
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .unwrap();
        if d.stream_description_summary().unwrap().stream_status() == &StreamStatus::Active {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("stream {stream} did not become ACTIVE");
}

pub async fn create_stream(k: &aws_sdk_kinesis::Client, stream: &str, shards: i32) {
    k.create_stream()
        .stream_name(stream)
        .shard_count(shards)
        .send()
        .await
        .unwrap();
    wait_active(k, stream).await;
}

async fn open_shards(k: &aws_sdk_kinesis::Client, stream: &str) -> Vec<Shard> {
    let out = k.list_shards().stream_name(stream).send().await.unwrap();
    let mut open: Vec<Shard> = out
        .shards()
        .iter()
        .filter(|s| {
            s.sequence_number_range()
                .and_then(|r| r.ending_sequence_number())
                .is_none()
        })
        .cloned()
        .collect();
    open.sort_by_key(|s| hash(s.hash_key_range().unwrap().starting_hash_key()));
    open
}

fn hash(s: &str) -> u128 {
    s.parse().unwrap()
}

/// Ids of the stream's closed shards.
pub async fn closed_shards(k: &aws_sdk_kinesis::Client, stream: &str) -> Vec<String> {
    let out = k.list_shards().stream_name(stream).send().await.unwrap();
    out.shards()
        .iter()
        .filter(|s| {
            s.sequence_number_range()
                .and_then(|r| r.ending_sequence_number())
                .is_some()
        })
        .map(|s| s.shard_id().to_string())
        .collect()
}

/// Splits the widest open shard at the middle of its hash range.
pub async fn split(k: &aws_sdk_kinesis::Client, stream: &str) -> String {
    let shards = open_shards(k, stream).await;
    let widest = shards
        .iter()
        .max_by_key(|s| {
            let r = s.hash_key_range().unwrap();
            hash(r.ending_hash_key()) - hash(r.starting_hash_key())
        })
        .unwrap();
    let r = widest.hash_key_range().unwrap();
    let (lo, hi) = (hash(r.starting_hash_key()), hash(r.ending_hash_key()));
    let mid = lo + (hi - lo) / 2 + 1;
    k.split_shard()
        .stream_name(stream)
        .shard_to_split(widest.shard_id())
        .new_starting_hash_key(mid.to_string())
        .send()
        .await
        .unwrap();
    wait_active(k, stream).await;
    widest.shard_id().to_string()
}

/// Merges the first two adjacent open shards.
pub async fn merge(k: &aws_sdk_kinesis::Client, stream: &str) -> (String, String) {
    let shards = open_shards(k, stream).await;
    let pair = shards
        .windows(2)
        .find(|w| {
            hash(w[0].hash_key_range().unwrap().ending_hash_key()) + 1
                == hash(w[1].hash_key_range().unwrap().starting_hash_key())
        })
        .expect("two adjacent open shards");
    k.merge_shards()
        .stream_name(stream)
        .shard_to_merge(pair[0].shard_id())
        .adjacent_shard_to_merge(pair[1].shard_id())
        .send()
        .await
        .unwrap();
    wait_active(k, stream).await;
    (
        pair[0].shard_id().to_string(),
        pair[1].shard_id().to_string(),
    )
}

/// Writes `version` of every key (partition key = the key), 500 records per PutRecords call,
/// retrying what failed.
pub async fn put_version(k: &aws_sdk_kinesis::Client, stream: &str, keys: &[String], version: u64) {
    for chunk in keys.chunks(500) {
        let mut entries: Vec<PutRecordsRequestEntry> = chunk
            .iter()
            .map(|key| {
                let data = serde_json::json!({"key": key, "version": version}).to_string();
                PutRecordsRequestEntry::builder()
                    .partition_key(key)
                    .data(Blob::new(data))
                    .build()
                    .unwrap()
            })
            .collect();
        for _ in 0..20 {
            let out = k
                .put_records()
                .stream_name(stream)
                .set_records(Some(entries.clone()))
                .send()
                .await
                .unwrap();
            if out.failed_record_count().unwrap_or(0) == 0 {
                entries.clear();
                break;
            }
            entries = entries
                .into_iter()
                .zip(out.records())
                .filter(|(_, r)| r.error_code().is_some())
                .map(|(e, _)| e)
                .collect();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(entries.is_empty(), "PutRecords kept failing");
    }
}

/// A fleet of worker processes sharing one connector configuration (one file per worker id).
pub struct Fleet {
    pub dir: PathBuf,
    pub config: Box<dyn Fn(&str) -> String + Send>,
    pub workers: BTreeMap<String, Running>,
    pub restarts: usize,
}

impl Fleet {
    pub fn new(dir: &Path, config: impl Fn(&str) -> String + Send + 'static) -> Self {
        Fleet {
            dir: dir.to_path_buf(),
            config: Box::new(config),
            workers: BTreeMap::new(),
            restarts: 0,
        }
    }

    pub fn start(&mut self, id: &str) {
        self.start_with_env(id, &[]);
    }

    pub fn start_with_env(&mut self, id: &str, env: &[(&str, &str)]) {
        let cfg = self.dir.join(format!("{id}.toml"));
        std::fs::write(&cfg, (self.config)(id)).unwrap();
        let log = self.dir.join(format!("{id}.{}.log", self.restarts));
        self.restarts += 1;
        self.workers
            .insert(id.to_string(), Running::start_with_env(&cfg, &log, env));
    }

    /// The exit status of a worker that has ended by itself, if it has.
    pub fn exited(&mut self, id: &str) -> Option<i32> {
        let w = self.workers.get_mut(id)?;
        let status = w.child.try_wait().ok()??;
        self.workers.remove(id);
        Some(status.code().unwrap_or(-1))
    }

    pub fn kill(&mut self, id: &str) {
        if let Some(mut w) = self.workers.remove(id) {
            w.signal("KILL");
            w.wait(Duration::from_secs(10));
        }
    }

    /// SIGTERM to every worker; panics unless each exits 0.
    pub fn stop_all(&mut self) {
        for w in self.workers.values() {
            w.signal("TERM");
        }
        for (id, mut w) in std::mem::take(&mut self.workers) {
            let code = w.wait(Duration::from_secs(60));
            assert_eq!(code, 0, "worker {id} exit status; log:\n{}", w.log_text());
        }
    }
}

pub async fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let sdk = super::sdk_config(endpoint).await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    )
}

/// Every record of every (gzip) object of `raw` lines in the bucket, objects in sequence order
/// (their keys end in `first-last`, zero-padded), and the number of objects.
pub async fn read_s3_objects(s3: &aws_sdk_s3::Client, bucket: &str) -> (Vec<Delivery>, usize) {
    use std::io::Read;
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let out = s3
            .list_objects_v2()
            .bucket(bucket)
            .set_continuation_token(token.take())
            .send()
            .await
            .unwrap();
        keys.extend(
            out.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
        match out.next_continuation_token() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    keys.sort_by_key(|k| k.rsplit('/').next().unwrap_or_default().to_string());
    let mut deliveries = Vec::new();
    for key in &keys {
        let body = s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        let bytes = body.body.collect().await.unwrap().into_bytes();
        let mut text = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .unwrap();
        let path = std::env::temp_dir().join(super::unique("s3obj"));
        std::fs::write(&path, &text).unwrap();
        deliveries.extend(read_raw(&path));
        let _ = std::fs::remove_file(&path);
    }
    (deliveries, keys.len())
}

/// Every record of a Kinesis stream as (shard, partition key, data), read from the trim horizon,
/// parents' shards before their children's, each shard in order.
pub async fn read_stream(
    k: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Vec<(String, String, Vec<u8>)> {
    use aws_sdk_kinesis::types::ShardIteratorType;
    let out = k.list_shards().stream_name(stream).send().await.unwrap();
    let mut shards: Vec<Shard> = out.shards().to_vec();
    // Creation order is parent before child (ids grow); the depth makes it explicit.
    let parent_of: HashMap<String, Option<String>> = shards
        .iter()
        .map(|s| {
            (
                s.shard_id().to_string(),
                s.parent_shard_id().map(str::to_string),
            )
        })
        .collect();
    let depth = |id: &str| {
        let mut d = 0;
        let mut cur = parent_of.get(id).cloned().flatten();
        while let Some(p) = cur {
            d += 1;
            cur = parent_of.get(&p).cloned().flatten();
        }
        d
    };
    shards.sort_by_key(|s| (depth(s.shard_id()), s.shard_id().to_string()));
    let mut records = Vec::new();
    for shard in shards {
        let mut it = k
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator()
            .map(str::to_string);
        while let Some(token) = it.take() {
            let page = k
                .get_records()
                .shard_iterator(token)
                .limit(10_000)
                .send()
                .await
                .unwrap();
            for r in page.records() {
                records.push((
                    shard.shard_id().to_string(),
                    r.partition_key().unwrap_or_default().to_string(),
                    r.data().as_ref().to_vec(),
                ));
            }
            if !page.records().is_empty() {
                it = page.next_shard_iterator().map(str::to_string);
            }
        }
    }
    records
}

/// The crash harness' records (`{"key","version"}` put unchanged by a `raw` stream-to-stream
/// connector) as deliveries, in the target's order.
pub fn kinesis_deliveries(records: &[(String, String, Vec<u8>)]) -> Vec<Delivery> {
    records
        .iter()
        .map(|(_, pk, data)| {
            let v: serde_json::Value = serde_json::from_slice(data).unwrap();
            let key = v["key"].as_str().unwrap().to_string();
            assert_eq!(&key, pk, "the source's partition key is kept");
            Delivery {
                key,
                version: v["version"].as_u64().unwrap(),
            }
        })
        .collect()
}

/// Every partition of a Kafka topic read to its end by the raw-batch verifier (off the runtime).
pub async fn read_kafka(bootstrap: &str, topic: &str, partitions: i32) -> super::kafka::TopicRead {
    let (b, t) = (bootstrap.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || super::kafka::read_topic(&b, &t, partitions))
        .await
        .unwrap()
}

/// The crash harness' records among a topic's committed ones, as deliveries: a key's records
/// are all in one partition, in offset order, under the source's partition key.
pub fn kafka_deliveries(read: &super::kafka::TopicRead) -> Vec<Delivery> {
    read.committed
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
            let key = v["key"].as_str().unwrap().to_string();
            assert_eq!(
                r.key.as_deref(),
                Some(key.as_bytes()),
                "the source's partition key is the record key"
            );
            Delivery {
                key,
                version: v["version"].as_u64().unwrap(),
            }
        })
        .collect()
}

/// What every crash test's worker shares: worker `id` listening on `port`, the lease table and `[aws]`
/// on `aws`, one connector `name` reading the Kinesis `stream` on `kinesis` in the `raw` format,
/// under fast lease timings (failover 3 s, renew 1 s, margin 0.5 s, shard sync 5 s). The caller
/// appends its `[connectors.sink]` table.
pub fn kinesis_raw_worker(
    id: &str,
    name: &str,
    aws: &str,
    kinesis: &str,
    stream: &str,
    leases: &str,
    port: u16,
) -> String {
    format!(
        r#"
[worker]
id = "{id}"
listen = "127.0.0.1:{port}"
[aws]
region = "us-east-1"
endpoint_url = "{aws}"
[[connectors]]
name = "{name}"
[connectors.source]
type = "kinesis"
stream = "{stream}"
poll_idle_ms = 50
[connectors.source.aws]
endpoint_url = "{kinesis}"
[connectors.leases]
table = "{leases}"
failover_ms = 3000
renew_interval_ms = 1000
safety_margin_ms = 500
shard_sync_interval_ms = 5000
[connectors.format]
type = "raw"
"#
    )
}

/// How many times `needle` occurs in the workers' logs in `dir`.
pub fn logs_containing(dir: &Path, needle: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .matches(needle)
                .count()
        })
        .sum()
}

/// Whether a worker in `dir` aborted itself at the crash point `point`.
pub fn fault_hit(dir: &Path, point: &str) -> bool {
    logs_containing(dir, &format!("fault injection: aborting at {point}")) > 0
}

/// The exactly-once crash harness' workload: versions 1, 2, … of every key into `stream`
/// (resharded: splits after versions 2 and 4, a merge after 6), with worker `ids[i]` restarted
/// armed to abort itself at `faults[i]` after versions 1, 3 and 5, a SIGKILL after version 7 of a
/// worker whose fault already fired, and every worker that aborted restarted unarmed. Goes on
/// past `min_versions` while a fault has not fired (its worker needs a batch of its own).
/// Returns the number of versions written.
pub async fn write_with_faults(
    fleet: &mut Fleet,
    k: &aws_sdk_kinesis::Client,
    stream: &str,
    keys: &[String],
    ids: [&str; 3],
    faults: [&str; 3],
    min_versions: u64,
) -> u64 {
    let dir = fleet.dir.clone();
    let hit = |p: &str| fault_hit(&dir, p);
    let mut versions = 0u64;
    while versions < min_versions || !faults.iter().all(|p| hit(p)) {
        versions += 1;
        let v = versions;
        // Generous: on a loaded machine an armed worker may need a while to get a batch of its own.
        assert!(v <= 160, "faults hit: {:?}", faults.map(|p| (p, hit(p))));
        put_version(k, stream, keys, v).await;
        match v {
            2 | 4 => drop(split(k, stream).await),
            6 => drop(merge(k, stream).await),
            _ => {}
        }
        if let Some(i) = [1, 3, 5].iter().position(|x| *x == v) {
            fleet.kill(ids[i]);
            fleet.start_with_env(ids[i], &[("SHARDBRIDGE_FAULT", faults[i])]);
        }
        // A SIGKILL at a random moment, of a worker no longer armed.
        if v == 7 {
            if let Some(i) = (0..3).find(|&i| hit(faults[i])) {
                fleet.kill(ids[i]);
                fleet.start(ids[i]);
            }
        }
        restart_exited(fleet, ids);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    versions
}

/// Restarts, unarmed, every worker of `ids` that has ended by itself.
pub fn restart_exited(fleet: &mut Fleet, ids: [&str; 3]) {
    for id in ids {
        if fleet.exited(id).is_some() {
            fleet.start(id);
        }
    }
}
