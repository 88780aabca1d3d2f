use serde_json::json;

use super::*;

pub(crate) fn event(seq: u64, kind: &str, data: Value) -> Value {
    json!({"seq": seq, "at": format!("2026-01-02T03:04:05.{:03}Z", seq * 10), "version": 1, "type": kind, "data": data})
}

/// RunCreated + PlanGenerated of `calculate 2+3 then add a todo with the result`.
pub(crate) fn planned() -> Vec<Value> {
    vec![
        event(
            1,
            "RunCreated",
            json!({"tenant": "default", "prompt": "calculate 2+3 then add a todo with the result", "correlation_id": "c"}),
        ),
        event(
            2,
            "PlanGenerated",
            json!({"planner": {"name": "pattern"}, "plan": {"steps": [
                {"id": "s1", "tool": "calculator", "input": {"expression": "2+3"}, "depends_on": []},
                {"id": "s2", "tool": "todo", "input": {"action": "add", "title": "{{s1}}"}, "depends_on": ["s1"]},
            ]}}),
        ),
    ]
}

fn folded(events: &[Value]) -> Progress {
    let mut p = Progress::new("r1");
    for e in events {
        p.apply(e);
    }
    p
}

#[test]
fn given_a_plan_when_folded_then_every_step_is_pending_with_its_input_and_dependencies() {
    let p = folded(&planned());
    assert_eq!(p.status, "pending");
    assert_eq!(p.planner.as_deref(), Some("pattern"));
    assert_eq!(p.steps.len(), 2);
    assert_eq!(p.steps[1].depends_on, vec!["s1"]);
    assert_eq!(p.steps[1].input["action"], "add");
    assert_eq!(p.ending(), Ending::Running);
}

#[test]
fn given_an_event_seen_twice_when_folded_again_then_it_is_ignored() {
    let mut p = folded(&planned());
    let started = event(
        3,
        "StepStarted",
        json!({"step_id": "s1", "attempt": 1, "lease_ms": 1000}),
    );
    assert!(p.apply(&started));
    assert!(
        !p.apply(&started),
        "a server ignoring `after` resends the log"
    );
    assert!(!p.apply(&planned()[1]));
    assert_eq!(p.last_seq, 3);
    assert_eq!(p.steps[0].status, "running");
}

#[test]
fn given_a_failed_attempt_with_a_backoff_when_folded_then_the_step_waits_to_retry_until_its_next_start(
) {
    let mut events = planned();
    events.push(event(
        3,
        "StepStarted",
        json!({"step_id": "s1", "attempt": 1, "lease_ms": 1000}),
    ));
    events.push(event(4, "StepAttemptFailed", json!({"step_id": "s1", "attempt": 1, "error": "boom", "kind": "transient", "duration_ms": 3, "retry_in_ms": 1000})));
    let p = folded(&events);
    let s1 = p.step("s1").expect("s1");
    assert_eq!(s1.status, "pending");
    assert_eq!(s1.error.as_deref(), Some("boom"));
    let due = s1.retry_at.expect("retry time");
    assert_eq!(
        (due - time(&events[3]["at"]).expect("at")).num_milliseconds(),
        1000
    );

    events.push(event(
        5,
        "StepStarted",
        json!({"step_id": "s1", "attempt": 2, "lease_ms": 1000}),
    ));
    let p = folded(&events);
    let s1 = p.step("s1").expect("s1");
    assert_eq!(
        (s1.status.as_str(), s1.attempts, s1.retry_at),
        ("running", 2, None)
    );
}

#[test]
fn given_breaker_refusals_when_folded_then_they_are_counted_until_the_step_starts() {
    let mut events = planned();
    for seq in [3, 4] {
        events.push(event(seq, "StepDeferred", json!({"step_id": "s1", "attempt": 1, "reason": "calculator temporarily unavailable", "until": "2026-01-02T03:05:00Z"})));
    }
    let p = folded(&events);
    let held = p.step("s1").and_then(|s| s.held.clone()).expect("held");
    assert_eq!(held.rejections, 2);
    assert_eq!(held.reason, "calculator temporarily unavailable");
    events.push(event(
        5,
        "StepStarted",
        json!({"step_id": "s1", "attempt": 1, "lease_ms": 1000}),
    ));
    assert_eq!(
        folded(&events).step("s1").and_then(|s| s.held.clone()),
        None
    );
}

