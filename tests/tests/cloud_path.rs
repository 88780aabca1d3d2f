//! The cloud path end to end, on local AWS engines (DynamoDB Local with Streams, moto's
//! SQS), through the real handlers: create-run's router (fed the `post-runs` sample
//! event), then the event reactor fed with records read from DynamoDB Local's stream, then
//! the step worker fed with messages received from moto's SQS, until the run is
//! `completed` in the runs view table. The harness stands in for Lambda's event source
//! mappings; every handler has its own counted AWS clients, as the deployed functions do.
//!
//! Needs `CRANE_TEST_DYNAMODB_ENDPOINT` and `CRANE_TEST_MOTO_ENDPOINT` (`./scripts/test`
//! starts the emulators and sets them). `TEST_LOG=1` prints the handlers' logs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crane::app::App;
use crane::config::Config;
use crane::domain::{Event, EventRecord, RunKey, RunState, RunStatus, StepJob, StepStatus};
use crane::entrypoints::{build_app, http, sqs, stream, CloudPorts};
use crane::ports::{
    EventStore, Outbox, Redelivery, RunViewStore, StepDispatcher, StoreResult, TodoQuery, TodoStore,
};
use crane_tests::cloud::{Cloud, RequestLog, StreamReader};
use crane_tests::events::{sample, stream_sample_records, TENANT};
use crane_tests::logs::init_logs;
use serde_json::{json, Value};

/// How long a run may take on the emulators before the test gives up.
const DEADLINE: Duration = Duration::from_secs(90);

/// Sends through the real SQS dispatcher `copies` times (duplicate delivery) and records
/// when it sent what.
struct Recorder {
    inner: Arc<dyn StepDispatcher>,
    copies: usize,
    sent: Mutex<Vec<(DateTime<Utc>, Vec<StepJob>)>>,
}

#[async_trait]
impl StepDispatcher for Recorder {
    async fn dispatch(&self, jobs: &[(StepJob, u64)]) -> StoreResult<()> {
        for _ in 0..self.copies {
            self.inner.dispatch(jobs).await?;
        }
        let jobs = jobs.iter().map(|(j, _)| j.clone()).collect();
        self.sent.lock().expect("lock").push((Utc::now(), jobs));
        Ok(())
    }
}

/// Invocations of one function and their total wall time.
#[derive(Default)]
struct Invocations {
    /// (records in the batch, handler wall time in ms) per invocation.
    calls: Mutex<Vec<(usize, f64)>>,
}

impl Invocations {
    fn add(&self, records: usize, t: Instant) {
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        self.calls.lock().expect("lock").push((records, ms));
    }

    fn line(&self, name: &str) -> String {
        let calls = self.calls.lock().expect("lock").clone();
        let total: f64 = calls.iter().map(|(_, ms)| ms).sum();
        let each: Vec<String> = calls
            .iter()
            .map(|(n, ms)| format!("{n} rec/{ms:.0} ms"))
            .collect();
        format!(
            "  {name:<14} invocations {:>3}   handler time {total:>7.1} ms   [{}]",
            calls.len(),
            each.join(", ")
        )
    }
}

/// The deployed functions, each an App over its own counted clients.
struct Functions {
    cloud: Cloud,
    api: Arc<App>,
    api_log: RequestLog,
    reactor: Arc<App>,
    reactor_ports: CloudPorts,
    reactor_sent: Arc<Recorder>,
    reactor_log: RequestLog,
    reactor_calls: Invocations,
    worker: Arc<App>,
    worker_dispatcher: Arc<Recorder>,
    worker_redelivery: Arc<dyn Redelivery>,
    worker_log: RequestLog,
    worker_calls: Invocations,
    stream_failures: Mutex<Vec<String>>,
    /// When the reactor received each batch, and the event seqs in it.
    reactor_batches: Mutex<Vec<(DateTime<Utc>, Vec<u64>)>>,
    /// create-run's handler time, in ms.
    create_ms: Mutex<f64>,
}

fn config() -> Config {
    let mut c = Config::default();
    c.settings.retry.base_ms = 50;
    c
}

