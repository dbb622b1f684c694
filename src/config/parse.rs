//! From the raw configuration tree to typed settings. Every key is read in exactly one place
//! here; whatever is left over is reported as an unknown key.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use aws_smithy_types::date_time::{DateTime, Format};
use config::{Map, Value};

use super::model::*;
use super::reader::{ConfigErrors, Problems, TableReader};
use crate::format::FormatKind;

pub const DEFAULT_LISTEN: &str = "0.0.0.0:9464";
pub const DEFAULT_FAILOVER_MS: u64 = 10_000;

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
    let global_aws = aws_settings(&mut top, "aws");
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
    Some(w)
}

fn aws_settings(parent: &mut TableReader, key: &str) -> AwsSettings {
    let Some(mut t) = parent.opt_table(key) else {
        return AwsSettings::default();
    };
    let region = t.opt_string("region");
    let endpoint_url = t.opt_string("endpoint_url");
    if let Some(url) = &endpoint_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            t.problem(
                "endpoint_url",
                format!("{url:?} must start with http:// or https://"),
            );
        }
    }
    let role_arn = t.opt_string("role_arn");
    if let Some(arn) = &role_arn {
        if !arn.starts_with("arn:") {
            t.problem("role_arn", format!("{arn:?} is not an ARN"));
        }
    }
    t.finish();
    AwsSettings {
        region,
        endpoint_url,
        role_arn,
    }
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
            let r = source(&mut s, global_aws);
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
                let r = leases(&mut l, default_table, global_aws);
                l.finish();
                r
            }
            None => Some(default_leases(default_table, global_aws)),
        }
    };
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
            f.finish();
            r
        }
        None => Some(FormatKind::Lambda),
    };
    let sink = match t.opt_table("sink") {
        Some(mut s) => {
            let r = sink(&mut s, global_aws);
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
    t.finish();
    Some(ConnectorConfig {
        name: name?,
        source: source?,
        leases: leases?,
        format: format?,
        sink: sink?,
    })
}

fn source(t: &mut TableReader, global_aws: &AwsSettings) -> Option<SourceConfig> {
    #[derive(Clone, Copy)]
    enum Kind {
        DynamoDbStreams,
        Kinesis,
    }
    let kind = if t.has("type") {
        t.choice(
            "type",
            &[
                ("dynamodb-streams", Kind::DynamoDbStreams),
                ("kinesis", Kind::Kinesis),
            ],
        )
    } else {
        t.problem("type", "missing");
        None
    };
    let stream = match kind {
        Some(Kind::DynamoDbStreams) => dynamodb_stream(t),
        Some(Kind::Kinesis) => kinesis_stream(t),
        None => None,
    };
    let starting_position = match t.opt_string("starting_position") {
        None => Some(StartingPosition::TrimHorizon),
        Some(s) => match s.as_str() {
            "trim_horizon" => Some(StartingPosition::TrimHorizon),
            "latest" => Some(StartingPosition::Latest),
            other => match DateTime::from_str(other, Format::DateTime) {
                Ok(ts) => ts.to_millis().ok().map(StartingPosition::AtTimestamp),
                Err(_) => {
                    t.problem(
                        "starting_position",
                        format!("{other:?}: expected \"trim_horizon\", \"latest\" or an RFC 3339 timestamp"),
                    );
                    None
                }
            },
        },
    };
    let poll_idle_ms = t.opt_u64("poll_idle_ms", 0, 60_000).unwrap_or(250);
    let max_records = t.opt_u64("max_records", 1, 1000).unwrap_or(1000) as u32;
    let max_retries = t.opt_u64("max_retries", 0, 1000).unwrap_or(10) as u32;
    let aws = aws_settings(t, "aws").or(global_aws);
    Some(SourceConfig {
        stream: stream?,
        starting_position: starting_position?,
        poll_idle_ms,
        max_records,
        max_retries,
        aws,
    })
}

fn dynamodb_stream(t: &mut TableReader) -> Option<StreamRef> {
    let table = t.opt_string("table");
    let arn = t.opt_string("stream_arn");
    match (table, arn) {
        (Some(table), None) => Some(StreamRef::Table(table)),
        (None, Some(arn)) => {
            if arn.starts_with("arn:") && arn.contains(":table/") && arn.contains("/stream/") {
                Some(StreamRef::StreamArn(arn))
            } else {
                t.problem(
                    "stream_arn",
                    format!("{arn:?} is not a DynamoDB stream ARN"),
                );
                None
            }
        }
        (Some(_), Some(_)) => {
            t.problem("stream_arn", "give either table or stream_arn, not both");
            None
        }
        (None, None) => {
            t.problem("table", "missing (or give stream_arn)");
            None
        }
    }
}

fn kinesis_stream(t: &mut TableReader) -> Option<StreamRef> {
    let name = t.opt_string("stream");
    let arn = t.opt_string("stream_arn");
    match (name, arn) {
        (Some(name), None) => Some(StreamRef::KinesisName(name)),
        (None, Some(arn)) => {
            if arn.starts_with("arn:") && arn.contains(":kinesis:") && arn.contains(":stream/") {
                Some(StreamRef::KinesisArn(arn))
            } else {
                t.problem("stream_arn", format!("{arn:?} is not a Kinesis stream ARN"));
                None
            }
        }
        (Some(_), Some(_)) => {
            t.problem("stream_arn", "give either stream or stream_arn, not both");
            None
        }
        (None, None) => {
            t.problem("stream", "missing (or give stream_arn)");
            None
        }
    }
}

fn default_leases(table: String, global_aws: &AwsSettings) -> LeaseConfig {
    LeaseConfig {
        table,
        failover_ms: DEFAULT_FAILOVER_MS,
        renew_interval_ms: DEFAULT_FAILOVER_MS / 3,
        safety_margin_ms: DEFAULT_FAILOVER_MS / 5,
        shard_sync_interval_ms: 60_000,
        max_leases_per_worker: usize::MAX,
        aws: global_aws.clone(),
    }
}

fn leases(
    t: &mut TableReader,
    default_table: String,
    global_aws: &AwsSettings,
) -> Option<LeaseConfig> {
    let mut l = default_leases(default_table, global_aws);
    if let Some(table) = t.opt_string("table") {
        let ok = (3..=255).contains(&table.len())
            && table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
        if ok {
            l.table = table;
        } else {
            t.problem(
                "table",
                format!("{table:?} is not a valid DynamoDB table name"),
            );
        }
    }
    if let Some(ms) = t.opt_u64("failover_ms", 1_000, 600_000) {
        l.failover_ms = ms;
        l.renew_interval_ms = ms / 3;
        l.safety_margin_ms = ms / 5;
    }
    if let Some(ms) = t.opt_u64("renew_interval_ms", 100, 600_000) {
        l.renew_interval_ms = ms;
    }
    if let Some(ms) = t.opt_u64("safety_margin_ms", 0, 600_000) {
        l.safety_margin_ms = ms;
    }
    if let Some(ms) = t.opt_u64("shard_sync_interval_ms", 1_000, 3_600_000) {
        l.shard_sync_interval_ms = ms;
    }
    if let Some(n) = t.opt_u64("max_leases_per_worker", 1, 1_000_000) {
        l.max_leases_per_worker = n as usize;
    }
    if l.renew_interval_ms + l.safety_margin_ms >= l.failover_ms {
        t.problem(
            "renew_interval_ms",
            format!(
                "renew_interval_ms ({}) + safety_margin_ms ({}) must be below failover_ms ({})",
                l.renew_interval_ms, l.safety_margin_ms, l.failover_ms
            ),
        );
    }
    l.aws = aws_settings(t, "aws").or(global_aws);
    Some(l)
}

fn sink(t: &mut TableReader, global_aws: &AwsSettings) -> Option<SinkConfig> {
    #[derive(Clone, Copy)]
    enum Kind {
        Stdout,
        File,
        S3,
        Kinesis,
    }
    if !t.has("type") {
        t.problem("type", "missing");
        return None;
    }
    let kinds = [
        ("stdout", Kind::Stdout),
        ("file", Kind::File),
        ("s3", Kind::S3),
        ("kinesis", Kind::Kinesis),
    ];
    match t.choice("type", &kinds)? {
        Kind::Stdout => Some(SinkConfig::Stdout),
        Kind::File => {
            let path = t.string("path");
            let fsync = t.opt_bool("fsync").unwrap_or(true);
            Some(SinkConfig::File {
                path: PathBuf::from(path?),
                fsync,
            })
        }
        Kind::S3 => s3_sink(t, global_aws),
        Kind::Kinesis => kinesis_sink(t, global_aws),
    }
}

fn kinesis_sink(t: &mut TableReader, global_aws: &AwsSettings) -> Option<SinkConfig> {
    use crate::sink::kinesis::*;
    use crate::sink::partition_key::PartitionKeyRule;
    use crate::source::kinesis::KinesisStreamRef;
    let stream = kinesis_stream(t).map(|s| match s {
        StreamRef::KinesisArn(arn) => KinesisStreamRef::Arn(arn),
        StreamRef::KinesisName(name) => KinesisStreamRef::Name(name),
        _ => unreachable!("kinesis_stream returns Kinesis references"),
    });
    let partition_key = match t.opt_string("partition_key") {
        None => Some(PartitionKeyRule::ItemKey),
        Some(s) => {
            let rule = PartitionKeyRule::parse(&s);
            if rule.is_none() {
                t.problem(
                    "partition_key",
                    format!(
                        "{s:?} is not one of \"item-key\", \"shard\", \"attribute:NAME\", \"random\""
                    ),
                );
            }
            rule
        }
    };
    let on_oversize = if t.has("on_oversize") {
        t.choice(
            "on_oversize",
            &[("fail", OnOversize::Fail), ("skip", OnOversize::Skip)],
        )
    } else {
        Some(OnOversize::Fail)
    };
    let max_in_flight = t
        .opt_u64("max_in_flight", 1, 64)
        .unwrap_or(DEFAULT_MAX_IN_FLIGHT as u64);
    let max_records = t
        .opt_u64("max_records", 1, 1_000_000)
        .unwrap_or(DEFAULT_MAX_RECORDS as u64);
    let max_bytes = t
        .opt_u64("max_bytes", 1, 1024 * 1024 * 1024)
        .unwrap_or(DEFAULT_MAX_BYTES as u64);
    let max_interval_ms = t
        .opt_u64("max_interval_ms", 0, 3_600_000)
        .unwrap_or(DEFAULT_MAX_INTERVAL_MS);
    let reconcile_margin_ms = t
        .opt_u64("reconcile_margin_ms", 0, 3_600_000)
        .unwrap_or(DEFAULT_RECONCILE_MARGIN_MS);
    let aws = aws_settings(t, "aws").or(global_aws);
    Some(SinkConfig::Kinesis {
        kinesis: KinesisSinkConfig {
            stream: stream?,
            partition_key: partition_key?,
            on_oversize: on_oversize?,
            max_in_flight: max_in_flight as usize,
            max_records: max_records as usize,
            max_bytes: max_bytes as usize,
            max_interval_ms,
            reconcile_margin_ms,
        },
        aws,
    })
}

/// Defaults sized for analytics: large objects (not one per record), bounded memory per shard.
pub const S3_DEFAULT_MAX_RECORDS: u64 = 100_000;
pub const S3_DEFAULT_MAX_BYTES: u64 = 8 * 1024 * 1024;
pub const S3_DEFAULT_MAX_INTERVAL_MS: u64 = 60_000;

fn s3_sink(t: &mut TableReader, global_aws: &AwsSettings) -> Option<SinkConfig> {
    use crate::sink::s3::{Compression, S3SinkConfig};
    let bucket = t.string("bucket");
    if let Some(b) = &bucket {
        let ok = (3..=63).contains(&b.len())
            && b.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !ok {
            t.problem("bucket", format!("{b:?} is not a valid S3 bucket name"));
        }
    }
    let prefix = t.opt_string("prefix").unwrap_or_default();
    let compression = if t.has("compression") {
        t.choice(
            "compression",
            &[
                ("gzip", Compression::Gzip),
                ("zstd", Compression::Zstd),
                ("none", Compression::None),
            ],
        )
    } else {
        Some(Compression::Gzip)
    };
    let max_records = t
        .opt_u64("max_records", 1, 10_000_000)
        .unwrap_or(S3_DEFAULT_MAX_RECORDS);
    let max_bytes = t
        .opt_u64("max_bytes", 1, 5 * 1024 * 1024 * 1024)
        .unwrap_or(S3_DEFAULT_MAX_BYTES);
    let max_interval_ms = t
        .opt_u64("max_interval_ms", 100, 3_600_000)
        .unwrap_or(S3_DEFAULT_MAX_INTERVAL_MS);
    let force_path_style = t.opt_bool("force_path_style").unwrap_or(false);
    let aws = aws_settings(t, "aws").or(global_aws);
    Some(SinkConfig::S3 {
        s3: S3SinkConfig {
            bucket: bucket?,
            prefix,
            compression: compression?,
            max_records: max_records as usize,
            max_bytes: max_bytes as usize,
            max_interval_ms,
            force_path_style,
        },
        aws,
    })
}
