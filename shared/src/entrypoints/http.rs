//! The API functions (`create-run`, `get-run`): the same axum router the local runtime
//! serves, behind `lambda_http`, which turns API Gateway HTTP API (payload 2.0) events into
//! `http::Request`s and responses back into the Lambda proxy response.
//!
//! Before routing, two adjustments for API Gateway: a path prefixed with a named stage
//! (`/prod/runs`) is served as `/runs` (with the `$default` stage paths arrive as they
//! are), and a request without `x-correlation-id` gets API Gateway's request id as its
//! correlation id, so one id follows the run from the API through the queue and the saga.
//!
//! The identity API Gateway's authorizer verified (a JWT's claims, or the IAM caller) is
//! copied from the request context into a [`GatewayIdentity`], from which the router takes
//! the tenant. Only API Gateway writes the request context; no header can stand in for it.

use std::convert::Infallible;
use std::sync::Arc;

use axum::http::{HeaderValue, Request, Uri};
use lambda_http::request::{LambdaRequest, RequestContext};
use lambda_http::{Context, LambdaEvent};
use serde_json::Value;
use tower::util::MapRequest;
use tower::ServiceExt;

use crate::app::App;
use crate::http::{Auth, EdgeOptions, GatewayIdentity};

/// The router served by the API functions.
pub type ApiService = MapRequest<axum::Router, fn(lambda_http::Request) -> lambda_http::Request>;

/// The router over `app`, guarded as `edge` says (see [`HttpConfig::edge`]), adjusted for
/// API Gateway.
///
/// [`HttpConfig::edge`]: crate::config::HttpConfig::edge
pub fn service(app: Arc<App>, edge: &EdgeOptions) -> ApiService {
    let adjust: fn(lambda_http::Request) -> lambda_http::Request = adjust;
    MapRequest::new(crate::http::router_with(app, edge), adjust)
}

/// Serve API Gateway events until the Lambda runtime stops.
pub async fn serve(app: Arc<App>, edge: &EdgeOptions) -> Result<(), lambda_http::Error> {
    lambda_http::run(service(app, edge)).await
}

/// Why an event could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// The payload is not an API Gateway HTTP API (v2) event.
    #[error("not an API Gateway HTTP API event: {0}")]
    Event(serde_json::Error),
    /// The router's response could not be turned into a Lambda response document.
    #[error("the response could not be encoded: {0}")]
    Response(serde_json::Error),
}

/// Answer one API Gateway HTTP API event exactly as the deployed function would, returning
/// the Lambda response document (`statusCode`, `headers`, `body`, ...). Used by the
/// handler tests with the sample events (the tenant is the JWT's `sub`, the default of
/// `CRANE_TENANT_CLAIM`).
pub async fn invoke(app: Arc<App>, event: Value) -> Result<Value, InvokeError> {
    let edge = EdgeOptions {
        auth: Auth::Gateway {
            claim: "sub".into(),
        },
        ..EdgeOptions::default()
    };
    let request: LambdaRequest = serde_json::from_value(event).map_err(InvokeError::Event)?;
    let adapter = lambda_http::Adapter::from(service(app, &edge));
    let response = adapter
        .oneshot(LambdaEvent::new(request, Context::default()))
        .await
        .map_err(|e: Infallible| match e {})?;
    serde_json::to_value(response).map_err(InvokeError::Response)
}

fn adjust<B>(mut req: Request<B>) -> Request<B> {
    let (stage, request_id, identity) = match req.extensions().get::<RequestContext>() {
        Some(RequestContext::ApiGatewayV2(ctx)) => (
            ctx.stage.clone(),
            ctx.request_id.clone(),
            ctx.authorizer.as_ref().map(|a| GatewayIdentity {
                claims: a.jwt.as_ref().map(|j| j.claims.clone()).unwrap_or_default(),
                iam_principal: a
                    .iam
                    .as_ref()
                    .and_then(|i| i.user_arn.clone().or_else(|| i.caller_id.clone())),
            }),
        ),
        _ => (None, None, None),
    };
    if let Some(identity) = identity {
        req.extensions_mut().insert(identity);
    }
    if let Some(stage) = stage.filter(|s| s != "$default" && !s.is_empty()) {
        if let Some(uri) = strip_stage(req.uri(), &stage) {
            *req.uri_mut() = uri;
        }
    }
    if !req.headers().contains_key("x-correlation-id") {
        if let Some(v) = request_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
            req.headers_mut().insert("x-correlation-id", v);
        }
    }
    req
}

/// `/prod/runs?x` -> `/runs?x` for stage `prod`; `None` if the path has no such prefix.
fn strip_stage(uri: &Uri, stage: &str) -> Option<Uri> {
    let prefix = format!("/{stage}");
    let rest = uri.path().strip_prefix(&prefix)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let path = if rest.is_empty() { "/" } else { rest };
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = pq.parse().ok();
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_staged_path_when_stripped_then_the_route_path_remains() {
        let uri: Uri = "https://x.example/prod/runs/abc?at=now"
            .parse()
            .expect("uri");
        let out = strip_stage(&uri, "prod").expect("stripped");
        assert_eq!(out.path(), "/runs/abc");
        assert_eq!(out.query(), Some("at=now"));
        let root: Uri = "/prod".parse().expect("uri");
        assert_eq!(strip_stage(&root, "prod").expect("stripped").path(), "/");
    }

    #[test]
    fn given_a_path_without_the_stage_when_stripped_then_it_is_left_alone() {
        let uri: Uri = "/production/runs".parse().expect("uri");
        assert_eq!(strip_stage(&uri, "prod"), None);
        let uri: Uri = "/runs".parse().expect("uri");
        assert_eq!(strip_stage(&uri, "prod"), None);
    }
}
