//! One connector: resolves its stream, keeps its lease table in sync with the stream's shards,
//! takes and renews leases, and runs a shard worker per lease whose parents are done.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::config::ConnectorConfig;
use super::lag::ConnectorLag;
use super::shard_worker::{self, ShardContext, ShardError, ShardOutcome};
use crate::aws::AwsErrorClass;
use crate::format::FormatKind;
use crate::lease::held::{HeartbeatClock, HeldLease};
use crate::lease::lineage;
use crate::lease::model::is_heartbeat;
use crate::lease::model::{Acquired, Checkpoint, Lease};
use crate::lease::planning::{self, Observations, WorkerView};
use crate::lease::table::{LeaseError, LeaseStore, LeaseTable};
use crate::lease::RenewalMode;
use crate::metrics::events;
use crate::metrics::health::{ConnectorState, Health};
use crate::retry::{Backoff, FailureStreak};
use crate::sink::on_failure::{Destination, OnFailure};
use crate::sink::Sink;
use crate::source::dynamodb_streams::DynamoDbStreamsSource;
use crate::source::kinesis::KinesisSource;
use crate::source::snapshot::{self, SnapshotMode, SnapshotSource};
use crate::source::{Shard, ShardSource, SourceError, StartingPosition, StreamRef};

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
/// A start-up call: what heals by itself is retried for as long as it takes (capped back-off,
/// every wait in the retry metric), and after `max_retries` failures in a row /readyz names it;
/// what will not heal is returned.
async fn with_retries<T, E, F, Fut>(
    connector: &str,
    what: &'static str,
    backoff: Backoff,
    health: &Health,
    is_transient: impl Fn(&E) -> bool,
    mut call: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    // Start-up is not cut short by a stop here: `run_all` drops the whole start on a stop.
    let mut streak = FailureStreak::default();
    loop {
        match call().await {
            Ok(v) => {
                if streak.succeeded(&backoff) {
                    health.well(connector, what);
                }
                return Ok(v);
            }
            Err(e) if is_transient(&e) => {
                let failures = streak.failed();
                if streak.is_degraded(&backoff) {
                    health.degraded(
                        connector,
                        what,
                        format!("{failures} failures in a row: {e}"),
                    );
                }
                let wait = backoff.delay_capped(failures, rand::random::<f64>());
                tracing::warn!(connector, what, attempt = failures, wait_ms = wait.as_millis() as u64, error = %e, "retrying");
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
    /// The snapshot's reader (also `source`), told when the snapshot began.
    snapshot_source: Option<Arc<SnapshotSource>>,
    /// Renewal mode heartbeat: when this worker's heartbeat row was last written.
    heartbeat: Option<Arc<HeartbeatClock>>,
    sink: Arc<dyn Sink>,
    table: Arc<dyn LeaseStore>,
    lag: Arc<ConnectorLag>,
    /// The process's room for pages fetched ahead, shared with the other connectors.
    read_ahead: Arc<super::read_ahead::ReadAheadBudget>,
    /// What `lambda` writes as Kinesis records' `invokeIdentityArn`.
    invoke_identity_arn: Option<Arc<str>>,
    /// The failure destination and its rules, when configured.
    on_failure: Option<Arc<OnFailure>>,
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

/// The source, and the snapshot's reader when one is configured (it is the source then).
async fn connect_source(
    sdk: &aws_config::SdkConfig,
    cfg: &ConnectorConfig,
) -> Result<(Arc<dyn ShardSource>, Option<Arc<SnapshotSource>>), SourceError> {
    let stream = &cfg.source.stream;
    Ok(match stream {
        StreamRef::Table(_) | StreamRef::StreamArn(_) => {
            let stream: Arc<dyn ShardSource> =
                Arc::new(DynamoDbStreamsSource::connect(sdk, stream).await?);
            if cfg.snapshot.enabled() {
                let snapshot = Arc::new(SnapshotSource::new(
                    sdk,
                    stream,
                    cfg.snapshot.clone(),
                    &cfg.name,
                )?);
                (snapshot.clone(), Some(snapshot))
            } else {
                (stream, None)
            }
        }
        StreamRef::Kinesis(stream) => (Arc::new(KinesisSource::connect(sdk, stream).await?), None),
    })
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
        read_ahead: Arc<super::read_ahead::ReadAheadBudget>,
    ) -> Result<Self, ConnectorError> {
        let name = cfg.name.clone();
        health.set(&name, ConnectorState::Starting);
        events::connector_registered(&name);
        let backoff = source_backoff(&cfg);
        let source_sdk = crate::aws::sdk_config(&cfg.source.aws).await;
        let (source, snapshot_source) = with_retries(
            &name,
            "connect_source",
            backoff,
            &health,
            |e: &SourceError| matches!(e, SourceError::Transient(_) | SourceError::Throttled(_)),
            || connect_source(&source_sdk, &cfg),
        )
        .await?;
        let lease_sdk = crate::aws::sdk_config(&cfg.leases.aws).await;
        let table = Arc::new(LeaseTable::new(&lease_sdk, &cfg.leases.table, &name));
        with_retries(
            &name,
            "lease_table",
            backoff,
            &health,
            |e: &LeaseError| matches!(e, LeaseError::Transient(_)),
            || table.ensure_exists(),
        )
        .await?;
        let invoke_identity_arn = match &cfg.invoke_identity_arn {
            Some(arn) => Some(arn.clone()),
            // Lambda always sets it on Kinesis records; typed consumers require it.
            None if cfg.format == FormatKind::Lambda && cfg.source.stream.is_kinesis() => {
                let sdk = crate::aws::sdk_config(&cfg.identity_aws).await;
                let arn = with_retries(
                    &name,
                    "caller_identity",
                    backoff,
                    &health,
                    |e: &SourceError| matches!(e, SourceError::Transient(_) | SourceError::Throttled(_)),
                    || async {
                        crate::aws::caller_identity_arn(&sdk).await.map_err(|(class, text)| {
                            let text = format!("{text} (the invokeIdentityArn of the lambda format; format.invoke_identity_arn sets it instead)");
                            match class {
                                AwsErrorClass::Transient => SourceError::Transient(text),
                                AwsErrorClass::Throttled => SourceError::Throttled(text),
                                _ => SourceError::Fatal(text),
                            }
                        })
                    },
                )
                .await?;
                tracing::info!(connector = %name, invoke_identity_arn = %arn, "lambda records name this identity");
                Some(arn)
            }
            None => None,
        };
        let sink: Arc<dyn Sink> = Arc::from(crate::sink::build(&cfg.sink, &name).await?);
        let on_failure = match &cfg.set_aside.on_failure {
            Some(destination) => Some(Arc::new(OnFailure {
                destination: Destination::build(destination).await?,
                max_retry_attempts: cfg.set_aside.max_retry_attempts,
                max_record_age_ms: cfg.set_aside.max_record_age_ms,
                kinesis_source: cfg.source.stream.is_kinesis(),
            })),
            None => None,
        };
        tracing::info!(connector = %name, stream = source.stream_arn(), lease_table = %cfg.leases.table,
            commit_protocol = ?sink.commit_protocol(), "connector started");
        let mut connector = Connector::assemble(cfg, worker_id, health, source, table, sink);
        connector.invoke_identity_arn = invoke_identity_arn.map(Arc::from);
        connector.on_failure = on_failure;
        connector.read_ahead = read_ahead;
        connector.snapshot_source = snapshot_source;
        Ok(connector)
    }

    /// A connector over given parts (a test's in-process stream model and lease store): only
    /// with the `testsuite` feature, the release library has just `start`.
    #[cfg(feature = "testsuite")]
    pub fn new(
        cfg: ConnectorConfig,
        worker_id: String,
        health: Arc<Health>,
        source: Arc<dyn ShardSource>,
        table: Arc<dyn LeaseStore>,
        sink: Arc<dyn Sink>,
    ) -> Self {
        let arn = cfg.invoke_identity_arn.clone();
        let mut connector = Connector::assemble(cfg, worker_id, health, source, table, sink);
        connector.invoke_identity_arn = arn.map(Arc::from);
        connector
    }

    fn assemble(
        cfg: ConnectorConfig,
        worker_id: String,
        health: Arc<Health>,
        source: Arc<dyn ShardSource>,
        table: Arc<dyn LeaseStore>,
        sink: Arc<dyn Sink>,
    ) -> Self {
        let heartbeat = (cfg.leases.renewal == RenewalMode::Heartbeat)
            .then(|| Arc::new(HeartbeatClock::default()));
        Connector {
            cfg,
            worker_id,
            health,
            source,
            snapshot_source: None,
            heartbeat,
            sink,
            table,
            lag: Arc::new(ConnectorLag::default()),
            read_ahead: Arc::new(super::read_ahead::ReadAheadBudget::new(
                super::read_ahead::DEFAULT_BYTES,
            )),
            invoke_identity_arn: None,
            on_failure: None,
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
        let mut st = SyncState {
            workers_stop: CancellationToken::new(),
            held: HeldLeases::default(),
            tasks: JoinSet::new(),
            observed: Observations::default(),
            shards: Vec::new(),
            ended_at: HashMap::new(),
            first_sync: true,
            next_expiry: None,
            adopted: HashSet::new(),
            trimmed_reported: HashSet::new(),
            snapshot: SnapshotState::default(),
        };
        let mut sync = tokio::time::interval(Duration::from_millis(
            self.cfg.leases.shard_sync_interval_ms,
        ));
        let renew_interval = Duration::from_millis(self.cfg.leases.renew_interval_ms);
        // Renewals run on their own, so that a slow call of the shard sync (a source or lease
        // table that does not answer) never delays them past the failover time.
        let renewals_stop = CancellationToken::new();
        // Aborted when `run` ends or is dropped: a connector that is abandoned (a crash in the
        // in-process model) must not keep its leases alive.
        let renewals = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(renew_leases(
            Renewals {
                name: name.clone(),
                held: st.held.clone(),
                interval: renew_interval,
                health: self.health.clone(),
                lag: self.lag.clone(),
                heartbeat: self.heartbeat.clone().map(|clock| Heartbeat {
                    clock,
                    table: self.table.clone(),
                    worker_id: self.worker_id.clone(),
                }),
            },
            renewals_stop.clone(),
        )));
        // Looking for free, expired and stealable leases is one Scan: done every renew interval,
        // so a dead worker's leases move within failover + one renew interval. Listing shards
        // (rate-limited, paginated) has its own, longer interval.
        let mut take = tokio::time::interval(renew_interval);
        take.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sync_failures = FailureStreak::default();
        let mut retry_sync_at: Option<Instant> = None;
        let backoff = source_backoff(&self.cfg);

        let result: Result<(), ConnectorError> = loop {
            // None: no sync; Some(true): with a full shard listing; Some(false): leases only.
            let mut sync_now: Option<bool> = None;
            tokio::select! {
                _ = stop.cancelled() => break Ok(()),
                _ = sync.tick() => sync_now = Some(true),
                _ = take.tick() => sync_now = Some(false),
                _ = async { tokio::time::sleep_until(st.next_expiry.unwrap_or_else(Instant::now)).await },
                    if st.next_expiry.is_some() => sync_now = Some(false),
                _ = async { tokio::time::sleep_until(retry_sync_at.unwrap_or_else(Instant::now)).await },
                    if retry_sync_at.is_some() => sync_now = Some(true),
                Some(done) = st.tasks.join_next() => {
                    let (shard, outcome) = match done {
                        Ok(v) => v,
                        Err(e) => break Err(ConnectorError::Shard(ShardError::Source(format!("shard task failed: {e}")))),
                    };
                    let owned = {
                        let mut held = lock(&st.held);
                        held.remove(&shard);
                        held.len()
                    };
                    events::shards_owned(&name, owned);
                    match outcome {
                        // Create the children's leases and look for work at once, not at the
                        // next periodic sync.
                        Ok(ShardOutcome::ShardEnd(children)) => {
                            match self.adopt_children(&mut st, &shard, children).await {
                                Ok(listed) => sync_now = Some(!listed),
                                Err(e) if e.is_transient() => sync_now = Some(true),
                                Err(e) => break Err(e),
                            }
                        }
                        Ok(ShardOutcome::LeaseLost) | Ok(ShardOutcome::Stopped) => {}
                        Err(e) => break Err(e.into()),
                    }
                }
            }
            let Some(full) = sync_now else {
                continue;
            };
            retry_sync_at = None;
            let full = full || st.first_sync;
            match self.sync(&mut st, full).await {
                Ok(()) if st.snapshot.only_and_done => {
                    tracing::info!(connector = %name, "the snapshot is done (mode initial_only): stopping");
                    break Ok(());
                }
                Ok(()) => {
                    st.first_sync = false;
                    // Only a full sync (the shard listing too) ends a streak: the leases-only
                    // syncs between full ones succeed while the source may still be down. With
                    // no streak, they keep its clock current, so one failed listing after a
                    // quiet minute is not taken for a minute of failing.
                    if !full {
                        sync_failures.still_well();
                    } else if sync_failures.succeeded(&backoff) {
                        self.health.well(&name, "shard sync");
                    }
                }
                Err(e) if e.is_transient() => {
                    // Retried for as long as it takes; /readyz names it after max_retries.
                    let failures = sync_failures.failed();
                    let wait = backoff.delay_capped(failures, rand::random::<f64>());
                    if sync_failures.is_degraded(&backoff) {
                        let why = format!("{failures} failures in a row: {e}");
                        self.health.degraded(&name, "shard sync", why);
                    }
                    if let Some(left_out) = events::may_warn("shard_sync", &name) {
                        tracing::warn!(connector = %name, %e, attempt = failures, similar_left_out = left_out, "shard sync failed; retrying");
                    }
                    events::retry_wait(&name, "shard_sync", wait);
                    retry_sync_at = Some(Instant::now() + wait);
                }
                Err(e) => break Err(e),
            }
        };

        // Stop: workers finish or abandon their batch in flight, then leases are released.
        st.workers_stop.cancel();
        let tasks = &mut st.tasks;
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
            st.tasks.abort_all();
        }
        // Leases are renewed while batches in flight finish, then given back.
        renewals_stop.cancel();
        let _ = renewals.await;
        let held: Vec<Arc<HeldLease>> = lock(&st.held).values().cloned().collect();
        for lease in held {
            match lease.release().await {
                Ok(()) => events::lease_released(&name, lease.shard_id()),
                Err(e) => {
                    tracing::warn!(connector = %name, shard = lease.shard_id(), %e, "could not release lease")
                }
            }
        }
        if self.heartbeat.is_some() {
            // Gone on purpose: nobody needs to wait for this heartbeat to go still.
            if let Err(e) = self.table.delete_heartbeat(&self.worker_id, None).await {
                tracing::warn!(connector = %name, %e, "could not delete the heartbeat row");
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

    /// After a shard's SHARD_END: creates its children's leases at once and remembers them for
    /// the lineage gate. False when a complete listing must follow: children unknown, a parent
    /// missing from our view, or a merge child left for that listing to lease.
    async fn adopt_children(
        &self,
        st: &mut SyncState,
        parent: &str,
        children: Vec<Shard>,
    ) -> Result<bool, ConnectorError> {
        st.ended_at.insert(parent.to_string(), Instant::now());
        if children.is_empty() {
            return Ok(false);
        }
        // A parent missing from our view (a merge's other parent, new since the last listing)
        // needs a complete listing before the lineage gate can judge it.
        let known: HashSet<String> = st.shards.iter().map(|s| s.shard_id.clone()).collect();
        let complete = children
            .iter()
            .all(|c| c.parents().all(|p| known.contains(p)));
        // Only a merge child depends on another lease row; a split or rollover costs no Scan.
        let leases: HashMap<String, Lease> = if lineage::has_other_parents(parent, &children) {
            self.table
                .list()
                .await?
                .into_iter()
                .map(|l| (l.lease_key.clone(), l))
                .collect()
        } else {
            HashMap::new()
        };
        let now: Vec<&Shard> = lineage::children_to_lease(parent, &children, &leases);
        let all_now = now.len() == children.len();
        for child in now {
            st.adopted.insert(child.shard_id.clone());
            let parents: BTreeSet<String> = child.parents().map(str::to_string).collect();
            let lease = Lease::new(&child.shard_id, Checkpoint::TrimHorizon, parents);
            self.table.create_if_absent(&lease).await?;
        }
        for child in children {
            if !st.shards.iter().any(|s| s.shard_id == child.shard_id) {
                st.shards.push(child);
            }
        }
        Ok(complete && all_now)
    }

    /// Lists shards (when `full`) and leases, creates leases for new shards, deletes finished
    /// parents, takes the leases this worker should hold, and starts a worker for each.
    async fn sync(&self, st: &mut SyncState, full: bool) -> Result<(), ConnectorError> {
        if full {
            st.shards = self.source.list_shards().await?;
        }
        let (mut leases, mut beats) = split_heartbeats(self.table.list().await?);
        let first_start = st.first_sync && leases.is_empty();
        let mut by_key: HashMap<String, Lease> = leases
            .iter()
            .map(|l| (l.lease_key.clone(), l.clone()))
            .collect();
        let mut changed = false;
        // New leases only from a complete listing: with a partial view, a finished ancestor
        // whose lease was deleted could look new and be read again from the start.
        // Snapshot segments first: a worker that sees the stream's leases sees them too.
        changed |= self.ensure_segments(st, &leases, first_start).await?;
        let stream_shards: Vec<Shard> = match self.cfg.snapshot.mode {
            // The snapshot and nothing else: the stream's shards get no leases.
            SnapshotMode::InitialOnly => Vec::new(),
            _ if full => st
                .shards
                .iter()
                .filter(|s| !snapshot::is_segment(&s.shard_id))
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        for shard in lineage::shards_needing_leases(&stream_shards, &by_key) {
            let parents: BTreeSet<String> = shard.parents().map(str::to_string).collect();
            let lease = Lease::new(
                &shard.shard_id,
                lineage::initial_checkpoint(shard, first_start, self.cfg.source.starting_position),
                parents,
            );
            changed |= self.table.create_if_absent(&lease).await?;
        }
        let listed_now: HashSet<&str> = st.shards.iter().map(|s| s.shard_id.as_str()).collect();
        let finished = if full {
            lineage::finished_parents(&by_key, &listed_now)
        } else {
            Vec::new()
        };
        for parent in finished {
            match self.table.delete_finished(parent).await {
                Ok(()) => {
                    tracing::info!(connector = %self.cfg.name, shard = parent, "deleted the finished parent's lease");
                    changed = true;
                }
                Err(LeaseError::Lost(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if changed {
            (leases, beats) = split_heartbeats(self.table.list().await?);
            by_key = leases
                .iter()
                .map(|l| (l.lease_key.clone(), l.clone()))
                .collect();
        }
        let now = Instant::now();
        // Heartbeat rows are observed with the leases: an owner whose heartbeat moves is alive.
        st.observed
            .update(&[leases.as_slice(), beats.as_slice()].concat(), now);
        if full {
            self.delete_stale_heartbeats(st, &leases, &beats, now).await;
        }
        let failover = Duration::from_millis(self.cfg.leases.failover_ms);
        st.next_expiry = st
            .observed
            .next_expiry(&leases, &self.worker_id, failover)
            // Past expiries stay expired: the periodic scan handles what we did not take.
            .filter(|at| *at > now);
        let listed: HashSet<&str> = st.shards.iter().map(|s| s.shard_id.as_str()).collect();
        if full {
            // A segment is not a shard of the stream: unlisted (no snapshot configured now), it
            // is waiting, not trimmed.
            let unlisted = lineage::trimmed_unfinished(&leases, &listed);
            for gone in unlisted.into_iter().filter(|k| !snapshot::is_segment(k)) {
                if st.trimmed_reported.insert(gone.to_string()) {
                    events::data_loss(
                        &self.cfg.name,
                        gone,
                        &"the shard was trimmed past retention before it was fully read",
                    );
                }
            }
        }
        let shard_by_id: HashMap<&str, &Shard> =
            st.shards.iter().map(|s| (s.shard_id.as_str(), s)).collect();
        // The stream waits until every snapshot segment is done: then each item's snapshot
        // record is out before any of its changes.
        let snapshot_pending = self.snapshot_progress(&mut st.snapshot, &leases);
        let ready = |l: &Lease| {
            // A lease whose shard is no longer listed was trimmed: nothing left to read.
            (!snapshot_pending || snapshot::is_segment(&l.lease_key))
                && shard_by_id
                    .get(l.lease_key.as_str())
                    .is_some_and(|s| lineage::is_ready(s, &by_key, &listed, full))
        };
        let waiting = leases
            .iter()
            .filter(|l| {
                l.checkpoint != Checkpoint::ShardEnd
                    && listed.contains(l.lease_key.as_str())
                    && !ready(l)
            })
            .count();
        events::shards_waiting_on_parents(&self.cfg.name, waiting);
        let running: HashSet<String> = lock(&st.held).keys().cloned().collect();
        let view = WorkerView {
            me: &self.worker_id,
            running: &running,
            failover,
            max_leases: self.cfg.leases.max_leases_per_worker,
        };
        let mut plan = planning::plan(&leases, &view, &st.observed, now, ready);
        // The worker that finished a parent reads its free children at once, even above its
        // share: waiting for another worker's next scan would delay them by up to a renew
        // interval, and balancing moves them later if it must.
        let adopted = std::mem::take(&mut st.adopted);
        let planned: HashSet<String> = plan.all().map(|l| l.lease_key.clone()).collect();
        plan.take.extend(leases.iter().filter(|l| {
            adopted.contains(&l.lease_key)
                && l.lease_owner.is_none()
                && !planned.contains(&l.lease_key)
                && !running.contains(&l.lease_key)
                && ready(l)
        }));
        let stolen: HashSet<&str> = plan.steal.iter().map(|l| l.lease_key.as_str()).collect();
        for lease in plan.all() {
            let how = match lease.lease_owner.as_deref() {
                _ if stolen.contains(lease.lease_key.as_str()) => Acquired::Stolen,
                None => Acquired::Free,
                Some(o) if o == self.worker_id => Acquired::Own,
                Some(_) => Acquired::Expired,
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
                how.as_str(),
                &taken.checkpoint.as_string(),
            );
            let parent_ended_at = lease
                .parent_shard_ids
                .iter()
                .filter_map(|p| st.ended_at.get(p))
                .max()
                .copied();
            self.start_worker(st, taken, how, parent_ended_at);
        }
        events::shards_owned(&self.cfg.name, lock(&st.held).len());
        Ok(())
    }

    /// Creates the snapshot's segment leases when the connector starts for the first time
    /// (no leases at all), and any segment missing after a crash half-way through creating
    /// them. True when it created one. A connector that already has leases and none of a
    /// snapshot has a stream position: it takes no snapshot (the items it would read are
    /// older than changes it already delivered).
    async fn ensure_segments(
        &self,
        st: &mut SyncState,
        leases: &[Lease],
        first_start: bool,
    ) -> Result<bool, ConnectorError> {
        let cfg = &self.cfg.snapshot;
        if !cfg.enabled() {
            return Ok(false);
        }
        let existing: Vec<&Lease> = leases
            .iter()
            .filter(|l| snapshot::is_segment(&l.lease_key))
            .collect();
        if !first_start && existing.is_empty() {
            if !st.snapshot.skip_logged {
                tracing::info!(connector = %self.cfg.name,
                    "no snapshot: the connector already has leases, so it reads the stream from where it is (a snapshot is taken only on a first start)");
                st.snapshot.skip_logged = true;
            }
            return Ok(false);
        }
        if let Some(other) = existing
            .iter()
            .filter_map(|l| snapshot::parse_segment_id(&l.lease_key))
            .map(|(_, n)| n)
            .find(|n| *n != cfg.segments)
        {
            return Err(ConnectorError::Source(SourceError::Fatal(format!(
                "the snapshot in the lease table has {other} segments and snapshot.segments is {}: \
                 set segments = {other} until the snapshot is done",
                cfg.segments
            ))));
        }
        if existing.len() >= cfg.segments as usize {
            return Ok(false);
        }
        // Segments from an earlier start keep their time; a missing time reads the stream
        // from its start (never later than the snapshot).
        let started = if first_start {
            crate::lease::model::now_millis()
        } else {
            existing
                .iter()
                .filter_map(|l| l.snapshot_started_millis)
                .min()
                .unwrap_or(0)
        };
        let mut created = false;
        for i in 0..cfg.segments {
            let key = snapshot::segment_id(i, cfg.segments);
            if existing.iter().any(|l| l.lease_key == key) {
                continue;
            }
            let mut lease = Lease::new(&key, Checkpoint::TrimHorizon, BTreeSet::new());
            lease.snapshot_started_millis = Some(started);
            created |= self.table.create_if_absent(&lease).await?;
        }
        if created {
            tracing::info!(connector = %self.cfg.name, segments = cfg.segments, started_at_millis = started,
                "snapshot: segment leases created; the stream follows once every segment is done");
        }
        Ok(created)
    }

    /// Reads where the snapshot stands from the leases; true while the stream must wait.
    fn snapshot_progress(&self, state: &mut SnapshotState, leases: &[Lease]) -> bool {
        let cfg = &self.cfg.snapshot;
        if !cfg.enabled() {
            state.started_millis = None;
            return false;
        }
        let segments: Vec<&Lease> = leases
            .iter()
            .filter(|l| snapshot::is_segment(&l.lease_key))
            .collect();
        let done = segments
            .iter()
            .filter(|l| l.checkpoint == Checkpoint::ShardEnd)
            .count();
        events::snapshot_segments(&self.cfg.name, done, segments.len());
        state.started_millis = segments
            .iter()
            .map(|l| l.snapshot_started_millis.unwrap_or(0))
            .min();
        if let (Some(reader), Some(t0)) = (&self.snapshot_source, state.started_millis) {
            reader.set_started_millis(t0);
        }
        // A worker a segment was taken from may still be writing its last batch until a
        // failover time after the take (README, "Guarantees"): the stream waits that long
        // after the last segment is done, so no snapshot record lands after a stream record.
        let all_done = done == segments.len();
        let failover = Duration::from_millis(self.cfg.leases.failover_ms);
        // Long done (by the time of the last segment's checkpoint, with the clock margin for
        // the writer's clock): no wait, as for a worker started after the snapshot.
        let last_end = segments
            .iter()
            .filter_map(|l| l.checkpointed_at_millis)
            .max();
        let long_done = last_end.is_some_and(|end| {
            crate::lease::model::now_millis() - end
                > (failover.as_millis() as u64 + cfg.clock_margin_ms) as i64
        });
        let all_done_at = match (all_done, state.all_done_at) {
            (false, _) => None,
            (true, Some(at)) => Some(at),
            (true, None) if long_done => Instant::now().checked_sub(failover),
            (true, None) => Some(Instant::now()),
        };
        state.all_done_at = all_done_at;
        let pending =
            !segments.is_empty() && all_done_at.map_or(true, |at| at.elapsed() < failover);
        // Done, or skipped: a connector that already had leases takes no snapshot.
        state.only_and_done = cfg.mode == SnapshotMode::InitialOnly
            && ((all_done && !segments.is_empty()) || (segments.is_empty() && state.skip_logged));
        pending
    }

    /// Deletes heartbeat rows of workers gone for good: still for 100 failover times and
    /// owning no lease (pod names change with every deployment, and the rows would pile up).
    /// Conditional on the counter seen: a worker that came back keeps its row.
    async fn delete_stale_heartbeats(
        &self,
        st: &SyncState,
        leases: &[Lease],
        beats: &[Lease],
        now: Instant,
    ) {
        let gone_after = Duration::from_millis(self.cfg.leases.failover_ms) * 100;
        for beat in beats {
            let Some(worker) = beat.lease_owner.as_deref() else {
                continue;
            };
            let stale = worker != self.worker_id
                && st
                    .observed
                    .still_for(&beat.lease_key, now)
                    .is_some_and(|d| d >= gone_after)
                && !leases
                    .iter()
                    .any(|l| l.lease_owner.as_deref() == Some(worker));
            if stale {
                match self
                    .table
                    .delete_heartbeat(worker, Some(beat.lease_counter))
                    .await
                {
                    Ok(()) => {
                        tracing::info!(connector = %self.cfg.name, worker, "deleted the heartbeat row of a worker gone for good")
                    }
                    Err(e) => {
                        tracing::debug!(connector = %self.cfg.name, worker, %e, "heartbeat row not deleted")
                    }
                }
            }
        }
    }

    fn start_worker(
        &self,
        st: &mut SyncState,
        taken: Lease,
        acquired: Acquired,
        parent_ended_at: Option<Instant>,
    ) {
        let mut held_lease = HeldLease::new(
            self.table.clone(),
            &taken,
            &self.worker_id,
            Duration::from_millis(self.cfg.leases.failover_ms),
            Duration::from_millis(self.cfg.leases.safety_margin_ms),
        );
        if let Some(clock) = &self.heartbeat {
            held_lease = held_lease.with_heartbeat(clock.clone());
        }
        let held_lease = Arc::new(held_lease);
        lock(&st.held).insert(taken.lease_key.clone(), held_lease.clone());
        let shard_id = taken.lease_key.clone();
        let ctx = ShardContext {
            format: self.cfg.format,
            invoke_identity_arn: self.invoke_identity_arn.clone(),
            on_failure: self.on_failure.clone(),
            lanes: self.cfg.parallelization_factor,
            acquired,
            skip_before_millis: match (
                st.snapshot.started_millis,
                self.cfg.source.starting_position,
            ) {
                // The stream from a little before the snapshot began: what is older is in it.
                (Some(t0), _) => Some(t0 - self.cfg.snapshot.clock_margin_ms as i64),
                (None, StartingPosition::AtTimestamp(ms)) => Some(ms),
                _ => None,
            },
            filter: self.cfg.filter.clone(),
            poll_idle: Duration::from_millis(self.cfg.source.poll_idle_ms),
            poll_idle_max: Duration::from_millis(self.cfg.source.poll_idle_max_ms),
            max_records: self.cfg.source.max_records,
            source_backoff: source_backoff(&self.cfg),
            health: self.health.clone(),
            stop: st.workers_stop.child_token(),
            parent_ended_at,
            lag: self.lag.clone(),
            read_ahead: self.read_ahead.clone(),
            ..ShardContext::new(
                &self.cfg.name,
                self.source.clone(),
                self.sink.clone(),
                held_lease,
                taken,
            )
        };
        st.tasks
            .spawn(async move { (shard_id, shard_worker::run(ctx).await) });
    }
}

/// What a connector's control loop keeps between syncs.
/// The leases this worker holds, by shard: shared by the sync loop and the renewals.
type HeldLeases = Arc<std::sync::Mutex<HashMap<String, Arc<HeldLease>>>>;

fn lock(held: &HeldLeases) -> std::sync::MutexGuard<'_, HashMap<String, Arc<HeldLease>>> {
    held.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the renewal task works with.
struct Renewals {
    name: String,
    held: HeldLeases,
    interval: Duration,
    health: Arc<Health>,
    lag: Arc<ConnectorLag>,
    /// Renewal mode heartbeat: the row to write instead of renewing each lease.
    heartbeat: Option<Heartbeat>,
}

struct Heartbeat {
    clock: Arc<HeartbeatClock>,
    table: Arc<dyn LeaseStore>,
    worker_id: String,
}

/// Heartbeat rows apart from the leases (a table read lists both).
fn split_heartbeats(rows: Vec<Lease>) -> (Vec<Lease>, Vec<Lease>) {
    rows.into_iter().partition(|l| !is_heartbeat(&l.lease_key))
}

/// Renewal mode heartbeat, one round: the heartbeat row is written, then one consistent scan
/// confirms every held lease (still ours at our counter) or finds it lost. Some(error) when
/// the lease table failed.
async fn beat_and_confirm(
    name: &str,
    beat: &Heartbeat,
    leases: &[Arc<HeldLease>],
) -> Option<LeaseError> {
    let sent = Instant::now();
    if let Err(e) = beat.table.heartbeat(&beat.worker_id).await {
        return Some(e);
    }
    beat.clock.beat(sent);
    if leases.is_empty() {
        return None;
    }
    let sent = Instant::now();
    let rows = match beat.table.list().await {
        Ok(rows) => rows,
        Err(e) => return Some(e),
    };
    let by_key: HashMap<&str, &Lease> = rows.iter().map(|l| (l.lease_key.as_str(), l)).collect();
    for lease in leases {
        let row = by_key.get(lease.shard_id());
        let (owner, counter) =
            row.map_or((None, 0), |r| (r.lease_owner.as_deref(), r.lease_counter));
        if !lease.is_lost().await && !lease.confirm(owner, counter, sent) {
            events::lease_lost(name, lease.shard_id());
        }
    }
    None
}

/// Renews every held lease each `interval`, all at once (one that waits out its timeout does
/// not hold up the others), until `stop`; /readyz names a failing lease table and a shard that
/// is behind but has not moved for a while.
async fn renew_leases(r: Renewals, stop: CancellationToken) {
    let Renewals {
        name,
        held,
        interval,
        health,
        lag,
        heartbeat,
    } = r;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let leases: Vec<Arc<HeldLease>> = lock(&held).values().cloned().collect();
        let name = name.as_str();
        let renewals = leases.iter().map(|lease| async move {
            if lease.is_lost().await {
                // Reported once; its shard worker is ending.
                return None;
            }
            match lease.renew().await {
                Ok(()) => None,
                Err(LeaseError::Lost(k)) => {
                    events::lease_lost(name, &k);
                    None
                }
                Err(e) => {
                    if let Some(left_out) = events::may_warn("lease_renewal", name) {
                        tracing::warn!(connector = %name, shard = lease.shard_id(), %e, similar_left_out = left_out, "lease renewal failed; will retry");
                    }
                    Some(e)
                }
            }
        });
        let failed = match &heartbeat {
            Some(beat) => tokio::select! {
                _ = stop.cancelled() => return,
                failed = beat_and_confirm(name, beat, &leases) => {
                    if let (Some(e), Some(left_out)) = (&failed, events::may_warn("lease_renewal", name)) {
                        tracing::warn!(connector = %name, %e, similar_left_out = left_out, "heartbeat failed; will retry");
                    }
                    failed
                }
            },
            None => tokio::select! {
                _ = stop.cancelled() => return,
                results = futures_util::future::join_all(renewals) => results.into_iter().flatten().next(),
            },
        };
        // Renewals that fail stop the shards from sending once the lease is in doubt.
        match failed {
            Some(e) => health.degraded(name, "lease table", format!("renewal failed: {e}")),
            None => health.well(name, "lease table"),
        }
        // A shard behind that has read nothing for a while, with no failure to show for it.
        let stalls = lag.stalled(std::time::Instant::now());
        match stalls.first() {
            Some(st) => {
                let more = match stalls.len() {
                    1 => String::new(),
                    n => format!(" (and {} more shards)", n - 1),
                };
                let why = format!(
                    "shard {} is {} s behind and has read nothing for {} s{more}",
                    st.shard,
                    st.behind_ms / 1000,
                    st.still_for.as_secs()
                );
                health.degraded(name, "progress", why);
            }
            None => health.well(name, "progress"),
        }
    }
}

struct SyncState {
    workers_stop: CancellationToken,
    held: HeldLeases,
    tasks: JoinSet<(String, Result<ShardOutcome, ShardError>)>,
    observed: Observations,
    /// The last shard listing, plus children learned of at SHARD_END since.
    shards: Vec<Shard>,
    /// When this worker saw each parent end (for the child start delay metric).
    ended_at: HashMap<String, Instant>,
    first_sync: bool,
    /// When the next lease held by another worker expires if it is not renewed.
    next_expiry: Option<Instant>,
    /// Children of shards this worker just finished: it takes them first.
    adopted: HashSet<String>,
    /// Unfinished shards found trimmed away, already reported as data loss.
    trimmed_reported: HashSet<String>,
    snapshot: SnapshotState,
}

/// What the lease table says of the connector's snapshot, as of the last sync.
#[derive(Default)]
struct SnapshotState {
    /// When the snapshot began (the earliest segment's start): the stream is read from
    /// `clock_margin_ms` before it. None: no snapshot (not configured, or skipped).
    started_millis: Option<i64>,
    /// Mode initial_only, and nothing (more) to do.
    only_and_done: bool,
    /// When this worker first saw every segment done.
    all_done_at: Option<Instant>,
    /// The reason no snapshot is taken was logged.
    skip_logged: bool,
}
