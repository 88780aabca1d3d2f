//! [`RunViewStore`] on the runs table and its one GSI, `by_created`.
//!
//! The index is lean on purpose: it projects only the keys and `status`, so a put of an
//! existing run writes the index only when the run's status changed (a small item, 1
//! WRU), and the body (compressed JSON, ~500 bytes for a planned run) is written once,
//! to the table. Listing therefore chooses runs on the index (newest first, filtered on
//! `status` when asked) and then reads their bodies from the table with `BatchGetItem`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::KeysAndAttributes;
use base64::Engine as _;
use chrono::SecondsFormat;
use futures::StreamExt as _;
use tracing::{instrument, warn};

use super::error::{build_error, sdk_error};
use super::item::{
    deflated_json, from_deflated_json_attr, from_json_attr, get_s, n, run_pk, s, Item,
};
use super::DynamoStore;
use crate::domain::{fold, RunKey, RunState, RunStatus};
use crate::ports::{EventStore as _, ListQuery, Page, RunViewStore, StoreError, StoreResult};

/// The run's [`RunState`] as DEFLATE-compressed JSON (B): a planned run's ~2 KB of JSON
/// takes ~500 bytes, so a put of its view is one WRU on the table, not three.
const BODY_Z: &str = "body_z";

/// The run's [`RunState`] as plain JSON (S), as views were written before [`BODY_Z`]:
/// still read, never written.
const BODY: &str = "body";

/// A view item's run, from whichever body it holds.
fn view_body(item: &Item) -> StoreResult<RunState> {
    if item.contains_key(BODY_Z) {
        from_deflated_json_attr(item, BODY_Z)
    } else {
        from_json_attr(item, BODY)
    }
}

/// GSI listing a tenant's runs newest first.
pub(crate) const BY_CREATED: &str = "by_created";

/// The attributes [`BY_CREATED`] projects besides the keys (table `pk`, index `tenant`
/// and `created_sk`): what listing needs to choose runs, and nothing that changes
/// without the status changing.
pub(crate) const BY_CREATED_PROJECTS: [&str; 1] = ["status"];

/// The index key of a run: what a cursor holds and a `Query` resumes after.
const INDEX_KEY: [&str; 3] = ["pk", "tenant", "created_sk"];

/// The cursor field naming the listing it belongs to: a status, or [`ALL_RUNS`].
const LISTING: &str = "listing";

/// The [`LISTING`] of an unfiltered listing (no status is called that).
const ALL_RUNS: &str = "all";

/// Index items the first `Query` of a status listing reads: `Limit` counts items read
/// before the filter, and index items are small (~150 bytes, 100 of them about 2
/// eventually consistent RRU). Each further `Query` of the same page reads twice as many,
/// up to [`FILTERED_QUERY_LIMIT_MAX`], so sparse matches take few requests while dense
/// ones are not read far past the page.
const FILTERED_QUERY_LIMIT: usize = 100;

/// The most index items one `Query` of a status listing reads (~1 MB is DynamoDB's own
/// cap on a page).
const FILTERED_QUERY_LIMIT_MAX: usize = 3_200;

/// Logs of runs in flight a listing reads at once. The view of a run in flight (not
/// [`RunStatus::is_finished`]) may trail it: the reactor writes a view when a run is
/// created and whenever its status changes among the finished ones, but the appends of a
/// run's steps do not wake it (see `engine::wakes_reactor`), so the view says `pending`
/// until the run settles. Listing folds such a run's log.
const REFRESH_CONCURRENCY: usize = 16;

/// Most keys in one `BatchGetItem`.
const BATCH_GET_MAX: usize = 100;

/// How often `BatchGetItem` is sent again for keys DynamoDB left unprocessed.
const BATCH_GET_RETRIES: u32 = 5;

/// The sort key of the index: creation time (fixed-width RFC 3339, so text order is
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

/// What a listing is of, as its cursors name it.
fn listing(status: Option<RunStatus>) -> &'static str {
    status.map_or(ALL_RUNS, RunStatus::as_str)
}

