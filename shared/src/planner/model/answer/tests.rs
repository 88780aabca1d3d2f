use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::adapters::local::memory::MemoryTodos;

fn registry() -> Registry {
    Registry::new(Arc::new(MemoryTodos::default()))
}

#[test]
fn given_reasoning_before_the_json_when_parsed_then_the_think_block_is_dropped() {
    let plan = r#"{"steps": [{"id": "s1", "tool": "calculator", "input": {"expression": "2+3"}, "depends_on": []}]}"#;
    for content in [
        format!("<think>\nThe user wants {{a sum}}. I'll use the calculator.\n</think>\n\n{plan}"),
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
