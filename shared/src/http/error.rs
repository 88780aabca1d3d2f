//! Errors at the edge: every failure becomes `{"error": {"code", "message"}}` with a
//! fitting status. Internal details are logged, not returned.

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tracing::error;

use crate::app::AppError;
use crate::planner::PlanError;
use crate::ports::StoreError;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Invalid { code, message } => ApiError::unprocessable(code, message),
            AppError::NotFound(m) => ApiError::not_found(m),
            AppError::Conflict { code, message } => {
                ApiError::new(StatusCode::CONFLICT, code, message)
            }
            AppError::Quota { code, message } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message)
            }
            AppError::Plan(PlanError::NotUnderstood(m)) => {
                ApiError::unprocessable("prompt_not_understood", m)
            }
            AppError::Plan(PlanError::Invalid(m)) => ApiError::unprocessable("invalid_plan", m),
            AppError::Plan(PlanError::Unavailable(m)) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "planner_unavailable", m)
            }
            AppError::Store(StoreError::Invalid(m)) => ApiError::bad_request("invalid_request", m),
            AppError::Store(StoreError::Conflict(m)) => {
                error!(error = %m, "unresolved write conflict");
                ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    "the run changed concurrently; try again",
                )
            }
            AppError::Store(StoreError::Unavailable(m)) => {
                error!(error = %m, "store unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "storage is unavailable; try again",
                )
            }
            AppError::Store(e) => {
                error!(error = %e, "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        }
    }
}

/// The response when a handler panics: the server keeps serving.
pub fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    error!("handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error",
    )
    .into_response()
}
