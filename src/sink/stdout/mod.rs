//! JSON Lines on standard output.

use std::io::Write;

use async_trait::async_trait;

use super::{Batch, CommitProtocol, SendPermit, Sink, SinkError};

pub struct StdoutSink;

#[async_trait]
impl Sink for StdoutSink {
    fn commit_protocol(&self) -> CommitProtocol {
        CommitProtocol::FlushThenCheckpoint
    }

    async fn write_batch(&self, batch: &Batch, _permit: &dyn SendPermit) -> Result<(), SinkError> {
        let buf = super::file::json_lines(batch);
        // One locked write per batch: lines of concurrent shards never interleave.
        let mut out = std::io::stdout().lock();
        out.write_all(&buf)
            .and_then(|_| out.flush())
            .map_err(|e| SinkError::Fatal(format!("stdout: {e}")))
    }
}
