//! The shard worker against a scripted source (every error class on demand), the real lease
//! table on the moto server (or an in-memory one), and a sink that records what it was given.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use common::memory_lease_store::{cw, MemoryLeaseStore};
use common::scripted_source::{seq_of, Fault, ScriptedShard, ScriptedSource};
use common::{aws_endpoint, metric_value, sdk_config, unique};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use shardbridge::commit::CommitRetries;
use shardbridge::format::FormatKind;
use shardbridge::lease::held::HeldLease;
use shardbridge::lease::model::{Checkpoint, CheckpointWrite, Intent, Lease};
use shardbridge::lease::table::{LeaseError, LeaseStore, LeaseTable};
use shardbridge::metrics::health::{describe, is_ready, ConnectorState, Health};
use shardbridge::pipeline::shard_worker::{self, ShardContext, ShardError, ShardOutcome};
use shardbridge::retry::Backoff;
use shardbridge::sink::{
    Batch, BatchLimits, CommitProtocol, FunctionRules, SendPermit, Sink, SinkError,
};
use shardbridge::source::{
    IteratorPosition, RecordPage, Shard, ShardIterator, ShardSource, SourceError,
};
use tokio_util::sync::CancellationToken;

const SHARD: &str = "shardId-00000001700000000000-0000test";

fn prometheus() -> &'static PrometheusHandle {
    static H: OnceLock<PrometheusHandle> = OnceLock::new();
    H.get_or_init(|| PrometheusBuilder::new().install_recorder().unwrap())
}

#[derive(Default)]
struct RecordingSink {
    written: Mutex<Vec<String>>,
    fail_next: AtomicUsize,
    /// Idempotent with these limits, else flush-then-checkpoint per page.
    idempotent: Option<BatchLimits>,
    /// Each batch's sequence numbers, and the lease row's intent when it was written.
    batches: Mutex<Vec<(Vec<String>, Option<String>)>>,
    /// The lease row's checkpoint when each batch was written.
    checkpoints: Mutex<Vec<Checkpoint>>,
    store: Mutex<Option<Arc<dyn LeaseStore>>>,
}

#[async_trait]
impl Sink for RecordingSink {
    fn commit_protocol(&self) -> CommitProtocol {
        match self.idempotent {
            Some(_) => CommitProtocol::Idempotent,
            None => CommitProtocol::FlushThenCheckpoint,
        }
    }
    fn batch_limits(&self) -> BatchLimits {
        self.idempotent.unwrap_or(BatchLimits::PER_PAGE)
    }
    async fn write_batch(&self, batch: &Batch, _permit: &dyn SendPermit) -> Result<(), SinkError> {
        if self.fail_next.load(Ordering::SeqCst) > 0 {
            self.fail_next.fetch_sub(1, Ordering::SeqCst);
            return Err(SinkError::Transient("sink down".into()));
        }
        let store = self.store.lock().unwrap().clone();
        let intent = match store {
            Some(store) => {
                let row = store.list().await.unwrap().remove(0);
                self.checkpoints.lock().unwrap().push(row.checkpoint);
                row.pending_checkpoint.as_ref().map(Intent::to_string)
            }
            None => None,
        };
        let seqs: Vec<String> = batch
            .records
            .iter()
            .map(|r| r.sequence_number.to_string())
            .collect();
        self.written.lock().unwrap().extend(seqs.iter().cloned());
        self.batches.lock().unwrap().push((seqs, intent));
        Ok(())
    }
}

struct Harness {
    connector: String,
    table: Arc<dyn LeaseStore>,
    sink: Arc<RecordingSink>,
    source: Arc<ScriptedSource>,
}

impl Harness {
    async fn new(shard: ScriptedShard) -> Self {
        prometheus();
        let sdk = sdk_config(&aws_endpoint()).await;
        let connector = unique("worker");
        let table: Arc<dyn LeaseStore> =
            Arc::new(LeaseTable::new(&sdk, &unique("worker-leases"), &connector));
        table.ensure_exists().await.unwrap();
        Harness {
            connector,
            table,
            sink: Arc::new(RecordingSink::default()),
            source: Arc::new(ScriptedSource::new(shard)),
        }
    }

    async fn run(&self, start: Checkpoint, max_retries: u32) -> Result<ShardOutcome, ShardError> {
        self.run_with_intent(start, max_retries, None).await
    }

    async fn run_with_intent(
        &self,
        start: Checkpoint,
        max_retries: u32,
        intent: Option<&str>,
    ) -> Result<ShardOutcome, ShardError> {
        let mut lease = Lease::new(SHARD, start.clone(), BTreeSet::new());
        lease.pending_checkpoint = intent.map(|i| Intent::parse(i).unwrap());
        self.table.create_if_absent(&lease).await.unwrap();
        let taken = self.table.take(&lease, "me").await.unwrap();
        let held = Arc::new(HeldLease::new(
            self.table.clone(),
            &taken,
            "me",
            Duration::from_secs(10),
            Duration::from_secs(2),
        ));
        assert_eq!(taken.checkpoint, start);
        shard_worker::run(ShardContext {
            format: FormatKind::Plain,
            poll_idle: Duration::from_millis(1),
            source_backoff: Backoff::new(1, 5, max_retries),
            commit_retries: CommitRetries {
                sink: Backoff::new(1, 5, 3),
                lease_writes: Backoff::new(1, 5, 3),
            },
            ..ShardContext::new(
                &self.connector,
                self.source.clone(),
                self.sink.clone(),
                held,
                taken,
            )
        })
        .await
    }

    fn written(&self) -> Vec<String> {
        self.sink.written.lock().unwrap().clone()
    }

    async fn checkpoint(&self) -> Checkpoint {
        self.table.list().await.unwrap()[0].checkpoint.clone()
    }

    fn counter(&self, name: &str, class: &str) -> f64 {
        let labels = format!("connector=\"{}\"{class}", self.connector);
        metric_value(&prometheus().render(), name, &labels).unwrap_or(0.0)
    }
}

fn seqs(range: impl Iterator<Item = usize>) -> Vec<String> {
    range.map(|i| seq_of(i).to_string()).collect()
}

fn shard(records: usize, faults: &[(usize, Fault)]) -> ScriptedShard {
    ScriptedShard {
        shard_id: SHARD.into(),
        records,
        closed: true,
        faults: faults.iter().cloned().collect::<BTreeMap<_, _>>(),
        page_size: 10,
        keys: 7,
    }
}

