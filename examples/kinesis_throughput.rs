//! Throughput benchmark helper for the Kinesis sink against local servers (kinesalite for
//! Kinesis, moto for the lease table).
//!
//! `scripts/bench_kinesis.sh` drives it; the subcommands:
//!
//! - `load --stream NAME --shards 4 --records N`: creates the source stream and writes N
//!   records of about 200 bytes of JSON over 1000 partition keys (the S3 benchmark's data:
//!   `{"id":I,"key":"key-K","version":V,"pad":"xx…"}`, record I has key I % 1000 and version
//!   I / 1000 + 1). Each key's records go in in version order: every loader task owns its own
//!   keys, and a PutRecords call carries at most one record per key, the next only after the
//!   previous was acknowledged.
//! - `mkstream --stream NAME --shards 4`: creates a stream and waits until it is ACTIVE
//!   (outside the timed part of a run); `rmstream --stream NAME` deletes one.
//! - `bare --source NAME --target NAME`: the baseline. One task per source shard reads from
//!   TRIM_HORIZON until caught up (GetRecords limit 1000) and PutRecords each page's records as
//!   they are (same data bytes, same partition key: the `raw` format's stream-to-stream
//!   behaviour), in calls of up to 500 records (`--put-records`), a page's calls in flight
//!   together (`--put-concurrency`, default 2), retrying only the failed entries. No ordering
//!   guarantees, no leases, no intents, no checkpoints.
//! - `bare-ddb --table NAME --target NAME --expect N`: the same bare loop with a DynamoDB
//!   stream as its source (scripts/bench_peers.sh): one task per shard of the table's latest
//!   stream reads from TRIM_HORIZON, encodes each record in the `lambda` format (shardbridge's
//!   encoder) and PutRecords the page's records with the item key as partition key, in calls of
//!   up to 500, retrying only the failed entries; after an empty page it waits `--idle-ms`.
//!   It exits when N records were put in all (or, without `--expect`, when every shard gave
//!   `--empty-polls` empty pages in a row, or ended). No leases, no checkpoints, no ordering
//!   beyond one page's calls being sent one after the other.
//! - `count --stream NAME`: reads every shard from TRIM_HORIZON: records, distinct
//!   (partition key, data) pairs, per-key order (a record whose `version` is below one already
//!   seen for its key is out of order), versions missing per key, and a digest of the distinct
//!   pairs (equal digests: the same records, whatever their order and shard).
//! - `probe --stream NAME`: latency of single calls (GetRecords of 1000, PutRecords of 500
//!   records and of 250 records with distinct keys, a conditional UpdateItem like an intent or
//!   a checkpoint), alone and with 4 callers.
//!
//! Endpoints come from `--kinesis-endpoint` / `--aws-endpoint` or the environment that
//! `scripts/dev-servers.sh env` prints; credentials from the SDK's default chain (the
//! environment). The SDK settings (timeouts, retries) are shardbridge's own
//! (`shardbridge::aws::sdk_config`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, StreamStatus};
use clap::{Parser, Subcommand};
use sha2::{Digest, Sha256};

use std::sync::atomic::{AtomicUsize, Ordering};

use shardbridge::format::{encode, FormatKind};
use shardbridge::sink::partition_key::item_key;
use shardbridge::source::dynamodb_streams::DynamoDbStreamsSource;
use shardbridge::source::kinesis::{KinesisSource, KinesisStreamRef};
use shardbridge::source::record::SourceRecord;
use shardbridge::source::{IteratorPosition, ShardSource, StreamRef};

#[path = "bench_support/mod.rs"]
mod bench_support;
use bench_support::*;

