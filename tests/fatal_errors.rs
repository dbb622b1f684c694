//! Errors that will not heal by themselves (access denied, no credentials; a missing table is
//! in tests/health.rs) stop their connector at once, others keep running, and each is one
//! line under 300 characters that says what to fix. No log line of a failing run exceeds 500
//! characters.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// The line `shardbridge: connector NAME failed: …` of a finished run.
fn failure_line(log: &str, connector: &str) -> String {
    let prefix = format!("shardbridge: connector {connector} failed: ");
    log.lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{log}"))
        .to_string()
}

fn assert_readable(log: &str, line: &str) {
    assert!(
        line.chars().count() < 300,
        "{} characters: {line}",
        line.len()
    );
    let long = long_lines(log, 500);
    assert!(long.is_empty(), "log lines over 500 characters: {long:#?}");
    for debug_dump in [
        "ErrorMetadata",
        "ServiceError {",
        "DispatchFailure(",
        "Some(",
    ] {
        assert!(
            !log.contains(debug_dump),
            "a Debug dump ({debug_dump}) in:\n{log}"
        );
    }
}

/// A moto server of this test's own, whose IAM checks the test turns on.
struct PrivateMoto {
    child: std::process::Child,
    endpoint: String,
}

impl PrivateMoto {
    fn start(log: &std::path::Path) -> PrivateMoto {
        let port = free_port();
        let child = Command::new(test_python())
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("start a private moto server");
        let endpoint = format!("http://127.0.0.1:{port}");
        wait_for("the private moto server", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        PrivateMoto { child, endpoint }
    }
}

impl Drop for PrivateMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_stops_its_connector_and_names_the_action() {
    let dir = tempfile::tempdir().unwrap();
    let moto = PrivateMoto::start(&dir.path().join("moto.log"));
    let setup = Command::new(test_python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/moto_restricted_user.py"
        ))
        .args([&moto.endpoint, "orders", "denied-target"])
        .output()
        .expect("run the IAM setup");
    assert!(
        setup.status.success(),
        "IAM setup: {}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let keys = String::from_utf8(setup.stdout).unwrap();
    let (key_id, secret) = keys.trim().split_once(' ').expect("key id and secret");

    let out = dir.path().join("ok.jsonl");
    let port = free_port();
    let config = format!(
        r#"
[worker]
listen = "127.0.0.1:{port}"
[aws]
region = "us-east-1"
endpoint_url = "{endpoint}"

[[connectors]]
name = "ok"
[connectors.source]
type = "dynamodb-streams"
table = "orders"
poll_idle_ms = 50
[connectors.leases]
table = "ok-leases"
[connectors.sink]
type = "file"
path = "{out}"

[[connectors]]
name = "denied"
[connectors.source]
type = "dynamodb-streams"
table = "orders"
poll_idle_ms = 50
[connectors.leases]
table = "denied-leases"
[connectors.sink]
type = "kinesis"
stream = "denied-target"
"#,
        endpoint = moto.endpoint,
        out = out.display()
    );
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config).unwrap();
    let mut run = Running::start_with_env(
        &path,
        &dir.path().join("run.log"),
        &[
            ("AWS_ACCESS_KEY_ID", key_id),
            ("AWS_SECRET_ACCESS_KEY", secret),
        ],
    );

    // Changes, written as the restricted user (the only identity moto now accepts).
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&moto.endpoint)
        .credentials_provider(aws_credential_types::Credentials::new(
            key_id,
            secret,
            None,
            None,
            "restricted",
        ))
        .load()
        .await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let plan = workload::plan(5, 20);
    workload::apply(&ddb, "orders", &plan).await;

    let body = wait_for(
        "the denied connector to fail while the other runs",
        Duration::from_secs(60),
        || {
            http_get(port, "/readyz")
                .filter(|(_, b)| b.contains("denied: failed") && b.contains("ok: running"))
                .map(|(_, b)| b)
        },
    );
    eprintln!("/readyz: {body}");
    wait_for(
        "20 records from the ok connector",
        Duration::from_secs(60),
        || (line_count(&out) >= 20).then_some(()),
    );
    assert_eq!(
        run.stop(Duration::from_secs(30)),
        1,
        "a connector failed: exit 1"
    );
    let log = run.log_text();
    let line = failure_line(&log, "denied");
    eprintln!("{line}");
    // Which action, on what, and what to do about it.
    assert!(line.contains("AccessDenied"), "{line}");
    assert!(line.contains("kinesis:DescribeStreamSummary"), "{line}");
    assert!(line.contains("denied-target"), "{line}");
    assert!(
        line.contains("grant it to the identity shardbridge runs as"),
        "{line}"
    );
    assert!(!log.contains("connector ok failed"), "{log}");
    assert_readable(&log, &line);
}

#[test]
fn missing_credentials_stop_with_what_to_set() {
    let endpoint = aws_endpoint();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
[worker]
listen = "127.0.0.1:0"
[aws]
region = "us-east-1"
endpoint_url = "{endpoint}"
[[connectors]]
name = "orders"
[connectors.source]
type = "dynamodb-streams"
table = "{table}"
[connectors.sink]
type = "stdout"
"#,
        table = unique("creds")
    );
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config).unwrap();
    let log_path = dir.path().join("run.log");
    let nowhere = dir.path().join("absent");
    let child = shardbridge()
        // No credentials anywhere the default chain looks (instance metadata is off).
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
        .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        .env("AWS_CONFIG_FILE", &nowhere)
        .env("AWS_SHARED_CREDENTIALS_FILE", &nowhere)
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut run = Running {
        child,
        log: log_path,
    };
    // Not retried: it ends at once.
    assert_eq!(run.wait(Duration::from_secs(30)), 1, "{}", run.log_text());
    let log = run.log_text();
    let line = failure_line(&log, "orders");
    eprintln!("{line}");
    assert!(line.contains("no AWS credentials found"), "{line}");
    assert!(line.contains("AWS_ACCESS_KEY_ID"), "{line}");
    assert!(!log.contains("retrying"), "not retried:\n{log}");
    assert_readable(&log, &line);
}
