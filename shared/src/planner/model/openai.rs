//! The OpenAI-compatible planner: plans with any OpenAI-compatible chat-completions endpoint
//! (OpenAI, a gateway, or a local server such as Ollama or vLLM).
//!
//! The request carries the system prompt of [`super::prompt`], a few worked examples as
//! user/assistant pairs, the prompt, `temperature` (0 unless configured, or left out for
//! reasoning models), and a `response_format` whose JSON schema is derived from the registry
//! ([`plan_schema`], adapted to OpenAI's strict mode). The answer is read by
//! [`super::answer`] and passes [`validate`](crate::planner::validate) like every plan.
//! Servers without `json_schema` support can use `json_object` or no `response_format`
//! ([`ResponseFormat`]); validation is the same either way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use super::answer::{plan_from_content, Answer};
use super::prompt::{examples, plan_schema, system_prompt};
use super::{elapsed_ms, excerpt, planned, LlmError, ModelFailure, ModelPlanner};
use crate::domain::Usage;
use crate::planner::{PlanError, Planned, Planner};
use crate::tools::Registry;

/// OpenAI's API.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// The model asked unless `CRANE_LLM_MODEL` names another.
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";
/// Budget of one planning call unless `CRANE_LLM_TIMEOUT_MS` says otherwise.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Deterministic plans; `CRANE_LLM_TEMPERATURE=none` leaves the field out.
pub const DEFAULT_TEMPERATURE: f64 = 0.0;
/// Highest temperature accepted by OpenAI-compatible APIs.
pub const MAX_TEMPERATURE: f64 = 2.0;
/// Largest response body read from the endpoint; anything larger is refused.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Name of the structured-output schema.
pub const SCHEMA_NAME: &str = "plan";

/// How the request asks for JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponseFormat {
    /// `{"type": "json_schema", "json_schema": {"strict": true, ...}}` (OpenAI, vLLM, Ollama).
    #[default]
    JsonSchema,
    /// `{"type": "json_object"}`, for servers without JSON-schema support.
    JsonObject,
    /// No `response_format`; the prompt alone asks for JSON.
    None,
}

impl ResponseFormat {
    /// `json_schema`, `json_object` or `none`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json_schema" => Some(Self::JsonSchema),
            "json_object" => Some(Self::JsonObject),
            "none" => Some(Self::None),
            _ => None,
        }
    }
}

/// Where and how to reach the model. `Debug` never shows the API key.
#[derive(Clone, PartialEq)]
pub struct OpenAiConfig {
    /// Base URL of the API, e.g. `https://api.openai.com/v1`; `/chat/completions` is appended.
    pub base_url: String,
    /// The model name sent as `model`, e.g. `gpt-4o-mini`.
    pub model: String,
    /// Sent as `Authorization: Bearer <key>`; local servers usually need none.
    pub api_key: Option<String>,
    /// Budget for the whole call: connect, answer and body.
    pub timeout_ms: u64,
    /// How the request asks for JSON.
    pub response_format: ResponseFormat,
    /// Sent as `temperature`; `None` leaves it out (OpenAI's reasoning models reject any
    /// value but their default).
    pub temperature: Option<f64>,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.into(),
            model: DEFAULT_MODEL.into(),
            api_key: None,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            response_format: ResponseFormat::default(),
            temperature: Some(DEFAULT_TEMPERATURE),
        }
    }
}

impl std::fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &redact_url(&self.base_url))
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("timeout_ms", &self.timeout_ms)
            .field("response_format", &self.response_format)
            .field("temperature", &self.temperature)
            .finish()
    }
}

impl OpenAiConfig {
    /// `{base_url}/chat/completions`, keeping a query string of the base URL at the end
    /// (`https://gw.example/v1?api-version=1` -> `https://gw.example/v1/chat/completions?api-version=1`).
    pub fn endpoint(&self) -> String {
        let (base, query) = match self.base_url.split_once('?') {
            Some((base, query)) => (base, format!("?{query}")),
            None => (self.base_url.as_str(), String::new()),
        };
        format!("{}/chat/completions{query}", base.trim_end_matches('/'))
    }

    /// Strings that must never appear in a message: the key and the secrets of the URL.
    fn secrets(&self) -> Vec<String> {
        let mut secrets = url_secrets(&self.base_url);
        secrets.extend(self.api_key.iter().filter(|k| !k.is_empty()).cloned());
        secrets
    }
}