#[test]
fn given_a_failure_after_a_todo_was_added_when_folded_then_the_saga_is_awaited_until_the_run_is_compensated(
) {
    let mut events = planned();
    events.push(event(
        3,
        "StepStarted",
        json!({"step_id": "s1", "attempt": 1, "lease_ms": 1000}),
    ));
    events.push(event(
        4,
        "StepCompleted",
        json!({"step_id": "s1", "attempt": 1, "output": 5, "duration_ms": 1}),
    ));
    events.push(event(5, "RunFailed", json!({"error": "step s2 failed"})));
    let p = folded(&events);
    assert_eq!(
        p.ending(),
        Ending::Ended,
        "a calculation has nothing to undo"
    );

    let mut events = planned();
    events.push(event(
        3,
        "StepCompleted",
        json!({"step_id": "s2", "attempt": 1, "output": {"id": 1}, "duration_ms": 1}),
    ));
    events.push(event(
        4,
        "StepFailed",
        json!({"step_id": "s1", "attempt": 3, "error": "boom"}),
    ));
    events.push(event(5, "RunFailed", json!({"error": "step s1 failed"})));
    assert_eq!(
        folded(&events).ending(),
        Ending::AwaitingSaga { certain: true }
    );
    events.push(event(6, "CompensationStarted", json!({"steps": ["s2"]})));
    let p = folded(&events);
    assert_eq!(
        (p.status.as_str(), p.step("s2").map(|s| s.status.as_str())),
        ("compensating", Some("compensating"))
    );
    assert_eq!(p.ending(), Ending::Running);
    events.push(event(
        7,
        "StepCompensated",
        json!({"step_id": "s2", "attempts": 1}),
    ));
    events.push(event(8, "RunCompensated", json!({})));
    let p = folded(&events);
    assert_eq!(
        (p.status.as_str(), p.ending()),
        ("compensated", Ending::Ended)
    );
    assert_eq!(p.step("s2").map(|s| s.status.as_str()), Some("compensated"));
}

#[test]
fn given_a_completed_step_of_an_unknown_tool_when_the_run_fails_then_a_saga_may_follow() {
    let mut events = planned();
    events[1]["data"]["plan"]["steps"][0]["tool"] = json!("email");
    events.push(event(
        3,
        "StepCompleted",
        json!({"step_id": "s1", "attempt": 1, "output": "sent", "duration_ms": 1}),
    ));
    events.push(event(4, "RunFailed", json!({"error": "x"})));
    assert_eq!(
        folded(&events).ending(),
        Ending::AwaitingSaga { certain: false }
    );
}

#[test]
fn given_approval_events_when_folded_then_the_step_waits_and_then_shows_the_verdict() {
    let mut events = planned();
    events.push(event(3, "ApprovalRequested", json!({"step_id": "s2", "input": {"action": "add", "title": "5"}, "approver": "default", "expires_at": "2026-01-02T04:04:05Z"})));
    let p = folded(&events);
    assert_eq!(p.status, "running");
    let s2 = p.step("s2").expect("s2");
    assert_eq!(s2.status, "waiting_approval");
    assert_eq!(s2.approval_expires, time(&json!("2026-01-02T04:04:05Z")));
    events.push(event(
        4,
        "StepRejected",
        json!({"step_id": "s2", "by": "default", "comment": "not today"}),
    ));
    let p = folded(&events);
    let s2 = p.step("s2").expect("s2");
    assert_eq!(
        (s2.status.as_str(), s2.approval_expires),
        ("rejected", None)
    );
    assert_eq!(s2.verdict.as_deref(), Some("rejected: not today"));
    events.push(event(
        5,
        "StepFailed",
        json!({"step_id": "s2", "attempt": 0, "error": "rejected by default"}),
    ));
    let p = folded(&events);
    let s2 = p.step("s2").expect("s2");
    assert_eq!(s2.status, "failed");
    assert_eq!(
        s2.verdict.as_deref(),
        Some("rejected: not today"),
        "the verdict stays"
    );

    let mut events = planned();
    events.push(event(
        3,
        "ApprovalRequested",
        json!({"step_id": "s2", "expires_at": "2026-01-02T04:04:05Z"}),
    ));
    events.push(event(
        4,
        "StepRejected",
        json!({"step_id": "s2", "expired": true}),
    ));
    let p = folded(&events);
    assert_eq!(
        p.step("s2").and_then(|s| s.verdict.clone()).as_deref(),
        Some("approval expired")
    );
}

