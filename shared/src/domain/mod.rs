//! Runs, plans, steps and events, and the one `fold` that turns events into state.
//!
//! Nothing here does I/O: these are plain data types and pure functions, shared by the
//! engine, the projections, time-travel reads and replay in tests.

pub mod event;
pub mod fold;
pub mod job;
pub mod number;
pub mod output;
pub mod plan;
pub mod refs;
pub mod todo;

pub use event::{ErrorKind, Event, EventRecord, PlannerInfo, ToolError, Usage};
pub use fold::{
    fold, fold_until, ApprovalDecision, FoldError, RunState, RunStatus, StepApproval, StepState,
    StepStatus, Waiting,
};
pub use job::{Effect, StepJob};
pub use output::Output;
pub use plan::{Plan, PlanStep};
pub use todo::{Todo, TodoChange};

use serde::{Deserialize, Serialize};

/// The tenant every run and todo belongs to until authentication arrives.
pub const DEFAULT_TENANT: &str = "default";

/// Identifies one run within one tenant: every store key is built from both.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RunKey {
    /// The tenant that owns the run (see [`DEFAULT_TENANT`]).
    pub tenant: String,
    /// The run's id, a UUID v7 from [`new_run_id`], so ids sort by creation time.
    pub run_id: String,
}

impl RunKey {
    /// A key for `run_id` within `tenant`.
    pub fn new(tenant: impl Into<String>, run_id: impl Into<String>) -> Self {
        Self {
            tenant: tenant.into(),
            run_id: run_id.into(),
        }
    }
}

impl std::fmt::Display for RunKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.tenant, self.run_id)
    }
}

/// A new, time-ordered run id (UUID v7), so ids sort by creation time.
pub fn new_run_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
