//! The engine's decisions, given a run state, when an event or outcome arrives, then ...

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use super::*;
use crate::adapters::local::memory::MemoryTodos;
use crate::domain::{fold, Plan, PlanStep, PlannerInfo};

fn t(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_800_000_000_000 + ms).expect("valid")
}

fn registry() -> Registry {
    Registry::new(Arc::new(MemoryTodos::default()))
}

fn plan() -> Plan {
    let step = |id: &str, tool: &str, input: Value, deps: &[&str]| PlanStep {
        id: id.into(),
        tool: tool.into(),
        input,
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
    };
    Plan {
        steps: vec![
            step("s1", "calculator", json!({"expression": "2+3"}), &[]),
            step("s2", "todo", json!({"action": "add", "title": "x"}), &[]),
            step(
                "s3",
                "todo",
                json!({"action": "add", "title": "{{s1}}"}),
                &["s1", "s2"],
            ),
        ],
    }
}

/// A run state built from events, each a millisecond apart.
fn state(events: Vec<Event>) -> (RunState, Vec<EventRecord>) {
    let mut all = vec![
        Event::RunCreated {
            tenant: "default".into(),
            prompt: "p".into(),
            correlation_id: "c".into(),
            idempotency_key: None,
        },
        Event::PlanGenerated {
            planner: PlannerInfo::default(),
            plan: plan(),
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

fn started(id: &str, attempt: u32) -> Event {
    Event::StepStarted {
        step_id: id.into(),
        attempt,
        lease_ms: 10_000,
    }
}

fn completed(id: &str, output: Value) -> Event {
    Event::StepCompleted {
        step_id: id.into(),
        attempt: 1,
        output,
        duration_ms: 1,
    }
}

fn dispatched(effects: &[Effect]) -> Vec<(String, u32, u64)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Dispatch { job, delay_ms } => {
                Some((job.step_id.clone(), job.attempt, *delay_ms))
            }
            _ => None,
        })
        .collect()
}

const POLICY: RetryPolicy = RetryPolicy {
    base_ms: 1_000,
    max_retries: 3,
    max_delay_ms: 60_000,
    jitter: 0.0,
};

#[test]
fn given_a_new_plan_when_reacting_then_only_steps_without_dependencies_are_dispatched() {
    let (s, records) = state(vec![]);
    let effects = react(&s, &records[1..], &registry());
    assert_eq!(
        dispatched(&effects),
        vec![("s1".into(), 1, 0), ("s2".into(), 1, 0)]
    );
}

#[test]
fn given_one_of_two_dependencies_done_when_reacting_then_nothing_is_unlocked_until_both_are() {
    let (s, records) = state(vec![started("s1", 1), completed("s1", json!(5))]);
    assert!(dispatched(&react(&s, &records[records.len() - 1..], &registry())).is_empty());
    let (s, records) = state(vec![
        started("s1", 1),
        started("s2", 1),
        completed("s1", json!(5)),
        completed("s2", json!({})),
    ]);
    assert_eq!(
        dispatched(&react(&s, &records[records.len() - 1..], &registry())),
        vec![("s3".into(), 1, 0)]
    );
}

#[test]
fn given_a_retry_event_when_reacting_then_the_next_attempt_is_dispatched_with_its_delay() {
    let (s, records) = state(vec![
        started("s1", 1),
        Event::StepAttemptFailed {
            step_id: "s1".into(),
            attempt: 1,
            error: "flaky".into(),
            kind: ErrorKind::Transient,
            duration_ms: 1,
            retry_in_ms: Some(1_000),
        },
    ]);
    assert_eq!(
        dispatched(&react(&s, &records[records.len() - 1..], &registry())),
        vec![("s1".into(), 2, 1_000)]
    );
}

#[test]
fn given_a_pending_step_when_claimed_then_attempt_one_starts() {
    let (s, _) = state(vec![]);
    let c = claim(&s, "s1", 1, t(10), &POLICY, 10_000, None);
    assert_eq!(
        c,
        Claim::Start {
            attempt: 1,
            events: vec![Event::StepStarted {
                step_id: "s1".into(),
                attempt: 1,
                lease_ms: 10_000
            }]
        }
    );
}

