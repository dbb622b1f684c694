//! The Kafka sink (README, "Kafka sink"): records produced to a topic by librdkafka, exactly
//! once by the transactional protocol (../commit): one transactional producer per leased
//! shard, its `transactional.id` derived from connector and shard so that a new owner's
//! `init_transactions` fences the old one; each batch is one transaction holding its records
//! and the offset n+1 of the shard's own group (`shardbridge.<connector>.<shard>`, partition
//! 0 of the topic), the commit record a new owner reads to learn whether batch n committed.
//! With `exactly_once = false`, one idempotent producer serves every shard (at least once).

mod client;
pub mod config;
pub mod events;
pub mod topic;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;

use self::client::{
    base_config, call_timeout, classify, producer_config, Failure, MskIamSigner, SinkContext,
};
use self::config::{KafkaAuth, KafkaKey, KafkaSinkConfig};
use self::events::KafkaEvents;
use super::{
    partition_key, Batch, BatchLimits, CommitProtocol, OutputRecord, SendPermit, Sink, SinkError,
};
use crate::aws::AwsSettings;
use crate::source::record::SourceRecord;

/// How long a full producer queue is waited on before the batch is given up as transient.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(5);

pub struct KafkaSink {
    config: KafkaSinkConfig,
    connector: String,
    context: SinkContext,
    events: Arc<KafkaEvents>,
    /// Exactly once: each leased shard's producer. A shard's calls are serialised by its own
    /// lock; the map's lock is held only to find or replace an entry.
    shards: Mutex<HashMap<String, Arc<tokio::sync::Mutex<ShardProducer>>>>,
    /// At least once: one idempotent producer for every shard.
    shared: Option<FutureProducer<SinkContext>>,
}

/// A leased shard's transactional producer and where its transaction stands.
struct ShardProducer {
    shard: String,
    topic: String,
    /// Both the `transactional.id` and the commit record's group.
    id: String,
    /// None before the first batch after a failure that left the producer unusable: the next
    /// batch makes a new one, which fences the old and reads the commit record again.
    txn: Option<Txn>,
    /// A commit of this batch number answered with a retriable error: it may have committed,
    /// so the same commit is asked again, never a new transaction begun.
    committing: Option<u64>,
}

#[derive(Clone)]
struct Txn {
    producer: FutureProducer<SinkContext>,
    group: Arc<ConsumerGroupMetadata>,
    /// Its `client.id`, for the queue gauges.
    client_name: String,
}

impl KafkaSink {
    pub async fn new(
        config: KafkaSinkConfig,
        aws: &AwsSettings,
        connector: &str,
    ) -> Result<Self, SinkError> {
        let events = Arc::new(KafkaEvents::new(connector));
        let signer = match config.auth {
            KafkaAuth::Options => None,
            KafkaAuth::MskIam => {
                let sdk = crate::aws::sdk_config(aws).await;
                let region = sdk.region().cloned().ok_or_else(|| {
                    SinkError::Fatal(
                        "auth = \"msk-iam\" needs an AWS region (sink.aws.region or AWS_REGION)"
                            .into(),
                    )
                })?;
                let credentials = sdk.credentials_provider().ok_or_else(|| {
                    SinkError::Fatal("auth = \"msk-iam\": no AWS credentials provider".into())
                })?;
                Some(Arc::new(MskIamSigner {
                    region,
                    credentials,
                    runtime: tokio::runtime::Handle::current(),
                }))
            }
        };
        let context = SinkContext {
            events: events.clone(),
            signer,
        };
        let shared = if config.exactly_once {
            None
        } else {
            let id = format!("shardbridge.{connector}");
            let producer: FutureProducer<SinkContext> = producer_config(&config, &id)
                .create_with_context(context.clone())
                .map_err(|e| SinkError::Fatal(format!("kafka producer: {e}")))?;
            events.producer_opened();
            Some(producer)
        };
        Ok(KafkaSink {
            config,
            connector: connector.to_string(),
            context,
            events,
            shards: Mutex::new(HashMap::new()),
            shared,
        })
    }

    fn topic(&self, stream_arn: &str) -> Result<String, SinkError> {
        self.config
            .topic
            .render(&self.connector, stream_arn)
            .map_err(|e| SinkError::Fatal(format!("sink.topic: {e}")))
    }

