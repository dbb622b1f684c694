//! Shared by the integration tests: endpoints of the local servers (scripts/dev-servers.sh),
//! AWS clients for them, running the shardbridge binary, and a tiny HTTP client.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub mod fault_proxy;
pub mod harness;
pub mod kafka;
pub mod kafka_broker;
pub mod memory_lease_store;
pub mod scripted_source;
pub mod stream_model;
pub mod workload;

/// The moto server (DynamoDB, DynamoDB Streams, S3). A test that cannot reach it fails: nothing
/// passes by skipping.
pub fn aws_endpoint() -> String {
    let url = std::env::var("SHARDBRIDGE_TEST_AWS_ENDPOINT")
        .unwrap_or_else(|_| "http://127.0.0.1:5055".to_string());
    let hostport = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let addr = hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("bad SHARDBRIDGE_TEST_AWS_ENDPOINT {url}"));
    if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
        panic!(
            "cannot reach the moto server at {url}: start the local servers with \
             `scripts/dev-servers.sh start` and `eval \"$(scripts/dev-servers.sh env)\"`"
        );
    }
    url
}

pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_credential_types::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .load()
        .await
}

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn shardbridge() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shardbridge"));
    cmd.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env("RUST_LOG", "info");
    cmd
}

/// A running `shardbridge run`, killed when dropped. Its stderr goes to a log file.
pub struct Running {
    pub child: Child,
    pub log: PathBuf,
}

impl Running {
    pub fn start(config: &Path, log: &Path) -> Running {
        Running::start_with_env(config, log, &[])
    }

    pub fn start_with_env(config: &Path, log: &Path, env: &[(&str, &str)]) -> Running {
        let err = std::fs::File::create(log).unwrap();
        let child = shardbridge()
            .envs(env.iter().copied())
            .arg("run")
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("start shardbridge");
        Running {
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// SIGTERM, then the exit code (panics if it does not stop within `limit`).
    pub fn stop(&mut self, limit: Duration) -> i32 {
        self.signal("TERM");
        self.wait(limit)
    }

    pub fn wait(&mut self, limit: Duration) -> i32 {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "shardbridge did not exit in time; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `check` returns Some, or panics with `what` after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// GET over HTTP/1.0: (status, body), or None when nothing listens yet.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// The value of a Prometheus sample with exactly these labels (e.g. `connector="a"`).
pub fn metric_value(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
        if metric != name || !rest.contains(labels) {
            return None;
        }
        value.parse().ok()
    })
}

pub fn read_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

pub fn line_count(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// The Python of the test servers (scripts/dev-servers.sh installs moto, boto3 and
/// aws-lambda-powertools there).
pub fn test_python() -> String {
    std::env::var("SHARDBRIDGE_TEST_PYTHON")
        .unwrap_or_else(|_| format!("{}/.venv/bin/python", env!("CARGO_MANIFEST_DIR")))
}

/// The kinesalite server. A test that cannot reach it fails.
pub fn kinesis_endpoint() -> String {
    let url = std::env::var("SHARDBRIDGE_TEST_KINESIS_ENDPOINT")
        .unwrap_or_else(|_| "http://127.0.0.1:4567".to_string());
    let hostport = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let reachable = hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    assert!(
        reachable,
        "cannot reach kinesalite at {url}: start the local servers with \
         `scripts/dev-servers.sh start` and `eval \"$(scripts/dev-servers.sh env)\"`"
    );
    url
}

/// The lines of `log` longer than `max` characters (a readable log has none).
pub fn long_lines(log: &str, max: usize) -> Vec<String> {
    log.lines()
        .filter(|l| l.chars().count() > max)
        .map(|l| {
            let start: String = l.chars().take(200).collect();
            format!("{} characters: {start}…", l.chars().count())
        })
        .collect()
}
