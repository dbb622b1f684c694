//! Kinesis Data Streams as a sink, with the reconciling protocol and strict per-key order
//! (README, "Guarantees": Kinesis).
//!
//! A batch goes out in PutRecords calls planned by `put_order` (at most one record per
//! partition key per call, a key's next record only after the previous one was acknowledged),
//! several calls in flight, each started only while the lease's send permit holds. What is
//! acknowledged is remembered per shard, so a batch that is interrupted (the permit withdrawn,
//! or a transient failure) goes on where it stopped when the shard worker hands it over again: nothing acknowledged is sent twice by this process. A new owner
//! that finds an intent reads the target back from the intent's time and sends only what is
//! missing (`reconcile`).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kinesis::error::SdkError;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{Mutex, OnceCell};
use tokio::time::Instant;

pub mod config;
mod events;
pub mod put_order;
pub mod reconcile;

pub use config::{KinesisSinkConfig, OnOversize};

use super::partition_key;
use super::{Batch, BatchLimits, CommitProtocol, SendPermit, Sink, SinkError};
use crate::aws::{classify, AwsErrorClass};
use crate::retry::Backoff;
use crate::source::kinesis::{KinesisSource, KinesisStreamRef};
use crate::source::record::SourceRecord;
use crate::source::sequence::SequenceNumber;
use crate::source::{ShardSource, SourceError};
use put_order::{PlanError, PutLimits, PutOrder, MAX_RECORD_BYTES};
use reconcile::already_written;

/// Rounds in a row in which nothing was acknowledged before the batch is handed back as a
/// transient failure (the shard worker then backs off and reports the sink degraded).
const PUT_BACKOFF: Backoff = Backoff::new(50, 5_000, 8);
/// GetRecords page size when reading the target back.
const READ_BACK_PAGE: u32 = 10_000;

/// How far a batch got: which of its records are acknowledged.
#[derive(Debug)]
struct Progress {
    first: SequenceNumber,
    last: SequenceNumber,
    done: Vec<bool>,
    reconciled: bool,
}

pub struct KinesisSink {
    sdk: aws_config::SdkConfig,
    config: KinesisSinkConfig,
    connector: String,
    events: events::KinesisEvents,
    target: OnceCell<KinesisSource>,
    /// Per source shard and first record, the batches in progress (several at once when a
    /// shard is written in lanes).
    progress: Mutex<HashMap<(String, SequenceNumber), Progress>>,
}

/// One record as Kinesis takes it.
struct Entry<'a> {
    key: &'a str,
    data: &'a [u8],
}

impl<'a> Entry<'a> {
    fn size(&self) -> usize {
        self.key.len() + self.data.len()
    }
}

impl KinesisSink {
    pub fn new(sdk: &aws_config::SdkConfig, config: KinesisSinkConfig, connector: &str) -> Self {
        KinesisSink {
            sdk: sdk.clone(),
            config,
            connector: connector.to_string(),
            events: events::KinesisEvents::new(connector),
            target: OnceCell::new(),
            progress: Mutex::new(HashMap::new()),
        }
    }

    /// The target stream, resolved on first use (a target that is briefly unreachable at start
    /// is then back-pressure like any other outage, not a failed start).
    async fn target(&self) -> Result<&KinesisSource, SinkError> {
        self.target
            .get_or_try_init(|| KinesisSource::connect(&self.sdk, &self.config.stream))
            .await
            .map_err(|e| source_to_sink(&format!("kinesis stream {}", self.config.stream), e))
    }

    /// Reads the target back from `since_millis` (every shard, parents before children) and
    /// returns the records whose partition key is one of `keys`, each key's in order.
    async fn read_back(
        &self,
        keys: &HashSet<&str>,
        since_millis: Option<i64>,
    ) -> Result<Vec<(String, Vec<u8>)>, SinkError> {
        let target = self.target().await?;
        let shards = target
            .list_shards()
            .await
            .map_err(|e| source_to_sink("ListShards", e))?;
        let mut found = Vec::new();
        for shard in parents_first(&shards) {
            let mut iterator = Some(
                match since_millis {
                    Some(ms) => target.open_iterator_at(&shard.shard_id, ms).await,
                    None => {
                        target
                            .open_iterator(
                                &shard.shard_id,
                                &crate::source::IteratorPosition::TrimHorizon,
                            )
                            .await
                    }
                }
                .map_err(|e| source_to_sink("GetShardIterator", e))?,
            );
            while let Some(it) = iterator.take() {
                let page = target
                    .get_records(&it, READ_BACK_PAGE)
                    .await
                    .map_err(|e| source_to_sink("GetRecords", e))?;
                let caught_up =
                    page.records.is_empty() && page.millis_behind_latest.unwrap_or(0) == 0;
                for r in page.records {
                    if let SourceRecord::Kinesis(k) = r {
                        if keys.contains(k.partition_key.as_str()) {
                            found.push((k.partition_key, k.data));
                        }
                    }
                }
                if !caught_up {
                    iterator = page.next_iterator;
                }
            }
        }
        Ok(found)
    }

