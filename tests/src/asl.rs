//! A walker of Amazon States Language definitions, for the tests of the saga: moto's Step
//! Functions cannot call our Lambda, so the tests walk the real state machine definition
//! (`infra/statemachines/compensation.asl.json`) themselves, building every payload from
//! the ASL's own `Parameters` and applying its `Retry`/`Catch`, and call the function with
//! exactly those inputs.
//!
//! It supports what the saga uses (Task states that invoke one Lambda function, Choice with
//! `IsPresent`, inline Map, Succeed, Fail, `.$` paths on the state input and `$$` paths on
//! the context, `ResultSelector`, `ResultPath`) and fails loudly on anything else: a walker
//! that guessed would let the definition and the tests drift apart.

use std::collections::HashMap;

use async_trait::async_trait;
use serde_json::{json, Value};

/// The resource of a Task state that invokes a Lambda function.
pub const LAMBDA_INVOKE: &str = "arn:aws:states:::lambda:invoke";

/// The one Lambda function the walked state machine invokes.
#[async_trait]
pub trait Function: Sync {
    /// The ARN every Task's `Parameters.FunctionName` must name.
    fn arn(&self) -> &str;

    /// Call the function with `payload`: its result, or the error as the Lambda
    /// integration reports it, `{"Error": <errorType>, "Cause": <error document as a
    /// string>}`.
    async fn invoke(&self, payload: Value) -> Result<Value, Value>;
}

/// One Lambda task the state machine invoked.
#[derive(Debug, Clone)]
pub struct TaskCall {
    /// The Task state's name.
    pub state: String,
    /// The payload rendered from the state's `Parameters.Payload`.
    pub payload: Value,
    /// The function's result, or the caught error `{"Error", "Cause"}`.
    pub outcome: Result<Value, Value>,
}

/// How a walk of the state machine ended.
#[derive(Debug)]
pub struct SagaRun {
    /// States entered, in order (a retry is not a new entry).
    pub entered: Vec<String>,
    /// Every call of the function, retries included, in order.
    pub calls: Vec<TaskCall>,
    /// `Ok(output)` at a `Succeed` state; `Err(error)` at a `Fail` state or an uncaught
    /// error.
    pub end: Result<Value, String>,
}

impl SagaRun {
    /// The calls made by the Task state `state`, in order.
    pub fn calls_of(&self, state: &str) -> Vec<&TaskCall> {
        self.calls.iter().filter(|c| c.state == state).collect()
    }
}

/// Decides, for the n-th call (0-based) of a Task state, whether the function fails there
/// as Lambda would report it (`{"Error", "Cause"}`) instead of running: a crash, a timeout,
/// throttling.
pub type Crash = dyn Fn(&str, usize) -> Option<Value> + Sync;

/// Walk the ASL from its `StartAt` with `input` (the execution input), as Step Functions
/// would: each `lambda:invoke` Task calls `function` with the payload rendered from the
/// state's `Parameters` (`$` paths on the state input, `$$` paths on the context:
/// `$$.Map.Item.Value`, `$$.State.RetryCount`), applies `ResultSelector` and `ResultPath`,
/// retries errors its `Retry` matches up to `MaxAttempts` (without waiting the interval:
/// that wait is Step Functions' own), and routes other errors through `Catch`.
pub async fn drive_saga(asl: &Value, function: &dyn Function, input: Value) -> SagaRun {
    drive_saga_with(asl, function, input, &|_, _| None).await
}

