//! Saga order: which completed steps are compensated, and in what order.

use crate::domain::{RunState, StepStatus};
use crate::tools::Registry;

/// The completed steps that declare a compensation, most recently completed first.
pub fn compensation_order(state: &RunState, registry: &Registry) -> Vec<String> {
    state
        .completion_order
        .iter()
        .rev()
        .filter(|id| {
            let completed = state.step(id).map(|s| s.status) == Some(StepStatus::Completed);
            let compensable = state.plan.step(id).is_some_and(|p| {
                registry
                    .get(&p.tool)
                    .is_some_and(|t| t.compensation(&p.input).is_some())
            });
            completed && compensable
        })
        .cloned()
        .collect()
}
