//! Processing one step job: claim the attempt, call the tool (through its circuit
//! breaker, with a timeout), record the outcome. Safe under duplicate delivery and
//! concurrent workers: the claim is an optimistic append, so only one worker runs an
//! attempt, and a stale worker's outcome is dropped.

use std::time::Instant;

use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::Value;
use tracing::{debug, info, instrument, warn};

use super::{App, AppError, MAX_CONFLICTS};
use crate::domain::{ErrorKind, RunKey, RunState};
use crate::engine::breaker::Admission;
use crate::engine::{self, refs, Claim};
use crate::ports::{StepJob, StoreError};
use crate::tools::{ToolContext, ToolError};

/// What became of a job.
#[derive(Debug, Clone, PartialEq)]
pub enum JobResult {
    /// Finished (or nothing to do): acknowledge it.
    Done,
    /// Deliver it again at this time.
    RetryAt(DateTime<Utc>),
}

fn contention() -> AppError {
    AppError::Store(StoreError::Unavailable(
        "too much contention on this run".into(),
    ))
}

impl App {
    /// Run one step job.
    #[instrument(skip(self, job), fields(run_id = %job.run_id, step_id = %job.step_id, attempt = job.attempt, correlation_id = %job.correlation_id))]
    pub async fn process_job(&self, job: &StepJob) -> Result<JobResult, AppError> {
        let key = job.key();
        let lease_ms = self.settings.lease_ms();
        let mut claimed = None;
        for _ in 0..MAX_CONFLICTS {
            let Some((state, _)) = self.load(&key).await? else {
                debug!("job for an unknown run: dropped");
                return Ok(JobResult::Done);
            };
            let decision = engine::claim(
                &state,
                &job.step_id,
                job.attempt,
                self.now(),
                &self.settings.retry,
                lease_ms,
                self.settings.void_leases_before,
            );
            match decision {
                Claim::Skip(reason) => {
                    debug!(%reason, "nothing to do");
                    return Ok(JobResult::Done);
                }
                Claim::Later(at) => return Ok(JobResult::RetryAt(at)),
                Claim::Record(events) => match self.commit(&state, events).await {
                    Ok(_) => return Ok(JobResult::Done),
                    Err(StoreError::Conflict(_)) => continue,
                    Err(e) => return Err(e.into()),
                },
                Claim::Start { attempt, events } => match self.commit(&state, events).await {
                    Ok(after) => {
                        claimed = Some((after, attempt));
                        break;
                    }
                    Err(StoreError::Conflict(_)) => continue,
                    Err(e) => return Err(e.into()),
                },
            }
        }
        let Some((state, attempt)) = claimed else {
            return Err(contention());
        };
        let started = Instant::now();
        let result = self.call_tool(&state, &job.step_id, attempt).await;
        let duration_ms = started.elapsed().as_millis() as u64;
        let tool = state
            .step(&job.step_id)
            .map(|s| s.tool.clone())
            .unwrap_or_default();
        match &result {
            Ok(_) => info!(tool = %tool, attempt, duration_ms, "step attempt succeeded"),
            Err(e) => {
                warn!(tool = %tool, attempt, duration_ms, error = %e.message, kind = ?e.kind, "step attempt failed")
            }
        }
        self.record_outcome(&key, &job.step_id, attempt, result, duration_ms)
            .await?;
        Ok(JobResult::Done)
    }

