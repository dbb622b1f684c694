//! One function per notable event: each updates its metric (and logs where a person should
//! know), so logs and metrics never drift apart.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};

pub fn describe() {
    describe_counter!(
        "shardbridge_source_records_read_total",
        Unit::Count,
        "Change records read from the source."
    );
    describe_counter!(
        "shardbridge_source_bytes_read_total",
        Unit::Bytes,
        "Size of the records read (the stream's SizeBytes)."
    );
    describe_counter!(
        "shardbridge_source_get_records_calls_total",
        Unit::Count,
        "GetRecords calls made."
    );
    describe_counter!(
        "shardbridge_source_empty_polls_total",
        Unit::Count,
        "GetRecords calls that returned no record on an open shard (an idle shard's cost)."
    );
    describe_counter!(
        "shardbridge_source_get_records_errors_total",
        Unit::Count,
        "Failed source calls, by error class."
    );
    describe_counter!(
        "shardbridge_source_data_loss_total",
        Unit::Count,
        "Times records were trimmed before they could be read."
    );
    describe_counter!(
        "shardbridge_source_records_skipped_total",
        Unit::Count,
        "Records read but not forwarded, by reason."
    );
    describe_gauge!(
        "shardbridge_source_iterator_age_milliseconds",
        Unit::Milliseconds,
        "Milliseconds behind the newest record, per connector: the largest over its shards (Kinesis MillisBehindLatest, else the age of the newest record read; 0 when caught up)."
    );
    describe_counter!(
        "shardbridge_sink_records_written_total",
        Unit::Count,
        "Records made durable by the sink."
    );
    describe_counter!(
        "shardbridge_sink_bytes_written_total",
        Unit::Bytes,
        "Bytes made durable by the sink."
    );
    describe_counter!(
        "shardbridge_sink_batches_written_total",
        Unit::Count,
        "Batches made durable by the sink."
    );
    describe_counter!(
        "shardbridge_sink_errors_total",
        Unit::Count,
        "Failed sink writes, by class."
    );
    describe_histogram!(
        "shardbridge_end_to_end_latency_seconds",
        Unit::Seconds,
        "From a record's arrival in the source stream to the sink's acknowledgement of its batch, per record."
    );
    describe_histogram!(
        "shardbridge_sink_write_duration_seconds",
        Unit::Seconds,
        "Time to make one batch durable."
    );
    describe_counter!(
        "shardbridge_checkpoint_writes_total",
        Unit::Count,
        "Checkpoints written to the lease table."
    );
    describe_counter!(
        "shardbridge_lease_table_calls_total",
        Unit::Count,
        "Lease table calls, by operation and result."
    );
    describe_counter!(
        "shardbridge_retry_wait_milliseconds_total",
        Unit::Milliseconds,
        "Time spent waiting before retries and under rate limits, by reason."
    );
    describe_gauge!(
        "shardbridge_connector_running",
        Unit::Count,
        "1 while the connector runs."
    );
    describe_counter!(
        "shardbridge_http_invocations_total",
        Unit::Count,
        "POSTs to the http sink's handler, by result (success, partial, error, timeout)."
    );
    describe_counter!(
        "shardbridge_http_records_reported_failed_total",
        Unit::Count,
        "Records the handler named in batchItemFailures."
    );
    describe_histogram!(
        "shardbridge_http_invocation_duration_seconds",
        Unit::Seconds,
        "Time from sending an invocation to its answer."
    );
    describe_counter!(
        "shardbridge_http_payload_bytes_total",
        Unit::Bytes,
        "Bytes of the events POSTed to the handler, retries included."
    );
    describe_counter!(
        "shardbridge_http_bisections_total",
        Unit::Count,
        "Failed parts of a batch split in two before being sent again (bisect_on_error)."
    );
    describe_counter!(
        "shardbridge_read_ahead_skipped_total",
        Unit::Count,
        "Pages not fetched ahead (while the batch before them was written) because the process's read_ahead_bytes budget was in use: read after the write instead."
    );
    describe_counter!(
        "shardbridge_snapshot_items_read_total",
        Unit::Count,
        "Items the table snapshot's Scan read (a page read again after a crash counts again)."
    );
    describe_counter!(
        "shardbridge_snapshot_items_delivered_total",
        Unit::Count,
        "Snapshot records the sink accepted."
    );
    describe_counter!(
        "shardbridge_snapshot_scan_throttles_total",
        Unit::Count,
        "Scan calls of the snapshot that DynamoDB throttled (retried after a back-off)."
    );
    describe_counter!(
        "shardbridge_snapshot_read_capacity_units_total",
        Unit::Count,
        "Read capacity units the snapshot's Scan used: per page, the larger of what DynamoDB reports and the size of the items read (4 KB units, halved when eventually consistent), rounded up."
    );
    describe_gauge!(
        "shardbridge_snapshot_segments_done",
        Unit::Count,
        "Snapshot segments finished, as the lease table shows them."
    );
    describe_gauge!(
        "shardbridge_snapshot_segments",
        Unit::Count,
        "Snapshot segments of the connector (0 when it takes no snapshot)."
    );
    describe_gauge!(
        "shardbridge_read_ahead_bytes",
        Unit::Bytes,
        "Bytes of the process's read-ahead budget reserved by pages fetched ahead and not yet taken in."
    );
    describe_gauge!(
        "shardbridge_lane_records_in_flight",
        Unit::Count,
        "Records handed to the sink in a lane (parallelization_factor) and not yet acknowledged, over the connector's shards."
    );
    describe_gauge!(
        "shardbridge_lane_lag_milliseconds",
        Unit::Milliseconds,
        "Per lane, how long before its last acknowledgement its newest record entered the stream."
    );
    describe_gauge!(
        "shardbridge_shards_owned",
        Unit::Count,
        "Shards this worker holds a lease on."
    );
    describe_gauge!(
        "shardbridge_shards_waiting_on_parents",
        Unit::Count,
        "Leased shards whose parent shards are not finished yet."
    );
    describe_counter!(
        "shardbridge_intents_replayed_total",
        "Batches of a pending intent written again by a new owner."
    );
    describe_counter!(
        "shardbridge_leases_acquired_total",
        "Leases taken, by how: free, own, expired or stolen."
    );
    describe_counter!(
        "shardbridge_leases_released_total",
        "Leases given back on a clean stop."
    );
    describe_counter!(
        "shardbridge_leases_lost_total",
        "Leases found taken by another worker."
    );
    describe_counter!(
        "shardbridge_on_failure_records_total",
        Unit::Count,
        "Records set aside to the failure destination, by condition."
    );
    describe_counter!(
        "shardbridge_on_failure_batches_total",
        Unit::Count,
        "OnFailure documents delivered to the failure destination, by condition."
    );
    describe_counter!(
        "shardbridge_on_failure_errors_total",
        Unit::Count,
        "Failed deliveries to the failure destination (retried)."
    );
    describe_gauge!(
        "shardbridge_seconds_since_success",
        Unit::Seconds,
        "Seconds since the last successful call to a dependency (source, sink, lease_table) of the connector, or since it started; measured when /metrics is read."
    );
    describe_gauge!(
        "shardbridge_seconds_since_checkpoint",
        Unit::Seconds,
        "Seconds since the connector last wrote a checkpoint, or since it started (an idle stream writes none)."
    );
    describe_histogram!(
        "shardbridge_lineage_child_start_delay_seconds",
        Unit::Seconds,
        "From a parent's SHARD_END to its child's first read on the same worker."
    );
}

