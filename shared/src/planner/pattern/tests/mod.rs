//! Tests of the pattern planner, given / when / then, by concern: arithmetic, todos,
//! compound prompts and references, refusals and robustness. The helpers here plan a
//! prompt and compare the whole plan.

mod arithmetic;
mod compound;
mod refusals;
mod table;
mod todo;

use std::sync::Arc;

use serde_json::{json, Value};

use super::*;
use crate::adapters::local::memory::MemoryTodos;
use crate::domain::Plan;
use crate::planner::PlanError;
use crate::tools::Registry;

pub(super) fn registry() -> Registry {
    Registry::new(Arc::new(MemoryTodos::default()))
}

/// The plan for `prompt`, validated; panics with the error otherwise.
pub(super) fn planned(prompt: &str) -> Plan {
    let mut plan = PatternPlanner
        .plan_prompt(prompt)
        .unwrap_or_else(|e| panic!("{prompt:?} should plan: {e}"));
    crate::planner::validate(&mut plan, &registry())
        .unwrap_or_else(|e| panic!("{prompt:?} should validate: {e}"));
    // Validation (which adds the edges of references and of the shared todo store) is
    // complete: a validated plan validates to itself.
    let validated = plan.clone();
    crate::planner::validate(&mut plan, &registry())
        .unwrap_or_else(|e| panic!("{prompt:?} should validate again: {e}"));
    assert_eq!(
        plan, validated,
        "validate changed the validated plan of {prompt:?}"
    );
    plan
}

/// The error for `prompt`.
pub(super) fn refused(prompt: &str) -> String {
    match PatternPlanner.plan_prompt(prompt) {
        Ok(plan) => panic!("{prompt:?} should be refused, got {plan:?}"),
        Err(PlanError::NotUnderstood(m)) => m,
        Err(other) => panic!("{prompt:?} should be not understood, got {other:?}"),
    }
}

/// One expected step: tool, input, dependencies.
pub(super) type Want = (&'static str, Value, &'static [&'static str]);

pub(super) fn assert_plan(prompt: &str, want: &[Want]) {
    let plan = planned(prompt);
    let got: Vec<(String, Value, Vec<String>)> = plan
        .steps
        .iter()
        .map(|s| (s.tool.clone(), s.input.clone(), s.depends_on.clone()))
        .collect();
    let want: Vec<(String, Value, Vec<String>)> = want
        .iter()
        .map(|(t, i, d)| {
            (
                t.to_string(),
                i.clone(),
                d.iter().map(|s| s.to_string()).collect(),
            )
        })
        .collect();
    assert_eq!(got, want, "plan of {prompt:?}");
    for (i, step) in plan.steps.iter().enumerate() {
        assert_eq!(step.id, format!("s{}", i + 1));
    }
}

pub(super) fn calc(expression: &str) -> Value {
    json!({ "expression": expression })
}

pub(super) fn add_todo(title: &str) -> Value {
    json!({ "action": "add", "title": title })
}

pub(super) fn list_todos() -> Value {
    json!({ "action": "list" })
}
