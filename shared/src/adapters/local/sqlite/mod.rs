//! The embedded store: SQLite in WAL mode, one file holding events, the runs view, todos,
//! idempotency keys, breaker states and the durable job queue (the outbox).
//!
//! An append writes the events, the run's view row and the jobs its effects create in one
//! transaction, so a crash can never leave a run without its next job; on restart the
//! jobs are simply still there. A finished run is kept compact: its log in one compressed
//! row, its view read from it (see `events`). New databases use `auto_vacuum=INCREMENTAL`,
//! and the writer returns free pages to the file system when writes pause.
//!
//! One file per concern: `jobs` (the queue), `events` (appends and the log), `views`
//! (the runs view), `todos`, `idempotency`, `breakers`, `hot` (the in-memory state of
//! runs in flight) and `queue` (the job queue in memory, with its leases); this module
//! opens the database and owns the connections.

mod breakers;
mod events;
mod hot;
mod idempotency;
mod jobs;
mod queue;
mod todos;
mod views;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, ErrorCode};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use self::breakers::KnownBreakers;
use self::hot::HotRuns;
use self::queue::JobQueue;
use super::notify::{AppendObserver, RunNotifier};
use super::private;
use super::readers::Readers;
use super::writer::{Chores, Writer};
use crate::ports::{StoreError, StoreResult};

pub use self::jobs::{JobKind, LeasedJob};

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
-- The durable copy of the job queue (see `queue` for the rest): one row per step attempt
-- or saga, keyed as `JobKind::dedupe` says.
CREATE TABLE IF NOT EXISTS job_queue (
    dedupe TEXT PRIMARY KEY,
    payload TEXT NOT NULL,
    due_at INTEGER NOT NULL
) WITHOUT ROWID;
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

/// The SQLite-backed store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    writer: Writer,
    readers: Readers,
    jobs_ready: Arc<Notify>,
    queue: Arc<Mutex<JobQueue>>,
    hot: Arc<Mutex<HotRuns>>,
    todo_pages: Arc<Mutex<todos::FirstPages>>,
    breakers: Arc<Mutex<KnownBreakers>>,
    notifier: Arc<RunNotifier>,
    observers: Arc<std::sync::RwLock<Vec<Arc<dyn AppendObserver>>>>,
}

fn sql_err(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::unavailable_from(format!("sqlite busy: {e}"), e)
        }
        Some(ErrorCode::ConstraintViolation) => StoreError::Conflict(e.to_string()),
        _ => StoreError::unavailable_from(format!("sqlite: {e}"), e),
    }
}

fn decode<T: for<'de> Deserialize<'de>>(s: &str) -> StoreResult<T> {
    serde_json::from_str(s).map_err(|e| StoreError::corrupt_from(e.to_string(), e))
}

fn encode<T: Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::corrupt_from(e.to_string(), e))
}

/// A JSON column as stored: plain text, or DEFLATE-compressed bytes (a finished run's
/// compacted log; see [`crate::adapters::deflate`]). Columns declared `TEXT` hold
/// either: SQLite keeps a blob a blob whatever the column's affinity, so databases written
/// before compression read as they are.
enum Stored {
    Text(String),
    Deflated(Vec<u8>),
}

impl rusqlite::types::FromSql for Stored {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        use rusqlite::types::{FromSqlError, ValueRef};
        match value {
            ValueRef::Text(t) => std::str::from_utf8(t)
                .map(|t| Stored::Text(t.to_owned()))
                .map_err(|e| FromSqlError::Other(Box::new(e))),
            ValueRef::Blob(b) => Ok(Stored::Deflated(b.to_vec())),
            _ => Err(FromSqlError::InvalidType),
        }
    }
}

impl Stored {
    /// The JSON text, inflated if need be.
    fn into_json(self) -> StoreResult<String> {
        match self {
            Stored::Text(t) => Ok(t),
            Stored::Deflated(z) => {
                let bytes = crate::adapters::deflate::inflate(&z).map_err(StoreError::corrupt)?;
                String::from_utf8(bytes).map_err(|e| StoreError::corrupt_from(e.to_string(), e))
            }
        }
    }

    /// An empty body: a view written by an append, read by folding its run's log (see
    /// `views`).
    fn is_empty(&self) -> bool {
        match self {
            Stored::Text(t) => t.is_empty(),
            Stored::Deflated(z) => z.is_empty(),
        }
    }

    fn decode<T: for<'de> Deserialize<'de>>(self) -> StoreResult<T> {
        decode(&self.into_json()?)
    }
}

