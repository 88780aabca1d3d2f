//! The saga: undo a failed or cancelled run's completed steps in reverse completion order.
//!
//! Split into three idempotent pieces so the cloud's Step Functions state machine and the
//! local runtime drive the same code: [`App::begin_compensation`],
//! [`App::compensate_step`] (once per step, retried by the caller), and
//! [`App::finish_compensation`]. Locally [`App::compensate_run`] strings them together
//! with the same retry policy the state machine declares.

use rand::Rng;
use serde::{Deserialize, Serialize};
use tracing::{info, instrument, warn};

use super::{App, AppError, JobResult, Refusal, MAX_CONFLICTS};
use crate::domain::{Event, Output, RunKey, RunState, RunStatus, StepStatus, ToolError};
use crate::engine::saga;
use crate::ports::StoreError;
use crate::tools::ToolContext;

/// The steps a saga must compensate, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompensationPlan {
    /// Ids of the completed steps still to undo, most recently completed first.
    pub steps: Vec<String>,
}

fn idle(state: &RunState) -> bool {
    !state.steps.iter().any(|s| s.status == StepStatus::Running)
}

impl App {
    /// Apply `decide` to the run's current state and commit what it returns, retrying
    /// after lost races. `None` from `decide` means nothing to write.
    pub(crate) async fn update<F>(
        &self,
        key: &RunKey,
        decide: F,
    ) -> Result<Option<RunState>, AppError>
    where
        F: Fn(&RunState) -> Vec<Event>,
    {
        for _ in 0..MAX_CONFLICTS {
            let Some(state) = self.load_state(key).await? else {
                return Err(AppError::NotFound(format!("run {} not found", key.run_id)));
            };
            let events = decide(&state);
            if events.is_empty() {
                return Ok(Some(state));
            }
            match self.commit(&state, events).await {
                Ok(after) => return Ok(Some(after)),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AppError::Store(StoreError::unavailable(
            "too much contention on this run",
        )))
    }

    /// Start compensating (if the run needs it) and return the steps still to undo, in
    /// order. `None` when there is nothing to do (the run is not failed or cancelled, or it
    /// was cancelled with nothing to undo, which ends it `cancelled` here).
    #[instrument(skip(self), fields(tenant = %key.tenant, run_id = %key.run_id))]
    pub async fn begin_compensation(
        &self,
        key: &RunKey,
    ) -> Result<Option<CompensationPlan>, AppError> {
        let registry = &self.registry;
        let state = self
            .update(key, |s| {
                let cancelling = s.cancel_requested && !s.status.is_finished() && idle(s);
                if s.status != RunStatus::Failed && !cancelling {
                    return Vec::new();
                }
                let order = saga::compensation_order(s, registry);
                if order.is_empty() {
                    return if cancelling {
                        vec![Event::RunCancelled {}]
                    } else {
                        Vec::new()
                    };
                }
                vec![Event::CompensationStarted { steps: order }]
            })
            .await?;
        let Some(state) = state else { return Ok(None) };
        if state.status != RunStatus::Compensating {
            return Ok(None);
        }
        let remaining = saga::compensation_order(&state, registry);
        info!(steps = ?remaining, "compensating");
        Ok(Some(CompensationPlan { steps: remaining }))
    }

    /// Undo one completed step (attempt `attempt` of its compensation) and record it.
    /// Idempotent: a step already compensated is not touched again.
    #[instrument(skip(self), fields(tenant = %key.tenant, run_id = %key.run_id, step_id))]
    pub async fn compensate_step(
        &self,
        key: &RunKey,
        step_id: &str,
        attempt: u32,
    ) -> Result<(), CompensateError> {
        let Some(state) = self.load_state(key).await? else {
            return Err(AppError::NotFound(format!("run {} not found", key.run_id)).into());
        };
        let step = state.step(step_id).ok_or_else(|| {
            CompensateError::Tool(ToolError::permanent(format!("run has no step {step_id}")))
        })?;
        if step.status != StepStatus::Completed {
            // Already compensated (a retried or duplicated invocation), or never completed.
            return Ok(());
        }
        let plan = state.plan.step(step_id).ok_or_else(|| {
            CompensateError::Tool(ToolError::permanent(format!("plan has no step {step_id}")))
        })?;
        let tool = self.registry.get(&plan.tool).ok_or_else(|| {
            CompensateError::Tool(ToolError::permanent(format!(
                "tool '{}' is not registered",
                plan.tool
            )))
        })?;
        let output = step
            .output
            .as_ref()
            .map_or(serde_json::Value::Null, Output::value);
        let ctx = ToolContext {
            tenant: state.tenant.clone(),
            run_id: state.run_id.clone(),
            step_id: step_id.to_owned(),
            attempt,
            now: self.now(),
        };
        tool.compensate(&ctx, &plan.input, &output)
            .await
            .map_err(CompensateError::Tool)?;
        info!(tool = %plan.tool, attempt, "step compensated");
        let id = step_id.to_owned();
        self.update(key, move |s| {
            if s.step(&id).map(|x| x.status) == Some(StepStatus::Completed) {
                vec![Event::StepCompensated {
                    step_id: id.clone(),
                    attempts: attempt,
                }]
            } else {
                Vec::new()
            }
        })
        .await?;
        Ok(())
    }

    /// Record the saga's end: every step undone, or `failure` (the step whose
    /// compensation exhausted its retries, and why; or `unknown` when the saga itself
    /// failed around the steps). A failure is recorded for a run the saga could not even
    /// begin too (still `failed`, or cancelling), so no run is left waiting for a saga
    /// that has ended.
    #[instrument(skip(self), fields(tenant = %key.tenant, run_id = %key.run_id))]
    pub async fn finish_compensation(
        &self,
        key: &RunKey,
        failure: Option<(String, String, u32)>,
    ) -> Result<RunState, AppError> {
        let state = self
            .update(key, |s| {
                let cancelling = s.cancel_requested && !s.status.is_finished() && idle(s);
                let before_begin = s.status == RunStatus::Failed || cancelling;
                match &failure {
                    Some((step_id, error, attempts))
                        if s.status == RunStatus::Compensating || before_begin =>
                    {
                        let mut events = Vec::new();
                        if s.step(step_id).is_some() {
                            events.push(Event::StepCompensationFailed {
                                step_id: step_id.clone(),
                                error: error.clone(),
                                attempts: *attempts,
                            });
                        }
                        events.push(Event::RunCompensationFailed {
                            step_id: step_id.clone(),
                            error: error.clone(),
                        });
                        events
                    }
                    None if s.status == RunStatus::Compensating => vec![Event::RunCompensated {}],
                    _ => Vec::new(),
                }
            })
            .await?;
        let state =
            state.ok_or_else(|| AppError::NotFound(format!("run {} not found", key.run_id)))?;
        info!(status = state.status.as_str(), "compensation finished");
        Ok(state)
    }

    /// An operator's request to run the saga again, for a run whose saga crashed (left
    /// `compensating`, or `failed` / cancelling without a saga that began) or whose
    /// compensation failed (`compensation_failed`, after the cause was repaired). Appends
    /// `CompensationRetryRequested` with the next saga attempt (2 for the first retry,
    /// counted from the run's events); the reactor starts that attempt as a new
    /// execution. Any other run is a conflict.
    #[instrument(skip(self), fields(run_id = %key.run_id))]
    pub async fn request_compensation_retry(
        &self,
        key: &RunKey,
        reason: Option<String>,
    ) -> Result<(RunState, u32), AppError> {
        let registry = &self.registry;
        for _ in 0..MAX_CONFLICTS {
            let Some((state, events)) = self.load(key).await? else {
                return Err(AppError::NotFound(format!("run {} not found", key.run_id)));
            };
            let cancelling = state.cancel_requested && !state.status.is_finished() && idle(&state);
            let to_undo = !saga::compensation_order(&state, registry).is_empty();
            let retryable = match state.status {
                RunStatus::Compensating | RunStatus::CompensationFailed => true,
                RunStatus::Failed => to_undo,
                _ => cancelling,
            };
            if !retryable {
                return Err(AppError::Refused {
                    why: Refusal::NothingToCompensate,
                    message: format!(
                        "run {} is {}{}: there is no saga to retry",
                        key.run_id,
                        state.status.as_str(),
                        if state.cancel_requested {
                            " (cancel requested)"
                        } else {
                            ""
                        }
                    ),
                });
            }
            let previous = events
                .iter()
                .filter(|e| matches!(e.event, Event::CompensationRetryRequested { .. }))
                .count();
            let attempt = u32::try_from(previous).unwrap_or(u32::MAX - 2) + 2;
            let event = Event::CompensationRetryRequested {
                attempt,
                reason: reason.clone(),
            };
            match self.commit(&state, vec![event]).await {
                Ok(after) => {
                    info!(saga_attempt = attempt, "compensation retry requested");
                    return Ok((after, attempt));
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AppError::Store(StoreError::unavailable(
            "too much contention on this run",
        )))
    }

    /// The whole saga in process (the local runtime), with the compensation retry policy.
    pub async fn compensate_run(&self, key: &RunKey) -> Result<JobResult, AppError> {
        let Some(plan) = self.begin_compensation(key).await? else {
            return Ok(JobResult::Done);
        };
        let policy = self.settings.compensation_retry;
        for step_id in &plan.steps {
            let mut attempt = 1;
            loop {
                match self.compensate_step(key, step_id, attempt).await {
                    Ok(()) => break,
                    Err(CompensateError::App(e)) => return Err(e),
                    Err(CompensateError::Tool(e)) => {
                        let retry = e.kind == crate::domain::ErrorKind::Transient
                            && policy.allows_retry(attempt);
                        warn!(step_id, attempt, error = %e.message, retry, "compensation attempt failed");
                        if !retry {
                            self.finish_compensation(
                                key,
                                Some((step_id.clone(), e.message, attempt)),
                            )
                            .await?;
                            return Ok(JobResult::Done);
                        }
                        let delay = policy.delay_ms(attempt, rand::rng().random());
                        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                        attempt += 1;
                    }
                }
            }
        }
        self.finish_compensation(key, None).await?;
        Ok(JobResult::Done)
    }
}

/// Why one compensation failed: the tool refused (retry per policy) or the store did.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompensateError {
    /// The tool's compensation failed; its [`ErrorKind`](crate::domain::ErrorKind) says whether to
    /// retry.
    #[error(transparent)]
    Tool(ToolError),
    /// Reading or writing the run failed (or the run or step is gone).
    #[error(transparent)]
    App(#[from] AppError),
}
