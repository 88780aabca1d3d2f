//! Human approval: which steps wait for a person, and what a decision (or its absence)
//! means. Pure decisions over run state, like the rest of the engine.
//!
//! The invariant: a step that needs approval never reaches a worker before a
//! `StepApproved`. Which steps need it is configuration ([`ApprovalPolicy`]), applied to
//! the finished plan whatever the planner said. When such a step becomes ready, the
//! `ApprovalRequested` [`requests`] returns is appended with the very events that made it
//! ready (no crash can fall between the two), [`super::react`] dispatches nothing for it
//! but its expiry timer, and a decision is one more append at the next sequence number,
//! so of two concurrent decisions exactly one is written.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use super::{conclude, deps_completed, simulate};
use crate::domain::refs;
use crate::domain::{ApprovalDecision, Event, Plan, PlanStep, RunState, StepStatus};

/// Default time a person has to decide: 24 hours.
pub const DEFAULT_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1_000;
/// Longest comment kept with a decision, in characters.
pub const MAX_COMMENT_CHARS: usize = 1_000;

/// One `TOOL[.ACTION]` pattern: `todo.delete`, `todo` (every action), `*` (every step).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    tool: Option<String>,
    action: Option<String>,
}

/// Why a policy could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{pattern}' is not a TOOL[.ACTION] pattern (like todo.delete, todo or *)")]
pub struct PolicyError {
    /// The text that is not a valid pattern.
    pub pattern: String,
}

/// Which steps need a person's approval: `CRANE_APPROVAL`, comma-separated
/// `TOOL[.ACTION]` patterns; none by default.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApprovalPolicy {
    patterns: Vec<Pattern>,
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl ApprovalPolicy {
    /// Parse patterns (already split on commas; blanks are skipped).
    pub fn parse<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<Self, PolicyError> {
        let mut out = Vec::new();
        for raw in patterns {
            let p = raw.trim().to_ascii_lowercase();
            if p.is_empty() {
                continue;
            }
            let bad = || PolicyError {
                pattern: raw.trim().to_owned(),
            };
            let (tool, action) = match p.split_once('.') {
                Some((t, a)) => (t, Some(a)),
                None => (p.as_str(), None),
            };
            let tool = match tool {
                "*" => None,
                t if is_name(t) => Some(t.to_owned()),
                _ => return Err(bad()),
            };
            let action = match action {
                None | Some("*") => None,
                Some(a) if is_name(a) && tool.is_some() => Some(a.to_owned()),
                Some(_) => return Err(bad()),
            };
            out.push(Pattern { tool, action });
        }
        Ok(Self { patterns: out })
    }

    /// Whether no step needs approval (no patterns were given).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `step` needs approval. A step whose action is not a literal string (a
    /// reference to an earlier output) matches every action pattern of its tool: what
    /// cannot be known before it runs is held.
    pub fn requires(&self, step: &PlanStep) -> bool {
        let action = step.input.get("action");
        self.patterns.iter().any(|p| {
            let tool_matches = p.tool.as_deref().is_none_or(|t| t == step.tool);
            let action_matches = match (&p.action, action) {
                (None, _) => true,
                (Some(want), Some(Value::String(a))) => {
                    a.contains("{{") || a.trim().eq_ignore_ascii_case(want)
                }
                // Not a plain name: cannot be ruled out.
                (Some(_), Some(_)) => true,
                (Some(_), None) => false,
            };
            tool_matches && action_matches
        })
    }

    /// The plan with `requires_approval` set on exactly the steps the policy names: a
    /// planner's (or a model's) own value is overwritten either way.
    pub fn mark(&self, mut plan: Plan) -> Plan {
        for step in &mut plan.steps {
            step.requires_approval = self.requires(step);
        }
        plan
    }
}

/// Whether `step_id` needs approval and has not been granted it yet.
pub fn held(state: &RunState, step_id: &str) -> bool {
    let needs = state
        .plan
        .step(step_id)
        .is_some_and(|p| p.requires_approval);
    let approved = state
        .step(step_id)
        .and_then(|s| s.approval.as_ref())
        .is_some_and(|a| a.decision == Some(ApprovalDecision::Approved));
    needs && !approved
}

