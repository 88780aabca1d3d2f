//! A small JSON Schema validator for the subset the tool catalog uses: `type`, `properties`,
//! `required`, `additionalProperties: false`, `enum`, `minLength`, `maxLength`, `minimum`,
//! `maximum`, `items`, `maxItems`. Tool inputs are tiny and their schemas are ours, so a full
//! validator would be weight without benefit; this one is exact for what it supports and
//! rejects schemas using anything else, so a schema can never silently validate less.

use crate::domain::refs;
use serde_json::{Map, Value};

const KNOWN: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "enum",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "items",
    "maxItems",
    "description",
    "title",
    "examples",
];

/// Validate `value` against `schema`. A string that is exactly one step reference
/// (`{{s1}}`) is accepted in place of any value: it is resolved, and the tool checks the
/// result, at run time.
pub fn validate(schema: &Value, value: &Value) -> Result<(), String> {
    check(schema, value, "input")
}

fn check(schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    let Some(schema) = schema.as_object() else {
        return Err(format!("schema for {path} is not an object"));
    };
    if let Some(unknown) = schema.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(format!("schema keyword '{unknown}' is not supported"));
    }
    if value.as_str().is_some_and(refs::is_whole_reference) {
        return Ok(());
    }
    if let Some(ty) = schema.get("type").and_then(Value::as_str) {
        if !type_matches(ty, value) {
            return Err(format!("{path} must be {}", article(ty)));
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            let names: Vec<String> = allowed.iter().map(Value::to_string).collect();
            return Err(format!("{path} must be one of {}", names.join(", ")));
        }
    }
    match value {
        Value::String(s) => check_string(schema, s, path)?,
        Value::Number(n) => check_number(schema, n.as_f64().unwrap_or(f64::NAN), path)?,
        Value::Object(obj) => check_object(schema, obj, path)?,
        Value::Array(items) => {
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
                if items.len() as u64 > max {
                    return Err(format!("{path} must have at most {max} items"));
                }
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"))?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn check_string(schema: &Map<String, Value>, s: &str, path: &str) -> Result<(), String> {
    let len = s.chars().count() as u64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
        if len < min {
            return Err(if min == 1 {
                format!("{path} must not be empty")
            } else {
                format!("{path} must be at least {min} characters")
            });
        }
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
        if len > max {
            return Err(format!("{path} must be at most {max} characters"));
        }
    }
    Ok(())
}

fn check_number(schema: &Map<String, Value>, n: f64, path: &str) -> Result<(), String> {
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        if n < min {
            return Err(format!("{path} must be at least {min}"));
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        if n > max {
            return Err(format!("{path} must be at most {max}"));
        }
    }
    Ok(())
}

fn check_object(
    schema: &Map<String, Value>,
    obj: &Map<String, Value>,
    path: &str,
) -> Result<(), String> {
    let props = schema.get("properties").and_then(Value::as_object);
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if !obj.contains_key(name) {
                return Err(format!("{path}.{name} is required"));
            }
        }
    }
    for (name, v) in obj {
        match props.and_then(|p| p.get(name)) {
            Some(prop_schema) => check(prop_schema, v, &format!("{path}.{name}"))?,
            None => {
                if schema.get("additionalProperties") == Some(&Value::Bool(false)) {
                    return Err(format!("{path}.{name} is not a known field"));
                }
            }
        }
    }
    Ok(())
}

fn type_matches(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "number" => v.is_number(),
        "integer" => {
            v.is_i64()
                || v.is_u64()
                || v.as_f64()
                    .is_some_and(|f| f.fract() == 0.0 && f.is_finite())
        }
        _ => false,
    }
}

fn article(ty: &str) -> String {
    match ty {
        "object" | "array" | "integer" => format!("an {ty}"),
        _ => format!("a {ty}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "action": {"type": "string", "enum": ["add", "list"]},
                "title": {"type": "string", "minLength": 1, "maxLength": 5},
                "id": {"type": "integer", "minimum": 1},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2}
            },
            "required": ["action"],
            "additionalProperties": false
        })
    }

    #[test]
    fn given_a_valid_input_when_validated_then_ok() {
        assert_eq!(
            validate(
                &schema(),
                &json!({"action": "add", "title": "milk", "id": 3})
            ),
            Ok(())
        );
        assert_eq!(
            validate(&schema(), &json!({"action": "list", "tags": ["a"]})),
            Ok(())
        );
    }

    #[test]
    fn given_invalid_inputs_when_validated_then_each_error_names_the_field() {
        let cases = [
            (json!([]), "input must be an object"),
            (json!({}), "input.action is required"),
            (
                json!({"action": "fly"}),
                "input.action must be one of \"add\", \"list\"",
            ),
            (json!({"action": 1}), "input.action must be a string"),
            (
                json!({"action": "add", "title": ""}),
                "input.title must not be empty",
            ),
            (
                json!({"action": "add", "title": "toolong"}),
                "input.title must be at most 5 characters",
            ),
            (
                json!({"action": "add", "id": 0}),
                "input.id must be at least 1",
            ),
            (
                json!({"action": "add", "id": 1.5}),
                "input.id must be an integer",
            ),
            (
                json!({"action": "add", "extra": 1}),
                "input.extra is not a known field",
            ),
            (
                json!({"action": "add", "tags": ["a", "b", "c"]}),
                "input.tags must have at most 2 items",
            ),
            (
                json!({"action": "add", "tags": [1]}),
                "input.tags[0] must be a string",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                validate(&schema(), &input),
                Err(want.to_string()),
                "{input}"
            );
        }
    }

    #[test]
    fn given_a_whole_reference_when_validated_then_any_field_accepts_it() {
        assert_eq!(
            validate(&schema(), &json!({"action": "add", "id": "{{s1}}"})),
            Ok(())
        );
        assert!(validate(&schema(), &json!({"action": "add", "id": "x{{s1}}"})).is_err());
    }

    #[test]
    fn given_an_unsupported_keyword_when_validated_then_the_schema_is_refused() {
        let s = json!({"type": "object", "oneOf": []});
        assert_eq!(
            validate(&s, &json!({})),
            Err("schema keyword 'oneOf' is not supported".to_string())
        );
    }
}
