//! The S3 sink's notable events. The metric handles are registered once per sink, so counting
//! allocates nothing.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_histogram, histogram, Counter, Histogram, Unit};

pub struct S3Events {
    objects: Counter,
    bytes: Counter,
    upload_duration: Histogram,
}

impl S3Events {
    pub fn new(connector: &str) -> Self {
        describe();
        let c = || connector.to_string();
        S3Events {
            objects: counter!("shardbridge_sink_objects_written_total", "connector" => c()),
            bytes: counter!("shardbridge_sink_object_bytes_written_total", "connector" => c()),
            upload_duration: histogram!("shardbridge_sink_upload_duration_seconds", "connector" => c()),
        }
    }

    /// An object of `bytes` (after compression) was uploaded in `took`.
    pub fn object_written(&self, bytes: usize, took: Duration) {
        self.upload_duration.record(took.as_secs_f64());
        self.objects.increment(1);
        self.bytes.increment(bytes as u64);
    }
}

fn describe() {
    describe_counter!(
        "shardbridge_sink_objects_written_total",
        Unit::Count,
        "Objects uploaded by the S3 sink."
    );
    describe_counter!(
        "shardbridge_sink_object_bytes_written_total",
        Unit::Bytes,
        "Bytes uploaded by the S3 sink (after compression)."
    );
    describe_histogram!(
        "shardbridge_sink_upload_duration_seconds",
        Unit::Seconds,
        "Time to upload one object (PutObject, or the whole multipart upload)."
    );
}
