//! Handler tests: every sample event under `events/` fed to its Lambda handler, over an
//! App on in-memory stores (no emulators). The API samples go through `lambda_http`'s own
//! request and response conversion; the SQS, stream and saga samples through the
//! handlers the functions run.

use std::collections::BTreeMap;

use aws_lambda_events::dynamodb::Event as StreamEvent;
use aws_lambda_events::sqs::SqsEvent;
use chrono::{Duration, Utc};
use crane::domain::{Effect, Event, EventRecord, RunKey, RunStatus, StepStatus};

use crane::entrypoints::{http, saga, sqs, stream};
use crane::ports::{EventStore, RunViewStore, TodoStore};
use crane_tests::events::{
    sample, samples, seed_from_stream_sample, stream_sample_records, MemoryApp,
    RecordingDispatcher, RecordingRedelivery, RecordingSaga, RUN_A, RUN_B, RUN_B_PROMPT, TENANT,
};
use serde_json::{json, Value};

async fn invoke(m: &MemoryApp, event: Value) -> (u16, Value, Value) {
    let resp = http::invoke(m.app.clone(), event).await.expect("answered");
    let status = resp["statusCode"].as_u64().expect("statusCode") as u16;
    let body = match resp["body"].as_str() {
        Some(text) if !text.is_empty() => serde_json::from_str(text).expect("a JSON body"),
        _ => Value::Null,
    };
    (status, resp["headers"].clone(), body)
}

/// The API samples and the status each must get, over an app holding run A.
fn expected_statuses() -> BTreeMap<(&'static str, &'static str), u16> {
    BTreeMap::from([
        (("create-run", "post-runs"), 201),
        (("create-run", "post-runs-idempotency-key"), 201),
        (("create-run", "post-runs-malformed-json"), 400),
        (("create-run", "post-runs-empty-prompt"), 422),
        (("create-run", "post-runs-not-understood"), 422),
        (("create-run", "post-cancel"), 202),
        (("create-run", "post-approve"), 409),
        (("create-run", "health"), 200),
        (("create-run", "post-runs-tenant-b"), 201),
        (("create-run", "post-runs-unauthorized"), 401),
        (("get-run", "get-run-unauthorized"), 401),
        (("get-run", "get-run-other-tenant"), 404),
        (("get-run", "list-runs-other-tenant"), 200),
        (("get-run", "list-runs-iam"), 200),
        (("get-run", "list-runs"), 200),
        (("get-run", "list-runs-invalid-status"), 422),
        (("get-run", "get-run"), 200),
        (("get-run", "get-run-at"), 200),
        (("get-run", "get-run-not-found"), 404),
        (("get-run", "get-run-events"), 200),
        (("get-run", "get-run-events-long-poll"), 200),
        (("get-run", "get-run-prefer-wait"), 200),
        (("get-run", "list-todos"), 200),
        (("get-run", "list-tools"), 200),
        (("get-run", "unrouted"), 404),
        (("get-run", "unrouted-method"), 405),
        (("get-run", "openapi"), 200),
    ])
}

#[tokio::test]
async fn given_every_api_sample_when_invoked_then_each_gets_its_status_and_a_json_body() {
    let expected = expected_statuses();
    let mut seen = 0;
    for function in ["create-run", "get-run"] {
        for (case, event) in samples(function) {
            let want = expected
                .iter()
                .find(|((f, c), _)| *f == function && *c == case)
                .map(|(_, s)| *s)
                .unwrap_or_else(|| panic!("add {function}/{case} to expected_statuses"));
            let m = MemoryApp::new();
            seed_from_stream_sample(&m).await;
            let (status, _, body) = invoke(&m, event).await;
            assert_eq!(status, want, "{function}/{case}: {body}");
            assert!(body.is_object(), "{function}/{case}: JSON object body");
            if status >= 400 {
                assert!(
                    body["error"]["code"].is_string() && body["error"]["message"].is_string(),
                    "{function}/{case}: error body {body}"
                );
            }
            seen += 1;
        }
    }
    assert_eq!(seen, expected.len(), "every listed sample exists");
}

