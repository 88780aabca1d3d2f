//! The harness of the API tests: a router over in-memory (or SQLite) adapters with a
//! fixed planner, driven with `tower::ServiceExt::oneshot`; runs are driven to their end by
//! draining the in-memory outbox; planners and stores that fail on purpose.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::Router;
use chrono::{DateTime, Utc};
use crane_tests::api::{read, ErrorBody, RunView};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tower::ServiceExt;

use crane::adapters::local::memory::{MemoryStore, MemoryTodos};
use crane::adapters::local::SqliteStore;
use crane::app::{App, Settings};
use crane::domain::{Effect, EventRecord, Plan, PlanStep, RunKey, RunState, Todo, TodoChange};
use crane::engine::RetryPolicy;
use crane::http::router;
use crane::planner::{FixedPlanner, PlanError, Planned, Planner};
use crane::ports::{
    BreakerStore, EventStore, IdempotencyRecord, IdempotencyStore, ListQuery, Outbox, Page,
    RunViewStore, StoreError, StoreResult, StoredBreaker, SystemClock, TodoError, TodoQuery,
    TodoStore,
};
use crane::tools::Registry;

pub(crate) const PROMPT: &str =
    "calculate 2+3 and calculate 10*5 and list todos then add a todo with the result";
/// A well-formed run id that names no run.
pub(crate) const UNKNOWN_ID: &str = "0190c3a0-0000-7000-8000-000000000000";

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

pub(crate) fn step(id: &str, tool: &str, input: Value, deps: &[&str]) -> PlanStep {
    PlanStep {
        id: id.into(),
        tool: tool.into(),
        input,
        depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
        requires_approval: false,
    }
}

/// The plan of [`PROMPT`].
pub(crate) fn seed_dag() -> Vec<PlanStep> {
    vec![
        step("s1", "calculator", json!({"expression": "2+3"}), &[]),
        step("s2", "calculator", json!({"expression": "10*5"}), &[]),
        step("s3", "todo", json!({"action": "list"}), &[]),
        step(
            "s4",
            "todo",
            json!({"action": "add", "title": "{{s2}}"}),
            &["s1", "s2", "s3"],
        ),
    ]
}

/// Adds a todo, then fails: the run ends `compensated`.
pub(crate) fn failing_dag() -> Vec<PlanStep> {
    vec![
        step("s1", "todo", json!({"action": "add", "title": "a"}), &[]),
        step("s2", "calculator", json!({"expression": "1/0"}), &["s1"]),
    ]
}

pub(crate) fn settings() -> Settings {
    Settings {
        retry: RetryPolicy {
            base_ms: 0,
            jitter: 0.0,
            ..RetryPolicy::default()
        },
        compensation_retry: RetryPolicy {
            base_ms: 0,
            jitter: 0.0,
            ..RetryPolicy::default()
        },
        ..Settings::default()
    }
}

pub(crate) struct Harness {
    pub(crate) router: Router,
    pub(crate) app: Arc<App>,
    pub(crate) store: Arc<MemoryStore>,
}

pub(crate) fn harness_with(steps: Vec<PlanStep>) -> Harness {
    harness_planned(Arc::new(FixedPlanner(Plan { steps })))
}

/// An App over one in-memory store (events, views, idempotency, breakers) and in-memory
/// todos, planning with `planner`; returns the store too, so tests can drain its outbox.
pub(crate) fn memory_app(
    planner: Arc<dyn Planner>,
    settings: Settings,
) -> (Arc<App>, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::default());
    let todos = Arc::new(MemoryTodos::default());
    let app = Arc::new(App {
        events: store.clone(),
        views: store.clone(),
        todos: todos.clone(),
        idempotency: store.clone(),
        breakers: store.clone(),
        registry: Registry::new(todos),
        planner,
        clock: Arc::new(SystemClock),
        settings,
    });
    (app, store)
}

pub(crate) fn harness_planned(planner: Arc<dyn Planner>) -> Harness {
    let (app, store) = memory_app(planner, settings());
    Harness {
        router: router(app.clone()),
        app,
        store,
    }
}

