//! shardbridge: reads shard-based change streams (DynamoDB Streams, Kinesis), leases their
//! shards across a fleet, follows shard lineage, and forwards records to sinks with checkpoints.
//!
//! Layout, bottom first; each module depends only on those above it in this list (checked by
//! tests/layering.rs):
//!
//! - `fault` — crash points for the crash harness (compiled in with `fault-injection`).
//! - `metrics` — Prometheus metrics (one function per event), health, the HTTP endpoints.
//! - `settings` — reading typed settings out of connectors.toml, problems with key paths.
//! - `retry` — back-off and the one retry loop.
//! - `aws` — SDK settings and error classes.
//! - `source` — stream readers (DynamoDB Streams, Kinesis), shards, records, sequence numbers.
//! - `format` — record encodings (`lambda`, `kinesis-ddb`, `plain`, `raw`).
//! - `filter` — Lambda FilterCriteria (EventBridge patterns) on records as `lambda` shows them.
//! - `lease` — the KCL-compatible lease and checkpoint table, lineage, planning.
//! - `sink` — destinations, one folder each, and the commit protocol each declares.
//! - `commit` — the commit protocols: intent, recovery, delivery, checkpoint.
//! - `pipeline` — connectors and one task per owned shard.
//! - `config` — connectors.toml composed from the sections each module reads.
//! - `operate` — operator commands: `status`, `checkpoint set|reset`.

pub mod aws;
pub mod commit;
pub mod config;
pub mod fault;
pub mod filter;
pub mod format;
pub mod lease;
pub mod metrics;
pub mod operate;
pub mod pipeline;
pub mod retry;
pub mod settings;
pub mod sink;
pub mod source;