impl Functions {
    /// `copies`: how many times every step job is sent (2 = duplicate delivery).
    async fn start(test: &str, copies: usize) -> Arc<Functions> {
        init_logs();
        let cloud = Cloud::create(test).await;
        let config = config();
        let function = |log: &RequestLog| build_app(&config, &cloud.clients(log), &cloud.names);
        let api_log = RequestLog::default();
        let (api, _) = function(&api_log);
        let reactor_log = RequestLog::default();
        let (reactor, ports) = function(&reactor_log);
        let reactor_sent = Arc::new(Recorder {
            inner: ports.dispatcher.clone(),
            copies,
            sent: Mutex::new(Vec::new()),
        });
        let reactor_ports = CloudPorts {
            dispatcher: reactor_sent.clone(),
            saga: ports.saga,
            redelivery: ports.redelivery,
        };
        let worker_log = RequestLog::default();
        let (worker, ports) = function(&worker_log);
        let worker_dispatcher = Arc::new(Recorder {
            inner: ports.dispatcher,
            copies,
            sent: Mutex::new(Vec::new()),
        });
        let worker_redelivery = ports.redelivery;
        Arc::new(Functions {
            cloud,
            api,
            api_log,
            reactor,
            reactor_ports,
            reactor_sent,
            reactor_log,
            reactor_calls: Invocations::default(),
            worker,
            worker_dispatcher,
            worker_redelivery,
            worker_log,
            worker_calls: Invocations::default(),
            stream_failures: Mutex::new(Vec::new()),
            reactor_batches: Mutex::new(Vec::new()),
            create_ms: Mutex::new(0.0),
        })
    }

    /// create-run: the `post-runs` sample event (the seed DAG prompt) through the router.
    async fn create_run(&self) -> RunKey {
        let t = Instant::now();
        let resp = http::invoke(self.api.clone(), sample("create-run", "post-runs"))
            .await
            .expect("create-run answers");
        *self.create_ms.lock().expect("lock") = t.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(resp["statusCode"], 201, "{resp}");
        let body: Value =
            serde_json::from_str(resp["body"].as_str().expect("body")).expect("JSON body");
        RunKey::new(TENANT, body["run_id"].as_str().expect("run_id"))
    }

