//! Errors at the edge: every failure becomes `{"error": {"code", "message"}}` with a
//! fitting status. Internal details are logged, not returned.

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tracing::error;

use crate::app::{AppError, Refusal};
use crate::planner::PlanError;
use crate::ports::StoreError;

/// Declares [`ErrorCode`]: each code with its HTTP status, in one table.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])+ $variant:ident = $code:literal, $status:ident;)+) => {
        /// The `code` of an error body: a stable, snake_case name clients can branch on,
        /// each answered with one HTTP status. Owned by the HTTP layer: the application
        /// reports what went wrong ([`AppError`]) and this table names it for the wire.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[doc = $doc])+ $variant,)+
        }

        impl ErrorCode {
            /// Every code, in the order of the table.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)+];

            /// The code as it appears in an error body.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)+
                }
            }

            /// The HTTP status this code is answered with.
            pub fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$variant => StatusCode::$status,)+
                }
            }
        }
    };
}

error_codes! {
    /// The request has no verified identity (no key, a wrong key, no gateway identity).
    Unauthorized = "unauthorized", UNAUTHORIZED;
    /// The `Host` header names a host this server does not answer for.
    HostNotAllowed = "host_not_allowed", FORBIDDEN;
    /// A browser request from an origin not listed in `CRANE_CORS_ORIGINS`.
    OriginNotAllowed = "origin_not_allowed", FORBIDDEN;
    /// No such run, step, route or console file (or another tenant's).
    NotFound = "not_found", NOT_FOUND;
    /// This deployment cannot stream events (the cloud); long-poll instead.
    StreamingUnavailable = "streaming_unavailable", NOT_FOUND;
    /// The route exists, but not for this method.
    MethodNotAllowed = "method_not_allowed", METHOD_NOT_ALLOWED;
    /// The request body did not arrive before the body deadline.
    BodyTimeout = "body_timeout", REQUEST_TIMEOUT;
    /// The request body is over the size limit.
    BodyTooLarge = "body_too_large", PAYLOAD_TOO_LARGE;
    /// A request body that is not `application/json`.
    UnsupportedMediaType = "unsupported_media_type", UNSUPPORTED_MEDIA_TYPE;
    /// The request body could not be read (a broken or truncated stream).
    UnreadableBody = "unreadable_body", BAD_REQUEST;
    /// The request body is not JSON.
    MalformedJson = "malformed_json", BAD_REQUEST;
    /// A request that needs a body came without one.
    MissingBody = "missing_body", BAD_REQUEST;
    /// The query string does not parse.
    InvalidQuery = "invalid_query", BAD_REQUEST;
    /// `?after=` is not a sequence number.
    InvalidAfter = "invalid_after", BAD_REQUEST;
    /// `?at=` is not a time.
    InvalidAt = "invalid_at", BAD_REQUEST;
    /// `?wait=` is not a number of seconds in range.
    InvalidWait = "invalid_wait", BAD_REQUEST;
    /// `?limit=` is not a page size in range.
    InvalidLimit = "invalid_limit", BAD_REQUEST;
    /// A `Prefer` header that cannot be read.
    InvalidPrefer = "invalid_prefer", BAD_REQUEST;
    /// `Last-Event-ID` is not a sequence number.
    InvalidLastEventId = "invalid_last_event_id", BAD_REQUEST;
    /// The store refused the request as malformed (a bad key or parameter).
    InvalidRequest = "invalid_request", BAD_REQUEST;
    /// The body is JSON but not the object the route takes.
    InvalidBody = "invalid_body", UNPROCESSABLE_ENTITY;
    /// The body names a field the route does not take.
    UnknownField = "unknown_field", UNPROCESSABLE_ENTITY;
    /// `POST /runs` without a prompt.
    PromptRequired = "prompt_required", UNPROCESSABLE_ENTITY;
    /// A prompt that is not a non-empty string within the length limit.
    InvalidPrompt = "invalid_prompt", UNPROCESSABLE_ENTITY;
    /// An `Idempotency-Key` header that is not a short printable token.
    InvalidIdempotencyKey = "invalid_idempotency_key", UNPROCESSABLE_ENTITY;
    /// An `Idempotency-Key` already used for a different request.
    IdempotencyKeyReused = "idempotency_key_reused", UNPROCESSABLE_ENTITY;
    /// A page cursor this store did not hand out.
    InvalidCursor = "invalid_cursor", UNPROCESSABLE_ENTITY;
    /// A prompt with nothing but whitespace.
    PromptEmpty = "prompt_empty", UNPROCESSABLE_ENTITY;
    /// A prompt over the length limit.
    PromptTooLong = "prompt_too_long", UNPROCESSABLE_ENTITY;
    /// A status filter that names no run status.
    InvalidStatus = "invalid_status", UNPROCESSABLE_ENTITY;
    /// A page size that is a number, but out of range (`invalid_limit` with 400 is one
    /// that is not a number at all).
    LimitOutOfRange = "invalid_limit", UNPROCESSABLE_ENTITY;
    /// An approval comment that is not a string.
    InvalidComment = "invalid_comment", UNPROCESSABLE_ENTITY;
    /// An approval comment over the length limit.
    CommentTooLong = "comment_too_long", UNPROCESSABLE_ENTITY;
    /// The planner could not read the prompt; the message says what it understands.
    PromptNotUnderstood = "prompt_not_understood", UNPROCESSABLE_ENTITY;
    /// The plan failed validation (unknown tool, bad input, a cycle, ...).
    InvalidPlan = "invalid_plan", UNPROCESSABLE_ENTITY;
    /// The run has finished; it cannot be cancelled.
    RunFinished = "run_finished", CONFLICT;
    /// The run has no saga to start or retry.
    NothingToCompensate = "nothing_to_compensate", CONFLICT;
    /// A person has already approved or rejected this step.
    AlreadyDecided = "already_decided", CONFLICT;
    /// The step is not waiting for a decision.
    NotWaitingApproval = "not_waiting_approval", CONFLICT;
    /// The run changed concurrently more often than the retries allow; try again.
    Conflict = "conflict", CONFLICT;
    /// The caller is over its request rate.
    RateLimited = "rate_limited", TOO_MANY_REQUESTS;
    /// The tenant has as many unfinished runs as it may have.
    TooManyActiveRuns = "too_many_active_runs", TOO_MANY_REQUESTS;
    /// As many watchers wait as the server allows.
    TooManyWatchers = "too_many_watchers", TOO_MANY_REQUESTS;
    /// Something failed inside; the details are in the log, not the answer.
    Internal = "internal", INTERNAL_SERVER_ERROR;
    /// The planner's model is not reachable and no fallback could plan.
    PlannerUnavailable = "planner_unavailable", SERVICE_UNAVAILABLE;
    /// Storage is unreachable or throttling; try again.
    Unavailable = "unavailable", SERVICE_UNAVAILABLE;
}

