//! The I/O the engine needs, one small trait per capability. Each has an embedded adapter
//! (`adapters::local`) and an AWS adapter (`adapters::aws`), held to one contract suite.
//! Adapters map provider errors into [`StoreError`], so no SDK type leaks upward.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{Effect, EventRecord, RunKey, RunState, RunStatus, StepJob, Todo, TodoChange};

/// What can go wrong talking to a store or queue.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// An optimistic-concurrency check failed: someone else wrote first.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The item asked for does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The backend is unreachable, throttling or timing out: worth retrying.
    #[error("store unavailable: {message}")]
    Unavailable {
        /// What failed, for the log.
        message: String,
        /// The backend's own error, when there is one.
        #[source]
        source: Option<Cause>,
    },
    /// Stored data could not be decoded (or a value could not be encoded).
    #[error("corrupt data: {message}")]
    Corrupt {
        /// What could not be decoded, for the log.
        message: String,
        /// The decoder's own error, when there is one.
        #[source]
        source: Option<Cause>,
    },
    /// The backend refused the request as malformed (a bad key, cursor or parameter).
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl StoreError {
    /// The store is unavailable; no lower-level error to keep.
    pub fn unavailable(message: impl Into<String>) -> Self {
        StoreError::Unavailable {
            message: message.into(),
            source: None,
        }
    }

    /// The store is unavailable because of `source`, kept as the error's source.
    pub fn unavailable_from(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Unavailable {
            message: message.into(),
            source: Some(Cause::new(source)),
        }
    }

    /// The same error, keeping `source` as its cause when it is one that can have a cause
    /// (unavailable, corrupt); conflicts, misses and invalid requests are answers, not
    /// failures, and stay as they are.
    pub fn caused_by(self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        match self {
            StoreError::Unavailable { message, .. } => StoreError::Unavailable {
                message,
                source: Some(Cause::new(source)),
            },
            StoreError::Corrupt { message, .. } => StoreError::Corrupt {
                message,
                source: Some(Cause::new(source)),
            },
            other => other,
        }
    }

    /// Stored data is corrupt; no lower-level error to keep.
    pub fn corrupt(message: impl Into<String>) -> Self {
        StoreError::Corrupt {
            message: message.into(),
            source: None,
        }
    }

    /// Stored data is corrupt, as `source` (a decoder's error) found.
    pub fn corrupt_from(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Corrupt {
            message: message.into(),
            source: Some(Cause::new(source)),
        }
    }
}

/// The lower-level error a [`StoreError`] came from (an SDK, SQLite or JSON error), shared
/// so the store error stays cheap to clone. Two causes are equal when they read the same.
#[derive(Debug, Clone)]
pub struct Cause(std::sync::Arc<dyn std::error::Error + Send + Sync>);

impl Cause {
    /// Keep `error` as a cause.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Cause(std::sync::Arc::new(error))
    }

    /// The error itself, to downcast to the backend's type (`SdkError`, `rusqlite::Error`).
    pub fn get_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

/// The result of a store or queue call.
pub type StoreResult<T> = Result<T, StoreError>;

/// What follows from an append, handed to the store with it. An embedded store writes it
/// in the same transaction as the events (the outbox: jobs can never be lost between
/// "state changed" and "reaction sent"); the DynamoDB store ignores it, because there the
/// table's stream is the outbox and the stream reactor recomputes the same reaction.
#[derive(Debug, Clone, Copy)]
pub struct Outbox<'a> {
    /// The run's state after the events.
    pub view: &'a RunState,
    /// [`crate::engine::react`] of the events.
    pub effects: &'a [Effect],
    /// [`crate::engine::wakes_reactor`] of the events: whether the stream reactor must see
    /// them. The DynamoDB store marks the item so that the event source mapping's filter
    /// passes it; the embedded store, which reacts through its outbox, ignores it.
    pub wake: bool,
}

