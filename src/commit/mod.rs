//! The commit protocols (README, "Guarantees"): how a shard's batches become durable at the
//! sink and how the checkpoint follows them. The shard worker reads, decodes and encodes; it
//! hands each batch to its `CommitDriver` without knowing which protocol the sink declared.
//!
//! Per batch: (intent) → write to the sink → checkpoint. The intent (`pendingCheckpoint`, the
//! batch's range and when sending began) is written first by every protocol that can recover a
//! batch: idempotent (S3: the same range gives the same object), reconciling (Kinesis: the
//! target is read back and only what is missing is sent) and transactional (Kafka: the intent
//! carries the batch's number n, the transaction commits the records with a commit record
//! counting n+1 batches, and a new owner, after fencing the old producer, reads that count). A new owner that finds an intent recovers
//! that batch before anything newer (`recovery::plan`). Every checkpoint write is conditional on
//! owner, counter and the stored checkpoint being the batch's starting point.
//!
//! One lease write per batch: with the protocols that write intents, a batch's checkpoint is
//! held back and written together with the next batch's intent (`CommitDriver::deferred`), or
//! alone before the shard waits for records, hands its lease over or ends. Until then the
//! lease still shows the delivered batch's intent, so a crash in between is recovered exactly
//! as a crash between a batch's upload and its checkpoint always was.

mod ahead;
pub mod invocation;
pub mod lanes;
pub mod recovery;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::lease::held::{HeldLease, NoPermit};
use crate::lease::model::{Acquired, Checkpoint, CheckpointWrite, Intent, Lease};
use crate::lease::table::LeaseError;
use crate::metrics::events;
use crate::metrics::health::Health;
use crate::retry::{self, Backoff, RetryError, RetryPolicy};
use crate::sink::on_failure::{self, Condition, OnFailure, SetAside};
use crate::sink::{
    Batch, BatchLimits, CommitProtocol, FunctionRules, OutputRecord, Recovery, SendPermit, Sink,
    SinkError,
};
use crate::source::sequence::SequenceNumber;
use invocation::Invocations;
use recovery::RecoveryPlan;

/// How long a sink write may take before /readyz reports the shard degraded.
const SLOW_SINK: Duration = Duration::from_secs(5);
/// How often a worker whose lease is not renewed in time looks again.
const LEASE_RECHECK: Duration = Duration::from_millis(100);

/// Back-off of the driver's retry loops.
#[derive(Clone, Copy, Debug)]
pub struct CommitRetries {
    /// Sink writes: retried for as long as the lease is ours (back-pressure), waits capped.
    pub sink: Backoff,
    /// Intent and checkpoint writes: bounded.
    pub lease_writes: Backoff,
}

impl Default for CommitRetries {
    fn default() -> Self {
        CommitRetries {
            sink: Backoff::new(200, 10_000, 6),
            lease_writes: Backoff::new(100, 5_000, 8),
        }
    }
}

/// What a shard's commit driver works with.
pub struct CommitParts {
    pub connector: String,
    /// The source stream's ARN, for the sink (object keys, log lines).
    pub stream_arn: String,
    pub sink: Arc<dyn Sink>,
    pub lease: Arc<HeldLease>,
    /// The lease row as the take left it.
    pub taken: Lease,
    pub acquired: Acquired,
    pub health: Arc<Health>,
    pub stop: CancellationToken,
    pub retries: CommitRetries,
    /// Where records that cannot go to the sink are set aside, and when.
    pub on_failure: Option<Arc<OnFailure>>,
    /// Lanes per shard (`parallelization_factor`, 1 = none): records carry their lane.
    pub lanes: u8,
}

/// How a step ended when it did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Done,
    /// Asked to stop: nothing more is written for this lease.
    Stopped,
    /// Another worker holds the lease now.
    LeaseLost,
}

/// How opening a shard's commit state ended.
pub enum Opened {
    Ready(Box<CommitDriver>),
    /// Stopped or lease lost before reading could begin.
    Ended(Step),
}

/// Why a shard's commit failed for good. Each keeps the error it came from.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("sink: {}", .0.message())]
    Sink(#[source] SinkError),
    /// The sink refused a batch `attempts` times in a row (only with `max_retry_attempts`;
    /// without it a refusing sink is waited for, for as long as it takes).
    #[error("sink refused the batch {attempts} times: {}", .source.message())]
    RetriesExhausted {
        attempts: u32,
        #[source]
        source: SinkError,
    },
    #[error("lease table: {what}: {source}")]
    Lease {
        /// The write that failed, and how often.
        what: String,
        #[source]
        source: LeaseError,
    },
}

pub struct CommitDriver {
    shared: Arc<Shared>,
    /// An unfinished batch of a previous owner: the next batch is exactly its range.
    recovering: Option<Intent>,
    /// Transactional: the number of the next batch (the sink's commit record counts the
    /// batches committed); None for the other protocols.
    next_batch: Option<u64>,
    /// Flush-then-checkpoint in lanes: the batches whose lanes are still at work.
    ahead: Option<ahead::LanesAhead>,
    /// Intent protocols: the checkpoint of the last batch done (and when its newest record
    /// entered the stream), not written yet: it goes with the next batch's intent.
    deferred: Option<(Checkpoint, Option<i64>)>,
}

