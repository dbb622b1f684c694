//! One task per owned shard: poll, decode, encode, and hand batches to the shard's commit
//! driver, which makes them durable and moves the checkpoint after them (never past a record
//! the sink has not made durable).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::commit::{lanes, CommitDriver, CommitError, CommitParts, CommitRetries, Opened, Step};
use crate::format::FormatKind;
use crate::lease::held::HeldLease;
use crate::lease::model::{Acquired, Checkpoint, Lease};
use crate::metrics::events;
use crate::metrics::health::Health;
use crate::pipeline::batch::{self, PendingBatch};
use crate::pipeline::lag::ConnectorLag;
use crate::retry::FailureStreak;
use crate::retry::{self, Backoff, RetryError, RetryPolicy};
use crate::sink::{self, Sink};
use crate::source::poll::{after_error, after_page, idle_interval, ErrorAction, PollAction};
use crate::source::record::SourceRecord;
use crate::source::{IteratorPosition, RecordPage, Shard, ShardIterator, ShardSource, SourceError};

/// What a shard task works with. `ShardContext::new` fills in defaults; set the rest with
/// struct update syntax.
pub struct ShardContext {
    pub connector: String,
    pub source: Arc<dyn ShardSource>,
    pub sink: Arc<dyn Sink>,
    pub format: FormatKind,
    /// What the `lambda` format writes as Kinesis records' `invokeIdentityArn`.
    pub invoke_identity_arn: Option<Arc<str>>,
    pub lease: Arc<HeldLease>,
    /// The lease row as the take left it (checkpoint, unfinished batch).
    pub taken: Lease,
    pub acquired: Acquired,
    /// Records created before this (ms since the epoch) are read but not forwarded.
    pub skip_before_millis: Option<i64>,
    /// Records that match none of these patterns are passed over (Lambda's FilterCriteria).
    pub filter: crate::filter::FilterCriteria,
    pub poll_idle: Duration,
    /// The longest wait an idle shard backs off to.
    pub poll_idle_max: Duration,
    pub max_records: u32,
    pub source_backoff: Backoff,
    pub commit_retries: CommitRetries,
    pub health: Arc<Health>,
    pub stop: CancellationToken,
    /// When this worker saw the shard's (last) parent end, for the child start delay metric.
    pub parent_ended_at: Option<tokio::time::Instant>,
    /// The connector's lag, shared by its shard workers.
    pub lag: Arc<ConnectorLag>,
    /// Where records that cannot go to the sink are set aside, and when.
    pub on_failure: Option<Arc<crate::sink::on_failure::OnFailure>>,
    /// Lanes per shard (`parallelization_factor`): 1 for none.
    pub lanes: u8,
    /// The process's room for pages fetched ahead (`[worker] read_ahead_bytes`).
    pub read_ahead: Arc<super::read_ahead::ReadAheadBudget>,
}