    /// The event-reactor's event source mapping: stream records in, batch by batch.
    async fn react_loop(self: Arc<Self>, mut reader: StreamReader, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::SeqCst) {
            let Some(event) = reader.poll().await else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let (t, n) = (Instant::now(), event.records.len());
            let seqs: Vec<u64> = event
                .records
                .iter()
                .filter_map(|r| stream::decode_record(r).ok())
                .flat_map(|(_, recs)| recs.into_iter().map(|e| e.seq))
                .collect();
            self.reactor_batches
                .lock()
                .expect("lock")
                .push((Utc::now(), seqs));
            let resp = stream::handle_stream_batch(
                &self.reactor,
                self.reactor_ports.dispatcher.as_ref(),
                self.reactor_ports.saga.as_ref(),
                event,
            )
            .await;
            self.reactor_calls.add(n, t);
            self.stream_failures.lock().expect("lock").extend(
                resp.batch_item_failures
                    .into_iter()
                    .filter_map(|f| f.item_identifier),
            );
        }
    }

    /// The step-worker's event source mapping: receive, handle, delete what succeeded.
    async fn work_loop(self: Arc<Self>, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::SeqCst) {
            let Some(event) = self.cloud.receive(1).await else {
                continue;
            };
            let (t, n) = (Instant::now(), event.records.len());
            // As a Lambda invocation with a 60 s timeout.
            let until = Some(Instant::now() + Duration::from_secs(60));
            let resp = sqs::handle_step_batch(
                &self.worker,
                self.worker_dispatcher.as_ref(),
                self.worker_redelivery.as_ref(),
                event.clone(),
                until,
            )
            .await;
            self.worker_calls.add(n, t);
            self.cloud.acknowledge(&event, &resp).await;
        }
    }

    /// Start the reactor and `workers` worker loops, create the seed-DAG run and wait
    /// until it is finished in the view.
    async fn run_seed_dag(self: &Arc<Self>, workers: usize) -> (RunKey, RunState) {
        let stop = Arc::new(AtomicBool::new(false));
        let reader = self.cloud.stream_reader().await;
        let mut tasks = vec![tokio::spawn(self.clone().react_loop(reader, stop.clone()))];
        for _ in 0..workers {
            tasks.push(tokio::spawn(self.clone().work_loop(stop.clone())));
        }
        // Let the pollers reach their steady state before the run starts.
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.cloud.pollers.reset();
        let key = self.create_run().await;
        let key = &key;
        let started = Instant::now();
        let view = loop {
            if let Some(view) = RunViewStore::get(&self.cloud.store, key)
                .await
                .expect("view read")
            {
                if view.status.is_finished() {
                    break view;
                }
            }
            if let Some(t) = tasks.iter().find(|t| t.is_finished()) {
                let _ = t;
                stop.store(true, Ordering::SeqCst);
                for t in tasks {
                    if let Err(e) = t.await {
                        std::panic::resume_unwind(e.into_panic());
                    }
                }
                panic!("a poller stopped before the run finished");
            }
            if started.elapsed() > DEADLINE {
                stop.store(true, Ordering::SeqCst);
                let events = self.cloud.store.load(key).await.unwrap_or_default();
                panic!(
                    "run not finished after {DEADLINE:?}; events: {:#?}",
                    events
                        .iter()
                        .map(|e| (e.seq, e.event.type_name(), e.event.step_id()))
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        stop.store(true, Ordering::SeqCst);
        for t in tasks {
            t.await.expect("loop task");
        }
        let failures = self.stream_failures.lock().expect("lock").clone();
        assert!(failures.is_empty(), "stream batch failures: {failures:?}");
        (key.clone(), view)
    }

    fn reactor_dispatches(&self) -> Vec<(DateTime<Utc>, Vec<String>)> {
        self.reactor_sent
            .sent
            .lock()
            .expect("lock")
            .iter()
            .map(|(t, jobs)| (*t, jobs.iter().map(|j| j.step_id.clone()).collect()))
            .collect()
    }
}

fn assert_one_correct_result(view: &RunState, todos: &[crane::domain::Todo]) {
    assert_eq!(view.status, RunStatus::Completed, "{view:#?}");
    assert_eq!(
        view.result.as_ref().and_then(|r| r.get("title")),
        Some(&Value::from("50")),
        "{:?}",
        view.result
    );
    for s in &view.steps {
        assert_eq!(s.status, StepStatus::Completed, "{}", s.id);
        assert_eq!(s.attempts, 1, "{} ran exactly once", s.id);
    }
    let titles: Vec<&str> = todos.iter().map(|t| t.title.as_str()).collect();
    assert_eq!(titles, vec!["50"], "exactly one todo");
}

/// Milliseconds between two instants of the run.
fn ms(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_milliseconds()
}

/// Per DAG level: the event that made the level ready; when the reactor received it
/// (the stream poll), when the reactor had sent the level's jobs (its handler), and when
/// the first of them started (the queue hop and the worker's claim).
fn level_latencies(
    events: &[EventRecord],
    batches: &[(DateTime<Utc>, Vec<u64>)],
    dispatches: &[(DateTime<Utc>, Vec<String>)],
) -> String {
    let mut out = String::from(
        "  level  steps      trigger         stream poll  reactor  stream hop  queue hop  total (ms)\n",
    );
    for (level, (sent_at, steps)) in dispatches.iter().enumerate() {
        let trigger = events
            .iter()
            .filter(|e| {
                matches!(
                    e.event,
                    Event::PlanGenerated { .. } | Event::StepCompleted { .. }
                ) && e.at <= *sent_at
            })
            .max_by_key(|e| e.at);
        let started = events
            .iter()
            .filter_map(|e| match &e.event {
                Event::StepStarted { step_id, .. } if steps.contains(step_id) => Some(e.at),
                _ => None,
            })
            .min();
        let (Some(trigger), Some(started)) = (trigger, started) else {
            continue;
        };
        let received = batches
            .iter()
            .find(|(_, seqs)| seqs.contains(&trigger.seq))
            .map_or(*sent_at, |(t, _)| *t);
        let name = match &trigger.event {
            Event::StepCompleted { step_id, .. } => format!("{step_id} completed"),
            other => other.type_name().to_owned(),
        };
        out.push_str(&format!(
            "  {level:<6} {:<10} {name:<15} {:>11} {:>8} {:>11} {:>10} {:>11}\n",
            steps.join(","),
            ms(trigger.at, received),
            ms(received, *sent_at),
            ms(trigger.at, *sent_at),
            ms(*sent_at, started),
            ms(trigger.at, started),
        ));
    }
    out
}

#[tokio::test]
async fn given_the_seed_dag_when_driven_through_the_real_handlers_then_it_completes_level_by_level()
{
    let f = Functions::start(
        "given_the_seed_dag_when_driven_through_the_real_handlers",
        1,
    )
    .await;

    let (key, view) = f.run_seed_dag(1).await;

    let todos = TodoStore::list(
        &f.cloud.store,
        TENANT,
        &TodoQuery::first(TodoQuery::MAX_LIMIT),
    )
    .await
    .expect("todos")
    .items;
    assert_one_correct_result(&view, &todos);
    let dispatches = f.reactor_dispatches();
    let levels: Vec<Vec<String>> = dispatches.iter().map(|(_, s)| s.clone()).collect();
    assert_eq!(
        levels,
        vec![vec!["s1".to_owned(), "s2".into(), "s3".into()]],
        "the reactor sends level 0 (in one message); the worker that completed it runs level 1"
    );
    assert!(
        f.worker_dispatcher.sent.lock().expect("lock").is_empty(),
        "no job had to wait or go back to the queue"
    );
    assert_eq!(f.cloud.dlq_depth().await, 0);

    let events = f.cloud.store.load(&key).await.expect("events");
    let hop = next_level_hop(&events, &["s1", "s2", "s3"], "s4");
    eprintln!(
        "\n== latency per DAG level (emulators; harness polls the stream every 20 ms) ==\n{}  level 1 (s4): started {hop} ms after the last step of level 0 completed (same append: no queue or stream hop)\n",
        level_latencies(
            &events,
            &f.reactor_batches.lock().expect("lock"),
            &dispatches
        )
    );
    assert!(
        hop <= 60,
        "the next level must start within 60 ms of the last step of the previous one, took {hop} ms"
    );
    eprintln!(
        "== invocations ==\n  {:<14} invocations {:>3}\n{}\n{}\n",
        "create-run",
        1,
        f.reactor_calls.line("event-reactor"),
        f.worker_calls.line("step-worker"),
    );
    eprintln!(
        "{}",
        f.api_log.table("== AWS requests of one run: create-run ==")
    );
    eprintln!(
        "{}",
        f.reactor_log
            .table("== AWS requests of one run: event-reactor ==")
    );
    eprintln!(
        "{}",
        f.worker_log
            .table("== AWS requests of one run: step-worker ==")
    );
    let all = RequestLog::sum(&[&f.api_log, &f.reactor_log, &f.worker_log]);
    eprintln!(
        "{}",
        all.table("== AWS requests of one run: all functions ==")
    );
    eprintln!(
        "{}",
        f.cloud.pollers.table(
            "== harness standing in for Lambda's pollers (stream reads are free; SQS receive/delete are billed, their count depends on polling) =="
        )
    );
    let bill = f.bill(&all);
    eprintln!("{}", bill.table());
    assert!(
        bill.per_million() <= BUDGET_PER_MILLION,
        "a run of the seed prompt costs ${:.2} per million, over the ${BUDGET_PER_MILLION:.2} budget:\n{}",
        bill.per_million(),
        bill.table()
    );
}

/// Milliseconds from the last `StepCompleted` of `level` to the first `StepStarted` of
/// `next`, by the events' own times.
fn next_level_hop(events: &[EventRecord], level: &[&str], next: &str) -> i64 {
    let completed = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::StepCompleted { step_id, .. } if level.contains(&step_id.as_str()) => Some(e.at),
            _ => None,
        })
        .max()
        .expect("level completed");
    let started = events
        .iter()
        .find_map(|e| match &e.event {
            Event::StepStarted { step_id, .. } if step_id == next => Some(e.at),
            _ => None,
        })
        .expect("next level started");
    ms(completed, started)
}