/// What a shard's commit driver shares with the tasks it starts (the lanes of a
/// flush-then-checkpoint sink, the checkpoint writer).
pub struct Shared {
    parts: CommitParts,
    protocol: CommitProtocol,
    /// The checkpoint as stored: the next checkpoint write is conditional on it.
    stored: std::sync::Mutex<Checkpoint>,
    /// This shard is reported degraded (its sink is down or slow).
    degraded: AtomicBool,
    /// Checkpoints written in the background (flush-then-checkpoint: the next batch is read
    /// and sent meanwhile); settled before any other lease write and before the shard ends.
    checkpoints: std::sync::Mutex<CheckpointQueue>,
}

/// At most one background checkpoint write at a time. One asked for while another is under
/// way waits, and a newer one replaces it: the lease skips to the newer position, so a slow
/// lease table gets fewer writes instead of holding the shard back.
#[derive(Default)]
struct CheckpointQueue {
    /// The newest checkpoint not yet being written, and when its record entered the stream.
    next: Option<(Checkpoint, Option<i64>)>,
    /// A writer task runs (it takes `next` until there is none).
    writing: bool,
    /// The writer task, until its outcome is taken.
    writer: Option<tokio::task::JoinHandle<Result<Step, CommitError>>>,
}

impl std::ops::Deref for CommitDriver {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl CommitDriver {
    /// Takes over the shard's commit state: recovers what a previous owner left unfinished as
    /// far as that can be done before reading (waiting out that owner, asking the sink).
    pub async fn open(parts: CommitParts) -> Result<Opened, CommitError> {
        let protocol = parts.sink.commit_protocol();
        let shard = parts.lease.shard_id().to_string();
        // Before anything else: the sink fences an earlier owner's producer, so what it says
        // of the shard's committed batches cannot change afterwards.
        let next_batch = match open_at_sink(&parts, &shard).await? {
            Ok(next) => next,
            Err(step) => return Ok(Opened::Ended(step)),
        };
        let mut driver = CommitDriver {
            shared: Arc::new(Shared {
                stored: std::sync::Mutex::new(parts.taken.checkpoint.clone()),
                protocol,
                degraded: AtomicBool::new(false),
                checkpoints: std::sync::Mutex::new(CheckpointQueue::default()),
                parts,
            }),
            recovering: None,
            next_batch,
            ahead: None,
            deferred: None,
        };
        let plan = recovery::plan(
            protocol,
            driver.parts.taken.pending_checkpoint.as_ref(),
            driver.parts.acquired,
            next_batch,
        );
        match plan {
            RecoveryPlan::Nothing => Ok(Opened::Ready(Box::new(driver))),
            RecoveryPlan::Checkpoint { intent } => {
                tracing::info!(connector = %driver.parts.connector, %shard, %intent, "the pending batch was committed; checkpointing it");
                let step = driver
                    .checkpoint(&Checkpoint::Sequence(intent.last.clone()), None, None)
                    .await?;
                Ok(match step {
                    Step::Done => Opened::Ready(Box::new(driver)),
                    ended => Opened::Ended(ended),
                })
            }
            RecoveryPlan::Recover {
                intent,
                wait_for_previous_owner,
            } => {
                tracing::info!(connector = %driver.parts.connector, %shard, %intent, "recovering the batch of a pending intent");
                if wait_for_previous_owner {
                    // Its send deadline is at most a failover time after our take.
                    let wait = driver.parts.lease.failover();
                    events::retry_wait(&driver.parts.connector, "previous_owner_sending", wait);
                    if !retry::pause(&driver.parts.stop, wait).await {
                        return Ok(Opened::Ended(Step::Stopped));
                    }
                }
                driver.recovering = Some(intent);
                Ok(Opened::Ready(Box::new(driver)))
            }
        }
    }

    /// The last record of the next batch, when that batch's range is fixed in advance (a
    /// previous owner's unfinished batch): it must be handed over exactly up to here, and
    /// not cut short at a stop.
    pub fn required_end(&self) -> Option<&SequenceNumber> {
        self.recovering.as_ref().map(|i| &i.last)
    }

