//! Approval decisions, given a run state, when a step that needs approval becomes ready,
//! is decided, expires or is cancelled, then ...

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use super::*;
use crate::domain::{Effect, EventRecord, RunStatus};
use crate::engine::tests::{history, registry, step, t};
use crate::engine::{claim, react, records, Claim, RetryPolicy};

const HOUR_MS: u64 = 3_600_000;

fn policy(patterns: &str) -> ApprovalPolicy {
    ApprovalPolicy::parse(patterns.split(',')).expect("valid policy")
}

/// s1 adds a todo, s2 computes an id, s3 deletes the todo with that id after both (held),
/// s4 is independent.
fn plan() -> Plan {
    policy("todo.delete").mark(Plan {
        steps: vec![
            step("s1", "todo", json!({"action": "add", "title": "x"}), &[]),
            step("s2", "calculator", json!({"expression": "2+1"}), &[]),
            step(
                "s3",
                "todo",
                json!({"action": "delete", "id": "{{s2}}"}),
                &["s1", "s2"],
            ),
            step("s4", "calculator", json!({"expression": "1+1"}), &[]),
        ],
    })
}

fn state(events: Vec<Event>) -> (RunState, Vec<EventRecord>) {
    history("acme", plan(), events)
}

fn after(s: &RunState, events: Vec<Event>, at: DateTime<Utc>) -> (RunState, Vec<EventRecord>) {
    let recs = records(s, at, events);
    let mut next = s.clone();
    for r in &recs {
        next.apply(r).expect("applies");
    }
    (next, recs)
}

fn done(id: &str, output: Value) -> Vec<Event> {
    vec![
        Event::StepStarted {
            step_id: id.into(),
            attempt: 1,
            lease_ms: 10_000,
        },
        Event::StepCompleted {
            step_id: id.into(),
            attempt: 1,
            output: output.into(),
            duration_ms: 1,
        },
    ]
}

/// s1 and s2 done, and s3's approval asked for at `t(100)`.
fn waiting() -> RunState {
    let mut events = done("s1", json!({"id": 3, "title": "x"}));
    events.extend(done("s2", json!(3)));
    let (s, _) = state(events);
    let asked = requests(&s, &registry(), t(100), HOUR_MS);
    after(&s, asked, t(100)).0
}

fn dispatched(effects: &[Effect]) -> Vec<(String, u64)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Dispatch { job, delay_ms } => Some((job.step_id.clone(), *delay_ms)),
            _ => None,
        })
        .collect()
}

#[test]
fn given_patterns_when_parsed_then_tool_and_action_patterns_match_their_steps() {
    let p = policy(" todo.delete , todo.COMPLETE,,");
    let delete = step("a", "todo", json!({"action": "delete", "id": 1}), &[]);
    let complete = step("b", "todo", json!({"action": "complete", "id": 1}), &[]);
    let add = step("c", "todo", json!({"action": "add", "title": "x"}), &[]);
    let calc = step("d", "calculator", json!({"expression": "1"}), &[]);
    assert!(p.requires(&delete) && p.requires(&complete));
    assert!(!p.requires(&add) && !p.requires(&calc));
    assert!(policy("todo").requires(&add) && !policy("todo").requires(&calc));
    assert!(policy("todo.*").requires(&add));
    assert!(policy("*").requires(&calc));
    assert!(ApprovalPolicy::default().is_empty() && !ApprovalPolicy::default().requires(&delete));
}

#[test]
fn given_malformed_patterns_when_parsed_then_each_is_refused_by_name() {
    for bad in [
        "todo.",
        ".delete",
        "to do",
        "*.delete",
        "todo.delete.x",
        "todo/x",
    ] {
        let err = ApprovalPolicy::parse([bad]).expect_err(bad);
        assert_eq!(err.pattern, bad);
    }
}

#[test]
fn given_an_action_that_is_a_reference_when_checked_then_the_step_is_held() {
    let by_ref = step("a", "todo", json!({"action": "{{s1}}", "id": 1}), &["s1"]);
    assert!(policy("todo.delete").requires(&by_ref));
}

