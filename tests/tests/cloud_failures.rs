//! Failure behaviour on the cloud path (issue 4), through the real Lambda handlers over
//! DynamoDB Local (tables and the events stream) and moto (SQS, Step Functions); no real
//! AWS. The harness stands in for Lambda's event source mappings (stream -> event-reactor,
//! SQS -> step-worker) and for the Step Functions interpreter that would call the
//! `compensate` function: moto cannot run our Lambda, so [`drive_saga`] (`crane_tests::asl`) walks the real
//! state machine definition (`infra/statemachines/compensation.asl.json`) itself, building
//! every payload from the ASL's own `Parameters` and applying its `Retry`/`Catch`, and
//! calls the compensate handler with exactly those inputs.
//!
//! - transient failures are retried through the queue: the backoff waits in SQS as a
//!   message delay, not in a sleeping worker;
//! - a permanent failure after two todo adds: the reactor starts the saga once (named after
//!   the run) through the real `SfnSagaStarter`, the saga undoes the adds in reverse
//!   completion order, the run ends `compensated`;
//! - a compensation that keeps failing ends the run `compensation_failed`;
//! - cancellation mid-run lets the running step finish, compensates, ends `cancelled`;
//! - the circuit breaker is one DynamoDB item shared by separate workers.
//!
//! Needs `CRANE_TEST_DYNAMODB_ENDPOINT` and `CRANE_TEST_MOTO_ENDPOINT` (`./scripts/test`
//! starts the emulators and sets them). `TEST_LOG=1` prints the handlers' logs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_lambda_events::dynamodb::Event as StreamEvent;
use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::QueueAttributeName;
use crane::adapters::aws::{delay_seconds, saga_input};
use crane::app::App;
use crane::config::Config;
use crane::domain::{
    fold, ErrorKind, Event, EventRecord, RunKey, RunState, RunStatus, StepJob, StepStatus, Todo,
};
use crane::entrypoints::{build_app, http, saga, sqs, stream, CloudPorts};
use crane::ports::{
    EventStore, Redelivery, RunViewStore, SagaStarter, StepDispatcher, StoreResult, TodoQuery,
    TodoStore,
};
use crane::tools::Faults;
use crane_tests::asl::{self, Crash, SagaRun};
use crane_tests::clients;
use crane_tests::cloud::{Cloud, RequestLog, StreamReader};
use crane_tests::events::{sample, TENANT};
use crane_tests::logs::init_logs;
use crane_tests::names::unique;
use serde_json::{json, Value};

/// The function ARN substituted for `${CompensateFunctionArn}` (moto never calls it).
const COMPENSATE_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:crane-compensate";
/// The prompt of the saga tests: two todo adds (s1, s2), then a calculation (s3).
const TWO_ADDS_THEN_CALCULATE: &str =
    "add a todo to buy milk and add a todo to buy bread then calculate 2+2";
/// Longest wait for anything the handlers do on the emulators.
const WAIT: Duration = Duration::from_secs(30);

/// The configuration every function of a test gets (as the deployed functions share their
/// environment): `faults` as `CRANE_FAULTS`, then `tweak`.
fn config(faults: &str, tweak: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config {
        faults: Faults::parse(faults).expect("valid CRANE_FAULTS"),
        ..Config::default()
    };
    tweak(&mut c);
    c
}

fn asl_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/statemachines/compensation.asl.json")
}

// ---------------------------------------------------------------------------
// Recording wrappers around the real ports
// ---------------------------------------------------------------------------

/// One job a function sent to the step queue.
#[derive(Debug, Clone)]
struct Sent {
    /// Just before the `SendMessageBatch`.
    at: Instant,
    job: StepJob,
    delay_ms: u64,
    /// `ApproximateNumberOfMessagesDelayed` of the queue right after the send, when the
    /// dispatch carried a delay.
    delayed_in_queue: Option<u64>,
}

/// The real SQS dispatcher, recording what it sent and when.
struct Dispatches {
    inner: Arc<dyn StepDispatcher>,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    sent: Mutex<Vec<Sent>>,
}

impl Dispatches {
    fn new(inner: Arc<dyn StepDispatcher>, cloud: &Cloud) -> Arc<Self> {
        Arc::new(Self {
            inner,
            sqs: cloud.sqs.clone(),
            queue_url: cloud.queue_url().to_owned(),
            sent: Mutex::new(Vec::new()),
        })
    }

    fn sent(&self) -> Vec<Sent> {
        self.sent.lock().expect("lock").clone()
    }
}

#[async_trait]
impl StepDispatcher for Dispatches {
    async fn dispatch(&self, jobs: &[(StepJob, u64)]) -> StoreResult<()> {
        let at = Instant::now();
        self.inner.dispatch(jobs).await?;
        let delayed_in_queue = if jobs.iter().any(|(_, d)| *d > 0) {
            Some(
                queue_attribute(
                    &self.sqs,
                    &self.queue_url,
                    QueueAttributeName::ApproximateNumberOfMessagesDelayed,
                )
                .await,
            )
        } else {
            None
        };
        self.sent
            .lock()
            .expect("lock")
            .extend(jobs.iter().map(|(job, delay_ms)| Sent {
                at,
                job: job.clone(),
                delay_ms: *delay_ms,
                delayed_in_queue,
            }));
        Ok(())
    }
}

/// A numeric attribute of a queue.
async fn queue_attribute(sqs: &aws_sdk_sqs::Client, url: &str, name: QueueAttributeName) -> u64 {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(name.clone())
        .send()
        .await
        .expect("GetQueueAttributes")
        .attributes
        .and_then(|a| a.get(&name).cloned())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("queue attribute {name:?}"))
}

/// The real Step Functions saga starter, recording each successful start.
struct Sagas {
    inner: Arc<dyn SagaStarter>,
    started: Mutex<Vec<RunKey>>,
}

impl Sagas {
    fn starts(&self, key: &RunKey) -> usize {
        self.started
            .lock()
            .expect("lock")
            .iter()
            .filter(|k| *k == key)
            .count()
    }
}

