//! Router tests over in-memory adapters, driven with `tower::ServiceExt::oneshot`.
//!
//! Three promises are held here: the OpenAPI document (`infra/openapi.json`) and the
//! router agree on the routes; every real response (success or error) has a status the
//! document lists for its operation and a body that conforms to the documented schema;
//! and no input, however malformed, gets anything but a JSON answer below 500.
//!
//! Runs use a fixed planner and are driven to their end by draining the in-memory outbox;
//! planner and store failures are simulated, and cursors are also checked on SQLite.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::Router;
use chrono::{DateTime, Utc};
use http_body_util::BodyExt;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::{
    router, router_with, EdgeOptions, Origin, LOCAL_ROUTES, MAX_BODY_BYTES, OPENAPI, ROUTES,
};
use crate::adapters::local::memory::{MemoryStore, MemoryTodos};
use crate::adapters::local::SqliteStore;
use crate::app::{App, Settings, MAX_PROMPT_CHARS};
use crate::domain::{
    Effect, ErrorKind, Event, EventRecord, Plan, PlanStep, PlannerInfo, RunKey, RunState,
    RunStatus, StepStatus, Todo, TodoChange, Usage,
};
use crate::engine::breaker::BreakerState;
use crate::engine::RetryPolicy;
use crate::planner::hybrid::{FallbackPlanner, ModelFailure, ModelPlanner};
use crate::planner::llm::LlmError;
use crate::planner::{FixedPlanner, PlanError, Planned, Planner};
use crate::ports::{
    BreakerStore, EventStore, IdempotencyRecord, IdempotencyStore, ListQuery, Outbox, Page,
    RunViewStore, StoreError, StoreResult, StoredBreaker, SystemClock, TodoError, TodoQuery,
    TodoStore,
};
use crate::tools::Registry;

const PROMPT: &str =
    "calculate 2+3 and calculate 10*5 and list todos then add a todo with the result";
/// A well-formed run id that names no run.
const UNKNOWN_ID: &str = "0190c3a0-0000-7000-8000-000000000000";

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

fn step(id: &str, tool: &str, input: Value, deps: &[&str]) -> PlanStep {
    PlanStep {
        id: id.into(),
        tool: tool.into(),
        input,
        depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
        requires_approval: false,
    }
}

/// The plan of [`PROMPT`].
fn seed_dag() -> Vec<PlanStep> {
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
fn failing_dag() -> Vec<PlanStep> {
    vec![
        step("s1", "todo", json!({"action": "add", "title": "a"}), &[]),
        step("s2", "calculator", json!({"expression": "1/0"}), &["s1"]),
    ]
}

fn settings() -> Settings {
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

struct Harness {
    router: Router,
    app: Arc<App>,
    store: Arc<MemoryStore>,
}

fn harness_with(steps: Vec<PlanStep>) -> Harness {
    harness_planned(Arc::new(FixedPlanner(Plan { steps })))
}

fn harness_planned(planner: Arc<dyn Planner>) -> Harness {
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
        settings: settings(),
    });
    Harness {
        router: router(app.clone()),
        app,
        store,
    }
}

/// A planner that fails with its errors in turn, then plans the seed DAG.
struct Failing(Mutex<Vec<PlanError>>);

