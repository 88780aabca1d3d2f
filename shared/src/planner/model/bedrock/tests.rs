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
fn given_a_prompt_when_the_request_is_built_then_it_forces_emit_plan_with_the_registry_schema() {
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
            b.as_object()?["properties"].as_object()?["tool"].as_object()?["enum"].as_array()?[0]
                .as_string()
        })
        .collect();
    assert_eq!(tools, vec!["calculator", "todo"]);
}

#[test]
fn given_a_model_rejecting_tool_choice_when_the_request_is_rebuilt_then_it_has_none() {
    let parts = build_converse_request_parts("calculate 2+3", &registry(), PlanToolChoice::Omitted)
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
    let bad_input = json!({"steps": [{"id": "s1", "tool": "todo", "input": {"action": "fly"}}]});
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
    let planner = crate::planner::fallback::FallbackPlanner::new(Arc::new(Denied));
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
            ConverseError::ResourceNotFoundException(ResourceNotFoundException::builder().build()),
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
