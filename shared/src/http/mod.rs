//! The HTTP API: one axum [`Router`] served by the local runtime (`crane-local`) and by the
//! API Lambdas (`lambda_http::run`). Handlers translate requests into [`App`] calls and
//! errors into `{"error": {"code", "message"}}`; no business rules live here. The guards
//! every request passes first (origin, host, content type, body deadline) are in [`edge`];
//! the tenant of each request is fixed from its credentials in [`auth`]; watching runs
//! (long-poll, event stream, `Prefer: wait`) is in [`live`]. The web console's static
//! files (`/`, `/console/*`) are served by the `console` module.

mod approval;
pub mod auth;
mod console;
pub mod edge;
mod error;
pub mod live;
pub mod quota;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::DateTime;
use serde_json::{json, Value};
use tower_http::catch_panic::CatchPanicLayer;

use crate::app::{App, RequestContext};
use crate::domain::RunKey;

pub use auth::{Auth, GatewayIdentity, KeyRing, Tenant};
pub use edge::{EdgeOptions, Origin};
pub use error::{ApiError, ErrorCode};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The OpenAPI 3.1 document of this API (`infra/openapi.json`), served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../../../infra/openapi.json");

/// Every route the router serves, as (method, OpenAPI path). Kept beside the router so a
/// test can hold the two and the OpenAPI document in agreement.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/runs"),
    ("get", "/runs"),
    ("get", "/runs/{id}"),
    ("get", "/runs/{id}/events"),
    ("get", "/runs/{id}/stream"),
    ("post", "/runs/{id}/cancel"),
    ("post", "/runs/{id}/steps/{step_id}/approve"),
    ("post", "/runs/{id}/steps/{step_id}/reject"),
    ("get", "/todos"),
    ("get", "/tools"),
    ("get", "/health"),
    ("get", "/openapi.json"),
];

/// Routes documented in the OpenAPI document that only `crane-local` serves (through
/// [`router_extended`]); elsewhere they are a 404.
pub const LOCAL_ROUTES: &[(&str, &str)] = &[("get", "/metrics")];

type Shared = Arc<App>;

/// Build the router over an [`App`] with the default [`EdgeOptions`] (browser calls from
/// the API's own origin only).
pub fn router(app: Arc<App>) -> Router {
    router_with(app, &EdgeOptions::default())
}

/// Build the router over an [`App`], guarded as `edge` says.
pub fn router_with(app: Arc<App>, edge: &EdgeOptions) -> Router {
    router_extended(app, edge, Router::new())
}

/// Build the router over an [`App`] with `extra` routes (the local runtime's
/// [`LOCAL_ROUTES`]), all guarded as `edge` says: the same host, origin, credentials and
/// rate checks as every other route.
pub fn router_extended(app: Arc<App>, edge: &EdgeOptions, extra: Router<Arc<App>>) -> Router {
    let mut router = Router::new()
        .route("/runs", post(create_run).get(list_runs))
        .route("/runs/{id}", get(get_run))
        .route("/runs/{id}/events", get(live::run_events))
        .route("/runs/{id}/stream", get(live::stream))
        .route("/runs/{id}/cancel", post(cancel_run))
        .merge(approval::routes())
        .route("/todos", get(list_todos))
        .route("/tools", get(list_tools))
        .route("/health", get(health))
        .route("/openapi.json", get(openapi))
        .merge(console::routes())
        .merge(extra)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(error::panic_response));
    if let Some(timeout) = edge.body_timeout {
        router = router.layer(from_fn_with_state(timeout, edge::body_deadline));
    }
    router = router.layer(from_fn(edge::require_json));
    if let Some(limit) = edge.rate_limit {
        router = router.layer(from_fn_with_state(
            Arc::new(quota::Limiter::new(limit)),
            quota::limit_rate,
        ));
    }
    router = router
        .layer(from_fn_with_state(
            Arc::new(edge.auth.clone()),
            auth::authenticate,
        ))
        .layer(from_fn_with_state(
            Arc::new(edge.cors_origins.clone()),
            edge::guard_origin,
        ));
    if let Some(hosts) = &edge.allowed_hosts {
        router = router.layer(from_fn_with_state(
            Arc::new(hosts.clone()),
            edge::guard_host,
        ));
    }
    router.layer(from_fn(correlate)).with_state(app)
}