#[derive(Parser)]
#[command(about = "Kinesis sink throughput benchmark helper (kinesalite + moto)")]
struct Cli {
    /// Kinesis endpoint (kinesalite).
    #[arg(long, global = true, env = "SHARDBRIDGE_TEST_KINESIS_ENDPOINT")]
    kinesis_endpoint: Option<String>,
    /// DynamoDB endpoint for the probe's UpdateItem (moto).
    #[arg(long, global = true, env = "SHARDBRIDGE_TEST_AWS_ENDPOINT")]
    aws_endpoint: Option<String>,
    #[arg(long, global = true, default_value = "us-east-1")]
    region: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the source stream and write the records.
    Load {
        #[arg(long)]
        stream: String,
        #[arg(long, default_value_t = 4)]
        shards: i32,
        #[arg(long)]
        records: usize,
        /// Loader tasks (PutRecords calls in flight); each owns KEYS / concurrency keys.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Create a stream and wait until it is ACTIVE.
    Mkstream {
        #[arg(long)]
        stream: String,
        #[arg(long, default_value_t = 4)]
        shards: i32,
    },
    /// Delete a stream.
    Rmstream {
        #[arg(long)]
        stream: String,
    },
    /// The bare loop: every source shard to its end, each page put as it is, no leases.
    Bare {
        #[arg(long)]
        source: String,
        #[arg(long)]
        target: String,
        /// GetRecords limit.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        /// PutRecords calls of one page in flight at once, per shard (1: one after the other).
        #[arg(long, default_value_t = 2)]
        put_concurrency: usize,
        /// Records per PutRecords call, at most (500, the service's maximum).
        #[arg(long, default_value_t = PUT_RECORDS_BATCH)]
        put_records: usize,
    },
    /// The bare loop from a DynamoDB stream (`lambda` format, item key as partition key).
    BareDdb {
        /// The table whose latest stream is read.
        #[arg(long)]
        table: String,
        #[arg(long)]
        target: String,
        /// GetRecords limit.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        /// Stop when this many records were put (0: stop on empty polls).
        #[arg(long, default_value_t = 0)]
        expect: usize,
        /// Without --expect: a shard is done after this many empty pages in a row.
        #[arg(long, default_value_t = 3)]
        empty_polls: u32,
        /// Wait after an empty page, ms.
        #[arg(long, default_value_t = 250)]
        idle_ms: u64,
        /// Records per PutRecords call, at most.
        #[arg(long, default_value_t = PUT_RECORDS_BATCH)]
        put_records: usize,
    },
    /// Count the records of every shard of a stream and check each key's order.
    Count {
        #[arg(long)]
        stream: String,
    },
    /// Latency of single calls: kinesalite GetRecords (1000 records), PutRecords (500 records;
    /// 250 records with distinct keys, one round of the Kinesis sink) and moto conditional
    /// UpdateItem (what an intent or a checkpoint costs), alone and with 4 callers at once.
    Probe {
        /// A loaded stream (read only; PutRecords go to a stream the probe creates).
        #[arg(long)]
        stream: String,
        /// Calls per caller for PutRecords and UpdateItem.
        #[arg(long, default_value_t = 20)]
        calls: usize,
    },
}

/// A PutRecords call that keeps failing entries gives up after this many attempts.
const PUT_ATTEMPTS: u32 = 50;

async fn kinesis_client(cli: &Cli) -> Result<aws_sdk_kinesis::Client> {
    Ok(aws_sdk_kinesis::Client::new(
        &sdk(&cli.kinesis_endpoint, &cli.region).await?,
    ))
}

async fn connect(cli: &Cli, stream: &str) -> Result<KinesisSource> {
    let conf = sdk(&cli.kinesis_endpoint, &cli.region).await?;
    KinesisSource::connect(&conf, &KinesisStreamRef::Name(stream.to_string()))
        .await
        .with_context(|| format!("stream {stream}"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Load {
            stream,
            shards,
            records,
            concurrency,
        } => load(&cli, stream, *shards, *records, *concurrency).await,
        Command::Mkstream { stream, shards } => {
            create_stream(&kinesis_client(&cli).await?, stream, *shards).await
        }
        Command::Rmstream { stream } => {
            kinesis_client(&cli)
                .await?
                .delete_stream()
                .stream_name(stream)
                .enforce_consumer_deletion(true)
                .send()
                .await
                .with_context(|| format!("DeleteStream {stream}"))?;
            Ok(())
        }
        Command::Bare {
            source,
            target,
            limit,
            put_concurrency,
            put_records,
        } => {
            let per_call = (*put_records).clamp(1, PUT_RECORDS_BATCH);
            bare(&cli, source, target, *limit, *put_concurrency, per_call).await
        }
        Command::BareDdb {
            table,
            target,
            limit,
            expect,
            empty_polls,
            idle_ms,
            put_records,
        } => {
            let per_call = (*put_records).clamp(1, PUT_RECORDS_BATCH);
            let opts = DdbLoop {
                limit: *limit,
                expect: *expect,
                empty_polls: *empty_polls,
                idle: Duration::from_millis(*idle_ms),
                put_records: per_call,
            };
            bare_ddb(&cli, table, target, opts).await
        }
        Command::Count { stream } => count(&cli, stream).await,
        Command::Probe { stream, calls } => probe(&cli, stream, *calls).await,
    }
}

/// Creates the stream and waits until it is ACTIVE.
async fn create_stream(k: &aws_sdk_kinesis::Client, stream: &str, shards: i32) -> Result<()> {
    k.create_stream()
        .stream_name(stream)
        .shard_count(shards)
        .send()
        .await
        .with_context(|| format!("CreateStream {stream}"))?;
    for _ in 0..400 {
        let d = k
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .context("DescribeStreamSummary")?;
        if d.stream_description_summary().map(|s| s.stream_status()) == Some(&StreamStatus::Active)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("stream {stream} did not become ACTIVE")
}

/// What one `put_all` did.
#[derive(Default, Debug, Clone, Copy)]
struct PutStats {
    calls: usize,
    /// Entries sent again after a failure (partial failure or a failed call).
    retried: usize,
    time: Duration,
}

/// PutRecords of `entries` (at most 500) until every one is acknowledged, sending again only
/// the failed entries (in their original relative order).
async fn put_all(
    k: &aws_sdk_kinesis::Client,
    stream: &str,
    mut entries: Vec<PutRecordsRequestEntry>,
) -> Result<PutStats> {
    let mut stats = PutStats::default();
    let started = Instant::now();
    for attempt in 0.. {
        if attempt == PUT_ATTEMPTS {
            bail!(
                "PutRecords to {stream} kept failing ({} entries left)",
                entries.len()
            );
        }
        if attempt > 0 {
            stats.retried += entries.len();
        }
        stats.calls += 1;
        let out = k
            .put_records()
            .stream_name(stream)
            .set_records(Some(entries.clone()))
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                eprintln!(
                    "PutRecords: {}; retrying",
                    aws_sdk_kinesis::error::DisplayErrorContext(&e)
                );
                tokio::time::sleep(Duration::from_millis(100 * (attempt as u64 + 1).min(20))).await;
                continue;
            }
        };
        if out.failed_record_count().unwrap_or(0) == 0 {
            break;
        }
        let results = out.records();
        entries = entries
            .into_iter()
            .enumerate()
            .filter(|(pos, _)| results.get(*pos).map_or(true, |r| r.error_code().is_some()))
            .map(|(_, e)| e)
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stats.time = started.elapsed();
    Ok(stats)
}

fn entry(key: &str, data: Vec<u8>) -> PutRecordsRequestEntry {
    PutRecordsRequestEntry::builder()
        .partition_key(key)
        .data(Blob::new(data))
        .build()
        .expect("partition key and data are set")
}

// ------------------------------------------------------------------------------------ load

async fn load(
    cli: &Cli,
    stream: &str,
    shards: i32,
    records: usize,
    concurrency: usize,
) -> Result<()> {
    let k = kinesis_client(cli).await?;
    let started = Instant::now();
    create_stream(&k, stream, shards).await?;

    // Task t owns the keys k with k % tasks == t and sends its records in id order, in calls
    // of at most one record per key (so of at most KEYS / tasks records): a key's version v+1
    // is sent only once v was acknowledged.
    let tasks_n = concurrency.clamp(1, KEYS);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..tasks_n {
        let (k, stream) = (k.clone(), stream.to_string());
        let mine: Vec<usize> = (0..records).filter(|i| (i % KEYS) % tasks_n == t).collect();
        let per_call = KEYS.div_ceil(tasks_n).min(PUT_RECORDS_BATCH);
        tasks.spawn(async move {
            let mut stats = PutStats::default();
            for ids in mine.chunks(per_call) {
                let entries = ids
                    .iter()
                    .map(|&i| {
                        let (key, data) = record_data(i);
                        entry(&key, data)
                    })
                    .collect();
                let s = put_all(&k, &stream, entries).await?;
                stats.calls += s.calls;
                stats.retried += s.retried;
            }
            Ok::<_, anyhow::Error>(stats)
        });
    }
    let (mut calls, mut retried) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        let s = r??;
        calls += s.calls;
        retried += s.retried;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "loaded {records} records ({RECORD_BYTES} bytes of data each, {KEYS} partition keys, \
         versions in order per key) into {stream} ({shards} shards) in {secs:.2} s \
         ({:.0} records/s; {calls} PutRecords calls, {retried} entries retried)",
        records as f64 / secs
    );
    Ok(())
}

// ------------------------------------------------------------------------------------ bare

/// Where one shard's time went.
#[derive(Default, Debug)]
struct ShardStats {
    records: usize,
    pages: usize,
    put_calls: usize,
    retried: usize,
    get_records: Duration,
    /// Wall time spent putting (a page's calls overlap).
    put_records: Duration,
    /// Sum of the calls' own times.
    put_call_time: Duration,
    total: Duration,
    /// From the start of the process to this shard's first GetRecords.
    first_get: Duration,
}

async fn bare(
    cli: &Cli,
    source: &str,
    target: &str,
    limit: u32,
    put_concurrency: usize,
    put_records: usize,
) -> Result<()> {
    let started = Instant::now();
    let src = Arc::new(connect(cli, source).await?);
    // The client the Kinesis sink writes with: its target resolved the same way.
    let tgt = Arc::new(connect(cli, target).await?);
    let shards = src.list_shards().await.context("ListShards")?;
    let mut tasks = tokio::task::JoinSet::new();
    for shard in shards {
        let (src, tgt) = (src.clone(), tgt.clone());
        tasks.spawn(async move {
            let in_flight = put_concurrency.max(1);
            let limits = (limit, in_flight, put_records);
            read_shard(&src, &tgt, &shard.shard_id, limits, started).await
        });
    }
    let mut all = ShardStats {
        first_get: Duration::MAX,
        ..ShardStats::default()
    };
    let mut per_shard = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let s = r??;
        all.records += s.records;
        all.pages += s.pages;
        all.put_calls += s.put_calls;
        all.retried += s.retried;
        all.get_records += s.get_records;
        all.put_records += s.put_records;
        all.put_call_time += s.put_call_time;
        all.total += s.total;
        all.first_get = all.first_get.min(s.first_get);
        per_shard.push(s);
    }
    let secs = started.elapsed().as_secs_f64();
    let n = per_shard.len().max(1) as f64;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "bare: {} records in {secs:.3} s ({:.0} records/s); {} shards, {} GetRecords, \
         {} PutRecords calls, {} entries retried",
        all.records,
        all.records as f64 / secs,
        per_shard.len(),
        all.pages,
        all.put_calls,
        all.retried,
    );
    println!(
        "bare: first GetRecords {:.0} ms after the start; per shard on average: {:.0} ms reading, {:.0} ms GetRecords ({:.1} ms/call), \
         {:.0} ms putting ({:.1} ms/PutRecords call of up to {put_records} records, up to {} \
         in flight)",
        ms(all.first_get),
        ms(all.total) / n,
        ms(all.get_records) / n,
        ms(all.get_records) / all.pages.max(1) as f64,
        ms(all.put_records) / n,
        ms(all.put_call_time) / all.put_calls.max(1) as f64,
        put_concurrency.max(1),
    );
    // One line for scripts.
    println!(
        "RESULT records={} elapsed_s={secs:.3} get_records_calls={} get_records_ms={:.1} \
         put_records_calls={} put_records_ms={:.1} retried={}",
        all.records,
        all.pages,
        ms(all.get_records),
        all.put_calls,
        ms(all.put_records),
        all.retried,
    );
    Ok(())
}

