//! Reading a model's answer. The answer is untrusted: the text or tool input a model returned
//! becomes a [`Plan`] only after it is parsed, cleaned (a code fence, a `<think>` block, prose
//! around the object, strict mode's nulls) and passed through [`validate`] like every plan, so
//! nothing the model says can name an unregistered tool or an input its schema rejects.

use serde_json::Value;

use super::{excerpt, LlmError};
use crate::domain::Plan;
use crate::planner::{validate, PlanError};
use crate::tools::Registry;

/// How the answer must be delivered: as the message content, or as the input of a tool call
/// (Bedrock's Converse API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer<'a> {
    /// As the message content: the JSON object alone (the OpenAI-compatible planner).
    Content,
    /// As the input of a call of the named tool (Bedrock's `emit_plan`).
    Tool(&'a str),
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

#[cfg(test)]
mod tests;