#[tokio::test]
async fn survives_every_retryable_error_class_without_loss_or_repeat() {
    let h = Harness::new(shard(
        100,
        &[
            (2, Fault::Expired),
            (4, Fault::Throttled),
            (5, Fault::Transient),
            (6, Fault::Transient),
            (9, Fault::Expired),
        ],
    ))
    .await;
    h.sink.fail_next.store(2, Ordering::SeqCst);
    assert_eq!(
        h.run(Checkpoint::TrimHorizon, 3).await.unwrap(),
        ShardOutcome::ShardEnd(vec![])
    );
    assert_eq!(h.written(), seqs(0..100), "every record once, in order");
    assert_eq!(h.checkpoint().await, Checkpoint::ShardEnd);
    // The expired iterator was reopened right after the last delivered record.
    assert!(
        h.source
            .opened()
            .contains(&IteratorPosition::AfterSequenceNumber(seq_of(9))),
        "{:?}",
        h.source.opened()
    );
    let errors = "shardbridge_source_get_records_errors_total";
    assert_eq!(h.counter(errors, ",class=\"expired_iterator\""), 2.0);
    assert_eq!(h.counter(errors, ",class=\"throttled\""), 1.0);
    assert_eq!(h.counter(errors, ",class=\"transient\""), 2.0);
    assert_eq!(
        h.counter("shardbridge_sink_errors_total", ",class=\"transient\""),
        2.0
    );
    assert_eq!(
        h.counter("shardbridge_sink_records_written_total", ""),
        100.0
    );
    assert!(
        h.counter(
            "shardbridge_retry_wait_milliseconds_total",
            ",reason=\"sink_unavailable\""
        ) > 0.0
    );
}

#[tokio::test]
async fn trimmed_data_is_counted_as_loss_and_reading_goes_on_from_the_trim_horizon() {
    let h = Harness::new(shard(100, &[(3, Fault::TrimTo(50))])).await;
    assert_eq!(
        h.run(Checkpoint::TrimHorizon, 3).await.unwrap(),
        ShardOutcome::ShardEnd(vec![])
    );
    let mut want = seqs(0..20);
    want.extend(seqs(50..100));
    assert_eq!(h.written(), want);
    assert_eq!(h.counter("shardbridge_source_data_loss_total", ""), 1.0);
    assert_eq!(
        h.source.opened().last(),
        Some(&IteratorPosition::TrimHorizon)
    );
}

#[tokio::test]
async fn resumes_after_its_checkpoint() {
    let h = Harness::new(shard(100, &[])).await;
    let start = Checkpoint::Sequence(seq_of(41));
    assert_eq!(
        h.run(start, 3).await.unwrap(),
        ShardOutcome::ShardEnd(vec![])
    );
    assert_eq!(h.written(), seqs(42..100));
    assert_eq!(
        h.source.opened(),
        [IteratorPosition::AfterSequenceNumber(seq_of(41))]
    );
}

#[tokio::test]
async fn a_stream_that_is_gone_stops_the_shard_with_a_clear_error() {
    let h = Harness::new(shard(100, &[(2, Fault::NotFound)])).await;
    let err = h.run(Checkpoint::TrimHorizon, 3).await.unwrap_err();
    // The source's own words (its error code and message), and which shard.
    let text = err.to_string();
    assert!(text.contains("ResourceNotFoundException"), "{text}");
    assert!(text.contains("shardId-"), "{text}");
    assert_eq!(
        h.written(),
        seqs(0..10),
        "what was read before is delivered"
    );
    assert_eq!(h.checkpoint().await, Checkpoint::Sequence(seq_of(9)));
}

#[tokio::test]
async fn transient_source_errors_are_retried_for_as_long_as_they_last() {
    // Ten failures in a row with max_retries = 3: the back-off stops growing, the shard goes on.
    let faults: Vec<(usize, Fault)> = (1..=10).map(|c| (c, Fault::Transient)).collect();
    let h = Harness::new(shard(100, &faults)).await;
    assert_eq!(
        h.run(Checkpoint::TrimHorizon, 3).await.unwrap(),
        ShardOutcome::ShardEnd(vec![])
    );
    assert_eq!(h.written(), seqs(0..100), "every record once, in order");
    assert_eq!(h.checkpoint().await, Checkpoint::ShardEnd);
}

fn idempotent_harness_sink(h: &mut Harness, max_records: usize) {
    let sink = RecordingSink {
        idempotent: Some(BatchLimits {
            max_records,
            max_bytes: usize::MAX,
            max_interval: Duration::from_secs(3600),
        }),
        ..RecordingSink::default()
    };
    *sink.store.lock().unwrap() = Some(h.table.clone());
    h.sink = Arc::new(sink);
}

fn seq_range(range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    seqs(range.into_iter())
}

#[tokio::test]
async fn idempotent_batches_follow_the_limits_with_the_intent_written_first() {
    let mut h = Harness::new(shard(100, &[])).await;
    idempotent_harness_sink(&mut h, 25);
    assert_eq!(
        h.run(Checkpoint::TrimHorizon, 3).await.unwrap(),
        ShardOutcome::ShardEnd(vec![])
    );
    let batches = h.sink.batches.lock().unwrap().clone();
    // Pages of 10 accumulate until 25 records are pending: 30, 30, 30, then the rest at the end.
    let sizes: Vec<usize> = batches.iter().map(|(b, _)| b.len()).collect();
    assert_eq!(sizes, [30, 30, 30, 10]);
    for (seqs, intent) in &batches {
        let want = format!("{}..{}@", seqs.first().unwrap(), seqs.last().unwrap());
        let intent = intent.as_deref().unwrap_or_default();
        assert!(
            intent.starts_with(&want),
            "the intent names the batch being written: {intent}"
        );
        let millis: i64 = intent[want.len()..].parse().expect("and when it began");
        assert!((now_millis() - millis).abs() < 60_000, "{millis}");
    }
    assert_eq!(h.written(), seqs(0..100));
    let row = &h.table.list().await.unwrap()[0];
    assert_eq!(
        (row.checkpoint.clone(), row.pending_checkpoint.clone()),
        (Checkpoint::ShardEnd, None)
    );
}