#[test]
fn given_a_plan_whose_planner_said_no_approval_when_marked_then_the_policy_decides_both_ways() {
    let mut delete = step("s1", "todo", json!({"action": "delete", "id": 1}), &[]);
    let mut add = step("s2", "todo", json!({"action": "add", "title": "x"}), &[]);
    delete.requires_approval = false;
    add.requires_approval = true;
    let marked = policy("todo.delete").mark(Plan {
        steps: vec![delete, add],
    });
    assert!(marked.steps[0].requires_approval);
    assert!(!marked.steps[1].requires_approval);
}

#[test]
fn given_a_new_plan_when_reacting_then_a_held_step_is_not_dispatched_but_independent_ones_are() {
    let (s, recs) = state(vec![]);
    assert!(
        requests(&s, &registry(), t(5), HOUR_MS).is_empty(),
        "s3's dependencies are not done"
    );
    let effects = react(&s, &recs[1..], &registry());
    assert_eq!(
        dispatched(&effects),
        vec![("s1".into(), 0), ("s2".into(), 0), ("s4".into(), 0)]
    );
}

#[test]
fn given_its_dependencies_done_when_asked_then_the_held_step_waits_with_its_resolved_input() {
    let mut events = done("s1", json!({"id": 3, "title": "x"}));
    events.extend(done("s2", json!(3)));
    let (s, recs) = state(events);
    assert!(
        dispatched(&react(&s, &recs[recs.len() - 1..], &registry())).is_empty(),
        "the held step is never dispatched as ready"
    );
    let asked = requests(&s, &registry(), t(100), HOUR_MS);
    assert_eq!(
        asked,
        vec![Event::ApprovalRequested {
            step_id: "s3".into(),
            input: json!({"action": "delete", "id": 3}),
            approver: "acme".into(),
            expires_at: t(100) + Duration::hours(1),
        }]
    );
    let (w, recs) = after(&s, asked, t(100));
    let s3 = w.step("s3").expect("s3");
    assert_eq!(s3.status, StepStatus::WaitingApproval);
    assert_eq!(w.awaiting_approval, vec!["s3".to_string()]);
    assert_eq!(w.status, RunStatus::Running);
    assert!(
        requests(&w, &registry(), t(200), HOUR_MS).is_empty(),
        "asked once"
    );
    assert_eq!(
        dispatched(&react(&w, &recs, &registry())),
        vec![("s3".into(), HOUR_MS)],
        "the only job is the expiry timer, due when the approval expires"
    );
}

#[test]
fn given_a_waiting_step_when_approved_then_it_is_dispatched_and_a_worker_may_start_it() {
    let w = waiting();
    let events = decide(&w, "s3", Decision::Approve, "acme", Some("ok".into())).expect("decides");
    assert_eq!(
        events,
        vec![Event::StepApproved {
            step_id: "s3".into(),
            by: "acme".into(),
            comment: Some("ok".into()),
        }]
    );
    let (a, recs) = after(&w, events, t(200));
    assert_eq!(a.step("s3").map(|s| s.status), Some(StepStatus::Pending));
    assert!(a.awaiting_approval.is_empty());
    let approval = a
        .step("s3")
        .and_then(|s| s.approval.clone())
        .expect("approval");
    assert_eq!(approval.decision, Some(ApprovalDecision::Approved));
    assert_eq!(approval.decided_by.as_deref(), Some("acme"));
    assert_eq!(
        dispatched(&react(&a, &recs, &registry())),
        vec![("s3".into(), 0)]
    );
    let c = claim(&a, "s3", 1, t(201), &RetryPolicy::default(), 1_000, None);
    assert!(matches!(c, Claim::Start { attempt: 1, .. }), "{c:?}");
}