impl Failing {
    fn new(errors: Vec<PlanError>) -> Arc<Self> {
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
struct Broken(StoreError);

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
fn broken_router(error: StoreError) -> Router {
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

fn harness() -> Harness {
    harness_with(seed_dag())
}

/// An App on a SQLite file in a fresh temporary directory (removed on drop).
struct SqliteHarness {
    router: Router,
    dir: std::path::PathBuf,
}

impl Drop for SqliteHarness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sqlite_harness() -> SqliteHarness {
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
    async fn drain(&self) {
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

    async fn send(&self, req: Request<Body>) -> Reply {
        send(&self.router, req).await
    }

    /// `POST /runs` with [`PROMPT`]; returns the created run's id.
    async fn create(&self) -> String {
        let reply = self
            .send(post_json("/runs", &json!({"prompt": PROMPT})))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body["run_id"]
            .as_str()
            .expect("run_id is a string")
            .to_owned()
    }

    /// Create a run and drive it to its end.
    async fn finished_run(&self) -> String {
        let id = self.create().await;
        self.drain().await;
        id
    }
}

/// A response, read whole.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    /// The body as JSON (`Value::Null` if it is not JSON).
    body: Value,
    raw: Bytes,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    fn is_json(&self) -> bool {
        self.header("content-type") == Some("application/json")
            && serde_json::from_slice::<Value>(&self.raw).is_ok()
    }

    /// Assert a JSON error response with this status and code.
    fn assert_error(&self, status: StatusCode, code: &str, case: &str) {
        assert_eq!(self.status, status, "{case}: {}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{case}: content-type"
        );
        assert_eq!(self.code(), code, "{case}: {}", self.body);
        assert!(
            self.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{case}: error.message: {}",
            self.body
        );
    }
}

async fn send(router: &Router, req: Request<Body>) -> Reply {
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

fn request(method: Method, uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.into())
        .expect("valid request")
}

fn get(uri: &str) -> Request<Body> {
    request(Method::GET, uri, Body::empty())
}

fn post(uri: &str, body: impl Into<Body>) -> Request<Body> {
    request(Method::POST, uri, body)
}

fn post_json(uri: &str, body: &Value) -> Request<Body> {
    post(uri, body.to_string())
}

fn with_header(mut req: Request<Body>, name: &'static str, value: HeaderValue) -> Request<Body> {
    req.headers_mut().insert(name, value);
    req
}

/// Percent-encode every byte, so any string can be a path segment or query value.
fn encode(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

// ---------------------------------------------------------------------------------------
// The document, and a small JSON Schema checker over it
// ---------------------------------------------------------------------------------------

fn doc() -> Value {
    serde_json::from_str(OPENAPI).expect("infra/openapi.json is valid JSON")
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Every (method, path) the document describes.
fn documented_routes(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths is an object");
    paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| ((*m).to_owned(), path.clone()))
        })
        .collect()
}

/// Follow `$ref`s (local, `#/...`) until a schema without one.
fn resolve<'a>(doc: &'a Value, mut node: &'a Value) -> &'a Value {
    for _ in 0..16 {
        let Some(r) = node.get("$ref").and_then(Value::as_str) else {
            return node;
        };
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("non-local $ref {r}"));
        node = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling $ref {r}"));
    }
    panic!("$ref chain too long at {node}");
}

fn schema(doc: &Value, name: &str) -> Value {
    doc["components"]["schemas"]
        .get(name)
        .unwrap_or_else(|| panic!("components/schemas/{name} is missing"))
        .clone()
}

fn has_type(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => false,
    }
}