/// The append-only event log, with optimistic concurrency per run.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Append `events` (numbered consecutively after the run's current last sequence
    /// number) atomically. If any of their sequence numbers exists already, nothing is
    /// written and the result is [`StoreError::Conflict`].
    async fn append(
        &self,
        key: &RunKey,
        events: &[EventRecord],
        outbox: Outbox<'_>,
    ) -> StoreResult<()>;

    /// The run's whole log, in sequence order (empty if the run does not exist).
    async fn load(&self, key: &RunKey) -> StoreResult<Vec<EventRecord>>;

    /// The run's current state if the store keeps it at hand: an embedded store that sees
    /// every append can keep the state of runs in flight in memory, saving a read and a
    /// fold of the whole log per decision. `None` means "fold the log". A state offered must
    /// be exactly the fold of what was committed.
    async fn current_state(&self, _key: &RunKey) -> Option<RunState> {
        None
    }

    /// Signals of the appends this store commits, for waiters in the same process (the
    /// embedded store). `None` (the default; DynamoDB, whose writers are other processes):
    /// waiters poll [`EventStore::load`] instead.
    fn signals(&self) -> Option<&dyn AppendSignals> {
        None
    }
}

/// Why a watch of a run's log was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// As many watches as the store allows are open (each holds a connection).
    #[error("{0} watchers are open, the most this server allows")]
    TooManyWatchers(usize),
}

/// Tells in-process waiters that a run's log grew, so that many watchers of a run cost no
/// reads of the store until something happens. Signalled after the append's commit.
pub trait AppendSignals: Send + Sync {
    /// Watch `key`: the watch wakes for every append committed after this call.
    fn watch(&self, key: &RunKey) -> Result<Box<dyn LogWatch>, WatchError>;
}

/// One watcher's view of a run's appends (see [`AppendSignals`]).
#[async_trait]
pub trait LogWatch: Send {
    /// Resolves once an append was committed since the watch began or last resolved.
    /// `false`: no more signals will come (the process is shutting down): stop waiting.
    async fn changed(&mut self) -> bool;
}

/// Which runs to list.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ListQuery {
    /// Only runs in this status; `None` for every run.
    pub status: Option<RunStatus>,
    /// Most runs on the page.
    pub limit: usize,
    /// Opaque, from a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// One page of a list, newest first, and where the next one starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items on this page.
    pub items: Vec<T>,
    /// The opaque cursor of the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// The CQRS read model: one view per run, kept by projecting the event log.
#[async_trait]
pub trait RunViewStore: Send + Sync {
    /// The run's view, `None` if it has none (yet).
    async fn get(&self, key: &RunKey) -> StoreResult<Option<RunState>>;

    /// Newest first.
    async fn list(&self, tenant: &str, query: &ListQuery) -> StoreResult<Page<RunState>>;

    /// Store `state` unless the stored view is already at or past `state.last_seq`.
    /// Returns whether it was written (so replays of old events are no-ops).
    async fn put(&self, state: &RunState) -> StoreResult<bool>;
}

/// Sends step jobs to workers (SQS in the cloud, the outbox table locally).
#[async_trait]
pub trait StepDispatcher: Send + Sync {
    /// Deliver every job at least once, not before `delay_ms` from now.
    async fn dispatch(&self, jobs: &[(StepJob, u64)]) -> StoreResult<()>;
}

/// Errors of todo operations that the tool reports to the user.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TodoError {
    /// No todo of the tenant has this id.
    #[error("todo {0} not found")]
    NotFound(u64),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Durable todos, per tenant. Every change carries an effect key (the run and step that
/// makes it): applying a change again with the same key returns the first result and
/// changes nothing, so a step retried after a crash cannot add a todo twice.
#[async_trait]
pub trait TodoStore: Send + Sync {
    /// Apply `change` once per `effect_key`; returns the todo as it is after the change
    /// (the deleted todo for a delete).
    async fn apply(
        &self,
        tenant: &str,
        effect_key: &str,
        change: &TodoChange,
        now: DateTime<Utc>,
    ) -> Result<Todo, TodoError>;

    /// The result of the change already applied under `effect_key`, if any.
    async fn recorded(&self, tenant: &str, effect_key: &str) -> StoreResult<Option<Todo>>;

    /// The tenant's todo `id`, `None` if there is none.
    async fn get(&self, tenant: &str, id: u64) -> StoreResult<Option<Todo>>;

    /// A page of at most `query.limit` of the tenant's todos, by id, after the cursor;
    /// `next_cursor` is set exactly when more todos follow. A cursor this store did not
    /// issue is [`StoreError::Invalid`].
    async fn list(&self, tenant: &str, query: &TodoQuery) -> StoreResult<Page<Todo>>;

    /// How many todos the tenant has.
    async fn count(&self, tenant: &str) -> StoreResult<u64>;
}

/// Which todos to list: a page of at most `limit`, after `cursor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TodoQuery {
    /// Most todos on the page (at most [`TodoQuery::MAX_LIMIT`]).
    pub limit: usize,
    /// Opaque, from a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

impl TodoQuery {
    /// The page size when none is asked for (the todo tool's `list`, `GET /todos`).
    pub const DEFAULT_LIMIT: usize = 100;
    /// The largest page.
    pub const MAX_LIMIT: usize = 500;

    /// The first page of `limit` todos.
    pub fn first(limit: usize) -> Self {
        Self {
            limit,
            cursor: None,
        }
    }
}

/// What an idempotency key is bound to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// The run the key created.
    pub run_id: String,
    /// Fingerprint of the request body, so a key reused for another request is refused.
    pub request_hash: String,
}

