//! Human approval in the services: asking for it when a held step becomes ready, and
//! recording a person's decision. A decision is an append at the next sequence number
//! under the store's optimistic concurrency: of two concurrent decisions exactly one is
//! written; the other re-reads the run, finds the step decided and is refused (409).

use chrono::{DateTime, Utc};
use tracing::{info, instrument};

use super::{App, AppError, Refusal, MAX_CONFLICTS};
use crate::domain::{Event, RunKey, RunState};
use crate::engine::approval::{self, Decision, MAX_COMMENT_CHARS};
use crate::ports::StoreError;

impl App {
    /// `ApprovalRequested` at `now` for the steps of `state` that are ready but held.
    pub(crate) fn approval_requests(&self, state: &RunState, now: DateTime<Utc>) -> Vec<Event> {
        approval::requests(
            state,
            &self.registry,
            now,
            self.settings.approval_timeout_ms,
        )
    }

    /// `POST /runs/{id}/steps/{step_id}/approve|reject`: record the tenant's decision on
    /// a step waiting for approval. Approving dispatches the step; rejecting fails it for
    /// good and the run with it (the saga undoes what completed).
    #[instrument(skip(self, comment), fields(tenant = %key.tenant, run_id = %key.run_id, step_id = %step_id, decision = decision.as_str()))]
    pub async fn decide_step(
        &self,
        key: &RunKey,
        step_id: &str,
        decision: Decision,
        comment: Option<String>,
    ) -> Result<RunState, AppError> {
        let comment = comment
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty());
        if let Some(c) = &comment {
            let chars = c.chars().count();
            if chars > MAX_COMMENT_CHARS {
                return Err(AppError::refused(
                    Refusal::CommentTooLong,
                    format!("comment is {chars} characters; the limit is {MAX_COMMENT_CHARS}"),
                ));
            }
        }
        for _ in 0..MAX_CONFLICTS {
            let Some(state) = self.load_state(key).await? else {
                return Err(AppError::NotFound(format!("run {} not found", key.run_id)));
            };
            let events =
                match approval::decide(&state, step_id, decision, &key.tenant, comment.clone()) {
                    Ok(events) => events,
                    Err(approval::Refusal::NoSuchStep(_)) => {
                        return Err(AppError::NotFound(format!(
                            "run {} has no step {step_id}",
                            key.run_id
                        )))
                    }
                    Err(r @ approval::Refusal::AlreadyDecided { .. }) => {
                        return Err(AppError::Refused {
                            why: Refusal::AlreadyDecided,
                            message: r.to_string(),
                        })
                    }
                    Err(r @ approval::Refusal::NotWaiting { .. }) => {
                        return Err(AppError::Refused {
                            why: Refusal::NotWaitingApproval,
                            message: r.to_string(),
                        })
                    }
                };
            match self.commit(&state, events).await {
                Ok(after) => {
                    info!(comment = comment.is_some(), "approval decided");
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
}