    /// Commits a batch: its records (possibly none, when every record read was passed over)
    /// and the last sequence number read into it, which becomes the checkpoint.
    pub async fn commit(
        &mut self,
        records: Vec<OutputRecord>,
        last_read: SequenceNumber,
    ) -> Result<Step, CommitError> {
        let recovering = self.recovering.take();
        let record_millis = records.last().and_then(|r| r.created_millis);
        // What cannot go to the sink is set aside first, before anything of the batch is
        // sent and before the checkpoint passes it. Not by age when recovering an intent: its
        // range may be written already, and must be written again exactly (by size, the same
        // records split the same way every time).
        let records = match self.parts.on_failure.clone() {
            Some(of) => {
                let split = on_failure::split_unsendable(
                    records,
                    now_millis(),
                    of.max_record_age_ms.filter(|_| recovering.is_none()),
                    self.parts.sink.max_record_bytes(),
                );
                for (condition, aside) in [
                    (Condition::RecordAgeExceeded, &split.too_old),
                    (Condition::RecordTooLarge, &split.too_large),
                ] {
                    if !aside.is_empty() {
                        let step = self.set_aside(&of, condition, aside, 0, None, None).await?;
                        if step != Step::Done {
                            return Ok(step);
                        }
                    }
                }
                split.send
            }
            None => records,
        };
        if self.protocol == CommitProtocol::FlushThenCheckpoint
            && self.parts.lanes > 1
            && recovering.is_none()
        {
            // Each lane at its own pace across batches: one that retries holds back only its
            // keys (and the checkpoint), up to a bound (ahead::).
            let shared = self.shared.clone();
            let ahead = self
                .ahead
                .get_or_insert_with(|| ahead::LanesAhead::start(&shared));
            return ahead.submit(records, last_read, record_millis).await;
        }
        if let Some(first) = records.first() {
            if recovering.is_some() {
                events::intent_replayed(&self.parts.connector, self.shard());
            }
            if recovery::writes_intent(self.protocol) {
                let intent = Intent {
                    first: first.sequence_number.clone(),
                    last: last_read.clone(),
                    // A recovery keeps the first attempt's time: records of the range may
                    // have been written since then, and a later recovery must read back that
                    // far.
                    written_millis: match &recovering {
                        Some(earlier) => earlier.written_millis,
                        None => Some(now_millis()),
                    },
                    // A recovered batch takes the number the commit record expects next:
                    // that is the intent's own number unless its commit record is gone.
                    batch: self.next_batch,
                };
                let step = match self.deferred.take() {
                    // The batch before's checkpoint and this intent, in one write.
                    Some((to, millis)) => {
                        let step = self
                            .write_checkpoint(&to, None, millis, Some(&intent))
                            .await?;
                        if step == Step::Stopped {
                            // Not written: settle() tries the checkpoint alone once more.
                            self.deferred = Some((to, millis));
                        }
                        step
                    }
                    None => self.write_intent(&intent).await?,
                };
                if step != Step::Done {
                    return Ok(step);
                }
                crate::fault::crash_point("after_intent");
            }
            let batch = Batch {
                stream_arn: self.parts.stream_arn.clone(),
                shard_id: self.shard().to_string(),
                records,
                recovery: recovering.as_ref().map(|i| Recovery {
                    intent_millis: i.written_millis,
                }),
                number: self.next_batch,
            };
            crate::fault::crash_soon("during_upload");
            // A recovered range goes as one batch: how an earlier owner's lanes cut it does
            // not matter to a reconciling sink (lanes::).
            let (step, delivered) = if self.parts.lanes > 1 && recovering.is_none() {
                self.deliver_in_lanes(batch).await?
            } else {
                self.deliver_or_set_aside(&batch).await?
            };
            if step != Step::Done {
                // Not delivered: no checkpoint, so whoever holds the lease next reads the
                // batch again.
                return Ok(step);
            }
            crate::fault::crash_point("after_upload");
            if delivered {
                if let Some(n) = self.next_batch.as_mut() {
                    *n += 1;
                }
            }
        }
        let to = Checkpoint::Sequence(last_read);
        if self.protocol == CommitProtocol::FlushThenCheckpoint {
            // Nothing to recover for this protocol: the next batch may be read and sent while
            // this checkpoint is written (a crash meanwhile sends both again).
            return Shared::checkpoint_in_background(&self.shared, to, record_millis).await;
        }
        if recovery::writes_intent(self.protocol) {
            // Written with the next batch's intent (newer than any checkpoint held back).
            self.deferred = Some((to, record_millis));
            return Ok(Step::Done);
        }
        self.checkpoint(&to, None, record_millis).await
    }

    /// Writes the checkpoint held back for the next batch's intent, if any: before the shard
    /// waits for records (none may come for a long time), hands its lease over, or ends.
    pub async fn checkpoint_deferred(&mut self) -> Result<Step, CommitError> {
        match self.deferred.take() {
            Some((to, record_millis)) => self.checkpoint(&to, None, record_millis).await,
            None => Ok(Step::Done),
        }
    }

    /// Waits for what is still under way (lanes at work, a checkpoint being written) and takes
    /// in its outcome: before the lease is handed over, and before SHARD_END.
    pub async fn settle(&mut self) -> Result<Step, CommitError> {
        let drained = match self.ahead.take() {
            Some(ahead) => ahead.drain().await,
            None => Ok(Step::Done),
        };
        // The checkpoints the lanes asked for are written (or refused) before anything else.
        let settled = self.settle_checkpoints().await;
        let deferred = self.checkpoint_deferred().await;
        let steps = [drained?, settled?, deferred?];
        Ok(if steps.contains(&Step::LeaseLost) {
            Step::LeaseLost
        } else if steps.contains(&Step::Stopped) {
            Step::Stopped
        } else {
            Step::Done
        })
    }

    /// The shard is closed and every record of it committed: SHARD_END, with its children.
    pub async fn finish(&mut self, children: &BTreeSet<String>) -> Result<Step, CommitError> {
        // SHARD_END passes the batch whose checkpoint is held back (and clears its intent).
        self.deferred = None;
        let step = self.settle().await?;
        if step != Step::Done {
            return Ok(step);
        }
        self.checkpoint(&Checkpoint::ShardEnd, Some(children), None)
            .await
    }
}

impl Shared {
    fn shard(&self) -> &str {
        self.parts.lease.shard_id()
    }

