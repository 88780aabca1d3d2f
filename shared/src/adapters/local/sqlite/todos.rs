//! Todos, applied once per effect key.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use super::{decode, encode, sql_err, SqliteStore};
use crate::adapters::todo_cursor;
use crate::domain::{Todo, TodoChange};
use crate::ports::{Page, StoreResult, TodoError, TodoQuery, TodoStore};

fn get_todo(conn: &Connection, tenant: &str, id: u64) -> StoreResult<Option<Todo>> {
    conn.prepare_cached("SELECT body FROM todos WHERE tenant = ?1 AND id = ?2")
        .map_err(sql_err)?
        .query_row(params![tenant, id as i64], |r| r.get::<_, String>(0))
        .optional()
        .map_err(sql_err)?
        .map(|b| decode(&b))
        .transpose()
}

/// Add `by` to the tenant's count of todos (kept beside them, so counting does not read
/// them all).
fn add_to_count(conn: &Connection, tenant: &str, by: i64) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO todo_counts (tenant, n) VALUES (?1, ?2)
         ON CONFLICT (tenant) DO UPDATE SET n = n + excluded.n",
    )
    .map_err(sql_err)?
    .execute(params![tenant, by])
    .map_err(sql_err)?;
    Ok(())
}

/// Count the todos of a database written before their counts were kept (no
/// `todo_counts` table), in one transaction.
pub(super) fn migrate_counts(conn: &Connection) -> StoreResult<()> {
    let counted: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'todo_counts')",
            [],
            |r| r.get(0),
        )
        .map_err(sql_err)?;
    if !counted {
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             CREATE TABLE todo_counts (tenant TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
             INSERT INTO todo_counts (tenant, n) SELECT tenant, COUNT(*) FROM todos GROUP BY tenant;
             COMMIT;",
        )
        .map_err(sql_err)?;
    }
    Ok(())
}

fn put_todo(conn: &Connection, tenant: &str, todo: &Todo) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO todos (tenant, id, body) VALUES (?1, ?2, ?3)
         ON CONFLICT (tenant, id) DO UPDATE SET body = excluded.body",
    )
    .map_err(sql_err)?
    .execute(params![tenant, todo.id as i64, encode(todo)?])
    .map_err(sql_err)?;
    Ok(())
}

#[async_trait]
impl TodoStore for SqliteStore {
    async fn apply(
        &self,
        tenant: &str,
        effect_key: &str,
        change: &TodoChange,
        now: DateTime<Utc>,
    ) -> Result<Todo, TodoError> {
        let tenant = tenant.to_owned();
        let effect_key = effect_key.to_owned();
        let change = change.clone();
        // Only a read decides that nothing is to be done (a recorded effect, a missing
        // todo); after the first write only the database itself can fail.
        let result: StoreResult<Result<Todo, TodoError>> = self
            .writer
            .write_checked(
                move |tx| {
                    let done: Option<String> = tx
                        .prepare_cached(
                            "SELECT result FROM todo_effects WHERE tenant = ?1 AND effect_key = ?2",
                        )
                        .map_err(sql_err)?
                        .query_row(params![tenant, effect_key], |r| r.get(0))
                        .optional()
                        .map_err(sql_err)?;
                    if let Some(done) = done {
                        return Ok(Ok(decode(&done)?));
                    }
                    let todo = match &change {
                        TodoChange::Add { title } => {
                            let id: i64 = tx
                                .prepare_cached(
                                    "INSERT INTO todo_ids (tenant, last_id) VALUES (?1, 1)
                                 ON CONFLICT (tenant) DO UPDATE SET last_id = last_id + 1
                                 RETURNING last_id",
                                )
                                .map_err(sql_err)?
                                .query_row(params![tenant], |r| r.get(0))
                                .map_err(sql_err)?;
                            let todo = Todo {
                                id: id as u64,
                                title: title.clone(),
                                done: false,
                                created_at: now,
                                completed_at: None,
                            };
                            put_todo(tx, &tenant, &todo)?;
                            add_to_count(tx, &tenant, 1)?;
                            todo
                        }
                        TodoChange::Complete { id } | TodoChange::Reopen { id } => {
                            let Some(mut todo) = get_todo(tx, &tenant, *id)? else {
                                return Ok(Err(TodoError::NotFound(*id)));
                            };
                            todo.done = matches!(change, TodoChange::Complete { .. });
                            todo.completed_at = todo.done.then_some(now);
                            put_todo(tx, &tenant, &todo)?;
                            todo
                        }
                        TodoChange::Delete { id } => {
                            let Some(todo) = get_todo(tx, &tenant, *id)? else {
                                return Ok(Err(TodoError::NotFound(*id)));
                            };
                            tx.prepare_cached("DELETE FROM todos WHERE tenant = ?1 AND id = ?2")
                                .map_err(sql_err)?
                                .execute(params![tenant, *id as i64])
                                .map_err(sql_err)?;
                            add_to_count(tx, &tenant, -1)?;
                            todo
                        }
                        TodoChange::Restore { todo } => {
                            if get_todo(tx, &tenant, todo.id)?.is_none() {
                                add_to_count(tx, &tenant, 1)?;
                            }
                            put_todo(tx, &tenant, todo)?;
                            todo.clone()
                        }
                    };
                    tx.prepare_cached(
                        "INSERT INTO todo_effects (tenant, effect_key, result) VALUES (?1, ?2, ?3)",
                    )
                    .map_err(sql_err)?
                    .execute(params![tenant, effect_key, encode(&todo)?])
                    .map_err(sql_err)?;
                    Ok(Ok(todo))
                },
                None,
            )
            .await;
        result?
    }

