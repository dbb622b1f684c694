//! `[connectors.on_failure]`: where records that cannot go to the sink are set aside (Lambda's
//! OnFailure destination): an SQS queue, an S3 bucket, a Kinesis stream, a Kafka topic or a
//! file. Each set-aside batch is one OnFailure document (`document.rs`), delivered before the
//! checkpoint passes its records, so a crash repeats a document at worst and loses nothing.

pub mod document;
mod kinesis;
mod s3;
mod sqs;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use super::SinkError;
use crate::aws::{AwsErrorClass, AwsSettings};
use crate::settings::TableReader;
use crate::source::kinesis::KinesisStreamRef;
pub use document::{Condition, SetAside};

/// SQS' largest message.
const SQS_MAX_BYTES: usize = 256 * 1024;
/// Kinesis' largest record (data and partition key).
const KINESIS_MAX_BYTES: usize = 1024 * 1024;
/// Kafka's default `message.max.bytes`, less room for the record's framing.
const KAFKA_MAX_BYTES: usize = 1_000_000 - 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnFailureConfig {
    Sqs {
        queue_url: String,
        aws: AwsSettings,
    },
    S3 {
        bucket: String,
        prefix: String,
        force_path_style: bool,
        aws: AwsSettings,
    },
    Kinesis {
        stream: KinesisStreamRef,
        aws: AwsSettings,
    },
    Kafka {
        brokers: String,
        topic: String,
    },
    File {
        path: PathBuf,
    },
}

impl OnFailureConfig {
    /// Reads `[connectors.on_failure]`; its `aws` keys override `global_aws`.
    pub fn read(t: &mut TableReader, global_aws: &AwsSettings) -> Option<OnFailureConfig> {
        #[derive(Clone, Copy)]
        enum Kind {
            Sqs,
            S3,
            Kinesis,
            Kafka,
            File,
        }
        if !t.has("type") {
            t.problem("type", "missing");
            t.ignore_rest();
            return None;
        }
        let kinds = [
            ("sqs", Kind::Sqs),
            ("s3", Kind::S3),
            ("kinesis", Kind::Kinesis),
            ("kafka", Kind::Kafka),
            ("file", Kind::File),
        ];
        let Some(kind) = t.choice("type", &kinds) else {
            t.ignore_rest();
            return None;
        };
        let aws = |t: &mut TableReader| AwsSettings::read(t, "aws").or(global_aws);
        match kind {
            Kind::Sqs => {
                let queue_url = t.string("queue_url");
                if let Some(url) = &queue_url {
                    if !(url.starts_with("https://") || url.starts_with("http://")) {
                        t.problem("queue_url", format!("{url:?} is not a queue URL"));
                    }
                }
                let aws = aws(t);
                Some(OnFailureConfig::Sqs {
                    queue_url: queue_url?,
                    aws,
                })
            }
            Kind::S3 => {
                let bucket = t.string("bucket");
                let prefix = t.opt_string("prefix").unwrap_or_default();
                let force_path_style = t.opt_bool("force_path_style").unwrap_or(false);
                let aws = aws(t);
                Some(OnFailureConfig::S3 {
                    bucket: bucket?,
                    prefix,
                    force_path_style,
                    aws,
                })
            }
            Kind::Kinesis => {
                // `stream` or `stream_arn`, read as the Kinesis source and sink read them.
                let stream = crate::source::config::read_kinesis_stream(t);
                let aws = aws(t);
                Some(OnFailureConfig::Kinesis {
                    stream: stream?,
                    aws,
                })
            }
            Kind::Kafka => {
                let brokers = t.string("brokers");
                let topic = t.string("topic");
                Some(OnFailureConfig::Kafka {
                    brokers: brokers?,
                    topic: topic?,
                })
            }
            Kind::File => {
                let path = t.string("path");
                Some(OnFailureConfig::File {
                    path: PathBuf::from(path?),
                })
            }
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            OnFailureConfig::Sqs { .. } => "sqs",
            OnFailureConfig::S3 { .. } => "s3",
            OnFailureConfig::Kinesis { .. } => "kinesis",
            OnFailureConfig::Kafka { .. } => "kafka",
            OnFailureConfig::File { .. } => "file",
        }
    }
}