/// Check `v` against `schema`: `$ref`, `type` (one or several), `const`, `enum`,
/// `required`, `properties` (and, for `type: object` schemas with `properties`, that
/// the value has no property the schema does not document), `additionalProperties:
/// false`, `items`, `minimum`, `anyOf`, `oneOf`. Enough to keep the document and the
/// real responses from drifting apart; not a full JSON Schema validator.
fn check(doc: &Value, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if let Some(t) = schema.get("type") {
        let ok = match t {
            Value::String(t) => has_type(t, v),
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(|t| has_type(t, v)),
            _ => false,
        };
        if !ok {
            errors.push(format!("{at}: {v} is not of type {t}"));
            return;
        }
    }
    if let Some(c) = schema.get("const") {
        if c != v {
            errors.push(format!("{at}: {v} is not {c}"));
        }
    }
    if let Some(Value::Array(allowed)) = schema.get("enum") {
        if !allowed.contains(v) {
            errors.push(format!("{at}: {v} is not one of {allowed:?}"));
        }
    }
    if let (Some(min), Some(n)) = (schema.get("minimum").and_then(Value::as_f64), v.as_f64()) {
        if n < min {
            errors.push(format!("{at}: {n} is below the minimum {min}"));
        }
    }
    if let Value::Object(obj) = v {
        if let Some(Value::Array(required)) = schema.get("required") {
            for r in required.iter().filter_map(Value::as_str) {
                if !obj.contains_key(r) {
                    errors.push(format!("{at}: required property '{r}' is missing"));
                }
            }
        }
        if let Some(Value::Object(props)) = schema.get("properties") {
            for (k, sub) in props {
                if let Some(x) = obj.get(k) {
                    check(doc, sub, x, &format!("{at}.{k}"), errors);
                }
            }
            let closed = schema.get("type").and_then(Value::as_str) == Some("object")
                || schema.get("additionalProperties") == Some(&Value::Bool(false));
            if closed {
                for k in obj.keys().filter(|k| !props.contains_key(*k)) {
                    errors.push(format!("{at}: property '{k}' is not documented"));
                }
            }
        }
    }
    if let (Some(items), Value::Array(xs)) = (schema.get("items"), v) {
        for (i, x) in xs.iter().enumerate() {
            check(doc, items, x, &format!("{at}[{i}]"), errors);
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(branches)) = schema.get(key) {
            let matching = branches
                .iter()
                .filter(|b| {
                    let mut e = Vec::new();
                    check(doc, b, v, at, &mut e);
                    e.is_empty()
                })
                .count();
            let ok = if key == "oneOf" {
                matching == 1
            } else {
                matching >= 1
            };
            if !ok {
                errors.push(format!("{at}: {matching} branches of {key} match {v}"));
            }
        }
    }
}

fn assert_conforms(doc: &Value, schema: &Value, v: &Value, what: &str) {
    let mut errors = Vec::new();
    check(doc, schema, v, "$", &mut errors);
    assert!(
        errors.is_empty(),
        "{what} does not conform to its documented schema:\n  {}\nbody: {v}",
        errors.join("\n  ")
    );
}

/// The documented response object of `method path` for `status`.
fn documented_response<'a>(
    doc: &'a Value,
    method: &str,
    path: &str,
    status: StatusCode,
) -> &'a Value {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not documented");
    let resp = op["responses"]
        .get(status.as_str())
        .unwrap_or_else(|| panic!("{method} {path} does not document status {status}"));
    resolve(doc, resp)
}

/// Assert the reply is what the document promises for `method path`: a documented status,
/// JSON, a body that conforms to the documented schema and, for errors, a documented code.
fn assert_documented(doc: &Value, method: &str, path: &str, reply: &Reply) {
    let resp = documented_response(doc, method, path, reply.status);
    assert_reply_matches(
        doc,
        resp,
        reply,
        &format!("{method} {path} {}", reply.status),
    );
}

fn assert_reply_matches(doc: &Value, resp: &Value, reply: &Reply, what: &str) {
    assert!(reply.is_json(), "{what}: not a JSON response");
    let schema = resp
        .pointer("/content/application~1json/schema")
        .unwrap_or_else(|| panic!("{what}: no application/json schema documented"));
    assert_conforms(doc, schema, &reply.body, what);
    if let Some(code) = reply.body["error"]["code"].as_str() {
        assert_code_documented(doc, code);
    }
}

/// Every error code the server sends is listed in the `Error` schema's description.
fn assert_code_documented(doc: &Value, code: &str) {
    let codes = doc
        .pointer("/components/schemas/Error/properties/error/properties/code/description")
        .and_then(Value::as_str)
        .expect("Error.error.code has a description");
    assert!(
        codes.contains(&format!("`{code}`")),
        "error code '{code}' is not listed in the Error schema"
    );
}

