//! Throughput benchmark helper for the `http` sink (`scripts/bench_http.sh` drives it):
//!
//! - `handler --port P [--expect N --reached FILE]`: a handler that answers every POST at once
//!   (200, no body) and counts the records of the `{"Records": [...]}` events it receives;
//!   `GET /count` returns the count, and when it first reaches N the time (Unix seconds) is
//!   written to FILE, so a benchmark need not poll (polling costs CPU the servers need); the
//!   time it received the first records goes to FILE with the extension `first`.
//!   `GET /latency` answers `count p50 p99 max` (milliseconds) of the records received since
//!   `GET /reset`: from each record's `approximateArrivalTimestamp` (when Kinesis took it) to
//!   the handler receiving it.
//! - `produce --stream NAME --rate R --seconds S`: puts R records a second for S seconds, in
//!   PutRecords calls every 20 ms (the load of `scripts/bench_latency.sh`).
//! - `bare --source NAME --url URL`: the baseline. One task per shard of the Kinesis stream
//!   reads from TRIM_HORIZON until caught up (GetRecords limit 1000), encodes each record in the
//!   `lambda` format as shardbridge does, and POSTs the page's records in events of up to
//!   `--max-records`, one after the other (a shard's order). No leases, no checkpoints, no
//!   retries beyond failing the run.
//!
//! Endpoints come from `--kinesis-endpoint` or the environment that `scripts/dev-servers.sh env`
//! prints.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use shardbridge::format::{self, FormatKind};
use shardbridge::source::kinesis::{KinesisSource, KinesisStreamRef};
use shardbridge::source::{IteratorPosition, ShardSource};

#[path = "bench_support/mod.rs"]
mod bench_support;
use bench_support::sdk;

#[derive(Parser)]
#[command(about = "http sink throughput benchmark helper")]
struct Cli {
    /// Kinesis endpoint (kinesalite).
    #[arg(long, global = true, env = "SHARDBRIDGE_TEST_KINESIS_ENDPOINT")]
    kinesis_endpoint: Option<String>,
    #[arg(long, global = true, default_value = "us-east-1")]
    region: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a handler that answers at once and counts records.
    Handler {
        #[arg(long)]
        port: u16,
        /// Records after which the time is written to `--reached`.
        #[arg(long)]
        expect: Option<u64>,
        #[arg(long)]
        reached: Option<std::path::PathBuf>,
    },
    /// Put `rate` records a second for `seconds` seconds.
    Produce {
        #[arg(long)]
        stream: String,
        #[arg(long)]
        rate: u64,
        #[arg(long)]
        seconds: u64,
    },
    /// The bare loop: every shard to its end, each page POSTed as events of `max_records`.
    Bare {
        #[arg(long)]
        source: String,
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 100)]
        max_records: usize,
    },
}

/// The identity the `lambda` format names (what `format.invoke_identity_arn` sets).
const IDENTITY: &str = "arn:aws:iam::123456789012:role/bench";

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Handler {
            port,
            expect,
            reached,
        } => handler(*port, *expect, reached.clone()).await,
        Command::Bare {
            source,
            url,
            max_records,
        } => bare(&cli, source, url, *max_records).await,
        Command::Produce {
            stream,
            rate,
            seconds,
        } => produce(&cli, stream, *rate, *seconds).await,
    }
}

