//! The S3 sink against moto's S3 (a real local server): keys, headers and bodies as read back,
//! idempotent re-uploads, multipart uploads, error classes. Fails (never skips) without moto.

mod common;

use std::io::Read;

use shardbridge::sink::s3::{Compression, S3Sink, S3SinkConfig};
use shardbridge::sink::{Batch, CommitProtocol, OutputRecord, Sink, SinkError, Unconditional};
use shardbridge::source::sequence::SequenceNumber;

const TABLE_ARN: &str =
    "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024-05-01T00:00:00.000";
const KINESIS_ARN: &str = "arn:aws:kinesis:us-east-1:123456789012:stream/clicks";
/// 2024-05-01T13:45:10.123Z
const T: i64 = 1_714_571_110_123;
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-";
const SHARD: &str = "shardId-00000001714571100000-abcdef12";

fn config(bucket: &str, compression: Compression) -> S3SinkConfig {
    S3SinkConfig {
        bucket: bucket.to_string(),
        prefix: "raw/".to_string(),
        compression,
        max_records: 100_000,
        max_bytes: 8 << 20,
        max_interval_ms: 60_000,
        force_path_style: true,
    }
}

fn batch(arn: &str, first_seq: u64, n: usize, payload_len: usize) -> Batch {
    Batch {
        stream_arn: arn.to_string(),
        shard_id: SHARD.to_string(),
        recovery: None,
        number: None,
        records: (0..n)
            .map(|i| {
                let seq = (first_seq + i as u64).to_string();
                // Distinct, incompressible filler (a fixed pseudo-random sequence) so that
                // compressed sizes are predictable.
                let mut state = first_seq
                    .wrapping_add(i as u64)
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    | 1;
                let filler: String = (0..payload_len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        ALPHABET[(state % 64) as usize] as char
                    })
                    .collect();
                OutputRecord {
                    sequence_number: SequenceNumber::parse(&seq).unwrap(),
                    created_millis: Some(T + i as i64),
                    partition_key: None,
                    event_name: None,
                    lane: 0,
                    payload: format!("{{\"seq\":\"{seq}\",\"data\":\"{filler}\"}}").into_bytes(),
                }
            })
            .collect(),
    }
}

fn lines(batch: &Batch) -> Vec<u8> {
    let mut out = Vec::new();
    for r in &batch.records {
        out.extend_from_slice(&r.payload);
        out.push(b'\n');
    }
    out
}

fn decompress(compression: Compression, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match compression {
        Compression::Gzip => {
            flate2::read::MultiGzDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
        }
        Compression::Zstd => out = zstd::stream::decode_all(body).unwrap(),
        Compression::None => out = body.to_vec(),
    }
    out
}

struct Env {
    s3: aws_sdk_s3::Client,
    sdk: aws_config::SdkConfig,
    bucket: String,
}

async fn env() -> Env {
    let endpoint = common::aws_endpoint();
    let sdk = common::sdk_config(&endpoint).await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    let bucket = common::unique("s3sink").to_lowercase();
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    Env { s3, sdk, bucket }
}

struct Object {
    body: Vec<u8>,
    content_type: Option<String>,
    content_encoding: Option<String>,
    e_tag: String,
}