/// The correlation id of a request (from `X-Correlation-Id`, or generated).
#[derive(Debug, Clone)]
struct CorrelationId(String);

/// Give every request a correlation id and echo it on every response, errors included.
async fn correlate(mut req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let id = correlation_id(req.headers());
    req.extensions_mut().insert(CorrelationId(id.clone()));
    let span = tracing::info_span!("request", correlation_id = %id, method = %req.method(), path = %req.uri().path());
    let resp = tracing::Instrument::instrument(next.run(req), span).await;
    with_correlation(resp, &id)
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Tenant>().cloned().ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "the request carries no verified identity",
            )
        })
    }
}

fn correlation_id(headers: &HeaderMap) -> String {
    headers
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

fn with_correlation(mut resp: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert("x-correlation-id", v);
    }
    resp
}

fn run_key(tenant: Tenant, id: &str) -> Result<RunKey, ApiError> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !valid {
        return Err(ApiError::not_found(format!(
            "run {} not found",
            truncate(id)
        )));
    }
    Ok(RunKey::new(tenant.0, id))
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

fn path_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(id)| id)
        .map_err(|_| ApiError::not_found("no such run"))
}

fn query_of(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>, ApiError> {
    query.map(|Query(q)| q).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidQuery,
            format!("the query string is malformed: {}", e.body_text()),
        )
    })
}

/// A JSON request body that must be an object whose only field may be `field`, parsed by
/// hand so every mistake gets a precise message (`shape` says what was expected).
pub(crate) fn object_with_only(
    body: &[u8],
    field: &str,
    shape: &str,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::MalformedJson,
            format!("request body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(obj) = value else {
        return Err(ApiError::new(ErrorCode::InvalidBody, shape.to_owned()));
    };
    if let Some(other) = obj.keys().find(|k| k.as_str() != field) {
        return Err(ApiError::new(
            ErrorCode::UnknownField,
            format!(
                "unknown field '{}': the only field is '{field}'",
                truncate(other)
            ),
        ));
    }
    Ok(obj)
}

/// Parse the `POST /runs` body by hand so every mistake gets a precise message.
fn prompt_of(body: &[u8]) -> Result<String, ApiError> {
    if body.is_empty() {
        return Err(ApiError::new(
            ErrorCode::MissingBody,
            "request body must be a JSON object like {\"prompt\": \"calculate 2+3\"}",
        ));
    }
    let mut obj = object_with_only(
        body,
        "prompt",
        "request body must be a JSON object like {\"prompt\": \"calculate 2+3\"}",
    )?;
    match obj.remove("prompt") {
        None => Err(ApiError::new(
            ErrorCode::PromptRequired,
            "field 'prompt' is required",
        )),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ApiError::new(
            ErrorCode::InvalidPrompt,
            "field 'prompt' must be a string",
        )),
    }
}

async fn create_run(
    State(app): State<Shared>,
    tenant: Tenant,
    headers: HeaderMap,
    correlation: Option<axum::Extension<CorrelationId>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let arrived = std::time::Instant::now();
    let correlation_id = match correlation {
        Some(axum::Extension(CorrelationId(id))) => id,
        None => correlation_id(&headers),
    };
    let ctx = RequestContext {
        tenant: tenant.0,
        correlation_id,
    };
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::BodyTooLarge,
                format!("request body is larger than {MAX_BODY_BYTES} bytes"),
            )
        } else if edge::is_body_timeout(&r) {
            ApiError::new(
                ErrorCode::BodyTimeout,
                "the request body did not arrive in time",
            )
        } else {
            ApiError::new(ErrorCode::UnreadableBody, r.body_text())
        }
    })?;
    let prompt = prompt_of(&body)?;
    let wait = live::prefer_wait(&headers)?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidIdempotencyKey,
                "Idempotency-Key must be visible ASCII",
            )
        })?),
    };
    let created = app.create_run(&ctx, &prompt, key).await?;
    let location = format!("/runs/{}", created.run.run_id);
    let mut resp = match wait {
        None => (StatusCode::CREATED, Json(&created.run)).into_response(),
        Some(wait) => {
            live::settled_response(
                &app,
                created.run,
                (wait, arrived),
                StatusCode::CREATED,
                StatusCode::ACCEPTED,
            )
            .await
        }
    };
    if let Ok(loc) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert("location", loc);
    }
    if created.replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

