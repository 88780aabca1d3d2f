//! The deployment as it runs (issue 10): `template.yaml` rendered as CloudFormation would
//! deploy it (SAM's translator, then every condition and intrinsic resolved, see
//! [`crane_tests::infra::rendered`]), and `samconfig.toml` read with SAM CLI's own config
//! reader. Offline: needs only the tools venv that `./scripts/test` installs.

use crane_tests::infra::{describe, grants, rendered, repo, run_tool, strings};
use serde_json::Value;

/// The functions of the rendered template, by logical id.
fn lambda_functions(t: &Value) -> Vec<(&str, &Value)> {
    let fns: Vec<(&str, &Value)> = t["Resources"]
        .as_object()
        .expect("Resources")
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Lambda::Function")
        .map(|(id, r)| (id.as_str(), r))
        .collect();
    assert!(!fns.is_empty(), "the rendered template has no functions");
    fns
}

// ---------------------------------------------------------------------------
// 1. One architecture for build and deploy
// ---------------------------------------------------------------------------

/// What `sam <command>` reads from samconfig.toml (environment `default`), by SAM CLI's
/// own reader (`samcli.lib.config.samconfig.SamConfig.get_all`).
const READ_SAMCONFIG: &str = r#"
import json, sys
from samcli.lib.config.samconfig import SamConfig
out = {}
for cmd in sys.argv[1:]:
    # A fresh reader per command: get_all merges the global section into its document.
    out[cmd] = SamConfig(".").get_all([cmd], "parameters")
json.dump(out, sys.stdout)
"#;

fn samconfig_for(commands: &[&str]) -> Value {
    let mut args = vec!["-c", READ_SAMCONFIG];
    args.extend_from_slice(commands);
    let out = run_tool("python", &args);
    assert!(
        out.status.success(),
        "reading samconfig.toml:\n{}",
        describe(&out)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn architecture_of(parameter_overrides: &Value) -> Option<String> {
    parameter_overrides
        .as_str()?
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("Architecture="))
        .map(|v| v.trim_matches('"').to_owned())
}

#[test]
fn sam_build_and_sam_deploy_read_the_same_architecture_from_samconfig() {
    let config = samconfig_for(&["build", "deploy", "sync"]);
    let build = architecture_of(&config["build"]["parameter_overrides"]);
    assert!(
        matches!(build.as_deref(), Some("arm64" | "x86_64")),
        "sam build reads no Architecture from samconfig.toml: it would build for the \
         template's default whatever sam deploy declares ({config})"
    );
    for cmd in ["deploy", "sync"] {
        assert_eq!(
            config[cmd]["parameter_overrides"], config["build"]["parameter_overrides"],
            "sam {cmd} and sam build read different parameter_overrides"
        );
    }
    // One place: the global section. A command section's parameter_overrides replaces the
    // global one for that command only (that is how build and deploy drift apart).
    let text = std::fs::read_to_string(repo().join("samconfig.toml")).expect("samconfig.toml");
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_owned();
        } else if line.starts_with("parameter_overrides") {
            assert_eq!(
                section, "[default.global.parameters]",
                "parameter_overrides belongs in [default.global.parameters] only"
            );
        }
    }
}

#[test]
fn the_readme_deploys_with_the_shared_parameters_for_either_architecture() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let deploy = readme
        .split("## Deploy to AWS")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has a '## Deploy to AWS' section");
    for needle in [
        "[default.global.parameters]",
        "Architecture=arm64",
        "Architecture=x86_64",
        "aarch64-unknown-linux-gnu",
    ] {
        assert!(
            deploy.contains(needle),
            "the deploy section does not mention {needle}"
        );
    }
    assert!(
        !deploy.contains("--parameter-overrides Architecture"),
        "an Architecture passed to one command only is what makes build and deploy differ"
    );
}

// ---------------------------------------------------------------------------
// 5. Lambda's own START / REPORT lines
// ---------------------------------------------------------------------------

#[test]
fn every_function_keeps_lambdas_platform_report_lines() {
    let t = rendered(&[]);
    for (id, f) in lambda_functions(&t) {
        let logging = &f["Properties"]["LoggingConfig"];
        assert_eq!(logging["LogFormat"], "JSON", "{id}");
        // platform.start / platform.report (duration, memory, init duration) are INFO.
        assert!(
            matches!(
                logging["SystemLogLevel"].as_str(),
                Some("INFO" | "DEBUG") | None
            ),
            "{id}: SystemLogLevel {} drops Lambda's START/REPORT lines",
            logging["SystemLogLevel"]
        );
    }
}