/// [`drive_saga`] with Lambda faults injected by `crash`.
pub async fn drive_saga_with(
    asl: &Value,
    function: &dyn Function,
    input: Value,
    crash: &Crash,
) -> SagaRun {
    let mut run = SagaRun {
        entered: Vec::new(),
        calls: Vec::new(),
        end: Err("not finished".into()),
    };
    let states = &asl["States"];
    let mut name = asl["StartAt"].as_str().expect("StartAt").to_owned();
    let mut data = input;
    for _ in 0..100 {
        let state = &states[name.as_str()];
        assert!(state.is_object(), "the ASL has no state {name}");
        run.entered.push(name.clone());
        let result: Result<Value, Value> = match state["Type"].as_str() {
            Some("Task") => {
                let call = Call {
                    function,
                    crash,
                    ctx: &json!({}),
                };
                call.task(&name, state, &data, &mut run.calls).await
            }
            Some("Map") => map_state(function, state, &data, &mut run, crash).await,
            Some("Choice") => {
                let next = choose(state, &data);
                name = next;
                continue;
            }
            Some("Succeed") => {
                run.end = Ok(data);
                return run;
            }
            Some("Fail") => {
                run.end = Err(state["Error"].as_str().unwrap_or("States.Fail").to_owned());
                return run;
            }
            other => panic!("drive_saga does not support state type {other:?} ({name})"),
        };
        match result {
            Ok(out) => data = out,
            Err(error) => match catcher(state, &error) {
                Some(c) => {
                    data = apply_result_path(data, c.get("ResultPath"), error);
                    name = c["Next"].as_str().expect("Catch Next").to_owned();
                    continue;
                }
                None => {
                    run.end = Err(error["Error"].as_str().unwrap_or_default().to_owned());
                    return run;
                }
            },
        }
        if state["End"] == json!(true) {
            run.end = Ok(data);
            return run;
        }
        name = state["Next"]
            .as_str()
            .unwrap_or_else(|| panic!("state {name} has neither Next nor End"))
            .to_owned();
    }
    panic!("the saga did not end within 100 states: {:?}", run.entered);
}

/// An inline Map, one item at a time (the saga's `MaxConcurrency` is 1, which is what
/// makes its order the compensation order).
async fn map_state(
    function: &dyn Function,
    state: &Value,
    data: &Value,
    run: &mut SagaRun,
    crash: &Crash,
) -> Result<Value, Value> {
    assert_eq!(
        state["MaxConcurrency"],
        json!(1),
        "the saga undoes one step at a time"
    );
    let items_path = state["ItemsPath"].as_str().unwrap_or("$");
    let items = path(items_path, data, &json!({}))
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_else(|| panic!("{items_path} is not an array in {data}"));
    let processor = &state["ItemProcessor"];
    assert_eq!(processor["ProcessorConfig"]["Mode"], "INLINE");
    let mut results = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let ctx = json!({"Map": {"Item": {"Index": i, "Value": item}}});
        let mut input = match state.get("ItemSelector") {
            Some(selector) => render(selector, data, &ctx),
            None => item.clone(),
        };
        let mut name = processor["StartAt"].as_str().expect("StartAt").to_owned();
        loop {
            let inner = &processor["States"][name.as_str()];
            assert_eq!(
                inner["Type"], "Task",
                "drive_saga supports only Task states inside a Map ({name})"
            );
            run.entered.push(name.clone());
            let call = Call {
                function,
                crash,
                ctx: &ctx,
            };
            input = call.task(&name, inner, &input, &mut run.calls).await?;
            if inner["End"] == json!(true) {
                break;
            }
            name = inner["Next"].as_str().expect("Next").to_owned();
        }
        results.push(input);
    }
    Ok(apply_result_path(
        data.clone(),
        state.get("ResultPath"),
        Value::Array(results),
    ))
}

/// What a Task state calls, and the context (`$$`) it is called in.
struct Call<'a> {
    function: &'a dyn Function,
    crash: &'a Crash,
    ctx: &'a Value,
}