impl ShardContext {
    /// A context with the service's defaults: `lambda` format, a free lease, KCL-like polling.
    pub fn new(
        connector: &str,
        source: Arc<dyn ShardSource>,
        sink: Arc<dyn Sink>,
        lease: Arc<HeldLease>,
        taken: Lease,
    ) -> Self {
        ShardContext {
            connector: connector.to_string(),
            source,
            sink,
            format: FormatKind::Lambda,
            invoke_identity_arn: None,
            lease,
            taken,
            acquired: Acquired::Free,
            skip_before_millis: None,
            filter: crate::filter::FilterCriteria::default(),
            poll_idle: Duration::from_millis(250),
            poll_idle_max: Duration::from_millis(1000),
            max_records: 1000,
            source_backoff: Backoff::new(100, 5_000, 10),
            commit_retries: CommitRetries::default(),
            on_failure: None,
            lanes: 1,
            health: Arc::new(Health::default()),
            stop: CancellationToken::new(),
            parent_ended_at: None,
            lag: Arc::new(ConnectorLag::default()),
            read_ahead: Arc::new(super::read_ahead::ReadAheadBudget::new(
                super::read_ahead::DEFAULT_BYTES,
            )),
        }
    }
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
    #[error(transparent)]
    Commit(#[from] CommitError),
}

pub async fn run(ctx: ShardContext) -> Result<ShardOutcome, ShardError> {
    let (connector, lag, health, shard, sink) = (
        ctx.connector.clone(),
        ctx.lag.clone(),
        ctx.health.clone(),
        ctx.lease.shard_id().to_string(),
        ctx.sink.clone(),
    );
    let outcome = read_shard(ctx).await;
    // Whatever ended the lease: the sink lets go of the shard (a Kafka producer is closed).
    sink.close_shard(&shard).await;
    events::iterator_age(&connector, lag.remove(&shard));
    health.shard_well(&connector, &shard);
    outcome
}

/// A commit step that ends the shard, as its outcome.
fn ended(step: Step) -> Option<ShardOutcome> {
    match step {
        Step::Done => None,
        Step::Stopped => Some(ShardOutcome::Stopped),
        Step::LeaseLost => Some(ShardOutcome::LeaseLost),
    }
}

async fn read_shard(ctx: ShardContext) -> Result<ShardOutcome, ShardError> {
    let shard = ctx.lease.shard_id().to_string();
    let opened = CommitDriver::open(CommitParts {
        connector: ctx.connector.clone(),
        stream_arn: ctx.source.stream_arn().to_string(),
        sink: ctx.sink.clone(),
        lease: ctx.lease.clone(),
        taken: ctx.taken.clone(),
        acquired: ctx.acquired,
        health: ctx.health.clone(),
        stop: ctx.stop.clone(),
        retries: ctx.commit_retries,
        on_failure: ctx.on_failure.clone(),
        lanes: ctx.lanes,
    })
    .await?;
    let mut commit = match opened {
        Opened::Ready(driver) => *driver,
        Opened::Ended(step) => return Ok(ended(step).unwrap_or(ShardOutcome::Stopped)),
    };
    let outcome = read_from(&ctx, &mut commit, &shard).await;
    // A checkpoint still being written is waited for, so that a stop hands the lease over with
    // it (and a lost lease is reported as such).
    match (outcome, commit.settle().await) {
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e.into()),
        (Ok(ShardOutcome::ShardEnd(children)), _) => Ok(ShardOutcome::ShardEnd(children)),
        (Ok(_), Ok(Step::LeaseLost)) => Ok(ShardOutcome::LeaseLost),
        (Ok(outcome), Ok(_)) => Ok(outcome),
    }
}

