//! Planning: turning a prompt into a validated [`Plan`].
//!
//! Every planner's output, the LLM's above all, goes through [`validate`]: known tools,
//! inputs valid for the tool's schema, references that resolve, no cycles, bounded size,
//! and the resource-ordering rule (steps touching the same store keep prompt order when
//! one of them writes).

pub mod fallback;
pub mod model;
pub mod pattern;
pub mod select;

use async_trait::async_trait;

use crate::domain::{refs, Plan, PlannerInfo};
use crate::engine::dag;
use crate::tools::Registry;

pub use pattern::PatternPlanner;

/// Most steps a plan may have.
pub const MAX_STEPS: usize = 50;
/// Longest step id.
pub const MAX_STEP_ID_LEN: usize = 64;

/// A plan and who made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// The validated plan.
    pub plan: Plan,
    /// What the run records and clients see; after a fallback, `fallback_reason` is a
    /// short category (`timeout`, `rate_limited`, ...).
    pub info: PlannerInfo,
    /// After a fallback, the full reason (the model's error, which may name internal hosts
    /// or quote the model). For the logs only: it is never stored or returned.
    pub fallback_detail: Option<String>,
}

/// Why no plan came out.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// The prompt asks for something no planner understands; the message says what is.
    #[error("{0}")]
    NotUnderstood(String),
    /// A plan was produced but breaks a rule.
    #[error("invalid plan: {0}")]
    Invalid(String),
    /// The planner could not be reached or answered badly (the LLM planners).
    #[error("planner unavailable: {0}")]
    Unavailable(String),
}

/// Turns a prompt into a validated plan.
#[async_trait]
pub trait Planner: Send + Sync {
    /// `pattern`, `llm`, `bedrock`.
    fn name(&self) -> &'static str;

    /// Plan `prompt` with the tools of `registry`. The result is already validated.
    async fn plan(&self, prompt: &str, registry: &Registry) -> Result<Planned, PlanError>;

    /// Why the planner is degraded (a wrong key, a bad configuration), if it is; reported
    /// by `GET /health` so a misconfiguration cannot hide behind the fallback.
    fn degraded(&self) -> Option<String> {
        None
    }
}

/// A planner that always returns one given plan (validated like any other), named
/// `fixed`: for tests and for replaying a known plan.
#[derive(Debug, Clone, Default)]
pub struct FixedPlanner(pub Plan);

#[async_trait]
impl Planner for FixedPlanner {
    fn name(&self) -> &'static str {
        "fixed"
    }

    async fn plan(&self, _prompt: &str, registry: &Registry) -> Result<Planned, PlanError> {
        let mut plan = self.0.clone();
        validate(&mut plan, registry)?;
        Ok(Planned {
            plan,
            info: PlannerInfo {
                name: "fixed".into(),
                ..Default::default()
            },
            fallback_detail: None,
        })
    }
}

