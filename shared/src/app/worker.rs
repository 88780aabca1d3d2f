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
use crate::domain::{refs, ErrorKind, Output, RunKey, RunState, StepJob, ToolError};
use crate::engine::breaker::{Admission, BreakerState};
use crate::engine::{self, Claim, Deferral};
use crate::ports::StoreError;
use crate::tools::ToolContext;

/// What became of a job.
#[derive(Debug, Clone, PartialEq)]
pub enum JobResult {
    /// Finished (or nothing to do): acknowledge it.
    Done,
    /// Deliver it again at this time.
    RetryAt(DateTime<Utc>),
}

pub(super) fn contention() -> AppError {
    AppError::Store(StoreError::unavailable("too much contention on this run"))
}

/// What the tool's circuit breaker said about a call.
pub(super) enum Gate {
    /// Call the tool; `trial` says a half-open trial slot was taken for it; `clean` says
    /// the breaker was closed with no failures counted, so a success changes nothing in it.
    Open { trial: bool, clean: bool },
    /// Do not call before `until`.
    Closed {
        until: DateTime<Utc>,
        reason: String,
    },
}

impl App {
    /// Run one step job.
    #[instrument(skip(self, job), fields(tenant = %job.tenant, run_id = %job.run_id, step_id = %job.step_id, attempt = job.attempt, correlation_id = %job.correlation_id))]
    pub async fn process_job(&self, job: &StepJob) -> Result<JobResult, AppError> {
        let key = job.key();
        let lease_ms = self.settings.lease_ms();
        // Asked once per job, before the claim: a refused call must not use up an attempt.
        let mut gate: Option<(String, Gate)> = None;
        let mut claimed = None;
        for _ in 0..MAX_CONFLICTS {
            let Some(state) = self.load_state(&key).await? else {
                debug!("job for an unknown run: dropped");
                return self.release(gate, JobResult::Done).await;
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
                    return self.release(gate, JobResult::Done).await;
                }
                Claim::Later(at) => return self.release(gate, JobResult::RetryAt(at)).await,
                Claim::Record(events) => match self.commit(&state, events).await {
                    Ok(_) => return self.release(gate, JobResult::Done).await,
                    Err(StoreError::Conflict(_)) => continue,
                    Err(e) => return Err(e.into()),
                },
                Claim::Start { attempt, events } => {
                    let tool = state
                        .step(&job.step_id)
                        .map(|s| s.tool.clone())
                        .unwrap_or_default();
                    if gate.is_none() {
                        gate = Some((tool.clone(), self.gate(&tool).await));
                    }
                    if let Some((_, Gate::Closed { until, reason })) = &gate {
                        match self
                            .defer(&state, &job.step_id, attempt, events, reason, *until)
                            .await
                        {
                            Ok(result) => return Ok(result),
                            Err(StoreError::Conflict(_)) => continue,
                            Err(e) => return Err(e.into()),
                        }
                    }
                    match self.commit(&state, events).await {
                        Ok(after) => {
                            claimed = Some((after, attempt));
                            break;
                        }
                        Err(StoreError::Conflict(_)) => continue,
                        Err(e) => {
                            self.release(gate, JobResult::Done).await?;
                            return Err(e.into());
                        }
                    }
                }
            }
        }
        let Some((state, attempt)) = claimed else {
            self.release(gate, JobResult::Done).await?;
            return Err(contention());
        };
        let trial = matches!(gate, Some((_, Gate::Open { trial: true, .. })));
        let clean = matches!(gate, Some((_, Gate::Open { clean: true, .. })));
        let started = Instant::now();
        let result = self
            .call_tool(&state, &job.step_id, attempt, trial, clean)
            .await;
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

    /// The breaker refused the call: record that the step waits (no attempt is used), or
    /// that it waited past its deadline. `claim_events` are the claim's events, ending
    /// with the `StepStarted` that is not written.
    async fn defer(
        &self,
        state: &RunState,
        step_id: &str,
        attempt: u32,
        mut claim_events: Vec<crate::domain::Event>,
        reason: &str,
        until: DateTime<Utc>,
    ) -> Result<JobResult, StoreError> {
        claim_events.pop();
        let before = engine::simulate(state, &claim_events);
        let now = self.now();
        let (events, result) = match engine::defer(
            &before,
            step_id,
            attempt,
            reason,
            until,
            now,
            self.settings.step_deadline_ms,
        ) {
            Deferral::Wait { events, until } => {
                info!(%reason, until = %until, "step waits for its tool's circuit breaker");
                (events, JobResult::RetryAt(until))
            }
            Deferral::GiveUp(events) => {
                warn!(%reason, "step waited past its deadline for its tool");
                (events, JobResult::Done)
            }
        };
        claim_events.extend(events);
        if !claim_events.is_empty() {
            self.commit(state, claim_events).await?;
        }
        Ok(result)
    }