async fn handler(
    port: u16,
    expect: Option<u64>,
    reached: Option<std::path::PathBuf>,
) -> Result<()> {
    let count = Arc::new(AtomicU64::new(0));
    let (post_count, get_count) = (count.clone(), count);
    // Milliseconds from each record's arrival in the stream to its receipt here.
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let (post_latencies, get_latencies, reset_latencies) =
        (latencies.clone(), latencies.clone(), latencies);
    let app = axum::Router::new()
        .route(
            "/invoke",
            axum::routing::post(move |body: axum::body::Bytes| {
                let count = post_count.clone();
                let reached = reached.clone();
                let latencies = post_latencies.clone();
                async move {
                    let event: serde_json::Value =
                        serde_json::from_slice(&body).unwrap_or_default();
                    let n = event["Records"].as_array().map_or(0, Vec::len) as u64;
                    let received = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs_f64();
                    let arrived = event["Records"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|r| r["kinesis"]["approximateArrivalTimestamp"].as_f64());
                    latencies
                        .lock()
                        .unwrap()
                        .extend(arrived.map(|t| (received - t).max(0.0) * 1000.0));
                    let before = count.fetch_add(n, Ordering::Relaxed);
                    if let (Some(want), Some(file)) = (expect, &reached) {
                        let now = || {
                            let t = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .unwrap_or_default()
                                .as_secs_f64();
                            format!("{t:.6}")
                        };
                        if before == 0 && n > 0 {
                            let _ = std::fs::write(file.with_extension("first"), now());
                        }
                        if before < want && before + n >= want {
                            let _ = std::fs::write(file, now());
                        }
                    }
                    ""
                }
            }),
        )
        .route(
            "/count",
            axum::routing::get(move || {
                let count = get_count.clone();
                async move { count.load(Ordering::Relaxed).to_string() }
            }),
        )
        .route(
            "/latency",
            axum::routing::get(move || {
                let latencies = get_latencies.clone();
                async move {
                    let mut l = latencies.lock().unwrap().clone();
                    l.sort_by(f64::total_cmp);
                    let at = |q: f64| {
                        l.get(((l.len() as f64 * q).ceil() as usize).saturating_sub(1))
                            .copied()
                            .unwrap_or(0.0)
                    };
                    format!("{} {:.1} {:.1} {:.1}", l.len(), at(0.5), at(0.99), at(1.0))
                }
            }),
        )
        .route(
            "/reset",
            axum::routing::get(move || {
                let latencies = reset_latencies.clone();
                async move {
                    latencies.lock().unwrap().clear();
                    "ok"
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("bind 127.0.0.1:{port}"))?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn bare(cli: &Cli, source: &str, url: &str, max_records: usize) -> Result<()> {
    let started = Instant::now();
    let conf = sdk(&cli.kinesis_endpoint, &cli.region).await?;
    let src = Arc::new(
        KinesisSource::connect(&conf, &KinesisStreamRef::Name(source.to_string()))
            .await
            .with_context(|| format!("stream {source}"))?,
    );
    let http = reqwest::Client::new();
    let shards = src.list_shards().await.context("ListShards")?;
    let mut tasks = tokio::task::JoinSet::new();
    for shard in shards {
        let (src, http, url) = (src.clone(), http.clone(), url.to_string());
        tasks.spawn(async move {
            let mut sent = 0usize;
            let mut iterator = src
                .open_iterator(&shard.shard_id, &IteratorPosition::TrimHorizon)
                .await
                .context("GetShardIterator")?;
            loop {
                let page = src
                    .get_records(&iterator, 1000)
                    .await
                    .context("GetRecords")?;
                for chunk in page.records.chunks(max_records.max(1)) {
                    let mut body = b"{\"Records\":[".to_vec();
                    for (i, r) in chunk.iter().enumerate() {
                        if i > 0 {
                            body.push(b',');
                        }
                        format::encode_as(FormatKind::Lambda, Some(IDENTITY), r, &mut body)?;
                        if body.last() == Some(&b'\n') {
                            body.pop();
                        }
                    }
                    body.extend_from_slice(b"]}");
                    let answer = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body)
                        .build()
                        .context("request")?;
                    let answer = http.execute(answer).await.context("POST")?;
                    if !answer.status().is_success() {
                        bail!("POST: HTTP {}", answer.status());
                    }
                    sent += chunk.len();
                }
                match page.next_iterator {
                    None => break,
                    Some(_)
                        if page.records.is_empty()
                            && page.millis_behind_latest.unwrap_or(0) == 0 =>
                    {
                        break
                    }
                    Some(next) => iterator = next,
                }
            }
            anyhow::Ok(sent)
        });
    }
    let mut total = 0;
    while let Some(r) = tasks.join_next().await {
        total += r??;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "bare: {total} records in {secs:.3} s ({:.0} records/s)",
        total as f64 / secs
    );
    Ok(())
}

async fn produce(cli: &Cli, stream: &str, rate: u64, seconds: u64) -> Result<()> {
    use aws_sdk_kinesis::primitives::Blob;
    use aws_sdk_kinesis::types::PutRecordsRequestEntry;
    let conf = sdk(&cli.kinesis_endpoint, &cli.region).await?;
    let kinesis = aws_sdk_kinesis::Client::new(&conf);
    let tick = std::time::Duration::from_millis(20);
    let per_tick = (rate as f64 * tick.as_secs_f64()).max(1.0);
    let started = Instant::now();
    let (mut due, mut sent) = (0f64, 0usize);
    let mut interval = tokio::time::interval(tick);
    while started.elapsed().as_secs() < seconds {
        interval.tick().await;
        due += per_tick;
        while (sent as f64) < due.floor() {
            let n = ((due.floor() as usize) - sent).min(500);
            let entries = (sent..sent + n)
                .map(|i| {
                    let (key, data) = bench_support::record_data(i);
                    PutRecordsRequestEntry::builder()
                        .partition_key(key)
                        .data(Blob::new(data))
                        .build()
                        .context("entry")
                })
                .collect::<Result<Vec<_>>>()?;
            let out = kinesis
                .put_records()
                .stream_name(stream)
                .set_records(Some(entries))
                .send()
                .await
                .context("PutRecords")?;
            if out.failed_record_count.unwrap_or(0) > 0 {
                bail!("PutRecords: {:?} records failed", out.failed_record_count);
            }
            sent += n;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "produced {sent} records in {secs:.1} s ({:.0} records/s)",
        sent as f64 / secs
    );
    Ok(())
}
