//! Pure decisions over run state: what is ready, what a claim or an outcome means, what
//! must happen because of new events. The same functions drive the local runtime (whose
//! store writes the effects to an outbox in the event's transaction) and the cloud (whose
//! stream reactor computes the same effects from the DynamoDB Stream).

pub mod approval;
pub mod breaker;
pub mod dag;
pub mod retry;
pub mod saga;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::domain::{
    Effect, ErrorKind, Event, EventRecord, Output, RunKey, RunState, RunStatus, StepJob,
    StepStatus, ToolError,
};

pub use retry::RetryPolicy;

/// What the engine needs to know about a plan's tools, and nothing more. The tool
/// registry implements it; the engine never sees the tools themselves.
pub trait ToolFacts {
    /// Whether a completed call of `tool` with `input` has something to undo.
    fn compensable(&self, tool: &str, input: &Value) -> bool;

    /// The JSON Schema of `tool`'s input, `Value::Null` for a tool not offered.
    fn input_schema(&self, tool: &str) -> Value;
}

/// Largest step output stored in a run (its JSON text, in bytes). A larger output is
/// replaced by [`cap_output`]'s truncation marker, so no tool can bloat the log and views.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// `output` if its JSON text fits in `max` bytes; otherwise an explicit marker:
/// `{"truncated": true, "original_bytes": N, "preview": "<the first bytes of the JSON>"}`,
/// itself within `max`.
pub fn cap_output(output: Output, max: usize) -> Output {
    if output.len() <= max {
        return output;
    }
    let text = output.json();
    // Room for the marker's own keys and the escaping of the preview.
    let budget = max.saturating_sub(256) / 2;
    let mut end = budget.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Output::from_value(&serde_json::json!({
        "truncated": true,
        "original_bytes": text.len(),
        "preview": &text[..end],
    }))
}

/// Steps that may start now: pending, never tried, every dependency completed, not held
/// for approval, in a run that is still going and not being cancelled.
pub fn ready_steps(state: &RunState) -> Vec<&str> {
    if state.status.is_finished() || state.cancel_requested {
        return Vec::new();
    }
    state
        .plan
        .steps
        .iter()
        .filter(|p| {
            state
                .step(&p.id)
                .is_some_and(|s| s.status == StepStatus::Pending && s.attempts == 0)
                && deps_completed(state, p)
                && !approval::held(state, &p.id)
        })
        .map(|p| p.id.as_str())
        .collect()
}

/// Whether every step `p` depends on has completed.
pub(crate) fn deps_completed(state: &RunState, p: &crate::domain::PlanStep) -> bool {
    p.depends_on
        .iter()
        .all(|d| state.step(d).map(|s| s.status) == Some(StepStatus::Completed))
}

fn job(state: &RunState, step_id: &str, attempt: u32) -> StepJob {
    StepJob {
        tenant: state.tenant.clone(),
        run_id: state.run_id.clone(),
        step_id: step_id.to_owned(),
        attempt,
        correlation_id: state.correlation_id.clone(),
    }
}

/// A job for every step of the run that is not finished: what a worker resumes when the
/// holder of a run's jobs stopped before sending or running what came next (a crashed
/// step worker's message, delivered again). [`claim`] decides what each job means now: a
/// ready step starts, a retry or another worker's lease waits, an expired lease is
/// recorded as lost, an approval's expiry is recorded when due; the rest are skipped.
pub fn resume_jobs(state: &RunState) -> Vec<StepJob> {
    if state.status.is_finished() || state.cancel_requested {
        return Vec::new();
    }
    state
        .steps
        .iter()
        .filter_map(|s| {
            let attempt = match s.status {
                StepStatus::Pending => s.attempts + 1,
                StepStatus::Running => s.attempts,
                StepStatus::WaitingApproval => 1,
                _ => return None,
            };
            Some(job(state, &s.id, attempt))
        })
        .collect()
}

/// Whether the saga must run now: the run failed, or a cancel was requested and nothing is
/// running any more.
fn needs_compensation(state: &RunState) -> bool {
    let idle = !state.steps.iter().any(|s| s.status == StepStatus::Running);
    match state.status {
        RunStatus::Failed => true,
        RunStatus::Pending | RunStatus::Running => state.cancel_requested && idle,
        _ => false,
    }
}

