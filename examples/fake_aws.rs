//! A fast fake of the AWS calls shardbridge makes, for `scripts/bench_fake.sh` only (issue #14):
//! with moto and kinesalite the emulators set the pace, so records/s per core of the real
//! binary, with the real SDK and HTTP stack, cannot be measured against them. This serves on one
//! loopback port, by `X-Amz-Target` (the JSON protocols), with little work per call:
//!
//! - DynamoDB Streams: DescribeStream, GetShardIterator, GetRecords over `--shards` open shards
//!   holding `--records` changes in all: item `pk` = `item-NNNN` over `--keys` items (one item's
//!   changes on one shard, as DynamoDB keeps them), INSERT for an item's first change, then
//!   MODIFY with both images; each record is written out when a page asks for it, its
//!   ApproximateCreationDateTime the time of that GetRecords call.
//! - DynamoDB: DescribeTable (`--table` with its stream; any table created here), CreateTable,
//!   GetItem, PutItem, UpdateItem, DeleteItem and Scan on tables kept in memory, with the
//!   condition and update expressions evaluated (the subset shardbridge writes: `=`, `<>`, AND,
//!   OR, NOT, parentheses, attribute_exists, attribute_not_exists; SET, REMOVE, ADD), so the
//!   lease table's fencing behaves as DynamoDB's.
//! - Kinesis: ListShards (`--target-shards`), PutRecords: every entry counted and its data
//!   searched for a Lambda record's `eventID`, to count distinct ones.
//! - `GET /stats`: the counters as JSON, for the script.
//!
//! Any other call gets a 400 that names it, so a call missing here shows in the worker's log.
//!
//! Usage: fake_aws --listen 127.0.0.1:PORT [--table bench] [--shards 4] [--records 200000]
//!        [--keys 500] [--target-shards 4]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use base64::Engine;
use serde_json::{json, Map, Value};

type Item = Map<String, Value>;

struct Args {
    listen: String,
    table: String,
    shards: u64,
    records: u64,
    keys: u64,
    target_shards: u64,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        listen: String::new(),
        table: "bench".into(),
        shards: 4,
        records: 200_000,
        keys: 500,
        target_shards: 4,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => a.listen = value,
            "--table" => a.table = value,
            "--shards" => a.shards = value.parse()?,
            "--records" => a.records = value.parse()?,
            "--keys" => a.keys = value.parse()?,
            "--target-shards" => a.target_shards = value.parse()?,
            _ => bail!("unknown flag {flag}"),
        }
    }
    if a.listen.is_empty() || a.shards == 0 || a.keys == 0 || a.target_shards == 0 {
        bail!("usage: fake_aws --listen ADDR [--table T] [--shards S] [--records N] [--keys K] [--target-shards T]");
    }
    if a.keys % a.shards != 0 {
        bail!("--keys must be a multiple of --shards (each item's changes on one shard)");
    }
    Ok(a)
}

#[derive(Default)]
struct Stats {
    calls: BTreeMap<String, u64>,
    records_served: u64,
    put_entries: u64,
    put_calls: u64,
    event_ids: HashSet<[u8; 32]>,
    first_get_records_ms: u64,
    first_put_ms: u64,
    last_put_ms: u64,
    put_sequence: u64,
}

struct Table {
    key: String,
    items: BTreeMap<String, Item>,
}

struct Fake {
    args: Args,
    stats: Mutex<Stats>,
    tables: Mutex<HashMap<String, Table>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let fake = Arc::new(Fake {
        args,
        stats: Mutex::default(),
        tables: Mutex::default(),
    });
    let app = Router::new()
        .route("/stats", get(stats))
        .fallback(handle)
        .with_state(fake);
    eprintln!("fake_aws: listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn stats(State(fake): State<Arc<Fake>>) -> Response {
    let s = fake.stats.lock().unwrap();
    let body = json!({
        "calls": s.calls,
        "records_served": s.records_served,
        "put_entries": s.put_entries,
        "put_calls": s.put_calls,
        "distinct_event_ids": s.event_ids.len(),
        "first_get_records_ms": s.first_get_records_ms,
        "first_put_ms": s.first_put_ms,
        "last_put_ms": s.last_put_ms,
    });
    reply(StatusCode::OK, "application/json", body.to_string())
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Body::from(body))
        .expect("a valid response")
}

