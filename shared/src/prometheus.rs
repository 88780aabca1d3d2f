//! Prometheus metrics of the local runtime (`GET /metrics` on `crane-local`), named like
//! the EMF metrics Crane sends CloudWatch on AWS (`entrypoints::metrics`): the EMF name in
//! snake case with the `crane_` prefix, dimensions as lower-case labels (`Runs{Status}` ->
//! `crane_runs_total{status}`, `StepLatency{Tool}` -> `crane_step_latency_seconds{tool}`).
//!
//! Like the EMF metrics they are derived from the events as they are committed (the store
//! calls [`Metrics`] as its [`AppendObserver`]), so a new event type is counted by one more
//! arm in [`Metrics::observe`]. A few come from elsewhere: HTTP request durations from
//! [`track_http`], breaker transitions from [`ObservedBreakers`], and the values read at
//! scrape time ([`Snapshot`]: breaker states, job queue, watchers).
//!
//! Counters start at zero when the process starts, as Prometheus expects.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde_json::Value;

use crate::adapters::local::AppendObserver;
use crate::domain::{Event, EventRecord, RunKey, RunState};
use crate::engine::breaker::BreakerState;
use crate::ports::{BreakerStore, StoreResult, StoredBreaker};

/// The `Content-Type` of `GET /metrics` (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The states a breaker can be in, as `crane_breaker_state{state}` names them.
pub const BREAKER_STATES: [&str; 3] = ["closed", "open", "half_open"];

type Labels = Vec<(&'static str, String)>;

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

/// Step and request durations, in seconds: 1 ms to about 65 s.
fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 17,
    ))
}

/// `metric`, registered under `name` with its `help`; the returned handle shares its
/// values with the registered one.
fn registered<M>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M
where
    M: prometheus_client::registry::Metric + Clone,
{
    registry.register(name, help, metric.clone());
    metric
}

/// Every metric of the local runtime. Cheap to share behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    runs: Family<Labels, Counter>,
    runs_created: Counter,
    step_attempts: Family<Labels, Counter>,
    step_latency: Family<Labels, Histogram, fn() -> Histogram>,
    step_attempt_failures: Family<Labels, Counter>,
    step_retries: Family<Labels, Counter>,
    step_interruptions: Family<Labels, Counter>,
    breaker_rejections: Family<Labels, Counter>,
    compensations: Family<Labels, Counter>,
    breaker_transitions: Family<Labels, Counter>,
    breaker_state: Family<Labels, Gauge>,
    job_queue_depth: Gauge,
    job_queue_lag: Gauge<f64, std::sync::atomic::AtomicU64>,
    watchers: Gauge,
    approvals_requested: Counter,
    approval_decisions: Family<Labels, Counter>,
    approval_decision_time: Histogram,
    http_duration: Family<Labels, Histogram, fn() -> Histogram>,
    /// Serialises scrapes: each sets the scrape-time gauges, then renders.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Values read when Prometheus scrapes, not counted as they happen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Each tool's breaker state name (one of [`BREAKER_STATES`]).
    pub breakers: Vec<(String, &'static str)>,
    /// Jobs queued (due, delayed or running).
    pub queue_depth: u64,
    /// How long the oldest due job not yet taken has waited past its due time.
    pub queue_lag: Duration,
    /// Long-polls, streams and `Prefer: wait` requests waiting now.
    pub watchers: usize,
}

