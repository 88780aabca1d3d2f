//! The event log: an append writes the events, the run's view row (when its status
//! changed) and its jobs in one transaction.
//!
//! A row of `events` holds the events of one append, keyed by the seq of its last event:
//! one event as its JSON text, several as a JSON array. When an append finishes its run
//! (see [`crate::domain::RunStatus::is_finished`]) the run's rows are compacted into one:
//! the whole log as a DEFLATE-compressed array, about a quarter of its JSON. Later
//! appends (a saga after a failure) add rows after it and are compacted again when the run
//! finishes again. Whatever the rows, [`EventStore::load`] reads the same events.
//!
//! A run's view is not kept a second time: the row an append writes in `runs` (when the
//! status changes, for listing) has an empty body, and reading it folds the log; a finished
//! run's log is one row.

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{params, Connection};

use super::jobs::{insert_jobs, JobKind, NewJobs, Queued};
use super::views::{put_view, ViewRow};
use super::{decode, encode, sql_err, SqliteStore, Stored};
use crate::adapters::deflate::{deflate, Effort};
use crate::domain::{EventRecord, RunKey, RunState};
use crate::ports::{AppendSignals, EventStore, Outbox, StoreError, StoreResult};

#[async_trait]
impl EventStore for SqliteStore {
    async fn append(
        &self,
        key: &RunKey,
        events: &[EventRecord],
        outbox: Outbox<'_>,
    ) -> StoreResult<()> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let run = key;
        let key = key.clone();
        let first_seq = first.seq;
        let last_seq = events.last().map_or(first_seq, |e| e.seq);
        let last_type = events.last().map_or("", |e| e.event.type_name());
        let body = events
            .iter()
            .map(encode)
            .collect::<StoreResult<Vec<_>>>()?
            .join(",");
        let compact = outbox.view.status.is_finished();
        // The view is written when the run is new to this process's memory or its status
        // changes: between, readers of a run in flight take its state from memory (or fold
        // its log), so rewriting the whole view on every step is waste.
        let rewrite_view = self.hot.lock().map_or(true, |hot| {
            hot.get(run)
                .is_none_or(|before| before.status != outbox.view.status)
        });
        let view = rewrite_view
            .then(|| ViewRow::of_logged(outbox.view))
            .transpose()?;
        let jobs: Vec<(JobKind, u64)> = outbox.effects.iter().map(JobKind::from_effect).collect();
        let jobs = NewJobs::of(jobs)?;
        let has_jobs = !jobs.is_empty();
        let (jobs, to_queue) = jobs.split();
        let events_in_row = events.len();
        let (hot, queue) = (self.hot.clone(), self.queue.clone());
        let (hot_key, hot_view) = (key.clone(), outbox.view.clone());
        let remember: Box<dyn FnOnce(&StoreResult<Queued>) + Send> = Box::new(move |written| {
            // A refused append changes nothing: what is kept is what was committed, and a
            // writer that lost a race simply reads the winner's state next.
            let Ok(queued) = written else {
                return;
            };
            if let Ok(mut hot) = hot.lock() {
                hot.committed(&hot_key, hot_view);
            }
            if let Ok(mut queue) = queue.lock() {
                to_queue.committed(queued, &mut queue);
            }
        });
        // The conflict is found by the first read, before anything is written.
        self.writer.write_checked(move |tx| {
            let last: i64 = tx.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM events WHERE tenant = ?1 AND run_id = ?2").map_err(sql_err)?.query_row(
                    params![key.tenant, key.run_id],
                    |r| r.get(0),
                )
                .map_err(sql_err)?;
            if last as u64 + 1 != first_seq {
                return Err(StoreError::Conflict(format!(
                    "{key}: expected to append at {}, log is at {last}",
                    first_seq
                )));
            }
            let body = if compact {
                compacted(tx, &key, &body)?
            } else if events_in_row > 1 {
                Value::Text(format!("[{body}]"))
            } else {
                Value::Text(body)
            };
            tx.prepare_cached("INSERT INTO events (tenant, run_id, seq, type, body) VALUES (?1, ?2, ?3, ?4, ?5)")
                .map_err(sql_err)?
                .execute(params![key.tenant, key.run_id, last_seq as i64, last_type, body])
                .map_err(sql_err)?;
            if let Some(view) = &view {
                put_view(tx, view)?;
            }
            insert_jobs(tx, &jobs)
        }, Some(remember))
        .await?;
        if has_jobs {
            self.jobs_ready.notify_one();
        }
        if let Some(last) = events.last() {
            self.notifier.publish(run, last.seq);
        }
        let observers = self
            .observers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for o in observers.iter() {
            o.appended(run, events, outbox.view);
        }
        Ok(())
    }

    async fn current_state(&self, key: &RunKey) -> Option<RunState> {
        self.hot.lock().ok()?.get(key).cloned()
    }

    fn signals(&self) -> Option<&dyn AppendSignals> {
        Some(self.notifier.as_ref())
    }

    async fn load(&self, key: &RunKey) -> StoreResult<Vec<EventRecord>> {
        let key = key.clone();
        self.read(move |conn| load_log(conn, &key)).await
    }
}

/// `key`'s events, in order, whatever rows hold them.
pub(super) fn load_log(conn: &Connection, key: &RunKey) -> StoreResult<Vec<EventRecord>> {
    decode(&log_array(conn, key, "")?)
}

/// `key`'s log as one JSON array, `appended` (JSON texts of events, comma-separated) last.
/// The one reader of the rows' forms: one event as its text, several as an array, a
/// compacted log as a deflated array.
fn log_array(conn: &Connection, key: &RunKey, appended: &str) -> StoreResult<String> {
    let mut stmt = conn
        .prepare_cached("SELECT body FROM events WHERE tenant = ?1 AND run_id = ?2 ORDER BY seq")
        .map_err(sql_err)?;
    let rows = stmt
        .query_map(params![key.tenant, key.run_id], |r| r.get::<_, Stored>(0))
        .map_err(sql_err)?;
    let mut parts = Vec::new();
    for row in rows {
        let json = row.map_err(sql_err)?.into_json()?;
        let events = match json.trim().strip_prefix('[') {
            Some(inner) => inner.strip_suffix(']').unwrap_or(inner).to_owned(),
            None => json,
        };
        if !events.is_empty() {
            parts.push(events);
        }
    }
    if !appended.is_empty() {
        parts.push(appended.to_owned());
    }
    Ok(format!("[{}]", parts.join(",")))
}

/// The body of the one row that replaces every row of `key`'s log, `appended` (the JSON
/// texts of this append's events, comma-separated) last: deleting the rows it replaces.
fn compacted(tx: &Connection, key: &RunKey, appended: &str) -> StoreResult<Value> {
    let all = log_array(tx, key, appended)?;
    tx.prepare_cached("DELETE FROM events WHERE tenant = ?1 AND run_id = ?2")
        .map_err(sql_err)?
        .execute(params![key.tenant, key.run_id])
        .map_err(sql_err)?;
    deflate(all.as_bytes(), Effort::Fast)
        .map(Value::Blob)
        .map_err(|e| StoreError::corrupt_from(e.to_string(), e))
}
