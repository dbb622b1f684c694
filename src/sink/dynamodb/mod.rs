//! The DynamoDB sink (`type = "dynamodb"`): replicates a DynamoDB stream's changes into another
//! table, in this or another region or account. A change becomes a put of its new image or a
//! delete of its key; a batch writes each item's last change (changes.rs says why that keeps the
//! target from ever going back to an older state), in BatchWriteItem calls of 25, several in
//! flight. Commit protocol `Idempotent`: the batch's range is fixed by its intent, and writing
//! the same range again writes the same last changes.

pub mod changes;
pub mod config;
mod events;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{DeleteRequest, PutRequest, WriteRequest};
use futures_util::stream::{self, TryStreamExt};

pub use config::DynamoDbSinkConfig;

use super::{Batch, BatchLimits, CommitProtocol, SendPermit, Sink, SinkError};
use crate::aws::{classify, AwsErrorClass};
use crate::format::FormatKind;
use crate::retry::Backoff;
use changes::{last_changes, Write};

/// BatchWriteItem's limit of requests per call.
pub const ITEMS_PER_CALL: usize = 25;
/// Waits before sending a call's unprocessed items again (DynamoDB's advice: back off).
const UNPROCESSED: Backoff = Backoff::new(50, 5_000, 10);

pub struct DynamoDbSink {
    client: aws_sdk_dynamodb::Client,
    config: DynamoDbSinkConfig,
    connector: String,
    events: events::DynamoDbEvents,
}

impl DynamoDbSink {
    pub fn new(
        sdk_config: &aws_config::SdkConfig,
        config: DynamoDbSinkConfig,
        connector: &str,
    ) -> Self {
        DynamoDbSink {
            client: aws_sdk_dynamodb::Client::new(sdk_config),
            config,
            connector: connector.to_string(),
            events: events::DynamoDbEvents::new(connector),
        }
    }

    /// One BatchWriteItem call of at most 25 writes, its unprocessed items sent again with
    /// back-off (bounded: then the batch fails transiently and is written again whole).
    async fn write_call(
        &self,
        writes: Vec<Write>,
        permit: &dyn SendPermit,
    ) -> Result<(), SinkError> {
        let mut requests: Vec<WriteRequest> =
            writes.into_iter().map(request).collect::<Result<_, _>>()?;
        let mut attempt = 0u32;
        while !requests.is_empty() {
            if !permit.may_send().await {
                return Err(SinkError::NotPermitted);
            }
            let sent = requests.len();
            let result = self
                .client
                .batch_write_item()
                .request_items(&self.config.table, std::mem::take(&mut requests))
                .send()
                .await;
            let left = match result {
                Ok(out) => out
                    .unprocessed_items
                    .and_then(|mut by_table: HashMap<String, Vec<WriteRequest>>| {
                        by_table.remove(&self.config.table)
                    })
                    .unwrap_or_default(),
                Err(e) => return Err(self.error(&e)),
            };
            self.events.written(sent - left.len());
            if left.is_empty() {
                return Ok(());
            }
            // Throttled in part: what is left goes again after a pause.
            self.events.throttled(left.len());
            attempt += 1;
            let Some(wait) = UNPROCESSED.delay(attempt, rand::random::<f64>()) else {
                return Err(SinkError::Transient(format!(
                    "table {}: {} items still unprocessed after {attempt} BatchWriteItem calls (throttled)",
                    self.config.table,
                    left.len()
                )));
            };
            crate::metrics::events::retry_wait(&self.connector, "dynamodb_throttled", wait);
            tokio::time::sleep(wait).await;
            requests = left;
        }
        Ok(())
    }

    fn error<E, R>(&self, err: &aws_sdk_dynamodb::error::SdkError<E, R>) -> SinkError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: crate::aws::ResponseStatus + std::fmt::Debug + 'static,
    {
        let (class, detail) = classify("BatchWriteItem", err);
        let message = format!("table {}: {detail}", self.config.table);
        match class {
            AwsErrorClass::Throttled | AwsErrorClass::Transient => {
                if class == AwsErrorClass::Throttled {
                    self.events.throttled(0);
                }
                SinkError::Transient(message)
            }
            _ => SinkError::Fatal(message),
        }
    }
}

fn request(write: Write) -> Result<WriteRequest, SinkError> {
    let built = match write {
        Write::Put(item) => PutRequest::builder()
            .set_item(Some(item.into_iter().collect()))
            .build()
            .map(|p| WriteRequest::builder().put_request(p).build()),
        Write::Delete(key) => DeleteRequest::builder()
            .set_key(Some(key.into_iter().collect()))
            .build()
            .map(|d| WriteRequest::builder().delete_request(d).build()),
    };
    built.map_err(|e| SinkError::Fatal(format!("a write request: {e}")))
}

#[async_trait]
impl Sink for DynamoDbSink {
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

    /// The sink reads the changes back from their `lambda` form, whatever the connector's
    /// format (validate refuses another).
    fn own_format(&self) -> Option<FormatKind> {
        Some(FormatKind::Lambda)
    }

    async fn write_batch(&self, batch: &Batch, permit: &dyn SendPermit) -> Result<(), SinkError> {
        let (writes, superseded) =
            last_changes(&batch.records).map_err(|e| SinkError::Fatal(e.to_string()))?;
        self.events.superseded(superseded);
        let mut calls: Vec<Vec<Write>> = Vec::new();
        for w in writes {
            match calls.last_mut() {
                Some(call) if call.len() < ITEMS_PER_CALL => call.push(w),
                _ => calls.push(vec![w]),
            }
        }
        // Each item appears once in the batch's writes, so the calls may go in any order.
        stream::iter(calls.into_iter().map(Ok))
            .try_for_each_concurrent(self.config.max_in_flight, |call| {
                self.write_call(call, permit)
            })
            .await
    }
}