/// Warnings that repeat while an outage lasts are logged at most once per `WARN_EVERY` per
/// kind and connector; the next one logged says how many were left out. Metrics count every
/// one.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Per (kind, connector): when a warning was last logged, and how many were left out since.
type Warned = BTreeMap<(&'static str, String), (Instant, u64)>;

static WARNED: Mutex<Warned> = Mutex::new(BTreeMap::new());

/// Whether a warning of `kind` for `connector` is logged now: `Some(n)` with the number left
/// out since the last one logged, or None (left out, counted).
pub fn may_warn(kind: &'static str, connector: &str) -> Option<u64> {
    let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    match warned.get_mut(&(kind, connector.to_string())) {
        Some((last, left_out)) if now.duration_since(*last) < WARN_EVERY => {
            *left_out += 1;
            None
        }
        Some((last, left_out)) => {
            *last = now;
            Some(std::mem::take(left_out))
        }
        None => {
            warned.insert((kind, connector.to_string()), (now, 0));
            Some(0)
        }
    }
}

/// What a connector depends on, for `shardbridge_seconds_since_success`; `Checkpoint` is kept
/// beside them for `shardbridge_seconds_since_checkpoint`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dependency {
    Source = 0,
    Sink = 1,
    LeaseTable = 2,
    Checkpoint = 3,
}

