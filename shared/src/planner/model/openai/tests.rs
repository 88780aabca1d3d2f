use std::sync::Arc;

use super::*;
use crate::adapters::local::memory::MemoryTodos;

fn registry() -> Registry {
    Registry::new(Arc::new(MemoryTodos::default()))
}

fn config() -> OpenAiConfig {
    OpenAiConfig {
        api_key: Some("sk-secret-123".into()),
        ..OpenAiConfig::default()
    }
}

#[test]
fn given_a_config_with_a_key_when_debug_printed_then_the_key_is_redacted() {
    let shown = format!("{:?}", config());
    assert!(!shown.contains("sk-secret-123"), "{shown}");
    assert!(shown.contains("[redacted]"), "{shown}");
    let planner = OpenAiPlanner::new(config()).expect("client");
    assert!(!format!("{planner:?}").contains("sk-secret-123"));
}

#[test]
fn given_a_base_url_with_a_trailing_slash_when_endpoint_then_one_slash_joins() {
    let c = OpenAiConfig {
        base_url: "http://localhost:11434/v1/".into(),
        ..OpenAiConfig::default()
    };
    assert_eq!(c.endpoint(), "http://localhost:11434/v1/chat/completions");
    let query = OpenAiConfig {
        base_url: "https://gw.example/v1/?api-version=2024-06-01".into(),
        ..OpenAiConfig::default()
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
    let body =
        json!({"choices": [{"message": {"content": "{\"ste"}, "finish_reason": "content_filter"}]});
    assert!(matches!(
        parse_chat_response(body.to_string().as_bytes()),
        Err(LlmError::Refused(m)) if m.contains("content_filter")
    ));
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
    let planner = OpenAiPlanner::new(config()).expect("client");
    let first = planner.first_call_hint(LlmError::Timeout("no answer within 10 ms".into()));
    assert!(first.to_string().contains("first call"), "{first}");
    assert!(!first.is_configuration());
    planner.answered.store(true, Ordering::Relaxed);
    let later = planner.first_call_hint(LlmError::Timeout("no answer within 10 ms".into()));
    assert!(!later.to_string().contains("first call"), "{later}");
}

#[test]
fn given_a_refusal_when_parsed_then_it_is_refused() {
    let body =
        json!({"choices": [{"message": {"content": null, "refusal": "I can't help with that"}}]});
    assert_eq!(
        parse_chat_response(body.to_string().as_bytes()),
        Err(LlmError::Refused("I can't help with that".into()))
    );
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
    let config = OpenAiConfig {
        base_url: "http://user:pa55word@llm.internal/v1?key=abcd1234".into(),
        ..config()
    };
    let shown = format!("{config:?}");
    for secret in ["pa55word", "abcd1234", "sk-secret-123"] {
        assert!(!shown.contains(secret), "{shown}");
    }
    let planner = OpenAiPlanner::new(config).expect("client");
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
    let planner = OpenAiPlanner::new(config()).expect("client");
    assert_eq!(
        planner.redact("Incorrect API key provided: sk-secret-123"),
        "Incorrect API key provided: [redacted]"
    );
}
