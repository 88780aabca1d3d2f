//! The compensate function: the three tasks the saga state machine (Step Functions) asks
//! of it, each a call of the application's compensation services.
//!
//! Input, tagged by `action`:
//! - `{"action":"begin","tenant","run_id"}` -> `{"tenant","run_id","steps":[...]}`: the
//!   steps to undo, in order (empty when there is nothing to do).
//! - `{"action":"compensate_step","tenant","run_id","step_id","attempt"}` (`attempt` is
//!   `$$.State.RetryCount`, 0-based) -> `{"step_id","compensated":true}`.
//! - `{"action":"finish","tenant","run_id","failure"?:{"step_id"?,"error"}}` -> the run's
//!   final status. `error` is what the state machine's `Catch` caught: the error object
//!   `{"Error","Cause"}` (or, from older definitions, just its `Cause`).
//!
//! And one action for an operator, not the state machine:
//! - `{"action":"retry","tenant","run_id","reason"?}` -> `{"tenant","run_id","status",
//!   "saga_attempt","execution_name"}`: run the saga again for a run whose saga crashed or
//!   whose compensation failed ([`App::request_compensation_retry`]); the event reactor
//!   then starts execution `execution_name`.
//!
//! Errors carry the type the state machine matches: [`TRANSIENT`] (retried) or
//! [`PERMANENT`] (not). A failed `compensate_step` says which step failed and after how
//! many attempts (`"s2: <message> (attempt 4)"`) so `finish` can record it from the
//! `Cause` the state machine catches.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::field::Empty;
use tracing::{info, instrument, warn};

use crate::app::{App, AppError, CompensateError};
use crate::domain::{ErrorKind, RunKey};
use crate::ports::StoreError;

/// Error type of a failure worth retrying.
pub const TRANSIENT: &str = "Crane.TransientError";
/// Error type of a failure that will not go away.
pub const PERMANENT: &str = "Crane.PermanentError";

/// A task of the saga state machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum SagaTask {
    /// List the run's steps to undo (starting compensation if it has not begun).
    Begin {
        /// The tenant that owns the run.
        tenant: String,
        /// The run to compensate.
        run_id: String,
        /// The run's correlation id, for logs; `None` when the input carries none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        correlation_id: Option<String>,
    },
    /// Undo one completed step.
    CompensateStep {
        /// The tenant that owns the run.
        tenant: String,
        /// The run the step belongs to.
        run_id: String,
        /// The step to undo.
        step_id: String,
        /// Retries so far (`$$.State.RetryCount`): 0 on the first attempt.
        #[serde(default)]
        attempt: u32,
        /// The run's correlation id, for logs; `None` when the input carries none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        correlation_id: Option<String>,
    },
    /// Record the saga's end: every step undone, or the failure the state machine caught.
    Finish {
        /// The tenant that owns the run.
        tenant: String,
        /// The run whose saga ends.
        run_id: String,
        /// What the state machine's `Catch` caught; `None` when every step was undone.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure: Option<SagaFailure>,
        /// The run's correlation id, for logs; `None` when the input carries none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        correlation_id: Option<String>,
    },
    /// An operator's request to run the saga again (invoked directly, not by the state
    /// machine).
    Retry {
        /// The tenant that owns the run.
        tenant: String,
        /// The run whose saga runs again.
        run_id: String,
        /// Why the operator asked, recorded in the event; `None` when no reason is given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// Why the saga failed, as the state machine's `Catch` recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaFailure {
    /// The step whose compensation failed; `None` when the saga failed around the steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_id: Option<String>,
    /// The caught `Cause`: the Lambda error document (`{"errorType","errorMessage"}`) as a
    /// string, or plain text.
    #[serde(default)]
    pub error: Value,
}

/// What `begin` returns: the Map state iterates over `steps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BeginOutput {
    /// The tenant that owns the run.
    pub tenant: String,
    /// The run being compensated.
    pub run_id: String,
    /// Ids of the completed steps to undo, most recently completed first (empty: nothing to do).
    pub steps: Vec<String>,
}

