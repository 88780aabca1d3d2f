//! What the engine's tests share: a fixed clock, the standard tool registry, plan steps,
//! and run states folded from events.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::adapters::local::memory::MemoryTodos;
use crate::domain::{fold, Event, EventRecord, Plan, PlanStep, PlannerInfo, RunState};
use crate::tools::Registry;

/// `ms` milliseconds after a fixed instant.
pub(crate) fn t(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_800_000_000_000 + ms).expect("valid")
}

/// The standard tools over an in-memory todo store.
pub(crate) fn registry() -> Registry {
    Registry::new(Arc::new(MemoryTodos::default()))
}

/// A plan step that needs no approval.
pub(crate) fn step(id: &str, tool: &str, input: Value, deps: &[&str]) -> PlanStep {
    PlanStep {
        id: id.into(),
        tool: tool.into(),
        input,
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        requires_approval: false,
    }
}

/// Run `r1` of `tenant`: created with `plan`, then `events`, each a millisecond apart;
/// its state and its records.
pub(crate) fn history(
    tenant: &str,
    plan: Plan,
    events: Vec<Event>,
) -> (RunState, Vec<EventRecord>) {
    let mut all = vec![
        Event::RunCreated {
            tenant: tenant.into(),
            prompt: "p".into(),
            correlation_id: "c".into(),
            idempotency_key: None,
        },
        Event::PlanGenerated {
            planner: PlannerInfo::default(),
            plan: plan.into(),
        },
    ];
    all.extend(events);
    let records: Vec<EventRecord> = all
        .into_iter()
        .enumerate()
        .map(|(i, e)| EventRecord::new(i as u64 + 1, t(i as i64), e))
        .collect();
    (fold("r1", &records).expect("folds"), records)
}