    /// Sends `entries` not yet `done`, in per-key order, until all are acknowledged or the
    /// permit is withdrawn (then the calls in flight are answered first). Marks what was
    /// acknowledged in `done`.
    async fn send(
        &self,
        batch: &Batch,
        entries: &[Entry<'_>],
        done: &mut [bool],
        permit: &dyn SendPermit,
    ) -> Result<(), SinkError> {
        let target = self.target().await?;
        let (name, arn) = target.address();
        let mut order = PutOrder::with_done(entries.iter().map(|e| (e.key, e.size())), done);
        let mut calls = FuturesUnordered::new();
        let mut stalled_rounds = 0u32;
        let mut pause_until: Option<Instant> = None;
        let mut last_error = String::new();
        loop {
            // Never start a call for a lease that may be gone.
            let permitted = permit.may_send().await;
            let paused = pause_until.is_some_and(|t| Instant::now() < t);
            while permitted && !paused && calls.len() < self.config.max_in_flight {
                let call = order.next_call(&PutLimits::KINESIS);
                if call.is_empty() {
                    break;
                }
                let records: Vec<PutRecordsRequestEntry> = call
                    .iter()
                    .map(|&i| {
                        PutRecordsRequestEntry::builder()
                            .data(Blob::new(entries[i].data.to_vec()))
                            .partition_key(entries[i].key)
                            .build()
                            .expect("data and partition key are set")
                    })
                    .collect();
                let request = target
                    .client()
                    .put_records()
                    .set_stream_name(name.clone())
                    .set_stream_arn(arn.clone())
                    .set_records(Some(records));
                calls.push(async move {
                    let at = Instant::now();
                    let result = request.send().await;
                    (call, result, at.elapsed())
                });
            }
            if order.is_done() {
                return Ok(());
            }
            let Some((call, result, took)) = calls.next().await else {
                if !permitted {
                    return Err(SinkError::NotPermitted);
                }
                // Nothing in flight and nothing sendable: waiting out a back-off.
                if let Some(t) = pause_until.take() {
                    tokio::time::sleep_until(t).await;
                }
                continue;
            };
            self.events.call_answered(took);
            let mut acked = 0usize;
            let mut throttled = false;
            match result {
                Ok(out) => {
                    let results = out.records();
                    let mut failed = 0usize;
                    for (pos, &i) in call.iter().enumerate() {
                        match results.get(pos).and_then(|r| r.error_code()) {
                            None if pos < results.len() => {
                                order.acked(i).map_err(plan_error)?;
                                done[i] = true;
                                acked += 1;
                            }
                            code => {
                                let code = code.unwrap_or("MissingResult");
                                failed += 1;
                                throttled |= is_throttle(code);
                                self.events.record_failed(code);
                                last_error = format!("PutRecords: record failed with {code}");
                                order.failed(i).map_err(plan_error)?;
                            }
                        }
                    }
                    let bytes: usize = call
                        .iter()
                        .filter(|&&i| done[i])
                        .map(|&i| entries[i].size())
                        .sum();
                    self.events.records_put(acked, bytes, failed);
                }
                Err(e) => {
                    let (class, detail) = classify("PutRecords", &e);
                    for &i in &call {
                        order.failed(i).map_err(plan_error)?;
                    }
                    match class {
                        AwsErrorClass::Throttled => {
                            throttled = true;
                            self.events.call_throttled();
                        }
                        AwsErrorClass::NotFound | AwsErrorClass::Fatal => {
                            drain(&mut calls, &mut order, done).await?;
                            return Err(SinkError::Fatal(format!(
                                "{} (shard {}): {detail}",
                                self.describe_target(),
                                batch.shard_id
                            )));
                        }
                        _ => {}
                    }
                    self.events.records_retried(call.len());
                    last_error = detail;
                }
            }
            if acked > 0 {
                if !order.is_done() {
                    crate::fault::crash_point("between_puts");
                }
                stalled_rounds = 0;
            } else {
                stalled_rounds += 1;
                if stalled_rounds > PUT_BACKOFF.max_retries {
                    drain(&mut calls, &mut order, done).await?;
                    return Err(SinkError::Transient(format!(
                        "{}: nothing acknowledged in {stalled_rounds} calls in a row: {last_error}",
                        self.describe_target()
                    )));
                }
            }
            if throttled || acked == 0 {
                let wait = PUT_BACKOFF
                    .delay_random(stalled_rounds.max(1))
                    .unwrap_or(PUT_BACKOFF.cap);
                crate::metrics::events::retry_wait(
                    &self.connector,
                    if throttled {
                        "kinesis_throttled"
                    } else {
                        "kinesis_put_failed"
                    },
                    wait,
                );
                pause_until = Some(Instant::now() + wait);
            }
        }
    }

    fn describe_target(&self) -> String {
        match &self.config.stream {
            KinesisStreamRef::Name(n) => format!("Kinesis stream {n}"),
            KinesisStreamRef::Arn(a) => format!("Kinesis stream {a}"),
        }
    }
}

#[async_trait]
impl Sink for KinesisSink {
    fn commit_protocol(&self) -> CommitProtocol {
        CommitProtocol::Reconciling
    }

    fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_records: self.config.max_records,
            max_bytes: self.config.max_bytes,
            max_interval: Duration::from_millis(self.config.max_interval_ms),
        }
    }

    fn partition_key(&self, record: &SourceRecord) -> Option<String> {
        Some(partition_key::derive(&self.config.partition_key, record))
    }

    fn max_record_bytes(&self) -> Option<usize> {
        Some(MAX_RECORD_BYTES)
    }

    fn takes_raw_bytes(&self) -> bool {
        true
    }

    async fn close_shard(&self, shard: &str) {
        // What a batch of a lease that ended got done is not needed again by this process: a
        // new owner, this one included, recovers the batch from its intent.
        self.progress.lock().await.retain(|(s, _), _| s != shard);
    }

    async fn write_batch(&self, batch: &Batch, permit: &dyn SendPermit) -> Result<(), SinkError> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Ok(());
        };
        let entries: Vec<Entry> = batch
            .records
            .iter()
            .map(|r| Entry {
                key: r.partition_key.as_deref().unwrap_or("-"),
                data: &r.payload,
            })
            .collect();
        let mut progress = {
            let mut all = self.progress.lock().await;
            match all.remove(&(batch.shard_id.clone(), first.sequence_number.clone())) {
                Some(p)
                    if p.first == first.sequence_number
                        && p.last == last.sequence_number
                        && p.done.len() == entries.len() =>
                {
                    p
                }
                _ => Progress {
                    first: first.sequence_number.clone(),
                    last: last.sequence_number.clone(),
                    done: self.oversize(batch, &entries)?,
                    reconciled: false,
                },
            }
        };
        let result = async {
            if let (Some(recovery), false) = (batch.recovery, progress.reconciled) {
                self.reconcile(batch, &entries, &mut progress.done, recovery.intent_millis)
                    .await?;
                progress.reconciled = true;
            }
            self.send(batch, &entries, &mut progress.done, permit).await
        }
        .await;
        if result.is_err() {
            self.progress.lock().await.insert(
                (batch.shard_id.clone(), first.sequence_number.clone()),
                progress,
            );
        }
        result
    }
}

impl KinesisSink {
    /// Records over the 1 MiB limit: an error naming the first (`fail`), or marked done so
    /// they are never sent (`skip`).
    fn oversize(&self, batch: &Batch, entries: &[Entry]) -> Result<Vec<bool>, SinkError> {
        let mut done = vec![false; entries.len()];
        for (i, e) in entries.iter().enumerate() {
            if e.size() <= MAX_RECORD_BYTES {
                continue;
            }
            let what = format!(
                "record {} of shard {} in {} is {} bytes with its partition key, over Kinesis' {} byte limit",
                batch.records[i].sequence_number,
                batch.shard_id,
                batch.stream_arn,
                e.size(),
                MAX_RECORD_BYTES
            );
            match self.config.on_oversize {
                OnOversize::Fail => {
                    self.events.oversize_failed();
                    return Err(SinkError::Fatal(format!("{what} (on_oversize = \"fail\")")));
                }
                OnOversize::Skip => {
                    self.events.oversize_skipped(&what);
                    done[i] = true;
                }
            }
        }
        Ok(done)
    }

