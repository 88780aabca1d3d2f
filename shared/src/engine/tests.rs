//! The engine's decisions, given a run state, when an event or outcome arrives, then ...

use chrono::Duration;
use serde_json::json;

mod fixtures;

use super::*;
use crate::domain::{Effect, Plan};
pub(crate) use fixtures::{history, registry, step, t};

fn plan() -> Plan {
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
    history("default", plan(), events)
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
        output: output.into(),
        duration_ms: 1,
    }
}

fn transient_failure(id: &str, attempt: u32, retry_in_ms: Option<u64>) -> Event {
    Event::StepAttemptFailed {
        step_id: id.into(),
        attempt,
        error: "down".into(),
        kind: ErrorKind::Transient,
        duration_ms: 1,
        retry_in_ms,
    }
}

/// `s` with `events` applied a second later, and the new records.
fn state_after(s: &RunState, events: Vec<Event>) -> (RunState, Vec<EventRecord>) {
    let records = records(s, s.updated_at + Duration::seconds(1), events);
    let mut next = s.clone();
    for r in &records {
        next.apply(r).expect("applies");
    }
    (next, records)
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
    max_interruptions: 10,
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
fn given_an_expired_lease_when_claimed_then_the_interrupted_attempt_is_recorded_and_the_next_starts(
) {
    let (s, _) = state(vec![started("s1", 1)]);
    let Claim::Start { attempt, events } = claim(&s, "s1", 1, t(20_000), &POLICY, 10_000, None)
    else {
        panic!("should take over");
    };
    assert_eq!(attempt, 2);
    assert!(matches!(
        &events[0],
        Event::StepInterrupted { attempt: 1, .. }
    ));
    // A restarted local runtime voids older leases at once.
    let c = claim(&s, "s1", 1, t(100), &POLICY, 10_000, Some(t(50)));
    assert!(matches!(c, Claim::Start { attempt: 2, .. }));
}

#[test]
fn given_the_last_retry_interrupted_when_claimed_then_another_attempt_starts_without_using_a_retry()
{
    // Attempts 1-3 failed in the tool; attempt 4 (the last retry) was interrupted.
    let mut events = Vec::new();
    for a in 1..=3 {
        events.push(started("s1", a));
        events.push(transient_failure("s1", a, Some(0)));
    }
    events.push(started("s1", 4));
    let (s, _) = state(events);
    let Claim::Start { attempt: 5, events } = claim(&s, "s1", 4, t(20_000), &POLICY, 10_000, None)
    else {
        panic!("an interruption does not use up a retry");
    };
    let (s, _) = state_after(&s, events);
    assert_eq!(
        s.step("s1").map(|x| (x.attempts, x.interruptions)),
        Some((5, 1))
    );
    // Attempt 5 fails in the tool: that is the fourth tool failure, the last allowed.
    let events = outcome(
        &s,
        "s1",
        5,
        Err(ToolError::transient("down")),
        1,
        &POLICY,
        0.5,
    )
    .expect("current");
    let names: Vec<&str> = events.iter().map(Event::type_name).collect();
    assert_eq!(names, vec!["StepAttemptFailed", "StepFailed", "RunFailed"]);
}

#[test]
fn given_interruptions_when_a_tool_attempt_fails_then_the_backoff_counts_tool_attempts_only() {
    let (s, _) = state(vec![
        started("s1", 1),
        Event::StepInterrupted {
            step_id: "s1".into(),
            attempt: 1,
            error: "lost".into(),
        },
        started("s1", 2),
    ]);
    let events = outcome(
        &s,
        "s1",
        2,
        Err(ToolError::transient("down")),
        1,
        &POLICY,
        0.5,
    )
    .expect("current");
    assert!(matches!(
        &events[..],
        [Event::StepAttemptFailed {
            retry_in_ms: Some(1_000),
            ..
        }]
    ));
}

#[test]
fn given_a_step_interrupted_as_often_as_allowed_when_its_lease_expires_again_then_it_fails() {
    let mut events = Vec::new();
    for a in 1..=POLICY.max_interruptions {
        events.push(started("s1", a));
        events.push(Event::StepInterrupted {
            step_id: "s1".into(),
            attempt: a,
            error: "lost".into(),
        });
    }
    events.push(started("s1", POLICY.max_interruptions + 1));
    let (s, _) = state(events);
    let Claim::Record(events) = claim(&s, "s1", 11, t(100_000), &POLICY, 10_000, None) else {
        panic!("the interruption budget is spent");
    };
    let names: Vec<&str> = events.iter().map(Event::type_name).collect();
    assert_eq!(names, vec!["StepAttemptFailed", "StepFailed", "RunFailed"]);
    let Event::StepFailed { error, .. } = &events[1] else {
        panic!("step failed");
    };
    assert!(error.contains("interrupted 11 times"), "{error}");
}

#[test]
fn given_a_breaker_refusal_when_deferred_then_no_attempt_is_used_and_the_step_waits() {
    let (s, _) = state(vec![]);
    let Deferral::Wait { events, until } = defer(
        &s,
        "s1",
        1,
        "calculator temporarily unavailable",
        t(500),
        t(10),
        60_000,
    ) else {
        panic!("should wait");
    };
    assert_eq!(until, t(500));
    let (s, _) = state_after(&s, events);
    let step = s.step("s1").expect("s1");
    assert_eq!((step.status, step.attempts), (StepStatus::Pending, 0));
    let waiting = step.waiting.as_ref().expect("waiting");
    assert_eq!((waiting.until, waiting.deferrals), (t(500), 1));
    // Refused again for the same reason: nothing new is written, the deadline stands.
    assert_eq!(
        defer(
            &s,
            "s1",
            1,
            "calculator temporarily unavailable",
            t(900),
            t(600),
            60_000
        ),
        Deferral::Wait {
            events: Vec::new(),
            until: t(900)
        }
    );
    // A duplicate job before then waits too, without asking the breaker.
    assert_eq!(
        claim(&s, "s1", 1, t(100), &POLICY, 10_000, None),
        Claim::Later(t(500))
    );
    // Once started, the wait is over.
    let (s, _) = state_after(&s, vec![started("s1", 1)]);
    assert_eq!(s.step("s1").and_then(|x| x.waiting.clone()), None);
}

#[test]
fn given_a_step_refused_past_its_deadline_when_deferred_then_it_fails_saying_since_when() {
    let (s, _) = state(vec![]);
    let Deferral::Wait { until, .. } = defer(
        &s,
        "s1",
        1,
        "calculator temporarily unavailable",
        t(60_000),
        t(10),
        1_000,
    ) else {
        panic!("should wait");
    };
    // The wait never runs past the deadline.
    assert_eq!(until, t(1_010));
    // First refused at t(2) (the event's time): the deadline counts from there.
    let (s, _) = state(vec![Event::StepDeferred {
        step_id: "s1".into(),
        attempt: 1,
        reason: "calculator temporarily unavailable".into(),
        until: t(1_002),
    }]);
    assert!(matches!(
        defer(
            &s,
            "s1",
            1,
            "calculator temporarily unavailable",
            t(60_000),
            t(1_001),
            1_000
        ),
        Deferral::Wait { .. }
    ));
    let Deferral::GiveUp(events) = defer(
        &s,
        "s1",
        1,
        "calculator temporarily unavailable",
        t(60_000),
        t(1_002),
        1_000,
    ) else {
        panic!("past the deadline");
    };
    let names: Vec<&str> = events.iter().map(Event::type_name).collect();
    assert_eq!(names, vec!["StepFailed", "RunFailed"]);
    let Event::StepFailed { error, .. } = &events[0] else {
        panic!("step failed");
    };
    assert!(
        error.starts_with("calculator temporarily unavailable since 20"),
        "{error}"
    );
}

#[test]
fn given_a_cancel_while_the_last_steps_run_when_they_complete_then_the_run_is_not_completed() {
    let (s, _) = state(vec![
        started("s1", 1),
        completed("s1", json!(5)),
        started("s2", 1),
        completed("s2", json!({"id": 1})),
        started("s3", 1),
        Event::CancelRequested { reason: None },
    ]);
    let events =
        outcome(&s, "s3", 1, Ok(json!({"id": 2}).into()), 1, &POLICY, 0.5).expect("current");
    let names: Vec<&str> = events.iter().map(Event::type_name).collect();
    assert_eq!(
        names,
        vec!["StepCompleted"],
        "no RunCompleted after a cancel"
    );
    let (after, records) = state_after(&s, events);
    assert_eq!(after.status, RunStatus::Running);
    // The saga starts: every completed step is undone and the run ends cancelled.
    assert!(matches!(
        &react(&after, &records, &registry())[..],
        [Effect::Compensate { .. }]
    ));
    assert_eq!(
        saga::compensation_order(&after, &registry()),
        vec!["s3", "s2"]
    );
}

#[test]
fn given_a_cancel_while_a_step_runs_when_it_fails_for_good_then_the_run_is_not_failed() {
    let (s, _) = state(vec![
        started("s1", 1),
        Event::CancelRequested { reason: None },
    ]);
    let events = outcome(
        &s,
        "s1",
        1,
        Err(ToolError::permanent("bad")),
        1,
        &POLICY,
        0.5,
    )
    .expect("current");
    assert!(events.iter().all(|e| !matches!(e, Event::RunFailed { .. })));
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
    let ok = outcome(&s, "s1", 1, Ok(json!(5).into()), 3, &POLICY, 0.5).expect("current");
    assert_eq!(
        ok,
        vec![Event::StepCompleted {
            step_id: "s1".into(),
            attempt: 1,
            output: json!(5).into(),
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
        outcome(&s, "s1", 2, Ok(json!(1).into()), 1, &POLICY, 0.5).is_err(),
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
        Ok(json!({"id": 2, "title": "5"}).into()),
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
            correlation_id: "c".into(),
            attempt: 1,
        }]
    );
    assert_eq!(saga::compensation_order(&s, &registry()), vec!["s2"]);
}

#[test]
fn given_a_retry_request_when_reacting_then_the_saga_starts_again_as_the_requested_attempt() {
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
        Event::CompensationStarted {
            steps: vec!["s2".into()],
        },
        Event::CompensationRetryRequested {
            attempt: 2,
            reason: Some("the saga crashed".into()),
        },
    ]);
    assert_eq!(
        react(&s, &records[records.len() - 1..], &registry()),
        vec![Effect::Compensate {
            key: RunKey::new("default", "r1"),
            correlation_id: "c".into(),
            attempt: 2,
        }]
    );
}

