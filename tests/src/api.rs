//! Crane's HTTP answers as typed structs, for tests that check a field: read a reply with
//! `serde_json::from_value::<RunView>(body)` (or [`read`]) instead of indexing a
//! `serde_json::Value` with `["status"]`. Only the fields tests read are here; unknown
//! fields are ignored, since whether a body has exactly the documented fields is the job of
//! the schema checks against `infra/openapi.json`, which keep the raw JSON.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

/// `body` read as `T`; panics with the body if it does not fit.
pub fn read<T: DeserializeOwned>(body: &Value) -> T {
    serde_json::from_value(body.clone()).unwrap_or_else(|e| {
        panic!(
            "the body is not a {}: {e}\nbody: {body}",
            std::any::type_name::<T>()
        )
    })
}

/// A run (`Run` in the document): `POST /runs`, `GET /runs/{id}`.
#[derive(Debug, Clone, Deserialize)]
pub struct RunView {
    /// The run's id.
    pub run_id: String,
    /// The tenant the run belongs to.
    pub tenant: String,
    /// The prompt it was created with.
    pub prompt: String,
    /// `pending`, `running`, `completed`, `failed`, `cancelled`, `compensated`, ...
    pub status: String,
    /// The correlation id of the request that created it.
    pub correlation_id: String,
    /// The planner that planned it, if it was planned.
    pub planner: Option<PlannerView>,
    /// Its plan, once planned.
    pub plan: Option<PlanView>,
    /// Every step with its status.
    pub steps: Vec<StepView>,
    /// The run's result, once completed.
    pub result: Option<Value>,
    /// Why it failed (or its compensation failed), if it did.
    pub error: Option<String>,
    /// Whether a cancel was requested.
    pub cancel_requested: bool,
    /// Step ids in the order they completed.
    pub completion_order: Vec<String>,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// The sequence number of its last event.
    pub last_seq: u64,
    /// The steps waiting for a person's approval.
    pub awaiting_approval: Vec<String>,
}

/// A run's plan (`Plan`).
#[derive(Debug, Clone, Deserialize)]
pub struct PlanView {
    /// The planned steps, in prompt order.
    pub steps: Vec<PlanStepView>,
}

/// One planned step (`PlanStep`).
#[derive(Debug, Clone, Deserialize)]
pub struct PlanStepView {
    /// Its id (`s1`).
    pub id: String,
    /// The tool it calls.
    pub tool: String,
    /// Whether it waits for a person's approval (absent means no).
    #[serde(default)]
    pub requires_approval: bool,
}

/// One step of a run (`Step`).
#[derive(Debug, Clone, Deserialize)]
pub struct StepView {
    /// The step's id in the plan (`s1`).
    pub id: String,
    /// The tool it calls.
    pub tool: String,
    /// The step's status.
    pub status: String,
    /// Attempts made.
    pub attempts: u32,
    /// Its output, once completed.
    pub output: Option<Value>,
    /// Its last error.
    pub error: Option<String>,
    /// Its approval, for a step that needs one.
    pub approval: Option<ApprovalView>,
}

/// The approval of a step (`StepApproval`).
#[derive(Debug, Clone, Deserialize)]
pub struct ApprovalView {
    /// Who may decide.
    pub approver: String,
    /// The input the tool will be given if approved.
    pub input: Value,
    /// `approved` or `rejected`, once decided.
    pub decision: Option<String>,
}

/// The planner of a run (`PlannerInfo`).
#[derive(Debug, Clone, Deserialize)]
pub struct PlannerView {
    /// `pattern`, `llm`, `fixed`, ...
    pub name: String,
    /// The model, for a model planner.
    pub model: Option<String>,
    /// Why a fallback planned instead, if one did.
    pub fallback_reason: Option<String>,
    /// The planner that was asked first, when a fallback planned instead.
    pub requested: Option<String>,
}

/// A page of runs (`RunList`): `GET /runs`.
#[derive(Debug, Clone, Deserialize)]
pub struct RunPage {
    /// The runs of this page, newest first.
    pub runs: Vec<RunView>,
    /// The cursor of the next page, if there is one.
    pub next_cursor: Option<String>,
}

/// A run's events (`EventList`): `GET /runs/{id}/events`.
#[derive(Debug, Clone, Deserialize)]
pub struct EventList {
    /// The run's id.
    pub run_id: String,
    /// Its events in order.
    pub events: Vec<EventView>,
}

/// One event of a run (`Event`).
#[derive(Debug, Clone, Deserialize)]
pub struct EventView {
    /// Its sequence number.
    pub seq: u64,
    /// Its type name (`RunCreated`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// Its data.
    pub data: Value,
}

/// A todo (`Todo`).
#[derive(Debug, Clone, Deserialize)]
pub struct TodoView {
    /// Its id.
    pub id: u64,
    /// Its title.
    pub title: String,
    /// Whether it is done.
    pub done: bool,
}

/// A page of todos (`TodoList`): `GET /todos`.
#[derive(Debug, Clone, Deserialize)]
pub struct TodoPage {
    /// The todos of this page, in id order.
    pub todos: Vec<TodoView>,
    /// The cursor of the next page, if there is one.
    pub next_cursor: Option<String>,
}

/// The tools (`ToolList`): `GET /tools`.
#[derive(Debug, Clone, Deserialize)]
pub struct ToolList {
    /// Every tool with its breaker.
    pub tools: Vec<ToolView>,
}

/// One tool (`Tool`).
#[derive(Debug, Clone, Deserialize)]
pub struct ToolView {
    /// Its name.
    pub name: String,
    /// Its circuit breaker.
    pub breaker: BreakerView,
}

/// A tool's circuit breaker (`BreakerState`).
#[derive(Debug, Clone, Deserialize)]
pub struct BreakerView {
    /// `closed`, `open` or `half_open`.
    pub state: String,
}

/// `GET /health` (`Health`).
#[derive(Debug, Clone, Deserialize)]
pub struct Health {
    /// `ok` or `degraded` (`unavailable` with a 503 when the store is).
    pub status: String,
    /// The store's health: `ok` or `unavailable`.
    pub store: String,
    /// The planner's health.
    pub planner: PlannerHealth,
}

/// The planner part of [`Health`].
#[derive(Debug, Clone, Deserialize)]
pub struct PlannerHealth {
    /// The planner's name.
    pub name: String,
    /// `ok` or `degraded`.
    pub status: String,
    /// Why it is degraded.
    pub reason: Option<String>,
}

/// Every error body (`Error`): `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The error of an [`ErrorBody`].
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorDetail {
    /// The stable code (`not_found`, `validation_failed`, ...).
    pub code: String,
    /// A message for people.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn given_an_error_body_when_read_then_its_code_and_message_are_typed() {
        let e: ErrorBody = read(&json!({"error": {"code": "not_found", "message": "no run"}}));
        assert_eq!(e.error.code, "not_found");
        assert_eq!(e.error.message, "no run");
    }

    #[test]
    #[should_panic(expected = "the body is not a")]
    fn given_a_body_of_another_shape_when_read_then_it_panics_with_the_body() {
        let _: ErrorBody = read(&json!({"runs": []}));
    }
}
