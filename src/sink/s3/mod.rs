//! One S3 object per batch, for the idempotent commit protocol (README, "Guarantees", S3).
//!
//! The object key and the object bytes are pure functions of the batch (its shard, its range of
//! sequence numbers and its records) and of the configuration. A worker that recovers an intent
//! re-reads exactly that range and uploads it again: same key, same bytes, still one object.
//!
//! Key: `{prefix}{name}/dt=YYYY-MM-DD/hour=HH/{shard}/{first}-{last}.jsonl{.gz|.zst|}`, where
//! `name` is the table (DynamoDB stream) or the stream (Kinesis), the date and hour are those
//! of the first record's creation time (UTC), and the sequence numbers are zero-padded to 56
//! digits so that lexical order of the keys is sequence order within a shard.

use std::io::Write;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};

pub mod config;
mod events;

pub use config::{Compression, S3SinkConfig};

use super::file::json_lines;
use super::{Batch, BatchLimits, CommitProtocol, SendPermit, Sink, SinkError};
use crate::aws::{classify, AwsErrorClass};
use crate::source::dynamodb_streams::table_name_of;
use crate::source::kinesis::parse_stream_arn;

/// Width of the zero-padded sequence numbers in object keys (Kinesis' longest: 56 digits).
pub const SEQUENCE_WIDTH: usize = 56;
/// Bodies larger than this go through multipart upload, in parts of this size.
pub const MULTIPART_THRESHOLD: usize = 8 * 1024 * 1024;
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// S3's limit on the parts of one upload.
const MAX_PARTS: usize = 10_000;
/// Fixed compression levels: the bytes must not depend on anything but the batch.
pub const GZIP_LEVEL: u32 = 6;
pub const ZSTD_LEVEL: i32 = 3;
pub const CONTENT_TYPE: &str = "application/x-ndjson";

pub struct S3Sink {
    client: aws_sdk_s3::Client,
    config: S3SinkConfig,
    connector: String,
    events: events::S3Events,
}

impl S3Sink {
    pub fn new(sdk_config: &aws_config::SdkConfig, config: S3SinkConfig, connector: &str) -> Self {
        let mut builder = aws_sdk_s3::config::Builder::from(sdk_config);
        if config.force_path_style {
            builder = builder.force_path_style(true);
        }
        S3Sink {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            config,
            connector: connector.to_string(),
            events: events::S3Events::new(connector),
        }
    }

    pub fn config(&self) -> &S3SinkConfig {
        &self.config
    }

    /// The object key of a batch: a pure function of the batch's range and the config.
    pub fn object_key(&self, batch: &Batch) -> String {
        object_key(&self.config, batch)
    }

