//! Bad input: always a JSON 4xx with a precise code, never a panic. Bodies, prompts,
//! idempotency keys, run ids, `at`, list queries and cursors, unknown routes and methods.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode};
use serde_json::json;

use crane::app::MAX_PROMPT_CHARS;
use crane::http::MAX_BODY_BYTES;

use crate::harness::*;
use crate::schema::*;
use crane_tests::api::{ErrorBody, RunPage, RunView};

#[tokio::test]
async fn given_bad_create_bodies_when_posted_then_each_gets_its_json_4xx_code() {
    let doc = doc();
    let h = harness();
    let too_long = "x".repeat(MAX_PROMPT_CHARS + 1);
    let too_long_wide = "é".repeat(MAX_PROMPT_CHARS + 1);
    let huge = format!("{{\"prompt\": \"{}\"}}", "a".repeat(MAX_BODY_BYTES));
    let deep = "[".repeat(MAX_BODY_BYTES / 2);
    let bad = StatusCode::BAD_REQUEST;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        ("empty body", vec![], bad, "missing_body"),
        (
            "truncated json",
            b"{\"prompt\": ".to_vec(),
            bad,
            "malformed_json",
        ),
        ("not json", b"prompt=hi".to_vec(), bad, "malformed_json"),
        (
            "trailing garbage",
            b"{\"prompt\": \"hi\"} x".to_vec(),
            bad,
            "malformed_json",
        ),
        (
            "invalid utf-8",
            vec![0xff, 0xfe, 0x00],
            bad,
            "malformed_json",
        ),
        (
            "invalid utf-8 in the prompt",
            b"{\"prompt\": \"\xff\xfe\"}".to_vec(),
            bad,
            "malformed_json",
        ),
        ("deeply nested", deep.into_bytes(), bad, "malformed_json"),
        ("array", b"[1, 2]".to_vec(), unprocessable, "invalid_body"),
        ("string", b"\"hi\"".to_vec(), unprocessable, "invalid_body"),
        ("number", b"42".to_vec(), unprocessable, "invalid_body"),
        ("null", b"null".to_vec(), unprocessable, "invalid_body"),
        (
            "no prompt",
            b"{}".to_vec(),
            unprocessable,
            "prompt_required",
        ),
        (
            "numeric prompt",
            b"{\"prompt\": 1}".to_vec(),
            unprocessable,
            "invalid_prompt",
        ),
        (
            "null prompt",
            b"{\"prompt\": null}".to_vec(),
            unprocessable,
            "invalid_prompt",
        ),
        (
            "array prompt",
            b"{\"prompt\": [\"a\"]}".to_vec(),
            unprocessable,
            "invalid_prompt",
        ),
        (
            "object prompt",
            b"{\"prompt\": {}}".to_vec(),
            unprocessable,
            "invalid_prompt",
        ),
        (
            "boolean prompt",
            b"{\"prompt\": true}".to_vec(),
            unprocessable,
            "invalid_prompt",
        ),
        (
            "unknown field",
            b"{\"prompt\": \"hi\", \"model\": \"x\"}".to_vec(),
            unprocessable,
            "unknown_field",
        ),
        (
            "misspelt field",
            b"{\"promt\": \"hi\"}".to_vec(),
            unprocessable,
            "unknown_field",
        ),
        (
            "empty prompt",
            b"{\"prompt\": \"\"}".to_vec(),
            unprocessable,
            "prompt_empty",
        ),
        (
            "whitespace prompt",
            b"{\"prompt\": \" \\n\\t \"}".to_vec(),
            unprocessable,
            "prompt_empty",
        ),
        (
            "4001-character prompt",
            json!({ "prompt": too_long }).to_string().into_bytes(),
            unprocessable,
            "prompt_too_long",
        ),
        (
            "4001 two-byte characters",
            json!({ "prompt": too_long_wide }).to_string().into_bytes(),
            unprocessable,
            "prompt_too_long",
        ),
        (
            "body over 64 KiB",
            huge.into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
    ];
    for (case, body, status, code) in cases {
        let reply = h.send(post("/runs", body)).await;
        reply.assert_error(status, code, case);
        assert_documented(&doc, "post", "/runs", &reply);
    }
    let runs = h.send(get("/runs")).await;
    assert!(
        runs.json::<RunPage>().runs.is_empty(),
        "no bad request created a run: {}",
        runs.body
    );
}

#[tokio::test]
async fn given_prompts_at_the_limits_when_posted_then_they_are_accepted() {
    let h = harness();
    for prompt in [
        "x".repeat(MAX_PROMPT_CHARS),
        "é".repeat(MAX_PROMPT_CHARS),
        format!("  {}  ", "x".repeat(MAX_PROMPT_CHARS)),
        "a".into(),
    ] {
        let reply = h
            .send(post_json("/runs", &json!({ "prompt": prompt })))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "{} chars: {}",
            prompt.chars().count(),
            reply.body
        );
    }
}