#[tokio::test]
async fn each_batch_costs_one_lease_write_its_checkpoint_going_with_the_next_intent() {
    let store = Arc::new(MemoryLeaseStore::default());
    let sink = RecordingSink {
        idempotent: Some(BatchLimits {
            max_records: 25,
            max_bytes: usize::MAX,
            max_interval: Duration::from_secs(3600),
        }),
        ..RecordingSink::default()
    };
    *sink.store.lock().unwrap() = Some(store.clone());
    let sink = Arc::new(sink);
    let open = ScriptedShard {
        shard_id: SHARD.into(),
        records: 90,
        closed: false,
        faults: BTreeMap::new(),
        page_size: 10,
        keys: 7,
    };
    let start = Checkpoint::TrimHorizon;
    let ctx = memory_context(store.clone(), open, sink.clone(), start.clone(), None).await;
    let stop = CancellationToken::new();
    let writes = || store.calls().get("UpdateItem").copied().unwrap_or(0);
    let taken = writes();
    let task = tokio::spawn(shard_worker::run(ShardContext {
        stop: stop.child_token(),
        ..ctx
    }));
    // Caught up, the shard writes the last batch's checkpoint without waiting for more records.
    let last = Checkpoint::Sequence(seq_of(89));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let row = store.list().await.unwrap().remove(0);
        if row.checkpoint == last {
            assert_eq!(row.pending_checkpoint, None, "the last intent is cleared");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never checkpointed: {row:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let batches = sink.batches.lock().unwrap().clone();
    let sizes: Vec<usize> = batches.iter().map(|(b, _)| b.len()).collect();
    assert_eq!(sizes, [30, 30, 30]);
    // Each batch found the one before it checkpointed: written together with its own intent.
    let stored = sink.checkpoints.lock().unwrap().clone();
    let mut want = vec![start];
    for (seqs, _) in &batches[..2] {
        let last = seqs.last().unwrap().parse::<usize>().unwrap() - 1000;
        want.push(Checkpoint::Sequence(seq_of(last)));
    }
    assert_eq!(stored, want);
    for (seqs, intent) in &batches {
        let range = format!("{}..{}@", seqs.first().unwrap(), seqs.last().unwrap());
        assert!(intent.as_deref().unwrap_or_default().starts_with(&range));
    }
    assert_eq!(
        writes() - taken,
        4,
        "one write per batch (its intent, with the checkpoint before it) and the last checkpoint"
    );
    stop.cancel();
    assert_eq!(task.await.unwrap().unwrap(), ShardOutcome::Stopped);
    assert_eq!(writes() - taken, 4, "nothing left to write at the stop");
    assert_eq!(sink.written.lock().unwrap().clone(), seqs(0..90));
}

#[tokio::test]
async fn a_new_owner_writes_the_pending_intent_exactly_again_before_anything_newer() {
    let mut h = Harness::new(shard(100, &[])).await;
    idempotent_harness_sink(&mut h, 1000);
    // A worker checkpointed record 19, wrote the intent for 20..=34 and died.
    let intent = format!("{}..{}", seq_of(20), seq_of(34));
    let outcome = h
        .run_with_intent(Checkpoint::Sequence(seq_of(19)), 3, Some(&intent))
        .await;
    assert_eq!(outcome.unwrap(), ShardOutcome::ShardEnd(vec![]));
    let batches = h.sink.batches.lock().unwrap().clone();
    assert_eq!(
        batches[0].0,
        seq_range(20..=34),
        "the same range, as one batch, first"
    );
    assert_eq!(batches[1].0, seq_range(35..=99));
    assert_eq!(
        h.written(),
        seqs(20..100),
        "nothing before the checkpoint, nothing twice"
    );
    assert_eq!(h.counter("shardbridge_intents_replayed_total", ""), 1.0);
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

// ---------------------------------------------------------------------------------------------
// The commit driver against an in-memory lease store (no server needed): stop requests, health
// per shard, conditional checkpoints, the transactional recovery path.

/// A lease store whose checkpoint writes fail transiently while `failing` is set.
#[derive(Default)]
struct FlakyCheckpoints {
    inner: MemoryLeaseStore,
    failing: AtomicBool,
    failed: AtomicUsize,
}

#[async_trait]
impl LeaseStore for FlakyCheckpoints {
    async fn ensure_exists(&self) -> Result<(), LeaseError> {
        self.inner.ensure_exists().await
    }
    async fn list(&self) -> Result<Vec<Lease>, LeaseError> {
        self.inner.list().await
    }
    async fn create_if_absent(&self, lease: &Lease) -> Result<bool, LeaseError> {
        self.inner.create_if_absent(lease).await
    }
    async fn take(&self, lease: &Lease, owner: &str) -> Result<Lease, LeaseError> {
        self.inner.take(lease, owner).await
    }
    async fn renew(&self, key: &str, owner: &str, counter: u64) -> Result<u64, LeaseError> {
        self.inner.renew(key, owner, counter).await
    }
    async fn checkpoint(
        &self,
        key: &str,
        owner: &str,
        counter: u64,
        write: &CheckpointWrite<'_>,
    ) -> Result<(), LeaseError> {
        if self.failing.load(Ordering::SeqCst) {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(LeaseError::Transient("lease table unavailable".into()));
        }
        self.inner.checkpoint(key, owner, counter, write).await
    }
    async fn write_intent(
        &self,
        key: &str,
        owner: &str,
        counter: u64,
        intent: &Intent,
    ) -> Result<(), LeaseError> {
        self.inner.write_intent(key, owner, counter, intent).await
    }
    async fn release(&self, key: &str, owner: &str, counter: u64) -> Result<(), LeaseError> {
        self.inner.release(key, owner, counter).await
    }
    async fn delete_finished(&self, key: &str) -> Result<(), LeaseError> {
        self.inner.delete_finished(key).await
    }
}

/// Takes a fresh lease on `shard` in `store` (with `intent` and `start`) and builds its context.
async fn memory_context(
    store: Arc<dyn LeaseStore>,
    shard: ScriptedShard,
    sink: Arc<dyn Sink>,
    start: Checkpoint,
    intent: Option<&str>,
) -> ShardContext {
    prometheus();
    let mut lease = Lease::new(&shard.shard_id, start, BTreeSet::new());
    lease.pending_checkpoint = intent.map(|i| Intent::parse(i).unwrap());
    store.create_if_absent(&lease).await.unwrap();
    let taken = store.take(&lease, "me").await.unwrap();
    let held = Arc::new(HeldLease::new(
        store,
        &taken,
        "me",
        Duration::from_secs(10),
        Duration::from_secs(2),
    ));
    ShardContext {
        format: FormatKind::Plain,
        poll_idle: Duration::from_millis(1),
        commit_retries: CommitRetries {
            sink: Backoff::new(1, 5, 3),
            lease_writes: Backoff::new(1, 5, 3),
        },
        ..ShardContext::new(
            &unique("memory"),
            Arc::new(ScriptedSource::new(shard)),
            sink,
            held,
            taken,
        )
    }
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_a_checkpoint_retry_ends_the_shard_at_once() {
    let store = Arc::new(FlakyCheckpoints::default());
    store.failing.store(true, Ordering::SeqCst);
    let mut ctx = memory_context(
        store.clone(),
        shard(30, &[]),
        Arc::new(RecordingSink::default()),
        Checkpoint::TrimHorizon,
        None,
    )
    .await;
    // Long waits between checkpoint attempts: a stop must not sit them out.
    ctx.commit_retries.lease_writes = Backoff::new(30_000, 60_000, 100);
    let stop = ctx.stop.clone();
    let task = tokio::spawn(shard_worker::run(ctx));
    while store.failed.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let asked = tokio::time::Instant::now();
    stop.cancel();
    let outcome = task.await.unwrap().unwrap();
    let took = asked.elapsed();
    assert_eq!(outcome, ShardOutcome::Stopped);
    assert!(
        took < Duration::from_millis(100),
        "the shard ended {took:?} after the stop request"
    );
    assert_eq!(
        store.inner.list().await.unwrap()[0].checkpoint,
        Checkpoint::TrimHorizon,
        "nothing checkpointed"
    );
}

/// Fails every write of the shards named in `failing` (transiently).
#[derive(Default)]
struct PerShardSink {
    failing: Mutex<HashSet<String>>,
    written: Mutex<Vec<(String, usize)>>,
}

#[async_trait]
impl Sink for PerShardSink {
    fn commit_protocol(&self) -> CommitProtocol {
        CommitProtocol::FlushThenCheckpoint
    }
    async fn write_batch(&self, batch: &Batch, _permit: &dyn SendPermit) -> Result<(), SinkError> {
        if self.failing.lock().unwrap().contains(&batch.shard_id) {
            return Err(SinkError::Transient(format!("{} refused", batch.shard_id)));
        }
        self.written
            .lock()
            .unwrap()
            .push((batch.shard_id.clone(), batch.records.len()));
        Ok(())
    }
}

impl PerShardSink {
    fn written(&self, shard: &str) -> usize {
        let w = self.written.lock().unwrap();
        w.iter().filter(|(s, _)| s == shard).map(|(_, n)| n).sum()
    }
}

/// Waits (without blocking the runtime) until `check` holds, for 10 s at most.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_connector_stays_degraded_until_every_shard_is_well() {
    let store: Arc<dyn LeaseStore> = Arc::new(MemoryLeaseStore::default());
    let sink = Arc::new(PerShardSink::default());
    let health = Arc::new(Health::default());
    let stop = CancellationToken::new();
    let connector = unique("two-shards");
    health.set(&connector, ConnectorState::Running);
    let (a, b) = ("shardId-a", "shardId-b");
    sink.failing
        .lock()
        .unwrap()
        .extend([a.to_string(), b.to_string()]);
    let mut tasks = Vec::new();
    for id in [a, b] {
        let open = ScriptedShard {
            shard_id: id.into(),
            records: 20,
            closed: false,
            faults: BTreeMap::new(),
            page_size: 10,
            keys: 7,
        };
        let ctx = memory_context(
            store.clone(),
            open,
            sink.clone(),
            Checkpoint::TrimHorizon,
            None,
        )
        .await;
        let ctx = ShardContext {
            connector: connector.clone(),
            health: health.clone(),
            stop: stop.child_token(),
            commit_retries: CommitRetries {
                sink: Backoff::new(5, 20, 3),
                lease_writes: Backoff::new(1, 5, 3),
            },
            ..ctx
        };
        tasks.push(tokio::spawn(shard_worker::run(ctx)));
    }
    let readyz = || {
        let states = health.snapshot();
        (is_ready(&states), describe(&states))
    };
    eventually("both shards reported", || {
        let (ready, text) = readyz();
        !ready && text.contains("(and 1 more)")
    })
    .await;
    // Shard a recovers and delivers; shard b's sink is still down.
    sink.failing.lock().unwrap().remove(a);
    eventually("shard a delivered", || sink.written(a) == 20).await;
    for _ in 0..5 {
        let (ready, text) = readyz();
        assert!(!ready, "one shard recovering hides the other: {text}");
        assert!(
            text.contains(&format!("shard {b}: sink: {b} refused")),
            "{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sink.failing.lock().unwrap().remove(b);
    eventually("shard b delivered", || sink.written(b) == 20).await;
    let (ready, text) = readyz();
    assert!(ready, "{text}");
    stop.cancel();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), ShardOutcome::Stopped);
    }
}

#[tokio::test]
async fn a_checkpoint_that_does_not_start_at_the_stored_one_is_refused() {
    // Against the real lease table (moto) and the in-memory one alike.
    let h = Harness::new(shard(1, &[])).await;
    let memory: Arc<dyn LeaseStore> = Arc::new(MemoryLeaseStore::default());
    for store in [h.table.clone(), memory] {
        let lease = Lease::new(SHARD, Checkpoint::TrimHorizon, BTreeSet::new());
        store.create_if_absent(&lease).await.unwrap();
        let taken = store.take(&lease, "me").await.unwrap();
        let c = taken.lease_counter;
        let (th, at5, at9) = (
            Checkpoint::TrimHorizon,
            Checkpoint::Sequence(seq_of(5)),
            Checkpoint::Sequence(seq_of(9)),
        );
        store
            .checkpoint(SHARD, "me", c, &cw(&th, &at5))
            .await
            .unwrap();
        // The same batch applied again, and a batch that does not follow the stored one.
        for (from, to) in [(&th, &at5), (&th, &at9), (&at9, &at9)] {
            assert!(
                matches!(
                    store.checkpoint(SHARD, "me", c, &cw(from, to)).await,
                    Err(LeaseError::Lost(_))
                ),
                "{from:?} -> {to:?} refused"
            );
        }
        assert_eq!(store.list().await.unwrap()[0].checkpoint, at5);
        store
            .checkpoint(SHARD, "me", c, &cw(&at5, &at9))
            .await
            .unwrap();
        let row = store.list().await.unwrap().remove(0);
        assert_eq!(row.checkpoint, at9);
        // The times `shardbridge status` reads: the take, and the checkpoint's write.
        assert!(row.renewed_at_millis.is_some_and(|t| t > 1_700_000_000_000));
        assert!(row.checkpointed_at_millis >= row.renewed_at_millis);
        let (from, to) = (at9.clone(), Checkpoint::Sequence(seq_of(12)));
        let with_time = CheckpointWrite {
            record_millis: Some(1_700_000_000_123),
            ..cw(&from, &to)
        };
        store.checkpoint(SHARD, "me", c, &with_time).await.unwrap();
        let row = store.list().await.unwrap().remove(0);
        assert_eq!(row.checkpoint_record_millis, Some(1_700_000_000_123));
    }
}

/// A transactional sink whose commit record counts `next_batch` batches of the shard.
struct TransactionalSink {
    next_batch: u64,
    inner: RecordingSink,
    /// Every call of open_shard / close_shard, and each written batch's number.
    calls: Mutex<Vec<String>>,
}

#[async_trait]
impl Sink for TransactionalSink {
    fn commit_protocol(&self) -> CommitProtocol {
        CommitProtocol::Transactional
    }
    fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_records: 1000,
            max_bytes: usize::MAX,
            max_interval: Duration::from_secs(3600),
        }
    }
    async fn write_batch(&self, batch: &Batch, _permit: &dyn SendPermit) -> Result<(), SinkError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("batch {:?}", batch.number));
        self.inner.write_batch(batch, _permit).await
    }
    async fn open_shard(&self, _stream_arn: &str, shard: &str) -> Result<Option<u64>, SinkError> {
        self.calls.lock().unwrap().push(format!("open {shard}"));
        Ok(Some(self.next_batch))
    }
    async fn close_shard(&self, shard: &str) {
        self.calls.lock().unwrap().push(format!("close {shard}"));
    }
}