/// A cursor resuming after the run whose index item is `key`: its index key and the
/// listing, as base64url JSON.
fn encode_cursor(key: &Item, listing: &str) -> StoreResult<String> {
    let mut map = BTreeMap::new();
    for name in INDEX_KEY {
        map.insert(name, get_s(key, name)?);
    }
    map.insert(LISTING, listing);
    let json = serde_json::to_vec(&map).map_err(|e| StoreError::corrupt_from(e.to_string(), e))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json))
}

/// A cursor back into an `ExclusiveStartKey`, if this store issued it for `tenant`'s
/// `listing`.
fn decode_cursor(cursor: &str, tenant: &str, listing: &str) -> StoreResult<Item> {
    let mut map: BTreeMap<String, String> = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(invalid_cursor)?;
    let issued_for = map.remove(LISTING);
    let fits = issued_for.as_deref() == Some(listing)
        && map.len() == INDEX_KEY.len()
        && INDEX_KEY.iter().all(|k| map.contains_key(*k))
        && map.get("tenant").map(String::as_str) == Some(tenant)
        && map
            .get("pk")
            .is_some_and(|pk| pk.strip_prefix(tenant).is_some_and(|r| r.starts_with('#')));
    if !fits {
        return Err(invalid_cursor());
    }
    Ok(map.into_iter().map(|(k, v)| (k, s(v))).collect())
}

impl DynamoStore {
    /// One `Query` of `tenant`'s index items newest first, resuming after `start`:
    /// `limit` items read at most, of which those in `status` (all when `None`) come
    /// back, with the `LastEvaluatedKey` when the index may hold more.
    async fn query_index(
        &self,
        tenant: &str,
        status: Option<RunStatus>,
        start: Option<Item>,
        limit: usize,
    ) -> StoreResult<(Vec<Item>, Option<Item>)> {
        let mut request = self
            .client
            .query()
            .table_name(&self.tables.runs)
            .index_name(BY_CREATED)
            .key_condition_expression("#tenant = :tenant")
            .expression_attribute_names("#tenant", "tenant")
            .expression_attribute_values(":tenant", s(tenant))
            .scan_index_forward(false)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .set_exclusive_start_key(start);
        if let Some(status) = status {
            // `status` is a reserved word. DynamoDB filters after applying `Limit`. A run
            // in flight may be listed under the other in-flight status than its view's
            // (see [`REFRESH_CONCURRENCY`]).
            let (filter, values) = if !status.is_finished() {
                (
                    "#status IN (:pending, :running)",
                    [
                        (":pending", RunStatus::Pending),
                        (":running", RunStatus::Running),
                    ]
                    .to_vec(),
                )
            } else {
                ("#status = :status", [(":status", status)].to_vec())
            };
            request = request
                .filter_expression(filter)
                .expression_attribute_names("#status", "status");
            for (name, value) in values {
                request = request.expression_attribute_values(name, s(value.as_str()));
            }
        }
        let out = request.send().await.map_err(|e| sdk_error("Query", e))?;
        Ok((
            out.items.unwrap_or_default(),
            out.last_evaluated_key.filter(|k| !k.is_empty()),
        ))
    }