    /// Marks what a previous owner already wrote of this range.
    async fn reconcile(
        &self,
        batch: &Batch,
        entries: &[Entry<'_>],
        done: &mut [bool],
        intent_millis: Option<i64>,
    ) -> Result<(), SinkError> {
        let since = intent_millis.map(|ms| ms - self.config.reconcile_margin_ms as i64);
        let keys: HashSet<&str> = entries.iter().map(|e| e.key).collect();
        let started = Instant::now();
        let target = self.read_back(&keys, since).await?;
        let range: Vec<(&str, &[u8])> = entries.iter().map(|e| (e.key, e.data)).collect();
        // What is done already (skipped as oversize) was never sent by the old owner either.
        let written = already_written(&range, done, &target);
        let mut found = 0;
        for (i, w) in written.into_iter().enumerate() {
            if w && !done[i] {
                done[i] = true;
                found += 1;
            }
        }
        let resent = done.iter().filter(|d| !**d).count();
        self.events.reconciled(
            &batch.shard_id,
            found,
            resent,
            target.len(),
            started.elapsed(),
        );
        Ok(())
    }
}

/// Waits for the calls still in flight and records their outcome, so that what they wrote is
/// remembered before the batch is handed back.
async fn drain<F>(
    calls: &mut FuturesUnordered<F>,
    order: &mut PutOrder,
    done: &mut [bool],
) -> Result<(), SinkError>
where
    F: std::future::Future<
        Output = (
            Vec<usize>,
            Result<
                aws_sdk_kinesis::operation::put_records::PutRecordsOutput,
                SdkError<
                    aws_sdk_kinesis::operation::put_records::PutRecordsError,
                    aws_sdk_kinesis::config::http::HttpResponse,
                >,
            >,
            Duration,
        ),
    >,
{
    while let Some((call, result, _)) = calls.next().await {
        let results = result.as_ref().map(|o| o.records()).unwrap_or(&[]);
        for (pos, &i) in call.iter().enumerate() {
            match results.get(pos) {
                Some(r) if r.error_code().is_none() => {
                    order.acked(i).map_err(plan_error)?;
                    done[i] = true;
                }
                _ => order.failed(i).map_err(plan_error)?,
            }
        }
    }
    Ok(())
}

/// The plan refused an answer: acknowledging it could mark a record written that never was,
/// so the batch stops here (in every build) instead of being checkpointed past a loss.
fn plan_error(e: PlanError) -> SinkError {
    SinkError::Fatal(format!("Kinesis sink: put plan out of step: {e}"))
}

fn is_throttle(code: &str) -> bool {
    matches!(
        code,
        "ProvisionedThroughputExceededException" | "KMSThrottlingException" | "ThrottlingException"
    )
}

fn source_to_sink(what: &str, e: SourceError) -> SinkError {
    match e {
        SourceError::Fatal(m) | SourceError::StreamNotFound(m) | SourceError::StreamDisabled(m) => {
            SinkError::Fatal(format!("{what}: {m}"))
        }
        other => SinkError::Transient(format!("{what}: {other}")),
    }
}

/// Parents before their children, so that each key's records come out in the order written.
fn parents_first(shards: &[crate::source::Shard]) -> Vec<&crate::source::Shard> {
    let ids: HashMap<&str, &crate::source::Shard> =
        shards.iter().map(|s| (s.shard_id.as_str(), s)).collect();
    let depth = |s: &crate::source::Shard| {
        let mut d = 0;
        let mut current = s;
        while let Some(parent) = current.parent_shard_id.as_deref().and_then(|p| ids.get(p)) {
            d += 1;
            current = parent;
            if d > shards.len() {
                break;
            }
        }
        d
    };
    let mut ordered: Vec<(usize, usize, &crate::source::Shard)> = shards
        .iter()
        .enumerate()
        .map(|(i, s)| (depth(s), i, s))
        .collect();
    ordered.sort_by_key(|(d, i, _)| (*d, *i));
    ordered.into_iter().map(|(_, _, s)| s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Shard;

    fn shard(id: &str, parent: Option<&str>) -> Shard {
        Shard {
            shard_id: id.into(),
            parent_shard_id: parent.map(str::to_string),
            adjacent_parent_shard_id: None,
            starting_sequence_number: None,
            ending_sequence_number: None,
        }
    }

    #[test]
    fn parents_come_before_children_whatever_the_listing_order() {
        let shards = [
            shard("c2", Some("c1")),
            shard("b", Some("a")),
            shard("a", None),
            shard("c1", Some("a")),
        ];
        let ids: Vec<&str> = parents_first(&shards)
            .iter()
            .map(|s| s.shard_id.as_str())
            .collect();
        assert_eq!(ids, ["a", "b", "c1", "c2"]);
    }

    #[test]
    fn throttle_codes() {
        assert!(is_throttle("ProvisionedThroughputExceededException"));
        assert!(is_throttle("KMSThrottlingException"));
        assert!(!is_throttle("InternalFailure"));
    }
}