#[tokio::test]
async fn transactional_recovery_asks_the_sink_and_resends_only_an_uncommitted_batch() {
    // The intent is batch 5: a commit record counting 6 batches says it committed.
    for committed in [true, false] {
        let store: Arc<dyn LeaseStore> = Arc::new(MemoryLeaseStore::default());
        let sink = Arc::new(TransactionalSink {
            next_batch: if committed { 6 } else { 5 },
            inner: RecordingSink::default(),
            calls: Mutex::new(Vec::new()),
        });
        let intent = format!("{}..{}@1700000000000#5", seq_of(20), seq_of(34));
        let ctx = memory_context(
            store.clone(),
            shard(100, &[]),
            sink.clone(),
            Checkpoint::Sequence(seq_of(19)),
            Some(&intent),
        )
        .await;
        assert_eq!(
            shard_worker::run(ctx).await.unwrap(),
            ShardOutcome::ShardEnd(vec![])
        );
        let calls = sink.calls.lock().unwrap().clone();
        let (first, last) = (calls.first().unwrap(), calls.last().unwrap());
        assert_eq!(first, &format!("open {SHARD}"), "{calls:?}");
        assert_eq!(last, &format!("close {SHARD}"), "{calls:?}");
        // Batches are numbered on from the commit record's count, the recovered one first.
        let numbers: Vec<&String> = calls[1..calls.len() - 1].iter().collect();
        let expected: Vec<String> = (0..numbers.len())
            .map(|i| format!("batch {:?}", Some(if committed { 6 } else { 5 } + i as u64)))
            .collect();
        assert_eq!(numbers, expected.iter().collect::<Vec<_>>());
        assert!(!numbers.is_empty());
        let written = sink.inner.written.lock().unwrap().clone();
        let batches = sink.inner.batches.lock().unwrap().clone();
        if committed {
            assert_eq!(
                written,
                seqs(35..100),
                "the committed batch is not sent again"
            );
        } else {
            assert_eq!(written, seqs(20..100));
            assert_eq!(batches[0].0, seq_range(20..=34), "the same range, first");
        }
        assert_eq!(
            store.list().await.unwrap()[0].checkpoint,
            Checkpoint::ShardEnd
        );
    }
}