    /// Where reading starts: the stored checkpoint.
    pub fn checkpoint_position(&self) -> Checkpoint {
        self.stored().clone()
    }

    fn stored(&self) -> std::sync::MutexGuard<'_, Checkpoint> {
        self.stored.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn checkpoint_queue(&self) -> std::sync::MutexGuard<'_, CheckpointQueue> {
        self.checkpoints.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When the shard worker hands its accumulated records over.
    pub fn connector(&self) -> &str {
        &self.parts.connector
    }

    pub fn batch_limits(&self) -> BatchLimits {
        self.parts.sink.batch_limits()
    }

    /// Waits for the background checkpoint writes, and takes in their outcome.
    async fn settle_checkpoints(&self) -> Result<Step, CommitError> {
        loop {
            let task = self.checkpoint_queue().writer.take();
            let Some(task) = task else {
                return Ok(Step::Done);
            };
            let step = joined(task).await?;
            if step != Step::Done {
                return Ok(step);
            }
        }
    }

    /// Asks for a checkpoint without waiting for it: written after the one under way, if any,
    /// unless a newer one is asked for first.
    async fn checkpoint_in_background(
        shared: &Arc<Shared>,
        to: Checkpoint,
        record_millis: Option<i64>,
    ) -> Result<Step, CommitError> {
        let ended = {
            let mut queue = shared.checkpoint_queue();
            if queue.writing {
                queue.next = Some((to, record_millis));
                return Ok(Step::Done);
            }
            queue.writer.take()
        };
        // The writer before has ended: a refusal or failure of it ends this shard's commits.
        if let Some(task) = ended {
            let step = joined(task).await?;
            if step != Step::Done {
                return Ok(step);
            }
        }
        let mut queue = shared.checkpoint_queue();
        queue.next = Some((to, record_millis));
        queue.writing = true;
        let writer = shared.clone();
        queue.writer = Some(tokio::spawn(async move { writer.write_queued().await }));
        Ok(Step::Done)
    }

    /// The background writer: the newest checkpoint asked for, until none is left.
    async fn write_queued(&self) -> Result<Step, CommitError> {
        loop {
            let next = {
                let mut queue = self.checkpoint_queue();
                let next = queue.next.take();
                queue.writing = next.is_some();
                next
            };
            let Some((to, record_millis)) = next else {
                return Ok(Step::Done);
            };
            let written = self.write_checkpoint(&to, None, record_millis, None).await;
            if !matches!(written, Ok(Step::Done)) {
                self.checkpoint_queue().writing = false;
                return written;
            }
        }
    }

    /// Writes a batch, or with `max_retry_attempts` and a destination, sets it aside once the
    /// sink refused it too often. The step, and whether the sink took the batch (a
    /// transactional batch set aside was not committed, so its number stays).
    async fn deliver_or_set_aside(&self, batch: &Batch) -> Result<(Step, bool), CommitError> {
        if let Some(rules) = self.parts.sink.function_rules() {
            return Ok((self.invoke(batch, rules).await?, true));
        }
        match (self.deliver(batch).await, self.parts.on_failure.as_deref()) {
            (Err(CommitError::RetriesExhausted { attempts, source }), Some(of)) => {
                let why = source.message();
                let step = self
                    .set_aside(
                        of,
                        Condition::RetryAttemptsExhausted,
                        &batch.records,
                        attempts,
                        Some(why),
                        None,
                    )
                    .await?;
                Ok((step, false))
            }
            (result, _) => Ok((result?, true)),
        }
    }

