//! Current state = fold(events). One pure function used by the projection, by
//! time-travel reads (`?at=`), by the engine and by replay in tests.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::event::{Event, EventRecord, PlannerInfo};
use super::output::Output;
use super::plan::Plan;

/// Where a run is in its life, as served by the API (`snake_case`) and filtered on in lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Created (and perhaps planned); no step has started yet.
    Pending,
    /// At least one step has started (or is waiting for approval) and the run has not ended.
    Running,
    /// Every step completed; `result` holds the last step's output.
    Completed,
    /// A step failed for good or the run could not go on; completed steps may be compensated next.
    Failed,
    /// The saga is undoing completed steps (after a failure or a cancel).
    Compensating,
    /// The saga undid every completed step after a failure.
    Compensated,
    /// A compensation failed after its retries; an operator may repair and retry it.
    CompensationFailed,
    /// Cancelled by the user, and whatever the run did was undone.
    Cancelled,
}

impl RunStatus {
    /// Every status, in life-cycle order.
    pub const ALL: [RunStatus; 8] = [
        RunStatus::Pending,
        RunStatus::Running,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Compensating,
        RunStatus::Compensated,
        RunStatus::CompensationFailed,
        RunStatus::Cancelled,
    ];

    /// The status as written in JSON and query strings (`compensation_failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Compensating => "compensating",
            RunStatus::Compensated => "compensated",
            RunStatus::CompensationFailed => "compensation_failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// The status named by `s` (as [`RunStatus::as_str`] writes it); `None` for an unknown name.
    pub fn parse(s: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// No step will run any more (compensation may still follow a failure).
    pub fn is_finished(self) -> bool {
        !matches!(self, RunStatus::Pending | RunStatus::Running)
    }
}

/// Where one step of a run is in its life, as served by the API (`snake_case`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not started yet: waiting for its dependencies, a worker, or its next retry.
    Pending,
    /// An attempt is claimed by a worker and has not finished.
    Running,
    /// The tool succeeded; `output` holds its result.
    Completed,
    /// Failed for good: a permanent error, retries or interruptions exhausted, or a rejected
    /// approval.
    Failed,
    /// Never ran: the run failed or was cancelled first.
    Skipped,
    /// Completed, then undone by the saga.
    Compensated,
    /// Completed, and its compensation failed (`compensation_error` says why).
    CompensationFailed,
    /// Held for a person's decision (`approval` says since when and until when).
    WaitingApproval,
}

impl StepStatus {
    /// The status as written in JSON (`waiting_approval`).
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Completed => "completed",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Compensated => "compensated",
            StepStatus::CompensationFailed => "compensation_failed",
            StepStatus::WaitingApproval => "waiting_approval",
        }
    }
}

/// What became of a step's approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalDecision {
    /// A person approved: the step was dispatched.
    Approved,
    /// A person rejected: the step failed and was not run.
    Rejected,
    /// Nobody decided before `expires_at`: a rejection.
    Expired,
}