/// An error answered as `{"error": {"code", "message"}}` with its code's status.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// What went wrong, for clients to branch on; it decides the status.
    pub code: ErrorCode,
    /// What went wrong, for people: never internal details.
    pub message: String,
}

impl ApiError {
    /// An error with `code` and a message for people.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// A `404 not_found` saying what was not found.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = json!({"error": {"code": self.code.as_str(), "message": self.message}});
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

impl From<Refusal> for ErrorCode {
    fn from(why: Refusal) -> Self {
        match why {
            Refusal::InvalidIdempotencyKey => ErrorCode::InvalidIdempotencyKey,
            Refusal::IdempotencyKeyReused => ErrorCode::IdempotencyKeyReused,
            Refusal::PromptEmpty => ErrorCode::PromptEmpty,
            Refusal::PromptTooLong => ErrorCode::PromptTooLong,
            Refusal::InvalidStatus => ErrorCode::InvalidStatus,
            Refusal::LimitOutOfRange => ErrorCode::LimitOutOfRange,
            Refusal::InvalidCursor => ErrorCode::InvalidCursor,
            Refusal::CommentTooLong => ErrorCode::CommentTooLong,
            Refusal::TooManyActiveRuns => ErrorCode::TooManyActiveRuns,
            Refusal::TooManyWatchers => ErrorCode::TooManyWatchers,
            Refusal::RunFinished => ErrorCode::RunFinished,
            Refusal::NothingToCompensate => ErrorCode::NothingToCompensate,
            Refusal::AlreadyDecided => ErrorCode::AlreadyDecided,
            Refusal::NotWaitingApproval => ErrorCode::NotWaitingApproval,
        }
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Refused { why, message } => ApiError::new(why.into(), message),
            AppError::NotFound(m) => ApiError::not_found(m),
            AppError::Plan(PlanError::NotUnderstood(m)) => {
                ApiError::new(ErrorCode::PromptNotUnderstood, m)
            }
            AppError::Plan(PlanError::Invalid(m)) => ApiError::new(ErrorCode::InvalidPlan, m),
            AppError::Plan(PlanError::Unavailable(m)) => {
                ApiError::new(ErrorCode::PlannerUnavailable, m)
            }
            AppError::Store(StoreError::Invalid(m)) => ApiError::new(ErrorCode::InvalidRequest, m),
            AppError::Store(StoreError::Conflict(m)) => {
                error!(error = %m, "unresolved write conflict");
                ApiError::new(
                    ErrorCode::Conflict,
                    "the run changed concurrently; try again",
                )
            }
            AppError::Store(e @ StoreError::Unavailable { .. }) => {
                error!(error = %e, source = ?std::error::Error::source(&e), "store unavailable");
                ApiError::new(ErrorCode::Unavailable, "storage is unavailable; try again")
            }
            AppError::Store(e) => {
                error!(error = %e, source = ?std::error::Error::source(&e), "internal error");
                ApiError::new(ErrorCode::Internal, "internal error")
            }
        }
    }
}

