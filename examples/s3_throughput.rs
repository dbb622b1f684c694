//! Throughput benchmark helper for the S3 sink against local servers (kinesalite + moto).
//!
//! `scripts/bench_s3.sh` drives it; the subcommands:
//!
//! - `load --stream NAME --shards 4 --records N`: creates the Kinesis stream and writes N
//!   records of about 200 bytes of JSON (partition keys over 1000 keys), PutRecords of 500.
//! - `bare --stream NAME --bucket B`: the baseline. Reads every shard from TRIM_HORIZON until
//!   caught up (one task per shard, GetRecords limit 1000), and writes each page as one object
//!   like the S3 sink's (same key, JSON lines of the `raw` format, same gzip), with PutObject.
//!   No leases, no intents, no checkpoints.
//! - `count --bucket B`: lines (records) in every object of the bucket, distinct
//!   (shard, sequence number) pairs among them, and a digest of the objects' keys and ETags
//!   (equal digests: the same objects, byte for byte).
//! - `probe --stream NAME --bucket B`: latency of single calls (GetRecords, PutObject, a
//!   conditional UpdateItem like an intent or a checkpoint), alone and with 4 callers.
//! - `mkbucket --bucket B`: creates a bucket (outside the timed part of a run).
//!
//! Endpoints come from `--kinesis-endpoint` / `--aws-endpoint` or the environment that
//! `scripts/dev-servers.sh env` prints; credentials from the SDK's default chain (the
//! environment). The SDK settings (timeouts, retries) are shardbridge's own
//! (`shardbridge::aws::sdk_config`).

use std::collections::HashSet;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, StreamStatus};
use aws_sdk_s3::primitives::ByteStream;
use clap::{Parser, Subcommand};

use shardbridge::format::{self, FormatKind};
use shardbridge::sink::s3::{compress, object_key, Compression, S3SinkConfig, CONTENT_TYPE};
use shardbridge::sink::{file::json_lines, Batch, OutputRecord};
use shardbridge::source::kinesis::{KinesisSource, KinesisStreamRef};
use shardbridge::source::{IteratorPosition, ShardSource};

#[path = "bench_support/mod.rs"]
mod bench_support;
use bench_support::*;

#[derive(Parser)]
#[command(about = "S3 sink throughput benchmark helper (kinesalite + moto)")]
struct Cli {
    /// Kinesis endpoint (kinesalite).
    #[arg(long, global = true, env = "SHARDBRIDGE_TEST_KINESIS_ENDPOINT")]
    kinesis_endpoint: Option<String>,
    /// S3 endpoint (moto).
    #[arg(long, global = true, env = "SHARDBRIDGE_TEST_AWS_ENDPOINT")]
    aws_endpoint: Option<String>,
    #[arg(long, global = true, default_value = "us-east-1")]
    region: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the stream and write the records.
    Load {
        #[arg(long)]
        stream: String,
        #[arg(long, default_value_t = 4)]
        shards: i32,
        #[arg(long)]
        records: usize,
        /// PutRecords calls in flight.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// The bare loop: every shard to its end, one object per page, no leases.
    Bare {
        #[arg(long)]
        stream: String,
        #[arg(long)]
        bucket: String,
        /// GetRecords limit.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
    /// Count the lines of every object in a bucket.
    Count {
        #[arg(long)]
        bucket: String,
    },
    /// Latency of single calls: kinesalite GetRecords (1000 records), moto PutObject (one
    /// page's object) and moto conditional UpdateItem (what an intent or a checkpoint costs),
    /// alone and with 4 callers at once.
    Probe {
        #[arg(long)]
        stream: String,
        /// An existing bucket (objects go under `probe/`).
        #[arg(long)]
        bucket: String,
        /// Calls per caller for PutObject and UpdateItem.
        #[arg(long, default_value_t = 20)]
        calls: usize,
    },
    /// Create a bucket.
    Mkbucket {
        #[arg(long)]
        bucket: String,
    },
}

async fn s3_client(cli: &Cli) -> Result<aws_sdk_s3::Client> {
    let conf = sdk(&cli.aws_endpoint, &cli.region).await?;
    Ok(aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&conf)
            .force_path_style(true)
            .build(),
    ))
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
        Command::Bare {
            stream,
            bucket,
            limit,
        } => bare(&cli, stream, bucket, *limit).await,
        Command::Count { bucket } => count(&cli, bucket).await,
        Command::Probe {
            stream,
            bucket,
            calls,
        } => probe(&cli, stream, bucket, *calls).await,
        Command::Mkbucket { bucket } => {
            s3_client(&cli)
                .await?
                .create_bucket()
                .bucket(bucket)
                .send()
                .await
                .with_context(|| format!("CreateBucket {bucket}"))?;
            Ok(())
        }
    }
}

