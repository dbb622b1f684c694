//! The KCL-style lease and checkpoint table: one row per shard, written conditionally on the
//! owner and the lease counter (the fencing token).

pub mod config;
pub mod held;
pub mod lineage;
pub mod model;
pub mod planning;
pub mod status;
pub mod table;

pub use config::{LeaseConfig, RenewalMode};