#[async_trait]
impl SagaStarter for Sagas {
    async fn start(&self, key: &RunKey, correlation_id: &str, attempt: u32) -> StoreResult<()> {
        self.inner.start(key, correlation_id, attempt).await?;
        self.started.lock().expect("lock").push(key.clone());
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The functions of one test
// ---------------------------------------------------------------------------

/// The deployed functions of one test, each an App over its own clients, on fresh tables,
/// a fresh queue and a fresh saga state machine in moto (created from the repository's
/// ASL).
struct Fx {
    cloud: Cloud,
    api: Arc<App>,
    reactor: Arc<App>,
    reactor_sent: Arc<Dispatches>,
    sagas: Arc<Sagas>,
    worker: Arc<App>,
    worker_sent: Arc<Dispatches>,
    worker_redelivery: Arc<dyn Redelivery>,
    compensate: Arc<App>,
    sfn: aws_sdk_sfn::Client,
    state_machine_arn: String,
    /// The ASL with the function ARN substituted.
    asl: Value,
    reader: tokio::sync::Mutex<StreamReader>,
    /// Every stream batch handed to the reactor.
    batches: Mutex<Vec<StreamEvent>>,
    stream_failures: Mutex<Vec<String>>,
    /// Every job the step-worker received, and when.
    received: Mutex<Vec<(Instant, StepJob)>>,
    /// Each step-worker invocation: the attempts in its batch and its wall time.
    worker_calls: Mutex<Vec<(Vec<u32>, Duration)>>,
}

impl Fx {
    async fn start(test: &str, config: Config) -> Arc<Fx> {
        init_logs();
        let mut cloud = Cloud::create(test).await;
        let text = std::fs::read_to_string(asl_path()).expect("reading compensation.asl.json");
        let definition = text
            .replace("${CompensateFunctionArn}", COMPENSATE_ARN)
            .replace("${Partition}", "aws");
        let asl: Value = serde_json::from_str(&definition).expect("the ASL is JSON");
        let sfn = clients::sfn(&cloud.emulators.moto, None);
        let state_machine_arn = sfn
            .create_state_machine()
            .name(format!("{}-saga", unique("crane")))
            .definition(definition)
            .role_arn("arn:aws:iam::123456789012:role/crane-saga")
            .r#type(aws_sdk_sfn::types::StateMachineType::Standard)
            .send()
            .await
            .expect("CreateStateMachine in moto")
            .state_machine_arn;
        cloud.names.saga_state_machine_arn = Some(state_machine_arn.clone());

        let function = |cloud: &Cloud| {
            build_app(
                &config,
                &cloud.clients(&RequestLog::default()),
                &cloud.names,
            )
        };
        let (api, _) = function(&cloud);
        let (reactor, ports) = function(&cloud);
        let reactor_sent = Dispatches::new(ports.dispatcher, &cloud);
        let sagas = Arc::new(Sagas {
            inner: ports.saga,
            started: Mutex::new(Vec::new()),
        });
        let (worker, ports) = function(&cloud);
        let worker_sent = Dispatches::new(ports.dispatcher, &cloud);
        let worker_redelivery = ports.redelivery;
        let (compensate, _) = function(&cloud);
        let reader = cloud.stream_reader().await;
        Arc::new(Fx {
            cloud,
            api,
            reactor,
            reactor_sent,
            sagas,
            worker,
            worker_sent,
            worker_redelivery,
            compensate,
            sfn,
            state_machine_arn,
            asl,
            reader: tokio::sync::Mutex::new(reader),
            batches: Mutex::new(Vec::new()),
            stream_failures: Mutex::new(Vec::new()),
            received: Mutex::new(Vec::new()),
            worker_calls: Mutex::new(Vec::new()),
        })
    }

    // --- API (create-run / get-run router) ---

    async fn api(&self, event: Value) -> (u16, Value) {
        let resp = http::invoke(self.api.clone(), event)
            .await
            .expect("the API answers");
        let status = resp["statusCode"].as_u64().expect("statusCode") as u16;
        let body = match resp["body"].as_str() {
            Some(b) if !b.is_empty() => serde_json::from_str(b).expect("a JSON body"),
            _ => Value::Null,
        };
        (status, body)
    }

    /// `POST /runs` (the `post-runs` sample event with another prompt).
    async fn create_run(&self, prompt: &str) -> RunKey {
        let mut event = sample("create-run", "post-runs");
        event["body"] = json!({ "prompt": prompt }).to_string().into();
        if let Some(headers) = event["headers"].as_object_mut() {
            headers.remove("content-length");
        }
        let (status, body) = self.api(event).await;
        assert_eq!(status, 201, "POST /runs: {body}");
        RunKey::new(TENANT, body["run_id"].as_str().expect("run_id"))
    }

    /// `POST /runs/{id}/cancel` (the `post-cancel` sample event for this run).
    async fn cancel(&self, run_id: &str) -> (u16, Value) {
        let mut event = sample("create-run", "post-cancel");
        let path = format!("/runs/{run_id}/cancel");
        event["rawPath"] = path.clone().into();
        event["requestContext"]["http"]["path"] = path.into();
        event["pathParameters"]["id"] = run_id.into();
        self.api(event).await
    }

    /// `GET /tools`.
    async fn tools(&self) -> Value {
        let (status, body) = self.api(sample("get-run", "list-tools")).await;
        assert_eq!(status, 200, "GET /tools: {body}");
        body
    }

    // --- reading what happened ---

    async fn view(&self, key: &RunKey) -> Option<RunState> {
        RunViewStore::get(&self.cloud.store, key)
            .await
            .expect("runs view read")
    }

    /// The run as its log folds (what readers of a run in flight see: the runs view only
    /// follows the appends that wake the reactor, e.g. a status change).
    async fn folded(&self, key: &RunKey) -> Option<RunState> {
        let events = self.events(key).await;
        (!events.is_empty()).then(|| fold(&key.run_id, &events).expect("the log folds"))
    }

    async fn events(&self, key: &RunKey) -> Vec<EventRecord> {
        EventStore::load(&self.cloud.store, key)
            .await
            .expect("events read")
    }

    async fn todos(&self) -> Vec<Todo> {
        TodoStore::list(
            &self.cloud.store,
            TENANT,
            &TodoQuery::first(TodoQuery::MAX_LIMIT),
        )
        .await
        .expect("todos read")
        .items
    }

    /// The saga executions moto holds for this test's state machine: (name, ARN).
    async fn executions(&self) -> Vec<(String, String)> {
        self.sfn
            .list_executions()
            .state_machine_arn(&self.state_machine_arn)
            .send()
            .await
            .expect("ListExecutions")
            .executions()
            .iter()
            .map(|e| (e.name().to_owned(), e.execution_arn().to_owned()))
            .collect()
    }

    /// The input the reactor started the run's saga with, as moto recorded it.
    async fn execution_input(&self, key: &RunKey) -> Value {
        let executions = self.executions().await;
        let arn = executions
            .iter()
            .find(|(name, _)| *name == key.run_id)
            .map(|(_, arn)| arn.clone())
            .unwrap_or_else(|| panic!("no saga execution named {}: {executions:?}", key.run_id));
        let described = self
            .sfn
            .describe_execution()
            .execution_arn(arn)
            .send()
            .await
            .expect("DescribeExecution");
        serde_json::from_str(described.input().expect("execution input"))
            .expect("execution input is JSON")
    }

    /// The breaker item of `tool` in the breakers table: (version, state).
    async fn breaker_item(&self, tool: &str) -> Option<(u64, Value)> {
        let item = self
            .cloud
            .dynamodb
            .get_item()
            .table_name(&self.cloud.names.tables.breakers)
            .key("tool", AttributeValue::S(tool.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .expect("GetItem on the breakers table")
            .item?;
        let version = item
            .get("version")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .expect("breaker item has a numeric version");
        let state = item
            .get("state")
            .and_then(|v| v.as_s().ok())
            .map(|s| serde_json::from_str(s).expect("breaker state is JSON"))
            .expect("breaker item has a state");
        Some((version, state))
    }

    fn assert_no_stream_failures(&self) {
        let failures = self.stream_failures.lock().expect("lock").clone();
        assert!(failures.is_empty(), "stream batch failures: {failures:?}");
    }

    // --- the event source mappings ---

    /// One poll of the events stream into the event-reactor; false if nothing was new.
    async fn react_once(&self) -> bool {
        let mut reader = self.reader.lock().await;
        let Some(event) = reader.poll().await else {
            return false;
        };
        self.batches.lock().expect("lock").push(event.clone());
        let resp = stream::handle_stream_batch(
            &self.reactor,
            self.reactor_sent.as_ref(),
            self.sagas.as_ref(),
            event,
        )
        .await;
        self.stream_failures.lock().expect("lock").extend(
            resp.batch_item_failures
                .into_iter()
                .filter_map(|f| f.item_identifier),
        );
        true
    }

    /// One receive from the step queue into the step-worker; false if nothing came.
    async fn work_once(&self, wait_seconds: i32) -> bool {
        let Some(event) = self.cloud.receive(wait_seconds).await else {
            return false;
        };
        let now = Instant::now();
        let jobs: Vec<StepJob> = event
            .records
            .iter()
            .filter_map(|r| r.body.as_deref())
            .filter_map(sqs::decode_body)
            .flatten()
            .collect();
        let attempts = jobs.iter().map(|j| j.attempt).collect();
        self.received
            .lock()
            .expect("lock")
            .extend(jobs.into_iter().map(|j| (now, j)));
        let t = Instant::now();
        let resp = sqs::handle_step_batch(
            &self.worker,
            self.worker_sent.as_ref(),
            self.worker_redelivery.as_ref(),
            event.clone(),
            None,
        )
        .await;
        self.worker_calls
            .lock()
            .expect("lock")
            .push((attempts, t.elapsed()));
        self.cloud.acknowledge(&event, &resp).await;
        true
    }

    /// Run the reactor and one worker in the background until [`Loops::stop`].
    fn start_loops(self: &Arc<Self>) -> Loops {
        let stop = Arc::new(AtomicBool::new(false));
        let (fx, s) = (self.clone(), stop.clone());
        let reactor = tokio::spawn(async move {
            while !s.load(Ordering::SeqCst) {
                if !fx.react_once().await {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
        });
        let (fx, s) = (self.clone(), stop.clone());
        let worker = tokio::spawn(async move {
            while !s.load(Ordering::SeqCst) {
                fx.work_once(1).await;
            }
        });
        Loops {
            stop,
            tasks: vec![reactor, worker],
        }
    }

    /// Feed the stream to the reactor (no background loops) until the run's view
    /// satisfies `done`.
    async fn react_until(
        &self,
        key: &RunKey,
        what: &str,
        done: impl Fn(&RunState) -> bool,
    ) -> RunState {
        eventually(what, WAIT, async || {
            self.react_once().await;
            self.view(key).await.filter(|v| done(v))
        })
        .await
    }

    /// Let the reactor dispatch `n` more jobs (from the stream so far), then receive
    /// their messages from the queue, one message each.
    async fn next_messages(&self, n: usize) -> Vec<SqsMessage> {
        let target = self.reactor_sent.sent().len() + n;
        eventually("the reactor to dispatch the jobs", WAIT, async || {
            self.react_once().await;
            (self.reactor_sent.sent().len() >= target).then_some(())
        })
        .await;
        let mut got = Vec::new();
        eventually("the jobs to arrive in SQS", WAIT, async || {
            if let Some(event) = self.cloud.receive(1).await {
                got.extend(event.records);
            }
            (got.len() >= n).then_some(())
        })
        .await;
        assert_eq!(got.len(), n, "exactly the dispatched jobs arrive");
        got
    }
}

/// The background reactor and worker of a test.
struct Loops {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Loops {
    async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            if let Err(e) = t.await {
                if e.is_panic() {
                    std::panic::resume_unwind(e.into_panic());
                }
                panic!("a harness loop failed: {e}");
            }
        }
    }
}

/// Poll `probe` every 50 ms until it yields a value; fail saying `what` after `timeout`.
async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Handle one SQS message with one worker function, and delete it as the event source
/// mapping would.
async fn handle_message(cloud: &Cloud, worker: &App, ports: &CloudPorts, m: SqsMessage) {
    let mut event = SqsEvent::default();
    event.records = vec![m];
    let resp = sqs::handle_step_batch(
        worker,
        ports.dispatcher.as_ref(),
        ports.redelivery.as_ref(),
        event.clone(),
        None,
    )
    .await;
    assert!(
        resp.batch_item_failures.is_empty(),
        "the job was handled (its failure is recorded as an event, not redelivered): {:?}",
        resp.batch_item_failures
    );
    cloud.acknowledge(&event, &resp).await;
}

fn event_types(events: &[EventRecord]) -> Vec<&'static str> {
    events.iter().map(|e| e.event.type_name()).collect()
}

fn compensated_steps(events: &[EventRecord]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::StepCompensated { step_id, .. } => Some(step_id.clone()),
            _ => None,
        })
        .collect()
}

fn step<'a>(view: &'a RunState, id: &str) -> &'a crane::domain::StepState {
    view.step(id)
        .unwrap_or_else(|| panic!("run has no step {id}: {view:#?}"))
}