/// Normalise and check a plan: dependencies implied by references and by the
/// resource-ordering rule are added (this is the only place that adds them; planners
/// need not), each step's dependencies are listed in plan order, then every rule is
/// enforced.
pub fn validate(plan: &mut Plan, registry: &Registry) -> Result<(), PlanError> {
    let invalid = |m: String| PlanError::Invalid(m);
    if plan.steps.is_empty() {
        return Err(invalid("the plan has no steps".into()));
    }
    if plan.steps.len() > MAX_STEPS {
        return Err(invalid(format!(
            "the plan has {} steps, more than the limit of {MAX_STEPS}",
            plan.steps.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for step in &plan.steps {
        let valid_id = !step.id.is_empty()
            && step.id.len() <= MAX_STEP_ID_LEN
            && step
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid_id {
            return Err(invalid(format!(
                "step id '{}' must be 1-{MAX_STEP_ID_LEN} letters, digits, '_' or '-'",
                truncate(&step.id)
            )));
        }
        if !seen.insert(step.id.as_str()) {
            return Err(invalid(format!("step id {} is used twice", step.id)));
        }
    }
    // Resolve tools and check inputs; add the edges references and shared stores imply.
    let mut accesses = Vec::with_capacity(plan.steps.len());
    for step in &plan.steps {
        let tool = registry.get(&step.tool).ok_or_else(|| {
            invalid(format!(
                "step {} uses unknown tool '{}' (known: {})",
                step.id,
                truncate(&step.tool),
                registry.names().join(", ")
            ))
        })?;
        tool.validate(&step.input)
            .map_err(|e| invalid(format!("step {} ({}): {e}", step.id, step.tool)))?;
        accesses.push(tool.access(&step.input));
    }
    let ids: Vec<String> = plan.steps.iter().map(|s| s.id.clone()).collect();
    for (i, step) in plan.steps.iter_mut().enumerate() {
        for r in refs::references(&step.input) {
            if !ids.contains(&r) {
                return Err(invalid(format!(
                    "step {} references unknown step {r}",
                    step.id
                )));
            }
            if r == step.id {
                return Err(invalid(format!(
                    "step {} references its own output",
                    step.id
                )));
            }
            push_unique(&mut step.depends_on, r);
        }
        if let Some(mine) = accesses[i] {
            for (j, theirs) in accesses.iter().enumerate().take(i) {
                if let Some(theirs) = theirs {
                    if theirs.resource == mine.resource && (theirs.writes || mine.writes) {
                        push_unique(&mut step.depends_on, ids[j].clone());
                    }
                }
            }
        }
        if let Some(bad) = step.depends_on.iter().find(|d| !ids.contains(d)) {
            return Err(invalid(format!(
                "step {} depends on unknown step {}",
                step.id,
                truncate(bad)
            )));
        }
        let mut unique = Vec::with_capacity(step.depends_on.len());
        for d in step.depends_on.drain(..) {
            push_unique(&mut unique, d);
        }
        // Listed in plan order, however they were found (given, referenced, or implied
        // by a shared store).
        unique.sort_by_key(|d| ids.iter().position(|id| id == d));
        step.depends_on = unique;
    }
    dag::levels(plan).map_err(invalid)?;
    Ok(())
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

fn truncate(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}...", s.chars().take(40).collect::<String>())
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::local::memory::MemoryTodos;
    use crate::domain::PlanStep;
    use serde_json::json;
    use std::sync::Arc;

    fn registry() -> Registry {
        Registry::new(Arc::new(MemoryTodos::default()))
    }

    fn step(id: &str, tool: &str, input: serde_json::Value, deps: &[&str]) -> PlanStep {
        PlanStep {
            id: id.into(),
            tool: tool.into(),
            input,
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            requires_approval: false,
        }
    }

    #[test]
    fn given_references_and_shared_stores_when_validated_then_edges_are_added() {
        let mut plan = Plan {
            steps: vec![
                step("s1", "calculator", json!({"expression": "3*7"}), &[]),
                step(
                    "s2",
                    "todo",
                    json!({"action": "add", "title": "{{s1}}"}),
                    &[],
                ),
                step("s3", "todo", json!({"action": "list"}), &[]),
                step("s4", "calculator", json!({"expression": "1+1"}), &[]),
            ],
        };
        validate(&mut plan, &registry()).expect("valid");
        assert_eq!(plan.steps[1].depends_on, vec!["s1"]);
        assert_eq!(plan.steps[2].depends_on, vec!["s2"]);
        assert!(plan.steps[3].depends_on.is_empty());
    }

    #[test]
    fn given_two_reads_of_one_store_when_validated_then_they_stay_parallel() {
        let mut plan = Plan {
            steps: vec![
                step("a", "todo", json!({"action": "list"}), &[]),
                step("b", "todo", json!({"action": "get", "id": 1}), &[]),
            ],
        };
        validate(&mut plan, &registry()).expect("valid");
        assert!(plan.steps.iter().all(|s| s.depends_on.is_empty()));
    }

    #[test]
    fn given_broken_plans_when_validated_then_each_is_refused_with_a_reason() {
        let calc =
            |id: &str, deps: &[&str]| step(id, "calculator", json!({"expression": "1"}), deps);
        let cases: Vec<(Vec<PlanStep>, &str)> = vec![
            (vec![], "no steps"),
            (
                (0..51).map(|i| calc(&format!("s{i}"), &[])).collect(),
                "limit of 50",
            ),
            (vec![calc("a", &[]), calc("a", &[])], "used twice"),
            (vec![calc("bad id", &[])], "must be 1-64"),
            (
                vec![step("a", "shell", json!({}), &[])],
                "unknown tool 'shell'",
            ),
            (
                vec![step("a", "calculator", json!({"expr": "1"}), &[])],
                "expression is required",
            ),
            (
                vec![step("a", "todo", json!({"action": "add"}), &[])],
                "needs a title",
            ),
            (vec![calc("a", &["zz"])], "unknown step zz"),
            (
                vec![step("a", "calculator", json!({"expression": "{{b}}"}), &[])],
                "references unknown step b",
            ),
            (
                vec![step("a", "calculator", json!({"expression": "{{a}}"}), &[])],
                "its own output",
            ),
            (vec![calc("a", &["b"]), calc("b", &["a"])], "cycle"),
        ];
        for (steps, want) in cases {
            let mut plan = Plan { steps };
            let err = validate(&mut plan, &registry())
                .expect_err(want)
                .to_string();
            assert!(err.contains(want), "{err} should contain {want}");
        }
    }
}
