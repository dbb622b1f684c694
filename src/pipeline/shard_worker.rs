//! One task per owned shard: poll, format, write a batch, checkpoint — in that order, so the
//! checkpoint never passes a record the sink has not made durable.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::format::{self, FormatKind};
use crate::lease::held::HeldLease;
use crate::lease::model::Checkpoint;
use crate::lease::table::LeaseError;
use crate::metrics::events;
use crate::metrics::health::{ConnectorState, Health};
use crate::pipeline::batch::{self, Intent, PendingBatch};
use crate::pipeline::lag::ConnectorLag;
use crate::retry::Backoff;
use crate::sink::{Batch, CommitProtocol, OutputRecord, Recovery, Sink, SinkError};
use crate::source::poll::{after_error, after_page, ErrorAction, PollAction};
use crate::source::record::SourceRecord;
use crate::source::{IteratorPosition, Shard, ShardIterator, ShardSource, SourceError};

pub struct ShardContext {
    pub connector: String,
    pub source: Arc<dyn ShardSource>,
    pub sink: Arc<dyn Sink>,
    pub format: FormatKind,
    pub lease: Arc<HeldLease>,
    /// The lease's checkpoint when it was taken.
    pub start: Checkpoint,
    /// Records created before this (ms since the epoch) are read but not forwarded.
    pub skip_before_millis: Option<i64>,
    pub poll_idle: Duration,
    pub max_records: u32,
    pub source_backoff: Backoff,
    pub sink_backoff: Backoff,
    pub checkpoint_backoff: Backoff,
    pub health: Arc<Health>,
    pub stop: CancellationToken,
    /// When this worker saw the shard's (last) parent end, for the child start delay metric.
    pub parent_ended_at: Option<tokio::time::Instant>,
    /// The connector's lag, shared by its shard workers.
    pub lag: Arc<ConnectorLag>,
    /// The lease's `pendingCheckpoint` when it was taken: a batch to write again first.
    pub pending_intent: Option<String>,
    /// For a lease taken from a live owner: when that owner has surely stopped sending (its
    /// send deadline, failover − margin after its last renewal, has passed).
    pub previous_owner_done_by: Option<Instant>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ShardOutcome {
    /// Closed, fully delivered and checkpointed at SHARD_END; its children as far as known.
    ShardEnd(Vec<Shard>),
    /// Asked to stop; the last delivered batch is checkpointed.
    Stopped,
    /// Another worker holds the lease now.
    LeaseLost,
}

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("source: {0}")]
    Source(String),
    #[error("sink: {0}")]
    Sink(String),
    #[error("lease table: {0}")]
    Lease(String),
}

/// How long a sink write may take before /readyz reports the connector degraded.
const SLOW_SINK: Duration = Duration::from_secs(5);

/// Sleeps unless asked to stop first; false when stopped.
async fn pause(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

pub fn encode_batch(
    shard_id: &str,
    records: &[SourceRecord],
    kind: FormatKind,
    skip_before_millis: Option<i64>,
    sink: &dyn Sink,
) -> Result<(Batch, usize), ShardError> {
    let mut skipped = 0;
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        if let (Some(min), Some(ts)) = (skip_before_millis, r.created_millis()) {
            if ts < min {
                skipped += 1;
                continue;
            }
        }
        let payload = match r {
            // Stream to stream, `raw` is the record's own bytes (its key goes along).
            SourceRecord::Kinesis(k) if kind == FormatKind::Raw && sink.takes_raw_bytes() => {
                k.data.clone()
            }
            _ => {
                let mut payload = Vec::with_capacity(512);
                // Config validation pairs formats with sources; a mismatch here is a bug,
                // reported with the record's identity rather than skipped.
                format::encode(kind, r, &mut payload).map_err(|e| {
                    ShardError::Source(format!(
                        "record {} of shard {shard_id}: {e}",
                        r.sequence_number()
                    ))
                })?;
                payload
            }
        };
        out.push(OutputRecord {
            sequence_number: r.sequence_number().clone(),
            created_millis: r.created_millis(),
            partition_key: sink.partition_key(r),
            payload,
        });
    }
    Ok((
        Batch {
            stream_arn: records
                .first()
                .map(|r| r.identity().stream_arn.clone())
                .unwrap_or_default(),
            shard_id: shard_id.to_string(),
            records: out,
            recovery: None,
        },
        skipped,
    ))
}