/// Whether nothing more will happen to the run (a failed run still has its saga ahead).
fn settled(status: RunStatus) -> bool {
    matches!(
        status,
        RunStatus::Completed
            | RunStatus::Compensated
            | RunStatus::CompensationFailed
            | RunStatus::Cancelled
    )
}

// ---------------------------------------------------------------------------
// The saga state machine, walked from its ASL (by `crane_tests::asl`)
// ---------------------------------------------------------------------------

/// The compensate function as the saga's Task states invoke it: a failed call reports
/// `Error` = its `errorType` and `Cause` = its error document as a string, as the Lambda
/// integration does.
struct Compensate<'a>(&'a App);

#[async_trait]
impl asl::Function for Compensate<'_> {
    fn arn(&self) -> &str {
        COMPENSATE_ARN
    }

    async fn invoke(&self, payload: Value) -> Result<Value, Value> {
        saga::handle_saga_input(self.0, payload).await.map_err(|e| {
            let d: lambda_runtime::Diagnostic = e.into();
            let cause = serde_json::to_string(&d).expect("error document");
            json!({"Error": d.error_type, "Cause": cause})
        })
    }
}

/// Walk the saga's ASL with `input`, calling the compensate handler of `app`
/// ([`asl::drive_saga`]).
async fn drive_saga(asl: &Value, app: &App, input: Value) -> SagaRun {
    asl::drive_saga(asl, &Compensate(app), input).await
}