const DEPENDENCIES: [(Dependency, &str); 3] = [
    (Dependency::Source, "source"),
    (Dependency::Sink, "sink"),
    (Dependency::LeaseTable, "lease_table"),
];

/// Per connector, when each dependency last answered well.
static LAST_SUCCESS: Mutex<BTreeMap<String, [Instant; 4]>> = Mutex::new(BTreeMap::new());

fn succeeded(connector: &str, what: Dependency) {
    let mut all = LAST_SUCCESS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(times) = all.get_mut(connector) {
        times[what as usize] = Instant::now();
    }
}

/// A connector starts: its counters exist at 0 (so rates and alerts work before the first
/// event) and its dependencies count as well since now.
pub fn connector_registered(connector: &str) {
    let c = || connector.to_string();
    // Literal names, one call each: tests/docs.rs matches them against docs/metrics.md.
    counter!("shardbridge_source_records_read_total", "connector" => c()).increment(0);
    counter!("shardbridge_source_bytes_read_total", "connector" => c()).increment(0);
    counter!("shardbridge_source_get_records_calls_total", "connector" => c()).increment(0);
    counter!("shardbridge_source_empty_polls_total", "connector" => c()).increment(0);
    counter!("shardbridge_source_data_loss_total", "connector" => c()).increment(0);
    counter!("shardbridge_sink_records_written_total", "connector" => c()).increment(0);
    counter!("shardbridge_sink_bytes_written_total", "connector" => c()).increment(0);
    counter!("shardbridge_sink_batches_written_total", "connector" => c()).increment(0);
    counter!("shardbridge_checkpoint_writes_total", "connector" => c()).increment(0);
    counter!("shardbridge_intents_replayed_total", "connector" => c()).increment(0);
    counter!("shardbridge_leases_released_total", "connector" => c()).increment(0);
    counter!("shardbridge_leases_lost_total", "connector" => c()).increment(0);
    for class in [
        "expired_iterator",
        "trimmed_data",
        "throttled",
        "stream_not_found",
        "stream_disabled",
        "transient",
        "fatal",
    ] {
        counter!("shardbridge_source_get_records_errors_total", "connector" => c(), "class" => class).increment(0);
    }
    for class in ["transient", "fatal"] {
        counter!("shardbridge_sink_errors_total", "connector" => c(), "class" => class)
            .increment(0);
    }
    for reason in ["filtered", "before_starting_position"] {
        counter!("shardbridge_source_records_skipped_total", "connector" => c(), "reason" => reason).increment(0);
    }
    counter!("shardbridge_on_failure_errors_total", "connector" => c()).increment(0);
    for condition in [
        "RetryAttemptsExhausted",
        "RecordAgeExceeded",
        "RecordTooLarge",
    ] {
        counter!("shardbridge_on_failure_records_total", "connector" => c(), "condition" => condition).increment(0);
        counter!("shardbridge_on_failure_batches_total", "connector" => c(), "condition" => condition).increment(0);
    }
    for how in ["free", "own", "expired", "stolen"] {
        counter!("shardbridge_leases_acquired_total", "connector" => c(), "how" => how)
            .increment(0);
    }
    let now = Instant::now();
    LAST_SUCCESS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(connector.to_string(), [now; 4]);
}