    async fn record_outcome(
        &self,
        key: &RunKey,
        step_id: &str,
        attempt: u32,
        result: Result<Output, ToolError>,
        duration_ms: u64,
    ) -> Result<(), AppError> {
        let sample: f64 = rand::rng().random();
        for _ in 0..MAX_CONFLICTS {
            let Some(state) = self.load_state(key).await? else {
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

    /// Substitute references and call the tool under the step timeout; report the outcome
    /// to its breaker (`trial`: the call holds a half-open trial slot). `clean`: the
    /// breaker was closed with no failures when the call was admitted, so a success is not
    /// reported (it would change nothing; a failure another worker counted meanwhile then
    /// stands until the next success, which errs towards opening, never towards calling).
    pub(super) async fn call_tool(
        &self,
        state: &RunState,
        step_id: &str,
        attempt: u32,
        trial: bool,
        clean: bool,
    ) -> Result<Output, ToolError> {
        let tool_name = state
            .step(step_id)
            .map(|s| s.tool.clone())
            .unwrap_or_default();
        let result = self.execute(state, step_id, attempt).await;
        let outcome = match &result {
            Ok(_) => Some(Ok(())),
            Err(e) if e.kind == ErrorKind::Transient => Some(Err(())),
            // A permanent error (bad input) says nothing about the tool's health.
            Err(_) => None,
        };
        match outcome {
            Some(Ok(())) if clean => {}
            Some(outcome) => self.observe(&tool_name, outcome).await,
            None if trial => self.release_trial(&tool_name).await,
            None => {}
        }
        result
    }

    async fn execute(
        &self,
        state: &RunState,
        step_id: &str,
        attempt: u32,
    ) -> Result<Output, ToolError> {
        let step = state
            .plan
            .step(step_id)
            .ok_or_else(|| ToolError::permanent(format!("run has no step {step_id}")))?;
        let tool = self.registry.get(&step.tool).ok_or_else(|| {
            ToolError::permanent(format!("tool '{}' is not registered", step.tool))
        })?;
        let outputs = state.referenced_outputs(&step.input);
        let lookup = |id: &str| outputs.iter().find(|(k, _)| k == id).map(|(_, v)| v);
        let schema = self
            .registry
            .input_schema(&step.tool)
            .unwrap_or(&Value::Null);
        let input = refs::substitute(&step.input, schema, &lookup).map_err(ToolError::permanent)?;
        let ctx = ToolContext {
            tenant: state.tenant.clone(),
            run_id: state.run_id.clone(),
            step_id: step_id.to_owned(),
            attempt,
            now: self.now(),
        };
        let timeout = std::time::Duration::from_millis(self.settings.step_timeout_ms);
        match tokio::time::timeout(timeout, tool.execute_output(&ctx, &input)).await {
            Ok(r) => r,
            Err(_) => Err(ToolError::transient(format!(
                "{} timed out after {} ms",
                tool.name(),
                self.settings.step_timeout_ms
            ))),
        }
    }

    /// Ask the tool's breaker whether a call may go through, taking a half-open trial
    /// slot if that is what admits it.
    pub(super) async fn gate(&self, tool: &str) -> Gate {
        for _ in 0..MAX_CONFLICTS {
            let Ok((state, version)) = self.breaker_state(tool).await else {
                // The breaker store being unreachable must not stop work: fail open.
                return Gate::Open {
                    trial: false,
                    clean: false,
                };
            };
            match state.admit(&self.settings.breaker, self.now()) {
                Admission::Reject { until } => {
                    return Gate::Closed {
                        until,
                        reason: format!(
                            "{tool} temporarily unavailable (circuit breaker {})",
                            state.name()
                        ),
                    }
                }
                Admission::Allow { next: None, trial } => {
                    let clean = !trial && state == BreakerState::default();
                    return Gate::Open { trial, clean };
                }
                Admission::Allow {
                    next: Some(next),
                    trial,
                } => {
                    match self.store_breaker(tool, version, &state, &next).await {
                        Ok(()) => {
                            return Gate::Open {
                                trial,
                                clean: false,
                            }
                        }
                        // Another worker changed the breaker first: look again.
                        Err(StoreError::Conflict(_)) => continue,
                        Err(_) => {
                            return Gate::Open {
                                trial: false,
                                clean: false,
                            }
                        }
                    }
                }
            }
        }
        Gate::Open {
            trial: false,
            clean: false,
        }
    }

    /// Give back a trial slot taken for a call that did not happen, then pass `result` on.
    async fn release(
        &self,
        gate: Option<(String, Gate)>,
        result: JobResult,
    ) -> Result<JobResult, AppError> {
        if let Some((tool, Gate::Open { trial: true, .. })) = gate {
            self.release_trial(&tool).await;
        }
        Ok(result)
    }

    pub(super) async fn release_trial(&self, tool: &str) {
        self.update_breaker(tool, |s| s.release_trial()).await;
    }

    /// Feed a call's outcome (transient failures only) to the tool's breaker.
    async fn observe(&self, tool: &str, outcome: Result<(), ()>) {
        let cfg = self.settings.breaker;
        let now = self.now();
        self.update_breaker(tool, |s| match outcome {
            Ok(()) => s.on_success(&cfg),
            Err(()) => s.on_failure(&cfg, now),
        })
        .await;
    }

    async fn update_breaker(&self, tool: &str, change: impl Fn(&BreakerState) -> BreakerState) {
        for _ in 0..MAX_CONFLICTS {
            let Ok((state, version)) = self.breaker_state(tool).await else {
                return;
            };
            let next = change(&state);
            if next == state {
                return;
            }
            match self.store_breaker(tool, version, &state, &next).await {
                Ok(()) => return,
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => {
                    warn!(tool, error = %e, "could not update circuit breaker");
                    return;
                }
            }
        }
    }

    /// Store `next` over the breaker state read at `version` (a conditional write) and log
    /// a change of state.
    async fn store_breaker(
        &self,
        tool: &str,
        version: u64,
        state: &BreakerState,
        next: &BreakerState,
    ) -> Result<(), StoreError> {
        let v = serde_json::to_value(next)
            .map_err(|e| StoreError::corrupt(format!("breaker state: {e}")))?;
        self.breakers.put(tool, version, &v).await?;
        if next.name() != state.name() {
            warn!(
                tool,
                from = state.name(),
                to = next.name(),
                "circuit breaker transition"
            );
        }
        Ok(())
    }
}
