//! The services over in-memory adapters, driven job by job: the engine's behaviour under
//! duplicate delivery, retries, failures, compensation and cancellation, without timing.

use std::sync::Arc;

use serde_json::{json, Value};

use super::*;
use crate::adapters::local::memory::{MemoryStore, MemoryTodos};
use crate::domain::{Output, Plan, PlanStep, StepJob, StepStatus};
use crate::planner::FixedPlanner;
use crate::ports::SystemClock;
use crate::tools::Faults;

fn step(id: &str, tool: &str, input: Value, deps: &[&str]) -> PlanStep {
    PlanStep {
        id: id.into(),
        tool: tool.into(),
        input,
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        requires_approval: false,
    }
}

struct Harness {
    app: App,
    store: Arc<MemoryStore>,
    todos: Arc<MemoryTodos>,
}

fn harness(steps: Vec<PlanStep>, faults: &str) -> Harness {
    let store = Arc::new(MemoryStore::default());
    let todos = Arc::new(MemoryTodos::default());
    let registry =
        Registry::new(todos.clone()).with_faults(&Faults::parse(faults).expect("faults"));
    let settings = Settings {
        retry: RetryPolicy {
            base_ms: 0,
            jitter: 0.0,
            ..RetryPolicy::default()
        },
        compensation_retry: RetryPolicy {
            base_ms: 0,
            jitter: 0.0,
            ..RetryPolicy::default()
        },
        ..Settings::default()
    };
    let app = App {
        events: store.clone(),
        views: store.clone(),
        todos: todos.clone(),
        idempotency: store.clone(),
        breakers: store.clone(),
        registry,
        planner: Arc::new(FixedPlanner(Plan { steps })),
        clock: Arc::new(SystemClock),
        settings,
    };
    Harness { app, store, todos }
}

fn ctx() -> RequestContext {
    RequestContext {
        tenant: "default".into(),
        correlation_id: "corr-1".into(),
    }
}

impl Harness {
    fn take_effects(&self) -> Vec<Effect> {
        std::mem::take(&mut *self.store.outbox.lock().expect("lock"))
    }

    /// Run every queued effect, each delivered `copies` times, until none is left.
    async fn drain(&self, copies: usize) {
        for _ in 0..200 {
            let effects = self.take_effects();
            if effects.is_empty() {
                return;
            }
            for effect in effects {
                for _ in 0..copies {
                    match &effect {
                        Effect::Dispatch { job, .. } => {
                            self.app.process_job(job).await.expect("job runs");
                        }
                        Effect::Compensate { key, .. } => {
                            self.app.compensate_run(key).await.expect("saga runs");
                        }
                    }
                }
            }
        }
        panic!("effects never drained");
    }

    async fn run(&self, copies: usize) -> RunState {
        let created = self
            .app
            .create_run(&ctx(), "test", None)
            .await
            .expect("created");
        self.drain(copies).await;
        self.app
            .get_run(&RunKey::new("default", &created.run.run_id))
            .await
            .expect("run")
    }
}

fn seed_dag() -> Vec<PlanStep> {
    vec![
        step("s1", "calculator", json!({"expression": "2+3"}), &[]),
        step("s2", "calculator", json!({"expression": "10*5"}), &[]),
        step("s3", "todo", json!({"action": "list"}), &[]),
        step(
            "s4",
            "todo",
            json!({"action": "add", "title": "{{s2}}"}),
            &["s1", "s2", "s3"],
        ),
    ]
}

#[tokio::test]
async fn given_the_seed_dag_when_run_then_it_completes_with_the_last_steps_output() {
    let h = harness(seed_dag(), "");
    let run = h.run(1).await;
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(
        run.result.as_ref().and_then(|r| r.get("title")),
        Some(&json!("50"))
    );
    assert!(run
        .steps
        .iter()
        .all(|s| s.status == StepStatus::Completed && s.attempts == 1));
    assert_eq!(h.todos.count("default").await.expect("count"), 1);
}

#[tokio::test]
async fn given_the_seed_dag_when_created_then_only_independent_steps_are_dispatched() {
    let h = harness(seed_dag(), "");
    h.app
        .create_run(&ctx(), "test", None)
        .await
        .expect("created");
    let mut dispatched: Vec<String> = h
        .take_effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::Dispatch { job, .. } => Some(job.step_id),
            _ => None,
        })
        .collect();
    dispatched.sort();
    assert_eq!(dispatched, vec!["s1", "s2", "s3"]);
}

