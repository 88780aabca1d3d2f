//! A plan: the DAG of tool steps a prompt was turned into.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A DAG of tool calls. Steps are listed in prompt order; edges are `depends_on`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Plan {
    /// The steps in prompt order; the last one's output is the run's result.
    pub steps: Vec<PlanStep>,
}

/// One tool call of a plan. String values in `input` may reference the output of a step it
/// depends on with `{{<step id>}}` (see [`crate::domain::refs`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanStep {
    /// The step's id, unique within the plan; other steps name it in `depends_on` and references.
    pub id: String,
    /// The name of the tool to call (a key of the tool registry).
    pub tool: String,
    /// The tool's input (JSON), possibly with `{{<step id>}}` references.
    pub input: Value,
    /// Steps that must complete before this one starts (empty: it can start at once).
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// The step waits for a person's decision before it runs. Set from the approval policy
    /// (`CRANE_APPROVAL`) when the run is created, whatever a planner said, so a model can
    /// neither skip nor invent an approval. Absent means `false`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub requires_approval: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Plan {
    /// The step with this id; `None` if the plan has none.
    pub fn step(&self, id: &str) -> Option<&PlanStep> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// The step whose output is the run's result: the last step of the plan.
    pub fn result_step(&self) -> Option<&PlanStep> {
        self.steps.last()
    }
}