// ---------------------------------------------------------------------------
// 8. Every request reaches the router; create-run reads only what it uses
// ---------------------------------------------------------------------------

/// The HTTP API's routes as deployed: (method or `ANY`, path or `$default`) -> the logical
/// id of the function it invokes.
fn routes(t: &Value) -> Vec<((String, String), String)> {
    let paths = t["Resources"]["HttpApi"]["Properties"]["Body"]["paths"]
        .as_object()
        .expect("the HTTP API's OpenAPI body has paths");
    let mut out = Vec::new();
    for (path, methods) in paths {
        for (method, op) in methods.as_object().expect("methods") {
            let uri = op["x-amazon-apigateway-integration"]["uri"]
                .as_str()
                .expect("a Lambda proxy integration");
            let function = uri
                .trim_end_matches("/invocations")
                .rsplit(':')
                .next()
                .expect("function")
                .to_owned();
            let method = match method.as_str() {
                "x-amazon-apigateway-any-method" => "ANY".to_owned(),
                m => m.to_uppercase(),
            };
            let path = if path == "/$default" {
                "$default"
            } else {
                path
            };
            out.push(((method, path.to_owned()), function));
        }
    }
    out
}

/// Whether a concrete path fits a route path with `{param}` segments.
fn path_matches(route: &str, path: &str) -> bool {
    let (r, p): (Vec<&str>, Vec<&str>) = (route.split('/').collect(), path.split('/').collect());
    r.len() == p.len()
        && r.iter()
            .zip(&p)
            .all(|(r, p)| r == p || (r.starts_with('{') && r.ends_with('}') && !p.is_empty()))
}

fn folder_of(logical_id: &str) -> String {
    let name = logical_id.strip_suffix("Function").expect("a function id");
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('-');
        }
        out.extend(c.to_lowercase());
    }
    out
}

#[test]
fn every_api_sample_is_routed_to_its_function_and_unmatched_requests_reach_the_router() {
    let t = rendered(&[]);
    let routes = routes(&t);
    let default: Vec<&String> = routes
        .iter()
        .filter(|((m, p), _)| m == "ANY" && p == "$default")
        .map(|(_, f)| f)
        .collect();
    assert_eq!(
        default,
        [&"GetRunFunction".to_owned()],
        "the $default route must send every unmatched request to the (read-only) router"
    );
    let mut unrouted = 0;
    for folder in ["create-run", "get-run"] {
        for (case, event) in crane_tests::events::samples(folder) {
            let method = event["requestContext"]["http"]["method"]
                .as_str()
                .expect("method");
            let path = event["rawPath"].as_str().expect("rawPath");
            let explicit: Vec<&((String, String), String)> = routes
                .iter()
                .filter(|((m, p), _)| m == method && path_matches(p, path))
                .collect();
            let route_key = event["routeKey"].as_str().expect("routeKey");
            let function = if route_key == "$default" {
                assert!(
                    explicit.is_empty(),
                    "{folder}/{case}: {method} {path} matches {explicit:?}, not $default"
                );
                unrouted += 1;
                default[0].clone()
            } else {
                assert_eq!(
                    explicit.len(),
                    1,
                    "{folder}/{case}: {route_key} is not one route"
                );
                let ((m, p), f) = explicit[0];
                assert_eq!(format!("{m} {p}"), route_key, "{folder}/{case}");
                f.clone()
            };
            assert_eq!(
                folder_of(&function),
                folder,
                "{folder}/{case} is served by {function}"
            );
        }
    }
    assert!(unrouted >= 2, "samples of unmatched requests exist");
    let health = routes
        .iter()
        .find(|((m, p), _)| m == "GET" && p == "/health")
        .map(|(_, f)| f.as_str());
    assert_eq!(
        health,
        Some("CreateRunFunction"),
        "GET /health is answered by the function that plans, the only one that knows the \
         planner's state"
    );
}

