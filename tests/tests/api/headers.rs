//! Headers: idempotency, Location, correlation.

use axum::http::{HeaderValue, StatusCode};
use serde_json::json;

use crane::planner::PlanError;

use crate::harness::*;
use crate::schema::*;
use crane_tests::api::{RunPage, RunView};

#[tokio::test]
async fn given_an_idempotency_key_when_posted_twice_then_the_same_run_is_replayed() {
    let doc = doc();
    let h = harness();
    let req = || {
        with_header(
            post_json("/runs", &json!({"prompt": PROMPT})),
            "idempotency-key",
            HeaderValue::from_static("order-0001"),
        )
    };
    let first = h.send(req()).await;
    let second = h.send(req()).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(second.status, StatusCode::CREATED);
    assert_documented(&doc, "post", "/runs", &second);
    assert_eq!(
        first.json::<RunView>().run_id,
        second.json::<RunView>().run_id
    );
    assert_eq!(first.header("idempotent-replayed"), None);
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    assert_eq!(first.header("location"), second.header("location"));

    let other = with_header(
        post_json("/runs", &json!({"prompt": "something else"})),
        "idempotency-key",
        HeaderValue::from_static("order-0001"),
    );
    let reply = h.send(other).await;
    reply.assert_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        "reused key",
    );
    assert_documented(&doc, "post", "/runs", &reply);
    let list = h.send(get("/runs")).await;
    assert_eq!(list.json::<RunPage>().runs.len(), 1);
}

#[tokio::test]
async fn given_an_unplannable_prompt_with_a_key_when_refused_then_the_key_stays_free() {
    let h = harness_planned(Failing::new(vec![PlanError::NotUnderstood(
        "I can calculate and manage todos".into(),
    )]));
    let keyed = |prompt: &str| {
        with_header(
            post_json("/runs", &json!({ "prompt": prompt })),
            "idempotency-key",
            HeaderValue::from_static("order-0002"),
        )
    };
    let refused = h.send(keyed("sing me a song")).await;
    refused.assert_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "prompt_not_understood",
        "unplannable",
    );
    // The key was not used up: a different, plannable prompt may take it.
    let created = h.send(keyed(PROMPT)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.header("idempotent-replayed"), None);
    let again = h.send(keyed(PROMPT)).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        again.json::<RunView>().run_id,
        created.json::<RunView>().run_id
    );
}

#[tokio::test]
async fn given_a_created_run_when_following_location_then_it_is_the_run() {
    let h = harness();
    let created = h.send(post_json("/runs", &json!({"prompt": PROMPT}))).await;
    let location = created.header("location").expect("location").to_owned();
    let run = h.send(get(&location)).await;
    assert_eq!(run.status, StatusCode::OK);
    assert_eq!(
        run.json::<RunView>().run_id,
        created.json::<RunView>().run_id
    );
}

#[tokio::test]
async fn given_a_correlation_id_when_posted_then_it_is_echoed_and_kept_on_the_run() {
    let h = harness();
    let req = with_header(
        post_json("/runs", &json!({"prompt": PROMPT})),
        "x-correlation-id",
        HeaderValue::from_static("req-7f3a9c"),
    );
    let reply = h.send(req).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.header("x-correlation-id"), Some("req-7f3a9c"));
    assert_eq!(reply.json::<RunView>().correlation_id, "req-7f3a9c");

    // Without one (or with an unusable one) a fresh id is generated and returned.
    let too_long = HeaderValue::from_str(&"c".repeat(129)).expect("header");
    for req in [
        post_json("/runs", &json!({"prompt": PROMPT})),
        with_header(
            post_json("/runs", &json!({"prompt": PROMPT})),
            "x-correlation-id",
            too_long,
        ),
    ] {
        let reply = h.send(req).await;
        let echoed = reply.header("x-correlation-id").expect("generated id");
        assert_eq!(echoed.len(), 36, "a UUID: {echoed}");
        assert_eq!(reply.json::<RunView>().correlation_id, echoed);
    }
}
