//! Approvals over HTTP: every answer of the approve and reject routes is documented.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;

use crane::adapters::local::memory::{MemoryStore, MemoryTodos};
use crane::app::{App, Settings};
use crane::domain::Plan;
use crane::http::router;
use crane::planner::FixedPlanner;
use crane::ports::SystemClock;
use crane::tools::Registry;

use crate::harness::*;
use crate::schema::*;
use crane_tests::api::RunView;

/// A harness whose policy holds todo deletes: s1 adds a todo, s2 deletes it (held).
fn approval_harness() -> Harness {
    let store = Arc::new(MemoryStore::default());
    let todos = Arc::new(MemoryTodos::default());
    let steps = vec![
        step("s1", "todo", json!({"action": "add", "title": "x"}), &[]),
        step("s2", "todo", json!({"action": "delete", "id": 1}), &["s1"]),
    ];
    let app = Arc::new(App {
        events: store.clone(),
        views: store.clone(),
        todos: todos.clone(),
        idempotency: store.clone(),
        breakers: store.clone(),
        registry: Registry::new(todos),
        planner: Arc::new(FixedPlanner(Plan { steps })),
        clock: Arc::new(SystemClock),
        settings: Settings {
            approval: crane::engine::approval::ApprovalPolicy::parse(["todo.delete"])
                .expect("policy"),
            ..settings()
        },
    });
    Harness {
        router: router(app.clone()),
        app,
        store,
    }
}

#[tokio::test]
async fn given_a_step_waiting_for_approval_when_decided_over_http_then_every_answer_is_documented()
{
    let doc = doc();
    let h = approval_harness();
    let id = h.create().await;
    h.drain().await;
    let waiting = h.send(get(&format!("/runs/{id}"))).await;
    assert_documented(&doc, "get", "/runs/{id}", &waiting);
    let run: RunView = waiting.json();
    assert_eq!(run.awaiting_approval, ["s2"]);
    assert!(run.plan.expect("a plan").steps[1].requires_approval);
    assert_eq!(run.steps[1].status, "waiting_approval");
    assert_eq!(
        run.steps[1].approval.as_ref().expect("an approval").input,
        json!({"action": "delete", "id": 1})
    );
    let path = "/runs/{id}/steps/{step_id}/approve";
    let approve = format!("/runs/{id}/steps/s2/approve");
    let reject = format!("/runs/{id}/steps/s2/reject");
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (
            post(&approve, "[1]"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            post(&approve, "{"),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            post_json(&approve, &json!({"coment": "x"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_field",
        ),
        (
            post_json(&approve, &json!({"comment": 3})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_comment",
        ),
        (
            post_json(&approve, &json!({"comment": "x".repeat(1_001)})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "comment_too_long",
        ),
        (
            post(&format!("/runs/{id}/steps/s9/approve"), ""),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            post(&format!("/runs/{id}/steps/bad%20id/approve"), ""),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            post(&format!("/runs/{id}/steps/s1/approve"), ""),
            StatusCode::CONFLICT,
            "not_waiting_approval",
        ),
    ];
    for (req, status, code) in cases {
        let reply = h.send(req).await;
        reply.assert_error(status, code, code);
        assert_documented(&doc, "post", path, &reply);
    }
    let approved = h
        .send(post_json(&approve, &json!({"comment": "fine"})))
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    assert_documented(&doc, "post", path, &approved);
    let run: RunView = approved.json();
    let approval = run.steps[1].approval.as_ref().expect("an approval");
    assert_eq!(approval.decision.as_deref(), Some("approved"));
    let twice = h.send(post(&reject, "")).await;
    twice.assert_error(StatusCode::CONFLICT, "already_decided", "twice");
    assert_documented(&doc, "post", "/runs/{id}/steps/{step_id}/reject", &twice);
    h.drain().await;
    let done = h.send(get(&format!("/runs/{id}"))).await;
    assert_eq!(done.json::<RunView>().status, "completed", "{}", done.body);
    assert_documented(&doc, "get", "/runs/{id}", &done);
    let events = h.send(get(&format!("/runs/{id}/events"))).await;
    assert_documented(&doc, "get", "/runs/{id}/events", &events);
}
