use super::*;
use crate::adapters::local::memory::MemoryTodos;
use crate::domain::{Plan, PlanStep, PlannerInfo, Usage};
use crate::planner::model::{LlmError, ModelFailure};
use serde_json::json;
use std::collections::VecDeque;

/// A model that answers from a script.
struct Scripted {
    answers: Mutex<VecDeque<Result<(), LlmError>>>,
}

impl Scripted {
    fn new(answers: Vec<Result<(), LlmError>>) -> Arc<Self> {
        Arc::new(Self {
            answers: Mutex::new(answers.into()),
        })
    }
}

fn plan(tool: &str, input: serde_json::Value) -> Plan {
    Plan {
        steps: vec![PlanStep {
            id: "s1".into(),
            tool: tool.into(),
            input,
            depends_on: vec![],
            requires_approval: false,
        }],
    }
}

#[async_trait]
impl ModelPlanner for Scripted {
    fn name(&self) -> &'static str {
        "llm"
    }
    fn model(&self) -> &str {
        "test-model"
    }
    async fn plan_with_model(
        &self,
        _prompt: &str,
        _registry: &Registry,
    ) -> Result<Planned, ModelFailure> {
        let next = self
            .answers
            .lock()
            .expect("lock")
            .pop_front()
            .expect("a scripted answer");
        let usage = Usage {
            prompt_tokens: 10,
            completion_tokens: 5,
            latency_ms: 7,
        };
        match next {
            Ok(()) => Ok(Planned {
                plan: plan("calculator", json!({"expression": "1+1"})),
                info: PlannerInfo {
                    name: "llm".into(),
                    model: Some("test-model".into()),
                    usage: Some(usage),
                    ..PlannerInfo::default()
                },
                fallback_detail: None,
            }),
            Err(error) => Err(ModelFailure { error, usage }),
        }
    }
}

/// A fallback that understands exactly "calculate 2+3".
struct Pattern;

#[async_trait]
impl Planner for Pattern {
    fn name(&self) -> &'static str {
        "pattern"
    }
    async fn plan(&self, prompt: &str, _registry: &Registry) -> Result<Planned, PlanError> {
        if prompt != "calculate 2+3" {
            return Err(PlanError::NotUnderstood(
                "I understand arithmetic and todos".into(),
            ));
        }
        Ok(Planned {
            plan: plan("calculator", json!({"expression": "2+3"})),
            info: PlannerInfo {
                name: "pattern".into(),
                ..PlannerInfo::default()
            },
            fallback_detail: None,
        })
    }
}

fn registry() -> Registry {
    Registry::new(Arc::new(MemoryTodos::default()))
}

fn planner(answers: Vec<Result<(), LlmError>>) -> FallbackPlanner {
    FallbackPlanner::with_fallback(Scripted::new(answers), Arc::new(Pattern))
}

#[tokio::test]
async fn given_a_working_model_when_planning_then_the_model_plans() {
    let p = planner(vec![Ok(())]);
    let planned = p.plan("calculate 2+3", &registry()).await.expect("plan");
    assert_eq!(planned.info.name, "llm");
    assert_eq!(planned.info.fallback_reason, None);
    assert_eq!(p.name(), "llm");
    assert_eq!(p.degraded(), None);
}

#[tokio::test]
async fn given_each_passing_failure_when_planning_then_the_fallback_records_its_category() {
    let cases = [
        (
            LlmError::Timeout("no answer within 10 ms".into()),
            "timeout",
            "timed out",
        ),
        (
            LlmError::Connect("tcp connect error http://10.0.0.7:8000".into()),
            "unavailable",
            "could not connect",
        ),
        (
            LlmError::RateLimited("HTTP 429".into()),
            "rate_limited",
            "HTTP 429",
        ),
        (
            LlmError::Server("HTTP 500".into()),
            "unavailable",
            "HTTP 500",
        ),
        (
            LlmError::Unparseable("not JSON".into()),
            "invalid_output",
            "not JSON",
        ),
        (
            LlmError::InvalidPlan("cycle".into()),
            "invalid_plan",
            "cycle",
        ),
        (LlmError::Refused("I won't".into()), "refused", "I won't"),
    ];
    for (error, category, detail) in cases {
        let p = planner(vec![Err(error)]);
        let planned = p.plan("calculate 2+3", &registry()).await.expect("plan");
        assert_eq!(planned.info.name, "pattern");
        assert_eq!(planned.info.requested.as_deref(), Some("llm"));
        // Clients see the category only; the detail is for the logs.
        assert_eq!(planned.info.fallback_reason.as_deref(), Some(category));
        let full = planned.fallback_detail.expect("detail");
        assert!(full.starts_with("llm planner failed: "), "{full}");
        assert!(full.contains(detail), "{full} should contain {detail}");
        let recorded = serde_json::to_string(&planned.info).expect("json");
        assert!(!recorded.contains(detail), "{recorded} leaks {detail}");
        assert_eq!(planned.info.usage.map(|u| u.latency_ms), Some(7));
        assert_eq!(p.degraded(), None, "{category} is not a setup problem");
    }
}

#[tokio::test]
async fn given_a_wrong_key_when_planning_then_it_falls_back_and_is_degraded_until_success() {
    let p = planner(vec![
        Err(LlmError::Auth("HTTP 401".into())),
        Err(LlmError::Timeout("x".into())),
        Ok(()),
    ]);
    let planned = p.plan("calculate 2+3", &registry()).await.expect("plan");
    assert_eq!(planned.info.name, "pattern");
    assert_eq!(
        planned.info.fallback_reason.as_deref(),
        Some("misconfigured")
    );
    let degraded = p.degraded().expect("degraded");
    assert!(degraded.contains("authentication failed"), "{degraded}");
    // A passing failure does not clear it; a success does.
    p.plan("calculate 2+3", &registry()).await.expect("plan");
    assert!(p.degraded().is_some());
    let planned = p.plan("calculate 2+3", &registry()).await.expect("plan");
    assert_eq!(planned.info.name, "llm");
    assert_eq!(p.degraded(), None);
}

#[tokio::test]
async fn given_a_wrong_model_when_planning_then_it_is_degraded() {
    let p = planner(vec![Err(LlmError::Config(
        "HTTP 404: no such model".into(),
    ))]);
    p.plan("calculate 2+3", &registry()).await.expect("plan");
    assert!(p.degraded().expect("degraded").contains("no such model"));
}

#[tokio::test]
async fn given_neither_planner_can_plan_when_planning_then_the_pattern_error_explains() {
    let p = planner(vec![Err(LlmError::Server("HTTP 503".into()))]);
    let err = p
        .plan("sing me a song", &registry())
        .await
        .expect_err("nobody can");
    match err {
        PlanError::NotUnderstood(m) => {
            assert!(m.starts_with("I understand arithmetic and todos"), "{m}");
            assert!(m.contains("unavailable"), "{m}");
            assert!(
                !m.contains("HTTP 503"),
                "the detail reached the client: {m}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn given_the_default_fallback_when_built_then_it_is_the_pattern_planner() {
    let p = FallbackPlanner::new(Scripted::new(vec![]));
    assert!(format!("{p:?}").contains("fallback: \"pattern\""));
}
