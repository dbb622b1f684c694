//! `KinesisSource` against kinesalite, a real Kinesis server: listing shards (with split and
//! merge lineage), reading every shard from each iterator position, closed shards ending with
//! SHARD_END, and a missing stream.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::StreamStatus;
use shardbridge::source::kinesis::{KinesisSource, KinesisStreamRef};
use shardbridge::source::record::{KinesisRecord, SourceRecord};
use shardbridge::source::sequence::SequenceNumber;
use shardbridge::source::{IteratorPosition, Shard, ShardSource, SourceError};

struct Kinesis {
    sdk_config: aws_config::SdkConfig,
    client: aws_sdk_kinesis::Client,
}

async fn kinesis() -> Kinesis {
    let sdk_config = common::sdk_config(&common::kinesis_endpoint()).await;
    let client = aws_sdk_kinesis::Client::new(&sdk_config);
    Kinesis { sdk_config, client }
}

/// Hash keys: a new stream of two shards splits the 128-bit range at 2^127.
const LOW: u128 = 1;
const MID: u128 = (1 << 126) + 1;
const HIGH: u128 = (1 << 127) + 1;
/// Where the split below cuts the first shard.
const SPLIT_AT: u128 = 1 << 126;

/// What a put returned, and what went in.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Put {
    shard_id: String,
    sequence_number: SequenceNumber,
    partition_key: String,
    data: Vec<u8>,
}

impl Kinesis {
    async fn create_stream(&self, name: &str, shards: i32) {
        self.client
            .create_stream()
            .stream_name(name)
            .shard_count(shards)
            .send()
            .await
            .expect("CreateStream");
        self.wait_active(name).await;
    }