// ------------------------------------------------------------------------------------ load

async fn load(
    cli: &Cli,
    stream: &str,
    shards: i32,
    records: usize,
    concurrency: usize,
) -> Result<()> {
    let conf = sdk(&cli.kinesis_endpoint, &cli.region).await?;
    let k = aws_sdk_kinesis::Client::new(&conf);
    let started = Instant::now();
    k.create_stream()
        .stream_name(stream)
        .shard_count(shards)
        .send()
        .await
        .with_context(|| format!("CreateStream {stream}"))?;
    let mut active = false;
    for _ in 0..400 {
        let d = k
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .context("DescribeStreamSummary")?;
        if d.stream_description_summary().map(|s| s.stream_status()) == Some(&StreamStatus::Active)
        {
            active = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !active {
        bail!("stream {stream} did not become ACTIVE");
    }

    let chunks: Vec<(usize, usize)> = (0..records)
        .step_by(PUT_RECORDS_BATCH)
        .map(|lo| (lo, (lo + PUT_RECORDS_BATCH).min(records)))
        .collect();
    let queue = Arc::new(std::sync::Mutex::new(chunks));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (k, queue, stream) = (k.clone(), queue.clone(), stream.to_string());
        tasks.spawn(async move {
            loop {
                let Some((lo, hi)) = queue.lock().unwrap().pop() else {
                    return Ok::<(), anyhow::Error>(());
                };
                let mut entries: Vec<PutRecordsRequestEntry> = (lo..hi)
                    .map(|i| {
                        let (key, data) = record_data(i);
                        PutRecordsRequestEntry::builder()
                            .partition_key(key)
                            .data(Blob::new(data))
                            .build()
                            .expect("partition key and data are set")
                    })
                    .collect();
                for attempt in 0.. {
                    if attempt == 20 {
                        bail!("PutRecords kept failing for records {lo}..{hi}");
                    }
                    let out = k
                        .put_records()
                        .stream_name(&stream)
                        .set_records(Some(entries.clone()))
                        .send()
                        .await;
                    let out = match out {
                        Ok(out) => out,
                        Err(e) => {
                            eprintln!("PutRecords: {e}; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    };
                    if out.failed_record_count().unwrap_or(0) == 0 {
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
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "loaded {records} records ({RECORD_BYTES} bytes of data each, {KEYS} partition keys) \
         into {stream} ({shards} shards) in {secs:.2} s ({:.0} records/s)",
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
    objects: usize,
    bytes: usize,
    get_records: Duration,
    encode: Duration,
    put_object: Duration,
    total: Duration,
}

async fn bare(cli: &Cli, stream: &str, bucket: &str, limit: u32) -> Result<()> {
    let started = Instant::now();
    let kconf = sdk(&cli.kinesis_endpoint, &cli.region).await?;
    let source = Arc::new(
        KinesisSource::connect(&kconf, &KinesisStreamRef::Name(stream.to_string()))
            .await
            .with_context(|| format!("stream {stream}"))?,
    );
    let s3 = s3_client(cli).await?;
    // What shardbridge's S3 sink would be configured with (the key and body functions use
    // only the prefix and the compression).
    let sink = Arc::new(S3SinkConfig {
        bucket: bucket.to_string(),
        prefix: String::new(),
        compression: Compression::Gzip,
        max_records: limit as usize,
        max_bytes: 8 * 1024 * 1024,
        max_interval_ms: 1000,
        force_path_style: true,
    });
    let shards = source.list_shards().await.context("ListShards")?;
    let mut tasks = tokio::task::JoinSet::new();
    for shard in shards {
        let (source, s3, sink) = (source.clone(), s3.clone(), sink.clone());
        tasks.spawn(async move { read_shard(&source, &s3, &sink, &shard.shard_id, limit).await });
    }
    let mut all = ShardStats::default();
    let mut per_shard = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let s = r??;
        all.records += s.records;
        all.pages += s.pages;
        all.objects += s.objects;
        all.bytes += s.bytes;
        all.get_records += s.get_records;
        all.encode += s.encode;
        all.put_object += s.put_object;
        all.total += s.total;
        per_shard.push(s);
    }
    let secs = started.elapsed().as_secs_f64();
    let n = per_shard.len().max(1) as f64;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "bare: {} records in {secs:.3} s ({:.0} records/s); {} shards, {} GetRecords, {} objects \
         ({} bytes gzip)",
        all.records,
        all.records as f64 / secs,
        per_shard.len(),
        all.pages,
        all.objects,
        all.bytes,
    );
    println!(
        "bare: per shard on average: {:.0} ms reading, {:.0} ms GetRecords ({:.1} ms/call), \
         {:.0} ms encode+gzip, {:.0} ms PutObject ({:.1} ms/call)",
        ms(all.total) / n,
        ms(all.get_records) / n,
        ms(all.get_records) / all.pages.max(1) as f64,
        ms(all.encode) / n,
        ms(all.put_object) / n,
        ms(all.put_object) / all.objects.max(1) as f64,
    );
    // One line for scripts.
    println!(
        "RESULT records={} elapsed_s={secs:.3} get_records_calls={} get_records_ms={:.1} \
         encode_ms={:.1} objects={} put_object_ms={:.1}",
        all.records,
        all.pages,
        ms(all.get_records),
        ms(all.encode),
        all.objects,
        ms(all.put_object)
    );
    Ok(())
}

async fn read_shard(
    source: &KinesisSource,
    s3: &aws_sdk_s3::Client,
    sink: &S3SinkConfig,
    shard: &str,
    limit: u32,
) -> Result<ShardStats> {
    let started = Instant::now();
    let mut stats = ShardStats::default();
    let mut iterator = source
        .open_iterator(shard, &IteratorPosition::TrimHorizon)
        .await
        .with_context(|| format!("GetShardIterator {shard}"))?;
    loop {
        let t = Instant::now();
        let page = source
            .get_records(&iterator, limit)
            .await
            .with_context(|| format!("GetRecords {shard}"))?;
        stats.get_records += t.elapsed();
        stats.pages += 1;
        if !page.records.is_empty() {
            let t = Instant::now();
            let mut records = Vec::with_capacity(page.records.len());
            for r in &page.records {
                let mut payload = Vec::with_capacity(512);
                format::encode(FormatKind::Raw, r, &mut payload)?;
                records.push(OutputRecord {
                    sequence_number: r.sequence_number().clone(),
                    created_millis: r.created_millis(),
                    partition_key: None,
                    event_name: None,
                    lane: 0,
                    payload,
                });
            }
            let batch = Batch {
                stream_arn: source.stream_arn().to_string(),
                shard_id: shard.to_string(),
                recovery: None,
                number: None,
                records,
            };
            let key = object_key(sink, &batch);
            let n = batch.records.len();
            // Like the sink: compression off the async workers.
            let body = tokio::task::spawn_blocking(move || {
                compress(Compression::Gzip, &json_lines(&batch))
            })
            .await?;
            stats.encode += t.elapsed();
            let t = Instant::now();
            stats.bytes += body.len();
            s3.put_object()
                .bucket(&sink.bucket)
                .key(&key)
                .content_type(CONTENT_TYPE)
                .content_encoding("gzip")
                .body(ByteStream::from(body))
                .send()
                .await
                .with_context(|| format!("PutObject s3://{}/{key}", sink.bucket))?;
            stats.put_object += t.elapsed();
            stats.objects += 1;
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

// ------------------------------------------------------------------------------------ count

async fn count(cli: &Cli, bucket: &str) -> Result<()> {
    let s3 = s3_client(cli).await?;
    let mut keys = Vec::new();
    // Keys and ETags (MD5 of the bytes for a single-part upload): two buckets with the same
    // digest hold the same objects.
    let mut etags = Vec::new();
    let mut token = None;
    loop {
        let out = s3
            .list_objects_v2()
            .bucket(bucket)
            .set_continuation_token(token.take())
            .send()
            .await
            .with_context(|| format!("ListObjectsV2 {bucket}"))?;
        for o in out.contents() {
            if let Some(key) = o.key() {
                keys.push(key.to_string());
                etags.push(format!("{key} {}", o.e_tag().unwrap_or("")));
            }
        }
        match out.next_continuation_token() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    etags.sort();
    let digest = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        etags.hash(&mut h);
        format!("{:016x}", h.finish())
    };
    let objects = keys.len();
    let queue = Arc::new(std::sync::Mutex::new(keys));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (s3, queue, bucket) = (s3.clone(), queue.clone(), bucket.to_string());
        tasks.spawn(async move {
            let mut lines = 0usize;
            let mut ids = Vec::new();
            loop {
                let Some(key) = queue.lock().unwrap().pop() else {
                    return Ok::<_, anyhow::Error>((lines, ids));
                };
                let body = s3
                    .get_object()
                    .bucket(&bucket)
                    .key(&key)
                    .send()
                    .await
                    .with_context(|| format!("GetObject {key}"))?
                    .body
                    .collect()
                    .await
                    .with_context(|| format!("reading {key}"))?
                    .into_bytes();
                let mut text = String::new();
                flate2::read::GzDecoder::new(&body[..])
                    .read_to_string(&mut text)
                    .with_context(|| format!("gunzip {key}"))?;
                for line in text.lines() {
                    lines += 1;
                    let v: serde_json::Value = serde_json::from_str(line)
                        .with_context(|| format!("a line of {key} is not JSON"))?;
                    ids.push(format!(
                        "{}/{}",
                        v["shard"].as_str().unwrap_or("?"),
                        v["sequenceNumber"].as_str().unwrap_or("?")
                    ));
                }
            }
        });
    }
    let mut lines = 0;
    let mut distinct = HashSet::new();
    while let Some(r) = tasks.join_next().await {
        let (n, ids) = r??;
        lines += n;
        distinct.extend(ids);
    }
    println!(
        "{bucket}: {objects} objects, {lines} lines, {} distinct records, objects digest {digest}",
        distinct.len()
    );
    println!(
        "RESULT objects={objects} lines={lines} distinct={} digest={digest}",
        distinct.len()
    );
    Ok(())
}

// ------------------------------------------------------------------------------------ probe

async fn probe(cli: &Cli, stream: &str, bucket: &str, calls: usize) -> Result<()> {
    let kconf = sdk(&cli.kinesis_endpoint, &cli.region).await?;
    let source = Arc::new(
        KinesisSource::connect(&kconf, &KinesisStreamRef::Name(stream.to_string()))
            .await
            .with_context(|| format!("stream {stream}"))?,
    );
    let (shards, first_page) = probe_get_records(&source).await?;

    // PutObject: the object the S3 sink would write for that page.
    let mut records = Vec::new();
    for r in &first_page.records {
        let mut payload = Vec::new();
        format::encode(FormatKind::Raw, r, &mut payload)?;
        records.push(OutputRecord {
            sequence_number: r.sequence_number().clone(),
            created_millis: r.created_millis(),
            partition_key: None,
            event_name: None,
            lane: 0,
            payload,
        });
    }
    let body = compress(
        Compression::Gzip,
        &json_lines(&Batch {
            stream_arn: source.stream_arn().to_string(),
            shard_id: shards[0].shard_id.clone(),
            recovery: None,
            number: None,
            records,
        }),
    );
    let s3 = s3_client(cli).await?;
    for callers in [1, 4] {
        let (s3, object, bucket) = (s3.clone(), body.clone(), bucket.to_string());
        let ms = timed(callers, calls, move |c, i| {
            let (s3, body, bucket) = (s3.clone(), object.clone(), bucket.clone());
            async move {
                s3.put_object()
                    .bucket(&bucket)
                    .key(format!("probe/{callers}/{c}/{i}.jsonl.gz"))
                    .content_type(CONTENT_TYPE)
                    .content_encoding("gzip")
                    .body(ByteStream::from(body))
                    .send()
                    .await?;
                Ok(())
            }
        })
        .await?;
        println!(
            "moto PutObject ({} bytes): {ms:.1} ms/call with {callers} caller(s)",
            body.len()
        );
    }

    // UpdateItem: conditional on owner and counter, like an intent or a checkpoint.
    let ddb = aws_sdk_dynamodb::Client::new(&sdk(&cli.aws_endpoint, &cli.region).await?);
    probe_lease_writes(&ddb, calls).await?;
    Ok(())
}