/// An error as the JSON protocols give it (the SDKs read the name after `#`).
fn error(kind: &str, message: &str) -> Response {
    let body = json!({
        "__type": format!("com.amazonaws.dynamodb.v20120810#{kind}"),
        "message": message,
    });
    reply(
        StatusCode::BAD_REQUEST,
        "application/x-amz-json-1.0",
        body.to_string(),
    )
}

async fn handle(State(fake): State<Arc<Fake>>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let (service, call) = target.split_once('.').unwrap_or(("", target.as_str()));
    *fake
        .stats
        .lock()
        .unwrap()
        .calls
        .entry(call.to_string())
        .or_default() += 1;
    let content_type = if service.starts_with("Kinesis") {
        "application/x-amz-json-1.1"
    } else {
        "application/x-amz-json-1.0"
    };
    if call == "PutRecords" {
        return match fake.put_records(&body) {
            Ok(out) => reply(StatusCode::OK, content_type, out),
            Err(e) => error("ValidationException", &e),
        };
    }
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error("SerializationException", &e.to_string()),
    };
    let out = match (service, call) {
        ("DynamoDBStreams_20120810", "DescribeStream") => Ok(fake.describe_stream(&req)),
        ("DynamoDBStreams_20120810", "GetShardIterator") => fake.get_shard_iterator(&req),
        ("DynamoDBStreams_20120810", "GetRecords") => {
            return match fake.get_records(&req) {
                Ok(out) => reply(StatusCode::OK, content_type, out),
                Err(e) => error("ValidationException", &e.1),
            }
        }
        ("Kinesis_20131202", "ListShards") => Ok(fake.list_target_shards()),
        ("Kinesis_20131202", "DescribeStreamSummary") => fake.describe_target(&req),
        ("DynamoDB_20120810", _) => fake.dynamodb(call, &req),
        _ => Err((
            "UnknownOperationException",
            format!("fake_aws does not serve {target}"),
        )),
    };
    match out {
        Ok(v) => reply(StatusCode::OK, content_type, v.to_string()),
        Err((kind, message)) => error(kind, &message),
    }
}

type CallResult<T> = std::result::Result<T, (&'static str, String)>;

fn invalid(message: impl Into<String>) -> (&'static str, String) {
    ("ValidationException", message.into())
}

fn str_field<'a>(req: &'a Value, name: &str) -> CallResult<&'a str> {
    req.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{name} missing")))
}

// ------------------------------------------------------------------------- DynamoDB Streams

impl Fake {
    fn stream_arn(&self) -> String {
        format!(
            "arn:aws:dynamodb:us-east-1:123456789012:table/{}/stream/2026-12-01T00:00:00.000",
            self.args.table
        )
    }

    fn shard_id(shard: u64) -> String {
        format!("shardId-{:020}-{:08x}", shard + 1, shard)
    }

    /// Records on `shard`: the changes k < records with k % shards == shard.
    fn shard_len(&self, shard: u64) -> u64 {
        let (n, s) = (self.args.records, self.args.shards);
        n / s + u64::from(shard < n % s)
    }

    fn describe_stream(&self, req: &Value) -> Value {
        // Open shards without parents: a child-shard lookup finds none.
        let children_only = req.get("ShardFilter").is_some();
        let shards: Vec<Value> = if children_only {
            Vec::new()
        } else {
            (0..self.args.shards)
                .map(|s| {
                    json!({
                        "ShardId": Self::shard_id(s),
                        "SequenceNumberRange": {"StartingSequenceNumber": format!("{:021}", 1)},
                    })
                })
                .collect()
        };
        json!({"StreamDescription": {
            "StreamArn": self.stream_arn(),
            "StreamLabel": "2026-12-01T00:00:00.000",
            "StreamStatus": "ENABLED",
            "StreamViewType": "NEW_AND_OLD_IMAGES",
            "TableName": self.args.table,
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "Shards": shards,
        }})
    }