/// `limits`: GetRecords limit, PutRecords calls in flight, records per call. `process_start`:
/// when the process started.
async fn read_shard(
    src: &KinesisSource,
    tgt: &KinesisSource,
    shard: &str,
    (limit, put_concurrency, put_records): (u32, usize, usize),
    process_start: Instant,
) -> Result<ShardStats> {
    let started = Instant::now();
    let mut stats = ShardStats::default();
    let target = tgt.stream_name().to_string();
    let mut iterator = src
        .open_iterator(shard, &IteratorPosition::TrimHorizon)
        .await
        .with_context(|| format!("GetShardIterator {shard}"))?;
    loop {
        let t = Instant::now();
        if stats.pages == 0 {
            stats.first_get = t - process_start;
        }
        let page = src
            .get_records(&iterator, limit)
            .await
            .with_context(|| format!("GetRecords {shard}"))?;
        stats.get_records += t.elapsed();
        stats.pages += 1;
        if !page.records.is_empty() {
            let t = Instant::now();
            let n = page.records.len();
            let mut entries = Vec::with_capacity(n);
            for r in page.records.iter() {
                let SourceRecord::Kinesis(k) = r else {
                    bail!("not a Kinesis record");
                };
                entries.push(entry(&k.partition_key, k.data.clone()));
            }
            let mut chunks = Vec::new();
            while !entries.is_empty() {
                let rest = entries.split_off(entries.len().min(put_records));
                chunks.push(std::mem::replace(&mut entries, rest));
            }
            for group in chunks.chunks(put_concurrency) {
                let calls = group
                    .iter()
                    .map(|c| put_all(tgt.client(), &target, c.clone()));
                for s in futures_util::future::join_all(calls).await {
                    let s = s?;
                    stats.put_calls += s.calls;
                    stats.retried += s.retried;
                    stats.put_call_time += s.time;
                }
            }
            stats.put_records += t.elapsed();
            stats.records += n;
        }
        match page.next_iterator {
            // Closed and fully read.
            None => break,
            // Caught up.
            Some(_) if page.records.is_empty() && page.millis_behind_latest.unwrap_or(0) == 0 => {
                break
            }
            Some(next) => iterator = next,
        }
    }
    stats.total = started.elapsed();
    Ok(stats)
}

