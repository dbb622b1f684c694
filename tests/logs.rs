//! Logs: `--log-format json` for log pipelines (connector and shard as fields), and no secret
//! given in the configuration or the environment ever reaches a log line, an error or
//! `validate`'s output.

mod common;

use std::time::Duration;

use aws_sdk_dynamodb::types::StreamViewType;
use common::workload;
use common::*;

fn config(endpoint: &str, table: &str, sink: &str) -> String {
    format!(
        r#"
[worker]
id = "{}"
listen = "127.0.0.1:{}"

[aws]
region = "us-east-1"
endpoint_url = "{endpoint}"

[[connectors]]
name = "logs"
[connectors.source]
type = "dynamodb-streams"
table = "{table}"
poll_idle_ms = 100
[connectors.leases]
table = "{}"
[connectors.format]
type = "plain"
[connectors.sink]
{sink}
"#,
        unique("worker"),
        free_port(),
        unique("logs-leases")
    )
}

async fn table_with_changes(endpoint: &str) -> String {
    let ddb = aws_sdk_dynamodb::Client::new(&sdk_config(endpoint).await);
    let table = unique("logs");
    workload::create_table(&ddb, &table, StreamViewType::NewAndOldImages).await;
    workload::apply(&ddb, &table, &workload::plan(10, 30)).await;
    table
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_connector_and_shard_as_fields() {
    let endpoint = aws_endpoint();
    let table = table_with_changes(&endpoint).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let path = dir.path().join("c.toml");
    let sink = format!("type = \"file\"\npath = \"{}\"", out.display());
    std::fs::write(&path, config(&endpoint, &table, &sink)).unwrap();
    let log = dir.path().join("run.log");
    let mut run = Running::start_with_env(&path, &log, &[("SHARDBRIDGE_LOG_FORMAT", "json")]);
    wait_for("the changes", Duration::from_secs(60), || {
        (line_count(&out) >= 30).then_some(())
    });
    assert_eq!(run.stop(Duration::from_secs(30)), 0, "{}", run.log_text());
    let text = run.log_text();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines
        .iter()
        .all(|l| l["level"].is_string() && l["timestamp"].is_string()));
    let took = lines
        .iter()
        .find(|l| l["message"] == "took lease")
        .unwrap_or_else(|| panic!("a 'took lease' line in\n{text}"));
    assert_eq!(took["connector"], "logs");
    assert!(
        took["shard"].as_str().is_some_and(|s| !s.is_empty()),
        "{took}"
    );
}

const SECRETS: [&str; 4] = [
    "kafka-pw-SECRET-4711",
    "aws-key-SECRET-0815",
    "aws-token-SECRET-1234",
    "ssl-pw-SECRET-9999",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_log_line_an_error_or_validate() {
    let endpoint = aws_endpoint();
    let bootstrap = common::kafka::bootstrap();
    let table = table_with_changes(&endpoint).await;
    let dir = tempfile::tempdir().unwrap();
    // A SASL password the broker (no SASL listener) keeps refusing: errors are logged, over
    // and over, at debug level too.
    let sink = format!(
        "type = \"kafka\"\nbrokers = \"{bootstrap}\"\ntopic = \"{}\"\ncall_timeout_ms = 2000\n\
         [connectors.sink.options]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\
         \"sasl.mechanism\" = \"PLAIN\"\n\"sasl.username\" = \"user\"\n\
         \"sasl.password\" = \"{}\"\n\"ssl.key.password\" = \"{}\"",
        unique("secret"),
        SECRETS[0],
        SECRETS[3]
    );
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config(&endpoint, &table, &sink)).unwrap();
    let env = [
        ("RUST_LOG", "debug"),
        ("AWS_SECRET_ACCESS_KEY", SECRETS[1]),
        ("AWS_SESSION_TOKEN", SECRETS[2]),
    ];
    for format in ["text", "json"] {
        let log = dir.path().join(format!("{format}.log"));
        let mut env = env.to_vec();
        env.push(("SHARDBRIDGE_LOG_FORMAT", format));
        let mut run = Running::start_with_env(&path, &log, &env);
        wait_for("the connector at work", Duration::from_secs(60), || {
            run.log_text().contains("took lease").then_some(())
        });
        std::thread::sleep(Duration::from_secs(5));
        run.stop(Duration::from_secs(60));
        let text = run.log_text();
        assert!(
            text.lines().count() > 20,
            "debug logs were written:\n{text}"
        );
        // The path that holds the password was at work: the broker refused the SASL handshake.
        assert!(
            text.contains("SASL"),
            "{format}: no SASL error logged:\n{text}"
        );
        for secret in SECRETS {
            assert!(!text.contains(secret), "{format}: {secret} in the log");
        }
    }
    // validate: a bad value next to the secret, and the secret key itself misspelt.
    let bad = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"sasl.password\"", "\"sasl.passwd\"")
        .replace(
            "\"sasl.username\" = \"user\"",
            "\"linger.ms\" = \"aws-key-SECRET-0815\"",
        );
    std::fs::write(&path, bad).unwrap();
    let o = shardbridge()
        .args(["validate", "--config"])
        .arg(&path)
        .env("AWS_SECRET_ACCESS_KEY", SECRETS[1])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        all.contains("sasl.passwd") && all.contains("linger.ms"),
        "{all}"
    );
    for secret in SECRETS {
        assert!(!all.contains(secret), "validate printed {secret}:\n{all}");
    }
}
