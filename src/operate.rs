//! Operator commands: `status` (who owns which shard, where its checkpoint stands) and
//! `checkpoint set|reset` (moving a checkpoint by hand). They read and write the lease tables
//! of the connectors in connectors.toml; the decisions are in `lease::status`.

use serde_json::{json, Value};

use crate::config::Config;
use crate::lease::model::{now_millis, Checkpoint};
use crate::lease::status::{held_by_live_owner, shard_statuses, ShardStatus};
use crate::lease::table::{LeaseError, LeaseStore, LeaseTable};
use crate::pipeline::ConnectorConfig;
use crate::source::sequence::SequenceNumber;

#[derive(Debug, thiserror::Error)]
pub enum OperateError {
    /// The command names something the configuration or the table does not have (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The lease is held by a live worker and `--force` was not given (exit 1).
    #[error("{0}")]
    Refused(String),
    #[error("lease table {table}: {source}")]
    Lease {
        table: String,
        #[source]
        source: LeaseError,
    },
}

/// One connector's shards as its lease table says.
pub struct ConnectorStatus {
    pub name: String,
    pub lease_table: String,
    /// False when the table is missing (the connector never ran, or another table is named).
    pub table_exists: bool,
    pub shards: Vec<ShardStatus>,
}

fn connectors<'a>(
    config: &'a Config,
    only: Option<&str>,
) -> Result<Vec<&'a ConnectorConfig>, OperateError> {
    let chosen: Vec<&ConnectorConfig> = config
        .connectors
        .iter()
        .filter(|c| only.map_or(true, |n| n == c.name))
        .collect();
    if chosen.is_empty() {
        let names: Vec<&str> = config.connectors.iter().map(|c| c.name.as_str()).collect();
        return Err(OperateError::Usage(format!(
            "no connector named {:?} (the configuration has: {})",
            only.unwrap_or_default(),
            names.join(", ")
        )));
    }
    Ok(chosen)
}

async fn table_of(c: &ConnectorConfig) -> LeaseTable {
    let sdk = crate::aws::sdk_config(&c.leases.aws).await;
    LeaseTable::new(&sdk, &c.leases.table, &c.name)
}

fn lease_error(c: &ConnectorConfig, source: LeaseError) -> OperateError {
    OperateError::Lease {
        table: c.leases.table.clone(),
        source,
    }
}

pub async fn status(
    config: &Config,
    only: Option<&str>,
) -> Result<Vec<ConnectorStatus>, OperateError> {
    let mut out = Vec::new();
    for c in connectors(config, only)? {
        let table = table_of(c).await;
        let exists = table.exists().await.map_err(|e| lease_error(c, e))?;
        let shards = if exists {
            let leases = table.list().await.map_err(|e| lease_error(c, e))?;
            shard_statuses(&leases, now_millis(), c.leases.failover_ms)
        } else {
            Vec::new()
        };
        out.push(ConnectorStatus {
            name: c.name.clone(),
            lease_table: c.leases.table.clone(),
            table_exists: exists,
            shards,
        });
    }
    Ok(out)
}

/// The `--json` document (a contract: fields are added, never renamed).
pub fn status_json(connectors: &[ConnectorStatus]) -> Value {
    let shards = |c: &ConnectorStatus| -> Vec<Value> {
        c.shards
            .iter()
            .map(|s| {
                json!({
                    "shard_id": s.shard_id,
                    "parents": s.parents,
                    "owner": s.owner,
                    "lease_counter": s.lease_counter,
                    "checkpoint": s.checkpoint,
                    "pending_intent": s.pending_intent,
                    "state": s.state.as_str(),
                    "behind_ms": s.behind_ms,
                    "checkpoint_age_ms": s.checkpoint_age_ms,
                    "renewed_ms_ago": s.renewed_ms_ago,
                })
            })
            .collect()
    };
    json!({
        "connectors": connectors.iter().map(|c| json!({
            "name": c.name,
            "lease_table": c.lease_table,
            "lease_table_exists": c.table_exists,
            "shards": shards(c),
        })).collect::<Vec<_>>()
    })
}

