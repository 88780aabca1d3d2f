//! In-memory adapters, for unit tests of the engine and tools. Not durable.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound::{Excluded, Unbounded};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::notify::RunNotifier;
use crate::adapters::todo_cursor;
use crate::domain::{EventRecord, RunKey, RunState, Todo, TodoChange};
use crate::ports::{
    AppendSignals, BreakerStore, EventStore, IdempotencyRecord, IdempotencyStore, ListQuery,
    Outbox, Page, RunViewStore, StoreError, StoreResult, StoredBreaker, TodoError, TodoQuery,
    TodoStore,
};

fn poisoned() -> StoreError {
    StoreError::unavailable("in-memory store lock poisoned")
}

/// Todos in memory, with the same once-per-effect-key semantics as the durable stores.
#[derive(Default)]
pub struct MemoryTodos {
    inner: Mutex<TodoTables>,
}

#[derive(Default)]
struct TodoTables {
    todos: BTreeMap<(String, u64), Todo>,
    next_id: HashMap<String, u64>,
    effects: HashMap<(String, String), Todo>,
}

/// Apply a todo change to a map of todos; shared rules of the in-memory store.
fn apply_change(
    t: &mut TodoTables,
    tenant: &str,
    change: &TodoChange,
    now: DateTime<Utc>,
) -> Result<Todo, TodoError> {
    let key = |id: u64| (tenant.to_owned(), id);
    match change {
        TodoChange::Add { title } => {
            let next = t.next_id.entry(tenant.to_owned()).or_insert(0);
            *next += 1;
            let todo = Todo {
                id: *next,
                title: title.clone(),
                done: false,
                created_at: now,
                completed_at: None,
            };
            t.todos.insert(key(todo.id), todo.clone());
            Ok(todo)
        }
        TodoChange::Complete { id } | TodoChange::Reopen { id } => {
            let done = matches!(change, TodoChange::Complete { .. });
            let todo = t.todos.get_mut(&key(*id)).ok_or(TodoError::NotFound(*id))?;
            todo.done = done;
            todo.completed_at = done.then_some(now);
            Ok(todo.clone())
        }
        TodoChange::Delete { id } => t.todos.remove(&key(*id)).ok_or(TodoError::NotFound(*id)),
        TodoChange::Restore { todo } => {
            t.todos.insert(key(todo.id), todo.clone());
            Ok(todo.clone())
        }
    }
}

#[async_trait]
impl TodoStore for MemoryTodos {
    async fn apply(
        &self,
        tenant: &str,
        effect_key: &str,
        change: &TodoChange,
        now: DateTime<Utc>,
    ) -> Result<Todo, TodoError> {
        let mut t = self.inner.lock().map_err(|_| poisoned())?;
        let ek = (tenant.to_owned(), effect_key.to_owned());
        if let Some(done) = t.effects.get(&ek) {
            return Ok(done.clone());
        }
        let todo = apply_change(&mut t, tenant, change, now)?;
        t.effects.insert(ek, todo.clone());
        Ok(todo)
    }

    async fn recorded(&self, tenant: &str, effect_key: &str) -> StoreResult<Option<Todo>> {
        let t = self.inner.lock().map_err(|_| poisoned())?;
        Ok(t.effects
            .get(&(tenant.to_owned(), effect_key.to_owned()))
            .cloned())
    }

    async fn get(&self, tenant: &str, id: u64) -> StoreResult<Option<Todo>> {
        let t = self.inner.lock().map_err(|_| poisoned())?;
        Ok(t.todos.get(&(tenant.to_owned(), id)).cloned())
    }

    async fn list(&self, tenant: &str, query: &TodoQuery) -> StoreResult<Page<Todo>> {
        let after = query
            .cursor
            .as_deref()
            .map(todo_cursor::decode)
            .transpose()?
            .unwrap_or(0);
        let t = self.inner.lock().map_err(|_| poisoned())?;
        let mut rest = t
            .todos
            .range((Excluded((tenant.to_owned(), after)), Unbounded))
            .take_while(|((tn, _), _)| tn == tenant)
            .map(|(_, todo)| todo);
        let items: Vec<Todo> = rest.by_ref().take(query.limit).cloned().collect();
        let next_cursor = rest
            .next()
            .and(items.last())
            .map(|last| todo_cursor::encode(last.id));
        Ok(Page { items, next_cursor })
    }

    async fn count(&self, tenant: &str) -> StoreResult<u64> {
        let t = self.inner.lock().map_err(|_| poisoned())?;
        Ok(t.todos.keys().filter(|(tn, _)| tn == tenant).count() as u64)
    }
}

