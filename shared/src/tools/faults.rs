//! Fault injection for tests and demos, off by default.
//!
//! `CRANE_FAULTS` is a comma-separated list of `TOOL[.ACTION]=KIND[:ARG]`:
//! - `fail:P`: a transient error with probability P (0..=1, default 1);
//! - `fail_permanent:P`: a permanent error with probability P (default 1);
//! - `flaky:N`: a transient error on the first N attempts of every step (deterministic);
//! - `delay:D`: wait D first (`250ms`, `2s`, or plain milliseconds).
//!
//! ACTION matches the input's `action` (`todo.add`); the special action `compensate`
//! targets compensations instead of executions. Example:
//! `CRANE_FAULTS=calculator=delay:100ms,todo.add=fail:0.3`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use serde_json::Value;

use super::{Access, Tool, ToolContext};
use crate::domain::ToolError;

/// What a fault rule does to a matching call.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// Fail with a transient error with this probability (0..=1).
    Fail(f64),
    /// Fail with a permanent error with this probability (0..=1).
    FailPermanent(f64),
    /// Fail transiently on the first this many attempts of every step, then pass the call through.
    Flaky(u32),
    /// Wait this long before making the call.
    Delay(Duration),
}

/// One `TOOL[.ACTION]=KIND[:ARG]` entry of `CRANE_FAULTS`.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    /// The name of the tool whose calls it affects.
    pub tool: String,
    /// The input `action` it is limited to (`compensate` targets compensations); `None` for every
    /// call.
    pub action: Option<String>,
    /// What it does to a matching call.
    pub kind: FaultKind,
}

/// A `CRANE_FAULTS` entry that cannot be parsed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid CRANE_FAULTS entry '{entry}': {reason} (expected TOOL[.ACTION]=fail[:P]|fail_permanent[:P]|flaky:N|delay:DURATION)")]
pub struct FaultParseError {
    /// The entry as written.
    pub entry: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A parsed set of fault rules.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Faults {
    rules: Vec<FaultRule>,
}

impl Faults {
    /// No rules: every tool runs untouched (the default).
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules, in the order they were given.
    pub fn rules(&self) -> &[FaultRule] {
        &self.rules
    }

    /// Parse a `CRANE_FAULTS` value (blank entries are skipped; an empty string is no rules).
    pub fn parse(spec: &str) -> Result<Faults, FaultParseError> {
        let rules = spec
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(parse_rule)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Faults { rules })
    }

    /// Wrap `tool` if any rule names it.
    pub fn wrap(&self, tool: Arc<dyn Tool>) -> Arc<dyn Tool> {
        let rules: Vec<FaultRule> = self
            .rules
            .iter()
            .filter(|r| r.tool == tool.name())
            .cloned()
            .collect();
        if rules.is_empty() {
            tool
        } else {
            Arc::new(Faulty { inner: tool, rules })
        }
    }
}

fn parse_rule(entry: &str) -> Result<FaultRule, FaultParseError> {
    let err = |reason: &str| FaultParseError {
        entry: entry.to_owned(),
        reason: reason.to_owned(),
    };
    let (target, kind) = entry.split_once('=').ok_or_else(|| err("missing '='"))?;
    let (tool, action) = match target.trim().split_once('.') {
        Some((t, a)) => (t.trim(), Some(a.trim().to_owned())),
        None => (target.trim(), None),
    };
    if tool.is_empty() || action.as_deref() == Some("") {
        return Err(err("empty tool or action"));
    }
    let (kind, arg) = match kind.trim().split_once(':') {
        Some((k, a)) => (k.trim(), Some(a.trim())),
        None => (kind.trim(), None),
    };
    let probability = |arg: Option<&str>| -> Result<f64, FaultParseError> {
        match arg {
            None => Ok(1.0),
            Some(a) => a
                .parse::<f64>()
                .ok()
                .filter(|p| (0.0..=1.0).contains(p))
                .ok_or_else(|| err("probability must be a number from 0 to 1")),
        }
    };
    let kind = match kind {
        "fail" => FaultKind::Fail(probability(arg)?),
        "fail_permanent" => FaultKind::FailPermanent(probability(arg)?),
        "flaky" => FaultKind::Flaky(
            arg.and_then(|a| a.parse().ok())
                .ok_or_else(|| err("flaky needs a count of attempts, like flaky:2"))?,
        ),
        "delay" => FaultKind::Delay(
            arg.and_then(parse_duration)
                .ok_or_else(|| err("delay needs a duration, like delay:250ms"))?,
        ),
        _ => return Err(err("unknown kind")),
    };
    Ok(FaultRule {
        tool: tool.to_owned(),
        action,
        kind,
    })
}

/// `250ms`, `2s`, `1.5s` or plain milliseconds; at most one hour.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let ms = if let Some(v) = s.strip_suffix("ms") {
        v.trim().parse::<f64>().ok()?
    } else if let Some(v) = s.strip_suffix('s') {
        v.trim().parse::<f64>().ok()? * 1000.0
    } else {
        s.parse::<f64>().ok()?
    };
    (ms.is_finite() && (0.0..=3_600_000.0).contains(&ms))
        .then(|| Duration::from_micros((ms * 1000.0) as u64))
}