/// Query parameters whose values are treated as secrets (matched within the name, any case).
const SECRET_PARAMS: [&str; 8] = [
    "key",
    "token",
    "secret",
    "password",
    "passwd",
    "sig",
    "auth",
    "credential",
];
/// Shortest URL secret scrubbed from free text (shorter ones would erase common words).
const MIN_SECRET_LEN: usize = 4;

/// `url` fit to log or show: credentials (`user:pass@`) and the values of query parameters
/// that look secret (`api-key`, `token`, `sig`, ...) become `[redacted]`.
pub fn redact_url(url: &str) -> String {
    let parts = UrlParts::split(url);
    let mut out = String::with_capacity(url.len());
    out.push_str(parts.scheme);
    if parts.userinfo.is_some() {
        out.push_str("[redacted]@");
    }
    out.push_str(parts.host_path);
    if let Some(query) = parts.query {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if is_secret_param(name) => format!("{name}=[redacted]"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    out.push_str(parts.fragment);
    out
}

/// The secret parts of `url` (userinfo, its password, secret query values) long enough to
/// scrub from error messages that may quote the URL.
fn url_secrets(url: &str) -> Vec<String> {
    let parts = UrlParts::split(url);
    let mut secrets = Vec::new();
    if let Some(userinfo) = parts.userinfo {
        secrets.push(userinfo.to_owned());
        if let Some((_, password)) = userinfo.split_once(':') {
            secrets.push(password.to_owned());
        }
    }
    for pair in parts.query.unwrap_or_default().split('&') {
        if let Some((name, value)) = pair.split_once('=') {
            if is_secret_param(name) {
                secrets.push(value.to_owned());
            }
        }
    }
    secrets.retain(|s| s.len() >= MIN_SECRET_LEN);
    // Longest first, so a password inside its userinfo is not scrubbed before the whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
}

fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMS.iter().any(|p| name.contains(p))
}

/// `scheme://userinfo@host:port/path?query#fragment`, split without decoding.
struct UrlParts<'a> {
    /// `scheme://`, or empty.
    scheme: &'a str,
    userinfo: Option<&'a str>,
    host_path: &'a str,
    query: Option<&'a str>,
    /// `#fragment`, or empty.
    fragment: &'a str,
}

impl<'a> UrlParts<'a> {
    fn split(url: &'a str) -> Self {
        let (scheme, rest) = match url.find("://") {
            Some(i) => url.split_at(i + 3),
            None => ("", url),
        };
        let (rest, fragment) = match rest.find('#') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let (userinfo, host_path) = match rest[..authority_end].rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        Self {
            scheme,
            userinfo,
            host_path,
            query,
            fragment,
        }
    }
}

/// The chat-completions request body for `prompt`.
pub fn build_request_body(config: &OpenAiConfig, prompt: &str, registry: &Registry) -> Value {
    let mut messages = vec![json!({
        "role": "system",
        "content": system_prompt(registry, Answer::Content),
    })];
    for example in examples(registry) {
        messages.push(json!({"role": "user", "content": example.prompt}));
        messages.push(json!({"role": "assistant", "content": example.plan.to_string()}));
    }
    messages.push(json!({"role": "user", "content": prompt}));
    let mut body = json!({
        "model": config.model,
        "messages": messages,
    });
    if let (Some(t), Some(obj)) = (config.temperature, body.as_object_mut()) {
        obj.insert("temperature".into(), temperature_json(t));
    }
    let format = match config.response_format {
        ResponseFormat::JsonSchema => Some(json!({
            "type": "json_schema",
            "json_schema": {
                "name": SCHEMA_NAME,
                "strict": true,
                "schema": plan_schema(registry, true),
            }
        })),
        ResponseFormat::JsonObject => Some(json!({"type": "json_object"})),
        ResponseFormat::None => None,
    };
    if let (Some(format), Some(obj)) = (format, body.as_object_mut()) {
        obj.insert("response_format".into(), format);
    }
    body
}

/// A whole temperature as an integer (`0`, as every server accepts), others as a float.
fn temperature_json(t: f64) -> Value {
    if t.fract() == 0.0 && t.abs() <= MAX_TEMPERATURE {
        // Exact: a small whole number.
        let whole = t as i64;
        json!(whole)
    } else {
        serde_json::Number::from_f64(t).map_or(Value::Null, Value::Number)
    }
}

