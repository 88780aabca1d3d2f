//! Failures of the planner and the stores: documented statuses, JSON bodies.

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode};
use serde_json::json;

use crane::domain::{Plan, Usage};
use crane::http::ROUTES;
use crane::planner::fallback::FallbackPlanner;
use crane::planner::model::{LlmError, ModelFailure, ModelPlanner};
use crane::planner::{FixedPlanner, PlanError, Planned};
use crane::ports::StoreError;
use crane::tools::Registry;

use crate::harness::*;
use crate::schema::*;
use crane_tests::api::{Health, RunView};

#[tokio::test]
async fn given_each_planner_error_when_posting_then_its_documented_status_and_code() {
    let doc = doc();
    for (error, status, code) in [
        (
            PlanError::NotUnderstood("I can calculate and manage todos".into()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "prompt_not_understood",
        ),
        (
            PlanError::Invalid("step s1 uses unknown tool 'weather'".into()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_plan",
        ),
        (
            PlanError::Unavailable("timeout".into()),
            StatusCode::SERVICE_UNAVAILABLE,
            "planner_unavailable",
        ),
    ] {
        let h = harness_planned(Failing::new(vec![error]));
        let reply = h.send(post_json("/runs", &json!({"prompt": PROMPT}))).await;
        reply.assert_error(status, code, code);
        assert_documented(&doc, "post", "/runs", &reply);
    }
}

#[tokio::test]
async fn given_a_planner_outage_when_retried_with_the_same_key_then_the_run_is_created_once() {
    let h = harness_planned(Failing::new(vec![PlanError::Unavailable("timeout".into())]));
    let req = || {
        with_header(
            post_json("/runs", &json!({"prompt": PROMPT})),
            "idempotency-key",
            HeaderValue::from_static("retry-1"),
        )
    };
    let first = h.send(req()).await;
    first.assert_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "planner_unavailable",
        "outage",
    );
    let second = h.send(req()).await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.body);
    let third = h.send(req()).await;
    assert_eq!(third.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        second.json::<RunView>().run_id,
        third.json::<RunView>().run_id
    );
}

/// A model that always fails to connect to an internal host.
struct Unreachable;

#[async_trait]
impl ModelPlanner for Unreachable {
    fn name(&self) -> &'static str {
        "llm"
    }

    fn model(&self) -> &str {
        "test-model"
    }

    async fn plan_with_model(&self, _: &str, _: &Registry) -> Result<Planned, ModelFailure> {
        Err(ModelFailure {
            error: LlmError::Connect("tcp connect error to http://10.1.2.3:8000/v1".into()),
            usage: Usage::default(),
        })
    }
}

#[tokio::test]
async fn given_a_model_failure_when_a_run_is_read_then_only_the_category_is_shown() {
    let doc = doc();
    let fallback = Arc::new(FixedPlanner(Plan { steps: seed_dag() }));
    let planner = FallbackPlanner::with_fallback(Arc::new(Unreachable), fallback);
    let h = harness_planned(Arc::new(planner));
    let created = h.send(post_json("/runs", &json!({"prompt": PROMPT}))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_documented(&doc, "post", "/runs", &created);
    let run: RunView = created.json();
    let id = run.run_id;
    let planner = run.planner.expect("a planner");
    assert_eq!(planner.fallback_reason.as_deref(), Some("unavailable"));
    assert_eq!(planner.requested.as_deref(), Some("llm"));
    for uri in [
        format!("/runs/{id}"),
        format!("/runs/{id}/events"),
        "/runs".to_owned(),
    ] {
        let reply = h.send(get(&uri)).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}");
        let text = String::from_utf8_lossy(&reply.raw);
        assert!(text.contains("\"unavailable\""), "{uri}: {text}");
        assert!(
            !text.contains("10.1.2.3"),
            "{uri} leaks the internal URL: {text}"
        );
    }
}

#[tokio::test]
async fn given_a_degraded_planner_when_health_is_read_then_200_degraded_and_it_conforms() {
    let doc = doc();
    let h = harness_planned(Failing::new(vec![]));
    let reply = h.send(get("/health")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_documented(&doc, "get", "/health", &reply);
    let health: Health = reply.json();
    assert_eq!(health.status, "degraded");
    assert_eq!(health.planner.status, "degraded");
    assert_eq!(
        health.planner.reason.as_deref(),
        Some("no model configured")
    );
}

#[tokio::test]
async fn given_failing_stores_when_each_route_is_called_then_a_documented_json_error() {
    let doc = doc();
    let cases = [
        (
            StoreError::unavailable("down"),
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
        ),
        (
            StoreError::corrupt("bad bytes"),
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
        ),
        (
            StoreError::NotFound("gone".into()),
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
        ),
        (
            StoreError::Invalid("bad key".into()),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (error, status, code) in cases {
        let router = broken_router(error.clone());
        for (method, path) in ROUTES {
            let uri = path.replace("{id}", UNKNOWN_ID).replace("{step_id}", "s1");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let body = if *path == "/runs" && m == Method::POST {
                Body::from(json!({"prompt": PROMPT}).to_string())
            } else {
                Body::empty()
            };
            let reply = send(&router, request(m, &uri, body)).await;
            let case = format!("{method} {path} with {error:?}");
            assert!(reply.is_json(), "{case}: not JSON");
            match *path {
                "/openapi.json" => assert_eq!(reply.status, StatusCode::OK, "{case}"),
                // A store without append signals cannot stream.
                "/runs/{id}/stream" => {
                    reply.assert_error(StatusCode::NOT_FOUND, "streaming_unavailable", &case)
                }
                "/health" => {
                    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{case}");
                    assert_eq!(reply.body["store"], "unavailable", "{case}");
                }
                // A listing store's `Invalid` is read as a bad cursor.
                "/runs" | "/todos" if *method == "get" && code == "invalid_request" => {
                    reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_cursor", &case)
                }
                _ => reply.assert_error(status, code, &case),
            }
            assert_documented(&doc, method, path, &reply);
            // A 5xx never shows the store's own message.
            let leaked = ["down", "bad bytes", "gone"]
                .iter()
                .any(|m| reply.raw.windows(m.len()).any(|w| w == m.as_bytes()));
            assert!(
                !(reply.status.is_server_error() && leaked),
                "{case}: internal details leaked: {}",
                reply.body
            );
        }
    }
}

#[tokio::test]
async fn given_a_write_conflict_when_posting_then_409_conflict() {
    let doc = doc();
    let router = broken_router(StoreError::Conflict("seq 1 exists".into()));
    for (uri, path) in [
        ("/runs".to_owned(), "/runs"),
        (format!("/runs/{UNKNOWN_ID}/cancel"), "/runs/{id}/cancel"),
    ] {
        let reply = send(&router, post_json(&uri, &json!({"prompt": PROMPT}))).await;
        reply.assert_error(StatusCode::CONFLICT, "conflict", &uri);
        assert_documented(&doc, "post", path, &reply);
    }
}