// --------------------------------------------------------------------------------- bare-ddb

#[derive(Clone, Copy)]
struct DdbLoop {
    limit: u32,
    expect: usize,
    empty_polls: u32,
    idle: Duration,
    put_records: usize,
}

async fn bare_ddb(cli: &Cli, table: &str, target: &str, opts: DdbLoop) -> Result<()> {
    let started = Instant::now();
    let conf = sdk(&cli.aws_endpoint, &cli.region).await?;
    let src = DynamoDbStreamsSource::connect(&conf, &StreamRef::Table(table.to_string()))
        .await
        .map_err(|e| anyhow::anyhow!("table {table}: {e}"))?;
    let src = Arc::new(src);
    let tgt = Arc::new(connect(cli, target).await?);
    let shards = src
        .list_shards()
        .await
        .map_err(|e| anyhow::anyhow!("DescribeStream: {e}"))?;
    let put = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for shard in shards {
        let (src, tgt, put) = (src.clone(), tgt.clone(), put.clone());
        tasks.spawn(async move { ddb_shard(&src, &tgt, &shard.shard_id, opts, &put).await });
    }
    let (mut pages, mut calls, mut retried) = (0usize, 0usize, 0usize);
    while let Some(r) = tasks.join_next().await {
        let (p, c, rt) = r??;
        pages += p;
        calls += c;
        retried += rt;
    }
    let records = put.load(Ordering::SeqCst);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "bare-ddb: {records} records in {secs:.3} s ({:.0} records/s); {pages} GetRecords, \
         {calls} PutRecords calls, {retried} entries retried",
        records as f64 / secs
    );
    println!(
        "RESULT records={records} elapsed_s={secs:.3} get_records_calls={pages} \
         put_records_calls={calls} retried={retried}"
    );
    Ok(())
}

