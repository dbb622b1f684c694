//! The Kafka sink's notable events: each updates its metric (and logs where a person should
//! know). Handles are registered once per sink, so counting allocates nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram, Unit,
};
use rdkafka::statistics::Statistics;

pub struct KafkaEvents {
    connector: String,
    records: Counter,
    bytes: Counter,
    committed: Counter,
    aborted: Counter,
    commit_duration: Histogram,
    fenced: Counter,
    producers: Gauge,
    queue_messages: Gauge,
    queue_bytes: Gauge,
    broker_rtt: Histogram,
    /// Each live client's queue (by client.id): the gauges are their sums.
    queues: Mutex<HashMap<String, (u64, u64)>>,
}

impl KafkaEvents {
    pub fn new(connector: &str) -> Self {
        describe();
        let c = || connector.to_string();
        KafkaEvents {
            connector: c(),
            records: counter!("shardbridge_kafka_records_produced_total", "connector" => c()),
            bytes: counter!("shardbridge_kafka_bytes_produced_total", "connector" => c()),
            committed: counter!("shardbridge_kafka_transactions_total", "connector" => c(), "outcome" => "committed"),
            aborted: counter!("shardbridge_kafka_transactions_total", "connector" => c(), "outcome" => "aborted"),
            commit_duration: histogram!("shardbridge_kafka_commit_duration_seconds", "connector" => c()),
            fenced: counter!("shardbridge_kafka_producers_fenced_total", "connector" => c()),
            producers: gauge!("shardbridge_kafka_producers", "connector" => c()),
            queue_messages: gauge!("shardbridge_kafka_queue_messages", "connector" => c()),
            queue_bytes: gauge!("shardbridge_kafka_queue_bytes", "connector" => c()),
            broker_rtt: histogram!("shardbridge_kafka_broker_rtt_seconds", "connector" => c()),
            queues: Mutex::new(HashMap::new()),
        }
    }

    /// Records produced and acknowledged (committed, for transactions).
    pub fn produced(&self, records: usize, bytes: usize) {
        self.records.increment(records as u64);
        self.bytes.increment(bytes as u64);
    }

    /// A transaction committed; `took`: from its begin to the commit's answer.
    pub fn committed(&self, took: Duration) {
        self.committed.increment(1);
        self.commit_duration.record(took.as_secs_f64());
    }

    pub fn aborted(&self, shard: &str, why: &str) {
        self.aborted.increment(1);
        tracing::warn!(connector = %self.connector, shard, why, "kafka transaction aborted; the batch is sent again");
    }

    pub fn fenced(&self, shard: &str) {
        self.fenced.increment(1);
        tracing::warn!(connector = %self.connector, shard, "kafka producer fenced: another worker took the shard over");
    }

    pub fn producer_opened(&self) {
        self.producers.increment(1.0);
    }

    pub fn producer_closed(&self, client: &str) {
        self.producers.decrement(1.0);
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        queues.remove(client);
        self.publish(&queues);
    }

    /// librdkafka's statistics of one client.
    pub fn statistics(&self, s: &Statistics) {
        for broker in s.brokers.values() {
            if let Some(rtt) = broker.rtt.as_ref().filter(|w| w.cnt > 0) {
                // librdkafka reports microseconds.
                self.broker_rtt.record(rtt.avg as f64 / 1e6);
            }
        }
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        queues.insert(s.client_id.clone(), (s.msg_cnt, s.msg_size));
        self.publish(&queues);
    }

    fn publish(&self, queues: &HashMap<String, (u64, u64)>) {
        let (messages, bytes) = queues
            .values()
            .fold((0u64, 0u64), |(m, b), (qm, qb)| (m + qm, b + qb));
        self.queue_messages.set(messages as f64);
        self.queue_bytes.set(bytes as f64);
    }
}

fn describe() {
    describe_counter!(
        "shardbridge_kafka_records_produced_total",
        "Records the Kafka sink produced (committed, with transactions)"
    );
    describe_counter!(
        "shardbridge_kafka_bytes_produced_total",
        Unit::Bytes,
        "Record value bytes the Kafka sink produced"
    );
    describe_counter!(
        "shardbridge_kafka_transactions_total",
        "Kafka transactions by outcome (committed, aborted)"
    );
    describe_histogram!(
        "shardbridge_kafka_commit_duration_seconds",
        Unit::Seconds,
        "Time from a transaction's begin to its commit"
    );
    describe_counter!(
        "shardbridge_kafka_producers_fenced_total",
        "Transactional producers fenced by a newer owner of their shard"
    );
    describe_gauge!(
        "shardbridge_kafka_producers",
        "Kafka producers open (one per shard being written, with transactions)"
    );
    describe_gauge!(
        "shardbridge_kafka_queue_messages",
        "Messages in the Kafka producers' queues (librdkafka statistics)"
    );
    describe_gauge!(
        "shardbridge_kafka_queue_bytes",
        Unit::Bytes,
        "Bytes in the Kafka producers' queues (librdkafka statistics)"
    );
    describe_histogram!(
        "shardbridge_kafka_broker_rtt_seconds",
        Unit::Seconds,
        "Average broker round-trip time per statistics interval (librdkafka statistics)"
    );
}