/// A failed saga task, typed for the state machine's Retry/Catch.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct SagaError {
    /// Whether the state machine should retry the task.
    pub kind: ErrorKind,
    /// What went wrong; for a failed step, `"<step>: <message> (attempt <n>)"`.
    pub message: String,
}

impl SagaError {
    /// The error type the state machine's Retry and Catch match: [`TRANSIENT`] or [`PERMANENT`].
    pub fn error_type(&self) -> &'static str {
        match self.kind {
            ErrorKind::Transient => TRANSIENT,
            ErrorKind::Permanent => PERMANENT,
        }
    }

    fn app(e: AppError) -> Self {
        let kind = match &e {
            AppError::Store(StoreError::Unavailable { .. } | StoreError::Conflict(_)) => {
                ErrorKind::Transient
            }
            _ => ErrorKind::Permanent,
        };

        Self {
            kind,
            message: e.to_string(),
        }
    }
}

impl From<SagaError> for lambda_runtime::Diagnostic {
    fn from(e: SagaError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: e.error_type().to_owned(),
            error_message: e.message,
        }
    }
}

/// Decode the state machine's input and run the task. An input that is not a task is a
/// permanent error (retrying it cannot help).
pub async fn handle_saga_input(app: &App, input: Value) -> Result<Value, SagaError> {
    let task: SagaTask = serde_json::from_value(input).map_err(|e| SagaError {
        kind: ErrorKind::Permanent,
        message: format!("not a saga task: {e}"),
    })?;
    handle_saga_task(app, task).await
}

/// Run one saga task.
#[instrument(skip_all, fields(run_id = Empty, step_id = Empty, attempt = Empty, correlation_id = Empty))]
pub async fn handle_saga_task(app: &App, task: SagaTask) -> Result<Value, SagaError> {
    let span = tracing::Span::current();
    match task {
        SagaTask::Begin {
            tenant,
            run_id,
            correlation_id,
        } => {
            record_ids(&span, &run_id, correlation_id.as_deref());
            let key = RunKey::new(&tenant, &run_id);
            let plan = app.begin_compensation(&key).await.map_err(SagaError::app)?;
            let steps = plan.map(|p| p.steps).unwrap_or_default();
            info!(steps = ?steps, "saga begins");
            to_value(&BeginOutput {
                tenant,
                run_id,
                steps,
            })
        }
        SagaTask::CompensateStep {
            tenant,
            run_id,
            step_id,
            attempt,
            correlation_id,
        } => {
            record_ids(&span, &run_id, correlation_id.as_deref());
            let attempt = attempt.saturating_add(1);
            span.record("step_id", step_id.as_str());
            span.record("attempt", attempt);
            let key = RunKey::new(&tenant, &run_id);
            match app.compensate_step(&key, &step_id, attempt).await {
                Ok(()) => Ok(serde_json::json!({"step_id": step_id, "compensated": true})),
                Err(e) => {
                    let (kind, message) = match e {
                        CompensateError::Tool(t) => (t.kind, t.message),
                        CompensateError::App(a) => {
                            let s = SagaError::app(a);
                            (s.kind, s.message)
                        }
                    };
                    warn!(error = %message, kind = ?kind, "compensation attempt failed");
                    Err(SagaError {
                        kind,
                        message: step_failure_message(&step_id, &message, attempt),
                    })
                }
            }
        }
        SagaTask::Finish {
            tenant,
            run_id,
            failure,
            correlation_id,
        } => {
            record_ids(&span, &run_id, correlation_id.as_deref());
            let key = RunKey::new(&tenant, &run_id);
            let failure = failure.map(|f| parse_failure(&f));
            let state = app
                .finish_compensation(&key, failure)
                .await
                .map_err(SagaError::app)?;
            Ok(serde_json::json!({
                "tenant": tenant,
                "run_id": run_id,
                "status": state.status.as_str(),
            }))
        }
        SagaTask::Retry {
            tenant,
            run_id,
            reason,
        } => {
            record_ids(&span, &run_id, None);
            let key = RunKey::new(&tenant, &run_id);
            let (state, attempt) = app
                .request_compensation_retry(&key, reason)
                .await
                .map_err(SagaError::app)?;
            let execution_name = crate::adapters::aws::execution_name(&run_id, attempt);
            info!(saga_attempt = attempt, execution_name = %execution_name, "saga retry requested by an operator");
            Ok(serde_json::json!({
                "tenant": tenant,
                "run_id": run_id,
                "status": state.status.as_str(),
                "saga_attempt": attempt,
                "execution_name": execution_name,
            }))
        }
    }
}

