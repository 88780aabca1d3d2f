use super::*;
use crate::domain::plan::PlanStep;
use serde_json::json;

fn t(s: u32) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + i64::from(s), 0).expect("valid")
}

fn log(events: Vec<Event>) -> Vec<EventRecord> {
    events
        .into_iter()
        .enumerate()
        .map(|(i, e)| EventRecord::new(i as u64 + 1, t(i as u32), e))
        .collect()
}

/// The first attempt of `step` starts.
fn started(step: &str) -> Event {
    Event::StepStarted {
        step_id: step.into(),
        attempt: 1,
        lease_ms: 1000,
    }
}

/// The first attempt of `step` completes with `output`.
fn completed(step: &str, output: serde_json::Value) -> Event {
    Event::StepCompleted {
        step_id: step.into(),
        attempt: 1,
        output: output.into(),
        duration_ms: 1,
    }
}

fn created() -> Event {
    Event::RunCreated {
        tenant: "default".into(),
        prompt: "calculate 1+1 and add todo x".into(),
        correlation_id: "c-1".into(),
        idempotency_key: None,
    }
}

fn planned() -> Event {
    Event::PlanGenerated {
        planner: PlannerInfo {
            name: "pattern".into(),
            ..Default::default()
        },
        plan: Plan {
            steps: vec![
                PlanStep {
                    id: "s1".into(),
                    tool: "calculator".into(),
                    input: json!({"expression": "1+1"}),
                    depends_on: vec![],
                    requires_approval: false,
                },
                PlanStep {
                    id: "s2".into(),
                    tool: "todo".into(),
                    input: json!({"action": "add", "title": "x"}),
                    depends_on: vec![],
                    requires_approval: false,
                },
            ],
        }
        .into(),
    }
}

#[test]
fn given_a_failed_compensation_when_a_retry_is_requested_then_the_run_compensates_again_from_the_failed_step(
) {
    let mut events = vec![
        created(),
        planned(),
        started("s2"),
        completed("s2", json!({"id": 1})),
        started("s1"),
        Event::StepFailed {
            step_id: "s1".into(),
            attempt: 1,
            error: "boom".into(),
        },
        Event::RunFailed {
            error: "step s1 failed: boom".into(),
            step_id: Some("s1".into()),
        },
        Event::CompensationStarted {
            steps: vec!["s2".into()],
        },
        Event::StepCompensationFailed {
            step_id: "s2".into(),
            error: "todo store down".into(),
            attempts: 4,
        },
        Event::RunCompensationFailed {
            step_id: "s2".into(),
            error: "todo store down".into(),
        },
    ];
    let failed = fold("r1", &log(events.clone())).expect("folds");
    assert_eq!(failed.status, RunStatus::CompensationFailed);
    assert!(failed
        .error
        .as_deref()
        .is_some_and(|e| e.contains("compensation of step s2")));

    events.push(Event::CompensationRetryRequested {
        attempt: 2,
        reason: Some("todo store repaired".into()),
    });
    let again = fold("r1", &log(events)).expect("folds");
    assert_eq!(again.status, RunStatus::Compensating);
    assert_eq!(again.finished_at, None);
    let s2 = again.step("s2").expect("s2");
    assert_eq!(s2.status, StepStatus::Completed, "s2 is to undo again");
    assert_eq!(s2.compensation_error, None);
    assert_eq!(again.error.as_deref(), Some("step s1 failed: boom"));
}

#[test]
fn given_a_completed_step_when_an_input_references_outputs_then_only_those_present_are_parsed() {
    let state = fold(
        "r1",
        &log(vec![
            created(),
            planned(),
            started("s1"),
            completed("s1", json!({"n": [2.5]})),
        ]),
    )
    .expect("folds");
    let input = json!({"title": "x {{s1}} {{s2}}", "more": ["{{s9}}", "{{s1}}"]});
    assert_eq!(
        state.referenced_outputs(&input),
        vec![("s1".to_owned(), json!({"n": [2.5]}))],
        "s2 has no output yet, s9 is no step, s1 once"
    );
    assert!(state
        .referenced_outputs(&json!({"title": "none"}))
        .is_empty());
    assert_eq!(state.outputs().count(), 1);
}

#[test]
fn given_created_and_planned_when_folded_then_run_is_pending_with_pending_steps() {
    let state = fold("r1", &log(vec![created(), planned()])).expect("folds");
    assert_eq!(state.status, RunStatus::Pending);
    assert_eq!(state.steps.len(), 2);
    assert!(state.steps.iter().all(|s| s.status == StepStatus::Pending));
    assert_eq!(state.last_seq, 2);
    assert_eq!(
        state.planner.as_ref().map(|p| p.name.as_str()),
        Some("pattern")
    );
}

