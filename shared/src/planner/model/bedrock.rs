//! The Bedrock planner (feature `aws`): plans with a model on Amazon Bedrock through the
//! Converse API, with IAM credentials instead of an API key.
//!
//! The request carries the same instructions, catalog and examples as the OpenAI-compatible
//! planner ([`super::openai`]) and offers one tool, `emit_plan`, whose input schema is the plan
//! schema derived from the registry: the plan arrives as that tool call's input. A model that
//! answers with text instead is read like a chat answer. Either way the plan passes
//! [`validate`](crate::planner::validate).
//!
//! # Tool choice
//! Forcing a named tool (`toolChoice: {tool}`) works only with Anthropic Claude 3+ and Amazon
//! Nova; Mistral Large accepts `auto` or `any`, and other families (Llama, Cohere, some Nova
//! versions) refuse any forced choice. With one tool, `any` forces the same call, so it is
//! what is sent; a model that rejects tool choice (a `ValidationException` naming
//! `toolChoice`, see [`rejects_tool_choice`]) is asked again at once without it, inside the
//! same time budget, and the planner remembers not to send it to that model again.
//!
//! # Reading the answer
//! The stop reason is checked before any `toolUse` block is trusted: `max_tokens` means the
//! tool input may be cut off, `content_filtered` and `guardrail_intervened` are refusals.
//! `steps` sent as a JSON string (a known Claude habit with nested arrays) is parsed.
//!
//! Request building ([`build_converse_request_parts`]), response mapping
//! ([`plan_from_converse_output`]) and error classification ([`classify_converse_error`],
//! [`classify_sdk_error`], [`rejects_tool_choice`]) are pure, so they are tested without
//! network.
//!
//! The SDK's `Document` type (from `aws-smithy-types`) is not re-exported by
//! `aws-sdk-bedrockruntime` and crane does not depend on `aws-smithy-types` directly, so the
//! JSON conversions are written against the type's `From` impls (to a document) and its
//! accessor methods (from one), with the type inferred at the call site.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_bedrockruntime::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::operation::converse::{ConverseError, ConverseOutput};
use aws_sdk_bedrockruntime::types::{
    AnyToolChoice, ContentBlock, ConversationRole, ConverseOutput as OutputBlock,
    InferenceConfiguration, Message, StopReason, SystemContentBlock, Tool, ToolChoice,
    ToolConfiguration, ToolInputSchema, ToolSpecification, ToolUseBlock,
};
use serde_json::Value;
use tokio::sync::OnceCell;

use super::answer::{plan_from_content, plan_from_value, Answer};
use super::prompt::{examples, plan_schema, system_prompt};
use super::{elapsed_ms, excerpt, planned, LlmError, ModelFailure, ModelPlanner};
use crate::domain::{Plan, Usage};
use crate::planner::{PlanError, Planned, Planner};
use crate::tools::Registry;

/// The tool the model is made to call with the plan as its input.
pub const PLAN_TOOL: &str = "emit_plan";
/// Most tokens the model may answer with (a 50-step plan fits).
pub const MAX_ANSWER_TOKENS: i32 = 4096;

/// Which model, where, and how long to wait.
#[derive(Debug, Clone, PartialEq)]
pub struct BedrockConfig {
    /// A model id or inference profile, e.g. `anthropic.claude-3-haiku-20240307-v1:0`.
    pub model_id: String,
    /// Overrides the region of the default AWS configuration.
    pub region: Option<String>,
    /// Budget of the whole planning call, a retry without `toolChoice` included.
    pub timeout_ms: u64,
}

/// Whether the request asks the model to call a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanToolChoice {
    /// `toolChoice: {any: {}}`: with `emit_plan` the only tool, the model must call it.
    Any,
    /// No `toolChoice`, for models that reject it: the model may call the tool or answer
    /// with text, and both are read.
    Omitted,
}

/// Plans with a Bedrock model through the Converse API.
pub struct BedrockPlanner {
    config: BedrockConfig,
    client: OnceCell<aws_sdk_bedrockruntime::Client>,
    /// The model rejected `toolChoice` once; do not send it again.
    tool_choice_rejected: AtomicBool,
}

impl std::fmt::Debug for BedrockPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BedrockPlanner")
            .field("config", &self.config)
            .field("client_loaded", &self.client.initialized())
            .finish()
    }
}