#[tokio::test]
async fn given_the_post_runs_sample_when_invoked_then_the_seed_dag_is_planned_with_its_correlation_id(
) {
    let m = MemoryApp::new();
    let (status, headers, body) = invoke(&m, sample("create-run", "post-runs")).await;
    assert_eq!(status, 201);
    assert_eq!(body["status"], "pending");
    let deps: Vec<Value> = body["plan"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["depends_on"].clone())
        .collect();
    assert_eq!(
        deps,
        vec![json!([]), json!([]), json!([]), json!(["s1", "s2", "s3"])]
    );
    assert_eq!(headers["x-correlation-id"], "corr-sample-0001");
    let run_id = body["run_id"].as_str().expect("run_id");
    assert_eq!(headers["location"], format!("/runs/{run_id}"));
    let effects = m.take_effects();
    assert_eq!(effects.len(), 3, "the outbox holds the three level-0 jobs");
}

#[tokio::test]
async fn given_a_request_without_correlation_id_when_invoked_then_api_gateways_request_id_is_used()
{
    let m = MemoryApp::new();
    let event = sample("create-run", "post-runs-idempotency-key");
    let request_id = event["requestContext"]["requestId"].clone();
    let (status, headers, body) = invoke(&m, event.clone()).await;
    assert_eq!(status, 201);
    assert_eq!(headers["x-correlation-id"], request_id);
    let (again, headers, replay) = invoke(&m, event).await;
    assert_eq!(again, 201);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(replay["run_id"], body["run_id"]);
}