/// `ApprovalRequested` for every step that is ready to run (pending, never tried, its
/// dependencies completed, the run going) but needs approval not yet asked for. Its input
/// is shown with references filled in; a person has until `now + timeout_ms` to decide.
pub fn requests(
    state: &RunState,
    tools: &dyn super::ToolFacts,
    now: DateTime<Utc>,
    timeout_ms: u64,
) -> Vec<Event> {
    if state.status.is_finished() || state.cancel_requested {
        return Vec::new();
    }
    let expires_at =
        now + Duration::milliseconds(i64::try_from(timeout_ms).unwrap_or(i64::MAX / 4));
    state
        .plan
        .steps
        .iter()
        .filter(|p| p.requires_approval)
        .filter(|p| {
            state.step(&p.id).is_some_and(|s| {
                s.status == StepStatus::Pending && s.attempts == 0 && s.approval.is_none()
            }) && deps_completed(state, p)
        })
        .map(|p| {
            let schema = tools.input_schema(&p.tool);
            let outputs = state.referenced_outputs(&p.input);
            let lookup = |id: &str| outputs.iter().find(|(k, _)| k == id).map(|(_, v)| v);
            let input = refs::substitute(&p.input, &schema, &lookup).unwrap_or(p.input.clone());
            Event::ApprovalRequested {
                step_id: p.id.clone(),
                input,
                approver: state.tenant.clone(),
                expires_at,
            }
        })
        .collect()
}

/// A person's decision on a held step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let the step run: it is dispatched now.
    Approve,
    /// Do not run the step: it fails and the saga undoes what completed.
    Reject,
}

impl Decision {
    /// The decision as a word (`approve`, `reject`), for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
        }
    }
}

/// Why a decision cannot be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The plan has no step with this id.
    #[error("run has no step {0}")]
    NoSuchStep(String),
    /// The step was decided before (or its request expired).
    #[error("step {step} was already {decision}")]
    AlreadyDecided {
        /// The id of the step.
        step: String,
        /// How it was decided: `approved`, `rejected` or `expired`.
        decision: &'static str,
    },
    /// The step is not held for approval (it is pending, running or finished).
    #[error("step {step} is {status}, not waiting for approval")]
    NotWaiting {
        /// The id of the step.
        step: String,
        /// Its current status, as [`StepStatus::as_str`](crate::domain::StepStatus::as_str) writes
        /// it.
        status: &'static str,
    },
}

fn decision_name(d: ApprovalDecision) -> &'static str {
    match d {
        ApprovalDecision::Approved => "approved",
        ApprovalDecision::Rejected => "rejected",
        ApprovalDecision::Expired => "rejected (its approval expired)",
    }
}

/// The events of `by`'s decision on held step `step_id`: `StepApproved`, or
/// `StepRejected` + `StepFailed` and the run's failure (the saga then undoes what
/// completed). Refused unless the step is waiting for approval right now.
pub fn decide(
    state: &RunState,
    step_id: &str,
    decision: Decision,
    by: &str,
    comment: Option<String>,
) -> Result<Vec<Event>, Refusal> {
    let Some(step) = state.step(step_id) else {
        return Err(Refusal::NoSuchStep(step_id.to_owned()));
    };
    if let Some(decided) = step.approval.as_ref().and_then(|a| a.decision) {
        return Err(Refusal::AlreadyDecided {
            step: step_id.to_owned(),
            decision: decision_name(decided),
        });
    }
    if step.status != StepStatus::WaitingApproval {
        return Err(Refusal::NotWaiting {
            step: step_id.to_owned(),
            status: step.status.as_str(),
        });
    }
    Ok(match decision {
        Decision::Approve => vec![Event::StepApproved {
            step_id: step_id.to_owned(),
            by: by.to_owned(),
            comment,
        }],
        Decision::Reject => {
            let error = match &comment {
                Some(c) => format!("rejected by {by}: {c}"),
                None => format!("rejected by {by}"),
            };
            fail(
                state,
                Event::StepRejected {
                    step_id: step_id.to_owned(),
                    by: Some(by.to_owned()),
                    comment,
                    expired: false,
                },
                step_id,
                error,
            )
        }
    })
}

/// Whether held step `step_id` has waited past its expiry at `now`: then the events of
/// its rejection (`StepRejected { expired }`, `StepFailed`, the run's failure); otherwise
/// `Err(expires_at)`, when to look again. `None` if it is not waiting for approval.
pub fn expire(
    state: &RunState,
    step_id: &str,
    now: DateTime<Utc>,
) -> Option<Result<Vec<Event>, DateTime<Utc>>> {
    let step = state
        .step(step_id)
        .filter(|s| s.status == StepStatus::WaitingApproval)?;
    let expires_at = step.approval.as_ref()?.expires_at;
    if now < expires_at {
        return Some(Err(expires_at));
    }
    let error = format!(
        "approval expired: nobody decided by {}",
        expires_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    Some(Ok(fail(
        state,
        Event::StepRejected {
            step_id: step_id.to_owned(),
            by: None,
            comment: None,
            expired: true,
        },
        step_id,
        error,
    )))
}

fn fail(state: &RunState, rejected: Event, step_id: &str, error: String) -> Vec<Event> {
    let mut events = vec![
        rejected,
        Event::StepFailed {
            step_id: step_id.to_owned(),
            attempt: 0,
            error,
        },
    ];
    events.extend(conclude(&simulate(state, &events)));
    events
}

#[cfg(test)]
mod tests;