    /// Hands a batch to a function sink by Lambda's rules (src/commit/invocation.rs): calls
    /// within the sink's limits, front to back; a partial batch response resends from the
    /// lowest failed record, checkpointing the records before it (when the shard is not in
    /// lanes, whose calls run side by side); a function error is retried with back-off,
    /// bisected when the sink says so, and set aside after `max_retry_attempts`.
    async fn invoke(&self, batch: &Batch, rules: FunctionRules) -> Result<Step, CommitError> {
        let of = self.parts.on_failure.as_deref();
        let rules = invocation::Rules {
            bisect: rules.bisect_on_error,
            max_retry_attempts: of.and_then(|of| of.max_retry_attempts),
        };
        let limits = self.parts.sink.batch_limits();
        let sizes: Vec<usize> = batch.records.iter().map(|r| r.payload.len()).collect();
        let parts = invocation::chunks(&sizes, limits.max_records, limits.max_bytes);
        let mut plan = Invocations::new(parts, rules);
        let checkpoints_partial =
            self.parts.lanes <= 1 && self.protocol == CommitProtocol::FlushThenCheckpoint;
        let (mut failed_in_a_row, mut bisections) = (0u32, 0u64);
        // The last refusal, for the OnFailure document: its message and HTTP status.
        let mut refusal: Option<(String, Option<u16>)> = None;
        loop {
            let part = match plan.next() {
                invocation::Decision::Done => return Ok(Step::Done),
                invocation::Decision::SetAside { part, attempts } => {
                    if let Some(of) = of {
                        let (why, status) = match &refusal {
                            Some((why, status)) => (Some(why.as_str()), *status),
                            None => (None, None),
                        };
                        let aside = &batch.records[part];
                        let step = self
                            .set_aside(
                                of,
                                Condition::RetryAttemptsExhausted,
                                aside,
                                attempts,
                                why,
                                status,
                            )
                            .await?;
                        if step != Step::Done {
                            return Ok(step);
                        }
                    }
                    plan.set_aside();
                    continue;
                }
                invocation::Decision::Send {
                    part,
                    after_failure,
                } => {
                    // A part that failed until its first record grew older than
                    // `max_record_age_ms` goes to the destination (Lambda's
                    // MaximumRecordAgeInSeconds holds for retries too).
                    let max_age = of.and_then(|of| of.max_record_age_ms);
                    let first = &batch.records[part.start];
                    let first_created = first.created_millis.filter(|_| !first.is_snapshot());
                    if let (true, Some(of), Some(max), Some(created)) =
                        (after_failure, of, max_age, first_created)
                    {
                        if now_millis().saturating_sub(created) > max as i64 {
                            let (why, status) = match &refusal {
                                Some((why, status)) => (Some(why.as_str()), *status),
                                None => (None, None),
                            };
                            let step = self
                                .set_aside(
                                    of,
                                    Condition::RecordAgeExceeded,
                                    &batch.records[part],
                                    plan.failures(),
                                    why,
                                    status,
                                )
                                .await?;
                            if step != Step::Done {
                                return Ok(step);
                            }
                            plan.set_aside();
                            continue;
                        }
                    }
                    if after_failure {
                        failed_in_a_row += 1;
                        let wait = self
                            .parts
                            .retries
                            .sink
                            .delay_capped(failed_in_a_row, rand::random::<f64>());
                        events::retry_wait(&self.parts.connector, "sink_unavailable", wait);
                        if !retry::pause(&self.parts.stop, wait).await {
                            return Ok(Step::Stopped);
                        }
                    } else {
                        failed_in_a_row = 0;
                    }
                    part
                }
            };
            let call = Batch {
                records: batch.records[part.clone()].to_vec(),
                stream_arn: batch.stream_arn.clone(),
                shard_id: batch.shard_id.clone(),
                recovery: batch.recovery,
                number: batch.number,
            };
            let outcome = match self.write_once(&call).await {
                Ok(()) => invocation::Outcome::Success,
                Err(DeliverError::Sink(SinkError::Partial { handled, message })) => {
                    refusal = Some((message, Some(200)));
                    invocation::Outcome::Partial { handled }
                }
                Err(DeliverError::Sink(SinkError::FunctionError { status, message })) => {
                    refusal = Some((message, status));
                    invocation::Outcome::Error
                }
                Err(DeliverError::Sink(SinkError::Transient(message))) => {
                    refusal = Some((message, None));
                    invocation::Outcome::Error
                }
                Err(DeliverError::Sink(e)) => return Err(CommitError::Sink(e)),
                Err(DeliverError::Stopped) => return Ok(Step::Stopped),
                Err(DeliverError::LeaseLost) => return Ok(Step::LeaseLost),
                Err(DeliverError::Fenced(why)) => {
                    tracing::warn!(connector = %self.parts.connector, shard = self.shard(), %why, "the sink fenced this worker out of the shard; giving the lease up");
                    return Ok(Step::LeaseLost);
                }
            };
            let before = plan.handled(batch.records.len());
            plan.record(outcome);
            if plan.bisections() > bisections {
                bisections = plan.bisections();
                events::bisected(&self.parts.connector, self.shard());
            }
            let handled = plan.handled(batch.records.len());
            if let (invocation::Outcome::Partial { .. }, true, true) =
                (outcome, checkpoints_partial, handled > before)
            {
                // Lambda checkpoints up to the record before the lowest failed one.
                let last = &batch.records[handled - 1];
                let to = Checkpoint::Sequence(last.sequence_number.clone());
                let step = self.checkpoint(&to, None, last.created_millis).await?;
                if step != Step::Done {
                    return Ok(step);
                }
            }
        }
    }

    /// Writes a batch lane by lane: each lane's calls in order, the lanes concurrently. Done
    /// only when every lane is; the first failure of any lane is the batch's.
    async fn deliver_in_lanes(&self, mut batch: Batch) -> Result<(Step, bool), CommitError> {
        let records = std::mem::take(&mut batch.records);
        let split = lanes::split(records, self.parts.lanes, self.parts.sink.batch_limits());
        let template = &batch;
        let outcomes = futures_util::future::join_all(
            split
                .into_iter()
                .map(|lane| self.deliver_lane(lane.lane, lane.calls, template)),
        )
        .await;
        let mut step = Step::Done;
        for outcome in outcomes {
            match outcome? {
                Step::LeaseLost => step = Step::LeaseLost,
                Step::Stopped if step == Step::Done => step = Step::Stopped,
                _ => {}
            }
        }
        Ok((step, true))
    }