impl BedrockPlanner {
    /// The client is built on first use from the default AWS configuration (environment,
    /// profile, or the Lambda role), so building the planner needs no I/O.
    pub fn new(config: BedrockConfig) -> Self {
        Self {
            config,
            client: OnceCell::new(),
            tool_choice_rejected: AtomicBool::new(false),
        }
    }

    /// Use a client built by the caller (a shared `SdkConfig`, a test endpoint).
    pub fn with_client(config: BedrockConfig, client: aws_sdk_bedrockruntime::Client) -> Self {
        Self {
            config,
            client: OnceCell::new_with(Some(client)),
            tool_choice_rejected: AtomicBool::new(false),
        }
    }

    /// Which model, where, and how long to wait.
    pub fn config(&self) -> &BedrockConfig {
        &self.config
    }

    async fn client(&self) -> &aws_sdk_bedrockruntime::Client {
        self.client
            .get_or_init(|| async {
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
                if let Some(region) = &self.config.region {
                    loader = loader.region(aws_config::Region::new(region.clone()));
                }
                aws_sdk_bedrockruntime::Client::new(&loader.load().await)
            })
            .await
    }

    /// One Converse call within `budget`.
    async fn call(
        &self,
        parts: ConverseRequestParts,
        budget: Duration,
    ) -> Result<ConverseOutput, CallFailure> {
        let client = self.client().await;
        let send = client
            .converse()
            .model_id(&self.config.model_id)
            .set_system(Some(parts.system))
            .set_messages(Some(parts.messages))
            .inference_config(parts.inference_config)
            .tool_config(parts.tool_config)
            .send();
        match tokio::time::timeout(budget, send).await {
            Err(_) => Err(CallFailure {
                error: LlmError::Timeout(format!("no answer within {} ms", self.config.timeout_ms)),
                tool_choice_rejected: false,
            }),
            Ok(Err(e)) if is_access_denied(&e) => {
                let region = client
                    .config()
                    .region()
                    .map_or_else(|| "the default region".to_owned(), ToString::to_string);
                let detail = excerpt(&format!("{}", DisplayErrorContext(&e)));
                Err(CallFailure {
                    error: access_denied(&self.config.model_id, &region, &detail),
                    tool_choice_rejected: false,
                })
            }
            Ok(result) => result.map_err(|e| CallFailure {
                tool_choice_rejected: e.as_service_error().is_some_and(rejects_tool_choice),
                error: classify_sdk_error(&e),
            }),
        }
    }

    /// Call with `toolChoice: any`, and once more without it if the model rejects it, all
    /// within the configured budget.
    async fn converse(
        &self,
        prompt: &str,
        registry: &Registry,
    ) -> Result<ConverseOutput, LlmError> {
        let start = Instant::now();
        let budget = Duration::from_millis(self.config.timeout_ms);
        let mut choice = if self.tool_choice_rejected.load(Ordering::Relaxed) {
            PlanToolChoice::Omitted
        } else {
            PlanToolChoice::Any
        };
        loop {
            let parts = build_converse_request_parts(prompt, registry, choice)?;
            let remaining = budget.saturating_sub(start.elapsed());
            match self.call(parts, remaining).await {
                Err(failure) if failure.tool_choice_rejected && choice == PlanToolChoice::Any => {
                    tracing::warn!(
                        planner = "bedrock",
                        model = %self.config.model_id,
                        error = %failure.error,
                        "the model rejects toolChoice; asking again without it"
                    );
                    self.tool_choice_rejected.store(true, Ordering::Relaxed);
                    choice = PlanToolChoice::Omitted;
                }
                other => return other.map_err(|f| f.error),
            }
        }
    }
}

/// A failed Converse call, and whether the model refused the request's `toolChoice`.
struct CallFailure {
    error: LlmError,
    tool_choice_rejected: bool,
}

/// Whether a Converse error is the model refusing `toolChoice` ("This model doesn't support
/// the toolConfig.toolChoice.any field"), so the call can be made again without it.
pub fn rejects_tool_choice(err: &ConverseError) -> bool {
    let ConverseError::ValidationException(e) = err else {
        return false;
    };
    let message = e.message().unwrap_or_default().to_ascii_lowercase();
    ["toolchoice", "tool_choice", "tool choice"]
        .iter()
        .any(|needle| message.contains(needle))
}

