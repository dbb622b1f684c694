//! The S3 sink's `[sink]` table, with its defaults and checks.

use crate::aws::AwsSettings;
use crate::settings::TableReader;

/// Defaults sized for analytics: large objects (not one per record), bounded memory per shard.
pub const DEFAULT_MAX_RECORDS: u64 = 100_000;
pub const DEFAULT_MAX_BYTES: u64 = 8 * 1024 * 1024;
pub const DEFAULT_MAX_INTERVAL_MS: u64 = 60_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

impl Compression {
    /// The object key's suffix after `.jsonl`.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Gzip => ".gz",
            Compression::Zstd => ".zst",
            Compression::None => "",
        }
    }

    /// The object's Content-Encoding, if any.
    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            Compression::Gzip => Some("gzip"),
            Compression::Zstd => Some("zstd"),
            Compression::None => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3SinkConfig {
    pub bucket: String,
    /// Prepended verbatim to every key (may be empty; write `raw/` for a "folder").
    pub prefix: String,
    pub compression: Compression,
    pub max_records: usize,
    pub max_bytes: usize,
    pub max_interval_ms: u64,
    /// Path-style addressing (`endpoint/bucket/key`), for moto and MinIO.
    pub force_path_style: bool,
}

impl S3SinkConfig {
    /// Reads the `[sink]` table of `type = "s3"` (the type is read by the caller).
    pub fn read(
        t: &mut TableReader,
        global_aws: &AwsSettings,
    ) -> Option<(S3SinkConfig, AwsSettings)> {
        let bucket = t.string("bucket");
        if let Some(b) = &bucket {
            let ok = (3..=63).contains(&b.len())
                && b.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
            if !ok {
                t.problem("bucket", format!("{b:?} is not a valid S3 bucket name"));
            }
        }
        let prefix = t.opt_string("prefix").unwrap_or_default();
        let compression = if t.has("compression") {
            t.choice(
                "compression",
                &[
                    ("gzip", Compression::Gzip),
                    ("zstd", Compression::Zstd),
                    ("none", Compression::None),
                ],
            )
        } else {
            Some(Compression::Gzip)
        };
        let max_records = t
            .opt_u64("max_records", 1, 10_000_000)
            .unwrap_or(DEFAULT_MAX_RECORDS);
        let max_bytes = t
            .opt_u64("max_bytes", 1, 5 * 1024 * 1024 * 1024)
            .unwrap_or(DEFAULT_MAX_BYTES);
        let max_interval_ms = t
            .opt_u64("max_interval_ms", 100, 3_600_000)
            .unwrap_or(DEFAULT_MAX_INTERVAL_MS);
        let force_path_style = t.opt_bool("force_path_style").unwrap_or(false);
        let aws = AwsSettings::read(t, "aws").or(global_aws);
        Some((
            S3SinkConfig {
                bucket: bucket?,
                prefix,
                compression: compression?,
                max_records: max_records as usize,
                max_bytes: max_bytes as usize,
                max_interval_ms,
                force_path_style,
            },
            aws,
        ))
    }
}