    /// `views` (by `pk`) with each run in flight replaced by the fold of its log, read
    /// [`REFRESH_CONCURRENCY`] at a time. A run whose log cannot be read or folded keeps
    /// its view (logged): a listing shows a stale run rather than failing.
    async fn refresh_in_flight(
        &self,
        mut views: HashMap<String, RunState>,
    ) -> HashMap<String, RunState> {
        let stale: Vec<String> = views
            .iter()
            .filter(|(_, v)| !v.status.is_finished())
            .map(|(pk, _)| pk.clone())
            .collect();
        let stale: Vec<(String, RunState)> = stale
            .into_iter()
            .filter_map(|pk| views.remove_entry(&pk))
            .collect();
        let refreshed: Vec<(String, RunState)> = futures::stream::iter(stale)
            .map(|(pk, view)| async move {
                let key = RunKey::new(&view.tenant, &view.run_id);
                let folded = match self.load(&key).await {
                    Ok(log) if log.is_empty() => return (pk, view),
                    Ok(log) => fold(&view.run_id, &log).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match folded {
                    Ok(state) if state.last_seq >= view.last_seq => (pk, state),
                    Ok(_) => (pk, view),
                    Err(error) => {
                        warn!(run = %key, %error, "listing a run in flight from its view: its log did not fold");
                        (pk, view)
                    }
                }
            })
            .buffered(REFRESH_CONCURRENCY)
            .collect()
            .await;
        views.extend(refreshed);
        views
    }

    /// The views stored under `pks` (at most [`BATCH_GET_MAX`]), strongly consistent,
    /// by `pk`; a key with no item is left out. Keys DynamoDB leaves unprocessed are
    /// asked for again after a short backoff.
    async fn batch_get(&self, pks: &[String]) -> StoreResult<HashMap<String, RunState>> {
        let mut found = HashMap::with_capacity(pks.len());
        let mut keys: Vec<Item> = pks
            .iter()
            .map(|pk| Item::from([("pk".to_owned(), s(pk))]))
            .collect();
        for retry in 0..=BATCH_GET_RETRIES {
            if retry > 0 {
                tokio::time::sleep(Duration::from_millis(25 << retry)).await;
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .projection_expression("#pk, #body, #body_z")
                .expression_attribute_names("#pk", "pk")
                .expression_attribute_names("#body", BODY)
                .expression_attribute_names("#body_z", BODY_Z)
                .build()
                .map_err(build_error)?;
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.tables.runs, request)
                .send()
                .await
                .map_err(|e| sdk_error("BatchGetItem", e))?;
            let items = out
                .responses
                .and_then(|mut r| r.remove(&self.tables.runs))
                .unwrap_or_default();
            for item in items {
                found.insert(get_s(&item, "pk")?.to_owned(), view_body(&item)?);
            }
            keys = out
                .unprocessed_keys
                .and_then(|mut u| u.remove(&self.tables.runs))
                .map(|k| k.keys)
                .unwrap_or_default();
            if keys.is_empty() {
                return Ok(found);
            }
        }
        Err(StoreError::unavailable(format!(
            "BatchGetItem left {} of {} run views unprocessed after {BATCH_GET_RETRIES} retries",
            keys.len(),
            pks.len()
        )))
    }
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
        out.item.map(|item| view_body(&item)).transpose()
    }

    /// Choose runs on the index, newest first, then read their bodies in batches. The
    /// next cursor resumes after the last run on the page, wherever in a `Query` page
    /// the listing stopped, so pages neither repeat nor skip a run.
    #[instrument(level = "debug", skip(self, query), fields(status = ?query.status, limit = query.limit))]
    async fn list(&self, tenant: &str, query: &ListQuery) -> StoreResult<Page<RunState>> {
        let listing = listing(query.status);
        let mut start = query
            .cursor
            .as_deref()
            .map(|c| decode_cursor(c, tenant, listing))
            .transpose()?;
        let mut items = Vec::new();
        // The index item of the last run on the page.
        let mut last = None;
        // Index items read (and matching the status) whose bodies are not fetched yet.
        let mut chosen: VecDeque<Item> = VecDeque::new();
        let mut exhausted = false;
        let mut filtered_read = FILTERED_QUERY_LIMIT;
        while items.len() < query.limit {
            let wanted = query.limit - items.len();
            if chosen.is_empty() {
                if exhausted {
                    break;
                }
                // One more than wanted, so a full page knows whether another follows; a
                // filtered read takes more, since `Limit` counts runs before the filter.
                let read = match query.status {
                    Some(_) => {
                        let read = wanted.saturating_add(1).max(filtered_read);
                        filtered_read = (filtered_read * 2).min(FILTERED_QUERY_LIMIT_MAX);
                        read
                    }
                    None => wanted.saturating_add(1),
                };
                let (page, next) = self
                    .query_index(tenant, query.status, start.take(), read)
                    .await?;
                chosen.extend(page);
                exhausted = next.is_none();
                start = next;
                continue;
            }
            let take = wanted.min(chosen.len()).min(BATCH_GET_MAX);
            let batch: Vec<Item> = chosen.drain(..take).collect();
            let pks = batch
                .iter()
                .map(|i| get_s(i, "pk").map(str::to_owned))
                .collect::<StoreResult<Vec<_>>>()?;
            let views = self.batch_get(&pks).await?;
            let mut views = self.refresh_in_flight(views).await;
            for (key, pk) in batch.into_iter().zip(&pks) {
                // Skip a run whose item is gone, or that has left the status asked for
                // (the index trails the table, and the view a run in flight).
                let Some(view) = views.remove(pk) else {
                    continue;
                };
                if query.status.is_some_and(|s| s != view.status) {
                    continue;
                }
                items.push(view);
                last = Some(key);
            }
        }
        let more = !chosen.is_empty() || !exhausted;
        let next_cursor = match last {
            Some(key) if more && items.len() == query.limit => Some(encode_cursor(&key, listing)?),
            _ => None,
        };
        Ok(Page { items, next_cursor })
    }