#[tokio::test]
async fn given_more_than_100_todos_when_a_run_lists_them_then_its_step_stores_100_and_the_total() {
    let h = harness(vec![step("s1", "todo", json!({"action": "list"}), &[])], "");
    for i in 1..=130 {
        let add = crate::domain::TodoChange::Add {
            title: format!("todo {i}"),
        };
        h.todos
            .apply("default", &format!("seed/{i}"), &add, Utc::now())
            .await
            .expect("seeded");
    }
    let run = h.run(1).await;
    assert_eq!(run.status, RunStatus::Completed);
    let stored = |output: &Output| {
        let output = output.value();
        let ids: Vec<u64> = output["todos"]
            .as_array()
            .expect("todos")
            .iter()
            .filter_map(|t| t["id"].as_u64())
            .collect();
        (ids, output["total"].clone(), output["truncated"].clone())
    };
    let expected = ((1..=100).collect::<Vec<u64>>(), json!(130), json!(true));
    let output = run.steps[0].output.as_ref().expect("output");
    assert_eq!(stored(output), expected, "the view");
    // The event log holds the same bounded output.
    let events = h
        .store
        .load(&RunKey::new("default", &run.run_id))
        .await
        .expect("events");
    let completed = events
        .iter()
        .find_map(|e| match &e.event {
            Event::StepCompleted { output, .. } => Some(output),
            _ => None,
        })
        .expect("StepCompleted");
    assert_eq!(stored(completed), expected, "the event");
}

#[tokio::test]
async fn given_every_job_delivered_three_times_when_run_then_outcome_equals_a_single_delivery() {
    let h = harness(seed_dag(), "");
    let run = h.run(3).await;
    assert_eq!(run.status, RunStatus::Completed);
    assert!(run.steps.iter().all(|s| s.attempts == 1), "{:?}", run.steps);
    assert_eq!(
        h.todos.count("default").await.expect("count"),
        1,
        "no todo doubled"
    );
    let events = h
        .app
        .run_events(&RunKey::new("default", &run.run_id))
        .await
        .expect("events");
    let completions = events
        .iter()
        .filter(|e| e.event.type_name() == "StepCompleted")
        .count();
    assert_eq!(completions, 4);
}

#[tokio::test]
async fn given_a_flaky_tool_when_run_then_it_succeeds_after_retries_with_attempts_recorded() {
    let h = harness(
        vec![step("s1", "calculator", json!({"expression": "6*7"}), &[])],
        "calculator=flaky:2",
    );
    let run = h.run(1).await;
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.result, Some(json!(42)));
    assert_eq!(run.steps[0].attempts, 3);
    let events = h
        .app
        .run_events(&RunKey::new("default", &run.run_id))
        .await
        .expect("events");
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e.event.type_name() == "StepAttemptFailed")
        .collect();
    assert_eq!(failed.len(), 2);
}

#[tokio::test]
async fn given_a_permanent_error_when_run_then_it_is_not_retried_and_the_run_fails() {
    let h = harness(
        vec![step("s1", "calculator", json!({"expression": "1/0"}), &[])],
        "",
    );
    let run = h.run(1).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.steps[0].attempts, 1);
    assert_eq!(run.steps[0].error.as_deref(), Some("division by zero"));
    assert!(run
        .error
        .as_deref()
        .unwrap_or_default()
        .contains("division by zero"));
}

#[tokio::test]
async fn given_retries_exhausted_when_run_then_the_step_fails_after_all_attempts() {
    let h = harness(
        vec![step("s1", "calculator", json!({"expression": "1"}), &[])],
        "calculator=fail",
    );
    let run = h.run(1).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.steps[0].attempts, 4, "one try and three retries");
}