/// A table for people: one block per connector, one row per shard.
pub fn status_text(connectors: &[ConnectorStatus]) -> String {
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let mut out = String::new();
    for c in connectors {
        if !c.table_exists {
            out.push_str(&format!(
                "connector {}: lease table {} does not exist (the connector has not run yet?)\n\n",
                c.name, c.lease_table
            ));
            continue;
        }
        out.push_str(&format!(
            "connector {} (lease table {}): {} shard(s)\n",
            c.name,
            c.lease_table,
            c.shards.len()
        ));
        let mut rows = vec![[
            "SHARD".to_string(),
            "STATE".into(),
            "OWNER".into(),
            "COUNTER".into(),
            "CHECKPOINT".into(),
            "INTENT".into(),
            "BEHIND_MS".into(),
            "PARENTS".into(),
        ]];
        for s in &c.shards {
            rows.push([
                s.shard_id.clone(),
                s.state.as_str().into(),
                dash(s.owner.clone()),
                s.lease_counter.to_string(),
                s.checkpoint.clone(),
                dash(s.pending_intent.clone()),
                dash(s.behind_ms.map(|b| b.to_string())),
                if s.parents.is_empty() {
                    "-".into()
                } else {
                    s.parents.join(",")
                },
            ]);
        }
        let widths: Vec<usize> = (0..8)
            .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
            .collect();
        for r in rows {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

/// Where an operator moves a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointTarget {
    Sequence(SequenceNumber),
    TrimHorizon,
    Latest,
}

impl CheckpointTarget {
    fn checkpoint(&self) -> Checkpoint {
        match self {
            CheckpointTarget::Sequence(s) => Checkpoint::Sequence(s.clone()),
            CheckpointTarget::TrimHorizon => Checkpoint::TrimHorizon,
            CheckpointTarget::Latest => Checkpoint::Latest,
        }
    }
}

/// Moves a shard's checkpoint by hand; refuses while a live owner holds the lease unless
/// `force`. Returns what changed, for the operator.
pub async fn set_checkpoint(
    config: &Config,
    connector: &str,
    shard: &str,
    target: &CheckpointTarget,
    force: bool,
) -> Result<String, OperateError> {
    let c = connectors(config, Some(connector))?[0];
    let table = table_of(c).await;
    if !table.exists().await.map_err(|e| lease_error(c, e))? {
        return Err(OperateError::Usage(format!(
            "connector {connector}: lease table {} does not exist",
            c.leases.table
        )));
    }
    let leases = table.list().await.map_err(|e| lease_error(c, e))?;
    let Some(seen) = leases.iter().find(|l| l.lease_key == shard) else {
        return Err(OperateError::Usage(format!(
            "connector {connector}: no lease for shard {shard:?} in {}",
            c.leases.table
        )));
    };
    if held_by_live_owner(seen, now_millis(), c.leases.failover_ms) && !force {
        return Err(OperateError::Refused(format!(
            "shard {shard} is held by {} (renewed within the failover time of {} ms): stop that \
             worker first, or give --force (the worker stops the shard at its next renewal; a \
             batch it is writing may be written again)",
            seen.lease_owner.as_deref().unwrap_or("?"),
            c.leases.failover_ms
        )));
    }
    let to = target.checkpoint();
    let counter = table
        .set_checkpoint_by_hand(seen, &to)
        .await
        .map_err(|e| match e {
            LeaseError::Lost(_) => OperateError::Refused(format!(
                "shard {shard}: the lease changed while it was being updated; nothing was \
                 written, run the command again"
            )),
            other => lease_error(c, other),
        })?;
    let mut what = format!(
        "connector {connector}, shard {shard}: checkpoint {} -> {}",
        seen.checkpoint.as_string(),
        to.as_string()
    );
    if let Some(intent) = &seen.pending_checkpoint {
        what.push_str(&format!(", pending intent {intent} cleared"));
    }
    if let Some(owner) = &seen.lease_owner {
        what.push_str(&format!(", lease taken from {owner}"));
    }
    what.push_str(&format!(
        ", lease counter {} -> {counter}",
        seen.lease_counter
    ));
    Ok(what)
}
