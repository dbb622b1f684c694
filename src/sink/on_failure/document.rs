//! Lambda's OnFailure document for stream sources, as shardbridge writes it for records it sets
//! aside: `requestContext` (with `condition`), `responseContext`, `version`, `timestamp`, and
//! `DDBStreamBatchInfo` or `KinesisBatchInfo`; plus the records themselves (`records`, each as
//! the connector's format shows it), which Lambda's document only points to. Pure: the caller
//! gives the time.

use serde_json::{json, Map, Value};

use crate::sink::OutputRecord;

/// Why records were set aside: Lambda's `requestContext.condition` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Condition {
    /// The sink refused the batch `max_retry_attempts` + 1 times.
    RetryAttemptsExhausted,
    /// Older than `max_record_age_ms` when its batch was about to be sent.
    RecordAgeExceeded,
    /// Larger than the sink takes (Kinesis: 1 MiB of key and data; Kafka: its message limit).
    RecordTooLarge,
}

impl Condition {
    pub const ALL: [Condition; 3] = [
        Condition::RetryAttemptsExhausted,
        Condition::RecordAgeExceeded,
        Condition::RecordTooLarge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Condition::RetryAttemptsExhausted => "RetryAttemptsExhausted",
            Condition::RecordAgeExceeded => "RecordAgeExceeded",
            Condition::RecordTooLarge => "RecordTooLarge",
        }
    }
}

/// What was set aside, and why.
pub struct SetAside<'a> {
    pub connector: &'a str,
    pub stream_arn: &'a str,
    pub shard_id: &'a str,
    /// Whether the source is Kinesis (`KinesisBatchInfo`) or DynamoDB Streams
    /// (`DDBStreamBatchInfo`).
    pub kinesis: bool,
    pub condition: Condition,
    /// How many times the sink was asked (0 when the records were never sent).
    pub attempts: u32,
    /// The sink's last error, if it refused them.
    pub error: Option<&'a str>,
    /// The HTTP status a function sink (http) answered the last attempt with; None when it
    /// did not answer (a timeout) or the sink is not a function.
    pub status_code: Option<u16>,
    /// In sequence order; never empty.
    pub records: &'a [OutputRecord],
}

impl SetAside<'_> {
    /// The document's identity: the same records set aside again (after a crash, say) get the
    /// same id, so a destination or a reader can drop the repeat.
    pub fn request_id(&self) -> String {
        let first = self.records.first().map(|r| r.sequence_number.as_str());
        let last = self.records.last().map(|r| r.sequence_number.as_str());
        format!(
            "{}:{}:{}-{}",
            self.connector,
            self.shard_id,
            first.unwrap_or_default(),
            last.unwrap_or_default()
        )
    }

    /// The OnFailure document; `records` left out when `with_records` is false (the
    /// destination's size limit), which `recordsIncluded` says.
    pub fn document(&self, now_millis: i64, with_records: bool) -> Value {
        let first = self.records.first();
        let last = self.records.last();
        let arrival = |r: Option<&OutputRecord>| {
            r.and_then(|r| r.created_millis)
                .map(rfc3339)
                .map_or(Value::Null, Value::String)
        };
        let batch_info = json!({
            "shardId": self.shard_id,
            "startSequenceNumber": first.map(|r| r.sequence_number.as_str()),
            "endSequenceNumber": last.map(|r| r.sequence_number.as_str()),
            "approximateArrivalOfFirstRecord": arrival(first),
            "approximateArrivalOfLastRecord": arrival(last),
            "batchSize": self.records.len(),
            "streamArn": self.stream_arn,
        });
        let mut response = Map::new();
        match self.error {
            // Lambda reports a function error as a 200 invoke with `functionError`; the sink's
            // refusal is its equivalent, with the sink's own words beside it.
            Some(error) => {
                response.insert("statusCode".into(), json!(self.status_code.unwrap_or(200)));
                response.insert("executedVersion".into(), json!("$LATEST"));
                response.insert("functionError".into(), json!("Unhandled"));
                response.insert("errorMessage".into(), json!(error));
            }
            None => {
                response.insert("statusCode".into(), json!(0));
                response.insert("executedVersion".into(), json!(""));
                response.insert("functionError".into(), json!(""));
            }
        }
        let mut doc = Map::new();
        doc.insert(
            "requestContext".into(),
            json!({
                "requestId": self.request_id(),
                "functionArn": format!("shardbridge:connector:{}", self.connector),
                "condition": self.condition.as_str(),
                "approximateInvokeCount": self.attempts,
            }),
        );
        doc.insert("responseContext".into(), Value::Object(response));
        doc.insert("version".into(), json!("1.0"));
        doc.insert("timestamp".into(), json!(rfc3339(now_millis)));
        let info_key = if self.kinesis {
            "KinesisBatchInfo"
        } else {
            "DDBStreamBatchInfo"
        };
        doc.insert(info_key.into(), batch_info);
        doc.insert("recordsIncluded".into(), json!(with_records));
        if with_records {
            doc.insert(
                "records".into(),
                Value::Array(self.records.iter().map(record_value).collect()),
            );
        }
        Value::Object(doc)
    }
}