#[test]
fn given_an_effect_stored_before_saga_attempts_when_read_then_it_is_the_first_attempt() {
    let old = json!({"effect": "compensate", "key": {"tenant": "t", "run_id": "r"}, "correlation_id": "c"});
    let effect: Effect = serde_json::from_value(old).expect("an old outbox row");
    assert!(matches!(effect, Effect::Compensate { attempt: 1, .. }));
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

#[test]
fn given_an_output_over_the_cap_when_recorded_then_a_truncation_marker_within_the_cap_is_stored() {
    let (s, _) = state(vec![started("s1", 1)]);
    let big = json!({"items": vec!["é".repeat(100); 2_000]});
    let big_len = big.to_string().len();
    assert!(big_len > MAX_OUTPUT_BYTES);
    let events = outcome(&s, "s1", 1, Ok(big.into()), 1, &POLICY, 0.5).expect("current");
    let Event::StepCompleted { output, .. } = &events[0] else {
        panic!("completed");
    };
    let marker = output.value();
    assert_eq!(marker["truncated"], true);
    assert_eq!(marker["original_bytes"], big_len);
    assert!(marker["preview"]
        .as_str()
        .is_some_and(|p| p.starts_with("{\"items\":[\"é")));
    assert!(output.len() <= MAX_OUTPUT_BYTES);
    assert_eq!(
        output.json(),
        marker.to_string(),
        "the marker's compact text"
    );
    // Small outputs are stored as they are.
    assert_eq!(
        cap_output(json!({"a": 1}).into(), MAX_OUTPUT_BYTES),
        json!({"a": 1})
    );
    // Even a tiny cap yields a well-formed marker on a char boundary.
    let tiny = cap_output(json!("ééééé".repeat(1_000)).into(), 300);
    assert_eq!(tiny.value()["truncated"], true);
    assert!(tiny.len() <= 300);
}

#[test]
fn given_a_shared_output_when_recorded_then_the_event_holds_it_and_one_over_the_cap_is_marked() {
    let (s, _) = state(vec![started("s1", 1)]);
    let shared = Output::from_value(&json!({"items": ["a", "b"]}));
    let events = outcome(&s, "s1", 1, Ok(shared.clone()), 1, &POLICY, 0.5).expect("current");
    let Event::StepCompleted { output, .. } = &events[0] else {
        panic!("completed");
    };
    assert!(
        std::ptr::eq(output.json(), shared.json()),
        "the output itself, not a copy"
    );

    // An output exactly at the cap is kept; a byte over it is marked.
    let at_cap = |len: usize| Output::from_value(&json!("x".repeat(len - 2)));
    for (len, kept) in [(MAX_OUTPUT_BYTES, true), (MAX_OUTPUT_BYTES + 1, false)] {
        let events = outcome(&s, "s1", 1, Ok(at_cap(len)), 1, &POLICY, 0.5).expect("current");
        let Event::StepCompleted { output, .. } = &events[0] else {
            panic!("completed");
        };
        assert_eq!(output.len() == len, kept, "{len}");
        assert_eq!(output.value()["truncated"] == true, !kept, "{len}");
    }
}

#[test]
fn given_events_added_one_by_one_when_looked_ahead_then_each_look_is_the_simulation_of_them() {
    let plan = Plan {
        steps: vec![
            step("s1", "calculator", json!({"expression": "1+1"}), &[]),
            step("s2", "calculator", json!({"expression": "2+2"}), &[]),
            step(
                "s3",
                "calculator",
                json!({"expression": "3+3"}),
                &["s1", "s2"],
            ),
        ],
    };
    let (state, log) = history("t", plan, vec![]);
    let started = |id: &str| Event::StepStarted {
        step_id: id.into(),
        attempt: 1,
        lease_ms: 30_000,
    };
    let completed = |id: &str, v: i64| Event::StepCompleted {
        step_id: id.into(),
        attempt: 1,
        output: json!(v).into(),
        duration_ms: 1,
    };
    let all = [
        started("s1"),
        started("s2"),
        completed("s1", 2),
        completed("s2", 4),
        started("s3"),
        completed("s3", 6),
    ];
    let mut ahead = Lookahead::new(&state);
    for n in [0, 1, 1, 2, 4, 4, 5, 6] {
        assert_eq!(
            ahead.at(&all[..n]),
            &simulate(&state, &all[..n]),
            "after {n} events"
        );
        // The same as folding the whole log, so neither shares a mistake with the other.
        let mut whole = log.clone();
        whole.extend(EventRecord::batch(
            state.last_seq,
            state.updated_at,
            all[..n].to_vec(),
        ));
        assert_eq!(
            ahead.at(&all[..n]),
            &crate::domain::fold("r1", &whole).expect("folds"),
            "after {n} events, folded"
        );
    }
}

mod wake {
    use serde_json::json;

    use super::fixtures::{history, registry, step};
    use crate::domain::{Effect, Event, Plan, RunStatus};
    use crate::engine::{react, resume_jobs, wakes_reactor};

    fn plan() -> Plan {
        Plan {
            steps: vec![
                step("a", "calculator", json!({"expression": "1+1"}), &[]),
                step("b", "calculator", json!({"expression": "{{a}}+1"}), &["a"]),
            ],
        }
    }

    fn started(id: &str) -> Event {
        Event::StepStarted {
            step_id: id.into(),
            attempt: 1,
            lease_ms: 1_000,
        }
    }

    fn completed(id: &str) -> Event {
        Event::StepCompleted {
            step_id: id.into(),
            attempt: 1,
            output: json!(2).into(),
            duration_ms: 1,
        }
    }

    /// Both steps run and the run completes.
    fn ran_to_the_end() -> Vec<Event> {
        vec![
            started("a"),
            completed("a"),
            started("b"),
            completed("b"),
            Event::RunCompleted { result: json!(3) },
        ]
    }

    /// The (step, attempt) of each job [`resume_jobs`] makes for `state`.
    fn resumed(state: &crate::domain::RunState) -> Vec<(String, u32)> {
        resume_jobs(state)
            .into_iter()
            .map(|j| (j.step_id, j.attempt))
            .collect()
    }

    /// Whether the last `n` events of `events` wake the reactor, appended by a worker
    /// that sends its jobs itself (`sends_jobs`) or not.
    fn wakes(events: Vec<Event>, n: usize, sends_jobs: bool) -> bool {
        let (before, _) = history("t", plan(), events[..events.len() - n].to_vec());
        let (after, records) = history("t", plan(), events);
        let new = &records[records.len() - n..];
        let effects = react(&after, new, &registry());
        wakes_reactor(before.status, &after, new, &effects, sends_jobs)
    }

    #[test]
    fn given_a_new_run_when_appended_then_the_reactor_sees_it() {
        let (after, records) = history("t", plan(), vec![]);
        let effects = react(&after, &records, &registry());
        assert!(wakes_reactor(
            RunStatus::Pending,
            &after,
            &records,
            &effects,
            true
        ));
    }

    #[test]
    fn given_a_claim_that_starts_the_run_when_appended_then_the_reactor_is_not_woken() {
        assert!(
            !wakes(vec![started("a")], 1, true),
            "pending -> running: both in flight"
        );
    }

    #[test]
    fn given_an_outcome_that_makes_a_step_ready_when_its_appender_sends_the_job_then_the_reactor_is_not_woken(
    ) {
        let events = vec![started("a"), completed("a")];
        assert!(!wakes(events.clone(), 1, true));
        assert!(
            wakes(events, 1, false),
            "an appender that does not send jobs leaves them to the reactor"
        );
        let claimed = vec![started("a"), completed("a"), started("b")];
        assert!(
            !wakes(claimed.clone(), 2, false),
            "the next step claimed in the same append: nothing to send"
        );
    }

    #[test]
    fn given_the_last_outcome_when_appended_then_the_runs_end_wakes_the_reactor() {
        assert!(wakes(ran_to_the_end(), 2, true));
    }

    #[test]
    fn given_a_failure_that_calls_for_a_saga_when_appended_then_the_reactor_is_woken() {
        let events = vec![
            started("a"),
            completed("a"),
            started("b"),
            Event::CancelRequested { reason: None },
            completed("b"),
        ];
        let (after, records) = history("t", plan(), events);
        let effects = react(&after, &records[records.len() - 1..], &registry());
        assert!(
            effects
                .iter()
                .any(|e| matches!(e, Effect::Compensate { .. })),
            "{effects:?}"
        );
        assert!(wakes_reactor(
            after.status,
            &after,
            &records[records.len() - 1..],
            &effects,
            true
        ));
    }

    #[test]
    fn given_steps_in_every_state_when_resumed_then_each_unfinished_step_gets_a_job() {
        let (state, _) = history("t", plan(), vec![]);
        let jobs = resumed(&state);
        assert_eq!(jobs, vec![("a".to_owned(), 1), ("b".to_owned(), 1)]);

        let (state, _) = history("t", plan(), vec![started("a")]);
        let jobs = resumed(&state);
        assert_eq!(
            jobs,
            vec![("a".to_owned(), 1), ("b".to_owned(), 1)],
            "a running step is resumed at its current attempt (its lease decides)"
        );

        let (state, _) = history("t", plan(), ran_to_the_end());
        assert!(resume_jobs(&state).is_empty(), "a finished run has nothing");
    }
}
