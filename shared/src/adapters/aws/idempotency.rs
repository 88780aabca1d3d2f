//! [`IdempotencyStore`] on the idempotency table: first claim wins, keys expire by TTL.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use tracing::instrument;

use super::error::sdk_error;
use super::item::{get_n, get_s, n, s, Item};
use super::DynamoStore;
use crate::ports::{IdempotencyRecord, IdempotencyStore, StoreError, StoreResult};

/// How long a key stays bound.
pub const KEY_TTL: Duration = Duration::hours(24);

/// A claimed key can vanish (TTL) between the failed put and the read: try again this often.
const MAX_ATTEMPTS: usize = 3;

fn key_pk(tenant: &str, key: &str) -> String {
    format!("{tenant}#{key}")
}

#[async_trait]
impl IdempotencyStore for DynamoStore {
    #[instrument(level = "debug", skip(self, now))]
    async fn lookup(
        &self,
        tenant: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        let bound = self
            .client
            .get_item()
            .table_name(&self.tables.idempotency)
            .key("pk", s(key_pk(tenant, key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        let Some(item) = bound.item else {
            return Ok(None);
        };
        // TTL deletes lazily: an expired binding is as good as absent.
        if get_n::<i64>(&item, "expires_at")? < now.timestamp() {
            return Ok(None);
        }
        Ok(Some(IdempotencyRecord {
            run_id: get_s(&item, "run_id")?.to_owned(),
            request_hash: get_s(&item, "request_hash")?.to_owned(),
        }))
    }

    #[instrument(level = "debug", skip(self, record, now))]
    async fn claim(
        &self,
        tenant: &str,
        key: &str,
        record: &IdempotencyRecord,
        now: DateTime<Utc>,
    ) -> StoreResult<IdempotencyRecord> {
        let pk = key_pk(tenant, key);
        for _ in 0..MAX_ATTEMPTS {
            let item: Item = [
                ("pk", s(&pk)),
                ("tenant", s(tenant)),
                ("run_id", s(&record.run_id)),
                ("request_hash", s(&record.request_hash)),
                ("expires_at", n((now + KEY_TTL).timestamp())),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            // TTL deletes lazily (up to days late): an expired binding is free to take.
            let put = self
                .client
                .put_item()
                .table_name(&self.tables.idempotency)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk) OR expires_at < :now")
                .expression_attribute_values(":now", n(now.timestamp()))
                .send()
                .await;
            match put {
                Ok(_) => return Ok(record.clone()),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
                Err(e) => return Err(sdk_error("PutItem", e)),
            }
            let bound = self
                .client
                .get_item()
                .table_name(&self.tables.idempotency)
                .key("pk", s(&pk))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| sdk_error("GetItem", e))?;
            if let Some(item) = bound.item {
                return Ok(IdempotencyRecord {
                    run_id: get_s(&item, "run_id")?.to_owned(),
                    request_hash: get_s(&item, "request_hash")?.to_owned(),
                });
            }
        }
        Err(StoreError::unavailable(format!(
            "idempotency key {key} of {tenant} kept changing while being claimed"
        )))
    }
}