impl Call<'_> {
    /// A `lambda:invoke` Task calling the function, with its Retry policy.
    async fn task(
        &self,
        name: &str,
        state: &Value,
        input: &Value,
        calls: &mut Vec<TaskCall>,
    ) -> Result<Value, Value> {
        assert_eq!(state["Resource"], LAMBDA_INVOKE);
        assert_eq!(
            state["Parameters"]["FunctionName"],
            self.function.arn(),
            "{name} calls the function"
        );
        let mut retries: HashMap<usize, u64> = HashMap::new();
        let mut retry_count = 0u64;
        loop {
            let mut ctx = self.ctx.clone();
            ctx["State"] = json!({"Name": name, "RetryCount": retry_count});
            let payload = render(&state["Parameters"]["Payload"], input, &ctx);
            let nth = calls.iter().filter(|c| c.state == name).count();
            let outcome = match (self.crash)(name, nth) {
                Some(fault) => Err(fault),
                None => self.function.invoke(payload.clone()).await,
            };
            calls.push(TaskCall {
                state: name.to_owned(),
                payload,
                outcome: outcome.clone(),
            });
            match outcome {
                Ok(out) => {
                    let raw = json!({"Payload": out, "StatusCode": 200});
                    let selected = match state.get("ResultSelector") {
                        Some(selector) => render(selector, &raw, &ctx),
                        None => raw,
                    };
                    return Ok(apply_result_path(
                        input.clone(),
                        state.get("ResultPath"),
                        selected,
                    ));
                }
                Err(error) => {
                    let retrier = state["Retry"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .enumerate()
                        .find(|(_, r)| matches_error(&r["ErrorEquals"], &error));
                    if let Some((i, r)) = retrier {
                        let max = r["MaxAttempts"].as_u64().unwrap_or(3);
                        let used = retries.entry(i).or_default();
                        if *used < max {
                            *used += 1;
                            retry_count += 1;
                            continue;
                        }
                    }
                    return Err(error);
                }
            }
        }
    }
}

/// Whether a Retrier's or Catcher's `ErrorEquals` names `error`'s `Error` (or is
/// `States.ALL`).
pub fn matches_error(error_equals: &Value, error: &Value) -> bool {
    error_equals
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e == "States.ALL" || *e == error["Error"])
}

/// The first Catcher of `state` that matches `error`.
pub fn catcher<'a>(state: &'a Value, error: &Value) -> Option<&'a Value> {
    state["Catch"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| matches_error(&c["ErrorEquals"], error))
}

/// A Choice state: the `Next` of the first rule that holds, else its `Default` (only
/// `IsPresent` rules are supported).
pub fn choose(state: &Value, data: &Value) -> String {
    for rule in state["Choices"].as_array().expect("Choices") {
        let variable = rule["Variable"].as_str().expect("Variable");
        let wanted = rule["IsPresent"]
            .as_bool()
            .unwrap_or_else(|| panic!("drive_saga supports only IsPresent choices: {rule}"));
        if path(variable, data, &json!({})).is_some() == wanted {
            return rule["Next"].as_str().expect("Next").to_owned();
        }
    }
    state["Default"].as_str().expect("Default").to_owned()
}