/// A sink with a fixed delay per call (the slow handler lanes are for), batching up to 50
/// records: it records each call, how many calls overlapped, and whether a call began with
/// the checkpoint already past one of its records.
struct SlowSink {
    protocol: CommitProtocol,
    delay: Duration,
    store: Arc<dyn LeaseStore>,
    /// Transient failures still to give, one per call.
    fail_next: AtomicUsize,
    calls: Mutex<Vec<Vec<(String, u8)>>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    checkpoint_ahead: Mutex<Vec<String>>,
}

impl SlowSink {
    fn new(protocol: CommitProtocol, store: Arc<dyn LeaseStore>) -> Self {
        SlowSink {
            protocol,
            delay: Duration::from_millis(5),
            store,
            fail_next: AtomicUsize::new(0),
            calls: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
            checkpoint_ahead: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait]
impl Sink for SlowSink {
    fn commit_protocol(&self) -> CommitProtocol {
        self.protocol
    }
    fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_records: 50,
            max_bytes: usize::MAX,
            max_interval: Duration::from_millis(20),
        }
    }
    async fn write_batch(&self, batch: &Batch, _permit: &dyn SendPermit) -> Result<(), SinkError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        if let Checkpoint::Sequence(at) = &self.store.list().await.unwrap()[0].checkpoint {
            if let Some(first) = batch.first().filter(|r| &r.sequence_number <= at) {
                self.checkpoint_ahead.lock().unwrap().push(format!(
                    "{} checkpointed before {}",
                    at, first.sequence_number
                ));
            }
        }
        tokio::time::sleep(self.delay).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let failing = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(SinkError::Transient("handler busy".into()));
        }
        let call = batch
            .records
            .iter()
            .map(|r| (r.sequence_number.to_string(), r.lane))
            .collect();
        self.calls.lock().unwrap().push(call);
        Ok(())
    }
}

