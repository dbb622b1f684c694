//! Failure reporting: an unreachable endpoint, and /readyz while a connector is not running.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::time::Duration;

use common::*;

fn one_connector(name: &str, endpoint: &str, extra: &str) -> String {
    format!(
        r#"
[[connectors]]
name = "{name}"
[connectors.source]
type = "dynamodb-streams"
table = "orders"
max_retries = 1
[connectors.source.aws]
endpoint_url = "{endpoint}"
{extra}
[connectors.sink]
type = "stdout"
"#
    )
}

/// An endpoint that refuses connections heals by itself (a server restarting): the process
/// stays up, retrying, and /readyz says what it waits for, naming the endpoint.
#[test]
fn an_unreachable_endpoint_is_waited_for_and_named_in_readyz() {
    let dir = tempfile::tempdir().unwrap();
    let dead = free_port();
    let port = free_port();
    let config = format!(
        "[worker]\nlisten = \"127.0.0.1:{port}\"\n[aws]\nregion = \"us-east-1\"\n{}",
        one_connector("orders", &format!("http://127.0.0.1:{dead}"), "")
    );
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config).unwrap();
    let mut run = Running::start(&path, &dir.path().join("run.log"));
    let body = wait_for(
        "/readyz names the failing call",
        Duration::from_secs(30),
        || {
            let (status, body) = http_get(port, "/readyz")?;
            (status == 503 && body.contains("connect_source")).then_some(body)
        },
    );
    assert!(
        body.contains("orders") && body.contains("failures in a row"),
        "{body}"
    );
    assert!(
        body.contains(&format!("127.0.0.1:{dead}")) || body.contains("onnection refused"),
        "names the endpoint: {body}"
    );
    assert_eq!(http_get(port, "/healthz").map(|(s, _)| s), Some(200));
    std::thread::sleep(Duration::from_secs(3));
    assert!(run.child.try_wait().unwrap().is_none(), "still running");
    run.stop(Duration::from_secs(30));
    let log = run.log_text();
    assert!(!log.contains("panicked"), "{log}");
    // Every retry of the unreachable endpoint is one readable line.
    assert!(log.contains("Connection refused"), "{log}");
    let long = long_lines(&log, 500);
    assert!(long.is_empty(), "log lines over 500 characters: {long:#?}");
}

/// A connector whose endpoint accepts connections but never answers stays "starting": /readyz
/// is 503 and says which connector is not running, while /healthz is 200.
#[test]
fn readyz_is_503_until_every_connector_runs() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut conn in silent.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = conn.set_read_timeout(Some(Duration::from_millis(10)));
            let _ = conn.read(&mut buf);
            held.push(conn); // never answer
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!(
        "[worker]\nlisten = \"127.0.0.1:{port}\"\n[aws]\nregion = \"us-east-1\"\n{}",
        one_connector("stuck", &format!("http://127.0.0.1:{silent_port}"), "")
    );
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config).unwrap();
    let mut run = Running::start(&path, &dir.path().join("log"));
    let (status, body) = wait_for("/readyz to answer", Duration::from_secs(20), || {
        http_get(port, "/readyz")
    });
    assert_eq!(status, 503, "{body}");
    assert_eq!(body.trim(), "stuck: starting");
    assert_eq!(http_get(port, "/healthz").unwrap().0, 200);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(http_get(port, "/readyz").unwrap().0, 503);
    // A stop request during start-up is honoured at once.
    assert_eq!(run.stop(Duration::from_secs(15)), 0, "{}", run.log_text());
}

/// One failing connector is reported (/readyz 503 naming it, exit status 1 at the end) and does
/// not stop the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_connector_does_not_stop_the_others() {
    use aws_sdk_dynamodb::types::StreamViewType;
    let endpoint = aws_endpoint();
    let ddb = aws_sdk_dynamodb::Client::new(&sdk_config(&endpoint).await);
    let table = unique("healthy");
    common::workload::create_table(&ddb, &table, StreamViewType::NewAndOldImages).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("healthy.jsonl");
    let port = free_port();
    let config = format!(
        r#"
[worker]
listen = "127.0.0.1:{port}"
[aws]
region = "us-east-1"
endpoint_url = "{endpoint}"

[[connectors]]
name = "healthy"
[connectors.source]
type = "dynamodb-streams"
table = "{table}"
poll_idle_ms = 50
[connectors.leases]
table = "{leases}"
[connectors.sink]
type = "file"
path = "{out}"

[[connectors]]
name = "broken"
[connectors.source]
type = "dynamodb-streams"
table = "{missing}"
[connectors.sink]
type = "stdout"
"#,
        leases = unique("healthy-leases"),
        missing = unique("no-such-table"),
        out = out.display()
    );
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config).unwrap();
    let mut run = Running::start(&path, &dir.path().join("log"));
    let body = wait_for(
        "the broken connector to fail while the other runs",
        Duration::from_secs(30),
        || {
            http_get(port, "/readyz")
                .filter(|(s, b)| {
                    *s == 503 && b.contains("broken: failed") && b.contains("healthy: running")
                })
                .map(|(_, b)| b)
        },
    );
    assert!(
        body.contains("ResourceNotFound") || body.contains("not found"),
        "says why: {body}"
    );

    // The healthy connector keeps forwarding.
    let plan = common::workload::plan(10, 30);
    common::workload::apply(&ddb, &table, &plan).await;
    wait_for(
        "30 records from the healthy connector",
        Duration::from_secs(30),
        || (line_count(&out) >= 30).then_some(()),
    );
    assert_eq!(
        run.stop(Duration::from_secs(30)),
        1,
        "a connector failed: exit 1"
    );
    let log = run.log_text();
    // One line that says what failed and what to fix.
    let line = log
        .lines()
        .find(|l| l.starts_with("shardbridge: connector broken failed: "))
        .unwrap_or_else(|| panic!("a line naming the failed connector: {log}"));
    assert!(line.contains("ResourceNotFoundException"), "{line}");
    assert!(
        line.contains("check the name, region and account"),
        "{line}"
    );
    assert!(line.len() < 300, "{} characters: {line}", line.len());
    let long = long_lines(&log, 500);
    assert!(long.is_empty(), "log lines over 500 characters: {long:#?}");
    assert!(!log.contains("connector healthy failed"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}