async fn get_run(
    State(app): State<Shared>,
    tenant: Tenant,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = run_key(tenant, &path_id(path)?)?;
    let q = query_of(query)?;
    let run = match q.get("at") {
        None => {
            let run = app.get_run(&key).await?;
            if let Some(wait) = live::prefer_wait(&headers)? {
                let arrived = std::time::Instant::now();
                return Ok(live::settled_response(
                    &app,
                    run,
                    (wait, arrived),
                    StatusCode::OK,
                    StatusCode::OK,
                )
                .await);
            }
            run
        }
        Some(at) => {
            // A literal '+' of an offset arrives as a space unless it was percent-encoded.
            let at = DateTime::parse_from_rfc3339(&at.trim().replace(' ', "+")).map_err(|_| {
                ApiError::new(
                    ErrorCode::InvalidAt,
                    format!(
                        "at={} is not an RFC 3339 time like 2026-01-02T03:04:05Z",
                        truncate(at)
                    ),
                )
            })?;
            app.get_run_at(&key, at.to_utc()).await?
        }
    };
    Ok(Json(run).into_response())
}

async fn list_runs(
    State(app): State<Shared>,
    tenant: Tenant,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query_of(query)?;
    let limit = q.get("limit").map(|l| limit_of(l)).transpose()?;
    // An empty cursor is the first page, like no cursor.
    let cursor = q.get("cursor").filter(|c| !c.is_empty()).cloned();
    let page = app
        .list_runs(
            &tenant.0,
            q.get("status").map(String::as_str),
            limit,
            cursor,
        )
        .await?;
    Ok(Json(json!({"runs": page.items, "next_cursor": page.next_cursor})).into_response())
}

/// `limit=`: not an integer is a 400; an integer out of range (negative, huge) is passed on
/// as 0 or `usize::MAX` for the range check to refuse with 422.
fn limit_of(l: &str) -> Result<usize, ApiError> {
    let t = l.trim();
    let (negative, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::new(
            ErrorCode::InvalidLimit,
            format!("limit={} is not an integer", truncate(l)),
        ));
    }
    Ok(if negative {
        0
    } else {
        digits.parse().unwrap_or(usize::MAX)
    })
}

async fn cancel_run(
    State(app): State<Shared>,
    tenant: Tenant,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let key = run_key(tenant, &path_id(path)?)?;
    let run = app.cancel_run(&key, None).await?;
    Ok((StatusCode::ACCEPTED, Json(run)).into_response())
}

async fn list_todos(
    State(app): State<Shared>,
    tenant: Tenant,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query_of(query)?;
    let limit = match q.get("limit") {
        None => None,
        Some(l) => Some(l.trim().parse::<usize>().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidLimit,
                format!("limit={} is not a number", truncate(l)),
            )
        })?),
    };
    let page = app
        .list_todos(&tenant.0, limit, q.get("cursor").cloned())
        .await?;
    Ok(Json(json!({"todos": page.items, "next_cursor": page.next_cursor})).into_response())
}

async fn list_tools(State(app): State<Shared>) -> Result<Response, ApiError> {
    let tools = app.tools().await?;
    Ok(Json(json!({"tools": tools})).into_response())
}

async fn health(State(app): State<Shared>) -> Response {
    let (status, body) = app.health().await;
    (status_code(status), Json(body)).into_response()
}

fn status_code(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn openapi() -> Response {
    ([("content-type", "application/json")], OPENAPI).into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see GET /openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route; see GET /openapi.json",
    )
}