struct Faulty {
    inner: Arc<dyn Tool>,
    rules: Vec<FaultRule>,
}

impl Faulty {
    async fn inject(&self, action: Option<&str>, attempt: u32) -> Result<(), ToolError> {
        let name = self.inner.name();
        for rule in &self.rules {
            if rule.action.is_some() && rule.action.as_deref() != action {
                continue;
            }
            let hit = |p: f64| p >= 1.0 || rand::rng().random::<f64>() < p;
            match rule.kind {
                FaultKind::Delay(d) => tokio::time::sleep(d).await,
                FaultKind::Fail(p) if hit(p) => {
                    return Err(ToolError::transient(format!(
                        "injected transient fault in {name}"
                    )))
                }
                FaultKind::FailPermanent(p) if hit(p) => {
                    return Err(ToolError::permanent(format!(
                        "injected permanent fault in {name}"
                    )))
                }
                FaultKind::Flaky(n) if attempt <= n => {
                    return Err(ToolError::transient(format!(
                        "injected transient fault in {name} (attempt {attempt} of the first {n})"
                    )))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Tool for Faulty {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn description(&self) -> &'static str {
        self.inner.description()
    }
    fn input_schema(&self) -> Value {
        self.inner.input_schema()
    }
    fn validate(&self, input: &Value) -> Result<(), String> {
        self.inner.validate(input)
    }
    fn access(&self, input: &Value) -> Option<Access> {
        self.inner.access(input)
    }
    fn compensation(&self, input: &Value) -> Option<&'static str> {
        self.inner.compensation(input)
    }

    async fn execute(&self, ctx: &ToolContext, input: &Value) -> Result<Value, ToolError> {
        let action = input.get("action").and_then(Value::as_str);
        self.inject(action.or(Some("")), ctx.attempt).await?;
        self.inner.execute(ctx, input).await
    }

    async fn compensate(
        &self,
        ctx: &ToolContext,
        input: &Value,
        output: &Value,
    ) -> Result<(), ToolError> {
        self.inject(Some("compensate"), ctx.attempt).await?;
        self.inner.compensate(ctx, input, output).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ErrorKind;
    use crate::tools::calculator::Calculator;
    use serde_json::json;

    #[test]
    fn given_a_spec_when_parsed_then_rules_are_typed() {
        let f = Faults::parse(
            "calculator=delay:100ms, todo.add=fail:0.3,todo=fail_permanent,todo.delete=flaky:2",
        )
        .expect("parses");
        assert_eq!(
            f.rules(),
            &[
                FaultRule {
                    tool: "calculator".into(),
                    action: None,
                    kind: FaultKind::Delay(Duration::from_millis(100))
                },
                FaultRule {
                    tool: "todo".into(),
                    action: Some("add".into()),
                    kind: FaultKind::Fail(0.3)
                },
                FaultRule {
                    tool: "todo".into(),
                    action: None,
                    kind: FaultKind::FailPermanent(1.0)
                },
                FaultRule {
                    tool: "todo".into(),
                    action: Some("delete".into()),
                    kind: FaultKind::Flaky(2)
                },
            ]
        );
        assert!(Faults::parse("").expect("empty").is_empty());
    }

    #[test]
    fn given_bad_specs_when_parsed_then_errors_say_why() {
        for bad in [
            "calculator",
            "x=explode",
            "x=fail:2",
            "x=delay",
            "x=delay:abc",
            "=fail",
            "x.=fail",
            "x=flaky",
        ] {
            assert!(Faults::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("40"), Some(Duration::from_millis(40)));
        assert_eq!(parse_duration("-1ms"), None);
    }

    fn ctx(attempt: u32) -> ToolContext {
        ToolContext {
            tenant: "t".into(),
            run_id: "r".into(),
            step_id: "s".into(),
            attempt,
            now: chrono::Utc::now(),
        }
    }

    #[tokio::test]
    async fn given_fault_rules_when_tools_run_then_faults_are_injected() {
        let tool = Faults::parse("calculator=fail_permanent")
            .expect("parses")
            .wrap(Arc::new(Calculator));
        let err = tool
            .execute(&ctx(1), &json!({"expression": "1+1"}))
            .await
            .expect_err("fails");
        assert_eq!(err.kind, ErrorKind::Permanent);

        let flaky = Faults::parse("calculator=flaky:2")
            .expect("parses")
            .wrap(Arc::new(Calculator));
        assert_eq!(
            flaky
                .execute(&ctx(2), &json!({"expression": "1+1"}))
                .await
                .map_err(|e| e.kind),
            Err(ErrorKind::Transient)
        );
        assert_eq!(
            flaky.execute(&ctx(3), &json!({"expression": "1+1"})).await,
            Ok(json!(2))
        );

        let other = Faults::parse("todo=fail")
            .expect("parses")
            .wrap(Arc::new(Calculator));
        assert_eq!(
            other.execute(&ctx(1), &json!({"expression": "2*3"})).await,
            Ok(json!(6))
        );
    }
}