/// A planner that fails with its errors in turn, then plans the seed DAG.
pub(crate) struct Failing(Mutex<Vec<PlanError>>);

impl Failing {
    pub(crate) fn new(errors: Vec<PlanError>) -> Arc<Self> {
        Arc::new(Self(Mutex::new(errors)))
    }
}

#[async_trait]
impl Planner for Failing {
    fn name(&self) -> &'static str {
        "failing"
    }

    async fn plan(&self, prompt: &str, registry: &Registry) -> Result<Planned, PlanError> {
        let next = {
            let mut errors = self.0.lock().expect("planner lock");
            (!errors.is_empty()).then(|| errors.remove(0))
        };
        match next {
            Some(e) => Err(e),
            None => {
                FixedPlanner(Plan { steps: seed_dag() })
                    .plan(prompt, registry)
                    .await
            }
        }
    }

    fn degraded(&self) -> Option<String> {
        Some("no model configured".into())
    }
}

/// Every store that fails every call with the same error.
pub(crate) struct Broken(StoreError);

#[async_trait]
impl EventStore for Broken {
    async fn append(&self, _: &RunKey, _: &[EventRecord], _: Outbox<'_>) -> StoreResult<()> {
        Err(self.0.clone())
    }

    async fn load(&self, _: &RunKey) -> StoreResult<Vec<EventRecord>> {
        Err(self.0.clone())
    }
}

#[async_trait]
impl RunViewStore for Broken {
    async fn get(&self, _: &RunKey) -> StoreResult<Option<RunState>> {
        Err(self.0.clone())
    }

    async fn list(&self, _: &str, _: &ListQuery) -> StoreResult<Page<RunState>> {
        Err(self.0.clone())
    }

    async fn put(&self, _: &RunState) -> StoreResult<bool> {
        Err(self.0.clone())
    }
}

#[async_trait]
impl TodoStore for Broken {
    async fn apply(
        &self,
        _: &str,
        _: &str,
        _: &TodoChange,
        _: DateTime<Utc>,
    ) -> Result<Todo, TodoError> {
        Err(TodoError::Store(self.0.clone()))
    }

    async fn recorded(&self, _: &str, _: &str) -> StoreResult<Option<Todo>> {
        Err(self.0.clone())
    }

    async fn get(&self, _: &str, _: u64) -> StoreResult<Option<Todo>> {
        Err(self.0.clone())
    }

    async fn list(&self, _: &str, _: &TodoQuery) -> StoreResult<Page<Todo>> {
        Err(self.0.clone())
    }

    async fn count(&self, _: &str) -> StoreResult<u64> {
        Err(self.0.clone())
    }
}

#[async_trait]
impl IdempotencyStore for Broken {
    async fn lookup(
        &self,
        _: &str,
        _: &str,
        _: DateTime<Utc>,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        Err(self.0.clone())
    }

    async fn claim(
        &self,
        _: &str,
        _: &str,
        _: &IdempotencyRecord,
        _: DateTime<Utc>,
    ) -> StoreResult<IdempotencyRecord> {
        Err(self.0.clone())
    }
}

#[async_trait]
impl BreakerStore for Broken {
    async fn get(&self, _: &str) -> StoreResult<Option<StoredBreaker>> {
        Err(self.0.clone())
    }

    async fn put(&self, _: &str, _: u64, _: &Value) -> StoreResult<()> {
        Err(self.0.clone())
    }
}

/// A router over an App whose every store fails with `error`.
pub(crate) fn broken_router(error: StoreError) -> Router {
    let broken = Arc::new(Broken(error));
    router(Arc::new(App {
        events: broken.clone(),
        views: broken.clone(),
        todos: broken.clone(),
        idempotency: broken.clone(),
        breakers: broken,
        registry: Registry::new(Arc::new(MemoryTodos::default())),
        planner: Arc::new(FixedPlanner(Plan { steps: seed_dag() })),
        clock: Arc::new(SystemClock),
        settings: settings(),
    }))
}

pub(crate) fn harness() -> Harness {
    harness_with(seed_dag())
}

