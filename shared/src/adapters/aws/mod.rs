//! The AWS adapters: DynamoDB stores, the SQS step dispatcher and the Step Functions saga
//! starter, plus table provisioning ([`provision`]) and the stream-record decoder
//! ([`stream`]).
//!
//! Every SDK error is mapped into [`StoreError`] here (a failed condition is
//! [`StoreError::Conflict`]; throttling, timeouts, 5xx and connection failures are
//! [`StoreError::Unavailable`]; undecodable items are [`StoreError::Corrupt`]; requests DynamoDB
//! rejects as malformed are [`StoreError::Invalid`]), so no SDK type leaks through a port.
//!
//! Clients are built once per cold start from [`load_sdk_config`] (the standard provider
//! chain: `AWS_REGION`, credentials, and `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_DYNAMODB`
//! overrides, which is how developers point them at DynamoDB Local).
//!
//! # Tables
//!
//! All tables use on-demand billing. [`provision::create_tables`] creates exactly these; the
//! SAM template declares the same.
//!
//! ## events ([`TableNames::events`], `CRANE_EVENTS_TABLE`)
//! - Key: `pk` (S) = `"{tenant}#{run_id}"` (hash), `seq` (N) (range). One item per append,
//!   keyed by its first event's `seq`.
//! - Attributes of the first (or only) event: `tenant` (S), `run_id` (S), `type` (S), `at`
//!   (S, RFC 3339), `version` (N), `data` (M): the [`EventRecord`](crate::domain::EventRecord)
//!   written with `serde_dynamo`, plus the keys. If the event's data holds a number
//!   DynamoDB cannot store exactly (magnitude outside 1e-130..1e126, or a float that would
//!   read back as an integer), `data` is written as a JSON string (S) instead; readers
//!   accept both.
//! - An append of several events also has `more` (L): the following events, each a map
//!   of `seq`, `type`, `at`, `version`, `data` encoded the same way (keys left out), and
//!   `last` (N): the last event's `seq`. Readers expand an item into its events and refuse
//!   (as corrupt) one whose sequence numbers are not consecutive or do not end at `last`.
//!   A single event's item has neither, so items written one per event read as before.
//! - `wake` (S) = `"1"` when the stream reactor must see the append
//!   ([`Outbox::wake`](crate::ports::Outbox)); absent otherwise. The event source mapping
//!   passes only INSERTs carrying it ([`stream::REACTOR_FILTER`]).
//! - Stream: `NEW_IMAGE`. **The stream is the outbox**: the rest of the
//!   [`Outbox`](crate::ports::Outbox) handed to
//!   [`EventStore::append`](crate::ports::EventStore::append) is ignored, because the
//!   stream reactor recomputes the same effects from the stream records.
//! - Append: one `PutItem` conditioned on `attribute_not_exists(pk)` (a failed condition is
//!   [`StoreError::Conflict`]). Items chain (each starts right after the previous one's
//!   last seq), so racing appends at the tail meet at one key. A gap or an overlap (an
//!   append that does not start right after the tail) is refused as a conflict too: the
//!   store knows the tails its own loads and appends saw, and reads the tail (a consistent
//!   `Query`, `Limit 1`, newest first) only when it does not know it or the append starts
//!   beyond it (see the `events` module for the reasoning). An append whose item would
//!   exceed 350 KB is written one item per event in one `TransactWriteItems` (each `Put`
//!   conditioned the same way, all carrying `wake`), after the same check. At most 100
//!   events per append.
//! - Load: `Query` on `pk`, `ConsistentRead`, paginated, ascending `seq`; items expanded
//!   into their events, which must follow each other without gaps.
//!
//! ## runs (the CQRS view; `CRANE_RUNS_TABLE`)
//! - Key: `pk` (S) = `"{tenant}#{run_id}"`.
//! - Attributes: `tenant`, `run_id`, `status`, `created_sk` =
//!   `"{created_at, RFC 3339 with microseconds and Z}#{run_id}"`, `last_seq` (N), `body_z`
//!   (B, the `RunState` as DEFLATE-compressed JSON; views written before it hold `body`,
//!   S, plain JSON, and are still read).
//! - GSI `by_created`: hash `tenant`, range `created_sk`, projection `INCLUDE` `status`
//!   (plus the keys `pk`, `tenant`, `created_sk`). The body never reaches the index, and a
//!   put that keeps the run's status writes the table alone: DynamoDB writes an index only
//!   when a key or projected attribute of it changes.
//! - Put: `PutItem` if `attribute_not_exists(pk) OR last_seq < :seq`; a failed condition
//!   means the stored view is as new or newer, and `put` returns `Ok(false)`.
//! - List: `Query` on `by_created` (`ScanIndexForward=false`), newest first, with a
//!   `FilterExpression` on `status` when one is asked for (DynamoDB filters after `Limit`,
//!   so it reads on until enough runs matched or the index ends); then `BatchGetItem`
//!   (`ConsistentRead`, at most 100 keys a call, unprocessed keys sent again after a short
//!   backoff) reads the chosen runs' bodies, kept in index order. A run whose view is
//!   `pending` or `running` is replaced by the fold of its log (the reactor writes the view
//!   of a run in flight only when it is created), and a listing of either status reads both
//!   from the index. A run whose item is gone, or that is no longer in the status asked for
//!   (the index trails the table), is left out. The cursor is the index key (`pk`, `tenant`, `created_sk`) of the last run
//!   on the page plus the listing (the status, or `all`), as JSON, base64url-encoded; a
//!   cursor that does not decode, or belongs to another tenant or listing, is
//!   [`StoreError::Invalid`].
//!
//! ## todos (`CRANE_TODOS_TABLE`)
//! - Key: `pk` (S) = tenant, `sk` (S):
//!   - `"todo#{id:020}"`: a todo (`id` (N), `body` (S, JSON)); zero-padded so `sk` order
//!     is id order;
//!   - `"counter"`: the tenant's id counter (`last_id` (N), `UpdateItem ADD`);
//!   - `"effect#{effect_key}"`: the recorded result of the change applied under that key
//!     (`result` (S, JSON)).
//! - Apply: if the effect record exists, return it; otherwise one `TransactWriteItems`
//!   puts the effect record (`attribute_not_exists(pk)`) and makes the change (add: put
//!   with `attribute_not_exists`, after taking an id from the counter; complete/reopen:
//!   put with `attribute_exists(pk)`; delete: delete with `attribute_exists(pk)`;
//!   restore: put). A transaction cancelled because the effect record exists returns that
//!   record (someone applied it concurrently); one cancelled because the todo is gone is
//!   `TodoError::NotFound`; one that collided with a concurrent transaction is retried.
//!   Ids are unique and increasing per tenant; two racing applies of one key can leave an
//!   unused id behind.
//!
//! ## idempotency (`CRANE_IDEMPOTENCY_TABLE`)
//! - Key: `pk` (S) = `"{tenant}#{key}"`; `run_id`, `request_hash`, `expires_at` (N, epoch
//!   seconds, the table's TTL attribute: keys expire 24 h after they were claimed).
//! - Claim: `PutItem` if `attribute_not_exists(pk) OR expires_at < :now` (TTL deletion
//!   lags, so an expired key can be claimed again at once); otherwise a consistent
//!   `GetItem` returns the binding in force.
//!
//! ## breakers (`CRANE_BREAKERS_TABLE`)
//! - Key: `tool` (S); `version` (N), `state` (S, JSON). Put is a compare-and-set:
//!   `attribute_not_exists(tool)` when the expected version is 0, else `version = :expected`.
//!
//! # Queue and state machine
//! - [`SqsDispatcher`] (`CRANE_STEP_QUEUE_URL`, a standard queue): `SendMessageBatch` in
//!   chunks of 10; the jobs of one run with one delay share a message (up to 100), whose
//!   body is a [`StepJob`](crate::domain::StepJob) as JSON or a JSON array of them;
//!   `DelaySeconds` = the delay rounded up to whole seconds, capped at SQS's maximum of 900 s (a longer
//!   backoff is shortened to 15 minutes). Entries SQS reports as failed are resent up to 3
//!   more times, then the dispatch is [`StoreError::Unavailable`].
//! - [`SfnSagaStarter`] (`CRANE_SAGA_STATE_MACHINE_ARN`): `StartExecution` named after the
//!   run id with input `{"tenant", "run_id", "correlation_id"}`; `ExecutionAlreadyExists`
//!   is success, so the saga of a run starts at most once.

