//! The file sink's `[sink]` table.

use std::path::PathBuf;

use crate::settings::TableReader;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSinkConfig {
    pub path: PathBuf,
    /// fsync after every batch (default): the checkpoint then never passes what a power loss
    /// could take back.
    pub fsync: bool,
}

impl FileSinkConfig {
    /// Reads the `[sink]` table of `type = "file"` (the type is read by the caller).
    pub fn read(t: &mut TableReader) -> Option<FileSinkConfig> {
        let path = t.string("path");
        let fsync = t.opt_bool("fsync").unwrap_or(true);
        Some(FileSinkConfig {
            path: PathBuf::from(path?),
            fsync,
        })
    }
}