/// Reads the shard from its checkpoint and hands its batches to `commit`, until the shard
/// ends, a stop, or the lease is lost.
async fn read_from(
    ctx: &ShardContext,
    commit: &mut CommitDriver,
    shard: &str,
) -> Result<ShardOutcome, ShardError> {
    let shard = shard.to_string();
    let mut position = match commit.checkpoint_position() {
        Checkpoint::ShardEnd => return Ok(ShardOutcome::ShardEnd(Vec::new())),
        Checkpoint::Sequence(s) => IteratorPosition::AfterSequenceNumber(s),
        Checkpoint::Latest => IteratorPosition::Latest,
        Checkpoint::AtTimestamp => match ctx.skip_before_millis {
            Some(millis) => IteratorPosition::AtTimestamp(millis),
            None => IteratorPosition::TrimHorizon,
        },
        Checkpoint::TrimHorizon => IteratorPosition::TrimHorizon,
    };
    let limits = commit.batch_limits();
    let mut pending = PendingBatch::default();
    let mut iterator: Option<ShardIterator> = None;
    let mut failures = FailureStreak::default();
    // Empty pages in a row: an idle shard is polled less and less often.
    let mut empty_pages = 0u32;
    let mut parent_ended_at = ctx.parent_ended_at;
    // The next page, when it was fetched while the batch before it was written.
    let mut read_ahead: Option<Result<RecordPage, SourceError>> = None;
    // Its room in the process's read-ahead budget, held until the page is taken in; and the
    // size of the last page read, to estimate the next.
    let mut read_ahead_room = None;
    let mut last_page_bytes = 0u64;
    tracing::info!(connector = %ctx.connector, %shard, ?position, "reading shard");

    loop {
        if ctx.stop.is_cancelled() {
            // Finish the batch in flight (or abandon it if the sink stays down): never lost,
            // since it is not checkpointed unless written. A batch whose range is fixed is
            // not cut short.
            if commit.required_end().is_none() {
                if let Some(outcome) = flush(commit, &mut pending).await? {
                    return Ok(outcome);
                }
            }
            return Ok(ShardOutcome::Stopped);
        }
        if ctx.lease.is_lost().await {
            return Ok(ShardOutcome::LeaseLost);
        }
        if commit.required_end().is_none() && batch::should_flush(&limits, &pending, Instant::now())
        {
            let flushed = match iterator.clone() {
                // Read-ahead: the next page is fetched while the sink writes this batch (one
                // page per shard), so a shard moves at the pace of the slower of the two
                // rather than of their sum. A stop cuts the fetch short.
                Some(it)
                    if read_ahead.is_none()
                        && reserve(ctx, last_page_bytes, &mut read_ahead_room) =>
                {
                    failures.still_well();
                    let fetch = async {
                        tokio::select! {
                            _ = ctx.stop.cancelled() => None,
                            r = ctx.source.get_records(&it, ctx.max_records) => Some(r),
                        }
                    };
                    let (flushed, page) = tokio::join!(flush(commit, &mut pending), fetch);
                    read_ahead = page;
                    flushed
                }
                _ => flush(commit, &mut pending).await,
            };
            if let Some(outcome) = flushed? {
                return Ok(outcome);
            }
        }
        // Without a failure in progress, the source counts as well until this call begins (time
        // spent writing to the sink is not time the source failed).
        if read_ahead.is_none() {
            failures.still_well();
        }
        let ahead = read_ahead.take();
        if read_ahead_room.take().is_some() {
            events::read_ahead_in_use(ctx.read_ahead.in_use());
        }
        let result = match (ahead, &iterator) {
            (Some(page), _) => page.map(Some),
            (None, None) => ctx.source.open_iterator(&shard, &position).await.map(|it| {
                iterator = Some(it);
                None
            }),
            (None, Some(it)) => tokio::select! {
                _ = ctx.stop.cancelled() => continue,
                r = ctx.source.get_records(it, ctx.max_records) => r.map(Some),
            },
        };
        let page = match result {
            Ok(None) => continue,
            Ok(Some(page)) => page,
            Err(SourceError::StreamNotFound(m)) if shard_is_gone(ctx, &shard).await => {
                // The shard was trimmed away under us (the stream itself is there): nothing is
                // left to read. Deliver what was read, then finish the shard so that its
                // children are not held back.
                events::data_loss(&ctx.connector, &shard, &format!("the shard is gone: {m}"));
                if let Some(outcome) = flush(commit, &mut pending).await? {
                    return Ok(outcome);
                }
                return Ok(ended(commit.finish(&BTreeSet::new()).await?)
                    .unwrap_or(ShardOutcome::ShardEnd(Vec::new())));
            }
            Err(e) => {
                let count = failures.failed();
                if failures.is_degraded(&ctx.source_backoff) {
                    let why = format!("source: {count} failed calls in a row: {e}");
                    ctx.health.shard_degraded(&ctx.connector, &shard, why);
                }
                handle_source_error(ctx, &shard, e, count, &mut position, &mut iterator).await?;
                continue;
            }
        };
        // Well again (a sink that is down reports its own state while it lasts).
        if failures.succeeded(&ctx.source_backoff) {
            ctx.health.shard_well(&ctx.connector, &shard);
        }
        if let Some(ended) = parent_ended_at.take() {
            events::child_start_delay(&ctx.connector, &shard, ended.elapsed());
        }
        let bytes: u64 = page.records.iter().map(SourceRecord::size_bytes).sum();
        events::records_read(&ctx.connector, page.records.len(), bytes);
        last_page_bytes = bytes;
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
            if let Some(end) = commit.required_end() {
                (records, rest) = batch::split_at(records, end);
            }
            add_to_batch(ctx, &shard, &mut pending, &records)?;
            if let Some(end) = commit.required_end() {
                if pending.last_read.as_ref() >= Some(end) || !rest.is_empty() {
                    if let Some(outcome) = flush(commit, &mut pending).await? {
                        return Ok(outcome);
                    }
                    add_to_batch(ctx, &shard, &mut pending, &rest)?;
                }
            }
        } else if has_next {
            // Caught up (Kinesis says by how much; an empty page elsewhere means none).
            let ms = page.millis_behind_latest.unwrap_or(0);
            events::iterator_age(&ctx.connector, ctx.lag.update(&shard, ms));
        }

        iterator = page.next_iterator;
        empty_pages = if page_len == 0 { empty_pages + 1 } else { 0 };
        if page_len == 0 && has_next {
            events::empty_poll(&ctx.connector);
        }
        let idle = idle_interval(empty_pages, ctx.poll_idle, ctx.poll_idle_max);
        match after_page(page_len, has_next, idle) {
            PollAction::PollNow => {}
            PollAction::PollAfter(idle) => {
                // Caught up: the checkpoint held back for the next batch's intent is written
                // now rather than whenever records come.
                if let Some(outcome) = ended(commit.checkpoint_deferred().await?) {
                    return Ok(outcome);
                }
                let wait = batch::idle_wait(idle, pending.due_at(&limits), Instant::now());
                // A stop request is handled at the top of the loop.
                retry::pause(&ctx.stop, wait).await;
            }
            PollAction::ShardEnd => {
                // A batch whose range was fixed but never reached its end (trimmed records)
                // commits what there is.
                if let Some(outcome) = flush(commit, &mut pending).await? {
                    return Ok(outcome);
                }
                let children = find_children(ctx, &shard).await;
                let ids: BTreeSet<String> = children.iter().map(|c| c.shard_id.clone()).collect();
                tracing::info!(connector = %ctx.connector, %shard, ?ids, "shard closed and fully read");
                return Ok(
                    ended(commit.finish(&ids).await?).unwrap_or(ShardOutcome::ShardEnd(children))
                );
            }
        }
    }
}