/// Events, views, idempotency keys and breakers in memory. Effects handed to `append`
/// are collected in `outbox` for tests to inspect.
#[derive(Default)]
pub struct MemoryStore {
    events: Mutex<HashMap<RunKey, Vec<EventRecord>>>,
    views: Mutex<HashMap<RunKey, RunState>>,
    keys: Mutex<HashMap<(String, String), IdempotencyRecord>>,
    breakers: Mutex<HashMap<String, StoredBreaker>>,
    /// Effects handed to `append`, in order, for tests to inspect (nothing consumes them).
    pub outbox: Mutex<Vec<crate::domain::Effect>>,
    /// Signals of committed appends (see [`EventStore::signals`]).
    pub notifier: RunNotifier,
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn append(
        &self,
        key: &RunKey,
        events: &[EventRecord],
        outbox: Outbox<'_>,
    ) -> StoreResult<()> {
        let mut all = self.events.lock().map_err(|_| poisoned())?;
        let log = all.entry(key.clone()).or_default();
        let last = log.last().map_or(0, |e| e.seq);
        match events.first() {
            Some(first) if first.seq != last + 1 => {
                return Err(StoreError::Conflict(format!(
                    "{key}: seq {} exists",
                    first.seq
                )))
            }
            None => return Ok(()),
            _ => {}
        }
        log.extend_from_slice(events);
        drop(all);
        self.views
            .lock()
            .map_err(|_| poisoned())?
            .insert(key.clone(), outbox.view.clone());
        self.outbox
            .lock()
            .map_err(|_| poisoned())?
            .extend_from_slice(outbox.effects);
        if let Some(last) = events.last() {
            self.notifier.publish(key, last.seq);
        }
        Ok(())
    }

    fn signals(&self) -> Option<&dyn AppendSignals> {
        Some(&self.notifier)
    }

    async fn load(&self, key: &RunKey) -> StoreResult<Vec<EventRecord>> {
        let all = self.events.lock().map_err(|_| poisoned())?;
        Ok(all.get(key).cloned().unwrap_or_default())
    }
}

#[async_trait]
impl RunViewStore for MemoryStore {
    async fn get(&self, key: &RunKey) -> StoreResult<Option<RunState>> {
        Ok(self.views.lock().map_err(|_| poisoned())?.get(key).cloned())
    }

    async fn list(&self, tenant: &str, query: &ListQuery) -> StoreResult<Page<RunState>> {
        let views = self.views.lock().map_err(|_| poisoned())?;
        let mut runs: Vec<RunState> = views
            .values()
            .filter(|v| v.tenant == tenant && query.status.is_none_or(|s| s == v.status))
            .cloned()
            .collect();
        runs.sort_by(|a, b| (b.created_at, &b.run_id).cmp(&(a.created_at, &a.run_id)));
        let start = match &query.cursor {
            Some(c) => runs
                .iter()
                .position(|r| &r.run_id == c)
                .map(|p| p + 1)
                .ok_or_else(|| {
                    StoreError::Invalid("cursor is not one this server issued".into())
                })?,
            None => 0,
        };
        let items: Vec<RunState> = runs.into_iter().skip(start).take(query.limit).collect();
        let next_cursor = (items.len() == query.limit)
            .then(|| items.last().map(|r| r.run_id.clone()))
            .flatten();
        Ok(Page { items, next_cursor })
    }

    async fn put(&self, state: &RunState) -> StoreResult<bool> {
        let mut views = self.views.lock().map_err(|_| poisoned())?;
        let key = RunKey::new(&state.tenant, &state.run_id);
        if views
            .get(&key)
            .is_some_and(|v| v.last_seq >= state.last_seq)
        {
            return Ok(false);
        }
        views.insert(key, state.clone());
        Ok(true)
    }
}

#[async_trait]
impl IdempotencyStore for MemoryStore {
    async fn lookup(
        &self,
        tenant: &str,
        key: &str,
        _now: DateTime<Utc>,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        let keys = self.keys.lock().map_err(|_| poisoned())?;
        Ok(keys.get(&(tenant.to_owned(), key.to_owned())).cloned())
    }

    async fn claim(
        &self,
        tenant: &str,
        key: &str,
        record: &IdempotencyRecord,
        _now: DateTime<Utc>,
    ) -> StoreResult<IdempotencyRecord> {
        let mut keys = self.keys.lock().map_err(|_| poisoned())?;
        Ok(keys
            .entry((tenant.to_owned(), key.to_owned()))
            .or_insert_with(|| record.clone())
            .clone())
    }
}

#[async_trait]
impl BreakerStore for MemoryStore {
    async fn get(&self, tool: &str) -> StoreResult<Option<StoredBreaker>> {
        Ok(self
            .breakers
            .lock()
            .map_err(|_| poisoned())?
            .get(tool)
            .cloned())
    }

    async fn put(&self, tool: &str, expected: u64, state: &serde_json::Value) -> StoreResult<()> {
        let mut b = self.breakers.lock().map_err(|_| poisoned())?;
        let current = b.get(tool).map_or(0, |s| s.version);
        if current != expected {
            return Err(StoreError::Conflict(format!(
                "breaker {tool} is at version {current}"
            )));
        }
        b.insert(
            tool.to_owned(),
            StoredBreaker {
                state: state.clone(),
                version: expected + 1,
            },
        );
        Ok(())
    }
}
