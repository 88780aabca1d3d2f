//! Work the engine hands out: a step attempt for a worker, a saga to start. Plain data,
//! carried by the dispatcher and the outbox.

use serde::{Deserialize, Serialize};

use super::RunKey;

/// A unit of work for a step worker: one attempt of one step of one run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StepJob {
    pub tenant: String,
    pub run_id: String,
    pub step_id: String,
    pub attempt: u32,
    pub correlation_id: String,
}

impl StepJob {
    pub fn key(&self) -> RunKey {
        RunKey::new(&self.tenant, &self.run_id)
    }
}

/// Something that must happen because of new events.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// Run this step attempt, not before `delay_ms` from now.
    Dispatch { job: StepJob, delay_ms: u64 },
    /// Undo the run's completed steps (the saga). `attempt` is 1 for the saga a failure or
    /// a cancel starts, n for the saga an operator's (n-1)th retry request starts.
    Compensate {
        key: RunKey,
        correlation_id: String,
        #[serde(default = "first_saga")]
        attempt: u32,
    },
}

fn first_saga() -> u32 {
    1
}
