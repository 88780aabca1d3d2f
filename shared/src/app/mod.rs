//! Application services: what the entry points (HTTP, queue, stream, saga) call. Written
//! once over the ports, so the local runtime and the Lambdas run the same code.

mod approval;
pub mod compensation;
pub mod live;
mod wave;
mod worker;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tracing::{debug, info, instrument, warn};

use crate::domain::{
    self, fold, fold_until, Effect, Event, EventRecord, FoldError, RunKey, RunState, RunStatus,
    Todo,
};
use crate::engine::approval::{self as approval_rules, ApprovalPolicy};
use crate::engine::breaker::{BreakerConfig, BreakerState};
use crate::engine::{self, RetryPolicy};
use crate::planner::{PlanError, Planner};
use crate::ports::{
    BreakerStore, Clock, EventStore, IdempotencyRecord, IdempotencyStore, ListQuery, Outbox, Page,
    RunViewStore, StoreError, TodoQuery, TodoStore,
};
use crate::tools::Registry;

pub use compensation::{CompensateError, CompensationPlan};
pub use wave::{JobsReport, WaveLimits};
pub use worker::JobResult;

/// Longest prompt accepted, in characters.
pub const MAX_PROMPT_CHARS: usize = 4_000;
/// Longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// Default and largest page of `GET /runs`.
pub const DEFAULT_PAGE: usize = 20;
/// Largest page of `GET /runs` a client may ask for.
pub const MAX_PAGE: usize = 100;
/// How often an append is retried after losing an optimistic-concurrency race.
const MAX_CONFLICTS: usize = 64;

/// Engine settings, from [`crate::config::Config`].
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Retry policy of step attempts (attempts, backoff, jitter).
    pub retry: RetryPolicy,
    /// Retry policy of each compensation.
    pub compensation_retry: RetryPolicy,
    /// Longest a tool call may take before the attempt counts as failed (transient).
    pub step_timeout_ms: u64,
    /// How long past the timeout a claim is held before another worker may take over.
    pub lease_margin_ms: u64,
    /// When a tool's circuit breaker opens, how long it stays open, how it closes.
    pub breaker: BreakerConfig,
    /// Claims taken before this instant are void (set by the local runtime at start-up).
    pub void_leases_before: Option<DateTime<Utc>>,
    /// Longest a step waits for its tool's circuit breaker before it fails.
    pub step_deadline_ms: u64,
    /// Runs a tenant may have in flight (pending, running, compensating); 0 = no cap.
    pub max_active_runs: usize,
    /// Which steps wait for a person's approval (`CRANE_APPROVAL`).
    pub approval: ApprovalPolicy,
    /// How long an approval waits before it expires as a rejection.
    pub approval_timeout_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            compensation_retry: RetryPolicy::default(),
            step_timeout_ms: 30_000,
            lease_margin_ms: 5_000,
            breaker: BreakerConfig::default(),
            void_leases_before: None,
            step_deadline_ms: 15 * 60 * 1_000,
            max_active_runs: 0,
            approval: ApprovalPolicy::default(),
            approval_timeout_ms: approval_rules::DEFAULT_TIMEOUT_MS,
        }
    }
}

impl Settings {
    /// How long a worker's claim on a step attempt lasts: the step timeout plus the
    /// margin, in milliseconds.
    pub fn lease_ms(&self) -> u64 {
        self.step_timeout_ms + self.lease_margin_ms
    }
}

/// Everything that can go wrong serving a request, mapped to HTTP at the edge.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AppError {
    /// A rule of the application refused the request; `why` says which.
    #[error("{message}")]
    Refused {
        /// The rule that refused.
        why: Refusal,
        /// What a person reads: what was refused and why.
        message: String,
    },
    /// The run (or the step named) does not exist for this tenant.
    #[error("{0}")]
    NotFound(String),
    /// The planner could not plan the prompt.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A store or queue failed; its error is kept as the source.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which rule refused a request. The HTTP layer gives each its code and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An `Idempotency-Key` that is not 1-255 visible ASCII characters.
    InvalidIdempotencyKey,
    /// An idempotency key already used for a different request.
    IdempotencyKeyReused,
    /// A prompt with nothing but whitespace.
    PromptEmpty,
    /// A prompt over the length limit.
    PromptTooLong,
    /// A status filter that names no run status.
    InvalidStatus,
    /// A page size outside the allowed range.
    LimitOutOfRange,
    /// A page cursor the store did not hand out.
    InvalidCursor,
    /// An approval comment over the length limit.
    CommentTooLong,
    /// The tenant has as many unfinished runs as it may have.
    TooManyActiveRuns,
    /// As many watchers wait as the server allows.
    TooManyWatchers,
    /// The run has finished: it can no longer be cancelled.
    RunFinished,
    /// The run has no saga to start or retry.
    NothingToCompensate,
    /// A person has already decided on the step.
    AlreadyDecided,
    /// The step is not waiting for a decision.
    NotWaitingApproval,
}