/// What a chat completion said, and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatAnswer {
    /// The message content, or else the arguments of its first tool call.
    pub content: String,
    /// Tokens of the request as the server counted them (0 if it did not say).
    pub prompt_tokens: u64,
    /// Tokens of the answer (0 if the server did not say).
    pub completion_tokens: u64,
}

#[derive(Deserialize)]
struct ChatResponse {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<ChatUsage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    /// A string, or (some servers and gateways) an array of `{"type": "text", "text"}` parts.
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    refusal: Option<String>,
    /// Some gateways return the structured answer as a function call.
    #[serde(default)]
    tool_calls: Vec<ToolCall>,
}

#[derive(Deserialize)]
struct ToolCall {
    #[serde(default)]
    function: Option<FunctionCall>,
}

#[derive(Deserialize)]
struct FunctionCall {
    /// A JSON string per the API; some gateways send the object itself.
    #[serde(default)]
    arguments: Option<Value>,
}

/// The text of `content`: the string, or the text parts joined; a refusal part is returned
/// as `Err`.
fn content_text(content: Value) -> Result<String, String> {
    match content {
        Value::String(s) => Ok(s),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match part {
                    Value::String(s) => text.push_str(&s),
                    Value::Object(part) => {
                        if let Some(refusal) = part.get("refusal").and_then(Value::as_str) {
                            return Err(refusal.to_owned());
                        }
                        if let Some(t) = part.get("text").and_then(Value::as_str) {
                            text.push_str(t);
                        }
                    }
                    _ => {}
                }
            }
            Ok(text)
        }
        _ => Ok(String::new()),
    }
}

#[derive(Deserialize, Default)]
struct ChatUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

/// Read a successful chat-completions body: `choices[0].message.content` (a string or text
/// parts), else the arguments of its first tool call, and `usage`.
pub fn parse_chat_response(body: &[u8]) -> Result<ChatAnswer, LlmError> {
    let response: ChatResponse = serde_json::from_slice(body).map_err(|e| {
        LlmError::Unparseable(format!("the response is not a chat completion: {e}"))
    })?;
    let usage = response.usage.unwrap_or_default();
    let choice = response
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| LlmError::Unparseable("the response has no choices".into()))?;
    let message = choice.message;
    if let Some(refusal) = message.refusal.filter(|r| !r.is_empty()) {
        return Err(LlmError::Refused(excerpt(&refusal)));
    }
    match choice.finish_reason.as_deref() {
        Some("content_filter") => {
            return Err(LlmError::Refused(
                "the provider's content filter withheld the answer (finish_reason content_filter)"
                    .into(),
            ))
        }
        Some("length") => {
            return Err(LlmError::Unparseable(
                "the answer was cut off at the token limit".into(),
            ))
        }
        _ => {}
    }
    let text = content_text(message.content.unwrap_or(Value::Null))
        .map_err(|refusal| LlmError::Refused(excerpt(&refusal)))?;
    let arguments = || {
        message
            .tool_calls
            .into_iter()
            .find_map(|call| call.function?.arguments)
            .map(|args| match args {
                Value::String(s) => s,
                other => other.to_string(),
            })
    };
    let content = Some(text)
        .filter(|c| !c.trim().is_empty())
        .or_else(arguments)
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| LlmError::Unparseable("the answer is empty".into()))?;
    Ok(ChatAnswer {
        content,
        prompt_tokens: usage.prompt_tokens.unwrap_or(0),
        completion_tokens: usage.completion_tokens.unwrap_or(0),
    })
}

