//! The edge: content type, origin and CORS, host, API keys, tenant rate and active-run cap.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, StatusCode};
use serde_json::json;

use crane::app::{App, Settings};
use crane::http::{router_with, EdgeOptions, Origin, ROUTES};
use crane::ports::SystemClock;

use crate::harness::*;
use crate::schema::*;
use crane_tests::api::RunPage;

fn with_headers(mut req: Request<Body>, headers: &[(&'static str, &str)]) -> Request<Body> {
    for (name, value) in headers {
        req.headers_mut()
            .insert(*name, HeaderValue::from_str(value).expect("header"));
    }
    req
}

fn without_content_type(mut req: Request<Body>) -> Request<Body> {
    req.headers_mut().remove("content-type");
    req
}

#[tokio::test]
async fn given_a_body_that_is_not_declared_json_when_posted_then_415_and_no_run() {
    let doc = doc();
    let h = harness();
    let body = json!({"prompt": PROMPT}).to_string();
    let id = h.create().await;
    let cancel = format!("/runs/{id}/cancel");
    for (case, uri, path, content_type) in [
        ("text/plain", "/runs", "/runs", Some("text/plain")),
        (
            "form",
            "/runs",
            "/runs",
            Some("application/x-www-form-urlencoded"),
        ),
        ("json-like", "/runs", "/runs", Some("application/jsonx")),
        ("none", "/runs", "/runs", None),
        (
            "cancel text/plain",
            cancel.as_str(),
            "/runs/{id}/cancel",
            Some("text/plain"),
        ),
    ] {
        let req = without_content_type(post(uri, body.clone()));
        let req = match content_type {
            Some(ct) => with_headers(req, &[("content-type", ct)]),
            None => req,
        };
        let reply = h.send(req).await;
        reply.assert_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            case,
        );
        assert_documented(&doc, "post", path, &reply);
    }
    let runs = h.send(get("/runs")).await;
    assert_eq!(runs.json::<RunPage>().runs.len(), 1);
    // JSON with parameters, any case, is JSON; a cancel without a body needs no type.
    let charset = with_headers(
        post("/runs", body),
        &[("content-type", "Application/JSON; charset=utf-8")],
    );
    assert_eq!(h.send(charset).await.status, StatusCode::CREATED);
    let bare = without_content_type(post(&cancel, Body::empty()));
    assert_eq!(h.send(bare).await.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn given_a_foreign_origin_when_it_calls_then_403_and_nothing_happens() {
    let doc = doc();
    let h = harness();
    for (method, path, origin) in [
        ("post", "/runs", "https://evil.example"),
        ("post", "/runs", "null"),
        ("post", "/runs", "http://localhost:3001"),
        ("get", "/runs", "https://evil.example"),
        ("get", "/todos", "https://evil.example"),
    ] {
        let req = if method == "post" {
            post_json(path, &json!({"prompt": PROMPT}))
        } else {
            get(path)
        };
        let req = with_headers(req, &[("origin", origin), ("host", "localhost:3000")]);
        let reply = h.send(req).await;
        let case = format!("{method} {path} from {origin}");
        reply.assert_error(StatusCode::FORBIDDEN, "origin_not_allowed", &case);
        assert_documented(&doc, method, path, &reply);
        assert_eq!(reply.header("access-control-allow-origin"), None, "{case}");
    }
    let runs = h.send(get("/runs")).await;
    assert!(runs.json::<RunPage>().runs.is_empty(), "{}", runs.body);
}

#[tokio::test]
async fn given_the_api_own_origin_when_it_posts_then_the_run_is_created() {
    let h = harness();
    let req = with_headers(
        post_json("/runs", &json!({"prompt": PROMPT})),
        &[
            ("origin", "http://localhost:3000"),
            ("host", "localhost:3000"),
        ],
    );
    let reply = h.send(req).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    // Same-origin needs no CORS grant.
    assert_eq!(reply.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn given_a_listed_origin_when_it_preflights_and_posts_then_cors_allows_it() {
    let h = harness();
    let edge = EdgeOptions {
        cors_origins: vec![Origin::parse("https://app.example.com").expect("origin")],
        ..EdgeOptions::default()
    };
    let router = router_with(h.app.clone(), &edge);
    let preflight = with_headers(
        request(Method::OPTIONS, "/runs", Body::empty()),
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "content-type, idempotency-key",
            ),
            ("host", "api.example.com"),
        ],
    );
    let reply = send(&router, preflight).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let methods = reply
        .header("access-control-allow-methods")
        .expect("methods");
    assert!(
        methods.contains("POST") && methods.contains("GET"),
        "{methods}"
    );
    let headers = reply
        .header("access-control-allow-headers")
        .expect("headers");
    for name in ["content-type", "idempotency-key", "x-correlation-id"] {
        assert!(headers.contains(name), "{headers}");
    }
    assert!(reply.header("access-control-max-age").is_some());
    assert_eq!(reply.header("vary"), Some("origin"));

    let post = with_headers(
        post_json("/runs", &json!({"prompt": PROMPT})),
        &[
            ("origin", "https://app.example.com"),
            ("host", "api.example.com"),
        ],
    );
    let reply = send(&router, post).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let exposed = reply
        .header("access-control-expose-headers")
        .expect("expose");
    assert!(exposed.contains("location"), "{exposed}");

    // An unlisted origin's preflight is refused.
    let other = with_headers(
        request(Method::OPTIONS, "/runs", Body::empty()),
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "POST"),
            ("host", "api.example.com"),
        ],
    );
    let reply = send(&router, other).await;
    reply.assert_error(StatusCode::FORBIDDEN, "origin_not_allowed", "preflight");
    assert_eq!(reply.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn given_a_host_allowlist_when_another_host_asks_then_403_but_only_with_the_option() {
    let doc = doc();
    let h = harness();
    let edge = EdgeOptions {
        allowed_hosts: Some(vec!["localhost".into(), "127.0.0.1".into()]),
        ..EdgeOptions::default()
    };
    let guarded = router_with(h.app.clone(), &edge);
    let rebound = with_headers(get("/runs"), &[("host", "attacker.example:3000")]);
    let reply = send(&guarded, rebound).await;
    reply.assert_error(StatusCode::FORBIDDEN, "host_not_allowed", "rebinding");
    assert_documented(&doc, "get", "/runs", &reply);
    assert!(reply.header("x-correlation-id").is_some());
    let local = with_headers(get("/runs"), &[("host", "127.0.0.1:3000")]);
    assert_eq!(send(&guarded, local).await.status, StatusCode::OK);
    // The default router (the Lambdas, behind API Gateway) does not check the host.
    let any = with_headers(get("/runs"), &[("host", "abc.execute-api.example.com")]);
    assert_eq!(h.send(any).await.status, StatusCode::OK);
}

#[tokio::test]
async fn given_api_keys_when_a_route_is_called_without_one_then_a_documented_401_and_with_one_it_is_served(
) {
    let doc = doc();
    let h = harness();
    let keys = crane::http::KeyRing::new(&[("key-a-0123456789abcdef".into(), "tenant-a".into())]);
    let edge = EdgeOptions {
        auth: crane::http::Auth::Keys(keys),
        ..EdgeOptions::default()
    };
    let guarded = router_with(h.app.clone(), &edge);
    for (method, path) in ROUTES {
        let uri = path.replace("{id}", UNKNOWN_ID).replace("{step_id}", "s1");
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let req = || request(m.clone(), &uri, Body::empty());
        let reply = send(&guarded, req()).await;
        let keyed = send(
            &guarded,
            with_headers(req(), &[("authorization", "Bearer key-a-0123456789abcdef")]),
        )
        .await;
        assert_ne!(keyed.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        if matches!(*path, "/health" | "/openapi.json") {
            assert_eq!(reply.status, StatusCode::OK, "{path} is open");
            continue;
        }
        reply.assert_error(StatusCode::UNAUTHORIZED, "unauthorized", path);
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
        assert_documented(&doc, method, path, &reply);
        let security = &doc["paths"][*path][*method]["security"];
        assert!(
            security.is_null(),
            "{method} {path} keeps the global security"
        );
    }
    assert_eq!(doc["security"], json!([{"apiKey": []}, {"jwt": []}]));
    assert_eq!(doc["paths"]["/health"]["get"]["security"], json!([]));
}

#[tokio::test]
async fn given_a_tenant_rate_when_a_tenant_exceeds_it_then_a_documented_429_with_retry_after() {
    let doc = doc();
    let h = harness();
    let edge = EdgeOptions {
        rate_limit: Some(crane::http::quota::RateLimit {
            rate_per_s: 0.001,
            burst: 2.0,
        }),
        ..EdgeOptions::default()
    };
    let limited = router_with(h.app.clone(), &edge);
    for _ in 0..2 {
        assert_eq!(send(&limited, get("/runs")).await.status, StatusCode::OK);
    }
    for (method, path) in [("get", "/runs"), ("post", "/runs")] {
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let reply = send(&limited, request(m, path, Body::empty())).await;
        reply.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", path);
        assert!(reply.header("retry-after").is_some_and(|v| v != "0"));
        assert_documented(&doc, method, path, &reply);
    }
    // Health is never limited.
    assert_eq!(send(&limited, get("/health")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn given_a_cap_on_active_runs_when_a_tenant_reaches_it_then_429_for_it_alone_until_a_run_finishes(
) {
    let doc = doc();
    let h = harness();
    let app = Arc::new(App {
        events: h.store.clone(),
        views: h.store.clone(),
        todos: h.app.todos.clone(),
        idempotency: h.store.clone(),
        breakers: h.store.clone(),
        registry: h.app.registry.clone(),
        planner: h.app.planner.clone(),
        clock: Arc::new(SystemClock),
        settings: Settings {
            max_active_runs: 2,
            ..settings()
        },
    });
    let keys = crane::http::KeyRing::new(&[
        ("key-a-0123456789abcdef".into(), "tenant-a".into()),
        ("key-b-0123456789abcdef".into(), "tenant-b".into()),
    ]);
    let edge = EdgeOptions {
        auth: crane::http::Auth::Keys(keys),
        ..EdgeOptions::default()
    };
    let capped = router_with(app.clone(), &edge);
    let post_as = |key: &'static str| {
        with_headers(
            post_json("/runs", &json!({"prompt": PROMPT})),
            &[("authorization", key)],
        )
    };
    const A: &str = "Bearer key-a-0123456789abcdef";
    const B: &str = "Bearer key-b-0123456789abcdef";
    for _ in 0..2 {
        assert_eq!(send(&capped, post_as(A)).await.status, StatusCode::CREATED);
    }
    let refused = send(&capped, post_as(A)).await;
    refused.assert_error(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_active_runs",
        "A over its cap",
    );
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_documented(&doc, "post", "/runs", &refused);
    assert_eq!(
        send(&capped, post_as(B)).await.status,
        StatusCode::CREATED,
        "B has its own cap"
    );
    // Once A's runs finish, A may start more.
    let h2 = Harness {
        router: capped.clone(),
        app,
        store: h.store.clone(),
    };
    h2.drain().await;
    assert_eq!(send(&capped, post_as(A)).await.status, StatusCode::CREATED);
}
