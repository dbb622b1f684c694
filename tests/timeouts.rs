//! Nothing waits forever on a silent server: every AWS call has connect, attempt and
//! operation timeouts (`[aws]` keys), and a timeout is a transient error (retried, never fatal).

use std::io::Read;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use shardbridge::aws::{sdk_config, AwsSettings};
use shardbridge::lease::table::{LeaseError, LeaseStore, LeaseTable};

/// A server that accepts connections and never answers (a black hole, like a paused process).
fn black_hole() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            let mut s = stream;
            let mut buf = [0u8; 4096];
            // Read the request so the client is not refused, then say nothing.
            let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
            let _ = s.read(&mut buf);
            held.push(s);
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_call_to_a_server_that_never_answers_ends_as_a_transient_error() {
    let settings = AwsSettings {
        region: Some("us-east-1".into()),
        endpoint_url: Some(black_hole()),
        attempt_timeout_ms: Some(300),
        operation_timeout_ms: Some(1_000),
        ..AwsSettings::default()
    };
    let sdk = sdk_config(&settings).await;
    let table = LeaseTable::new(&sdk, "leases", "timeouts");
    let started = Instant::now();
    let result = table.list().await;
    let took = started.elapsed();
    assert!(
        matches!(result, Err(LeaseError::Transient(_))),
        "a timeout is transient: {result:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "the operation timeout (1 s) bounds the call: took {took:?}"
    );
}
