//! The watching routes through the router, over the in-memory store (which signals its
//! appends like the embedded one): long-poll, stream, `Prefer: wait`, tenant isolation.
//! (Moved from `shared/src/http/live_tests.rs`: it uses only public items.)

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use crane::adapters::local::memory::{MemoryStore, MemoryTodos};
use crane::app::{App, RequestContext, Settings};
use crane::domain::{Effect, Plan, PlanStep, RunKey};

use crane::http::{router_with, Auth, EdgeOptions, KeyRing};
use crane::planner::FixedPlanner;
use crane::ports::SystemClock;
use crane::tools::Registry;

use crate::harness::memory_app;

const KEY_A: &str = "key-a-0123456789abcdef";
const KEY_B: &str = "key-b-0123456789abcdef";
const PATIENCE: Duration = Duration::from_secs(30);

struct Live {
    app: Arc<App>,
    store: Arc<MemoryStore>,
    router: Router,
}

/// Two tenants with keys; plans are one calculator step.
fn live() -> Live {
    let plan = Plan {
        steps: vec![PlanStep {
            id: "s1".into(),
            tool: "calculator".into(),
            input: json!({"expression": "2+3"}),
            depends_on: Vec::new(),
            requires_approval: false,
        }],
    };
    let (app, store) = memory_app(Arc::new(FixedPlanner(plan)), Settings::default());
    let ring = KeyRing::new(&[
        (KEY_A.to_owned(), "tenant-a".to_owned()),
        (KEY_B.to_owned(), "tenant-b".to_owned()),
    ]);
    let edge = EdgeOptions {
        auth: Auth::Keys(ring),
        ..EdgeOptions::default()
    };
    Live {
        router: router_with(app.clone(), &edge),
        app,
        store,
    }
}

impl Live {
    async fn create(&self, tenant: &str) -> String {
        let ctx = RequestContext {
            tenant: tenant.into(),
            correlation_id: "c".into(),
        };
        self.app
            .create_run(&ctx, "calculate 2+3", None)
            .await
            .expect("created")
            .run
            .run_id
    }

    /// Run every queued job until none is left, after `delay`, in the background.
    fn drive_after(&self, delay: Duration) -> tokio::task::JoinHandle<()> {
        let (app, store) = (self.app.clone(), self.store.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            for _ in 0..100 {
                let effects = std::mem::take(&mut *store.outbox.lock().expect("outbox"));
                if effects.is_empty() {
                    return;
                }
                for effect in effects {
                    if let Effect::Dispatch { job, .. } = effect {
                        app.process_job(&job).await.expect("job runs");
                    }
                }
            }
        })
    }

    async fn send(
        &self,
        key: Option<&str>,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let body = if method == "POST" {
            req = req.header("content-type", "application/json");
            Body::from(json!({"prompt": "calculate 2+3"}).to_string())
        } else {
            Body::empty()
        };
        let resp = tokio::time::timeout(
            PATIENCE,
            self.router
                .clone()
                .oneshot(req.body(body).expect("request")),
        )
        .await
        .expect("answered in time")
        .expect("infallible");
        let (parts, body) = resp.into_parts();
        let bytes = tokio::time::timeout(PATIENCE, body.collect())
            .await
            .expect("body ended in time")
            .expect("body")
            .to_bytes();
        (parts.status, parts.headers, bytes.to_vec())
    }
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}