#[test]
fn create_run_may_read_only_what_it_uses() {
    let t = rendered(&[]);
    let stand_in = |id: &str| format!("arn:aws:stand-in:us-east-1:123456789012:{id}");
    let mut dynamodb: Vec<(String, String)> =
        crane_tests::infra::role_statements(&t, "CreateRunFunctionRole")
            .iter()
            .flat_map(|s| {
                let resources = strings(&s["Resource"]);
                strings(&s["Action"])
                    .into_iter()
                    .filter(|a| a.starts_with("dynamodb:"))
                    .flat_map(move |a| resources.clone().into_iter().map(move |r| (a.clone(), r)))
            })
            .collect();
    dynamodb.sort();
    let events = stand_in("EventsTable");
    let keys = stand_in("IdempotencyTable");
    let runs = stand_in("RunsTable");
    let index = format!("{runs}/index/by_created");
    let mut want: Vec<(String, String)> = [
        ("dynamodb:PutItem", &events),
        ("dynamodb:Query", &events),
        ("dynamodb:GetItem", &keys),
        ("dynamodb:PutItem", &keys),
        // Listing runs (GET /health, the cap on runs in flight): the index, then the views.
        ("dynamodb:Query", &index),
        ("dynamodb:BatchGetItem", &runs),
    ]
    .iter()
    .map(|(a, r)| ((*a).to_owned(), (*r).clone()))
    .collect();
    want.sort();
    assert_eq!(dynamodb, want, "create-run's DynamoDB permissions");
    assert!(
        grants(&t, "CreateRunFunctionRole", "bedrock:InvokeModel").is_empty()
            && grants(&t, "CreateRunFunctionRole", "secretsmanager:GetSecretValue").is_empty(),
        "the pattern planner needs neither Bedrock nor the LLM key"
    );
}

// ---------------------------------------------------------------------------
// 7. Metrics and dashboards per stack
// ---------------------------------------------------------------------------

#[test]
fn two_stacks_in_one_account_emit_and_graph_only_their_own_metrics() {
    for stack in ["crane-a", "crane-b"] {
        let t = rendered(&[("AWS::StackName", stack)]);
        for (id, f) in lambda_functions(&t) {
            assert_eq!(
                f["Properties"]["Environment"]["Variables"][crane::entrypoints::metrics::STACK_VAR],
                stack,
                "{id} must know its stack, the Stack dimension of its metrics"
            );
        }
        let body: Value = serde_json::from_str(
            t["Resources"]["Dashboard"]["Properties"]["DashboardBody"]
                .as_str()
                .expect("a rendered DashboardBody"),
        )
        .expect("the dashboard is JSON");
        let mut crane_metrics = 0;
        for widget in body["widgets"].as_array().expect("widgets") {
            for row in widget["properties"]["metrics"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let row = row.as_array().expect("a metric row");
                if let Some(expression) = row[0]["expression"].as_str() {
                    if expression.contains("{Crane") {
                        crane_metrics += 1;
                        assert!(
                            expression.contains("{Crane,Stack")
                                && expression.contains(&format!("Stack=\"{stack}\"")),
                            "{expression} is not limited to stack {stack}"
                        );
                    }
                } else if row[0] == "Crane" {
                    crane_metrics += 1;
                    let dims: Vec<&Value> = row[2..].iter().filter(|v| v.is_string()).collect();
                    assert_eq!(
                        dims,
                        [&Value::from("Stack"), &Value::from(stack)],
                        "{row:?} is not limited to stack {stack}"
                    );
                }
            }
        }
        assert!(crane_metrics >= 8, "the dashboard graphs Crane's metrics");
    }
}

// ---------------------------------------------------------------------------
// 6. Early redelivery after an infrastructure error
// ---------------------------------------------------------------------------

#[test]
fn the_step_worker_may_shorten_the_visibility_of_its_queues_messages() {
    let t = rendered(&[]);
    let queue = "arn:aws:stand-in:us-east-1:123456789012:StepQueue".to_owned();
    for action in [
        "sqs:ChangeMessageVisibility",
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
    ] {
        assert_eq!(
            grants(&t, "StepWorkerFunctionRole", action),
            vec![(queue.clone(), Value::Null)],
            "the step worker needs {action} on its queue, and only there"
        );
    }
    let visibility = t["Resources"]["StepQueue"]["Properties"]["VisibilityTimeout"]
        .as_u64()
        .expect("VisibilityTimeout");
    assert!(
        u64::from(crane::entrypoints::sqs::REDELIVERY_MAX_SECS) < visibility,
        "the shortened wait must stay below the queue's visibility timeout ({visibility} s)"
    );
}