// ---------------------------------------------------------------------------------------
// The document agrees with the router
// ---------------------------------------------------------------------------------------

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
        json!(crate::app::MAX_PAGE),
        "limit maximum"
    );
    assert_eq!(
        limit["schema"]["default"],
        json!(crate::app::DEFAULT_PAGE),
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
            plan: Plan { steps: seed_dag() },
        },
        Event::StepStarted {
            step_id: "s1".into(),
            attempt: 1,
            lease_ms: 35_000,
        },
        Event::StepCompleted {
            step_id: "s1".into(),
            attempt: 1,
            output: json!(5),
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
    let mut errors = Vec::new();
    check(&doc, &event_schema, &wrong, "$", &mut errors);
    assert!(!errors.is_empty());
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

// ---------------------------------------------------------------------------------------
// Real responses conform to the document
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn given_a_prompt_when_posted_then_the_run_conforms_to_the_run_schema() {
    let doc = doc();
    let h = harness();
    let reply = h.send(post_json("/runs", &json!({"prompt": PROMPT}))).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_documented(&doc, "post", "/runs", &reply);
    let run = &reply.body;
    assert_eq!(run["status"], "pending");
    assert_eq!(run["prompt"], PROMPT);
    assert_eq!(run["steps"].as_array().map(Vec::len), Some(4));
    assert_eq!(run["planner"]["name"], "fixed");
    // Every documented response header is real.
    let id = run["run_id"].as_str().expect("run_id");
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
    assert_eq!(run.body["status"], "completed", "{}", run.body);
    assert_eq!(run.body["result"]["title"], "50");

    let at = run.body["created_at"].as_str().expect("created_at");
    let past = h.send(get(&format!("/runs/{id}?at={}", encode(at)))).await;
    assert_eq!(past.status, StatusCode::OK, "{}", past.body);
    assert_documented(&doc, "get", "/runs/{id}", &past);
    assert_eq!(past.body["status"], "pending");

    let list = h.send(get("/runs")).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_documented(&doc, "get", "/runs", &list);
    assert_eq!(list.body["runs"][0]["run_id"], json!(id));

    let page = h.send(get("/runs?limit=1&status=completed")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_documented(&doc, "get", "/runs", &page);
    assert!(page.body["next_cursor"].is_string());

    let events = h.send(get(&format!("/runs/{id}/events"))).await;
    assert_eq!(events.status, StatusCode::OK);
    assert_documented(&doc, "get", "/runs/{id}/events", &events);
    assert_eq!(events.body["run_id"], json!(id));
    assert_eq!(events.body["events"][0]["type"], "RunCreated");

    let todos = h.send(get("/todos")).await;
    assert_eq!(todos.status, StatusCode::OK);
    assert_documented(&doc, "get", "/todos", &todos);
    assert_eq!(todos.body["todos"][0]["title"], "50");

    let health = h.send(get("/health")).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_documented(&doc, "get", "/health", &health);
    assert_eq!(health.body["status"], "ok");

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
    assert_eq!(run.body["status"], "compensated", "{}", run.body);
    let events = h.send(get(&format!("/runs/{id}/events"))).await;
    assert_documented(&doc, "get", "/runs/{id}/events", &events);
    let types: Vec<&str> = events.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
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
    assert_eq!(reply.body["tools"][0]["breaker"]["state"], "closed");

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
    let states: Vec<&str> = reply.body["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["breaker"]["state"].as_str())
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
    assert_eq!(reply.body["cancel_requested"], true);
    // Cancelling again while the cancel is in progress is harmless.
    let again = h
        .send(post(&format!("/runs/{id}/cancel"), Body::empty()))
        .await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    h.drain().await;
    let run = h.send(get(&format!("/runs/{id}"))).await;
    assert_eq!(run.body["status"], "cancelled", "{}", run.body);
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

// ---------------------------------------------------------------------------------------
// Bad input: always a JSON 4xx with a precise code, never a panic
// ---------------------------------------------------------------------------------------

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
    assert_eq!(runs.body["runs"], json!([]), "no bad request created a run");
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
            created.insert(reply.body["run_id"].as_str().expect("id").to_owned());
        }
        let mut seen = BTreeSet::new();
        let mut uri = "/runs?limit=2".to_owned();
        for _ in 0..10 {
            let reply = send(router, get(&uri)).await;
            assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.body);
            for run in reply.body["runs"].as_array().expect("runs") {
                let id = run["run_id"].as_str().expect("id").to_owned();
                assert!(seen.insert(id), "sqlite={sqlite}: a run listed twice");
            }
            match reply.body["next_cursor"].as_str() {
                Some(c) => uri = format!("/runs?limit=2&cursor={}", encode(c)),
                None => break,
            }
        }
        assert_eq!(seen, created, "sqlite={sqlite}");
    }
}

