//! [`TodoStore`] on the todos table: todos, the id counter and effect records of a tenant
//! share one partition, so a change and its effect record commit in one transaction.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{Delete, Put, ReturnValue, Select, TransactWriteItem};
use chrono::{DateTime, Utc};
use tracing::instrument;

use super::error::{build_error, cancelled_error, sdk_error, tx_failure, TxFailure};
use super::error::{CONDITION_FAILED, TRANSACTION_CONFLICT};
use super::item::{from_json_attr, get_n, n, s, to_json, Item};
use super::DynamoStore;
use crate::adapters::todo_cursor;
use crate::domain::{Todo, TodoChange};
use crate::ports::{Page, StoreError, StoreResult, TodoError, TodoQuery, TodoStore};

/// Attempts of one apply when transactions keep colliding with concurrent ones.
const MAX_ATTEMPTS: u32 = 8;

fn todo_sk(id: u64) -> String {
    format!("todo#{id:020}")
}

fn effect_sk(effect_key: &str) -> String {
    format!("effect#{effect_key}")
}

const COUNTER_SK: &str = "counter";

fn op_name(change: &TodoChange) -> &'static str {
    match change {
        TodoChange::Add { .. } => "add",
        TodoChange::Complete { .. } => "complete",
        TodoChange::Reopen { .. } => "reopen",
        TodoChange::Delete { .. } => "delete",
        TodoChange::Restore { .. } => "restore",
    }
}

fn todo_item(tenant: &str, todo: &Todo) -> StoreResult<Item> {
    Ok([
        ("pk", s(tenant)),
        ("sk", s(todo_sk(todo.id))),
        ("id", n(todo.id)),
        ("body", s(to_json(todo)?)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect())
}

fn put(table: &str, item: Item, condition: Option<&str>) -> StoreResult<TransactWriteItem> {
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .set_condition_expression(condition.map(str::to_owned))
        .build()
        .map_err(build_error)?;
    Ok(TransactWriteItem::builder().put(put).build())
}

impl DynamoStore {
    async fn get_todo_item(&self, tenant: &str, sk: String) -> StoreResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.todos)
            .key("pk", s(tenant))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        Ok(out.item)
    }

    async fn next_todo_id(&self, tenant: &str) -> StoreResult<u64> {
        let out = self
            .client
            .update_item()
            .table_name(&self.tables.todos)
            .key("pk", s(tenant))
            .key("sk", s(COUNTER_SK))
            .update_expression("ADD last_id :one")
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| sdk_error("UpdateItem", e))?;
        get_n(&out.attributes.unwrap_or_default(), "last_id")
    }

    /// The todo as the change leaves it, and the write that makes the change.
    async fn plan_change(
        &self,
        tenant: &str,
        change: &TodoChange,
        new_id: &mut Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<(Todo, TransactWriteItem), TodoError> {
        let table = &self.tables.todos;
        Ok(match change {
            TodoChange::Add { title } => {
                let id = match *new_id {
                    Some(id) => id,
                    None => *new_id.insert(self.next_todo_id(tenant).await?),
                };
                let todo = Todo {
                    id,
                    title: title.clone(),
                    done: false,
                    created_at: now,
                    completed_at: None,
                };
                let write = put(
                    table,
                    todo_item(tenant, &todo)?,
                    Some("attribute_not_exists(pk)"),
                )?;
                (todo, write)
            }
            TodoChange::Complete { id } | TodoChange::Reopen { id } => {
                let mut todo = self
                    .get(tenant, *id)
                    .await?
                    .ok_or(TodoError::NotFound(*id))?;
                todo.done = matches!(change, TodoChange::Complete { .. });
                todo.completed_at = todo.done.then_some(now);
                let write = put(
                    table,
                    todo_item(tenant, &todo)?,
                    Some("attribute_exists(pk)"),
                )?;
                (todo, write)
            }
            TodoChange::Delete { id } => {
                let todo = self
                    .get(tenant, *id)
                    .await?
                    .ok_or(TodoError::NotFound(*id))?;
                let delete = Delete::builder()
                    .table_name(table)
                    .key("pk", s(tenant))
                    .key("sk", s(todo_sk(*id)))
                    .condition_expression("attribute_exists(pk)")
                    .build()
                    .map_err(build_error)?;
                (todo, TransactWriteItem::builder().delete(delete).build())
            }
            TodoChange::Restore { todo } => {
                (todo.clone(), put(table, todo_item(tenant, todo)?, None)?)
            }
        })
    }
}