/// The reaction to `new` events, given the state after them. Deterministic, so computing
/// it twice (a replayed stream batch) yields the same effects, which are idempotent.
pub fn react(state: &RunState, new: &[EventRecord], tools: &dyn ToolFacts) -> Vec<Effect> {
    let mut effects = Vec::new();
    let mut push = |e: Effect| {
        if !effects.contains(&e) {
            effects.push(e);
        }
    };
    for rec in new {
        match &rec.event {
            Event::PlanGenerated { .. } => {
                for id in ready_steps(state) {
                    push(Effect::Dispatch {
                        job: job(state, id, 1),
                        delay_ms: 0,
                    });
                }
            }
            Event::StepCompleted { step_id, .. } => {
                for id in ready_steps(state) {
                    let unlocked = state
                        .plan
                        .step(id)
                        .is_some_and(|p| p.depends_on.iter().any(|d| d == step_id));
                    if unlocked {
                        push(Effect::Dispatch {
                            job: job(state, id, 1),
                            delay_ms: 0,
                        });
                    }
                }
            }
            Event::StepAttemptFailed {
                step_id,
                attempt,
                retry_in_ms: Some(delay),
                ..
            } => {
                let still_waiting = state
                    .step(step_id)
                    .is_some_and(|s| s.status == StepStatus::Pending && s.attempts == *attempt);
                if still_waiting && !state.status.is_finished() && !state.cancel_requested {
                    push(Effect::Dispatch {
                        job: job(state, step_id, attempt + 1),
                        delay_ms: *delay,
                    });
                }
            }
            // A held step is not dispatched: its job is its expiry timer, due when the
            // approval expires (a worker then records the expiry, or runs the step if it
            // was approved meanwhile; SQS re-arms it every 15 minutes until then).
            Event::ApprovalRequested {
                step_id,
                expires_at,
                ..
            } => {
                let waiting = state
                    .step(step_id)
                    .is_some_and(|s| s.status == StepStatus::WaitingApproval);
                if waiting && !state.status.is_finished() && !state.cancel_requested {
                    let delay = (*expires_at - rec.at).num_milliseconds().max(0);
                    push(Effect::Dispatch {
                        job: job(state, step_id, 1),
                        delay_ms: u64::try_from(delay).unwrap_or(0),
                    });
                }
            }
            Event::StepApproved { step_id, .. }
                if ready_steps(state).contains(&step_id.as_str()) =>
            {
                push(Effect::Dispatch {
                    job: job(state, step_id, 1),
                    delay_ms: 0,
                });
            }
            Event::CompensationRetryRequested { attempt, .. } => {
                push(Effect::Compensate {
                    key: RunKey::new(&state.tenant, &state.run_id),
                    correlation_id: state.correlation_id.clone(),
                    attempt: *attempt,
                });
            }
            _ => {}
        }
    }
    let triggers_saga = new.iter().any(|r| {
        matches!(
            r.event,
            Event::RunFailed { .. }
                | Event::CancelRequested { .. }
                | Event::StepCompleted { .. }
                | Event::StepFailed { .. }
                | Event::StepAttemptFailed { .. }
        )
    });
    if triggers_saga && needs_compensation(state) {
        let wants = state.cancel_requested || !saga::compensation_order(state, tools).is_empty();
        if wants {
            push(Effect::Compensate {
                key: RunKey::new(&state.tenant, &state.run_id),
                correlation_id: state.correlation_id.clone(),
                attempt: 1,
            });
        }
    }
    effects
}

/// Whether the stream reactor must see an append: it holds a new run (the reactor writes
/// the run's first view and sends its first level), settles the run or moves it between
/// settled statuses (the view, which lists runs by status, must follow), calls for a saga,
/// or calls for step jobs that the appender will not send itself (`sends_jobs`: a step
/// worker sends the jobs its own appends call for). A run going from pending to running
/// does not count: both are "in flight", and a reader of a run in flight folds its log
/// (the view keeps the settled statuses). Anything else (a claim, an outcome whose next
/// level the worker runs) is left out of the reactor's stream by its filter, so the happy
/// path costs the reactor two invocations (the run's creation and its end), not one per
/// step.
pub fn wakes_reactor(
    before: RunStatus,
    after: &RunState,
    new: &[EventRecord],
    effects: &[Effect],
    sends_jobs: bool,
) -> bool {
    new.iter()
        .any(|r| matches!(r.event, Event::RunCreated { .. }))
        || (before != after.status && (before.is_finished() || after.status.is_finished()))
        || effects.iter().any(|e| match e {
            Effect::Compensate { .. } => true,
            Effect::Dispatch { .. } => !sends_jobs,
        })
}

