//! References between steps: a string in a step's input may name the output of a step it
//! depends on as `{{<step id>}}`. A string that is exactly one reference takes the output's
//! value (as text where the tool's schema expects a string); a reference inside a longer
//! string is rendered as text, numbers as a person writes them (21, not 21.0).

use serde_json::{Map, Value};

use super::number::format_number;

/// Longest step id a reference may name.
const MAX_ID_LEN: usize = 64;

/// The step ids referenced anywhere in `value`, in order of appearance, without repeats.
pub fn references(value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    collect(value, &mut out);
    out
}

fn collect(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => {
            for (_, id) in scan(s) {
                if !out.iter().any(|o| o == id) {
                    out.push(id.to_owned());
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect(v, out)),
        _ => {}
    }
}

/// Whether `s` is exactly one reference, like `{{s1}}`.
pub fn is_whole_reference(s: &str) -> bool {
    whole_reference(s).is_some()
}

fn whole_reference(s: &str) -> Option<&str> {
    let refs = scan(s);
    match refs.as_slice() {
        [(range, id)] if range.start == 0 && range.end == s.len() => Some(id),
        _ => None,
    }
}

/// The reference a step id makes: `{{id}}`.
pub fn reference_to(step_id: &str) -> String {
    format!("{{{{{step_id}}}}}")
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Every `{{id}}` in `s` with its byte range.
fn scan(s: &str) -> Vec<(std::ops::Range<usize>, &str)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(open) = s[from..].find("{{").map(|i| i + from) {
        let Some(close) = s[open + 2..].find("}}").map(|i| i + open + 2) else {
            break;
        };
        let id = s[open + 2..close].trim();
        if valid_id(id) {
            out.push((open..close + 2, id));
            from = close + 2;
        } else {
            from = open + 2;
        }
    }
    out
}

/// Render an output as text, as a person would write it.
pub fn render(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        Value::Number(n) => n
            .as_f64()
            .map(format_number)
            .unwrap_or_else(|| n.to_string()),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        Value::Object(map) => match map.get("title").and_then(Value::as_str) {
            Some(title) => title.to_owned(),
            None => value.to_string(),
        },
        Value::Array(_) => value.to_string(),
    }
}

/// Replace every reference in `input` with the output it names. `schema` (the tool's input
/// schema) says where a string is expected, so a whole reference there becomes text.
pub fn substitute<'a>(
    input: &Value,
    schema: &Value,
    output_of: &impl Fn(&str) -> Option<&'a Value>,
) -> Result<Value, String> {
    match input {
        Value::String(s) => substitute_str(s, schema, output_of),
        Value::Array(items) => {
            let item_schema = schema.get("items").unwrap_or(&Value::Null);
            items
                .iter()
                .map(|v| substitute(v, item_schema, output_of))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array)
        }
        Value::Object(map) => {
            let props = schema.get("properties");
            let mut out = Map::with_capacity(map.len());
            for (k, v) in map {
                let prop_schema = props.and_then(|p| p.get(k)).unwrap_or(&Value::Null);
                out.insert(k.clone(), substitute(v, prop_schema, output_of)?);
            }
            Ok(Value::Object(out))
        }
        other => Ok(other.clone()),
    }
}

fn substitute_str<'a>(
    s: &str,
    schema: &Value,
    output_of: &impl Fn(&str) -> Option<&'a Value>,
) -> Result<Value, String> {
    let lookup =
        |id: &str| output_of(id).ok_or_else(|| format!("step {id} has no output to substitute"));
    let wants_string = schema.get("type").and_then(Value::as_str) == Some("string");
    if let Some(id) = whole_reference(s) {
        let value = lookup(id)?;
        return Ok(if wants_string {
            Value::String(render(value))
        } else {
            value.clone()
        });
    }
    let refs = scan(s);
    if refs.is_empty() {
        return Ok(Value::String(s.to_owned()));
    }
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for (range, id) in refs {
        out.push_str(&s[last..range.start]);
        out.push_str(&render(lookup(id)?));
        last = range.end;
    }
    out.push_str(&s[last..]);
    Ok(Value::String(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn given_strings_when_scanned_then_only_valid_references_are_found() {
        assert_eq!(
            references(&json!({"a": "{{s1}} and {{ s2 }}", "b": ["{{s1}}"]})),
            vec!["s1", "s2"]
        );
        assert!(references(&json!("{{}} {{not valid}} {{s1")).is_empty());
        assert!(is_whole_reference("{{s3}}"));
        assert!(!is_whole_reference("{{s3}}!"));
        assert_eq!(reference_to("s4"), "{{s4}}");
    }

    #[test]
    fn given_outputs_when_substituted_then_numbers_render_as_people_write_them() {
        let outputs = [
            ("s1".to_string(), json!(21.0)),
            ("s2".to_string(), json!({"id": 1, "title": "milk"})),
        ];
        let get = |id: &str| outputs.iter().find(|(k, _)| k == id).map(|(_, v)| v);
        let schema =
            json!({"properties": {"title": {"type": "string"}, "id": {"type": "integer"}}});
        let out =
            substitute(&json!({"title": "{{s1}}", "id": "{{s1}}"}), &schema, &get).expect("ok");
        assert_eq!(out, json!({"title": "21", "id": 21.0}));
        let out =
            substitute(&json!({"title": "total {{s1}} for {{s2}}"}), &schema, &get).expect("ok");
        assert_eq!(out, json!({"title": "total 21 for milk"}));
    }

    #[test]
    fn given_a_missing_output_when_substituted_then_error_names_the_step() {
        let get = |_: &str| None;
        assert_eq!(
            substitute(&json!("{{s9}}"), &Value::Null, &get),
            Err("step s9 has no output to substitute".to_string())
        );
    }
}
