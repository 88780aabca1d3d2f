//! `calculator`: evaluates an arithmetic expression with a real parser (see [`super::expr`]).

use std::sync::LazyLock;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::expr::{self, MAX_INPUT_LEN};
use super::{schema, Access, Tool, ToolContext};
use crate::domain::ToolError;

/// The `calculator` tool: evaluates one arithmetic expression (`input.expression`) to a number; it
/// has no side effects, so nothing to compensate.
#[derive(Debug, Clone, Copy, Default)]
pub struct Calculator;

fn expression(input: &Value) -> Result<&str, ToolError> {
    input
        .get("expression")
        .and_then(Value::as_str)
        .ok_or_else(|| ToolError::permanent("calculator input needs an \"expression\" string"))
}

/// The input schema, built once: plans validate against it and workers read it per step.
static SCHEMA: LazyLock<Value> = LazyLock::new(|| {
    json!({
        "type": "object",
        "properties": {
            "expression": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_INPUT_LEN,
                "description": "e.g. \"(4 + 6) / 2\" or \"2^8\""
            }
        },
        "required": ["expression"],
        "additionalProperties": false
    })
});

#[async_trait]
impl Tool for Calculator {
    fn name(&self) -> &'static str {
        "calculator"
    }

    fn description(&self) -> &'static str {
        "Evaluates an arithmetic expression: + - * / % ^ (or **), parentheses, unary minus, decimals."
    }

    fn input_schema(&self) -> Value {
        SCHEMA.clone()
    }

    fn validate(&self, input: &Value) -> Result<(), String> {
        schema::validate(&SCHEMA, input)
    }

    fn access(&self, _input: &Value) -> Option<Access> {
        None
    }

    fn compensation(&self, _input: &Value) -> Option<&'static str> {
        None
    }

    async fn execute(&self, _ctx: &ToolContext, input: &Value) -> Result<Value, ToolError> {
        let expression = expression(input)?;
        let value = expr::evaluate(expression).map_err(|e| ToolError::permanent(e.to_string()))?;
        Ok(crate::domain::number::to_json_number(value))
    }

    async fn compensate(
        &self,
        _ctx: &ToolContext,
        _input: &Value,
        _output: &Value,
    ) -> Result<(), ToolError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ErrorKind;

    fn ctx() -> ToolContext {
        ToolContext {
            tenant: "t".into(),
            run_id: "r".into(),
            step_id: "s1".into(),
            attempt: 1,
            now: chrono::Utc::now(),
        }
    }

    #[tokio::test]
    async fn given_an_expression_when_executed_then_output_is_a_json_number() {
        let out = Calculator
            .execute(&ctx(), &json!({"expression": "(4 + 6) / 2"}))
            .await;
        assert_eq!(out, Ok(json!(5)));
        let out = Calculator
            .execute(&ctx(), &json!({"expression": "7/2"}))
            .await;
        assert_eq!(out, Ok(json!(3.5)));
    }

    #[tokio::test]
    async fn given_bad_expressions_when_executed_then_errors_are_permanent() {
        for e in ["1/0", "2+", "", "10^400"] {
            let err = Calculator
                .execute(&ctx(), &json!({"expression": e}))
                .await
                .expect_err(e);
            assert_eq!(err.kind, ErrorKind::Permanent, "{e}");
        }
        let err = Calculator
            .execute(&ctx(), &json!({}))
            .await
            .expect_err("missing");
        assert!(err.message.contains("expression"));
    }

    #[test]
    fn given_inputs_when_validated_then_schema_applies() {
        assert!(Calculator.validate(&json!({"expression": "1+1"})).is_ok());
        assert!(Calculator.validate(&json!({"expression": 5})).is_err());
        assert!(Calculator
            .validate(&json!({"expression": "1", "x": 1}))
            .is_err());
        assert!(Calculator
            .validate(&json!({"expression": "{{s1}}"}))
            .is_ok());
    }
}