    fn shard(&self, shard: &str) -> Option<Arc<tokio::sync::Mutex<ShardProducer>>> {
        self.shards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(shard)
            .cloned()
    }

    /// Makes a shard's transactional producer: `init_transactions` fences any earlier producer
    /// of the shard (aborting its open transaction), then the commit record is read: the
    /// number of the shard's next batch.
    async fn open_txn(&self, entry: &ShardProducer) -> Result<(Txn, u64), SinkError> {
        let (config, context) = (self.config.clone(), self.context.clone());
        let (topic, id) = (entry.topic.clone(), entry.id.clone());
        let timeout = call_timeout(&self.config);
        let opened = tokio::task::spawn_blocking(move || -> Result<(Txn, u64), KafkaError> {
            let mut pc = producer_config(&config, &id);
            pc.set("transactional.id", &id);
            let producer: FutureProducer<SinkContext> = pc.create_with_context(context.clone())?;
            let client_name = id.clone();
            producer.init_transactions(timeout)?;
            let mut cc = base_config(&config, &format!("{id}.offsets"));
            cc.set("group.id", &id)
                .set("statistics.interval.ms", "0")
                .set("enable.auto.commit", "false")
                .set("isolation.level", "read_committed");
            let consumer: BaseConsumer<SinkContext> = cc.create_with_context(context)?;
            let group = consumer
                .group_metadata()
                .ok_or(KafkaError::Global(RDKafkaErrorCode::InvalidGroupId))?;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&topic, 0);
            let committed = consumer.committed_offsets(tpl, timeout)?;
            let next = match committed.find_partition(&topic, 0).map(|e| e.offset()) {
                Some(Offset::Offset(n)) if n >= 0 => n as u64,
                _ => 0,
            };
            Ok((
                Txn {
                    producer,
                    group: Arc::new(group),
                    client_name,
                },
                next,
            ))
        })
        .await
        .map_err(|e| SinkError::Fatal(format!("kafka producer setup panicked: {e}")))?;
        match opened {
            Ok(ok) => {
                self.events.producer_opened();
                Ok(ok)
            }
            Err(e) => Err(match classify(&e) {
                Failure::Fenced => {
                    self.events.fenced(&entry.shard);
                    SinkError::Fenced(format!("init_transactions: {e}"))
                }
                Failure::Fatal => {
                    SinkError::Fatal(format!("kafka producer for shard {}: {e}", entry.shard))
                }
                _ => SinkError::Transient(format!("kafka: opening the producer: {e}")),
            }),
        }
    }

    /// Lets go of a producer off the runtime (dropping one waits for librdkafka's threads).
    fn discard(&self, txn: Txn, abort: bool) {
        let events = self.events.clone();
        let timeout = Duration::from_secs(2);
        tokio::task::spawn_blocking(move || {
            if abort {
                // An open transaction would stay open until the next owner's init.
                let _ = txn.producer.abort_transaction(timeout);
            }
            events.producer_closed(&txn.client_name);
            drop(txn);
        });
    }

    /// Runs a blocking producer call off the runtime.
    async fn blocking<T: Send + 'static>(
        txn: &Txn,
        call: impl FnOnce(&FutureProducer<SinkContext>) -> Result<T, KafkaError> + Send + 'static,
    ) -> Result<T, KafkaError> {
        let producer = txn.producer.clone();
        tokio::task::spawn_blocking(move || call(&producer))
            .await
            .unwrap_or_else(|e| {
                tracing::error!("a kafka call panicked: {e}");
                Err(KafkaError::Canceled)
            })
    }

    async fn write_transaction(
        &self,
        entry: &mut ShardProducer,
        batch: &Batch,
        n: u64,
        permit: &dyn SendPermit,
    ) -> Result<(), SinkError> {
        let timeout = call_timeout(&self.config);
        if entry.txn.is_none() {
            let (txn, next) = self.open_txn(entry).await?;
            entry.txn = Some(txn);
            entry.committing = None;
            if next == n + 1 {
                // The commit that answered with an error had committed after all.
                tracing::info!(connector = %self.connector, shard = %entry.shard, batch = n, "kafka: the batch had committed");
                return Ok(());
            }
        }
        let txn = entry.txn.clone().expect("a producer was just made");
        match entry.committing {
            Some(c) if c == n => {
                let started = Instant::now();
                return match Self::blocking(&txn, move |p| p.commit_transaction(timeout)).await {
                    Ok(()) => {
                        entry.committing = None;
                        self.events.committed(started.elapsed());
                        self.events.produced(batch.records.len(), batch.bytes());
                        Ok(())
                    }
                    Err(e) => Err(self.failed(entry, "commit", e, n, batch, &[]).await),
                };
            }
            Some(_) => {
                entry.committing = None;
                if let Err(e) = Self::blocking(&txn, move |p| p.abort_transaction(timeout)).await {
                    return Err(self.failed(entry, "abort", e, n, batch, &[]).await);
                }
            }
            None => {}
        }
        if !permit.may_send().await {
            return Err(SinkError::NotPermitted);
        }
        let started = Instant::now();
        if let Err(e) = txn.producer.begin_transaction() {
            return Err(self.failed(entry, "begin", e, n, batch, &[]).await);
        }
        let deliveries = match self.enqueue(&txn.producer, &entry.topic, batch).await {
            Ok(d) => d,
            Err((at, e)) => {
                let too_large = match classify(&e) {
                    Failure::TooLarge => vec![at],
                    _ => Vec::new(),
                };
                return Err(self.failed(entry, "produce", e, n, batch, &too_large).await);
            }
        };
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(&entry.topic, 0, Offset::Offset(n as i64 + 1))
            .map_err(|e| SinkError::Fatal(format!("kafka: {e}")))?;
        let group = txn.group.clone();
        let sent = Self::blocking(&txn, move |p| {
            p.send_offsets_to_transaction(&offsets, &group, timeout)
        })
        .await;
        if let Err(e) = sent {
            return Err(self.failed(entry, "send_offsets", e, n, batch, &[]).await);
        }
        // Every record acknowledged before the commit is asked for (the commit would wait for
        // them anyway): a refused record is named, and the commit is only asked of a
        // transaction whose records are all in.
        for (i, delivery) in deliveries.into_iter().enumerate() {
            let refused = match delivery.await {
                Ok(Ok(_)) => continue,
                Ok(Err((e, _))) => e,
                Err(_) => KafkaError::Canceled,
            };
            let too_large = match refused.rdkafka_error_code() {
                Some(RDKafkaErrorCode::MessageSizeTooLarge) => vec![i],
                _ => Vec::new(),
            };
            return Err(self
                .failed(entry, "produce", refused, n, batch, &too_large)
                .await);
        }
        crate::fault::crash_point("inside_transaction");
        if !permit.may_send().await {
            // The lease is in doubt: nothing of the batch may become visible.
            self.events.aborted(&entry.shard, "the lease is in doubt");
            if Self::blocking(&txn, move |p| p.abort_transaction(timeout))
                .await
                .is_err()
            {
                if let Some(txn) = entry.txn.take() {
                    self.discard(txn, false);
                }
            }
            return Err(SinkError::NotPermitted);
        }
        crate::fault::crash_point("before_commit");
        match Self::blocking(&txn, move |p| p.commit_transaction(timeout)).await {
            Ok(()) => {
                self.events.committed(started.elapsed());
                self.events.produced(batch.records.len(), batch.bytes());
                Ok(())
            }
            Err(e) => Err(self.failed(entry, "commit", e, n, batch, &[]).await),
        }
    }

    /// What a failed step leaves: the transaction aborted (or the producer replaced) and the
    /// error the commit driver acts on. `too_large`: records the cluster refused as too large.
    async fn failed(
        &self,
        entry: &mut ShardProducer,
        step: &str,
        e: KafkaError,
        n: u64,
        batch: &Batch,
        too_large: &[usize],
    ) -> SinkError {
        let shard = entry.shard.clone();
        let failure = match classify(&e) {
            _ if !too_large.is_empty() => Failure::TooLarge,
            f => f,
        };
        let timeout = call_timeout(&self.config);
        match failure {
            Failure::Fenced => {
                self.events.fenced(&shard);
                if let Some(txn) = entry.txn.take() {
                    self.discard(txn, false);
                }
                return SinkError::Fenced(format!("{step}: {e}"));
            }
            Failure::Retriable if step == "commit" => {
                entry.committing = Some(n);
                return SinkError::Transient(format!("kafka commit (asked again): {e}"));
            }
            Failure::ProducerBroken => {
                if let Some(txn) = entry.txn.take() {
                    self.discard(txn, false);
                }
                return SinkError::Transient(format!("kafka {step}: {e}"));
            }
            _ => {}
        }
        // Abort, so the batch can be sent again as a new transaction (or not at all).
        self.events.aborted(&shard, &format!("{step}: {e}"));
        if let Some(txn) = entry.txn.clone() {
            if let Err(abort) = Self::blocking(&txn, move |p| p.abort_transaction(timeout)).await {
                if classify(&abort) == Failure::Fenced {
                    self.events.fenced(&shard);
                    entry.txn = None;
                    self.discard(txn, false);
                    return SinkError::Fenced(format!("abort: {abort}"));
                }
                // A new producer will fence this one and abort what it left.
                entry.txn = None;
                self.discard(txn, false);
            }
        }
        match failure {
            Failure::TooLarge => {
                let record = too_large
                    .first()
                    .and_then(|i| batch.records.get(*i))
                    .map(|r| describe(batch, r))
                    .unwrap_or_else(|| format!("a record of shard {shard}"));
                SinkError::Fatal(format!(
                    "{record} is larger than the topic {} accepts ({e}); nothing of its batch was committed",
                    entry.topic
                ))
            }
            Failure::Fatal => SinkError::Fatal(format!("kafka {step}: {e}")),
            _ => SinkError::Transient(format!("kafka {step}: {e}")),
        }
    }

    /// Hands every record of the batch to the producer, waiting for room in its queue.
    /// On failure: the index of the record and why.
    async fn enqueue(
        &self,
        producer: &FutureProducer<SinkContext>,
        topic: &str,
        batch: &Batch,
    ) -> Result<Vec<DeliveryFuture>, (usize, KafkaError)> {
        let mut deliveries = Vec::with_capacity(batch.records.len());
        let deadline = Instant::now() + call_timeout(&self.config);
        for (i, r) in batch.records.iter().enumerate() {
            let seq = r.sequence_number.to_string();
            let mut headers = OwnedHeaders::new_with_capacity(4)
                .insert(Header {
                    key: "shardbridge.stream",
                    value: Some(batch.stream_arn.as_str()),
                })
                .insert(Header {
                    key: "shardbridge.shard",
                    value: Some(batch.shard_id.as_str()),
                })
                .insert(Header {
                    key: "shardbridge.sequence",
                    value: Some(seq.as_str()),
                });
            if let Some(event) = r.event_name {
                headers = headers.insert(Header {
                    key: "shardbridge.event",
                    value: Some(event),
                });
            }
            let mut record = FutureRecord::to(topic)
                .payload(r.payload.as_slice())
                .headers(headers);
            if let Some(key) = &r.partition_key {
                record = record.key(key.as_str());
            }
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                        if Instant::now() < deadline =>
                    {
                        record = back;
                        crate::metrics::events::retry_wait(
                            &self.connector,
                            "kafka_queue_full",
                            QUEUE_FULL_WAIT,
                        );
                        tokio::time::sleep(QUEUE_FULL_WAIT).await;
                    }
                    Err((e, _)) => return Err((i, e)),
                }
            }
        }
        Ok(deliveries)
    }

    /// At least once: the shared idempotent producer; returns once every record is acked.
    async fn write_idempotent(
        &self,
        producer: &FutureProducer<SinkContext>,
        batch: &Batch,
        permit: &dyn SendPermit,
    ) -> Result<(), SinkError> {
        if !permit.may_send().await {
            return Err(SinkError::NotPermitted);
        }
        let topic = self.topic(&batch.stream_arn)?;
        let deliveries = match self.enqueue(producer, &topic, batch).await {
            Ok(d) => d,
            Err((i, e)) => return Err(self.delivery_error(batch, i, &topic, e)),
        };
        for (i, d) in deliveries.into_iter().enumerate() {
            match d.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(self.delivery_error(batch, i, &topic, e)),
                Err(_) => {
                    return Err(SinkError::Transient(
                        "kafka: a delivery report was lost".into(),
                    ))
                }
            }
        }
        self.events.produced(batch.records.len(), batch.bytes());
        Ok(())
    }

    fn delivery_error(&self, batch: &Batch, i: usize, topic: &str, e: KafkaError) -> SinkError {
        match classify(&e) {
            Failure::TooLarge => SinkError::Fatal(format!(
                "{} is larger than the topic {topic} accepts ({e})",
                describe(batch, &batch.records[i])
            )),
            Failure::Fatal => SinkError::Fatal(format!("kafka produce: {e}")),
            _ => SinkError::Transient(format!("kafka produce: {e}")),
        }
    }
}