#[test]
fn given_a_full_successful_log_when_folded_then_run_is_completed_with_result() {
    let state = fold(
        "r1",
        &log(vec![
            created(),
            planned(),
            started("s1"),
            started("s2"),
            completed("s2", json!({"id": 1})),
            completed("s1", json!(2)),
            Event::RunCompleted {
                result: json!({"id": 1}),
            },
        ]),
    )
    .expect("folds");
    assert_eq!(state.status, RunStatus::Completed);
    assert_eq!(state.result, Some(json!({"id": 1})));
    assert_eq!(
        state.completion_order,
        vec!["s2".to_string(), "s1".to_string()]
    );
    assert_eq!(state.started_at, Some(t(2)));
    assert_eq!(state.finished_at, Some(t(6)));
    assert!(state
        .steps
        .iter()
        .all(|s| s.status == StepStatus::Completed));
}

#[test]
fn given_a_retry_when_folded_then_step_is_pending_until_next_attempt() {
    let state = fold(
        "r1",
        &log(vec![
            created(),
            planned(),
            started("s1"),
            Event::StepAttemptFailed {
                step_id: "s1".into(),
                attempt: 1,
                error: "flaky".into(),
                kind: crate::domain::ErrorKind::Transient,
                duration_ms: 5,
                retry_in_ms: Some(2000),
            },
        ]),
    )
    .expect("folds");
    let s1 = state.step("s1").expect("s1");
    assert_eq!(s1.status, StepStatus::Pending);
    assert_eq!(s1.attempts, 1);
    assert_eq!(s1.error.as_deref(), Some("flaky"));
    assert_eq!(s1.next_attempt_at, Some(t(3) + Duration::seconds(2)));
    assert_eq!(state.status, RunStatus::Running);
}

#[test]
fn given_a_failed_step_when_run_fails_then_pending_steps_are_skipped() {
    let state = fold(
        "r1",
        &log(vec![
            created(),
            planned(),
            started("s1"),
            Event::StepFailed {
                step_id: "s1".into(),
                attempt: 1,
                error: "division by zero".into(),
            },
            Event::RunFailed {
                error: "step s1 failed: division by zero".into(),
                step_id: Some("s1".into()),
            },
        ]),
    )
    .expect("folds");
    assert_eq!(state.status, RunStatus::Failed);
    assert_eq!(state.step("s1").map(|s| s.status), Some(StepStatus::Failed));
    assert_eq!(
        state.step("s2").map(|s| s.status),
        Some(StepStatus::Skipped)
    );
}

#[test]
fn given_a_cancel_when_compensated_then_run_is_cancelled() {
    let state = fold(
        "r1",
        &log(vec![
            created(),
            planned(),
            Event::CancelRequested { reason: None },
            Event::CompensationStarted { steps: vec![] },
            Event::RunCompensated {},
        ]),
    )
    .expect("folds");
    assert_eq!(state.status, RunStatus::Cancelled);
}

#[test]
fn given_a_log_when_folded_until_a_time_then_later_events_are_ignored() {
    let events = log(vec![created(), planned(), started("s1")]);
    let before = fold_until("r1", &events, t(1)).expect("folds");
    assert_eq!(before.status, RunStatus::Pending);
    assert_eq!(before.last_seq, 2);
    assert_eq!(
        fold_until("r1", &events, t(0) - Duration::seconds(1)),
        Err(FoldError::Empty)
    );
}

#[test]
fn given_a_gap_when_folded_then_it_is_an_error() {
    let mut events = log(vec![created(), planned()]);
    events[1].seq = 5;
    assert_eq!(
        fold("r1", &events),
        Err(FoldError::OutOfOrder { last: 1, got: 5 })
    );
    assert_eq!(fold("r1", &[]), Err(FoldError::Empty));
    let not_created = log(vec![planned()]);
    assert_eq!(
        fold("r1", &not_created),
        Err(FoldError::NotCreated("PlanGenerated"))
    );
}

#[test]
fn given_status_names_when_parsed_then_round_trip() {
    for st in RunStatus::ALL {
        assert_eq!(RunStatus::parse(st.as_str()), Some(st));
        assert_eq!(serde_json::to_value(st).expect("ser"), json!(st.as_str()));
    }
    assert_eq!(RunStatus::parse("nope"), None);
}
