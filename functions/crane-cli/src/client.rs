//! The HTTP client of Crane's API (`infra/openapi.json`): one base URL, an optional bearer
//! key, JSON in and out. Every answer is either the JSON asked for or a [`CliError`]:
//! Crane's error body becomes [`CliError::Api`], anything else that is not JSON
//! [`CliError::Protocol`], no answer at all [`CliError::Connection`].

use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::{Method, RequestBuilder, Url};
use serde_json::Value;

use crate::error::CliError;

/// How long to wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an ordinary request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Slack over a long-poll's `wait` before the request is given up.
const LONG_POLL_SLACK: Duration = Duration::from_secs(15);

/// A client of one Crane API.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: Url,
    auth: Option<HeaderValue>,
}

impl Api {
    /// A client of the API at `url` (`http://` or `https://`, any path prefix such as an
    /// API Gateway stage), presenting `key` as `Authorization: Bearer` when given.
    pub fn new(url: &str, key: Option<&str>) -> Result<Api, CliError> {
        let base = Url::parse(url.trim())
            .map_err(|e| CliError::Usage(format!("CRANE_URL {url:?} is not a URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(CliError::Usage(format!(
                "CRANE_URL {url:?} must be an http:// or https:// URL"
            )));
        }
        let auth = match key.map(str::trim).filter(|k| !k.is_empty()) {
            None => None,
            Some(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
                    .ok()
                    .filter(|_| key.bytes().all(|b| b.is_ascii_graphic()))
                    .ok_or_else(|| {
                        CliError::Usage("CRANE_API_KEY must be visible ASCII characters".into())
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("crane-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::Usage(format!("cannot set up HTTP: {e}")))?;
        Ok(Api { http, base, auth })
    }

    /// The URL of `segments` under the base, each segment percent-encoded (a run id can
    /// never reach another route).
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// `GET` a JSON document.
    pub async fn get(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Value, CliError> {
        let url = self.url(segments);
        let req = self.request(Method::GET, url.clone()).query(query);
        self.json(req, url).await
    }

    /// `GET` a JSON document that comes with a failing status too (`/health` answers 503
    /// with its body when the store is down).
    pub async fn get_any(&self, segments: &[&str]) -> Result<(u16, Value), CliError> {
        let url = self.url(segments);
        let resp = send(self.request(Method::GET, url.clone()), &url).await?;
        let status = resp.status().as_u16();
        let body = read_json(resp, &url).await?;
        if status >= 400 && body.get("error").is_some() {
            return Err(api_error(status, &body));
        }
        Ok((status, body))
    }

    /// `POST` with a JSON body (or none).
    pub async fn post(
        &self,
        segments: &[&str],
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Value, CliError> {
        let url = self.url(segments);
        let mut req = self.request(Method::POST, url.clone());
        if let Some(body) = body {
            req = req.json(body);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        self.json(req, url).await
    }

    /// Whether run `id` has settled, as the server judges it: `GET /runs/{id}` with
    /// `Prefer: wait=0` carries `Preference-Applied` exactly when nothing more will happen
    /// to the run by itself (a failed run's saga, for instance, still to come). A server
    /// without `Prefer` support never says so: then only a final status ends a watch.
    pub async fn settled(&self, id: &str) -> Result<bool, CliError> {
        let url = self.url(&["runs", id]);
        let req = self
            .request(Method::GET, url.clone())
            .header("prefer", "wait=0");
        let resp = send(req, &url).await?;
        let status = resp.status().as_u16();
        let applied = resp.headers().contains_key("preference-applied");
        let body = read_json(resp, &url).await?;
        if status >= 400 {
            return Err(api_error(status, &body));
        }
        Ok(applied)
    }

    /// The events of run `id` after sequence number `after`, waiting up to `wait` for some
    /// to exist (`GET /runs/{id}/events?after=&wait=`). A server that ignores `after`
    /// answers the whole log at once; the caller keeps only what it has not seen.
    pub async fn events(
        &self,
        id: &str,
        after: u64,
        wait: Duration,
    ) -> Result<Vec<Value>, CliError> {
        let url = self.url(&["runs", id, "events"]);
        let mut query = vec![("after", after.to_string())];
        if !wait.is_zero() {
            query.push(("wait", wait.as_secs().to_string()));
        }
        let req = self
            .request(Method::GET, url.clone())
            .query(&query)
            .timeout(wait + LONG_POLL_SLACK);
        let body = self.json(req, url.clone()).await?;
        match body.get("events").and_then(Value::as_array) {
            Some(events) => Ok(events.clone()),
            None => Err(CliError::Protocol {
                url: url.to_string(),
                reason: "no `events` list in the answer".into(),
            }),
        }
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let mut req = self
            .http
            .request(method, url)
            .timeout(REQUEST_TIMEOUT)
            .header("accept", "application/json");
        if let Some(auth) = &self.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        req
    }

    async fn json(&self, req: RequestBuilder, url: Url) -> Result<Value, CliError> {
        let resp = send(req, &url).await?;
        let status = resp.status().as_u16();
        let body = read_json(resp, &url).await?;
        if status >= 400 {
            return Err(api_error(status, &body));
        }
        Ok(body)
    }
}

async fn send(req: RequestBuilder, url: &Url) -> Result<reqwest::Response, CliError> {
    req.send().await.map_err(|e| CliError::Connection {
        url: origin(url),
        reason: reason(&e),
    })
}

/// The body as JSON, or a protocol error naming the status and what came instead.
async fn read_json(resp: reqwest::Response, url: &Url) -> Result<Value, CliError> {
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| CliError::Connection {
        url: origin(url),
        reason: reason(&e),
    })?;
    serde_json::from_slice(&bytes).map_err(|_| {
        let text = String::from_utf8_lossy(&bytes);
        let snippet: String = text.trim().chars().take(80).collect();
        CliError::Protocol {
            url: url.to_string(),
            reason: if snippet.is_empty() {
                format!("{status} with an empty body")
            } else {
                format!("{status} that is not JSON: {snippet}")
            },
        }
    })
}

/// Crane's `{"error": {"code", "message"}}`, or what there is of it.
fn api_error(status: u16, body: &Value) -> CliError {
    let error = &body["error"];
    let code = error["code"].as_str().unwrap_or("error").to_owned();
    let message = error["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("the server answered {status}"));
    CliError::Api {
        status,
        code,
        message,
    }
}

/// Scheme, host and port: enough to say what could not be reached.
fn origin(url: &Url) -> String {
    let mut base = url.clone();
    base.set_query(None);
    base.set_path("");
    base.to_string().trim_end_matches('/').to_owned()
}

/// The most specific cause of a transport error ("Connection refused (os error 111)"),
/// or "timed out". Also how `crane-bench` names a failed POST.
pub fn reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_base_with_a_stage_path_when_building_urls_then_segments_are_appended_and_escaped() {
        let api = Api::new("https://api.example.com/prod/", None).expect("valid");
        assert_eq!(
            api.url(&["runs", "a/b?c", "events"]).as_str(),
            "https://api.example.com/prod/runs/a%2Fb%3Fc/events"
        );
        let api = Api::new("http://127.0.0.1:3000", None).expect("valid");
        assert_eq!(
            api.url(&["health"]).as_str(),
            "http://127.0.0.1:3000/health"
        );
    }

    #[test]
    fn given_bad_configuration_when_building_the_client_then_it_is_a_usage_error() {
        for url in ["127.0.0.1:3000", "ftp://x", "not a url", "mailto:a@b"] {
            let e = Api::new(url, None).err().expect("refused");
            assert_eq!(e.exit_code(), 2, "{url}: {e}");
        }
        let e = Api::new("http://localhost", Some("bad key\n"))
            .err()
            .expect("refused");
        assert_eq!(e.exit_code(), 2);
        assert!(!e.message().contains("bad key"), "the key is never echoed");
    }

    #[test]
    fn given_an_error_body_when_mapped_then_code_and_message_are_kept() {
        let body =
            serde_json::json!({"error": {"code": "not_found", "message": "run x not found"}});
        let e = api_error(404, &body);
        assert_eq!(e.message(), "run x not found (404 not_found)");
        let e = api_error(
            502,
            &serde_json::json!({"message": "Internal Server Error"}),
        );
        assert_eq!(e.message(), "the server answered 502 (502 error)");
    }
}
