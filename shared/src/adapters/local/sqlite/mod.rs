//! The embedded store: SQLite in WAL mode, one file holding events, the runs view, todos,
//! idempotency keys, breaker states and the durable job queue (the outbox).
//!
//! An append writes the events, the run's view and the jobs its effects create in one
//! transaction, so a crash can never leave a run without its next job; on restart the
//! jobs are simply still there.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::notify::{AppendObserver, RunNotifier};
use super::private;
use super::writer::Writer;
use crate::adapters::todo_cursor;
use crate::domain::{EventRecord, RunKey, RunState};
use crate::engine::Effect;
use crate::ports::{
    AppendSignals, BreakerStore, EventStore, IdempotencyRecord, IdempotencyStore, ListQuery,
    Outbox, Page, RunViewStore, StepDispatcher, StepJob, StoreError, StoreResult, StoredBreaker,
    Todo, TodoChange, TodoError, TodoQuery, TodoStore,
};

const READERS: usize = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    tenant TEXT NOT NULL, run_id TEXT NOT NULL, seq INTEGER NOT NULL,
    type TEXT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (tenant, run_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    tenant TEXT NOT NULL, run_id TEXT NOT NULL, status TEXT NOT NULL,
    created_at TEXT NOT NULL, last_seq INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (tenant, run_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS runs_newest ON runs (tenant, created_at DESC, run_id DESC);
CREATE INDEX IF NOT EXISTS runs_status ON runs (tenant, status, created_at DESC, run_id DESC);
CREATE TABLE IF NOT EXISTS todos (
    tenant TEXT NOT NULL, id INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS todo_ids (tenant TEXT PRIMARY KEY, last_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS todo_effects (
    tenant TEXT NOT NULL, effect_key TEXT NOT NULL, result TEXT NOT NULL,
    PRIMARY KEY (tenant, effect_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency_keys (
    tenant TEXT NOT NULL, key TEXT NOT NULL, run_id TEXT NOT NULL,
    request_hash TEXT NOT NULL, created_at TEXT NOT NULL,
    PRIMARY KEY (tenant, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS breakers (
    tool TEXT PRIMARY KEY, version INTEGER NOT NULL, state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dedupe TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL,
    due_at INTEGER NOT NULL,
    lease_until INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (due_at);
";

/// How far a commit of the embedded store goes before it is acknowledged (`CRANE_SYNC` in the
/// local runtime's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every commit is on stable storage (fsync'd) before a 201 is sent or the next step
    /// is dispatched: survives a power loss. Commits are grouped, so under load one fsync
    /// covers many writes.
    #[default]
    Full,
    /// A commit is in the operating system's hands (SQLite WAL, `synchronous=NORMAL`):
    /// survives a killed process, but a power loss may lose the last commits.
    Normal,
}

/// A job in the local queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobKind {
    Step {
        job: StepJob,
    },
    Compensate {
        key: RunKey,
        correlation_id: String,
        /// The saga attempt (1 unless an operator asked for a retry).
        #[serde(default = "first_saga")]
        attempt: u32,
    },
}

fn first_saga() -> u32 {
    1
}

impl JobKind {
    fn dedupe(&self) -> String {
        match self {
            JobKind::Step { job } => format!(
                "step:{}/{}/{}/{}",
                job.tenant, job.run_id, job.step_id, job.attempt
            ),
            JobKind::Compensate { key, attempt, .. } if *attempt <= 1 => {
                format!("compensate:{key}")
            }
            JobKind::Compensate { key, attempt, .. } => format!("compensate:{key}#{attempt}"),
        }
    }

    fn from_effect(effect: &Effect) -> (JobKind, u64) {
        match effect {
            Effect::Dispatch { job, delay_ms } => (JobKind::Step { job: job.clone() }, *delay_ms),
            Effect::Compensate {
                key,
                correlation_id,
                attempt,
            } => (
                JobKind::Compensate {
                    key: key.clone(),
                    correlation_id: correlation_id.clone(),
                    attempt: *attempt,
                },
                0,
            ),
        }
    }
}

/// A job taken from the queue; it stays leased until completed or rescheduled.
#[derive(Debug, Clone, PartialEq)]
pub struct LeasedJob {
    pub id: i64,
    pub kind: JobKind,
}

/// The SQLite-backed store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    writer: Writer,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: Arc<AtomicUsize>,
    jobs_ready: Arc<Notify>,
    hot: Arc<Mutex<HotRuns>>,
    notifier: Arc<RunNotifier>,
    observers: Arc<std::sync::RwLock<Vec<Arc<dyn AppendObserver>>>>,
}

/// Most runs whose state is kept in memory. Beyond it an arbitrary one is dropped (it is
/// folded from the log when next needed), so memory stays flat however many runs pass.
const HOT_RUNS: usize = 16_384;

/// The state of runs in flight as of their last append through this store (the log stays
/// the truth: a run missing here is folded from it). Updated on the writer thread after
/// each commit, in commit order, so it is never ahead of or behind what this store wrote;
/// a process must be the only writer of its database file (as `crane-local` is). Finished
/// runs leave the cache.
#[derive(Default)]
struct HotRuns {
    states: std::collections::HashMap<RunKey, RunState>,
}

impl HotRuns {
    /// `view` was just committed (called on the writer thread, in commit order).
    fn committed(&mut self, key: &RunKey, view: RunState) {
        if view.status.is_finished() {
            self.states.remove(key);
            return;
        }
        if self.states.len() >= HOT_RUNS && !self.states.contains_key(key) {
            if let Some(evicted) = self.states.keys().next().cloned() {
                self.states.remove(&evicted);
            }
        }
        self.states.insert(key.clone(), view);
    }
}

fn sql_err(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Unavailable(format!("sqlite busy: {e}"))
        }
        Some(ErrorCode::ConstraintViolation) => StoreError::Conflict(e.to_string()),
        _ => StoreError::Unavailable(format!("sqlite: {e}")),
    }
}

fn decode<T: for<'de> Deserialize<'de>>(s: &str) -> StoreResult<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn encode<T: Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn poisoned() -> StoreError {
    StoreError::Unavailable("sqlite connection lock poisoned".into())
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn open(path: &Path, sync: Durability) -> StoreResult<Connection> {
    let conn = Connection::open(path).map_err(sql_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(sql_err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sql_err)?;
    // In WAL mode NORMAL survives a crash of the process (kill -9); only a power loss can
    // lose the last transactions. FULL fsyncs the WAL at every commit.
    let level = match sync {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", level)
        .map_err(sql_err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(sql_err)?;
    Ok(conn)
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path`, with the default durability.
    /// A new file is readable by its owner only (mode 0600, and so are its `-wal` and
    /// `-shm` files).
    pub fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        Self::open_with(path, Durability::default())
    }

    /// [`Self::open`], choosing how durable a commit is before it is acknowledged.
    pub fn open_with(path: impl AsRef<Path>, sync: Durability) -> StoreResult<Self> {
        let path = path.as_ref();
        let file_err = |e: std::io::Error| {
            StoreError::Unavailable(format!("cannot create {}: {e}", path.display()))
        };
        let created = private::create_private(path).map_err(file_err)?;
        let writer = open(path, sync)?;
        writer.execute_batch(SCHEMA).map_err(sql_err)?;
        if created {
            private::restrict(&private::companions(path)).map_err(file_err)?;
        }
        let readers = (0..READERS)
            .map(|_| open(path, sync).map(Mutex::new))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Self {
            writer: Writer::start(writer, sql_err)?,
            readers: Arc::new(readers),
            next_reader: Arc::new(AtomicUsize::new(0)),
            jobs_ready: Arc::new(Notify::new()),
            hot: Arc::new(Mutex::new(HotRuns::default())),
            notifier: Arc::new(RunNotifier::default()),
            observers: Arc::default(),
        })
    }

    /// The signals of this store's appends (also [`EventStore::signals`]).
    pub fn notifier(&self) -> Arc<RunNotifier> {
        self.notifier.clone()
    }

    /// Call `observer` after every committed append (metrics), on every clone.
    pub fn observe(&self, observer: Arc<dyn AppendObserver>) {
        self.observers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(observer);
    }

    /// Woken whenever jobs are added.
    pub fn jobs_ready(&self) -> Arc<Notify> {
        self.jobs_ready.clone()
    }

    /// Run `f` in a transaction of the writer thread (group commit: see [`super::writer`]);
    /// answers once it is committed.
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.writer.write(f).await
    }

    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let readers = self.readers.clone();
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % READERS;
        tokio::task::spawn_blocking(move || {
            let conn = readers[i].lock().map_err(|_| poisoned())?;
            f(&conn)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("sqlite task failed: {e}")))?
    }

    /// Lease up to `limit` due jobs for `lease_ms`.
    pub async fn lease_jobs(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease_ms: i64,
    ) -> StoreResult<Vec<LeasedJob>> {
        let now_ms = now.timestamp_millis();
        self.write(move |tx| {
            let rows: Vec<(i64, String)> = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT id, payload FROM jobs
                         WHERE due_at <= ?1 AND (lease_until IS NULL OR lease_until <= ?1)
                         ORDER BY due_at, id LIMIT ?2",
                    )
                    .map_err(sql_err)?;
                let rows = stmt
                    .query_map(params![now_ms, limit as i64], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .map_err(sql_err)?;
                rows.collect::<Result<_, _>>().map_err(sql_err)?
            };
            let mut out = Vec::with_capacity(rows.len());
            for (id, payload) in rows {
                tx.prepare_cached("UPDATE jobs SET lease_until = ?1 WHERE id = ?2")
                    .map_err(sql_err)?
                    .execute(params![now_ms + lease_ms, id])
                    .map_err(sql_err)?;
                out.push(LeasedJob {
                    id,
                    kind: decode(&payload)?,
                });
            }
            Ok(out)
        })
        .await
    }

    /// The job is done: remove it.
    pub async fn finish_job(&self, id: i64) -> StoreResult<()> {
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM jobs WHERE id = ?1")
                .map_err(sql_err)?
                .execute(params![id])
                .map_err(sql_err)?;
            Ok(())
        })
        .await
    }

    /// Run the job again at `due`.
    pub async fn reschedule_job(&self, id: i64, due: DateTime<Utc>) -> StoreResult<()> {
        let due_ms = due.timestamp_millis();
        self.write(move |conn| {
            conn.prepare_cached("UPDATE jobs SET due_at = ?1, lease_until = NULL WHERE id = ?2")
                .map_err(sql_err)?
                .execute(params![due_ms, id])
                .map_err(sql_err)?;
            Ok(())
        })
        .await?;
        self.jobs_ready.notify_one();
        Ok(())
    }

    /// When the earliest job not currently leased is due.
    pub async fn next_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        self.read(|conn| {
            let ms: Option<i64> = conn
                .prepare_cached("SELECT MIN(COALESCE(MAX(due_at, lease_until), due_at)) FROM jobs")
                .map_err(sql_err)?
                .query_row([], |r| r.get(0))
                .map_err(sql_err)?;
            Ok(ms.and_then(DateTime::from_timestamp_millis))
        })
        .await
    }

    /// Release every lease: called at start-up, when no worker of a previous process can
    /// still hold one, so interrupted jobs resume at once.
    pub async fn release_all_leases(&self) -> StoreResult<usize> {
        self.write(|conn| {
            conn.prepare_cached("UPDATE jobs SET lease_until = NULL WHERE lease_until IS NOT NULL")
                .map_err(sql_err)?
                .execute([])
                .map_err(sql_err)
        })
        .await
    }

    /// The job queue at `now`: how many jobs are queued (due, delayed or leased), and how
    /// long the oldest due job nobody holds has waited past its due time (zero if none).
    pub async fn queue_stats(&self, now: DateTime<Utc>) -> StoreResult<(u64, std::time::Duration)> {
        let now_ms = now.timestamp_millis();
        self.read(move |conn| {
            let (count, oldest): (i64, Option<i64>) = conn
                .query_row(
                    "SELECT COUNT(*), MIN(CASE WHEN due_at <= ?1
                         AND (lease_until IS NULL OR lease_until <= ?1) THEN due_at END)
                     FROM jobs",
                    params![now_ms],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(sql_err)?;
            let lag_ms = oldest.map_or(0, |due| now_ms.saturating_sub(due).max(0));
            Ok((
                u64::try_from(count).unwrap_or(0),
                std::time::Duration::from_millis(u64::try_from(lag_ms).unwrap_or(0)),
            ))
        })
        .await
    }

    /// Number of jobs queued (for health and tests).
    pub async fn pending_jobs(&self) -> StoreResult<u64> {
        self.read(|conn| {
            conn.prepare_cached("SELECT COUNT(*) FROM jobs")
                .map_err(sql_err)?
                .query_row([], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(sql_err)
        })
        .await
    }
}

/// Jobs as rows (dedupe key, payload, due time), encoded by the caller, off the writer
/// thread.
fn job_rows(jobs: &[(JobKind, u64)]) -> StoreResult<Vec<(String, String, i64)>> {
    let now_ms = Utc::now().timestamp_millis();
    jobs.iter()
        .map(|(kind, delay)| {
            let due = now_ms.saturating_add(i64::try_from(*delay).unwrap_or(i64::MAX / 2));
            Ok((kind.dedupe(), encode(kind)?, due))
        })
        .collect()
}

fn insert_jobs(tx: &Connection, rows: &[(String, String, i64)]) -> StoreResult<()> {
    let mut stmt = tx
        // A job queued again is due at the earlier of the two times (an approved step's
        // job replaces its expiry timer, due much later); otherwise nothing changes.
        .prepare_cached(
            "INSERT INTO jobs (dedupe, payload, due_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (dedupe) DO UPDATE SET due_at = excluded.due_at
             WHERE excluded.due_at < jobs.due_at",
        )
        .map_err(sql_err)?;
    for (dedupe, payload, due) in rows {
        stmt.execute(params![dedupe, payload, due])
            .map_err(sql_err)?;
    }
    Ok(())
}

/// A run's view as its row: encoded by the caller, off the writer thread.
struct ViewRow {
    tenant: String,
    run_id: String,
    status: &'static str,
    created_at: String,
    last_seq: i64,
    body: String,
}

impl ViewRow {
    fn of(view: &RunState) -> StoreResult<Self> {
        Ok(Self {
            tenant: view.tenant.clone(),
            run_id: view.run_id.clone(),
            status: view.status.as_str(),
            created_at: ts(view.created_at),
            last_seq: view.last_seq as i64,
            body: encode(view)?,
        })
    }
}

fn put_view(tx: &Connection, view: &ViewRow) -> StoreResult<bool> {
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
        let view = ViewRow::of(outbox.view)?;
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
            put_view(tx, &view)?;
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

#[async_trait]
impl RunViewStore for SqliteStore {
    async fn get(&self, key: &RunKey) -> StoreResult<Option<RunState>> {
        let key = key.clone();
        self.read(move |conn| {
            conn.prepare_cached("SELECT body FROM runs WHERE tenant = ?1 AND run_id = ?2")
                .map_err(sql_err)?
                .query_row(params![key.tenant, key.run_id], |r| r.get::<_, String>(0))
                .optional()
                .map_err(sql_err)?
                .map(|b| decode(&b))
                .transpose()
        })
        .await
    }

    async fn list(&self, tenant: &str, query: &ListQuery) -> StoreResult<Page<RunState>> {
        let tenant = tenant.to_owned();
        let status = query.status.map(|s| s.as_str().to_owned());
        let limit = query.limit;
        let cursor = query.cursor.as_deref().map(decode_cursor).transpose()?;
        let items: Vec<RunState> = self
            .read(move |conn| {
                let (after_at, after_id) = match &cursor {
                    Some(c) => (Some(c.created_at.clone()), Some(c.run_id.clone())),
                    None => (None, None),
                };
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT body FROM runs
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
                        |r| r.get::<_, String>(0),
                    )
                    .map_err(sql_err)?;
                rows.map(|r| r.map_err(sql_err).and_then(|b| decode(&b)))
                    .collect()
            })
            .await?;
        let next_cursor = if items.len() == limit {
            items.last().map(encode_cursor)
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn put(&self, state: &RunState) -> StoreResult<bool> {
        let row = ViewRow::of(state)?;
        self.write(move |tx| put_view(tx, &row)).await
    }
}

#[async_trait]
impl StepDispatcher for SqliteStore {
    async fn dispatch(&self, jobs: &[(StepJob, u64)]) -> StoreResult<()> {
        let jobs: Vec<(JobKind, u64)> = jobs
            .iter()
            .map(|(j, d)| (JobKind::Step { job: j.clone() }, *d))
            .collect();

        let rows = job_rows(&jobs)?;
        self.write(move |tx| insert_jobs(tx, &rows)).await?;
        self.jobs_ready.notify_one();
        Ok(())
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
        let result: StoreResult<Result<Todo, TodoError>> = self
            .write(move |tx| {
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
                        todo
                    }
                    TodoChange::Restore { todo } => {
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
            })
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
            conn.prepare_cached("SELECT COUNT(*) FROM todos WHERE tenant = ?1")
                .map_err(sql_err)?
                .query_row(params![tenant], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(sql_err)
        })
        .await
    }
}

#[async_trait]
impl IdempotencyStore for SqliteStore {
    async fn lookup(
        &self,
        tenant: &str,
        key: &str,
        _now: DateTime<Utc>,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        let (tenant, key) = (tenant.to_owned(), key.to_owned());
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT run_id, request_hash FROM idempotency_keys WHERE tenant = ?1 AND key = ?2",
            )
            .map_err(sql_err)?
            .query_row(params![tenant, key], |r| {
                Ok(IdempotencyRecord {
                    run_id: r.get(0)?,
                    request_hash: r.get(1)?,
                })
            })
            .optional()
            .map_err(sql_err)
        })
        .await
    }

    async fn claim(
        &self,
        tenant: &str,
        key: &str,
        record: &IdempotencyRecord,
        now: DateTime<Utc>,
    ) -> StoreResult<IdempotencyRecord> {
        let (tenant, key, record) = (tenant.to_owned(), key.to_owned(), record.clone());
        self.write(move |tx| {
            tx.prepare_cached("INSERT OR IGNORE INTO idempotency_keys (tenant, key, run_id, request_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)").map_err(sql_err)?.execute(
                params![tenant, key, record.run_id, record.request_hash, ts(now)],
            )
            .map_err(sql_err)?;
            let bound = tx.prepare_cached("SELECT run_id, request_hash FROM idempotency_keys WHERE tenant = ?1 AND key = ?2").map_err(sql_err)?.query_row(
                    params![tenant, key],
                    |r| Ok(IdempotencyRecord { run_id: r.get(0)?, request_hash: r.get(1)? }),
                )
                .map_err(sql_err)?;
            Ok(bound)
        })
        .await
    }
}

#[async_trait]
impl BreakerStore for SqliteStore {
    async fn get(&self, tool: &str) -> StoreResult<Option<StoredBreaker>> {
        let tool = tool.to_owned();
        self.read(move |conn| {
            conn.prepare_cached("SELECT state, version FROM breakers WHERE tool = ?1")
                .map_err(sql_err)?
                .query_row(params![tool], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })
                .optional()
                .map_err(sql_err)?
                .map(|(s, v)| {
                    Ok(StoredBreaker {
                        state: decode(&s)?,
                        version: v as u64,
                    })
                })
                .transpose()
        })
        .await
    }

    async fn put(&self, tool: &str, expected: u64, state: &serde_json::Value) -> StoreResult<()> {
        let tool = tool.to_owned();
        let body = encode(state)?;
        self.write(move |conn| {
            let n = if expected == 0 {
                conn.prepare_cached("INSERT OR IGNORE INTO breakers (tool, version, state) VALUES (?1, 1, ?2)").map_err(sql_err)?.execute(
                    params![tool, body],
                )
            } else {
                conn.prepare_cached("UPDATE breakers SET version = version + 1, state = ?2 WHERE tool = ?1 AND version = ?3").map_err(sql_err)?.execute(
                    params![tool, body, expected as i64],
                )
            }
            .map_err(sql_err)?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("breaker {tool} changed since version {expected}")));
            }
            Ok(())
        })
        .await
    }
}