#[tokio::test]
async fn given_a_body_of_exactly_the_limit_when_posted_then_it_is_read() {
    let h = harness();
    let envelope = "{\"prompt\": \"\"}".len();
    let body = format!(
        "{{\"prompt\": \"{}\"}}",
        "a".repeat(MAX_BODY_BYTES - envelope)
    );
    assert_eq!(body.len(), MAX_BODY_BYTES);
    let reply = h.send(post("/runs", body)).await;
    reply.assert_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "prompt_too_long",
        "64 KiB body",
    );
}

#[tokio::test]
async fn given_bad_idempotency_keys_when_posted_then_422() {
    let doc = doc();
    let h = harness();
    let cases = [
        (
            "non-ASCII",
            HeaderValue::from_bytes("clé".as_bytes()).expect("obs-text is a valid header"),
        ),
        (
            "too long",
            HeaderValue::from_str(&"k".repeat(256)).expect("header"),
        ),
        ("inner space", HeaderValue::from_static("a b")),
        ("empty", HeaderValue::from_static("")),
        ("blank", HeaderValue::from_static(" ")),
    ];
    for (case, key) in cases {
        let req = with_header(
            post_json("/runs", &json!({"prompt": PROMPT})),
            "idempotency-key",
            key,
        );
        let reply = h.send(req).await;
        reply.assert_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_idempotency_key",
            case,
        );
        assert_documented(&doc, "post", "/runs", &reply);
    }
    let longest = HeaderValue::from_str(&"k".repeat(255)).expect("header");
    let req = with_header(
        post_json("/runs", &json!({"prompt": PROMPT})),
        "idempotency-key",
        longest,
    );
    assert_eq!(h.send(req).await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn given_unknown_and_weird_run_ids_when_requested_then_404_not_found() {
    let doc = doc();
    let h = harness();
    let long = "a".repeat(500);
    let too_long_but_valid_chars = "a".repeat(65);
    let ids = [
        UNKNOWN_ID,
        "%00",
        long.as_str(),
        too_long_but_valid_chars.as_str(),
        "..%2Fetc",
        "..%2F..%2Fetc%2Fpasswd",
        "%FF%FE",
        "run%20id",
        "%F0%9F%A6%80",
        "-",
        "",
    ];
    for id in ids {
        for (method, path, suffix) in [
            (Method::GET, "/runs/{id}", ""),
            (Method::GET, "/runs/{id}", "?at=2026-01-02T03:04:05Z"),
            (Method::GET, "/runs/{id}/events", ""),
            (Method::POST, "/runs/{id}/cancel", ""),
        ] {
            let uri = format!("{}{suffix}", path.replace("{id}", id));
            let reply = h.send(request(method.clone(), &uri, Body::empty())).await;
            reply.assert_error(StatusCode::NOT_FOUND, "not_found", &uri);
            let m = method.as_str().to_lowercase();
            assert_documented(&doc, &m, path, &reply);
        }
    }
    // A literal `..` is just an unknown path.
    let reply = h.send(get("/runs/../etc/passwd")).await;
    reply.assert_error(StatusCode::NOT_FOUND, "not_found", "/runs/../etc/passwd");
}

#[tokio::test]
async fn given_bad_at_values_when_reading_a_run_then_400_or_404() {
    let doc = doc();
    let h = harness();
    let id = h.create().await;
    for at in [
        "yesterday",
        "",
        "2026-01-02",
        "2026-13-01T00:00:00Z",
        "2026-01-02T03:04:05",
        "1767323045",
        "%FF",
    ] {
        let uri = format!("/runs/{id}?at={at}");
        let reply = h.send(get(&uri)).await;
        reply.assert_error(StatusCode::BAD_REQUEST, "invalid_at", &uri);
        assert_documented(&doc, "get", "/runs/{id}", &reply);
    }
    let before = h
        .send(get(&format!("/runs/{id}?at=2000-01-01T00:00:00Z")))
        .await;
    before.assert_error(StatusCode::NOT_FOUND, "not_found", "at before creation");
    assert_documented(&doc, "get", "/runs/{id}", &before);
    // An offset works when its `+` is percent-encoded.
    let offset = h
        .send(get(&format!("/runs/{id}?at=2999-01-01T00:00:00%2B01:00")))
        .await;
    assert_eq!(offset.status, StatusCode::OK, "{}", offset.body);
}

#[tokio::test]
async fn given_bad_list_queries_when_listing_runs_then_4xx() {
    let doc = doc();
    let h = harness();
    h.create().await;
    let bad = StatusCode::BAD_REQUEST;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    for (query, status, code) in [
        ("limit=0", unprocessable, "invalid_limit"),
        ("limit=101", unprocessable, "invalid_limit"),
        ("limit=x", bad, "invalid_limit"),
        ("limit=-1", unprocessable, "invalid_limit"),
        ("limit=-0", unprocessable, "invalid_limit"),
        ("limit=", bad, "invalid_limit"),
        ("limit=1.5", bad, "invalid_limit"),
        ("limit=--1", bad, "invalid_limit"),
        (
            "limit=99999999999999999999999",
            unprocessable,
            "invalid_limit",
        ),
        ("status=bogus", unprocessable, "invalid_status"),
        ("status=", unprocessable, "invalid_status"),
        ("status=PENDING", unprocessable, "invalid_status"),
    ] {
        let uri = format!("/runs?{query}");
        let reply = h.send(get(&uri)).await;
        reply.assert_error(status, code, &uri);
        assert_documented(&doc, "get", "/runs", &reply);
    }
    for query in [
        "limit=1",
        "limit=100",
        "limit=%2020%20",
        "limit=+5",
        "status=pending",
        "cursor=",
    ] {
        let reply = h.send(get(&format!("/runs?{query}"))).await;
        assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.body);
    }
}