// ---------------------------------------------------------------------------
// 3, 4. What the planner may call: the LLM key secret, Bedrock
// ---------------------------------------------------------------------------

/// IAM's wildcard match of a resource pattern (`*` any run of characters, `?` one).
fn iam_matches(pattern: &str, arn: &str) -> bool {
    fn go(p: &[char], a: &[char]) -> bool {
        match p.split_first() {
            None => a.is_empty(),
            Some(('*', rest)) => (0..=a.len()).any(|i| go(rest, &a[i..])),
            Some(('?', rest)) => !a.is_empty() && go(rest, &a[1..]),
            Some((c, rest)) => a.first() == Some(c) && go(rest, &a[1..]),
        }
    }
    let (p, a): (Vec<char>, Vec<char>) = (pattern.chars().collect(), arn.chars().collect());
    go(&p, &a)
}

/// Whether `role` may do `action` on `arn` (ignoring conditions), and the conditions of
/// the statements that allow it.
fn may(t: &Value, role: &str, action: &str, arn: &str) -> Option<Vec<Value>> {
    let matching: Vec<Value> = grants(t, role, action)
        .into_iter()
        .filter(|(r, _)| iam_matches(r, arn))
        .map(|(_, c)| c)
        .collect();
    (!matching.is_empty()).then_some(matching)
}

const SECRET: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:crane/llm-key";
const KMS_KEY: &str = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

#[test]
fn create_run_may_read_the_llm_key_secret_by_its_real_arn_and_decrypt_it_with_its_own_key() {
    let role = "CreateRunFunctionRole";
    let real = format!("{SECRET}-AbC123");
    // The ARN as given (without the random suffix, or with it) must match the real one.
    for given in [SECRET, real.as_str()] {
        let t = rendered(&[("Planner", "llm"), ("LlmApiKeySecretArn", given)]);
        assert!(
            may(&t, role, "secretsmanager:GetSecretValue", &real).is_some(),
            "given {given}, GetSecretValue on the real ARN {real} is denied: {:?}",
            grants(&t, role, "secretsmanager:GetSecretValue")
        );
        for other in [
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:crane/llm-key-other-AbC123",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:crane/other-AbC123",
        ] {
            assert!(
                may(&t, role, "secretsmanager:GetSecretValue", other).is_none(),
                "given {given}, {other} is readable too"
            );
        }
        assert!(
            grants(&t, role, "kms:Decrypt").is_empty(),
            "no customer-managed key given: aws/secretsmanager needs no grant"
        );
    }
    // A customer-managed key: Decrypt on it, through Secrets Manager in the secret's region.
    let t = rendered(&[
        ("Planner", "llm"),
        ("LlmApiKeySecretArn", SECRET),
        ("LlmApiKeySecretKmsKeyArn", KMS_KEY),
    ]);
    let conditions = may(&t, role, "kms:Decrypt", KMS_KEY).expect("kms:Decrypt on the key");
    assert_eq!(
        conditions,
        [
            serde_json::json!({"StringEquals": {"kms:ViaService": "secretsmanager.eu-west-1.amazonaws.com"}})
        ]
    );
    // Another planner never reads the secret, so it gets neither permission.
    for planner in ["pattern", "bedrock"] {
        let t = rendered(&[
            ("Planner", planner),
            ("LlmApiKeySecretArn", SECRET),
            ("LlmApiKeySecretKmsKeyArn", KMS_KEY),
        ]);
        assert!(
            grants(&t, role, "secretsmanager:GetSecretValue").is_empty()
                && grants(&t, role, "kms:Decrypt").is_empty(),
            "Planner={planner} must not read the LLM key"
        );
    }
}

/// `arn:<partition>:bedrock:<region>:<account>:<resource>`.
fn bedrock_arn(partition: &str, region: &str, account: &str, resource: &str) -> String {
    format!("arn:{partition}:bedrock:{region}:{account}:{resource}")
}