/// The approval of a step that needs one: asked when it became ready, decided (or not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepApproval {
    /// When the step became ready and was held.
    pub requested_at: DateTime<Utc>,
    /// When the request expires, counting as a rejection.
    pub expires_at: DateTime<Utc>,
    /// Who may decide (the run's tenant).
    pub approver: String,
    /// The input the tool would be given, references filled in.
    pub input: Value,
    /// What was decided; `None` while the decision is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<ApprovalDecision>,
    /// When it was decided (or expired); `None` while pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<DateTime<Utc>>,
    /// Who decided; `None` while pending or when it expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// The approver's comment, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// The state of one step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    /// The step's id in the plan.
    pub id: String,
    /// The name of the tool the step calls.
    pub tool: String,
    /// Where the step is in its life.
    pub status: StepStatus,
    /// Attempts started so far.
    pub attempts: u32,
    /// The tool's output once the step completed, referenced by later steps; `None` before.
    /// Kept as its JSON text and shared: the state of a run is copied at every decision,
    /// and an output can be large (a list of todos); a copy of the state shares it.
    pub output: Option<Output>,
    /// The latest error (a failed or interrupted attempt); cleared when the step completes.
    pub error: Option<String>,
    /// When the first attempt started; `None` if none has.
    pub started_at: Option<DateTime<Utc>>,
    /// When the step completed or failed for good; `None` until then.
    pub finished_at: Option<DateTime<Utc>>,
    /// While running: when the current attempt started and when its claim expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_started_at: Option<DateTime<Utc>>,
    /// When the current attempt's claim (its lease) expires; `None` when no attempt is running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<DateTime<Utc>>,
    /// While waiting to retry: when the next attempt is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Why its compensation failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation_error: Option<String>,
    /// Attempts whose worker died before finishing (they do not use up retries).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interruptions: u32,
    /// While the tool's breaker keeps the step waiting: why, since when, and until when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Waiting>,
    /// For a step that needs approval, once it was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<StepApproval>,
}

/// A step held back by its tool's circuit breaker, without using up an attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Waiting {
    /// Why the breaker refused the call (its state and tool).
    pub reason: String,
    /// The first refusal since the step last started (the step deadline counts from here).
    pub since: DateTime<Utc>,
    /// When it asks the breaker again.
    pub until: DateTime<Utc>,
    /// Refusals recorded since the step last started (one per change of reason).
    pub deferrals: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl StepState {
    /// Attempts that ran the tool and failed or are running: the ones the retry budget
    /// counts (interrupted attempts are not among them).
    pub fn tool_attempts(&self) -> u32 {
        self.attempts.saturating_sub(self.interruptions)
    }
}

/// The state of a run, as served by the API and kept in the runs view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// The run's id, a UUID v7 so ids sort by creation time.
    pub run_id: String,
    /// The tenant that owns the run.
    pub tenant: String,
    /// The prompt the run was created from.
    pub prompt: String,
    /// Where the run is in its life.
    pub status: RunStatus,
    /// The correlation id of the request that created the run.
    pub correlation_id: String,
    /// Which planner made the plan; `None` until the plan is generated.
    pub planner: Option<PlannerInfo>,
    /// The plan; empty until it is generated. Shared with the event that made it: a run's
    /// state is copied at every decision, and its plan never changes once made.
    pub plan: Arc<Plan>,
    /// One entry per plan step, in plan order; empty until the plan is generated.
    pub steps: Vec<StepState>,
    /// The run's result (the last step's output) once it completed; `None` otherwise.
    pub result: Option<Value>,
    /// Why the run failed, plus any compensation failure; `None` when nothing failed.
    pub error: Option<String>,
    /// The user asked to cancel: nothing new is scheduled.
    #[serde(default)]
    pub cancel_requested: bool,
    /// Step ids in the order they completed (the saga undoes them in reverse).
    #[serde(default)]
    pub completion_order: Vec<String>,
    /// Steps held for a person's decision right now, in plan order (empty when none).
    #[serde(default)]
    pub awaiting_approval: Vec<String>,
    /// When the run was created (its `RunCreated` event).
    pub created_at: DateTime<Utc>,
    /// When the last event folded in happened.
    pub updated_at: DateTime<Utc>,
    /// When the first step started or was held for approval; `None` before.
    pub started_at: Option<DateTime<Utc>>,
    /// When the run reached its current end state; `None` while it runs or compensates.
    pub finished_at: Option<DateTime<Utc>>,
    /// Sequence number of the last event folded in.
    pub last_seq: u64,
}

/// Why a log could not be folded into a run's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FoldError {
    /// The log has no events.
    #[error("no events")]
    Empty,
    /// The log does not start with `RunCreated` (the type of the event it starts with).
    #[error("the first event is {0}, not RunCreated")]
    NotCreated(&'static str),
    /// An event's sequence number is not one more than the last one's.
    #[error("event {got} follows {last}: the log has a gap or is out of order")]
    OutOfOrder {
        /// The sequence number of the last event folded in.
        last: u64,
        /// The sequence number that came next instead of `last + 1`.
        got: u64,
    },
}

