//! Crash points for the crash harness, compiled only with the `fault-injection` feature:
//! `SHARDBRIDGE_FAULT=POINT[:N]` aborts the process (like a SIGKILL: no cleanup) the N-th time
//! (default: the first) it reaches POINT. Points: `after_intent`, `during_upload`,
//! `after_upload` (of the commit protocols' steps: `after_upload` is after the sink's last
//! write, before the checkpoint), `between_puts` (the Kinesis sink, between PutRecords calls
//! of one batch), `inside_transaction` (the Kafka sink: records and commit record sent, the
//! transaction not committed), `before_commit` (the Kafka sink: the lease checked, the commit
//! about to be asked for). `POINT:N:pause` stops the process there instead (SIGSTOP to
//! itself: a zombie that a test resumes with SIGCONT).

#[cfg(feature = "fault-injection")]
mod enabled {
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// Whether `point` is armed and reached for the armed time; and whether to pause there
    /// rather than abort.
    fn armed_as(point: &str) -> Option<bool> {
        static HITS: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);
        let spec = std::env::var("SHARDBRIDGE_FAULT").ok()?;
        let mut parts = spec.split(':');
        let name = parts.next().unwrap_or_default().to_string();
        let nth: u64 = parts.next().and_then(|k| k.parse().ok()).unwrap_or(1);
        let pause = parts.next() == Some("pause");
        if name != point {
            return None;
        }
        let mut hits = HITS.lock().unwrap_or_else(|p| p.into_inner());
        let n = hits
            .get_or_insert_with(HashMap::new)
            .entry(name)
            .or_default();
        *n += 1;
        (*n == nth).then_some(pause)
    }

    fn armed(point: &str) -> bool {
        armed_as(point) == Some(false)
    }

    pub fn crash_point(point: &str) {
        match armed_as(point) {
            Some(false) => {
                eprintln!("fault injection: aborting at {point}");
                std::process::abort();
            }
            Some(true) => {
                eprintln!("fault injection: pausing at {point}");
                let _ = std::process::Command::new("kill")
                    .args(["-STOP", &std::process::id().to_string()])
                    .status();
                eprintln!("fault injection: resumed at {point}");
            }
            None => {}
        }
    }

    /// Aborts a moment later, from another thread: while the step that follows is under way.
    pub fn crash_soon(point: &str) {
        if armed(point) {
            let point = point.to_string();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(2));
                eprintln!("fault injection: aborting at {point} (during the step)");
                std::process::abort();
            });
        }
    }
}

#[cfg(feature = "fault-injection")]
pub use enabled::{crash_point, crash_soon};

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn crash_point(_point: &str) {}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn crash_soon(_point: &str) {}