/// Sets the seconds-since gauges from the last successes: called when /metrics is read, so
/// the figures are current without a timer.
pub fn publish_staleness() {
    let all = LAST_SUCCESS.lock().unwrap_or_else(|p| p.into_inner());
    for (connector, times) in all.iter() {
        for (what, label) in DEPENDENCIES {
            gauge!("shardbridge_seconds_since_success", "connector" => connector.clone(), "dependency" => label)
                .set(times[what as usize].elapsed().as_secs_f64());
        }
        gauge!("shardbridge_seconds_since_checkpoint", "connector" => connector.clone()).set(
            times[Dependency::Checkpoint as usize]
                .elapsed()
                .as_secs_f64(),
        );
    }
}

/// The lease table answered (a refused condition too).
pub fn lease_table_answered(connector: &str) {
    succeeded(connector, Dependency::LeaseTable);
}

/// The sink answered well outside a batch write (opening a shard, say).
pub fn sink_ok(connector: &str) {
    succeeded(connector, Dependency::Sink);
}

pub fn records_read(connector: &str, records: usize, bytes: u64) {
    succeeded(connector, Dependency::Source);
    counter!("shardbridge_source_get_records_calls_total", "connector" => connector.to_string())
        .increment(1);
    counter!("shardbridge_source_records_read_total", "connector" => connector.to_string())
        .increment(records as u64);
    counter!("shardbridge_source_bytes_read_total", "connector" => connector.to_string())
        .increment(bytes);
}

/// A GetRecords answer with no record on an open shard.
pub fn empty_poll(connector: &str) {
    counter!("shardbridge_source_empty_polls_total", "connector" => connector.to_string())
        .increment(1);
}

pub fn source_error(
    connector: &str,
    shard: &str,
    class: &'static str,
    error: &dyn std::fmt::Display,
) {
    if let Some(left_out) = may_warn("source_error", connector) {
        tracing::warn!(connector, shard, class, %error, similar_left_out = left_out, "source call failed");
    }
    counter!("shardbridge_source_get_records_errors_total", "connector" => connector.to_string(), "class" => class).increment(1);
}

pub fn data_loss(connector: &str, shard: &str, error: &dyn std::fmt::Display) {
    tracing::error!(connector, shard, %error, "records were trimmed before they were read: data loss; continuing from the trim horizon");
    counter!("shardbridge_source_data_loss_total", "connector" => connector.to_string())
        .increment(1);
}

pub fn records_skipped(connector: &str, reason: &'static str, n: usize) {
    counter!("shardbridge_source_records_skipped_total", "connector" => connector.to_string(), "reason" => reason).increment(n as u64);
}

/// `delta` records entered (positive) or left (negative) a lane's sink calls.
/// A shard wanted to fetch its next page while its batch is written: whether the process's
/// read-ahead budget had room, and how much of it is reserved now.
pub fn read_ahead(connector: &str, reserved: bool, in_use: u64) {
    if !reserved {
        counter!("shardbridge_read_ahead_skipped_total", "connector" => connector.to_string())
            .increment(1);
    }
    read_ahead_in_use(in_use);
}

/// A connector with a snapshot: its series exist (at zero) from the start.
pub fn snapshot_registered(connector: &str) {
    let c = || connector.to_string();
    counter!("shardbridge_snapshot_items_read_total", "connector" => c()).increment(0);
    counter!("shardbridge_snapshot_items_delivered_total", "connector" => c()).increment(0);
    counter!("shardbridge_snapshot_scan_throttles_total", "connector" => c()).increment(0);
    counter!("shardbridge_snapshot_read_capacity_units_total", "connector" => c()).increment(0);
}

/// A Scan page of a snapshot segment: `items` read for `units` of read capacity.
pub fn snapshot_page(connector: &str, items: usize, units: f64) {
    let c = || connector.to_string();
    counter!("shardbridge_snapshot_items_read_total", "connector" => c()).increment(items as u64);
    // A counter counts whole units: a page's half units are rounded up.
    counter!("shardbridge_snapshot_read_capacity_units_total", "connector" => c())
        .increment(units.ceil() as u64);
}

pub fn snapshot_scan_throttled(connector: &str) {
    counter!("shardbridge_snapshot_scan_throttles_total", "connector" => connector.to_string())
        .increment(1);
}

