//! The deployment, checked offline: the SAM template (`template.yaml`) and the
//! compensation saga (`infra/statemachines/*.asl.json`).
//!
//! - The infra lint, here and nowhere else: `cfn-lint` and `sam validate --lint` on the
//!   template, `statelint` on every state machine, from the tools venv
//!   (`CRANE_TOOLS_VENV`, by default `<repo>/.cache/venv`; `./scripts/test` installs it).
//!   A missing tool fails its test with what to install.
//! - Structural checks on the template: least privilege, tracing and JSON logs, the queue
//!   and stream triggers, the alarms. The template is decoded to JSON by cfn-lint's own
//!   YAML loader (it knows `!Ref`, `!GetAtt`, `!Sub`), run with the venv's Python.
//! - The saga's ASL executed by moto's Step Functions interpreter
//!   (`CRANE_TEST_MOTO_ENDPOINT`, started by `./scripts/test`), with the compensate
//!   function's answers queued through moto's `lambda-simple` stub.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_sdk_sfn::types::{ExecutionStatus, HistoryEvent, HistoryEventType};
use crane_tests::infra::{describe, repo, run_sam, run_tool};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------

fn state_machine_files() -> Vec<PathBuf> {
    let dir = repo().join("infra/statemachines");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".asl.json"))
        .collect();
    files.sort();
    files
}

#[test]
fn statelint_accepts_every_state_machine() {
    let files = state_machine_files();
    assert!(!files.is_empty(), "no infra/statemachines/*.asl.json");
    for file in files {
        let out = run_tool("statelint", &[file.to_str().expect("utf-8 path")]);
        assert!(
            out.status.success(),
            "statelint rejects {}:\n{}",
            file.display(),
            describe(&out)
        );
    }
}

#[test]
fn cfn_lint_reports_nothing_on_the_template() {
    // Exit 0 means no error, warning or informational finding.
    let out = run_tool("cfn-lint", &["template.yaml"]);
    assert!(
        out.status.success(),
        "cfn-lint template.yaml:\n{}",
        describe(&out)
    );
    assert!(
        out.stdout.is_empty(),
        "cfn-lint printed findings:\n{}",
        describe(&out)
    );
}

#[test]
fn sam_validate_lint_accepts_the_template() {
    let out = run_sam(&["validate", "--lint", "--template-file", "template.yaml"]);
    assert!(
        out.status.success(),
        "sam validate --lint --template-file template.yaml:\n{}",
        describe(&out)
    );
}

// ---------------------------------------------------------------------------
// The template, as JSON
// ---------------------------------------------------------------------------

const DECODE_TEMPLATE: &str = r#"
import json, sys
from cfnlint.decode import decode
template, matches = decode(sys.argv[1])
if matches or template is None:
    sys.exit("cannot decode %s: %s" % (sys.argv[1], [str(m) for m in matches]))
json.dump(template, sys.stdout)
"#;

fn template() -> &'static Value {
    static TEMPLATE: OnceLock<Value> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let out = run_tool("python", &["-c", DECODE_TEMPLATE, "template.yaml"]);
        assert!(
            out.status.success(),
            "decoding template.yaml:\n{}",
            describe(&out)
        );
        serde_json::from_slice(&out.stdout).expect("the decoded template is JSON")
    })
}

fn resources() -> &'static serde_json::Map<String, Value> {
    template()["Resources"]
        .as_object()
        .expect("template.yaml has Resources")
}

fn resource(id: &str) -> &'static Value {
    resources()
        .get(id)
        .unwrap_or_else(|| panic!("template.yaml has no resource {id}"))
}

fn of_type(ty: &str) -> Vec<(&'static str, &'static Value)> {
    resources()
        .iter()
        .filter(|(_, r)| r["Type"] == ty)
        .map(|(id, r)| (id.as_str(), r))
        .collect()
}

fn functions() -> Vec<(&'static str, &'static Value)> {
    let fns = of_type("AWS::Serverless::Function");
    assert!(!fns.is_empty(), "template.yaml has no functions");
    fns
}

/// A function property as deployed: the function's own value, else the Globals one.
fn function_prop<'a>(function: &'a Value, key: &str) -> Option<&'a Value> {
    function["Properties"]
        .get(key)
        .or_else(|| template()["Globals"]["Function"].get(key))
}

fn is_ref(v: &Value, id: &str) -> bool {
    v == &json!({"Ref": id})
}

fn is_get_att(v: &Value, id: &str, attr: &str) -> bool {
    v == &json!({"Fn::GetAtt": [id, attr]})
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}