#[test]
fn given_duplicates_and_stale_jobs_when_claimed_then_they_are_skipped() {
    let (s, _) = state(vec![started("s1", 1), completed("s1", json!(5))]);
    assert!(matches!(
        claim(&s, "s1", 1, t(10), &POLICY, 10_000, None),
        Claim::Skip(_)
    ));
    assert!(matches!(
        claim(&s, "nope", 1, t(10), &POLICY, 10_000, None),
        Claim::Skip(_)
    ));
    // s3 depends on s2, which has not completed.
    assert!(matches!(
        claim(&s, "s3", 1, t(10), &POLICY, 10_000, None),
        Claim::Skip(_)
    ));
}

#[test]
fn given_a_step_held_by_another_worker_when_claimed_then_later_until_its_lease_ends() {
    let (s, _) = state(vec![started("s1", 1)]);
    let lease_end = t(2) + Duration::milliseconds(10_000);
    assert_eq!(
        claim(&s, "s1", 1, t(100), &POLICY, 10_000, None),
        Claim::Later(lease_end)
    );
}

#[test]
fn given_an_expired_lease_when_claimed_then_the_lost_attempt_is_recorded_and_the_next_starts() {
    let (s, _) = state(vec![started("s1", 1)]);
    let Claim::Start { attempt, events } = claim(&s, "s1", 1, t(20_000), &POLICY, 10_000, None)
    else {
        panic!("should take over");
    };
    assert_eq!(attempt, 2);
    assert!(matches!(
        &events[0],
        Event::StepAttemptFailed {
            attempt: 1,
            retry_in_ms: Some(0),
            ..
        }
    ));
    // A restarted local runtime voids older leases at once.
    let c = claim(&s, "s1", 1, t(100), &POLICY, 10_000, Some(t(50)));
    assert!(matches!(c, Claim::Start { attempt: 2, .. }));
}

#[test]
fn given_a_lost_last_attempt_when_claimed_then_the_step_and_run_fail() {
    let (s, _) = state(vec![started("s1", 4)]);
    let Claim::Record(events) = claim(&s, "s1", 4, t(20_000), &POLICY, 10_000, None) else {
        panic!("no attempts left");
    };
    let names: Vec<&str> = events.iter().map(Event::type_name).collect();
    assert_eq!(names, vec!["StepAttemptFailed", "StepFailed", "RunFailed"]);
}

#[test]
fn given_a_retry_not_yet_due_when_claimed_then_later() {
    let (s, _) = state(vec![
        started("s1", 1),
        Event::StepAttemptFailed {
            step_id: "s1".into(),
            attempt: 1,
            error: "e".into(),
            kind: ErrorKind::Transient,
            duration_ms: 1,
            retry_in_ms: Some(1_000),
        },
    ]);
    assert_eq!(
        claim(&s, "s1", 2, t(10), &POLICY, 10_000, None),
        Claim::Later(t(3) + Duration::milliseconds(1_000))
    );
    assert!(matches!(
        claim(&s, "s1", 2, t(5_000), &POLICY, 10_000, None),
        Claim::Start { attempt: 2, .. }
    ));
    assert!(matches!(
        claim(&s, "s1", 1, t(5_000), &POLICY, 10_000, None),
        Claim::Skip(_)
    ));
}