/// Give back most of `map`'s room once a burst has drained from it: a map keeps its largest
/// size otherwise, and the room for each run's state is counted in hundreds of bytes.
/// Halving at an eighth full keeps the cost amortised.
fn shrink_if_sparse<K: std::hash::Hash + Eq, V>(map: &mut std::collections::HashMap<K, V>) {
    const SMALL: usize = 1_024;
    if map.capacity() > SMALL && map.len() < map.capacity() / 8 {
        map.shrink_to((map.len() * 2).max(SMALL));
    }
}

fn poisoned() -> StoreError {
    StoreError::unavailable("sqlite connection lock poisoned")
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Free pages an idle writer leaves in the file for the next writes to reuse.
const FREE_PAGES_KEPT: i64 = 64;
/// Free pages returned to the file system per step of the idle chores (1 MiB).
const RECLAIM_STEP: i64 = 256;

/// The writer's idle chore: a burst of runs leaves the pages its runs in flight used
/// (their per-append rows, compacted when each finished) free; return them to the file
/// system, a step at a time, so the file holds what the runs keep. `true` while more
/// remain. Databases in `auto_vacuum=INCREMENTAL` mode only (new ones): on others the
/// pragma does nothing and the chore is not scheduled.
fn reclaim_free_pages(conn: &Connection) -> bool {
    let free = || conn.query_row("PRAGMA freelist_count", [], |r| r.get::<_, i64>(0));
    let step = || -> rusqlite::Result<bool> {
        let before = free()?;
        if before <= FREE_PAGES_KEPT {
            return Ok(false);
        }
        // A pragma takes no bound parameters; the count is this function's own integer.
        let n = RECLAIM_STEP.min(before - FREE_PAGES_KEPT);
        let mut stmt = conn.prepare(&format!("PRAGMA incremental_vacuum({n})"))?;
        let mut rows = stmt.query([])?;
        while rows.next()?.is_some() {}
        let after = free()?;
        // A step that returned nothing would return nothing again: stop.
        Ok(after < before && after > FREE_PAGES_KEPT)
    };
    match step() {
        Ok(more) => more,
        Err(e) => {
            // Said once per process: the chore is tried again at every pause.
            static SAID: AtomicBool = AtomicBool::new(false);
            if !SAID.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, "returning free pages to the file system failed; they are left for reuse");
            }
            false
        }
    }
}

/// Whether the database has a table called `name` (a migration's question: is this a
/// database an earlier version wrote?).
fn table_exists(conn: &Connection, name: &str) -> StoreResult<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
        [name],
        |r| r.get(0),
    )
    .map_err(sql_err)
}

/// The page cache of each reading connection, in KiB (SQLite's default, which the writer
/// keeps, is 2,000). Reads of runs in flight and just finished are answered from memory,
/// and the pages a reader misses are in the operating system's cache: four full caches
/// only made the process grow by 8 MB as the database did.
const READER_CACHE_KIB: i64 = 512;

fn open(path: &Path, sync: Durability) -> StoreResult<Connection> {
    let conn = Connection::open(path).map_err(sql_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(sql_err)?;
    // Only a new, empty database takes this, and before it turns to WAL: one created
    // before keeps its mode (its free pages are reused, not returned; see
    // `reclaim_free_pages`).
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
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
    // The journals of savepoints and statements (each write of a batch has its savepoint,
    // see `writer`) in memory: in files they were created, written and deleted for every
    // batch, a quarter of the writer's time under load. They hold pages of one transaction.
    conn.pragma_update(None, "temp_store", "MEMORY")
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
            StoreError::unavailable_from(format!("cannot create {}: {e}", path.display()), e)
        };
        let created = private::create_private(path).map_err(file_err)?;
        let writer = open(path, sync)?;
        writer.execute_batch(SCHEMA).map_err(sql_err)?;
        let incremental: i64 = writer
            .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
            .map_err(sql_err)?;
        let chores: Option<Chores> = (incremental == 2).then_some(reclaim_free_pages);
        jobs::migrate_jobs(&writer)?;
        todos::migrate_counts(&writer)?;
        let queue = jobs::load_queue(&writer)?;
        if created {
            private::restrict(&private::companions(path)).map_err(file_err)?;
        }
        let readers = (0..READERS)
            .map(|_| {
                let conn = open(path, sync)?;
                conn.pragma_update(None, "cache_size", -READER_CACHE_KIB)
                    .map_err(sql_err)?;
                Ok(conn)
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Self {
            writer: Writer::start(writer, sql_err, chores)?,
            readers: Readers::start(readers)?,
            jobs_ready: Arc::new(Notify::new()),
            queue: Arc::new(Mutex::new(queue)),
            hot: Arc::new(Mutex::new(HotRuns::default())),
            todo_pages: Arc::default(),
            breakers: Arc::default(),
            notifier: Arc::new(RunNotifier::default()),
            observers: Arc::default(),
        })
    }

    /// The signals of this store's appends (also [`crate::ports::EventStore::signals`]).
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
        self.readers.read(f).await
    }
}