/// The IAM action Bedrock authorises a Converse call as.
pub const CONVERSE_ACTION: &str = "bedrock:InvokeModel";

/// Whether Bedrock refused the call for lack of permission.
fn is_access_denied<R>(err: &SdkError<ConverseError, R>) -> bool {
    matches!(
        err.as_service_error(),
        Some(ConverseError::AccessDeniedException(_))
    )
}

/// An AccessDenied from Bedrock, named by the action and resource that were denied, so the
/// log line and `GET /health` say what to grant (an inference profile also needs its
/// foundation model in each of the profile's regions). Logged at error level here; as an
/// [`LlmError::Auth`] it marks the planner degraded instead of hiding in the fallback.
pub fn access_denied(model_id: &str, region: &str, detail: &str) -> LlmError {
    tracing::error!(
        planner = "bedrock",
        action = CONVERSE_ACTION,
        model = %model_id,
        region = %region,
        error = %detail,
        "Bedrock denied {CONVERSE_ACTION} on {model_id} in {region}"
    );
    LlmError::Auth(format!(
        "AccessDenied: {CONVERSE_ACTION} on {model_id} in {region} (for an inference profile, \
         also on its foundation model in every region it routes to): {detail}"
    ))
}

/// Everything a Converse request needs besides the model id.
#[derive(Debug, Clone, PartialEq)]
pub struct ConverseRequestParts {
    /// The instructions, the tool catalog and the examples.
    pub system: Vec<SystemContentBlock>,
    /// The user's prompt, as the one message.
    pub messages: Vec<Message>,
    /// Temperature 0 and the answer's token limit.
    pub inference_config: InferenceConfiguration,
    /// The `emit_plan` tool and the tool choice.
    pub tool_config: ToolConfiguration,
}

/// The Converse request for `prompt`: the shared system prompt with the examples inlined,
/// the prompt as the user message, temperature 0, and the `emit_plan` tool whose input
/// schema is the plan schema derived from `registry`, forced with `choice` (see the module
/// docs on tool choice).
pub fn build_converse_request_parts(
    prompt: &str,
    registry: &Registry,
    choice: PlanToolChoice,
) -> Result<ConverseRequestParts, LlmError> {
    let build = |e: aws_sdk_bedrockruntime::error::BuildError| {
        LlmError::Config(format!("cannot build the Converse request: {e}"))
    };
    let mut system = system_prompt(registry, Answer::Tool(PLAN_TOOL));
    let examples = examples(registry);
    if !examples.is_empty() {
        system.push_str("\nExamples (request -> plan):\n");
        for e in examples {
            system.push_str(&format!("- {:?} -> {}\n", e.prompt, e.plan));
        }
    }
    let message = Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text(prompt.to_owned()))
        .build()
        .map_err(build)?;
    let spec = ToolSpecification::builder()
        .name(PLAN_TOOL)
        .description("Submit the plan for the user's request.")
        .input_schema(ToolInputSchema::Json(json_to_document(&plan_schema(
            registry, false,
        ))))
        .build()
        .map_err(build)?;
    let tool_choice = match choice {
        PlanToolChoice::Any => Some(ToolChoice::Any(AnyToolChoice::builder().build())),
        PlanToolChoice::Omitted => None,
    };
    let tool_config = ToolConfiguration::builder()
        .tools(Tool::ToolSpec(spec))
        .set_tool_choice(tool_choice)
        .build()
        .map_err(build)?;
    Ok(ConverseRequestParts {
        system: vec![SystemContentBlock::Text(system)],
        messages: vec![message],
        inference_config: InferenceConfiguration::builder()
            .temperature(0.0)
            .max_tokens(MAX_ANSWER_TOKENS)
            .build(),
        tool_config,
    })
}

/// The tokens a Converse call used: `(input, output)`.
pub fn converse_tokens(output: &ConverseOutput) -> (u64, u64) {
    output.usage().map_or((0, 0), |u| {
        (
            u64::try_from(u.input_tokens()).unwrap_or(0),
            u64::try_from(u.output_tokens()).unwrap_or(0),
        )
    })
}

