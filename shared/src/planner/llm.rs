//! The LLM planner: plans with any OpenAI-compatible chat-completions endpoint (OpenAI, a
//! gateway, or a local server such as Ollama or vLLM).
//!
//! The request carries a system prompt (the task, the plan format, the reference syntax, the
//! rules and the tool catalog), a few worked examples as user/assistant pairs, the prompt,
//! `temperature` (0 unless configured, or left out for reasoning models), and a
//! `response_format` whose JSON schema is derived from the registry.
//! The answer is untrusted: it is parsed, cleaned and then passes [`validate`] like every
//! plan, so nothing the model says can name an unregistered tool or an input its schema
//! rejects.
//!
//! # The structured-output schema
//! OpenAI's strict mode needs every property listed in `required` and
//! `additionalProperties: false` on every object, and supports only part of JSON Schema. Tool
//! inputs differ per tool, so [`plan_schema`] makes each item of `steps` an `anyOf` with one
//! branch per tool: `tool` is an enum of that one name and `input` is that tool's input schema
//! adapted to strict rules ([`strict_schema`]):
//! - optional properties become required but nullable; nulls are stripped from the answer
//!   before validation, so "null" means "absent";
//! - non-string leaves also accept a string, so a `{{s1}}` reference fits anywhere the
//!   validator accepts one; such unions are written as `anyOf` branches, the form strict
//!   mode documents (a `type` array is used only for the documented `[T, "null"]`);
//! - keywords strict mode may refuse (`minLength`, `maximum`, ...) are dropped from the
//!   request; [`validate`] still enforces them on the answer.
//!
//! The union of the branches' `tool` enums is exactly the registered tool names.
//! Servers without `json_schema` support can use `json_object` or no `response_format`
//! ([`ResponseFormat`]); validation is the same either way.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::hybrid::{ModelFailure, ModelPlanner};
use super::{validate, PlanError, Planned, Planner};
use crate::domain::{Plan, PlannerInfo, Usage};
use crate::tools::Registry;

/// OpenAI's API.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Deterministic plans; `CRANE_LLM_TEMPERATURE=none` leaves the field out.
pub const DEFAULT_TEMPERATURE: f64 = 0.0;
/// Highest temperature accepted by OpenAI-compatible APIs.
pub const MAX_TEMPERATURE: f64 = 2.0;
/// Largest response body read from the endpoint; anything larger is refused.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Name of the structured-output schema (and of the Bedrock tool that carries the plan).
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
pub struct LlmConfig {
    /// Base URL of the API, e.g. `https://api.openai.com/v1`; `/chat/completions` is appended.
    pub base_url: String,
    pub model: String,
    /// Sent as `Authorization: Bearer <key>`; local servers usually need none.
    pub api_key: Option<String>,
    /// Budget for the whole call: connect, answer and body.
    pub timeout_ms: u64,
    pub response_format: ResponseFormat,
    /// Sent as `temperature`; `None` leaves it out (OpenAI's reasoning models reject any
    /// value but their default).
    pub temperature: Option<f64>,
}

impl Default for LlmConfig {
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

impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmConfig")
            .field("base_url", &redact_url(&self.base_url))
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("timeout_ms", &self.timeout_ms)
            .field("response_format", &self.response_format)
            .field("temperature", &self.temperature)
            .finish()
    }
}

impl LlmConfig {
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

/// Why a model could not plan. [`LlmError::is_configuration`] tells a setup problem (which
/// marks the planner degraded) from a passing one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("rate limited: {0}")]
    RateLimited(String),
    #[error("server error: {0}")]
    Server(String),
    #[error("authentication failed (check the API key or credentials): {0}")]
    Auth(String),
    #[error("configuration error (check the model and base URL): {0}")]
    Config(String),
    #[error("the model rejects the temperature (set CRANE_LLM_TEMPERATURE=none for reasoning models, or a value it accepts): {0}")]
    TemperatureRejected(String),
    #[error("unusable answer: {0}")]
    Unparseable(String),
    #[error("the model's plan was rejected: {0}")]
    InvalidPlan(String),
    #[error("the model refused: {0}")]
    Refused(String),
}

impl LlmError {
    /// A wrong key, model or URL: retrying will not help, someone must fix the setup.
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            Self::Auth(_) | Self::Config(_) | Self::TemperatureRejected(_)
        )
    }

    /// The short, stable reason clients see when the pattern planner took over (the
    /// message, which may name internal hosts or echo the model, goes to the logs only).
    pub fn category(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::RateLimited(_) => "rate_limited",
            Self::Connect(_) | Self::Server(_) => "unavailable",
            Self::Auth(_) | Self::Config(_) | Self::TemperatureRejected(_) => "misconfigured",
            Self::Unparseable(_) => "invalid_output",
            Self::InvalidPlan(_) => "invalid_plan",
            Self::Refused(_) => "refused",
        }
    }

    /// Classify a non-success HTTP status; `detail` is the server's message, if any, and
    /// `param` the request field it names (`error.param`).
    pub fn from_status(status: u16, detail: &str, param: Option<&str>) -> Self {
        let msg = if detail.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {detail}")
        };
        // OpenAI's reasoning models: "Unsupported value: 'temperature' does not support 0 with
        // this model" (or "Unsupported parameter: 'temperature' ..."), param "temperature".
        let names_temperature =
            param == Some("temperature") || (param.is_none() && detail.contains("'temperature'"));
        match status {
            400 | 422 if names_temperature => Self::TemperatureRejected(msg),
            401 | 403 => Self::Auth(msg),
            429 => Self::RateLimited(msg),
            408 => Self::Timeout(msg),
            500..=599 => Self::Server(msg),
            _ => Self::Config(msg),
        }
    }
}

