//! From the raw configuration tree to typed settings. This module composes: the worker and
//! connector keys are read here, each section by the module it configures (`SourceConfig::read`,
//! `LeaseConfig::read`, `SinkConfig::read`, `AwsSettings::read`). Every key is read in exactly
//! one place; whatever is left over is reported as an unknown key.

use std::collections::HashSet;
use std::net::SocketAddr;

use config::{Map, Value, ValueKind};

use crate::aws::AwsSettings;
use crate::filter::FilterCriteria;
use crate::format::FormatKind;
use crate::lease::LeaseConfig;
use crate::pipeline::{Config, ConnectorConfig, SetAsidePolicy, WorkerConfig};
use crate::settings::{ConfigErrors, Problems, TableReader};
use crate::sink::kafka::config::KafkaKey;
use crate::sink::on_failure::OnFailureConfig;
use crate::sink::SinkConfig;
use crate::source::snapshot::SnapshotConfig;
use crate::source::SourceConfig;

pub const DEFAULT_LISTEN: &str = "0.0.0.0:9464";

pub fn config(root: Map<String, Value>) -> Result<Config, ConfigErrors> {
    let mut problems = Problems::default();
    let mut top = TableReader::new(String::new(), root, &mut problems);

    let worker = match top.opt_table("worker") {
        Some(mut t) => {
            let w = worker(&mut t);
            t.finish();
            w
        }
        None => Some(default_worker()),
    };
    let global_aws = AwsSettings::read(&mut top, "aws");
    let entries = top.table_array("connectors");
    if entries.is_empty() && !top.has("connectors") {
        top.problem(
            "connectors",
            "missing: at least one [[connectors]] table is required",
        );
    }
    top.finish();

    let mut connectors = Vec::new();
    let mut names = HashSet::new();
    for (path, value) in entries {
        let t = TableReader::from_value(path.clone(), value, &mut problems);
        if let Some(c) = connector(t, &global_aws) {
            if !names.insert(c.name.clone()) {
                problems.push(
                    format!("{path}.name"),
                    format!("duplicate connector name {:?}", c.name),
                );
            }
            connectors.push(c);
        }
    }
    let worker = worker.unwrap_or_else(default_worker);
    problems.into_result(Config { worker, connectors })
}

fn default_worker() -> WorkerConfig {
    WorkerConfig {
        id: default_worker_id(),
        listen: DEFAULT_LISTEN.parse().expect("valid default address"),
        shutdown_timeout_ms: 30_000,
        read_ahead_bytes: crate::pipeline::read_ahead::DEFAULT_BYTES,
    }
}

/// The host name: in Kubernetes, the pod name.
fn default_worker_id() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

fn worker(t: &mut TableReader) -> Option<WorkerConfig> {
    let mut w = default_worker();
    if let Some(id) = t.opt_string("id") {
        if id.trim().is_empty() {
            t.problem("id", "must not be empty");
        } else {
            w.id = id;
        }
    }
    if let Some(listen) = t.opt_string("listen") {
        match listen.parse::<SocketAddr>() {
            Ok(a) => w.listen = a,
            Err(_) => t.problem(
                "listen",
                format!("{listen:?} is not an address like 127.0.0.1:9464"),
            ),
        }
    }
    if let Some(ms) = t.opt_u64("shutdown_timeout_ms", 0, 3_600_000) {
        w.shutdown_timeout_ms = ms;
    }
    if let Some(bytes) = t.opt_u64("read_ahead_bytes", 0, 1 << 40) {
        w.read_ahead_bytes = bytes;
    }
    Some(w)
}