mod breakers;
mod error;
mod events;
mod idempotency;
mod item;
pub mod provision;
mod saga;
mod sqs;
pub mod stream;
mod todos;
mod views;

pub use aws_config;
pub use aws_sdk_dynamodb;
pub use aws_sdk_sfn;
pub use aws_sdk_sqs;

pub use idempotency::KEY_TTL as IDEMPOTENCY_KEY_TTL;
pub use saga::{execution_name, saga_input, SfnSagaStarter};
pub use sqs::{delay_seconds, SqsDispatcher, MAX_DELAY_SECONDS};

use crate::ports::StoreError;

/// Environment variable naming the events table.
pub const EVENTS_TABLE_VAR: &str = "CRANE_EVENTS_TABLE";
/// Environment variable naming the runs view table.
pub const RUNS_TABLE_VAR: &str = "CRANE_RUNS_TABLE";
/// Environment variable naming the todos table.
pub const TODOS_TABLE_VAR: &str = "CRANE_TODOS_TABLE";
/// Environment variable naming the idempotency-keys table.
pub const IDEMPOTENCY_TABLE_VAR: &str = "CRANE_IDEMPOTENCY_TABLE";
/// Environment variable naming the circuit-breakers table.
pub const BREAKERS_TABLE_VAR: &str = "CRANE_BREAKERS_TABLE";
/// Environment variable holding the step queue's URL.
pub const STEP_QUEUE_URL_VAR: &str = "CRANE_STEP_QUEUE_URL";
/// Environment variable holding the saga state machine's ARN.
pub const SAGA_STATE_MACHINE_ARN_VAR: &str = "CRANE_SAGA_STATE_MACHINE_ARN";