/// A record by its source identity, for errors.
fn describe(batch: &Batch, r: &OutputRecord) -> String {
    format!(
        "the record {} of shard {} of {} ({} bytes)",
        r.sequence_number,
        batch.shard_id,
        batch.stream_arn,
        r.payload.len()
    )
}

#[async_trait]
impl Sink for KafkaSink {
    fn commit_protocol(&self) -> CommitProtocol {
        if self.config.exactly_once {
            CommitProtocol::Transactional
        } else {
            CommitProtocol::FlushThenCheckpoint
        }
    }

    fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_records: self.config.max_records,
            max_bytes: self.config.max_bytes,
            max_interval: Duration::from_millis(self.config.max_interval_ms),
        }
    }

    fn partition_key(&self, record: &SourceRecord) -> Option<String> {
        match &self.config.key {
            KafkaKey::Rule(rule) => Some(partition_key::key_text(rule, record)),
            KafkaKey::None => None,
        }
    }

    /// librdkafka's `message.max.bytes` (as set in `[sink.options]`, else its default), less
    /// room for the headers and the record's framing.
    fn max_record_bytes(&self) -> Option<usize> {
        let limit = self
            .config
            .options
            .0
            .iter()
            .find(|(k, _)| k.as_str() == "message.max.bytes")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(1_000_000);
        Some(limit.saturating_sub(1024))
    }

    fn takes_raw_bytes(&self) -> bool {
        true
    }

    async fn open_shard(&self, stream_arn: &str, shard: &str) -> Result<Option<u64>, SinkError> {
        if !self.config.exactly_once {
            return Ok(None);
        }
        let topic = self.topic(stream_arn)?;
        let mut entry = ShardProducer {
            shard: shard.to_string(),
            id: format!("shardbridge.{}.{shard}", self.connector),
            topic,
            txn: None,
            committing: None,
        };
        let (txn, next) = self.open_txn(&entry).await?;
        entry.txn = Some(txn);
        let earlier = self
            .shards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(shard.to_string(), Arc::new(tokio::sync::Mutex::new(entry)));
        if let Some(earlier) = earlier {
            // A lease taken again before the old one was closed: the new producer fenced it.
            if let Some(txn) = earlier.lock().await.txn.take() {
                self.discard(txn, false);
            }
        }
        Ok(Some(next))
    }

    async fn close_shard(&self, shard: &str) {
        let entry = self
            .shards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(shard);
        if let Some(entry) = entry {
            if let Some(txn) = entry.lock().await.txn.take() {
                self.discard(txn, true);
            }
        }
    }

    async fn write_batch(&self, batch: &Batch, permit: &dyn SendPermit) -> Result<(), SinkError> {
        if batch.records.is_empty() {
            return Ok(());
        }
        if let Some(shared) = &self.shared {
            return self.write_idempotent(shared, batch, permit).await;
        }
        let n = batch.number.ok_or_else(|| {
            SinkError::Fatal("kafka: a transactional batch without a number".into())
        })?;
        let entry = self.shard(&batch.shard_id).ok_or_else(|| {
            SinkError::Fatal(format!(
                "kafka: shard {} was not opened before writing",
                batch.shard_id
            ))
        })?;
        let mut entry = entry.lock().await;
        self.write_transaction(&mut entry, batch, n, permit).await
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::config::*;
    use super::*;
    use crate::sink::partition_key::PartitionKeyRule;

    pub fn config(brokers: &str, topic: &str) -> KafkaSinkConfig {
        KafkaSinkConfig {
            brokers: brokers.into(),
            topic: topic::TopicTemplate::parse(topic).unwrap(),
            key: KafkaKey::Rule(PartitionKeyRule::ItemKey),
            exactly_once: true,
            transaction_timeout_ms: DEFAULT_TRANSACTION_TIMEOUT_MS,
            call_timeout_ms: DEFAULT_CALL_TIMEOUT_MS,
            max_records: DEFAULT_MAX_RECORDS,
            max_bytes: DEFAULT_MAX_BYTES,
            max_interval_ms: DEFAULT_MAX_INTERVAL_MS,
            auth: KafkaAuth::Options,
            options: ClientOptions::default(),
        }
    }
}