/// What a worker holding a job should do.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Append these events (ending with `StepStarted` for `attempt`), then run the tool.
    Start {
        /// The attempt being started, from 1.
        attempt: u32,
        /// The events to append first, the last one `StepStarted`.
        events: Vec<Event>,
    },
    /// Append these events (the lost attempt was the last one); nothing to run.
    Record(Vec<Event>),
    /// Nothing to do: the job is a duplicate or stale. Acknowledge it.
    Skip(String),
    /// Not yet (a retry is not due, or another worker holds the step): try again then.
    Later(DateTime<Utc>),
}

/// Decide whether the job for `step_id` may run now. A worker claims an attempt by
/// appending `StepStarted` at the next sequence number, so two workers can never both
/// claim the same attempt; an attempt whose lease expired is recorded as lost and retried.
/// Leases taken before `void_before` count as expired: a restarted local runtime knows no
/// worker of its previous life is still running, so it resumes those steps at once.
pub fn claim(
    state: &RunState,
    step_id: &str,
    job_attempt: u32,
    now: DateTime<Utc>,
    policy: &RetryPolicy,
    lease_ms: u64,
    void_before: Option<DateTime<Utc>>,
) -> Claim {
    if state.status.is_finished() {
        return Claim::Skip(format!("run is {}", state.status.as_str()));
    }
    if state.cancel_requested {
        return Claim::Skip("run is being cancelled".into());
    }
    let Some(step) = state.step(step_id) else {
        return Claim::Skip(format!("run has no step {step_id}"));
    };
    let start = |attempt: u32, mut events: Vec<Event>| {
        events.push(Event::StepStarted {
            step_id: step_id.to_owned(),
            attempt,
            lease_ms,
        });
        Claim::Start { attempt, events }
    };
    match step.status {
        StepStatus::WaitingApproval => match approval::expire(state, step_id, now) {
            Some(Ok(events)) => Claim::Record(events),
            Some(Err(expires_at)) => Claim::Later(expires_at),
            None => Claim::Skip("step waits for approval without an expiry".into()),
        },
        StepStatus::Pending => {
            if job_attempt <= step.attempts {
                return Claim::Skip(format!("attempt {job_attempt} already ran"));
            }
            if approval::held(state, step_id) {
                return Claim::Skip("step waits for approval".into());
            }
            let deps_done = state
                .plan
                .step(step_id)
                .is_some_and(|p| deps_completed(state, p));
            if !deps_done {
                return Claim::Skip("dependencies have not completed".into());
            }
            let waiting_until = step.waiting.as_ref().map(|w| w.until);
            match step.next_attempt_at.max(waiting_until) {
                Some(due) if due > now => Claim::Later(due),
                _ => start(step.attempts + 1, Vec::new()),
            }
        }
        StepStatus::Running => match step.lease_until {
            Some(until)
                if until > now
                    && !matches!((void_before, step.attempt_started_at), (Some(v), Some(s)) if s < v) =>
            {
                Claim::Later(until)
            }
            _ => {
                let lost = step.attempts;
                let error = format!(
                    "attempt {lost} was interrupted: its worker stopped before finishing (lease expired)"
                );
                if step.interruptions < policy.max_interruptions {
                    let interrupted = Event::StepInterrupted {
                        step_id: step_id.to_owned(),
                        attempt: lost,
                        error,
                    };
                    start(lost + 1, vec![interrupted])
                } else {
                    let error = format!(
                        "{error}; the step was interrupted {} times, the limit",
                        step.interruptions + 1
                    );
                    let events = give_up(state, step_id, lost, error, ErrorKind::Transient, 0);
                    Claim::Record(events)
                }
            }
        },
        other => Claim::Skip(format!("step is already {}", other.as_str())),
    }
}

