//! The event log: an append writes the events, the run's view (when its status changed)
//! and its jobs in one transaction.

use async_trait::async_trait;
use rusqlite::params;

use super::jobs::{insert_jobs, job_rows, JobKind};
use super::views::{put_view, ViewRow};
use super::{decode, encode, sql_err, SqliteStore};
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
        let rows = events
            .iter()
            .map(|e| Ok((e.seq as i64, e.event.type_name(), encode(e)?)))
            .collect::<StoreResult<Vec<_>>>()?;
        // The view is written when the run is new to this process's memory or its status
        // changes: between, readers of a run in flight take its state from memory (or fold
        // its log), so rewriting the whole view on every step is waste.
        let rewrite_view = self.hot.lock().map_or(true, |hot| {
            hot.states
                .get(run)
                .is_none_or(|before| before.status != outbox.view.status)
        });
        let view = rewrite_view.then(|| ViewRow::of(outbox.view)).transpose()?;
        let jobs: Vec<(JobKind, u64)> = outbox.effects.iter().map(JobKind::from_effect).collect();
        let has_jobs = !jobs.is_empty();
        let jobs = job_rows(&jobs)?;
        let (hot, hot_key, hot_view) = (self.hot.clone(), key.clone(), outbox.view.clone());
        let remember: Box<dyn FnOnce(&StoreResult<()>) + Send> = Box::new(move |written| {
            // A refused append changes nothing: what is kept is what was committed, and a
            // writer that lost a race simply reads the winner's state next.
            if let (Ok(()), Ok(mut hot)) = (written, hot.lock()) {
                hot.committed(&hot_key, hot_view);
            }
        });
        self.writer.write_then(move |tx| {
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
            {
                let mut stmt = tx
                    .prepare_cached("INSERT INTO events (tenant, run_id, seq, type, body) VALUES (?1, ?2, ?3, ?4, ?5)")
                    .map_err(sql_err)?;
                for (seq, ty, body) in &rows {
                    stmt.execute(params![key.tenant, key.run_id, seq, ty, body]).map_err(sql_err)?;
                }
            }
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
        self.hot.lock().ok()?.states.get(key).cloned()
    }

    fn signals(&self) -> Option<&dyn AppendSignals> {
        Some(self.notifier.as_ref())
    }

    async fn load(&self, key: &RunKey) -> StoreResult<Vec<EventRecord>> {
        let key = key.clone();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT body FROM events WHERE tenant = ?1 AND run_id = ?2 ORDER BY seq",
                )
                .map_err(sql_err)?;
            let rows = stmt
                .query_map(params![key.tenant, key.run_id], |r| r.get::<_, String>(0))
                .map_err(sql_err)?;
            rows.map(|r| r.map_err(sql_err).and_then(|b| decode(&b)))
                .collect()
        })
        .await
    }
}
