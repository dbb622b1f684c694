//! The Kinesis sink's notable events: each updates its metric (and logs where a person should
//! know). The metric handles are registered once per sink, so counting allocates nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_histogram, histogram, Counter, Histogram, Unit};

pub struct KinesisEvents {
    connector: String,
    records_put: Counter,
    bytes_put: Counter,
    calls: Counter,
    put_duration: Histogram,
    partial_failures: Counter,
    throttles: Counter,
    records_retried: Counter,
    reconciled_found: Counter,
    reconciled_resent: Counter,
    oversize_fail: Counter,
    oversize_skip: Counter,
    /// By error code (a bounded set; registered on first use).
    failed_records: Mutex<HashMap<&'static str, Counter>>,
}

impl KinesisEvents {
    pub fn new(connector: &str) -> Self {
        describe();
        let c = || connector.to_string();
        KinesisEvents {
            connector: c(),
            records_put: counter!("shardbridge_kinesis_records_put_total", "connector" => c()),
            bytes_put: counter!("shardbridge_kinesis_bytes_put_total", "connector" => c()),
            calls: counter!("shardbridge_kinesis_put_records_calls_total", "connector" => c()),
            put_duration: histogram!("shardbridge_kinesis_put_duration_seconds", "connector" => c()),
            partial_failures: counter!("shardbridge_kinesis_partial_failures_total", "connector" => c()),
            throttles: counter!("shardbridge_kinesis_throttles_total", "connector" => c()),
            records_retried: counter!("shardbridge_kinesis_records_retried_total", "connector" => c()),
            reconciled_found: counter!("shardbridge_kinesis_records_reconciled_total", "connector" => c(), "result" => "found"),
            reconciled_resent: counter!("shardbridge_kinesis_records_reconciled_total", "connector" => c(), "result" => "resent"),
            oversize_fail: counter!("shardbridge_kinesis_records_oversize_total", "connector" => c(), "action" => "fail"),
            oversize_skip: counter!("shardbridge_kinesis_records_oversize_total", "connector" => c(), "action" => "skip"),
            failed_records: Mutex::new(HashMap::new()),
        }
    }

    /// A PutRecords call was answered (whatever the answer).
    pub fn call_answered(&self, took: Duration) {
        self.put_duration.record(took.as_secs_f64());
        self.calls.increment(1);
    }

    /// Records a call wrote, and how many of its records failed (each is sent again).
    pub fn records_put(&self, records: usize, bytes: usize, failed: usize) {
        self.records_put.increment(records as u64);
        self.bytes_put.increment(bytes as u64);
        if failed > 0 {
            self.partial_failures.increment(1);
            self.records_retried.increment(failed as u64);
        }
    }

    /// One record of a call failed with `code`.
    pub fn record_failed(&self, code: &str) {
        let code: &'static str = match code {
            "ProvisionedThroughputExceededException" => "ProvisionedThroughputExceededException",
            "KMSThrottlingException" => "KMSThrottlingException",
            "ThrottlingException" => "ThrottlingException",
            "InternalFailure" => "InternalFailure",
            // Bounded label values: codes Kinesis does not document go under one name.
            _ => "other",
        };
        let mut by_code = self
            .failed_records
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        by_code
            .entry(code)
            .or_insert_with(|| {
                counter!("shardbridge_kinesis_failed_records_total", "connector" => self.connector.clone(), "code" => code)
            })
            .increment(1);
    }

    /// A whole call was refused for throughput.
    pub fn call_throttled(&self) {
        self.throttles.increment(1);
    }

    /// Records of a whole failed call, sent again.
    pub fn records_retried(&self, n: usize) {
        self.records_retried.increment(n as u64);
    }

    pub fn oversize_failed(&self) {
        self.oversize_fail.increment(1);
    }

    pub fn oversize_skipped(&self, what: &str) {
        self.oversize_skip.increment(1);
        tracing::warn!(connector = %self.connector, "{what}: skipped (on_oversize = \"skip\")");
    }

    /// A pending intent was reconciled with the target stream.
    pub fn reconciled(
        &self,
        shard: &str,
        found: usize,
        resent: usize,
        target_records_read: usize,
        took: Duration,
    ) {
        self.reconciled_found.increment(found as u64);
        self.reconciled_resent.increment(resent as u64);
        tracing::info!(
            connector = %self.connector,
            shard,
            found,
            resent,
            target_records_read,
            took_ms = took.as_millis() as u64,
            "reconciled a pending intent with the target stream"
        );
    }
}

fn describe() {
    describe_counter!(
        "shardbridge_kinesis_records_put_total",
        Unit::Count,
        "Records acknowledged by Kinesis PutRecords."
    );
    describe_counter!(
        "shardbridge_kinesis_bytes_put_total",
        Unit::Bytes,
        "Data plus partition key bytes acknowledged by Kinesis."
    );
    describe_counter!(
        "shardbridge_kinesis_put_records_calls_total",
        Unit::Count,
        "PutRecords calls answered."
    );
    describe_counter!(
        "shardbridge_kinesis_partial_failures_total",
        Unit::Count,
        "PutRecords calls that failed some of their records."
    );
    describe_counter!(
        "shardbridge_kinesis_failed_records_total",
        Unit::Count,
        "Records a PutRecords call did not write, by error code (each is retried)."
    );
    describe_counter!(
        "shardbridge_kinesis_throttles_total",
        Unit::Count,
        "Whole PutRecords calls refused for throughput."
    );
    describe_counter!(
        "shardbridge_kinesis_records_retried_total",
        Unit::Count,
        "Records sent again after a failure."
    );
    describe_counter!(
        "shardbridge_kinesis_records_reconciled_total",
        Unit::Count,
        "Records of a pending intent: found already written, or re-sent."
    );
    describe_counter!(
        "shardbridge_kinesis_records_oversize_total",
        Unit::Count,
        "Records over the 1 MiB limit, by action (fail, skip)."
    );
    describe_histogram!(
        "shardbridge_kinesis_put_duration_seconds",
        Unit::Seconds,
        "PutRecords latency."
    );
}