impl Metrics {
    /// Every metric at zero, registered under the `crane_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("crane");
        let runs = registered(
            &mut registry,
            "runs",
            "Runs that reached a final status, by status (EMF Runs)",
            Family::<Labels, Counter>::default(),
        );
        let runs_created = registered(
            &mut registry,
            "runs_created",
            "Runs created (EMF RunsCreated)",
            Counter::default(),
        );
        let step_attempts = registered(
            &mut registry,
            "step_attempts",
            "Step attempts started, by tool",
            Family::<Labels, Counter>::default(),
        );
        let step_latency = registered(
            &mut registry,
            "step_latency_seconds",
            "Duration of successful step attempts, by tool (EMF StepLatency)",
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram),
        );
        let step_attempt_failures = registered(
            &mut registry,
            "step_attempt_failures",
            "Step attempts that failed, by tool (EMF StepAttemptFailures)",
            Family::<Labels, Counter>::default(),
        );
        let step_retries = registered(
            &mut registry,
            "step_retries",
            "Failed attempts followed by a retry, by tool (EMF StepRetries)",
            Family::<Labels, Counter>::default(),
        );
        let step_interruptions = registered(&mut registry, "step_interruptions", "Attempts whose worker died (lease expired or runtime restarted), by tool (EMF StepInterruptions)", Family::<Labels, Counter>::default());
        let breaker_rejections = registered(&mut registry, "breaker_rejections", "Steps deferred because their tool's circuit breaker refused the call, by tool (EMF BreakerRejections)", Family::<Labels, Counter>::default());
        let compensations = registered(
            &mut registry,
            "compensations",
            "Step compensations, by outcome: compensated or failed (EMF Compensations)",
            Family::<Labels, Counter>::default(),
        );
        let breaker_transitions = registered(
            &mut registry,
            "breaker_transitions",
            "Circuit breaker state changes, by tool, from and to",
            Family::<Labels, Counter>::default(),
        );
        let breaker_state = registered(
            &mut registry,
            "breaker_state",
            "1 for each tool's current circuit breaker state, 0 for the others",
            Family::<Labels, Gauge>::default(),
        );
        let job_queue_depth = registered(
            &mut registry,
            "job_queue_depth",
            "Step and compensation jobs queued (due, delayed for a retry, or running)",
            Gauge::default(),
        );
        let job_queue_lag = registered(
            &mut registry,
            "job_queue_lag_seconds",
            "How long the oldest due job has waited for a worker (0 when none waits)",
            Gauge::<f64, std::sync::atomic::AtomicU64>::default(),
        );
        let watchers = registered(
            &mut registry,
            "watchers",
            "Long-polls, event streams and Prefer: wait requests waiting now",
            Gauge::default(),
        );
        let approvals_requested = registered(&mut registry, "approvals_requested", "Steps held for a person's approval (EMF ApprovalsRequested); minus the decisions, the approvals waiting", Counter::default());
        let approval_decisions = registered(&mut registry, "approval_decisions", "Decisions on held steps, by decision: approved, rejected or expired (EMF ApprovalDecisions)", Family::<Labels, Counter>::default());
        // From seconds to about 3 days: people take minutes or hours, expiry defaults to 24 h.
        let approval_decision_time = registered(
            &mut registry,
            "approval_decision_time_seconds",
            "Time from a step's approval request to its decision (EMF ApprovalDecisionTime)",
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                1.0, 4.0, 10,
            )),
        );
        let http_duration = registered(
            &mut registry,
            "http_request_duration_seconds",
            "HTTP requests until the response head, by method, route template and status",
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram),
        );
        Self {
            registry,
            runs,
            runs_created,
            step_attempts,
            step_latency,
            step_attempt_failures,
            step_retries,
            step_interruptions,
            breaker_rejections,
            compensations,
            breaker_transitions,
            breaker_state,
            job_queue_depth,
            job_queue_lag,
            watchers,
            approvals_requested,
            approval_decisions,
            approval_decision_time,
            http_duration,
            scrape: Mutex::new(()),
        }
    }

    /// Count what `records` (appended to a run whose state after them is `view`) mean.
    pub fn observe(&self, records: &[EventRecord], view: &RunState) {
        let tool_of = |rec: &EventRecord| {
            let step = rec.event.step_id().and_then(|id| view.step(id));
            labels(&[("tool", step.map_or("unknown", |s| s.tool.as_str()))])
        };
        for rec in records {
            let run_status = |status: &str| {
                self.runs
                    .get_or_create(&labels(&[("status", status)]))
                    .inc()
            };
            match &rec.event {
                Event::RunCreated { .. } => {
                    self.runs_created.inc();
                }
                Event::RunCompleted { .. } => {
                    run_status("completed");
                }
                Event::RunFailed { .. } => {
                    run_status("failed");
                }
                Event::RunCompensated {} => {
                    run_status("compensated");
                }
                Event::RunCompensationFailed { .. } => {
                    run_status("compensation_failed");
                }
                Event::RunCancelled {} => {
                    run_status("cancelled");
                }
                Event::StepStarted { .. } => {
                    self.step_attempts.get_or_create(&tool_of(rec)).inc();
                }
                Event::StepCompleted { duration_ms, .. } => {
                    self.step_latency
                        .get_or_create(&tool_of(rec))
                        .observe(*duration_ms as f64 / 1_000.0);
                }
                Event::StepAttemptFailed { retry_in_ms, .. } => {
                    self.step_attempt_failures
                        .get_or_create(&tool_of(rec))
                        .inc();
                    if retry_in_ms.is_some() {
                        self.step_retries.get_or_create(&tool_of(rec)).inc();
                    }
                }
                Event::StepInterrupted { .. } => {
                    self.step_interruptions.get_or_create(&tool_of(rec)).inc();
                }
                Event::StepDeferred { .. } => {
                    self.breaker_rejections.get_or_create(&tool_of(rec)).inc();
                }
                Event::StepCompensated { .. } => {
                    self.compensations
                        .get_or_create(&labels(&[("outcome", "compensated")]))
                        .inc();
                }
                Event::StepCompensationFailed { .. } => {
                    self.compensations
                        .get_or_create(&labels(&[("outcome", "failed")]))
                        .inc();
                }
                Event::ApprovalRequested { .. } => {
                    self.approvals_requested.inc();
                }
                Event::StepApproved { step_id, .. } => self.decided(rec, view, step_id, "approved"),
                Event::StepRejected {
                    step_id, expired, ..
                } => {
                    let decision = if *expired { "expired" } else { "rejected" };
                    self.decided(rec, view, step_id, decision);
                }
                _ => {}
            }
        }
    }

    /// A decision on a held step, and the time it took from its request (as the state
    /// after the events knows it).
    fn decided(&self, rec: &EventRecord, view: &RunState, step_id: &str, decision: &str) {
        self.approval_decisions
            .get_or_create(&labels(&[("decision", decision)]))
            .inc();
        let requested = view
            .step(step_id)
            .and_then(|s| s.approval.as_ref())
            .map(|a| a.requested_at);
        if let Some(requested) = requested {
            let ms = (rec.at - requested).num_milliseconds().max(0);
            self.approval_decision_time.observe(ms as f64 / 1_000.0);
        }
    }

    /// A circuit breaker of `tool` went from state `from` to `to`.
    pub fn breaker_transition(&self, tool: &str, from: &str, to: &str) {
        self.breaker_transitions
            .get_or_create(&labels(&[("tool", tool), ("from", from), ("to", to)]))
            .inc();
    }

    /// An HTTP request to `route` (the matched path template) was answered.
    pub fn http_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.http_duration
            .get_or_create(&labels(&[
                ("method", method),
                ("route", route),
                ("status", &status.to_string()),
            ]))
            .observe(elapsed.as_secs_f64());
    }

    /// Render every metric in the Prometheus text format, with `snapshot`'s values.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let _one = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        for (tool, state) in &snapshot.breakers {
            for s in BREAKER_STATES {
                self.breaker_state
                    .get_or_create(&labels(&[("tool", tool), ("state", s)]))
                    .set(i64::from(s == *state));
            }
        }
        self.job_queue_depth
            .set(i64::try_from(snapshot.queue_depth).unwrap_or(i64::MAX));
        self.job_queue_lag.set(snapshot.queue_lag.as_secs_f64());
        self.watchers
            .set(i64::try_from(snapshot.watchers).unwrap_or(i64::MAX));
        let mut out = String::new();
        if prometheus_text::encode(&mut out, &self.registry).is_err() {
            // Writing to a String cannot fail; say so rather than serve half a page.
            out = "# metrics could not be encoded\n".to_owned();
        }
        out
    }
}