    /// The object body: a pure function of the batch and the config (same bytes on every call).
    pub fn object_body(&self, batch: &Batch) -> Vec<u8> {
        compress(self.config.compression, &json_lines(batch))
    }

    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), SinkError> {
        let encoding = self.config.compression.content_encoding();
        self.client
            .put_object()
            .bucket(&self.config.bucket)
            .key(key)
            .content_type(CONTENT_TYPE)
            .set_content_encoding(encoding.map(str::to_string))
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.error("PutObject", key, &e))?;
        Ok(())
    }

    async fn put_multipart(&self, key: &str, body: &[u8]) -> Result<(), SinkError> {
        let encoding = self.config.compression.content_encoding();
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.config.bucket)
            .key(key)
            .content_type(CONTENT_TYPE)
            .set_content_encoding(encoding.map(str::to_string))
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .map_err(|e| self.error("CreateMultipartUpload", key, &e))?;
        let upload_id = created.upload_id().ok_or_else(|| {
            SinkError::Transient(format!(
                "{}: CreateMultipartUpload returned no upload id",
                self.location(key)
            ))
        })?;
        let result = self.upload_parts(key, upload_id, body).await;
        if result.is_err() {
            // Best effort: an upload left behind costs storage until a lifecycle rule
            // (AbortIncompleteMultipartUpload) removes it; it is never visible as an object.
            if let Err(e) = self
                .client
                .abort_multipart_upload()
                .bucket(&self.config.bucket)
                .key(key)
                .upload_id(upload_id)
                .send()
                .await
            {
                let (_, detail) = classify("AbortMultipartUpload", &e);
                tracing::warn!(
                    connector = %self.connector,
                    error = %format!("{}: {detail}", self.location(key)),
                    "could not abort a failed multipart upload"
                );
            }
        }
        result
    }

    async fn upload_parts(&self, key: &str, upload_id: &str, body: &[u8]) -> Result<(), SinkError> {
        let count = body.len().div_ceil(PART_SIZE);
        if count > MAX_PARTS {
            return Err(SinkError::Fatal(format!(
                "{}: {} bytes need {count} parts of {PART_SIZE} bytes; S3 allows {MAX_PARTS}",
                self.location(key),
                body.len()
            )));
        }
        let mut parts = Vec::with_capacity(count);
        for (i, chunk) in body.chunks(PART_SIZE).enumerate() {
            let number = (i + 1) as i32;
            let out = self
                .client
                .upload_part()
                .bucket(&self.config.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .checksum_algorithm(ChecksumAlgorithm::Crc32)
                .body(ByteStream::from(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| self.error("UploadPart", key, &e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .set_checksum_crc32(out.checksum_crc32().map(str::to_string))
                    .build(),
            );
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.config.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.error("CompleteMultipartUpload", key, &e))?;
        Ok(())
    }

    fn location(&self, key: &str) -> String {
        format!("s3://{}/{}", self.config.bucket, key)
    }

    fn error<E>(&self, operation: &str, key: &str, err: &SdkError<E, HttpResponse>) -> SinkError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let (class, detail) = classify(operation, err);
        let message = format!("{}: {detail}", self.location(key));
        match s3_class(class, err) {
            AwsErrorClass::Throttled | AwsErrorClass::Transient => SinkError::Transient(message),
            _ => SinkError::Fatal(message),
        }
    }
}

#[async_trait]
impl Sink for S3Sink {
    fn commit_protocol(&self) -> CommitProtocol {
        CommitProtocol::Idempotent
    }

    fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_records: self.config.max_records,
            max_bytes: self.config.max_bytes,
            max_interval: Duration::from_millis(self.config.max_interval_ms),
        }
    }

    async fn write_batch(
        &self,
        batch: &Batch,
        // Not checked: whoever writes this batch's key writes the same bytes, so a worker that
        // lost its lease mid-upload does no harm by finishing.
        _permit: &dyn SendPermit,
    ) -> Result<(), SinkError> {
        if batch.records.is_empty() {
            // Nothing to make durable, and no range to name an object after.
            return Ok(());
        }
        let key = self.object_key(batch);
        let lines = json_lines(batch);
        let compression = self.config.compression;
        // Compressing megabytes takes a while: keep it off the async workers.
        let body = tokio::task::spawn_blocking(move || compress(compression, &lines))
            .await
            .map_err(|e| {
                SinkError::Fatal(format!("{}: compression failed: {e}", self.location(&key)))
            })?;
        let size = body.len();
        let started = Instant::now();
        if size > MULTIPART_THRESHOLD {
            self.put_multipart(&key, &body).await?;
        } else {
            self.put(&key, body).await?;
        }
        self.events.object_written(size, started.elapsed());
        Ok(())
    }
}

/// S3 speaks its own error codes, most of which `classify`'s table does not know (it sends
/// every unknown code to `Transient`). Refine its `Transient` here: the codes S3 documents, then
/// the HTTP status (408, 429 and 5xx are worth retrying, any other 4xx is not).
fn s3_class<E>(class: AwsErrorClass, err: &SdkError<E, HttpResponse>) -> AwsErrorClass
where
    E: ProvideErrorMetadata,
{
    use AwsErrorClass::*;
    if class != Transient {
        return class;
    }
    let SdkError::ServiceError(service) = err else {
        return class;
    };
    match service.err().code().unwrap_or("") {
        // Throttling and server trouble.
        "SlowDown" | "ServiceUnavailable" | "InternalError" | "RequestTimeout"
        // Another request on the same key or upload was in progress.
        | "OperationAborted"
        // A fresh upload fixes these: the multipart upload vanished or a part went missing.
        | "NoSuchUpload" | "InvalidPart" | "InvalidPartOrder"
        // Bytes damaged in transit.
        | "BadDigest" | "IncompleteBody" | "XAmzContentSHA256Mismatch" | "InvalidDigest"
        // Credentials and clock are refreshed and corrected by the SDK on the next call.
        | "ExpiredToken" | "RequestTimeTooSkewed" => Transient,
        "NoSuchBucket"
        | "AccessDenied"
        | "AllAccessDisabled"
        | "AccountProblem"
        | "InvalidAccessKeyId"
        | "SignatureDoesNotMatch"
        | "InvalidBucketName"
        | "InvalidBucketState"
        | "InvalidArgument"
        | "InvalidRequest"
        | "InvalidStorageClass"
        | "KeyTooLongError"
        | "EntityTooLarge"
        | "EntityTooSmall"
        | "MethodNotAllowed"
        | "PermanentRedirect"
        | "AuthorizationHeaderMalformed"
        | "NotImplemented" => Fatal,
        _ => match service.raw().status().as_u16() {
            408 | 429 => Transient,
            400..=499 => Fatal,
            _ => Transient,
        },
    }
}

