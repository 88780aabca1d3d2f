//! The web console: a handful of static files (HTML, CSS, ES modules, an icon) embedded in
//! the binary and served at `/` and `/console/<file>`, so it works offline and needs no
//! build step. The console's own files hold no data, so they are served without
//! credentials; everything they show comes from the API, whose routes stay protected (the
//! page sends the bearer token the user entered). A strict Content-Security-Policy allows
//! only this origin's scripts, styles and API, and no inline script or style.

use axum::extract::Path;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::ApiError;

/// What a console page may load: its own scripts, styles, images and API, nothing inline,
/// nothing from elsewhere, and it may not be framed.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
    etag: u64,
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_str!(concat!("console/", $name)),
            etag: fnv1a(include_bytes!(concat!("console/", $name))),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// The page served at `/`.
const INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");

/// The files served at `/console/<name>`.
const ASSETS: &[Asset] = &[
    asset!("console.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("live.js", JS),
    asset!("dag.js", JS),
    asset!("ui.js", JS),
    asset!("runs.js", JS),
    asset!("run.js", JS),
    asset!("tools.js", JS),
];

/// FNV-1a, computed at compile time: the files' validators (`ETag`).
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// Whether `path` is one of the console's files, served without credentials.
pub(super) fn is_console_path(path: &str) -> bool {
    path == "/" || path.starts_with("/console/")
}

/// The console's routes, to merge into the API router.
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/console/{file}", get(file))
}

async fn index(headers: HeaderMap) -> Response {
    serve(&INDEX, &headers)
}

async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) => serve(asset, &headers),
        None => ApiError::not_found("no such console file").into_response(),
    }
}

/// The file, or `304` if the client's copy is current. Clients revalidate every time
/// (`no-cache`): the names carry no version, and a new binary may change any file.
fn serve(asset: &Asset, headers: &HeaderMap) -> Response {
    let etag = format!("\"{:016x}\"", asset.etag);
    let fresh = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        asset.body.into_response()
    };
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(ETAG, v);
    }
    h.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE),
    );
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

#[cfg(test)]
mod tests;
