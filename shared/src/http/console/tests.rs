//! The console's files are served, with their content types and a strict policy, to
//! callers without credentials, while every API route still asks for a key.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::{ASSETS, CONTENT_SECURITY_POLICY_VALUE, INDEX};
use crate::adapters::local::memory::{MemoryStore, MemoryTodos};
use crate::app::{App, Settings};
use crate::domain::Plan;
use crate::http::{router_with, Auth, EdgeOptions, KeyRing, ROUTES};
use crate::planner::FixedPlanner;
use crate::ports::SystemClock;
use crate::tools::Registry;

const KEY: &str = "key-a-0123456789abcdef";

fn keyed_router() -> Router {
    let store = Arc::new(MemoryStore::default());
    let todos = Arc::new(MemoryTodos::default());
    let app = Arc::new(App {
        events: store.clone(),
        views: store.clone(),
        todos: todos.clone(),
        idempotency: store.clone(),
        breakers: store,
        registry: Registry::new(todos),
        planner: Arc::new(FixedPlanner(Plan { steps: vec![] })),
        clock: Arc::new(SystemClock),
        settings: Settings::default(),
    });
    let edge = EdgeOptions {
        auth: Auth::Keys(KeyRing::new(&[(KEY.into(), "tenant-a".into())])),
        ..EdgeOptions::default()
    };
    router_with(app, &edge)
}

async fn get(
    router: &Router,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut req = Request::builder().method("GET").uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = router
        .clone()
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn given_api_keys_when_console_files_are_fetched_without_one_then_they_are_served_with_their_types(
) {
    let router = keyed_router();
    let mut files = vec![("/".to_owned(), INDEX.content_type, INDEX.body)];
    files.extend(
        ASSETS
            .iter()
            .map(|a| (format!("/console/{}", a.name), a.content_type, a.body)),
    );
    for (uri, content_type, body) in files {
        let (status, headers, text) = get(&router, &uri, &[]).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert_eq!(headers["content-type"], content_type, "{uri}");
        assert_eq!(text, body, "{uri}");
        assert_eq!(
            headers["content-security-policy"], CONTENT_SECURITY_POLICY_VALUE,
            "{uri}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff", "{uri}");
        assert_eq!(headers["cache-control"], "no-cache", "{uri}");
        let etag = headers["etag"].to_str().expect("ascii").to_owned();
        let (status, _, text) = get(&router, &uri, &[("if-none-match", &etag)]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED, "{uri}");
        assert!(text.is_empty(), "{uri}");
    }
}

#[tokio::test]
async fn given_api_keys_when_api_routes_are_called_without_one_then_they_stay_protected() {
    let router = keyed_router();
    for (method, path) in ROUTES {
        if *method != "get" || matches!(*path, "/health" | "/openapi.json") {
            continue;
        }
        let uri = path.replace("{id}", "0190c3a0-0000-7000-8000-000000000000");
        let (status, _, _) = get(&router, &uri, &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
        let auth = format!("Bearer {KEY}");
        let (status, _, _) = get(&router, &uri, &[("authorization", &auth)]).await;
        assert_ne!(status, StatusCode::UNAUTHORIZED, "{uri}");
    }
    let (status, _, body) = get(&router, "/console/nope.js", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("not_found"), "{body}");
}

#[test]
fn given_the_page_when_read_then_it_loads_only_embedded_files_and_no_inline_code() {
    let page = INDEX.body;
    for reference in page
        .split(['"', '\''])
        .filter(|s| s.starts_with("console/"))
    {
        let name = reference.trim_start_matches("console/");
        assert!(
            ASSETS.iter().any(|a| a.name == name),
            "{reference} is not embedded"
        );
    }
    assert!(!page.contains("<style"), "inline style");
    assert!(!page.contains("style="), "inline style attribute");
    assert!(!page.contains("<script>"), "inline script");
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "external URL"
    );
    for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
        for line in asset
            .body
            .lines()
            .filter(|l| l.trim_start().starts_with("import "))
        {
            let from = line.rsplit(['\'', '"']).nth(1).unwrap_or_default();
            let name = from.trim_start_matches("./");
            assert!(
                ASSETS.iter().any(|a| a.name == name),
                "{}: imports {from}, which is not embedded",
                asset.name
            );
        }
        assert!(
            !asset.body.contains("innerHTML"),
            "{}: innerHTML",
            asset.name
        );
        assert!(!asset.body.contains("eval("), "{}: eval", asset.name);
    }
}