/// Fold a run's whole log into its state.
pub fn fold(run_id: &str, events: &[EventRecord]) -> Result<RunState, FoldError> {
    let (first, rest) = events.split_first().ok_or(FoldError::Empty)?;
    let mut state = RunState::created(run_id, first)?;
    for rec in rest {
        state.apply(rec)?;
    }
    Ok(state)
}

/// The state as of `at`: the fold of the events that happened at or before it.
pub fn fold_until(
    run_id: &str,
    events: &[EventRecord],
    at: DateTime<Utc>,
) -> Result<RunState, FoldError> {
    let n = events.iter().take_while(|e| e.at <= at).count();
    fold(run_id, &events[..n])
}

impl RunState {
    fn created(run_id: &str, rec: &EventRecord) -> Result<RunState, FoldError> {
        let Event::RunCreated {
            tenant,
            prompt,
            correlation_id,
            ..
        } = &rec.event
        else {
            return Err(FoldError::NotCreated(rec.event.type_name()));
        };
        Ok(RunState {
            run_id: run_id.to_owned(),
            tenant: tenant.clone(),
            prompt: prompt.clone(),
            status: RunStatus::Pending,
            correlation_id: correlation_id.clone(),
            planner: None,
            plan: Arc::default(),
            steps: Vec::new(),
            result: None,
            error: None,
            cancel_requested: false,
            completion_order: Vec::new(),
            awaiting_approval: Vec::new(),
            created_at: rec.at,
            updated_at: rec.at,
            started_at: None,
            finished_at: None,
            last_seq: rec.seq,
        })
    }

    /// The state of the step with this id; `None` if the plan has no such step.
    pub fn step(&self, id: &str) -> Option<&StepState> {
        self.steps.iter().find(|s| s.id == id)
    }

    fn step_mut(&mut self, id: &str) -> Option<&mut StepState> {
        self.steps.iter_mut().find(|s| s.id == id)
    }

