//! Guards at the edge of the router, before any handler runs: which sites may call the API
//! from a browser (`Origin`, CORS), which `Host` names a loopback server answers (DNS
//! rebinding), that request bodies are JSON, and how long a body may take to arrive.
//!
//! A browser can send a "simple" cross-site request (a form post, `text/plain`) without
//! asking first, so refusing non-JSON bodies and foreign `Origin`s is what keeps another
//! web page from creating runs through a user's browser. Clients that are not browsers send
//! no `Origin` and are not affected.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD,
    CONTENT_TYPE, HOST, ORIGIN, VARY,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::time::Sleep;

use super::{ApiError, ErrorCode};

/// Host names a server on a loopback address answers to (any port).
pub const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// Methods and request headers a preflight may be granted.
const ALLOW_METHODS: &str = "GET, POST";
const ALLOW_HEADERS: &str = "authorization, content-type, idempotency-key, x-correlation-id";
/// Response headers a cross-origin page may read.
const EXPOSE_HEADERS: &str = "location, x-correlation-id, idempotent-replayed";
/// How long a browser may cache a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE: &str = "600";

/// How the router guards its edge. [`EdgeOptions::default`] allows same-origin browser
/// calls only, checks no `Host`, sets no body deadline and asks for no credentials (every
/// request is the default tenant).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EdgeOptions {
    /// Origins (besides the request's own) allowed to call the API from a browser.
    pub cors_origins: Vec<Origin>,
    /// When set, only these `Host` names are answered (crane-local on a loopback address).
    pub allowed_hosts: Option<Vec<String>>,
    /// When set, a request body must arrive whole within this time of being read.
    pub body_timeout: Option<Duration>,
    /// How the tenant of a request is established (default: development, one tenant).
    pub auth: super::Auth,
    /// When set, each tenant's requests are admitted at this rate (429 beyond it).
    pub rate_limit: Option<super::quota::RateLimit>,
}

/// A web origin: scheme, host and port (`https://app.example.com` is port 443).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// Parse `scheme://host[:port]` (http or https, no path); `None` if it is not one.
    pub fn parse(s: &str) -> Option<Origin> {
        let (scheme, rest) = s.trim().split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let (host, port) = split_host_port(rest)?;
        Some(Origin {
            scheme,
            host,
            port: port.unwrap_or(default_port),
        })
    }

    /// Whether this origin is the one a request with this `Host` was sent to.
    fn is_host(&self, host: &str) -> bool {
        match split_host_port(host) {
            Some((name, port)) => name == self.host && port.unwrap_or(self.port) == self.port,
            None => false,
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// `host[:port]` or `[v6]:port`, with the name lowercased.
fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if s.starts_with('[') {
        let end = s.find(']')?;
        let (host, rest) = s.split_at(end + 1);
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match s.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    let valid_name = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    let valid = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        !v6.is_empty()
            && v6
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
    } else {
        !host.is_empty() && host.chars().all(valid_name)
    };
    if !valid {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
    };
    Some((host.to_ascii_lowercase(), port))
}

/// The `Host` a request was sent to: the header, or the authority of an absolute URI.
fn request_host(req: &Request) -> Option<String> {
    req.headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()))
}