    #[instrument(level = "debug", skip(self, state), fields(run = %state.run_id, last_seq = state.last_seq))]
    async fn put(&self, state: &RunState) -> StoreResult<bool> {
        let key = RunKey::new(&state.tenant, &state.run_id);
        // Only `status` and the keys reach the index: a put that keeps the status writes
        // the table alone.
        let item: Item = [
            ("pk", s(run_pk(&key))),
            ("tenant", s(&state.tenant)),
            ("run_id", s(&state.run_id)),
            ("status", s(state.status.as_str())),
            ("created_sk", s(created_sk(state))),
            ("last_seq", n(state.last_seq)),
            (BODY_Z, deflated_json(state)?),
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

    fn index_key(tenant: &str) -> Item {
        [
            ("pk", s(format!("{tenant}#r"))),
            ("tenant", s(tenant)),
            ("created_sk", s("2026-01-01T00:00:00.000000Z#r")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    #[test]
    fn given_an_issued_cursor_when_decoded_for_the_same_listing_then_it_round_trips() {
        let key = index_key("t");
        for status in [None, Some(RunStatus::Running)] {
            let cursor = encode_cursor(&key, listing(status)).expect("encodes");
            assert_eq!(
                decode_cursor(&cursor, "t", listing(status)).expect("decodes"),
                key
            );
        }
    }

    #[test]
    fn given_an_issued_cursor_when_decoded_for_another_listing_then_it_is_invalid() {
        let completed =
            encode_cursor(&index_key("t"), listing(Some(RunStatus::Completed))).expect("encodes");
        for (tenant, status) in [
            ("t", Some(RunStatus::Running)),
            ("t", None),
            ("other", Some(RunStatus::Completed)),
        ] {
            assert!(
                matches!(
                    decode_cursor(&completed, tenant, listing(status)),
                    Err(StoreError::Invalid(_))
                ),
                "{tenant} {status:?}"
            );
        }
    }

    #[test]
    fn given_a_cursor_the_store_did_not_issue_when_decoded_then_it_is_invalid() {
        let encode = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        for cursor in [
            "%%%".to_owned(),
            encode("[]"),
            // A cursor of the old two-index store: no listing.
            encode(r#"{"created_sk":"x#r","pk":"t#r","tenant":"t"}"#),
            // Another tenant's run behind this tenant's name.
            encode(r#"{"created_sk":"x#r","listing":"all","pk":"u#r","tenant":"t"}"#),
            // An attribute too many.
            encode(r#"{"created_sk":"x#r","listing":"all","pk":"t#r","tenant":"t","x":"y"}"#),
        ] {
            assert!(
                matches!(
                    decode_cursor(&cursor, "t", ALL_RUNS),
                    Err(StoreError::Invalid(_))
                ),
                "{cursor}"
            );
        }
    }
}