#[test]
fn create_run_may_invoke_the_configured_bedrock_model_or_inference_profile_and_nothing_else() {
    let role = "CreateRunFunctionRole";
    let action = "bedrock:InvokeModel";
    let account = "123456789012";
    // A foundation model id: that model, in the region Bedrock is called in.
    let model = "anthropic.claude-3-haiku-20240307-v1:0";
    for (bedrock_region, called_in) in [("", "us-east-1"), ("us-west-2", "us-west-2")] {
        let t = rendered(&[
            ("Planner", "bedrock"),
            ("BedrockModelId", model),
            ("BedrockRegion", bedrock_region),
        ]);
        let env = &t["Resources"]["CreateRunFunction"]["Properties"]["Environment"]["Variables"];
        assert_eq!(env["CRANE_BEDROCK_REGION"], bedrock_region);
        let arn = |r: &str, m: &str| bedrock_arn("aws", r, "", &format!("foundation-model/{m}"));
        assert!(
            may(&t, role, action, &arn(called_in, model)).is_some(),
            "{called_in}"
        );
        assert!(may(&t, role, action, &arn(called_in, "anthropic.claude-v2")).is_none());
        assert!(may(&t, role, action, &arn("eu-central-1", model)).is_none());
    }

    // Inference profiles: the profile, and its foundation model in every region it
    // routes to (global ones: no region), only when called through that profile.
    let profiles = [
        (
            "us.anthropic.claude-3-5-haiku-20241022-v1:0",
            "anthropic.claude-3-5-haiku-20241022-v1:0",
            vec!["us-east-1", "us-east-2", "us-west-2"],
        ),
        (
            "eu.amazon.nova-lite-v1:0",
            "amazon.nova-lite-v1:0",
            vec!["eu-central-1", "eu-west-1", "eu-west-3"],
        ),
        (
            "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "anthropic.claude-sonnet-4-5-20250929-v1:0",
            vec!["", "us-east-1", "ap-southeast-2"],
        ),
    ];
    for (partition, (profile, foundation, destinations)) in [
        ("aws", &profiles[0]),
        ("aws", &profiles[1]),
        ("aws", &profiles[2]),
        ("aws-us-gov", &profiles[0]),
    ] {
        let t = rendered(&[
            ("Planner", "bedrock"),
            ("BedrockModelId", profile),
            ("BedrockRegion", "us-east-2"),
            ("AWS::Partition", partition),
        ]);
        let profile_arn = bedrock_arn(
            partition,
            "us-east-2",
            account,
            &format!("inference-profile/{profile}"),
        );
        assert_eq!(
            may(&t, role, action, &profile_arn),
            Some(vec![Value::Null]),
            "{profile}: the profile itself, in the region Bedrock is called in"
        );
        for region in destinations {
            let fm = bedrock_arn(
                partition,
                region,
                "",
                &format!("foundation-model/{foundation}"),
            );
            let conditions =
                may(&t, role, action, &fm).unwrap_or_else(|| panic!("{profile}: {fm} is denied"));
            assert_eq!(
                conditions,
                [serde_json::json!({"StringEquals": {"bedrock:InferenceProfileArn": profile_arn}})],
                "{fm} only through the profile"
            );
            let other = bedrock_arn(
                partition,
                region,
                "",
                "foundation-model/anthropic.claude-v2",
            );
            assert!(
                may(&t, role, action, &other).is_none(),
                "{other} is allowed"
            );
        }
        assert!(
            may(
                &t,
                role,
                action,
                &bedrock_arn(
                    partition,
                    "us-east-2",
                    "",
                    &format!("foundation-model/{profile}")
                )
            )
            .is_none(),
            "a profile id is not a foundation model"
        );
    }
    // Another planner: no Bedrock at all.
    let t = rendered(&[("Planner", "llm"), ("BedrockModelId", profiles[0].0)]);
    assert!(grants(&t, role, action).is_empty());
}

// ---------------------------------------------------------------------------
// 2. The saga survives Lambda's faults, in every partition
// ---------------------------------------------------------------------------

/// What the Lambda integration reports when the function itself or the Lambda service
/// fails (throttling, service errors, a function that timed out or ran out of memory).
const LAMBDA_FAULTS: [&str; 7] = [
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.TooManyRequestsException",
    "Lambda.Unknown",
    "Sandbox.Timedout",
];

/// Every Task state of the definition, with its name, inner states (of a Map) included.
fn tasks(states: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (name, state) in states.as_object().expect("States") {
        match state["Type"].as_str() {
            Some("Task") => out.push((name.clone(), state.clone())),
            Some("Map") => out.extend(tasks(&state["ItemProcessor"]["States"])),
            _ => {}
        }
    }
    out
}

