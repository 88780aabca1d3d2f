//! Helpers for the handler tests: the sample events under `events/` (the same files
//! `cargo lambda invoke --data-file` and `sam local invoke -e` use), an [`App`] over the
//! in-memory stores, and recording fakes of the step dispatcher and the saga starter.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crane::adapters::local::memory::{MemoryStore, MemoryTodos};
use crane::app::{App, Settings};
use crane::domain::{fold, Effect, Event, EventRecord, RunKey, RunState, StepJob};
use crane::engine::{self, RetryPolicy};
use crane::planner::PatternPlanner;
use crane::ports::{
    EventStore, Outbox, Redelivery, SagaStarter, StepDispatcher, StoreError, StoreResult,
    SystemClock,
};
use crane::tools::Registry;
use serde_json::Value;

/// The seed-DAG run of the sample events (`event-reactor/batch.json` holds its first two
/// events; the HTTP and SQS samples refer to it).
pub const RUN_A: &str = "01977b6e-4c2a-7a3b-9f10-5e2d8c1a0b01";
/// The failed run whose saga the `compensate` samples drive.
pub const RUN_B: &str = "01977b6e-4c2a-7a3b-9f10-5e2d8c1a0b02";
/// The prompt of [`RUN_B`]: a todo is added, then a step fails for good.
pub const RUN_B_PROMPT: &str = "add a todo to buy milk then complete todo 999";
/// The benchmark's DAG prompt (three independent steps, then one that needs them).
pub const SEED_PROMPT: &str =
    "calculate 2+3 and calculate 10*5 and list todos then add a todo with the result";
pub const TENANT: &str = "default";

/// `events/` at the repository root.
pub fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../events")
}

/// One sample event, `events/<function>/<case>.json`.
pub fn sample(function: &str, case: &str) -> Value {
    let path = events_dir().join(function).join(format!("{case}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every sample event of `function`, as (case, event), sorted by case.
pub fn samples(function: &str) -> Vec<(String, Value)> {
    let dir = events_dir().join(function);
    let mut cases: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .map(str::to_owned)
        })
        .collect();
    cases.sort();
    cases
        .into_iter()
        .map(|c| {
            let v = sample(function, &c);
            (c, v)
        })
        .collect()
}

/// An App over in-memory stores with the pattern planner and instant retries.
pub struct MemoryApp {
    pub app: Arc<App>,
    pub store: Arc<MemoryStore>,
    pub todos: Arc<MemoryTodos>,
}

impl Default for MemoryApp {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryApp {
    pub fn new() -> Self {
        let store = Arc::new(MemoryStore::default());
        let todos = Arc::new(MemoryTodos::default());
        let instant = RetryPolicy {
            base_ms: 0,
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        let app = App {
            events: store.clone(),
            views: store.clone(),
            todos: todos.clone(),
            idempotency: store.clone(),
            breakers: store.clone(),
            registry: Registry::new(todos.clone()),
            planner: Arc::new(PatternPlanner),
            clock: Arc::new(SystemClock),
            settings: Settings {
                retry: instant,
                compensation_retry: instant,
                ..Settings::default()
            },
        };
        Self {
            app: Arc::new(app),
            store,
            todos,
        }
    }

    /// Append `records` to the run `key` (with their outbox, as a real append would).
    pub async fn append(&self, key: &RunKey, records: &[EventRecord]) -> RunState {
        let mut all = self.store.load(key).await.expect("load");
        all.extend_from_slice(records);
        let state = fold(&key.run_id, &all).expect("the records fold");
        let effects = engine::react(&state, records, &self.app.registry);
        self.store
            .append(
                key,
                records,
                Outbox {
                    view: &state,
                    effects: &effects,
                    wake: true,
                },
            )
            .await
            .expect("append");
        state
    }

    /// Write run `run_id` as `create_run` would (RunCreated + PlanGenerated from the
    /// pattern planner), at `at`, with a fixed id.
    pub async fn seed(&self, run_id: &str, prompt: &str, at: DateTime<Utc>) -> RunState {
        let planned = self
            .app
            .planner
            .plan(prompt, &self.app.registry)
            .await
            .expect("the prompt plans");
        let records = vec![
            EventRecord::new(
                1,
                at,
                Event::RunCreated {
                    tenant: TENANT.into(),
                    prompt: prompt.into(),
                    correlation_id: format!("corr-{run_id}"),
                    idempotency_key: None,
                },
            ),
            EventRecord::new(
                2,
                at,
                Event::PlanGenerated {
                    planner: planned.info,
                    plan: planned.plan.into(),
                },
            ),
        ];
        self.append(&RunKey::new(TENANT, run_id), &records).await
    }

    /// Effects the store's outbox collected since the last call.
    pub fn take_effects(&self) -> Vec<Effect> {
        std::mem::take(&mut *self.store.outbox.lock().expect("outbox lock"))
    }

    /// Run every queued step job until none is left; sagas are left alone (returned).
    pub async fn drain_steps(&self) -> Vec<Effect> {
        let mut sagas = Vec::new();
        for _ in 0..100 {
            let effects = self.take_effects();
            if effects.is_empty() {
                return sagas;
            }
            for e in effects {
                match e {
                    Effect::Dispatch { job, .. } => {
                        self.app.process_job(&job).await.expect("job runs");
                    }
                    other => sagas.push(other),
                }
            }
        }
        panic!("step jobs never drained");
    }

    pub async fn run(&self, run_id: &str) -> RunState {
        self.app
            .get_run(&RunKey::new(TENANT, run_id))
            .await
            .expect("the run exists")
    }
}

/// A step dispatcher that records what it is asked to send.
#[derive(Default)]
pub struct RecordingDispatcher {
    pub calls: Mutex<Vec<Vec<(StepJob, u64)>>>,
    pub fail: AtomicBool,
}

impl RecordingDispatcher {
    /// Every job sent, in order.
    pub fn jobs(&self) -> Vec<(StepJob, u64)> {
        self.calls
            .lock()
            .expect("lock")
            .iter()
            .flatten()
            .cloned()
            .collect()
    }

    pub fn fail_from_now(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }
}

#[async_trait]
impl StepDispatcher for RecordingDispatcher {
    async fn dispatch(&self, jobs: &[(StepJob, u64)]) -> StoreResult<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::unavailable("queue down (test)"));
        }
        self.calls.lock().expect("lock").push(jobs.to_vec());
        Ok(())
    }
}