fn connector(mut t: TableReader, global_aws: &AwsSettings) -> Option<ConnectorConfig> {
    let name = t.string("name");
    if let Some(n) = &name {
        let ok = !n.is_empty()
            && n.len() <= 100
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !ok {
            t.problem(
                "name",
                format!("{n:?} must be 1-100 characters of A-Z a-z 0-9 - _ ."),
            );
        }
    }
    let source = match t.opt_table("source") {
        Some(mut s) => {
            let r = SourceConfig::read(&mut s, global_aws);
            s.finish();
            r
        }
        None => {
            t.problem("source", "missing");
            None
        }
    };
    let leases = {
        let default_table = format!("shardbridge-{}", name.as_deref().unwrap_or(""));
        match t.opt_table("leases") {
            Some(mut l) => {
                let r = LeaseConfig::read(&mut l, default_table, global_aws);
                l.finish();
                Some(r)
            }
            None => Some(LeaseConfig::defaults(default_table, global_aws)),
        }
    };
    let mut invoke_identity_arn = None;
    let format = match t.opt_table("format") {
        Some(mut f) => {
            let choices = [
                ("lambda", FormatKind::Lambda),
                ("kinesis-ddb", FormatKind::KinesisDdb),
                ("plain", FormatKind::Plain),
                ("raw", FormatKind::Raw),
            ];
            let r = if f.has("type") {
                f.choice("type", &choices)
            } else {
                f.problem("type", "missing");
                None
            };
            invoke_identity_arn = f.opt_string("invoke_identity_arn");
            if let Some(arn) = &invoke_identity_arn {
                if !arn.starts_with("arn:") {
                    f.problem("invoke_identity_arn", format!("{arn:?} is not an ARN"));
                } else if r != Some(FormatKind::Lambda) {
                    f.problem(
                        "invoke_identity_arn",
                        "only with type = \"lambda\" (it is a field of Lambda's Kinesis records)",
                    );
                }
            }
            f.finish();
            r
        }
        None => Some(FormatKind::Lambda),
    };
    let sink = match t.opt_table("sink") {
        Some(mut s) => {
            let r = SinkConfig::read(&mut s, global_aws);
            s.finish();
            r
        }
        None => {
            t.problem("sink", "missing");
            None
        }
    };
    if let (Some(s), Some(f)) = (&source, format) {
        let kinesis = s.stream.is_kinesis();
        if !f.accepts(kinesis) {
            let (what, fits) = if kinesis {
                ("Kinesis", "\"lambda\" or \"raw\"")
            } else {
                (
                    "DynamoDB Streams",
                    "\"lambda\", \"kinesis-ddb\" or \"plain\"",
                )
            };
            t.problem(
                "format.type",
                format!("{:?} cannot encode {what} records (use {fits})", f.as_str()),
            );
        }
    }
    if let (Some(s), Some(SinkConfig::Kinesis { kinesis, .. })) = (&source, &sink) {
        if s.stream.is_kinesis()
            && matches!(
                kinesis.partition_key,
                crate::sink::partition_key::PartitionKeyRule::Attribute(_)
            )
        {
            t.problem(
                "sink.partition_key",
                "\"attribute:NAME\" needs a DynamoDB source (Kinesis records have no attributes; use \"item-key\" to keep their partition keys)",
            );
        }
    }
    if let (Some(s), Some(SinkConfig::Kafka { kafka, .. })) = (&source, &sink) {
        if s.stream.is_kinesis() {
            if matches!(
                kafka.key,
                KafkaKey::Rule(crate::sink::partition_key::PartitionKeyRule::Attribute(_))
            ) {
                t.problem(
                    "sink.key",
                    "\"attribute:NAME\" needs a DynamoDB source (Kinesis records have no attributes; use \"item-key\" to keep their partition keys)",
                );
            }
            if kafka.topic.as_str().contains("{table}") {
                t.problem(
                    "sink.topic",
                    "{table} needs a DynamoDB source (use {stream} for a Kinesis stream's name)",
                );
            }
        }
    }
    if let Some(SinkConfig::DynamoDb { .. }) = &sink {
        if source.as_ref().is_some_and(|s| s.stream.is_kinesis()) {
            t.problem(
                "sink.type",
                "\"dynamodb\" needs a DynamoDB Streams source (it writes the changed items into a table)",
            );
        } else if format.is_some_and(|f| f != FormatKind::Lambda) {
            t.problem(
                "format.type",
                "the dynamodb sink writes the changed items themselves: leave [connectors.format] out",
            );
        }
    }
    let snapshot = match t.opt_table("snapshot") {
        Some(mut s) => {
            let r = SnapshotConfig::read(&mut s);
            s.finish();
            r
        }
        None => SnapshotConfig::default(),
    };
    if let (true, Some(s)) = (snapshot.enabled(), &source) {
        if s.stream.is_kinesis() {
            t.problem(
                "snapshot.mode",
                "a snapshot needs a DynamoDB Streams source (it scans the stream's table)",
            );
        } else if s.starting_position != crate::source::StartingPosition::TrimHorizon {
            t.problem(
                "source.starting_position",
                "with a snapshot the stream is read from where the snapshot began: leave starting_position out",
            );
        }
    }
    let filter = read_filter(&mut t);
    let set_aside = read_set_aside(&mut t, global_aws);
    let parallelization_factor = t
        .opt_u64(
            "parallelization_factor",
            1,
            u64::from(crate::commit::lanes::MAX_LANES),
        )
        .map_or(1, |n| n as u8);
    if let (true, Some(why)) = (
        parallelization_factor > 1,
        sink.as_ref().and_then(SinkConfig::refuses_lanes),
    ) {
        t.problem(
            "parallelization_factor",
            format!("must be 1 with this sink: {why}"),
        );
    }
    t.finish();
    let source = source?;
    let identity_aws = crate::aws::AwsSettings {
        endpoint_url: global_aws.endpoint_url.clone(),
        ..source.aws.clone()
    };
    Some(ConnectorConfig {
        name: name?,
        source,
        leases: leases?,
        format: format?,
        invoke_identity_arn,
        identity_aws,
        sink: sink?,
        filter: filter?,
        set_aside: set_aside?,
        parallelization_factor,
        snapshot,
    })
}