    /// One lane's calls of a batch, in order; `template` gives every call but its records.
    async fn deliver_lane(
        &self,
        lane: u8,
        calls: Vec<Vec<OutputRecord>>,
        template: &Batch,
    ) -> Result<Step, CommitError> {
        let connector = &self.parts.connector;
        for records in calls {
            let call = Batch {
                records,
                ..template.clone()
            };
            let count = call.records.len();
            events::lane_in_flight(connector, lane, count as f64);
            let outcome = self.deliver_or_set_aside(&call).await;
            events::lane_in_flight(connector, lane, -(count as f64));
            match outcome? {
                (Step::Done, _) => {
                    if let Some(created) = call.last().and_then(|r| r.created_millis) {
                        events::lane_lag(connector, lane, now_millis() - created);
                    }
                }
                (step, _) => return Ok(step),
            }
        }
        Ok(Step::Done)
    }

    async fn write_intent(&self, intent: &Intent) -> Result<Step, CommitError> {
        // For as long as it takes: the write is conditional on this worker's lease, so a late
        // one after the lease moved is refused, never harmful; a stop cuts the wait short.
        let policy = RetryPolicy::forever(
            &self.parts.connector,
            "intent",
            self.parts.retries.lease_writes,
        );
        let result = retry::run(&policy, &self.parts.stop, is_transient, || {
            self.parts.lease.write_intent(intent)
        })
        .await;
        lease_step(result, "intent write")
    }

    /// Writes a checkpoint after the background writes. `record_millis`: when the newest
    /// record checkpointed entered the stream, if known.
    async fn checkpoint(
        &self,
        to: &Checkpoint,
        children: Option<&BTreeSet<String>>,
        record_millis: Option<i64>,
    ) -> Result<Step, CommitError> {
        let step = self.settle_checkpoints().await?;
        if step != Step::Done {
            return Ok(step);
        }
        self.write_checkpoint(to, children, record_millis, None)
            .await
    }

    /// One checkpoint write from the stored checkpoint to `to`, which also sets the next
    /// batch's `intent` (or clears the intent).
    async fn write_checkpoint(
        &self,
        to: &Checkpoint,
        children: Option<&BTreeSet<String>>,
        record_millis: Option<i64>,
        intent: Option<&Intent>,
    ) -> Result<Step, CommitError> {
        // For as long as it takes: the write is conditional on this worker's lease, so a late
        // one after the lease moved is refused, never harmful; a stop cuts the wait short.
        let policy = RetryPolicy::forever(
            &self.parts.connector,
            "checkpoint",
            self.parts.retries.lease_writes,
        );
        let from = self.stored().clone();
        let write = CheckpointWrite {
            from: &from,
            to,
            children,
            record_millis,
            intent,
        };
        let result = retry::run(&policy, &self.parts.stop, is_transient, || {
            self.parts.lease.checkpoint(&write)
        })
        .await;
        self.checkpoint_written(lease_step(result, "checkpoint")?, &from, to)
    }

    /// Takes in how a checkpoint write from `from` to `to` ended.
    fn checkpoint_written(
        &self,
        step: Step,
        from: &Checkpoint,
        to: &Checkpoint,
    ) -> Result<Step, CommitError> {
        match step {
            Step::Done => *self.stored() = to.clone(),
            Step::LeaseLost => {
                tracing::warn!(connector = %self.parts.connector, shard = self.shard(), from = %from.as_string(), to = %to.as_string(), "checkpoint refused: the lease moved or the stored checkpoint is not where this batch began");
            }
            Step::Stopped => {}
        }
        Ok(step)
    }

    fn degraded(&self, why: String) {
        self.degraded.store(true, Ordering::Relaxed);
        self.parts
            .health
            .shard_degraded(&self.parts.connector, self.shard(), why);
    }

    /// Delivers `records` to the failure destination as one OnFailure document, retrying
    /// while it is unavailable (back-pressure), cut short by a stop.
    async fn set_aside(
        &self,
        of: &OnFailure,
        condition: Condition,
        records: &[OutputRecord],
        attempts: u32,
        error: Option<&str>,
        status_code: Option<u16>,
    ) -> Result<Step, CommitError> {
        let connector = &self.parts.connector;
        let aside = SetAside {
            connector,
            stream_arn: &self.parts.stream_arn,
            shard_id: self.shard(),
            kinesis: of.kinesis_source,
            condition,
            attempts,
            error,
            status_code,
            records,
        };
        let policy = RetryPolicy::forever(connector, "on_failure", self.parts.retries.sink);
        let result = retry::run(
            &policy,
            &self.parts.stop,
            |e: &SinkError| matches!(e, SinkError::Transient(_)),
            || async {
                let sent = of.destination.send(&aside, now_millis()).await;
                if let Err(e) = &sent {
                    events::on_failure_error(connector, self.shard(), e.message());
                }
                sent
            },
        )
        .await;
        match result {
            Ok(()) => {
                events::set_aside(connector, self.shard(), condition.as_str(), records.len());
                crate::fault::crash_point("after_set_aside");
                Ok(Step::Done)
            }
            Err(RetryError::Stopped) => Ok(Step::Stopped),
            Err(RetryError::Failed { error, .. }) => Err(CommitError::Sink(error)),
        }
    }

