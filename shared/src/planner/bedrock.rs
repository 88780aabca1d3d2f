//! The Bedrock planner (feature `aws`): plans with a model on Amazon Bedrock through the
//! Converse API, with IAM credentials instead of an API key.
//!
//! The request carries the same instructions, catalog and examples as the OpenAI-compatible
//! planner ([`super::llm`]) and offers one tool, `emit_plan`, whose input schema is the plan
//! schema derived from the registry: the plan arrives as that tool call's input. A model that
//! answers with text instead is read like a chat answer. Either way the plan passes
//! [`super::validate`].
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

use super::hybrid::{ModelFailure, ModelPlanner};
use super::llm::{self, excerpt, Answer, LlmError};
use super::{PlanError, Planned, Planner};
use crate::domain::{Plan, PlannerInfo, Usage};
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
    pub system: Vec<SystemContentBlock>,
    pub messages: Vec<Message>,
    pub inference_config: InferenceConfiguration,
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
    let mut system = llm::system_prompt(registry, Answer::Tool(PLAN_TOOL));
    let examples = llm::examples(registry);
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
        .input_schema(ToolInputSchema::Json(json_to_document(&llm::plan_schema(
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
        llm::plan_from_value(
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
        llm::plan_from_content(&text, registry)
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
        tracing::info!(
            planner = "bedrock",
            model = %self.config.model_id,
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            latency_ms = usage.latency_ms,
            steps = plan.steps.len(),
            "plan generated by the model"
        );
        Ok(Planned {
            plan,
            info: PlannerInfo {
                name: "bedrock".into(),
                model: Some(self.config.model_id.clone()),
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

fn elapsed_ms(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
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
mod tests {
    use super::*;
    use crate::adapters::local::memory::MemoryTodos;
    use aws_sdk_bedrockruntime::error::ConnectorError;
    use aws_sdk_bedrockruntime::types::error::{
        AccessDeniedException, InternalServerException, ModelTimeoutException,
        ResourceNotFoundException, ServiceUnavailableException, ThrottlingException,
        ValidationException,
    };
    use aws_sdk_bedrockruntime::types::TokenUsage;
    use serde_json::json;
    use std::sync::Arc;

    fn registry() -> Registry {
        Registry::new(Arc::new(MemoryTodos::default()))
    }

    fn tool_use(input: &Value) -> ToolUseBlock {
        ToolUseBlock::builder()
            .tool_use_id("t1")
            .name(PLAN_TOOL)
            .input(json_to_document(input))
            .build()
            .expect("tool use")
    }

    fn output(content: Vec<ContentBlock>, stop: StopReason) -> ConverseOutput {
        let message = Message::builder()
            .role(ConversationRole::Assistant)
            .set_content(Some(content))
            .build()
            .expect("message");
        ConverseOutput::builder()
            .output(OutputBlock::Message(message))
            .stop_reason(stop)
            .usage(
                TokenUsage::builder()
                    .input_tokens(321)
                    .output_tokens(54)
                    .total_tokens(375)
                    .build()
                    .expect("usage"),
            )
            .build()
            .expect("output")
    }

    fn seed_plan() -> Value {
        json!({"steps": [
            {"id": "s1", "tool": "calculator", "input": {"expression": "2+3"}, "depends_on": []},
            {"id": "s2", "tool": "calculator", "input": {"expression": "10*5"}},
            {"id": "s3", "tool": "todo", "input": {"action": "list"}, "depends_on": []},
            {"id": "s4", "tool": "todo", "input": {"action": "add", "title": "{{s1}} and {{s2}}"}, "depends_on": ["s1", "s2"]}
        ]})
    }

    #[test]
    fn given_json_when_converted_to_a_document_and_back_then_it_round_trips() {
        let value = json!({
            "s": "x", "u": 3, "neg": -4, "f": 1.5, "b": true, "n": null,
            "a": [1, "two", {"three": [false]}]
        });
        assert_eq!(tool_input_json(&tool_use(&value)), value);
    }

    #[test]
    fn given_a_prompt_when_the_request_is_built_then_it_forces_emit_plan_with_the_registry_schema()
    {
        let parts = build_converse_request_parts("calculate 2+3", &registry(), PlanToolChoice::Any)
            .expect("parts");
        let system = parts.system[0].as_text().expect("text");
        for needle in [
            "calculator",
            "todo",
            "{{<step id>}}",
            "emit_plan",
            "Examples",
        ] {
            assert!(system.contains(needle), "system prompt lacks {needle}");
        }
        assert!(system.contains("calculate 2+3 and calculate 10*5"));
        assert_eq!(parts.messages.len(), 1);
        assert_eq!(parts.messages[0].role(), &ConversationRole::User);
        assert_eq!(
            parts.messages[0].content()[0].as_text().expect("text"),
            "calculate 2+3"
        );
        assert_eq!(parts.inference_config.temperature(), Some(0.0));
        // `any`, not `tool`: a named tool is refused by every family but Claude and Nova, and
        // with one tool `any` forces the same call.
        let choice = parts.tool_config.tool_choice().expect("choice");
        assert!(choice.is_any(), "{choice:?}");
        assert_eq!(parts.tool_config.tools().len(), 1);
        let Tool::ToolSpec(spec) = &parts.tool_config.tools()[0] else {
            panic!("a tool spec");
        };
        assert_eq!(spec.name(), PLAN_TOOL);
        let schema = spec
            .input_schema()
            .expect("schema")
            .as_json()
            .expect("json");
        let items = &schema.as_object().expect("object")["properties"]
            .as_object()
            .expect("props")["steps"]
            .as_object()
            .expect("steps")["items"];
        let branches = items.as_object().expect("items")["anyOf"]
            .as_array()
            .expect("anyOf");
        let tools: Vec<&str> = branches
            .iter()
            .filter_map(|b| {
                b.as_object()?["properties"].as_object()?["tool"].as_object()?["enum"].as_array()?
                    [0]
                .as_string()
            })
            .collect();
        assert_eq!(tools, vec!["calculator", "todo"]);
    }

    #[test]
    fn given_a_model_rejecting_tool_choice_when_the_request_is_rebuilt_then_it_has_none() {
        let parts =
            build_converse_request_parts("calculate 2+3", &registry(), PlanToolChoice::Omitted)
                .expect("parts");
        assert_eq!(parts.tool_config.tool_choice(), None);
        assert_eq!(parts.tool_config.tools().len(), 1);
    }

    #[test]
    fn given_converse_errors_when_checked_then_only_a_tool_choice_rejection_retries() {
        let validation = |m: &str| {
            ConverseError::ValidationException(ValidationException::builder().message(m).build())
        };
        // The messages Bedrock sends for Llama, Cohere, Mistral (named tool) and some Nova.
        for m in [
            "This model doesn't support the toolConfig.toolChoice.any field. Remove toolConfig.toolChoice.any and try again.",
            "This model doesn't support the toolConfig.toolChoice.tool field. Remove toolConfig.toolChoice.tool and try again.",
            "The model does not support tool choice.",
        ] {
            assert!(rejects_tool_choice(&validation(m)), "{m}");
        }
        for err in [
            validation("Malformed input request: #: extraneous key [foo] is not permitted"),
            validation("The provided model identifier is invalid."),
            ConverseError::ThrottlingException(
                ThrottlingException::builder().message("toolChoice").build(),
            ),
        ] {
            assert!(!rejects_tool_choice(&err), "{err:?}");
        }
    }

    #[test]
    fn given_steps_sent_as_a_json_string_when_mapped_then_they_are_parsed() {
        let steps_as_string = json!({"steps": seed_plan()["steps"].to_string()});
        let whole_as_string = Value::String(seed_plan().to_string());
        for input in [steps_as_string, whole_as_string] {
            let out = output(
                vec![ContentBlock::ToolUse(tool_use(&input))],
                StopReason::ToolUse,
            );
            let plan = plan_from_converse_output(&out, &registry()).expect("plan");
            assert_eq!(plan.steps.len(), 4);
        }
        // A string that is not a steps array stays an error, with its reason.
        let junk = json!({"steps": "s1 then s2"});
        let out = output(
            vec![ContentBlock::ToolUse(tool_use(&junk))],
            StopReason::ToolUse,
        );
        assert!(matches!(
            plan_from_converse_output(&out, &registry()),
            Err(LlmError::Unparseable(m)) if m.contains("steps")
        ));
    }

    #[test]
    fn given_a_stop_reason_that_spoils_the_answer_when_mapped_then_the_tool_input_is_not_trusted() {
        // A complete-looking toolUse block is still refused when the model hit max_tokens.
        type Check = fn(&LlmError) -> bool;
        let cases: [(StopReason, Check); 5] = [
            (
                StopReason::MaxTokens,
                |e| matches!(e, LlmError::Unparseable(m) if m.contains("cut off")),
            ),
            (
                StopReason::ModelContextWindowExceeded,
                |e| matches!(e, LlmError::Unparseable(m) if m.contains("cut off")),
            ),
            (
                StopReason::ContentFiltered,
                |e| matches!(e, LlmError::Refused(m) if m.contains("content_filtered")),
            ),
            (
                StopReason::GuardrailIntervened,
                |e| matches!(e, LlmError::Refused(m) if m.contains("guardrail_intervened")),
            ),
            (
                StopReason::MalformedToolUse,
                |e| matches!(e, LlmError::Unparseable(m) if m.contains("malformed")),
            ),
        ];
        for (stop, check) in cases {
            let out = output(
                vec![ContentBlock::ToolUse(tool_use(&seed_plan()))],
                stop.clone(),
            );
            let err = plan_from_converse_output(&out, &registry()).expect_err("untrusted");
            assert!(check(&err), "{stop:?} -> {err:?}");
        }
    }

    #[test]
    fn given_a_text_answer_after_reasoning_when_mapped_then_the_json_is_used() {
        let text = format!("<thinking>Four steps.</thinking>\n{}", seed_plan());
        let out = output(vec![ContentBlock::Text(text)], StopReason::EndTurn);
        assert_eq!(
            plan_from_converse_output(&out, &registry())
                .expect("plan")
                .steps
                .len(),
            4
        );
    }

    #[test]
    fn given_an_emit_plan_call_when_mapped_then_the_plan_is_validated_with_usage() {
        let out = output(
            vec![
                ContentBlock::Text("Planning.".into()),
                ContentBlock::ToolUse(tool_use(&seed_plan())),
            ],
            StopReason::ToolUse,
        );
        let plan = plan_from_converse_output(&out, &registry()).expect("plan");
        assert_eq!(converse_tokens(&out), (321, 54));
        assert_eq!(plan.steps.len(), 4);
        // Resource ordering was added by validation: the add waits for the list.
        assert_eq!(plan.steps[3].depends_on, vec!["s1", "s2", "s3"]);
    }

    #[test]
    fn given_a_text_answer_when_mapped_then_the_json_in_it_is_used() {
        let text = format!("```json\n{}\n```", seed_plan());
        let out = output(vec![ContentBlock::Text(text)], StopReason::EndTurn);
        let plan = plan_from_converse_output(&out, &registry()).expect("plan");
        assert_eq!(plan.steps.len(), 4);
    }

    #[test]
    fn given_bad_answers_when_mapped_then_each_is_refused() {
        let unknown = json!({"steps": [{"id": "s1", "tool": "shell", "input": {}}]});
        let bad_input =
            json!({"steps": [{"id": "s1", "tool": "todo", "input": {"action": "fly"}}]});
        let cycle = json!({"steps": [
            {"id": "a", "tool": "calculator", "input": {"expression": "1"}, "depends_on": ["b"]},
            {"id": "b", "tool": "calculator", "input": {"expression": "1"}, "depends_on": ["a"]}
        ]});
        for (value, want) in [
            (unknown, "unknown tool 'shell'"),
            (bad_input, "must be one of"),
            (cycle, "cycle"),
        ] {
            let out = output(
                vec![ContentBlock::ToolUse(tool_use(&value))],
                StopReason::ToolUse,
            );
            match plan_from_converse_output(&out, &registry()) {
                Err(LlmError::InvalidPlan(m)) => assert!(m.contains(want), "{m}"),
                other => panic!("{other:?}"),
            }
        }
        let cut = output(
            vec![ContentBlock::Text("{\"steps\": [".into())],
            StopReason::MaxTokens,
        );
        assert!(matches!(
            plan_from_converse_output(&cut, &registry()),
            Err(LlmError::Unparseable(m)) if m.contains("cut off")
        ));
        let empty = output(vec![], StopReason::EndTurn);
        assert!(matches!(
            plan_from_converse_output(&empty, &registry()),
            Err(LlmError::Unparseable(m)) if m.contains("neither")
        ));
        let no_message = ConverseOutput::builder()
            .stop_reason(StopReason::EndTurn)
            .build()
            .expect("output");
        assert!(matches!(
            plan_from_converse_output(&no_message, &registry()),
            Err(LlmError::Unparseable(_))
        ));
    }

    /// A Bedrock planner whose calls are all denied.
    struct Denied;

    #[async_trait]
    impl ModelPlanner for Denied {
        fn name(&self) -> &'static str {
            "bedrock"
        }

        fn model(&self) -> &str {
            "us.anthropic.claude-3-5-haiku-20241022-v1:0"
        }

        async fn plan_with_model(
            &self,
            _prompt: &str,
            _registry: &Registry,
        ) -> Result<Planned, ModelFailure> {
            Err(ModelFailure {
                error: access_denied(
                    self.model(),
                    "eu-west-1",
                    "User: arn:aws:sts::123456789012:assumed-role/x is not authorized",
                ),
                usage: Usage::default(),
            })
        }
    }

    #[tokio::test]
    async fn given_an_access_denied_when_planning_then_the_fallback_plans_but_the_planner_is_degraded_naming_the_denied_action(
    ) {
        let planner = super::super::hybrid::FallbackPlanner::new(Arc::new(Denied));
        let planned = planner
            .plan("calculate 2+3", &registry())
            .await
            .expect("the pattern planner takes over");
        assert_eq!(planned.info.name, "pattern");
        let degraded = planner
            .degraded()
            .expect("an AccessDenied is a setup problem");
        for needle in [
            "AccessDenied",
            "bedrock:InvokeModel",
            "us.anthropic.claude-3-5-haiku-20241022-v1:0",
            "eu-west-1",
        ] {
            assert!(degraded.contains(needle), "{needle} not in {degraded}");
        }
        assert_eq!(
            planned.info.fallback_reason.as_deref(),
            Some("misconfigured")
        );
        assert!(planned
            .fallback_detail
            .is_some_and(|r| r.contains("bedrock:InvokeModel")));
    }

    #[test]
    fn given_converse_service_errors_when_classified_then_each_maps_to_its_kind() {
        type Check = fn(&LlmError) -> bool;
        let cases: Vec<(ConverseError, Check)> = vec![
            (
                ConverseError::ThrottlingException(
                    ThrottlingException::builder().message("slow").build(),
                ),
                |e| matches!(e, LlmError::RateLimited(m) if m.contains("slow")),
            ),
            (
                ConverseError::ModelTimeoutException(ModelTimeoutException::builder().build()),
                |e| matches!(e, LlmError::Timeout(_)),
            ),
            (
                ConverseError::AccessDeniedException(AccessDeniedException::builder().build()),
                |e| matches!(e, LlmError::Auth(_)),
            ),
            (
                ConverseError::ValidationException(
                    ValidationException::builder()
                        .message("model does not support tool choice")
                        .build(),
                ),
                |e| matches!(e, LlmError::Config(m) if m.contains("tool choice")),
            ),
            (
                ConverseError::ResourceNotFoundException(
                    ResourceNotFoundException::builder().build(),
                ),
                |e| matches!(e, LlmError::Config(_)),
            ),
            (
                ConverseError::ServiceUnavailableException(
                    ServiceUnavailableException::builder().build(),
                ),
                |e| matches!(e, LlmError::Server(_)),
            ),
            (
                ConverseError::InternalServerException(InternalServerException::builder().build()),
                |e| matches!(e, LlmError::Server(_)),
            ),
        ];
        for (err, check) in cases {
            let classified = classify_converse_error(&err);
            assert!(check(&classified), "{err:?} -> {classified:?}");
        }
    }

    #[test]
    fn given_transport_errors_when_classified_then_timeouts_connections_and_setup_differ() {
        type E = SdkError<ConverseError, ()>;
        let timeout: E = SdkError::timeout_error("slow");
        assert!(matches!(classify_sdk_error(&timeout), LlmError::Timeout(_)));
        let io: E = SdkError::dispatch_failure(ConnectorError::io("refused".into()));
        assert!(matches!(classify_sdk_error(&io), LlmError::Connect(_)));
        let user: E = SdkError::dispatch_failure(ConnectorError::user("no region".into()));
        assert!(matches!(classify_sdk_error(&user), LlmError::Config(_)));
        let slow: E = SdkError::dispatch_failure(ConnectorError::timeout("slow".into()));
        assert!(matches!(classify_sdk_error(&slow), LlmError::Timeout(_)));
        let built: E = SdkError::construction_failure("no credentials");
        assert!(classify_sdk_error(&built).is_configuration());
        let service: E = SdkError::service_error(
            ConverseError::ThrottlingException(ThrottlingException::builder().build()),
            (),
        );
        assert!(matches!(
            classify_sdk_error(&service),
            LlmError::RateLimited(_)
        ));
    }

    /// A Converse endpoint on `127.0.0.1:0` answering `replies` (status, error type, body) in
    /// order and recording each request body.
    async fn fake_converse(
        replies: Vec<(u16, Option<&'static str>, Value)>,
    ) -> (String, Arc<std::sync::Mutex<Vec<Value>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = seen.clone();
        tokio::spawn(async move {
            for (status, error_type, body) in replies {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 16384];
                let (head_end, length) = loop {
                    let n = stream.read(&mut chunk).await.expect("read");
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (end + 4, length);
                    }
                };
                while buf.len() < head_end + length {
                    let n = stream.read(&mut chunk).await.expect("read");
                    buf.extend_from_slice(&chunk[..n]);
                }
                recorded
                    .lock()
                    .expect("lock")
                    .push(serde_json::from_slice(&buf[head_end..]).unwrap_or(Value::Null));
                let body = body.to_string();
                let error_header = error_type
                    .map(|t| format!("x-amzn-ErrorType: {t}\r\n"))
                    .unwrap_or_default();
                let response = format!(
                    "HTTP/1.1 {status} Scripted\r\nContent-Type: application/json\r\n{error_header}Content-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(response.as_bytes()).await.expect("write");
            }
        });
        (url, seen)
    }

    fn client_for(url: &str) -> aws_sdk_bedrockruntime::Client {
        use aws_sdk_bedrockruntime::config::{retry::RetryConfig, Credentials, Region};
        let config = aws_sdk_bedrockruntime::Config::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
            .retry_config(RetryConfig::disabled())
            .endpoint_url(url)
            .build();
        aws_sdk_bedrockruntime::Client::from_conf(config)
    }

    #[tokio::test]
    async fn given_a_model_that_rejects_tool_choice_when_planning_then_it_asks_again_without_it() {
        // What Bedrock answers Llama or Cohere when toolChoice is set.
        let rejected = (
            400,
            Some("ValidationException"),
            json!({"message": "This model doesn't support the toolConfig.toolChoice.any field. Remove toolConfig.toolChoice.any and try again."}),
        );
        // Without it, the model calls the tool anyway (Llama sends `steps` as a string).
        let answered = (
            200,
            None,
            json!({
                "output": {"message": {"role": "assistant", "content": [
                    {"toolUse": {"toolUseId": "tooluse_1", "name": PLAN_TOOL,
                        "input": {"steps": seed_plan()["steps"].to_string()}}}
                ]}},
                "stopReason": "tool_use",
                "usage": {"inputTokens": 900, "outputTokens": 120, "totalTokens": 1020},
                "metrics": {"latencyMs": 850}
            }),
        );
        let (url, seen) = fake_converse(vec![rejected, answered.clone(), answered]).await;
        let planner = BedrockPlanner::with_client(
            BedrockConfig {
                model_id: "meta.llama3-1-70b-instruct-v1:0".into(),
                region: None,
                timeout_ms: 5_000,
            },
            client_for(&url),
        );

        let planned = planner
            .plan_with_model("calculate 2+3", &registry())
            .await
            .expect("planned after the retry");

        assert_eq!(planned.info.name, "bedrock");
        assert_eq!(planned.plan.steps.len(), 4);
        let usage = planned.info.usage.expect("usage");
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (900, 120));
        {
            let requests = seen.lock().expect("lock");
            assert_eq!(requests.len(), 2);
            assert_eq!(requests[0]["toolConfig"]["toolChoice"], json!({"any": {}}));
            assert!(requests[1]["toolConfig"].get("toolChoice").is_none());
            assert_eq!(
                requests[1]["toolConfig"]["tools"][0]["toolSpec"]["name"],
                PLAN_TOOL
            );
        }
        // The next plan goes straight to the request the model accepts.
        planner
            .plan_with_model("calculate 2+3", &registry())
            .await
            .expect("planned");
        let requests = seen.lock().expect("lock");
        assert_eq!(requests.len(), 3);
        assert!(requests[2]["toolConfig"].get("toolChoice").is_none());
    }

    #[tokio::test]
    async fn given_a_claude_answer_cut_at_max_tokens_when_planning_then_it_is_not_trusted() {
        let cut = (
            200,
            None,
            json!({
                "output": {"message": {"role": "assistant", "content": [
                    {"toolUse": {"toolUseId": "tooluse_1", "name": PLAN_TOOL, "input": seed_plan()}}
                ]}},
                "stopReason": "max_tokens",
                "usage": {"inputTokens": 900, "outputTokens": 4096, "totalTokens": 4996},
                "metrics": {"latencyMs": 9000}
            }),
        );
        let (url, seen) = fake_converse(vec![cut]).await;
        let planner = BedrockPlanner::with_client(
            BedrockConfig {
                model_id: "us.anthropic.claude-3-5-haiku-20241022-v1:0".into(),
                region: None,
                timeout_ms: 5_000,
            },
            client_for(&url),
        );
        let failure = planner
            .plan_with_model("calculate 2+3", &registry())
            .await
            .expect_err("cut off");
        assert_eq!(failure.error.category(), "invalid_output");
        assert!(
            failure.error.to_string().contains("max_tokens"),
            "{failure:?}"
        );
        assert_eq!(failure.usage.completion_tokens, 4096);
        assert_eq!(seen.lock().expect("lock").len(), 1);
    }

    #[test]
    fn given_a_config_when_the_planner_is_built_then_no_client_is_loaded_yet() {
        let p = BedrockPlanner::new(BedrockConfig {
            model_id: "anthropic.claude-3-haiku-20240307-v1:0".into(),
            region: Some("us-east-1".into()),
            timeout_ms: 1000,
        });
        assert_eq!(ModelPlanner::name(&p), "bedrock");
        assert_eq!(p.model(), "anthropic.claude-3-haiku-20240307-v1:0");
        assert!(format!("{p:?}").contains("client_loaded: false"));
    }
}