impl AppendObserver for Metrics {
    fn appended(&self, _key: &RunKey, records: &[EventRecord], view: &RunState) {
        self.observe(records, view);
    }
}

/// Middleware: time every request by method, matched route template (never the raw URL,
/// so ids do not multiply series; `unmatched` for the fallback) and status.
pub async fn track_http(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let resp = next.run(req).await;
    metrics.http_request(&method, &route, resp.status().as_u16(), started.elapsed());
    resp
}

/// A [`BreakerStore`] that counts the state changes written through it. It remembers the
/// newest state it has seen of each tool with its version, so a write over version `v`
/// knows the state it replaces; in one process (`crane-local`), every write goes through
/// it and the count is exact.
pub struct ObservedBreakers {
    inner: Arc<dyn BreakerStore>,
    metrics: Arc<Metrics>,
    /// Per tool: the newest version seen and its state name.
    seen: Mutex<HashMap<String, (u64, &'static str)>>,
}

impl ObservedBreakers {
    /// Wraps `inner`, counting the breaker state changes written through it in `metrics`.
    pub fn new(inner: Arc<dyn BreakerStore>, metrics: Arc<Metrics>) -> Self {
        Self {
            inner,
            metrics,
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn saw(&self, tool: &str, version: u64, name: &'static str) -> Option<(u64, &'static str)> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let before = seen.get(tool).copied();
        if before.is_none_or(|(v, _)| v <= version) {
            seen.insert(tool.to_owned(), (version, name));
        }
        before
    }
}

fn state_name(state: &Value) -> &'static str {
    serde_json::from_value::<BreakerState>(state.clone()).map_or("closed", |s| s.name())
}

#[async_trait]
impl BreakerStore for ObservedBreakers {
    async fn get(&self, tool: &str) -> StoreResult<Option<StoredBreaker>> {
        let stored = self.inner.get(tool).await?;
        match &stored {
            Some(s) => self.saw(tool, s.version, state_name(&s.state)),
            None => self.saw(tool, 0, "closed"),
        };
        Ok(stored)
    }

