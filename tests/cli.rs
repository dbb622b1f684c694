//! The command line contract: `validate`, exit statuses, --help and --version.

mod common;

use std::process::Output;

use common::shardbridge;

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = shardbridge();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn repo_example() -> String {
    format!("{}/connectors.toml", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_repository_example_is_valid() {
    let o = run(&["validate", "--config", &repo_example()], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("valid (1 connector(s))"));
}

const BROKEN: &str = r#"
[worker]
listen = 9464

[[connectors]]
name = "orders"
colour = "blue"

[connectors.source]
type = "dynamodb-streams"
table = "orders"

[connectors.sink]
type = "file"
"#;

#[test]
fn validate_names_every_problem_with_its_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, BROKEN).unwrap();
    let o = run(&["validate", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [
            "worker.listen: expected a string, found integer 9464",
            "connectors[0].sink.path: missing",
            "connectors[0].colour: unknown key",
        ],
        "{err}"
    );
    // `run` refuses the same file with the same status.
    let o = run(&["run", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("connectors[0].colour: unknown key"));
}

#[test]
fn environment_overrides_are_checked_too() {
    let example = repo_example();
    let o = run(
        &["validate", "--config", &example],
        &[("SHARDBRIDGE__WORKER__LISTEN", "not-an-address")],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("worker.listen: \"not-an-address\" is not an address"),
        "{}",
        stderr(&o)
    );
    let o = run(
        &["validate", "--config", &example],
        &[("SHARDBRIDGE__WORKER__COLOUR", "x")],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("worker.colour: unknown key"),
        "{}",
        stderr(&o)
    );
    let o = run(
        &["validate", "--config", &example],
        &[("SHARDBRIDGE__WORKER__ID", "worker-b")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn a_missing_file_is_a_configuration_error() {
    let o = run(
        &["validate", "--config", "/nonexistent/connectors.toml"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent/connectors.toml: cannot read"));
}

#[test]
fn help_documents_every_flag_and_version_prints_the_version() {
    let o = run(&["--version"], &[]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("shardbridge {}", env!("CARGO_PKG_VERSION"))
    );
    for sub in [
        vec!["run"],
        vec!["validate"],
        vec!["status"],
        vec!["checkpoint", "set"],
    ] {
        let mut args = sub.clone();
        args.push("--help");
        let o = run(&args, &[]);
        assert_eq!(o.status.code(), Some(0));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains("--config <CONFIG>") && text.contains("SHARDBRIDGE_CONFIG"),
            "{text}"
        );
    }
    let o = run(&["frobnicate"], &[]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn kinesis_sources_take_stream_or_arn_and_only_formats_that_fit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.toml");
    let write = |source: &str, format: &str| {
        std::fs::write(
            &path,
            format!(
                "[[connectors]]\nname = \"k\"\n[connectors.source]\ntype = \"kinesis\"\n{source}\n\
                 [connectors.format]\ntype = \"{format}\"\n[connectors.sink]\ntype = \"stdout\"\n"
            ),
        )
        .unwrap();
    };
    let validate = || run(&["validate", "--config", path.to_str().unwrap()], &[]);
    write("stream = \"orders\"", "raw");
    assert_eq!(validate().status.code(), Some(0), "{}", stderr(&validate()));
    write(
        "stream_arn = \"arn:aws:kinesis:eu-west-1:123456789012:stream/orders\"",
        "lambda",
    );
    assert_eq!(validate().status.code(), Some(0), "{}", stderr(&validate()));
    write("stream = \"orders\"", "plain");
    let o = validate();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("connectors[0].format.type: \"plain\" cannot encode Kinesis records"),
        "{}",
        stderr(&o)
    );
    write("table = \"orders\"", "raw");
    let o = validate();
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("connectors[0].source.stream: missing"),
        "{err}"
    );
    assert!(
        err.contains("connectors[0].source.table: unknown key"),
        "{err}"
    );
}

#[test]
fn s3_sinks_are_checked_key_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s3.toml");
    let write = |sink: &str| {
        std::fs::write(
            &path,
            format!(
                "[[connectors]]\nname = \"s\"\n[connectors.source]\ntype = \"dynamodb-streams\"\n\
                 table = \"orders\"\n[connectors.sink]\ntype = \"s3\"\n{sink}\n"
            ),
        )
        .unwrap();
    };
    let validate = || run(&["validate", "--config", path.to_str().unwrap()], &[]);
    write("bucket = \"analytics-lake\"\nprefix = \"cdc/\"\ncompression = \"zstd\"\nmax_records = 5000\nmax_interval_ms = 30000\n[connectors.sink.aws]\nregion = \"eu-west-1\"");
    assert_eq!(validate().status.code(), Some(0), "{}", stderr(&validate()));
    write("compression = \"lz4\"\nmax_bytes = 0");
    let o = validate();
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("connectors[0].sink.bucket: missing"), "{err}");
    assert!(
        err.contains("connectors[0].sink.compression: unknown value \"lz4\""),
        "{err}"
    );
    assert!(
        err.contains("connectors[0].sink.max_bytes: 0 is out of range"),
        "{err}"
    );
}

#[test]
fn kinesis_sinks_are_checked_key_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kinesis.toml");
    let write = |source: &str, sink: &str| {
        std::fs::write(
            &path,
            format!(
                "[[connectors]]\nname = \"k\"\n[connectors.source]\n{source}\n\
                 [connectors.format]\ntype = \"lambda\"\n[connectors.sink]\ntype = \"kinesis\"\n{sink}\n"
            ),
        )
        .unwrap();
    };
    let ddb = "type = \"dynamodb-streams\"\ntable = \"orders\"";
    let validate = || run(&["validate", "--config", path.to_str().unwrap()], &[]);
    write(
        ddb,
        "stream_arn = \"arn:aws:kinesis:eu-west-1:123456789012:stream/changes\"\n\
         partition_key = \"attribute:tenant\"\non_oversize = \"skip\"\nmax_in_flight = 8\n\
         reconcile_margin_ms = 5000\n[connectors.sink.aws]\nrole_arn = \"arn:aws:iam::123456789012:role/w\"",
    );
    assert_eq!(validate().status.code(), Some(0), "{}", stderr(&validate()));
    write(
        ddb,
        "partition_key = \"by-item\"\non_oversize = \"truncate\"\nmax_in_flight = 0",
    );
    let o = validate();
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    for want in [
        "connectors[0].sink.stream: missing (or give stream_arn)",
        "connectors[0].sink.partition_key: \"by-item\" is not one of",
        "connectors[0].sink.on_oversize: unknown value \"truncate\"",
        "connectors[0].sink.max_in_flight: 0 is out of range",
    ] {
        assert!(err.contains(want), "{want}\n{err}");
    }
    // Kinesis records have no attributes to key by.
    write(
        "type = \"kinesis\"\nstream = \"clicks\"",
        "stream = \"copy\"\npartition_key = \"attribute:user\"",
    );
    let err = stderr(&validate());
    assert!(
        err.contains(
            "connectors[0].sink.partition_key: \"attribute:NAME\" needs a DynamoDB source"
        ),
        "{err}"
    );
}

/// Writes `text` to `name` in a fresh directory; returns (dir, path).
fn config_file(name: &str, text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let path = path.to_str().unwrap().to_string();
    (dir, path)
}

#[test]
fn a_syntax_error_names_the_file_it_is_in() {
    let (_dir, path) = config_file("other.toml", "[worker\nid = \"a\"\n");
    let o = run(&["validate", "--config", &path], &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.starts_with(&format!("{path}: ")), "{err}");
    assert!(!err.contains("connectors.toml"), "{err}");
}

#[test]
fn an_unknown_type_is_one_problem_not_a_cascade() {
    let text = r#"
[[connectors]]
name = "orders"
[connectors.source]
type = "dynamodb-stream"
table = "orders"
[connectors.sink]
type = "filez"
path = "out.jsonl"
"#;
    let (_dir, path) = config_file("connectors.toml", text);
    let o = run(&["validate", "--config", &path], &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with("connectors[0].source.type: unknown value \"dynamodb-stream\""),
        "{err}"
    );
    assert!(
        lines[1].starts_with("connectors[0].sink.type: unknown value \"filez\""),
        "{err}"
    );
}

#[test]
fn connector_keys_are_overridden_by_connector_name_or_index() {
    let example = repo_example();
    // The repository example's connector is "orders": by name (any case) and by index.
    for var in [
        "SHARDBRIDGE__CONNECTORS__ORDERS__SOURCE__POLL_IDLE_MS",
        "SHARDBRIDGE__CONNECTORS__orders__SOURCE__POLL_IDLE_MS",
        "SHARDBRIDGE__CONNECTORS__0__SOURCE__POLL_IDLE_MS",
    ] {
        let o = run(&["validate", "--config", &example], &[(var, "100")]);
        assert_eq!(o.status.code(), Some(0), "{var}: {}", stderr(&o));
        // The value reaches the connector's key: an out-of-range one is refused there.
        let o = run(&["validate", "--config", &example], &[(var, "999999")]);
        assert_eq!(o.status.code(), Some(2));
        assert!(
            stderr(&o).contains("connectors[0].source.poll_idle_ms: 999999 is out of range"),
            "{var}: {}",
            stderr(&o)
        );
    }
    let o = run(
        &["validate", "--config", &example],
        &[("SHARDBRIDGE__CONNECTORS__ORDERS__SINK__COLOUR", "x")],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("connectors[0].sink.colour: unknown key"),
        "{}",
        stderr(&o)
    );
    let o = run(
        &["validate", "--config", &example],
        &[("SHARDBRIDGE__CONNECTORS__INVOICES__SINK__PATH", "x.jsonl")],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(
            "SHARDBRIDGE__CONNECTORS__INVOICES__SINK__PATH: no connector named or numbered INVOICES"
        ),
        "{}",
        stderr(&o)
    );
}

#[test]
fn aws_timeouts_are_checked() {
    let example = repo_example();
    let o = run(
        &["validate", "--config", &example],
        &[
            ("SHARDBRIDGE__AWS__ATTEMPT_TIMEOUT_MS", "5000"),
            ("SHARDBRIDGE__AWS__OPERATION_TIMEOUT_MS", "20000"),
            ("SHARDBRIDGE__AWS__CONNECT_TIMEOUT_MS", "1000"),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = run(
        &["validate", "--config", &example],
        &[
            ("SHARDBRIDGE__AWS__ATTEMPT_TIMEOUT_MS", "5000"),
            ("SHARDBRIDGE__AWS__OPERATION_TIMEOUT_MS", "1000"),
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o)
            .contains("aws.attempt_timeout_ms: 5000 must not exceed operation_timeout_ms (1000)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn kafka_sinks_are_checked_key_by_key_and_never_print_option_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kafka.toml");
    let write = |source: &str, sink: &str| {
        std::fs::write(
            &path,
            format!(
                "[[connectors]]\nname = \"k\"\n[connectors.source]\n{source}\n\
                 [connectors.format]\ntype = \"lambda\"\n[connectors.sink]\ntype = \"kafka\"\n{sink}\n"
            ),
        )
        .unwrap();
    };
    let ddb = "type = \"dynamodb-streams\"\ntable = \"orders\"";
    let validate = || run(&["validate", "--config", path.to_str().unwrap()], &[]);
    // The commented example of connectors.toml, as a user would uncomment it.
    let example = std::fs::read_to_string(repo_example()).unwrap();
    let kafka: String = example
        .lines()
        .skip_while(|l| !l.starts_with("# type = \"kafka\""))
        .map(|l| l.trim_start_matches("# ").trim_start_matches('#'))
        .filter(|l| !l.starts_with("type = "))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("[connectors.sink.options]", "[connectors.sink.options]\n");
    assert!(
        kafka.contains("brokers = "),
        "the example has a Kafka sink:\n{kafka}"
    );
    write(ddb, &kafka);
    let o = validate();
    assert_eq!(o.status.code(), Some(0), "{kafka}\n{}", stderr(&o));

    write(
        ddb,
        "brokers = \"b:9092\"\ntopic = \"cdc/{tabel}\"\nkey = \"random\"\nexactly_once = \"maybe\"\n\
         [connectors.sink.options]\n\"transactional.id\" = \"x\"\n\"sasl.pasword\" = \"hunter2\"\n\
         \"linger.ms\" = \"hunter3\"",
    );
    let o = validate();
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    for want in [
        "connectors[0].sink.topic: ",
        "connectors[0].sink.key: \"random\" is not one of",
        "connectors[0].sink.exactly_once: expected a boolean",
        "connectors[0].sink.options.transactional.id: set by shardbridge",
        "connectors[0].sink.options.sasl.pasword: ",
        "connectors[0].sink.options.linger.ms: ",
    ] {
        assert!(err.contains(want), "{want}\n{err}");
    }
    assert!(
        !err.contains("hunter"),
        "an option's value was printed:\n{err}"
    );
    write("", "topic = \"t\"");
    assert!(stderr(&validate()).contains("connectors[0].sink.brokers: missing"));
    // Kinesis records have no attributes to key by, and no table.
    write(
        "type = \"kinesis\"\nstream = \"clicks\"",
        "brokers = \"b:9092\"\ntopic = \"{table}\"\nkey = \"attribute:user\"",
    );
    let err = stderr(&validate());
    for want in [
        "connectors[0].sink.key: \"attribute:NAME\" needs a DynamoDB source",
        "connectors[0].sink.topic: {table} needs a DynamoDB source",
    ] {
        assert!(err.contains(want), "{want}\n{err}");
    }
}

#[test]
fn filter_patterns_are_checked_naming_the_pattern_and_its_path() {
    let good = r#"
[[connectors]]
name = "f"
filter = ['{"eventName": ["INSERT", "MODIFY"]}', { dynamodb = { NewImage = { status = { S = [{ prefix = "open" }] } } } }]
[connectors.source]
type = "dynamodb-streams"
table = "orders"
[connectors.sink]
type = "stdout"
"#;
    let (_dir, path) = config_file("f.toml", good);
    let o = run(&["validate", "--config", &path], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for (bad, says) in [
        (
            r#"filter = ['{"eventName": "INSERT"}']"#,
            "connectors[0].filter: pattern 0: eventName",
        ),
        (
            r#"filter = ['{"eventName": ["INSERT"]}', '{"dynamodb": {"NewImage": {"n": {"N": [{"numeric": [">", "x"]}]}}}}']"#,
            "connectors[0].filter: pattern 1: dynamodb.NewImage.n.N",
        ),
        (
            r#"filter = ['not json']"#,
            "connectors[0].filter: pattern 0",
        ),
        (
            r#"filter = [1]"#,
            "connectors[0].filter[0]: expected a pattern",
        ),
    ] {
        let (_dir, path) = config_file("f.toml", &good.replace(good.lines().nth(3).unwrap(), bad));
        let o = run(&["validate", "--config", &path], &[]);
        assert_eq!(o.status.code(), Some(2), "{bad}");
        assert!(stderr(&o).contains(says), "{says} in {}", stderr(&o));
    }
}

/// A file sink whose path cannot hold the file (under a file, or a directory itself) is a
/// configuration error that `validate` names; a missing directory is created by the sink.
#[test]
fn validate_refuses_a_file_sink_path_that_cannot_hold_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    let config = |path: &std::path::Path| {
        format!(
            "[[connectors]]\nname = \"orders\"\n[connectors.source]\ntype = \"dynamodb-streams\"\n\
             table = \"orders\"\n[connectors.sink]\ntype = \"file\"\npath = \"{}\"\n",
            path.display()
        )
    };
    let file = dir.path().join("c.toml");
    for (path, expected) in [
        (blocker.join("out.jsonl"), "is not a directory"),
        (dir.path().to_path_buf(), "is a directory, not a file"),
    ] {
        std::fs::write(&file, config(&path)).unwrap();
        let o = run(&["validate", "--config", file.to_str().unwrap()], &[]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(err.starts_with("connectors[0].sink.path: "), "{err}");
        assert!(err.contains(expected), "{err}");
    }
    std::fs::write(&file, config(&dir.path().join("new/dir/out.jsonl"))).unwrap();
    let o = run(&["validate", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// `starting_position = "at_timestamp"` takes Lambda's `starting_position_timestamp` beside it;
/// either without the other is refused, naming the key.
#[test]
fn validate_checks_the_at_timestamp_pair() {
    let config = |source_keys: &str| {
        format!(
            "[[connectors]]\nname = \"orders\"\n[connectors.source]\ntype = \"kinesis\"\n\
             stream = \"orders\"\n{source_keys}\n[connectors.sink]\ntype = \"stdout\"\n"
        )
    };
    let cases = [
        (
            "starting_position = \"at_timestamp\"",
            Some("connectors[0].source.starting_position_timestamp: missing"),
        ),
        (
            "starting_position_timestamp = \"2026-11-30T12:00:00Z\"",
            Some("connectors[0].source.starting_position_timestamp: only with"),
        ),
        (
            "starting_position = \"at_timestamp\"\nstarting_position_timestamp = \"yesterday\"",
            Some("connectors[0].source.starting_position_timestamp: \"yesterday\": expected an RFC 3339"),
        ),
        (
            "starting_position = \"at_timestamp\"\nstarting_position_timestamp = \"2026-11-30T12:00:00Z\"",
            None,
        ),
        ("starting_position = \"2026-11-30T12:00:00Z\"", None),
    ];
    validate_cases(config, &cases);
}

/// `max_retry_attempts` and `max_record_age_ms` set records aside, so they need a destination;
/// `[connectors.on_failure]` names its type and that type's keys.
#[test]
fn validate_checks_the_failure_destination() {
    let config = |keys: &str| {
        format!(
            "[[connectors]]\nname = \"orders\"\n{keys}\n[connectors.source]\ntype = \"dynamodb-streams\"\n\
             table = \"orders\"\n[connectors.sink]\ntype = \"stdout\"\n"
        )
    };
    let cases = [
        (
            "max_retry_attempts = 3",
            Some("connectors[0].max_retry_attempts: needs [connectors.on_failure]"),
        ),
        (
            "max_record_age_ms = 60000",
            Some("connectors[0].max_record_age_ms: needs [connectors.on_failure]"),
        ),
        (
            "[connectors.on_failure]\ntype = \"sqs\"",
            Some("connectors[0].on_failure.queue_url: missing"),
        ),
        (
            "[connectors.on_failure]\ntype = \"pigeon\"",
            Some("connectors[0].on_failure.type: "),
        ),
        (
            "max_retry_attempts = 3\nmax_record_age_ms = 60000\n[connectors.on_failure]\ntype = \"sqs\"\nqueue_url = \"https://sqs.us-east-1.amazonaws.com/1/dlq\"",
            None,
        ),
        (
            "[connectors.on_failure]\ntype = \"s3\"\nbucket = \"dlq\"\nprefix = \"failed/\"",
            None,
        ),
        (
            "[connectors.on_failure]\ntype = \"kafka\"\nbrokers = \"b:9092\"\ntopic = \"dlq\"",
            None,
        ),
        (
            "[connectors.on_failure]\ntype = \"kinesis\"\nstream_arn = \"arn:aws:kinesis:us-east-1:1:stream/dlq\"",
            None,
        ),
        (
            "[connectors.on_failure]\ntype = \"kinesis\"\nstream_arn = \"dlq\"",
            Some("connectors[0].on_failure.stream_arn: \"dlq\" is not a Kinesis stream ARN"),
        ),
    ];
    validate_cases(config, &cases);
}

/// `parallelization_factor` is 1-10, and only with sinks whose recovery does not depend on how
/// a batch was cut into calls (each refusal says why).
#[test]
fn validate_checks_the_parallelization_factor() {
    let config = |keys: &str| {
        let (factor, sink) = keys.split_once('|').unwrap();
        format!(
            "[[connectors]]\nname = \"orders\"\n{factor}\n[connectors.source]\ntype = \"dynamodb-streams\"\n\
             table = \"orders\"\n[connectors.sink]\n{sink}\n"
        )
    };
    let cases = [
        ("parallelization_factor = 10|type = \"stdout\"", None),
        (
            "parallelization_factor = 4|type = \"file\"\npath = \"out.jsonl\"",
            None,
        ),
        (
            "parallelization_factor = 4|type = \"kinesis\"\nstream = \"target\"",
            None,
        ),
        (
            "parallelization_factor = 0|type = \"stdout\"",
            Some("connectors[0].parallelization_factor: "),
        ),
        (
            "parallelization_factor = 11|type = \"stdout\"",
            Some("connectors[0].parallelization_factor: "),
        ),
        (
            "parallelization_factor = 2|type = \"s3\"\nbucket = \"orders-out\"",
            Some("connectors[0].parallelization_factor: must be 1 with this sink: the s3 sink writes a batch as one object"),
        ),
        (
            "parallelization_factor = 2|type = \"kafka\"\nbrokers = \"b:9092\"\ntopic = \"t\"",
            Some("connectors[0].parallelization_factor: must be 1 with this sink: the kafka sink commits a batch in one transaction"),
        ),
        ("parallelization_factor = 1|type = \"s3\"\nbucket = \"orders-out\"", None),
    ];
    validate_cases(config, &cases);
}

/// The dynamodb sink: a target table, a DynamoDB Streams source, its own form of the records
/// (no other format) and no lanes; `[sink.aws]` overrides the region for another region.
#[test]
fn validate_checks_the_dynamodb_sink() {
    let config = |keys: &str| {
        let (connector, rest) = keys.split_once('|').unwrap();
        let (source, sink) = rest.split_once('|').unwrap();
        format!(
            "[[connectors]]\nname = \"orders\"\n{connector}\n[connectors.source]\n{source}\n\
             [connectors.sink]\ntype = \"dynamodb\"\n{sink}\n"
        )
    };
    let ddb = "type = \"dynamodb-streams\"\ntable = \"orders\"";
    let cases = [
        (
            format!(
                "|{ddb}|table = \"orders-replica\"\n[connectors.sink.aws]\nregion = \"eu-west-1\""
            ),
            None,
        ),
        (
            format!("|{ddb}|"),
            Some("connectors[0].sink.table: missing"),
        ),
        (
            "|type = \"kinesis\"\nstream = \"events\"|table = \"t\"".to_string(),
            Some("connectors[0].sink.type: \"dynamodb\" needs a DynamoDB Streams source"),
        ),
        (
            format!("[connectors.format]\ntype = \"plain\"|{ddb}|table = \"t\""),
            Some(
                "connectors[0].format.type: the dynamodb sink writes the changed items themselves",
            ),
        ),
        (
            format!("parallelization_factor = 2|{ddb}|table = \"t\""),
            Some(
                "connectors[0].parallelization_factor: must be 1 with this sink: the dynamodb sink",
            ),
        ),
    ];
    let cases: Vec<(&str, Option<&str>)> = cases.iter().map(|(k, e)| (k.as_str(), *e)).collect();
    validate_cases(config, &cases);
}

#[test]
fn validate_checks_the_renewal_mode() {
    let config = |keys: &str| {
        format!(
            "[[connectors]]\nname = \"orders\"\n[connectors.source]\ntype = \"dynamodb-streams\"\n\
             table = \"orders\"\n[connectors.leases]\n{keys}\n[connectors.sink]\ntype = \"stdout\"\n"
        )
    };
    validate_cases(
        config,
        &[
            ("renewal = \"heartbeat\"", None),
            ("renewal = \"per_lease\"", None),
            (
                "renewal = \"beat\"",
                Some("connectors[0].leases.renewal: unknown value \"beat\", expected one of \"per_lease\", \"heartbeat\""),
            ),
        ],
    );
}

#[test]
fn validate_checks_the_snapshot() {
    let config = |keys: &str| {
        let (source, snapshot) = keys.split_once('|').unwrap();
        format!(
            "[[connectors]]\nname = \"orders\"\n[connectors.source]\n{source}\n\
             [connectors.snapshot]\n{snapshot}\n[connectors.sink]\ntype = \"stdout\"\n"
        )
    };
    let ddb = "type = \"dynamodb-streams\"\ntable = \"orders\"";
    let cases = [
        (
            format!("{ddb}|mode = \"initial\"\nsegments = 8\nrate_limit = 500\nconsistent_read = true\npage_size = 500\nclock_margin_ms = 5000"),
            None,
        ),
        (format!("{ddb}|mode = \"initial_only\""), None),
        (format!("{ddb}|"), None),
        (
            format!("{ddb}|mode = \"always\""),
            Some("connectors[0].snapshot.mode: unknown value \"always\", expected one of \"never\", \"initial\", \"initial_only\""),
        ),
        (
            format!("{ddb}|mode = \"initial\"\nsegments = 0"),
            Some("connectors[0].snapshot.segments: "),
        ),
        (
            format!("{ddb}|mode = \"initial\"\nsegmets = 4"),
            Some("connectors[0].snapshot.segmets: unknown key"),
        ),
        (
            "type = \"kinesis\"\nstream = \"events\"|mode = \"initial\"".to_string(),
            Some("connectors[0].snapshot.mode: a snapshot needs a DynamoDB Streams source"),
        ),
        (
            format!("{ddb}\nstarting_position = \"latest\"|mode = \"initial\""),
            Some("connectors[0].source.starting_position: with a snapshot the stream is read from where the snapshot began"),
        ),
    ];
    let cases: Vec<(&str, Option<&str>)> = cases.iter().map(|(k, e)| (k.as_str(), *e)).collect();
    validate_cases(config, &cases);
}

/// `validate` on `config(keys)` for each case: exit 2 with stderr starting with the expected
/// text, or exit 0 when none is expected.
fn validate_cases(config: impl Fn(&str) -> String, cases: &[(&str, Option<&str>)]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    for (keys, expected) in cases {
        std::fs::write(&file, config(keys)).unwrap();
        let o = run(&["validate", "--config", file.to_str().unwrap()], &[]);
        let err = stderr(&o);
        match expected {
            Some(text) => {
                assert_eq!(o.status.code(), Some(2), "{keys}: {err}");
                assert!(err.starts_with(text), "{keys}: {err}");
            }
            None => assert_eq!(o.status.code(), Some(0), "{keys}: {err}"),
        }
    }
}
