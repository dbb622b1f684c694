//! Parallel lanes (`parallelization_factor`) against a sink with a fixed delay per call, the
//! case lanes are for (a slow handler): one hot shard of 5,000 changes to 200 items read in
//! full pages of 1,000 records (DynamoDB Streams' largest), a sink that takes calls of at most
//! 50 records at 10 ms each, drained to the shard's end through the real shard worker and
//! commit driver (in-process shard and lease table, so only the sink's delay and shardbridge's
//! own work count). Compare the medians of `lanes/1` and `lanes/10`.

#[path = "../tests/common/memory_lease_store.rs"]
#[allow(dead_code)]
mod memory_lease_store;
#[path = "../tests/common/scripted_source.rs"]
#[allow(dead_code)]
mod scripted_source;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use memory_lease_store::MemoryLeaseStore;
use scripted_source::{ScriptedShard, ScriptedSource};
use shardbridge::lease::held::HeldLease;
use shardbridge::lease::model::{Checkpoint, Lease};
use shardbridge::lease::table::LeaseStore;
use shardbridge::pipeline::shard_worker::{self, ShardContext, ShardOutcome};
use shardbridge::sink::{Batch, BatchLimits, CommitProtocol, SendPermit, Sink, SinkError};

const RECORDS: usize = 5_000;
const CALL_RECORDS: usize = 50;
const CALL_DELAY: Duration = Duration::from_millis(10);

struct SlowSink;

#[async_trait]
impl Sink for SlowSink {
    fn commit_protocol(&self) -> CommitProtocol {
        CommitProtocol::Reconciling
    }
    fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_records: CALL_RECORDS,
            max_bytes: usize::MAX,
            max_interval: Duration::from_millis(100),
        }
    }
    /// A batch larger than a call (a whole page, without lanes) goes in calls one after the
    /// other, as a sink with a per-call limit sends it.
    async fn write_batch(&self, batch: &Batch, _permit: &dyn SendPermit) -> Result<(), SinkError> {
        for _call in batch.records.chunks(CALL_RECORDS) {
            tokio::time::sleep(CALL_DELAY).await;
        }
        Ok(())
    }
}

async fn drain(lanes: u8) {
    let store: Arc<dyn LeaseStore> = Arc::new(MemoryLeaseStore::default());
    let shard = ScriptedShard {
        shard_id: "shardId-00000001700000000000-00000hot".into(),
        records: RECORDS,
        closed: true,
        faults: BTreeMap::new(),
        page_size: 1_000,
        keys: 200,
    };
    let lease = Lease::new(&shard.shard_id, Checkpoint::TrimHorizon, BTreeSet::new());
    store.create_if_absent(&lease).await.unwrap();
    let taken = store.take(&lease, "bench").await.unwrap();
    let held = Arc::new(HeldLease::new(
        store,
        &taken,
        "bench",
        Duration::from_secs(10),
        Duration::from_secs(2),
    ));
    let ctx = ShardContext {
        lanes,
        poll_idle: Duration::from_millis(1),
        ..ShardContext::new(
            "bench",
            Arc::new(ScriptedSource::new(shard)),
            Arc::new(SlowSink),
            held,
            taken,
        )
    };
    let outcome = shard_worker::run(ctx).await.unwrap();
    assert_eq!(outcome, ShardOutcome::ShardEnd(vec![]));
}

fn lanes(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("lanes");
    group.sample_size(10);
    group.throughput(Throughput::Elements(RECORDS as u64));
    for n in [1u8, 2, 5, 10] {
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter(|| rt.block_on(drain(n)));
        });
    }
    group.finish();
}

criterion_group!(benches, lanes);
criterion_main!(benches);
