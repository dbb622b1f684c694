//! The lease table in DynamoDB: every write that matters is conditional on the lease's owner and
//! counter, so a worker that lost a lease cannot move its checkpoint.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
    ScalarAttributeType, TableStatus,
};

use super::model::*;
use crate::aws::{classify, AwsErrorClass};
use crate::metrics::events;

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The lease changed hands or counter since we last saw it: we no longer hold it.
    #[error("lease {0} is no longer held by this worker")]
    Lost(String),
    #[error("{0}")]
    Transient(String),
    #[error("{0}")]
    Fatal(String),
}

/// Where leases live. Every write that matters is conditional: `Lost` means the condition
/// (owner and counter as given) did not hold.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Creates the store if it is missing and waits until it can be used.
    async fn ensure_exists(&self) -> Result<(), LeaseError>;
    /// Every lease, strongly consistent.
    async fn list(&self) -> Result<Vec<Lease>, LeaseError>;
    /// Creates the lease unless a row for the shard exists. True when it was created.
    async fn create_if_absent(&self, lease: &Lease) -> Result<bool, LeaseError>;
    /// Takes `lease` for `owner`, conditional on the counter we saw. Returns it as now stored
    /// (read in the same write: a checkpoint or intent written since the listing is seen).
    async fn take(&self, lease: &Lease, owner: &str) -> Result<Lease, LeaseError>;
    /// Bumps the counter, conditional on owner and counter. Returns the new counter.
    async fn renew(&self, key: &str, owner: &str, counter: u64) -> Result<u64, LeaseError>;
    /// Moves the checkpoint from `write.from` to `write.to` and clears any intent (or sets
    /// `write.intent`, the next batch's, in the same write), conditional
    /// on owner, counter AND the stored checkpoint being `from`: a batch applied twice or out of
    /// order is refused (`Lost`). At SHARD_END the shard's children are recorded in the same
    /// write; so are the time of the write and of the newest record checkpointed.
    async fn checkpoint(
        &self,
        key: &str,
        owner: &str,
        counter: u64,
        write: &CheckpointWrite<'_>,
    ) -> Result<(), LeaseError>;
    /// Writes the intent of the batch in flight (`pendingCheckpoint`), conditional on owner and
    /// counter: the write-ahead step of the commit protocols that recover a batch.
    async fn write_intent(
        &self,
        key: &str,
        owner: &str,
        counter: u64,
        intent: &Intent,
    ) -> Result<(), LeaseError>;
    /// Writes this worker's heartbeat row (created by the first one): bumps its counter.
    /// Unconditional: only `owner` writes it.
    async fn heartbeat(&self, owner: &str) -> Result<(), LeaseError> {
        Err(LeaseError::Fatal(format!(
            "this lease store has no heartbeat rows (worker {owner})"
        )))
    }
    /// Deletes a heartbeat row; with `counter`, only while it is still at it (a worker that
    /// came back keeps its row).
    async fn delete_heartbeat(&self, owner: &str, counter: Option<u64>) -> Result<(), LeaseError> {
        let _ = counter;
        Err(LeaseError::Fatal(format!(
            "this lease store has no heartbeat rows (worker {owner})"
        )))
    }
    /// Gives the lease up (owner removed, counter bumped), conditional on owner and counter.
    async fn release(&self, key: &str, owner: &str, counter: u64) -> Result<(), LeaseError>;
    /// Deletes a finished lease, conditional on it being at SHARD_END.
    async fn delete_finished(&self, key: &str) -> Result<(), LeaseError>;
}

/// The lease table in DynamoDB.
pub struct LeaseTable {
    client: aws_sdk_dynamodb::Client,
    name: String,
    connector: String,
}

fn lease_error<E, R>(
    op: &'static str,
    connector: &str,
    key: &str,
    err: SdkError<E, R>,
) -> LeaseError
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: crate::aws::ResponseStatus + std::fmt::Debug + 'static,
{
    let (class, text) = classify(op, &err);
    events::lease_table_call(connector, op, false);
    if class == AwsErrorClass::ConditionFailed {
        // A refused condition is an answer: the table is reachable.
        events::lease_table_answered(connector);
    }
    match class {
        AwsErrorClass::ConditionFailed => LeaseError::Lost(key.to_string()),
        AwsErrorClass::Throttled | AwsErrorClass::Transient => LeaseError::Transient(text),
        _ => LeaseError::Fatal(text),
    }
}