    async fn recorded(&self, tenant: &str, effect_key: &str) -> StoreResult<Option<Todo>> {
        let tenant = tenant.to_owned();
        let effect_key = effect_key.to_owned();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT result FROM todo_effects WHERE tenant = ?1 AND effect_key = ?2",
            )
            .map_err(sql_err)?
            .query_row(params![tenant, effect_key], |r| r.get::<_, String>(0))
            .optional()
            .map_err(sql_err)?
            .map(|b| decode(&b))
            .transpose()
        })
        .await
    }

    async fn get(&self, tenant: &str, id: u64) -> StoreResult<Option<Todo>> {
        let tenant = tenant.to_owned();
        self.read(move |conn| get_todo(conn, &tenant, id)).await
    }

    async fn list(&self, tenant: &str, query: &TodoQuery) -> StoreResult<Page<Todo>> {
        let tenant = tenant.to_owned();
        let limit = query.limit;
        let after = query
            .cursor
            .as_deref()
            .map(todo_cursor::decode)
            .transpose()?
            .unwrap_or(0);
        // One more than asked for says whether another page follows.
        let mut items: Vec<Todo> = self
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT body FROM todos WHERE tenant = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
                    )
                    .map_err(sql_err)?;
                let rows = stmt
                    .query_map(
                        params![tenant, after as i64, limit.saturating_add(1) as i64],
                        |r| r.get::<_, String>(0),
                    )
                    .map_err(sql_err)?;
                rows.map(|r| r.map_err(sql_err).and_then(|b| decode(&b)))
                    .collect()
            })
            .await?;
        let more = items.len() > limit;
        items.truncate(limit);
        let next_cursor = more
            .then(|| items.last().map(|t| todo_cursor::encode(t.id)))
            .flatten();
        Ok(Page { items, next_cursor })
    }

    async fn count(&self, tenant: &str) -> StoreResult<u64> {
        let tenant = tenant.to_owned();
        self.read(move |conn| {
            let n: Option<i64> = conn
                .prepare_cached("SELECT n FROM todo_counts WHERE tenant = ?1")
                .map_err(sql_err)?
                .query_row(params![tenant], |r| r.get(0))
                .optional()
                .map_err(sql_err)?;
            Ok(n.unwrap_or(0).max(0) as u64)
        })
        .await
    }
}