    /// Apply one event. Events must arrive in sequence order.
    pub fn apply(&mut self, rec: &EventRecord) -> Result<(), FoldError> {
        if rec.seq != self.last_seq + 1 {
            return Err(FoldError::OutOfOrder {
                last: self.last_seq,
                got: rec.seq,
            });
        }
        self.last_seq = rec.seq;
        self.updated_at = rec.at;
        let at = rec.at;
        match &rec.event {
            Event::RunCreated { .. } => {}
            Event::PlanGenerated { planner, plan } => {
                self.planner = Some(planner.clone());
                self.plan = plan.clone();
                self.steps = plan
                    .steps
                    .iter()
                    .map(|s| StepState {
                        id: s.id.clone(),
                        tool: s.tool.clone(),
                        status: StepStatus::Pending,
                        attempts: 0,
                        output: None,
                        error: None,
                        started_at: None,
                        finished_at: None,
                        attempt_started_at: None,
                        lease_until: None,
                        next_attempt_at: None,
                        compensation_error: None,
                        interruptions: 0,
                        waiting: None,
                        approval: None,
                    })
                    .collect();
            }
            Event::StepStarted {
                step_id,
                attempt,
                lease_ms,
            } => {
                if self.status == RunStatus::Pending {
                    self.status = RunStatus::Running;
                    self.started_at = Some(at);
                }
                if let Some(step) = self.step_mut(step_id) {
                    step.status = StepStatus::Running;
                    step.attempts = *attempt;
                    step.started_at.get_or_insert(at);
                    step.attempt_started_at = Some(at);
                    step.lease_until = Some(at + millis(*lease_ms));
                    step.next_attempt_at = None;
                    step.waiting = None;
                }
            }
            Event::StepCompleted {
                step_id, output, ..
            } => {
                if let Some(step) = self.step_mut(step_id) {
                    step.status = StepStatus::Completed;
                    step.output = Some(output.clone());
                    step.error = None;
                    step.finished_at = Some(at);
                    step.lease_until = None;
                }
                self.completion_order.push(step_id.clone());
            }
            Event::StepAttemptFailed {
                step_id,
                error,
                retry_in_ms,
                ..
            } => {
                if let Some(step) = self.step_mut(step_id) {
                    step.error = Some(error.clone());
                    step.lease_until = None;
                    if let Some(delay) = retry_in_ms {
                        step.status = StepStatus::Pending;
                        step.next_attempt_at = Some(at + millis(*delay));
                    }
                }
            }
            Event::StepFailed { step_id, error, .. } => {
                if let Some(step) = self.step_mut(step_id) {
                    step.status = StepStatus::Failed;
                    step.error = Some(error.clone());
                    step.finished_at = Some(at);
                    step.lease_until = None;
                    step.next_attempt_at = None;
                    step.waiting = None;
                }
                self.note_awaiting();
            }
            Event::StepInterrupted { step_id, error, .. } => {
                if let Some(step) = self.step_mut(step_id) {
                    step.status = StepStatus::Pending;
                    step.error = Some(error.clone());
                    step.interruptions += 1;
                    step.lease_until = None;
                    step.next_attempt_at = Some(at);
                }
            }
            Event::StepDeferred {
                step_id,
                reason,
                until,
                ..
            } => {
                if let Some(step) = self.step_mut(step_id) {
                    let (since, deferrals) = match &step.waiting {
                        Some(w) => (w.since, w.deferrals + 1),
                        None => (at, 1),
                    };
                    step.waiting = Some(Waiting {
                        reason: reason.clone(),
                        since,
                        until: *until,
                        deferrals,
                    });
                }
            }
            Event::RunCompleted { result } => {
                self.status = RunStatus::Completed;
                self.result = Some(result.clone());
                self.finished_at = Some(at);
            }
            Event::RunFailed { error, .. } => {
                self.status = RunStatus::Failed;
                self.error = Some(error.clone());
                self.finished_at = Some(at);
                self.skip_pending();
            }
            Event::CancelRequested { .. } => {
                self.cancel_requested = true;
                self.skip_pending();
            }
            Event::CompensationStarted { .. } => {
                self.status = RunStatus::Compensating;
                self.finished_at = None;
            }
            Event::StepCompensated { step_id, .. } => {
                if let Some(step) = self.step_mut(step_id) {
                    step.status = StepStatus::Compensated;
                }
            }
            Event::StepCompensationFailed { step_id, error, .. } => {
                if let Some(step) = self.step_mut(step_id) {
                    step.status = StepStatus::CompensationFailed;
                    step.compensation_error = Some(error.clone());
                }
            }
            Event::RunCompensated {} => {
                self.status = if self.cancel_requested {
                    RunStatus::Cancelled
                } else {
                    RunStatus::Compensated
                };
                self.finished_at = Some(at);
            }
            Event::RunCompensationFailed { step_id, error } => {
                self.status = RunStatus::CompensationFailed;
                let msg = format!("{COMPENSATION_FAILED_PREFIX}{step_id} failed: {error}");
                self.error = Some(match self.error.take() {
                    Some(e) => format!("{e}; {msg}"),
                    None => msg,
                });
                self.finished_at = Some(at);
            }
            Event::RunCancelled {} => {
                self.status = RunStatus::Cancelled;
                self.finished_at = Some(at);
                self.skip_pending();
            }
            Event::ApprovalRequested {
                step_id,
                input,
                approver,
                expires_at,
            } => {
                if self.status == RunStatus::Pending {
                    self.status = RunStatus::Running;
                    self.started_at = Some(at);
                }
                if let Some(step) = self
                    .step_mut(step_id)
                    .filter(|s| s.status == StepStatus::Pending)
                {
                    step.status = StepStatus::WaitingApproval;
                    step.approval = Some(StepApproval {
                        requested_at: at,
                        expires_at: *expires_at,
                        approver: approver.clone(),
                        input: input.clone(),
                        decision: None,
                        decided_at: None,
                        decided_by: None,
                        comment: None,
                    });
                }
                self.note_awaiting();
            }
            Event::StepApproved {
                step_id,
                by,
                comment,
            } => {
                if let Some(step) = self
                    .step_mut(step_id)
                    .filter(|s| s.status == StepStatus::WaitingApproval)
                {
                    step.status = StepStatus::Pending;
                    if let Some(a) = &mut step.approval {
                        a.decision = Some(ApprovalDecision::Approved);
                        a.decided_at = Some(at);
                        a.decided_by = Some(by.clone());
                        a.comment = comment.clone();
                    }
                }
                self.note_awaiting();
            }
            Event::StepRejected {
                step_id,
                by,
                comment,
                expired,
            } => {
                if let Some(step) = self
                    .step_mut(step_id)
                    .filter(|s| s.status == StepStatus::WaitingApproval)
                {
                    // The StepFailed that follows says the same; a log cut between the two
                    // (a time-travel read) still shows the step as decided.
                    step.status = StepStatus::Failed;
                    step.finished_at = Some(at);
                    if let Some(a) = &mut step.approval {
                        a.decision = Some(if *expired {
                            ApprovalDecision::Expired
                        } else {
                            ApprovalDecision::Rejected
                        });
                        a.decided_at = Some(at);
                        a.decided_by = by.clone();
                        a.comment = comment.clone();
                    }
                }
                self.note_awaiting();
            }
            Event::CompensationRetryRequested { .. } => {
                // A failed compensation is tried again: its steps are back to undo, and
                // the run is compensating (again). Any other status is left to the saga.
                if self.status == RunStatus::CompensationFailed {
                    self.status = RunStatus::Compensating;
                    self.finished_at = None;
                    for step in &mut self.steps {
                        if step.status == StepStatus::CompensationFailed {
                            step.status = StepStatus::Completed;
                            step.compensation_error = None;
                        }
                    }
                    self.error = self.error.take().and_then(|e| {
                        let kept = match e.find(COMPENSATION_FAILED_PREFIX) {
                            Some(i) => e[..i].trim_end_matches("; ").to_owned(),
                            None => e,
                        };
                        (!kept.is_empty()).then_some(kept)
                    });
                }
            }
        }
        Ok(())
    }