/// [`drive_saga`] with Lambda faults injected by `crash`.
async fn drive_saga_with(asl: &Value, app: &App, input: Value, crash: &Crash) -> SagaRun {
    asl::drive_saga_with(asl, &Compensate(app), input, crash).await
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test]
async fn given_a_flaky_calculator_when_run_on_the_cloud_path_then_retries_wait_in_sqs_and_the_third_attempt_completes(
) {
    let fx = Fx::start(
        "given_a_flaky_calculator_when_run_on_the_cloud_path",
        config("calculator=flaky:2", |c| c.settings.retry.base_ms = 1_000),
    )
    .await;
    let started = Instant::now();
    let loops = fx.start_loops();
    let key = fx.create_run("calculate 6*7").await;
    let view = eventually("the run to finish", WAIT, async || {
        fx.view(&key).await.filter(|v| v.status.is_finished())
    })
    .await;
    loops.stop().await;
    let elapsed = started.elapsed();
    fx.assert_no_stream_failures();

    assert_eq!(view.status, RunStatus::Completed, "{view:#?}");
    assert_eq!(view.result, Some(json!(42)));
    let s1 = step(&view, "s1");
    assert_eq!((s1.status, s1.attempts), (StepStatus::Completed, 3));

    // Each failed attempt is an event with its error, its kind and the delay chosen.
    let events = fx.events(&key).await;
    let failures: Vec<(u32, ErrorKind, Option<u64>, String)> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::StepAttemptFailed {
                attempt,
                kind,
                retry_in_ms,
                error,
                ..
            } => Some((*attempt, *kind, *retry_in_ms, error.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(failures.len(), 2, "{failures:?}");
    let mut delays = Vec::new();
    for (i, (attempt, kind, retry_in_ms, error)) in failures.iter().enumerate() {
        assert_eq!(*attempt, i as u32 + 1);
        assert_eq!(*kind, ErrorKind::Transient);
        assert!(error.contains("injected transient fault"), "{error}");
        let nominal = 1_000u64 << i;
        let delay = retry_in_ms.unwrap_or_else(|| {
            panic!("attempt {attempt} is retried, so its event has retry_in_ms")
        });
        assert!(
            (nominal * 8 / 10..=nominal * 12 / 10).contains(&delay),
            "attempt {attempt}: retry_in_ms {delay} is not {nominal} ms +-20% jitter"
        );
        delays.push(delay);
    }

    // The worker that recorded each failure sent the retry to SQS with the delay itself
    // (no stream hop); SQS held it, and the worker, polling all along, got it only once
    // the delay was over.
    let sent = fx.worker_sent.sent();
    let received = fx.received.lock().expect("lock").clone();
    let mut report = Vec::new();
    for (i, delay_ms) in delays.iter().enumerate() {
        let attempt = i as u32 + 2;
        let s = sent
            .iter()
            .find(|s| s.job.step_id == "s1" && s.job.attempt == attempt)
            .unwrap_or_else(|| panic!("the worker sent no job for attempt {attempt}"));
        assert_eq!(
            s.delay_ms, *delay_ms,
            "attempt {attempt} sent with the chosen delay"
        );
        assert_eq!(
            s.delayed_in_queue,
            Some(1),
            "right after the send, SQS holds attempt {attempt} as a delayed message"
        );
        let delay_s = delay_seconds(*delay_ms);
        let (got, _) = received
            .iter()
            .find(|(_, j)| j.step_id == "s1" && j.attempt == attempt)
            .unwrap_or_else(|| panic!("the worker never received attempt {attempt}"));
        let waited = got.saturating_duration_since(s.at);
        assert!(
            waited + Duration::from_millis(50) >= Duration::from_secs(delay_s as u64),
            "attempt {attempt} reached the worker {waited:?} after it was sent with \
             DelaySeconds={delay_s}: it was visible before its delay"
        );
        report.push(format!(
            "attempt {attempt}: retry_in_ms {delay_ms}, DelaySeconds {delay_s}, received {} ms after the send",
            waited.as_millis()
        ));
    }
    assert_eq!(
        sent.iter()
            .map(|s| (s.job.step_id.as_str(), s.job.attempt))
            .collect::<Vec<_>>(),
        vec![("s1", 2), ("s1", 3)],
        "the worker sent the two retries and nothing else: no job reached it early and \
         had to be sent back"
    );
    assert!(
        fx.reactor_sent.sent().iter().all(|s| s.job.attempt == 1),
        "the reactor sent only the first attempt"
    );
    // A worker that slept through the backoff would take at least the delay it chose.
    let calls = fx.worker_calls.lock().expect("lock").clone();
    let attempts: Vec<Vec<u32>> = calls.iter().map(|(a, _)| a.clone()).collect();
    assert_eq!(
        attempts,
        vec![vec![1], vec![2], vec![3]],
        "one worker invocation per attempt"
    );
    for ((_, took), delay_ms) in calls.iter().zip(&delays) {
        let delay = Duration::from_millis(*delay_ms);
        assert!(
            *took < delay,
            "worker invocations {calls:?}: the one that chose a {delay:?} backoff took \
             {took:?}; the backoff must wait in SQS, not in the Lambda"
        );
    }
    assert_eq!(fx.cloud.dlq_depth().await, 0);
    eprintln!(
        "== retries through SQS (run took {} ms) ==\n  {}\n  worker invocations: {:?}",
        elapsed.as_millis(),
        report.join("\n  "),
        calls
            .iter()
            .map(|(a, t)| format!("attempt {a:?}: {} ms", t.as_millis()))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn given_a_permanent_failure_after_two_todo_adds_when_the_saga_runs_then_it_starts_once_and_the_run_is_compensated(
) {
    let fx = Fx::start(
        "given_a_permanent_failure_after_two_todo_adds",
        config("calculator=fail_permanent", |_| {}),
    )
    .await;
    let loops = fx.start_loops();
    let key = fx.create_run(TWO_ADDS_THEN_CALCULATE).await;
    eventually("the reactor to start the saga", WAIT, async || {
        (fx.sagas.starts(&key) > 0).then_some(())
    })
    .await;
    loops.stop().await;
    fx.assert_no_stream_failures();

    let failed = fx.view(&key).await.expect("view");
    assert_eq!(failed.status, RunStatus::Failed, "{failed:#?}");
    assert_eq!(failed.completion_order, vec!["s1", "s2"]);
    assert_eq!(fx.todos().await.len(), 2, "both adds ran");
    let s3 = step(&failed, "s3");
    assert_eq!(
        (s3.status, s3.attempts),
        (StepStatus::Failed, 1),
        "a permanent error is not retried"
    );
    let events = fx.events(&key).await;
    let s3_failure = events.iter().find_map(|e| match &e.event {
        Event::StepAttemptFailed {
            step_id,
            kind,
            retry_in_ms,
            ..
        } if step_id == "s3" => Some((*kind, *retry_in_ms)),
        _ => None,
    });
    assert_eq!(s3_failure, Some((ErrorKind::Permanent, None)));

    // Replay the stream batch that carried RunFailed twice (Lambda retrying the shard).
    let batch = fx
        .batches
        .lock()
        .expect("lock")
        .iter()
        .find(|b| {
            b.records.iter().any(|r| {
                stream::decode_record(r).is_ok_and(|(_, recs)| {
                    recs.iter()
                        .any(|e| matches!(e.event, Event::RunFailed { .. }))
                })
            })
        })
        .cloned()
        .expect("a stream batch carried RunFailed");
    let starts_before = fx.sagas.starts(&key);
    for _ in 0..2 {
        let resp = stream::handle_stream_batch(
            &fx.reactor,
            fx.reactor_sent.as_ref(),
            fx.sagas.as_ref(),
            batch.clone(),
        )
        .await;
        assert!(
            resp.batch_item_failures.is_empty(),
            "a replayed batch succeeds: {:?}",
            resp.batch_item_failures
        );
    }
    assert_eq!(
        fx.sagas.starts(&key),
        starts_before + 2,
        "each replay asks Step Functions again (ExecutionAlreadyExists is success)"
    );
    let executions = fx.executions().await;
    let names: Vec<&str> = executions.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        vec![key.run_id.as_str()],
        "exactly one saga execution, named after the run"
    );
    let input = fx.execution_input(&key).await;
    assert_eq!(input, saga_input(&key, &failed.correlation_id));

    // Step Functions' part, from the ASL, with the execution's real input.
    let saga = drive_saga(&fx.asl, &fx.compensate, input).await;
    assert_eq!(
        saga.entered,
        [
            "Begin",
            "AnythingToUndo",
            "UndoSteps",
            "UndoStep",
            "UndoStep",
            "Finish",
            "Done"
        ],
        "{saga:#?}"
    );
    let begin = saga.calls_of("Begin");
    assert_eq!(
        begin[0].outcome.as_ref().map(|o| o["steps"].clone()),
        Ok(json!(["s2", "s1"])),
        "begin returns the steps in reverse completion order"
    );
    let undone: Vec<(Value, Value)> = saga
        .calls_of("UndoStep")
        .iter()
        .map(|c| (c.payload["step_id"].clone(), c.payload["attempt"].clone()))
        .collect();
    assert_eq!(
        undone,
        vec![(json!("s2"), json!(0)), (json!("s1"), json!(0))]
    );
    assert_eq!(
        saga.end
            .as_ref()
            .map(|o| o["outcome"]["result"]["status"].clone()),
        Ok(json!("compensated")),
        "{saga:#?}"
    );

    let view = fx
        .react_until(&key, "the view to show the saga's end", |v| {
            settled(v.status)
        })
        .await;
    fx.assert_no_stream_failures();
    assert_eq!(view.status, RunStatus::Compensated, "{view:#?}");
    for id in ["s1", "s2"] {
        assert_eq!(step(&view, id).status, StepStatus::Compensated, "{id}");
    }
    assert!(fx.todos().await.is_empty(), "no todo left behind");
    let events = fx.events(&key).await;
    let types = event_types(&events);
    let tail: Vec<&str> = types
        .iter()
        .copied()
        .skip_while(|t| *t != "RunFailed")
        .collect();
    assert_eq!(
        tail,
        vec![
            "RunFailed",
            "CompensationStarted",
            "StepCompensated",
            "StepCompensated",
            "RunCompensated"
        ]
    );
    let mut reverse = view.completion_order.clone();
    reverse.reverse();
    assert_eq!(compensated_steps(&events), reverse);
    assert_eq!(
        fx.executions().await.len(),
        1,
        "the saga's own events started no other execution"
    );
}

#[tokio::test]
async fn given_a_compensation_that_keeps_failing_when_the_saga_exhausts_its_retries_then_the_run_is_compensation_failed(
) {
    let fx = Fx::start(
        "given_a_compensation_that_keeps_failing",
        config("calculator=fail_permanent,todo.compensate=fail", |_| {}),
    )
    .await;
    let loops = fx.start_loops();
    let key = fx.create_run(TWO_ADDS_THEN_CALCULATE).await;
    eventually("the reactor to start the saga", WAIT, async || {
        (fx.sagas.starts(&key) > 0).then_some(())
    })
    .await;
    loops.stop().await;
    let input = fx.execution_input(&key).await;

    let saga = drive_saga(&fx.asl, &fx.compensate, input).await;
    let retry = &fx.asl["States"]["UndoSteps"]["ItemProcessor"]["States"]["UndoStep"]["Retry"][0];
    let max_attempts = retry["MaxAttempts"].as_u64().expect("UndoStep MaxAttempts");
    assert!(
        retry["ErrorEquals"]
            .as_array()
            .is_some_and(|e| e.contains(&json!(saga::TRANSIENT))),
        "the ASL retries {}",
        saga::TRANSIENT
    );
    assert_eq!(
        saga.entered,
        [
            "Begin",
            "AnythingToUndo",
            "UndoSteps",
            "UndoStep",
            "RecordFailure",
            "CompensationFailed"
        ],
        "{saga:#?}"
    );
    assert_eq!(saga.end, Err("Crane.CompensationFailed".to_owned()));
    // The first step to undo (s2) fails on every attempt: the first try and every retry.
    let undo = saga.calls_of("UndoStep");
    let attempts: Vec<(Value, Value)> = undo
        .iter()
        .map(|c| (c.payload["step_id"].clone(), c.payload["attempt"].clone()))
        .collect();
    let expected: Vec<(Value, Value)> = (0..=max_attempts)
        .map(|n| (json!("s2"), json!(n)))
        .collect();
    assert_eq!(
        attempts, expected,
        "RetryCount 0..={max_attempts}, s1 never tried"
    );
    for c in &undo {
        let error = c.outcome.as_ref().expect_err("every attempt fails");
        assert_eq!(error["Error"], saga::TRANSIENT, "{error}");
    }
    // RecordFailure sends what the Catch caught: the error name and, as the Cause, the
    // last attempt's Lambda error document.
    let record = saga.calls_of("RecordFailure");
    let caught = &record[0].payload["failure"]["error"];
    assert_eq!(caught["Error"], saga::TRANSIENT, "{caught}");
    let cause = caught["Cause"]
        .as_str()
        .expect("the Cause is a string")
        .to_owned();
    let doc: Value = serde_json::from_str(&cause).expect("the Cause is the error document");
    assert_eq!(doc["errorType"], saga::TRANSIENT);
    let attempts_made = max_attempts + 1;
    assert_eq!(
        doc["errorMessage"],
        format!("s2: injected transient fault in todo (attempt {attempts_made})")
    );
    assert_eq!(
        record[0].outcome.as_ref().map(|o| o["status"].clone()),
        Ok(json!("compensation_failed"))
    );

    let view = fx
        .react_until(&key, "the view to show the saga's end", |v| {
            settled(v.status)
        })
        .await;
    fx.assert_no_stream_failures();
    assert_eq!(view.status, RunStatus::CompensationFailed, "{view:#?}");
    let s2 = step(&view, "s2");
    assert_eq!(s2.status, StepStatus::CompensationFailed);
    assert_eq!(
        s2.compensation_error.as_deref(),
        Some("injected transient fault in todo")
    );
    assert_eq!(
        step(&view, "s1").status,
        StepStatus::Completed,
        "the saga stops at the failed compensation"
    );
    let events = fx.events(&key).await;
    let failure = events.iter().find_map(|e| match &e.event {
        Event::StepCompensationFailed {
            step_id, attempts, ..
        } => Some((step_id.clone(), *attempts)),
        _ => None,
    });
    assert_eq!(failure, Some(("s2".to_owned(), attempts_made as u32)));
    assert_eq!(event_types(&events).last(), Some(&"RunCompensationFailed"));
    assert_eq!(fx.todos().await.len(), 2, "nothing was undone");
}

#[tokio::test]
async fn given_a_running_step_when_the_run_is_cancelled_then_the_step_finishes_the_saga_compensates_and_the_run_ends_cancelled(
) {
    let fx = Fx::start(
        "given_a_running_step_when_the_run_is_cancelled",
        config("calculator=delay:1500ms", |_| {}),
    )
    .await;
    let loops = fx.start_loops();
    let key = fx
        .create_run("add a todo to pack bags then calculate 2*3 then add a todo to leave")
        .await;
    eventually("s2 to start", WAIT, async || {
        fx.events(&key)
            .await
            .iter()
            .any(|e| matches!(&e.event, Event::StepStarted { step_id, .. } if step_id == "s2"))
            .then_some(())
    })
    .await;

    let (status, body) = fx.cancel(&key.run_id).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["cancel_requested"], true, "{body}");
    let s2_then = body["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == "s2"))
        .map(|s| s["status"].clone());
    assert_eq!(
        s2_then,
        Some(json!("running")),
        "cancelled mid-step: {body}"
    );

    eventually(
        "the reactor to start the saga once s2 finished",
        WAIT,
        async || (fx.sagas.starts(&key) > 0).then_some(()),
    )
    .await;
    loops.stop().await;
    let input = fx.execution_input(&key).await;
    let saga = drive_saga(&fx.asl, &fx.compensate, input).await;
    let undone: Vec<Value> = saga
        .calls_of("UndoStep")
        .iter()
        .map(|c| c.payload["step_id"].clone())
        .collect();
    assert_eq!(
        undone,
        vec![json!("s1")],
        "only the todo add is undone (the calculator has no compensation)"
    );
    assert_eq!(
        saga.end
            .as_ref()
            .map(|o| o["outcome"]["result"]["status"].clone()),
        Ok(json!("cancelled")),
        "{saga:#?}"
    );

    let view = fx
        .react_until(&key, "the view to show the saga's end", |v| {
            settled(v.status)
        })
        .await;
    fx.assert_no_stream_failures();
    assert_eq!(view.status, RunStatus::Cancelled, "{view:#?}");
    assert_eq!(step(&view, "s1").status, StepStatus::Compensated);
    assert_eq!(
        step(&view, "s2").status,
        StepStatus::Completed,
        "the running step was let finish"
    );
    assert_eq!(step(&view, "s3").status, StepStatus::Skipped);
    let events = fx.events(&key).await;
    let seq_of =
        |pred: &dyn Fn(&Event) -> bool| events.iter().find(|e| pred(&e.event)).map(|e| e.seq);
    let cancel_seq = seq_of(&|e| matches!(e, Event::CancelRequested { .. }));
    let s2_done_seq =
        seq_of(&|e| matches!(e, Event::StepCompleted { step_id, .. } if step_id == "s2"));
    assert!(
        cancel_seq.is_some() && cancel_seq < s2_done_seq,
        "CancelRequested ({cancel_seq:?}) before s2 completed ({s2_done_seq:?})"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(&e.event, Event::StepStarted { step_id, .. } if step_id == "s3")),
        "nothing new was scheduled after the cancel"
    );
    assert!(fx.todos().await.is_empty(), "the todo was removed");

    let (status, body) = fx.cancel(&key.run_id).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "run_finished", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("already cancelled"),
        "a clear message: {message}"
    );
}

#[tokio::test]
async fn given_a_worker_that_dies_mid_step_when_the_job_is_delivered_again_then_the_interruption_uses_no_retry(
) {
    // No retries at all: before interruptions had their own budget, the crash alone
    // failed the run.
    let tweak = |c: &mut Config| {
        c.settings.retry.max_retries = 0;
        c.settings.step_timeout_ms = 1_000;
        c.settings.lease_margin_ms = 0;
    };
    let fx = Fx::start("given_a_worker_that_dies_mid_step", config("", tweak)).await;
    let key = fx.create_run("calculate 6*7").await;
    let m = fx.next_messages(1).await.remove(0);

    // A worker whose tool hangs takes the job, claims the attempt, then its Lambda dies
    // (the task is aborted: no outcome is ever written).
    let (hung, hung_ports) = build_app(
        &config("calculator=delay:20s", tweak),
        &fx.cloud.clients(&RequestLog::default()),
        &fx.cloud.names,
    );
    let mut event = SqsEvent::default();
    event.records = vec![m.clone()];
    let crashed = tokio::spawn(async move {
        sqs::handle_step_batch(
            &hung,
            hung_ports.dispatcher.as_ref(),
            hung_ports.redelivery.as_ref(),
            event,
            None,
        )
        .await
    });
    eventually("the doomed worker to claim attempt 1", WAIT, async || {
        fx.events(&key)
            .await
            .iter()
            .any(|e| matches!(e.event, Event::StepStarted { attempt: 1, .. }))
            .then_some(())
    })
    .await;
    crashed.abort();
    let _ = crashed.await;

    // SQS delivers the message again once its visibility expires; by then the lease has.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (healthy, healthy_ports) = build_app(
        &config("", tweak),
        &fx.cloud.clients(&RequestLog::default()),
        &fx.cloud.names,
    );
    handle_message(&fx.cloud, &healthy, &healthy_ports, m).await;
    let view = fx
        .react_until(&key, "the run to finish", |v| v.status.is_finished())
        .await;
    assert_eq!(view.status, RunStatus::Completed, "{view:#?}");
    let s1 = step(&view, "s1");
    assert_eq!((s1.attempts, s1.interruptions), (2, 1));
    let types = event_types(&fx.events(&key).await);
    assert!(types.contains(&"StepInterrupted"), "{types:?}");
    assert!(!types.contains(&"StepAttemptFailed"), "{types:?}");
}