/// The object key of a non-empty batch (see the module documentation). An empty batch has no
/// object; its key ends in `empty.jsonl…`.
pub fn object_key(config: &S3SinkConfig, batch: &Batch) -> String {
    let name = safe_segment(source_name(&batch.stream_arn));
    let shard = safe_segment(&batch.shard_id);
    let (date, hour) = match batch.first().and_then(|r| r.created_millis) {
        Some(millis) => utc_date_hour(millis),
        None => None,
    }
    .unwrap_or_else(|| ("unknown".to_string(), "unknown".to_string()));
    let range = match (batch.first(), batch.last()) {
        (Some(first), Some(last)) => format!(
            "{}-{}",
            first.sequence_number.padded(SEQUENCE_WIDTH),
            last.sequence_number.padded(SEQUENCE_WIDTH)
        ),
        _ => "empty".to_string(),
    };
    format!(
        "{}{name}/dt={date}/hour={hour}/{shard}/{range}.jsonl{}",
        config.prefix,
        config.compression.extension()
    )
}

/// The table of a DynamoDB stream ARN, the stream of a Kinesis stream ARN, else the ARN itself
/// (made safe by the caller).
fn source_name(stream_arn: &str) -> &str {
    table_name_of(stream_arn)
        .filter(|t| !t.is_empty())
        .or_else(|| parse_stream_arn(stream_arn).map(|a| a.name))
        .unwrap_or(stream_arn)
}

/// A key segment of characters S3 and every tool on top of it handle well: `A-Z a-z 0-9 . _ -`;
/// anything else becomes `_`, and a segment of dots only (`.`, `..`) becomes underscores. Table,
/// stream and shard names never need the replacement.
fn safe_segment(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.chars().all(|c| c == '.') {
        out = "_".repeat(out.len().max(1));
    }
    out
}