    fn skip_pending(&mut self) {
        for step in &mut self.steps {
            if matches!(
                step.status,
                StepStatus::Pending | StepStatus::WaitingApproval
            ) {
                step.status = StepStatus::Skipped;
                step.next_attempt_at = None;
                step.waiting = None;
            }
        }
        self.note_awaiting();
    }

    /// Keep `awaiting_approval` in step with the steps' statuses.
    fn note_awaiting(&mut self) {
        self.awaiting_approval = self
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::WaitingApproval)
            .map(|s| s.id.clone())
            .collect();
    }

    /// Outputs of completed steps, by id.
    pub fn outputs(&self) -> impl Iterator<Item = (&str, &Output)> {
        self.steps
            .iter()
            .filter_map(|s| s.output.as_ref().map(|o| (s.id.as_str(), o)))
    }

    /// The outputs `input` references (see [`super::refs`]) as JSON values, by step id: the
    /// ones reference substitution needs, parsed, and no others.
    pub fn referenced_outputs(&self, input: &Value) -> Vec<(String, Value)> {
        super::refs::references(input)
            .into_iter()
            .filter_map(|id| {
                let output = self.step(&id)?.output.as_ref()?.value();
                Some((id, output))
            })
            .collect()
    }
}

/// How a failed compensation reads in a run's `error` (after the failure that started the
/// saga, if any): `compensation of step <id> failed: <error>`.
const COMPENSATION_FAILED_PREFIX: &str = "compensation of step ";

fn millis(ms: u64) -> Duration {
    Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX / 2))
}

#[cfg(test)]
mod tests;