/// Refuse a `Host` that is not one of `allowed`: a page on another name that resolves to
/// 127.0.0.1 (DNS rebinding) must not reach a loopback server. A request without a `Host`
/// (HTTP/1.0) comes from no browser and passes.
pub(super) async fn guard_host(
    State(allowed): State<Arc<Vec<String>>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(host) = request_host(&req) {
        let known = split_host_port(&host).is_some_and(|(name, _)| allowed.contains(&name));
        if !known {
            return ApiError::new(
                ErrorCode::HostNotAllowed,
                format!(
                    "this server answers only to {}; add other names to CRANE_ALLOWED_HOSTS",
                    allowed.join(", ")
                ),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Refuse a browser request from an origin that is neither the API's own nor listed, answer
/// CORS preflights for allowed origins, and let listed origins read the responses.
pub(super) async fn guard_origin(
    State(allowed): State<Arc<Vec<Origin>>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(origin) = req.headers().get(ORIGIN).cloned() else {
        return next.run(req).await;
    };
    let parsed = origin.to_str().ok().and_then(Origin::parse);
    let same_origin = parsed
        .as_ref()
        .zip(request_host(&req))
        .is_some_and(|(o, host)| o.is_host(&host));
    let listed = parsed.as_ref().is_some_and(|o| allowed.contains(o));
    let preflight = req.method() == Method::OPTIONS
        && req.headers().contains_key(ACCESS_CONTROL_REQUEST_METHOD);
    if !(same_origin || listed) {
        return ApiError::new(
            ErrorCode::OriginNotAllowed,
            "requests from this origin are not allowed; list it in CRANE_CORS_ORIGINS",
        )
        .into_response();
    }
    if preflight {
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        h.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        h.insert(
            ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(PREFLIGHT_MAX_AGE),
        );
        h.insert(VARY, HeaderValue::from_static("origin"));
        return resp;
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(VARY, HeaderValue::from_static("origin"));
    if listed {
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }
    resp
}

/// Refuse a request that carries a body which is not declared JSON (415). A request whose
/// body is known to be empty needs no `Content-Type`.
pub(super) async fn require_json(req: Request, next: Next) -> Response {
    let body = req.body();
    let empty = body.is_end_stream() || body.size_hint().upper() == Some(0);
    if !empty && !is_json(req.headers()) {
        return ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "a request body must be JSON, sent with Content-Type: application/json",
        )
        .into_response();
    }
    next.run(req).await
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// Give the request body a deadline: it must arrive whole within `timeout` of the first
/// read, however slowly its bytes trickle in.
pub(super) async fn body_deadline(
    State(timeout): State<Duration>,
    req: Request,
    next: Next,
) -> Response {
    let req = req.map(|body| {
        Body::new(DeadlineBody {
            inner: body,
            timeout,
            deadline: None,
        })
    });
    next.run(req).await
}

/// The error a body read fails with when its deadline passes.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimeout(pub Duration);

struct DeadlineBody {
    inner: Body,
    timeout: Duration,
    /// Started by the first read.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let timeout = this.timeout;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimeout(timeout)))));
        }
        Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `error` (a body read failure) was caused by a [`BodyTimeout`].
pub(super) fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<BodyTimeout>() {
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_origins_when_parsed_then_default_ports_apply_and_paths_are_refused() {
        let o = Origin::parse("https://App.Example.com").expect("origin");
        assert_eq!(o.to_string(), "https://app.example.com:443");
        assert_eq!(
            Origin::parse("http://localhost:5173").map(|o| o.to_string()),
            Some("http://localhost:5173".into())
        );
        assert_eq!(
            Origin::parse("http://[::1]:3000").map(|o| o.to_string()),
            Some("http://[::1]:3000".into())
        );
        for bad in [
            "null",
            "app.example.com",
            "ftp://example.com",
            "https://example.com/path",
            "https://user@example.com",
            "https://example.com:port",
            "https://",
            "https://exa mple.com",
        ] {
            assert_eq!(Origin::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn given_a_host_header_when_compared_with_an_origin_then_name_and_port_must_match() {
        let o = Origin::parse("http://localhost:3000").expect("origin");
        assert!(o.is_host("localhost:3000"));
        assert!(o.is_host("LOCALHOST:3000"));
        assert!(!o.is_host("localhost:3001"));
        assert!(!o.is_host("127.0.0.1:3000"));
        let https = Origin::parse("https://api.example.com").expect("origin");
        assert!(https.is_host("api.example.com"));
        assert!(https.is_host("api.example.com:443"));
        assert!(!https.is_host("api.example.com:80"));
    }
}