/// What one run of the seed prompt may cost on AWS, in dollars per million runs (issue:
/// an order of magnitude under Step Functions Standard's ~$250).
const BUDGET_PER_MILLION: f64 = 15.0;

/// Lambda memory of every function, in GB (`MemorySize: 256` in template.yaml).
const LAMBDA_GB: f64 = 256.0 / 1024.0;

/// us-east-1 list prices, in dollars per unit (see docs/cost.md for the sources).
const PRICES: [(&str, f64); 6] = [
    ("API Gateway requests", 1.00 / 1e6),
    ("Lambda requests", 0.20 / 1e6),
    ("Lambda GB-seconds (arm64)", 0.000_013_333_4),
    ("DynamoDB write request units", 0.625 / 1e6),
    ("DynamoDB read request units", 0.125 / 1e6),
    ("SQS requests", 0.40 / 1e6),
];

/// The counted units of one run, priced.
struct Bill {
    /// (item, units per run, dollars per million runs), in the order of [`PRICES`].
    lines: Vec<(&'static str, f64, f64)>,
}

impl Bill {
    fn per_million(&self) -> f64 {
        self.lines.iter().map(|(_, _, d)| d).sum()
    }

    fn table(&self) -> String {
        let mut out =
            String::from("== cost of one run at list prices (from the counts above) ==\n");
        for (item, units, dollars) in &self.lines {
            out.push_str(&format!(
                "  {item:<30} {units:>10.3} per run  ${dollars:>7.2} per million runs\n"
            ));
        }
        out.push_str(&format!(
            "  {:<30} {:>10} {:>8}  ${:>7.2} per million runs (budget ${BUDGET_PER_MILLION:.2})\n",
            "total",
            "",
            "",
            self.per_million()
        ));
        out
    }
}

impl Functions {
    /// Price the run from what was counted: the functions' AWS requests (`all`), their
    /// invocations and handler times (billed duration, rounded up to the millisecond; the
    /// emulators are slower than AWS, so this is an upper bound), and the SQS receives and
    /// deletes of the harness standing in for Lambda's SQS poller (receives that brought
    /// messages: empty long polls are a fixed cost of the queue, not of a run). A failed
    /// conditional write is billed as one write unit though DynamoDB reports none.
    fn bill(&self, all: &RequestLog) -> Bill {
        let ops = all.snapshot();
        let dynamodb = |write: bool| -> f64 {
            ops.iter()
                .filter(|((service, op), _)| service == "DynamoDB" && is_read(op) != write)
                .map(|(_, s)| s.capacity_units + if write { s.errors as f64 } else { 0.0 })
                .sum()
        };
        let sqs_sent: u64 = ops
            .iter()
            .filter(|((service, _), _)| service == "SQS")
            .map(|(_, s)| s.requests)
            .sum();
        let polled = self.cloud.pollers.snapshot();
        let deletes: u64 = polled
            .iter()
            .filter(|((service, op), _)| service == "SQS" && op.starts_with("DeleteMessage"))
            .map(|(_, s)| s.requests)
            .sum();
        let worker = self.worker_calls.calls.lock().expect("lock").clone();
        let reactor = self.reactor_calls.calls.lock().expect("lock").clone();
        let receives = worker.len() as u64;
        let invocations = 1 + worker.len() + reactor.len();
        let billed_ms: f64 = worker
            .iter()
            .chain(&reactor)
            .map(|(_, ms)| ms.ceil())
            .sum::<f64>()
            + self.create_ms.lock().expect("lock").ceil();
        let units = [
            1.0,
            invocations as f64,
            LAMBDA_GB * billed_ms / 1000.0,
            dynamodb(true),
            dynamodb(false),
            (sqs_sent + receives + deletes) as f64,
        ];
        Bill {
            lines: PRICES
                .iter()
                .zip(units)
                .map(|((item, price), u)| (*item, u, u * price * 1e6))
                .collect(),
        }
    }
}

/// DynamoDB operations billed in read request units.
fn is_read(op: &str) -> bool {
    matches!(
        op,
        "GetItem" | "Query" | "Scan" | "BatchGetItem" | "TransactGetItems"
    )
}

#[tokio::test]
async fn given_duplicate_deliveries_and_two_workers_when_driven_then_one_correct_result() {
    let f = Functions::start("given_duplicate_deliveries_and_two_workers_when_driven", 2).await;

    let (key, view) = f.run_seed_dag(2).await;

    let todos = TodoStore::list(
        &f.cloud.store,
        TENANT,
        &TodoQuery::first(TodoQuery::MAX_LIMIT),
    )
    .await
    .expect("todos")
    .items;
    assert_one_correct_result(&view, &todos);
    let events = f.cloud.store.load(&key).await.expect("events");
    let started: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::StepStarted { step_id, .. } => Some(step_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(started.len(), 4, "one claim per step: {started:?}");
    let mut sent: BTreeMap<String, usize> = BTreeMap::new();
    for (_, steps) in f.reactor_dispatches() {
        for s in steps {
            *sent.entry(s).or_default() += 1;
        }
    }
    assert!(sent.values().all(|n| *n == 1), "{sent:?}");
}

/// An API sample event aimed at `path` (a `{id}` in it is `run_id`) as tenant `sub`.
fn as_tenant(function: &str, case: &str, sub: &str, path: &str, run_id: &str) -> Value {
    let mut event = sample(function, case);
    let path = path.replace("{id}", run_id);
    let (raw_path, query) = path.split_once('?').unwrap_or((&path, ""));
    event["rawPath"] = json!(raw_path);
    event["rawQueryString"] = json!(query);
    event["requestContext"]["http"]["path"] = json!(raw_path);
    event["pathParameters"] = json!({"id": run_id});
    event["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] = json!(sub);
    event
}

async fn api(f: &Functions, event: Value) -> (u16, Value) {
    let resp = http::invoke(f.api.clone(), event).await.expect("answered");
    let status = resp["statusCode"].as_u64().expect("statusCode") as u16;
    let body = resp["body"]
        .as_str()
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn given_a_run_of_one_tenant_on_dynamodb_when_another_tenant_asks_then_it_is_not_found_anywhere(
) {
    let f = Functions::start("given_a_run_of_one_tenant_when_another_tenant_asks", 1).await;
    let (key, view) = f.run_seed_dag(1).await;
    assert_eq!(view.status, RunStatus::Completed);
    let id = key.run_id.as_str();
    for (function, case, path) in [
        ("get-run", "get-run", "/runs/{id}"),
        (
            "get-run",
            "get-run-at",
            "/runs/{id}?at=2030-01-01T00:00:00Z",
        ),
        ("get-run", "get-run-events", "/runs/{id}/events"),
        ("create-run", "post-cancel", "/runs/{id}/cancel"),
    ] {
        let (status, body) = api(&f, as_tenant(function, case, "tenant-b", path, id)).await;
        assert_eq!(status, 404, "tenant-b {path}: {body}");
        let (status, _) = api(&f, as_tenant(function, case, TENANT, path, id)).await;
        assert_ne!(status, 404, "the owner finds {path}");
    }
    let (_, runs) = api(
        &f,
        as_tenant("get-run", "list-runs", "tenant-b", "/runs", id),
    )
    .await;
    assert_eq!(runs["runs"], json!([]), "{runs}");
    let (_, todos) = api(
        &f,
        as_tenant("get-run", "list-todos", "tenant-b", "/todos", id),
    )
    .await;
    assert_eq!(todos["todos"], json!([]), "{todos}");
    let (_, own) = api(&f, as_tenant("get-run", "list-todos", TENANT, "/todos", id)).await;
    assert_eq!(own["todos"].as_array().map(Vec::len), Some(1), "{own}");
    // tenant-b creates its own run, stored under its own key.
    let (status, b_run) = api(&f, sample("create-run", "post-runs-tenant-b")).await;
    assert_eq!(status, 201, "{b_run}");
    assert_ne!(b_run["run_id"], json!(id));
    assert!(
        RunViewStore::get(&f.cloud.store, &RunKey::new("tenant-b", id))
            .await
            .expect("read")
            .is_none()
    );
}

#[tokio::test]
async fn given_the_stream_sample_when_its_events_are_appended_then_dynamodb_local_streams_the_same_images(
) {
    let cloud = Cloud::create("given_the_stream_sample_when_its_events_are_appended").await;
    let records = stream_sample_records();
    let key = records[0].1.clone();
    let recs: Vec<EventRecord> = records.iter().map(|(_, _, r)| r.clone()).collect();
    let state = crane::domain::fold(&key.run_id, &recs).expect("fold");
    cloud
        .store
        .append(
            &key,
            &recs,
            Outbox {
                view: &state,
                effects: &[],
                wake: true,
            },
        )
        .await
        .expect("append through the adapter");

    // One append, one item: the stream carries one record with all its events.
    let mut reader = cloud.stream_reader().await;
    let mut live = Vec::new();
    for _ in 0..50 {
        if let Some(event) = reader.poll().await {
            live.extend(event.records);
        }
        if !live.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let sample = sample("event-reactor", "batch");
    let sample_images: Vec<Value> = sample["Records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["dynamodb"]["NewImage"].clone())
        .collect();
    let live_images: Vec<Value> = live
        .iter()
        .map(|r| serde_json::to_value(&r.change.new_image).expect("image"))
        .collect();
    if std::env::var_os("CRANE_REGENERATE_EVENTS").is_some() {
        let mut regenerated = sample.clone();
        for (r, image) in regenerated["Records"]
            .as_array_mut()
            .expect("records")
            .iter_mut()
            .zip(&live_images)
        {
            r["dynamodb"]["NewImage"] = image.clone();
        }
        let path = crane_tests::events::events_dir().join("event-reactor/batch.json");
        let text = serde_json::to_string_pretty(&regenerated).expect("json") + "\n";
        std::fs::write(&path, text).expect("write the sample");
    }
    assert_eq!(
        live_images, sample_images,
        "events/event-reactor/batch.json must hold the images the events table streams \
         (CRANE_REGENERATE_EVENTS=1 rewrites it)"
    );
    let mut streamed = Vec::new();
    for r in &live {
        let (k, events) = stream::decode_record(r).expect("live records decode");
        assert_eq!(k, key);
        streamed.extend(events);
    }
    assert_eq!(
        streamed, recs,
        "the record carries every event of the append"
    );
}

#[tokio::test]
async fn given_runs_on_dynamodb_when_watched_through_the_lambda_router_then_long_poll_and_prefer_wait_poll_the_store(
) {
    let f = Functions::start("given_runs_on_dynamodb_when_watched", 1).await;
    let (key, view) = f.run_seed_dag(1).await;
    assert_eq!(view.status, RunStatus::Completed);
    let id = key.run_id.as_str();
    let last = view.last_seq;
    // Settled: past its end the long-poll answers at once, empty; `after` alone filters.
    let path = format!("/runs/{{id}}/events?after={last}&wait=20");
    let (status, page) = api(
        &f,
        as_tenant("get-run", "get-run-events", TENANT, &path, id),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["events"], json!([]));
    let (status, page) = api(
        &f,
        as_tenant(
            "get-run",
            "get-run-events",
            TENANT,
            "/runs/{id}/events?after=2",
            id,
        ),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["events"][0]["seq"], 3, "{page}");
    let (status, err) = api(
        &f,
        as_tenant(
            "get-run",
            "get-run-events",
            TENANT,
            "/runs/{id}/events?wait=21",
            id,
        ),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["code"], "invalid_wait");
    // No stream through API Gateway: a JSON 404 that says what to do instead.
    let (status, err) = api(
        &f,
        as_tenant("get-run", "get-run-events", TENANT, "/runs/{id}/stream", id),
    )
    .await;
    assert_eq!(status, 404, "{err}");
    assert_eq!(err["error"]["code"], "streaming_unavailable");
    // Prefer: wait on a settled run: the run, with the preference applied.
    let mut get = as_tenant("get-run", "get-run", TENANT, "/runs/{id}", id);
    get["headers"]["prefer"] = json!("wait=5");
    let resp = http::invoke(f.api.clone(), get).await.expect("answered");
    assert_eq!(resp["statusCode"], 200, "{resp}");
    assert_eq!(resp["headers"]["preference-applied"], "wait=5", "{resp}");
    // A run nobody drives: the long-poll polls DynamoDB until its wait runs out.
    let (status, b_run) = api(&f, sample("create-run", "post-runs-tenant-b")).await;
    assert_eq!(status, 201, "{b_run}");
    let b_id = b_run["run_id"].as_str().expect("run id");
    let b_last = b_run["last_seq"].as_u64().expect("last_seq");
    let path = format!("/runs/{{id}}/events?after={b_last}&wait=1");
    let (status, page) = api(
        &f,
        as_tenant("get-run", "get-run-events", "tenant-b", &path, b_id),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        page["events"],
        json!([]),
        "nothing happened within the wait"
    );
}