/// `max_retry_attempts`, `max_record_age_ms` and `[connectors.on_failure]`. The first two need
/// a destination: a set-aside record always goes somewhere (Lambda would drop it).
fn read_set_aside(t: &mut TableReader, global_aws: &AwsSettings) -> Option<SetAsidePolicy> {
    let max_retry_attempts = t.opt_u64("max_retry_attempts", 0, 10_000).map(|n| n as u32);
    let max_record_age_ms = t.opt_u64("max_record_age_ms", 1_000, 604_800_000);
    let on_failure = match t.opt_table("on_failure") {
        Some(mut d) => {
            let r = OnFailureConfig::read(&mut d, global_aws);
            d.finish();
            Some(r?)
        }
        None => None,
    };
    if on_failure.is_none() {
        for (key, set) in [
            ("max_retry_attempts", max_retry_attempts.is_some()),
            ("max_record_age_ms", max_record_age_ms.is_some()),
        ] {
            if set {
                t.problem(
                    key,
                    "needs [connectors.on_failure]: the records it sets aside go there (nothing is dropped)",
                );
            }
        }
    }
    Some(SetAsidePolicy {
        max_retry_attempts,
        max_record_age_ms,
        on_failure,
    })
}

/// `filter`: Lambda FilterCriteria, a list of patterns (or one), each the JSON text a user
/// copies from a Lambda mapping or an inline TOML table.
fn read_filter(t: &mut TableReader) -> Option<FilterCriteria> {
    let Some(value) = t.take("filter") else {
        return Some(FilterCriteria::default());
    };
    let items = match value.kind {
        ValueKind::Array(items) => items,
        other => vec![Value::new(None, other)],
    };
    let mut patterns = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        match item.kind {
            ValueKind::String(s) => patterns.push(s),
            ValueKind::Table(_) => patterns.push(to_json(item).to_string()),
            other => {
                t.problem(
                    &format!("filter[{i}]"),
                    format!(
                        "expected a pattern (a JSON string or a table), found {}",
                        crate::settings::describe(&other)
                    ),
                );
                return None;
            }
        }
    }
    match FilterCriteria::parse(&patterns) {
        Ok(f) => Some(f),
        Err(e) => {
            t.problem("filter", e.to_string());
            None
        }
    }
}

/// A configuration value as JSON (an inline TOML filter pattern).
fn to_json(v: Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v.kind {
        ValueKind::Nil => J::Null,
        ValueKind::Boolean(b) => J::Bool(b),
        ValueKind::I64(n) => J::from(n),
        ValueKind::I128(n) => serde_json::from_str(&n.to_string()).unwrap_or(J::Null),
        ValueKind::U64(n) => J::from(n),
        ValueKind::U128(n) => serde_json::from_str(&n.to_string()).unwrap_or(J::Null),
        ValueKind::Float(f) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
        ValueKind::String(s) => J::String(s),
        ValueKind::Array(items) => J::Array(items.into_iter().map(to_json).collect()),
        ValueKind::Table(map) => J::Object(
            map.into_iter()
                .collect::<std::collections::BTreeMap<_, _>>()
                .into_iter()
                .map(|(k, v)| (k, to_json(v)))
                .collect(),
        ),
    }
}