    async fn record_outcome(
        &self,
        key: &RunKey,
        step_id: &str,
        attempt: u32,
        result: Result<Value, ToolError>,
        duration_ms: u64,
    ) -> Result<(), AppError> {
        let sample: f64 = rand::rng().random();
        for _ in 0..MAX_CONFLICTS {
            let Some((state, _)) = self.load(key).await? else {
                return Ok(());
            };
            let events = match engine::outcome(
                &state,
                step_id,
                attempt,
                result.clone(),
                duration_ms,
                &self.settings.retry,
                sample,
            ) {
                Ok(events) => events,
                Err(stale) => {
                    warn!(reason = %stale.0, "outcome dropped");
                    return Ok(());
                }
            };
            match self.commit(&state, events).await {
                Ok(after) => {
                    if after.status.is_finished() {
                        info!(status = after.status.as_str(), "run finished");
                    }
                    return Ok(());
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(contention())
    }

    /// Substitute references, pass the breaker, call the tool under the step timeout.
    async fn call_tool(
        &self,
        state: &RunState,
        step_id: &str,
        attempt: u32,
    ) -> Result<Value, ToolError> {
        let step = state
            .plan
            .step(step_id)
            .ok_or_else(|| ToolError::permanent(format!("run has no step {step_id}")))?;
        let tool = self.registry.get(&step.tool).ok_or_else(|| {
            ToolError::permanent(format!("tool '{}' is not registered", step.tool))
        })?;
        let outputs: Vec<(&str, &Value)> = state.outputs().collect();
        let lookup = |id: &str| outputs.iter().find(|(k, _)| *k == id).map(|(_, v)| *v);
        let input = refs::substitute(&step.input, &tool.input_schema(), &lookup)
            .map_err(ToolError::permanent)?;
        let ctx = ToolContext {
            tenant: state.tenant.clone(),
            run_id: state.run_id.clone(),
            step_id: step_id.to_owned(),
            attempt,
            now: self.now(),
        };
        self.admit(tool.name()).await?;
        let timeout = std::time::Duration::from_millis(self.settings.step_timeout_ms);
        let result = match tokio::time::timeout(timeout, tool.execute(&ctx, &input)).await {
            Ok(r) => r,
            Err(_) => Err(ToolError::transient(format!(
                "{} timed out after {} ms",
                tool.name(),
                self.settings.step_timeout_ms
            ))),
        };
        self.observe(tool.name(), result.as_ref().map(|_| ()).map_err(|e| e.kind))
            .await;
        result
    }

    /// Ask the tool's breaker whether a call may go through.
    async fn admit(&self, tool: &str) -> Result<(), ToolError> {
        let Ok((state, version)) = self.breaker_state(tool).await else {
            // The breaker store being unreachable must not stop work: fail open.
            return Ok(());
        };
        match state.admit(self.now()) {
            Admission::Reject { .. } => Err(ToolError::transient(format!(
                "{tool} temporarily unavailable"
            ))),
            Admission::Allow { next: Some(next) } => {
                if let Ok(v) = serde_json::to_value(&next) {
                    if self.breakers.put(tool, version, &v).await.is_ok() {
                        warn!(
                            tool,
                            from = state.name(),
                            to = next.name(),
                            "circuit breaker transition"
                        );
                    }
                }
                Ok(())
            }
            Admission::Allow { next: None } => Ok(()),
        }
    }

    /// Feed a call's outcome to the tool's breaker (only transient failures count).
    async fn observe(&self, tool: &str, outcome: Result<(), ErrorKind>) {
        if outcome == Err(ErrorKind::Permanent) {
            return;
        }
        for _ in 0..MAX_CONFLICTS {
            let Ok((state, version)) = self.breaker_state(tool).await else {
                return;
            };
            let next = match outcome {
                Ok(()) => state.on_success(&self.settings.breaker),
                Err(_) => state.on_failure(&self.settings.breaker, self.now()),
            };
            if next == state {
                return;
            }
            let Ok(v) = serde_json::to_value(&next) else {
                return;
            };
            match self.breakers.put(tool, version, &v).await {
                Ok(()) => {
                    if next.name() != state.name() {
                        warn!(
                            tool,
                            from = state.name(),
                            to = next.name(),
                            "circuit breaker transition"
                        );
                    }
                    return;
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => {
                    warn!(tool, error = %e, "could not update circuit breaker");
                    return;
                }
            }
        }
    }
}