#[test]
fn every_saga_task_retries_lambda_faults_with_backoff_and_every_failure_is_recorded() {
    for (partition, console) in [
        ("aws", "console.aws.amazon.com"),
        ("aws-cn", "console.amazonaws.cn"),
        ("aws-us-gov", "console.amazonaws-us-gov.com"),
    ] {
        let t = rendered(&[("AWS::Partition", partition)]);
        let definition: Value = serde_json::from_str(
            t["Resources"]["SagaStateMachine"]["Properties"]["DefinitionString"]
                .as_str()
                .expect("a rendered definition"),
        )
        .expect("the definition is JSON");
        let states = &definition["States"];
        let tasks = tasks(states);
        assert!(tasks.len() >= 4, "Begin, UndoStep, Finish, RecordFailure");
        for (name, task) in &tasks {
            assert_eq!(
                task["Resource"],
                format!("arn:{partition}:states:::lambda:invoke"),
                "{name}: the integration ARN is in the stack's partition"
            );
            for fault in LAMBDA_FAULTS {
                let retrier = task["Retry"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|r| {
                        r["ErrorEquals"]
                            .as_array()
                            .is_some_and(|e| e.contains(&Value::from(fault)))
                    })
                    .unwrap_or_else(|| panic!("{name} does not retry {fault}"));
                assert!(
                    retrier["BackoffRate"].as_f64().is_some_and(|b| b > 1.0)
                        && retrier["IntervalSeconds"].as_u64().is_some_and(|i| i >= 1)
                        && retrier["MaxAttempts"].as_u64().is_some_and(|m| m >= 3),
                    "{name} retries {fault} without backoff: {retrier}"
                );
            }
        }
        // Every top-level Task or Map catches everything left: the failure is recorded
        // (RecordFailure), and a failure to record it ends in a Fail state, alarmed.
        for (name, state) in states.as_object().expect("States") {
            if !matches!(state["Type"].as_str(), Some("Task" | "Map")) {
                continue;
            }
            let catch_all = state["Catch"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["ErrorEquals"] == serde_json::json!(["States.ALL"]))
                .unwrap_or_else(|| panic!("{name} has no Catch for States.ALL"));
            let next = catch_all["Next"].as_str().expect("Next");
            if name == "RecordFailure" {
                assert_eq!(states[next]["Type"], "Fail", "{name} catches into {next}");
            } else {
                assert_eq!(next, "RecordFailure", "{name} catches into {next}");
            }
        }
        let url = t["Outputs"]["DashboardUrl"]["Value"]
            .as_str()
            .expect("DashboardUrl");
        assert!(
            url.starts_with(&format!("https://{console}/cloudwatch/")),
            "{url}"
        );
        assert!(
            !serde_json::to_string(&t)
                .expect("JSON")
                .contains(if partition == "aws" {
                    "arn:aws-"
                } else {
                    "arn:aws:"
                }),
            "an ARN of another partition is written out in the {partition} template"
        );
    }
}

// ---------------------------------------------------------------------------
// 8. The fixed monthly costs in docs/cost.md match what the stack creates
// ---------------------------------------------------------------------------

/// The `count per stack` column of a row of docs/cost.md's fixed-cost table.
fn fixed_cost_count(cost_md: &str, item: &str) -> u64 {
    let section = cost_md
        .split("## Fixed monthly costs")
        .nth(1)
        .expect("docs/cost.md has a '## Fixed monthly costs' section");
    let row = section
        .lines()
        .find(|l| l.starts_with(&format!("| {item} ")))
        .unwrap_or_else(|| panic!("no '{item}' row in the fixed-cost table"));
    row.split('|')
        .nth(2)
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or_else(|| panic!("'{item}' row has no count: {row}"))
}