impl LeaseTable {
    pub fn new(sdk_config: &aws_config::SdkConfig, name: &str, connector: &str) -> Self {
        LeaseTable {
            client: aws_sdk_dynamodb::Client::new(sdk_config),
            name: name.to_string(),
            connector: connector.to_string(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the table exists (an operator's look: nothing is created).
    pub async fn exists(&self) -> Result<bool, LeaseError> {
        match self
            .client
            .describe_table()
            .table_name(&self.name)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => match classify("DescribeTable", &e) {
                (AwsErrorClass::NotFound, _) => Ok(false),
                (AwsErrorClass::Throttled | AwsErrorClass::Transient, text) => {
                    Err(LeaseError::Transient(text))
                }
                (_, text) => Err(LeaseError::Fatal(text)),
            },
        }
    }

    /// An operator's checkpoint: `to` replaces the checkpoint of the row as `seen`, conditional
    /// on its counter, owner and checkpoint not having moved since. The intent is cleared, the
    /// owner removed and the counter bumped: a worker that held the lease can renew and
    /// checkpoint no more (it stops the shard), and whoever takes the lease next reads from
    /// `to`. Returns the new counter; `Lost` when the row moved since it was read.
    pub async fn set_checkpoint_by_hand(
        &self,
        seen: &Lease,
        to: &Checkpoint,
    ) -> Result<u64, LeaseError> {
        let owner = match &seen.lease_owner {
            Some(_) => "#o = :o",
            None => "attribute_not_exists(#o)",
        };
        let stored = if seen.checkpoint == Checkpoint::TrimHorizon {
            "(#cp = :from OR attribute_not_exists(#cp))"
        } else {
            "#cp = :from"
        };
        let mut req = self
            .client
            .update_item()
            .table_name(&self.name)
            .key(LEASE_KEY, AttributeValue::S(seen.lease_key.clone()))
            .condition_expression(format!(
                "attribute_exists(#k) AND #c = :c AND {owner} AND {stored}"
            ))
            .update_expression(
                "SET #cp = :cp, #c = :next, #s = :zero, #at = :now REMOVE #o, #p, #rec",
            )
            .expression_attribute_names("#k", LEASE_KEY)
            .expression_attribute_names("#o", LEASE_OWNER)
            .expression_attribute_names("#c", LEASE_COUNTER)
            .expression_attribute_names("#cp", CHECKPOINT)
            .expression_attribute_names("#s", OWNER_SWITCHES_SINCE_CHECKPOINT)
            .expression_attribute_names("#at", CHECKPOINTED_AT_MILLIS)
            .expression_attribute_names("#p", PENDING_CHECKPOINT)
            .expression_attribute_names("#rec", CHECKPOINT_RECORD_MILLIS)
            .expression_attribute_values(":c", n(seen.lease_counter))
            .expression_attribute_values(":next", n(seen.lease_counter + 1))
            .expression_attribute_values(":cp", AttributeValue::S(to.as_string()))
            .expression_attribute_values(":from", AttributeValue::S(seen.checkpoint.as_string()))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":now", AttributeValue::N(now_millis().to_string()));
        if let Some(o) = &seen.lease_owner {
            req = req.expression_attribute_values(":o", AttributeValue::S(o.clone()));
        }
        req.send()
            .await
            .map_err(|e| lease_error("UpdateItem", &self.connector, &seen.lease_key, e))?;
        self.ok("UpdateItem");
        Ok(seen.lease_counter + 1)
    }

    fn ok(&self, op: &'static str) {
        events::lease_table_call(&self.connector, op, true);
    }

    /// An UpdateItem on `key` that only succeeds while `owner` holds it at `counter` (the
    /// fencing condition of every write but take); `#o`, `#c`, `:o`, `:c` are bound.
    fn fenced_update(&self, key: &str, owner: &str, counter: u64) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.name)
            .key(LEASE_KEY, AttributeValue::S(key.to_string()))
            .condition_expression("#o = :o AND #c = :c")
            .expression_attribute_names("#o", LEASE_OWNER)
            .expression_attribute_names("#c", LEASE_COUNTER)
            .expression_attribute_values(":o", AttributeValue::S(owner.to_string()))
            .expression_attribute_values(":c", n(counter))
    }