/// A closed shard of 5,000 changes to 200 items (pages of 100), read from the trim horizon into
/// `sink` in `lanes` lanes.
async fn hot_shard_context(
    store: Arc<dyn LeaseStore>,
    sink: Arc<dyn Sink>,
    lanes: u8,
) -> ShardContext {
    let hot = ScriptedShard {
        shard_id: SHARD.into(),
        records: 5_000,
        closed: true,
        faults: BTreeMap::new(),
        page_size: 100,
        keys: 200,
    };
    let ctx = memory_context(store, hot, sink, Checkpoint::TrimHorizon, None).await;
    ShardContext { lanes, ..ctx }
}

/// Runs a closed shard of `records` changes to `keys` items through a `SlowSink` in `lanes`
/// lanes, to its end.
async fn run_in_lanes(protocol: CommitProtocol, lanes: u8, fail: usize) -> (Arc<SlowSink>, String) {
    let store: Arc<dyn LeaseStore> = Arc::new(MemoryLeaseStore::default());
    let sink = Arc::new(SlowSink::new(protocol, store.clone()));
    sink.fail_next.store(fail, Ordering::SeqCst);
    let ctx = hot_shard_context(store.clone(), sink.clone(), lanes).await;
    let connector = ctx.connector.clone();
    assert_eq!(
        shard_worker::run(ctx).await.unwrap(),
        ShardOutcome::ShardEnd(vec![])
    );
    let row = store.list().await.unwrap().remove(0);
    assert_eq!(
        (row.checkpoint, row.pending_checkpoint),
        (Checkpoint::ShardEnd, None)
    );
    (sink, connector)
}

#[tokio::test]
async fn lanes_keep_each_items_order_and_checkpoint_only_what_every_lane_finished() {
    for protocol in [
        CommitProtocol::FlushThenCheckpoint,
        CommitProtocol::Reconciling,
    ] {
        let (sink, connector) = run_in_lanes(protocol, 10, 3).await;
        let calls = sink.calls.lock().unwrap().clone();
        // Every change once; each item's changes in their order, always in one lane.
        let mut per_item: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        let mut lane_of_item: BTreeMap<usize, BTreeSet<u8>> = BTreeMap::new();
        let mut all = Vec::new();
        for call in &calls {
            assert!(call.len() <= 50, "a call within the sink's batch limit");
            let lanes: BTreeSet<u8> = call.iter().map(|(_, lane)| *lane).collect();
            assert_eq!(lanes.len(), 1, "one lane per call: {lanes:?}");
            for (seq, lane) in call {
                let index = seq.parse::<usize>().unwrap() - 1000;
                per_item.entry(index % 200).or_default().push(index);
                lane_of_item.entry(index % 200).or_default().insert(*lane);
                all.push(index);
            }
        }
        all.sort_unstable();
        assert_eq!(
            all,
            (0..5_000).collect::<Vec<_>>(),
            "{protocol:?}: every change once"
        );
        let out_of_order = per_item
            .values()
            .filter(|v| v.windows(2).any(|w| w[0] > w[1]))
            .count();
        assert_eq!(
            out_of_order, 0,
            "{protocol:?}: items whose changes were reordered"
        );
        assert!(lane_of_item.values().all(|l| l.len() == 1));
        let used: BTreeSet<u8> = lane_of_item.values().flatten().copied().collect();
        assert_eq!(
            used.len(),
            10,
            "200 items spread over the 10 lanes: {used:?}"
        );
        assert!(
            sink.most_in_flight.load(Ordering::SeqCst) >= 5,
            "the lanes' calls overlapped: at most {} at once",
            sink.most_in_flight.load(Ordering::SeqCst)
        );
        assert_eq!(
            sink.checkpoint_ahead.lock().unwrap().clone(),
            Vec::<String>::new(),
            "{protocol:?}: the checkpoint passed records a lane had not written"
        );
        let in_flight = metric_value(
            &prometheus().render(),
            "shardbridge_lane_records_in_flight",
            &format!("connector=\"{connector}\",lane=\"3\""),
        );
        assert_eq!(in_flight, Some(0.0), "every lane's records acknowledged");
    }
}

#[tokio::test]
async fn one_lane_is_the_sinks_own_batching() {
    let (sink, _) = run_in_lanes(CommitProtocol::FlushThenCheckpoint, 1, 0).await;
    assert_eq!(sink.most_in_flight.load(Ordering::SeqCst), 1);
    let calls = sink.calls.lock().unwrap().clone();
    let seqs: Vec<usize> = calls
        .iter()
        .flatten()
        .map(|(s, _)| s.parse::<usize>().unwrap() - 1000)
        .collect();
    assert_eq!(seqs, (0..5_000).collect::<Vec<_>>(), "in shard order");
    assert!(calls.iter().all(|c| c.iter().all(|(_, lane)| *lane == 0)));
}

/// A flush-then-checkpoint sink whose handler refuses every call with item 0's changes until
/// the other lanes delivered `release_after` changes (or 5 s passed): the lane of item 0 is
/// stuck retrying while the others go on.
struct StuckLaneSink {
    store: Arc<dyn LeaseStore>,
    release_after: usize,
    started: std::time::Instant,
    released: AtomicBool,
    stuck_lane: Mutex<Option<u8>>,
    /// Changes delivered by the other lanes while item 0's lane was stuck, by index.
    others_while_stuck: Mutex<Vec<usize>>,
    delivered: Mutex<Vec<usize>>,
    checkpoint_ahead: Mutex<Vec<String>>,
}

