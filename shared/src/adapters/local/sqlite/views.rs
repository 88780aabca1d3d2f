//! The runs view: each run's latest state, listed newest first.

use std::sync::Mutex;

use async_trait::async_trait;
use base64::Engine as _;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::events::load_log;
use super::hot::HotRuns;
use super::{encode, poisoned, sql_err, ts, SqliteStore, Stored};
use crate::domain::{fold, RunKey, RunState};
use crate::ports::{EventStore as _, ListQuery, Page, RunViewStore, StoreError, StoreResult};
use rusqlite::types::Value;
use tracing::warn;

/// A run's view as its row: encoded by the caller, off the writer thread.
pub(super) struct ViewRow {
    tenant: String,
    run_id: String,
    status: &'static str,
    created_at: String,
    last_seq: i64,
    body: Value,
}

impl ViewRow {
    /// The row of a view handed over as is (`RunViewStore::put`, which no local path
    /// calls: the stream reactor's projection is the cloud's), its body as text.
    pub(super) fn of(view: &RunState) -> StoreResult<Self> {
        Self::with_body(view, Value::Text(encode(view)?))
    }

    /// The row of a view written with its run's events (an append): its body is left
    /// empty and reads fold the log, written in the same transaction (and compacted once
    /// the run finishes, see `events`). The row keeps what listing needs (status, creation
    /// time); a run is kept once, not twice, and an append encodes no view.
    pub(super) fn of_logged(view: &RunState) -> StoreResult<Self> {
        Self::with_body(view, Value::Blob(Vec::new()))
    }

    fn with_body(view: &RunState, body: Value) -> StoreResult<Self> {
        Ok(Self {
            tenant: view.tenant.clone(),
            run_id: view.run_id.clone(),
            status: view.status.as_str(),
            created_at: ts(view.created_at),
            last_seq: view.last_seq as i64,
            body,
        })
    }
}

/// A view as read from its row.
enum Read {
    /// The run as it is now: from memory, or the fold of its log (a row an append wrote
    /// has an empty body, see [`ViewRow::of_logged`]).
    Current(RunState),
    /// A body a row holds (written by `put`, or by an earlier version, which rewrote a
    /// run's view only when its status changed): it may trail the log.
    Stored(RunState),
}

impl Read {
    fn state(&self) -> &RunState {
        match self {
            Read::Current(s) | Read::Stored(s) => s,
        }
    }

    fn into_state(self) -> RunState {
        match self {
            Read::Current(s) | Read::Stored(s) => s,
        }
    }
}

fn view_of(
    conn: &Connection,
    hot: &Mutex<HotRuns>,
    key: &RunKey,
    body: Stored,
) -> StoreResult<Read> {
    if !body.is_empty() {
        return body.decode().map(Read::Stored);
    }
    if let Some(state) = hot.lock().map_err(|_| poisoned())?.get(key) {
        return Ok(Read::Current(state.clone()));
    }
    let log = load_log(conn, key)?;
    fold(&key.run_id, &log).map(Read::Current).map_err(|e| {
        StoreError::corrupt(format!(
            "{key}: the view is its log's, which does not fold: {e}"
        ))
    })
}

pub(super) fn put_view(tx: &Connection, view: &ViewRow) -> StoreResult<bool> {
    let n = tx
        .prepare_cached(
            "INSERT INTO runs (tenant, run_id, status, created_at, last_seq, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (tenant, run_id) DO UPDATE SET
               status = excluded.status, last_seq = excluded.last_seq, body = excluded.body
             WHERE excluded.last_seq > runs.last_seq",
        )
        .map_err(sql_err)?
        .execute(params![
            view.tenant,
            view.run_id,
            view.status,
            view.created_at,
            view.last_seq,
            view.body
        ])
        .map_err(sql_err)?;
    Ok(n > 0)
}

#[derive(Serialize, Deserialize)]
struct Cursor {
    created_at: String,
    run_id: String,
}

fn encode_cursor(view: &RunState) -> String {
    let c = Cursor {
        created_at: ts(view.created_at),
        run_id: view.run_id.clone(),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&c).unwrap_or_default())
}

fn decode_cursor(s: &str) -> StoreResult<Cursor> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| StoreError::Invalid("cursor is not one this server issued".into()))
}