/// An App on a SQLite file in a fresh temporary directory (removed on drop).
pub(crate) struct SqliteHarness {
    pub(crate) router: Router,
    pub(crate) dir: std::path::PathBuf,
}

impl Drop for SqliteHarness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn sqlite_harness() -> SqliteHarness {
    let dir = std::env::temp_dir().join(format!("crane-http-tests-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let store = Arc::new(SqliteStore::open(dir.join("crane.db")).expect("sqlite opens"));
    let app = Arc::new(App {
        events: store.clone(),
        views: store.clone(),
        todos: store.clone(),
        idempotency: store.clone(),
        breakers: store.clone(),
        registry: Registry::new(store),
        planner: Arc::new(FixedPlanner(Plan { steps: seed_dag() })),
        clock: Arc::new(SystemClock),
        settings: settings(),
    });
    SqliteHarness {
        router: router(app),
        dir,
    }
}

impl Harness {
    /// Run every queued effect until none is left (the job of the workers).
    pub(crate) async fn drain(&self) {
        for _ in 0..200 {
            let effects = std::mem::take(&mut *self.store.outbox.lock().expect("outbox lock"));
            if effects.is_empty() {
                return;
            }
            for effect in effects {
                match &effect {
                    Effect::Dispatch { job, .. } => {
                        self.app.process_job(job).await.expect("job runs");
                    }
                    Effect::Compensate { key, .. } => {
                        self.app.compensate_run(key).await.expect("saga runs");
                    }
                }
            }
        }
        panic!("effects never drained");
    }

    pub(crate) async fn send(&self, req: Request<Body>) -> Reply {
        send(&self.router, req).await
    }

    /// `POST /runs` with [`PROMPT`]; returns the created run's id.
    pub(crate) async fn create(&self) -> String {
        let reply = self
            .send(post_json("/runs", &json!({"prompt": PROMPT})))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.json::<RunView>().run_id
    }

    /// Create a run and drive it to its end.
    pub(crate) async fn finished_run(&self) -> String {
        let id = self.create().await;
        self.drain().await;
        id
    }
}

/// A response, read whole.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    /// The body as JSON (`Value::Null` if it is not JSON).
    pub(crate) body: Value,
    pub(crate) raw: Bytes,
}

impl Reply {
    /// The body read as `T` (one of the typed answers of `crane_tests::api`).
    pub(crate) fn json<T: DeserializeOwned>(&self) -> T {
        read(&self.body)
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub(crate) fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    pub(crate) fn is_json(&self) -> bool {
        self.header("content-type") == Some("application/json")
            && serde_json::from_slice::<Value>(&self.raw).is_ok()
    }

    /// Assert a JSON error response with this status and code.
    pub(crate) fn assert_error(&self, status: StatusCode, code: &str, case: &str) {
        assert_eq!(self.status, status, "{case}: {}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{case}: content-type"
        );
        let error = self.json::<ErrorBody>().error;
        assert_eq!(error.code, code, "{case}: {}", self.body);
        assert!(
            !error.message.is_empty(),
            "{case}: error.message: {}",
            self.body
        );
    }
}

pub(crate) async fn send(router: &Router, req: Request<Body>) -> Reply {
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let raw = resp
        .into_body()
        .collect()
        .await
        .expect("body reads")
        .to_bytes();
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
        raw,
    }
}

pub(crate) fn request(method: Method, uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.into())
        .expect("valid request")
}

pub(crate) fn get(uri: &str) -> Request<Body> {
    request(Method::GET, uri, Body::empty())
}

pub(crate) fn post(uri: &str, body: impl Into<Body>) -> Request<Body> {
    request(Method::POST, uri, body)
}

pub(crate) fn post_json(uri: &str, body: &Value) -> Request<Body> {
    post(uri, body.to_string())
}

pub(crate) fn with_header(
    mut req: Request<Body>,
    name: &'static str,
    value: HeaderValue,
) -> Request<Body> {
    req.headers_mut().insert(name, value);
    req
}

/// Percent-encode every byte, so any string can be a path segment or query value.
pub(crate) fn encode(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}
