//! The model planners: a language model turns the prompt into a plan.
//!
//! Two backends share everything but the transport: [`openai`] talks to any
//! OpenAI-compatible chat-completions endpoint, `bedrock` (feature `aws`) to a model on
//! Amazon Bedrock through the Converse API. Both send the instructions of [`prompt`] and read
//! the answer with [`answer`], so a model's plan passes [`validate`](crate::planner::validate)
//! like every plan. Both fail with a typed [`LlmError`] through [`ModelPlanner`], so the
//! [`FallbackPlanner`](crate::planner::fallback::FallbackPlanner) can tell a passing failure
//! from a setup problem.
//!
//! Dependencies point one way: `openai` and `bedrock` use `prompt` and `answer`, `prompt`
//! uses `answer` (to keep only valid examples), and all of them use this module's items.

pub mod answer;
#[cfg(feature = "aws")]
pub mod bedrock;
pub mod openai;
pub mod prompt;

use std::time::Instant;

use async_trait::async_trait;

use super::{PlanError, Planned};
use crate::domain::{Plan, PlannerInfo, Usage};
use crate::tools::Registry;

/// Why a model did not plan, and what the attempt cost (latency always; tokens when the
/// model answered).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFailure {
    /// What went wrong.
    pub error: LlmError,
    /// What the attempt cost: latency always, tokens when the model answered.
    pub usage: Usage,
}

/// A planner backed by a model (the OpenAI-compatible one, Bedrock): it fails with a typed
/// [`LlmError`] so the fallback can tell a passing failure from a setup problem.
#[async_trait]
pub trait ModelPlanner: Send + Sync {
    /// `llm` or `bedrock`.
    fn name(&self) -> &'static str;

    /// The model asked.
    fn model(&self) -> &str;

    /// Plan `prompt`; a returned plan is already validated.
    async fn plan_with_model(
        &self,
        prompt: &str,
        registry: &Registry,
    ) -> Result<Planned, ModelFailure>;
}

/// Why a model could not plan. [`LlmError::is_configuration`] tells a setup problem (which
/// marks the planner degraded) from a passing one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    /// No answer within the budget.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The endpoint could not be reached.
    #[error("could not connect: {0}")]
    Connect(String),
    /// The provider throttled the call (HTTP 429, a Bedrock throttling error).
    #[error("rate limited: {0}")]
    RateLimited(String),
    /// The provider failed (HTTP 5xx, a Bedrock service error).
    #[error("server error: {0}")]
    Server(String),
    /// The key or the credentials were refused.
    #[error("authentication failed (check the API key or credentials): {0}")]
    Auth(String),
    /// The request was refused as set up: a wrong model, URL or parameter.
    #[error("configuration error (check the model and base URL): {0}")]
    Config(String),
    /// The model refuses the configured temperature (OpenAI's reasoning models).
    #[error("the model rejects the temperature (set CRANE_LLM_TEMPERATURE=none for reasoning models, or a value it accepts): {0}")]
    TemperatureRejected(String),
    /// The answer could not be read as a plan.
    #[error("unusable answer: {0}")]
    Unparseable(String),
    /// The answer was a plan that fails validation, or had no steps.
    #[error("the model's plan was rejected: {0}")]
    InvalidPlan(String),
    /// The model, or the provider's content filter, refused to answer.
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

/// At most 200 characters of `s`, on one line.
fn excerpt(s: &str) -> String {
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

/// Milliseconds since `start`, saturating.
fn elapsed_ms(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;

/// A model's plan as planned by `planner` (`llm`, `bedrock`) with `model`, logged with what
/// it cost.
pub(super) fn planned(planner: &'static str, model: &str, plan: Plan, usage: Usage) -> Planned {
    tracing::info!(
        planner,
        model,
        prompt_tokens = usage.prompt_tokens,
        completion_tokens = usage.completion_tokens,
        latency_ms = usage.latency_ms,
        steps = plan.steps.len(),
        "plan generated by the model"
    );
    Planned {
        plan,
        info: PlannerInfo {
            name: planner.into(),
            model: Some(model.to_owned()),
            fallback_reason: None,
            requested: None,
            usage: Some(usage),
        },
        fallback_detail: None,
    }
}