#[tokio::test]
async fn given_the_read_samples_when_invoked_then_they_show_run_a() {
    let m = MemoryApp::new();
    seed_from_stream_sample(&m).await;
    let (_, _, run) = invoke(&m, sample("get-run", "get-run")).await;
    assert_eq!(run["run_id"], RUN_A);
    assert_eq!(run["steps"].as_array().map(Vec::len), Some(4));
    let (_, _, at) = invoke(&m, sample("get-run", "get-run-at")).await;
    assert_eq!(at["run_id"], RUN_A);
    assert_eq!(at["last_seq"], 2);
    let (_, _, events) = invoke(&m, sample("get-run", "get-run-events")).await;
    let types: Vec<&str> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(types, vec!["RunCreated", "PlanGenerated"]);
    let (_, _, list) = invoke(&m, sample("get-run", "list-runs")).await;
    assert_eq!(list["runs"][0]["run_id"], RUN_A);
    let (_, _, tools) = invoke(&m, sample("get-run", "list-tools")).await;
    assert!(tools["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .all(|t| t["breaker"].is_object()));
    let (_, _, cancelled) = invoke(&m, sample("create-run", "post-cancel")).await;
    assert_eq!(cancelled["cancel_requested"], true);
}

#[tokio::test]
async fn given_two_tenants_in_the_authorizer_context_when_invoked_then_each_sees_only_its_runs() {
    let m = MemoryApp::new();
    seed_from_stream_sample(&m).await;
    let (status, _, b_run) = invoke(&m, sample("create-run", "post-runs-tenant-b")).await;
    assert_eq!(status, 201, "{b_run}");
    let (status, _, other) = invoke(&m, sample("get-run", "get-run-other-tenant")).await;
    assert_eq!(status, 404, "tenant-b reading run A: {other}");
    let (_, _, b_list) = invoke(&m, sample("get-run", "list-runs-other-tenant")).await;
    let b_ids: Vec<&Value> = b_list["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| &r["run_id"])
        .collect();
    assert!(!b_ids.contains(&&json!(RUN_A)), "{b_list}");
    assert!(
        m.app
            .get_run(&RunKey::new(
                "tenant-b",
                b_run["run_id"].as_str().expect("id")
            ))
            .await
            .is_ok(),
        "B's run is stored under tenant-b"
    );
    let (_, _, a_list) = invoke(&m, sample("get-run", "list-runs")).await;
    assert!(!a_list
        .to_string()
        .contains(b_run["run_id"].as_str().expect("id")));
    let (_, _, iam_list) = invoke(&m, sample("get-run", "list-runs-iam")).await;
    assert_eq!(
        iam_list["runs"],
        json!([]),
        "the IAM principal is a tenant of its own"
    );
}

#[tokio::test]
async fn given_no_verified_identity_when_invoked_then_401_with_www_authenticate_even_with_headers()
{
    let m = MemoryApp::new();
    seed_from_stream_sample(&m).await;
    let mut event = sample("get-run", "get-run-unauthorized");
    // A client-chosen header never names the tenant.
    event["headers"]["x-tenant"] = json!("default");
    event["headers"]["authorization"] = json!("Bearer anything");
    let (status, headers, body) = invoke(&m, event).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _, _) = invoke(&m, sample("create-run", "post-runs-unauthorized")).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn given_a_named_stage_when_invoked_then_the_stage_prefix_is_not_part_of_the_route() {
    let m = MemoryApp::new();
    let mut event = sample("create-run", "health");
    event["requestContext"]["stage"] = json!("prod");
    event["rawPath"] = json!("/prod/health");
    let (status, _, body) = invoke(&m, event).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
}

// ---- step-worker -------------------------------------------------------------------

fn sqs_sample() -> SqsEvent {
    serde_json::from_value(sample("step-worker", "batch")).expect("an SQS event")
}

fn message_id(event: &SqsEvent, i: usize) -> String {
    event.records[i].message_id.clone().expect("messageId")
}

#[tokio::test]
async fn given_the_sample_sqs_batch_when_handled_then_only_the_malformed_message_fails_and_each_step_runs_once(
) {
    let m = MemoryApp::new();
    seed_from_stream_sample(&m).await;
    m.take_effects();
    let event = sqs_sample();
    let malformed = message_id(&event, 4);
    let dispatcher = RecordingDispatcher::default();
    let redelivery = RecordingRedelivery::default();

    let response = sqs::handle_step_batch(&m.app, &dispatcher, &redelivery, event, None).await;
    assert!(
        redelivery.calls().is_empty(),
        "a body that is not a job is no infrastructure hiccup: it waits out the visibility \
         timeout on its way to the DLQ"
    );

    let failed: Vec<String> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(failed, vec![malformed]);
    let run = m.run(RUN_A).await;
    for id in ["s1", "s2", "s3"] {
        let step = run.steps.iter().find(|s| s.id == id).expect("step");
        assert_eq!(step.status, StepStatus::Completed, "{id}");
        assert_eq!(step.attempts, 1, "{id} ran once despite the duplicate");
    }
    // The duplicate of s1 either found it done or was deferred behind its lease; the
    // worker that completed level 0 sent level 1 (s4) itself, once.
    let sent: Vec<String> = dispatcher
        .jobs()
        .iter()
        .map(|(j, _)| j.step_id.clone())
        .collect();
    assert!(sent.iter().all(|s| s == "s1" || s == "s4"), "{sent:?}");
    assert_eq!(sent.iter().filter(|s| *s == "s4").count(), 1, "{sent:?}");
    // Level 1 is next: the outbox (the stream, in the cloud) holds s4 as well (the
    // appends of a worker that sends its jobs itself are left out of the reactor's
    // stream by its filter, see `engine::wakes_reactor`).
    let next: Vec<String> = m
        .take_effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::Dispatch { job, .. } => Some(job.step_id),
            _ => None,
        })
        .collect();
    assert_eq!(next, vec!["s4".to_owned()]);
}

/// Run A with s1 claimed by another worker whose lease has not expired.
async fn run_a_with_s1_claimed(m: &MemoryApp) {
    let state = seed_from_stream_sample(m).await;
    let started = EventRecord::new(
        state.last_seq + 1,
        Utc::now(),
        Event::StepStarted {
            step_id: "s1".into(),
            attempt: 1,
            lease_ms: 60_000,
        },
    );
    m.append(&RunKey::new(TENANT, RUN_A), &[started]).await;
}

/// An event store that is down (throttled, timing out): every call fails as unavailable.
struct DownEvents;

#[async_trait::async_trait]
impl EventStore for DownEvents {
    async fn append(
        &self,
        _key: &RunKey,
        _events: &[EventRecord],
        _outbox: crane::ports::Outbox<'_>,
    ) -> crane::ports::StoreResult<()> {
        Err(crane::ports::StoreError::unavailable("throttled (test)"))
    }

    async fn load(&self, _key: &RunKey) -> crane::ports::StoreResult<Vec<EventRecord>> {
        Err(crane::ports::StoreError::unavailable("throttled (test)"))
    }
}

#[tokio::test]
async fn given_the_store_is_down_when_jobs_are_handled_then_each_message_comes_back_early_with_backoff(
) {
    let m = MemoryApp::new();
    let down = crane::app::App {
        events: std::sync::Arc::new(DownEvents),
        views: m.store.clone(),
        todos: m.todos.clone(),
        idempotency: m.store.clone(),
        breakers: m.store.clone(),
        registry: crane::tools::Registry::new(m.todos.clone()),
        planner: std::sync::Arc::new(crane::planner::PatternPlanner),
        clock: std::sync::Arc::new(crane::ports::SystemClock),
        settings: m.app.settings.clone(),
    };
    let mut event = sqs_sample();
    event.records.truncate(4); // the four jobs, not the malformed body
    let redelivery = RecordingRedelivery::default();

    let response = sqs::handle_step_batch(
        &down,
        &RecordingDispatcher::default(),
        &redelivery,
        event.clone(),
        None,
    )
    .await;

    assert_eq!(
        response.batch_item_failures.len(),
        4,
        "every job is retried"
    );
    let mut calls = redelivery.calls();
    calls.sort();
    let mut want: Vec<(String, u32, u32)> = event
        .records
        .iter()
        .map(|r| {
            let count: u32 = r.attributes["ApproximateReceiveCount"]
                .parse()
                .expect("count");
            (r.receipt_handle.clone().expect("receipt handle"), count, 0)
        })
        .collect();
    want.sort();
    assert_eq!(calls.len(), want.len(), "{calls:?}");
    for ((handle, seconds), (want_handle, count, _)) in calls.iter().zip(&want) {
        assert_eq!(handle, want_handle);
        let (lo, hi) = (
            sqs::redelivery_secs(*count, 0.0),
            sqs::redelivery_secs(*count, 1.0),
        );
        assert!(
            (lo..=hi).contains(seconds),
            "receive {count}: back in {seconds} s, not {lo}-{hi} s (the queue's 360 s visibility)"
        );
    }
}

fn only_s1(mut event: SqsEvent) -> SqsEvent {
    event.records.truncate(1);
    event
}

#[tokio::test]
async fn given_a_job_whose_step_is_leased_when_handled_then_it_is_deferred_through_the_queue_and_acknowledged(
) {
    let m = MemoryApp::new();
    run_a_with_s1_claimed(&m).await;
    let dispatcher = RecordingDispatcher::default();

    let response = sqs::handle_step_batch(
        &m.app,
        &dispatcher,
        &RecordingRedelivery::default(),
        only_s1(sqs_sample()),
        None,
    )
    .await;

    assert!(response.batch_item_failures.is_empty());
    let jobs = dispatcher.jobs();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].0.step_id, "s1");
    assert!(
        (55_000..=60_000).contains(&jobs[0].1),
        "deferred by the remaining lease, not slept: {} ms",
        jobs[0].1
    );
}

