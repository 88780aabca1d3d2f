//! [`BreakerStore`] on the breakers table: versioned compare-and-set per tool.

use async_trait::async_trait;
use serde_json::Value;
use tracing::instrument;

use super::error::sdk_error;
use super::item::{from_json_attr, get_n, n, s, to_json, Item};
use super::DynamoStore;
use crate::ports::{BreakerStore, StoreError, StoreResult, StoredBreaker};

#[async_trait]
impl BreakerStore for DynamoStore {
    #[instrument(level = "debug", skip(self))]
    async fn get(&self, tool: &str) -> StoreResult<Option<StoredBreaker>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.breakers)
            .key("tool", s(tool))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        out.item
            .map(|item| {
                Ok(StoredBreaker {
                    state: from_json_attr(&item, "state")?,
                    version: get_n(&item, "version")?,
                })
            })
            .transpose()
    }

    #[instrument(level = "debug", skip(self, state))]
    async fn put(&self, tool: &str, expected: u64, state: &Value) -> StoreResult<()> {
        let item: Item = [
            ("tool", s(tool)),
            ("version", n(expected + 1)),
            ("state", s(to_json(state)?)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let request = self
            .client
            .put_item()
            .table_name(&self.tables.breakers)
            .set_item(Some(item));
        let request = if expected == 0 {
            request.condition_expression("attribute_not_exists(tool)")
        } else {
            request
                .condition_expression("version = :expected")
                .expression_attribute_values(":expected", n(expected))
        };
        request
            .send()
            .await
            .map_err(|e| match sdk_error("PutItem", e) {
                StoreError::Conflict(_) => {
                    StoreError::Conflict(format!("breaker {tool} changed since version {expected}"))
                }
                other => other,
            })?;
        Ok(())
    }
}