/// What a stop reason says about the answer before its content is read: `Err` when the
/// content cannot be trusted (cut off, filtered, malformed).
pub fn check_stop_reason(stop: &StopReason) -> Result<(), LlmError> {
    match stop {
        StopReason::MaxTokens | StopReason::ModelContextWindowExceeded => {
            Err(LlmError::Unparseable(format!(
                "the answer was cut off at the token limit (stop reason {})",
                stop.as_str()
            )))
        }
        StopReason::ContentFiltered | StopReason::GuardrailIntervened => Err(LlmError::Refused(
            format!("the answer was withheld (stop reason {})", stop.as_str()),
        )),
        StopReason::MalformedModelOutput | StopReason::MalformedToolUse => {
            Err(LlmError::Unparseable(format!(
                "the model produced a malformed answer (stop reason {})",
                stop.as_str()
            )))
        }
        _ => Ok(()),
    }
}

/// The plan object inside an `emit_plan` input: `steps` sent as a JSON string (or the whole
/// input as one) is parsed first.
pub fn plan_value_from_tool_input(input: Value) -> Value {
    let mut input = match input {
        Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
        other => other,
    };
    if let Some(obj) = input.as_object_mut() {
        if let Some(Value::String(steps)) = obj.get("steps") {
            if let Ok(parsed @ Value::Array(_)) = serde_json::from_str::<Value>(steps) {
                obj.insert("steps".into(), parsed);
            }
        }
    }
    input
}

/// Map a Converse answer to a validated plan: the input of the `emit_plan` call, or else
/// the JSON in the text; neither is read when the stop reason says the answer is unusable.
pub fn plan_from_converse_output(
    output: &ConverseOutput,
    registry: &Registry,
) -> Result<Plan, LlmError> {
    check_stop_reason(output.stop_reason())?;
    let content = match output.output() {
        Some(OutputBlock::Message(message)) => message.content(),
        _ => return Err(LlmError::Unparseable("the answer has no message".into())),
    };
    let tool_use = content.iter().find_map(|block| match block {
        ContentBlock::ToolUse(tool_use) if tool_use.name() == PLAN_TOOL => Some(tool_use),
        _ => None,
    });
    if let Some(tool_use) = tool_use {
        plan_from_value(
            plan_value_from_tool_input(tool_input_json(tool_use)),
            registry,
        )
    } else {
        let text: String = content
            .iter()
            .filter_map(|block| match block {
                ContentBlock::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        if text.trim().is_empty() {
            return Err(LlmError::Unparseable(format!(
                "the model neither called {PLAN_TOOL} nor answered with text (stop reason {})",
                output.stop_reason().as_str()
            )));
        }
        plan_from_content(&text, registry)
    }
}

/// Classify a Converse service error.
pub fn classify_converse_error(err: &ConverseError) -> LlmError {
    let detail = excerpt(&format!("{}", DisplayErrorContext(err)));
    match err {
        ConverseError::ThrottlingException(_) => LlmError::RateLimited(detail),
        ConverseError::ModelTimeoutException(_) => LlmError::Timeout(detail),
        ConverseError::AccessDeniedException(_) => LlmError::Auth(detail),
        ConverseError::ValidationException(_) | ConverseError::ResourceNotFoundException(_) => {
            LlmError::Config(detail)
        }
        ConverseError::ServiceUnavailableException(_)
        | ConverseError::InternalServerException(_)
        | ConverseError::ModelNotReadyException(_)
        | ConverseError::ModelErrorException(_) => LlmError::Server(detail),
        other => match other.code() {
            Some(
                "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "ExpiredTokenException"
                | "MissingAuthenticationTokenException",
            ) => LlmError::Auth(detail),
            Some("ThrottlingException" | "TooManyRequestsException") => {
                LlmError::RateLimited(detail)
            }
            _ => LlmError::Server(detail),
        },
    }
}

/// Classify any failure of a Converse call.
pub fn classify_sdk_error<R>(err: &SdkError<ConverseError, R>) -> LlmError
where
    R: std::fmt::Debug,
{
    let detail = || excerpt(&format!("{}", DisplayErrorContext(err)));
    match err {
        SdkError::ServiceError(service) => classify_converse_error(service.err()),
        SdkError::TimeoutError(_) => LlmError::Timeout(detail()),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => LlmError::Timeout(detail()),
        // Missing credentials or region surface while the request is built or signed.
        SdkError::DispatchFailure(failure) if failure.is_user() => LlmError::Config(detail()),
        SdkError::DispatchFailure(_) => LlmError::Connect(detail()),
        SdkError::ConstructionFailure(_) => LlmError::Config(detail()),
        _ => LlmError::Server(detail()),
    }
}

#[async_trait]
impl ModelPlanner for BedrockPlanner {
    fn name(&self) -> &'static str {
        "bedrock"
    }

    fn model(&self) -> &str {
        &self.config.model_id
    }

    async fn plan_with_model(
        &self,
        prompt: &str,
        registry: &Registry,
    ) -> Result<Planned, ModelFailure> {
        let start = Instant::now();
        let mut usage = Usage::default();
        let result = self.converse(prompt, registry).await;
        usage.latency_ms = elapsed_ms(start);
        let plan = result
            .and_then(|output| {
                (usage.prompt_tokens, usage.completion_tokens) = converse_tokens(&output);
                plan_from_converse_output(&output, registry)
            })
            .map_err(|error| ModelFailure {
                error,
                usage: usage.clone(),
            })?;
        Ok(planned("bedrock", &self.config.model_id, plan, usage))
    }
}

/// Used alone (without the fallback), failures surface as [`PlanError`]s.
#[async_trait]
impl Planner for BedrockPlanner {
    fn name(&self) -> &'static str {
        "bedrock"
    }

    async fn plan(&self, prompt: &str, registry: &Registry) -> Result<Planned, PlanError> {
        self.plan_with_model(prompt, registry)
            .await
            .map_err(|f| f.error.into())
    }
}