#[tokio::test]
async fn given_a_long_poll_when_an_event_is_appended_meanwhile_then_it_answers_with_it() {
    let l = live();
    let id = l.create("tenant-a").await;
    let driver = l.drive_after(Duration::from_millis(200));
    let (status, _, body) = l
        .send(
            Some(KEY_A),
            "GET",
            &format!("/runs/{id}/events?after=2&wait=20"),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let events = json_of(&body)["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!events.is_empty(), "answered with the appended events");
    assert_eq!(events[0]["seq"], 3, "{events:?}");
    driver.await.expect("driver");
}

#[tokio::test]
async fn given_prefer_wait_when_the_run_settles_meanwhile_then_get_answers_with_the_settled_run() {
    let l = live();
    let id = l.create("tenant-a").await;
    let driver = l.drive_after(Duration::from_millis(200));
    let (status, headers, body) = l
        .send(
            Some(KEY_A),
            "GET",
            &format!("/runs/{id}"),
            &[("prefer", "wait=20")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers
            .get("preference-applied")
            .and_then(|v| v.to_str().ok()),
        Some("wait=20")
    );
    assert_eq!(json_of(&body)["status"], "completed");
    driver.await.expect("driver");
}

#[tokio::test]
async fn given_prefer_wait_and_a_run_nobody_drives_when_posting_then_202_as_it_is() {
    let l = live();
    let (status, headers, body) = l
        .send(Some(KEY_A), "POST", "/runs", &[("prefer", "wait=1")])
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(headers.get("preference-applied").is_none());
    assert!(headers.get("location").is_some());
    assert_eq!(json_of(&body)["status"], "pending");
    let (status, _, body) = l
        .send(Some(KEY_A), "POST", "/runs", &[("prefer", "wait=x")])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json_of(&body)["error"]["code"], "invalid_prefer");
}

#[tokio::test]
async fn given_a_stream_when_the_run_progresses_then_every_event_arrives_and_it_ends() {
    let l = live();
    let id = l.create("tenant-a").await;
    let driver = l.drive_after(Duration::from_millis(200));
    let (status, headers, body) = l
        .send(
            Some(KEY_A),
            "GET",
            &format!("/runs/{id}/stream"),
            &[("last-event-id", "1")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream")));
    let text = String::from_utf8_lossy(&body);
    let ids: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id:"))
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let log = l
        .app
        .run_events(&RunKey::new("tenant-a", &id))
        .await
        .expect("log");
    let expected: Vec<u64> = log.iter().map(|e| e.seq).filter(|s| *s > 1).collect();
    assert_eq!(ids, expected, "{text}");
    assert!(text.contains("event: RunCompleted"), "{text}");
    driver.await.expect("driver");
}

#[tokio::test]
async fn given_another_tenants_run_when_watched_then_404_and_without_a_key_401() {
    let l = live();
    let id = l.create("tenant-a").await;
    for (uri, headers) in [
        (format!("/runs/{id}/events?wait=5"), vec![]),
        (format!("/runs/{id}/stream"), vec![]),
        (format!("/runs/{id}"), vec![("prefer", "wait=5")]),
    ] {
        let (status, _, body) = l.send(Some(KEY_B), "GET", &uri, &headers).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(json_of(&body)["error"]["code"], "not_found", "{uri}");
        let (status, _, _) = l.send(None, "GET", &uri, &headers).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
    }
}

#[tokio::test]
async fn given_the_watcher_cap_when_reached_then_another_watcher_gets_429() {
    let l = live();
    let id = l.create("tenant-a").await;
    l.store.notifier.set_max_watchers(1);
    let key = RunKey::new("tenant-a", &id);
    let _held = l
        .app
        .waiter(&key, Duration::from_secs(5))
        .expect("first watcher");
    let (status, headers, body) = l
        .send(
            Some(KEY_A),
            "GET",
            &format!("/runs/{id}/events?wait=5"),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(headers.get("retry-after").is_some());
    assert_eq!(json_of(&body)["error"]["code"], "too_many_watchers");
    // Without a wait no watch is needed.
    let (status, _, _) = l
        .send(
            Some(KEY_A),
            "GET",
            &format!("/runs/{id}/events?wait=0"),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // A run created with Prefer: wait is answered, not refused, when no slot is free.
    let (status, headers, body) = l
        .send(Some(KEY_A), "POST", "/runs", &[("prefer", "wait=5")])
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{}", json_of(&body));
    assert!(headers.get("preference-applied").is_none());
}

/// The store of [`live`] without its append signals, as DynamoDB is seen from a Lambda.
struct Unsignalled(Arc<MemoryStore>);

#[async_trait::async_trait]
impl crane::ports::EventStore for Unsignalled {
    async fn append(
        &self,
        key: &RunKey,
        events: &[crane::domain::EventRecord],
        outbox: crane::ports::Outbox<'_>,
    ) -> crane::ports::StoreResult<()> {
        self.0.append(key, events, outbox).await
    }

    async fn load(
        &self,
        key: &RunKey,
    ) -> crane::ports::StoreResult<Vec<crane::domain::EventRecord>> {
        self.0.load(key).await
    }
}

#[tokio::test]
async fn given_a_store_without_signals_when_long_polling_then_polling_finds_the_new_events() {
    let l = live();
    let polling = Arc::new(App {
        events: Arc::new(Unsignalled(l.store.clone())),
        views: l.store.clone(),
        todos: l.app.todos.clone(),
        idempotency: l.store.clone(),
        breakers: l.store.clone(),
        registry: Registry::new(Arc::new(MemoryTodos::default())),
        planner: Arc::new(FixedPlanner(Plan { steps: Vec::new() })),
        clock: Arc::new(SystemClock),
        settings: Settings::default(),
    });
    let id = l.create("tenant-a").await;
    let key = RunKey::new("tenant-a", &id);
    let driver = l.drive_after(Duration::from_millis(300));
    let page = polling
        .events_after(&key, 2, Duration::from_secs(20))
        .await
        .expect("answered");
    assert_eq!(page.events.first().map(|e| e.seq), Some(3), "{page:?}");
    driver.await.expect("driver");
    let streamed = router_with(polling.clone(), &EdgeOptions::default())
        .oneshot(
            Request::builder()
                .uri(format!("/runs/{id}/stream"))
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert_eq!(
        streamed.status(),
        StatusCode::NOT_FOUND,
        "no signals, no stream"
    );
}