impl AppError {
    /// A refusal by rule `why`, with its message.
    pub fn refused(why: Refusal, message: impl Into<String>) -> Self {
        AppError::Refused {
            why,
            message: message.into(),
        }
    }
}

/// Who asked, for logs and events.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// The tenant the request acts for: every run and todo it touches is this tenant's.
    pub tenant: String,
    /// The id that ties the request's logs and events together (from `X-Correlation-Id`
    /// or made up at the edge).
    pub correlation_id: String,
}

/// The answer to `POST /runs`.
#[derive(Debug, Clone)]
pub struct Created {
    /// The run as created (or as it is now, when replayed).
    pub run: RunState,
    /// The idempotency key named an existing run, which is returned instead.
    pub replayed: bool,
}

/// A tool of the catalog with its breaker state.
#[derive(Debug, Clone, Serialize)]
pub struct ToolView {
    /// The name plans call the tool by.
    pub name: &'static str,
    /// What the tool does, for people and for the model planners.
    pub description: &'static str,
    /// The JSON Schema a step's input must match.
    pub input_schema: Value,
    /// The tool's circuit breaker as stored now (closed, open until, half-open).
    pub breaker: BreakerState,
}

/// The ports and settings the services run over.
pub struct App {
    /// The event log: the truth every state is folded from.
    pub events: Arc<dyn EventStore>,
    /// The read model: one view per run, for lists and fast reads.
    pub views: Arc<dyn RunViewStore>,
    /// The tenants' todo lists, which the `todo` tool changes.
    pub todos: Arc<dyn TodoStore>,
    /// Idempotency-Key bindings of `POST /runs`.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// The circuit breakers' shared state, one per tool.
    pub breakers: Arc<dyn BreakerStore>,
    /// The tools steps may call.
    pub registry: Registry,
    /// Turns prompts into plans.
    pub planner: Arc<dyn Planner>,
    /// The time, so tests can hold it still.
    pub clock: Arc<dyn Clock>,
    /// Retry, lease, breaker, quota and approval settings.
    pub settings: Settings,
}

