//! The shard worker against a scripted source (every error class on demand), the real lease
//! table on the moto server, and a sink that records what it was given.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use common::scripted_source::{seq_of, Fault, ScriptedShard, ScriptedSource};
use common::{aws_endpoint, metric_value, sdk_config, unique};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use shardbridge::format::FormatKind;
use shardbridge::lease::held::HeldLease;
use shardbridge::lease::model::{Checkpoint, Lease};
use shardbridge::lease::table::{LeaseStore, LeaseTable};
use shardbridge::metrics::health::Health;
use shardbridge::pipeline::shard_worker::{self, ShardContext, ShardError, ShardOutcome};
use shardbridge::retry::Backoff;
use shardbridge::sink::{Batch, BatchLimits, CommitProtocol, Sink, SinkError};
use shardbridge::source::IteratorPosition;
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
    async fn write_batch(&self, batch: &Batch) -> Result<(), SinkError> {
        if self.fail_next.load(Ordering::SeqCst) > 0 {
            self.fail_next.fetch_sub(1, Ordering::SeqCst);
            return Err(SinkError::Transient("sink down".into()));
        }
        let store = self.store.lock().unwrap().clone();
        let intent = match store {
            Some(store) => store.list().await.unwrap()[0].pending_checkpoint.clone(),
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
        lease.pending_checkpoint = intent.map(str::to_string);
        self.table.create_if_absent(&lease).await.unwrap();
        let taken = self.table.take(&lease, "me").await.unwrap();
        let held = Arc::new(HeldLease::new(
            self.table.clone(),
            &taken,
            "me",
            Duration::from_secs(10),
            Duration::from_secs(2),
        ));
        shard_worker::run(ShardContext {
            connector: self.connector.clone(),
            source: self.source.clone(),
            sink: self.sink.clone(),
            format: FormatKind::Plain,
            lease: held,
            start,
            skip_before_millis: None,
            poll_idle: Duration::from_millis(1),
            max_records: 1000,
            source_backoff: Backoff::new(1, 5, max_retries),
            sink_backoff: Backoff::new(1, 5, 3),
            checkpoint_backoff: Backoff::new(1, 5, 3),
            health: Arc::new(Health::default()),
            stop: CancellationToken::new(),
            parent_ended_at: None,
            lag: Default::default(),
            pending_intent: taken.pending_checkpoint.clone(),
            previous_owner_done_by: None,
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
    assert!(err.to_string().contains("stream not found"), "{err}");
    assert_eq!(
        h.written(),
        seqs(0..10),
        "what was read before is delivered"
    );
    assert_eq!(h.checkpoint().await, Checkpoint::Sequence(seq_of(9)));
}

#[tokio::test]
async fn retries_are_bounded() {
    let faults: Vec<(usize, Fault)> = (1..=10).map(|c| (c, Fault::Transient)).collect();
    let h = Harness::new(shard(100, &faults)).await;
    let err = h.run(Checkpoint::TrimHorizon, 3).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("giving up after 4 failed attempts"),
        "{err}"
    );
    assert!(h.written().is_empty());
    assert_eq!(h.checkpoint().await, Checkpoint::TrimHorizon);
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