/// A [`Redelivery`] that records the visibility changes it is asked for.
#[derive(Default)]
pub struct RecordingRedelivery {
    /// (receipt handle, seconds), in order.
    pub calls: Mutex<Vec<(String, u32)>>,
}

impl RecordingRedelivery {
    pub fn calls(&self) -> Vec<(String, u32)> {
        self.calls.lock().expect("lock").clone()
    }
}

#[async_trait]
impl Redelivery for RecordingRedelivery {
    async fn redeliver_in(&self, receipt_handle: &str, seconds: u32) -> StoreResult<()> {
        self.calls
            .lock()
            .expect("lock")
            .push((receipt_handle.to_owned(), seconds));
        Ok(())
    }
}

/// A saga starter that records the sagas it is asked to start.
#[derive(Default)]
pub struct RecordingSaga {
    pub started: Mutex<Vec<(RunKey, String)>>,
    /// The saga attempt of each start, in the same order.
    pub attempts: Mutex<Vec<u32>>,
}

#[async_trait]
impl SagaStarter for RecordingSaga {
    async fn start(&self, key: &RunKey, correlation_id: &str, attempt: u32) -> StoreResult<()> {
        self.started
            .lock()
            .expect("lock")
            .push((key.clone(), correlation_id.to_owned()));
        self.attempts.lock().expect("lock").push(attempt);
        Ok(())
    }
}

/// The stream sample's events decoded, in order, each with the sequence number of the
/// stream record that carried it (a record holds all the events of one append).
pub fn stream_sample_records() -> Vec<(String, RunKey, EventRecord)> {
    let event: aws_lambda_events::dynamodb::Event =
        serde_json::from_value(sample("event-reactor", "batch")).expect("a DynamoDB stream event");
    event
        .records
        .iter()
        .flat_map(|r| {
            let (key, recs) =
                crane::entrypoints::stream::decode_record(r).expect("a stream record of an event");
            let sequence_number = r.change.sequence_number.clone().unwrap_or_default();
            recs.into_iter()
                .map(move |rec| (sequence_number.clone(), key.clone(), rec))
        })
        .collect()
}

/// Seed the in-memory app with the events of the stream sample (what the table held when
/// the stream delivered them).
pub async fn seed_from_stream_sample(m: &MemoryApp) -> RunState {
    let records = stream_sample_records();
    let key = records.first().map(|(_, k, _)| k.clone()).expect("records");
    let recs: Vec<EventRecord> = records.into_iter().map(|(_, _, r)| r).collect();
    m.append(&key, &recs).await
}