#[tokio::test]
async fn given_the_queue_is_down_when_a_job_must_be_deferred_then_its_message_is_reported() {
    let m = MemoryApp::new();
    run_a_with_s1_claimed(&m).await;
    let dispatcher = RecordingDispatcher::default();
    dispatcher.fail_from_now(true);
    let event = only_s1(sqs_sample());
    let id = message_id(&event, 0);

    let response = sqs::handle_step_batch(
        &m.app,
        &dispatcher,
        &RecordingRedelivery::default(),
        event,
        None,
    )
    .await;

    let failed: Vec<String> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(failed, vec![id]);
}

// ---- event-reactor -----------------------------------------------------------------

fn stream_sample() -> StreamEvent {
    serde_json::from_value(sample("event-reactor", "batch")).expect("a DynamoDB stream event")
}

fn failures(r: &aws_lambda_events::streams::DynamoDbEventResponse) -> Vec<String> {
    r.batch_item_failures
        .iter()
        .filter_map(|f| f.item_identifier.clone())
        .collect()
}

#[tokio::test]
async fn given_the_sample_stream_batch_when_handled_then_the_three_level_0_steps_are_dispatched_and_the_view_written(
) {
    let m = MemoryApp::new();
    seed_from_stream_sample(&m).await;
    let dispatcher = RecordingDispatcher::default();
    let saga = RecordingSaga::default();

    let response = stream::handle_stream_batch(&m.app, &dispatcher, &saga, stream_sample()).await;

    assert!(failures(&response).is_empty());
    let calls = dispatcher.calls.lock().expect("lock").clone();
    assert_eq!(calls.len(), 1, "one dispatch call for the batch");
    let jobs: Vec<(String, u32, u64)> = calls[0]
        .iter()
        .map(|(j, d)| (j.step_id.clone(), j.attempt, *d))
        .collect();
    assert_eq!(
        jobs,
        vec![
            ("s1".into(), 1, 0),
            ("s2".into(), 1, 0),
            ("s3".into(), 1, 0)
        ]
    );
    assert!(calls[0]
        .iter()
        .all(|(j, _)| j.run_id == RUN_A && j.correlation_id == "corr-sample-0001"));
    assert!(saga.started.lock().expect("lock").is_empty());
    let view = m
        .store
        .get(&RunKey::new(TENANT, RUN_A))
        .await
        .expect("view read")
        .expect("view written");
    assert_eq!(view.last_seq, 2);

    // A replay (Lambda retrying the batch) is harmless: same jobs, which workers skip.
    let again = stream::handle_stream_batch(&m.app, &dispatcher, &saga, stream_sample()).await;
    assert!(failures(&again).is_empty());
}

