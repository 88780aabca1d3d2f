//! [`RunViewStore`] on the runs table and its two GSIs.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine as _;
use chrono::SecondsFormat;
use tracing::instrument;

use super::error::sdk_error;
use super::item::{from_json_attr, n, run_pk, s, to_json, Item};
use super::DynamoStore;
use crate::domain::{RunKey, RunState};
use crate::ports::{ListQuery, Page, RunViewStore, StoreError, StoreResult};

/// GSI listing a tenant's runs newest first.
pub(crate) const BY_CREATED: &str = "by_created";
/// GSI listing a tenant's runs of one status newest first.
pub(crate) const BY_STATUS: &str = "by_status";

/// The sort key of both indexes: creation time (fixed-width RFC 3339, so text order is
/// time order), then run id.
pub(crate) fn created_sk(view: &RunState) -> String {
    format!(
        "{}#{}",
        view.created_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        view.run_id
    )
}

fn invalid_cursor() -> StoreError {
    StoreError::Invalid("cursor is not one this server issued for this listing".into())
}

/// The `LastEvaluatedKey` (all string attributes) as base64url JSON.
fn encode_cursor(key: &Item) -> StoreResult<String> {
    let mut map = BTreeMap::new();
    for (name, value) in key {
        let AttributeValue::S(v) = value else {
            return Err(StoreError::corrupt(format!(
                "runs index key attribute {name} is not a string"
            )));
        };
        map.insert(name.as_str(), v.as_str());
    }
    let json = serde_json::to_vec(&map).map_err(|e| StoreError::corrupt_from(e.to_string(), e))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json))
}

/// A cursor back into an `ExclusiveStartKey`, if it is one for the index keyed by
/// `hash_attr = hash_value`.
fn decode_cursor(cursor: &str, hash_attr: &str, hash_value: &str) -> StoreResult<Item> {
    let map: BTreeMap<String, String> = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(invalid_cursor)?;
    let expected = ["created_sk", "pk", hash_attr];
    let fits = map.len() == expected.len()
        && expected.iter().all(|k| map.contains_key(*k))
        && map.get(hash_attr).map(String::as_str) == Some(hash_value);
    if !fits {
        return Err(invalid_cursor());
    }
    Ok(map.into_iter().map(|(k, v)| (k, s(v))).collect())
}

#[async_trait]
impl RunViewStore for DynamoStore {
    #[instrument(level = "debug", skip(self), fields(run = %key))]
    async fn get(&self, key: &RunKey) -> StoreResult<Option<RunState>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.runs)
            .key("pk", s(run_pk(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        out.item
            .map(|item| from_json_attr(&item, "body"))
            .transpose()
    }

    #[instrument(level = "debug", skip(self, query), fields(status = ?query.status, limit = query.limit))]
    async fn list(&self, tenant: &str, query: &ListQuery) -> StoreResult<Page<RunState>> {
        let (index, hash_attr, hash_value) = match query.status {
            Some(status) => (
                BY_STATUS,
                "tenant_status",
                format!("{tenant}#{}", status.as_str()),
            ),
            None => (BY_CREATED, "tenant", tenant.to_owned()),
        };
        let mut start = query
            .cursor
            .as_deref()
            .map(|c| decode_cursor(c, hash_attr, &hash_value))
            .transpose()?;
        let mut items = Vec::new();
        if query.limit == 0 {
            return Ok(Page {
                items,
                next_cursor: None,
            });
        }
        // A page can stop short of `Limit` at 1 MB; keep reading until it is full.
        loop {
            let remaining = i32::try_from(query.limit - items.len()).unwrap_or(i32::MAX);
            let page = self
                .client
                .query()
                .table_name(&self.tables.runs)
                .index_name(index)
                .key_condition_expression("#h = :h")
                .expression_attribute_names("#h", hash_attr)
                .expression_attribute_values(":h", s(hash_value.as_str()))
                .scan_index_forward(false)
                .limit(remaining)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query", e))?;
            for item in page.items.unwrap_or_default() {
                items.push(from_json_attr::<RunState>(&item, "body")?);
            }
            start = page.last_evaluated_key.filter(|k| !k.is_empty());
            if start.is_none() || items.len() >= query.limit {
                break;
            }
        }
        let next_cursor = start.as_ref().map(encode_cursor).transpose()?;
        Ok(Page { items, next_cursor })
    }

    #[instrument(level = "debug", skip(self, state), fields(run = %state.run_id, last_seq = state.last_seq))]
    async fn put(&self, state: &RunState) -> StoreResult<bool> {
        let key = RunKey::new(&state.tenant, &state.run_id);
        let status = state.status.as_str();
        let item: Item = [
            ("pk", s(run_pk(&key))),
            ("tenant", s(&state.tenant)),
            ("run_id", s(&state.run_id)),
            ("status", s(status)),
            ("created_sk", s(created_sk(state))),
            ("tenant_status", s(format!("{}#{status}", state.tenant))),
            ("last_seq", n(state.last_seq)),
            ("body", s(to_json(state)?)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let result = self
            .client
            .put_item()
            .table_name(&self.tables.runs)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR last_seq < :seq")
            .expression_attribute_values(":seq", n(state.last_seq))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            // The stored view is as new or newer.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(sdk_error("PutItem", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_an_issued_cursor_when_decoded_for_the_same_listing_then_it_round_trips() {
        let key: Item = [
            ("pk", s("t#r")),
            ("tenant", s("t")),
            ("created_sk", s("2026-01-01T00:00:00.000000Z#r")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let cursor = encode_cursor(&key).expect("encodes");
        assert_eq!(decode_cursor(&cursor, "tenant", "t").expect("decodes"), key);
        assert!(decode_cursor(&cursor, "tenant", "other").is_err());
        assert!(decode_cursor(&cursor, "tenant_status", "t#running").is_err());
        assert!(decode_cursor("%%%", "tenant", "t").is_err());
    }
}