/// Add `n` todos to the tenant of the API, titled `todo 1` .. `todo n`.
async fn seed_todos(todos: &dyn TodoStore, n: usize) {
    for i in 1..=n {
        let title = format!("todo {i}");
        todos
            .apply(
                "default",
                &format!("seed/{i}"),
                &TodoChange::Add { title },
                Utc::now(),
            )
            .await
            .expect("seeded");
    }
}

#[tokio::test]
async fn given_todos_when_get_todos_pages_through_them_then_each_comes_once_in_id_order() {
    let doc = doc();
    for sqlite in [false, true] {
        let (_disk, router) = if sqlite {
            let disk = sqlite_harness();
            let seeder = SqliteStore::open(disk.dir.join("crane.db")).expect("sqlite opens");
            seed_todos(&seeder, 7).await;
            let router = disk.router.clone();
            (Some(disk), router)
        } else {
            let h = harness();
            seed_todos(&*h.app.todos, 7).await;
            (None, h.router)
        };
        let mut seen = Vec::new();
        let mut uri = "/todos?limit=3".to_owned();
        let mut pages = 0;
        loop {
            let reply = send(&router, get(&uri)).await;
            assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.body);
            assert_documented(&doc, "get", "/todos", &reply);
            pages += 1;
            let todos = reply.body["todos"].as_array().expect("todos");
            assert!(todos.len() <= 3, "sqlite={sqlite}: a page over the limit");
            seen.extend(todos.iter().map(|t| t["id"].as_u64().expect("id")));
            match reply.body["next_cursor"].as_str() {
                Some(c) => uri = format!("/todos?limit=3&cursor={}", encode(c)),
                None => break,
            }
            assert!(pages < 10, "sqlite={sqlite}: paging never ends");
        }
        assert_eq!(seen, (1..=7).collect::<Vec<_>>(), "sqlite={sqlite}");
        assert_eq!(pages, 3, "sqlite={sqlite}: 3 + 3 + 1, no empty last page");
    }
}

#[tokio::test]
async fn given_more_than_100_todos_when_get_todos_has_no_limit_then_the_first_100_and_a_cursor() {
    let h = harness();
    seed_todos(&*h.app.todos, 120).await;
    let first = h.send(get("/todos")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["todos"].as_array().map(Vec::len), Some(100));
    let cursor = first.body["next_cursor"].as_str().expect("a next page");
    let rest = h
        .send(get(&format!("/todos?limit=500&cursor={}", encode(cursor))))
        .await;
    assert_eq!(rest.body["todos"].as_array().map(Vec::len), Some(20));
    assert_eq!(rest.body["todos"][0]["id"], 101);
    assert_eq!(rest.body["next_cursor"], Value::Null);
}

