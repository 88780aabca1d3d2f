use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::*;
use crate::progress::Progress;

fn event(seq: u64, kind: &str, data: Value) -> Value {
    json!({"seq": seq, "at": format!("2026-01-02T03:04:05.{:03}Z", seq * 10), "version": 1, "type": kind, "data": data})
}

fn at(t: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(t).expect("time").to_utc()
}

fn plain(now: &str) -> Style {
    Style {
        now: at(now),
        frame: 0,
        color: false,
    }
}

/// The seed DAG: three independent steps, then one after all three.
fn seed() -> Vec<Value> {
    vec![
        event(
            1,
            "RunCreated",
            json!({"tenant": "default", "prompt": "calculate 2+3 and calculate 10*5 and list todos then add a todo with the result", "correlation_id": "c"}),
        ),
        event(
            2,
            "PlanGenerated",
            json!({"planner": {"name": "pattern"}, "plan": {"steps": [
                {"id": "s1", "tool": "calculator", "input": {"expression": "2+3"}, "depends_on": []},
                {"id": "s2", "tool": "calculator", "input": {"expression": "10*5"}, "depends_on": []},
                {"id": "s3", "tool": "todo", "input": {"action": "list"}, "depends_on": []},
                {"id": "s4", "tool": "todo", "input": {"action": "add", "title": "{{s2}}"}, "depends_on": ["s1", "s2", "s3"]},
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
fn given_a_run_under_way_when_framed_then_each_step_has_an_aligned_line_saying_what_it_does() {
    let mut events = seed();
    events.push(event(
        3,
        "StepStarted",
        json!({"step_id": "s1", "attempt": 1, "lease_ms": 1000}),
    ));
    events.push(event(
        4,
        "StepCompleted",
        json!({"step_id": "s1", "attempt": 1, "output": 5, "duration_ms": 2}),
    ));
    events.push(event(
        5,
        "StepStarted",
        json!({"step_id": "s2", "attempt": 1, "lease_ms": 1000}),
    ));
    events.push(event(6, "StepAttemptFailed", json!({"step_id": "s2", "attempt": 1, "error": "injected fault", "kind": "transient", "duration_ms": 1, "retry_in_ms": 1000})));
    events.push(event(7, "StepDeferred", json!({"step_id": "s3", "attempt": 1, "reason": "todo temporarily unavailable (circuit breaker open)", "until": "2026-01-02T03:04:08Z"})));
    let lines = frame(&folded(&events), &plain("2026-01-02T03:04:05.570Z"));
    assert_eq!(
        lines,
        vec![
            "run r1 · running · 4 steps · pattern planner",
            "  ✓ s1  calculator  2+3           → 5 · 2 ms",
            "  ↻ s2  calculator  10*5          attempt 1 failed: injected fault · retry in 0.5 s",
            "  ⊘ s3  todo        list          held by the circuit breaker: todo temporarily unavailable (circuit breaker open) · asks again in 2.4 s",
            "  · s4  todo        add \"{{s2}}\"  waits for s2, s3",
        ]
    );
}

#[test]
fn given_a_running_step_when_framed_on_successive_ticks_then_its_spinner_turns() {
    let mut events = seed();
    events.push(event(
        3,
        "StepStarted",
        json!({"step_id": "s1", "attempt": 2, "lease_ms": 1000}),
    ));
    let p = folded(&events);
    let mut style = plain("2026-01-02T03:04:06Z");
    let first = frame(&p, &style)[1].clone();
    style.frame = 1;
    let second = frame(&p, &style)[1].clone();
    assert_ne!(first, second);
    assert!(first.ends_with("running · attempt 2"), "{first}");
}

#[test]
fn given_compensation_and_approval_when_framed_then_undo_and_the_approve_command_are_shown() {
    let mut events = seed();
    events.push(event(
        3,
        "StepCompleted",
        json!({"step_id": "s4", "attempt": 1, "output": {"id": 7}, "duration_ms": 1}),
    ));
    events.push(event(
        4,
        "ApprovalRequested",
        json!({"step_id": "s3", "expires_at": "2026-01-02T03:09:06Z"}),
    ));
    events.push(event(
        5,
        "StepFailed",
        json!({"step_id": "s1", "attempt": 3, "error": "boom"}),
    ));
    let lines = frame(&folded(&events), &plain("2026-01-02T03:04:06Z"));
    assert!(
        lines[1].contains("✗") && lines[1].ends_with("failed after 3 attempts: boom"),
        "{}",
        lines[1]
    );
    assert!(
        lines[3].contains("⏸")
            && lines[3].ends_with("waiting for approval (expires in 5 min): crane approve r1 s3"),
        "{}",
        lines[3]
    );

    events.push(event(
        6,
        "RunFailed",
        json!({"error": "step s1 (calculator) failed: boom"}),
    ));
    events.push(event(7, "CompensationStarted", json!({"steps": ["s4"]})));
    let p = folded(&events);
    let lines = frame(&p, &plain("2026-01-02T03:04:06Z"));
    assert!(lines[0].contains("compensating"), "{}", lines[0]);
    assert!(lines[2].ends_with("skipped"), "{}", lines[2]);
    assert!(lines[4].ends_with("undoing"), "{}", lines[4]);
    events.push(event(8, "StepCompensated", json!({"step_id": "s4"})));
    events.push(event(9, "RunCompensated", json!({})));
    let p = folded(&events);
    assert!(frame(&p, &plain("2026-01-02T03:04:06Z"))[4]
        .ends_with("↩ s4  todo        add \"{{s2}}\"  undone".trim_start_matches("  ")));
    assert_eq!(
        summary(&p, false),
        "run compensated in 0.1 s: step s1 (calculator) failed: boom"
    );
}

#[test]
fn given_colour_when_framed_then_symbols_are_painted_and_without_it_no_escape_is_written() {
    let mut events = seed();
    events.push(event(
        3,
        "StepCompleted",
        json!({"step_id": "s1", "attempt": 1, "output": 5, "duration_ms": 2}),
    ));
    let p = folded(&events);
    let mut style = plain("2026-01-02T03:04:06Z");
    assert!(frame(&p, &style).iter().all(|l| !l.contains('\x1b')));
    style.color = true;
    assert!(frame(&p, &style)[1].contains("\x1b[32m✓\x1b[0m"));
}

#[test]
fn given_each_kind_of_event_when_described_then_it_is_one_line_naming_the_step_and_the_change() {
    let mut events = seed();
    events.push(event(
        3,
        "StepStarted",
        json!({"step_id": "s1", "attempt": 1, "lease_ms": 1000}),
    ));
    events.push(event(4, "StepAttemptFailed", json!({"step_id": "s1", "attempt": 1, "error": "bad\nthing", "kind": "transient", "duration_ms": 1, "retry_in_ms": 250})));
    events.push(event(5, "StepCompleted", json!({"step_id": "s3", "attempt": 1, "output": {"todos": [], "total": 0, "truncated": false}, "duration_ms": 4})));
    events.push(event(6, "StepDeferred", json!({"step_id": "s2", "attempt": 1, "reason": "calculator temporarily unavailable", "until": "2026-01-02T03:04:08Z"})));
    events.push(event(7, "ApprovalRequested", json!({"step_id": "s4"})));
    events.push(event(
        8,
        "StepApproved",
        json!({"step_id": "s4", "comment": "ok"}),
    ));
    events.push(event(
        9,
        "RunCompleted",
        json!({"result": {"id": 1, "title": "50"}}),
    ));
    let mut p = Progress::new("r1");
    let mut out = Vec::new();
    for e in &events {
        p.apply(e);
        out.extend(event_lines(e, &p));
    }
    let tails: Vec<String> = out
        .iter()
        .map(|l| {
            l.split_once(' ')
                .map(|(_, rest)| rest.to_owned())
                .unwrap_or_default()
        })
        .collect();
    let held_until = at("2026-01-02T03:04:08Z")
        .with_timezone(&chrono::Local)
        .format("%H:%M:%S")
        .to_string();
    assert_eq!(
        tails,
        vec![
            "run created: \"calculate 2+3 and calculate 10*5 and list todos then add a todo with the result\"",
            "run planned by the pattern planner: 4 steps",
            "  s1 calculator 2+3",
            "  s2 calculator 10*5",
            "  s3 todo list",
            "  s4 todo add \"{{s2}}\" (after s1, s2, s3)",
            "s1 calculator 2+3: running (attempt 1)",
            "s1 calculator 2+3: attempt 1 failed: bad thing; retry in 0.2 s",
            "s3 todo list: completed → 0 todos (4 ms)",
            &format!("s2 calculator 10*5: held by the circuit breaker: calculator temporarily unavailable; asks again at {held_until}"),
            "s4 todo add \"{{s2}}\": ⏸ waiting for approval: crane approve r1 s4 (or crane reject r1 s4)",
            "s4 todo add \"{{s2}}\": approved: ok",
            "run completed: result todo 1 \"50\"",
        ]
    );
}

#[test]
fn given_long_or_odd_values_when_summarised_then_they_are_clipped_to_one_line() {
    let long = "x".repeat(500);
    assert_eq!(value_summary(&json!(long)).chars().count(), 60);
    assert_eq!(clip("a\nb", 10), "a b");
    assert_eq!(
        input_summary("todo", &json!({"action": "complete", "id": 3})),
        "complete 3"
    );
    assert_eq!(
        input_summary("weather", &json!({"city": "Oslo"})),
        "{\"city\":\"Oslo\"}"
    );
    assert_eq!(seconds(850), "0.8 s");
    assert_eq!(seconds(42_000), "42 s");
    assert_eq!(seconds(600_000), "10 min");
    assert_eq!(seconds(86_340_000), "23 h");
    assert_eq!(seconds(3 * 86_400_000), "3 d");
}

#[test]
fn given_more_steps_than_the_terminal_has_rows_when_fitted_then_busy_steps_are_kept_and_the_rest_counted(
) {
    let mut events = seed();
    events.push(event(
        3,
        "StepCompleted",
        json!({"step_id": "s1", "attempt": 1, "output": 5, "duration_ms": 2}),
    ));
    events.push(event(
        4,
        "StepCompleted",
        json!({"step_id": "s2", "attempt": 1, "output": 50, "duration_ms": 2}),
    ));
    events.push(event(
        5,
        "StepStarted",
        json!({"step_id": "s3", "attempt": 1, "lease_ms": 1000}),
    ));
    let p = folded(&events);
    let style = plain("2026-01-02T03:04:06Z");
    assert_eq!(frame_within(&p, &style, 10), frame(&p, &style), "it fits");

    let fitted = frame_within(&p, &style, 4);
    assert_eq!(fitted.len(), 4);
    assert!(fitted[0].starts_with("run r1"), "{fitted:?}");
    assert!(
        fitted[1].contains(" s1 "),
        "then the first steps in plan order: {fitted:?}"
    );
    assert!(
        fitted[2].contains(" s3 ") && fitted[2].contains("running"),
        "the running step is kept: {fitted:?}"
    );
    assert_eq!(fitted[3], "  … 2 more steps");
    assert_eq!(frame_within(&p, &style, 2).len(), 2);
}

#[test]
fn given_a_rejected_step_when_framed_then_it_failed_with_the_verdict_not_an_attempt_count() {
    let mut events = seed();
    events.push(event(3, "ApprovalRequested", json!({"step_id": "s1"})));
    events.push(event(
        4,
        "StepRejected",
        json!({"step_id": "s1", "comment": "no"}),
    ));
    events.push(event(
        5,
        "StepFailed",
        json!({"step_id": "s1", "attempt": 0, "error": "rejected"}),
    ));
    let p = folded(&events);
    let line = frame(&p, &plain("2026-01-02T03:04:06Z"))[1].clone();
    assert!(
        line.ends_with("s1  calculator  2+3           failed: rejected: no"),
        "{line}"
    );
}