/// A required environment variable is missing or blank.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not set")]
pub struct MissingEnv(pub &'static str);

fn env_var(name: &'static str) -> Result<String, MissingEnv> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .ok_or(MissingEnv(name))
}

/// The names of Crane's five DynamoDB tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNames {
    /// The table of run events, one item per append (`CRANE_EVENTS_TABLE`).
    pub events: String,
    /// The runs view, one item per run with its folded state (`CRANE_RUNS_TABLE`).
    pub runs: String,
    /// The todos table, one item per tenant's todo (`CRANE_TODOS_TABLE`).
    pub todos: String,
    /// The idempotency keys of `POST /runs` (`CRANE_IDEMPOTENCY_TABLE`).
    pub idempotency: String,
    /// One item per tool's circuit breaker (`CRANE_BREAKERS_TABLE`).
    pub breakers: String,
}

impl TableNames {
    /// From `CRANE_EVENTS_TABLE`, `CRANE_RUNS_TABLE`, `CRANE_TODOS_TABLE`,
    /// `CRANE_IDEMPOTENCY_TABLE` and `CRANE_BREAKERS_TABLE` (all required).
    pub fn from_env() -> Result<Self, MissingEnv> {
        Ok(Self {
            events: env_var(EVENTS_TABLE_VAR)?,
            runs: env_var(RUNS_TABLE_VAR)?,
            todos: env_var(TODOS_TABLE_VAR)?,
            idempotency: env_var(IDEMPOTENCY_TABLE_VAR)?,
            breakers: env_var(BREAKERS_TABLE_VAR)?,
        })
    }

    /// `{prefix}-events`, `{prefix}-runs`, `{prefix}-todos`, `{prefix}-idempotency`,
    /// `{prefix}-breakers`.
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            events: format!("{prefix}-events"),
            runs: format!("{prefix}-runs"),
            todos: format!("{prefix}-todos"),
            idempotency: format!("{prefix}-idempotency"),
            breakers: format!("{prefix}-breakers"),
        }
    }
}

/// The shared AWS configuration from the standard provider chain. Call once per cold start.
pub async fn load_sdk_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// The DynamoDB-backed stores: events, run views, todos, idempotency keys and breakers,
/// each in its own table (see the [module docs](self)). Cheap to clone.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: aws_sdk_dynamodb::Client,
    tables: TableNames,
    /// The runs' last sequence numbers as this process saw them, shared by clones (see
    /// the `events` module docs).
    tails: std::sync::Arc<events::Tails>,
}

impl DynamoStore {
    /// A store over `client` and the tables named in `tables`.
    pub fn new(client: aws_sdk_dynamodb::Client, tables: TableNames) -> Self {
        Self {
            client,
            tables,
            tails: Default::default(),
        }
    }

    /// A store over the tables named by the `CRANE_*_TABLE` variables.
    pub fn from_env(config: &aws_config::SdkConfig) -> Result<Self, MissingEnv> {
        Ok(Self::new(
            aws_sdk_dynamodb::Client::new(config),
            TableNames::from_env()?,
        ))
    }

    /// The names of the tables this store uses.
    pub fn tables(&self) -> &TableNames {
        &self.tables
    }

    /// The DynamoDB client the store sends its requests with.
    pub fn client(&self) -> &aws_sdk_dynamodb::Client {
        &self.client
    }
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::corrupt(what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_prefix_when_naming_tables_then_each_table_gets_its_suffix() {
        let names = TableNames::with_prefix("crane-dev");
        assert_eq!(names.events, "crane-dev-events");
        assert_eq!(names.runs, "crane-dev-runs");
        assert_eq!(names.todos, "crane-dev-todos");
        assert_eq!(names.idempotency, "crane-dev-idempotency");
        assert_eq!(names.breakers, "crane-dev-breakers");
    }
}
