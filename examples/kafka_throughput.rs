//! Throughput benchmark helper for the Kafka sink against local servers (kinesalite for the
//! Kinesis source, the tansu broker for Kafka). `scripts/bench_kafka.sh` drives it (the source
//! stream is loaded with `kinesis_throughput load`); the subcommands:
//!
//! - `mktopic --topic NAME --partitions 4`: creates a topic.
//! - `bare --source STREAM --topic NAME`: the baseline. One task per source shard reads from
//!   TRIM_HORIZON until caught up (GetRecords limit 1000) and hands each record to one shared
//!   rdkafka idempotent producer (value = the record's bytes, key = its partition key, the Java
//!   partitioner), then waits for every delivery. No transactions, no leases, no intents, no
//!   checkpoints.
//! - `count --topic NAME`: reads the topic's raw record batches (the tests' verifier: only
//!   records whose transaction committed count): records, distinct (key, value) pairs, records
//!   out of order per key (a `version` below one already seen for the key), open and aborted
//!   transactions' records, and a digest of the distinct pairs (equal digests: the same records).
//!
//! Endpoints: `--brokers` (or SHARDBRIDGE_TEST_KAFKA_BOOTSTRAP) and `--kinesis-endpoint` (or
//! SHARDBRIDGE_TEST_KINESIS_ENDPOINT), as `scripts/dev-servers.sh env` prints them.

use std::collections::{HashMap, HashSet};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use sha2::{Digest, Sha256};

use shardbridge::source::kinesis::{KinesisSource, KinesisStreamRef};
use shardbridge::source::record::SourceRecord;
use shardbridge::source::{IteratorPosition, ShardSource};

#[path = "bench_support/mod.rs"]
mod bench_support;
use bench_support::*;

/// The tests' raw-batch verifier, shared.
#[path = "../tests/common/kafka.rs"]
#[allow(dead_code)]
mod kafka;

#[derive(Parser)]
#[command(about = "Kafka sink throughput benchmark helper (kinesalite + tansu)")]
struct Cli {
    #[arg(long, global = true, env = "SHARDBRIDGE_TEST_KAFKA_BOOTSTRAP")]
    brokers: String,
    #[arg(long, global = true, env = "SHARDBRIDGE_TEST_KINESIS_ENDPOINT")]
    kinesis_endpoint: Option<String>,
    #[arg(long, global = true, default_value = "us-east-1")]
    region: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Mktopic {
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 4)]
        partitions: i32,
    },
    Bare {
        #[arg(long)]
        source: String,
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
    Count {
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 4)]
        partitions: i32,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Mktopic { topic, partitions } => {
            TcpStream::connect(&cli.brokers).context("the Kafka broker")?;
            kafka::create_topic(&cli.brokers, topic, *partitions).await;
            Ok(())
        }
        Command::Bare {
            source,
            topic,
            limit,
        } => bare(&cli, source, topic, *limit).await,
        Command::Count { topic, partitions } => count(&cli.brokers, topic, *partitions),
    }
}

async fn bare(cli: &Cli, source: &str, topic: &str, limit: u32) -> Result<()> {
    let started = Instant::now();
    let conf = sdk(&cli.kinesis_endpoint, &cli.region).await?;
    let src = Arc::new(
        KinesisSource::connect(&conf, &KinesisStreamRef::Name(source.to_string()))
            .await
            .with_context(|| format!("stream {source}"))?,
    );
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &cli.brokers)
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .create()
        .context("producer")?;
    let shards = src.list_shards().await.context("ListShards")?;
    let mut tasks = tokio::task::JoinSet::new();
    for shard in shards {
        let (src, producer, topic) = (src.clone(), producer.clone(), topic.to_string());
        tasks.spawn(async move {
            let mut it = src
                .open_iterator(&shard.shard_id, &IteratorPosition::TrimHorizon)
                .await?;
            let mut deliveries = Vec::new();
            loop {
                let page = src.get_records(&it, limit).await?;
                for r in &page.records {
                    let SourceRecord::Kinesis(k) = r else {
                        bail!("not a Kinesis record");
                    };
                    let mut record = FutureRecord::to(&topic)
                        .key(k.partition_key.as_str())
                        .payload(k.data.as_slice());
                    loop {
                        match producer.send_result(record) {
                            Ok(d) => {
                                deliveries.push(d);
                                break;
                            }
                            Err((_, back)) => {
                                record = back;
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                        }
                    }
                }
                match page.next_iterator {
                    Some(next) if !page.records.is_empty() => it = next,
                    _ => break,
                }
            }
            let n = deliveries.len();
            for d in deliveries {
                if let Ok(Err((e, _))) = d.await {
                    bail!("delivery: {e}");
                }
            }
            Ok(n)
        });
    }
    let mut records = 0;
    while let Some(r) = tasks.join_next().await {
        records += r??;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "bare: {records} records in {secs:.3} s ({:.0} records/s)",
        records as f64 / secs
    );
    Ok(())
}

fn count(brokers: &str, topic: &str, partitions: i32) -> Result<()> {
    let read = kafka::read_topic(brokers, topic, partitions);
    let mut seen = HashSet::new();
    let mut last: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut out_of_order = 0;
    for r in &read.committed {
        let key = r.key.clone().unwrap_or_default();
        seen.insert((key.clone(), r.value.clone()));
        let v: serde_json::Value = serde_json::from_slice(&r.value).context("JSON value")?;
        let version = v["version"].as_u64().unwrap_or(0);
        let prev = last.entry(key).or_insert(0);
        if version < *prev {
            out_of_order += 1;
        }
        *prev = version.max(*prev);
    }
    let mut pairs: Vec<_> = seen.iter().collect();
    pairs.sort();
    let mut h = Sha256::new();
    for (k, v) in pairs {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k);
        h.update((v.len() as u64).to_be_bytes());
        h.update(v);
    }
    let digest: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!(
        "{topic}: {} committed records, {} distinct, {out_of_order} out of order, {} aborted, {} open",
        read.committed.len(),
        seen.len(),
        read.aborted,
        read.open
    );
    println!(
        "RESULT records={} distinct={} out_of_order={out_of_order} aborted={} open={} digest={digest}",
        read.committed.len(),
        seen.len(),
        read.aborted,
        read.open
    );
    Ok(())
}
