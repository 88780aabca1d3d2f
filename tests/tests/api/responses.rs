//! Real responses conform to the document: runs, lists, events, tools, cancel, errors.

use axum::body::Body;
use axum::http::StatusCode;
use serde_json::json;

use crane::engine::breaker::BreakerState;
use crane::ports::BreakerStore;

use crate::harness::*;
use crate::schema::*;
use crane_tests::api::{EventList, Health, RunPage, RunView, TodoPage, ToolList};

#[tokio::test]
async fn given_a_prompt_when_posted_then_the_run_conforms_to_the_run_schema() {
    let doc = doc();
    let h = harness();
    let reply = h.send(post_json("/runs", &json!({"prompt": PROMPT}))).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_documented(&doc, "post", "/runs", &reply);
    let run: RunView = reply.json();
    assert_eq!(run.status, "pending");
    assert_eq!(run.prompt, PROMPT);
    assert_eq!(run.steps.len(), 4);
    assert_eq!(run.planner.map(|p| p.name).as_deref(), Some("fixed"));
    // Every documented response header is real.
    let id = &run.run_id;
    assert_eq!(
        reply.header("location").map(str::to_owned),
        Some(format!("/runs/{id}"))
    );
    assert!(reply.header("x-correlation-id").is_some());
    assert_eq!(reply.header("idempotent-replayed"), None);
}

#[tokio::test]
async fn given_a_finished_run_when_read_then_every_get_response_conforms_to_its_schema() {
    let doc = doc();
    let h = harness();
    let id = h.finished_run().await;

    let run = h.send(get(&format!("/runs/{id}"))).await;
    assert_eq!(run.status, StatusCode::OK);
    assert_documented(&doc, "get", "/runs/{id}", &run);
    let view: RunView = run.json();
    assert_eq!(view.status, "completed", "{}", run.body);
    assert_eq!(view.result.expect("a result")["title"], "50");

    let at = &view.created_at;
    let past = h.send(get(&format!("/runs/{id}?at={}", encode(at)))).await;
    assert_eq!(past.status, StatusCode::OK, "{}", past.body);
    assert_documented(&doc, "get", "/runs/{id}", &past);
    assert_eq!(past.json::<RunView>().status, "pending");

    let list = h.send(get("/runs")).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_documented(&doc, "get", "/runs", &list);
    assert_eq!(list.json::<RunPage>().runs[0].run_id, id);

    let page = h.send(get("/runs?limit=1&status=completed")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_documented(&doc, "get", "/runs", &page);
    assert!(page.json::<RunPage>().next_cursor.is_some());

    let events = h.send(get(&format!("/runs/{id}/events"))).await;
    assert_eq!(events.status, StatusCode::OK);
    assert_documented(&doc, "get", "/runs/{id}/events", &events);
    let list: EventList = events.json();
    assert_eq!(list.run_id, id);
    assert_eq!(list.events[0].kind, "RunCreated");

    let todos = h.send(get("/todos")).await;
    assert_eq!(todos.status, StatusCode::OK);
    assert_documented(&doc, "get", "/todos", &todos);
    assert_eq!(todos.json::<TodoPage>().todos[0].title, "50");

    let health = h.send(get("/health")).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_documented(&doc, "get", "/health", &health);
    assert_eq!(health.json::<Health>().status, "ok");

    let openapi = h.send(get("/openapi.json")).await;
    assert_eq!(openapi.status, StatusCode::OK);
    assert_documented(&doc, "get", "/openapi.json", &openapi);
    assert_eq!(openapi.body, doc);
}

#[tokio::test]
async fn given_a_compensated_run_when_its_events_are_read_then_they_conform() {
    let doc = doc();
    let h = harness_with(failing_dag());
    let id = h.finished_run().await;
    let run = h.send(get(&format!("/runs/{id}"))).await;
    assert_documented(&doc, "get", "/runs/{id}", &run);
    assert_eq!(run.json::<RunView>().status, "compensated", "{}", run.body);
    let events = h.send(get(&format!("/runs/{id}/events"))).await;
    assert_documented(&doc, "get", "/runs/{id}/events", &events);
    let list: EventList = events.json();
    let types: Vec<&str> = list.events.iter().map(|e| e.kind.as_str()).collect();
    for t in [
        "StepFailed",
        "RunFailed",
        "CompensationStarted",
        "StepCompensated",
        "RunCompensated",
    ] {
        assert!(types.contains(&t), "{t} missing from {types:?}");
    }
}

#[tokio::test]
async fn given_breakers_in_every_state_when_tools_are_listed_then_they_conform() {
    let doc = doc();
    let h = harness();
    let reply = h.send(get("/tools")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_documented(&doc, "get", "/tools", &reply);
    assert_eq!(reply.json::<ToolList>().tools[0].breaker.state, "closed");

    let at = chrono::Utc::now();
    let open = BreakerState::Open {
        opened_at: at,
        until: at,
    };
    let half = BreakerState::HalfOpen {
        successes: 1,
        trials: 0,
        last_trial_at: None,
    };
    for (tool, state) in [("calculator", open), ("todo", half)] {
        let v = serde_json::to_value(&state).expect("serialises");
        BreakerStore::put(&*h.store, tool, 0, &v)
            .await
            .expect("breaker stored");
    }
    let reply = h.send(get("/tools")).await;
    assert_documented(&doc, "get", "/tools", &reply);
    let tools: ToolList = reply.json();
    let states: Vec<&str> = tools
        .tools
        .iter()
        .map(|t| t.breaker.state.as_str())
        .collect();
    assert_eq!(states, vec!["open", "half_open"]);
}

#[tokio::test]
async fn given_a_pending_run_when_cancelled_then_202_and_the_run_conforms() {
    let doc = doc();
    let h = harness();
    let id = h.create().await;
    let reply = h
        .send(post(&format!("/runs/{id}/cancel"), Body::empty()))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    assert_documented(&doc, "post", "/runs/{id}/cancel", &reply);
    assert!(reply.json::<RunView>().cancel_requested);
    // Cancelling again while the cancel is in progress is harmless.
    let again = h
        .send(post(&format!("/runs/{id}/cancel"), Body::empty()))
        .await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    h.drain().await;
    let run = h.send(get(&format!("/runs/{id}"))).await;
    assert_eq!(run.json::<RunView>().status, "cancelled", "{}", run.body);
}

#[tokio::test]
async fn given_an_error_when_answered_then_it_conforms_to_the_error_schema() {
    let doc = doc();
    let h = harness();
    let reply = h.send(get(&format!("/runs/{UNKNOWN_ID}"))).await;
    reply.assert_error(StatusCode::NOT_FOUND, "not_found", "unknown run");
    assert_documented(&doc, "get", "/runs/{id}", &reply);
    assert_conforms(&doc, &schema(&doc, "Error"), &reply.body, "error");
}
