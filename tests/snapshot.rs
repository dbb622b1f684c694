//! The initial snapshot (`[connectors.snapshot]`) against moto: a table's items are delivered
//! before its stream's changes, through a SIGKILL in the middle of the scan, into files
//! (at-least-once: duplicates are recognised by eventID) and into S3 (exactly-once per batch);
//! the scan keeps to its rate limit; `initial_only` delivers the snapshot alone and exits; a
//! connector that already has leases takes no snapshot.
//!
//! What a user checks in the end: replaying the output in order (the snapshot records, then the
//! stream's changes of each item in order) gives the table's final state, item by item.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeValue as Av, PutRequest, StreamViewType, WriteRequest};
use common::harness::{self, Fleet};
use common::workload::{self, Item};
use common::*;
use serde_json::Value;

/// Items in the source table of the kill scenarios.
const ITEMS: usize = 20_000;
const SEGMENTS: usize = 6;
const PAGE_SIZE: usize = 200;
/// How long the kill scenarios' scan should take at its rate limit (the limit is computed from
/// the items' sizes): long enough for a kill to land in the middle of it.
const SCAN_SECONDS: f64 = 15.0;
/// `clock_margin_ms`. moto and the workers read this host's clock, so a small margin is exact;
/// the table is loaded more than this before the snapshot starts, so the stream records of the
/// load must all be skipped.
const MARGIN_MS: i64 = 2_000;
/// Items loaded after the stream was enabled: their stream records, older than T0 -
/// clock_margin_ms, must be skipped (the rest is loaded before, so that reading the stream does
/// not take most of the test's time on moto, about a second per 1,000 records).
const LOADED_WITH_STREAM: usize = 1_000;
const CONNECTOR: &str = "snap";
const WORKERS: [&str; 3] = ["w1", "w2", "w3"];
const SNAPSHOT_SOURCE: &str = "shardbridge:snapshot";
const SNAPSHOT_METRICS: [&str; 5] = [
    "shardbridge_snapshot_items_read_total",
    "shardbridge_snapshot_items_delivered_total",
    "shardbridge_snapshot_segments_done",
    "shardbridge_snapshot_scan_throttles_total",
    "shardbridge_snapshot_read_capacity_units_total",
];

// ---------------------------------------------------------------------------------------------
// Items, their sizes, loading and reading the source table.
// ---------------------------------------------------------------------------------------------

/// How the items of a test look at each version: a pure function, so that any image in the
/// output can be checked against the version it carries.
type Maker = fn(&str, u64) -> Item;

fn filler(id: &str, version: u64, len: usize) -> String {
    format!("{id}/v{version}/")
        .chars()
        .cycle()
        .take(len)
        .collect()
}

/// The kill scenarios' item, about 820 bytes in few attributes: moto copies every attribute of
/// every item a Scan returns, and with many attributes its copying, not the rate limit, would
/// set the scan's pace.
fn lean_item(id: &str, version: u64) -> Item {
    HashMap::from([
        ("id".to_string(), Av::S(id.to_string())),
        ("version".to_string(), Av::N(version.to_string())),
        (
            "tags".to_string(),
            Av::Ss(vec![format!("v{version}"), "common".to_string()]),
        ),
        ("payload".to_string(), Av::S(filler(id, version, 780))),
    ])
}

/// Every attribute type (`workload::item`) and 400 bytes of filler.
fn rich_item(id: &str, version: u64) -> Item {
    let mut item = workload::item(id, version as u32);
    item.insert("payload".into(), Av::S(filler(id, version, 400)));
    item
}

/// DynamoDB's size of a number: about one byte per two significant digits, plus one.
fn number_size(n: &str) -> usize {
    let digits: String = n.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len();
    significant.max(1).div_ceil(2) + 1
}

fn value_size(v: &Av) -> usize {
    match v {
        Av::S(s) => s.len(),
        Av::N(n) => number_size(n),
        Av::B(b) => b.as_ref().len(),
        Av::Ss(s) => s.iter().map(String::len).sum(),
        Av::Ns(s) => s.iter().map(|n| number_size(n)).sum(),
        Av::Bs(s) => s.iter().map(|b| b.as_ref().len()).sum(),
        Av::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| k.len() + value_size(v) + 1)
                .sum::<usize>()
        }
        Av::L(l) => 3 + l.iter().map(|v| value_size(v) + 1).sum::<usize>(),
        _ => 1,
    }
}

/// An item's size as DynamoDB counts it (attribute names and values).
fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

/// The read capacity a full eventually consistent scan of `items` uses: their total size in
/// 4 KB units, halved.
fn scan_capacity<'a>(items: impl IntoIterator<Item = &'a Item>) -> f64 {
    items.into_iter().map(item_size).sum::<usize>() as f64 / 4096.0 / 2.0
}

