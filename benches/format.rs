//! Encoding throughput of each record format, in records per second, for a realistic
//! NEW_AND_OLD_IMAGES record of about 1 KB.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardbridge::format::{encode_change, FormatKind};
use shardbridge::source::record::{
    AttributeValue, ChangeRecord, Item, OperationType, SourceIdentity, StreamViewType,
};
use shardbridge::source::sequence::SequenceNumber;

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn n(v: &str) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// An order item: ten attributes, including a map, a list of maps, a string set and binary.
fn order(status: &str, total: &str, version: &str) -> Item {
    let line = |sku: &str, qty: &str, price: &str| {
        AttributeValue::M(BTreeMap::from([
            ("sku".to_string(), s(sku)),
            ("qty".to_string(), n(qty)),
            ("price".to_string(), n(price)),
        ]))
    };
    BTreeMap::from([
        (
            "pk".to_string(),
            s("customer#8f14e45fceea167a5a36dedd4bea2543"),
        ),
        ("sk".to_string(), s("order#2026-11-24T03:24:30.123Z#000042")),
        ("status".to_string(), s(status)),
        ("total".to_string(), n(total)),
        ("version".to_string(), n(version)),
        ("gift".to_string(), AttributeValue::Bool(false)),
        (
            "tags".to_string(),
            AttributeValue::Ss(vec!["express".into(), "priority".into()]),
        ),
        (
            "checksum".to_string(),
            AttributeValue::B((0u8..20).collect()),
        ),
        (
            "shipping".to_string(),
            AttributeValue::M(BTreeMap::from([
                ("name".to_string(), s("Ada Lovelace")),
                ("street".to_string(), s("12 St James's Square")),
                ("city".to_string(), s("London")),
                ("postcode".to_string(), s("SW1Y 4JH")),
                ("country".to_string(), s("GB")),
                ("note".to_string(), AttributeValue::Null(true)),
            ])),
        ),
        (
            "lines".to_string(),
            AttributeValue::L(vec![
                line("SKU-1001-BLK-M", "2", "19.99"),
                line("SKU-2040-RED-L", "1", "49.5"),
            ]),
        ),
    ])
}

fn record() -> ChangeRecord {
    ChangeRecord {
        event_id: "c81e728d9d4c2f636f067f89cc14862c".into(),
        operation: OperationType::Modify,
        event_version: "1.1".into(),
        aws_region: "us-east-1".into(),
        table_name: "Orders".into(),
        source: SourceIdentity {
            stream_arn: "arn:aws:dynamodb:us-east-1:123456789012:table/Orders/stream/2026-11-20T08:15:30.123".into(),
            shard_id: "shardId-00000001763626530123-1a2b3c4d".into(),
            sequence_number: SequenceNumber::parse("4960000000000001234567890123456789").unwrap(),
        },
        approximate_creation_millis: Some(1_795_490_670_123),
        keys: BTreeMap::from([
            ("pk".to_string(), s("customer#8f14e45fceea167a5a36dedd4bea2543")),
            ("sk".to_string(), s("order#2026-11-24T03:24:30.123Z#000042")),
        ]),
        new_image: Some(order("SHIPPED", "89.48", "4")),
        old_image: Some(order("PAID", "89.48", "3")),
        size_bytes: 612,
        view_type: StreamViewType::NewAndOldImages,
        user_identity: None,
    }
}

fn bench_formats(c: &mut Criterion) {
    let record = record();
    let mut group = c.benchmark_group("format");
    group.throughput(Throughput::Elements(1));
    for kind in [
        FormatKind::Lambda,
        FormatKind::KinesisDdb,
        FormatKind::Plain,
    ] {
        // Reuse one buffer, as a sink batching records would.
        let mut out = Vec::with_capacity(4096);
        group.bench_function(kind.as_str(), |b| {
            b.iter(|| {
                out.clear();
                encode_change(kind, black_box(&record), &mut out);
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_formats);
criterion_main!(benches);