#[tokio::test]
async fn given_a_batch_with_a_run_that_cannot_be_projected_when_handled_then_only_its_first_record_is_reported(
) {
    let m = MemoryApp::new();
    seed_from_stream_sample(&m).await;
    let mut event = serde_json::to_value(stream_sample()).expect("json");
    let mut other = event["Records"].as_array().expect("records").clone();
    for (i, r) in other.iter_mut().enumerate() {
        let image = &mut r["dynamodb"]["NewImage"];
        image["run_id"] = json!({"S": "not-in-the-table"});
        image["pk"] = json!({"S": "default#not-in-the-table"});
        r["dynamodb"]["SequenceNumber"] = json!(format!("2000000000000000000{i}"));
    }
    let first_of_other = other[0]["dynamodb"]["SequenceNumber"].clone();
    event["Records"]
        .as_array_mut()
        .expect("records")
        .extend(other);
    let event: StreamEvent = serde_json::from_value(event).expect("stream event");
    let dispatcher = RecordingDispatcher::default();

    let response =
        stream::handle_stream_batch(&m.app, &dispatcher, &RecordingSaga::default(), event).await;

    assert_eq!(
        failures(&response),
        vec![first_of_other.as_str().expect("seq").to_owned()]
    );
    assert_eq!(
        dispatcher.jobs().len(),
        3,
        "the good run was still dispatched"
    );
}

#[tokio::test]
async fn given_the_queue_is_down_when_the_batch_is_handled_then_the_run_is_retried_from_its_first_record(
) {
    let m = MemoryApp::new();
    seed_from_stream_sample(&m).await;
    let dispatcher = RecordingDispatcher::default();
    dispatcher.fail_from_now(true);
    let first = stream_sample_records()[0].0.clone();

    let response = stream::handle_stream_batch(
        &m.app,
        &dispatcher,
        &RecordingSaga::default(),
        stream_sample(),
    )
    .await;

    assert_eq!(failures(&response), vec![first]);
}

