//! An HTTP endpoint as a sink that behaves like a Lambda function behind a stream event source
//! mapping: each call POSTs `{"Records": [...]}` (the records as the connector's format writes
//! them; `lambda` gives the exact records Lambda sends) and reads the answer as Lambda does
//! (`response`). What happens after a failure (retries, bisection, partial batch responses,
//! the failure destination) is Lambda's rules, applied by the commit driver
//! (src/commit/invocation.rs). Delivery is at-least-once: the checkpoint moves only after a
//! successful answer, and the headers name the batch so a handler can drop a repeat.

pub mod config;
pub mod response;

use std::time::{Duration, Instant};

use async_trait::async_trait;
use metrics::{counter, histogram};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};

pub use config::HttpSinkConfig;

use super::{Batch, BatchLimits, CommitProtocol, FunctionRules, SendPermit, Sink, SinkError};
use response::Answer;

/// Headers that identify the batch to the handler.
pub const HEADER_CONNECTOR: &str = "x-shardbridge-connector";
pub const HEADER_STREAM_ARN: &str = "x-shardbridge-stream-arn";
pub const HEADER_SHARD: &str = "x-shardbridge-shard-id";
pub const HEADER_FIRST: &str = "x-shardbridge-first-sequence-number";
pub const HEADER_LAST: &str = "x-shardbridge-last-sequence-number";
pub const HEADER_COUNT: &str = "x-shardbridge-record-count";

pub struct HttpSink {
    http: reqwest::Client,
    config: HttpSinkConfig,
    /// The configured headers, resolved (their values are never logged).
    headers: HeaderMap,
    /// The URL without its query and credentials, for messages.
    shown_url: String,
    connector: String,
}

impl HttpSink {
    /// Resolves the headers' environment variables and reads the TLS files: a missing one is
    /// an error naming the key (never a header's value).
    pub fn new(config: HttpSinkConfig, connector: &str) -> Result<Self, SinkError> {
        let fatal = |key: &str, why: String| SinkError::Fatal(format!("sink.{key}: {why}"));
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let key = format!("headers.{name}");
            let resolved = config::resolve(value, |v| std::env::var(v).ok())
                .map_err(|var| fatal(&key, format!("the environment variable {var} is not set")))?;
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| fatal(&key, "is not a valid header name".into()))?;
            let mut value = HeaderValue::from_str(&resolved).map_err(|_| {
                fatal(
                    &key,
                    "its value (after ${…}) has characters a header cannot carry".into(),
                )
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .connect_timeout(Duration::from_millis(config.timeout_ms.min(10_000)))
            .user_agent(concat!("shardbridge/", env!("CARGO_PKG_VERSION")));
        let read = |key: &str, path: &str| {
            std::fs::read(path).map_err(|e| fatal(key, format!("{path}: {e}")))
        };
        if let Some(path) = &config.tls.ca_file {
            let pem = read("tls.ca_file", path)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| fatal("tls.ca_file", format!("{path}: {e}")))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let (Some(cert), Some(key)) = (&config.tls.cert_file, &config.tls.key_file) {
            let mut pem = read("tls.cert_file", cert)?;
            pem.extend(read("tls.key_file", key)?);
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|e| fatal("tls.cert_file", format!("{cert} with {key}: {e}")))?;
            builder = builder.identity(identity);
        }
        let http = builder
            .build()
            .map_err(|e| fatal("url", format!("cannot set up the HTTP client: {e}")))?;
        let shown_url = match reqwest::Url::parse(&config.url) {
            Ok(u) => format!("{}{}", u.origin().ascii_serialization(), u.path()),
            Err(_) => "the configured url".into(),
        };
        Ok(HttpSink {
            http,
            config,
            headers,
            shown_url,
            connector: connector.to_string(),
        })
    }

    fn invoked(&self, result: &'static str, started: Instant, payload: usize) {
        let c = self.connector.clone();
        counter!("shardbridge_http_invocations_total", "connector" => c.clone(), "result" => result)
            .increment(1);
        histogram!("shardbridge_http_invocation_duration_seconds", "connector" => c.clone())
            .record(started.elapsed().as_secs_f64());
        counter!("shardbridge_http_payload_bytes_total", "connector" => c)
            .increment(payload as u64);
    }
}

/// `{"Records": [r1, r2, ...]}` from records that are each one JSON value.
pub fn event_body(batch: &Batch) -> Vec<u8> {
    let mut body = Vec::with_capacity(batch.bytes() + batch.records.len() + 16);
    body.extend_from_slice(b"{\"Records\":[");
    for (i, r) in batch.records.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(r.payload.strip_suffix(b"\n").unwrap_or(&r.payload));
    }
    body.extend_from_slice(b"]}");
    body
}