pub async fn run(ctx: ShardContext) -> Result<ShardOutcome, ShardError> {
    let (connector, lag, shard) = (
        ctx.connector.clone(),
        ctx.lag.clone(),
        ctx.lease.shard_id().to_string(),
    );
    let outcome = read_shard(ctx).await;
    events::iterator_age(&connector, lag.remove(&shard));
    outcome
}

async fn read_shard(ctx: ShardContext) -> Result<ShardOutcome, ShardError> {
    let shard = ctx.lease.shard_id().to_string();
    let mut position = match &ctx.start {
        Checkpoint::ShardEnd => return Ok(ShardOutcome::ShardEnd(Vec::new())),
        Checkpoint::Sequence(s) => IteratorPosition::AfterSequenceNumber(s.clone()),
        Checkpoint::Latest => IteratorPosition::Latest,
        Checkpoint::TrimHorizon | Checkpoint::AtTimestamp => IteratorPosition::TrimHorizon,
    };
    let limits = ctx.sink.batch_limits();
    let protocol = ctx.sink.commit_protocol();
    // A batch whose intent was written but not checkpointed: read exactly its range again and
    // write it again (same range, same output), before anything newer.
    let mut replay = match protocol {
        CommitProtocol::Idempotent | CommitProtocol::Reconciling => {
            ctx.pending_intent.as_deref().and_then(Intent::parse)
        }
        _ => None,
    };
    if let Some(intent) = &replay {
        tracing::info!(connector = %ctx.connector, %shard, %intent, "replaying the batch of a pending intent");
        // Reconciling reads the target to learn what the previous owner wrote: only once it
        // can write no more.
        if let (CommitProtocol::Reconciling, Some(at)) = (protocol, ctx.previous_owner_done_by) {
            let wait = at.saturating_duration_since(Instant::now());
            events::retry_wait(&ctx.connector, "previous_owner_sending", wait);
            if !pause(&ctx.stop, wait).await {
                return Ok(ShardOutcome::Stopped);
            }
        }
    }
    let mut pending = PendingBatch::default();
    let mut iterator: Option<ShardIterator> = None;
    let mut failures = 0u32;
    let mut parent_ended_at = ctx.parent_ended_at;
    tracing::info!(connector = %ctx.connector, %shard, ?position, "reading shard");

    loop {
        if ctx.stop.is_cancelled() {
            // Finish the batch in flight (or abandon it if the sink stays down): never lost,
            // since it is not checkpointed unless written.
            if replay.is_none() {
                if let Some(outcome) = commit(&ctx, &mut pending, None).await? {
                    return Ok(outcome);
                }
            }
            return Ok(ShardOutcome::Stopped);
        }
        if ctx.lease.is_lost().await {
            return Ok(ShardOutcome::LeaseLost);
        }
        if replay.is_none() && batch::should_flush(&limits, &pending, Instant::now()) {
            if let Some(outcome) = commit(&ctx, &mut pending, None).await? {
                return Ok(outcome);
            }
        }
        let result = match &iterator {
            None => ctx.source.open_iterator(&shard, &position).await.map(|it| {
                iterator = Some(it);
                None
            }),
            Some(it) => tokio::select! {
                _ = ctx.stop.cancelled() => continue,
                r = ctx.source.get_records(it, ctx.max_records) => r.map(Some),
            },
        };
        let page = match result {
            Ok(None) => continue,
            Ok(Some(page)) => page,
            Err(SourceError::StreamNotFound(m)) if shard_is_gone(&ctx, &shard).await => {
                // The shard was trimmed away under us (the stream itself is there): nothing is
                // left to read. Deliver what was read, then finish the shard so that its
                // children are not held back.
                events::data_loss(&ctx.connector, &shard, &format!("the shard is gone: {m}"));
                if let Some(outcome) = commit(&ctx, &mut pending, replay.take().as_ref()).await? {
                    return Ok(outcome);
                }
                return Ok(write_checkpoint(&ctx, &Checkpoint::ShardEnd, None)
                    .await?
                    .unwrap_or(ShardOutcome::ShardEnd(Vec::new())));
            }
            Err(e) => {
                failures += 1;
                handle_source_error(&ctx, &shard, e, failures, &mut position, &mut iterator)
                    .await?;
                continue;
            }
        };
        failures = 0;
        if let Some(ended) = parent_ended_at.take() {
            events::child_start_delay(&ctx.connector, &shard, ended.elapsed());
        }
        let bytes: u64 = page.records.iter().map(SourceRecord::size_bytes).sum();
        events::records_read(&ctx.connector, page.records.len(), bytes);
        let page_len = page.records.len();
        let has_next = page.next_iterator.is_some();

        if let Some(last) = page.records.last() {
            let behind = page
                .millis_behind_latest
                .or_else(|| last.created_millis().map(|ts| now_millis() - ts));
            if let Some(ms) = behind {
                events::iterator_age(&ctx.connector, ctx.lag.update(&shard, ms));
            }
            position = IteratorPosition::AfterSequenceNumber(last.sequence_number().clone());
            let (mut records, mut rest) = (page.records, Vec::new());
            if let Some(intent) = &replay {
                (records, rest) = batch::split_at(records, &intent.last);
            }
            add_to_batch(&ctx, &shard, &mut pending, &records)?;
            if let Some(intent) = replay.clone() {
                if pending.last_read.as_ref() >= Some(&intent.last) || !rest.is_empty() {
                    events::intent_replayed(&ctx.connector, &shard);
                    replay = None;
                    if let Some(outcome) = commit(&ctx, &mut pending, Some(&intent)).await? {
                        return Ok(outcome);
                    }
                    add_to_batch(&ctx, &shard, &mut pending, &rest)?;
                }
            }
        } else if has_next {
            // Caught up (Kinesis says by how much; an empty page elsewhere means none).
            let ms = page.millis_behind_latest.unwrap_or(0);
            events::iterator_age(&ctx.connector, ctx.lag.update(&shard, ms));
        }

        iterator = page.next_iterator;
        match after_page(page_len, has_next, ctx.poll_idle) {
            PollAction::PollNow => {}
            PollAction::PollAfter(idle) => {
                let wait = batch::idle_wait(idle, pending.due_at(&limits), Instant::now());
                // A stop request is handled at the top of the loop.
                pause(&ctx.stop, wait).await;
            }
            PollAction::ShardEnd => {
                // A replay that never reached its end (trimmed records) commits what there is.
                if let Some(outcome) = commit(&ctx, &mut pending, replay.take().as_ref()).await? {
                    return Ok(outcome);
                }
                let children = find_children(&ctx, &shard).await;
                let ids: BTreeSet<String> = children.iter().map(|c| c.shard_id.clone()).collect();
                tracing::info!(connector = %ctx.connector, %shard, ?ids, "shard closed and fully read");
                return Ok(write_checkpoint(&ctx, &Checkpoint::ShardEnd, Some(&ids))
                    .await?
                    .unwrap_or(ShardOutcome::ShardEnd(children)));
            }
        }
    }
}