#[tokio::test]
async fn given_a_cancel_while_the_last_step_runs_when_it_completes_then_the_saga_undoes_every_step_and_the_run_ends_cancelled(
) {
    let fx = Fx::start(
        "given_a_cancel_while_the_last_step_runs",
        config("todo.add=delay:1500ms", |_| {}),
    )
    .await;
    let loops = fx.start_loops();
    let key = fx.create_run("add a todo to A then add a todo to B").await;
    eventually("s2 to start", WAIT, async || {
        fx.events(&key)
            .await
            .iter()
            .any(|e| matches!(&e.event, Event::StepStarted { step_id, .. } if step_id == "s2"))
            .then_some(())
    })
    .await;
    let (status, body) = fx.cancel(&key.run_id).await;
    assert_eq!(status, 202, "{body}");

    eventually(
        "the reactor to start the saga once s2 finished",
        WAIT,
        async || (fx.sagas.starts(&key) > 0).then_some(()),
    )
    .await;
    loops.stop().await;
    let events = fx.events(&key).await;
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.event, Event::RunCompleted { .. })),
        "a run whose cancel was accepted never completes: {:?}",
        event_types(&events)
    );
    let input = fx.execution_input(&key).await;
    let saga = drive_saga(&fx.asl, &fx.compensate, input).await;
    let undone: Vec<Value> = saga
        .calls_of("UndoStep")
        .iter()
        .map(|c| c.payload["step_id"].clone())
        .collect();
    assert_eq!(
        undone,
        vec![json!("s2"), json!("s1")],
        "reverse completion order"
    );
    let view = fx
        .react_until(&key, "the view to show the saga's end", |v| {
            settled(v.status)
        })
        .await;
    fx.assert_no_stream_failures();
    assert_eq!(view.status, RunStatus::Cancelled, "{view:#?}");
    assert!(fx.todos().await.is_empty(), "both adds were undone");
}