/// A connector's set-aside rules with its destination, as its shards' commit drivers use them.
pub struct OnFailure {
    pub destination: Destination,
    pub max_retry_attempts: Option<u32>,
    pub max_record_age_ms: Option<u64>,
    /// The source is Kinesis (the document's `KinesisBatchInfo`).
    pub kinesis_source: bool,
}

/// A failure destination, ready to take documents.
pub enum Destination {
    Sqs {
        client: aws_sdk_sqs::Client,
        queue_url: String,
    },
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
        prefix: String,
    },
    Kinesis {
        client: aws_sdk_kinesis::Client,
        stream: KinesisStreamRef,
    },
    Kafka {
        producer: rdkafka::producer::FutureProducer,
        topic: String,
    },
    File {
        file: Arc<Mutex<std::fs::File>>,
        path: PathBuf,
    },
}

impl Destination {
    pub async fn build(config: &OnFailureConfig) -> Result<Destination, SinkError> {
        Ok(match config {
            OnFailureConfig::Sqs { queue_url, aws } => Destination::Sqs {
                client: aws_sdk_sqs::Client::new(&crate::aws::sdk_config(aws).await),
                queue_url: queue_url.clone(),
            },
            OnFailureConfig::S3 {
                bucket,
                prefix,
                force_path_style,
                aws,
            } => {
                let sdk = crate::aws::sdk_config(aws).await;
                let conf = aws_sdk_s3::config::Builder::from(&sdk)
                    .force_path_style(*force_path_style)
                    .build();
                Destination::S3 {
                    client: aws_sdk_s3::Client::from_conf(conf),
                    bucket: bucket.clone(),
                    prefix: prefix.clone(),
                }
            }
            OnFailureConfig::Kinesis { stream, aws } => Destination::Kinesis {
                client: aws_sdk_kinesis::Client::new(&crate::aws::sdk_config(aws).await),
                stream: stream.clone(),
            },
            OnFailureConfig::Kafka { brokers, topic } => {
                let producer = rdkafka::ClientConfig::new()
                    .set("bootstrap.servers", brokers)
                    .set("client.id", "shardbridge-on-failure")
                    .set("enable.idempotence", "true")
                    .set("message.timeout.ms", "30000")
                    .create()
                    .map_err(|e| SinkError::Fatal(format!("on_failure kafka: {e}")))?;
                Destination::Kafka {
                    producer,
                    topic: topic.clone(),
                }
            }
            OnFailureConfig::File { path } => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        SinkError::Fatal(format!("on_failure {}: {e}", dir.display()))
                    })?;
                }
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| SinkError::Fatal(format!("on_failure {}: {e}", path.display())))?;
                Destination::File {
                    file: Arc::new(Mutex::new(file)),
                    path: path.clone(),
                }
            }
        })
    }

    /// The largest document the destination takes, if it has a limit: a bigger one goes
    /// without its records.
    fn max_bytes(&self) -> Option<usize> {
        match self {
            Destination::Sqs { .. } => Some(SQS_MAX_BYTES),
            Destination::Kinesis { .. } => Some(KINESIS_MAX_BYTES),
            Destination::Kafka { .. } => Some(KAFKA_MAX_BYTES),
            Destination::S3 { .. } | Destination::File { .. } => None,
        }
    }

    /// Delivers the document of `aside` durably, with its records when they fit. A transient
    /// error is the caller's to retry.
    pub async fn send(&self, aside: &SetAside<'_>, now_millis: i64) -> Result<(), SinkError> {
        let mut body = serde_json::to_vec(&aside.document(now_millis, true))
            .map_err(|e| SinkError::Fatal(format!("on_failure document: {e}")))?;
        if self.max_bytes().is_some_and(|max| body.len() > max) {
            body = serde_json::to_vec(&aside.document(now_millis, false))
                .map_err(|e| SinkError::Fatal(format!("on_failure document: {e}")))?;
        }
        let id = aside.request_id();
        match self {
            Destination::Sqs { client, queue_url } => {
                let text = String::from_utf8(body).map_err(|e| {
                    SinkError::Fatal(format!("on_failure document is not UTF-8: {e}"))
                })?;
                sqs::send(client, queue_url, text).await?;
            }
            Destination::S3 {
                client,
                bucket,
                prefix,
            } => {
                // The same records set aside again overwrite their object: no repeat.
                let key = format!("{prefix}{}.json", id.replace(':', "/"));
                s3::put(client, bucket, key, body).await?;
            }
            Destination::Kinesis { client, stream } => {
                kinesis::put(client, stream, aside.shard_id, body).await?;
            }
            Destination::Kafka { producer, topic } => {
                let record = rdkafka::producer::FutureRecord::to(topic)
                    .key(aside.shard_id)
                    .payload(&body);
                producer
                    .send(record, Duration::from_secs(30))
                    .await
                    .map_err(|(e, _)| SinkError::Transient(format!("on_failure kafka: {e}")))?;
            }
            Destination::File { file, path } => {
                body.push(b'\n');
                let file = file.clone();
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    use std::io::Write as _;
                    let mut f = file.blocking_lock();
                    f.write_all(&body).and_then(|_| f.sync_data()).map_err(|e| {
                        SinkError::Transient(format!("on_failure {}: {e}", path.display()))
                    })
                })
                .await
                .map_err(|e| SinkError::Fatal(format!("on_failure file writer: {e}")))??;
            }
        }
        Ok(())
    }
}

