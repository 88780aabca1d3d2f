//! `GET /metrics`: the Prometheus metrics of this runtime ([`crane::prometheus`]), with
//! the values read at scrape time (breaker states, job queue, watchers). Served behind the
//! same guards as every route: with API keys configured, a scrape needs one.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use crane::adapters::local::SqliteStore;
use crane::app::App;
use crane::http::{ApiError, ErrorCode};
use crane::prometheus::{Metrics, Snapshot};
use tracing::warn;

/// The `/metrics` route, for [`crane::http::router_extended`].
pub fn routes(metrics: Arc<Metrics>, store: SqliteStore) -> Router<Arc<App>> {
    Router::new().route(
        "/metrics",
        get(move |State(app): State<Arc<App>>| {
            let (metrics, store) = (metrics.clone(), store.clone());
            async move { scrape(&app, &metrics, &store).await }
        }),
    )
}

async fn scrape(app: &App, metrics: &Metrics, store: &SqliteStore) -> Response {
    let (queue_depth, queue_lag) = match store.queue_stats(Utc::now()).await {
        Ok(stats) => stats,
        Err(e) => {
            warn!(error = %e, "metrics: the job queue cannot be read");
            return ApiError::new(ErrorCode::Unavailable, "the store does not answer")
                .into_response();
        }
    };
    let breakers = match app.tools().await {
        Ok(tools) => tools
            .iter()
            .map(|t| (t.name.to_owned(), t.breaker.name()))
            .collect(),
        Err(e) => {
            warn!(error = %e, "metrics: breaker states cannot be read");
            Vec::new()
        }
    };
    let snapshot = Snapshot {
        breakers,
        queue_depth,
        queue_lag,
        watchers: store.notifier().watchers(),
    };
    (
        [(CONTENT_TYPE, crane::prometheus::CONTENT_TYPE)],
        metrics.render(&snapshot),
    )
        .into_response()
}