#[tokio::test]
async fn given_bad_limits_or_cursors_when_listing_todos_then_4xx() {
    let doc = doc();
    let run_cursor = {
        // A cursor of another listing (runs on SQLite: base64url JSON too) is not a todo
        // cursor.
        let h = sqlite_harness();
        for _ in 0..2 {
            send(&h.router, post_json("/runs", &json!({"prompt": PROMPT}))).await;
        }
        let page = send(&h.router, get("/runs?limit=1")).await;
        page.body["next_cursor"]
            .as_str()
            .expect("runs cursor")
            .to_owned()
    };
    for sqlite in [false, true] {
        let (_disk, router) = if sqlite {
            let disk = sqlite_harness();
            let router = disk.router.clone();
            (Some(disk), router)
        } else {
            (None, harness().router)
        };
        let bad = StatusCode::BAD_REQUEST;
        let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
        for (query, status, code) in [
            ("limit=0".to_owned(), unprocessable, "invalid_limit"),
            ("limit=501".to_owned(), unprocessable, "invalid_limit"),
            ("limit=x".to_owned(), bad, "invalid_limit"),
            ("limit=-1".to_owned(), bad, "invalid_limit"),
            ("limit=".to_owned(), bad, "invalid_limit"),
            ("limit=1.5".to_owned(), bad, "invalid_limit"),
            ("cursor=bogus".to_owned(), unprocessable, "invalid_cursor"),
            ("cursor=".to_owned(), unprocessable, "invalid_cursor"),
            ("cursor=e30".to_owned(), unprocessable, "invalid_cursor"),
            ("cursor=%FF".to_owned(), unprocessable, "invalid_cursor"),
            (
                format!("cursor={}", encode(&run_cursor)),
                unprocessable,
                "invalid_cursor",
            ),
        ] {
            let uri = format!("/todos?{query}");
            let reply = send(&router, get(&uri)).await;
            reply.assert_error(status, code, &format!("sqlite={sqlite} {uri}"));
            assert_documented(&doc, "get", "/todos", &reply);
        }
        for query in ["limit=1", "limit=500", "limit=%20100%20"] {
            let reply = send(&router, get(&format!("/todos?{query}"))).await;
            assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.body);
        }
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
            reply.body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("no such route")),
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

// ---------------------------------------------------------------------------------------
// Headers: idempotency, Location, correlation
// ---------------------------------------------------------------------------------------

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
    assert_eq!(first.body["run_id"], second.body["run_id"]);
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
    assert_eq!(list.body["runs"].as_array().map(Vec::len), Some(1));
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
    assert_eq!(again.body["run_id"], created.body["run_id"]);
}

#[tokio::test]
async fn given_a_created_run_when_following_location_then_it_is_the_run() {
    let h = harness();
    let created = h.send(post_json("/runs", &json!({"prompt": PROMPT}))).await;
    let location = created.header("location").expect("location").to_owned();
    let run = h.send(get(&location)).await;
    assert_eq!(run.status, StatusCode::OK);
    assert_eq!(run.body["run_id"], created.body["run_id"]);
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
    assert_eq!(reply.body["correlation_id"], "req-7f3a9c");

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
        assert_eq!(reply.body["correlation_id"], json!(echoed));
    }
}

// ---------------------------------------------------------------------------------------
// Failures of the planner and the stores: documented statuses, JSON bodies
// ---------------------------------------------------------------------------------------

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
    assert_eq!(second.body["run_id"], third.body["run_id"]);
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
    let id = created.body["run_id"].as_str().expect("id").to_owned();
    assert_eq!(created.body["planner"]["fallback_reason"], "unavailable");
    assert_eq!(created.body["planner"]["requested"], "llm");
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
    assert_eq!(reply.body["status"], "degraded");
    assert_eq!(reply.body["planner"]["status"], "degraded");
    assert_eq!(reply.body["planner"]["reason"], "no model configured");
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