#[tokio::test]
async fn given_a_failure_after_two_adds_when_run_then_both_adds_are_compensated() {
    let h = harness(
        vec![
            step("s1", "todo", json!({"action": "add", "title": "a"}), &[]),
            step("s2", "todo", json!({"action": "add", "title": "b"}), &[]),
            step(
                "s3",
                "calculator",
                json!({"expression": "1/0"}),
                &["s1", "s2"],
            ),
        ],
        "",
    );
    let run = h.run(1).await;
    assert_eq!(run.status, RunStatus::Compensated);
    assert!(
        h.todos.count("default").await.expect("count") == 0,
        "no todo left behind"
    );
    let events = h
        .app
        .run_events(&RunKey::new("default", &run.run_id))
        .await
        .expect("events");
    let undone: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::StepCompensated { step_id, .. } => Some(step_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(undone, vec!["s2", "s1"], "reverse completion order");
}

#[tokio::test]
async fn given_a_compensation_that_keeps_failing_when_run_then_status_is_compensation_failed() {
    let h = harness(
        vec![
            step("s1", "todo", json!({"action": "add", "title": "a"}), &[]),
            step("s2", "calculator", json!({"expression": "1/0"}), &["s1"]),
        ],
        "todo.compensate=fail",
    );
    let run = h.run(1).await;
    assert_eq!(run.status, RunStatus::CompensationFailed);
    assert_eq!(run.steps[0].status, StepStatus::CompensationFailed);
}

#[tokio::test]
async fn given_a_running_run_when_cancelled_then_completed_steps_are_compensated_and_it_ends_cancelled(
) {
    let h = harness(
        vec![
            step("s1", "todo", json!({"action": "add", "title": "a"}), &[]),
            step("s2", "calculator", json!({"expression": "1+1"}), &["s1"]),
        ],
        "",
    );
    let created = h
        .app
        .create_run(&ctx(), "test", None)
        .await
        .expect("created");
    let key = RunKey::new("default", &created.run.run_id);
    // Run s1 only.
    for effect in h.take_effects() {
        if let Effect::Dispatch { job, .. } = effect {
            h.app.process_job(&job).await.expect("runs");
        }
    }
    let cancelled = h.app.cancel_run(&key, None).await.expect("cancel");
    assert!(cancelled.cancel_requested);
    h.drain(1).await;
    let run = h.app.get_run(&key).await.expect("run");
    assert_eq!(run.status, RunStatus::Cancelled);
    assert_eq!(run.step("s2").map(|s| s.status), Some(StepStatus::Skipped));
    assert!(h.todos.count("default").await.expect("count") == 0);
    let again = h.app.cancel_run(&key, None).await.expect_err("finished");
    assert!(matches!(
        again,
        AppError::Refused {
            why: Refusal::RunFinished,
            ..
        }
    ));
}

#[tokio::test]
async fn given_an_idempotency_key_when_posted_twice_then_the_same_run_is_returned() {
    let h = harness(seed_dag(), "");
    let a = h
        .app
        .create_run(&ctx(), "p", Some("key-1"))
        .await
        .expect("a");
    let b = h
        .app
        .create_run(&ctx(), "p", Some("key-1"))
        .await
        .expect("b");
    assert_eq!(a.run.run_id, b.run.run_id);
    assert!(!a.replayed && b.replayed);
    let other = h
        .app
        .create_run(&ctx(), "different", Some("key-1"))
        .await
        .expect_err("reused");
    assert!(matches!(
        other,
        AppError::Refused {
            why: Refusal::IdempotencyKeyReused,
            ..
        }
    ));
}

#[tokio::test]
async fn given_a_breaker_threshold_when_a_tool_keeps_failing_then_it_opens_and_the_step_waits_without_using_attempts(
) {
    let mut h = harness(
        vec![step("s1", "calculator", json!({"expression": "1"}), &[])],
        "calculator=fail",
    );
    h.app.settings.breaker = crate::engine::breaker::BreakerConfig {
        failure_threshold: 2,
        open_ms: 60_000,
        half_open_successes: 1,
        ..Default::default()
    };
    let run = h.run(1).await;
    // Two real failures opened the breaker; the third attempt was refused, not used up.
    assert_eq!(run.status, RunStatus::Running);
    let s1 = &run.steps[0];
    assert_eq!((s1.status, s1.attempts), (StepStatus::Pending, 2));
    let waiting = s1.waiting.as_ref().expect("the step waits for the breaker");
    assert_eq!(
        waiting.reason,
        "calculator temporarily unavailable (circuit breaker open)"
    );
    let tools = h.app.tools().await.expect("tools");
    let calc = tools
        .iter()
        .find(|t| t.name == "calculator")
        .expect("calculator");
    assert_eq!(calc.breaker.name(), "open");
    // A redelivered job before the breaker half-opens is told to come back then.
    let job = StepJob {
        tenant: run.tenant.clone(),
        run_id: run.run_id.clone(),
        step_id: "s1".into(),
        attempt: 3,
        correlation_id: run.correlation_id.clone(),
    };
    assert_eq!(
        h.app.process_job(&job).await.expect("job"),
        JobResult::RetryAt(waiting.until)
    );
}

#[tokio::test]
async fn given_an_open_breaker_when_the_step_deadline_passes_then_the_step_fails_saying_since_when()
{
    let mut h = harness(
        vec![step("s1", "calculator", json!({"expression": "1"}), &[])],
        "calculator=fail",
    );
    h.app.settings.breaker = crate::engine::breaker::BreakerConfig {
        failure_threshold: 1,
        open_ms: 60_000,
        ..Default::default()
    };
    h.app.settings.step_deadline_ms = 1;
    let run = h.run(1).await;
    assert_eq!(run.steps[0].attempts, 1);
    let job = StepJob {
        tenant: run.tenant.clone(),
        run_id: run.run_id.clone(),
        step_id: "s1".into(),
        attempt: 2,
        correlation_id: run.correlation_id.clone(),
    };
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(h.app.process_job(&job).await.expect("job"), JobResult::Done);
    let run = h
        .app
        .get_run(&RunKey::new("default", &run.run_id))
        .await
        .expect("run");
    assert_eq!(run.status, RunStatus::Failed);
    let error = run.steps[0].error.as_deref().unwrap_or_default();
    assert!(
        error.starts_with("calculator temporarily unavailable (circuit breaker open) since 20"),
        "{error}"
    );
    assert_eq!(run.steps[0].attempts, 1, "no attempt was spent waiting");
}

#[tokio::test]
async fn given_a_planner_that_says_no_approval_when_the_policy_names_the_step_then_it_waits_and_runs_once_approved(
) {
    use crate::engine::approval::{ApprovalPolicy, Decision};
    // The planner (a model, say) marks the delete as needing no approval and the add as
    // needing one: the policy decides both.
    let mut delete = step("s2", "todo", json!({"action": "delete", "id": 1}), &["s1"]);
    delete.requires_approval = false;
    let mut add = step("s1", "todo", json!({"action": "add", "title": "x"}), &[]);
    add.requires_approval = true;
    let mut h = harness(vec![add, delete], "");
    h.app.settings.approval = ApprovalPolicy::parse(["todo.delete"]).expect("policy");

    // Every job delivered three times: the held step's timer never starts it.
    let run = h.run(3).await;
    assert!(!run.plan.steps[0].requires_approval);
    assert!(run.plan.steps[1].requires_approval);
    assert_eq!(
        run.step("s1").map(|s| s.status),
        Some(StepStatus::Completed)
    );
    assert_eq!(
        run.step("s2").map(|s| s.status),
        Some(StepStatus::WaitingApproval)
    );
    assert_eq!(run.awaiting_approval, vec!["s2".to_string()]);
    assert_eq!(h.todos.count("default").await.expect("count"), 1);

    let key = RunKey::new("default", &run.run_id);
    let after = h
        .app
        .decide_step(&key, "s2", Decision::Approve, Some("  ".into()))
        .await
        .expect("approved");
    let approval = after.step("s2").and_then(|s| s.approval.clone());
    assert_eq!(
        approval.and_then(|a| a.comment),
        None,
        "a blank comment is none"
    );
    h.drain(3).await;
    let done = h.app.get_run(&key).await.expect("run");
    assert_eq!(done.status, RunStatus::Completed, "{done:#?}");
    assert_eq!(h.todos.count("default").await.expect("count"), 0);
    let again = h
        .app
        .decide_step(&key, "s2", Decision::Reject, None)
        .await
        .expect_err("decided");
    assert!(matches!(
        again,
        AppError::Refused {
            why: Refusal::AlreadyDecided,
            ..
        }
    ));
    let long = "x".repeat(1_001);
    assert!(matches!(
        h.app
            .decide_step(&key, "s2", Decision::Reject, Some(long))
            .await,
        Err(AppError::Refused {
            why: Refusal::CommentTooLong,
            ..
        })
    ));
    assert!(matches!(
        h.app
            .decide_step(
                &RunKey::new("other", &run.run_id),
                "s2",
                Decision::Approve,
                None
            )
            .await,
        Err(AppError::NotFound(_))
    ));
}

mod wave;