/// `("YYYY-MM-DD", "HH")` in UTC for milliseconds since the epoch; None outside years 1-9999.
fn utc_date_hour(millis: i64) -> Option<(String, String)> {
    let secs = millis.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let hour = secs.rem_euclid(86_400) / 3600;
    let (y, m, d) = civil_from_days(days);
    if !(1..=9999).contains(&y) {
        return None;
    }
    Some((format!("{y:04}-{m:02}-{d:02}"), format!("{hour:02}")))
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Deterministic compression: fixed levels, a gzip header without time or file name (and the
/// "unknown" OS byte), single-threaded zstd.
pub fn compress(compression: Compression, data: &[u8]) -> Vec<u8> {
    match compression {
        Compression::None => data.to_vec(),
        Compression::Gzip => {
            let out = Vec::with_capacity(data.len() / 4 + 64);
            let mut enc = flate2::GzBuilder::new()
                .mtime(0)
                .operating_system(255)
                .write(out, flate2::Compression::new(GZIP_LEVEL));
            enc.write_all(data).expect("writing to a Vec cannot fail");
            enc.finish().expect("writing to a Vec cannot fail")
        }
        Compression::Zstd => {
            zstd::bulk::compress(data, ZSTD_LEVEL).expect("zstd compression of a buffer")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::OutputRecord;
    use crate::sink::Unconditional;
    use crate::source::sequence::SequenceNumber;
    use std::io::Read;

    const DDB_ARN: &str =
        "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024-05-01T00:00:00.000";
    const KINESIS_ARN: &str = "arn:aws:kinesis:eu-west-1:123456789012:stream/clicks";
    // 2024-05-01T13:45:10.123Z
    const T: i64 = 1_714_571_110_123;

    fn config(prefix: &str, compression: Compression) -> S3SinkConfig {
        S3SinkConfig {
            bucket: "b".into(),
            prefix: prefix.into(),
            compression,
            max_records: 100_000,
            max_bytes: 8 << 20,
            max_interval_ms: 60_000,
            force_path_style: true,
        }
    }

    fn record(seq: &str, created: Option<i64>) -> OutputRecord {
        OutputRecord {
            sequence_number: SequenceNumber::parse(seq).unwrap(),
            created_millis: created,
            partition_key: None,
            event_name: None,
            lane: 0,
            payload: format!("{{\"seq\":\"{seq}\",\"v\":\"{}\"}}", "x".repeat(40)).into_bytes(),
        }
    }

    fn batch(arn: &str, records: Vec<OutputRecord>) -> Batch {
        Batch {
            stream_arn: arn.into(),
            shard_id: "shardId-00000001714571100000-abcdef12".into(),
            recovery: None,
            number: None,
            records,
        }
    }

    fn sample(n: usize) -> Batch {
        batch(
            DDB_ARN,
            (0..n)
                .map(|i| record(&(1000 + i).to_string(), Some(T + i as i64)))
                .collect(),
        )
    }

    fn pad(s: &str) -> String {
        format!("{s:0>56}")
    }

    #[test]
    fn key_for_a_dynamodb_stream() {
        let b = batch(
            DDB_ARN,
            vec![record("111", Some(T)), record("222", Some(T + 3_600_000))],
        );
        assert_eq!(
            object_key(&config("raw/", Compression::Gzip), &b),
            format!(
                "raw/orders/dt=2024-05-01/hour=13/shardId-00000001714571100000-abcdef12/{}-{}.jsonl.gz",
                pad("111"),
                pad("222")
            )
        );
    }

    #[test]
    fn key_for_a_kinesis_stream() {
        let seq = "49590338271490256608559692538361571095921575989136588898";
        let mut b = batch(KINESIS_ARN, vec![record(seq, Some(T))]);
        b.shard_id = "shardId-000000000003".into();
        assert_eq!(
            object_key(&config("", Compression::Zstd), &b),
            format!("clicks/dt=2024-05-01/hour=13/shardId-000000000003/{seq}-{seq}.jsonl.zst")
        );
    }

    #[test]
    fn sequence_numbers_are_padded_so_keys_sort_in_sequence_order() {
        let key = |seq: &str| object_key(&config("", Compression::None), &sample_at(seq));
        fn sample_at(seq: &str) -> Batch {
            batch(DDB_ARN, vec![record(seq, Some(T))])
        }
        let (a, b) = (key("999"), key("1000"));
        assert!(a < b, "{a} !< {b}");
        assert!(a.ends_with(&format!("/{}-{}.jsonl", pad("999"), pad("999"))));
        let range = a.rsplit('/').next().unwrap();
        assert_eq!(range.len(), 56 + 1 + 56 + ".jsonl".len());
    }

    #[test]
    fn date_and_hour_come_from_the_first_record() {
        // First record just before midnight UTC, the last one after: the first one decides.
        let before_midnight = 1_714_607_999_999; // 2024-05-01T23:59:59.999Z
        let b = batch(
            DDB_ARN,
            vec![
                record("1", Some(before_midnight)),
                record("2", Some(before_midnight + 1)),
            ],
        );
        let key = object_key(&config("", Compression::None), &b);
        assert!(key.starts_with("orders/dt=2024-05-01/hour=23/"), "{key}");
        // Does not depend on the wall clock: the same batch gives the same key later.
        assert_eq!(key, object_key(&config("", Compression::None), &b));
    }

    #[test]
    fn utc_dates_across_calendar_edges() {
        let f = |m| utc_date_hour(m).unwrap();
        assert_eq!(f(0), ("1970-01-01".into(), "00".into()));
        assert_eq!(f(-1), ("1969-12-31".into(), "23".into()));
        assert_eq!(f(951_782_400_000), ("2000-02-29".into(), "00".into()));
        assert_eq!(f(1_709_251_199_000), ("2024-02-29".into(), "23".into()));
        assert_eq!(f(253_402_300_799_000), ("9999-12-31".into(), "23".into()));
        assert_eq!(utc_date_hour(253_402_300_800_000), None);
        assert_eq!(utc_date_hour(i64::MAX), None);
        assert_eq!(utc_date_hour(i64::MIN), None);
    }

    #[test]
    fn unknown_time_and_prefix_handling() {
        let b = batch(DDB_ARN, vec![record("5", None), record("6", Some(T))]);
        for (prefix, start) in [
            ("", "orders/"),
            ("raw/", "raw/orders/"),
            ("raw", "raworders/"),
            ("a/b/", "a/b/orders/"),
        ] {
            let key = object_key(&config(prefix, Compression::None), &b);
            assert!(
                key.starts_with(&format!("{start}dt=unknown/hour=unknown/shardId-")),
                "{prefix:?}: {key}"
            );
        }
    }

    #[test]
    fn keys_hold_only_safe_characters() {
        let mut b = batch("not an arn/with spaces", vec![record("1", Some(T))]);
        b.shard_id = "..".into();
        let key = object_key(&config("", Compression::None), &b);
        assert_eq!(
            key,
            format!(
                "not_an_arn_with_spaces/dt=2024-05-01/hour=13/__/{}-{}.jsonl",
                pad("1"),
                pad("1")
            )
        );
    }

    fn gunzip(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(body)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn bodies_are_deterministic_for_every_compression() {
        for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let cfg = config("", compression);
            let a = compress(cfg.compression, &json_lines(&sample(500)));
            let b = compress(cfg.compression, &json_lines(&sample(500).clone()));
            assert_eq!(a, b, "{compression:?}");
        }
    }

    #[test]
    fn gzip_body_has_a_fixed_header_and_decodes_to_the_lines() {
        let b = sample(3);
        let body = compress(Compression::Gzip, &json_lines(&b));
        // Magic, deflate, no flags, mtime 0, OS 255 (unknown).
        assert_eq!(&body[..4], &[0x1f, 0x8b, 8, 0]);
        assert_eq!(&body[4..8], &[0, 0, 0, 0]);
        assert_eq!(body[9], 255);
        let text = String::from_utf8(gunzip(&body)).unwrap();
        let expected: String = b
            .records
            .iter()
            .map(|r| format!("{}\n", String::from_utf8(r.payload.clone()).unwrap()))
            .collect();
        assert_eq!(text, expected);
        assert_eq!(text.lines().count(), 3);
    }

    #[test]
    fn zstd_round_trip() {
        let b = sample(2000);
        let lines = json_lines(&b);
        let body = compress(Compression::Zstd, &lines);
        assert!(body.len() < lines.len());
        assert_eq!(zstd::stream::decode_all(&body[..]).unwrap(), lines);
    }

    #[test]
    fn none_is_the_plain_lines() {
        let b = sample(2);
        assert_eq!(compress(Compression::None, &json_lines(&b)), json_lines(&b));
    }

    #[tokio::test]
    async fn sink_api_uses_the_config() {
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .build();
        let cfg = S3SinkConfig {
            max_records: 7,
            max_bytes: 1234,
            max_interval_ms: 1500,
            ..config("p/", Compression::Gzip)
        };
        let sink = S3Sink::new(&sdk, cfg.clone(), "c");
        assert_eq!(sink.commit_protocol(), CommitProtocol::Idempotent);
        assert_eq!(
            sink.batch_limits(),
            BatchLimits {
                max_records: 7,
                max_bytes: 1234,
                max_interval: Duration::from_millis(1500),
            }
        );
        let b = sample(4);
        assert_eq!(sink.object_key(&b), object_key(&cfg, &b));
        assert_eq!(sink.object_body(&b), sink.object_body(&b));
        assert_eq!(gunzip(&sink.object_body(&b)), json_lines(&b));
        // An empty batch uploads nothing (no request is made: this client has no credentials).
        sink.write_batch(&batch(DDB_ARN, vec![]), &Unconditional)
            .await
            .unwrap();
    }

    #[test]
    fn s3_error_codes_and_statuses_are_classified() {
        use aws_sdk_s3::error::ErrorMetadata;
        use aws_sdk_s3::operation::put_object::PutObjectError;
        use aws_smithy_types::body::SdkBody;
        let err = |code: &str, status: u16| {
            let meta = if code.is_empty() {
                ErrorMetadata::builder().build()
            } else {
                ErrorMetadata::builder().code(code).build()
            };
            SdkError::service_error(
                PutObjectError::generic(meta),
                HttpResponse::new(status.try_into().unwrap(), SdkBody::empty()),
            )
        };
        let class = |code: &str, status: u16| {
            let e = err(code, status);
            s3_class(classify("PutObject", &e).0, &e)
        };
        use AwsErrorClass::*;
        assert_eq!(class("SlowDown", 503), Throttled);
        assert_eq!(class("ServiceUnavailable", 503), Transient);
        assert_eq!(class("InternalError", 500), Transient);
        assert_eq!(class("RequestTimeout", 400), Transient);
        assert_eq!(class("NoSuchUpload", 404), Transient);
        assert_eq!(class("NoSuchBucket", 404), NotFound);
        assert_eq!(class("AccessDenied", 403), Fatal);
        assert_eq!(class("InvalidAccessKeyId", 403), Fatal);
        assert_eq!(class("KMS.DisabledException", 400), Fatal);
        assert_eq!(class("SomethingNew", 409), Fatal);
        assert_eq!(class("SomethingNew", 429), Transient);
        assert_eq!(class("SomethingNew", 502), Transient);
        assert_eq!(class("", 403), Fatal);
        assert_eq!(class("", 500), Transient);
    }
}