#[tokio::test]
async fn given_modify_and_undecodable_records_when_handled_then_modify_is_ignored_and_the_bad_insert_reported(
) {
    let m = MemoryApp::new();
    seed_from_stream_sample(&m).await;
    let mut event = serde_json::to_value(stream_sample()).expect("json");
    let records = event["Records"].as_array_mut().expect("records");
    let mut modify = records[0].clone();
    modify["eventName"] = json!("MODIFY");
    modify["dynamodb"]["SequenceNumber"] = json!("300000000000000000001");
    let mut bad = records[0].clone();
    bad["dynamodb"]["NewImage"] = json!({"pk": {"S": "x"}});
    bad["dynamodb"]["SequenceNumber"] = json!("300000000000000000002");
    records.push(modify);
    records.push(bad);
    let event: StreamEvent = serde_json::from_value(event).expect("stream event");

    let response = stream::handle_stream_batch(
        &m.app,
        &RecordingDispatcher::default(),
        &RecordingSaga::default(),
        event,
    )
    .await;

    assert_eq!(
        failures(&response),
        vec!["300000000000000000002".to_owned()]
    );
}

/// A stream record of `rec` shaped like the events table's items.
fn stream_record(key: &RunKey, rec: &EventRecord, sequence_number: &str) -> Value {
    let mut image: serde_dynamo::Item = serde_dynamo::to_item(rec).expect("item");
    let pk = format!("{}#{}", key.tenant, key.run_id);
    image.insert("pk".into(), serde_dynamo::AttributeValue::S(pk));
    image.insert(
        "tenant".into(),
        serde_dynamo::AttributeValue::S(key.tenant.clone()),
    );
    image.insert(
        "run_id".into(),
        serde_dynamo::AttributeValue::S(key.run_id.clone()),
    );
    json!({
        "eventID": format!("e-{sequence_number}"),
        "eventName": "INSERT",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "NewImage": serde_json::to_value(&image).expect("image json"),
            "SequenceNumber": sequence_number,
            "SizeBytes": 100,
            "StreamViewType": "NEW_IMAGE"
        }
    })
}

/// Run B driven until it failed (its todo added, the next step failed for good).
async fn failed_run_b(m: &MemoryApp) -> Vec<Effect> {
    m.seed(RUN_B, RUN_B_PROMPT, Utc::now() - Duration::seconds(5))
        .await;
    let sagas = m.drain_steps().await;
    assert_eq!(m.run(RUN_B).await.status, RunStatus::Failed);
    sagas
}

#[tokio::test]
async fn given_a_run_failing_on_the_stream_when_handled_then_its_saga_is_started() {
    let m = MemoryApp::new();
    let sagas = failed_run_b(&m).await;
    assert_eq!(sagas.len(), 1, "the engine wants a saga");
    let key = RunKey::new(TENANT, RUN_B);
    let log = m.store.load(&key).await.expect("log");
    let records: Vec<Value> = log
        .iter()
        .map(|r| stream_record(&key, r, &format!("4000000000000000{:05}", r.seq)))
        .collect();
    let event: StreamEvent =
        serde_json::from_value(json!({ "Records": records })).expect("stream event");
    let saga = RecordingSaga::default();

    let response =
        stream::handle_stream_batch(&m.app, &RecordingDispatcher::default(), &saga, event).await;

    assert!(failures(&response).is_empty());
    let started = saga.started.lock().expect("lock").clone();
    assert_eq!(started, vec![(key, format!("corr-{RUN_B}"))]);
}

// ---- compensate --------------------------------------------------------------------

async fn saga_task(m: &MemoryApp, case: &str) -> Result<Value, saga::SagaError> {
    saga::handle_saga_input(&m.app, sample("compensate", case)).await
}

