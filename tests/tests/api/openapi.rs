//! The document agrees with the router and with the domain: routes, limits, status enums,
//! every event type and breaker state.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crane::app::MAX_PROMPT_CHARS;
use crane::domain::{
    ErrorKind, Event, EventRecord, Plan, PlannerInfo, RunStatus, StepStatus, Usage,
};
use crane::engine::breaker::BreakerState;
use crane::http::{LOCAL_ROUTES, MAX_BODY_BYTES, ROUTES};

use crate::harness::*;
use crate::schema::*;

#[test]
fn given_the_openapi_document_when_parsed_then_it_is_openapi_3_1_with_the_required_parts() {
    let doc = doc();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["info"]["title"].is_string());
    assert!(doc["info"]["version"].is_string());
    for name in [
        "Run",
        "Step",
        "PlanStep",
        "Plan",
        "PlannerInfo",
        "Usage",
        "Event",
        "RunList",
        "EventList",
        "Todo",
        "TodoList",
        "Tool",
        "BreakerState",
        "ToolList",
        "Health",
        "Error",
    ] {
        assert!(schema(&doc, name).is_object(), "{name}");
    }
}

#[test]
fn given_the_openapi_document_when_every_ref_is_followed_then_none_dangles() {
    fn walk(doc: &Value, node: &Value, count: &mut usize) {
        match node {
            Value::Object(o) => {
                if let Some(Value::String(_)) = o.get("$ref") {
                    let _ = resolve(doc, node);
                    *count += 1;
                }
                for v in o.values() {
                    walk(doc, v, count);
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(doc, v, count)),
            _ => {}
        }
    }
    let doc = doc();
    let mut count = 0;
    walk(&doc, &doc, &mut count);
    assert!(count > 50, "only {count} $refs: is the document complete?");
}

#[test]
fn given_the_openapi_document_when_compared_with_routes_then_they_are_the_same_set() {
    let documented = documented_routes(&doc());
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .chain(LOCAL_ROUTES)
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(
        documented, served,
        "infra/openapi.json paths and http::ROUTES differ"
    );
}

#[tokio::test]
async fn given_each_documented_route_when_requested_then_the_router_serves_it() {
    let h = harness();
    let local_only: BTreeSet<(String, String)> = LOCAL_ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    for (method, path) in documented_routes(&doc()).difference(&local_only).cloned() {
        let uri = path.replace("{id}", UNKNOWN_ID).replace("{step_id}", "s1");
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let body = if path == "/runs" && m == Method::POST {
            Body::from(json!({"prompt": PROMPT}).to_string())
        } else {
            Body::empty()
        };
        let reply = h.send(request(m, &uri, body)).await;
        assert_ne!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: method not routed"
        );
        let message = reply.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            !(reply.status == StatusCode::NOT_FOUND && message.starts_with("no such route")),
            "{method} {path}: fell through to the fallback"
        );
        assert!(
            reply.status.as_u16() < 500,
            "{method} {path}: {}",
            reply.status
        );
    }
}

#[test]
fn given_post_runs_when_its_responses_are_read_then_201_400_413_and_422_are_documented() {
    let doc = doc();
    let responses = doc["paths"]["/runs"]["post"]["responses"]
        .as_object()
        .expect("POST /runs responses");
    for status in ["201", "400", "413", "422"] {
        assert!(responses.contains_key(status), "POST /runs lacks {status}");
    }
}

#[test]
fn given_the_create_run_body_schema_when_read_then_it_matches_the_limits_of_the_code() {
    let doc = doc();
    let body = resolve(
        &doc,
        &doc["paths"]["/runs"]["post"]["requestBody"]["content"]["application/json"]["schema"],
    )
    .clone();
    assert_eq!(body["required"], json!(["prompt"]));
    assert_eq!(body["additionalProperties"], json!(false));
    assert_eq!(body["properties"]["prompt"]["type"], "string");
    assert_eq!(body["properties"]["prompt"]["minLength"], 1);
    assert_eq!(
        body["properties"]["prompt"]["maxLength"],
        json!(MAX_PROMPT_CHARS)
    );
    let limit = resolve(&doc, &json!({"$ref": "#/components/parameters/Limit"})).clone();
    assert_eq!(limit["schema"]["minimum"], json!(1));
    assert_eq!(
        limit["schema"]["maximum"],
        json!(crane::app::MAX_PAGE),
        "limit maximum"
    );
    assert_eq!(
        limit["schema"]["default"],
        json!(crane::app::DEFAULT_PAGE),
        "limit default"
    );
    assert!(doc["info"]["description"]
        .as_str()
        .is_some_and(|d| d.contains(&MAX_BODY_BYTES.to_string())));
}