    fn shard_of(&self, shard_id: &str) -> CallResult<u64> {
        (0..self.args.shards)
            .find(|s| Self::shard_id(*s) == shard_id)
            .ok_or_else(|| ("ResourceNotFoundException", format!("no shard {shard_id}")))
    }

    fn get_shard_iterator(&self, req: &Value) -> CallResult<Value> {
        let shard = self.shard_of(str_field(req, "ShardId")?)?;
        let seq = || -> CallResult<u64> {
            str_field(req, "SequenceNumber")?
                .parse()
                .map_err(|_| invalid("SequenceNumber is not a number"))
        };
        // Record j of a shard has sequence number j + 1.
        let at = match str_field(req, "ShardIteratorType")? {
            "TRIM_HORIZON" => 0,
            "LATEST" => self.shard_len(shard),
            "AT_SEQUENCE_NUMBER" => seq()?.saturating_sub(1),
            "AFTER_SEQUENCE_NUMBER" => seq()?,
            other => return Err(invalid(format!("ShardIteratorType {other}"))),
        };
        Ok(json!({"ShardIterator": format!("it-{shard}-{at}")}))
    }

    fn get_records(&self, req: &Value) -> CallResult<String> {
        let token = str_field(req, "ShardIterator")?;
        let (shard, at) = token
            .strip_prefix("it-")
            .and_then(|t| t.split_once('-'))
            .and_then(|(s, j)| Some((s.parse::<u64>().ok()?, j.parse::<u64>().ok()?)))
            .ok_or_else(|| invalid(format!("bad iterator {token}")))?;
        let limit = req.get("Limit").and_then(Value::as_u64).unwrap_or(1000);
        let end = (at + limit.clamp(1, 1000)).min(self.shard_len(shard));
        let now = now_ms();
        let mut out = String::with_capacity(((end - at) as usize) * 700 + 64);
        out.push_str(r#"{"Records":["#);
        for j in at..end {
            if j > at {
                out.push(',');
            }
            self.write_record(&mut out, shard, j, now);
        }
        out.push_str(&format!(r#"],"NextShardIterator":"it-{shard}-{end}"}}"#));
        let mut s = self.stats.lock().unwrap();
        s.records_served += end - at;
        if s.first_get_records_ms == 0 {
            s.first_get_records_ms = now;
        }
        Ok(out)
    }

    /// Record j of `shard`: change k = shard + j * shards, of item k % keys, its version
    /// k / keys + 1 (INSERT for version 1).
    fn write_record(&self, out: &mut String, shard: u64, j: u64, now_ms: u64) {
        use std::fmt::Write;
        let k = shard + j * self.args.shards;
        let item = k % self.args.keys;
        let version = k / self.args.keys + 1;
        let pad = "x".repeat(100);
        let image = |v: u64| {
            format!(
                r#"{{"pk":{{"S":"item-{item:04}"}},"version":{{"N":"{v}"}},"ts":{{"N":"{now_ms}"}},"pad":{{"S":"{pad}"}}}}"#
            )
        };
        let (name, old) = if version == 1 {
            ("INSERT", String::new())
        } else {
            ("MODIFY", format!(r#","OldImage":{}"#, image(version - 1)))
        };
        let _ = write!(
            out,
            r#"{{"eventID":"{k:032x}","eventName":"{name}","eventVersion":"1.1","eventSource":"aws:dynamodb","awsRegion":"us-east-1","dynamodb":{{"ApproximateCreationDateTime":{}.{:03},"Keys":{{"pk":{{"S":"item-{item:04}"}}}},"NewImage":{}{old},"SequenceNumber":"{:021}","SizeBytes":{},"StreamViewType":"NEW_AND_OLD_IMAGES"}}}}"#,
            now_ms / 1000,
            now_ms % 1000,
            image(version),
            j + 1,
            if version == 1 { 140 } else { 270 },
        );
    }
}

// ---------------------------------------------------------------------------------- Kinesis

impl Fake {
    fn list_target_shards(&self) -> Value {
        let n = u128::from(self.args.target_shards);
        let size = u128::MAX / n;
        let shards: Vec<Value> = (0..n)
            .map(|i| {
                let end = if i + 1 == n {
                    u128::MAX
                } else {
                    (i + 1) * size - 1
                };
                json!({
                    "ShardId": format!("shardId-{i:012}"),
                    "HashKeyRange": {
                        "StartingHashKey": (i * size).to_string(),
                        "EndingHashKey": end.to_string(),
                    },
                    "SequenceNumberRange": {"StartingSequenceNumber": "0"},
                })
            })
            .collect();
        json!({ "Shards": shards })
    }

    fn describe_target(&self, req: &Value) -> CallResult<Value> {
        let name = match req.get("StreamName").and_then(Value::as_str) {
            Some(name) => name.to_string(),
            None => str_field(req, "StreamARN")?
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string(),
        };
        Ok(json!({"StreamDescriptionSummary": {
            "StreamName": name,
            "StreamARN": format!("arn:aws:kinesis:us-east-1:123456789012:stream/{name}"),
            "StreamStatus": "ACTIVE",
            "RetentionPeriodHours": 24,
            "StreamCreationTimestamp": 1_796_000_000,
            "EnhancedMonitoring": [],
            "OpenShardCount": self.args.target_shards,
        }}))
    }

    fn put_records(&self, body: &[u8]) -> std::result::Result<String, String> {
        #[derive(serde::Deserialize)]
        struct Entry<'a> {
            #[serde(rename = "Data", borrow)]
            data: std::borrow::Cow<'a, str>,
        }
        #[derive(serde::Deserialize)]
        struct Req<'a> {
            #[serde(rename = "Records", borrow)]
            records: Vec<Entry<'a>>,
        }
        let req: Req = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let needle = br#""eventID":""#;
        let mut ids = Vec::with_capacity(req.records.len());
        for entry in &req.records {
            let data = b64
                .decode(entry.data.as_bytes())
                .map_err(|e| format!("Data is not base64: {e}"))?;
            if let Some(at) = data.windows(needle.len()).position(|w| w == needle) {
                let start = at + needle.len();
                if let Some(id) = data.get(start..start + 32) {
                    let mut key = [0u8; 32];
                    key.copy_from_slice(id);
                    ids.push(key);
                }
            }
        }
        let now = now_ms();
        let mut s = self.stats.lock().unwrap();
        s.put_calls += 1;
        s.put_entries += req.records.len() as u64;
        if s.first_put_ms == 0 {
            s.first_put_ms = now;
        }
        s.last_put_ms = now;
        s.event_ids.extend(ids);
        let first = s.put_sequence;
        s.put_sequence += req.records.len() as u64;
        drop(s);
        let shards = self.args.target_shards;
        let results: Vec<Value> = (first..first + req.records.len() as u64)
            .map(|q| {
                json!({
                    "SequenceNumber": format!("{q:056}"),
                    "ShardId": format!("shardId-{:012}", q % shards),
                })
            })
            .collect();
        Ok(json!({"FailedRecordCount": 0, "Records": results}).to_string())
    }
}

// --------------------------------------------------------------------------------- DynamoDB

impl Fake {
    fn dynamodb(&self, call: &str, req: &Value) -> CallResult<Value> {
        let name = str_field(req, "TableName")?.to_string();
        if call == "DescribeTable" && name == self.args.table {
            return Ok(json!({"Table": {
                "TableName": name,
                "TableStatus": "ACTIVE",
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "StreamSpecification": {"StreamEnabled": true, "StreamViewType": "NEW_AND_OLD_IMAGES"},
                "LatestStreamArn": self.stream_arn(),
                "LatestStreamLabel": "2026-12-01T00:00:00.000",
            }}));
        }
        let mut tables = self.tables.lock().unwrap();
        if call == "CreateTable" {
            if tables.contains_key(&name) {
                return Err(("ResourceInUseException", format!("table {name} exists")));
            }
            let key = req["KeySchema"]
                .as_array()
                .and_then(|k| k.iter().find(|e| e["KeyType"] == "HASH"))
                .and_then(|e| e["AttributeName"].as_str())
                .ok_or_else(|| invalid("KeySchema has no HASH key"))?
                .to_string();
            tables.insert(
                name.clone(),
                Table {
                    key,
                    items: BTreeMap::new(),
                },
            );
            return Ok(json!({"TableDescription": describe(&name, &tables[&name])}));
        }
        let table = tables.get_mut(&name).ok_or_else(|| {
            (
                "ResourceNotFoundException",
                format!("Requested resource not found: Table: {name} not found"),
            )
        })?;
        let names = req
            .get("ExpressionAttributeNames")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let values = req
            .get("ExpressionAttributeValues")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let exprs = Exprs {
            names: &names,
            values: &values,
        };
        let condition = |item: Option<&Item>| -> CallResult<()> {
            match req.get("ConditionExpression").and_then(Value::as_str) {
                None => Ok(()),
                Some(c) => match exprs.condition(c, item) {
                    Ok(true) => Ok(()),
                    Ok(false) => Err((
                        "ConditionalCheckFailedException",
                        "The conditional request failed".into(),
                    )),
                    Err(e) => Err(invalid(e)),
                },
            }
        };
        match call {
            "DescribeTable" => Ok(json!({"Table": describe(&name, table)})),
            "GetItem" => {
                let key = table.key_of(req.get("Key"))?;
                Ok(match table.items.get(&key) {
                    Some(item) => json!({ "Item": item }),
                    None => json!({}),
                })
            }
            "PutItem" => {
                let item = req
                    .get("Item")
                    .and_then(Value::as_object)
                    .cloned()
                    .ok_or_else(|| invalid("Item missing"))?;
                let key = table.key_of(req.get("Item"))?;
                condition(table.items.get(&key))?;
                table.items.insert(key, item);
                Ok(json!({}))
            }
            "UpdateItem" => {
                let key_value = req.get("Key").ok_or_else(|| invalid("Key missing"))?;
                let key = table.key_of(Some(key_value))?;
                condition(table.items.get(&key))?;
                let mut item = table
                    .items
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| key_value.as_object().cloned().unwrap_or_default());
                if let Some(update) = req.get("UpdateExpression").and_then(Value::as_str) {
                    exprs.update(update, &mut item).map_err(invalid)?;
                }
                let out = match req.get("ReturnValues").and_then(Value::as_str) {
                    Some("ALL_NEW") => json!({ "Attributes": item }),
                    _ => json!({}),
                };
                table.items.insert(key, item);
                Ok(out)
            }
            "DeleteItem" => {
                let key = table.key_of(req.get("Key"))?;
                condition(table.items.get(&key))?;
                table.items.remove(&key);
                Ok(json!({}))
            }
            "Scan" => {
                let start = match req.get("ExclusiveStartKey") {
                    Some(k) => Some(table.key_of(Some(k))?),
                    None => None,
                };
                let limit = req.get("Limit").and_then(Value::as_u64).unwrap_or(u64::MAX);
                let mut items = Vec::new();
                let mut last = None;
                for (k, item) in table.items.iter() {
                    if start.as_ref().is_some_and(|s| k <= s) {
                        continue;
                    }
                    if items.len() as u64 == limit {
                        last = Some(json!({ table.key.clone(): item[&table.key].clone() }));
                        break;
                    }
                    items.push(Value::Object(item.clone()));
                }
                let mut out =
                    json!({"Items": items, "Count": items.len(), "ScannedCount": items.len()});
                if let Some(last) = last {
                    out["LastEvaluatedKey"] = last;
                }
                Ok(out)
            }
            other => Err((
                "UnknownOperationException",
                format!("fake_aws does not serve DynamoDB {other}"),
            )),
        }
    }
}

fn describe(name: &str, table: &Table) -> Value {
    json!({
        "TableName": name,
        "TableStatus": "ACTIVE",
        "KeySchema": [{"AttributeName": table.key, "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": table.key, "AttributeType": "S"}],
        "BillingModeSummary": {"BillingMode": "PAY_PER_REQUEST"},
        "ItemCount": table.items.len(),
    })
}

impl Table {
    /// The map key of an item: its key attribute's value as JSON.
    fn key_of(&self, key: Option<&Value>) -> CallResult<String> {
        key.and_then(|k| k.get(&self.key))
            .map(|v| v.to_string())
            .ok_or_else(|| invalid(format!("no {} in the key", self.key)))
    }
}

/// The expressions of one call, with its attribute names and values.
struct Exprs<'a> {
    names: &'a Map<String, Value>,
    values: &'a Map<String, Value>,
}

fn tokenize(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() || "(),=<>+-".contains(c) {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            if !c.is_whitespace() {
                let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
                if two == "<>" || two == "<=" || two == ">=" {
                    out.push(two);
                    i += 1;
                } else {
                    out.push(c.to_string());
                }
            }
        } else {
            cur.push(c);
        }
        i += 1;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

struct Tokens {
    t: Vec<String>,
    i: usize,
}

impl Tokens {
    fn peek(&self) -> Option<&str> {
        self.t.get(self.i).map(String::as_str)
    }
    fn next(&mut self) -> Result<String, String> {
        let t = self.t.get(self.i).cloned().ok_or("expression ends early")?;
        self.i += 1;
        Ok(t)
    }
    fn expect(&mut self, what: &str) -> Result<(), String> {
        match self.next()? {
            t if t == what => Ok(()),
            t => Err(format!("expected {what}, found {t}")),
        }
    }
    fn keyword(&self, k: &str) -> bool {
        self.peek().is_some_and(|t| t.eq_ignore_ascii_case(k))
    }
}

fn number(v: &Value) -> Option<f64> {
    v.get("N")?.as_str()?.parse().ok()
}

fn same(a: &Value, b: &Value) -> bool {
    match (number(a), number(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

impl Exprs<'_> {
    fn name(&self, token: &str) -> Result<String, String> {
        if token.starts_with('#') {
            self.names
                .get(token)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("{token} is not in ExpressionAttributeNames"))
        } else {
            Ok(token.to_string())
        }
    }

    fn operand(&self, token: &str, item: Option<&Item>) -> Result<Option<Value>, String> {
        if token.starts_with(':') {
            return self
                .values
                .get(token)
                .cloned()
                .map(Some)
                .ok_or_else(|| format!("{token} is not in ExpressionAttributeValues"));
        }
        let name = self.name(token)?;
        Ok(item.and_then(|i| i.get(&name)).cloned())
    }

    fn condition(&self, expr: &str, item: Option<&Item>) -> Result<bool, String> {
        let mut t = Tokens {
            t: tokenize(expr),
            i: 0,
        };
        let v = self.or(&mut t, item)?;
        match t.peek() {
            None => Ok(v),
            Some(rest) => Err(format!("unexpected {rest} in {expr}")),
        }
    }

    fn or(&self, t: &mut Tokens, item: Option<&Item>) -> Result<bool, String> {
        let mut v = self.and(t, item)?;
        while t.keyword("OR") {
            t.i += 1;
            let w = self.and(t, item)?;
            v = v || w;
        }
        Ok(v)
    }

    fn and(&self, t: &mut Tokens, item: Option<&Item>) -> Result<bool, String> {
        let mut v = self.not(t, item)?;
        while t.keyword("AND") {
            t.i += 1;
            let w = self.not(t, item)?;
            v = v && w;
        }
        Ok(v)
    }

    fn not(&self, t: &mut Tokens, item: Option<&Item>) -> Result<bool, String> {
        if t.keyword("NOT") {
            t.i += 1;
            return Ok(!self.not(t, item)?);
        }
        if t.peek() == Some("(") {
            t.i += 1;
            let v = self.or(t, item)?;
            t.expect(")")?;
            return Ok(v);
        }
        let first = t.next()?;
        if first == "attribute_exists" || first == "attribute_not_exists" {
            t.expect("(")?;
            let name = self.name(&t.next()?)?;
            t.expect(")")?;
            let exists = item.is_some_and(|i| i.contains_key(&name));
            return Ok(exists == (first == "attribute_exists"));
        }
        let left = self.operand(&first, item)?;
        let op = t.next()?;
        let right = self.operand(&t.next()?, item)?;
        let equal = match (&left, &right) {
            (Some(a), Some(b)) => same(a, b),
            _ => false,
        };
        match op.as_str() {
            "=" => Ok(equal),
            "<>" => Ok(left.is_some() && right.is_some() && !equal),
            other => Err(format!("comparison {other} is not served")),
        }
    }

    fn update(&self, expr: &str, item: &mut Item) -> Result<(), String> {
        let mut t = Tokens {
            t: tokenize(expr),
            i: 0,
        };
        while let Some(clause) = t.peek().map(str::to_ascii_uppercase) {
            t.i += 1;
            loop {
                let name = self.name(&t.next()?)?;
                match clause.as_str() {
                    "SET" => {
                        t.expect("=")?;
                        let value = self
                            .operand(&t.next()?, Some(item))?
                            .ok_or("SET from a missing attribute")?;
                        if matches!(t.peek(), Some("+") | Some("-")) {
                            return Err("arithmetic in SET is not served".into());
                        }
                        item.insert(name, value);
                    }
                    "REMOVE" => {
                        item.remove(&name);
                    }
                    "ADD" => {
                        let add = self.operand(&t.next()?, Some(item))?.ok_or("ADD nothing")?;
                        let sum = match (item.get(&name), number(&add)) {
                            (None, Some(_)) => add,
                            (Some(old), Some(x)) => {
                                let y = number(old).ok_or("ADD to a non-number")?;
                                json!({"N": format!("{}", x + y)})
                            }
                            _ => return Err("ADD of a set is not served".into()),
                        };
                        item.insert(name, sum);
                    }
                    other => return Err(format!("update clause {other} is not served")),
                }
                if t.peek() == Some(",") {
                    t.i += 1;
                } else {
                    break;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exprs_eval(cond: &str, item: Option<&Item>) -> bool {
        let names = json!({"#o": "leaseOwner", "#c": "leaseCounter", "#cp": "checkpoint"});
        let values = json!({":o": {"S": "w1"}, ":c": {"N": "3"}, ":from": {"S": "TRIM_HORIZON"}});
        Exprs {
            names: names.as_object().unwrap(),
            values: values.as_object().unwrap(),
        }
        .condition(cond, item)
        .unwrap()
    }

    #[test]
    fn conditions_are_evaluated_as_dynamodb_does() {
        let item = json!({"leaseOwner": {"S": "w1"}, "leaseCounter": {"N": "3"}});
        let item = item.as_object().unwrap();
        assert!(exprs_eval("#o = :o AND #c = :c", Some(item)));
        assert!(!exprs_eval("#o = :o AND #c = :c", None));
        assert!(exprs_eval(
            "#o = :o AND #c = :c AND (#cp = :from OR attribute_not_exists(#cp))",
            Some(item)
        ));
        assert!(!exprs_eval("attribute_not_exists(#o)", Some(item)));
        assert!(exprs_eval("NOT attribute_exists(#cp)", Some(item)));
        assert!(!exprs_eval("#c <> :c", Some(item)));
    }

    #[test]
    fn updates_set_remove_and_add() {
        let names = json!({"#o": "leaseOwner", "#c": "leaseCounter", "#p": "pending"});
        let values = json!({":o": {"S": "w2"}, ":one": {"N": "1"}});
        let e = Exprs {
            names: names.as_object().unwrap(),
            values: values.as_object().unwrap(),
        };
        let mut item = json!({"leaseCounter": {"N": "4"}, "pending": {"S": "x"}})
            .as_object()
            .unwrap()
            .clone();
        e.update("REMOVE #p SET #o = :o ADD #c :one", &mut item)
            .unwrap();
        assert_eq!(
            Value::Object(item),
            json!({"leaseCounter": {"N": "5"}, "leaseOwner": {"S": "w2"}})
        );
    }
}