/// Idempotency-Key bindings: which run a key created, for how long.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// The binding of `key` in force at `now`, if any. Reserves nothing: a request looks
    /// its key up first so that one the planner refuses never binds it.
    async fn lookup(
        &self,
        tenant: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<IdempotencyRecord>>;

    /// Bind `key` to `record` unless it is bound already; returns the binding in force.
    async fn claim(
        &self,
        tenant: &str,
        key: &str,
        record: &IdempotencyRecord,
        now: DateTime<Utc>,
    ) -> StoreResult<IdempotencyRecord>;
}

/// A stored circuit-breaker state, with a version for compare-and-set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredBreaker {
    /// The breaker's state as JSON (see `engine::breaker::BreakerState`).
    pub state: Value,
    /// Bumped by every write; a write names the version it read.
    pub version: u64,
}

/// Shared circuit-breaker state per tool, updated with compare-and-set.
#[async_trait]
pub trait BreakerStore: Send + Sync {
    /// The tool's stored breaker, `None` if it never changed (closed).
    async fn get(&self, tool: &str) -> StoreResult<Option<StoredBreaker>>;

    /// Write `state` as version `expected + 1` if the stored version is `expected`
    /// (0 = absent); otherwise [`StoreError::Conflict`].
    async fn put(&self, tool: &str, expected: u64, state: &Value) -> StoreResult<()>;
}

/// Source of time, so the domain can be tested with a fake clock.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Brings a delivered step job back sooner than its queue's visibility timeout (SQS
/// `ChangeMessageVisibility` on the message's receipt handle), after a failure that had
/// nothing to do with the job itself: throttling, a timeout, an unreachable store.
#[async_trait]
pub trait Redelivery: Send + Sync {
    /// Make the received message `receipt_handle` visible again `seconds` from now.
    async fn redeliver_in(&self, receipt_handle: &str, seconds: u32) -> StoreResult<()>;
}

/// Starts the compensation saga of a run (a Step Functions execution named after the run
/// and the saga attempt in the cloud, so each attempt starts at most once).
#[async_trait]
pub trait SagaStarter: Send + Sync {
    /// Start saga attempt `attempt` (1 for the first) for `key`; starting one that already
    /// exists is not an error.
    async fn start(&self, key: &RunKey, correlation_id: &str, attempt: u32) -> StoreResult<()>;
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    #[test]
    fn given_a_lower_level_error_when_a_store_error_is_made_from_it_then_it_is_the_source() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "read-only disk");
        let e = StoreError::unavailable_from("cannot write the log", io);
        assert_eq!(e.to_string(), "store unavailable: cannot write the log");
        assert_eq!(
            e.source().map(|s| s.to_string()).as_deref(),
            Some("read-only disk")
        );

        let json = serde_json::from_str::<u32>("x").expect_err("not a number");
        let e = StoreError::corrupt("a view").caused_by(json);
        assert!(e.source().is_some());
        assert_eq!(
            StoreError::unavailable("down")
                .source()
                .map(|s| s.to_string()),
            None
        );
    }

    #[test]
    fn given_answers_rather_than_failures_when_given_a_cause_then_they_stay_as_they_are() {
        let io = || std::io::Error::other("x");
        let conflict = StoreError::Conflict("seq 3 taken".into()).caused_by(io());
        assert_eq!(conflict, StoreError::Conflict("seq 3 taken".into()));
        assert!(conflict.source().is_none());
        // Two errors with the same message and causes that read the same are equal.
        assert_eq!(
            StoreError::unavailable_from("down", io()),
            StoreError::unavailable_from("down", io())
        );
        assert_ne!(
            StoreError::unavailable_from("down", io()),
            StoreError::unavailable("down")
        );
    }
}
