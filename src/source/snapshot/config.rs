//! `[connectors.snapshot]`: whether a DynamoDB Streams connector first reads the table's
//! existing items, and how.

use crate::settings::TableReader;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotMode {
    /// The stream only (the default).
    Never,
    /// A snapshot once, when the connector has no leases yet, then the stream.
    Initial,
    /// A snapshot once, and nothing else: the connector stops when it is done.
    InitialOnly,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotConfig {
    pub mode: SnapshotMode,
    /// Parallel Scan segments, each a lease that any worker of the fleet may take.
    pub segments: u32,
    /// Read capacity units per second the whole scan may use; 0: as fast as it goes.
    pub rate_limit: u64,
    pub consistent_read: bool,
    /// Items per Scan page at most (Scan's Limit).
    pub page_size: u32,
    /// Stream records created this long before the snapshot began are delivered too: the
    /// clocks of the worker and of DynamoDB may differ, and DynamoDB rounds record times down
    /// to the second.
    pub clock_margin_ms: u64,
}

pub const DEFAULT_SEGMENTS: u64 = 4;
/// DynamoDB's limit on TotalSegments is 1,000,000; a segment is a lease, so fewer make sense.
pub const MAX_SEGMENTS: u64 = 10_000;
pub const DEFAULT_PAGE_SIZE: u64 = 1000;
pub const DEFAULT_CLOCK_MARGIN_MS: u64 = 60_000;

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            mode: SnapshotMode::Never,
            segments: DEFAULT_SEGMENTS as u32,
            rate_limit: 0,
            consistent_read: false,
            page_size: DEFAULT_PAGE_SIZE as u32,
            clock_margin_ms: DEFAULT_CLOCK_MARGIN_MS,
        }
    }
}

impl SnapshotConfig {
    pub fn read(t: &mut TableReader) -> SnapshotConfig {
        let d = SnapshotConfig::default();
        let mode = if t.has("mode") {
            t.choice(
                "mode",
                &[
                    ("never", SnapshotMode::Never),
                    ("initial", SnapshotMode::Initial),
                    ("initial_only", SnapshotMode::InitialOnly),
                ],
            )
            .unwrap_or(d.mode)
        } else {
            d.mode
        };
        SnapshotConfig {
            mode,
            segments: t
                .opt_u64("segments", 1, MAX_SEGMENTS)
                .map_or(d.segments, |n| n as u32),
            rate_limit: t.opt_u64("rate_limit", 0, 10_000_000).unwrap_or(0),
            consistent_read: t.opt_bool("consistent_read").unwrap_or(false),
            page_size: t
                .opt_u64("page_size", 1, 10_000)
                .map_or(d.page_size, |n| n as u32),
            clock_margin_ms: t
                .opt_u64("clock_margin_ms", 0, 3_600_000)
                .unwrap_or(d.clock_margin_ms),
        }
    }

    pub fn enabled(&self) -> bool {
        self.mode != SnapshotMode::Never
    }
}