#[test]
fn given_outcomes_when_recorded_then_success_transient_and_permanent_map_to_their_events() {
    let (s, _) = state(vec![started("s1", 1)]);
    let ok = outcome(&s, "s1", 1, Ok(json!(5)), 3, &POLICY, 0.5).expect("current");
    assert_eq!(
        ok,
        vec![Event::StepCompleted {
            step_id: "s1".into(),
            attempt: 1,
            output: json!(5),
            duration_ms: 3
        }]
    );
    let transient = outcome(
        &s,
        "s1",
        1,
        Err(ToolError::transient("busy")),
        3,
        &POLICY,
        0.5,
    )
    .expect("current");
    assert!(matches!(
        &transient[..],
        [Event::StepAttemptFailed {
            retry_in_ms: Some(1_000),
            ..
        }]
    ));
    let permanent = outcome(
        &s,
        "s1",
        1,
        Err(ToolError::permanent("syntax")),
        3,
        &POLICY,
        0.5,
    )
    .expect("current");
    let names: Vec<&str> = permanent.iter().map(Event::type_name).collect();
    assert_eq!(names, vec!["StepAttemptFailed", "StepFailed", "RunFailed"]);
    assert!(
        outcome(&s, "s1", 2, Ok(json!(1)), 1, &POLICY, 0.5).is_err(),
        "a stale attempt is dropped"
    );
}

#[test]
fn given_the_last_step_completes_when_concluded_then_the_run_completes_with_its_output() {
    let (s, _) = state(vec![
        started("s1", 1),
        started("s2", 1),
        completed("s1", json!(5)),
        completed("s2", json!({"id": 1})),
        started("s3", 1),
    ]);
    let events = outcome(
        &s,
        "s3",
        1,
        Ok(json!({"id": 2, "title": "5"})),
        1,
        &POLICY,
        0.0,
    )
    .expect("current");
    assert_eq!(
        events.last(),
        Some(&Event::RunCompleted {
            result: json!({"id": 2, "title": "5"})
        })
    );
}

#[test]
fn given_a_failed_run_with_completed_todo_steps_when_reacting_then_the_saga_starts() {
    let (s, records) = state(vec![
        started("s2", 1),
        completed("s2", json!({"id": 1})),
        started("s1", 1),
        Event::StepFailed {
            step_id: "s1".into(),
            attempt: 1,
            error: "x".into(),
        },
        Event::RunFailed {
            error: "x".into(),
            step_id: Some("s1".into()),
        },
    ]);
    let effects = react(&s, &records[records.len() - 2..], &registry());
    assert_eq!(
        effects,
        vec![Effect::Compensate {
            key: RunKey::new("default", "r1"),
            correlation_id: "c".into()
        }]
    );
    assert_eq!(saga::compensation_order(&s, &registry()), vec!["s2"]);
}

#[test]
fn given_a_failed_run_with_nothing_to_undo_when_reacting_then_no_saga() {
    let (s, records) = state(vec![
        started("s1", 1),
        completed("s1", json!(5)),
        started("s2", 1),
        Event::StepFailed {
            step_id: "s2".into(),
            attempt: 1,
            error: "x".into(),
        },
        Event::RunFailed {
            error: "x".into(),
            step_id: Some("s2".into()),
        },
    ]);
    assert!(react(&s, &records[records.len() - 2..], &registry()).is_empty());
}

#[test]
fn given_completions_in_some_order_when_compensating_then_the_order_is_reversed() {
    let (s, _) = state(vec![
        started("s2", 1),
        started("s1", 1),
        completed("s2", json!({"id": 1})),
        completed("s1", json!(5)),
        started("s3", 1),
        completed("s3", json!({"id": 2})),
    ]);
    assert_eq!(saga::compensation_order(&s, &registry()), vec!["s3", "s2"]);
}

#[test]
fn given_a_cancel_with_a_step_running_when_reacting_then_the_saga_waits_for_it() {
    let (s, records) = state(vec![
        started("s1", 1),
        Event::CancelRequested { reason: None },
    ]);
    assert!(react(&s, &records[records.len() - 1..], &registry()).is_empty());
    assert!(ready_steps(&s).is_empty(), "nothing new is scheduled");
    let (s, records) = state(vec![
        started("s1", 1),
        Event::CancelRequested { reason: None },
        completed("s1", json!(5)),
    ]);
    assert!(matches!(
        &react(&s, &records[records.len() - 1..], &registry())[..],
        [Effect::Compensate { .. }]
    ));
}