#[tokio::test]
async fn given_a_cursor_the_server_did_not_issue_when_listing_on_sqlite_then_422() {
    let doc = doc();
    let h = sqlite_harness();
    for cursor in ["bogus", "%FF", "e30", "..%2F"] {
        let uri = format!("/runs?cursor={cursor}");
        let reply = send(&h.router, get(&uri)).await;
        reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_cursor", &uri);
        assert_documented(&doc, "get", "/runs", &reply);
    }
}

/// The in-memory view store refuses cursors it did not issue, like the SQLite store.
#[tokio::test]
async fn given_a_cursor_the_server_did_not_issue_when_listing_in_memory_then_422() {
    let h = harness();
    h.create().await;
    let reply = h.send(get("/runs?cursor=bogus")).await;
    reply.assert_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_cursor",
        "bogus cursor",
    );
}

#[tokio::test]
async fn given_issued_cursors_when_paging_then_every_run_is_listed_once() {
    for sqlite in [false, true] {
        let (_disk, router) = if sqlite {
            let disk = sqlite_harness();
            let router = disk.router.clone();
            (Some(disk), router)
        } else {
            (None, harness().router)
        };
        let router = &router;
        let mut created = BTreeSet::new();
        for _ in 0..5 {
            let reply = send(router, post_json("/runs", &json!({"prompt": PROMPT}))).await;
            created.insert(reply.json::<RunView>().run_id);
        }
        let mut seen = BTreeSet::new();
        let mut uri = "/runs?limit=2".to_owned();
        for _ in 0..10 {
            let reply = send(router, get(&uri)).await;
            assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.body);
            let page: RunPage = reply.json();
            for run in page.runs {
                assert!(
                    seen.insert(run.run_id),
                    "sqlite={sqlite}: a run listed twice"
                );
            }
            match page.next_cursor.as_deref() {
                Some(c) => uri = format!("/runs?limit=2&cursor={}", encode(c)),
                None => break,
            }
        }
        assert_eq!(seen, created, "sqlite={sqlite}");
    }
}

#[tokio::test]
async fn given_unknown_routes_and_methods_when_requested_then_json_404_and_405() {
    let doc = doc();
    let h = harness();
    let no_route = resolve(&doc, &doc["components"]["responses"]["NoSuchRoute"]).clone();
    // (`/` is the web console's page.)
    for uri in ["/nope", "/runs/", "/runs/x/y", "/RUNS", "/todos/1"] {
        let reply = h.send(get(uri)).await;
        reply.assert_error(StatusCode::NOT_FOUND, "not_found", uri);
        assert!(
            reply
                .json::<ErrorBody>()
                .error
                .message
                .starts_with("no such route"),
            "{uri}: {}",
            reply.body
        );
        assert_reply_matches(&doc, &no_route, &reply, uri);
    }
    let not_allowed = resolve(&doc, &doc["components"]["responses"]["MethodNotAllowed"]).clone();
    for (method, uri) in [
        (Method::DELETE, "/runs".to_owned()),
        (Method::PUT, "/runs".to_owned()),
        (Method::POST, "/todos".to_owned()),
        (Method::POST, "/health".to_owned()),
        (Method::DELETE, format!("/runs/{UNKNOWN_ID}")),
        (Method::GET, format!("/runs/{UNKNOWN_ID}/cancel")),
        (Method::PATCH, "/tools".to_owned()),
    ] {
        let reply = h.send(request(method.clone(), &uri, Body::empty())).await;
        let case = format!("{method} {uri}");
        reply.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", &case);
        assert!(reply.header("allow").is_some(), "{case}: no Allow header");
        assert_reply_matches(&doc, &not_allowed, &reply, &case);
    }
}

#[tokio::test]
async fn given_a_finished_run_when_cancelled_then_409_run_finished() {
    let doc = doc();
    let h = harness();
    let id = h.finished_run().await;
    let reply = h
        .send(post(&format!("/runs/{id}/cancel"), Body::empty()))
        .await;
    reply.assert_error(StatusCode::CONFLICT, "run_finished", "cancel finished run");
    assert_documented(&doc, "post", "/runs/{id}/cancel", &reply);
}