/// What a `Policies` property grants, with `Fn::If` branches flattened.
#[derive(Debug, Default)]
struct Grants {
    /// Inline statements.
    statements: Vec<Value>,
    /// SAM policy templates by name (e.g. `LambdaInvokePolicy`), with their parameters.
    templates: Vec<(String, Value)>,
    /// Managed policies named by ARN or name.
    managed: Vec<String>,
}

fn collect_grants(policy: &Value, grants: &mut Grants) {
    match policy {
        Value::String(name) => grants.managed.push(name.clone()),
        Value::Array(items) => items.iter().for_each(|p| collect_grants(p, grants)),
        Value::Object(map) => {
            if let Some(branches) = map.get("Fn::If").and_then(Value::as_array) {
                branches
                    .iter()
                    .skip(1)
                    .for_each(|b| collect_grants(b, grants));
            } else if let Some(statement) = map.get("Statement") {
                match statement {
                    Value::Array(s) => grants.statements.extend(s.iter().cloned()),
                    other => grants.statements.push(other.clone()),
                }
            } else if map.contains_key("Ref") {
                // AWS::NoValue (the other branch of an Fn::If).
            } else {
                for (name, params) in map {
                    grants.templates.push((name.clone(), params.clone()));
                }
            }
        }
        _ => {}
    }
}

fn grants_of(id: &str) -> Grants {
    let mut grants = Grants::default();
    if let Some(p) = resource(id)["Properties"].get("Policies") {
        collect_grants(p, &mut grants);
    }
    grants
}

fn actions(statement: &Value) -> Vec<String> {
    strings(&statement["Action"])
}

/// Inline statements that allow `action` (exact name), with their resources.
fn allowed<'a>(grants: &'a Grants, action: &str) -> Vec<&'a Value> {
    grants
        .statements
        .iter()
        .filter(|s| s["Effect"] == "Allow" && actions(s).iter().any(|a| a == action))
        .map(|s| &s["Resource"])
        .collect()
}

fn resource_list(resource: &Value) -> Vec<&Value> {
    match resource {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    }
}

// ---------------------------------------------------------------------------
// Least privilege
// ---------------------------------------------------------------------------