impl From<LlmError> for PlanError {
    fn from(e: LlmError) -> Self {
        match e {
            LlmError::InvalidPlan(m) => PlanError::Invalid(m),
            other => PlanError::Unavailable(other.to_string()),
        }
    }
}

/// How the answer must be delivered: as the message content, or as the input of a tool call
/// (Bedrock's Converse API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer<'a> {
    Content,
    Tool(&'a str),
}

/// The system prompt: the task, the plan format, references, the rules and the catalog.
pub fn system_prompt(registry: &Registry, answer: Answer<'_>) -> String {
    let mut catalog = String::new();
    for tool in registry.catalog() {
        catalog.push_str(&format!(
            "- {}: {}\n  input schema: {}\n",
            tool.name, tool.description, tool.input_schema
        ));
    }
    let deliver = match answer {
        Answer::Content => "Answer with the JSON object only: no prose, no code fence.".to_owned(),
        Answer::Tool(name) => format!("Answer by calling the tool `{name}` with the plan."),
    };
    format!(
        "You are the planner of Crane, a runtime that runs tool calls. Turn the user's request \
into a plan: a JSON object {{\"steps\": [{{\"id\", \"tool\", \"input\", \"depends_on\"}}]}}.

Rules:
- Use only the tools listed below, each with an input valid for its input schema. Never \
invent tools or fields. A field the call does not need is null.
- Number the step ids s1, s2, ... sN in the order the request mentions them.
- To use the output of an earlier step, write {{{{<step id>}}}} inside a string value, e.g. \
\"title\": \"{{{{s1}}}}\" or \"expression\": \"{{{{s1}}}} * 2\", and list that step in \
depends_on.
- depends_on lists the steps that must finish first. Independent steps get no edge: they \
run in parallel. \"then\" makes the steps after it wait for the steps before it.
- At most {max} steps. If the request cannot be done with these tools, answer \
{{\"steps\": []}}.
- {deliver}

Tools:
{catalog}",
        max = super::MAX_STEPS,
    )
}

/// A worked example: a request and the plan for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub prompt: &'static str,
    pub plan: Value,
}

/// The few-shot examples whose plans are valid for `registry` (an example using a tool the
/// registry lacks is left out rather than teaching the model a tool it cannot call).
pub fn examples(registry: &Registry) -> Vec<Example> {
    let step = |id: &str, tool: &str, input: Value, deps: &[&str]| json!({"id": id, "tool": tool, "input": input, "depends_on": deps});
    let all = vec![
        Example {
            prompt: "calculate 2+3",
            plan: json!({"steps": [
                step("s1", "calculator", json!({"expression": "2+3"}), &[]),
            ]}),
        },
        Example {
            prompt:
                "calculate 2+3 and calculate 10*5 and list todos then add a todo with the result",
            plan: json!({"steps": [
                step("s1", "calculator", json!({"expression": "2+3"}), &[]),
                step("s2", "calculator", json!({"expression": "10*5"}), &[]),
                step("s3", "todo", json!({"action": "list"}), &[]),
                step(
                    "s4",
                    "todo",
                    json!({"action": "add", "title": "{{s2}}"}),
                    &["s1", "s2", "s3"],
                ),
            ]}),
        },
        Example {
            prompt: "calculate 3*7 then add a todo with the result",
            plan: json!({"steps": [
                step("s1", "calculator", json!({"expression": "3*7"}), &[]),
                step("s2", "todo", json!({"action": "add", "title": "{{s1}}"}), &["s1"]),
            ]}),
        },
        Example {
            prompt: "add a todo to buy milk and list my todos",
            plan: json!({"steps": [
                step("s1", "todo", json!({"action": "add", "title": "buy milk"}), &[]),
                step("s2", "todo", json!({"action": "list"}), &["s1"]),
            ]}),
        },
        Example {
            prompt: "mark todo 3 as done and delete the todo 'buy milk'",
            plan: json!({"steps": [
                step("s1", "todo", json!({"action": "complete", "id": 3}), &[]),
                step("s2", "todo", json!({"action": "delete", "title": "buy milk"}), &["s1"]),
            ]}),
        },
    ];
    all.into_iter()
        .filter(|e| plan_from_value(e.plan.clone(), registry).is_ok())
        .collect()
}

/// The JSON schema of an answer, derived from the registry: one `anyOf` branch per tool
/// binding `tool` to that tool's input schema. `strict` adapts it to OpenAI's strict mode
/// (see the module docs); otherwise the tools' own schemas are used as they are.
pub fn plan_schema(registry: &Registry, strict: bool) -> Value {
    let branches: Vec<Value> = registry
        .catalog()
        .into_iter()
        .map(|tool| {
            let input = if strict {
                strict_schema(&tool.input_schema)
            } else {
                tool.input_schema.clone()
            };
            let required = if strict {
                json!(["id", "tool", "input", "depends_on"])
            } else {
                json!(["id", "tool", "input"])
            };
            json!({
                "type": "object",
                "properties": {
                    "id": {"type": "string", "description": "s1, s2, ... in prompt order"},
                    "tool": {"type": "string", "enum": [tool.name]},
                    "input": input,
                    "depends_on": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "ids of the steps that must finish first"
                    }
                },
                "required": required,
                "additionalProperties": false
            })
        })
        .collect();
    let item = match <[Value; 1]>::try_from(branches) {
        Ok([only]) => only,
        Err(many) => json!({"anyOf": many}),
    };
    json!({
        "type": "object",
        "properties": {"steps": {"type": "array", "items": item}},
        "required": ["steps"],
        "additionalProperties": false
    })
}