#[tokio::test]
async fn the_fixed_monthly_costs_count_what_the_stack_creates_and_emits() {
    use crane::domain::{ErrorKind, Event, EventRecord};
    use crane::entrypoints::metrics;

    let cost = std::fs::read_to_string(repo().join("docs/cost.md")).expect("docs/cost.md");
    let t = rendered(&[("AlarmEmail", "ops@example.com")]);
    let of_type = |ty: &str| {
        t["Resources"]
            .as_object()
            .expect("Resources")
            .values()
            .filter(|r| r["Type"] == ty)
            .count() as u64
    };
    assert_eq!(
        fixed_cost_count(&cost, "alarms"),
        of_type("AWS::CloudWatch::Alarm")
    );
    assert_eq!(
        fixed_cost_count(&cost, "dashboard"),
        of_type("AWS::CloudWatch::Dashboard")
    );

    // Every metric the reactor can emit for a run using every tool: one custom metric per
    // (name, dimension values) combination.
    let m = crane_tests::events::MemoryApp::new();
    let tools = m.app.registry.names();
    let mut state = m
        .seed(
            "01977b6e-4c2a-7a3b-9f10-5e2d8c1a0b0f",
            "calculate 2+3 and add a todo to buy milk",
            chrono::Utc::now(),
        )
        .await;
    // s2 (the todo add) waited for approval, so its decision has a time to measure.
    if let Some(s2) = state.steps.iter_mut().find(|s| s.id == "s2") {
        s2.approval = Some(crane::domain::StepApproval {
            requested_at: chrono::Utc::now(),
            expires_at: chrono::Utc::now(),
            approver: "t".into(),
            input: Value::Null,
            decision: None,
            decided_at: None,
            decided_by: None,
            comment: None,
        });
    }
    let steps: Vec<(String, String)> = state
        .steps
        .iter()
        .map(|s| (s.id.clone(), s.tool.clone()))
        .collect();
    let mut step_tools: Vec<&String> = steps.iter().map(|(_, t)| t).collect();
    step_tools.sort();
    step_tools.dedup();
    assert_eq!(step_tools.len(), tools.len(), "the run uses every tool");
    let now = chrono::Utc::now();
    let mut events = vec![
        Event::RunCompleted {
            result: Value::Null,
        },
        Event::RunFailed {
            error: "x".into(),
            step_id: None,
        },
        Event::RunCompensated {},
        Event::RunCompensationFailed {
            step_id: "s1".into(),
            error: "x".into(),
        },
        Event::RunCancelled {},
        Event::StepCompensated {
            step_id: "s1".into(),
            attempts: 1,
        },
        Event::StepCompensationFailed {
            step_id: "s1".into(),
            error: "x".into(),
            attempts: 1,
        },
        Event::ApprovalRequested {
            step_id: "s2".into(),
            input: Value::Null,
            approver: "t".into(),
            expires_at: chrono::Utc::now(),
        },
        Event::StepApproved {
            step_id: "s2".into(),
            by: "t".into(),
            comment: None,
        },
        Event::StepRejected {
            step_id: "s2".into(),
            by: Some("t".into()),
            comment: None,
            expired: false,
        },
        Event::StepRejected {
            step_id: "s2".into(),
            by: None,
            comment: None,
            expired: true,
        },
    ];
    for (id, _) in &steps {
        events.extend([
            Event::StepCompleted {
                step_id: id.clone(),
                attempt: 1,
                output: Value::Null.into(),
                duration_ms: 1,
            },
            Event::StepAttemptFailed {
                step_id: id.clone(),
                attempt: 1,
                error: "x".into(),
                kind: ErrorKind::Transient,
                duration_ms: 1,
                retry_in_ms: Some(1),
            },
            Event::StepInterrupted {
                step_id: id.clone(),
                attempt: 1,
                error: "x".into(),
            },
            Event::StepDeferred {
                step_id: id.clone(),
                attempt: 1,
                reason: "x".into(),
                until: now,
            },
        ]);
    }
    let mut records = vec![EventRecord::new(
        1,
        now,
        Event::RunCreated {
            tenant: "t".into(),
            prompt: "p".into(),
            correlation_id: "c".into(),
            idempotency_key: None,
        },
    )];
    records.extend(
        events
            .into_iter()
            .enumerate()
            .map(|(i, e)| EventRecord::new(i as u64 + 2, now, e)),
    );
    let mut combinations: Vec<(String, Vec<(String, String)>)> =
        metrics::from_events(&records, Some(&state), now)
            .into_iter()
            .map(|m| {
                let dims = m
                    .dimensions
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect();
                (m.name.to_owned(), dims)
            })
            .collect();
    combinations.sort();
    combinations.dedup();
    assert_eq!(
        fixed_cost_count(&cost, "custom metrics"),
        combinations.len() as u64,
        "docs/cost.md counts a different number of custom metrics than Crane emits: {combinations:#?}"
    );
}