#[tokio::test]
async fn given_workers_sharing_the_breakers_table_when_failures_reach_the_threshold_then_another_worker_waits_in_sqs_without_spending_attempts(
) {
    let breaker = |c: &mut Config| {
        c.settings.retry.max_retries = 0;
        c.settings.breaker.failure_threshold = 3;
        c.settings.breaker.open_ms = 2_000;
        c.settings.breaker.half_open_successes = 1;
    };
    let failing = config("calculator=fail", breaker);
    let fx = Fx::start("given_workers_sharing_the_breakers_table", failing.clone()).await;
    // Two step-worker instances, each with its own clients, over the same tables.
    let worker = |config: &Config| {
        build_app(
            config,
            &fx.cloud.clients(&RequestLog::default()),
            &fx.cloud.names,
        )
    };
    let (a, a_ports) = worker(&failing);
    let (b, b_ports) = worker(&failing);
    // A third instance whose calculator works: only the shared breaker can stop it.
    let (c, c_ports) = worker(&config("", breaker));

    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(fx.create_run("calculate 1+1").await);
    }
    let messages = fx.next_messages(3).await;
    let order = [
        ("A", &a, &a_ports),
        ("B", &b, &b_ports),
        ("A", &a, &a_ports),
    ];
    let mut seen = Vec::new();
    for (m, (name, app, ports)) in messages.into_iter().zip(order) {
        handle_message(&fx.cloud, app, ports, m).await;
        let (version, state) = fx.breaker_item("calculator").await.expect("a breaker item");
        seen.push((name, version, state));
    }
    let summary: Vec<(&str, u64, Value, Value)> = seen
        .iter()
        .map(|(n, v, s)| {
            (
                *n,
                *v,
                s["state"].clone(),
                s["consecutive_failures"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("A", 1, json!("closed"), json!(1)),
            ("B", 2, json!("closed"), json!(2)),
            ("A", 3, json!("open"), Value::Null),
        ],
        "each worker counts on from the other's failures, and the third opens the breaker"
    );
    for key in &runs {
        let errors: Vec<String> = fx
            .events(key)
            .await
            .iter()
            .filter_map(|e| match &e.event {
                Event::StepAttemptFailed { error, .. } => Some(error.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(errors, vec!["injected transient fault in calculator"]);
    }

    let key = fx.create_run("calculate 2+2").await;
    let m = fx.next_messages(1).await.remove(0);
    let t = Instant::now();
    handle_message(&fx.cloud, &c, &c_ports, m).await;
    let fast = t.elapsed();
    let events = fx.events(&key).await;
    assert!(
        !events.iter().any(|e| matches!(
            e.event,
            Event::StepAttemptFailed { .. } | Event::StepStarted { .. }
        )),
        "a refused call is not an attempt: {:?}",
        event_types(&events)
    );
    let deferred = events.iter().find_map(|e| match &e.event {
        Event::StepDeferred {
            reason, attempt, ..
        } => Some((reason.clone(), *attempt)),
        _ => None,
    });
    assert_eq!(
        deferred,
        Some((
            "calculator temporarily unavailable (circuit breaker open)".to_owned(),
            1
        )),
        "the healthy worker was held back by the shared open breaker"
    );
    let (version, state) = fx.breaker_item("calculator").await.expect("breaker item");
    assert_eq!(
        (version, state["state"].clone()),
        (3, json!("open")),
        "a refused call leaves the breaker as it was"
    );
    let tools = fx.tools().await;
    let calculator = tools["tools"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "calculator"))
        .cloned()
        .expect("calculator in GET /tools");
    assert_eq!(calculator["breaker"]["state"], "open", "{calculator}");

    // The job waits in SQS (a message delay, no Lambda billed) until the breaker may
    // half-open, comes back, and runs as a trial on the healthy worker.
    let mut back = Vec::new();
    eventually("the deferred job to come back from SQS", WAIT, async || {
        if let Some(event) = fx.cloud.receive(1).await {
            back.extend(event.records);
        }
        (!back.is_empty()).then_some(())
    })
    .await;
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(1_000),
        "the job waited in the queue ({waited:?})"
    );
    handle_message(&fx.cloud, &c, &c_ports, back.remove(0)).await;
    let view = fx
        .react_until(&key, "the run to complete", |v| v.status.is_finished())
        .await;
    assert_eq!(view.status, RunStatus::Completed, "{view:#?}");
    assert_eq!(step(&view, "s1").attempts, 1, "waiting used no attempt");
    let (_, state) = fx.breaker_item("calculator").await.expect("breaker item");
    assert_eq!(state["state"], "closed", "the trial's success closed it");
    eprintln!(
        "== shared breaker == item after A, B, A: {summary:?}; worker C deferred in {} ms, the job came back after {} ms",
        fast.as_millis(),
        waited.as_millis()
    );
}

#[tokio::test]
async fn given_the_store_unreachable_when_a_job_fails_then_its_message_returns_in_seconds_not_after_the_visibility_timeout(
) {
    let fx = Fx::start(
        "given_the_store_unreachable_when_a_job_fails",
        config("", |_| {}),
    )
    .await;
    // The deployed queue's visibility timeout (template.yaml: 6 x the worker's 60 s).
    fx.cloud
        .sqs
        .set_queue_attributes()
        .queue_url(fx.cloud.queue_url())
        .attributes(QueueAttributeName::VisibilityTimeout, "360")
        .send()
        .await
        .expect("SetQueueAttributes");
    let key = fx.create_run("calculate 6*7").await;
    let mut messages = fx.next_messages(1).await;
    let first = messages.remove(0);
    assert_eq!(first.attributes["ApproximateReceiveCount"], "1");

    // A worker whose DynamoDB endpoint refuses connections: an infrastructure failure,
    // nothing to do with the job. Its SQS client is the real one (moto).
    let mut clients = fx.cloud.clients(&RequestLog::default());
    clients.dynamodb = clients::dynamodb("http://127.0.0.1:9", None);
    let (broken, ports) = build_app(&config("", |_| {}), &clients, &fx.cloud.names);
    let mut event = SqsEvent::default();
    event.records = vec![first];
    let resp = sqs::handle_step_batch(
        &broken,
        ports.dispatcher.as_ref(),
        ports.redelivery.as_ref(),
        event.clone(),
        None,
    )
    .await;
    assert_eq!(resp.batch_item_failures.len(), 1, "the job is reported");
    let failed_at = Instant::now();
    fx.cloud.acknowledge(&event, &resp).await;

    // Without the shortened visibility it would stay hidden for 360 s.
    let again = eventually(
        "the job to come back",
        Duration::from_secs(30),
        async || fx.cloud.receive(1).await.map(|e| e.records),
    )
    .await;
    let waited = failed_at.elapsed();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attributes["ApproximateReceiveCount"], "2");
    let (lo, hi) = (sqs::redelivery_secs(1, 0.0), sqs::redelivery_secs(1, 1.0));
    assert!(
        waited >= Duration::from_secs(u64::from(lo)) - Duration::from_millis(500)
            && waited <= Duration::from_secs(u64::from(hi) + 5),
        "back after {waited:?}, expected {lo}-{hi} s"
    );

    // A healthy worker then runs it.
    let mut event = SqsEvent::default();
    event.records = again;
    let resp = sqs::handle_step_batch(
        &fx.worker,
        fx.worker_sent.as_ref(),
        fx.worker_redelivery.as_ref(),
        event.clone(),
        None,
    )
    .await;
    assert!(resp.batch_item_failures.is_empty(), "{resp:?}");
    fx.cloud.acknowledge(&event, &resp).await;
    let view = eventually("the run to complete", WAIT, async || {
        fx.react_once().await;
        fx.view(&key).await.filter(|v| v.status.is_finished())
    })
    .await;
    assert_eq!(view.status, RunStatus::Completed, "{view:#?}");
}

/// create-run as deployed with Planner=llm and a key secret: its API answers.
async fn invoke(app: &Arc<App>, event: Value) -> (u16, Value) {
    let resp = http::invoke(app.clone(), event).await.expect("answers");
    let status = resp["statusCode"].as_u64().expect("statusCode") as u16;
    let body = serde_json::from_str(resp["body"].as_str().expect("body")).expect("JSON body");
    (status, body)
}

#[tokio::test]
async fn given_an_unreadable_llm_key_secret_when_runs_are_created_then_the_pattern_planner_plans_health_is_degraded_and_the_secret_is_read_later(
) {
    init_logs();
    let cloud = crane_tests::cloud::Cloud::create("given_an_unreadable_llm_key_secret").await;
    let secrets = clients::secrets_manager(&cloud.emulators.moto);
    let secret_name = format!("{}-llm-key", unique("crane"));
    let vars: HashMap<String, String> = [
        ("CRANE_PLANNER", "llm"),
        // Nothing listens there: once the key is read, the LLM call itself fails over.
        ("CRANE_LLM_BASE_URL", "http://127.0.0.1:9/v1"),
        ("CRANE_LLM_MODEL", "test-model"),
        ("CRANE_LLM_TIMEOUT_MS", "2000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    // The secret does not exist yet: GetSecretValue fails at cold start.
    let source = Arc::new(crane::entrypoints::llm_key::SecretsManagerSource::new(
        secrets.clone(),
        secret_name.clone(),
    ));
    let planner = crane::entrypoints::planner_with_key_secret(vars, source, Duration::from_secs(2))
        .await
        .expect("create-run starts although the secret cannot be read");
    let (app, _) = crane::entrypoints::build_app_with(
        &Config::default(),
        &cloud.clients(&RequestLog::default()),
        &cloud.names,
        planner,
    );

    let (status, run) = invoke(&app, sample("create-run", "post-runs")).await;
    assert_eq!(status, 201, "POST /runs still answers: {run}");
    assert_eq!(run["planner"]["name"], "pattern");
    assert_eq!(run["planner"]["requested"], "llm");
    let reason = run["planner"]["fallback_reason"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        reason, "misconfigured",
        "clients see a category, never the secret's name"
    );
    let (status, health) = invoke(&app, sample("create-run", "health")).await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["planner"]["status"], "degraded");
    assert!(
        health["planner"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("ResourceNotFound")),
        "{health}"
    );

    // The secret is fixed; a request after the retry interval reads it.
    secrets
        .create_secret()
        .name(&secret_name)
        .secret_string("sk-test")
        .send()
        .await
        .expect("CreateSecret in moto");
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let (status, run) = invoke(&app, sample("create-run", "post-runs")).await;
    assert_eq!(status, 201, "{run}");
    let reason = run["planner"]["fallback_reason"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        reason, "unavailable",
        "with the key read, the LLM planner itself was asked (and its endpoint is down)"
    );
    let (_, health) = invoke(&app, sample("create-run", "health")).await;
    assert_eq!(
        health["status"], "ok",
        "a down endpoint is not a setup problem: {health}"
    );
}

// ---------------------------------------------------------------------------
// The saga under Lambda faults, and an operator's retry
// ---------------------------------------------------------------------------

/// How the Lambda integration reports a fault of Lambda or of the function itself (not an
/// answer of the compensate function).
fn lambda_fault(error: &str) -> Value {
    json!({"Error": error, "Cause": format!("{error} (injected by the test)")})
}

/// A run whose last step failed for good after two todo adds, with the saga the reactor
/// started for it: its execution input.
async fn failed_run_with_saga(fx: &Arc<Fx>) -> (RunKey, Value) {
    let loops = fx.start_loops();
    let key = fx.create_run(TWO_ADDS_THEN_CALCULATE).await;
    eventually("the reactor to start the saga", WAIT, async || {
        (fx.sagas.starts(&key) > 0).then_some(())
    })
    .await;
    loops.stop().await;
    let input = fx.execution_input(&key).await;
    (key, input)
}

#[tokio::test]
async fn given_lambda_faults_in_every_saga_task_when_they_pass_then_each_task_is_retried_and_the_run_is_compensated(
) {
    let fx = Fx::start(
        "given_lambda_faults_in_every_saga_task",
        config("calculator=fail_permanent", |_| {}),
    )
    .await;
    let (key, input) = failed_run_with_saga(&fx).await;
    // The first call of each task fails as Lambda reports its own faults: a function that
    // timed out or ran out of memory, throttling, a service error.
    let faults = [
        ("Begin", "Lambda.Unknown"),
        ("UndoStep", "Lambda.TooManyRequestsException"),
        ("Finish", "Lambda.ServiceException"),
    ];
    let crash = move |state: &str, nth: usize| {
        faults
            .iter()
            .find(|(s, _)| *s == state && nth == 0)
            .map(|(_, e)| lambda_fault(e))
    };
    let saga = drive_saga_with(&fx.asl, &fx.compensate, input, &crash).await;

    assert_eq!(
        saga.end
            .as_ref()
            .map(|o| o["outcome"]["result"]["status"].clone()),
        Ok(json!("compensated")),
        "{saga:#?}"
    );
    for (state, error) in faults {
        let calls = saga.calls_of(state);
        assert_eq!(
            calls[0].outcome.as_ref().err().map(|e| e["Error"].clone()),
            Some(json!(error)),
            "{state}"
        );
        assert!(calls[1].outcome.is_ok(), "{state} is retried after {error}");
    }
    let view = fx
        .react_until(&key, "the run to be compensated", |v| settled(v.status))
        .await;
    assert_eq!(view.status, RunStatus::Compensated, "{view:#?}");
    assert!(fx.todos().await.is_empty());
}

#[tokio::test]
async fn given_a_saga_task_that_keeps_crashing_when_its_retries_run_out_then_the_failure_is_caught_and_the_run_ends_compensation_failed(
) {
    let fx = Fx::start(
        "given_a_saga_task_that_keeps_crashing",
        config("calculator=fail_permanent", |_| {}),
    )
    .await;
    let (key, input) = failed_run_with_saga(&fx).await;
    // Begin's function crashes on every call (out of memory, say): Begin's retries run
    // out, the Catch records the failure instead of failing the execution.
    let crash =
        |state: &str, _nth: usize| (state == "Begin").then(|| lambda_fault("Lambda.Unknown"));
    let saga = drive_saga_with(&fx.asl, &fx.compensate, input, &crash).await;

    assert_eq!(
        saga.entered,
        ["Begin", "RecordFailure", "CompensationFailed"],
        "{saga:#?}"
    );
    let retries = &fx.asl["States"]["Begin"]["Retry"]
        .as_array()
        .expect("Retry")
        .iter()
        .find(|r| {
            r["ErrorEquals"]
                .as_array()
                .is_some_and(|e| e.contains(&json!("Lambda.Unknown")))
        })
        .expect("Begin retries Lambda.Unknown")["MaxAttempts"];
    assert_eq!(
        saga.calls_of("Begin").len() as u64,
        retries.as_u64().expect("MaxAttempts") + 1
    );
    assert_eq!(
        saga.calls_of("RecordFailure")[0]
            .outcome
            .as_ref()
            .map(|o| o["status"].clone()),
        Ok(json!("compensation_failed"))
    );
    let view = fx
        .react_until(&key, "the failure to be recorded", |v| settled(v.status))
        .await;
    assert_eq!(view.status, RunStatus::CompensationFailed, "{view:#?}");
    assert!(
        view.error
            .as_deref()
            .is_some_and(|e| e.contains("Lambda.Unknown")),
        "{:?}",
        view.error
    );
}

#[tokio::test]
async fn given_a_saga_that_crashed_without_recording_it_when_an_operator_retries_then_a_new_execution_compensates_the_run(
) {
    let fx = Fx::start(
        "given_a_saga_that_crashed_without_recording_it",
        config("calculator=fail_permanent", |_| {}),
    )
    .await;
    let (key, input) = failed_run_with_saga(&fx).await;
    // Undoing s2 crashes, and so does recording the failure: the execution fails.
    let crash = |state: &str, _nth: usize| {
        matches!(state, "UndoStep" | "RecordFailure").then(|| lambda_fault("Runtime.ExitError"))
    };
    let saga = drive_saga_with(&fx.asl, &fx.compensate, input, &crash).await;
    assert_eq!(saga.end, Err("Crane.SagaFailed".to_owned()), "{saga:#?}");
    let stuck = fx
        .react_until(&key, "the view to show the saga began", |v| {
            v.status == RunStatus::Compensating
        })
        .await;
    assert_eq!(
        stuck.status,
        RunStatus::Compensating,
        "stuck: no saga will finish it"
    );

    // The operator's request, as the README shows it (the `retry` sample, for this run).
    let mut request = sample("compensate", "retry");
    request["tenant"] = json!(key.tenant);
    request["run_id"] = json!(key.run_id);
    let answer = saga::handle_saga_input(&fx.compensate, request)
        .await
        .expect("the retry is accepted");
    let name = format!("{}-saga-2", key.run_id);
    assert_eq!(answer["saga_attempt"], 2);
    assert_eq!(answer["execution_name"], name.as_str());

    // The reactor starts attempt 2 as a new execution (the run id is taken).
    let execution = eventually("the second execution", WAIT, async || {
        fx.react_once().await;
        let executions = fx.executions().await;
        executions
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, arn)| arn.clone())
    })
    .await;
    let mut names: Vec<String> = fx.executions().await.into_iter().map(|(n, _)| n).collect();
    names.sort();
    assert_eq!(names, vec![key.run_id.clone(), name.clone()]);
    let described = fx
        .sfn
        .describe_execution()
        .execution_arn(execution)
        .send()
        .await
        .expect("DescribeExecution");
    let input: Value =
        serde_json::from_str(described.input().expect("input")).expect("input is JSON");

    let saga = drive_saga(&fx.asl, &fx.compensate, input).await;
    assert_eq!(
        saga.end
            .as_ref()
            .map(|o| o["outcome"]["result"]["status"].clone()),
        Ok(json!("compensated")),
        "{saga:#?}"
    );
    let view = fx
        .react_until(&key, "the run to be compensated", |v| settled(v.status))
        .await;
    assert_eq!(view.status, RunStatus::Compensated, "{view:#?}");
    assert!(fx.todos().await.is_empty(), "both adds undone");
    let events = fx.events(&key).await;
    assert!(event_types(&events).contains(&"CompensationRetryRequested"));
    // A finished run has nothing to retry.
    let mut again = sample("compensate", "retry");
    again["tenant"] = json!(key.tenant);
    again["run_id"] = json!(key.run_id);
    let err = saga::handle_saga_input(&fx.compensate, again)
        .await
        .expect_err("nothing to retry");
    assert_eq!(err.error_type(), saga::PERMANENT);
}