/// Snapshot records a shard worker handed to the sink and the sink accepted.
pub fn snapshot_items_delivered(connector: &str, n: usize) {
    counter!("shardbridge_snapshot_items_delivered_total", "connector" => connector.to_string())
        .increment(n as u64);
}

/// Snapshot segments finished, as the lease table says (every worker reports what it sees).
pub fn snapshot_segments(connector: &str, done: usize, total: usize) {
    gauge!("shardbridge_snapshot_segments_done", "connector" => connector.to_string())
        .set(done as f64);
    gauge!("shardbridge_snapshot_segments", "connector" => connector.to_string()).set(total as f64);
}

/// How much of the process's read-ahead budget is reserved, after a page was taken in.
pub fn read_ahead_in_use(in_use: u64) {
    gauge!("shardbridge_read_ahead_bytes").set(in_use as f64);
}

pub fn lane_in_flight(connector: &str, lane: u8, delta: f64) {
    gauge!("shardbridge_lane_records_in_flight", "connector" => connector.to_string(), "lane" => lane.to_string())
        .increment(delta);
}

/// A lane's call was acknowledged; its newest record entered the stream `millis` before.
pub fn lane_lag(connector: &str, lane: u8, millis: i64) {
    gauge!("shardbridge_lane_lag_milliseconds", "connector" => connector.to_string(), "lane" => lane.to_string())
        .set(millis.max(0) as f64);
}

pub fn iterator_age(connector: &str, millis: i64) {
    gauge!("shardbridge_source_iterator_age_milliseconds", "connector" => connector.to_string())
        .set(millis.max(0) as f64);
}

/// The batch's records are durable at the sink now: how long each took since it entered the
/// stream (records whose arrival time is unknown are left out).
pub fn records_delivered(connector: &str, created_millis: impl Iterator<Item = i64>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let latency =
        histogram!("shardbridge_end_to_end_latency_seconds", "connector" => connector.to_string());
    for created in created_millis {
        // Clocks differ a little: never negative.
        latency.record((now - created).max(0) as f64 / 1000.0);
    }
}

pub fn batch_written(connector: &str, records: usize, bytes: usize, took: Duration) {
    succeeded(connector, Dependency::Sink);
    counter!("shardbridge_sink_records_written_total", "connector" => connector.to_string())
        .increment(records as u64);
    counter!("shardbridge_sink_bytes_written_total", "connector" => connector.to_string())
        .increment(bytes as u64);
    counter!("shardbridge_sink_batches_written_total", "connector" => connector.to_string())
        .increment(1);
    histogram!("shardbridge_sink_write_duration_seconds", "connector" => connector.to_string())
        .record(took.as_secs_f64());
}

pub fn sink_error(
    connector: &str,
    shard: &str,
    class: &'static str,
    error: &dyn std::fmt::Display,
) {
    if let Some(left_out) = may_warn("sink_error", connector) {
        tracing::warn!(connector, shard, class, %error, similar_left_out = left_out, "sink write failed");
    }
    counter!("shardbridge_sink_errors_total", "connector" => connector.to_string(), "class" => class).increment(1);
}

/// A function sink's failed part of a batch was split in two (BisectBatchOnFunctionError).
pub fn bisected(connector: &str, shard: &str) {
    tracing::info!(
        connector,
        shard,
        "the function failed a part of the batch; bisecting it"
    );
    counter!("shardbridge_http_bisections_total", "connector" => connector.to_string())
        .increment(1);
}

/// Records delivered to the failure destination instead of the sink.
pub fn set_aside(connector: &str, shard: &str, condition: &'static str, records: usize) {
    tracing::warn!(
        connector,
        shard,
        condition,
        records,
        "records set aside to the failure destination"
    );
    counter!("shardbridge_on_failure_records_total", "connector" => connector.to_string(), "condition" => condition).increment(records as u64);
    counter!("shardbridge_on_failure_batches_total", "connector" => connector.to_string(), "condition" => condition).increment(1);
}

pub fn on_failure_error(connector: &str, shard: &str, error: &str) {
    if let Some(left_out) = may_warn("on_failure_error", connector) {
        tracing::warn!(connector, shard, %error, similar_left_out = left_out, "failure destination refused a document; retrying");
    }
    counter!("shardbridge_on_failure_errors_total", "connector" => connector.to_string())
        .increment(1);
}