/// Adapt a tool's input schema to strict structured output (see the module docs).
pub fn strict_schema(schema: &Value) -> Value {
    let Some(obj) = schema.as_object() else {
        return schema.clone();
    };
    let mut out = Map::new();
    if let Some(d) = obj.get("description") {
        out.insert("description".into(), d.clone());
    }
    match obj.get("type").and_then(Value::as_str) {
        Some("object") => {
            let empty = Map::new();
            let props = obj
                .get("properties")
                .and_then(Value::as_object)
                .unwrap_or(&empty);
            let required: HashSet<&str> = obj
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut strict_props = Map::new();
            for (name, prop) in props {
                let mut s = strict_schema(prop);
                if !required.contains(name.as_str()) {
                    s = nullable(s);
                }
                strict_props.insert(name.clone(), s);
            }
            out.insert("type".into(), json!("object"));
            out.insert(
                "required".into(),
                Value::Array(strict_props.keys().cloned().map(Value::String).collect()),
            );
            out.insert("properties".into(), Value::Object(strict_props));
            out.insert("additionalProperties".into(), Value::Bool(false));
        }
        Some("array") => {
            out.insert("type".into(), json!("array"));
            if let Some(items) = obj.get("items") {
                out.insert("items".into(), strict_schema(items));
            }
        }
        Some(ty) => {
            if let Some(allowed) = obj.get("enum") {
                out.insert("type".into(), json!(ty));
                out.insert("enum".into(), allowed.clone());
            } else if ty == "string" {
                out.insert("type".into(), json!(ty));
            } else {
                // A `{{s1}}` reference is a string; the validator accepts one anywhere. Strict
                // mode documents `anyOf` for unions (a `type` array only for `[T, "null"]`).
                let note = "a string only for a {{<step id>}} reference";
                let described = match obj.get("description").and_then(Value::as_str) {
                    Some(d) => format!("{d} ({note})"),
                    None => note.to_owned(),
                };
                out.insert("description".into(), Value::String(described));
                out.insert("anyOf".into(), json!([{"type": ty}, {"type": "string"}]));
            }
        }
        None => {
            if let Some(allowed) = obj.get("enum") {
                out.insert("enum".into(), allowed.clone());
            }
        }
    }
    Value::Object(out)
}

fn nullable(mut schema: Value) -> Value {
    let Some(obj) = schema.as_object_mut() else {
        return schema;
    };
    if let Some(Value::Array(branches)) = obj.get_mut("anyOf") {
        let null = json!({"type": "null"});
        if !branches.contains(&null) {
            branches.push(null);
        }
        return schema;
    }
    let ty = match obj.remove("type") {
        Some(Value::Array(mut types)) => {
            if !types.contains(&json!("null")) {
                types.push(json!("null"));
            }
            Value::Array(types)
        }
        Some(Value::String(t)) => json!([t, "null"]),
        Some(other) => other,
        None => json!("null"),
    };
    obj.insert("type".into(), ty);
    if let Some(Value::Array(allowed)) = obj.get_mut("enum") {
        if !allowed.contains(&Value::Null) {
            allowed.push(Value::Null);
        }
    }
    schema
}