// ---------------------------------------------------------------------------------------
// The edge: content type, origin and CORS, host
// ---------------------------------------------------------------------------------------

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
    assert_eq!(runs.body["runs"].as_array().map(Vec::len), Some(1));
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
    assert_eq!(runs.body["runs"], json!([]));
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
    let keys = super::KeyRing::new(&[("key-a-0123456789abcdef".into(), "tenant-a".into())]);
    let edge = EdgeOptions {
        auth: super::Auth::Keys(keys),
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
        rate_limit: Some(super::quota::RateLimit {
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
    let keys = super::KeyRing::new(&[
        ("key-a-0123456789abcdef".into(), "tenant-a".into()),
        ("key-b-0123456789abcdef".into(), "tenant-b".into()),
    ]);
    let edge = EdgeOptions {
        auth: super::Auth::Keys(keys),
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

// ---------------------------------------------------------------------------------------
// Properties: no input gets a 5xx or a non-JSON answer
// ---------------------------------------------------------------------------------------

fn runner(cases: u32) -> (tokio::runtime::Runtime, TestRunner) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    (rt, runner)
}

fn create_bodies() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..600),
        any::<String>().prop_map(String::into_bytes),
        "[{}\\[\\]\":, prompt0-9.a-z\\\\nulltrue-]{0,80}".prop_map(String::into_bytes),
        any::<String>().prop_map(|p| json!({ "prompt": p }).to_string().into_bytes()),
        (any::<String>(), any::<String>())
            .prop_map(|(k, v)| json!({ k: v }).to_string().into_bytes()),
    ]
}

#[test]
fn given_arbitrary_bytes_when_posted_as_a_run_then_a_json_answer_below_500() {
    let (rt, mut runner) = runner(256);
    let h = harness();
    let result = runner.run(&create_bodies(), |body| {
        let reply = rt.block_on(h.send(post("/runs", body)));
        prop_assert!(reply.status.as_u16() < 500, "{}", reply.status);
        prop_assert!(reply.is_json(), "not JSON: {:?}", reply.raw);
        prop_assert!(
            reply.status == StatusCode::CREATED || !reply.code().is_empty(),
            "{}: {}",
            reply.status,
            reply.body
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn given_arbitrary_ids_and_queries_when_read_then_a_json_answer_below_500() {
    let (rt, mut runner) = runner(256);
    let h = harness();
    let strategy = (any::<String>(), any::<String>(), 0..6_usize);
    let result = runner.run(&strategy, |(id, value, which)| {
        let (id, value) = (encode(&id), encode(&value));
        let uri = match which {
            0 => format!("/runs/{id}?at={value}"),
            1 => format!("/runs/{id}/events"),
            2 => format!("/runs?limit={value}&status={id}"),
            3 => format!("/runs?cursor={value}"),
            4 => format!("/runs/{id}"),
            // `/` is the web console's page, not an API route.
            _ if id.is_empty() => "/nope".to_owned(),
            _ => format!("/{id}"),
        };
        let method = if which == 1 && id.len() % 2 == 0 {
            Method::POST
        } else {
            Method::GET
        };
        let reply = rt.block_on(h.send(request(method, &uri, Body::empty())));
        prop_assert!(reply.status.as_u16() < 500, "{uri}: {}", reply.status);
        prop_assert!(reply.is_json(), "{uri}: not JSON");
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

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
            approval: crate::engine::approval::ApprovalPolicy::parse(["todo.delete"])
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
    assert_eq!(waiting.body["awaiting_approval"], json!(["s2"]));
    assert_eq!(waiting.body["plan"]["steps"][1]["requires_approval"], true);
    assert_eq!(waiting.body["steps"][1]["status"], "waiting_approval");
    assert_eq!(
        waiting.body["steps"][1]["approval"]["input"],
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
    assert_eq!(
        approved.body["steps"][1]["approval"]["decision"],
        "approved"
    );
    let twice = h.send(post(&reject, "")).await;
    twice.assert_error(StatusCode::CONFLICT, "already_decided", "twice");
    assert_documented(&doc, "post", "/runs/{id}/steps/{step_id}/reject", &twice);
    h.drain().await;
    let done = h.send(get(&format!("/runs/{id}"))).await;
    assert_eq!(done.body["status"], "completed", "{}", done.body);
    assert_documented(&doc, "get", "/runs/{id}", &done);
    let events = h.send(get(&format!("/runs/{id}/events"))).await;
    assert_documented(&doc, "get", "/runs/{id}/events", &events);
}