pub fn checkpoint_written(connector: &str) {
    succeeded(connector, Dependency::Checkpoint);
    counter!("shardbridge_checkpoint_writes_total", "connector" => connector.to_string())
        .increment(1);
}

pub fn lease_table_call(connector: &str, operation: &'static str, ok: bool) {
    if ok {
        succeeded(connector, Dependency::LeaseTable);
    }
    counter!(
        "shardbridge_lease_table_calls_total",
        "connector" => connector.to_string(),
        "operation" => operation,
        "result" => if ok { "ok" } else { "error" }
    )
    .increment(1);
}

/// Every wait before a retry goes through here, so back-off is visible.
pub fn retry_wait(connector: &str, reason: &'static str, wait: Duration) {
    counter!("shardbridge_retry_wait_milliseconds_total", "connector" => connector.to_string(), "reason" => reason)
        .increment(wait.as_millis() as u64);
}

/// Waits imposed by our own API rate limits (not tied to one connector).
pub fn rate_limit_wait(operation: &'static str, wait: Duration) {
    counter!("shardbridge_retry_wait_milliseconds_total", "connector" => "", "reason" => operation)
        .increment(wait.as_millis() as u64);
}

pub fn connector_running(connector: &str, running: bool) {
    gauge!("shardbridge_connector_running", "connector" => connector.to_string()).set(if running {
        1.0
    } else {
        0.0
    });
}

pub fn shards_owned(connector: &str, n: usize) {
    gauge!("shardbridge_shards_owned", "connector" => connector.to_string()).set(n as f64);
}

/// `how`: "free", "own" (left by an earlier run of this worker), "expired" or "stolen".
pub fn lease_acquired(connector: &str, shard: &str, how: &'static str, checkpoint: &str) {
    tracing::info!(connector, shard, how, checkpoint, "took lease");
    counter!("shardbridge_leases_acquired_total", "connector" => connector.to_string(), "how" => how).increment(1);
}

pub fn lease_released(connector: &str, shard: &str) {
    tracing::info!(connector, shard, "released lease");
    counter!("shardbridge_leases_released_total", "connector" => connector.to_string())
        .increment(1);
}

pub fn lease_lost(connector: &str, shard: &str) {
    tracing::warn!(connector, shard, "lease lost to another worker");
    counter!("shardbridge_leases_lost_total", "connector" => connector.to_string()).increment(1);
}

pub fn shards_waiting_on_parents(connector: &str, n: usize) {
    gauge!("shardbridge_shards_waiting_on_parents", "connector" => connector.to_string())
        .set(n as f64);
}

pub fn child_start_delay(connector: &str, shard: &str, delay: Duration) {
    tracing::info!(
        connector,
        shard,
        delay_ms = delay.as_millis() as u64,
        "child shard read after its parent ended"
    );
    histogram!("shardbridge_lineage_child_start_delay_seconds", "connector" => connector.to_string()).record(delay.as_secs_f64());
}

pub fn intent_replayed(connector: &str, shard: &str) {
    tracing::info!(
        connector,
        shard,
        "wrote the batch of a pending intent again"
    );
    counter!("shardbridge_intents_replayed_total", "connector" => connector.to_string())
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_warnings_are_left_out_and_counted() {
        assert_eq!(may_warn("test_repeat", "a"), Some(0));
        assert_eq!(may_warn("test_repeat", "a"), None);
        assert_eq!(may_warn("test_repeat", "a"), None);
        // Another connector or kind has its own allowance.
        assert_eq!(may_warn("test_repeat", "b"), Some(0));
        assert_eq!(may_warn("test_other", "a"), Some(0));
        // Once WARN_EVERY has passed, the next one says how many were left out.
        WARNED
            .lock()
            .unwrap()
            .get_mut(&("test_repeat", "a".to_string()))
            .unwrap()
            .0 -= WARN_EVERY;
        assert_eq!(may_warn("test_repeat", "a"), Some(2));
        assert_eq!(may_warn("test_repeat", "a"), None);
    }
}