    async fn put(&self, tool: &str, expected: u64, state: &Value) -> StoreResult<()> {
        self.inner.put(tool, expected, state).await?;
        let to = state_name(state);
        let from = match self.saw(tool, expected + 1, to) {
            Some((v, name)) if v == expected => Some(name),
            _ if expected == 0 => Some("closed"),
            // The state replaced was never seen here: count nothing rather than guess.
            _ => None,
        };
        if let Some(from) = from.filter(|f| *f != to) {
            self.metrics.breaker_transition(tool, from, to);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use serde_json::json;

    use super::*;
    use crate::domain::{fold, Plan, PlanStep, PlannerInfo};

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .map(|t| t.to_utc())
            .expect("valid time")
    }

    /// A run of one calculator step, with `more` events after its plan.
    fn run_with(more: Vec<Event>) -> (Vec<EventRecord>, RunState) {
        let mut events = vec![
            Event::RunCreated {
                tenant: "t".into(),
                prompt: "calculate 2+3".into(),
                correlation_id: "c".into(),
                idempotency_key: None,
            },
            Event::PlanGenerated {
                planner: PlannerInfo::default(),
                plan: Plan {
                    steps: vec![PlanStep {
                        id: "s1".into(),
                        tool: "calculator".into(),
                        input: json!({"expression": "2+3"}),
                        depends_on: Vec::new(),
                        requires_approval: false,
                    }],
                }
                .into(),
            },
        ];
        events.extend(more);
        let records = EventRecord::batch(0, at(), events);
        let state = fold("r1", &records).expect("folds");
        (records, state)
    }

    fn started(attempt: u32) -> Event {
        Event::StepStarted {
            step_id: "s1".into(),
            attempt,
            lease_ms: 1_000,
        }
    }

    #[test]
    fn given_approval_requests_and_decisions_when_observed_then_they_count_by_decision() {
        let m = Metrics::new();
        let requested = Event::ApprovalRequested {
            step_id: "s1".into(),
            input: json!({"expression": "2+3"}),
            approver: "t".into(),
            expires_at: at(),
        };
        let (records, state) = run_with(vec![
            requested.clone(),
            Event::StepApproved {
                step_id: "s1".into(),
                by: "t".into(),
                comment: None,
            },
        ]);
        m.observe(&records, &state);
        let (records, state) = run_with(vec![
            requested,
            Event::StepRejected {
                step_id: "s1".into(),
                by: None,
                comment: None,
                expired: true,
            },
        ]);
        m.observe(&records, &state);
        let text = m.render(&Snapshot::default());
        for line in [
            "crane_approvals_requested_total 2",
            "crane_approval_decisions_total{decision=\"approved\"} 1",
            "crane_approval_decisions_total{decision=\"expired\"} 1",
            "crane_approval_decision_time_seconds_count 2",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }

    #[test]
    fn given_a_run_with_a_retry_when_observed_then_each_event_counts_under_its_emf_name() {
        let m = Metrics::new();
        let (records, state) = run_with(vec![
            started(1),
            Event::StepAttemptFailed {
                step_id: "s1".into(),
                attempt: 1,
                error: "boom".into(),
                kind: crate::domain::ErrorKind::Transient,
                duration_ms: 3,
                retry_in_ms: Some(20),
            },
            started(2),
            Event::StepCompleted {
                step_id: "s1".into(),
                attempt: 2,
                output: json!(5).into(),
                duration_ms: 250,
            },
            Event::RunCompleted { result: json!(5) },
        ]);
        m.observe(&records, &state);
        let text = m.render(&Snapshot::default());
        for line in [
            "crane_runs_created_total 1",
            "crane_runs_total{status=\"completed\"} 1",
            "crane_step_attempts_total{tool=\"calculator\"} 2",
            "crane_step_attempt_failures_total{tool=\"calculator\"} 1",
            "crane_step_retries_total{tool=\"calculator\"} 1",
            "crane_step_latency_seconds_sum{tool=\"calculator\"} 0.25",
            "crane_step_latency_seconds_count{tool=\"calculator\"} 1",
            "crane_step_latency_seconds_bucket{tool=\"calculator\",le=\"0.256\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing '{line}' in\n{text}"
            );
        }
    }

    #[test]
    fn given_a_snapshot_when_rendered_then_breaker_states_are_one_hot_and_gauges_set() {
        let m = Metrics::new();
        let text = m.render(&Snapshot {
            breakers: vec![("todo".into(), "half_open")],
            queue_depth: 7,
            queue_lag: Duration::from_millis(1_500),
            watchers: 3,
        });
        for line in [
            "crane_breaker_state{tool=\"todo\",state=\"half_open\"} 1",
            "crane_breaker_state{tool=\"todo\",state=\"open\"} 0",
            "crane_breaker_state{tool=\"todo\",state=\"closed\"} 0",
            "crane_job_queue_depth 7",
            "crane_job_queue_lag_seconds 1.5",
            "crane_watchers 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing '{line}' in\n{text}"
            );
        }
    }

