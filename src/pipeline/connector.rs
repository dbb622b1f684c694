//! One connector: resolves its stream, keeps its lease table in sync with the stream's shards,
//! takes and renews leases, and runs a shard worker per lease whose parents are done.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::shard_worker::{self, ShardContext, ShardError, ShardOutcome};
use crate::config::{ConnectorConfig, StartingPosition};
use crate::lease::held::HeldLease;
use crate::lease::lineage;
use crate::lease::model::Lease;
use crate::lease::planning::{self, Observations, WorkerView};
use crate::lease::table::{LeaseError, LeaseStore, LeaseTable};
use crate::metrics::events;
use crate::metrics::health::{ConnectorState, Health};
use crate::retry::Backoff;
use crate::sink::Sink;
use crate::source::dynamodb_streams::DynamoDbStreamsSource;
use crate::source::{ShardSource, SourceError};

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("source: {0}")]
    Source(#[from] SourceError),
    #[error("lease table: {0}")]
    Lease(#[from] LeaseError),
    #[error("{0}")]
    Shard(#[from] ShardError),
    #[error("sink: {0}")]
    Sink(#[from] crate::sink::SinkError),
}

/// Retries a start-up call while it fails transiently, with the source's back-off.
async fn with_retries<T, E, F, Fut>(
    connector: &str,
    what: &'static str,
    backoff: &Backoff,
    is_transient: impl Fn(&E) -> bool,
    mut call: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if is_transient(&e) => {
                attempt += 1;
                let Some(wait) = backoff.delay_random(attempt) else {
                    return Err(e);
                };
                tracing::warn!(connector, what, %e, attempt, "retrying");
                events::retry_wait(connector, what, wait);
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e),
        }
    }
}

pub struct Connector {
    cfg: ConnectorConfig,
    worker_id: String,
    health: Arc<Health>,
    source: Arc<dyn ShardSource>,
    sink: Arc<dyn Sink>,
    table: Arc<dyn LeaseStore>,
}

impl ConnectorError {
    fn is_transient(&self) -> bool {
        matches!(
            self,
            ConnectorError::Source(SourceError::Transient(_) | SourceError::Throttled(_))
                | ConnectorError::Lease(LeaseError::Transient(_))
        )
    }
}

fn source_backoff(cfg: &ConnectorConfig) -> Backoff {
    Backoff::new(100, 5_000, cfg.source.max_retries)
}

impl Connector {
    /// Connects to the source, the lease table and the sink.
    pub async fn start(
        cfg: ConnectorConfig,
        worker_id: String,
        health: Arc<Health>,
    ) -> Result<Self, ConnectorError> {
        let name = cfg.name.clone();
        health.set(&name, ConnectorState::Starting);
        let backoff = source_backoff(&cfg);
        let source_sdk = crate::aws::sdk_config(&cfg.source.aws).await;
        let source = with_retries(
            &name,
            "connect_source",
            &backoff,
            |e: &SourceError| matches!(e, SourceError::Transient(_) | SourceError::Throttled(_)),
            || DynamoDbStreamsSource::connect(&source_sdk, &cfg.source.stream),
        )
        .await?;
        let lease_sdk = crate::aws::sdk_config(&cfg.leases.aws).await;
        let table = Arc::new(LeaseTable::new(&lease_sdk, &cfg.leases.table, &name));
        with_retries(
            &name,
            "lease_table",
            &backoff,
            |e: &LeaseError| matches!(e, LeaseError::Transient(_)),
            || table.ensure_exists(),
        )
        .await?;
        let sink: Arc<dyn Sink> = Arc::from(crate::sink::build(&cfg.sink).await?);
        tracing::info!(connector = %name, stream = source.stream_arn(), lease_table = %cfg.leases.table,
            commit_protocol = ?sink.commit_protocol(), "connector started");
        Ok(Connector::new(
            cfg,
            worker_id,
            health,
            Arc::new(source),
            table,
            sink,
        ))
    }

    /// A connector over given parts: the in-process stream model and lease store use this.
    pub fn new(
        cfg: ConnectorConfig,
        worker_id: String,
        health: Arc<Health>,
        source: Arc<dyn ShardSource>,
        table: Arc<dyn LeaseStore>,
        sink: Arc<dyn Sink>,
    ) -> Self {
        Connector {
            cfg,
            worker_id,
            health,
            source,
            sink,
            table,
        }
    }

    /// Runs until `stop`, then stops every shard worker (waiting up to `shutdown_timeout`) and
    /// releases its leases.
    pub async fn run(
        self,
        stop: CancellationToken,
        shutdown_timeout: Duration,
    ) -> Result<(), ConnectorError> {
        let name = self.cfg.name.clone();
        self.health.set(&name, ConnectorState::Running);
        let workers_stop = CancellationToken::new();
        let mut held: HashMap<String, Arc<HeldLease>> = HashMap::new();
        let mut tasks: JoinSet<(String, Result<ShardOutcome, ShardError>)> = JoinSet::new();
        let mut observed = Observations::default();
        let mut first_sync = true;
        let mut sync = tokio::time::interval(Duration::from_millis(
            self.cfg.leases.shard_sync_interval_ms,
        ));
        let mut renew =
            tokio::time::interval(Duration::from_millis(self.cfg.leases.renew_interval_ms));
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sync_failures = 0u32;
        let mut retry_sync_at: Option<tokio::time::Instant> = None;
        let backoff = source_backoff(&self.cfg);

        let result: Result<(), ConnectorError> = loop {
            let mut sync_now = false;
            tokio::select! {
                _ = stop.cancelled() => break Ok(()),
                _ = sync.tick() => sync_now = true,
                _ = async { tokio::time::sleep_until(retry_sync_at.unwrap_or_else(tokio::time::Instant::now)).await },
                    if retry_sync_at.is_some() => sync_now = true,
                _ = renew.tick() => {
                    for lease in held.values() {
                        match lease.renew().await {
                            Ok(()) => {}
                            Err(LeaseError::Lost(k)) => events::lease_lost(&name, &k),
                            Err(e) => tracing::warn!(connector = %name, shard = lease.shard_id(), %e, "lease renewal failed; will retry"),
                        }
                    }
                }
                Some(done) = tasks.join_next() => {
                    let (shard, outcome) = match done {
                        Ok(v) => v,
                        Err(e) => break Err(ConnectorError::Shard(ShardError::Source(format!("shard task failed: {e}")))),
                    };
                    held.remove(&shard);
                    events::shards_owned(&name, held.len());
                    match outcome {
                        // A closed shard's children may be ready now: look at once, not at the
                        // next periodic sync.
                        Ok(ShardOutcome::ShardEnd) => sync_now = true,
                        Ok(ShardOutcome::LeaseLost) | Ok(ShardOutcome::Stopped) => {}
                        Err(e) => break Err(e.into()),
                    }
                }
            }
            if !sync_now {
                continue;
            }
            retry_sync_at = None;
            match self
                .sync(
                    &mut held,
                    &mut tasks,
                    &mut observed,
                    first_sync,
                    &workers_stop,
                )
                .await
            {
                Ok(()) => {
                    first_sync = false;
                    sync_failures = 0;
                }
                Err(e) if e.is_transient() => {
                    sync_failures += 1;
                    let Some(wait) = backoff.delay_random(sync_failures) else {
                        break Err(e);
                    };
                    tracing::warn!(connector = %name, %e, attempt = sync_failures, "shard sync failed; retrying");
                    events::retry_wait(&name, "shard_sync", wait);
                    retry_sync_at = Some(tokio::time::Instant::now() + wait);
                }
                Err(e) => break Err(e),
            }
        };

        // Stop: workers finish or abandon their batch in flight, then leases are released.
        workers_stop.cancel();
        let drained = tokio::time::timeout(shutdown_timeout, async {
            while let Some(done) = tasks.join_next().await {
                if let Ok((shard, Err(e))) = done {
                    tracing::warn!(connector = %name, %shard, %e, "shard worker ended with an error");
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(connector = %name, "shutdown timeout: abandoning batches in flight (they are re-read, not lost)");
            tasks.abort_all();
        }
        for lease in held.values() {
            match lease.release().await {
                Ok(()) => events::lease_released(&name, lease.shard_id()),
                Err(e) => {
                    tracing::warn!(connector = %name, shard = lease.shard_id(), %e, "could not release lease")
                }
            }
        }
        events::shards_owned(&name, 0);
        self.health.set(
            &name,
            match &result {
                Ok(()) => ConnectorState::Stopped,
                Err(e) => ConnectorState::Failed(e.to_string()),
            },
        );
        result
    }

    /// Lists shards and leases, creates leases for new shards, takes the leases this worker
    /// should hold, and starts a worker for each.
    async fn sync(
        &self,
        held: &mut HashMap<String, Arc<HeldLease>>,
        tasks: &mut JoinSet<(String, Result<ShardOutcome, ShardError>)>,
        observed: &mut Observations,
        first_sync: bool,
        workers_stop: &CancellationToken,
    ) -> Result<(), ConnectorError> {
        let shards = self.source.list_shards().await?;
        let mut leases = self.table.list().await?;
        let first_start = first_sync && leases.is_empty();
        let latest = self.cfg.source.starting_position == StartingPosition::Latest;
        let known: HashSet<String> = leases.iter().map(|l| l.lease_key.clone()).collect();
        let mut created = false;
        for shard in shards.iter().filter(|s| !known.contains(&s.shard_id)) {
            let parents: BTreeSet<String> = shard.parents().map(str::to_string).collect();
            let lease = Lease::new(
                &shard.shard_id,
                lineage::initial_checkpoint(shard, first_start, latest),
                parents,
            );
            created |= self.table.create_if_absent(&lease).await?;
        }
        if created {
            leases = self.table.list().await?;
        }
        let now = tokio::time::Instant::now();
        observed.update(&leases, now);
        let by_key: HashMap<String, Lease> = leases
            .iter()
            .map(|l| (l.lease_key.clone(), l.clone()))
            .collect();
        let listed: HashSet<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
        let shard_by_id: HashMap<&str, &crate::source::Shard> =
            shards.iter().map(|s| (s.shard_id.as_str(), s)).collect();
        let running: HashSet<String> = held.keys().cloned().collect();
        let failover = Duration::from_millis(self.cfg.leases.failover_ms);
        let view = WorkerView {
            me: &self.worker_id,
            running: &running,
            failover,
            max_leases: self.cfg.leases.max_leases_per_worker,
        };
        let plan = planning::plan(&leases, &view, observed, now, |l| {
            // A lease whose shard is no longer listed was trimmed: nothing left to read.
            shard_by_id
                .get(l.lease_key.as_str())
                .is_some_and(|s| lineage::is_ready(s, &by_key, &listed))
        });
        let stolen: HashSet<&str> = plan.steal.iter().map(|l| l.lease_key.as_str()).collect();
        for lease in plan.all() {
            let how = match lease.lease_owner.as_deref() {
                _ if stolen.contains(lease.lease_key.as_str()) => "stolen",
                None => "free",
                Some(o) if o == self.worker_id => "own",
                Some(_) => "expired",
            };
            let taken = match self.table.take(lease, &self.worker_id).await {
                Ok(t) => t,
                // Someone else took or renewed it between our read and our write.
                Err(LeaseError::Lost(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            events::lease_acquired(
                &self.cfg.name,
                &taken.lease_key,
                how,
                &taken.checkpoint.as_string(),
            );
            let held_lease = Arc::new(HeldLease::new(
                self.table.clone(),
                &taken,
                &self.worker_id,
                failover,
                Duration::from_millis(self.cfg.leases.safety_margin_ms),
            ));
            held.insert(taken.lease_key.clone(), held_lease.clone());
            let ctx = ShardContext {
                connector: self.cfg.name.clone(),
                source: self.source.clone(),
                sink: self.sink.clone(),
                format: self.cfg.format,
                lease: held_lease,
                start: taken.checkpoint.clone(),
                skip_before_millis: match self.cfg.source.starting_position {
                    StartingPosition::AtTimestamp(ms) => Some(ms),
                    _ => None,
                },
                poll_idle: Duration::from_millis(self.cfg.source.poll_idle_ms),
                max_records: self.cfg.source.max_records,
                source_backoff: source_backoff(&self.cfg),
                sink_backoff: Backoff::new(200, 10_000, 6),
                checkpoint_backoff: Backoff::new(100, 5_000, 8),
                health: self.health.clone(),
                stop: workers_stop.child_token(),
            };
            let shard_id = taken.lease_key.clone();
            tasks.spawn(async move { (shard_id, shard_worker::run(ctx).await) });
        }
        events::shards_owned(&self.cfg.name, held.len());
        Ok(())
    }
}