fn record_ids(span: &tracing::Span, run_id: &str, correlation_id: Option<&str>) {
    span.record("run_id", run_id);
    if let Some(c) = correlation_id {
        span.record("correlation_id", c);
    }
}

fn to_value<T: Serialize>(v: &T) -> Result<Value, SagaError> {
    serde_json::to_value(v).map_err(|e| SagaError {
        kind: ErrorKind::Permanent,
        message: e.to_string(),
    })
}

fn unknown_step(f: &SagaFailure) -> String {
    f.step_id.clone().unwrap_or_else(|| "unknown".to_owned())
}

/// `"s2: <message> (attempt 4)"`.
pub fn step_failure_message(step_id: &str, message: &str, attempt: u32) -> String {
    format!("{step_id}: {message} (attempt {attempt})")
}

/// Recover (step id, error, attempts) from what the state machine caught. The `Cause` of a
/// Lambda error is the JSON error document as a string; its `errorMessage` is what
/// [`step_failure_message`] wrote. Anything else is kept whole, with `unknown` as step.
pub fn parse_failure(f: &SagaFailure) -> (String, String, u32) {
    // The whole caught error object: its Cause carries the detail (a Lambda error document
    // for a function error, plain text otherwise); without one, its Error name.
    let caught = f.error.as_object().filter(|o| o.contains_key("Error"));
    let error = match caught {
        Some(o) => {
            let name = o.get("Error").and_then(Value::as_str).unwrap_or("error");
            match o
                .get("Cause")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
            {
                Some(cause)
                    if serde_json::from_str::<Value>(cause).is_ok_and(|d| d.is_object()) =>
                {
                    Value::String(cause.to_owned())
                }
                // Not a step's failure (the function crashed, timed out, was throttled):
                // no step to name.
                Some(cause) => return (unknown_step(f), format!("{name}: {cause}"), 1),
                None => return (unknown_step(f), name.to_owned(), 1),
            }
        }
        None => f.error.clone(),
    };
    let raw = match &error {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let doc: Option<Value> = serde_json::from_str(&raw)
        .ok()
        .or_else(|| error.is_object().then(|| error.clone()));
    let message = doc
        .as_ref()
        .and_then(|d| d.get("errorMessage"))
        .and_then(Value::as_str)
        .map_or(raw.clone(), str::to_owned);
    let (mut step, mut rest) = match message.split_once(": ") {
        Some((s, r)) if !s.is_empty() && !s.contains(char::is_whitespace) => {
            (Some(s.to_owned()), r.to_owned())
        }
        _ => (None, message.clone()),
    };
    if let Some(explicit) = &f.step_id {
        if step.as_deref() != Some(explicit.as_str()) {
            rest = message.clone();
        }
        step = Some(explicit.clone());
    }
    let mut attempts = 1;
    if let Some(open) = rest.rfind(" (attempt ") {
        if let Some(n) = rest[open + " (attempt ".len()..]
            .strip_suffix(')')
            .and_then(|n| n.parse::<u32>().ok())
        {
            attempts = n;
            rest.truncate(open);
        }
    }
    let rest = if rest.trim().is_empty() {
        "compensation failed".to_owned()
    } else {
        rest
    };
    (step.unwrap_or_else(|| "unknown".to_owned()), rest, attempts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn given_state_machine_inputs_when_decoded_then_each_action_maps_to_its_task() {
        let begin: SagaTask =
            serde_json::from_value(json!({"action": "begin", "tenant": "t", "run_id": "r"}))
                .expect("begin");
        assert!(matches!(begin, SagaTask::Begin { .. }));
        let step: SagaTask = serde_json::from_value(json!({
            "action": "compensate_step", "tenant": "t", "run_id": "r", "step_id": "s2", "attempt": 2
        }))
        .expect("compensate_step");
        assert!(matches!(step, SagaTask::CompensateStep { attempt: 2, .. }));
        let finish: SagaTask = serde_json::from_value(json!({
            "action": "finish", "tenant": "t", "run_id": "r", "failure": {"error": "x"}
        }))
        .expect("finish");
        assert!(matches!(
            finish,
            SagaTask::Finish {
                failure: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn given_a_lambda_error_cause_when_parsed_then_step_error_and_attempts_come_back() {
        let msg = step_failure_message("s2", "todo 3 not found", 4);
        let cause = json!({"errorType": PERMANENT, "errorMessage": msg}).to_string();
        let parsed = parse_failure(&SagaFailure {
            step_id: None,
            error: Value::String(cause),
        });
        assert_eq!(parsed, ("s2".into(), "todo 3 not found".into(), 4));
    }

    #[test]
    fn given_plain_text_without_a_step_when_parsed_then_it_is_kept_whole() {
        let parsed = parse_failure(&SagaFailure {
            step_id: None,
            error: json!("Lambda timed out after 10.0 seconds"),
        });
        assert_eq!(
            parsed,
            (
                "unknown".into(),
                "Lambda timed out after 10.0 seconds".into(),
                1
            )
        );
    }

    #[test]
    fn given_the_caught_error_object_when_parsed_then_its_cause_or_name_is_the_error() {
        let msg = step_failure_message("s2", "todo 3 not found", 4);
        let cause = json!({"errorType": PERMANENT, "errorMessage": msg}).to_string();
        let parsed = parse_failure(&SagaFailure {
            step_id: None,
            error: json!({"Error": PERMANENT, "Cause": cause}),
        });
        assert_eq!(parsed, ("s2".into(), "todo 3 not found".into(), 4));
        // A crash of the function around the steps (a timeout, out of memory).
        let parsed = parse_failure(&SagaFailure {
            step_id: None,
            error: json!({"Error": "Lambda.Unknown", "Cause": "The function timed out"}),
        });
        assert_eq!(
            parsed,
            (
                "unknown".into(),
                "Lambda.Unknown: The function timed out".into(),
                1
            )
        );
        let parsed = parse_failure(&SagaFailure {
            step_id: None,
            error: json!({"Error": "States.Timeout"}),
        });
        assert_eq!(parsed, ("unknown".into(), "States.Timeout".into(), 1));
    }

    #[test]
    fn given_an_explicit_step_id_when_parsed_then_it_wins() {
        let parsed = parse_failure(&SagaFailure {
            step_id: Some("s3".into()),
            error: json!("s3: gone (attempt 2)"),
        });
        assert_eq!(parsed, ("s3".into(), "gone".into(), 2));
    }

    #[test]
    fn given_errors_when_converted_then_the_diagnostic_type_is_the_one_the_asl_matches() {
        let d: lambda_runtime::Diagnostic = SagaError {
            kind: ErrorKind::Transient,
            message: "s1: busy (attempt 1)".into(),
        }
        .into();
        assert_eq!(d.error_type, TRANSIENT);
        let d: lambda_runtime::Diagnostic =
            SagaError::app(AppError::NotFound("run r not found".into())).into();
        assert_eq!(d.error_type, PERMANENT);
        let d: lambda_runtime::Diagnostic =
            SagaError::app(AppError::Store(StoreError::unavailable("throttled"))).into();
        assert_eq!(d.error_type, TRANSIENT);
    }
}