/// Room in the process's read-ahead budget for a page like the last one; false (counted) when
/// the budget is used up and the next page is read after the write instead.
fn reserve(
    ctx: &ShardContext,
    last_page_bytes: u64,
    room: &mut Option<tokio::sync::OwnedSemaphorePermit>,
) -> bool {
    *room = ctx.read_ahead.try_reserve(last_page_bytes);
    events::read_ahead(&ctx.connector, room.is_some(), ctx.read_ahead.in_use());
    room.is_some()
}

/// Hands the pending batch to the commit driver. Some(outcome) when the shard must stop.
async fn flush(
    commit: &mut CommitDriver,
    pending: &mut PendingBatch,
) -> Result<Option<ShardOutcome>, ShardError> {
    let Some((records, last_read)) = pending.take() else {
        return Ok(None);
    };
    // Only a snapshot segment's records carry a resume position.
    let snapshot_records = last_read.resume().map(|_| records.len());
    let step = commit.commit(records, last_read).await?;
    if let (Some(n), Step::Done) = (snapshot_records, step) {
        events::snapshot_items_delivered(commit.connector(), n);
    }
    Ok(ended(step))
}

/// True when the stream answers a listing that no longer has this shard.
async fn shard_is_gone(ctx: &ShardContext, shard: &str) -> bool {
    match ctx.source.list_shards().await {
        Ok(shards) => !shards.iter().any(|s| s.shard_id == shard),
        Err(_) => false,
    }
}

/// Encodes records into the pending batch, as the sink takes them. Records created before
/// the starting position are read (the checkpoint moves past them) but not forwarded.
fn add_to_batch(
    ctx: &ShardContext,
    shard: &str,
    pending: &mut PendingBatch,
    records: &[SourceRecord],
) -> Result<(), ShardError> {
    let Some(last) = records.last() else {
        return Ok(());
    };
    let (mut skipped, mut filtered) = (0, 0);
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        if let (Some(min), Some(ts)) = (ctx.skip_before_millis, r.created_millis()) {
            if ts < min {
                skipped += 1;
                continue;
            }
        }
        if !ctx.filter.matches_record(r) {
            filtered += 1;
            continue;
        }
        // Config validation pairs formats with sources; a mismatch here is a bug, reported
        // with the record's identity rather than skipped.
        let mut encoded = sink::encode(
            ctx.sink.as_ref(),
            ctx.format,
            ctx.invoke_identity_arn.as_deref(),
            r,
        )
        .map_err(|e| {
            ShardError::Source(format!(
                "record {} of shard {shard}: {e}",
                r.sequence_number()
            ))
        })?;
        encoded.lane = lanes::lane_of(r, ctx.lanes);
        out.push(encoded);
    }
    if skipped > 0 {
        events::records_skipped(&ctx.connector, "before_starting_position", skipped);
    }
    if filtered > 0 {
        events::records_skipped(&ctx.connector, "filtered", filtered);
    }
    pending.push(out, last.sequence_number().clone(), Instant::now());
    Ok(())
}

/// The children of a shard that just ended, for recording in its lease and creating their
/// leases at once. Failing that (after bounded retries) the periodic shard sync finds them.
async fn find_children(ctx: &ShardContext, shard: &str) -> Vec<Shard> {
    let policy = RetryPolicy::bounded(&ctx.connector, "child_shards", ctx.source_backoff);
    let result = retry::run(
        &policy,
        &ctx.stop,
        |_: &SourceError| true,
        || async {
            ctx.source.child_shards(shard).await.inspect_err(|e| {
                events::source_error(&ctx.connector, shard, e.class(), e);
            })
        },
    )
    .await;
    match result {
        Ok(children) => children,
        Err(RetryError::Stopped) => Vec::new(),
        Err(RetryError::Failed { error, .. }) => {
            tracing::warn!(connector = %ctx.connector, shard, %error, "children not found; the shard sync will find them");
            Vec::new()
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
            retry::pause(&ctx.stop, after).await;
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