impl SqliteStore {
    /// A stored body's run as it is now ([`Read::Stored`] may trail the log): a run in
    /// flight's state comes from memory, or from its log if it is not kept there; a log
    /// that does not fold leaves the view (logged).
    async fn in_flight_now(&self, view: RunState) -> RunState {
        if view.status.is_finished() {
            return view;
        }
        let key = RunKey::new(&view.tenant, &view.run_id);
        if let Some(state) = self.current_state(&key).await {
            return state;
        }
        match self.load(&key).await.map(|log| fold(&view.run_id, &log)) {
            Ok(Ok(state)) if state.last_seq >= view.last_seq => state,
            Ok(Ok(_)) => view,
            Ok(Err(e)) => {
                warn!(run = %key, error = %e, "listing a run in flight from its view: its log did not fold");
                view
            }
            Err(e) => {
                warn!(run = %key, error = %e, "listing a run in flight from its view: its log could not be read");
                view
            }
        }
    }
}

#[async_trait]
impl RunViewStore for SqliteStore {
    async fn get(&self, key: &RunKey) -> StoreResult<Option<RunState>> {
        // A run this store appended to lately is answered from memory: its row holds
        // nothing more (see `ViewRow::of_logged`; `put` makes the store forget it).
        if let Some(state) = self.hot.lock().map_err(|_| poisoned())?.get(key) {
            return Ok(Some(state.clone()));
        }
        let key = key.clone();
        let hot = self.hot.clone();
        self.read(move |conn| {
            conn.prepare_cached("SELECT body FROM runs WHERE tenant = ?1 AND run_id = ?2")
                .map_err(sql_err)?
                .query_row(params![key.tenant, key.run_id], |r| r.get::<_, Stored>(0))
                .optional()
                .map_err(sql_err)?
                .map(|body| view_of(conn, &hot, &key, body).map(Read::into_state))
                .transpose()
        })
        .await
    }

    async fn list(&self, tenant: &str, query: &ListQuery) -> StoreResult<Page<RunState>> {
        let tenant = tenant.to_owned();
        let status = query.status.map(|s| s.as_str().to_owned());
        let limit = query.limit;
        let cursor = query.cursor.as_deref().map(decode_cursor).transpose()?;
        let hot = self.hot.clone();
        let items: Vec<Read> = self
            .read(move |conn| {
                let (after_at, after_id) = match &cursor {
                    Some(c) => (Some(c.created_at.clone()), Some(c.run_id.clone())),
                    None => (None, None),
                };
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT run_id, body FROM runs
                         WHERE tenant = ?1
                           AND (?2 IS NULL OR status = ?2)
                           AND (?3 IS NULL OR (created_at, run_id) < (?3, ?4))
                         ORDER BY created_at DESC, run_id DESC
                         LIMIT ?5",
                    )
                    .map_err(sql_err)?;
                let rows = stmt
                    .query_map(
                        params![tenant, status, after_at, after_id, limit as i64],
                        |r| Ok((r.get::<_, String>(0)?, r.get::<_, Stored>(1)?)),
                    )
                    .map_err(sql_err)?;
                rows.map(|r| {
                    let (run_id, body) = r.map_err(sql_err)?;
                    view_of(conn, &hot, &RunKey::new(&tenant, run_id), body)
                })
                .collect()
            })
            .await?;
        let next_cursor = if items.len() == limit {
            items.last().map(|read| encode_cursor(read.state()))
        } else {
            None
        };
        let mut fresh = Vec::with_capacity(items.len());
        for read in items {
            fresh.push(match read {
                Read::Current(state) => state,
                Read::Stored(view) => self.in_flight_now(view).await,
            });
        }
        Ok(Page {
            items: fresh,
            next_cursor,
        })
    }

    async fn put(&self, state: &RunState) -> StoreResult<bool> {
        let row = ViewRow::of(state)?;
        let (hot, key) = (self.hot.clone(), RunKey::new(&state.tenant, &state.run_id));
        self.writer
            .write_then(
                move |tx| put_view(tx, &row),
                Some(Box::new(move |written: &StoreResult<bool>| {
                    if let (Ok(true), Ok(mut hot)) = (written, hot.lock()) {
                        hot.forget(&key);
                    }
                })),
            )
            .await
    }
}