/// A stable fingerprint of a request body (FNV-1a, 64 bits), so an idempotency key reused
/// for a different request is refused. Not a security boundary.
fn fingerprint(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn check_idempotency_key(key: &str) -> Result<(), AppError> {
    let valid = !key.is_empty()
        && key.len() <= MAX_IDEMPOTENCY_KEY_LEN
        && key.chars().all(|c| c.is_ascii_graphic());
    if valid {
        Ok(())
    } else {
        Err(AppError::refused(
            Refusal::InvalidIdempotencyKey,
            format!("Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"),
        ))
    }
}

fn fold_error(e: FoldError) -> AppError {
    AppError::Store(StoreError::corrupt_from(e.to_string(), e))
}

impl App {
    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Append `events` to the run whose state is `state`, with the outbox (view and
    /// effects) they imply. Returns the new state. Steps the events make ready that need
    /// approval get their `ApprovalRequested` in the same append.
    pub(crate) async fn commit(
        &self,
        state: &RunState,
        events: Vec<Event>,
    ) -> Result<RunState, StoreError> {
        self.commit_as(state, events, false).await.map(|c| c.state)
    }

    /// [`App::commit`], for an appender that sends the step jobs its events call for
    /// itself when `sends_jobs` (a step worker running the next level), so the stream
    /// reactor need not see the append for them. Returns the new state and the effects.
    pub(crate) async fn commit_as(
        &self,
        state: &RunState,
        mut events: Vec<Event>,
        sends_jobs: bool,
    ) -> Result<Committed, StoreError> {
        let now = self.now();
        if state.plan.steps.iter().any(|p| p.requires_approval) {
            events.extend(self.approval_requests(&engine::simulate(state, &events), now));
        }
        let records = engine::records(state, now, events);
        let mut after = state.clone();
        for rec in &records {
            after
                .apply(rec)
                .map_err(|e| StoreError::corrupt_from(e.to_string(), e))?;
        }
        let effects = engine::react(&after, &records, &self.registry);
        let wake = engine::wakes_reactor(state.status, &after, &records, &effects, sends_jobs);
        let key = RunKey::new(&state.tenant, &state.run_id);
        self.events
            .append(
                &key,
                &records,
                Outbox {
                    view: &after,
                    effects: &effects,
                    wake,
                },
            )
            .await?;
        for rec in &records {
            info!(
                run_id = %state.run_id,
                step_id = rec.event.step_id().unwrap_or_default(),
                seq = rec.seq,
                event = rec.event.type_name(),
                correlation_id = %state.correlation_id,
                "event appended"
            );
        }
        Ok(Committed {
            state: after,
            effects,
            records,
            wake,
        })
    }

    /// Load and fold a run; `None` if it does not exist.
    pub async fn load(
        &self,
        key: &RunKey,
    ) -> Result<Option<(RunState, Vec<EventRecord>)>, AppError> {
        let events = self.events.load(key).await?;
        if events.is_empty() {
            return Ok(None);
        }
        let state = fold(&key.run_id, &events).map_err(fold_error)?;
        Ok(Some((state, events)))
    }

    /// The run's current state, from the store's cache of runs in flight when it has one,
    /// else folded from the log; `None` if the run does not exist.
    pub async fn load_state(&self, key: &RunKey) -> Result<Option<RunState>, AppError> {
        if let Some(state) = self.events.current_state(key).await {
            return Ok(Some(state));
        }
        debug!(run_id = %key.run_id, "state not at hand: folding the log");
        Ok(self.load(key).await?.map(|(state, _)| state))
    }

    /// `POST /runs`: plan the prompt and record the run.
    /// Refuse a new run when `tenant` already has `max_active_runs` in flight (as the
    /// read model shows them; on AWS it trails the events by the stream's lag).
    async fn check_active_runs(&self, tenant: &str) -> Result<(), AppError> {
        let cap = self.settings.max_active_runs;
        if cap == 0 {
            return Ok(());
        }
        let mut active = 0;
        for status in [
            domain::RunStatus::Pending,
            domain::RunStatus::Running,
            domain::RunStatus::Compensating,
        ] {
            let mut cursor = None;
            loop {
                let page = self
                    .views
                    .list(
                        tenant,
                        &crate::ports::ListQuery {
                            status: Some(status),
                            limit: (cap - active).clamp(1, 100),
                            cursor,
                        },
                    )
                    .await?;
                active += page.items.len();
                if active >= cap {
                    return Err(AppError::Refused {
                        why: Refusal::TooManyActiveRuns,
                        message: format!(
                            "this tenant has {cap} runs in flight, its most \
                             (CRANE_TENANT_MAX_ACTIVE_RUNS); retry when one finishes"
                        ),
                    });
                }
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        Ok(())
    }

    /// `POST /runs`: plan `prompt` and record the run (`RunCreated` with its plan), bound
    /// to `idempotency_key` when one is given, so a repeated request returns the same run.
    #[instrument(skip(self, prompt), fields(tenant = %ctx.tenant, correlation_id = %ctx.correlation_id))]
    pub async fn create_run(
        &self,
        ctx: &RequestContext,
        prompt: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Created, AppError> {
        let prompt = prompt.trim();
        if prompt.is_empty() {
            return Err(AppError::refused(
                Refusal::PromptEmpty,
                "prompt must not be empty",
            ));
        }
        let chars = prompt.chars().count();
        if chars > MAX_PROMPT_CHARS {
            return Err(AppError::refused(
                Refusal::PromptTooLong,
                format!("prompt is {chars} characters; the limit is {MAX_PROMPT_CHARS}"),
            ));
        }
        let mut run_id = domain::new_run_id();
        let request_hash = fingerprint(prompt);
        // A key is looked up first (a replay needs no plan), but bound only once the prompt
        // is planned: a refused request (422) never uses a key up.
        let mut bound = false;
        if let Some(key) = idempotency_key {
            check_idempotency_key(key)?;
            if let Some(binding) = self
                .idempotency
                .lookup(&ctx.tenant, key, self.now())
                .await?
            {
                match self.bound_run(ctx, &binding, &request_hash).await? {
                    Some(run) => return Ok(run),
                    // Bound but never written (a crash in between): create it under that id.
                    None => (run_id, bound) = (binding.run_id, true),
                }
            }
        }
        if !bound {
            self.check_active_runs(&ctx.tenant).await?;
        }
        let planned = self.planner.plan(prompt, &self.registry).await?;
        if let (Some(key), false) = (idempotency_key, bound) {
            let record = IdempotencyRecord {
                run_id: run_id.clone(),
                request_hash: request_hash.clone(),
            };
            let binding = self
                .idempotency
                .claim(&ctx.tenant, key, &record, self.now())
                .await?;
            if binding.run_id != run_id {
                // A concurrent request with the same key bound it first.
                if let Some(run) = self.bound_run(ctx, &binding, &request_hash).await? {
                    return Ok(run);
                }
                run_id = binding.run_id;
            }
        }
        if let Some(detail) = &planned.fallback_detail {
            // Only the category is recorded on the run; operators find the detail here.
            warn!(
                run_id = %run_id,
                planner = %planned.info.name,
                reason = planned.info.fallback_reason.as_deref().unwrap_or_default(),
                detail = %detail,
                "run planned by the fallback planner"
            );
        }
        let key = RunKey::new(&ctx.tenant, &run_id);
        let created = Event::RunCreated {
            tenant: ctx.tenant.clone(),
            prompt: prompt.to_owned(),
            correlation_id: ctx.correlation_id.clone(),
            idempotency_key: idempotency_key.map(str::to_owned),
        };
        let first = EventRecord::new(1, self.now(), created);
        let state = fold(&run_id, std::slice::from_ref(&first)).map_err(fold_error)?;
        // The approval policy has the last word on every planner's plan.
        let plan = self.settings.approval.mark(planned.plan);
        let held = plan.steps.iter().any(|p| p.requires_approval);
        let mut events = vec![Event::PlanGenerated {
            planner: planned.info,
            plan: Arc::new(plan),
        }];
        let now = self.now();
        if held {
            events.extend(self.approval_requests(&engine::simulate(&state, &events), now));
        }
        let mut records = vec![first];
        records.extend(engine::records(&state, now, events));
        let after = fold(&run_id, &records).map_err(fold_error)?;
        let effects = engine::react(&after, &records, &self.registry);
        match self
            .events
            .append(
                &key,
                &records,
                Outbox {
                    view: &after,
                    effects: &effects,
                    wake: true,
                },
            )
            .await
        {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) if idempotency_key.is_some() => {
                // A concurrent request with the same key created it first.
                if let Some((run, _)) = self.load(&key).await? {
                    return Ok(Created {
                        run,
                        replayed: true,
                    });
                }
            }
            Err(e) => return Err(e.into()),
        }
        info!(run_id = %run_id, steps = after.steps.len(), planner = after.planner.as_ref().map(|p| p.name.as_str()).unwrap_or_default(), "run created");
        Ok(Created {
            run: after,
            replayed: false,
        })
    }

    /// The run an idempotency binding names, if it was written; refuses a binding made for
    /// a different request.
    async fn bound_run(
        &self,
        ctx: &RequestContext,
        binding: &IdempotencyRecord,
        request_hash: &str,
    ) -> Result<Option<Created>, AppError> {
        if binding.request_hash != request_hash {
            return Err(AppError::refused(
                Refusal::IdempotencyKeyReused,
                "this Idempotency-Key was already used for a different request",
            ));
        }
        let existing = RunKey::new(&ctx.tenant, &binding.run_id);
        Ok(self.load(&existing).await?.map(|(run, _)| Created {
            run,
            replayed: true,
        }))
    }

    /// `GET /runs/{id}`: the run as its log says now. The state the store keeps at hand
    /// for a run in flight, else the read model of a finished run (written when its status
    /// last changed), else the fold of the log: on AWS the read model follows status
    /// changes only, not every step, and trails the log by the stream's lag.
    pub async fn get_run(&self, key: &RunKey) -> Result<RunState, AppError> {
        if let Some(state) = self.events.current_state(key).await {
            return Ok(state);
        }
        if let Some(view) = self.views.get(key).await? {
            // At rest: no event can follow without changing the status first.
            let at_rest = matches!(
                view.status,
                RunStatus::Completed | RunStatus::Compensated | RunStatus::Cancelled
            );
            if at_rest {
                return Ok(view);
            }
        }
        self.load(key)
            .await?
            .map(|(s, _)| s)
            .ok_or_else(|| AppError::NotFound(format!("run {} not found", key.run_id)))
    }

    /// `GET /runs/{id}?at=`: the state as of `at`.
    pub async fn get_run_at(&self, key: &RunKey, at: DateTime<Utc>) -> Result<RunState, AppError> {
        let events = self.events.load(key).await?;
        if events.is_empty() {
            return Err(AppError::NotFound(format!("run {} not found", key.run_id)));
        }
        match fold_until(&key.run_id, &events, at) {
            Ok(s) => Ok(s),
            Err(FoldError::Empty) => Err(AppError::NotFound(format!(
                "run {} did not exist yet at {}",
                key.run_id,
                at.to_rfc3339()
            ))),
            Err(e) => Err(fold_error(e)),
        }
    }

    /// `GET /runs/{id}/events`.
    pub async fn run_events(&self, key: &RunKey) -> Result<Vec<EventRecord>, AppError> {
        let events = self.events.load(key).await?;
        if events.is_empty() {
            return Err(AppError::NotFound(format!("run {} not found", key.run_id)));
        }
        Ok(events)
    }

    /// `GET /runs`: newest first.
    pub async fn list_runs(
        &self,
        tenant: &str,
        status: Option<&str>,
        limit: Option<usize>,
        cursor: Option<String>,
    ) -> Result<Page<RunState>, AppError> {
        let status = match status {
            None => None,
            Some(s) => Some(RunStatus::parse(s).ok_or_else(|| {
                let names: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
                AppError::refused(
                    Refusal::InvalidStatus,
                    format!("status must be one of {}", names.join(", ")),
                )
            })?),
        };
        let limit = limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(AppError::refused(
                Refusal::LimitOutOfRange,
                format!("limit must be from 1 to {MAX_PAGE}"),
            ));
        }
        let page = self
            .views
            .list(
                tenant,
                &ListQuery {
                    status,
                    limit,
                    cursor,
                },
            )
            .await
            .map_err(|e| match e {
                StoreError::Invalid(m) => AppError::refused(Refusal::InvalidCursor, m),
                other => AppError::Store(other),
            })?;
        Ok(page)
    }

    /// `POST /runs/{id}/cancel`: stop scheduling, let running steps finish, compensate
    /// what completed; the run ends `cancelled`.
    #[instrument(skip(self), fields(tenant = %key.tenant, run_id = %key.run_id))]
    pub async fn cancel_run(
        &self,
        key: &RunKey,
        reason: Option<String>,
    ) -> Result<RunState, AppError> {
        for _ in 0..MAX_CONFLICTS {
            let Some(state) = self.load_state(key).await? else {
                return Err(AppError::NotFound(format!("run {} not found", key.run_id)));
            };
            if state.cancel_requested && !state.status.is_finished() {
                return Ok(state);
            }
            if state.status.is_finished() {
                return Err(AppError::Refused {
                    why: Refusal::RunFinished,
                    message: format!(
                        "run {} is already {} and cannot be cancelled",
                        key.run_id,
                        state.status.as_str()
                    ),
                });
            }
            match self
                .commit(
                    &state,
                    vec![Event::CancelRequested {
                        reason: reason.clone(),
                    }],
                )
                .await
            {
                Ok(after) => {
                    info!("cancel requested");
                    return Ok(after);
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AppError::Store(StoreError::unavailable(
            "too much contention on this run",
        )))
    }

    /// `GET /todos`: by id, a page of `limit` (default [`TodoQuery::DEFAULT_LIMIT`], at
    /// most [`TodoQuery::MAX_LIMIT`]) at a time.
    pub async fn list_todos(
        &self,
        tenant: &str,
        limit: Option<usize>,
        cursor: Option<String>,
    ) -> Result<Page<Todo>, AppError> {
        let limit = limit.unwrap_or(TodoQuery::DEFAULT_LIMIT);
        if !(1..=TodoQuery::MAX_LIMIT).contains(&limit) {
            return Err(AppError::refused(
                Refusal::LimitOutOfRange,
                format!("limit must be from 1 to {}", TodoQuery::MAX_LIMIT),
            ));
        }
        self.todos
            .list(tenant, &TodoQuery { limit, cursor })
            .await
            .map_err(|e| match e {
                StoreError::Invalid(m) => AppError::refused(Refusal::InvalidCursor, m),
                other => AppError::Store(other),
            })
    }

    /// `GET /tools`: the catalog with each tool's breaker state.
    pub async fn tools(&self) -> Result<Vec<ToolView>, AppError> {
        let mut out = Vec::new();
        for info in self.registry.catalog() {
            out.push(ToolView {
                name: info.name,
                description: info.description,
                input_schema: info.input_schema,
                breaker: self.breaker_state(info.name).await?.0,
            });
        }
        Ok(out)
    }

    /// `GET /health`: whether the store answers, and the planner's state.
    pub async fn health(&self) -> (bool, Value) {
        let store_ok = self
            .views
            .list(
                crate::domain::DEFAULT_TENANT,
                &ListQuery {
                    limit: 1,
                    ..Default::default()
                },
            )
            .await
            .is_ok();
        let degraded = self.planner.degraded();
        let status = if !store_ok {
            "unavailable"
        } else if degraded.is_some() {
            "degraded"
        } else {
            "ok"
        };
        let body = serde_json::json!({
            "status": status,
            "version": env!("CARGO_PKG_VERSION"),
            "store": if store_ok { "ok" } else { "unavailable" },
            "planner": match degraded {
                None => serde_json::json!({"name": self.planner.name(), "status": "ok"}),
                Some(reason) => serde_json::json!({"name": self.planner.name(), "status": "degraded", "reason": reason}),
            },
        });
        (store_ok, body)
    }

    pub(crate) async fn breaker_state(
        &self,
        tool: &str,
    ) -> Result<(BreakerState, u64), StoreError> {
        match self.breakers.get(tool).await? {
            None => Ok((BreakerState::default(), 0)),
            Some(stored) => match serde_json::from_value(stored.state) {
                Ok(state) => Ok((state, stored.version)),
                Err(e) => {
                    warn!(tool, error = %e, "unreadable breaker state; treating as closed");
                    Ok((BreakerState::default(), stored.version))
                }
            },
        }
    }

    /// Project new events (from the DynamoDB Stream) into the read model and return the
    /// state projected and the reaction to the events. Idempotent: replays of old events
    /// change nothing in the view and produce effects that workers ignore.
    pub async fn project(&self, key: &RunKey, new: &[EventRecord]) -> Result<Projection, AppError> {
        let Some(upto) = new.iter().map(|r| r.seq).max() else {
            return Ok(Projection {
                state: None,
                effects: Vec::new(),
            });
        };
        let events = self.events.load(key).await?;
        let known: Vec<EventRecord> = events.into_iter().filter(|e| e.seq <= upto).collect();
        if known.len() < upto as usize {
            return Err(AppError::Store(StoreError::unavailable(format!(
                "{key}: event {upto} is not readable yet"
            ))));
        }
        let state = fold(&key.run_id, &known).map_err(fold_error)?;
        self.views.put(&state).await?;
        let new: Vec<EventRecord> = known
            .iter()
            .filter(|e| new.iter().any(|n| n.seq == e.seq))
            .cloned()
            .collect();
        let effects = engine::react(&state, &new, &self.registry);
        Ok(Projection {
            state: Some(state),
            effects,
        })
    }
}

/// What [`App::commit_as`] appended and what follows from it.
#[derive(Debug, Clone)]
pub(crate) struct Committed {
    /// The run after the append.
    pub state: RunState,
    /// What the appended events call for.
    pub effects: Vec<Effect>,
    /// The records appended.
    pub records: Vec<EventRecord>,
    /// Whether the stream reactor will see them.
    pub wake: bool,
}

/// What [`App::project`] did: the state it wrote to the read model (as of the newest event
/// projected) and the effects the new events call for.
#[derive(Debug, Clone)]
pub struct Projection {
    /// The run as written to the read model; `None` when the run has no events.
    pub state: Option<RunState>,
    /// What the new events call for: jobs to dispatch, a saga to start.
    pub effects: Vec<Effect>,
}

#[cfg(test)]
mod tests;
