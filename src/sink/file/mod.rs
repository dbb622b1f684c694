//! JSON Lines appended to a local file, flushed (and by default fsynced) before the checkpoint
//! that covers them.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

pub mod config;

pub use config::FileSinkConfig;

use super::{Batch, CommitProtocol, SendPermit, Sink, SinkError};

pub struct FileSink {
    path: PathBuf,
    fsync: bool,
    file: Arc<Mutex<File>>,
}

pub fn json_lines(batch: &Batch) -> Vec<u8> {
    let mut buf = Vec::with_capacity(batch.bytes() + batch.records.len());
    for r in &batch.records {
        buf.extend_from_slice(&r.payload);
        buf.push(b'\n');
    }
    buf
}

impl FileSink {
    pub fn open(path: &Path, fsync: bool) -> Result<Self, SinkError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| SinkError::Fatal(format!("{}: {e}", dir.display())))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| SinkError::Fatal(format!("{}: {e}", path.display())))?;
        Ok(FileSink {
            path: path.to_path_buf(),
            fsync,
            file: Arc::new(Mutex::new(file)),
        })
    }
}

#[async_trait]
impl Sink for FileSink {
    fn commit_protocol(&self) -> CommitProtocol {
        CommitProtocol::FlushThenCheckpoint
    }

    async fn write_batch(&self, batch: &Batch, _permit: &dyn SendPermit) -> Result<(), SinkError> {
        let buf = json_lines(batch);
        let file = self.file.clone();
        let fsync = self.fsync;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            // One append per batch under the lock: shards sharing the file never interleave lines.
            let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
            f.write_all(&buf)?;
            f.flush()?;
            if fsync {
                f.sync_data()?;
            }
            Ok::<_, std::io::Error>(())
        })
        .await
        .map_err(|e| SinkError::Fatal(format!("{}: writer task failed: {e}", path.display())))?
        // A full disk or a vanished mount may come back: back-pressure, not loss.
        .map_err(|e| SinkError::Transient(format!("{}: {e}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::OutputRecord;
    use crate::sink::Unconditional;
    use crate::source::sequence::SequenceNumber;

    #[tokio::test]
    async fn appends_one_line_per_record_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.jsonl");
        let batch = |seqs: &[&str]| Batch {
            stream_arn: "arn".into(),
            shard_id: "s".into(),
            recovery: None,
            number: None,
            records: seqs
                .iter()
                .map(|s| OutputRecord {
                    sequence_number: SequenceNumber::parse(s).unwrap(),
                    created_millis: None,
                    partition_key: None,
                    event_name: None,
                    lane: 0,
                    payload: format!("{{\"seq\":\"{s}\"}}").into_bytes(),
                })
                .collect(),
        };
        FileSink::open(&path, true)
            .unwrap()
            .write_batch(&batch(&["1", "2"]), &Unconditional)
            .await
            .unwrap();
        FileSink::open(&path, false)
            .unwrap()
            .write_batch(&batch(&["3"]), &Unconditional)
            .await
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"seq\":\"1\"}\n{\"seq\":\"2\"}\n{\"seq\":\"3\"}\n");
    }
}
