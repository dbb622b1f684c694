//! What the end-to-end benchmark helpers (`s3_throughput`, `kinesis_throughput`) share: the
//! load's records, SDK settings, and the latency probes of the calls on every record's path.
//! Included by each with `#[path = "bench_support/mod.rs"] mod bench_support;`.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};

use shardbridge::config::AwsSettings;
use shardbridge::source::kinesis::KinesisSource;
use shardbridge::source::{IteratorPosition, RecordPage, Shard, ShardSource};

/// Size of each record's data (JSON), in bytes.
pub const RECORD_BYTES: usize = 200;
/// Distinct partition keys.
pub const KEYS: usize = 1000;
/// PutRecords' largest call.
pub const PUT_RECORDS_BATCH: usize = 500;

/// shardbridge's own SDK settings (timeouts, retries) against a local endpoint.
pub async fn sdk(endpoint: &Option<String>, region: &str) -> Result<aws_config::SdkConfig> {
    let Some(url) = endpoint else {
        bail!("no endpoint: pass it or eval \"$(scripts/dev-servers.sh env)\"");
    };
    Ok(shardbridge::aws::sdk_config(&AwsSettings {
        region: Some(region.to_string()),
        endpoint_url: Some(url.clone()),
        ..AwsSettings::default()
    })
    .await)
}

/// Record `i`'s key and data: JSON padded to exactly `RECORD_BYTES` bytes, with its key's
/// version (`i / KEYS + 1`: increasing per key).
pub fn record_data(i: usize) -> (String, Vec<u8>) {
    let key = format!("key-{:04}", i % KEYS);
    let head = format!(
        r#"{{"id":{i},"key":"{key}","version":{},"pad":""#,
        i / KEYS + 1
    );
    let pad = RECORD_BYTES.saturating_sub(head.len() + 2);
    let mut data = head.into_bytes();
    data.extend(vec![b'x'; pad]);
    data.extend_from_slice(b"\"}");
    (key, data)
}

/// A name no earlier run used.
pub fn unique_name(what: &str) -> Result<String> {
    Ok(format!(
        "{what}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    ))
}

/// Mean milliseconds per call of `calls` sequential calls of `f(caller, i)`, by each of
/// `callers` concurrent callers.
pub async fn timed<F, Fut>(callers: usize, calls: usize, f: F) -> Result<f64>
where
    F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..callers {
        let f = f.clone();
        tasks.spawn(async move {
            let started = Instant::now();
            for i in 0..calls {
                f(c, i).await?;
            }
            Ok::<_, anyhow::Error>(started.elapsed())
        });
    }
    let mut total = Duration::ZERO;
    while let Some(r) = tasks.join_next().await {
        total += r??;
    }
    Ok(total.as_secs_f64() * 1000.0 / (callers * calls) as f64)
}

/// GetRecords latency on the first pages of the source's shards (from TRIM_HORIZON), alone and
/// with one caller per shard (up to 4). Returns the shards and the first shard's first page.
pub async fn probe_get_records(source: &Arc<KinesisSource>) -> Result<(Vec<Shard>, RecordPage)> {
    let shards = source.list_shards().await.context("ListShards")?;
    let first_page = {
        let it = source
            .open_iterator(&shards[0].shard_id, &IteratorPosition::TrimHorizon)
            .await?;
        source.get_records(&it, 1000).await?
    };
    let pages = 3;
    for callers in [1, shards.len().min(4)] {
        let mut its = Vec::new();
        for s in shards.iter().take(callers) {
            its.push(
                source
                    .open_iterator(&s.shard_id, &IteratorPosition::TrimHorizon)
                    .await?,
            );
        }
        let its = Arc::new(std::sync::Mutex::new(its));
        let src = source.clone();
        let ms = timed(callers, pages, move |c, _| {
            let (src, its) = (src.clone(), its.clone());
            async move {
                let it = its.lock().unwrap()[c].clone();
                let page = src.get_records(&it, 1000).await?;
                if let Some(next) = page.next_iterator {
                    its.lock().unwrap()[c] = next;
                }
                Ok(())
            }
        })
        .await?;
        println!(
            "kinesalite GetRecords (limit 1000, {} records on the first page): {ms:.1} ms/call \
             with {callers} caller(s)",
            first_page.records.len()
        );
    }
    Ok((shards, first_page))
}

/// Latency of a conditional UpdateItem like an intent or a checkpoint, on a throwaway table
/// shaped like a lease table, alone and with 4 callers.
pub async fn probe_lease_writes(ddb: &aws_sdk_dynamodb::Client, calls: usize) -> Result<()> {
    let table = unique_name("probe")?;
    ddb.create_table()
        .table_name(&table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("leaseKey")
                .attribute_type(ScalarAttributeType::S)
                .build()?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("leaseKey")
                .key_type(KeyType::Hash)
                .build()?,
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .context("CreateTable")?;
    for c in 0..4 {
        ddb.put_item()
            .table_name(&table)
            .item("leaseKey", AttributeValue::S(format!("shard-{c}")))
            .item("leaseOwner", AttributeValue::S("probe".into()))
            .item("leaseCounter", AttributeValue::N("1".into()))
            .item("checkpoint", AttributeValue::S("TRIM_HORIZON".into()))
            .send()
            .await
            .context("PutItem")?;
    }
    for callers in [1, 4] {
        let (ddb2, table2) = (ddb.clone(), table.clone());
        let ms = timed(callers, calls, move |c, i| {
            let (ddb, table) = (ddb2.clone(), table2.clone());
            async move {
                ddb.update_item()
                    .table_name(&table)
                    .key("leaseKey", AttributeValue::S(format!("shard-{c}")))
                    .update_expression("SET #p = :p, #k = :k")
                    .condition_expression("#o = :o AND #c = :c")
                    .expression_attribute_names("#p", "pendingCheckpoint")
                    .expression_attribute_names("#k", "checkpoint")
                    .expression_attribute_names("#o", "leaseOwner")
                    .expression_attribute_names("#c", "leaseCounter")
                    .expression_attribute_values(":p", AttributeValue::S(format!("{i}..{i}")))
                    .expression_attribute_values(":k", AttributeValue::S(i.to_string()))
                    .expression_attribute_values(":o", AttributeValue::S("probe".into()))
                    .expression_attribute_values(":c", AttributeValue::N("1".into()))
                    .send()
                    .await?;
                Ok(())
            }
        })
        .await?;
        println!("moto conditional UpdateItem: {ms:.1} ms/call with {callers} caller(s)");
    }
    ddb.delete_table().table_name(&table).send().await?;
    Ok(())
}