/// A record as the connector's format wrote it: its JSON, or (the `raw` bytes a stream sink
/// takes) `{"data": base64}`.
fn record_value(r: &OutputRecord) -> Value {
    serde_json::from_slice(&r.payload).unwrap_or_else(|_| {
        use base64::Engine as _;
        json!({"data": base64::engine::general_purpose::STANDARD.encode(&r.payload)})
    })
}

/// `2019-11-14T00:13:49.717Z`.
fn rfc3339(millis: i64) -> String {
    aws_smithy_types::DateTime::from_millis(millis)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::sequence::SequenceNumber;

    fn record(seq: &str, millis: i64, payload: &[u8]) -> OutputRecord {
        OutputRecord {
            sequence_number: SequenceNumber::parse(seq).unwrap(),
            created_millis: Some(millis),
            partition_key: None,
            event_name: Some("MODIFY"),
            lane: 0,
            payload: payload.to_vec(),
        }
    }

    fn aside<'a>(
        records: &'a [OutputRecord],
        kinesis: bool,
        error: Option<&'a str>,
    ) -> SetAside<'a> {
        SetAside {
            connector: "orders",
            stream_arn: "arn:aws:dynamodb:us-east-1:1:table/t/stream/s",
            shard_id: "shardId-1",
            kinesis,
            condition: Condition::RetryAttemptsExhausted,
            attempts: 3,
            error,
            status_code: None,
            records,
        }
    }

    #[test]
    fn has_lambdas_fields_and_the_records() {
        let records = [
            record("100", 1_573_690_399_000, br#"{"eventName":"MODIFY"}"#),
            record("200", 1_573_690_400_500, b"\x00raw bytes"),
        ];
        let doc =
            aside(&records, false, Some("PutRecords: throttled")).document(1_573_690_429_717, true);
        assert_eq!(doc["version"], "1.0");
        assert_eq!(doc["timestamp"], "2019-11-14T00:13:49.717Z");
        let ctx = &doc["requestContext"];
        assert_eq!(ctx["condition"], "RetryAttemptsExhausted");
        assert_eq!(ctx["approximateInvokeCount"], 3);
        assert_eq!(ctx["requestId"], "orders:shardId-1:100-200");
        assert_eq!(doc["responseContext"]["functionError"], "Unhandled");
        assert_eq!(
            doc["responseContext"]["errorMessage"],
            "PutRecords: throttled"
        );
        let info = &doc["DDBStreamBatchInfo"];
        assert_eq!(info["shardId"], "shardId-1");
        assert_eq!(info["startSequenceNumber"], "100");
        assert_eq!(info["endSequenceNumber"], "200");
        assert_eq!(
            info["approximateArrivalOfFirstRecord"],
            "2019-11-14T00:13:19Z"
        );
        assert_eq!(
            info["approximateArrivalOfLastRecord"],
            "2019-11-14T00:13:20.5Z"
        );
        assert_eq!(info["batchSize"], 2);
        assert_eq!(
            info["streamArn"],
            "arn:aws:dynamodb:us-east-1:1:table/t/stream/s"
        );
        assert!(doc.get("KinesisBatchInfo").is_none());
        assert_eq!(doc["recordsIncluded"], true);
        assert_eq!(doc["records"][0]["eventName"], "MODIFY");
        assert_eq!(doc["records"][1]["data"], "AHJhdyBieXRlcw==");
    }

    #[test]
    fn kinesis_sources_get_kinesis_batch_info_and_records_may_be_left_out() {
        let records = [record("5", 0, b"{}")];
        let doc = aside(&records, true, None).document(0, false);
        assert!(doc.get("DDBStreamBatchInfo").is_none());
        assert_eq!(doc["KinesisBatchInfo"]["batchSize"], 1);
        assert_eq!(doc["recordsIncluded"], false);
        assert!(doc.get("records").is_none());
        // Never sent: no function error.
        assert_eq!(doc["responseContext"]["statusCode"], 0);
        assert_eq!(doc["responseContext"]["functionError"], "");
    }
}