#[tokio::test]
async fn given_the_saga_samples_when_run_in_order_then_the_todo_is_removed_and_the_run_compensated()
{
    let m = MemoryApp::new();
    failed_run_b(&m).await;
    assert_eq!(m.todos.count(TENANT).await.expect("todos"), 1);

    let begun = saga_task(&m, "begin").await.expect("begin");
    assert_eq!(
        begun,
        json!({"tenant": TENANT, "run_id": RUN_B, "steps": ["s1"]})
    );
    assert_eq!(m.run(RUN_B).await.status, RunStatus::Compensating);

    let step = saga_task(&m, "compensate-step")
        .await
        .expect("compensate_step");
    assert_eq!(step, json!({"step_id": "s1", "compensated": true}));
    assert!(m.todos.count(TENANT).await.expect("todos") == 0);
    // Step Functions may deliver a task twice: the second is a no-op.
    saga_task(&m, "compensate-step")
        .await
        .expect("compensate_step again");

    let finished = saga_task(&m, "finish").await.expect("finish");
    assert_eq!(finished["status"], "compensated");
    let run = m.run(RUN_B).await;
    assert_eq!(run.status, RunStatus::Compensated);
    let s1 = run.steps.iter().find(|s| s.id == "s1").expect("s1");
    assert_eq!(s1.status, StepStatus::Compensated);
}

#[tokio::test]
async fn given_the_failure_sample_when_finishing_then_the_step_and_error_come_from_the_cause() {
    let m = MemoryApp::new();
    failed_run_b(&m).await;
    saga_task(&m, "begin").await.expect("begin");

    let finished = saga_task(&m, "finish-failure").await.expect("finish");

    assert_eq!(finished["status"], "compensation_failed");
    let run = m.run(RUN_B).await;
    let s1 = run.steps.iter().find(|s| s.id == "s1").expect("s1");
    assert_eq!(s1.status, StepStatus::CompensationFailed);
    assert_eq!(s1.compensation_error.as_deref(), Some("todo 1 not found"));
}

#[tokio::test]
async fn given_a_failed_compensation_when_an_operator_sends_the_retry_sample_then_saga_attempt_2_is_started_and_it_compensates(
) {
    let m = MemoryApp::new();
    failed_run_b(&m).await;
    saga_task(&m, "begin").await.expect("begin");
    saga_task(&m, "finish-failure").await.expect("finish");
    assert_eq!(m.run(RUN_B).await.status, RunStatus::CompensationFailed);
    m.take_effects();

    let retried = saga_task(&m, "retry").await.expect("retry");
    assert_eq!(
        retried,
        json!({
            "tenant": TENANT,
            "run_id": RUN_B,
            "status": "compensating",
            "saga_attempt": 2,
            "execution_name": format!("{RUN_B}-saga-2"),
        })
    );
    // The reactor starts attempt 2 (a new execution name), from the event in the log.
    let effects = m.take_effects();
    assert!(
        matches!(effects.as_slice(), [Effect::Compensate { attempt: 2, key, .. }] if key.run_id == RUN_B),
        "{effects:?}"
    );
    let saga_starter = RecordingSaga::default();
    let key = RunKey::new(TENANT, RUN_B);
    let records = m.store.load(&key).await.expect("load");
    let last = records.last().expect("events").clone();
    let event: StreamEvent = serde_json::from_value(json!({
        "Records": [stream_record(&key, &last, "500000000000000000001")]
    }))
    .expect("stream event");
    let response = stream::handle_stream_batch(
        &m.app,
        &RecordingDispatcher::default(),
        &saga_starter,
        event,
    )
    .await;
    assert!(failures(&response).is_empty());
    assert_eq!(*saga_starter.attempts.lock().expect("lock"), vec![2]);

    // Saga attempt 2 undoes s1 again (the failed compensation) and finishes.
    let begun = saga_task(&m, "begin").await.expect("begin");
    assert_eq!(begun["steps"], json!(["s1"]));
    saga_task(&m, "compensate-step")
        .await
        .expect("compensate_step");
    let finished = saga_task(&m, "finish").await.expect("finish");
    assert_eq!(finished["status"], "compensated");
    assert_eq!(m.todos.count(TENANT).await.expect("todos"), 0);

    // A compensated run has no saga to retry.
    let err = saga_task(&m, "retry").await.expect_err("nothing to retry");
    let d: lambda_runtime::Diagnostic = err.into();
    assert_eq!(d.error_type, "Crane.PermanentError");
    assert!(
        d.error_message.contains("compensated"),
        "{}",
        d.error_message
    );
}