    /// Writes the batch, retrying while the sink is unavailable (back-pressure: reading
    /// waits), never while the lease may be gone; with `max_retry_attempts`, only that often.
    async fn deliver(&self, batch: &Batch) -> Result<Step, CommitError> {
        let limit = self
            .parts
            .on_failure
            .as_ref()
            .and_then(|of| of.max_retry_attempts);
        let policy = match limit {
            Some(retries) => RetryPolicy::bounded(
                &self.parts.connector,
                "sink_unavailable",
                Backoff {
                    max_retries: retries,
                    ..self.parts.retries.sink
                },
            ),
            None => RetryPolicy::forever(
                &self.parts.connector,
                "sink_unavailable",
                self.parts.retries.sink,
            ),
        };
        let result = retry::run(
            &policy,
            &self.parts.stop,
            |e: &DeliverError| matches!(e, DeliverError::Sink(SinkError::Transient(_))),
            || self.write_once(batch),
        )
        .await;
        match result {
            Ok(()) => Ok(Step::Done),
            Err(RetryError::Stopped) => Ok(Step::Stopped),
            Err(RetryError::Failed { error, .. }) => match error {
                DeliverError::Stopped => Ok(Step::Stopped),
                DeliverError::LeaseLost => Ok(Step::LeaseLost),
                DeliverError::Fenced(why) => {
                    tracing::warn!(connector = %self.parts.connector, shard = self.shard(), %why, "the sink fenced this worker out of the shard; giving the lease up");
                    Ok(Step::LeaseLost)
                }
                DeliverError::Sink(e @ SinkError::Transient(_)) if limit.is_some() => {
                    Err(CommitError::RetriesExhausted {
                        attempts: limit.unwrap_or_default() + 1,
                        source: e,
                    })
                }
                DeliverError::Sink(e) => Err(CommitError::Sink(e)),
            },
        }
    }

    /// One attempt at the batch: as many sink calls as it takes while the lease allows
    /// sending (a sink that yields goes on after the lease was checked again).
    async fn write_once(&self, batch: &Batch) -> Result<(), DeliverError> {
        let (connector, shard) = (&self.parts.connector, self.shard());
        loop {
            // Never send for a lease we may no longer hold.
            let mut waited = Duration::ZERO;
            while let Some(why) = self.parts.lease.permit() {
                if why == NoPermit::Lost {
                    return Err(DeliverError::LeaseLost);
                }
                // Said once, after a failover time: a worker whose renewals or heartbeats do
                // not get through holds its batches back, and the log says why.
                let failover = self.parts.lease.failover();
                if waited < failover && waited + LEASE_RECHECK >= failover {
                    tracing::warn!(connector = %connector, %shard, ?why, "holding the batch back: the lease is not renewed in time");
                }
                waited += LEASE_RECHECK;
                events::retry_wait(connector, "lease_not_renewed", LEASE_RECHECK);
                if !retry::pause(&self.parts.stop, LEASE_RECHECK).await {
                    return Err(DeliverError::Stopped);
                }
            }
            let started = Instant::now();
            // A sink that does not answer for a while is reported before the SDK gives up.
            let permit = LeasePermit(&self.parts.lease);
            let write = self.parts.sink.write_batch(batch, &permit);
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
                        self.degraded(why);
                    }
                }
            };
            match result {
                Ok(()) => {
                    events::batch_written(
                        connector,
                        batch.records.len(),
                        batch.bytes(),
                        started.elapsed(),
                    );
                    events::records_delivered(
                        connector,
                        batch
                            .records
                            .iter()
                            .filter(|r| !r.is_snapshot())
                            .filter_map(|r| r.created_millis),
                    );
                    if self.degraded.swap(false, Ordering::Relaxed) {
                        self.parts.health.shard_well(connector, shard);
                    }
                    return Ok(());
                }
                // Partly written; the lease is checked again before the batch goes on.
                Err(SinkError::NotPermitted) => continue,
                Err(SinkError::Fenced(why)) => return Err(DeliverError::Fenced(why)),
                // The function answered: it is up; what it reported is the caller's to act on.
                Err(e @ SinkError::Partial { .. }) => {
                    if self.degraded.swap(false, Ordering::Relaxed) {
                        self.parts.health.shard_well(connector, shard);
                    }
                    return Err(DeliverError::Sink(e));
                }
                Err(e) => {
                    let class = match e {
                        SinkError::Fatal(_) => "fatal",
                        _ => "transient",
                    };
                    events::sink_error(connector, shard, class, &e.message());
                    if class == "transient" {
                        self.degraded(format!("sink: {}", e.message()));
                    }
                    return Err(DeliverError::Sink(e));
                }
            }
        }
    }
}

