//! The file sink's `[sink]` table.

use std::path::{Path, PathBuf};

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
        let path = PathBuf::from(path?);
        if let Err(why) = writable_place(&path) {
            t.problem("path", why);
        }
        Some(FileSinkConfig { path, fsync })
    }
}

/// Whether a file can be appended at `path`: it is not a directory, and its directory exists
/// or can be created (the sink creates missing directories) under an existing directory that
/// is not read-only. Checked when the configuration is read, so `validate` reports it.
fn writable_place(path: &Path) -> Result<(), String> {
    if path.is_dir() {
        return Err(format!("{} is a directory, not a file", path.display()));
    }
    let mut ancestor = path.parent();
    while let Some(dir) = ancestor {
        if dir.as_os_str().is_empty() {
            // A bare file name: the working directory.
            return Ok(());
        }
        match std::fs::metadata(dir) {
            Ok(meta) if !meta.is_dir() => {
                return Err(format!(
                    "{} is not a directory, so {} cannot be created",
                    dir.display(),
                    path.display()
                ))
            }
            Ok(meta) if meta.permissions().readonly() => {
                return Err(format!("directory {} is read-only", dir.display()))
            }
            Ok(_) => return Ok(()),
            // Missing (or under a file): the nearest existing ancestor tells.
            Err(_) => ancestor = dir.parent(),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_that_cannot_hold_the_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, "x").unwrap();
        // Fine: an existing directory, a missing one (created by the sink), a bare name.
        assert_eq!(writable_place(&dir.path().join("out.jsonl")), Ok(()));
        assert_eq!(writable_place(&dir.path().join("a/b/out.jsonl")), Ok(()));
        assert_eq!(writable_place(Path::new("out.jsonl")), Ok(()));
        // A directory where the file should be, or a file where a directory should be.
        let err = writable_place(dir.path()).unwrap_err();
        assert!(err.contains("is a directory"), "{err}");
        let err = writable_place(&file.join("sub/out.jsonl")).unwrap_err();
        assert!(err.contains("is not a directory"), "{err}");
    }
}
