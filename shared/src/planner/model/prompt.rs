//! What the model is told: the system prompt (the task, the plan format, the reference
//! syntax, the rules and the tool catalog), a few worked examples, and the JSON schema of a
//! plan derived from the registry.
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
//!   request; [`validate`](crate::planner::validate) still enforces them on the answer.
//!
//! The union of the branches' `tool` enums is exactly the registered tool names.

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use super::answer::{plan_from_value, Answer};
use crate::planner::MAX_STEPS;
use crate::tools::Registry;

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
        max = MAX_STEPS,
    )
}

/// A worked example: a request and the plan for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The request.
    pub prompt: &'static str,
    /// The plan for it, as the model should answer.
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

#[cfg(test)]
mod tests;