#[test]
fn given_a_waiting_step_when_rejected_then_it_fails_for_good_and_the_saga_undoes_what_completed() {
    let w = waiting();
    let events = decide(
        &w,
        "s3",
        Decision::Reject,
        "acme",
        Some("wrong todo".into()),
    )
    .expect("decides");
    let (r, recs) = after(&w, events, t(200));
    let s3 = r.step("s3").expect("s3");
    assert_eq!(s3.status, StepStatus::Failed);
    assert_eq!(s3.error.as_deref(), Some("rejected by acme: wrong todo"));
    assert_eq!(s3.attempts, 0, "it never ran");
    assert_eq!(r.status, RunStatus::Failed);
    let effects = react(&r, &recs, &registry());
    assert!(dispatched(&effects).is_empty());
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Compensate { .. })),
        "the todo s1 added is undone: {effects:?}"
    );
}

#[test]
fn given_a_decided_step_when_decided_again_then_it_is_refused() {
    let w = waiting();
    let (a, _) = after(
        &w,
        decide(&w, "s3", Decision::Approve, "acme", None).expect("first"),
        t(200),
    );
    for d in [Decision::Approve, Decision::Reject] {
        assert_eq!(
            decide(&a, "s3", d, "acme", None),
            Err(Refusal::AlreadyDecided {
                step: "s3".into(),
                decision: "approved"
            })
        );
    }
    assert_eq!(
        decide(&w, "s1", Decision::Approve, "acme", None),
        Err(Refusal::NotWaiting {
            step: "s1".into(),
            status: "completed"
        })
    );
    assert_eq!(
        decide(&w, "nope", Decision::Approve, "acme", None),
        Err(Refusal::NoSuchStep("nope".into()))
    );
}

#[test]
fn given_a_waiting_step_when_its_timer_fires_early_then_it_waits_and_when_late_then_it_expires() {
    let w = waiting();
    let expires = t(100) + Duration::hours(1);
    let early = claim(&w, "s3", 1, t(5_000), &RetryPolicy::default(), 1_000, None);
    assert_eq!(early, Claim::Later(expires));
    let Claim::Record(events) = claim(&w, "s3", 1, expires, &RetryPolicy::default(), 1_000, None)
    else {
        panic!("expected the expiry to be recorded");
    };
    assert!(matches!(
        events.first(),
        Some(Event::StepRejected {
            expired: true,
            by: None,
            ..
        })
    ));
    let (x, recs) = after(&w, events, expires);
    let s3 = x.step("s3").expect("s3");
    assert_eq!(s3.status, StepStatus::Failed);
    assert!(s3
        .error
        .as_deref()
        .is_some_and(|e| e.starts_with("approval expired")));
    assert_eq!(
        s3.approval.as_ref().and_then(|a| a.decision),
        Some(ApprovalDecision::Expired)
    );
    assert_eq!(x.status, RunStatus::Failed);
    assert!(react(&x, &recs, &registry())
        .iter()
        .any(|e| matches!(e, Effect::Compensate { .. })));
    assert!(matches!(
        decide(&x, "s3", Decision::Approve, "acme", None),
        Err(Refusal::AlreadyDecided { .. })
    ));
}

#[test]
fn given_a_waiting_step_when_the_run_is_cancelled_then_it_is_skipped_and_the_saga_starts() {
    let w = waiting();
    let (c, recs) = after(&w, vec![Event::CancelRequested { reason: None }], t(200));
    assert_eq!(c.step("s3").map(|s| s.status), Some(StepStatus::Skipped));
    assert!(c.awaiting_approval.is_empty());
    assert!(react(&c, &recs, &registry())
        .iter()
        .any(|e| matches!(e, Effect::Compensate { .. })));
    assert!(matches!(
        claim(&c, "s3", 1, t(300), &RetryPolicy::default(), 1_000, None),
        Claim::Skip(_)
    ));
    assert!(matches!(
        decide(&c, "s3", Decision::Approve, "acme", None),
        Err(Refusal::NotWaiting {
            status: "skipped",
            ..
        })
    ));
}

#[test]
fn given_a_held_step_never_asked_for_when_its_job_arrives_then_no_worker_starts_it() {
    let mut events = done("s1", json!({"id": 3}));
    events.extend(done("s2", json!(3)));
    let (s, _) = state(events);
    let c = claim(&s, "s3", 1, t(100), &RetryPolicy::default(), 1_000, None);
    assert_eq!(c, Claim::Skip("step waits for approval".into()));
}
