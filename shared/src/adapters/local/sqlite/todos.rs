//! Todos, applied once per effect key.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use super::{decode, encode, poisoned, sql_err, table_exists, SqliteStore};
use crate::adapters::todo_cursor;
use crate::domain::{Todo, TodoChange};
use crate::ports::{Page, StoreResult, TodoError, TodoQuery, TodoStore};

/// The first page of a tenant's todos, by page size, as last read: a list that every run
/// of an agent may start with reads it from memory instead of decoding it from the table.
/// Each entry holds the rows a read fetched (one more than the page, when there are).
/// A change drops the tenant's pages unless it is to an id after every row a page holds
/// (and then after at least one todo the page does not show, so neither the page nor its
/// "more to come" can move); every change moves `generation`, which keeps a read that
/// raced it from storing what it read before it.
#[derive(Default)]
pub(super) struct FirstPages {
    pages: HashMap<(String, usize), Arc<Vec<Todo>>>,
    generation: u64,
}

impl FirstPages {
    /// Pages held at most; more, and all are dropped (a list is read again).
    const MOST: usize = 256;

    fn changed(&mut self, tenant: &str, id: u64) {
        let unmoved = |((t, limit), rows): (&(String, usize), &Arc<Vec<Todo>>)| {
            t != tenant || (rows.len() > *limit && rows.last().is_some_and(|r| id > r.id))
        };
        if !self.pages.iter().all(unmoved) {
            self.pages.retain(|(t, _), _| t != tenant);
        }
        // A page being read (of any size) may have been read before this change.
        self.generation += 1;
    }

    fn keep(&mut self, read_at: u64, tenant: &str, limit: usize, rows: &Arc<Vec<Todo>>) {
        if read_at != self.generation {
            return;
        }
        if self.pages.len() >= Self::MOST {
            self.pages.clear();
        }
        self.pages.insert((tenant.to_owned(), limit), rows.clone());
    }
}

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
    if !table_exists(conn, "todo_counts")? {
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

/// The page of `limit` todos from `rows`, read one past it.
fn page_of(mut items: Vec<Todo>, limit: usize) -> Page<Todo> {
    let more = items.len() > limit;
    items.truncate(limit);
    let next_cursor = more
        .then(|| items.last().map(|t| todo_cursor::encode(t.id)))
        .flatten();
    Page { items, next_cursor }
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
        let (pages, for_pages) = (self.todo_pages.clone(), tenant.clone());
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
                Some(Box::new(
                    move |written: &StoreResult<Result<Todo, TodoError>>| {
                        if let (Ok(Ok(todo)), Ok(mut pages)) = (written, pages.lock()) {
                            pages.changed(&for_pages, todo.id);
                        }
                    },
                )),
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
        let first = query.cursor.is_none();
        let key = (tenant.clone(), limit);
        let read_at = {
            let pages = self.todo_pages.lock().map_err(|_| poisoned())?;
            match pages.pages.get(&key).filter(|_| first) {
                Some(rows) => return Ok(page_of(rows.as_ref().clone(), limit)),
                None => pages.generation,
            }
        };
        // One more than asked for says whether another page follows.
        let items: Vec<Todo> = self
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
        if first {
            let rows = Arc::new(items);
            let mut pages = self.todo_pages.lock().map_err(|_| poisoned())?;
            pages.keep(read_at, &key.0, limit, &rows);
            drop(pages);
            return Ok(page_of(Arc::unwrap_or_clone(rows), limit));
        }
        Ok(page_of(items, limit))
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