/// Puts `items` with BatchWriteItem, 25 per call (one caller at a time: moto numbers a table's
/// stream records without a lock).
async fn load(ddb: &aws_sdk_dynamodb::Client, table: &str, items: &[Item]) {
    for chunk in items.chunks(25) {
        let mut requests: Vec<WriteRequest> = chunk
            .iter()
            .map(|item| {
                WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(item.clone()))
                            .build()
                            .unwrap(),
                    )
                    .build()
            })
            .collect();
        for attempt in 0.. {
            let out = ddb
                .batch_write_item()
                .request_items(table, requests)
                .send()
                .await
                .expect("BatchWriteItem");
            requests = out
                .unprocessed_items()
                .and_then(|u| u.get(table))
                .cloned()
                .unwrap_or_default();
            if requests.is_empty() {
                break;
            }
            assert!(
                attempt < 20,
                "BatchWriteItem kept leaving items unprocessed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Enables the table's stream (NEW_AND_OLD_IMAGES); returns its ARN.
async fn enable_stream(ddb: &aws_sdk_dynamodb::Client, name: &str) -> String {
    use aws_sdk_dynamodb::types::StreamSpecification;
    ddb.update_table()
        .table_name(name)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("UpdateTable");
    let out = ddb
        .describe_table()
        .table_name(name)
        .send()
        .await
        .expect("DescribeTable");
    out.table()
        .and_then(|t| t.latest_stream_arn())
        .expect("a stream ARN once the stream is enabled")
        .to_string()
}

fn id_of(item: &Item) -> String {
    item["id"].as_s().expect("id is a string").clone()
}

/// Which segment of a `total`-segment parallel Scan holds each item: asked of DynamoDB itself,
/// so that a `lambda` snapshot record (which names no segment) can be placed in its segment.
async fn segments_of(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    total: usize,
) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for segment in 0..total {
        let mut start = None;
        loop {
            let page = ddb
                .scan()
                .table_name(table)
                .segment(segment as i32)
                .total_segments(total as i32)
                .projection_expression("id")
                .set_exclusive_start_key(start)
                .send()
                .await
                .expect("parallel Scan");
            for item in page.items.unwrap_or_default() {
                let previous = out.insert(id_of(&item), segment);
                assert!(previous.is_none(), "an item in two segments: {item:?}");
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
    }
    out
}

/// Typed JSON (as the `lambda` format writes images), sets sorted.
fn typed(item: &Item) -> Value {
    let mut v = workload::typed_item(item);
    workload::normalize_sets(&mut v);
    v
}

/// Plain JSON (as the `plain` format writes images), sets sorted.
fn plain(item: &Item) -> Value {
    let mut v = workload::plain_item(item);
    workload::normalize_sets(&mut v);
    v
}

fn normalized(v: &Value) -> Value {
    let mut v = v.clone();
    workload::normalize_sets(&mut v);
    v
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

// ---------------------------------------------------------------------------------------------
// The writer: puts, updates and deletes while the snapshot runs, and what the stream must show.
// ---------------------------------------------------------------------------------------------

/// One change as the stream must show it: the event and the versions of its images.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Change {
    event: &'static str,
    new: Option<u64>,
    old: Option<u64>,
}

/// What the writer did, per item, in the order written.
#[derive(Debug, Default)]
struct Changes {
    per_item: BTreeMap<String, Vec<Change>>,
    total: usize,
}

impl Changes {
    fn touched(&self, id: &str) -> bool {
        self.per_item.contains_key(id)
    }

    /// Every version `id` has had: 1 if it was loaded, and each one the writer wrote.
    fn versions(&self, id: &str, loaded: bool) -> BTreeSet<u64> {
        let mut v: BTreeSet<u64> = self
            .per_item
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|c| c.new)
            .collect();
        if loaded {
            v.insert(1);
        }
        v
    }
}

/// Replaces every attribute but the key with UpdateItem (the result is the whole `item`).
async fn update_whole(ddb: &aws_sdk_dynamodb::Client, table: &str, item: &Item) {
    let mut names = HashMap::new();
    let mut values = HashMap::new();
    let mut sets = Vec::new();
    for (i, (k, v)) in item.iter().filter(|(k, _)| k.as_str() != "id").enumerate() {
        names.insert(format!("#a{i}"), k.clone());
        values.insert(format!(":v{i}"), v.clone());
        sets.push(format!("#a{i} = :v{i}"));
    }
    ddb.update_item()
        .table_name(table)
        .key("id", item["id"].clone())
        .update_expression(format!("SET {}", sets.join(", ")))
        .set_expression_attribute_names(Some(names))
        .set_expression_attribute_values(Some(values))
        .send()
        .await
        .expect("UpdateItem");
}

/// Until `stop`: puts (new ids, re-inserts, overwrites), updates (each bumps `version`) and
/// deletes, over a hot set of the loaded items and all of them, one at a time.
async fn write_changes(
    ddb: aws_sdk_dynamodb::Client,
    table: String,
    loaded: Vec<String>,
    make: Maker,
    stop: Arc<AtomicBool>,
) -> Changes {
    let mut state: HashMap<String, (u64, bool)> =
        loaded.iter().map(|id| (id.clone(), (1, true))).collect();
    let mut ids = loaded;
    let hot = ids.len().min(200);
    let mut fresh = 0;
    let mut rng: u64 = 0x5eed_cafe;
    let mut log = Changes::default();
    while !stop.load(Ordering::SeqCst) {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = rng >> 16;
        let id = if r % 10 == 0 {
            fresh += 1;
            ids.push(format!("new-{fresh:05}"));
            ids.last().unwrap().clone()
        } else if r % 2 == 0 {
            ids[(r >> 8) as usize % hot].clone()
        } else {
            ids[(r >> 8) as usize % ids.len()].clone()
        };
        let (version, exists) = state.get(&id).copied().unwrap_or((0, false));
        let kind = (r >> 32) % 10;
        let change = if !exists {
            let item = make(&id, version + 1);
            ddb.put_item()
                .table_name(&table)
                .set_item(Some(item))
                .send()
                .await
                .expect("PutItem");
            state.insert(id.clone(), (version + 1, true));
            Change {
                event: "INSERT",
                new: Some(version + 1),
                old: None,
            }
        } else if kind < 2 {
            ddb.delete_item()
                .table_name(&table)
                .key("id", Av::S(id.clone()))
                .send()
                .await
                .expect("DeleteItem");
            state.insert(id.clone(), (version, false));
            Change {
                event: "REMOVE",
                new: None,
                old: Some(version),
            }
        } else {
            let item = make(&id, version + 1);
            if kind < 6 {
                update_whole(&ddb, &table, &item).await;
            } else {
                ddb.put_item()
                    .table_name(&table)
                    .set_item(Some(item))
                    .send()
                    .await
                    .expect("PutItem");
            }
            state.insert(id.clone(), (version + 1, true));
            Change {
                event: "MODIFY",
                new: Some(version + 1),
                old: Some(version),
            }
        };
        log.per_item.entry(id).or_default().push(change);
        log.total += 1;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    log
}

// ---------------------------------------------------------------------------------------------
// The lease table.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct LeaseRow {
    key: String,
    owner: Option<String>,
    checkpoint: Option<String>,
    started: Option<i64>,
}

/// Every row of the lease table (none while it does not exist yet).
async fn lease_rows(ddb: &aws_sdk_dynamodb::Client, table: &str) -> Vec<LeaseRow> {
    let mut rows = Vec::new();
    let mut start = None;
    loop {
        let Ok(page) = ddb
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
        else {
            return Vec::new();
        };
        for item in page.items() {
            let s = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
            rows.push(LeaseRow {
                key: s("leaseKey").unwrap_or_default(),
                owner: s("leaseOwner"),
                checkpoint: s("checkpoint"),
                started: item
                    .get("snapshotStartedAtMillis")
                    .and_then(|v| v.as_n().ok())
                    .and_then(|n| n.parse().ok()),
            });
        }
        start = page.last_evaluated_key;
        if start.is_none() {
            return rows;
        }
    }
}

fn segment_key(i: usize, n: usize) -> String {
    format!("snapshot-{i:04}-of-{n:04}")
}

fn segment_rows(rows: &[LeaseRow]) -> Vec<&LeaseRow> {
    rows.iter()
        .filter(|r| r.key.starts_with("snapshot-"))
        .collect()
}

fn is_done(row: &LeaseRow) -> bool {
    row.checkpoint.as_deref() == Some("SHARD_END")
}

/// The ordinal of a segment checkpoint `<ordinal>~<token>` (None for TRIM_HORIZON, SHARD_END…).
fn ordinal_of(checkpoint: &str) -> Option<u64> {
    checkpoint
        .split_once('~')
        .map_or(checkpoint, |(n, _)| n)
        .parse()
        .ok()
}

/// The segment index of `snapshot-0003-of-0006`.
fn segment_index(key: &str) -> Option<usize> {
    key.strip_prefix("snapshot-")?
        .split('-')
        .next()?
        .parse()
        .ok()
}

fn describe_rows(rows: &[LeaseRow]) -> String {
    rows.iter()
        .map(|r| {
            format!(
                "{} owner={:?} checkpoint={:?} started={:?}",
                r.key, r.owner, r.checkpoint, r.started
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

// ---------------------------------------------------------------------------------------------
// Configuration and processes.
// ---------------------------------------------------------------------------------------------

/// One connector on the source table, as every worker of a test configures it.
#[derive(Clone)]
struct Connector {
    name: &'static str,
    aws: String,
    table: String,
    leases: String,
    format: &'static str,
    /// The body of `[connectors.snapshot]`.
    snapshot: String,
    /// The body of `[connectors.sink]`.
    sink: String,
}

impl Connector {
    fn toml(&self, id: &str, port: u16) -> String {
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
type = "dynamodb-streams"
table = "{table}"
poll_idle_ms = 50
[connectors.snapshot]
{snapshot}
[connectors.leases]
table = "{leases}"
failover_ms = 3000
renew_interval_ms = 1000
safety_margin_ms = 500
shard_sync_interval_ms = 2000
[connectors.format]
type = "{format}"
[connectors.sink]
{sink}
"#,
            aws = self.aws,
            name = self.name,
            table = self.table,
            snapshot = self.snapshot,
            leases = self.leases,
            format = self.format,
            sink = self.sink,
        )
    }
}

fn file_sink(path: &Path) -> String {
    format!("type = \"file\"\npath = \"{}\"", path.display())
}

/// The last `n` characters of a log, for failure messages.
fn tail_of(text: &str, n: usize) -> String {
    let skip = text.chars().count().saturating_sub(n);
    text.chars().skip(skip).collect()
}

/// Panics, with its log, if a worker of the fleet has exited by itself.
fn check_alive(fleet: &mut Fleet) {
    for (id, w) in fleet.workers.iter_mut() {
        if let Ok(Some(status)) = w.child.try_wait() {
            panic!(
                "worker {id} exited by itself ({status}); its log ends:\n{}",
                tail_of(&w.log_text(), 6000)
            );
        }
    }
}

fn scrape(port: u16) -> Option<String> {
    http_get(port, "/metrics")
        .filter(|(status, _)| *status == 200)
        .map(|(_, body)| body)
}

fn snapshot_metric_lines(text: &str) -> String {
    text.lines()
        .filter(|l| l.starts_with("shardbridge_snapshot_"))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------------
// The output, as the verifier sees it.
// ---------------------------------------------------------------------------------------------

/// One output record of the `lambda` format.
#[derive(Clone, Debug)]
enum Rec {
    Snapshot {
        event_id: String,
        ordinal: u64,
        id: String,
        image: Value,
        version: u64,
        time_ms: i64,
    },
    Stream {
        seq: String,
        event: &'static str,
        id: String,
        new: Option<Value>,
        old: Option<Value>,
        created_ms: i64,
    },
}

/// A record, where it was written (a file or an object, and its place there) and the poll of
/// the output at which it was first seen: a record first seen at poll j was written before
/// poll j, and one first seen at poll k > j was written after poll k-1 >= j.
#[derive(Clone, Debug)]
struct Written {
    place: String,
    index: usize,
    poll: u64,
    rec: Rec,
}

fn bad(what: &str, line: &Value) -> ! {
    panic!("{what}, in the output record {line}")
}

fn image_version(image: &Value) -> Option<u64> {
    image["version"]["N"].as_str()?.parse().ok()
}

/// Reads a `lambda` record, checking the fields the format defines for it.
fn parse_lambda(l: &Value, stream_arn: &str) -> Rec {
    let d = &l["dynamodb"];
    let id = d["Keys"]["id"]["S"]
        .as_str()
        .unwrap_or_else(|| bad("no dynamodb.Keys.id.S", l))
        .to_string();
    if d["Keys"].as_object().map(|m| m.len()) != Some(1) {
        bad("dynamodb.Keys holds more than the key", l);
    }
    if l["eventSourceARN"].as_str() != Some(stream_arn) {
        bad(
            &format!("eventSourceARN is not the stream ARN {stream_arn}"),
            l,
        );
    }
    let seq = d["SequenceNumber"]
        .as_str()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or_else(|| bad("dynamodb.SequenceNumber is not decimal digits", l))
        .to_string();
    let millis = d["ApproximateCreationDateTime"]
        .as_f64()
        .map(|s| (s * 1000.0).round() as i64)
        .unwrap_or_else(|| bad("no dynamodb.ApproximateCreationDateTime", l));
    let image = |name: &str| d.get(name).map(normalized);
    match l["eventSource"].as_str() {
        Some(SNAPSHOT_SOURCE) => {
            let event_id = l["eventID"].as_str().unwrap_or_default();
            let hex = event_id.strip_prefix("snapshot-").unwrap_or_default();
            if hex.len() != 32 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                bad(
                    "a snapshot eventID is not \"snapshot-\" and 32 lowercase hex digits",
                    l,
                );
            }
            if l["eventName"] != "INSERT" {
                bad("a snapshot record's eventName is not INSERT", l);
            }
            if d.get("OldImage").is_some() {
                bad("a snapshot record has an OldImage", l);
            }
            let image = image("NewImage").unwrap_or_else(|| bad("a snapshot without NewImage", l));
            if image["id"]["S"].as_str() != Some(id.as_str()) {
                bad("NewImage.id differs from Keys.id", l);
            }
            let version =
                image_version(&image).unwrap_or_else(|| bad("NewImage has no version", l));
            Rec::Snapshot {
                event_id: event_id.to_string(),
                ordinal: seq
                    .parse()
                    .unwrap_or_else(|_| bad("a snapshot ordinal over u64", l)),
                id,
                image,
                version,
                time_ms: millis,
            }
        }
        Some("aws:dynamodb") => {
            let event = match l["eventName"].as_str() {
                Some("INSERT") => "INSERT",
                Some("MODIFY") => "MODIFY",
                Some("REMOVE") => "REMOVE",
                _ => bad("eventName is not INSERT, MODIFY or REMOVE", l),
            };
            let (new, old) = (image("NewImage"), image("OldImage"));
            // NEW_AND_OLD_IMAGES: every image the change has is there.
            if new.is_some() != (event != "REMOVE") || old.is_some() != (event != "INSERT") {
                bad(&format!("{event} with the wrong images"), l);
            }
            Rec::Stream {
                seq,
                event,
                id,
                new,
                old,
                created_ms: millis,
            }
        }
        _ => bad(
            "eventSource is neither aws:dynamodb nor shardbridge:snapshot",
            l,
        ),
    }
}

/// Numeric order of decimal sequence numbers (length, then text).
fn seq_key(seq: &str) -> (usize, String) {
    (seq.len(), seq.to_string())
}

/// The stream's changes per item, each once (the file sink may repeat some), in sequence order.
fn delivered_changes(out: &[Written]) -> BTreeMap<String, Vec<Change>> {
    let mut by_seq: BTreeMap<(usize, String), (&str, Change)> = BTreeMap::new();
    for w in out {
        if let Rec::Stream {
            seq,
            event,
            id,
            new,
            old,
            ..
        } = &w.rec
        {
            let change = Change {
                event,
                new: new.as_ref().and_then(image_version),
                old: old.as_ref().and_then(image_version),
            };
            by_seq.entry(seq_key(seq)).or_insert((id, change));
        }
    }
    let mut per_item: BTreeMap<String, Vec<Change>> = BTreeMap::new();
    for (id, change) in by_seq.into_values() {
        per_item.entry(id.to_string()).or_default().push(change);
    }
    per_item
}

/// Items whose delivered stream changes are not exactly the changes the writer made to them.
fn change_mismatches(written: &Changes, delivered: &BTreeMap<String, Vec<Change>>) -> Vec<String> {
    let ids: BTreeSet<&String> = written.per_item.keys().chain(delivered.keys()).collect();
    ids.into_iter()
        .filter_map(|id| {
            let w = written.per_item.get(id).cloned().unwrap_or_default();
            let d = delivered.get(id).cloned().unwrap_or_default();
            (w != d).then(|| format!("{id}: written {w:?}, delivered {d:?}"))
        })
        .collect()
}

/// The output replayed: the snapshot records in the order written (a later copy of an item
/// replaces an earlier one), then the stream's changes once each, in sequence order.
fn replay(out: &[Written]) -> BTreeMap<String, Value> {
    let mut snapshots: Vec<&Written> = out
        .iter()
        .filter(|w| matches!(w.rec, Rec::Snapshot { .. }))
        .collect();
    snapshots.sort_by(|a, b| (a.poll, &a.place, a.index).cmp(&(b.poll, &b.place, b.index)));
    let mut state = BTreeMap::new();
    for w in snapshots {
        if let Rec::Snapshot { id, image, .. } = &w.rec {
            state.insert(id.clone(), image.clone());
        }
    }
    let mut stream: BTreeMap<(usize, String), &Rec> = BTreeMap::new();
    for w in out {
        if let Rec::Stream { seq, .. } = &w.rec {
            stream.entry(seq_key(seq)).or_insert(&w.rec);
        }
    }
    for rec in stream.values() {
        if let Rec::Stream { event, id, new, .. } = rec {
            match *event {
                "REMOVE" => {
                    state.remove(id);
                }
                _ => {
                    state.insert(id.clone(), new.clone().unwrap());
                }
            }
        }
    }
    state
}

fn state_differences(want: &BTreeMap<String, Value>, got: &BTreeMap<String, Value>) -> Vec<String> {
    let ids: BTreeSet<&String> = want.keys().chain(got.keys()).collect();
    ids.into_iter()
        .filter(|id| want.get(*id) != got.get(*id))
        .map(|id| {
            let show = |v: Option<&Value>| {
                v.map_or("absent".to_string(), |v| {
                    format!("version {:?}", image_version(v))
                })
            };
            format!(
                "{id}: source {}, replayed output {}",
                show(want.get(id)),
                show(got.get(id))
            )
        })
        .collect()
}

fn first<T: std::fmt::Debug>(items: &[T], n: usize) -> String {
    format!(
        "{:?}{}",
        &items[..items.len().min(n)],
        if items.len() > n { " …" } else { "" }
    )
}

// ---------------------------------------------------------------------------------------------
// Reading the output while it is written: files (tailed) and S3 objects (listed).
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct TailState {
    polls: u64,
    /// (file name, line index, poll first seen, the line)
    lines: Vec<(String, usize, u64, Value)>,
    offsets: HashMap<PathBuf, (u64, usize)>,
    problems: Vec<String>,
}

/// Reads the complete lines appended to every `*.jsonl` file of a directory, every 100 ms.
struct Tailer {
    dir: PathBuf,
    state: Arc<Mutex<TailState>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The lines read so far, as records.
    parsed: Vec<Written>,
}

fn poll_files(dir: &Path, st: &mut TailState) {
    st.polls += 1;
    let poll = st.polls;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    for path in files {
        let (offset, count) = st.offsets.get(&path).copied().unwrap_or((0, 0));
        let mut buf = Vec::new();
        let read = std::fs::File::open(&path).and_then(|mut f| {
            f.seek(SeekFrom::Start(offset))?;
            f.read_to_end(&mut buf)
        });
        if read.is_err() {
            continue;
        }
        // A batch being appended (or cut by a SIGKILL) may end in the middle of a line.
        let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let mut n = count;
        for line in buf[..complete]
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
        {
            match serde_json::from_slice::<Value>(line) {
                Ok(v) => st.lines.push((name.clone(), n, poll, v)),
                Err(e) => st.problems.push(format!(
                    "{name} line {n}: {e}: {}",
                    String::from_utf8_lossy(line)
                )),
            }
            n += 1;
        }
        st.offsets.insert(path, (offset + complete as u64, n));
    }
}

impl Tailer {
    fn start(dir: &Path) -> Tailer {
        let state = Arc::new(Mutex::new(TailState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (dir, state, stop) = (dir.to_path_buf(), state.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    poll_files(&dir, &mut state.lock().unwrap());
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Tailer {
            dir: dir.to_path_buf(),
            state,
            stop,
            thread: Some(thread),
            parsed: Vec::new(),
        }
    }

    fn finish(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        poll_files(&self.dir, &mut self.state.lock().unwrap());
    }
}

/// Lists a bucket every 250 ms, noting the poll at which each object key was first seen, and
/// reads objects back (again when their ETag changes).
struct BucketWatch {
    s3: aws_sdk_s3::Client,
    bucket: String,
    first_seen: Arc<Mutex<BTreeMap<String, u64>>>,
    polls: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Each object read so far: its ETag and its records.
    cache: HashMap<String, (String, Vec<Written>)>,
}

async fn list_objects(s3: &aws_sdk_s3::Client, bucket: &str) -> Vec<(String, String)> {
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let Ok(out) = s3
            .list_objects_v2()
            .bucket(bucket)
            .set_continuation_token(token.take())
            .send()
            .await
        else {
            return keys;
        };
        keys.extend(out.contents().iter().filter_map(|o| {
            Some((
                o.key()?.to_string(),
                o.e_tag().unwrap_or_default().to_string(),
            ))
        }));
        match out.next_continuation_token() {
            Some(t) => token = Some(t.to_string()),
            None => return keys,
        }
    }
}

async fn object_lines(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<Value> {
    let body = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetObject {key}: {e:?}"));
    let bytes = body.body.collect().await.unwrap().into_bytes();
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(&bytes[..])
        .read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("object {key} is not gzip text: {e}"));
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{key}: bad line {l:?}: {e}")))
        .collect()
}

impl BucketWatch {
    fn start(s3: aws_sdk_s3::Client, bucket: &str) -> BucketWatch {
        let first_seen = Arc::new(Mutex::new(BTreeMap::new()));
        let polls = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (s3, bucket) = (s3.clone(), bucket.to_string());
            let (first_seen, polls, stop) = (first_seen.clone(), polls.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let keys = list_objects(&s3, &bucket).await;
                    let poll = polls.fetch_add(1, Ordering::SeqCst) + 1;
                    {
                        let mut seen = first_seen.lock().unwrap();
                        for (key, _) in keys {
                            seen.entry(key).or_insert(poll);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
        };
        BucketWatch {
            s3,
            bucket: bucket.to_string(),
            first_seen,
            polls,
            stop,
            task: Some(task),
            cache: HashMap::new(),
        }
    }

    async fn finish(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

enum Output {
    Files(Tailer),
    S3(BucketWatch),
}

impl Output {
    fn polls(&self) -> u64 {
        match self {
            Output::Files(t) => t.state.lock().unwrap().polls,
            Output::S3(b) => b.polls.load(Ordering::SeqCst),
        }
    }

    /// Whether `worker` wrote snapshot records of `segment` at or before `ordinal` (a file
    /// sink's output; with S3, whether any snapshot object was written).
    fn wrote_segment(
        &self,
        worker: &str,
        segment: usize,
        ordinal: u64,
        segment_of: &HashMap<String, usize>,
    ) -> bool {
        let Output::Files(t) = self else {
            return self.snapshot_seen();
        };
        let prefix = format!("{worker}-");
        t.state
            .lock()
            .unwrap()
            .lines
            .iter()
            .filter(|(file, _, _, v)| {
                file.starts_with(&prefix) && v["eventSource"] == SNAPSHOT_SOURCE
            })
            .any(|(_, _, _, v)| {
                let d = &v["dynamodb"];
                let n: Option<u64> = d["SequenceNumber"].as_str().and_then(|s| s.parse().ok());
                let id = d["Keys"]["id"]["S"].as_str().unwrap_or_default();
                n.is_some_and(|n| n <= ordinal) && segment_of.get(id) == Some(&segment)
            })
    }

    /// Whether any snapshot record has been written yet.
    fn snapshot_seen(&self) -> bool {
        match self {
            Output::Files(t) => t
                .state
                .lock()
                .unwrap()
                .lines
                .iter()
                .any(|(_, _, _, v)| v["eventSource"] == SNAPSHOT_SOURCE),
            Output::S3(b) => b
                .first_seen
                .lock()
                .unwrap()
                .keys()
                .any(|k| k.contains("/snapshot-")),
        }
    }

    async fn collect(&mut self, stream_arn: &str) -> Vec<Written> {
        match self {
            Output::Files(t) => {
                let st = t.state.lock().unwrap();
                assert!(
                    st.problems.is_empty(),
                    "complete lines that are not JSON: {}",
                    first(&st.problems, 5)
                );
                let new: Vec<Written> = st.lines[t.parsed.len()..]
                    .iter()
                    .map(|(place, index, poll, v)| Written {
                        place: place.clone(),
                        index: *index,
                        poll: *poll,
                        rec: parse_lambda(v, stream_arn),
                    })
                    .collect();
                drop(st);
                t.parsed.extend(new);
                t.parsed.clone()
            }
            Output::S3(b) => {
                let mut out = Vec::new();
                for (key, etag) in list_objects(&b.s3, &b.bucket).await {
                    if !matches!(b.cache.get(&key), Some((e, _)) if *e == etag) {
                        let poll = *b
                            .first_seen
                            .lock()
                            .unwrap()
                            .entry(key.clone())
                            .or_insert(b.polls.load(Ordering::SeqCst) + 1);
                        let records = object_lines(&b.s3, &b.bucket, &key)
                            .await
                            .iter()
                            .enumerate()
                            .map(|(index, l)| Written {
                                place: key.clone(),
                                index,
                                poll,
                                rec: parse_lambda(l, stream_arn),
                            })
                            .collect();
                        b.cache.insert(key.clone(), (etag, records));
                    }
                    out.extend(b.cache[&key].1.iter().cloned());
                }
                out
            }
        }
    }

    async fn finish(&mut self) {
        match self {
            Output::Files(t) => t.finish(),
            Output::S3(b) => b.finish().await,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The kill scenario, shared by the file and S3 sinks.
// ---------------------------------------------------------------------------------------------

enum Target {
    Files,
    S3,
}

/// What the scenario knows besides the output, for the verdict.
struct Facts {
    t0: i64,
    loaded: BTreeMap<String, Value>,
    changes: Changes,
    source: BTreeMap<String, Value>,
    segment_of: HashMap<String, usize>,
    victim: String,
    /// Checkpoint ordinals of the segments the victim held when it was killed.
    victim_checkpoints: BTreeMap<usize, u64>,
    kill_poll: u64,
}

async fn snapshot_then_stream_through_a_kill(target: Target) {
    let endpoint = aws_endpoint();
    let sdk = sdk_config(&endpoint).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let table = unique("snap-src");
    let leases = unique("snap-leases");
    workload::create_table_with(&ddb, &table, None).await;

    let ids: Vec<String> = (0..ITEMS).map(|i| format!("item-{i:05}")).collect();
    let items: Vec<Item> = ids.iter().map(|id| lean_item(id, 1)).collect();
    let capacity = scan_capacity(&items);
    let rate_limit = (capacity / SCAN_SECONDS).ceil() as u64;
    let loading = Instant::now();
    let (before, with_stream) = items.split_at(ITEMS - LOADED_WITH_STREAM);
    load(&ddb, &table, before).await;
    let stream_arn = enable_stream(&ddb, &table).await;
    load(&ddb, &table, with_stream).await;
    let loaded_at = Instant::now();
    eprintln!(
        "loaded {ITEMS} items in {:?}; a full scan uses about {capacity:.0} RCU: rate_limit = \
         {rate_limit} RCU/s",
        loading.elapsed()
    );
    // A lambda record names no segment: the file sink's checks ask DynamoDB where items are.
    let segment_of = match target {
        Target::Files => segments_of(&ddb, &table, SEGMENTS).await,
        Target::S3 => HashMap::new(),
    };
    // Past the margin: the stream records of the load are older than T0 - clock_margin_ms.
    let past_margin = Duration::from_millis(MARGIN_MS as u64 + 1_000);
    tokio::time::sleep(past_margin.saturating_sub(loaded_at.elapsed())).await;

    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let ports: BTreeMap<String, u16> = WORKERS
        .iter()
        .map(|w| (w.to_string(), free_port()))
        .collect();
    let bucket = unique("snap").to_lowercase();
    let (mut output, sink) = match target {
        Target::Files => (Output::Files(Tailer::start(&out_dir)), String::new()),
        Target::S3 => {
            let s3 = harness::s3_client(&endpoint).await;
            s3.create_bucket().bucket(&bucket).send().await.unwrap();
            let sink = format!(
                "type = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"snap/\"\nmax_records = 200\n\
                 max_interval_ms = 300\nforce_path_style = true"
            );
            (Output::S3(BucketWatch::start(s3, &bucket)), sink)
        }
    };
    let connector = Connector {
        name: CONNECTOR,
        aws: endpoint.clone(),
        table: table.clone(),
        leases: leases.clone(),
        format: "lambda",
        snapshot: format!(
            "mode = \"initial\"\nsegments = {SEGMENTS}\npage_size = {PAGE_SIZE}\nrate_limit = \
             {rate_limit}\nconsistent_read = false\nclock_margin_ms = {MARGIN_MS}"
        ),
        sink,
    };
    // Each start of a worker writes a file of its own (a killed worker's may end mid-line).
    let starts = Arc::new(AtomicUsize::new(0));
    let mut fleet = {
        let (ports, out_dir) = (ports.clone(), out_dir.clone());
        Fleet::new(dir.path(), move |id| {
            let mut c = connector.clone();
            if c.sink.is_empty() {
                let n = starts.fetch_add(1, Ordering::SeqCst);
                c.sink = file_sink(&out_dir.join(format!("{id}-{n:02}.jsonl")));
            }
            c.toml(id, ports[id])
        })
    };
    let fleet_started_ms = now_ms();
    let fleet_started = Instant::now();
    for id in WORKERS {
        fleet.start(id);
    }

    // The snapshot's leases, and T0.
    let want_keys: BTreeSet<String> = (0..SEGMENTS).map(|i| segment_key(i, SEGMENTS)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let t0 = loop {
        check_alive(&mut fleet);
        let rows = lease_rows(&ddb, &leases).await;
        let segs = segment_rows(&rows);
        if segs.len() >= SEGMENTS && segs.iter().all(|r| r.started.is_some()) {
            let keys: BTreeSet<String> = segs.iter().map(|r| r.key.clone()).collect();
            assert_eq!(keys, want_keys, "the snapshot's segment leases");
            break segs.iter().filter_map(|r| r.started).min().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "after 60 s the lease table does not hold the {SEGMENTS} segment leases \
             snapshot-0000-of-0006 … each with snapshotStartedAtMillis; rows: {}",
            describe_rows(&rows)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        (fleet_started_ms - 1_000..=now_ms() + 1_000).contains(&t0),
        "snapshotStartedAtMillis {t0} is not between the workers' start ({fleet_started_ms}) \
         and now"
    );

    // The writer, from after T0 until the snapshot is done and a little more.
    let stop_writer = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_changes(
        ddb.clone(),
        table.clone(),
        ids.clone(),
        lean_item,
        stop_writer.clone(),
    ));

    // A worker holding a segment it has itself written and checkpointed records of, while the
    // scan runs: SIGKILL.
    let deadline = Instant::now() + Duration::from_secs(90);
    let (victim, chosen) = loop {
        check_alive(&mut fleet);
        let rows = lease_rows(&ddb, &leases).await;
        let segs = segment_rows(&rows);
        let done = segs.iter().filter(|r| is_done(r)).count();
        assert!(
            done < SEGMENTS,
            "every segment was done before a worker could be killed in the middle of one; \
             the scan is too fast (rate_limit {rate_limit}): {}",
            describe_rows(&rows)
        );
        let holder = segs.iter().filter(|r| !is_done(r)).find_map(|r| {
            let owner = r.owner.clone().filter(|o| fleet.workers.contains_key(o))?;
            let n = ordinal_of(r.checkpoint.as_deref()?).filter(|n| *n >= 100)?;
            let segment = segment_index(&r.key)?;
            output
                .wrote_segment(&owner, segment, n, &segment_of)
                .then_some((owner, (segment, n)))
        });
        if let Some(found) = holder {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "after 90 s no worker holds an unfinished segment checkpointed at an ordinal of \
             100 or more (`<ordinal>~<token>`) whose records it wrote; rows: {}",
            describe_rows(&rows)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    fleet.kill(&victim);
    let kill_poll = output.polls();
    let rows = lease_rows(&ddb, &leases).await;
    let mut victim_checkpoints: BTreeMap<usize, u64> = segment_rows(&rows)
        .into_iter()
        .filter(|r| r.owner.as_deref() == Some(victim.as_str()) && !is_done(r))
        .filter_map(|r| {
            let n = ordinal_of(r.checkpoint.as_deref()?)?;
            Some((segment_index(&r.key)?, n))
        })
        .collect();
    // (Moved away just before the kill: no one goes back before where it was when chosen.)
    victim_checkpoints.entry(chosen.0).or_insert(chosen.1);
    eprintln!(
        "killed {victim} {:?} after the workers started, holding segments at {:?}; leases: {}",
        fleet_started.elapsed(),
        victim_checkpoints,
        describe_rows(&rows)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    fleet.start(&victim);

    // Every segment done.
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        check_alive(&mut fleet);
        let rows = lease_rows(&ddb, &leases).await;
        let segs = segment_rows(&rows);
        if segs.len() == SEGMENTS && segs.iter().all(|r| is_done(r)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 150 s not every segment lease is checkpointed at SHARD_END: {}",
            describe_rows(&rows)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "every segment done {:?} after the workers started",
        fleet_started.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_writer.store(true, Ordering::SeqCst);
    let changes = writer.await.unwrap();
    eprintln!(
        "the writer made {} changes to {} items",
        changes.total,
        changes.per_item.len()
    );
    assert!(
        changes.total >= 30,
        "the writer made only {} changes",
        changes.total
    );

    // Until the output has caught up: every change delivered, and its replay equals the source.
    let source: BTreeMap<String, Value> = workload::scan_items(&ddb, &table)
        .await
        .iter()
        .map(|(id, item)| (id.clone(), typed(item)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        check_alive(&mut fleet);
        let out = output.collect(&stream_arn).await;
        let missing = change_mismatches(&changes, &delivered_changes(&out));
        let differences = state_differences(&source, &replay(&out));
        if missing.is_empty() && differences.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "120 s after the writer stopped the output has not caught up: {} items' stream \
             changes differ from the writer's ({}); {} items of the replayed output differ from \
             the source ({})",
            missing.len(),
            first(&missing, 5),
            differences.len(),
            first(&differences, 5)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    eprintln!(
        "the output caught up {:?} after the workers started",
        fleet_started.elapsed()
    );

    // The metrics of the live workers.
    let label = format!("connector=\"{CONNECTOR}\"");
    let deadline = Instant::now() + Duration::from_secs(30);
    let texts = loop {
        let texts: Vec<(String, String)> = fleet
            .workers
            .keys()
            .filter_map(|id| Some((id.clone(), scrape(ports[id])?)))
            .collect();
        let done: Vec<Option<f64>> = texts
            .iter()
            .map(|(_, t)| metric_value(t, "shardbridge_snapshot_segments_done", &label))
            .collect();
        if done.contains(&Some(SEGMENTS as f64)) {
            break texts;
        }
        assert!(
            Instant::now() < deadline,
            "shardbridge_snapshot_segments_done{{{label}}} is not {SEGMENTS} on any live worker \
             (values: {done:?})"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let read = |t: &str| metric_value(t, "shardbridge_snapshot_items_read_total", &label);
    let (id, text) = texts
        .iter()
        .max_by(|a, b| {
            read(&a.1)
                .unwrap_or(-1.0)
                .total_cmp(&read(&b.1).unwrap_or(-1.0))
        })
        .unwrap();
    for name in SNAPSHOT_METRICS {
        assert!(
            metric_value(text, name, &label).is_some(),
            "{name}{{{label}}} is missing on worker {id}; its snapshot metrics:\n{}",
            snapshot_metric_lines(text)
        );
    }
    for name in [
        "shardbridge_snapshot_items_read_total",
        "shardbridge_snapshot_items_delivered_total",
        "shardbridge_snapshot_read_capacity_units_total",
    ] {
        let v = metric_value(text, name, &label).unwrap();
        assert!(
            v > 0.0,
            "{name} is {v} on worker {id}, which read the most snapshot items"
        );
    }

    fleet.stop_all();
    output.finish().await;
    let out = output.collect(&stream_arn).await;
    let facts = Facts {
        t0,
        loaded: items
            .iter()
            .map(|item| (id_of(item), typed(item)))
            .collect(),
        changes,
        source,
        segment_of,
        victim,
        victim_checkpoints,
        kill_poll,
    };
    verify_common(&facts, &out);
    match output {
        Output::Files(_) => verify_files(&facts, &out),
        Output::S3(_) => {
            let replayed =
                harness::logs_containing(dir.path(), "wrote the batch of a pending intent again");
            eprintln!("s3 sink: {replayed} batches of a pending intent written again");
            verify_s3(&facts, &out)
        }
    }
}

/// What holds with either sink.
fn verify_common(f: &Facts, out: &[Written]) {
    let snapshots: Vec<&Written> = out
        .iter()
        .filter(|w| matches!(w.rec, Rec::Snapshot { .. }))
        .collect();
    let streams: Vec<&Written> = out
        .iter()
        .filter(|w| matches!(w.rec, Rec::Stream { .. }))
        .collect();
    assert!(
        snapshots.len() >= f.loaded.len().saturating_sub(f.changes.per_item.len()),
        "{} snapshot records for {} items",
        snapshots.len(),
        f.loaded.len()
    );
    assert!(!streams.is_empty(), "no stream record was delivered");

    // One eventID per item, one item per eventID.
    let mut ids_of_event: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut events_of_id: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut problems = Vec::new();
    for w in &snapshots {
        if let Rec::Snapshot {
            event_id,
            id,
            image,
            version,
            time_ms,
            ..
        } = &w.rec
        {
            ids_of_event.entry(event_id).or_default().insert(id);
            events_of_id.entry(id).or_default().insert(event_id);
            // An image the item really had: the loaded version, or one the writer wrote.
            let loaded = f.loaded.contains_key(id);
            if !f.changes.versions(id, loaded).contains(version) {
                problems.push(format!(
                    "{id}: snapshot of version {version}, which it never had"
                ));
            } else if *image != typed(&lean_item(id, *version)) {
                problems.push(format!(
                    "{id}: snapshot image of version {version} differs from the item written"
                ));
            }
            // When the snapshot began, on every read of the item (a repeated batch is the same
            // bytes and S3 key).
            if *time_ms != f.t0 {
                problems.push(format!(
                    "{id}: ApproximateCreationDateTime {time_ms} ms, not when the snapshot began \
                     ({} ms, the earliest snapshotStartedAtMillis)",
                    f.t0
                ));
            }
        }
    }
    let shared: Vec<_> = ids_of_event
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .collect();
    assert!(
        shared.is_empty(),
        "one eventID for several items: {}",
        first(&shared, 5)
    );
    let several: Vec<_> = events_of_id.iter().filter(|(_, e)| e.len() > 1).collect();
    assert!(
        several.is_empty(),
        "items with several snapshot eventIDs (the eventID must be a function of the key): {}",
        first(&several, 5)
    );
    assert!(
        problems.is_empty(),
        "snapshot records: {}",
        first(&problems, 10)
    );

    // (a) Every item the writer never touched is in the snapshot, as it was loaded.
    let mut images: HashMap<&str, Vec<&Value>> = HashMap::new();
    for w in &snapshots {
        if let Rec::Snapshot { id, image, .. } = &w.rec {
            images.entry(id).or_default().push(image);
        }
    }
    let mut missing = Vec::new();
    let mut wrong = Vec::new();
    for (id, image) in &f.loaded {
        if f.changes.touched(id) {
            continue;
        }
        match images.get(id.as_str()) {
            None => missing.push(id.clone()),
            Some(copies) if copies.iter().any(|got| *got != image) => wrong.push(id.clone()),
            Some(_) => {}
        }
    }
    let untouched = f.loaded.keys().filter(|id| !f.changes.touched(id)).count();
    assert!(
        missing.is_empty() && wrong.is_empty(),
        "of {untouched} items the writer never touched, {} are not among the snapshot records \
         ({}) and {} have another image ({})",
        missing.len(),
        first(&missing, 5),
        wrong.len(),
        first(&wrong, 5)
    );

    // (b) Every snapshot record before any stream record: in each file or object, and across
    // them by the time they were first seen.
    let mut places: BTreeMap<&str, (Option<usize>, Option<usize>)> = BTreeMap::new();
    for w in out {
        let entry = places.entry(&w.place).or_default();
        match w.rec {
            Rec::Snapshot { .. } => entry.0 = entry.0.max(Some(w.index)),
            Rec::Stream { .. } => {
                entry.1 = Some(entry.1.map_or(w.index, |i: usize| i.min(w.index)))
            }
        }
    }
    let interleaved: Vec<_> = places
        .iter()
        .filter(|(_, (last_snap, first_stream))| {
            matches!((last_snap, first_stream), (Some(s), Some(c)) if c < s)
        })
        .collect();
    assert!(
        interleaved.is_empty(),
        "stream records before the last snapshot record in (place, (last snapshot line, first \
         stream line)): {}",
        first(&interleaved, 5)
    );
    let last_snapshot = snapshots.iter().max_by_key(|w| w.poll).unwrap();
    let first_stream = streams.iter().min_by_key(|w| w.poll).unwrap();
    assert!(
        last_snapshot.poll <= first_stream.poll,
        "a stream record ({} line {}) was written before a snapshot record ({} line {}): first \
         seen at polls {} and {} of the output",
        first_stream.place,
        first_stream.index,
        last_snapshot.place,
        last_snapshot.index,
        first_stream.poll,
        last_snapshot.poll
    );

    // (c) The stream's records: exactly the writer's changes (each after T0), none of the load
    // (older than T0 - clock_margin_ms), every image the item written.
    let mismatches = change_mismatches(&f.changes, &delivered_changes(out));
    assert!(
        mismatches.is_empty(),
        "{} items' stream records differ from the changes the writer made: {}",
        mismatches.len(),
        first(&mismatches, 5)
    );
    let mut problems = Vec::new();
    for w in &streams {
        if let Rec::Stream {
            id,
            new,
            old,
            created_ms,
            seq,
            ..
        } = &w.rec
        {
            if *created_ms < f.t0 - MARGIN_MS - 1 {
                problems.push(format!(
                    "{seq} ({id}) created at {created_ms}, more than clock_margin_ms before T0 {}",
                    f.t0
                ));
            }
            for image in [new, old].into_iter().flatten() {
                let v = image_version(image).unwrap_or_default();
                if *image != typed(&lean_item(id, v)) {
                    problems.push(format!(
                        "{seq} ({id}): an image of version {v} differs from the item written"
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "stream records: {}",
        first(&problems, 10)
    );

    // (d) The replayed output is the source's final state.
    let differences = state_differences(&f.source, &replay(out));
    assert!(
        differences.is_empty(),
        "{} items of the replayed output differ from the source ({} items): {}",
        differences.len(),
        f.source.len(),
        first(&differences, 10)
    );
    eprintln!(
        "{} snapshot records ({} distinct eventIDs), {} stream records for {} changes",
        snapshots.len(),
        ids_of_event.len(),
        streams.len(),
        f.changes.total
    );
}

/// The file sink: a killed worker's segments resume at their checkpoints.
fn verify_files(f: &Facts, out: &[Written]) {
    // The victim's first file is the one written before the kill.
    let victim_file = out
        .iter()
        .map(|w| w.place.as_str())
        .filter(|p| p.starts_with(&format!("{}-", f.victim)))
        .min()
        .expect("the killed worker wrote a file");
    let after_kill: BTreeSet<&str> = out
        .iter()
        .filter(|w| w.place != victim_file && w.poll > f.kill_poll)
        .filter_map(|w| match &w.rec {
            Rec::Snapshot { event_id, .. } => Some(event_id.as_str()),
            _ => None,
        })
        .collect();
    let mut checked = 0;
    let mut again = Vec::new();
    for w in out.iter().filter(|w| w.place == victim_file) {
        if let Rec::Snapshot {
            event_id,
            ordinal,
            id,
            ..
        } = &w.rec
        {
            let Some(segment) = f.segment_of.get(id) else {
                continue;
            };
            let Some(checkpoint) = f.victim_checkpoints.get(segment) else {
                continue;
            };
            if ordinal <= checkpoint {
                checked += 1;
                if after_kill.contains(event_id.as_str()) {
                    again.push(format!(
                        "{id} (segment {segment}, ordinal {ordinal} <= checkpoint {checkpoint})"
                    ));
                }
            }
        }
    }
    assert!(
        checked > 0,
        "the killed worker's file holds no snapshot record at or before the checkpoints it \
         held ({:?})",
        f.victim_checkpoints
    );
    assert!(
        again.is_empty(),
        "of {checked} snapshot records at or before their segment's checkpoint when {} was \
         killed, {} were written again after the kill (the segment restarted instead of \
         resuming): {}",
        f.victim,
        again.len(),
        first(&again, 5)
    );
    let mut copies: HashMap<&str, usize> = HashMap::new();
    for w in out {
        if let Rec::Snapshot { event_id, .. } = &w.rec {
            *copies.entry(event_id).or_default() += 1;
        }
    }
    eprintln!(
        "file sink: {checked} records checked at or before the kill's checkpoints; {} eventIDs \
         written more than once",
        copies.values().filter(|n| **n > 1).count()
    );
}

/// `.../{shard}/{first}-{last}.jsonl.gz` of an S3 object key.
fn object_range(key: &str) -> (String, String, String) {
    let mut parts = key.rsplit('/');
    let file = parts.next().unwrap_or_default();
    let shard = parts.next().unwrap_or_default().to_string();
    let range = file.split_once(".jsonl").map_or(file, |(r, _)| r);
    let (a, b) = range
        .split_once('-')
        .unwrap_or_else(|| panic!("object key {key} does not end in first-last.jsonl.gz"));
    let trim = |s: &str| {
        let t = s.trim_start_matches('0');
        if t.is_empty() { "0" } else { t }.to_string()
    };
    (shard, trim(a), trim(b))
}

/// The S3 sink: exactly-once per batch.
fn verify_s3(f: &Facts, out: &[Written]) {
    let mut objects: BTreeMap<&str, Vec<&Written>> = BTreeMap::new();
    for w in out {
        objects.entry(&w.place).or_default().push(w);
    }
    objects
        .values_mut()
        .for_each(|v| v.sort_by_key(|w| w.index));
    let mut ranges: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    let mut stream_seqs: HashMap<&str, usize> = HashMap::new();
    for (key, records) in &objects {
        let (shard, first_seq, last_seq) = object_range(key);
        if shard.starts_with("snapshot-") {
            assert!(
                (0..SEGMENTS).any(|i| segment_key(i, SEGMENTS) == shard),
                "object {key}: {shard} is not a segment of {SEGMENTS}"
            );
            let ordinals: Vec<u64> = records
                .iter()
                .map(|w| match w.rec {
                    Rec::Snapshot { ordinal, .. } => ordinal,
                    _ => panic!("object {key} of segment {shard} holds a stream record"),
                })
                .collect();
            let (a, b): (u64, u64) = (first_seq.parse().unwrap(), last_seq.parse().unwrap());
            assert_eq!(
                ordinals,
                (a..=b).collect::<Vec<_>>(),
                "object {key}: its records' ordinals are not {a}..={b}, one each, in order"
            );
            ranges.entry(shard).or_default().push((a, b));
        } else {
            for w in records {
                match &w.rec {
                    Rec::Stream { seq, .. } => *stream_seqs.entry(seq).or_default() += 1,
                    _ => {
                        panic!("object {key} of the stream's shard {shard} holds a snapshot record")
                    }
                }
            }
        }
    }
    assert_eq!(
        ranges.len(),
        SEGMENTS,
        "segments with objects: {:?}",
        ranges.keys()
    );
    // Each batch once: a segment's objects cover its ordinals without overlap or gap (a replayed
    // intent rewrote the same key, a resumed segment went on after its checkpoint).
    for (segment, rs) in &mut ranges {
        rs.sort();
        for w in rs.windows(2) {
            assert!(
                w[1].0 == w[0].1 + 1,
                "segment {segment}: objects {}-{} and {}-{} overlap or leave a gap (all: {rs:?})",
                w[0].0,
                w[0].1,
                w[1].0,
                w[1].1
            );
        }
    }
    let repeated: Vec<_> = stream_seqs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "stream records in several objects (exactly-once): {}",
        first(&repeated, 5)
    );
    // An item the writer never touched is in exactly one snapshot record. (One the writer
    // changed may be scanned twice when the table changed under a replayed batch; it still has
    // one eventID, as verify_common asserts.)
    let mut count: HashMap<&str, usize> = HashMap::new();
    for w in out {
        if let Rec::Snapshot { id, .. } = &w.rec {
            *count.entry(id).or_default() += 1;
        }
    }
    let twice: Vec<_> = f
        .loaded
        .keys()
        .filter(|id| !f.changes.touched(id))
        .filter(|id| count.get(id.as_str()).copied().unwrap_or(0) != 1)
        .map(|id| (id, count.get(id.as_str()).copied().unwrap_or(0)))
        .collect();
    assert!(
        twice.is_empty(),
        "items the writer never touched that are not in exactly one snapshot record (item, \
         records): {}",
        first(&twice, 10)
    );
    let touched_twice = count
        .iter()
        .filter(|(id, n)| **n > 1 && f.changes.touched(id))
        .count();
    eprintln!(
        "s3 sink: {} objects; {touched_twice} items changed by the writer are in more than one \
         snapshot record",
        objects.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_stream_into_files_through_a_kill() {
    snapshot_then_stream_through_a_kill(Target::Files).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_stream_into_s3_through_a_kill() {
    snapshot_then_stream_through_a_kill(Target::S3).await;
}

// ---------------------------------------------------------------------------------------------
// One worker of an `initial_only` connector, to its exit.
// ---------------------------------------------------------------------------------------------

/// What a run to the exit showed.
struct Exit {
    code: i32,
    elapsed: Duration,
    /// The last metrics scraped while it ran.
    metrics: Option<String>,
    log: String,
}

/// Polls the worker's metrics every 50 ms until it exits (or `limit` passes).
async fn run_to_exit(w: &mut Running, port: u16, started: Instant, limit: Duration) -> Exit {
    let mut metrics = None;
    loop {
        if let Some(status) = w.child.try_wait().unwrap() {
            return Exit {
                code: status.code().unwrap_or(-1),
                elapsed: started.elapsed(),
                metrics,
                log: w.log_text(),
            };
        }
        assert!(
            started.elapsed() < limit,
            "the initial_only worker has not exited after {limit:?}; its log ends:\n{}",
            tail_of(&w.log_text(), 6000)
        );
        if let Some(text) = scrape(port) {
            metrics = Some(text);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads a `plain` output file, checking every record is a snapshot record of the table as the
/// format defines it; returns the records by item id.
fn plain_snapshot_records(
    path: &Path,
    table: &str,
    stream_arn: &str,
    segments: usize,
) -> BTreeMap<String, Vec<Value>> {
    let lines = read_lines(path);
    let others: Vec<&Value> = lines.iter().filter(|l| l["op"] != "snapshot").collect();
    assert!(
        others.is_empty(),
        "{} of {} records are not snapshot records (the stream must not be read): {}",
        others.len(),
        lines.len(),
        first(&others, 3)
    );
    let mut ordinals: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut by_id: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for l in &lines {
        assert_eq!(l["table"], table, "{l}");
        assert_eq!(l["stream"], stream_arn, "{l}");
        assert_eq!(l["old"], Value::Null, "{l}");
        assert!(l["ts"].is_string(), "no ts: {l}");
        let shard = l["shard"].as_str().unwrap_or_default().to_string();
        assert!(
            (0..segments).any(|i| segment_key(i, segments) == shard),
            "shard {shard:?} is not a segment of {segments}: {l}"
        );
        let ordinal: u64 = l["seq"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("seq is not a decimal ordinal: {l}"));
        ordinals.entry(shard).or_default().push(ordinal);
        let id = l["keys"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no keys.id: {l}"));
        assert_eq!(l["keys"].as_object().unwrap().len(), 1, "{l}");
        by_id.entry(id.to_string()).or_default().push(l.clone());
    }
    // Without a crash, a segment's ordinals are its places 1, 2, …, each once, in order.
    assert_eq!(ordinals.len(), segments, "segments with records");
    for (shard, ns) in &ordinals {
        assert_eq!(
            ns,
            &(1..=ns.len() as u64).collect::<Vec<_>>(),
            "segment {shard}: ordinals not 1, 2, … in order"
        );
    }
    // Every record's ts is when the snapshot began.
    let times: BTreeSet<String> = lines.iter().map(|l| l["ts"].to_string()).collect();
    assert_eq!(
        times.len(),
        1,
        "snapshot records with several ts: {times:?}"
    );
    by_id
}

/// A plain item of about `payload` bytes.
fn simple_item(id: &str, version: u64, payload: usize) -> Item {
    HashMap::from([
        ("id".to_string(), Av::S(id.to_string())),
        ("version".to_string(), Av::N(version.to_string())),
        ("payload".to_string(), Av::S("p".repeat(payload))),
    ])
}

fn snapshot_toml(mode: &str, segments: usize, page_size: usize, rate_limit: u64) -> String {
    format!(
        "mode = \"{mode}\"\nsegments = {segments}\npage_size = {page_size}\nrate_limit = \
         {rate_limit}\nconsistent_read = false"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_keeps_the_scan_within_its_capacity() {
    const N: usize = 2_000;
    const RATE: u64 = 60;
    const SEGS: usize = 4;
    let endpoint = aws_endpoint();
    let ddb = aws_sdk_dynamodb::Client::new(&sdk_config(&endpoint).await);
    let table = unique("snap-rate");
    let stream_arn = workload::create_table(&ddb, &table, StreamViewType::NewAndOldImages).await;
    let items: Vec<Item> = (0..N)
        .map(|i| simple_item(&format!("item-{i:04}"), 1, 2_000))
        .collect();
    load(&ddb, &table, &items).await;
    let capacity = scan_capacity(&items);
    let dir = tempfile::tempdir().unwrap();
    let label_of = |name: &str| format!("connector=\"{name}\"");

    let mut runs = Vec::new();
    for (name, rate) in [("unlimited", 0), ("limited", RATE)] {
        let out = dir.path().join(format!("{name}.jsonl"));
        let port = free_port();
        let connector = Connector {
            name,
            aws: endpoint.clone(),
            table: table.clone(),
            leases: unique("snap-rate-leases"),
            format: "plain",
            snapshot: snapshot_toml("initial_only", SEGS, 50, rate),
            sink: file_sink(&out),
        };
        let cfg = dir.path().join(format!("{name}.toml"));
        std::fs::write(&cfg, connector.toml(name, port)).unwrap();
        let started = Instant::now();
        let mut w = Running::start(&cfg, &dir.path().join(format!("{name}.log")));
        let exit = run_to_exit(&mut w, port, started, Duration::from_secs(120)).await;
        assert_eq!(
            exit.code,
            0,
            "the {name} initial_only run's exit status; its log ends:\n{}",
            tail_of(&exit.log, 6000)
        );
        // Every item in the output once, as it is in the table.
        let by_id = plain_snapshot_records(&out, &table, &stream_arn, SEGS);
        let problems: Vec<String> = items
            .iter()
            .filter_map(|item| {
                let id = id_of(item);
                let got = by_id.get(&id).map(Vec::as_slice).unwrap_or_default();
                match got {
                    [one] if normalized(&one["new"]) == plain(item) => None,
                    [_] => Some(format!("{id}: another image")),
                    _ => Some(format!("{id}: {} records", got.len())),
                }
            })
            .collect();
        assert!(
            problems.is_empty() && by_id.len() == N,
            "{name}: {} items not in the output exactly once as in the table ({}); {} ids in \
             the output for {N} items",
            problems.len(),
            first(&problems, 5),
            by_id.len()
        );
        runs.push((name, exit));
    }

    let (unlimited, limited) = (&runs[0].1, &runs[1].1);
    // A token bucket that starts with one second's worth.
    let floor = (capacity - RATE as f64) / RATE as f64;
    assert!(
        limited.elapsed.as_secs_f64() >= floor,
        "a scan of {capacity:.0} RCU at rate_limit {RATE} took {:?}, less than the \
         (capacity - 1 s of burst) / rate = {floor:.1} s it must take",
        limited.elapsed
    );
    let text = limited
        .metrics
        .as_deref()
        .expect("the limited run's metrics were scraped while it ran");
    let used = metric_value(
        text,
        "shardbridge_snapshot_read_capacity_units_total",
        &label_of("limited"),
    )
    .unwrap_or_else(|| {
        panic!(
            "no shardbridge_snapshot_read_capacity_units_total in the last scrape:\n{}",
            snapshot_metric_lines(text)
        )
    });
    assert!(
        (used - capacity).abs() <= capacity * 0.25,
        "shardbridge_snapshot_read_capacity_units_total is {used:.1}, not within 25% of the \
         {capacity:.1} RCU computed from the items (sum of sizes / 4 KB / 2)"
    );
    assert!(
        unlimited.elapsed.as_secs_f64() * 2.0 < limited.elapsed.as_secs_f64(),
        "rate_limit = 0 is not markedly faster: unlimited {:?}, limited to {RATE} RCU/s {:?}",
        unlimited.elapsed,
        limited.elapsed
    );
    eprintln!(
        "{capacity:.1} RCU: unlimited {:?}, at {RATE} RCU/s {:?} (floor {floor:.1} s); the \
         metric said {used:.1}",
        unlimited.elapsed, limited.elapsed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_only_exits_after_the_snapshot_and_reads_no_stream() {
    const N: usize = 1_000;
    const SEGS: usize = 3;
    let endpoint = aws_endpoint();
    let ddb = aws_sdk_dynamodb::Client::new(&sdk_config(&endpoint).await);
    let table = unique("snap-only");
    let leases = unique("snap-only-leases");
    let stream_arn = workload::create_table(&ddb, &table, StreamViewType::NewAndOldImages).await;
    let ids: Vec<String> = (0..N).map(|i| format!("item-{i:05}")).collect();
    let items: Vec<Item> = ids.iter().map(|id| rich_item(id, 1)).collect();
    load(&ddb, &table, &items).await;
    // About 4 s of scan: the writer's changes land while it runs.
    let rate = (scan_capacity(&items) / 4.0).ceil() as u64;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let port = free_port();
    let connector = Connector {
        name: "only",
        aws: endpoint.clone(),
        table: table.clone(),
        leases: leases.clone(),
        format: "plain",
        snapshot: snapshot_toml("initial_only", SEGS, 50, rate),
        sink: file_sink(&out),
    };
    let cfg = dir.path().join("only.toml");
    std::fs::write(&cfg, connector.toml("only", port)).unwrap();
    let started = Instant::now();
    let mut w = Running::start(&cfg, &dir.path().join("only.log"));

    // Changes from the snapshot's start on: in the stream, never in the output.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = lease_rows(&ddb, &leases).await;
        if segment_rows(&rows).iter().any(|r| r.started.is_some()) {
            break;
        }
        if let Some(status) = w.child.try_wait().unwrap() {
            panic!(
                "exited ({status}) before its segment leases were seen; log:\n{}",
                tail_of(&w.log_text(), 6000)
            );
        }
        assert!(
            Instant::now() < deadline,
            "no segment lease with snapshotStartedAtMillis after 60 s: {}",
            describe_rows(&rows)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_changes(
        ddb.clone(),
        table.clone(),
        ids.clone(),
        rich_item,
        stop.clone(),
    ));
    let exit = run_to_exit(&mut w, port, started, Duration::from_secs(90)).await;
    // A little more after the exit: nothing reads them.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let changes = writer.await.unwrap();
    assert_eq!(
        exit.code,
        0,
        "initial_only exits 0 once every segment is done; its log ends:\n{}",
        tail_of(&exit.log, 6000)
    );
    assert!(
        changes.total >= 20,
        "the writer made only {} changes while the snapshot ran ({:?})",
        changes.total,
        exit.elapsed
    );

    let rows = lease_rows(&ddb, &leases).await;
    let segs = segment_rows(&rows);
    assert!(
        segs.len() == SEGS && segs.iter().all(|r| is_done(r)),
        "at the exit every segment lease is at SHARD_END: {}",
        describe_rows(&rows)
    );
    let read_stream: Vec<&LeaseRow> = rows
        .iter()
        .filter(|r| !r.key.starts_with("snapshot-"))
        .filter(|r| {
            r.checkpoint
                .as_deref()
                .is_some_and(|c| c.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    assert!(
        read_stream.is_empty(),
        "stream shard leases checkpointed at a sequence number (the stream was read): \
         {read_stream:?}"
    );

    let by_id = plain_snapshot_records(&out, &table, &stream_arn, SEGS);
    let mut problems = Vec::new();
    for (id, records) in &by_id {
        let loaded = id.starts_with("item-");
        if records.len() != 1 {
            problems.push(format!("{id}: {} records", records.len()));
        }
        for r in records {
            let version = r["new"]["version"].as_u64().unwrap_or_default();
            if !changes.versions(id, loaded).contains(&version)
                || normalized(&r["new"]) != plain(&rich_item(id, version))
            {
                problems.push(format!("{id}: an image of version {version} it never had"));
            }
        }
    }
    for item in &items {
        let id = id_of(item);
        if !changes.touched(&id) && !by_id.contains_key(&id) {
            problems.push(format!("{id}: untouched, yet not in the snapshot"));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems in the snapshot of {N} items: {}",
        problems.len(),
        first(&problems, 10)
    );
    eprintln!(
        "initial_only: {} records, exit after {:?}, {} changes not delivered",
        by_id.values().map(Vec::len).sum::<usize>(),
        exit.elapsed,
        changes.total
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_is_skipped_when_the_connector_already_has_leases() {
    let endpoint = aws_endpoint();
    let ddb = aws_sdk_dynamodb::Client::new(&sdk_config(&endpoint).await);
    let table = unique("snap-skip");
    let leases = unique("snap-skip-leases");
    workload::create_table(&ddb, &table, StreamViewType::NewAndOldImages).await;
    let items: Vec<Item> = (0..30)
        .map(|i| simple_item(&format!("item-{i:02}"), 1, 100))
        .collect();
    load(&ddb, &table, &items).await;
    let dir = tempfile::tempdir().unwrap();
    let run = |mode: &str, n: usize| {
        let out = dir.path().join(format!("out{n}.jsonl"));
        let port = free_port();
        let connector = Connector {
            name: "skip",
            aws: endpoint.clone(),
            table: table.clone(),
            leases: leases.clone(),
            format: "plain",
            snapshot: format!("mode = \"{mode}\"\nsegments = 2"),
            sink: file_sink(&out),
        };
        let cfg = dir.path().join(format!("run{n}.toml"));
        std::fs::write(&cfg, connector.toml(&format!("worker-{n}"), port)).unwrap();
        (
            Running::start(&cfg, &dir.path().join(format!("run{n}.log"))),
            out,
        )
    };

    // With mode "never": the stream from its trim horizon, and the connector's lease.
    let (mut first_run, out1) = run("never", 1);
    wait_for("the 30 inserts", Duration::from_secs(60), || {
        (line_count(&out1) >= 30).then_some(())
    });
    assert_eq!(
        first_run.stop(Duration::from_secs(30)),
        0,
        "{}",
        first_run.log_text()
    );
    let rows = lease_rows(&ddb, &leases).await;
    assert!(
        !rows.is_empty() && segment_rows(&rows).is_empty(),
        "after mode \"never\": the shard's lease and no segment lease: {}",
        describe_rows(&rows)
    );

    // Restarted with mode "initial": it goes on with the stream, no snapshot.
    let (mut second_run, out2) = run("initial", 2);
    for item in items.iter().take(5) {
        let id = id_of(item);
        ddb.put_item()
            .table_name(&table)
            .set_item(Some(simple_item(&id, 2, 100)))
            .send()
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_lines(&out2)
        .iter()
        .filter(|l| l["op"] == "modify")
        .count()
        < 5
    {
        assert!(
            Instant::now() < deadline,
            "the 5 changes made after the restart were not delivered in 60 s; output: {:?}; \
             log:\n{}",
            read_lines(&out2),
            tail_of(&second_run.log_text(), 6000)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        second_run.stop(Duration::from_secs(30)),
        0,
        "{}",
        second_run.log_text()
    );
    let rows = lease_rows(&ddb, &leases).await;
    assert!(
        segment_rows(&rows).is_empty() && rows.iter().all(|r| r.started.is_none()),
        "no snapshot lease after a restart with mode \"initial\" on existing leases: {}",
        describe_rows(&rows)
    );
    let snapshots: Vec<Value> = read_lines(&out2)
        .into_iter()
        .filter(|l| l["op"] == "snapshot")
        .collect();
    assert!(
        snapshots.is_empty(),
        "{} snapshot records after a restart on existing leases: {}",
        snapshots.len(),
        first(&snapshots, 3)
    );
    let log = second_run.log_text();
    let why: Vec<&str> = log
        .lines()
        .filter(|l| {
            let l = l.to_lowercase();
            l.contains("snapshot") && l.contains("lease")
        })
        .collect();
    assert!(
        !why.is_empty(),
        "the log does not say why no snapshot was taken (a line naming the snapshot and the \
         existing leases); it ends:\n{}",
        tail_of(&log, 6000)
    );
}