// ---------------------------------------------------------------------------
// Human approval (issue 15): held steps wait in the log, their timer in SQS
// ---------------------------------------------------------------------------

/// Every function of an approval test holds todo deletes (`CRANE_APPROVAL=todo.delete`).
fn holding_deletes(timeout_ms: u64) -> Config {
    config("", |c| {
        c.settings.approval =
            crane::engine::approval::ApprovalPolicy::parse(["todo.delete"]).expect("policy");
        c.settings.approval_timeout_ms = timeout_ms;
    })
}

impl Fx {
    /// `POST /runs/{id}/steps/{step_id}/approve|reject` (the `post-approve` sample).
    async fn decide(&self, run_id: &str, step_id: &str, verb: &str) -> (u16, Value) {
        let mut event = sample("create-run", "post-approve");
        let path = format!("/runs/{run_id}/steps/{step_id}/{verb}");
        event["routeKey"] = format!("POST /runs/{{id}}/steps/{{step_id}}/{verb}").into();
        event["requestContext"]["routeKey"] = event["routeKey"].clone();
        event["rawPath"] = path.clone().into();
        event["requestContext"]["http"]["path"] = path.into();
        event["pathParameters"]["id"] = run_id.into();
        event["pathParameters"]["step_id"] = step_id.into();
        if let Some(headers) = event["headers"].as_object_mut() {
            headers.remove("content-length");
        }
        self.api(event).await
    }

    /// Run `add a todo to <title>` to its end with the background loops.
    async fn seed_todo(&self, title: &str) {
        let key = self.create_run(&format!("add a todo to {title}")).await;
        self.react_until(&key, "the seeding run to complete", |v| {
            v.status == RunStatus::Completed
        })
        .await;
    }

    /// Jobs the step-worker received for `step_id` of the run.
    fn received_for(&self, key: &RunKey, step_id: &str) -> usize {
        self.received
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, j)| j.run_id == key.run_id && j.step_id == step_id)
            .count()
    }
}

/// Create the run, let the loops work until `held` waits for approval and every other
/// step that can run has completed. Read from the log: a step completing while the next
/// one waits for approval changes nothing the reactor must see, so the view lags.
async fn until_held(fx: &Fx, prompt: &str, held: &str, done_first: &[&str]) -> (RunKey, RunState) {
    let key = fx.create_run(prompt).await;
    let view = eventually("the held step to wait for approval", WAIT, async || {
        fx.folded(&key).await.filter(|v| {
            v.awaiting_approval == [held.to_owned()]
                && done_first
                    .iter()
                    .all(|s| v.step(s).map(|s| s.status) == Some(StepStatus::Completed))
        })
    })
    .await;
    (key, view)
}

#[tokio::test]
async fn given_a_delete_that_needs_approval_on_the_cloud_path_when_approved_then_only_its_timer_waited_in_sqs_and_then_it_ran(
) {
    let fx = Fx::start(
        "given_a_delete_that_needs_approval_when_approved",
        holding_deletes(86_400_000),
    )
    .await;
    let loops = fx.start_loops();
    fx.seed_todo("buy milk").await;
    let (key, view) = until_held(
        &fx,
        "calculate 2+3 and delete the todo 'buy milk'",
        "s2",
        &["s1"],
    )
    .await;
    assert_eq!(step(&view, "s2").status, StepStatus::WaitingApproval);
    assert_eq!(view.status, RunStatus::Running);
    assert!(view.plan.steps[1].requires_approval);
    // Give a wrongly dispatched job time to arrive: none does.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        fx.received_for(&key, "s2"),
        0,
        "no worker saw the held step"
    );
    assert_eq!(fx.todos().await.len(), 1);
    let timers: Vec<Sent> = fx
        .reactor_sent
        .sent()
        .into_iter()
        .filter(|s| s.job.run_id == key.run_id && s.job.step_id == "s2")
        .collect();
    assert_eq!(timers.len(), 1, "{timers:?}");
    assert!(
        (86_399_000..=86_400_000).contains(&timers[0].delay_ms),
        "the expiry timer, due when the approval expires: {timers:?}"
    );
    assert_eq!(
        delay_seconds(timers[0].delay_ms),
        900,
        "SQS holds it 15 minutes at most"
    );

    let (status, body) = fx.decide(&key.run_id, "s2", "approve").await;
    assert_eq!(status, 200, "{body}");
    let view = fx
        .react_until(&key, "the run to complete", |v| settled(v.status))
        .await;
    loops.stop().await;
    fx.assert_no_stream_failures();
    assert_eq!(view.status, RunStatus::Completed, "{view:#?}");
    assert!(fx.todos().await.is_empty(), "deleted once approved");
    let types = event_types(&fx.events(&key).await);
    let approved = types.iter().position(|t| *t == "StepApproved");
    let started = types.iter().rposition(|t| *t == "StepStarted");
    assert!(approved < started, "{types:?}");
    let (status, err) = fx.decide(&key.run_id, "s2", "reject").await;
    assert_eq!(
        (status, err["error"]["code"].clone()),
        (409, json!("already_decided"))
    );
}

