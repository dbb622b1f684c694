//! A Kafka broker of a test's own (tansu), and the memory a process uses.

use std::net::TcpStream;
use std::time::Duration;

/// A tansu broker of a test's own, for faults that must not disturb the shared broker: it is
/// frozen, resumed, stopped and started again by the test. `memory` storage is lost when the
/// process ends; `s3` storage (a bucket on the moto server) outlives it.
pub struct PrivateBroker {
    pub child: std::process::Child,
    pub bootstrap: String,
    port: u16,
    storage: String,
    log: std::path::PathBuf,
}

impl PrivateBroker {
    /// A broker keeping its data in memory.
    pub fn start(log: &std::path::Path) -> PrivateBroker {
        Self::start_with(log, "memory://tansu/".into(), super::free_port())
    }

    /// A broker keeping its data in `bucket` on the moto server (created here), so that it
    /// can be stopped and started again.
    pub async fn start_on_s3(log: &std::path::Path, bucket: &str) -> PrivateBroker {
        let s3 = super::harness::s3_client(&super::aws_endpoint()).await;
        s3.create_bucket()
            .bucket(bucket)
            .send()
            .await
            .expect("bucket");
        Self::start_with(log, format!("s3://{bucket}/"), super::free_port())
    }

    fn start_with(log: &std::path::Path, storage: String, port: u16) -> PrivateBroker {
        let bin = std::env::var("SHARDBRIDGE_TEST_TANSU_BIN").unwrap_or_else(|_| {
            panic!(
                "SHARDBRIDGE_TEST_TANSU_BIN is not set: run the tests through scripts/test.sh or \
                 `eval \"$(scripts/dev-servers.sh env)\"`"
            )
        });
        let url = format!("tcp://127.0.0.1:{port}");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = std::process::Command::new(bin)
            .env_remove("SCHEMA_REGISTRY")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            // For s3:// storage: the moto server.
            .env("AWS_ENDPOINT", super::aws_endpoint())
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .args(["broker", "--cluster-id", "shardbridge-private"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", &storage])
            .stdout(out)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start a private tansu broker");
        let bootstrap = format!("127.0.0.1:{port}");
        super::wait_for("the private broker", Duration::from_secs(30), || {
            TcpStream::connect(&bootstrap).ok()
        });
        PrivateBroker {
            child,
            bootstrap,
            port,
            storage,
            log: log.to_path_buf(),
        }
    }

    /// Kills the broker process: connections are refused until `start_again`.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The same broker (port and storage) again.
    pub fn start_again(&mut self) {
        let again = Self::start_with(&self.log, self.storage.clone(), self.port);
        *self = again;
    }

    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} the private broker");
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process' resident memory (VmRSS) in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