    async fn send_fenced(&self, key: &str, req: UpdateItemFluentBuilder) -> Result<(), LeaseError> {
        req.send()
            .await
            .map_err(|e| lease_error("UpdateItem", &self.connector, key, e))?;
        self.ok("UpdateItem");
        Ok(())
    }
}

#[async_trait]
impl LeaseStore for LeaseTable {
    /// Creates the table (on-demand capacity) when it is missing and waits until it is active.
    async fn ensure_exists(&self) -> Result<(), LeaseError> {
        match self
            .client
            .describe_table()
            .table_name(&self.name)
            .send()
            .await
        {
            Ok(out) => {
                self.ok("DescribeTable");
                if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                    return Ok(());
                }
            }
            Err(e) => {
                if classify("DescribeTable", &e).0 != AwsErrorClass::NotFound {
                    return Err(lease_error("DescribeTable", &self.connector, &self.name, e));
                }
                let create = self
                    .client
                    .create_table()
                    .table_name(&self.name)
                    .attribute_definitions(
                        AttributeDefinition::builder()
                            .attribute_name(LEASE_KEY)
                            .attribute_type(ScalarAttributeType::S)
                            .build()
                            .map_err(|e| LeaseError::Fatal(e.to_string()))?,
                    )
                    .key_schema(
                        KeySchemaElement::builder()
                            .attribute_name(LEASE_KEY)
                            .key_type(KeyType::Hash)
                            .build()
                            .map_err(|e| LeaseError::Fatal(e.to_string()))?,
                    )
                    .billing_mode(BillingMode::PayPerRequest)
                    .send()
                    .await;
                match create {
                    Ok(_) => {
                        self.ok("CreateTable");
                        tracing::info!(table = %self.name, "created lease table");
                    }
                    // Another worker created it first.
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_resource_in_use_exception()) => {}
                    Err(e) => {
                        return Err(lease_error("CreateTable", &self.connector, &self.name, e))
                    }
                }
            }
        }
        for _ in 0..120 {
            let out = self
                .client
                .describe_table()
                .table_name(&self.name)
                .send()
                .await
                .map_err(|e| lease_error("DescribeTable", &self.connector, &self.name, e))?;
            self.ok("DescribeTable");
            if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(LeaseError::Fatal(format!(
            "lease table {} did not become active within 60 s",
            self.name
        )))
    }

    /// Every lease, read with strong consistency.
    async fn list(&self) -> Result<Vec<Lease>, LeaseError> {
        let mut leases = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.name)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| lease_error("Scan", &self.connector, &self.name, e))?;
            self.ok("Scan");
            for item in out.items() {
                leases.push(Lease::from_item(item).map_err(|e| {
                    LeaseError::Fatal(format!("lease table {}: bad row: {e}", self.name))
                })?);
            }
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(leases)
    }

    /// Creates the lease unless a row for the shard exists. True when it was created.
    async fn create_if_absent(&self, lease: &Lease) -> Result<bool, LeaseError> {
        let res = self
            .client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(lease.to_item()))
            .condition_expression("attribute_not_exists(#k)")
            .expression_attribute_names("#k", LEASE_KEY)
            .send()
            .await;
        match res {
            Ok(_) => {
                self.ok("PutItem");
                Ok(true)
            }
            Err(e) => match lease_error("PutItem", &self.connector, &lease.lease_key, e) {
                LeaseError::Lost(_) => Ok(false),
                other => Err(other),
            },
        }
    }

    /// Takes `lease` for `owner`, conditional on the counter we saw: a concurrent renew or take
    /// makes this fail. Returns the lease as now stored.
    async fn take(&self, lease: &Lease, owner: &str) -> Result<Lease, LeaseError> {
        let switched = lease.lease_owner.as_deref() != Some(owner);
        let switches = lease.owner_switches_since_checkpoint + u64::from(switched);
        let out = self
            .client
            .update_item()
            .table_name(&self.name)
            .key(LEASE_KEY, AttributeValue::S(lease.lease_key.clone()))
            .update_expression("SET #o = :o, #c = :next, #s = :s, #r = :now")
            .condition_expression("attribute_exists(#k) AND #c = :c")
            .expression_attribute_names("#r", RENEWED_AT_MILLIS)
            .expression_attribute_values(":now", AttributeValue::N(now_millis().to_string()))
            .expression_attribute_names("#k", LEASE_KEY)
            .expression_attribute_names("#o", LEASE_OWNER)
            .expression_attribute_names("#c", LEASE_COUNTER)
            .expression_attribute_names("#s", OWNER_SWITCHES_SINCE_CHECKPOINT)
            .expression_attribute_values(":o", AttributeValue::S(owner.to_string()))
            .expression_attribute_values(":c", n(lease.lease_counter))
            .expression_attribute_values(":next", n(lease.lease_counter + 1))
            .expression_attribute_values(":s", n(switches))
            // The counter does not move on a checkpoint: the row as listed may be older than
            // the owner's last checkpoint or intent, so the new owner starts from the row as
            // this write leaves it.
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|e| lease_error("UpdateItem", &self.connector, &lease.lease_key, e))?;
        self.ok("UpdateItem");
        match out.attributes() {
            Some(item) => Lease::from_item(item)
                .map_err(|e| LeaseError::Fatal(format!("lease table {}: bad row: {e}", self.name))),
            None => Err(LeaseError::Fatal(format!(
                "lease table {}: UpdateItem returned no attributes for {}",
                self.name, lease.lease_key
            ))),
        }
    }

    /// Bumps the counter, conditional on owner and counter. Returns the new counter.
    async fn renew(&self, key: &str, owner: &str, counter: u64) -> Result<u64, LeaseError> {
        let req = self
            .fenced_update(key, owner, counter)
            .update_expression("SET #c = :next, #r = :now")
            .expression_attribute_names("#r", RENEWED_AT_MILLIS)
            .expression_attribute_values(":now", AttributeValue::N(now_millis().to_string()))
            .expression_attribute_values(":next", n(counter + 1));
        self.send_fenced(key, req).await?;
        Ok(counter + 1)
    }

    /// Moves the checkpoint from `from` to `to` and clears the intent or replaces it with the
    /// next batch's, conditional on owner, counter and the stored checkpoint. At SHARD_END the
    /// shard's children are recorded in the same write.
    async fn checkpoint(
        &self,
        key: &str,
        owner: &str,
        counter: u64,
        write: &CheckpointWrite<'_>,
    ) -> Result<(), LeaseError> {
        let CheckpointWrite {
            from,
            to,
            children,
            record_millis,
            intent,
        } = *write;
        // A row written without a checkpoint reads as TRIM_HORIZON.
        let stored = if *from == Checkpoint::TrimHorizon {
            "(#cp = :from OR attribute_not_exists(#cp))"
        } else {
            "#cp = :from"
        };
        let mut req = self
            .fenced_update(key, owner, counter)
            .condition_expression(format!("#o = :o AND #c = :c AND {stored}"))
            .expression_attribute_names("#cp", CHECKPOINT)
            .expression_attribute_names("#s", OWNER_SWITCHES_SINCE_CHECKPOINT)
            .expression_attribute_names("#p", PENDING_CHECKPOINT)
            .expression_attribute_values(":cp", AttributeValue::S(to.as_string()))
            .expression_attribute_values(":from", AttributeValue::S(from.as_string()))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_names("#at", CHECKPOINTED_AT_MILLIS)
            .expression_attribute_values(":at", AttributeValue::N(now_millis().to_string()));
        let mut set = "SET #cp = :cp, #s = :zero, #at = :at".to_string();
        if let Some(ms) = record_millis {
            set.push_str(", #rec = :rec");
            req = req
                .expression_attribute_names("#rec", CHECKPOINT_RECORD_MILLIS)
                .expression_attribute_values(":rec", AttributeValue::N(ms.to_string()));
        }
        if let Some(children) = children.filter(|c| !c.is_empty()) {
            set.push_str(", #ch = :ch");
            req = req
                .expression_attribute_names("#ch", CHILD_SHARD_IDS)
                .expression_attribute_values(
                    ":ch",
                    AttributeValue::Ss(children.iter().cloned().collect()),
                );
        }
        let req = match intent {
            Some(intent) => {
                set.push_str(", #p = :p");
                req.expression_attribute_values(":p", AttributeValue::S(intent.to_string()))
                    .update_expression(set)
            }
            None => req.update_expression(format!("{set} REMOVE #p")),
        };
        self.send_fenced(key, req).await?;
        events::checkpoint_written(&self.connector);
        Ok(())
    }

    /// Gives the lease up so that another worker can take it at once.
    async fn heartbeat(&self, owner: &str) -> Result<(), LeaseError> {
        let key = heartbeat_key(owner);
        self.client
            .update_item()
            .table_name(&self.name)
            .key(LEASE_KEY, AttributeValue::S(key.clone()))
            .update_expression("SET #o = :o, #r = :now ADD #c :one")
            .expression_attribute_names("#o", LEASE_OWNER)
            .expression_attribute_names("#c", LEASE_COUNTER)
            .expression_attribute_names("#r", RENEWED_AT_MILLIS)
            .expression_attribute_values(":o", AttributeValue::S(owner.to_string()))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":now", AttributeValue::N(now_millis().to_string()))
            .send()
            .await
            .map_err(|e| lease_error("UpdateItem", &self.connector, &key, e))?;
        self.ok("UpdateItem");
        Ok(())
    }

    async fn delete_heartbeat(&self, owner: &str, counter: Option<u64>) -> Result<(), LeaseError> {
        let key = heartbeat_key(owner);
        let mut req = self
            .client
            .delete_item()
            .table_name(&self.name)
            .key(LEASE_KEY, AttributeValue::S(key.clone()));
        if let Some(counter) = counter {
            req = req
                .condition_expression("#c = :c")
                .expression_attribute_names("#c", LEASE_COUNTER)
                .expression_attribute_values(":c", n(counter));
        }
        req.send()
            .await
            .map_err(|e| lease_error("DeleteItem", &self.connector, &key, e))?;
        self.ok("DeleteItem");
        Ok(())
    }

    async fn release(&self, key: &str, owner: &str, counter: u64) -> Result<(), LeaseError> {
        let req = self
            .fenced_update(key, owner, counter)
            .update_expression("REMOVE #o SET #c = :next")
            .expression_attribute_values(":next", n(counter + 1));
        self.send_fenced(key, req).await
    }

    async fn write_intent(
        &self,
        key: &str,
        owner: &str,
        counter: u64,
        intent: &Intent,
    ) -> Result<(), LeaseError> {
        let req = self
            .fenced_update(key, owner, counter)
            .update_expression("SET #p = :p")
            .expression_attribute_names("#p", PENDING_CHECKPOINT)
            .expression_attribute_values(":p", AttributeValue::S(intent.to_string()));
        self.send_fenced(key, req).await
    }

    async fn delete_finished(&self, key: &str) -> Result<(), LeaseError> {
        self.client
            .delete_item()
            .table_name(&self.name)
            .key(LEASE_KEY, AttributeValue::S(key.to_string()))
            .condition_expression("#cp = :end")
            .expression_attribute_names("#cp", CHECKPOINT)
            .expression_attribute_values(
                ":end",
                AttributeValue::S(Checkpoint::ShardEnd.as_string()),
            )
            .send()
            .await
            .map_err(|e| lease_error("DeleteItem", &self.connector, key, e))?;
        self.ok("DeleteItem");
        Ok(())
    }
}