async fn get(env: &Env, key: &str) -> Object {
    let out = env
        .s3
        .get_object()
        .bucket(&env.bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetObject {key}: {e:?}"));
    Object {
        content_type: out.content_type().map(str::to_string),
        content_encoding: out.content_encoding().map(str::to_string),
        e_tag: out.e_tag().unwrap().to_string(),
        body: out.body.collect().await.unwrap().into_bytes().to_vec(),
    }
}

async fn keys(env: &Env) -> Vec<String> {
    let out = env
        .s3
        .list_objects_v2()
        .bucket(&env.bucket)
        .send()
        .await
        .unwrap();
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect()
}

fn pad(seq: u64) -> String {
    format!("{seq:0>56}")
}

#[tokio::test]
async fn writes_one_object_per_batch_for_every_compression() {
    let env = env().await;
    for (compression, ext, encoding) in [
        (Compression::Gzip, ".gz", Some("gzip")),
        (Compression::Zstd, ".zst", Some("zstd")),
        (Compression::None, "", None),
    ] {
        let sink = S3Sink::new(&env.sdk, config(&env.bucket, compression), "s3test");
        assert_eq!(sink.commit_protocol(), CommitProtocol::Idempotent);
        let b = batch(TABLE_ARN, 4_200_000_000_000_000_000, 250, 60);
        sink.write_batch(&b, &Unconditional).await.unwrap();

        let key = format!(
            "raw/orders/dt=2024-05-01/hour=13/{SHARD}/{}-{}.jsonl{ext}",
            pad(4_200_000_000_000_000_000),
            pad(4_200_000_000_000_000_249)
        );
        assert_eq!(sink.object_key(&b), key);
        let obj = get(&env, &key).await;
        assert_eq!(obj.content_type.as_deref(), Some("application/x-ndjson"));
        assert_eq!(obj.content_encoding.as_deref(), encoding, "{compression:?}");
        assert_eq!(obj.body, sink.object_body(&b), "{compression:?}");
        let text = decompress(compression, &obj.body);
        assert_eq!(text, lines(&b), "{compression:?}");
        assert_eq!(String::from_utf8(text).unwrap().lines().count(), 250);
    }
    assert_eq!(keys(&env).await.len(), 3);
}

#[tokio::test]
async fn kinesis_streams_are_named_after_the_stream() {
    let env = env().await;
    let sink = S3Sink::new(&env.sdk, config(&env.bucket, Compression::Gzip), "s3test");
    let seq: u64 = 49_590_338_271_490_256;
    let b = batch(KINESIS_ARN, seq, 3, 10);
    sink.write_batch(&b, &Unconditional).await.unwrap();
    assert_eq!(
        keys(&env).await,
        vec![format!(
            "raw/clicks/dt=2024-05-01/hour=13/{SHARD}/{}-{}.jsonl.gz",
            pad(seq),
            pad(seq + 2)
        )]
    );
}

#[tokio::test]
async fn the_same_batch_twice_is_one_object_with_the_same_bytes() {
    let env = env().await;
    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        // Two sinks, as a crashed worker and the new owner that re-uploads its intent.
        let b = batch(TABLE_ARN, 77, 500, 80);
        let first = S3Sink::new(&env.sdk, config(&env.bucket, compression), "s3test");
        first.write_batch(&b, &Unconditional).await.unwrap();
        let key = first.object_key(&b);
        let before = get(&env, &key).await;

        let again = batch(TABLE_ARN, 77, 500, 80);
        let second = S3Sink::new(&env.sdk, config(&env.bucket, compression), "s3test");
        assert_eq!(second.object_key(&again), key);
        second.write_batch(&again, &Unconditional).await.unwrap();
        let after = get(&env, &key).await;

        assert_eq!(before.e_tag, after.e_tag, "{compression:?}");
        assert_eq!(before.body, after.body, "{compression:?}");
    }
    assert_eq!(keys(&env).await.len(), 3);
}

#[tokio::test]
async fn bodies_over_8_mib_go_through_multipart_upload() {
    let env = env().await;
    let sink = S3Sink::new(&env.sdk, config(&env.bucket, Compression::None), "s3test");
    // About 17 MiB of lines: three parts (8 + 8 + ~1 MiB).
    let b = batch(TABLE_ARN, 1, 4_300, 4_096);
    let expected = lines(&b);
    assert!(expected.len() > 16 * 1024 * 1024, "{}", expected.len());
    sink.write_batch(&b, &Unconditional).await.unwrap();

    let key = sink.object_key(&b);
    let obj = get(&env, &key).await;
    assert!(
        obj.e_tag.trim_matches('"').ends_with("-3"),
        "not a 3-part multipart ETag: {}",
        obj.e_tag
    );
    assert_eq!(obj.content_type.as_deref(), Some("application/x-ndjson"));
    assert_eq!(obj.content_encoding, None);
    assert!(
        obj.body == expected,
        "the multipart object differs from the lines"
    );

    // Re-uploading it (recovery) leaves one object with the same ETag: the parts are the same.
    sink.write_batch(&b, &Unconditional).await.unwrap();
    assert_eq!(get(&env, &key).await.e_tag, obj.e_tag);
    assert_eq!(keys(&env).await, vec![key]);

    // No upload is left open.
    let open = env
        .s3
        .list_multipart_uploads()
        .bucket(&env.bucket)
        .send()
        .await
        .unwrap();
    assert!(open.uploads().is_empty(), "{:?}", open.uploads());
}