/// A destination's AWS error as the sink's: transient ones are retried.
fn aws_error((class, text): (AwsErrorClass, String)) -> SinkError {
    let text = format!("on_failure: {text}");
    match class {
        AwsErrorClass::Transient | AwsErrorClass::Throttled => SinkError::Transient(text),
        _ => SinkError::Fatal(text),
    }
}

/// The records of a batch that go to the sink, and those set aside before it is sent: too old
/// (`max_record_age_ms`) or too large for the sink (`max_record_bytes`, key and payload).
/// Order is kept within each part.
pub fn split_unsendable(
    records: Vec<super::OutputRecord>,
    now_millis: i64,
    max_record_age_ms: Option<u64>,
    max_record_bytes: Option<usize>,
) -> SplitRecords {
    let mut out = SplitRecords::default();
    for r in records {
        let too_old = match (max_record_age_ms, r.created_millis) {
            _ if r.is_snapshot() => false,
            (Some(max), Some(created)) => now_millis.saturating_sub(created) > max as i64,
            _ => false,
        };
        let size = r.payload.len() + r.partition_key.as_ref().map_or(0, String::len);
        if too_old {
            out.too_old.push(r);
        } else if max_record_bytes.is_some_and(|max| size > max) {
            out.too_large.push(r);
        } else {
            out.send.push(r);
        }
    }
    out
}

#[derive(Debug, Default)]
pub struct SplitRecords {
    pub send: Vec<super::OutputRecord>,
    pub too_old: Vec<super::OutputRecord>,
    pub too_large: Vec<super::OutputRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::OutputRecord;
    use crate::source::sequence::SequenceNumber;

    fn record(seq: u64, created: Option<i64>, bytes: usize, key: Option<&str>) -> OutputRecord {
        OutputRecord {
            sequence_number: SequenceNumber::parse(&seq.to_string()).unwrap(),
            created_millis: created,
            partition_key: key.map(str::to_string),
            event_name: None,
            lane: 0,
            payload: vec![b'x'; bytes],
        }
    }

    fn seqs(records: &[OutputRecord]) -> Vec<String> {
        records
            .iter()
            .map(|r| r.sequence_number.as_str().to_string())
            .collect()
    }

    #[test]
    fn too_old_and_too_large_records_are_set_aside_in_order() {
        let now = 1_000_000;
        let records = vec![
            record(1, Some(now - 5_000), 10, None), // too old
            record(2, Some(now - 10), 10, None),
            record(3, Some(now - 10), 100, Some("k")), // too large with its key
            record(4, None, 10, None),                 // age unknown: kept
            record(5, Some(now - 4_001), 200, None),   // too old (and too large): age first
            record(6, Some(now - 4_000), 99, Some("")),
        ];
        let split = split_unsendable(records, now, Some(4_000), Some(99));
        assert_eq!(seqs(&split.send), ["2", "4", "6"]);
        assert_eq!(seqs(&split.too_old), ["1", "5"]);
        assert_eq!(seqs(&split.too_large), ["3"]);
    }

    #[test]
    fn without_limits_everything_is_sent() {
        let records = vec![
            record(1, Some(0), 10_000_000, None),
            record(2, None, 1, None),
        ];
        let split = split_unsendable(records, i64::MAX, None, None);
        assert_eq!(seqs(&split.send), ["1", "2"]);
        assert!(split.too_old.is_empty() && split.too_large.is_empty());
    }
}