#[async_trait]
impl Sink for HttpSink {
    fn commit_protocol(&self) -> CommitProtocol {
        CommitProtocol::FlushThenCheckpoint
    }

    fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_records: self.config.max_records,
            max_bytes: self.config.max_bytes,
            max_interval: Duration::from_millis(self.config.max_interval_ms),
        }
    }

    fn function_rules(&self) -> Option<FunctionRules> {
        Some(FunctionRules {
            bisect_on_error: self.config.bisect_on_error,
        })
    }

    async fn write_batch(&self, batch: &Batch, _permit: &dyn SendPermit) -> Result<(), SinkError> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Ok(());
        };
        let body = event_body(batch);
        let payload = body.len();
        let started = Instant::now();
        let request = self
            .http
            .post(&self.config.url)
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(HEADER_CONNECTOR, &self.connector)
            .header(HEADER_STREAM_ARN, &batch.stream_arn)
            .header(HEADER_SHARD, &batch.shard_id)
            .header(HEADER_FIRST, first.sequence_number.as_str())
            .header(HEADER_LAST, last.sequence_number.as_str())
            .header(HEADER_COUNT, batch.records.len())
            .body(body)
            .build();
        let sent = match request {
            Ok(request) => self.http.execute(request).await,
            Err(e) => Err(e),
        };
        // The body is read within the same overall timeout.
        let answered = match sent {
            Ok(response) => {
                let status = response.status();
                response.bytes().await.map(|body| (status, body))
            }
            Err(e) => Err(e),
        };
        let (status, body) = match answered {
            Ok(answer) => answer,
            Err(e) => {
                let timed_out = e.is_timeout();
                self.invoked(
                    if timed_out { "timeout" } else { "error" },
                    started,
                    payload,
                );
                let why = if timed_out {
                    format!("timed out after {} ms", self.config.timeout_ms)
                } else {
                    error_chain(&e)
                };
                return Err(SinkError::FunctionError {
                    status: None,
                    message: format!("POST {}: {why}", self.shown_url),
                });
            }
        };
        if !status.is_success() {
            self.invoked("error", started, payload);
            let text = String::from_utf8_lossy(&body);
            let text = crate::aws::shorten(text.trim(), 200);
            return Err(SinkError::FunctionError {
                status: Some(status.as_u16()),
                message: format!("POST {}: HTTP {}: {text}", self.shown_url, status.as_u16()),
            });
        }
        if !self.config.report_batch_item_failures {
            self.invoked("success", started, payload);
            return Ok(());
        }
        let sequence_numbers: Vec<&str> = batch
            .records
            .iter()
            .map(|r| r.sequence_number.as_str())
            .collect();
        match response::read_answer(&body, &sequence_numbers) {
            Answer::Success => {
                self.invoked("success", started, payload);
                Ok(())
            }
            Answer::Partial { handled, failed } => {
                self.invoked("partial", started, payload);
                counter!("shardbridge_http_records_reported_failed_total", "connector" => self.connector.clone())
                    .increment(failed as u64);
                Err(SinkError::Partial {
                    handled,
                    message: format!(
                        "POST {}: the handler reported {failed} of {} records failed, the first {}",
                        self.shown_url,
                        batch.records.len(),
                        sequence_numbers.get(handled).copied().unwrap_or_default()
                    ),
                })
            }
            Answer::Failure(why) => {
                self.invoked("error", started, payload);
                Err(SinkError::FunctionError {
                    status: Some(status.as_u16()),
                    message: format!("POST {}: {why}", self.shown_url),
                })
            }
        }
    }
}

/// An HTTP client error and its causes, on one line, without the URL (it may hold a token).
fn error_chain(e: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    if e.is_connect() {
        text.push_str("cannot connect");
    } else {
        text.push_str("request failed");
    }
    while let Some(s) = source {
        let part = s.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::OutputRecord;
    use crate::source::sequence::SequenceNumber;

    #[test]
    fn the_event_is_the_records_in_a_records_list() {
        let record = |seq: &str, json: &str| OutputRecord {
            sequence_number: SequenceNumber::parse(seq).unwrap(),
            created_millis: None,
            partition_key: None,
            event_name: None,
            lane: 0,
            payload: json.as_bytes().to_vec(),
        };
        let batch = Batch {
            stream_arn: "arn".into(),
            shard_id: "s".into(),
            records: vec![record("1", "{\"a\":1}\n"), record("2", "{\"b\":2}")],
            recovery: None,
            number: None,
        };
        let body = event_body(&batch);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, serde_json::json!({"Records": [{"a": 1}, {"b": 2}]}));
    }
}