/// The response when a handler panics: the server keeps serving.
pub fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    error!("handler panicked");
    ApiError::new(ErrorCode::Internal, "internal error").into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn every_code_is_snake_case_and_one_code_has_one_meaning_per_status() {
        let mut seen: HashMap<(&str, StatusCode), ErrorCode> = HashMap::new();
        for &code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(
                !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code:?}: {s:?} is not snake_case"
            );
            assert!(
                code.status().is_client_error() || code.status().is_server_error(),
                "{code:?} answers {}",
                code.status()
            );
            if let Some(first) = seen.insert((s, code.status()), code) {
                panic!("{first:?} and {code:?} are both {s} with {}", code.status());
            }
        }
    }

    #[test]
    fn every_code_is_documented_in_the_openapi_document() {
        // The operator's saga retry is a Lambda invocation, not a route: its refusal never
        // reaches an HTTP client.
        let no_route = [ErrorCode::NothingToCompensate];
        for &code in ErrorCode::ALL.iter().filter(|c| !no_route.contains(c)) {
            let quoted = format!("\"{}\"", code.as_str());
            let ticked = format!("`{}`", code.as_str());
            assert!(
                crate::http::OPENAPI.contains(&quoted) || crate::http::OPENAPI.contains(&ticked),
                "infra/openapi.json never mentions the error code {}",
                code.as_str()
            );
        }
    }

    #[test]
    fn given_an_app_refusal_when_answered_then_its_code_and_status_come_from_the_table() {
        let e = ApiError::from(AppError::refused(Refusal::AlreadyDecided, "decided"));
        assert_eq!(e.code, ErrorCode::AlreadyDecided);
        assert_eq!(e.status(), StatusCode::CONFLICT);
        let e = ApiError::from(AppError::refused(Refusal::LimitOutOfRange, "limit"));
        assert_eq!(
            (e.code.as_str(), e.status()),
            ("invalid_limit", StatusCode::UNPROCESSABLE_ENTITY)
        );
        let e = ApiError::from(AppError::refused(Refusal::TooManyWatchers, "busy"));
        assert_eq!(e.into_response().headers()[RETRY_AFTER], "1");
    }
}
