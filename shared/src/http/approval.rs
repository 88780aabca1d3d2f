//! `POST /runs/{id}/steps/{step_id}/approve` and `.../reject`: a person's decision on a
//! step waiting for approval. The body is optional: `{"comment": "..."}`.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;

use super::{
    object_with_only, run_key, truncate, ApiError, ErrorCode, Shared, Tenant, MAX_BODY_BYTES,
};
use crate::engine::approval::Decision;

/// The routes, merged into the API's router.
pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/runs/{id}/steps/{step_id}/approve", post(approve))
        .route("/runs/{id}/steps/{step_id}/reject", post(reject))
}

async fn approve(
    state: State<Shared>,
    tenant: Tenant,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    decide(state, tenant, path, body, Decision::Approve).await
}

async fn reject(
    state: State<Shared>,
    tenant: Tenant,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    decide(state, tenant, path, body, Decision::Reject).await
}

async fn decide(
    State(app): State<Shared>,
    tenant: Tenant,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
    decision: Decision,
) -> Result<Response, ApiError> {
    let Path((id, step_id)) = path.map_err(|_| ApiError::not_found("no such run or step"))?;
    let key = run_key(tenant, &id)?;
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::BodyTooLarge,
                format!("request body is larger than {MAX_BODY_BYTES} bytes"),
            )
        } else if super::edge::is_body_timeout(&r) {
            ApiError::new(
                ErrorCode::BodyTimeout,
                "the request body did not arrive in time",
            )
        } else {
            ApiError::new(ErrorCode::UnreadableBody, r.body_text())
        }
    })?;
    let comment = comment_of(&body)?;
    let valid_step = !step_id.is_empty()
        && step_id.len() <= 64
        && step_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid_step {
        return Err(ApiError::not_found(format!(
            "run {} has no step {}",
            key.run_id,
            truncate(&step_id)
        )));
    }
    let run = app.decide_step(&key, &step_id, decision, comment).await?;
    Ok((StatusCode::OK, Json(run)).into_response())
}

/// The optional body: nothing, or `{"comment": "..."}` (a string or null).
fn comment_of(body: &[u8]) -> Result<Option<String>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let mut obj = object_with_only(
        body,
        "comment",
        "request body must be a JSON object like {\"comment\": \"looks right\"}, or empty",
    )?;
    match obj.remove("comment") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::new(
            ErrorCode::InvalidComment,
            "field 'comment' must be a string",
        )),
    }
}