/// True when the stream answers a listing that no longer has this shard.
async fn shard_is_gone(ctx: &ShardContext, shard: &str) -> bool {
    match ctx.source.list_shards().await {
        Ok(shards) => !shards.iter().any(|s| s.shard_id == shard),
        Err(_) => false,
    }
}

/// Encodes records into the pending batch.
fn add_to_batch(
    ctx: &ShardContext,
    shard: &str,
    pending: &mut PendingBatch,
    records: &[SourceRecord],
) -> Result<(), ShardError> {
    let Some(last) = records.last() else {
        return Ok(());
    };
    let (batch, skipped) = encode_batch(
        shard,
        records,
        ctx.format,
        ctx.skip_before_millis,
        ctx.sink.as_ref(),
    )?;
    if skipped > 0 {
        events::records_skipped(&ctx.connector, "before_starting_position", skipped);
    }
    pending.push(
        batch.records,
        last.sequence_number().clone(),
        Instant::now(),
    );
    Ok(())
}

/// Commits the pending batch by the sink's protocol: intent (for the idempotent and reconciling
/// protocols), write, checkpoint. `replaying`: the intent a previous owner left for this
/// range. Some(outcome) when the shard must stop.
async fn commit(
    ctx: &ShardContext,
    pending: &mut PendingBatch,
    replaying: Option<&Intent>,
) -> Result<Option<ShardOutcome>, ShardError> {
    let Some((records, last_read)) = pending.take() else {
        return Ok(None);
    };
    let shard = ctx.lease.shard_id();
    if let Some(first) = records.first() {
        let batch = Batch {
            stream_arn: ctx.source.stream_arn().to_string(),
            shard_id: shard.to_string(),
            records: records.clone(),
            recovery: replaying.map(|i| Recovery {
                intent_millis: i.written_millis,
            }),
        };
        if matches!(
            ctx.sink.commit_protocol(),
            CommitProtocol::Idempotent | CommitProtocol::Reconciling
        ) {
            let intent = Intent {
                first: first.sequence_number.clone(),
                last: last_read.clone(),
                // A replay keeps the first attempt's time: records of the range may have been
                // written since then, and a later recovery must read back that far.
                written_millis: match replaying {
                    Some(earlier) => earlier.written_millis,
                    None => Some(now_millis()),
                },
            };
            if let Some(outcome) = write_intent(ctx, &intent.to_string()).await? {
                return Ok(Some(outcome));
            }
            crate::fault::crash_point("after_intent");
        }
        crate::fault::crash_soon("during_upload");
        if !deliver(ctx, &batch).await? {
            // Not delivered (stopped, or the lease is gone): no checkpoint, so the batch is
            // read again by whoever holds the lease next.
            return Ok(Some(if ctx.lease.is_lost().await {
                ShardOutcome::LeaseLost
            } else {
                ShardOutcome::Stopped
            }));
        }
        crate::fault::crash_point("after_upload");
    }
    write_checkpoint(ctx, &Checkpoint::Sequence(last_read), None).await
}

