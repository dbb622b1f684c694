//! Crash points for the crash harness, compiled only with the `fault-injection` feature:
//! `SHARDBRIDGE_FAULT=POINT[:N]` aborts the process (like a SIGKILL: no cleanup) the N-th time
//! (default: the first) it reaches POINT. Points: `after_intent`, `during_upload`,
//! `after_upload` (of the commit protocols' steps: `after_upload` is after the sink's last
//! write, before the checkpoint), `between_puts` (the Kinesis sink, between PutRecords calls
//! of one batch), `inside_transaction` (the Kafka sink: records and commit record sent, the
//! transaction not committed).

#[cfg(feature = "fault-injection")]
mod enabled {
    use std::collections::HashMap;
    use std::sync::Mutex;

    fn armed(point: &str) -> bool {
        static HITS: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);
        let Ok(spec) = std::env::var("SHARDBRIDGE_FAULT") else {
            return false;
        };
        let (name, nth) = spec
            .split_once(':')
            .map(|(n, k)| (n.to_string(), k.parse().unwrap_or(1)))
            .unwrap_or((spec.clone(), 1));
        if name != point {
            return false;
        }
        let mut hits = HITS.lock().unwrap_or_else(|p| p.into_inner());
        let n = hits
            .get_or_insert_with(HashMap::new)
            .entry(name)
            .or_default();
        *n += 1;
        *n == nth
    }

    pub fn crash_point(point: &str) {
        if armed(point) {
            eprintln!("fault injection: aborting at {point}");
            std::process::abort();
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
