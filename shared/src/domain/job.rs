//! Work the engine hands out: a step attempt for a worker, a saga to start. Plain data,
//! carried by the dispatcher and the outbox.

use serde::{Deserialize, Serialize};

use super::RunKey;

/// A unit of work for a step worker: one attempt of one step of one run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StepJob {
    /// The tenant that owns the run.
    pub tenant: String,
    /// The run the step belongs to.
    pub run_id: String,
    /// The id of the step in the plan.
    pub step_id: String,
    /// The attempt to run, from 1; a worker ignores a job whose attempt is no longer current.
    pub attempt: u32,
    /// The run's correlation id, carried into the worker's logs.
    pub correlation_id: String,
}

impl StepJob {
    /// The run this job belongs to.
    pub fn key(&self) -> RunKey {
        RunKey::new(&self.tenant, &self.run_id)
    }
}

/// Something that must happen because of new events.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// Run this step attempt, not before `delay_ms` from now.
    Dispatch {
        /// The step attempt to run.
        job: StepJob,
        /// How long to wait before delivering it, in milliseconds (0: at once; a retry's backoff).
        delay_ms: u64,
    },
    /// Undo the run's completed steps (the saga). `attempt` is 1 for the saga a failure or
    /// a cancel starts, n for the saga an operator's (n-1)th retry request starts.
    Compensate {
        /// The run whose completed steps are undone.
        key: RunKey,
        /// The run's correlation id, carried into the saga's logs.
        correlation_id: String,
        /// Which saga this is: 1 for the first, n for the operator's (n-1)th retry (1 when absent).
        #[serde(default = "first_saga")]
        attempt: u32,
    },
}

fn first_saga() -> u32 {
    1
}