/// Some(outcome) when the shard must stop (lease lost).
async fn write_intent(
    ctx: &ShardContext,
    intent: &str,
) -> Result<Option<ShardOutcome>, ShardError> {
    let mut attempt = 0u32;
    loop {
        match ctx.lease.write_intent(intent).await {
            Ok(()) => return Ok(None),
            Err(LeaseError::Lost(_)) => return Ok(Some(ShardOutcome::LeaseLost)),
            Err(LeaseError::Fatal(m)) => return Err(ShardError::Lease(m)),
            Err(LeaseError::Transient(m)) => {
                attempt += 1;
                let Some(wait) = ctx.checkpoint_backoff.delay_random(attempt) else {
                    return Err(ShardError::Lease(format!(
                        "intent write failed {attempt} times in a row: {m}"
                    )));
                };
                events::retry_wait(&ctx.connector, "intent", wait);
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// The children of a shard that just ended, for recording in its lease and creating their
/// leases at once. Failing that (after bounded retries) the periodic shard sync finds them.
async fn find_children(ctx: &ShardContext, shard: &str) -> Vec<Shard> {
    let mut attempt = 0u32;
    loop {
        match ctx.source.child_shards(shard).await {
            Ok(children) => return children,
            Err(e) => {
                attempt += 1;
                events::source_error(&ctx.connector, shard, e.class(), &e);
                let Some(wait) = ctx.source_backoff.delay_random(attempt) else {
                    tracing::warn!(connector = %ctx.connector, shard, %e, "children not found; the shard sync will find them");
                    return Vec::new();
                };
                events::retry_wait(&ctx.connector, "child_shards", wait);
                if !pause(&ctx.stop, wait).await {
                    return Vec::new();
                }
            }
        }
    }
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn handle_source_error(
    ctx: &ShardContext,
    shard: &str,
    e: SourceError,
    failures: u32,
    position: &mut IteratorPosition,
    iterator: &mut Option<ShardIterator>,
) -> Result<(), ShardError> {
    events::source_error(&ctx.connector, shard, e.class(), &e);
    match after_error(&e, failures, &ctx.source_backoff, rand::random::<f64>()) {
        ErrorAction::Reopen { after } => {
            // A fresh iterator after the last delivered record: nothing lost, nothing repeated.
            *iterator = None;
            events::retry_wait(&ctx.connector, e.class(), after);
            pause(&ctx.stop, after).await;
            Ok(())
        }
        ErrorAction::ReopenAtTrimHorizon => {
            events::data_loss(&ctx.connector, shard, &e);
            *iterator = None;
            *position = IteratorPosition::TrimHorizon;
            Ok(())
        }
        ErrorAction::Stop(msg) => Err(ShardError::Source(format!("shard {shard}: {msg}"))),
    }
}

/// Writes the batch, retrying while the sink is unavailable (back-pressure: reading waits).
/// False when it was not written: asked to stop, or the lease was lost.
async fn deliver(ctx: &ShardContext, batch: &Batch) -> Result<bool, ShardError> {
    let mut attempt = 0u32;
    loop {
        // Never send for a lease we may no longer hold.
        while !ctx.lease.may_send().await {
            if ctx.lease.is_lost().await {
                return Ok(false);
            }
            events::retry_wait(
                &ctx.connector,
                "lease_not_renewed",
                Duration::from_millis(100),
            );
            if !pause(&ctx.stop, Duration::from_millis(100)).await {
                return Ok(false);
            }
        }
        let started = Instant::now();
        // A sink that does not answer for a while is reported before the SDK gives up on it.
        let write = ctx.sink.write_batch(batch);
        tokio::pin!(write);
        let slow = tokio::time::sleep(SLOW_SINK);
        tokio::pin!(slow);
        let mut reported_slow = false;
        let result = loop {
            tokio::select! {
                r = &mut write => break r,
                _ = &mut slow, if !reported_slow => {
                    reported_slow = true;
                    let why = format!("sink: no answer for {} s", SLOW_SINK.as_secs());
                    ctx.health.set(&ctx.connector, ConnectorState::Degraded(why));
                }
            }
        };
        match result {
            Ok(()) => {
                events::batch_written(
                    &ctx.connector,
                    batch.records.len(),
                    batch.bytes(),
                    started.elapsed(),
                );
                if attempt > 0 || reported_slow {
                    ctx.health.set(&ctx.connector, ConnectorState::Running);
                }
                return Ok(true);
            }
            Err(SinkError::Fatal(m)) => {
                events::sink_error(&ctx.connector, &batch.shard_id, "fatal", &m);
                return Err(ShardError::Sink(m));
            }
            // Partly written; the lease is checked again before the batch goes on.
            Err(SinkError::Yielded) => continue,
            Err(SinkError::Transient(m)) => {
                attempt += 1;
                events::sink_error(&ctx.connector, &batch.shard_id, "transient", &m);
                ctx.health.set(
                    &ctx.connector,
                    ConnectorState::Degraded(format!("sink: {m}")),
                );
                // The sink retries as long as the lease is ours; each wait is capped.
                let wait = ctx
                    .sink_backoff
                    .delay_random(attempt.min(ctx.sink_backoff.max_retries))
                    .unwrap_or(ctx.sink_backoff.cap);
                events::retry_wait(&ctx.connector, "sink_unavailable", wait);
                if !pause(&ctx.stop, wait).await {
                    return Ok(false);
                }
            }
        }
    }
}

/// Some(outcome) when the shard must stop (lease lost).
async fn write_checkpoint(
    ctx: &ShardContext,
    checkpoint: &Checkpoint,
    children: Option<&BTreeSet<String>>,
) -> Result<Option<ShardOutcome>, ShardError> {
    let mut attempt = 0u32;
    loop {
        match ctx.lease.checkpoint(checkpoint, children).await {
            Ok(()) => return Ok(None),
            Err(LeaseError::Lost(_)) => {
                tracing::warn!(connector = %ctx.connector, shard = ctx.lease.shard_id(), "lease lost at checkpoint");
                return Ok(Some(ShardOutcome::LeaseLost));
            }
            Err(LeaseError::Fatal(m)) => return Err(ShardError::Lease(m)),
            Err(LeaseError::Transient(m)) => {
                attempt += 1;
                let Some(wait) = ctx.checkpoint_backoff.delay_random(attempt) else {
                    return Err(ShardError::Lease(format!(
                        "checkpoint failed {attempt} times in a row: {m}"
                    )));
                };
                events::retry_wait(&ctx.connector, "checkpoint", wait);
                tokio::time::sleep(wait).await;
            }
        }
    }
}