/// One shard to its end, to `opts.expect` records put in all, or to `empty_polls` empty
/// pages (without `expect`): (GetRecords calls, PutRecords calls, entries retried).
async fn ddb_shard(
    src: &DynamoDbStreamsSource,
    tgt: &KinesisSource,
    shard: &str,
    opts: DdbLoop,
    put: &AtomicUsize,
) -> Result<(usize, usize, usize)> {
    let target = tgt.stream_name().to_string();
    let (mut pages, mut calls, mut retried, mut empty) = (0, 0, 0, 0u32);
    let mut iterator = src
        .open_iterator(shard, &IteratorPosition::TrimHorizon)
        .await
        .map_err(|e| anyhow::anyhow!("GetShardIterator {shard}: {e}"))?;
    loop {
        if opts.expect > 0 && put.load(Ordering::SeqCst) >= opts.expect {
            break;
        }
        let page = src
            .get_records(&iterator, opts.limit)
            .await
            .map_err(|e| anyhow::anyhow!("GetRecords {shard}: {e}"))?;
        pages += 1;
        let n = page.records.len();
        if n == 0 {
            empty += 1;
        } else {
            empty = 0;
            let mut entries = Vec::with_capacity(n);
            for r in page.records.iter() {
                let SourceRecord::DynamoDb(c) = r else {
                    bail!("not a DynamoDB record");
                };
                let mut data = Vec::with_capacity(512);
                encode(FormatKind::Lambda, r, &mut data)?;
                entries.push(entry(&item_key(&c.keys), data));
            }
            while !entries.is_empty() {
                let rest = entries.split_off(entries.len().min(opts.put_records));
                let s =
                    put_all(tgt.client(), &target, std::mem::replace(&mut entries, rest)).await?;
                calls += s.calls;
                retried += s.retried;
            }
            put.fetch_add(n, Ordering::SeqCst);
        }
        match page.next_iterator {
            None => break,
            Some(_) if opts.expect == 0 && n == 0 && empty >= opts.empty_polls => break,
            Some(next) => iterator = next,
        }
        if n == 0 {
            tokio::time::sleep(opts.idle).await;
        }
    }
    Ok((pages, calls, retried))
}