/// Opens the shard at the sink, retrying while the sink is unavailable for as long as the
/// lease is ours: the sink's answer (the next batch number, for transactions), or the step
/// that ended the lease.
async fn open_at_sink(
    parts: &CommitParts,
    shard: &str,
) -> Result<Result<Option<u64>, Step>, CommitError> {
    let policy = RetryPolicy::forever(&parts.connector, "sink_unavailable", parts.retries.sink);
    let result = retry::run(
        &policy,
        &parts.stop,
        |e: &DeliverError| matches!(e, DeliverError::Sink(SinkError::Transient(_))),
        || async {
            if parts.lease.is_lost().await {
                return Err(DeliverError::LeaseLost);
            }
            // A stop does not wait for a sink that does not answer.
            let opened = tokio::select! {
                _ = parts.stop.cancelled() => return Err(DeliverError::Stopped),
                opened = parts.sink.open_shard(&parts.stream_arn, shard) => opened,
            };
            match opened {
                Ok(next) => {
                    events::sink_ok(&parts.connector);
                    Ok(next)
                }
                Err(SinkError::Fenced(why)) => Err(DeliverError::Fenced(why)),
                Err(e) => {
                    let class = match e {
                        SinkError::Fatal(_) => "fatal",
                        _ => "transient",
                    };
                    events::sink_error(&parts.connector, shard, class, &e.message());
                    if class == "transient" {
                        let why = format!("sink: {}", e.message());
                        parts.health.shard_degraded(&parts.connector, shard, why);
                    }
                    Err(DeliverError::Sink(e))
                }
            }
        },
    )
    .await;
    parts.health.shard_well(&parts.connector, shard);
    match result {
        Ok(next) => Ok(Ok(next)),
        Err(RetryError::Stopped) => Ok(Err(Step::Stopped)),
        Err(RetryError::Failed { error, .. }) => match error {
            DeliverError::Stopped => Ok(Err(Step::Stopped)),
            DeliverError::LeaseLost => Ok(Err(Step::LeaseLost)),
            DeliverError::Fenced(why) => {
                tracing::warn!(connector = %parts.connector, %shard, %why, "the sink fenced this worker out of the shard; giving the lease up");
                Ok(Err(Step::LeaseLost))
            }
            DeliverError::Sink(e) => Err(CommitError::Sink(e)),
        },
    }
}

/// The lease's send permit, as a sink checks it between the calls of one batch.
struct LeasePermit<'a>(&'a HeldLease);

#[async_trait::async_trait]
impl SendPermit for LeasePermit<'_> {
    async fn may_send(&self) -> bool {
        self.0.may_send().await
    }
}

/// Why one delivery attempt ended without the batch written.
#[derive(Debug)]
enum DeliverError {
    Stopped,
    LeaseLost,
    /// The sink's producer for the shard was fenced by a new owner's.
    Fenced(String),
    Sink(SinkError),
}

impl std::fmt::Display for DeliverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeliverError::Stopped => write!(f, "stopped"),
            DeliverError::LeaseLost => write!(f, "lease lost"),
            DeliverError::Fenced(why) => write!(f, "fenced: {why}"),
            DeliverError::Sink(e) => write!(f, "{}", e.message()),
        }
    }
}

/// The outcome of a background task of the driver.
async fn joined(
    task: tokio::task::JoinHandle<Result<Step, CommitError>>,
) -> Result<Step, CommitError> {
    task.await.map_err(|e| CommitError::Lease {
        what: "checkpoint".into(),
        source: LeaseError::Fatal(format!("a background task of the shard ended: {e}")),
    })?
}

fn is_transient(e: &LeaseError) -> bool {
    matches!(e, LeaseError::Transient(_))
}

/// A lease write's outcome as a step: lost → the shard stops; a failure that is not worth
/// retrying, or the last one, fails the shard.
fn lease_step(result: Result<(), RetryError<LeaseError>>, what: &str) -> Result<Step, CommitError> {
    match result {
        Ok(()) => Ok(Step::Done),
        Err(RetryError::Stopped) => Ok(Step::Stopped),
        Err(RetryError::Failed { error, attempts }) => match error {
            LeaseError::Lost(_) => Ok(Step::LeaseLost),
            source @ LeaseError::Fatal(_) => Err(CommitError::Lease {
                what: what.to_string(),
                source,
            }),
            source @ LeaseError::Transient(_) => Err(CommitError::Lease {
                what: format!("{what} failed {attempts} times in a row"),
                source,
            }),
        },
    }
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    #[test]
    fn lease_write_outcomes() {
        assert_eq!(lease_step(Ok(()), "checkpoint").unwrap(), Step::Done);
        assert_eq!(
            lease_step(Err(RetryError::Stopped), "checkpoint").unwrap(),
            Step::Stopped
        );
        let lost = RetryError::Failed {
            error: LeaseError::Lost("s".into()),
            attempts: 1,
        };
        assert_eq!(
            lease_step(Err(lost), "checkpoint").unwrap(),
            Step::LeaseLost
        );
    }

    #[test]
    fn a_failed_lease_write_keeps_its_cause() {
        let gave_up = RetryError::Failed {
            error: LeaseError::Transient("UpdateItem: timed out".into()),
            attempts: 9,
        };
        let e = lease_step(Err(gave_up), "checkpoint").unwrap_err();
        assert_eq!(
            e.to_string(),
            "lease table: checkpoint failed 9 times in a row: UpdateItem: timed out"
        );
        let source = e.source().expect("the lease error is kept");
        assert!(matches!(
            source.downcast_ref::<LeaseError>(),
            Some(LeaseError::Transient(_))
        ));
        let sink = CommitError::Sink(SinkError::Fatal("PutRecords: AccessDenied".into()));
        assert_eq!(sink.to_string(), "sink: PutRecords: AccessDenied");
        assert!(sink.source().is_some());
    }
}