/// Why an outcome was not recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale(pub String);

/// The events recording the outcome of attempt `attempt` of `step_id`, followed by the
/// run's conclusion if this outcome ends it. `sample` in `[0, 1)` picks the jitter.
/// `Err(Stale)` if the attempt is no longer the step's current one (someone took over).
/// The output is shared with the event, not copied (a caller that may decide again after a
/// conflict keeps it).
pub fn outcome(
    state: &RunState,
    step_id: &str,
    attempt: u32,
    result: Result<Output, ToolError>,
    duration_ms: u64,
    policy: &RetryPolicy,
    sample: f64,
) -> Result<Vec<Event>, Stale> {
    let Some(step) = state
        .step(step_id)
        .filter(|s| s.status == StepStatus::Running && s.attempts == attempt)
    else {
        return Err(Stale(format!(
            "attempt {attempt} of step {step_id} is no longer current"
        )));
    };
    // Interrupted attempts do not count against the retry budget or lengthen the backoff.
    let tried = step.tool_attempts();
    let step_id_owned = step_id.to_owned();
    let events = match result {
        Ok(output) => {
            let mut events = vec![Event::StepCompleted {
                step_id: step_id_owned,
                attempt,
                output: cap_output(output, MAX_OUTPUT_BYTES),
                duration_ms,
            }];
            events.extend(conclude(&simulate(state, &events)));
            events
        }
        Err(err) => {
            let retry = err.kind == ErrorKind::Transient
                && policy.allows_retry(tried)
                && !state.cancel_requested;
            if retry {
                vec![Event::StepAttemptFailed {
                    step_id: step_id_owned,
                    attempt,
                    error: err.message,
                    kind: err.kind,
                    duration_ms,
                    retry_in_ms: Some(policy.delay_ms(tried, sample)),
                }]
            } else {
                give_up(state, step_id, attempt, err.message, err.kind, duration_ms)
            }
        }
    };
    Ok(events)
}

/// The last attempt failed: record it, fail the step and conclude the run.
fn give_up(
    state: &RunState,
    step_id: &str,
    attempt: u32,
    error: String,
    kind: ErrorKind,
    duration_ms: u64,
) -> Vec<Event> {
    let mut events = vec![
        Event::StepAttemptFailed {
            step_id: step_id.to_owned(),
            attempt,
            error: error.clone(),
            kind,
            duration_ms,
            retry_in_ms: None,
        },
        Event::StepFailed {
            step_id: step_id.to_owned(),
            attempt,
            error,
        },
    ];
    events.extend(conclude(&simulate(state, &events)));
    events
}

/// The events that end a run whose steps are all settled: `RunCompleted` with the last
/// step's output when every step completed, `RunFailed` when one failed. Nothing once a
/// cancel was accepted: such a run never ends `completed` or `failed`; the saga undoes
/// what completed and ends it `cancelled` (or `compensation_failed`).
pub fn conclude(state: &RunState) -> Vec<Event> {
    if state.status.is_finished() || state.steps.is_empty() || state.cancel_requested {
        return Vec::new();
    }
    if let Some(failed) = state.steps.iter().find(|s| s.status == StepStatus::Failed) {
        return vec![Event::RunFailed {
            error: format!(
                "step {} ({}) failed: {}",
                failed.id,
                failed.tool,
                failed.error.as_deref().unwrap_or("unknown error")
            ),
            step_id: Some(failed.id.clone()),
        }];
    }
    if state
        .steps
        .iter()
        .all(|s| s.status == StepStatus::Completed)
    {
        let result = state
            .plan
            .result_step()
            .and_then(|p| state.step(&p.id))
            .and_then(|s| s.output.as_ref())
            .map_or(Value::Null, Output::value);
        return vec![Event::RunCompleted { result }];
    }
    Vec::new()
}