#[async_trait]
impl TodoStore for DynamoStore {
    #[instrument(level = "debug", skip(self, change, now), fields(op = op_name(change)))]
    async fn apply(
        &self,
        tenant: &str,
        effect_key: &str,
        change: &TodoChange,
        now: DateTime<Utc>,
    ) -> Result<Todo, TodoError> {
        // An id taken from the counter is kept across attempts.
        let mut new_id = None;
        for attempt in 0..MAX_ATTEMPTS {
            if let Some(done) = self.recorded(tenant, effect_key).await? {
                return Ok(done);
            }
            let (todo, write) = self.plan_change(tenant, change, &mut new_id, now).await?;
            let effect: Item = [
                ("pk", s(tenant)),
                ("sk", s(effect_sk(effect_key))),
                ("result", s(to_json(&todo)?)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            let effect = put(&self.tables.todos, effect, Some("attribute_not_exists(pk)"))?;
            let result = self
                .client
                .transact_write_items()
                .transact_items(effect)
                .transact_items(write)
                .send()
                .await;
            let Err(err) = result else {
                return Ok(todo);
            };
            let reasons = match tx_failure(err) {
                TxFailure::Other(e) => return Err(e.into()),
                TxFailure::Cancelled(reasons) => reasons,
            };
            let failed = |i: usize, code: &str| reasons.get(i).is_some_and(|r| r == code);
            if failed(0, CONDITION_FAILED) {
                // Applied concurrently under the same key: the next round returns it.
                continue;
            }
            if failed(1, CONDITION_FAILED) {
                return Err(match change {
                    TodoChange::Complete { id }
                    | TodoChange::Reopen { id }
                    | TodoChange::Delete { id } => TodoError::NotFound(*id),
                    _ => {
                        StoreError::Conflict(format!("todo {} of {tenant} exists already", todo.id))
                            .into()
                    }
                });
            }
            if reasons.iter().any(|r| r == TRANSACTION_CONFLICT) {
                tokio::time::sleep(Duration::from_millis(10 << attempt.min(5))).await;
                continue;
            }
            return Err(cancelled_error("apply todo change", &reasons).into());
        }
        if let Some(done) = self.recorded(tenant, effect_key).await? {
            return Ok(done);
        }
        Err(StoreError::Conflict(format!(
            "todo change {effect_key} of {tenant} kept colliding with concurrent changes"
        ))
        .into())
    }

    #[instrument(level = "debug", skip(self))]
    async fn recorded(&self, tenant: &str, effect_key: &str) -> StoreResult<Option<Todo>> {
        self.get_todo_item(tenant, effect_sk(effect_key))
            .await?
            .map(|item| from_json_attr(&item, "result"))
            .transpose()
    }

    #[instrument(level = "debug", skip(self))]
    async fn get(&self, tenant: &str, id: u64) -> StoreResult<Option<Todo>> {
        self.get_todo_item(tenant, todo_sk(id))
            .await?
            .map(|item| from_json_attr(&item, "body"))
            .transpose()
    }

    #[instrument(level = "debug", skip(self, query), fields(limit = query.limit))]
    async fn list(&self, tenant: &str, query: &TodoQuery) -> StoreResult<Page<Todo>> {
        let after = query
            .cursor
            .as_deref()
            .map(todo_cursor::decode)
            .transpose()?;
        let mut start: Option<Item> = after.map(|id| {
            [("pk", s(tenant)), ("sk", s(todo_sk(id)))]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect()
        });
        // One more than asked for says whether another page follows; a page can also stop
        // short at 1 MB, so keep reading until there are enough or none are left.
        let wanted = query.limit.saturating_add(1);
        let mut items = Vec::new();
        while items.len() < wanted {
            let page = self
                .client
                .query()
                .table_name(&self.tables.todos)
                .key_condition_expression("pk = :pk AND begins_with(sk, :todo)")
                .expression_attribute_values(":pk", s(tenant))
                .expression_attribute_values(":todo", s("todo#"))
                .consistent_read(true)
                .limit(i32::try_from(wanted - items.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query", e))?;
            for item in page.items.unwrap_or_default() {
                items.push(from_json_attr::<Todo>(&item, "body")?);
            }
            start = page.last_evaluated_key.filter(|k| !k.is_empty());
            if start.is_none() {
                break;
            }
        }
        let more = items.len() > query.limit;
        items.truncate(query.limit);
        let next_cursor = more
            .then(|| items.last().map(|t| todo_cursor::encode(t.id)))
            .flatten();
        Ok(Page { items, next_cursor })
    }

    /// A `COUNT` query: DynamoDB reads the todos but sends back only how many there are.
    #[instrument(level = "debug", skip(self))]
    async fn count(&self, tenant: &str) -> StoreResult<u64> {
        let mut total = 0u64;
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.tables.todos)
                .key_condition_expression("pk = :pk AND begins_with(sk, :todo)")
                .expression_attribute_values(":pk", s(tenant))
                .expression_attribute_values(":todo", s("todo#"))
                .select(Select::Count)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query", e))?;
            total += u64::try_from(page.count).unwrap_or(0);
            start = page.last_evaluated_key.filter(|k| !k.is_empty());
            if start.is_none() {
                return Ok(total);
            }
        }
    }
}