#[tokio::test]
async fn compressed_bodies_over_8_mib_use_multipart_and_read_back_intact() {
    let env = env().await;
    let sink = S3Sink::new(&env.sdk, config(&env.bucket, Compression::Zstd), "s3test");
    let b = batch(TABLE_ARN, 1, 3_000, 4_096);
    let body = sink.object_body(&b);
    assert!(body.len() > 8 * 1024 * 1024, "compressed to {}", body.len());
    sink.write_batch(&b, &Unconditional).await.unwrap();
    let obj = get(&env, &sink.object_key(&b)).await;
    assert!(obj.e_tag.trim_matches('"').ends_with("-2"), "{}", obj.e_tag);
    assert_eq!(obj.content_encoding.as_deref(), Some("zstd"));
    assert!(obj.body == body);
    assert!(decompress(Compression::Zstd, &obj.body) == lines(&b));
}

#[tokio::test]
async fn a_missing_bucket_is_fatal_and_named() {
    let env = env().await;
    let missing = common::unique("s3sink-missing").to_lowercase();
    for (compression, records) in [(Compression::Gzip, 3), (Compression::None, 2_200)] {
        // Small bodies fail at PutObject, large ones at CreateMultipartUpload.
        let sink = S3Sink::new(&env.sdk, config(&missing, compression), "s3test");
        let b = batch(TABLE_ARN, 1, records, 4_096);
        match sink.write_batch(&b, &Unconditional).await {
            Err(SinkError::Fatal(msg)) => {
                assert!(msg.contains(&missing), "{msg}");
                assert!(msg.contains(&sink.object_key(&b)), "{msg}");
                assert!(msg.contains("NoSuchBucket"), "{msg}");
                let operation = if records > 1_000 {
                    "CreateMultipartUpload"
                } else {
                    "PutObject"
                };
                assert!(msg.contains(operation), "{msg}");
            }
            other => panic!("expected Fatal, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_unreachable_endpoint_is_transient() {
    let port = common::free_port();
    let sdk = common::sdk_config(&format!("http://127.0.0.1:{port}")).await;
    let sink = S3Sink::new(&sdk, config("nowhere", Compression::Gzip), "s3test");
    match sink
        .write_batch(&batch(TABLE_ARN, 1, 3, 10), &Unconditional)
        .await
    {
        Err(SinkError::Transient(msg)) => {
            assert!(msg.contains("s3://nowhere/raw/orders/"), "{msg}")
        }
        other => panic!("expected Transient, got {other:?}"),
    }
}

#[test]
fn metrics_count_objects_and_compressed_bytes_per_connector() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let (size, objects) = metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let env = env().await;
            let sink = S3Sink::new(&env.sdk, config(&env.bucket, Compression::Gzip), "metered");
            let a = batch(TABLE_ARN, 1, 100, 50);
            let b = batch(TABLE_ARN, 101, 100, 50);
            sink.write_batch(&a, &Unconditional).await.unwrap();
            sink.write_batch(&b, &Unconditional).await.unwrap();
            (sink.object_body(&a).len() + sink.object_body(&b).len(), 2)
        })
    });
    let text = handle.render();
    let value = |name: &str| {
        common::metric_value(&text, name, "connector=\"metered\"")
            .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
    };
    assert_eq!(
        value("shardbridge_sink_objects_written_total"),
        objects as f64
    );
    assert_eq!(
        value("shardbridge_sink_object_bytes_written_total"),
        size as f64
    );
    assert_eq!(value("shardbridge_sink_upload_duration_seconds_count"), 2.0);
    // `connector` is the only label.
    for line in text.lines().filter(|l| l.starts_with("shardbridge_sink_")) {
        let labels = line.split_once('{').map(|(_, r)| r).unwrap_or("");
        let labels = labels.split_once('}').map(|(l, _)| l).unwrap_or("");
        let names: Vec<&str> = labels
            .split(',')
            .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
            .filter(|k| *k != "quantile" && *k != "le")
            .collect();
        assert_eq!(names, vec!["connector"], "{line}");
    }
}