/// The message of an error body (`{"error": {"message": ...}}`), or an excerpt of the body.
pub fn error_detail(body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let message = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("error"))
            .or_else(|| v.get("message"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    excerpt(&message.unwrap_or_else(|| String::from_utf8_lossy(body).into_owned()))
}

/// The request field an error body names (`{"error": {"param": "temperature"}}`).
pub fn error_param(body: &[u8]) -> Option<String> {
    let parsed: Value = serde_json::from_slice(body).ok()?;
    parsed
        .pointer("/error/param")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Plans with an OpenAI-compatible chat-completions endpoint.
pub struct OpenAiPlanner {
    config: OpenAiConfig,
    http: reqwest::Client,
    /// Scrubbed from every message ([`OpenAiConfig::secrets`]).
    secrets: Vec<String>,
    /// Whether the endpoint has answered yet: the first strict-schema call can be slow.
    answered: AtomicBool,
}

impl std::fmt::Debug for OpenAiPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiPlanner")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OpenAiPlanner {
    /// A planner for `config`; fails only if the HTTP client cannot be built.
    pub fn new(config: OpenAiConfig) -> Result<Self, LlmError> {
        let timeout = Duration::from_millis(config.timeout_ms.max(1));
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| LlmError::Config(format!("cannot build the HTTP client: {e}")))?;
        let secrets = config.secrets();
        Ok(Self {
            config,
            http,
            secrets,
            answered: AtomicBool::new(false),
        })
    }

    /// Where and how the model is reached.
    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    async fn call(&self, body: &Value) -> Result<ChatAnswer, LlmError> {
        let mut request = self.http.post(self.config.endpoint()).json(body);
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| self.classify(&e))?;
        let status = response.status();
        let bytes = read_bounded(response, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => LlmError::Unparseable(format!(
                    "the response is larger than {MAX_RESPONSE_BYTES} bytes"
                )),
                BodyError::Http(e) => self.classify(&e),
            })?;
        if !status.is_success() {
            let detail = self.redact(&error_detail(&bytes));
            let param = error_param(&bytes);
            return Err(LlmError::from_status(
                status.as_u16(),
                &detail,
                param.as_deref(),
            ));
        }
        parse_chat_response(&bytes)
    }

    fn classify(&self, e: &reqwest::Error) -> LlmError {
        let detail = self.redact(&error_chain(e));
        if e.is_timeout() {
            LlmError::Timeout(format!(
                "no answer within {} ms ({detail})",
                self.config.timeout_ms
            ))
        } else if e.is_builder() {
            LlmError::Config(detail)
        } else {
            LlmError::Connect(detail)
        }
    }

    /// OpenAI compiles a strict schema the first time it sees it (seconds, up to a minute for
    /// a large one), so a timeout before the first answer says so. It stays a passing failure:
    /// it does not mark the planner degraded, and the next call finds the schema compiled.
    fn first_call_hint(&self, error: LlmError) -> LlmError {
        match error {
            LlmError::Timeout(m) if !self.answered.load(Ordering::Relaxed) => {
                LlmError::Timeout(format!(
                    "{m}; this was the first call, which can be slow while the provider \
prepares the structured-output schema (raise CRANE_LLM_TIMEOUT_MS if it keeps happening)"
                ))
            }
            other => other,
        }
    }

    /// Never let the key or the URL's credentials into a message, even if a server echoes
    /// them or an error quotes the URL.
    fn redact(&self, s: &str) -> String {
        self.secrets.iter().fold(s.to_owned(), |s, secret| {
            s.replace(secret.as_str(), "[redacted]")
        })
    }
}

enum BodyError {
    TooLarge,
    Http(reqwest::Error),
}

async fn read_bounded(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(BodyError::TooLarge);
    }
    let mut buf = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Http)? {
        if buf.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    excerpt(&out)
}

#[async_trait]
impl ModelPlanner for OpenAiPlanner {
    fn name(&self) -> &'static str {
        "llm"
    }

    fn model(&self) -> &str {
        &self.config.model
    }

    async fn plan_with_model(
        &self,
        prompt: &str,
        registry: &Registry,
    ) -> Result<Planned, ModelFailure> {
        let body = build_request_body(&self.config, prompt, registry);
        let start = Instant::now();
        let answer = self.call(&body).await;
        let mut usage = Usage {
            latency_ms: elapsed_ms(start),
            ..Usage::default()
        };
        let answer = answer.map_err(|error| ModelFailure {
            error: self.first_call_hint(error),
            usage: usage.clone(),
        })?;
        self.answered.store(true, Ordering::Relaxed);
        usage.prompt_tokens = answer.prompt_tokens;
        usage.completion_tokens = answer.completion_tokens;
        let plan = plan_from_content(&answer.content, registry).map_err(|error| ModelFailure {
            error,
            usage: usage.clone(),
        })?;
        Ok(planned("llm", &self.config.model, plan, usage))
    }
}

/// Used alone (without the fallback), failures surface as [`PlanError`]s.
#[async_trait]
impl Planner for OpenAiPlanner {
    fn name(&self) -> &'static str {
        "llm"
    }

    async fn plan(&self, prompt: &str, registry: &Registry) -> Result<Planned, PlanError> {
        self.plan_with_model(prompt, registry)
            .await
            .map_err(|f| f.error.into())
    }
}

#[cfg(test)]
mod tests;