    #[tokio::test]
    async fn given_breaker_writes_when_observed_then_only_changes_of_state_count() {
        let store = Arc::new(crate::adapters::local::memory::MemoryStore::default());
        let m = Arc::new(Metrics::new());
        let b = ObservedBreakers::new(store, m.clone());
        let cfg = crate::engine::breaker::BreakerConfig {
            failure_threshold: 2,
            ..Default::default()
        };
        let mut state = BreakerState::default();
        for _ in 0..3 {
            let version = b
                .get("calculator")
                .await
                .expect("get")
                .map_or(0, |s| s.version);
            state = state.on_failure(&cfg, at());
            let v = serde_json::to_value(&state).expect("json");
            b.put("calculator", version, &v).await.expect("put");
        }
        let text = m.render(&Snapshot::default());
        assert!(
            text.lines().any(|l| l
                == "crane_breaker_transitions_total{tool=\"calculator\",from=\"closed\",to=\"open\"} 1"),
            "{text}"
        );
        assert!(!text.contains("to=\"closed\""), "{text}");
    }

    /// Every metric the EMF code derives from events has its Prometheus counterpart.
    #[cfg(feature = "aws")]
    #[test]
    fn given_the_emf_metrics_of_events_when_named_for_prometheus_then_each_is_rendered() {
        use crate::entrypoints::metrics::from_events;
        let (records, state) = run_with(vec![
            started(1),
            Event::StepAttemptFailed {
                step_id: "s1".into(),
                attempt: 1,
                error: "boom".into(),
                kind: crate::domain::ErrorKind::Transient,
                duration_ms: 3,
                retry_in_ms: Some(20),
            },
            Event::StepInterrupted {
                step_id: "s1".into(),
                attempt: 2,
                error: "lost".into(),
            },
            Event::StepDeferred {
                step_id: "s1".into(),
                attempt: 3,
                reason: "open".into(),
                until: at(),
            },
            Event::StepCompleted {
                step_id: "s1".into(),
                attempt: 3,
                output: json!(5).into(),
                duration_ms: 7,
            },
            Event::RunCompleted { result: json!(5) },
        ]);
        let m = Metrics::new();
        m.observe(&records, &state);
        let text = m.render(&Snapshot::default());
        let mut names: Vec<&str> = from_events(&records, Some(&state), at())
            .iter()
            .map(|x| x.name)
            .filter(|n| *n != "StreamLag") // the reactor's lag; locally the job queue's
            .collect();
        names.dedup();
        for name in names {
            let mut snake = String::from("crane");
            for c in name.chars() {
                if c.is_ascii_uppercase() {
                    snake.push('_');
                }
                snake.push(c.to_ascii_lowercase());
            }
            assert!(
                text.contains(&format!("# TYPE {snake}")),
                "EMF {name} has no Prometheus family {snake}_*:\n{text}"
            );
        }
    }
}