/// The chat-completions request body for `prompt`.
pub fn build_request_body(config: &LlmConfig, prompt: &str, registry: &Registry) -> Value {
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
    pub content: String,
    pub prompt_tokens: u64,
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

/// Turn the model's message content into a validated plan. A ```json fence or prose around
/// the object is tolerated; everything else must be right.
pub fn plan_from_content(content: &str, registry: &Registry) -> Result<Plan, LlmError> {
    let value = parse_json_content(content)?;
    plan_from_value(value, registry)
}

fn parse_json_content(content: &str) -> Result<Value, LlmError> {
    let trimmed = strip_fence(strip_reasoning(content.trim()).trim());
    if let Ok(v) = serde_json::from_str::<Value>(trimmed) {
        return Ok(v);
    }
    // Some models wrap the object in a sentence; take the outermost braces.
    if let (Some(start), Some(end)) = (trimmed.find('{'), trimmed.rfind('}')) {
        if start < end {
            if let Ok(v) = serde_json::from_str::<Value>(&trimmed[start..=end]) {
                return Ok(v);
            }
        }
    }
    Err(LlmError::Unparseable(format!(
        "the answer is not valid JSON: {}",
        excerpt(content)
    )))
}

/// Reasoning models served locally (DeepSeek-R1, Qwen3 via Ollama or vLLM) write
/// `<think>...</think>` before the answer; some chat templates open the block in the prompt so
/// only `</think>` arrives. Drop the block; a tag later in the text (a todo titled `</think>`)
/// is left alone.
fn strip_reasoning(s: &str) -> &str {
    for (open, close) in [("<think>", "</think>"), ("<thinking>", "</thinking>")] {
        let starts_open = s.starts_with(open);
        let only_close = !s.contains(open) && s.find(close) < s.find('{');
        if starts_open || only_close {
            if let Some(end) = s.find(close) {
                return &s[end + close.len()..];
            }
        }
    }
    s
}

fn strip_fence(s: &str) -> &str {
    let Some(rest) = s.strip_prefix("```") else {
        return s;
    };
    // Drop the info string (```json) up to the end of the first line.
    let rest = rest.split_once('\n').map_or("", |(_, body)| body);
    rest.trim_end().strip_suffix("```").unwrap_or(rest).trim()
}

/// Map an answer object `{"steps": [...]}` to a plan, strip nulls from inputs (strict mode's
/// "absent") and run [`validate`].
pub fn plan_from_value(value: Value, registry: &Registry) -> Result<Plan, LlmError> {
    let Value::Object(mut obj) = value else {
        return Err(LlmError::Unparseable(
            "the answer is not a JSON object with \"steps\"".into(),
        ));
    };
    let Some(Value::Array(steps)) = obj.remove("steps") else {
        return Err(LlmError::Unparseable(
            "the answer has no \"steps\" array".into(),
        ));
    };
    if steps.is_empty() {
        return Err(LlmError::InvalidPlan(
            "the model answered with no steps (it found no way to do this with the tools)".into(),
        ));
    }
    let mut plan = Plan {
        steps: Vec::with_capacity(steps.len()),
    };
    for (i, mut step) in steps.into_iter().enumerate() {
        if let Some(obj) = step.as_object_mut() {
            if let Some(input) = obj.get_mut("input") {
                strip_nulls(input);
            }
            if obj.get("depends_on").is_some_and(Value::is_null) {
                obj.remove("depends_on");
            }
        }
        let parsed = serde_json::from_value(step).map_err(|e| {
            LlmError::Unparseable(format!(
                "step {} is not {{id, tool, input, depends_on}}: {e}",
                i + 1
            ))
        })?;
        plan.steps.push(parsed);
    }
    validate(&mut plan, registry).map_err(|e| match e {
        PlanError::Invalid(m) | PlanError::NotUnderstood(m) | PlanError::Unavailable(m) => {
            LlmError::InvalidPlan(m)
        }
    })?;
    Ok(plan)
}

/// Remove object members whose value is null, recursively.
pub fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// At most 200 characters of `s`, on one line.
pub(crate) fn excerpt(s: &str) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let one_line = one_line.trim();
    if one_line.chars().count() > 200 {
        format!("{}...", one_line.chars().take(200).collect::<String>())
    } else {
        one_line.to_owned()
    }
}

/// Plans with an OpenAI-compatible chat-completions endpoint.
pub struct LlmPlanner {
    config: LlmConfig,
    http: reqwest::Client,
    /// Scrubbed from every message ([`LlmConfig::secrets`]).
    secrets: Vec<String>,
    /// Whether the endpoint has answered yet: the first strict-schema call can be slow.
    answered: AtomicBool,
}