    async fn wait_active(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self
                .client
                .describe_stream_summary()
                .stream_name(name)
                .send()
                .await
                .expect("DescribeStreamSummary");
            let status = out
                .stream_description_summary()
                .unwrap()
                .stream_status()
                .clone();
            if status == StreamStatus::Active {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "stream {name} not ACTIVE after 20 s: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn put(&self, stream: &str, key: &str, data: &[u8], hash_key: Option<u128>) -> Put {
        let out = self
            .client
            .put_record()
            .stream_name(stream)
            .partition_key(key)
            .data(Blob::new(data.to_vec()))
            .set_explicit_hash_key(hash_key.map(|h| h.to_string()))
            .send()
            .await
            .expect("PutRecord");
        Put {
            shard_id: out.shard_id().to_string(),
            sequence_number: SequenceNumber::parse(out.sequence_number()).unwrap(),
            partition_key: key.to_string(),
            data: data.to_vec(),
        }
    }

    async fn source(&self, stream: &str) -> KinesisSource {
        KinesisSource::connect(
            &self.sdk_config,
            &KinesisStreamRef::Name(stream.to_string()),
        )
        .await
        .expect("connect")
    }
}

fn kinesis_record(r: SourceRecord) -> KinesisRecord {
    match r {
        SourceRecord::Kinesis(k) => k,
        other => panic!("not a Kinesis record: {other:?}"),
    }
}

fn as_put(r: &KinesisRecord) -> Put {
    Put {
        shard_id: r.source.shard_id.clone(),
        sequence_number: r.source.sequence_number.clone(),
        partition_key: r.partition_key.clone(),
        data: r.data.clone(),
    }
}

/// Reads an open shard from `position` until `expected` records have come and a page is empty.
async fn read_open(
    source: &KinesisSource,
    shard_id: &str,
    position: IteratorPosition,
    expected: usize,
    limit: u32,
) -> Vec<KinesisRecord> {
    let mut iterator = source.open_iterator(shard_id, &position).await.unwrap();
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = source.get_records(&iterator, limit).await.unwrap();
        assert!(page.records.len() <= limit as usize, "limit ignored");
        assert!(page.millis_behind_latest.is_some(), "MillisBehindLatest");
        let empty = page.records.is_empty();
        records.extend(page.records.into_iter().map(kinesis_record));
        iterator = page
            .next_iterator
            .unwrap_or_else(|| panic!("open shard {shard_id} ended"));
        if empty && records.len() >= expected {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "shard {shard_id}: {} of {expected} records after 20 s",
            records.len()
        );
        if empty {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Reads a closed shard from the trim horizon until GetRecords gives no next iterator.
async fn read_closed(source: &KinesisSource, shard_id: &str) -> Vec<KinesisRecord> {
    let mut iterator = source
        .open_iterator(shard_id, &IteratorPosition::TrimHorizon)
        .await
        .unwrap();
    let mut records = Vec::new();
    for _ in 0..200 {
        let page = source.get_records(&iterator, 3).await.unwrap();
        records.extend(page.records.into_iter().map(kinesis_record));
        match page.next_iterator {
            Some(next) => {
                assert_eq!(next.shard_id, shard_id);
                iterator = next;
            }
            None => return records,
        }
    }
    panic!("closed shard {shard_id} never reached SHARD_END");
}

/// Each record as it was put, the identity right, in strictly increasing sequence order.
fn check_read(source: &KinesisSource, shard_id: &str, read: &[KinesisRecord], expected: &[Put]) {
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 600_000;
    for r in read {
        assert_eq!(r.source.stream_arn, source.stream_arn());
        assert_eq!(r.source.shard_id, shard_id);
        assert_eq!(r.aws_region, "us-east-1");
        let arrival = r.approximate_arrival_millis.expect("arrival time");
        assert!(arrival > started, "arrival {arrival}");
    }
    for w in read.windows(2) {
        assert!(
            w[0].source.sequence_number < w[1].source.sequence_number,
            "shard {shard_id}: out of order"
        );
    }
    let got: Vec<Put> = read.iter().map(as_put).collect();
    assert_eq!(got, expected, "shard {shard_id}");
}

fn shard<'a>(shards: &'a [Shard], id: &str) -> &'a Shard {
    shards
        .iter()
        .find(|s| s.shard_id == id)
        .unwrap_or_else(|| panic!("shard {id} not listed: {shards:?}"))
}

fn puts_in(puts: &[Put], shard_id: &str) -> Vec<Put> {
    puts.iter()
        .filter(|p| p.shard_id == shard_id)
        .cloned()
        .collect()
}

#[tokio::test]
async fn reads_every_record_of_a_two_shard_stream_once() {
    let k = kinesis().await;
    let stream = common::unique("sb-kin-read");
    k.create_stream(&stream, 2).await;

    let mut puts = Vec::new();
    for i in 0..40u32 {
        // Text, bytes that are not UTF-8, and empty data; keys hashed by Kinesis, plus a few
        // pinned to each shard so that both certainly have records.
        let data: Vec<u8> = match i % 3 {
            0 => format!("record {i} ✓").into_bytes(),
            1 => vec![i as u8, 0x00, 0xfe, 0xff, b'\n', b'"'],
            _ => Vec::new(),
        };
        let key = format!("pk-{i}-ключ");
        let hash = match i % 10 {
            0 => Some(LOW),
            5 => Some(HIGH),
            _ => None,
        };
        puts.push(k.put(&stream, &key, &data, hash).await);
    }

    let source = k.source(&stream).await;
    assert!(
        source.stream_arn().starts_with("arn:aws:kinesis:")
            && source.stream_arn().ends_with(&format!(":stream/{stream}")),
        "{}",
        source.stream_arn()
    );
    assert_eq!(source.region(), "us-east-1");

    let shards = source.list_shards().await.unwrap();
    assert_eq!(shards.len(), 2, "{shards:?}");
    for s in &shards {
        assert_eq!(s.parents().count(), 0, "{s:?}");
        assert!(s.starting_sequence_number.is_some(), "{s:?}");
        assert_eq!(s.ending_sequence_number, None, "{s:?}");
    }

    let mut read_total = 0;
    for s in &shards {
        let expected = puts_in(&puts, &s.shard_id);
        assert!(!expected.is_empty(), "no records put to {}", s.shard_id);
        let read = read_open(
            &source,
            &s.shard_id,
            IteratorPosition::TrimHorizon,
            expected.len(),
            7,
        )
        .await;
        check_read(&source, &s.shard_id, &read, &expected);
        read_total += read.len();

        // AFTER_SEQUENCE_NUMBER resumes right after a record.
        let after = read[2].source.sequence_number.clone();
        let rest = read_open(
            &source,
            &s.shard_id,
            IteratorPosition::AfterSequenceNumber(after),
            expected.len() - 3,
            10_000,
        )
        .await;
        check_read(&source, &s.shard_id, &rest, &expected[3..]);
    }
    assert_eq!(read_total, puts.len(), "every record exactly once");
    let sequence_numbers: BTreeSet<_> = puts.iter().map(|p| &p.sequence_number).collect();
    assert_eq!(sequence_numbers.len(), puts.len());

    // LATEST: only what is put after the iterator was opened.
    let first = &shards[0].shard_id;
    let mut latest = source
        .open_iterator(first, &IteratorPosition::Latest)
        .await
        .unwrap();
    // puts[0] was pinned to LOW, puts[5] to HIGH: one hash key for each shard.
    let hash = if &puts[0].shard_id == first {
        LOW
    } else {
        HIGH
    };
    let late = k.put(&stream, "late", b"after LATEST", Some(hash)).await;
    assert_eq!(&late.shard_id, first);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while got.is_empty() {
        assert!(
            Instant::now() < deadline,
            "record put after LATEST not read"
        );
        let page = source.get_records(&latest, 100).await.unwrap();
        got.extend(page.records.into_iter().map(kinesis_record));
        latest = page.next_iterator.unwrap();
    }
    assert_eq!(got.iter().map(as_put).collect::<Vec<_>>(), [late]);
}

#[tokio::test]
async fn split_and_merge_close_parents_and_list_the_lineage() {
    let k = kinesis().await;
    let stream = common::unique("sb-kin-lineage");
    k.create_stream(&stream, 2).await;

    let mut before_split = Vec::new();
    for (i, hash) in [LOW, MID, HIGH, LOW, MID, HIGH].into_iter().enumerate() {
        before_split.push(
            k.put(
                &stream,
                &format!("a{i}"),
                format!("before split {i}").as_bytes(),
                Some(hash),
            )
            .await,
        );
    }
    let parent = before_split[0].shard_id.clone();
    let right = before_split[2].shard_id.clone();
    assert_ne!(parent, right);
    assert_eq!(
        before_split[1].shard_id, parent,
        "MID is in the first shard"
    );

    k.client
        .split_shard()
        .stream_name(&stream)
        .shard_to_split(&parent)
        .new_starting_hash_key(SPLIT_AT.to_string())
        .send()
        .await
        .expect("SplitShard");
    k.wait_active(&stream).await;

    let mut after_split = Vec::new();
    for (i, hash) in [LOW, MID, LOW, MID].into_iter().enumerate() {
        after_split.push(
            k.put(
                &stream,
                &format!("b{i}"),
                format!("after split {i}").as_bytes(),
                Some(hash),
            )
            .await,
        );
    }
    let low_child = after_split[0].shard_id.clone();
    let mid_child = after_split[1].shard_id.clone();
    for p in &after_split {
        assert!(
            p.shard_id != parent && p.shard_id != right,
            "record put after the split landed in {}",
            p.shard_id
        );
    }
    assert_ne!(low_child, mid_child);

    // The upper child and the second original shard are adjacent: merge them.
    k.client
        .merge_shards()
        .stream_name(&stream)
        .shard_to_merge(&mid_child)
        .adjacent_shard_to_merge(&right)
        .send()
        .await
        .expect("MergeShards");
    k.wait_active(&stream).await;

    let mut after_merge = Vec::new();
    for (i, hash) in [MID, HIGH, LOW].into_iter().enumerate() {
        after_merge.push(
            k.put(
                &stream,
                &format!("c{i}"),
                format!("after merge {i}").as_bytes(),
                Some(hash),
            )
            .await,
        );
    }
    let merged = after_merge[0].shard_id.clone();
    assert_eq!(after_merge[1].shard_id, merged);
    assert_eq!(after_merge[2].shard_id, low_child);

    let source = k.source(&stream).await;
    let shards = source.list_shards().await.unwrap();
    assert_eq!(shards.len(), 5, "{shards:?}");
    let ids: BTreeSet<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
    assert_eq!(ids.len(), 5, "each shard once");

    // Closed: the split parent, and both merge parents.
    for closed in [&parent, &right, &mid_child] {
        let s = shard(&shards, closed);
        let end = s
            .ending_sequence_number
            .as_ref()
            .unwrap_or_else(|| panic!("{s:?} closed"));
        assert!(s.starting_sequence_number.as_ref().unwrap() <= end, "{s:?}");
    }
    for open in [&low_child, &merged] {
        assert_eq!(shard(&shards, open).ending_sequence_number, None);
    }
    // Lineage.
    assert_eq!(shard(&shards, &parent).parents().count(), 0);
    assert_eq!(shard(&shards, &right).parents().count(), 0);
    for child in [&low_child, &mid_child] {
        let s = shard(&shards, child);
        assert_eq!(s.parent_shard_id.as_deref(), Some(parent.as_str()), "{s:?}");
        assert_eq!(s.adjacent_parent_shard_id, None, "{s:?}");
    }
    let m = shard(&shards, &merged);
    assert_eq!(
        m.parent_shard_id.as_deref(),
        Some(mid_child.as_str()),
        "{m:?}"
    );
    assert_eq!(
        m.adjacent_parent_shard_id.as_deref(),
        Some(right.as_str()),
        "{m:?}"
    );
    // Children start after their parents end.
    let ending = |id: &str| shard(&shards, id).ending_sequence_number.clone().unwrap();
    let starting = |id: &str| shard(&shards, id).starting_sequence_number.clone().unwrap();
    assert!(starting(&low_child) > ending(&parent));
    assert!(starting(&mid_child) > ending(&parent));
    assert!(starting(&merged) > ending(&mid_child));
    assert!(starting(&merged) > ending(&right));

    let all: Vec<Put> = before_split
        .iter()
        .chain(&after_split)
        .chain(&after_merge)
        .cloned()
        .collect();

    // Closed shards: every record, then SHARD_END (no next iterator), every record of each
    // before its ending sequence number.
    for closed in [&parent, &right, &mid_child] {
        let read = read_closed(&source, closed).await;
        let expected = puts_in(&all, closed);
        assert!(!expected.is_empty(), "{closed}");
        check_read(&source, closed, &read, &expected);
        assert!(read
            .iter()
            .all(|r| r.source.sequence_number <= ending(closed)));
    }
    // Open children: what was put after the split and merge.
    for open in [&low_child, &merged] {
        let expected = puts_in(&all, open);
        let read = read_open(
            &source,
            open,
            IteratorPosition::TrimHorizon,
            expected.len(),
            2,
        )
        .await;
        check_read(&source, open, &read, &expected);
    }
    // Together: every record in exactly one shard.
    let per_shard: BTreeMap<&str, usize> = all.iter().fold(BTreeMap::new(), |mut m, p| {
        *m.entry(p.shard_id.as_str()).or_default() += 1;
        m
    });
    assert_eq!(per_shard.values().sum::<usize>(), all.len());
    assert_eq!(per_shard.len(), 5, "{per_shard:?}");
}

#[tokio::test]
async fn a_missing_stream_is_stream_not_found() {
    let k = kinesis().await;
    let missing = common::unique("sb-kin-missing");
    match KinesisSource::connect(&k.sdk_config, &KinesisStreamRef::Name(missing.clone())).await {
        Err(SourceError::StreamNotFound(text)) => {
            assert!(text.contains("DescribeStreamSummary"), "{text}")
        }
        Err(other) => panic!("expected StreamNotFound, got {other:?}"),
        Ok(_) => panic!("connected to a stream that does not exist"),
    }

    // A stream deleted after connecting: listing its shards says so.
    let stream = common::unique("sb-kin-deleted");
    k.create_stream(&stream, 1).await;
    let source = k.source(&stream).await;
    assert_eq!(source.list_shards().await.unwrap().len(), 1);
    k.client
        .delete_stream()
        .stream_name(&stream)
        .send()
        .await
        .expect("DeleteStream");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match source.list_shards().await {
            // Still DELETING.
            Ok(_) => {}
            Err(SourceError::StreamNotFound(_)) => break,
            Err(other) => panic!("expected StreamNotFound, got {other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "stream {stream} still listed after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// kinesalite knows no StreamARN parameter; moto's Kinesis does. So a stream configured by ARN
/// (what cross-account access needs) is read there.
#[tokio::test]
async fn reads_a_stream_configured_by_arn_against_moto() {
    let sdk_config = common::sdk_config(&common::aws_endpoint()).await;
    let client = aws_sdk_kinesis::Client::new(&sdk_config);
    let k = Kinesis { sdk_config, client };
    let stream = common::unique("sb-kin-arn");
    k.create_stream(&stream, 3).await;
    let arn = k
        .client
        .describe_stream_summary()
        .stream_name(&stream)
        .send()
        .await
        .unwrap()
        .stream_description_summary()
        .unwrap()
        .stream_arn()
        .to_string();
    let put = k.put(&stream, "by-arn", b"read by ARN", None).await;

    let source = KinesisSource::connect(&k.sdk_config, &KinesisStreamRef::Arn(arn.clone()))
        .await
        .expect("connect by ARN");
    assert_eq!(source.stream_arn(), arn);
    assert_eq!(source.stream_name(), stream);
    let shards = source.list_shards().await.unwrap();
    let ids: BTreeSet<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
    assert_eq!((shards.len(), ids.len()), (3, 3), "{shards:?}");
    assert!(ids.contains(put.shard_id.as_str()));

    let read = read_open(
        &source,
        &put.shard_id,
        IteratorPosition::TrimHorizon,
        1,
        100,
    )
    .await;
    assert_eq!(read.iter().map(as_put).collect::<Vec<_>>(), [put]);

    let missing = arn.replace(&stream, &common::unique("sb-kin-missing"));
    match KinesisSource::connect(&k.sdk_config, &KinesisStreamRef::Arn(missing)).await {
        Err(SourceError::StreamNotFound(_)) => {}
        Err(other) => panic!("expected StreamNotFound, got {other:?}"),
        Ok(_) => panic!("connected to a stream that does not exist"),
    }
    // Not a stream ARN at all: a configuration error, before any call.
    match KinesisSource::connect(&k.sdk_config, &KinesisStreamRef::Arn(stream.clone())).await {
        Err(SourceError::Fatal(text)) => {
            assert!(text.contains("not a Kinesis stream ARN"), "{text}")
        }
        Err(other) => panic!("expected Fatal, got {other:?}"),
        Ok(_) => panic!("connected with a stream name given as an ARN"),
    }
}

/// Runs one worker over the Kinesis `stream` with `source_keys` added to its `[source]` and
/// `format` as its `[connectors.format]` table, into a file, until `records` lines are there
/// (and 2 s more, for any extra to show); returns the lines and the last /metrics.
async fn run_into_file(
    stream: &str,
    source_keys: &str,
    format: &str,
    records: usize,
) -> (Vec<serde_json::Value>, String) {
    use common::*;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let port = free_port();
    let config = common::harness::kinesis_raw_worker(
        "w1",
        "kin",
        &aws_endpoint(),
        &kinesis_endpoint(),
        stream,
        &unique("kin-leases"),
        port,
    )
    .replace(
        "poll_idle_ms = 50\n",
        &format!("poll_idle_ms = 50\n{source_keys}\n"),
    )
    .replace(
        "[connectors.format]\ntype = \"raw\"\n",
        &format!("[connectors.format]\n{format}\n"),
    ) + &format!(
        "[connectors.sink]\ntype = \"file\"\npath = \"{}\"\n",
        out.display()
    );
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config).unwrap();
    let mut run = Running::start(&path, &dir.path().join("run.log"));
    wait_for(
        &format!("{records} records"),
        Duration::from_secs(60),
        || (line_count(&out) >= records).then_some(()),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = http_get(port, "/metrics")
        .map(|(_, b)| b)
        .unwrap_or_default();
    assert_eq!(run.stop(Duration::from_secs(30)), 0, "{}", run.log_text());
    (read_lines(&out), metrics)
}

/// A new stream of `shards` shards with version 1 of `n` keys in it: a client, its name, the
/// keys.
async fn stream_with_version_1(
    prefix: &str,
    shards: i32,
    n: usize,
) -> (aws_sdk_kinesis::Client, String, Vec<String>) {
    use common::harness;
    let k = harness::kinesis_client(&common::kinesis_endpoint()).await;
    let stream = common::unique(prefix);
    harness::create_stream(&k, &stream, shards).await;
    let keys: Vec<String> = (0..n).map(|i| format!("key-{i:02}")).collect();
    harness::put_version(&k, &stream, &keys, 1).await;
    (k, stream, keys)
}

/// `starting_position = "at_timestamp"` reads a Kinesis stream from an AT_TIMESTAMP iterator:
/// exactly the records written at or after the time arrive, and none older is even read (the
/// skipped-records counter stays at 0: the iterator did the work, not a filter).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_timestamp_starts_each_shard_at_the_time_given() {
    use common::*;
    let (k, stream, keys) = stream_with_version_1("at-ts", 2, 20).await;
    // Kinesis arrival times have millisecond precision; kinesalite's are coarser: a gap.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let at = aws_smithy_types::DateTime::from(std::time::SystemTime::now());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    harness::put_version(&k, &stream, &keys, 2).await;
    let source_keys = format!(
        "starting_position = \"at_timestamp\"\nstarting_position_timestamp = \"{}\"",
        at.fmt(aws_smithy_types::date_time::Format::DateTime)
            .unwrap()
    );
    let (lines, metrics) = run_into_file(&stream, &source_keys, "type = \"raw\"", 20).await;
    let versions: Vec<u64> = lines
        .iter()
        .map(|l| {
            let data = base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                l["data"].as_str().unwrap(),
            )
            .unwrap();
            serde_json::from_slice::<serde_json::Value>(&data).unwrap()["version"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(versions, vec![2; 20], "only the records after the time");
    let skipped = metric_value(
        &metrics,
        "shardbridge_source_records_skipped_total",
        r#"reason="before_starting_position""#,
    );
    assert_eq!(skipped, Some(0.0), "older records were read and filtered");
    let read = metric_value(&metrics, "shardbridge_source_records_read_total", "kin");
    assert_eq!(read, Some(20.0), "only the 20 newer records were read");
}

/// The `lambda` format of Kinesis records carries `invokeIdentityArn`, as Lambda always does:
/// the caller identity (STS GetCallerIdentity at start), or `format.invoke_identity_arn`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_records_name_the_invoke_identity() {
    use common::*;
    let (_, stream, _) = stream_with_version_1("identity", 1, 5).await;
    let sts = aws_sdk_sts::Client::new(&sdk_config(&aws_endpoint()).await);
    let caller = sts.get_caller_identity().send().await.unwrap();
    let expected = shardbridge::aws::identity_arn(caller.arn().unwrap());
    for (format, identity) in [
        ("type = \"lambda\"", expected.as_str()),
        (
            "type = \"lambda\"\ninvoke_identity_arn = \"arn:aws:iam::111122223333:role/reader\"",
            "arn:aws:iam::111122223333:role/reader",
        ),
    ] {
        let (lines, _) = run_into_file(&stream, "", format, 5).await;
        assert_eq!(lines.len(), 5);
        for l in &lines {
            assert_eq!(l["invokeIdentityArn"], identity, "{l}");
            assert_eq!(l["eventName"], "aws:kinesis:record", "{l}");
        }
    }
}

/// An idle shard backs off from `poll_idle_ms` to `poll_idle_max_ms` (fewer GetRecords calls,
/// counted in `shardbridge_source_empty_polls_total`), and the first record snaps it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_shard_is_polled_less_and_a_record_snaps_it_back() {
    use common::harness;
    use common::*;
    let k = harness::kinesis_client(&kinesis_endpoint()).await;
    let stream = unique("idle");
    harness::create_stream(&k, &stream, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let port = free_port();
    let config = harness::kinesis_raw_worker(
        "w1",
        "idle",
        &aws_endpoint(),
        &kinesis_endpoint(),
        &stream,
        &unique("idle-leases"),
        port,
    )
    .replace(
        "poll_idle_ms = 50\n",
        "poll_idle_ms = 50\npoll_idle_max_ms = 800\n",
    ) + &format!(
        "[connectors.sink]\ntype = \"file\"\npath = \"{}\"\n",
        out.display()
    );
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config).unwrap();
    let mut run = Running::start(&path, &dir.path().join("run.log"));
    let empty_polls = || {
        let (_, text) = http_get(port, "/metrics")?;
        metric_value(&text, "shardbridge_source_empty_polls_total", "idle")
    };
    // Reading has begun (and backed off for a few seconds).
    wait_for("the first empty polls", Duration::from_secs(30), || {
        empty_polls().filter(|n| *n >= 1.0)
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = empty_polls().unwrap();
    let window = Duration::from_secs(4);
    tokio::time::sleep(window).await;
    let during = empty_polls().unwrap() - before;
    // Without back-off a 50 ms floor would poll about 80 times in 4 s; at 800 ms, 5.
    eprintln!("empty polls in {window:?} of idleness: {during}");
    assert!(during <= 8.0, "{during} empty polls in {window:?}");
    // A record after the idle time arrives within about one ceiling.
    let keys = vec!["k".to_string()];
    let put_at = Instant::now();
    harness::put_version(&k, &stream, &keys, 1).await;
    wait_for("the record", Duration::from_secs(10), || {
        (line_count(&out) >= 1).then_some(())
    });
    let took = put_at.elapsed();
    eprintln!("a record after idleness arrived in {took:?}");
    assert!(took < Duration::from_millis(2500), "{took:?}");
    assert_eq!(run.stop(Duration::from_secs(30)), 0, "{}", run.log_text());
}