#[tokio::test]
async fn given_saga_errors_when_returned_then_their_types_are_the_ones_the_asl_matches() {
    let m = MemoryApp::new();
    failed_run_b(&m).await;
    let mut unknown = sample("compensate", "compensate-step");
    unknown["step_id"] = json!("s9");

    let err = saga::handle_saga_input(&m.app, unknown)
        .await
        .expect_err("no step s9");
    let d: lambda_runtime::Diagnostic = err.into();
    assert_eq!(d.error_type, "Crane.PermanentError");
    assert!(d.error_message.starts_with("s9: "), "{}", d.error_message);

    let err = saga::handle_saga_input(&m.app, json!({"action": "dance"}))
        .await
        .expect_err("not a task");
    assert_eq!(err.error_type(), saga::PERMANENT);
}

#[test]
fn given_the_events_folder_when_listed_then_every_function_has_samples() {
    for (function, cases) in [
        ("step-worker", vec!["batch"]),
        ("event-reactor", vec!["batch"]),
        (
            "compensate",
            vec![
                "begin",
                "compensate-step",
                "finish",
                "finish-failure",
                "retry",
            ],
        ),
    ] {
        let found: Vec<String> = samples(function).into_iter().map(|(c, _)| c).collect();
        assert_eq!(found, cases, "{function}");
    }
}

#[test]
fn given_the_handlers_when_compiled_then_their_futures_are_send() {
    fn send<T: Send>(_: T) {}
    let m = MemoryApp::new();
    let (dispatcher, saga_starter) = (RecordingDispatcher::default(), RecordingSaga::default());
    let redelivery = RecordingRedelivery::default();
    send(sqs::handle_step_batch(
        &m.app,
        &dispatcher,
        &redelivery,
        sqs_sample(),
        None,
    ));
    send(stream::handle_stream_batch(
        &m.app,
        &dispatcher,
        &saga_starter,
        stream_sample(),
    ));
    send(saga::handle_saga_input(&m.app, json!({})));
}

/// `event` (an API sample without an authorizer context, as API Gateway sends a route with
/// `Authorizer: NONE`) for `GET path` on `stage`.
fn open_get(path: &str, stage: &str) -> Value {
    let mut event = sample("get-run", "get-run-unauthorized");
    let route = format!("GET {}", path.trim_start_matches(&format!("/{stage}")));
    event["rawPath"] = json!(path);
    event["rawQueryString"] = json!("");
    event["routeKey"] = json!(route);
    event["requestContext"]["routeKey"] = json!(route);
    event["requestContext"]["http"]["path"] = json!(path);
    event["requestContext"]["stage"] = json!(stage);
    event
}

#[tokio::test]
async fn given_the_console_requested_through_api_gateway_without_a_token_then_its_files_are_served_and_the_api_is_not(
) {
    let m = MemoryApp::new();
    for (path, stage, content_type, needle) in [
        ("/", "$default", "text/html", "console/app.js"),
        ("/console/app.js", "$default", "text/javascript", "import"),
        (
            "/prod/console/console.css",
            "prod",
            "text/css",
            "--completed",
        ),
    ] {
        let resp = http::invoke(m.app.clone(), open_get(path, stage))
            .await
            .expect("answered");
        assert_eq!(resp["statusCode"], 200, "{path}: {resp}");
        let ct = resp["headers"]["content-type"].as_str().unwrap_or_default();
        assert!(ct.starts_with(content_type), "{path}: {ct}");
        assert_ne!(resp["isBase64Encoded"], true, "{path}: sent as text");
        let text = resp["body"].as_str().unwrap_or_default();
        assert!(text.contains(needle), "{path}: {text:.200}");
    }
    let resp = http::invoke(m.app.clone(), open_get("/runs", "$default"))
        .await
        .expect("answered");
    assert_eq!(
        resp["statusCode"], 401,
        "the API still needs the authorizer's identity"
    );
}