#[test]
fn the_http_api_always_has_an_authorizer_and_only_health_openapi_and_the_console_files_are_open() {
    let t = template();
    let choice = &t["Parameters"]["ApiAuthorizer"];
    assert_eq!(
        choice["AllowedValues"],
        json!(["JWT", "AWS_IAM"]),
        "no way to pick none"
    );
    assert_eq!(choice["Default"], "JWT");
    assert!(
        strings(&t["Transform"]).contains(&"AWS::LanguageExtensions".to_owned()),
        "the Fn::If in Auth needs AWS::LanguageExtensions"
    );
    let auth = &resource("HttpApi")["Properties"]["Auth"];
    assert_eq!(
        auth["DefaultAuthorizer"],
        json!({"Fn::If": ["UsesIamAuthorizer", "AWS_IAM", "JwtAuthorizer"]})
    );
    assert_eq!(auth["EnableIamAuthorizer"], true);
    let jwt = auth["Authorizers"]["Fn::If"][2]["JwtAuthorizer"]["JwtConfiguration"].clone();
    assert!(is_ref(&jwt["issuer"], "JwtIssuerUrl"), "{jwt}");
    assert!(is_ref(&jwt["audience"][0], "JwtAudience"), "{jwt}");
    // A JWT deployment without an issuer or audience is refused before anything is created.
    let rule = &t["Rules"]["JwtAuthorizerNeedsItsIssuer"];
    assert_eq!(
        rule["RuleCondition"],
        json!({"Fn::Equals": [{"Ref": "ApiAuthorizer"}, "JWT"]})
    );
    let asserted = rule["Assertions"].to_string();
    assert!(asserted.contains("JwtIssuerUrl") && asserted.contains("JwtAudience"));
    let mut open = Vec::new();
    for (_, f) in functions() {
        let Some(events) = function_prop(f, "Events").and_then(Value::as_object) else {
            continue;
        };
        for event in events.values().filter(|e| e["Type"] == "HttpApi") {
            let p = &event["Properties"];
            if p.get("Auth").is_some() {
                assert_eq!(p["Auth"], json!({"Authorizer": "NONE"}), "{p}");
                open.push(p["Path"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    open.sort();
    assert_eq!(open, ["/", "/console/{file}", "/health", "/openapi.json"]);
    let env = &t["Globals"]["Function"]["Environment"]["Variables"];
    assert!(is_ref(&env["CRANE_TENANT_CLAIM"], "TenantClaim"));
}

#[test]
fn get_run_may_only_read() {
    let grants = grants_of("GetRunFunction");
    assert!(
        !grants.statements.is_empty(),
        "GetRunFunction has no policy"
    );
    assert!(
        grants.managed.is_empty() && grants.templates.is_empty(),
        "GetRunFunction must use explicit read-only statements, not {:?} / {:?}",
        grants.managed,
        grants.templates
    );
    let writes = [
        "put",
        "update",
        "delete",
        "write",
        "transact",
        "batchwrite",
        "create",
        "send",
        "start",
        "invoke",
        "conditioncheck",
        "purge",
        "publish",
    ];
    for s in &grants.statements {
        for action in actions(s) {
            let verb = action.split(':').nth(1).unwrap_or("").to_lowercase();
            assert!(
                !writes
                    .iter()
                    .any(|w| verb.starts_with(w) || verb.contains("write")),
                "get-run must be read-only, but is allowed {action}"
            );
            assert!(
                [
                    "dynamodb:GetItem",
                    "dynamodb:Query",
                    "dynamodb:BatchGetItem"
                ]
                .contains(&action.as_str()),
                "get-run is allowed {action}, which is not a DynamoDB read"
            );
        }
    }
}

#[test]
fn whoever_lists_runs_queries_the_one_index_and_may_batch_read_only_the_runs_table() {
    let runs_arn = json!({"Fn::GetAtt": ["RunsTable", "Arn"]});
    let by_created = json!({"Fn::Sub": "${RunsTable.Arn}/index/by_created"});
    let mut listers = Vec::new();
    for (id, _) in functions() {
        let g = grants_of(id);
        for s in &g.statements {
            for r in resource_list(&s["Resource"]) {
                let text = r.to_string();
                assert!(
                    !text.contains("/index/") || r == &by_created,
                    "{id}: {r} names an index other than by_created"
                );
            }
        }
        let batch_reads: Vec<&Value> = allowed(&g, "dynamodb:BatchGetItem")
            .into_iter()
            .flat_map(resource_list)
            .collect();
        assert!(
            batch_reads.iter().all(|r| **r == runs_arn),
            "{id} may BatchGetItem only the runs table: {batch_reads:?}"
        );
        let queries_index = allowed(&g, "dynamodb:Query")
            .into_iter()
            .flat_map(resource_list)
            .any(|r| r == &by_created);
        if queries_index {
            assert!(
                !batch_reads.is_empty(),
                "{id} lists runs on by_created but may not read their views (BatchGetItem)"
            );
            listers.push(id);
        }
    }
    listers.sort_unstable();
    assert_eq!(
        listers,
        ["CreateRunFunction", "GetRunFunction"],
        "create-run (GET /health, the cap on runs in flight) and get-run (GET /runs)"
    );
}

/// A resource naming everything (`*`, or an ARN pattern with a wildcard that is not a
/// table's `/index/*` or `/stream/*`).
fn is_wildcard(resource: &Value) -> bool {
    let text = match resource {
        Value::String(s) => s.clone(),
        Value::Object(m) => match m.get("Fn::Sub") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(a)) => a.first().and_then(Value::as_str).unwrap_or("").to_owned(),
            _ => return false,
        },
        _ => return false,
    };
    let scoped = text
        .trim_end_matches("/index/*")
        .trim_end_matches("/stream/*");
    scoped.contains('*')
}

#[test]
fn data_plane_actions_are_scoped_to_named_resources() {
    let mut principals: Vec<&str> = functions().iter().map(|(id, _)| *id).collect();
    principals.extend(
        of_type("AWS::Serverless::StateMachine")
            .iter()
            .map(|(id, _)| *id),
    );
    for id in principals {
        let grants = grants_of(id);
        assert!(
            grants.managed.is_empty(),
            "{id} attaches managed policies {:?}: write scoped statements instead",
            grants.managed
        );
        for s in &grants.statements {
            let data_plane: Vec<String> = actions(s)
                .into_iter()
                .filter(|a| {
                    [
                        "dynamodb:",
                        "sqs:",
                        "states:",
                        "lambda:",
                        "bedrock:",
                        "secretsmanager:",
                    ]
                    .iter()
                    .any(|p| a.starts_with(p))
                })
                .collect();
            if data_plane.is_empty() {
                continue;
            }
            assert!(
                s.get("Resource").is_some(),
                "{id}: statement allowing {data_plane:?} has no Resource"
            );
            // A profile's foundation model in every region (`bedrock:*::foundation-model/
            // <one model>`), usable only through that inference profile.
            let through_profile = s["Condition"]["StringEquals"]
                .get("bedrock:InferenceProfileArn")
                .is_some();
            for r in resource_list(&s["Resource"]) {
                let one_model_anywhere = r["Fn::Sub"][0]
                    .as_str()
                    .and_then(|t| t.split_once(":bedrock:*::foundation-model/"))
                    .is_some_and(|(_, model)| !model.contains('*'));
                if through_profile && one_model_anywhere {
                    continue;
                }
                assert!(
                    !is_wildcard(r),
                    "{id}: {data_plane:?} is allowed on {r}; name the exact resource"
                );
            }
        }
    }
    // Only SAM templates whose parameters name one resource.
    let sm = grants_of("SagaStateMachine");
    assert_eq!(
        sm.templates,
        vec![(
            "LambdaInvokePolicy".to_owned(),
            json!({"FunctionName": {"Ref": "CompensateFunction"}})
        )],
        "the saga may invoke the compensate function and nothing else"
    );
}

#[test]
fn each_function_gets_exactly_the_writes_it_needs() {
    let events_arn = json!({"Fn::GetAtt": ["EventsTable", "Arn"]});
    // Appending events (single put or transaction) is only for these three + create-run.
    for id in [
        "CreateRunFunction",
        "StepWorkerFunction",
        "CompensateFunction",
    ] {
        let g = grants_of(id);
        assert!(
            allowed(&g, "dynamodb:PutItem")
                .iter()
                .any(|r| resource_list(r).contains(&&events_arn)),
            "{id} must be allowed to append events"
        );
    }
    // The reactor reads the log, writes only the view, dispatches, and starts sagas.
    let reactor = grants_of("EventReactorFunction");
    for r in allowed(&reactor, "dynamodb:PutItem") {
        assert!(
            is_get_att(r, "RunsTable", "Arn"),
            "the reactor may only put run views, not {r}"
        );
    }
    let start: Vec<&Value> = allowed(&reactor, "states:StartExecution");
    assert!(
        !start.is_empty() && start.iter().all(|r| is_ref(r, "SagaStateMachine")),
        "the reactor must be allowed states:StartExecution on SagaStateMachine only: {start:?}"
    );
    let sends: Vec<&Value> = allowed(&reactor, "sqs:SendMessage");
    for queue in ["StepQueue", "StreamFailureQueue"] {
        assert!(
            sends
                .iter()
                .flat_map(|r| resource_list(r))
                .any(|r| is_get_att(r, queue, "Arn")),
            "the reactor must be allowed sqs:SendMessage on {queue}"
        );
    }
    // Nobody else starts sagas.
    for (id, _) in functions() {
        if id != "EventReactorFunction" {
            assert!(
                allowed(&grants_of(id), "states:StartExecution").is_empty(),
                "{id} must not start sagas"
            );
        }
    }
    // Bedrock and the LLM key: create-run only, and only when configured (what exactly
    // each configuration grants is checked on the rendered template, tests/deploy.rs).
    for (id, _) in functions() {
        let g = grants_of(id);
        for action in [
            "bedrock:InvokeModel",
            "secretsmanager:GetSecretValue",
            "kms:Decrypt",
        ] {
            assert!(
                id == "CreateRunFunction" || allowed(&g, action).is_empty(),
                "{id} must not be allowed {action}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Functions, triggers, tables, alarms
// ---------------------------------------------------------------------------

#[test]
fn every_function_traces_logs_json_and_is_built_from_its_package() {
    for (id, f) in functions() {
        assert_eq!(
            function_prop(f, "Tracing"),
            Some(&json!("Active")),
            "{id}: X-Ray tracing must be Active"
        );
        let log_format = f["Properties"]["LoggingConfig"]
            .get("LogFormat")
            .or_else(|| template()["Globals"]["Function"]["LoggingConfig"].get("LogFormat"));
        assert_eq!(log_format, Some(&json!("JSON")), "{id}: logs must be JSON");
        assert_eq!(
            function_prop(f, "Runtime"),
            Some(&json!("provided.al2023")),
            "{id}"
        );
        assert_eq!(
            function_prop(f, "Handler"),
            Some(&json!("bootstrap")),
            "{id}"
        );
        assert_eq!(
            function_prop(f, "Architectures"),
            Some(&json!([{"Ref": "Architecture"}])),
            "{id}: the architecture is the Architecture parameter"
        );
        assert_eq!(f["Metadata"]["BuildMethod"], "rust-cargolambda", "{id}");
        // folder == package == binary, logical id == PascalCase + "Function".
        let binary = f["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .unwrap_or_else(|| panic!("{id}: Metadata.BuildProperties.Binary is missing"));
        let pascal: String = binary
            .split('-')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(
            id,
            format!("{pascal}Function"),
            "{id} builds binary {binary}"
        );
        assert!(
            repo()
                .join("functions")
                .join(binary)
                .join("Cargo.toml")
                .is_file(),
            "{id} builds functions/{binary}, which does not exist"
        );
        assert_eq!(
            f["Properties"]["CodeUri"], ".",
            "{id}: CodeUri is the workspace root"
        );
    }
}

fn mapping_for(function: &str) -> &'static Value {
    let found: Vec<_> = of_type("AWS::Lambda::EventSourceMapping")
        .into_iter()
        .filter(|(_, m)| is_ref(&m["Properties"]["FunctionName"], function))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{function} needs exactly one AWS::Lambda::EventSourceMapping (SAM `Events` of type \
         SQS/DynamoDB would attach AWS managed policies with Resource \"*\")"
    );
    &found[0].1["Properties"]
}

#[test]
fn step_queue_feeds_the_worker_with_partial_batch_failures_and_a_dead_letter_queue() {
    let m = mapping_for("StepWorkerFunction");
    assert!(is_get_att(&m["EventSourceArn"], "StepQueue", "Arn"), "{m}");
    assert_eq!(
        m["FunctionResponseTypes"],
        json!(["ReportBatchItemFailures"])
    );
    assert_eq!(m["BatchSize"], 10);
    assert_eq!(m["MaximumBatchingWindowInSeconds"], 0);

    let queue = &resource("StepQueue")["Properties"];
    let visibility = queue["VisibilityTimeout"]
        .as_u64()
        .expect("StepQueue VisibilityTimeout");
    let timeout = function_prop(resource("StepWorkerFunction"), "Timeout")
        .and_then(Value::as_u64)
        .expect("StepWorkerFunction Timeout");
    assert!(
        visibility >= 6 * timeout,
        "StepQueue VisibilityTimeout {visibility} s must be at least 6 x the worker's timeout ({timeout} s)"
    );
    assert!(is_get_att(
        &queue["RedrivePolicy"]["deadLetterTargetArn"],
        "StepDeadLetterQueue",
        "Arn"
    ));
    assert_eq!(queue["RedrivePolicy"]["maxReceiveCount"], 5);
    assert_eq!(queue["SqsManagedSseEnabled"], true);
    let dlq = &resource("StepDeadLetterQueue")["Properties"];
    assert_eq!(dlq["MessageRetentionPeriod"], 1_209_600, "14 days");
    assert_eq!(dlq["SqsManagedSseEnabled"], true);
    assert_queue_depth_alarm("StepDeadLetterQueue");
}

fn assert_queue_depth_alarm(queue: &str) {
    let alarmed = of_type("AWS::CloudWatch::Alarm").iter().any(|(_, a)| {
        let p = &a["Properties"];
        p["Namespace"] == "AWS/SQS"
            && p["MetricName"] == "ApproximateNumberOfMessagesVisible"
            && p["Threshold"] == 0
            && p["ComparisonOperator"] == "GreaterThanThreshold"
            && p["Dimensions"].as_array().is_some_and(|d| {
                d.iter()
                    .any(|d| is_get_att(&d["Value"], queue, "QueueName"))
            })
    });
    assert!(alarmed, "no alarm on {queue} depth > 0");
}

#[test]
fn events_stream_drives_the_reactor_with_bisection_bounded_retries_and_a_failure_queue() {
    let table = &resource("EventsTable");
    assert_eq!(table["DeletionPolicy"], "Retain");
    let p = &table["Properties"];
    assert_eq!(p["StreamSpecification"]["StreamViewType"], "NEW_IMAGE");
    assert_eq!(
        p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
        true
    );
    assert_eq!(p["BillingMode"], "PAY_PER_REQUEST");
    assert_eq!(
        p["KeySchema"],
        json!([{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "seq", "KeyType": "RANGE"}])
    );

    let m = mapping_for("EventReactorFunction");
    assert!(
        is_get_att(&m["EventSourceArn"], "EventsTable", "StreamArn"),
        "{m}"
    );
    assert_eq!(m["StartingPosition"], "TRIM_HORIZON");
    assert_eq!(m["BisectBatchOnFunctionError"], true);
    assert_eq!(
        m["FunctionResponseTypes"],
        json!(["ReportBatchItemFailures"])
    );
    let retries = m["MaximumRetryAttempts"]
        .as_i64()
        .expect("MaximumRetryAttempts");
    assert!(
        (0..=100).contains(&retries),
        "retries must be bounded: {retries}"
    );
    assert!(m["MaximumRecordAgeInSeconds"]
        .as_i64()
        .is_some_and(|s| s > 0));
    assert!(is_get_att(
        &m["DestinationConfig"]["OnFailure"]["Destination"],
        "StreamFailureQueue",
        "Arn"
    ));
    assert_queue_depth_alarm("StreamFailureQueue");
}

#[test]
fn the_reactors_stream_filter_is_the_one_the_code_applies() {
    let m = mapping_for("EventReactorFunction");
    let filters = m["FilterCriteria"]["Filters"]
        .as_array()
        .expect("the stream trigger has filters");
    let patterns: Vec<&str> = filters
        .iter()
        .map(|f| f["Pattern"].as_str().expect("a pattern is a JSON string"))
        .collect();
    assert_eq!(
        patterns,
        [crane::adapters::aws::stream::REACTOR_FILTER],
        "EventReactorStreamTrigger must filter exactly as passes_reactor_filter does"
    );
}

#[test]
fn tables_have_the_keys_the_adapters_use() {
    let key = |id: &str| resource(id)["Properties"]["KeySchema"].clone();
    assert_eq!(
        key("RunsTable"),
        json!([{"AttributeName": "pk", "KeyType": "HASH"}])
    );
    assert_eq!(
        key("TodosTable"),
        json!([{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}])
    );
    assert_eq!(
        key("IdempotencyTable"),
        json!([{"AttributeName": "pk", "KeyType": "HASH"}])
    );
    assert_eq!(
        key("BreakersTable"),
        json!([{"AttributeName": "tool", "KeyType": "HASH"}])
    );
    let ttl = &resource("IdempotencyTable")["Properties"]["TimeToLiveSpecification"];
    assert_eq!(
        ttl,
        &json!({"AttributeName": "expires_at", "Enabled": true})
    );
    let runs = &resource("RunsTable")["Properties"];
    let indexes: Vec<(String, Value, Value)> = runs["GlobalSecondaryIndexes"]
        .as_array()
        .expect("RunsTable GSIs")
        .iter()
        .map(|i| {
            (
                i["IndexName"].as_str().unwrap_or("").to_owned(),
                i["KeySchema"].clone(),
                i["Projection"].clone(),
            )
        })
        .collect();
    // One lean index (what provision::create_tables creates): the run body never reaches it.
    assert_eq!(
        indexes,
        vec![(
            "by_created".to_owned(),
            json!([{"AttributeName": "tenant", "KeyType": "HASH"}, {"AttributeName": "created_sk", "KeyType": "RANGE"}]),
            json!({"ProjectionType": "INCLUDE", "NonKeyAttributes": ["status"]}),
        )]
    );
    assert_eq!(
        runs["AttributeDefinitions"],
        json!([
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "tenant", "AttributeType": "S"},
            {"AttributeName": "created_sk", "AttributeType": "S"},
        ]),
        "exactly the key attributes"
    );
    for (id, t) in of_type("AWS::DynamoDB::Table") {
        assert_eq!(t["Properties"]["BillingMode"], "PAY_PER_REQUEST", "{id}");
        assert_eq!(
            t["Properties"]["SSESpecification"]["SSEEnabled"], true,
            "{id}"
        );
    }
}

#[test]
fn failures_are_alarmed() {
    let alarms = of_type("AWS::CloudWatch::Alarm");
    let on = |namespace: &str, metric: &str, dim_ok: &dyn Fn(&Value) -> bool| {
        alarms.iter().any(|(_, a)| {
            let p = &a["Properties"];
            p["Namespace"] == namespace
                && p["MetricName"] == metric
                && p["Dimensions"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|d| dim_ok(&d["Value"])))
        })
    };
    assert!(
        on("AWS/States", "ExecutionsFailed", &|v| is_ref(
            v,
            "SagaStateMachine"
        )),
        "no alarm on failed saga executions"
    );
    assert!(
        on("AWS/ApiGateway", "5xx", &|v| is_ref(v, "HttpApi")),
        "no alarm on API 5xx"
    );
    for (id, _) in functions() {
        assert!(
            on("AWS/Lambda", "Errors", &|v| is_ref(v, id)),
            "no Errors alarm for {id}"
        );
    }
}

#[test]
fn saga_state_machine_is_standard_traced_logged_and_fully_substituted() {
    let sm = &resource("SagaStateMachine")["Properties"];
    assert_eq!(sm["Type"], "STANDARD");
    assert_eq!(sm["Tracing"]["Enabled"], true);
    assert_eq!(sm["Logging"]["Level"], "ERROR");
    assert_eq!(sm["Logging"]["IncludeExecutionData"], false);
    let uri = sm["DefinitionUri"]
        .as_str()
        .expect("DefinitionUri is a local file");
    let asl = std::fs::read_to_string(repo().join(uri))
        .unwrap_or_else(|e| panic!("DefinitionUri {uri}: {e}"));
    let substitutions: BTreeSet<&str> = sm["DefinitionSubstitutions"]
        .as_object()
        .expect("DefinitionSubstitutions")
        .keys()
        .map(String::as_str)
        .collect();
    let placeholders: BTreeSet<&str> = asl
        .split("${")
        .skip(1)
        .filter_map(|rest| rest.split('}').next())
        .collect();
    assert_eq!(
        placeholders, substitutions,
        "every ${{...}} in {uri} is substituted"
    );
    assert!(is_get_att(
        &sm["DefinitionSubstitutions"]["CompensateFunctionArn"],
        "CompensateFunction",
        "Arn"
    ));
}

#[test]
fn dashboard_in_the_template_is_infra_dashboards_crane_json() {
    let body = resource("Dashboard")["Properties"]["DashboardBody"]["Fn::Sub"]
        .as_str()
        .expect("DashboardBody is a !Sub string");
    let inline: Value = serde_json::from_str(body).expect("DashboardBody is JSON");
    let file = std::fs::read_to_string(repo().join("infra/dashboards/crane.json"))
        .expect("infra/dashboards/crane.json");
    let file: Value = serde_json::from_str(&file).expect("crane.json is JSON");
    assert_eq!(
        inline, file,
        "template.yaml's DashboardBody differs from infra/dashboards/crane.json: paste the file in"
    );
    let text = body.to_owned();
    for metric in [
        "StepLatency",
        "StepRetries",
        "BreakerTransitions",
        "Compensations",
    ] {
        assert!(
            text.contains(metric),
            "the dashboard does not graph {metric}"
        );
    }
    let outputs = template()["Outputs"].as_object().expect("Outputs");
    for key in [
        "ApiUrl",
        "SagaStateMachineArn",
        "StepQueueUrl",
        "DashboardUrl",
        "EventsTableName",
    ] {
        assert!(outputs.contains_key(key), "no {key} output");
    }
}

// ---------------------------------------------------------------------------
// The saga in moto's Step Functions interpreter
// ---------------------------------------------------------------------------

/// moto's `lambda-simple` stub hands out queued results first come, first served, per
/// account and region. Each moto test runs its state machine in a region of its own, so
/// sagas started by other tests (in us-east-1) cannot take its queued answers.
const ACCOUNT: &str = "123456789012";

fn moto_endpoint() -> String {
    std::env::var("CRANE_TEST_MOTO_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "CRANE_TEST_MOTO_ENDPOINT is not set: these tests run the saga in moto's Step \
             Functions interpreter. Run ./scripts/test, or start scripts/emulators and \
             `source .cache/emulators.env`."
        )
    })
}

async fn moto_api(http: &reqwest::Client, endpoint: &str, path: &str, body: Value) {
    let url = format!("{endpoint}{path}");
    let res = http
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    assert!(res.status().is_success(), "POST {url}: {}", res.status());
}

/// A saga run to its end: its final status and history.
struct SagaRun {
    status: ExecutionStatus,
    output: Option<Value>,
    history: Vec<HistoryEvent>,
}

impl SagaRun {
    fn entered(&self) -> Vec<&str> {
        self.history
            .iter()
            .filter_map(|e| e.state_entered_event_details())
            .map(|d| d.name())
            .collect()
    }

    /// The Lambda payloads sent, in order.
    fn payloads(&self) -> Vec<Value> {
        self.history
            .iter()
            .filter_map(|e| e.task_scheduled_event_details())
            .map(|d| {
                let params: Value =
                    serde_json::from_str(d.parameters()).expect("task parameters are JSON");
                params["Payload"].clone()
            })
            .collect()
    }

    fn map_iterations(&self) -> Vec<i32> {
        self.history
            .iter()
            .filter(|e| e.r#type() == &HistoryEventType::MapIterationStarted)
            .filter_map(|e| e.map_iteration_started_event_details())
            .map(|d| d.index())
            .collect()
    }
}

/// Create the saga from the repository's ASL in `region`, queue `begin`'s answer, run it
/// with `input`, and wait (bounded) for it to end. The later tasks get moto's default
/// answer: their own payload, echoed.
async fn run_saga(region: &str, begin_answer: Value, input: &Value) -> SagaRun {
    let endpoint = moto_endpoint();
    let http = reqwest::Client::new();
    // Idempotent; scripts/test sets the same configuration.
    moto_api(
        &http,
        &endpoint,
        "/moto-api/config",
        json!({"stepfunctions": {"execute_state_machine": true}, "lambda": {"use_docker": false}}),
    )
    .await;

    let asl = std::fs::read_to_string(repo().join("infra/statemachines/compensation.asl.json"))
        .expect("compensation.asl.json");
    let function_arn = format!("arn:aws:lambda:{region}:{ACCOUNT}:function:crane-compensate");
    let definition = asl
        .replace("${CompensateFunctionArn}", &function_arn)
        .replace("${Partition}", "aws");
    let sfn = crane_tests::clients::sfn_in(&endpoint, region);
    let name = format!("crane-saga-{}", uuid::Uuid::new_v4().simple());
    let machine = sfn
        .create_state_machine()
        .name(&name)
        .definition(definition)
        .role_arn(format!("arn:aws:iam::{ACCOUNT}:role/crane-saga"))
        .r#type(aws_sdk_sfn::types::StateMachineType::Standard)
        .send()
        .await
        .expect("CreateStateMachine in moto");

    moto_api(
        &http,
        &endpoint,
        "/moto-api/static/lambda-simple/response",
        json!({"results": [begin_answer.to_string()], "region": region, "account_id": ACCOUNT}),
    )
    .await;

    let execution = sfn
        .start_execution()
        .state_machine_arn(machine.state_machine_arn())
        // As the reactor does: the run id names the execution.
        .name(input["run_id"].as_str().expect("input has run_id"))
        .input(input.to_string())
        .send()
        .await
        .expect("StartExecution in moto");
    let arn = execution.execution_arn().to_owned();

    let deadline = Instant::now() + Duration::from_secs(30);
    let described = loop {
        let d = sfn
            .describe_execution()
            .execution_arn(&arn)
            .send()
            .await
            .expect("DescribeExecution");
        if d.status() != &ExecutionStatus::Running {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "the saga was still RUNNING after 30 s: is moto's Step Functions interpreter on?"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let history = sfn
        .get_execution_history()
        .execution_arn(&arn)
        .max_results(1000)
        .send()
        .await
        .expect("GetExecutionHistory");
    assert!(history.next_token().is_none(), "history fits one page");
    SagaRun {
        status: described.status().clone(),
        output: described
            .output()
            .map(|o| serde_json::from_str(o).expect("execution output is JSON")),
        history: history.events().to_vec(),
    }
}

#[tokio::test]
async fn saga_undoes_completed_steps_one_by_one_in_the_order_begin_gives() {
    let run_id = uuid::Uuid::new_v4().to_string();
    let input = json!({"tenant": "default", "run_id": run_id, "correlation_id": "c-1"});
    // What `begin` answers for a run whose steps completed s1, s2, s3 before it failed.
    let order = ["s3", "s2", "s1"];
    let begin = json!({"tenant": "default", "run_id": run_id, "steps": order});
    let run = run_saga("eu-north-1", begin, &input).await;

    assert_eq!(
        run.status,
        ExecutionStatus::Succeeded,
        "history: {:#?}",
        run.history
    );
    assert_eq!(
        run.entered(),
        [
            "Begin",
            "AnythingToUndo",
            "UndoSteps",
            "UndoStep",
            "UndoStep",
            "UndoStep",
            "Finish",
            "Done"
        ]
    );
    assert_eq!(run.map_iterations(), [0, 1, 2]);

    let payloads = run.payloads();
    assert_eq!(
        payloads.len(),
        5,
        "begin, three steps, finish: {payloads:#?}"
    );
    assert_eq!(
        payloads[0],
        json!({"action": "begin", "tenant": "default", "run_id": run_id, "correlation_id": "c-1"})
    );
    for (payload, step) in payloads[1..4].iter().zip(order) {
        assert_eq!(
            payload,
            &json!({
                "action": "compensate_step",
                "tenant": "default",
                "run_id": run_id,
                "correlation_id": "c-1",
                "step_id": step,
                "attempt": 0
            })
        );
    }
    assert_eq!(
        payloads[4],
        json!({"action": "finish", "tenant": "default", "run_id": run_id, "correlation_id": "c-1"}),
        "a saga that undid everything finishes without a failure"
    );

    // The original input survives every state.
    let output = run.output.expect("a succeeded execution has output");
    assert_eq!(output["tenant"], "default");
    assert_eq!(output["run_id"], run_id.as_str());
    assert_eq!(output["plan"]["steps"], json!(order));
}

#[tokio::test]
async fn saga_with_nothing_to_undo_goes_straight_to_finish() {
    let run_id = uuid::Uuid::new_v4().to_string();
    let input = json!({"tenant": "acme", "run_id": run_id, "correlation_id": "c-2"});
    let begin = json!({"tenant": "acme", "run_id": run_id, "steps": []});
    let run = run_saga("eu-west-3", begin, &input).await;

    assert_eq!(
        run.status,
        ExecutionStatus::Succeeded,
        "history: {:#?}",
        run.history
    );
    assert_eq!(run.entered(), ["Begin", "AnythingToUndo", "Finish", "Done"]);
    let actions: Vec<Value> = run.payloads().iter().map(|p| p["action"].clone()).collect();
    assert_eq!(actions, [json!("begin"), json!("finish")]);
}
