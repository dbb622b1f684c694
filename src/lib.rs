//! shardbridge: reads shard-based change streams (DynamoDB Streams, Kinesis), leases their
//! shards across a fleet, follows shard lineage, and forwards records to sinks with checkpoints.
//!
//! Layout: `config` (connectors.toml), `source` (stream readers), `lease` (the KCL-style lease
//! and checkpoint table, lineage), `pipeline` (connectors and one task per owned shard),
//! `format` (record encodings), `sink` (destinations and their commit protocols), `metrics`
//! (Prometheus and health), `aws` (SDK settings and error classes), `retry` (back-off).

pub mod aws;
pub mod commit;
pub mod config;
pub mod fault;
pub mod format;
pub mod lease;
pub mod metrics;
pub mod pipeline;
pub mod retry;
pub mod sink;
pub mod source;
