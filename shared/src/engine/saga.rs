//! Saga order: which completed steps are compensated, and in what order.

use super::ToolFacts;
use crate::domain::{RunState, StepStatus};

/// The completed steps that declare a compensation, most recently completed first.
pub fn compensation_order(state: &RunState, tools: &dyn ToolFacts) -> Vec<String> {
    state
        .completion_order
        .iter()
        .rev()
        .filter(|id| {
            let completed = state.step(id).map(|s| s.status) == Some(StepStatus::Completed);
            let compensable = state
                .plan
                .step(id)
                .is_some_and(|p| tools.compensable(&p.tool, &p.input));
            completed && compensable
        })
        .cloned()
        .collect()
}
