//! The `crane` binary against a small in-test server speaking the parts of the API that
//! are not on every server yet: the long-polling events endpoint (`?after=&wait=`),
//! approval events, and the approve/reject routes. It checks what the CLI asks for, not
//! what a real run does (that is `tests/cli.rs`).

use std::collections::HashMap;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

#[derive(Default)]
struct Stub {
    events: Vec<Value>,
    /// `(after, wait)` of every events request.
    asked: Mutex<Vec<(u64, Option<u64>)>>,
    /// `(path, body)` of every decision posted.
    decisions: Mutex<Vec<(String, Value)>>,
    /// Answer the next events request after the first with a 503.
    fail_once: AtomicBool,
    /// Refuse a longer `wait` with `400 invalid_wait`.
    max_wait: Option<u64>,
}

fn event(seq: u64, kind: &str, data: Value) -> Value {
    json!({"seq": seq, "at": format!("2026-01-02T03:04:05.{:03}Z", seq * 10), "version": 1, "type": kind, "data": data})
}

/// A run whose second step waits for a person's approval.
fn approval_run() -> Vec<Value> {
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
        event(
            3,
            "StepStarted",
            json!({"step_id": "s1", "attempt": 1, "lease_ms": 35000}),
        ),
        event(
            4,
            "StepCompleted",
            json!({"step_id": "s1", "attempt": 1, "output": 5, "duration_ms": 1}),
        ),
        event(
            5,
            "ApprovalRequested",
            json!({"step_id": "s2", "input": {"action": "add", "title": "5"}, "approver": "default", "expires_at": "2026-01-02T04:04:05Z"}),
        ),
        event(
            6,
            "StepApproved",
            json!({"step_id": "s2", "by": "default", "comment": "ship it"}),
        ),
        event(
            7,
            "StepStarted",
            json!({"step_id": "s2", "attempt": 1, "lease_ms": 35000}),
        ),
        event(
            8,
            "StepCompleted",
            json!({"step_id": "s2", "attempt": 1, "output": {"id": 1, "title": "5", "done": false}, "duration_ms": 1}),
        ),
        event(
            9,
            "RunCompleted",
            json!({"result": {"id": 1, "title": "5", "done": false}}),
        ),
    ]
}

/// Long-poll: one new event per answer, like a server answering as soon as one exists.
async fn events(
    State(stub): State<Arc<Stub>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let after = q.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
    let wait = q.get("wait").and_then(|w| w.parse().ok());
    stub.asked.lock().expect("lock").push((after, wait));
    if let (Some(max), Some(wait)) = (stub.max_wait, wait) {
        if wait > max {
            let msg = format!("wait={wait} is not a number of seconds from 0 to {max}");
            let body = json!({"error": {"code": "invalid_wait", "message": msg}});
            return (StatusCode::BAD_REQUEST, Json(body)).into_response();
        }
    }
    if after > 0 && stub.fail_once.swap(false, Ordering::SeqCst) {
        let body = json!({"error": {"code": "unavailable", "message": "try again"}});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    let next: Vec<Value> = stub
        .events
        .iter()
        .filter(|e| e["seq"].as_u64().unwrap_or(0) > after)
        .take(1)
        .cloned()
        .collect();
    Json(json!({"run_id": id, "events": next})).into_response()
}

async fn decide(
    State(stub): State<Arc<Stub>>,
    Path((id, step, verb)): Path<(String, String, String)>,
    Json(body): Json<Value>,
) -> Response {
    stub.decisions
        .lock()
        .expect("lock")
        .push((format!("/runs/{id}/steps/{step}/{verb}"), body));
    Json(json!({"run_id": id, "status": "running"})).into_response()
}

async fn serve(stub: Stub) -> (String, Arc<Stub>) {
    let stub = Arc::new(stub);
    let app = Router::new()
        .route("/runs/{id}/events", get(events))
        .route("/runs/{id}/steps/{step}/{verb}", post(decide))
        .with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), stub)
}

async fn crane(url: &str, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_crane"));
    cmd.args(args)
        .env("CRANE_URL", url)
        .env_remove("CRANE_API_KEY")
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("crane finished within a minute")
        .expect("crane ran")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_long_polling_server_when_following_then_each_poll_asks_after_the_last_event_seen_and_a_503_is_ridden_out(
) {
    let (url, stub) = serve(Stub {
        events: approval_run(),
        fail_once: AtomicBool::new(true),
        ..Stub::default()
    })
    .await;
    let out = crane(&url, &["events", "r1", "--follow"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let asked = stub.asked.lock().expect("lock").clone();
    let afters: Vec<u64> = asked.iter().map(|(after, _)| *after).collect();
    assert_eq!(
        afters,
        vec![0, 1, 1, 2, 3, 4, 5, 6, 7, 8],
        "the 503 is asked again"
    );
    assert!(asked.iter().all(|(_, wait)| *wait == Some(20)), "{asked:?}");

    for expected in [
        "s2 todo add \"{{s1}}\": ⏸ waiting for approval: crane approve r1 s2 (or crane reject r1 s2)",
        "s2 todo add \"{{s1}}\": approved: ship it",
        "run completed: result todo 1 \"5\"",
    ] {
        assert_eq!(text.matches(expected).count(), 1, "{expected:?} once in:\n{text}");
    }
    assert_eq!(text.matches(": running (attempt 1)").count(), 2, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_approve_and_reject_when_sent_then_they_post_the_comment_to_the_step_route() {
    let (url, stub) = serve(Stub::default()).await;
    let out = crane(&url, &["approve", "r1", "s2", "--comment", "ship it"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "approved step s2 of run r1; the run is running"
    );
    let out = crane(&url, &["reject", "r1", "s2", "--json"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(answer["status"], "running");
    let decisions = stub.decisions.lock().expect("lock").clone();
    assert_eq!(
        decisions,
        vec![
            (
                "/runs/r1/steps/s2/approve".to_owned(),
                json!({"comment": "ship it"})
            ),
            ("/runs/r1/steps/s2/reject".to_owned(), json!({})),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_server_with_a_shorter_longest_wait_when_following_then_the_wait_is_halved_until_accepted(
) {
    let (url, stub) = serve(Stub {
        events: approval_run(),
        max_wait: Some(5),
        ..Stub::default()
    })
    .await;
    let out = crane(&url, &["events", "r1", "--follow", "--json"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 9);
    let waits: Vec<Option<u64>> = stub
        .asked
        .lock()
        .expect("lock")
        .iter()
        .map(|a| a.1)
        .collect();
    assert_eq!(&waits[..3], &[Some(20), Some(10), Some(5)]);
    assert!(waits[3..].iter().all(|w| *w == Some(5)), "{waits:?}");
}