#[test]
fn given_the_status_enums_when_compared_with_the_domain_then_they_are_the_same() {
    let doc = doc();
    let run: Vec<Value> = RunStatus::ALL.iter().map(|s| json!(s.as_str())).collect();
    assert_eq!(schema(&doc, "RunStatus")["enum"], json!(run));
    let steps = [
        StepStatus::Pending,
        StepStatus::Running,
        StepStatus::Completed,
        StepStatus::Failed,
        StepStatus::Skipped,
        StepStatus::Compensated,
        StepStatus::CompensationFailed,
        StepStatus::WaitingApproval,
    ];
    // A new variant must be added to `steps` (and the document): this match says so.
    for s in steps {
        match s {
            StepStatus::Pending
            | StepStatus::Running
            | StepStatus::Completed
            | StepStatus::Failed
            | StepStatus::Skipped
            | StepStatus::Compensated
            | StepStatus::CompensationFailed
            | StepStatus::WaitingApproval => {}
        }
    }
    let step: Vec<Value> = steps
        .iter()
        .map(|s| serde_json::to_value(s).expect("serialises"))
        .collect();
    assert_eq!(schema(&doc, "StepStatus")["enum"], json!(step));
}

/// One event of every type, so the document must describe each one's `data`.
fn every_event() -> Vec<Event> {
    let events = vec![
        Event::RunCreated {
            tenant: "default".into(),
            prompt: PROMPT.into(),
            correlation_id: "c".into(),
            idempotency_key: Some("k".into()),
        },
        Event::PlanGenerated {
            planner: PlannerInfo {
                name: "llm".into(),
                model: Some("m".into()),
                fallback_reason: Some("why".into()),
                requested: Some("bedrock".into()),
                usage: Some(Usage {
                    prompt_tokens: 1,
                    completion_tokens: 2,
                    latency_ms: 3,
                }),
            },
            plan: Plan { steps: seed_dag() }.into(),
        },
        Event::StepStarted {
            step_id: "s1".into(),
            attempt: 1,
            lease_ms: 35_000,
        },
        Event::StepCompleted {
            step_id: "s1".into(),
            attempt: 1,
            output: json!(5).into(),
            duration_ms: 2,
        },
        Event::StepAttemptFailed {
            step_id: "s1".into(),
            attempt: 1,
            error: "flaky".into(),
            kind: ErrorKind::Transient,
            duration_ms: 2,
            retry_in_ms: Some(1_000),
        },
        Event::StepFailed {
            step_id: "s1".into(),
            attempt: 4,
            error: "boom".into(),
        },
        Event::StepInterrupted {
            step_id: "s1".into(),
            attempt: 1,
            error: "attempt 1 was interrupted".into(),
        },
        Event::StepDeferred {
            step_id: "s1".into(),
            attempt: 2,
            reason: "calculator temporarily unavailable (circuit breaker open)".into(),
            until: chrono::DateTime::from_timestamp(1_767_323_045, 0).expect("valid time"),
        },
        Event::RunCompleted {
            result: json!({"id": 1}),
        },
        Event::RunFailed {
            error: "boom".into(),
            step_id: Some("s1".into()),
        },
        Event::CancelRequested {
            reason: Some("user".into()),
        },
        Event::CompensationStarted {
            steps: vec!["s2".into(), "s1".into()],
        },
        Event::StepCompensated {
            step_id: "s1".into(),
            attempts: 1,
        },
        Event::StepCompensationFailed {
            step_id: "s1".into(),
            error: "stuck".into(),
            attempts: 4,
        },
        Event::RunCompensated {},
        Event::RunCompensationFailed {
            step_id: "s1".into(),
            error: "stuck".into(),
        },
        Event::RunCancelled {},
        Event::CompensationRetryRequested {
            attempt: 2,
            reason: Some("the saga crashed".into()),
        },
        Event::ApprovalRequested {
            step_id: "s2".into(),
            input: json!({"action": "delete", "id": 3}),
            approver: "default".into(),
            expires_at: chrono::DateTime::from_timestamp(1_767_409_445, 0).expect("valid time"),
        },
        Event::StepApproved {
            step_id: "s2".into(),
            by: "default".into(),
            comment: Some("looks right".into()),
        },
        Event::StepRejected {
            step_id: "s2".into(),
            by: None,
            comment: None,
            expired: true,
        },
    ];
    // A new event type fails to compile here until it is added above (and documented).
    for e in &events {
        match e {
            Event::RunCreated { .. }
            | Event::PlanGenerated { .. }
            | Event::StepStarted { .. }
            | Event::StepCompleted { .. }
            | Event::StepAttemptFailed { .. }
            | Event::StepFailed { .. }
            | Event::StepInterrupted { .. }
            | Event::StepDeferred { .. }
            | Event::RunCompleted { .. }
            | Event::RunFailed { .. }
            | Event::CancelRequested { .. }
            | Event::CompensationStarted { .. }
            | Event::StepCompensated { .. }
            | Event::StepCompensationFailed { .. }
            | Event::RunCompensated {}
            | Event::RunCompensationFailed { .. }
            | Event::RunCancelled {}
            | Event::CompensationRetryRequested { .. }
            | Event::ApprovalRequested { .. }
            | Event::StepApproved { .. }
            | Event::StepRejected { .. } => {}
        }
    }
    events
}