/// What to do when the tool's circuit breaker refused the call that would have started
/// attempt `attempt` of `step_id`.
#[derive(Debug, Clone, PartialEq)]
pub enum Deferral {
    /// Record these events (a `StepDeferred`) and ask again at `until`. No attempt is used.
    Wait {
        /// The events to append, ending with the `StepDeferred`.
        events: Vec<Event>,
        /// When to ask the breaker again (the job is redelivered then).
        until: DateTime<Utc>,
    },
    /// The step has waited past its deadline: record its failure (and the run's).
    GiveUp(Vec<Event>),
}

/// Decide how a step refused by its breaker waits: until the breaker may admit it
/// (`until`), but never past `deadline_ms` after the first refusal since the step last
/// started, when it fails with "`<reason>` since `<time>`". A refusal is recorded once per
/// reason: while the step already waits for the same reason, nothing new is written.
pub fn defer(
    state: &RunState,
    step_id: &str,
    attempt: u32,
    reason: &str,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
    deadline_ms: u64,
) -> Deferral {
    let step = state.step(step_id);
    let since = step
        .and_then(|s| s.waiting.as_ref())
        .map_or(now, |w| w.since);
    let deadline =
        since + chrono::Duration::milliseconds(i64::try_from(deadline_ms).unwrap_or(i64::MAX / 4));
    if now >= deadline {
        let error = format!(
            "{reason} since {}; gave up after the step deadline of {deadline_ms} ms",
            since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
        let mut events = vec![Event::StepFailed {
            step_id: step_id.to_owned(),
            attempt: step.map_or(0, |s| s.attempts),
            error,
        }];
        events.extend(conclude(&simulate(state, &events)));
        return Deferral::GiveUp(events);
    }
    let until = until.min(deadline).max(now);
    let same = step
        .and_then(|s| s.waiting.as_ref())
        .is_some_and(|w| w.reason == reason);
    if same {
        // Already recorded as waiting for this reason: ask again later without growing
        // the log (the deadline still counts from the first refusal).
        return Deferral::Wait {
            events: Vec::new(),
            until,
        };
    }
    Deferral::Wait {
        events: vec![Event::StepDeferred {
            step_id: step_id.to_owned(),
            attempt,
            reason: reason.to_owned(),
            until,
        }],
        until,
    }
}

/// `state` with `events` applied (numbered after its last event), for looking ahead.
pub fn simulate(state: &RunState, events: &[Event]) -> RunState {
    let mut ahead = Lookahead::new(state);
    ahead.at(events);
    ahead.sim
}

/// A run as it would be after a growing list of events: [`simulate`] of them, kept up to
/// date as events are added, without cloning the whole run (with every step's output) for
/// each look.
pub struct Lookahead {
    sim: RunState,
    at: DateTime<Utc>,
    applied: usize,
}

impl Lookahead {
    /// Looking ahead from `state`, with no events yet.
    pub fn new(state: &RunState) -> Self {
        Self {
            sim: state.clone(),
            at: state.updated_at,
            applied: 0,
        }
    }

    /// The run after `events`, of which the ones seen before must be unchanged.
    pub fn at(&mut self, events: &[Event]) -> &RunState {
        if let Some(new) = events.get(self.applied..).filter(|n| !n.is_empty()) {
            for rec in EventRecord::batch(self.sim.last_seq, self.at, new.to_vec()) {
                // Numbered consecutively from last_seq, so apply cannot fail.
                let _ = self.sim.apply(&rec);
            }
            self.applied = events.len();
        }
        &self.sim
    }
}

/// Number `events` after the state's last event, each at its own instant: the first at
/// `now` (or a microsecond after the run's last event, if the clock says otherwise), the
/// next a microsecond later each. So a run's event times strictly increase even when one
/// append holds several events (a level's outcomes), and `GET /runs/{id}?at=` an event's
/// time shows the run as of exactly that event.
pub fn records(state: &RunState, now: DateTime<Utc>, events: Vec<Event>) -> Vec<EventRecord> {
    let first = if state.last_seq == 0 {
        now
    } else {
        now.max(state.updated_at + chrono::Duration::microseconds(1))
    };
    events
        .into_iter()
        .zip(state.last_seq + 1..)
        .zip(0..)
        .map(|((event, seq), i)| {
            EventRecord::new(seq, first + chrono::Duration::microseconds(i), event)
        })
        .collect()
}

#[cfg(test)]
mod tests;