#[test]
fn given_a_run_view_with_approvals_when_read_then_waiting_and_decided_steps_show_it() {
    let view = json!({
        "run_id": "r1", "status": "running",
        "plan": {"steps": []},
        "steps": [
            {"id": "s1", "tool": "todo", "status": "waiting_approval", "attempts": 0,
             "approval": {"requested_at": "2026-01-02T03:04:05Z", "expires_at": "2026-01-02T04:04:05Z", "approver": "default", "input": {}}},
            {"id": "s2", "tool": "todo", "status": "pending", "attempts": 0,
             "approval": {"requested_at": "2026-01-02T03:04:05Z", "expires_at": "2026-01-02T04:04:05Z", "approver": "default", "input": {},
                          "decision": "approved", "comment": "ok"}},
        ],
    });
    let p = Progress::from_view(&view);
    assert!(p.steps[0].approval_expires.is_some());
    assert_eq!(p.steps[0].verdict, None);
    assert_eq!(p.steps[1].approval_expires, None);
    assert_eq!(p.steps[1].verdict.as_deref(), Some("approved: ok"));
}

#[test]
fn given_a_cancel_when_folded_then_pending_steps_are_skipped_and_the_compensated_run_is_cancelled()
{
    let mut events = planned();
    events.push(event(3, "CancelRequested", json!({})));
    events.push(event(4, "RunCompensated", json!({})));
    let p = folded(&events);
    assert!(p.steps.iter().all(|s| s.status == "skipped"));
    assert_eq!(
        (p.status.as_str(), p.ending()),
        ("cancelled", Ending::Ended)
    );
}

#[test]
fn given_an_unknown_event_when_folded_then_it_only_advances_the_sequence() {
    let mut p = folded(&planned());
    let before = p.clone();
    assert!(p.apply(&event(3, "SomethingNew", json!({"step_id": "s1"}))));
    assert_eq!(p.last_seq, 3);
    assert_eq!(p.steps, before.steps);
}

#[test]
fn given_a_run_view_when_read_then_it_shows_the_same_as_the_fold_of_its_events() {
    let view = json!({
        "run_id": "r1", "prompt": "p", "status": "running", "planner": {"name": "pattern"},
        "plan": {"steps": [{"id": "s1", "tool": "calculator", "input": {"expression": "2+3"}, "depends_on": []}]},
        "steps": [{"id": "s1", "tool": "calculator", "status": "pending", "attempts": 1, "output": null,
                   "error": "boom", "started_at": null, "finished_at": null,
                   "next_attempt_at": "2026-01-02T03:04:06Z",
                   "waiting": {"reason": "open", "since": "2026-01-02T03:04:05Z", "until": "2026-01-02T03:04:07Z", "deferrals": 2}}],
        "result": null, "error": null, "cancel_requested": false,
        "created_at": "2026-01-02T03:04:05Z", "finished_at": null, "last_seq": 6
    });
    let p = Progress::from_view(&view);
    assert_eq!(
        (p.run_id.as_str(), p.status.as_str(), p.last_seq),
        ("r1", "running", 6)
    );
    let s1 = p.step("s1").expect("s1");
    assert_eq!(s1.input["expression"], "2+3");
    assert_eq!(s1.held.as_ref().map(|h| h.rejections), Some(2));
    assert!(s1.retry_at.is_some());
    assert_eq!(s1.output, None);
}