#[test]
fn given_every_event_type_when_serialised_then_it_conforms_to_the_event_schema() {
    let doc = doc();
    let events = every_event();
    let names: Vec<Value> = events.iter().map(|e| json!(e.type_name())).collect();
    assert_eq!(schema(&doc, "EventType")["enum"], json!(names));
    let event_schema = schema(&doc, "Event");
    let at = chrono::DateTime::from_timestamp(1_767_323_045, 0).expect("valid time");
    for (i, event) in events.into_iter().enumerate() {
        let name = event.type_name();
        let seq = u64::try_from(i).expect("small") + 1;
        let rec = serde_json::to_value(EventRecord::new(seq, at, event)).expect("serialises");
        assert_conforms(&doc, &event_schema, &rec, name);
        // And with every optional field absent.
        let mut bare = rec.clone();
        if let Some(data) = bare["data"].as_object_mut() {
            let required = schema(&doc, &format!("{name}Data"))["required"].clone();
            data.retain(|k, _| required.as_array().is_some_and(|r| r.contains(&json!(k))));
        }
        assert_conforms(&doc, &event_schema, &bare, name);
    }
    // The checker is not vacuous: a wrong `data` is caught.
    let wrong = json!({"seq": 1, "at": "2026-01-02T03:04:05Z", "version": 1,
        "type": "StepStarted", "data": {"step_id": "s1"}});
    assert!(!schema_errors(&doc, &event_schema, &wrong).is_empty());
}

#[test]
fn given_every_breaker_state_when_serialised_then_it_conforms_to_the_breaker_schema() {
    let doc = doc();
    let at = chrono::DateTime::from_timestamp(1_767_323_045, 0).expect("valid time");
    let states = [
        BreakerState::default(),
        BreakerState::Open {
            opened_at: at,
            until: at,
        },
        BreakerState::HalfOpen {
            successes: 1,
            trials: 0,
            last_trial_at: None,
        },
    ];
    for state in states {
        let v = serde_json::to_value(&state).expect("serialises");
        assert_conforms(&doc, &schema(&doc, "BreakerState"), &v, state.name());
    }
}

#[test]
fn given_a_body_with_an_undocumented_property_when_checked_then_the_schema_check_reports_it() {
    let doc = doc();
    let health_schema = json!({"$ref": "#/components/schemas/Health"});
    let health = json!({"status": "ok", "version": "0.1.0", "store": "ok",
        "planner": {"name": "pattern", "status": "ok"}});
    assert_eq!(
        schema_errors(&doc, &health_schema, &health),
        Vec::<String>::new()
    );
    // An object schema with `properties` is closed, at the top and nested.
    let mut extra = health.clone();
    extra["surprise"] = json!(1);
    assert!(!schema_errors(&doc, &health_schema, &extra).is_empty());
    let mut nested = health.clone();
    nested["planner"]["surprise"] = json!(1);
    assert!(!schema_errors(&doc, &health_schema, &nested).is_empty());
    // And a value outside an enum is caught.
    let mut wrong = health;
    wrong["store"] = json!("fine");
    assert!(!schema_errors(&doc, &health_schema, &wrong).is_empty());
}
