//! The DynamoDB sink's notable events. The metric handles are registered once per sink.

use metrics::{counter, describe_counter, Counter, Unit};

pub struct DynamoDbEvents {
    items: Counter,
    superseded: Counter,
    throttled: Counter,
}

impl DynamoDbEvents {
    pub fn new(connector: &str) -> Self {
        describe();
        let c = || connector.to_string();
        DynamoDbEvents {
            items: counter!("shardbridge_dynamodb_items_written_total", "connector" => c()),
            superseded: counter!("shardbridge_dynamodb_changes_superseded_total", "connector" => c()),
            throttled: counter!("shardbridge_dynamodb_throttles_total", "connector" => c()),
        }
    }

    /// `n` puts and deletes acknowledged by the target table.
    pub fn written(&self, n: usize) {
        self.items.increment(n as u64);
    }

    /// `n` changes not written because a later change of the same item in the batch was.
    pub fn superseded(&self, n: usize) {
        self.superseded.increment(n as u64);
    }

    /// A call throttled (`n` of its items left unprocessed, or 0 when it was refused whole).
    pub fn throttled(&self, _n: usize) {
        self.throttled.increment(1);
    }
}

fn describe() {
    describe_counter!(
        "shardbridge_dynamodb_items_written_total",
        Unit::Count,
        "Puts and deletes the DynamoDB sink's target table acknowledged."
    );
    describe_counter!(
        "shardbridge_dynamodb_changes_superseded_total",
        Unit::Count,
        "Changes the DynamoDB sink did not write because a later change of the same item in the same batch was written instead."
    );
    describe_counter!(
        "shardbridge_dynamodb_throttles_total",
        Unit::Count,
        "BatchWriteItem calls of the DynamoDB sink that were throttled, in whole or in part (their items are sent again after a pause)."
    );
}