#[tokio::test]
async fn given_a_waiting_delete_on_the_cloud_path_when_approve_and_reject_race_then_one_wins_and_a_rejection_is_compensated(
) {
    let fx = Fx::start(
        "given_a_waiting_delete_when_approve_and_reject_race",
        holding_deletes(86_400_000),
    )
    .await;
    let loops = fx.start_loops();
    fx.seed_todo("buy milk").await;
    fx.seed_todo("buy tea").await;

    // A race: exactly one decision is written (a conditional append), the other is a 409.
    let (raced, _) = until_held(&fx, "delete the todo 'buy milk'", "s1", &[]).await;
    let ((a, _), (r, _)) = tokio::join!(
        fx.decide(&raced.run_id, "s1", "approve"),
        fx.decide(&raced.run_id, "s1", "reject"),
    );
    let mut statuses = [a, r];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "exactly one decision is written");
    let decisions = fx
        .events(&raced)
        .await
        .iter()
        .filter(|e| {
            matches!(
                e.event,
                Event::StepApproved { .. } | Event::StepRejected { .. }
            )
        })
        .count();
    assert_eq!(decisions, 1);

    // A rejection after a completed step: the step never runs, the saga undoes the add.
    let (key, _) = until_held(
        &fx,
        "add a todo to buy eggs and delete the todo 'buy tea'",
        "s2",
        &["s1"],
    )
    .await;
    let (status, rejected) = fx.decide(&key.run_id, "s2", "reject").await;
    assert_eq!(status, 200, "{rejected}");
    assert_eq!(rejected["status"], "failed", "{rejected}");
    eventually("the saga to start", WAIT, async || {
        (fx.sagas.starts(&key) > 0).then_some(())
    })
    .await;
    fx.react_until(&raced, "the raced run to settle", |v| {
        settled(v.status) || v.status == RunStatus::Failed
    })
    .await;
    loops.stop().await;
    let input = fx.execution_input(&key).await;
    let saga = drive_saga(&fx.asl, &fx.compensate, input).await;
    assert_eq!(
        saga.end
            .as_ref()
            .map(|o| o["outcome"]["result"]["status"].clone()),
        Ok(json!("compensated")),
        "{saga:#?}"
    );
    let view = fx
        .react_until(&key, "the run to be compensated", |v| settled(v.status))
        .await;
    assert_eq!(view.status, RunStatus::Compensated, "{view:#?}");
    assert_eq!(step(&view, "s2").attempts, 0, "the rejected step never ran");
    let titles: Vec<String> = fx.todos().await.into_iter().map(|t| t.title).collect();
    assert!(
        titles.contains(&"buy tea".to_owned()) && !titles.contains(&"buy eggs".to_owned()),
        "eggs undone, tea never deleted: {titles:?}"
    );
}

#[tokio::test]
async fn given_nobody_decides_on_the_cloud_path_when_the_timer_comes_back_early_it_is_rearmed_and_when_due_the_step_is_rejected(
) {
    let fx = Fx::start(
        "given_nobody_decides_when_the_timer_comes_back",
        holding_deletes(3_000),
    )
    .await;
    let loops = fx.start_loops();
    fx.seed_todo("buy milk").await;
    let (key, view) = until_held(
        &fx,
        "add a todo to buy eggs and delete the todo 'buy milk'",
        "s2",
        &[],
    )
    .await;
    // A delivery before the expiry (SQS holds a timer at most 15 minutes) sends the timer
    // back to the queue for the time that is left, and changes nothing.
    let expires_at = step(&view, "s2")
        .approval
        .as_ref()
        .map(|a| a.expires_at)
        .expect("approval");
    let early = StepJob {
        tenant: key.tenant.clone(),
        run_id: key.run_id.clone(),
        step_id: "s2".into(),
        attempt: 1,
        correlation_id: view.correlation_id.clone(),
    };
    // The background worker stops meanwhile: the real timer may come back early too and
    // be re-armed by it, which would be a second send in the window measured below.
    loops.stop().await;
    let mut event = SqsEvent::default();
    event.records = vec![serde_json::from_value(json!({
        "messageId": "early-timer",
        "body": serde_json::to_string(&early).expect("job"),
        "attributes": {"ApproximateReceiveCount": "1"},
    }))
    .expect("an SqsMessage")];
    let before = fx.worker_sent.sent().len();
    let resp = sqs::handle_step_batch(
        &fx.worker,
        fx.worker_sent.as_ref(),
        fx.worker_redelivery.as_ref(),
        event,
        None,
    )
    .await;
    assert!(resp.batch_item_failures.is_empty());
    let rearmed: Vec<Sent> = fx.worker_sent.sent()[before..].to_vec();
    assert_eq!(rearmed.len(), 1, "{rearmed:?}");
    assert!(
        rearmed[0].delay_ms > 0 && rearmed[0].delay_ms <= 3_000,
        "re-armed for what is left: {rearmed:?}"
    );
    let left_ms = (expires_at - chrono::Utc::now()).num_milliseconds();
    assert!(
        i64::try_from(rearmed[0].delay_ms).is_ok_and(|d| d >= left_ms),
        "not before the expiry: {rearmed:?}"
    );

    // Nobody decides: the timer fires, the step is rejected as expired, the saga undoes
    // the eggs.
    let loops = fx.start_loops();
    eventually("the saga to start", WAIT, async || {
        (fx.sagas.starts(&key) > 0).then_some(())
    })
    .await;
    loops.stop().await;
    let input = fx.execution_input(&key).await;
    drive_saga(&fx.asl, &fx.compensate, input).await;
    let view = fx
        .react_until(&key, "the run to be compensated", |v| settled(v.status))
        .await;
    assert_eq!(view.status, RunStatus::Compensated, "{view:#?}");
    let s2 = step(&view, "s2");
    assert_eq!(
        s2.approval.as_ref().and_then(|a| a.decision),
        Some(crane::domain::ApprovalDecision::Expired)
    );
    assert_eq!(s2.attempts, 0);
    let titles: Vec<String> = fx.todos().await.into_iter().map(|t| t.title).collect();
    assert_eq!(titles, ["buy milk"]);
}

#[tokio::test]
async fn given_a_step_waiting_for_approval_on_the_cloud_path_when_cancelled_then_it_is_skipped_and_completed_steps_undone(
) {
    let fx = Fx::start(
        "given_a_step_waiting_for_approval_when_cancelled",
        holding_deletes(86_400_000),
    )
    .await;
    let loops = fx.start_loops();
    fx.seed_todo("buy milk").await;
    let (key, _) = until_held(
        &fx,
        "add a todo to buy eggs and delete the todo 'buy milk'",
        "s2",
        &["s1"],
    )
    .await;
    let (status, body) = fx.cancel(&key.run_id).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["awaiting_approval"], json!([]));
    eventually("the saga to start", WAIT, async || {
        (fx.sagas.starts(&key) > 0).then_some(())
    })
    .await;
    loops.stop().await;
    let input = fx.execution_input(&key).await;
    drive_saga(&fx.asl, &fx.compensate, input).await;
    let view = fx
        .react_until(&key, "the run to be cancelled", |v| settled(v.status))
        .await;
    assert_eq!(view.status, RunStatus::Cancelled, "{view:#?}");
    assert_eq!(step(&view, "s2").status, StepStatus::Skipped);
    assert_eq!(step(&view, "s1").status, StepStatus::Compensated);
    assert_eq!(
        fx.received_for(&key, "s2"),
        0,
        "no worker saw the held step"
    );
    let titles: Vec<String> = fx.todos().await.into_iter().map(|t| t.title).collect();
    assert_eq!(titles, ["buy milk"]);
}

#[tokio::test]
async fn given_the_reactor_crashes_after_dispatching_an_approved_step_when_its_batch_is_replayed_then_the_step_runs_once(
) {
    let fx = Fx::start(
        "given_the_reactor_crashes_after_dispatching_an_approved_step",
        holding_deletes(86_400_000),
    )
    .await;
    let loops = fx.start_loops();
    fx.seed_todo("buy milk").await;
    fx.seed_todo("buy tea").await;
    let (key, _) = until_held(&fx, "delete the todo 'buy milk'", "s1", &[]).await;
    let (status, body) = fx.decide(&key.run_id, "s1", "approve").await;
    assert_eq!(status, 200, "{body}");
    fx.react_until(&key, "the approved run to complete", |v| settled(v.status))
        .await;
    // Lambda retries a stream batch whose invocation died after its side effects: replay
    // every batch that carried the approval, as if the first invocation had crashed.
    let replays: Vec<StreamEvent> = fx
        .batches
        .lock()
        .expect("lock")
        .iter()
        .filter(|b| {
            b.records.iter().any(|r| {
                stream::decode_record(r).is_ok_and(|(k, recs)| {
                    k == key
                        && recs
                            .iter()
                            .any(|rec| matches!(rec.event, Event::StepApproved { .. }))
                })
            })
        })
        .cloned()
        .collect();
    assert!(!replays.is_empty(), "the approval went through the stream");
    for batch in replays {
        let resp = stream::handle_stream_batch(
            &fx.reactor,
            fx.reactor_sent.as_ref(),
            fx.sagas.as_ref(),
            batch,
        )
        .await;
        assert!(resp.batch_item_failures.is_empty());
    }
    // The duplicate job reaches a worker and finds the step done.
    eventually("the duplicate job to be handled", WAIT, async || {
        (fx.received_for(&key, "s1") >= 2).then_some(())
    })
    .await;
    loops.stop().await;
    let events = fx.events(&key).await;
    let starts = events
        .iter()
        .filter(|e| matches!(&e.event, Event::StepStarted { step_id, .. } if step_id == "s1"))
        .count();
    assert_eq!(starts, 1, "{:?}", event_types(&events));
    let titles: Vec<String> = fx.todos().await.into_iter().map(|t| t.title).collect();
    assert_eq!(titles, ["buy tea"]);
}