/// A `Parameters`/`ItemSelector`/`ResultSelector` template: keys ending in `.$` take the
/// value at their path (on `input`, or on `ctx` for `$$` paths).
pub fn render(template: &Value, input: &Value, ctx: &Value) -> Value {
    match template {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| match k.strip_suffix(".$") {
                    Some(key) => {
                        let p = v.as_str().expect("a path");
                        let value = path(p, input, ctx).unwrap_or_else(|| {
                            panic!("path {p} is not in the input {input} (context {ctx})")
                        });
                        (key.to_owned(), value)
                    }
                    None => (k.clone(), render(v, input, ctx)),
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The value at a path: `$.a.b[0]` on `input`, `$$.a.b` on `ctx`.
pub fn path(p: &str, input: &Value, ctx: &Value) -> Option<Value> {
    let (root, rest) = match p.strip_prefix("$$") {
        Some(rest) => (ctx, rest),
        None => (input, p.strip_prefix('$').expect("a path starts with $")),
    };
    let mut at = root;
    for segment in rest.split('.').filter(|s| !s.is_empty()) {
        let (field, index) = match segment.split_once('[') {
            Some((f, i)) => (
                f,
                Some(
                    i.trim_end_matches(']')
                        .parse::<usize>()
                        .expect("an array index"),
                ),
            ),
            None => (segment, None),
        };
        at = at.get(field)?;
        if let Some(i) = index {
            at = at.get(i)?;
        }
    }
    Some(at.clone())
}

/// `ResultPath`: absent = the result replaces the input; `null` = the input is kept;
/// `$.a` = the result is put at `a`.
pub fn apply_result_path(mut input: Value, result_path: Option<&Value>, result: Value) -> Value {
    match result_path {
        None => result,
        Some(Value::Null) => input,
        Some(Value::String(p)) if p == "$" => result,
        Some(Value::String(p)) => {
            let fields: Vec<&str> = p
                .strip_prefix("$.")
                .expect("ResultPath $.field")
                .split('.')
                .collect();
            let mut at = &mut input;
            for f in &fields[..fields.len() - 1] {
                at = &mut at[*f];
            }
            at[fields[fields.len() - 1]] = result;
            input
        }
        Some(other) => panic!("unsupported ResultPath {other}"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    const ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:test";

    /// A function that answers each call with the next scripted outcome (then echoes its
    /// payload), and records every payload it was given.
    struct Scripted {
        outcomes: Mutex<Vec<Result<Value, Value>>>,
        payloads: Mutex<Vec<Value>>,
    }

    impl Scripted {
        fn new(outcomes: Vec<Result<Value, Value>>) -> Self {
            Scripted {
                outcomes: Mutex::new(outcomes),
                payloads: Mutex::new(Vec::new()),
            }
        }

        fn payloads(&self) -> Vec<Value> {
            self.payloads.lock().expect("lock").clone()
        }
    }

    #[async_trait]
    impl Function for Scripted {
        fn arn(&self) -> &str {
            ARN
        }

        async fn invoke(&self, payload: Value) -> Result<Value, Value> {
            self.payloads.lock().expect("lock").push(payload.clone());
            let mut outcomes = self.outcomes.lock().expect("lock");
            if outcomes.is_empty() {
                Ok(payload)
            } else {
                outcomes.remove(0)
            }
        }
    }

    fn error(name: &str) -> Value {
        json!({"Error": name, "Cause": "{}"})
    }

    fn task(payload: Value, rest: Value) -> Value {
        let mut state = json!({
            "Type": "Task",
            "Resource": LAMBDA_INVOKE,
            "Parameters": {"FunctionName": ARN, "Payload": payload},
        });
        if let (Some(s), Some(r)) = (state.as_object_mut(), rest.as_object()) {
            s.extend(r.clone());
        }
        state
    }

    #[test]
    fn given_a_template_when_rendered_then_dollar_keys_take_their_paths_and_others_are_kept() {
        let input = json!({"run": {"id": "r1", "steps": ["s1", "s2"]}});
        let ctx = json!({"State": {"RetryCount": 2}});
        let template = json!({
            "run_id.$": "$.run.id",
            "second.$": "$.run.steps[1]",
            "attempt.$": "$$.State.RetryCount",
            "whole.$": "$",
            "fixed": "kept",
            "nested": {"id.$": "$.run.id"},
        });
        assert_eq!(
            render(&template, &input, &ctx),
            json!({
                "run_id": "r1",
                "second": "s2",
                "attempt": 2,
                "whole": input,
                "fixed": "kept",
                "nested": {"id": "r1"},
            })
        );
    }

    #[test]
    fn given_paths_when_read_then_missing_fields_and_indexes_are_none() {
        let input = json!({"a": {"b": [1, 2]}});
        assert_eq!(path("$.a.b[0]", &input, &json!({})), Some(json!(1)));
        assert_eq!(path("$.a.c", &input, &json!({})), None);
        assert_eq!(path("$.a.b[5]", &input, &json!({})), None);
        assert_eq!(path("$$.Map.Item.Index", &input, &json!({})), None);
    }

    #[test]
    fn given_each_result_path_when_applied_then_the_result_replaces_is_dropped_or_is_placed() {
        let input = json!({"keep": 1, "out": {}});
        let result = json!("r");
        assert_eq!(
            apply_result_path(input.clone(), None, result.clone()),
            result
        );
        assert_eq!(
            apply_result_path(input.clone(), Some(&Value::Null), result.clone()),
            input
        );
        assert_eq!(
            apply_result_path(input.clone(), Some(&json!("$")), result.clone()),
            result
        );
        assert_eq!(
            apply_result_path(input.clone(), Some(&json!("$.out.value")), result.clone()),
            json!({"keep": 1, "out": {"value": "r"}})
        );
        assert_eq!(
            apply_result_path(input, Some(&json!("$.error")), result),
            json!({"keep": 1, "out": {}, "error": "r"})
        );
    }

    #[test]
    fn given_error_equals_when_matched_then_the_name_or_states_all_matches_and_catch_takes_the_first(
    ) {
        let e = error("Crane.Transient");
        assert!(matches_error(&json!(["Other", "Crane.Transient"]), &e));
        assert!(matches_error(&json!(["States.ALL"]), &e));
        assert!(!matches_error(&json!(["Crane.Permanent"]), &e));
        assert!(!matches_error(&Value::Null, &e));
        let state = json!({"Catch": [
            {"ErrorEquals": ["Crane.Permanent"], "Next": "A"},
            {"ErrorEquals": ["States.ALL"], "Next": "B"},
            {"ErrorEquals": ["Crane.Transient"], "Next": "C"},
        ]});
        assert_eq!(
            catcher(&state, &e).map(|c| c["Next"].clone()),
            Some(json!("B"))
        );
        assert_eq!(catcher(&json!({}), &e), None);
    }

    #[test]
    fn given_is_present_choices_when_chosen_then_the_first_that_holds_or_the_default() {
        let state = json!({
            "Choices": [
                {"Variable": "$.error", "IsPresent": true, "Next": "Failed"},
                {"Variable": "$.steps", "IsPresent": false, "Next": "Nothing"},
            ],
            "Default": "Undo",
        });
        assert_eq!(choose(&state, &json!({"error": 1, "steps": []})), "Failed");
        assert_eq!(choose(&state, &json!({})), "Nothing");
        assert_eq!(choose(&state, &json!({"steps": []})), "Undo");
    }

    #[tokio::test]
    async fn given_a_map_when_walked_then_items_go_one_at_a_time_in_order_with_their_context() {
        let asl = json!({
            "StartAt": "Undo",
            "States": {
                "Undo": {
                    "Type": "Map",
                    "MaxConcurrency": 1,
                    "ItemsPath": "$.steps",
                    "ItemSelector": {"run.$": "$.run", "step.$": "$$.Map.Item.Value",
                        "index.$": "$$.Map.Item.Index"},
                    "ItemProcessor": {
                        "ProcessorConfig": {"Mode": "INLINE"},
                        "StartAt": "UndoStep",
                        "States": {"UndoStep": task(
                            json!({"step.$": "$.step", "try.$": "$$.State.RetryCount"}),
                            json!({"ResultSelector": {"done.$": "$.Payload.step"}, "End": true}),
                        )},
                    },
                    "ResultPath": "$.undone",
                    "Next": "Done",
                },
                "Done": {"Type": "Succeed"},
            },
        });
        let f = Scripted::new(vec![]);
        let run = drive_saga(&asl, &f, json!({"run": "r1", "steps": ["s2", "s1"]})).await;
        assert_eq!(run.entered, ["Undo", "UndoStep", "UndoStep", "Done"]);
        assert_eq!(
            f.payloads(),
            [
                json!({"step": "s2", "try": 0}),
                json!({"step": "s1", "try": 0})
            ]
        );
        assert_eq!(
            run.end,
            Ok(json!({"run": "r1", "steps": ["s2", "s1"],
                "undone": [{"done": "s2"}, {"done": "s1"}]}))
        );
        assert_eq!(run.calls_of("UndoStep").len(), 2);
    }

    #[tokio::test]
    async fn given_a_retrier_when_errors_repeat_then_it_retries_up_to_max_attempts_and_then_catches(
    ) {
        let asl = json!({
            "StartAt": "Begin",
            "States": {
                "Begin": task(json!({"try.$": "$$.State.RetryCount"}), json!({
                    "Retry": [{"ErrorEquals": ["Crane.Transient"], "MaxAttempts": 2}],
                    "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error",
                        "Next": "Record"}],
                    "ResultPath": null,
                    "Next": "Done",
                })),
                "Record": {"Type": "Fail", "Error": "Crane.SagaFailed"},
                "Done": {"Type": "Succeed"},
            },
        });
        let f = Scripted::new(vec![
            Err(error("Crane.Transient")),
            Err(error("Crane.Transient")),
            Err(error("Crane.Transient")),
        ]);
        let run = drive_saga(&asl, &f, json!({})).await;
        assert_eq!(run.entered, ["Begin", "Record"]);
        assert_eq!(run.end, Err("Crane.SagaFailed".to_owned()));
        let tries: Vec<Value> = f.payloads().iter().map(|p| p["try"].clone()).collect();
        assert_eq!(tries, [json!(0), json!(1), json!(2)]);

        // A retried error that then passes goes on to Next, the input kept (`ResultPath: null`).
        let f = Scripted::new(vec![Err(error("Crane.Transient")), Ok(json!("ok"))]);
        let run = drive_saga(&asl, &f, json!({"run": "r1"})).await;
        assert_eq!(run.entered, ["Begin", "Done"]);
        assert_eq!(run.end, Ok(json!({"run": "r1"})));
        assert_eq!(run.calls_of("Begin").len(), 2);
    }

    #[tokio::test]
    async fn given_an_error_no_catcher_matches_when_walked_then_the_walk_ends_with_it() {
        let asl = json!({
            "StartAt": "Begin",
            "States": {"Begin": task(json!({}), json!({
                "Catch": [{"ErrorEquals": ["Crane.Permanent"], "Next": "Begin"}],
                "End": true,
            }))},
        });
        let f = Scripted::new(vec![Err(error("Lambda.Unknown"))]);
        let run = drive_saga(&asl, &f, json!({})).await;
        assert_eq!(run.end, Err("Lambda.Unknown".to_owned()));
        assert_eq!(run.calls.len(), 1);
    }

    #[tokio::test]
    async fn given_a_crash_hook_when_it_faults_a_call_then_the_function_is_not_called_for_it() {
        let asl = json!({
            "StartAt": "Begin",
            "States": {"Begin": task(json!({"n": 1}), json!({
                "Retry": [{"ErrorEquals": ["Lambda.ServiceException"], "MaxAttempts": 3}],
                "End": true,
            }))},
        });
        let f = Scripted::new(vec![]);
        let crash = |state: &str, nth: usize| {
            (state == "Begin" && nth == 0).then(|| error("Lambda.ServiceException"))
        };
        let run = drive_saga_with(&asl, &f, json!({}), &crash).await;
        assert_eq!(f.payloads(), [json!({"n": 1})], "only the retry reached it");
        assert_eq!(run.calls.len(), 2);
        assert!(run.calls[0].outcome.is_err());
        assert_eq!(run.end, Ok(json!({"Payload": {"n": 1}, "StatusCode": 200})));
    }
}