/// JSON to the SDK's `Document` (see the module docs for why this is generic).
pub fn json_to_document<D>(value: &Value) -> D
where
    D: From<bool>
        + From<String>
        + From<u64>
        + From<i64>
        + From<f64>
        + From<Vec<D>>
        + From<HashMap<String, D>>
        + From<Option<bool>>,
{
    match value {
        Value::Null => D::from(None::<bool>),
        Value::Bool(b) => D::from(*b),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                D::from(u)
            } else if let Some(i) = n.as_i64() {
                D::from(i)
            } else {
                D::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => D::from(s.clone()),
        Value::Array(items) => D::from(items.iter().map(json_to_document).collect::<Vec<D>>()),
        Value::Object(map) => D::from(
            map.iter()
                .map(|(k, v)| (k.clone(), json_to_document(v)))
                .collect::<HashMap<String, D>>(),
        ),
    }
}

/// One level of a document, as [`document_to_json`] needs to see it.
enum DocView<'a, D> {
    Null,
    Bool(bool),
    Number(Value),
    String(&'a str),
    Array(&'a [D]),
    Object(Vec<(&'a str, &'a D)>),
}

fn document_to_json<D>(doc: &D, view: &dyn Fn(&D) -> DocView<'_, D>) -> Value {
    match view(doc) {
        DocView::Null => Value::Null,
        DocView::Bool(b) => Value::Bool(b),
        DocView::Number(n) => n,
        DocView::String(s) => Value::String(s.to_owned()),
        DocView::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| document_to_json(item, view))
                .collect(),
        ),
        DocView::Object(members) => Value::Object(
            members
                .into_iter()
                .map(|(k, v)| (k.to_owned(), document_to_json(v, view)))
                .collect(),
        ),
    }
}

/// The input of a tool call, as JSON.
pub fn tool_input_json(tool_use: &ToolUseBlock) -> Value {
    document_to_json(tool_use.input(), &|doc| {
        if let Some(map) = doc.as_object() {
            DocView::Object(map.iter().map(|(k, v)| (k.as_str(), v)).collect())
        } else if let Some(items) = doc.as_array() {
            DocView::Array(items.as_slice())
        } else if let Some(s) = doc.as_string() {
            DocView::String(s)
        } else if let Some(b) = doc.as_bool() {
            DocView::Bool(b)
        } else if let Some(n) = doc.as_number() {
            let n = *n;
            DocView::Number(if let Ok(u) = u64::try_from(n) {
                Value::from(u)
            } else if let Ok(i) = i64::try_from(n) {
                Value::from(i)
            } else {
                serde_json::Number::from_f64(n.to_f64_lossy()).map_or(Value::Null, Value::Number)
            })
        } else {
            DocView::Null
        }
    })
}

#[cfg(test)]
mod tests;
