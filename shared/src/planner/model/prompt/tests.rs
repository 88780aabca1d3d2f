use std::sync::Arc;

use super::*;
use crate::adapters::local::memory::MemoryTodos;
use crate::planner::{PatternPlanner, Planner};

fn registry() -> Registry {
    Registry::new(Arc::new(MemoryTodos::default()))
}

#[test]
fn given_the_registry_when_the_strict_schema_is_derived_then_tools_bind_their_inputs() {
    let schema = plan_schema(&registry(), true);
    let branches = schema["properties"]["steps"]["items"]["anyOf"]
        .as_array()
        .expect("one branch per tool");
    let tools: Vec<&Value> = branches
        .iter()
        .flat_map(|b| b["properties"]["tool"]["enum"].as_array().expect("enum"))
        .collect();
    assert_eq!(tools, vec!["calculator", "todo"]);
    let todo = &branches[1];
    assert_eq!(
        todo["required"],
        json!(["id", "tool", "input", "depends_on"])
    );
    let input = &todo["properties"]["input"];
    assert_eq!(input["additionalProperties"], false);
    assert_eq!(input["required"], json!(["action", "id", "limit", "title"]));
    // Optional fields are nullable; non-string leaves accept a reference string.
    assert_eq!(
        input["properties"]["title"]["type"],
        json!(["string", "null"])
    );
    // A union of more than `[T, null]` is the documented anyOf, never a type array.
    assert_eq!(
        input["properties"]["id"]["anyOf"],
        json!([{"type": "integer"}, {"type": "string"}, {"type": "null"}])
    );
    assert!(input["properties"]["id"].get("type").is_none());
    assert_eq!(input["properties"]["action"]["type"], "string");
    // Keywords strict mode may refuse are not sent.
    assert!(input["properties"]["title"].get("maxLength").is_none());
    assert!(input["properties"]["id"].get("minimum").is_none());
    // Every object in the schema lists all its properties as required.
    fn check(v: &Value) {
        if let Some(obj) = v.as_object() {
            if let Some(Value::Array(types)) = obj.get("type") {
                assert!(types.len() == 2 && types[1] == "null", "{v}");
            }
            if let Some(props) = obj.get("properties").and_then(Value::as_object) {
                let req: Vec<&str> = obj["required"]
                    .as_array()
                    .expect("required")
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                assert!(props.keys().all(|k| req.contains(&k.as_str())), "{v}");
                assert_eq!(obj["additionalProperties"], false);
            }
            obj.values().for_each(check);
        } else if let Some(items) = v.as_array() {
            items.iter().for_each(check);
        }
    }
    check(&schema);
}

#[test]
fn given_a_one_tool_registry_when_the_schema_is_derived_then_no_any_of_is_needed() {
    let reg = Registry::from_tools(vec![Arc::new(crate::tools::calculator::Calculator)]);
    let schema = plan_schema(&reg, true);
    assert_eq!(
        schema["properties"]["steps"]["items"]["properties"]["tool"]["enum"],
        json!(["calculator"])
    );
    // Examples needing the todo tool are left out.
    let ex = examples(&reg);
    assert!(!ex.is_empty());
    assert!(ex.iter().all(|e| !e.plan.to_string().contains("\"todo\"")));
}

#[test]
fn given_the_standard_registry_when_examples_are_listed_then_all_are_valid_plans() {
    let reg = registry();
    let ex = examples(&reg);
    assert_eq!(ex.len(), 5);
    for e in ex {
        plan_from_value(e.plan.clone(), &reg).expect(e.prompt);
    }
}

#[tokio::test]
async fn given_the_examples_when_the_pattern_planner_plans_them_then_both_agree() {
    // The model is taught the same semantics the offline planner implements.
    let reg = registry();
    for e in examples(&reg) {
        let ours = plan_from_value(e.plan.clone(), &reg).expect(e.prompt);
        let pattern = PatternPlanner.plan(e.prompt, &reg).await.expect(e.prompt);
        assert_eq!(ours, pattern.plan, "{}", e.prompt);
    }
}
