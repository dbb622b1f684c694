//! A connector's `[leases]` table: the lease table and KCL's timings.

use crate::aws::AwsSettings;
use crate::settings::TableReader;

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub table: String,
    pub failover_ms: u64,
    pub renew_interval_ms: u64,
    /// A worker stops sending for a lease it has not renewed for `failover_ms - safety_margin_ms`.
    pub safety_margin_ms: u64,
    pub shard_sync_interval_ms: u64,
    /// At most this many leases per worker (KCL's maxLeasesForWorker); unlimited by default.
    pub max_leases_per_worker: usize,
    pub renewal: RenewalMode,
    pub aws: AwsSettings,
}

/// How a worker shows it is alive (README, "Lease table").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenewalMode {
    /// KCL's: every lease's counter is bumped each renew interval.
    PerLease,
    /// One heartbeat row per worker is written each renew interval; a lease is expired when
    /// its owner's heartbeat has been still for the failover time.
    Heartbeat,
}

/// KCL's default failover time.
pub const DEFAULT_FAILOVER_MS: u64 = 10_000;

impl LeaseConfig {
    /// The defaults: KCL's timings (renew every failover/3), the table named after the
    /// connector.
    pub fn defaults(table: String, global_aws: &AwsSettings) -> LeaseConfig {
        LeaseConfig {
            table,
            failover_ms: DEFAULT_FAILOVER_MS,
            renew_interval_ms: DEFAULT_FAILOVER_MS / 3,
            safety_margin_ms: DEFAULT_FAILOVER_MS / 5,
            shard_sync_interval_ms: 60_000,
            max_leases_per_worker: usize::MAX,
            renewal: RenewalMode::PerLease,
            aws: global_aws.clone(),
        }
    }

    /// Reads a `[leases]` table over the defaults.
    pub fn read(
        t: &mut TableReader,
        default_table: String,
        global_aws: &AwsSettings,
    ) -> LeaseConfig {
        let mut l = LeaseConfig::defaults(default_table, global_aws);
        if let Some(table) = t.opt_string("table") {
            let ok = (3..=255).contains(&table.len())
                && table
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
            if ok {
                l.table = table;
            } else {
                t.problem(
                    "table",
                    format!("{table:?} is not a valid DynamoDB table name"),
                );
            }
        }
        if let Some(ms) = t.opt_u64("failover_ms", 1_000, 600_000) {
            l.failover_ms = ms;
            l.renew_interval_ms = ms / 3;
            l.safety_margin_ms = ms / 5;
        }
        if let Some(ms) = t.opt_u64("renew_interval_ms", 100, 600_000) {
            l.renew_interval_ms = ms;
        }
        if let Some(ms) = t.opt_u64("safety_margin_ms", 0, 600_000) {
            l.safety_margin_ms = ms;
        }
        if let Some(ms) = t.opt_u64("shard_sync_interval_ms", 1_000, 3_600_000) {
            l.shard_sync_interval_ms = ms;
        }
        if let Some(n) = t.opt_u64("max_leases_per_worker", 1, 1_000_000) {
            l.max_leases_per_worker = n as usize;
        }
        if t.has("renewal") {
            if let Some(mode) = t.choice(
                "renewal",
                &[
                    ("per_lease", RenewalMode::PerLease),
                    ("heartbeat", RenewalMode::Heartbeat),
                ],
            ) {
                l.renewal = mode;
            }
        }
        if l.renew_interval_ms + l.safety_margin_ms >= l.failover_ms {
            t.problem(
                "renew_interval_ms",
                format!(
                    "renew_interval_ms ({}) + safety_margin_ms ({}) must be below failover_ms ({})",
                    l.renew_interval_ms, l.safety_margin_ms, l.failover_ms
                ),
            );
        }
        l.aws = AwsSettings::read(t, "aws").or(global_aws);
        l
    }
}