#[async_trait]
impl Sink for StuckLaneSink {
    fn commit_protocol(&self) -> CommitProtocol {
        CommitProtocol::FlushThenCheckpoint
    }
    fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_records: 50,
            max_bytes: usize::MAX,
            max_interval: Duration::from_millis(20),
        }
    }
    async fn write_batch(&self, batch: &Batch, _permit: &dyn SendPermit) -> Result<(), SinkError> {
        let index = |r: &shardbridge::sink::OutputRecord| {
            r.sequence_number.to_string().parse::<usize>().unwrap() - 1000
        };
        if let Checkpoint::Sequence(at) = &self.store.list().await.unwrap()[0].checkpoint {
            if let Some(first) = batch.first().filter(|r| &r.sequence_number <= at) {
                self.checkpoint_ahead.lock().unwrap().push(format!(
                    "{} checkpointed before {}",
                    at, first.sequence_number
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        let lane = batch.records[0].lane;
        if batch.records.iter().any(|r| index(r) % 200 == 0) {
            *self.stuck_lane.lock().unwrap() = Some(lane);
            let others = self.others_while_stuck.lock().unwrap().len();
            if !self.released.load(Ordering::SeqCst)
                && others < self.release_after
                && self.started.elapsed() < Duration::from_secs(5)
            {
                return Err(SinkError::Transient("item 0 is not handled yet".into()));
            }
            self.released.store(true, Ordering::SeqCst);
        }
        let stuck = *self.stuck_lane.lock().unwrap();
        if !self.released.load(Ordering::SeqCst) && stuck.is_some_and(|l| l != lane) {
            let mut others = self.others_while_stuck.lock().unwrap();
            others.extend(batch.records.iter().map(index));
        }
        self.delivered
            .lock()
            .unwrap()
            .extend(batch.records.iter().map(index));
        Ok(())
    }
}

#[tokio::test]
async fn a_lane_that_retries_holds_back_only_its_own_keys_and_the_checkpoint() {
    let store: Arc<dyn LeaseStore> = Arc::new(MemoryLeaseStore::default());
    let sink = Arc::new(StuckLaneSink {
        store: store.clone(),
        release_after: 2_000,
        started: std::time::Instant::now(),
        released: AtomicBool::new(false),
        stuck_lane: Mutex::new(None),
        others_while_stuck: Mutex::new(Vec::new()),
        delivered: Mutex::new(Vec::new()),
        checkpoint_ahead: Mutex::new(Vec::new()),
    });
    let ctx = hot_shard_context(store.clone(), sink.clone(), 10).await;
    assert_eq!(
        shard_worker::run(ctx).await.unwrap(),
        ShardOutcome::ShardEnd(vec![])
    );
    // While item 0's lane retried its first call (changes 0.. of the first batch), the other
    // lanes went on through later batches, up to the bound of batches in flight.
    let others = sink.others_while_stuck.lock().unwrap().clone();
    assert!(
        others.len() >= 2_000,
        "the other lanes delivered {} changes while one lane was stuck",
        others.len()
    );
    assert!(
        others.iter().max().is_some_and(|m| *m > 2_000),
        "the other lanes reached later batches: up to change {:?}",
        others.iter().max()
    );
    let delivered = sink.delivered.lock().unwrap().clone();
    let mut all = delivered.clone();
    all.sort_unstable();
    assert_eq!(all, (0..5_000).collect::<Vec<_>>(), "every change once");
    let mut per_item: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in delivered {
        per_item.entry(i % 200).or_default().push(i);
    }
    assert!(
        per_item.values().all(|v| v.windows(2).all(|w| w[0] < w[1])),
        "each item's changes in order"
    );
    assert_eq!(
        sink.checkpoint_ahead.lock().unwrap().clone(),
        Vec::<String>::new(),
        "the checkpoint passed records a lane had not written"
    );
    let row = store.list().await.unwrap().remove(0);
    assert_eq!(row.checkpoint, Checkpoint::ShardEnd);
}

/// A function sink (Lambda's rules) whose handler reports one record failed the first time it
/// sees it: on the call that resends from that record, the checkpoint already stands on the
/// record before it.
struct PartialSink {
    store: Arc<dyn LeaseStore>,
    fail_once: Mutex<BTreeSet<String>>,
    /// Each call's first sequence number and the stored checkpoint when it came.
    calls: Mutex<Vec<(String, Checkpoint)>>,
    handled: Mutex<Vec<String>>,
}

#[async_trait]
impl Sink for PartialSink {
    fn commit_protocol(&self) -> CommitProtocol {
        CommitProtocol::FlushThenCheckpoint
    }
    fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_records: 10,
            max_bytes: usize::MAX,
            max_interval: Duration::from_millis(10),
        }
    }
    fn function_rules(&self) -> Option<FunctionRules> {
        Some(FunctionRules {
            bisect_on_error: false,
        })
    }
    async fn write_batch(&self, batch: &Batch, _permit: &dyn SendPermit) -> Result<(), SinkError> {
        let stored = self.store.list().await.unwrap()[0].checkpoint.clone();
        let first = batch.records[0].sequence_number.to_string();
        self.calls.lock().unwrap().push((first, stored));
        for (i, r) in batch.records.iter().enumerate() {
            let seq = r.sequence_number.to_string();
            if self.fail_once.lock().unwrap().remove(&seq) {
                return Err(SinkError::Partial {
                    handled: i,
                    message: format!("{seq} failed"),
                });
            }
            self.handled.lock().unwrap().push(seq);
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_partial_batch_response_checkpoints_before_the_failed_record_and_resends_from_it() {
    let store: Arc<dyn LeaseStore> = Arc::new(MemoryLeaseStore::default());
    let sink = Arc::new(PartialSink {
        store: store.clone(),
        fail_once: Mutex::new(BTreeSet::from([
            seq_of(13).to_string(),
            seq_of(27).to_string(),
        ])),
        calls: Mutex::new(Vec::new()),
        handled: Mutex::new(Vec::new()),
    });
    let ctx = memory_context(
        store.clone(),
        shard(40, &[]),
        sink.clone(),
        Checkpoint::TrimHorizon,
        None,
    )
    .await;
    assert_eq!(
        shard_worker::run(ctx).await.unwrap(),
        ShardOutcome::ShardEnd(vec![])
    );
    assert_eq!(
        sink.handled.lock().unwrap().clone(),
        seqs(0..40),
        "every record once, in order"
    );
    let calls = sink.calls.lock().unwrap().clone();
    for failed in [13, 27] {
        let (_, stored) = calls
            .iter()
            .find(|(first, _)| *first == seq_of(failed).to_string())
            .expect("a call resent from the failed record");
        assert_eq!(
            *stored,
            Checkpoint::Sequence(seq_of(failed - 1)),
            "checkpointed up to the record before {failed}"
        );
    }
}

/// A source that counts its GetRecords calls in flight, and a sink that notes whether one was
/// in flight during each of its writes: read-ahead, seen from outside.
struct WatchedSource {
    inner: ScriptedSource,
    reading: Arc<AtomicUsize>,
}

#[async_trait]
impl ShardSource for WatchedSource {
    fn stream_arn(&self) -> &str {
        self.inner.stream_arn()
    }
    async fn list_shards(&self) -> Result<Vec<Shard>, SourceError> {
        self.inner.list_shards().await
    }
    async fn open_iterator(
        &self,
        shard_id: &str,
        position: &IteratorPosition,
    ) -> Result<ShardIterator, SourceError> {
        self.inner.open_iterator(shard_id, position).await
    }
    async fn get_records(
        &self,
        iterator: &ShardIterator,
        limit: u32,
    ) -> Result<RecordPage, SourceError> {
        self.reading.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let page = self.inner.get_records(iterator, limit).await;
        self.reading.fetch_sub(1, Ordering::SeqCst);
        page
    }
}

struct OverlapSink {
    reading: Arc<AtomicUsize>,
    writes: AtomicUsize,
    overlapped: AtomicUsize,
    records: AtomicUsize,
}

#[async_trait]
impl Sink for OverlapSink {
    fn commit_protocol(&self) -> CommitProtocol {
        CommitProtocol::FlushThenCheckpoint
    }
    async fn write_batch(&self, batch: &Batch, _permit: &dyn SendPermit) -> Result<(), SinkError> {
        // A page fetched ahead is being read (5 ms) when the write is 2 ms in.
        tokio::time::sleep(Duration::from_millis(2)).await;
        if self.reading.load(Ordering::SeqCst) > 0 {
            self.overlapped.fetch_add(1, Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(18)).await;
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.records
            .fetch_add(batch.records.len(), Ordering::SeqCst);
        Ok(())
    }
}

/// The next page is fetched while the sink writes, within the process's read-ahead budget;
/// with a budget of 0 the shard reads only after each write, counts the pages it did not fetch
/// ahead, and still delivers everything.
#[tokio::test(start_paused = true)]
async fn read_ahead_overlaps_writes_within_the_process_budget() {
    for budget in [shardbridge::pipeline::read_ahead::DEFAULT_BYTES, 0] {
        let store: Arc<dyn LeaseStore> = Arc::new(MemoryLeaseStore::default());
        let reading = Arc::new(AtomicUsize::new(0));
        let sink = Arc::new(OverlapSink {
            reading: reading.clone(),
            writes: AtomicUsize::new(0),
            overlapped: AtomicUsize::new(0),
            records: AtomicUsize::new(0),
        });
        let shard = || ScriptedShard {
            shard_id: SHARD.into(),
            records: 400,
            closed: true,
            faults: BTreeMap::new(),
            page_size: 20,
            keys: 10,
        };
        let ctx = memory_context(store, shard(), sink.clone(), Checkpoint::TrimHorizon, None).await;
        let connector = ctx.connector.clone();
        let ctx = ShardContext {
            source: Arc::new(WatchedSource {
                inner: ScriptedSource::new(shard()),
                reading,
            }),
            read_ahead: Arc::new(shardbridge::pipeline::read_ahead::ReadAheadBudget::new(
                budget,
            )),
            ..ctx
        };
        assert_eq!(
            shard_worker::run(ctx).await.unwrap(),
            ShardOutcome::ShardEnd(vec![])
        );
        assert_eq!(
            sink.records.load(Ordering::SeqCst),
            400,
            "every record once"
        );
        let (writes, overlapped) = (
            sink.writes.load(Ordering::SeqCst),
            sink.overlapped.load(Ordering::SeqCst),
        );
        let skipped = metric_value(
            &prometheus().render(),
            "shardbridge_read_ahead_skipped_total",
            &format!("connector=\"{connector}\""),
        )
        .unwrap_or(0.0);
        if budget == 0 {
            assert_eq!(overlapped, 0, "no page fetched during a write");
            assert!(
                skipped >= (writes - 1) as f64,
                "{skipped} skipped of {writes}"
            );
        } else {
            assert!(
                overlapped * 2 >= writes,
                "{overlapped} of {writes} writes overlapped a read"
            );
            assert_eq!(skipped, 0.0);
        }
    }
}

/// A sink whose calls fail for good when they hold item 0's changes, and are refused for as
/// long as they are tried otherwise (a sink that is down).
struct PoisonAndDownSink;

#[async_trait]
impl Sink for PoisonAndDownSink {
    fn commit_protocol(&self) -> CommitProtocol {
        CommitProtocol::FlushThenCheckpoint
    }
    fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_records: 50,
            max_bytes: usize::MAX,
            max_interval: Duration::from_millis(20),
        }
    }
    async fn write_batch(&self, batch: &Batch, _permit: &dyn SendPermit) -> Result<(), SinkError> {
        let item_0 = batch
            .records
            .iter()
            .any(|r| (r.sequence_number.to_string().parse::<usize>().unwrap() - 1000) % 200 == 0);
        tokio::time::sleep(Duration::from_millis(1)).await;
        if item_0 {
            Err(SinkError::Fatal("item 0 is poison".into()))
        } else {
            Err(SinkError::Transient("down".into()))
        }
    }
}

/// In lanes, a call that fails for good ends the shard with its error, though other lanes are
/// still retrying a sink that is down: they are not waited for.
#[tokio::test]
async fn a_lane_that_fails_for_good_ends_the_shard_while_others_retry() {
    let store: Arc<dyn LeaseStore> = Arc::new(MemoryLeaseStore::default());
    let shard = ScriptedShard {
        shard_id: SHARD.into(),
        records: 1_000,
        closed: true,
        faults: BTreeMap::new(),
        page_size: 100,
        keys: 200,
    };
    let ctx = memory_context(
        store.clone(),
        shard,
        Arc::new(PoisonAndDownSink),
        Checkpoint::TrimHorizon,
        None,
    )
    .await;
    let ctx = ShardContext { lanes: 10, ..ctx };
    let ended = tokio::time::timeout(Duration::from_secs(30), shard_worker::run(ctx))
        .await
        .expect("the shard ended instead of waiting for the lanes that retry");
    let err = ended.expect_err("a fatal sink error ends the shard");
    assert!(err.to_string().contains("item 0 is poison"), "{err}");
    assert_eq!(
        store.list().await.unwrap()[0].checkpoint,
        Checkpoint::TrimHorizon,
        "nothing checkpointed past the failed call"
    );
}