// ------------------------------------------------------------------------------------ count

/// Every record of a shard from TRIM_HORIZON until caught up: (partition key, data).
async fn read_all(src: &KinesisSource, shard: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut iterator = src
        .open_iterator(shard, &IteratorPosition::TrimHorizon)
        .await
        .with_context(|| format!("GetShardIterator {shard}"))?;
    loop {
        let page = src
            .get_records(&iterator, 10_000)
            .await
            .with_context(|| format!("GetRecords {shard}"))?;
        let caught_up = page.records.is_empty() && page.millis_behind_latest.unwrap_or(0) == 0;
        for r in page.records {
            if let SourceRecord::Kinesis(k) = r {
                out.push((k.partition_key, k.data));
            }
        }
        match page.next_iterator {
            Some(next) if !caught_up => iterator = next,
            _ => break,
        }
    }
    Ok(out)
}

/// The key and version a record's data carries, if it is the loader's JSON.
fn key_version(data: &[u8]) -> Option<(String, u64)> {
    let v: serde_json::Value = serde_json::from_slice(data).ok()?;
    Some((v["key"].as_str()?.to_string(), v["version"].as_u64()?))
}

async fn count(cli: &Cli, stream: &str) -> Result<()> {
    let src = Arc::new(connect(cli, stream).await?);
    let shards = src.list_shards().await.context("ListShards")?;
    let mut tasks = tokio::task::JoinSet::new();
    for (n, shard) in shards.iter().enumerate() {
        let (src, id) = (src.clone(), shard.shard_id.clone());
        tasks.spawn(async move { read_all(&src, &id).await.map(|r| (n, r)) });
    }
    let mut per_shard = BTreeMap::new();
    while let Some(r) = tasks.join_next().await {
        let (n, records) = r??;
        per_shard.insert(n, records);
    }

    let mut records = 0usize;
    let mut distinct: HashSet<(&str, &[u8])> = HashSet::new();
    // Per key: the highest version seen so far (in each shard's order) and every version.
    let mut highest: HashMap<String, u64> = HashMap::new();
    let mut versions: HashMap<String, HashSet<u64>> = HashMap::new();
    let mut shard_of: HashMap<String, usize> = HashMap::new();
    let (mut out_of_order, mut unparsed, mut split_keys) = (0usize, 0usize, 0usize);
    let mut shard_counts = Vec::new();
    for (n, shard_records) in &per_shard {
        shard_counts.push(shard_records.len().to_string());
        for (key, data) in shard_records {
            records += 1;
            distinct.insert((key.as_str(), data.as_slice()));
            let Some((data_key, version)) = key_version(data) else {
                unparsed += 1;
                continue;
            };
            if data_key != *key {
                unparsed += 1;
                continue;
            }
            if *shard_of.entry(key.clone()).or_insert(*n) != *n {
                split_keys += 1;
            }
            let h = highest.entry(key.clone()).or_insert(0);
            if version < *h {
                out_of_order += 1;
            }
            *h = (*h).max(version);
            versions.entry(key.clone()).or_default().insert(version);
        }
    }
    // Versions below a key's highest that never showed up.
    let missing: u64 = versions
        .iter()
        .map(|(k, v)| highest[k] - v.len() as u64)
        .sum();
    let digest = {
        let mut pairs: Vec<&(&str, &[u8])> = distinct.iter().collect();
        pairs.sort();
        let mut h = Sha256::new();
        for (key, data) in pairs {
            h.update((key.len() as u64).to_be_bytes());
            h.update(key.as_bytes());
            h.update((data.len() as u64).to_be_bytes());
            h.update(data);
        }
        let d = h.finalize();
        d[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    println!(
        "{stream}: {records} records ({} shards: {}), {} distinct (key, data), {} keys, \
         {out_of_order} out of order, {missing} versions missing, {split_keys} records of a key \
         on a second shard, {unparsed} not the loader's JSON, digest {digest}",
        shards.len(),
        shard_counts.join("+"),
        distinct.len(),
        versions.len(),
    );
    println!(
        "RESULT records={records} distinct={} keys={} out_of_order={out_of_order} \
         missing={missing} split={split_keys} unparsed={unparsed} digest={digest}",
        distinct.len(),
        versions.len(),
    );
    Ok(())
}

// ------------------------------------------------------------------------------------ probe

async fn probe(cli: &Cli, stream: &str, calls: usize) -> Result<()> {
    let source = Arc::new(connect(cli, stream).await?);
    let (_, first_page) = probe_get_records(&source).await?;

    // PutRecords into a stream of its own: 500 records of the page (what `bare` sends), and
    // 250 records with distinct keys (one round of the sink for a source shard's ~250 keys).
    let k = kinesis_client(cli).await?;
    let target = unique_name("probe")?;
    create_stream(&k, &target, 4).await?;
    let page: Vec<(String, Vec<u8>)> = first_page
        .records
        .iter()
        .filter_map(|r| match r {
            SourceRecord::Kinesis(k) => Some((k.partition_key.clone(), k.data.clone())),
            _ => None,
        })
        .collect();
    let mut seen = HashSet::new();
    let distinct_keys: Vec<(String, Vec<u8>)> = page
        .iter()
        .filter(|(key, _)| seen.insert(key.clone()))
        .take(250)
        .cloned()
        .collect();
    let sets = [
        (
            "page records",
            page.iter().take(500).cloned().collect::<Vec<_>>(),
        ),
        ("records with distinct keys", distinct_keys),
    ];
    for (what, records) in sets {
        let entries: Arc<Vec<PutRecordsRequestEntry>> = Arc::new(
            records
                .iter()
                .map(|(key, data)| entry(key, data.clone()))
                .collect(),
        );
        for callers in [1, 4] {
            let (k, entries2, target2) = (k.clone(), entries.clone(), target.clone());
            let ms = timed(callers, calls, move |_, _| {
                let (k, entries, target) = (k.clone(), entries2.clone(), target2.clone());
                async move {
                    put_all(&k, &target, entries.to_vec()).await?;
                    Ok(())
                }
            })
            .await?;
            println!(
                "kinesalite PutRecords ({} {what}): {ms:.1} ms/call with {callers} caller(s), \
                 {:.3} ms/record",
                entries.len(),
                ms / entries.len().max(1) as f64
            );
        }
    }
    k.delete_stream().stream_name(&target).send().await?;

    // UpdateItem: conditional on owner and counter, like an intent or a checkpoint.
    let ddb = aws_sdk_dynamodb::Client::new(&sdk(&cli.aws_endpoint, &cli.region).await?);
    probe_lease_writes(&ddb, calls).await?;
    Ok(())
}