impl std::fmt::Debug for LlmPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmPlanner")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl LlmPlanner {
    pub fn new(config: LlmConfig) -> Result<Self, LlmError> {
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

    pub fn config(&self) -> &LlmConfig {
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

fn elapsed_ms(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[async_trait]
impl ModelPlanner for LlmPlanner {
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
        tracing::info!(
            planner = "llm",
            model = %self.config.model,
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            latency_ms = usage.latency_ms,
            steps = plan.steps.len(),
            "plan generated by the model"
        );
        Ok(Planned {
            plan,
            info: PlannerInfo {
                name: "llm".into(),
                model: Some(self.config.model.clone()),
                fallback_reason: None,
                requested: None,
                usage: Some(usage),
            },
            fallback_detail: None,
        })
    }
}

/// Used alone (without the fallback), failures surface as [`PlanError`]s.
#[async_trait]
impl Planner for LlmPlanner {
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
mod tests {
    use super::*;
    use crate::adapters::local::memory::MemoryTodos;
    use std::sync::Arc;

    fn registry() -> Registry {
        Registry::new(Arc::new(MemoryTodos::default()))
    }

    fn config() -> LlmConfig {
        LlmConfig {
            api_key: Some("sk-secret-123".into()),
            ..LlmConfig::default()
        }
    }

    #[test]
    fn given_a_config_with_a_key_when_debug_printed_then_the_key_is_redacted() {
        let shown = format!("{:?}", config());
        assert!(!shown.contains("sk-secret-123"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
        let planner = LlmPlanner::new(config()).expect("client");
        assert!(!format!("{planner:?}").contains("sk-secret-123"));
    }

    #[test]
    fn given_a_base_url_with_a_trailing_slash_when_endpoint_then_one_slash_joins() {
        let c = LlmConfig {
            base_url: "http://localhost:11434/v1/".into(),
            ..LlmConfig::default()
        };
        assert_eq!(c.endpoint(), "http://localhost:11434/v1/chat/completions");
        let query = LlmConfig {
            base_url: "https://gw.example/v1/?api-version=2024-06-01".into(),
            ..LlmConfig::default()
        };
        assert_eq!(
            query.endpoint(),
            "https://gw.example/v1/chat/completions?api-version=2024-06-01"
        );
    }

    #[test]
    fn given_the_registry_when_the_request_is_built_then_it_carries_model_temperature_and_schema() {
        let body = build_request_body(&config(), "calculate 2+3", &registry());
        assert_eq!(body["model"], "gpt-4o-mini");
        assert_eq!(body["temperature"], 0);
        assert_eq!(body["response_format"]["type"], "json_schema");
        assert_eq!(body["response_format"]["json_schema"]["name"], "plan");
        assert_eq!(body["response_format"]["json_schema"]["strict"], true);
        let messages = body["messages"].as_array().expect("messages");
        assert_eq!(messages[0]["role"], "system");
        let system = messages[0]["content"].as_str().expect("system text");
        for needle in ["calculator", "todo", "{{<step id>}}", "depends_on", "s1"] {
            assert!(system.contains(needle), "system prompt lacks {needle}");
        }
        // Few-shot pairs, then the prompt last.
        assert_eq!(messages[1]["role"], "user");
        assert_eq!(messages[2]["role"], "assistant");
        let last = messages.last().expect("last");
        assert_eq!(last["role"], "user");
        assert_eq!(last["content"], "calculate 2+3");
        assert!(messages.iter().any(|m| m["content"]
            == "calculate 2+3 and calculate 10*5 and list todos then add a todo with the result"));
        assert!(!body.to_string().contains("sk-secret-123"));
    }

    #[test]
    fn given_other_response_formats_when_the_request_is_built_then_the_format_follows() {
        let mut c = config();
        c.response_format = ResponseFormat::JsonObject;
        let body = build_request_body(&c, "x", &registry());
        assert_eq!(body["response_format"], json!({"type": "json_object"}));
        c.response_format = ResponseFormat::None;
        let body = build_request_body(&c, "x", &registry());
        assert!(body.get("response_format").is_none());
        assert_eq!(
            ResponseFormat::parse("JSON_OBJECT"),
            Some(ResponseFormat::JsonObject)
        );
        assert_eq!(ResponseFormat::parse("xml"), None);
    }

    #[test]
    fn given_the_registry_when_the_strict_schema_is_derived_then_tools_bind_their_inputs() {
        let schema = plan_schema(&registry(), true);
        let branches = schema["properties"]["steps"]["items"]["anyOf"]
            .as_array()
            .expect("one branch per tool");
        let tools: Vec<&Value> = branches
            .iter()
            .flat_map(|b| b["properties"]["tool"]["enum"].as_array().expect("enum"))
            .collect();
        assert_eq!(tools, vec!["calculator", "todo"]);
        let todo = &branches[1];
        assert_eq!(
            todo["required"],
            json!(["id", "tool", "input", "depends_on"])
        );
        let input = &todo["properties"]["input"];
        assert_eq!(input["additionalProperties"], false);
        assert_eq!(input["required"], json!(["action", "id", "limit", "title"]));
        // Optional fields are nullable; non-string leaves accept a reference string.
        assert_eq!(
            input["properties"]["title"]["type"],
            json!(["string", "null"])
        );
        // A union of more than `[T, null]` is the documented anyOf, never a type array.
        assert_eq!(
            input["properties"]["id"]["anyOf"],
            json!([{"type": "integer"}, {"type": "string"}, {"type": "null"}])
        );
        assert!(input["properties"]["id"].get("type").is_none());
        assert_eq!(input["properties"]["action"]["type"], "string");
        // Keywords strict mode may refuse are not sent.
        assert!(input["properties"]["title"].get("maxLength").is_none());
        assert!(input["properties"]["id"].get("minimum").is_none());
        // Every object in the schema lists all its properties as required.
        fn check(v: &Value) {
            if let Some(obj) = v.as_object() {
                if let Some(Value::Array(types)) = obj.get("type") {
                    assert!(types.len() == 2 && types[1] == "null", "{v}");
                }
                if let Some(props) = obj.get("properties").and_then(Value::as_object) {
                    let req: Vec<&str> = obj["required"]
                        .as_array()
                        .expect("required")
                        .iter()
                        .filter_map(Value::as_str)
                        .collect();
                    assert!(props.keys().all(|k| req.contains(&k.as_str())), "{v}");
                    assert_eq!(obj["additionalProperties"], false);
                }
                obj.values().for_each(check);
            } else if let Some(items) = v.as_array() {
                items.iter().for_each(check);
            }
        }
        check(&schema);
    }

    #[test]
    fn given_a_one_tool_registry_when_the_schema_is_derived_then_no_any_of_is_needed() {
        let reg = Registry::from_tools(vec![Arc::new(crate::tools::calculator::Calculator)]);
        let schema = plan_schema(&reg, true);
        assert_eq!(
            schema["properties"]["steps"]["items"]["properties"]["tool"]["enum"],
            json!(["calculator"])
        );
        // Examples needing the todo tool are left out.
        let ex = examples(&reg);
        assert!(!ex.is_empty());
        assert!(ex.iter().all(|e| !e.plan.to_string().contains("\"todo\"")));
    }

    #[test]
    fn given_the_standard_registry_when_examples_are_listed_then_all_are_valid_plans() {
        let reg = registry();
        let ex = examples(&reg);
        assert_eq!(ex.len(), 5);
        for e in ex {
            plan_from_value(e.plan.clone(), &reg).expect(e.prompt);
        }
    }

    #[tokio::test]
    async fn given_the_examples_when_the_pattern_planner_plans_them_then_both_agree() {
        // The model is taught the same semantics the offline planner implements.
        let reg = registry();
        for e in examples(&reg) {
            let ours = plan_from_value(e.plan.clone(), &reg).expect(e.prompt);
            let pattern = super::super::PatternPlanner
                .plan(e.prompt, &reg)
                .await
                .expect(e.prompt);
            assert_eq!(ours, pattern.plan, "{}", e.prompt);
        }
    }

    #[test]
    fn given_a_chat_completion_when_parsed_then_content_and_usage_are_read() {
        let body = json!({
            "choices": [{"message": {"role": "assistant", "content": "{\"steps\": []}"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150}
        });
        let answer = parse_chat_response(body.to_string().as_bytes()).expect("parsed");
        assert_eq!(answer.content, "{\"steps\": []}");
        assert_eq!(answer.prompt_tokens, 120);
        assert_eq!(answer.completion_tokens, 30);
    }

    #[test]
    fn given_content_as_text_parts_when_parsed_then_the_texts_are_joined() {
        let body = json!({"choices": [{"message": {"role": "assistant", "content": [
            {"type": "text", "text": "{\"steps\": "},
            {"type": "text", "text": "[]}"}
        ]}, "finish_reason": "stop"}]});
        let answer = parse_chat_response(body.to_string().as_bytes()).expect("parsed");
        assert_eq!(answer.content, "{\"steps\": []}");
        let refused = json!({"choices": [{"message": {"content": [
            {"type": "refusal", "refusal": "I can't help with that"}
        ]}}]});
        assert_eq!(
            parse_chat_response(refused.to_string().as_bytes()),
            Err(LlmError::Refused("I can't help with that".into()))
        );
    }

    #[test]
    fn given_the_answer_as_a_tool_call_when_parsed_then_its_arguments_are_the_content() {
        let plan = r#"{"steps": []}"#;
        for arguments in [json!(plan), json!({"steps": []})] {
            let body = json!({"choices": [{"message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "plan", "arguments": arguments}}]},
                "finish_reason": "tool_calls"}]});
            let answer = parse_chat_response(body.to_string().as_bytes()).expect("parsed");
            assert_eq!(
                serde_json::from_str::<Value>(&answer.content).expect("json"),
                json!({"steps": []})
            );
        }
    }

    #[test]
    fn given_a_content_filter_stop_when_parsed_then_it_is_a_refusal_not_invalid_json() {
        let body = json!({"choices": [{"message": {"content": "{\"ste"}, "finish_reason": "content_filter"}]});
        assert!(matches!(
            parse_chat_response(body.to_string().as_bytes()),
            Err(LlmError::Refused(m)) if m.contains("content_filter")
        ));
    }

    #[test]
    fn given_reasoning_before_the_json_when_parsed_then_the_think_block_is_dropped() {
        let plan = r#"{"steps": [{"id": "s1", "tool": "calculator", "input": {"expression": "2+3"}, "depends_on": []}]}"#;
        for content in [
            format!(
                "<think>\nThe user wants {{a sum}}. I'll use the calculator.\n</think>\n\n{plan}"
            ),
            format!("<think></think>```json\n{plan}\n```"),
            // The chat template opened the block; only its end arrives.
            format!("Okay, one step.\n</think>\n{plan}"),
            format!("<thinking>Plan it.</thinking>{plan}"),
        ] {
            let p = plan_from_content(&content, &registry()).expect(&content);
            assert_eq!(p.steps[0].input, json!({"expression": "2+3"}));
        }
        // A tag inside the answer is data, not reasoning.
        let titled = json!({"steps": [{"id": "s1", "tool": "todo",
            "input": {"action": "add", "title": "</think>"}, "depends_on": []}]})
        .to_string();
        let p = plan_from_content(&titled, &registry()).expect("plan");
        assert_eq!(p.steps[0].input["title"], "</think>");
    }

    #[test]
    fn given_a_temperature_setting_when_the_request_is_built_then_it_is_sent_or_left_out() {
        let mut c = config();
        c.temperature = None;
        assert!(build_request_body(&c, "x", &registry())
            .get("temperature")
            .is_none());
        c.temperature = Some(0.7);
        assert_eq!(build_request_body(&c, "x", &registry())["temperature"], 0.7);
        c.temperature = Some(1.0);
        assert_eq!(build_request_body(&c, "x", &registry())["temperature"], 1);
    }

    #[test]
    fn given_a_reasoning_model_rejecting_temperature_when_classified_then_the_fix_is_named() {
        let unsupported_value = json!({"error": {
            "message": "Unsupported value: 'temperature' does not support 0 with this model. Only the default (1) value is supported.",
            "type": "invalid_request_error", "param": "temperature", "code": "unsupported_value"}});
        let unsupported_parameter = json!({"error": {
            "message": "Unsupported parameter: 'temperature' is not supported with this model.",
            "type": "invalid_request_error", "param": "temperature", "code": "unsupported_parameter"}});
        for body in [unsupported_value, unsupported_parameter] {
            let bytes = body.to_string();
            let err = LlmError::from_status(
                400,
                &error_detail(bytes.as_bytes()),
                error_param(bytes.as_bytes()).as_deref(),
            );
            assert!(matches!(err, LlmError::TemperatureRejected(_)), "{err:?}");
            assert!(
                err.to_string().contains("CRANE_LLM_TEMPERATURE=none"),
                "{err}"
            );
            assert!(err.is_configuration());
            assert_eq!(err.category(), "misconfigured");
        }
        // A gateway that drops `param` but keeps the message.
        assert!(matches!(
            LlmError::from_status(
                400,
                "Unsupported value: 'temperature' does not support 0",
                None
            ),
            LlmError::TemperatureRejected(_)
        ));
        // Another 400 stays a generic configuration error.
        let other = json!({"error": {"message": "Invalid schema for response_format 'plan'", "param": "response_format"}}).to_string();
        assert!(matches!(
            LlmError::from_status(
                400,
                &error_detail(other.as_bytes()),
                error_param(other.as_bytes()).as_deref()
            ),
            LlmError::Config(_)
        ));
    }

    #[tokio::test]
    async fn given_the_first_call_times_out_when_reported_then_the_slow_schema_compile_is_named() {
        let planner = LlmPlanner::new(config()).expect("client");
        let first = planner.first_call_hint(LlmError::Timeout("no answer within 10 ms".into()));
        assert!(first.to_string().contains("first call"), "{first}");
        assert!(!first.is_configuration());
        planner.answered.store(true, Ordering::Relaxed);
        let later = planner.first_call_hint(LlmError::Timeout("no answer within 10 ms".into()));
        assert!(!later.to_string().contains("first call"), "{later}");
    }

    #[test]
    fn given_a_refusal_when_parsed_then_it_is_refused() {
        let body = json!({"choices": [{"message": {"content": null, "refusal": "I can't help with that"}}]});
        assert_eq!(
            parse_chat_response(body.to_string().as_bytes()),
            Err(LlmError::Refused("I can't help with that".into()))
        );
    }

    #[test]
    fn given_each_error_when_categorised_then_clients_get_a_short_stable_reason() {
        let cases = [
            (LlmError::Timeout("x".into()), "timeout"),
            (LlmError::Connect("x".into()), "unavailable"),
            (LlmError::Server("x".into()), "unavailable"),
            (LlmError::RateLimited("x".into()), "rate_limited"),
            (LlmError::Auth("x".into()), "misconfigured"),
            (LlmError::Config("x".into()), "misconfigured"),
            (LlmError::TemperatureRejected("x".into()), "misconfigured"),
            (LlmError::Unparseable("x".into()), "invalid_output"),
            (LlmError::InvalidPlan("x".into()), "invalid_plan"),
            (LlmError::Refused("x".into()), "refused"),
        ];
        for (error, want) in cases {
            assert_eq!(error.category(), want, "{error:?}");
        }
    }

    #[test]
    fn given_urls_with_credentials_when_redacted_then_userinfo_and_secret_params_are_hidden() {
        let cases = [
            (
                "http://user:pa55word@llm.internal:8080/v1",
                "http://[redacted]@llm.internal:8080/v1",
            ),
            (
                "https://gw.example/v1?api-key=abcd1234&api-version=2024-06-01",
                "https://gw.example/v1?api-key=[redacted]&api-version=2024-06-01",
            ),
            (
                "https://u@gw.example/v1?token=t0k3n&sig=s1gnature#frag",
                "https://[redacted]@gw.example/v1?token=[redacted]&sig=[redacted]#frag",
            ),
            ("https://api.openai.com/v1", "https://api.openai.com/v1"),
            ("http://localhost:11434/v1/", "http://localhost:11434/v1/"),
            // An '@' in the path is not userinfo.
            ("https://gw.example/v1/@me", "https://gw.example/v1/@me"),
            ("user:secret@host", "[redacted]@host"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
        let config = LlmConfig {
            base_url: "http://user:pa55word@llm.internal/v1?key=abcd1234".into(),
            ..config()
        };
        let shown = format!("{config:?}");
        for secret in ["pa55word", "abcd1234", "sk-secret-123"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        let planner = LlmPlanner::new(config).expect("client");
        let scrubbed = planner.redact(
            "error sending request for url (http://user:pa55word@llm.internal/v1/chat/completions?key=abcd1234): sk-secret-123",
        );
        for secret in ["pa55word", "abcd1234", "sk-secret-123"] {
            assert!(!scrubbed.contains(secret), "{scrubbed}");
        }
        assert!(scrubbed.contains("llm.internal"), "{scrubbed}");
    }

    #[test]
    fn given_unusable_completions_when_parsed_then_each_is_unparseable() {
        let cases = [
            (json!({"choices": []}).to_string(), "no choices"),
            ("not json".to_owned(), "not a chat completion"),
            (
                json!({"choices": [{"message": {"content": "{"}, "finish_reason": "length"}]})
                    .to_string(),
                "cut off",
            ),
            (
                json!({"choices": [{"message": {"content": "  "}}]}).to_string(),
                "empty",
            ),
        ];
        for (body, want) in cases {
            match parse_chat_response(body.as_bytes()) {
                Err(LlmError::Unparseable(m)) => assert!(m.contains(want), "{m} vs {want}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn given_fenced_or_wrapped_json_when_parsed_then_the_plan_is_read() {
        let plan = r#"{"steps": [{"id": "s1", "tool": "calculator", "input": {"expression": "2+3"}, "depends_on": []}]}"#;
        for content in [
            plan.to_owned(),
            format!("```json\n{plan}\n```"),
            format!("```\n{plan}\n```\n"),
            format!("Here is the plan: {plan} Hope it helps."),
        ] {
            let p = plan_from_content(&content, &registry()).expect(&content);
            assert_eq!(p.steps.len(), 1);
        }
    }

    #[test]
    fn given_strict_mode_nulls_when_mapped_then_they_are_stripped_before_validation() {
        let content = json!({"steps": [
            {"id": "s1", "tool": "calculator", "input": {"expression": "2+3"}, "depends_on": []},
            {"id": "s2", "tool": "todo", "input": {"action": "add", "title": "{{s1}}", "id": null}, "depends_on": null}
        ]})
        .to_string();
        let plan = plan_from_content(&content, &registry()).expect("valid");
        assert_eq!(
            plan.steps[1].input,
            json!({"action": "add", "title": "{{s1}}"})
        );
        assert_eq!(plan.steps[1].depends_on, vec!["s1"]);
    }

    #[test]
    fn given_bad_answers_when_mapped_then_each_is_refused_with_a_reason() {
        let step = |tool: &str, input: Value| json!({"id": "s1", "tool": tool, "input": input});
        let cases = [
            ("[1, 2]".to_owned(), "Unparseable", "not a JSON object"),
            ("{\"plan\": []}".to_owned(), "Unparseable", "no \"steps\""),
            ("oops {".to_owned(), "Unparseable", "not valid JSON"),
            (
                json!({"steps": [{"id": "s1"}]}).to_string(),
                "Unparseable",
                "step 1",
            ),
            (
                json!({"steps": [step("shell", json!({"cmd": "rm -rf /"}))]}).to_string(),
                "InvalidPlan",
                "unknown tool 'shell'",
            ),
            (
                json!({"steps": [step("calculator", json!({"expression": 5}))]}).to_string(),
                "InvalidPlan",
                "must be a string",
            ),
            (
                json!({"steps": [step("todo", json!({"action": "add", "extra": 1, "title": "x"}))]})
                    .to_string(),
                "InvalidPlan",
                "not a known field",
            ),
            (json!({"steps": []}).to_string(), "InvalidPlan", "no steps"),
        ];
        for (content, kind, want) in cases {
            let err = plan_from_content(&content, &registry()).expect_err(&content);
            let (got_kind, msg) = match &err {
                LlmError::Unparseable(m) => ("Unparseable", m),
                LlmError::InvalidPlan(m) => ("InvalidPlan", m),
                other => panic!("{other:?}"),
            };
            assert_eq!(got_kind, kind, "{content}");
            assert!(msg.contains(want), "{msg} should contain {want}");
        }
    }

    #[test]
    fn given_http_statuses_when_classified_then_each_maps_to_its_kind() {
        assert!(matches!(
            LlmError::from_status(401, "", None),
            LlmError::Auth(_)
        ));
        assert!(matches!(
            LlmError::from_status(403, "x", None),
            LlmError::Auth(_)
        ));
        assert!(matches!(
            LlmError::from_status(429, "", None),
            LlmError::RateLimited(_)
        ));
        assert!(matches!(
            LlmError::from_status(500, "", None),
            LlmError::Server(_)
        ));
        assert!(matches!(
            LlmError::from_status(503, "", None),
            LlmError::Server(_)
        ));
        assert!(matches!(
            LlmError::from_status(400, "", None),
            LlmError::Config(_)
        ));
        assert!(matches!(
            LlmError::from_status(404, "", None),
            LlmError::Config(_)
        ));
        assert!(matches!(
            LlmError::from_status(408, "", None),
            LlmError::Timeout(_)
        ));
        assert!(LlmError::from_status(404, "", None).is_configuration());
        assert!(LlmError::from_status(401, "", None).is_configuration());
        assert!(!LlmError::from_status(429, "", None).is_configuration());
        assert_eq!(
            LlmError::from_status(429, "slow down", None).to_string(),
            "rate limited: HTTP 429: slow down"
        );
    }

    #[test]
    fn given_error_bodies_when_read_then_the_message_is_extracted_and_bounded() {
        let openai = json!({"error": {"message": "The model `gpt-9` does not exist", "type": "invalid_request_error"}});
        assert_eq!(
            error_detail(openai.to_string().as_bytes()),
            "The model `gpt-9` does not exist"
        );
        assert_eq!(error_detail(b"Bad Gateway\n"), "Bad Gateway");
        let long = "x".repeat(1000);
        assert_eq!(error_detail(long.as_bytes()).len(), 203);
    }

    #[test]
    fn given_a_server_echoing_the_key_when_redacted_then_the_key_is_gone() {
        let planner = LlmPlanner::new(config()).expect("client");
        assert_eq!(
            planner.redact("Incorrect API key provided: sk-secret-123"),
            "Incorrect API key provided: [redacted]"
        );
    }

    #[test]
    fn given_llm_errors_when_converted_to_plan_errors_then_invalid_plans_stay_invalid() {
        assert_eq!(
            PlanError::from(LlmError::InvalidPlan("cycle".into())),
            PlanError::Invalid("cycle".into())
        );
        assert!(matches!(
            PlanError::from(LlmError::Timeout("x".into())),
            PlanError::Unavailable(_)
        ));
    }
}
