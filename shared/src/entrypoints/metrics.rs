//! CloudWatch metrics in the Embedded Metric Format (EMF): one JSON object per line on
//! stdout, which the Lambda log pipeline turns into metrics without any API call.
//!
//! The metrics of a run are derived from its events as the stream reactor sees them
//! (the event log drives every reaction, metrics included): runs by terminal status, step
//! latency, failed attempts and retries by tool, compensations, and how far the reactor
//! lags behind the events it reacts to. In Lambda every metric also carries the stack's
//! name as dimension `Stack` ([`STACK_VAR`]), so two stacks in one account never sum
//! each other's runs.

use std::io::Write;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::domain::{Event, EventRecord, RunState};

/// The CloudWatch namespace of every Crane metric.
pub const NAMESPACE: &str = "Crane";

/// The stack the function belongs to (`template.yaml` sets it to `AWS::StackName`). Every
/// metric carries it as its first dimension, `Stack`, so stacks sharing an account and
/// region keep apart metrics, and each stack's dashboard shows only its own runs.
pub const STACK_VAR: &str = "CRANE_STACK_NAME";
/// The dimension naming the stack.
pub const STACK_DIMENSION: &str = "Stack";

/// A metric's unit, as CloudWatch spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A number of things (runs, steps, failures).
    Count,
    /// A duration in milliseconds.
    Milliseconds,
}

impl Unit {
    /// The unit as CloudWatch spells it (`Count`, `Milliseconds`).
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// One metric value with its dimensions and searchable (non-dimension) properties.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// The metric's name, as dashboards and alarms know it (`RunsCreated`, `StepLatency`).
    pub name: &'static str,
    /// The unit of `value`.
    pub unit: Unit,
    /// The measurement (a count, or milliseconds).
    pub value: f64,
    /// Dimension names and values, in order; CloudWatch aggregates by the whole set.
    pub dimensions: Vec<(&'static str, String)>,
    /// Logged with the value but not a dimension (run_id, correlation_id, step_id).
    pub properties: Vec<(&'static str, String)>,
}

impl Metric {
    /// A count of one.
    pub fn count(name: &'static str) -> Self {
        Self {
            name,
            unit: Unit::Count,
            value: 1.0,
            dimensions: Vec::new(),
            properties: Vec::new(),
        }
    }

    /// A duration of `ms` milliseconds.
    pub fn millis(name: &'static str, ms: u64) -> Self {
        Self {
            name,
            unit: Unit::Milliseconds,
            value: ms as f64,
            dimensions: Vec::new(),
            properties: Vec::new(),
        }
    }

    /// Add a dimension: CloudWatch keeps a separate series per set of dimension values.
    pub fn dimension(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.dimensions.push((name, value.into()));
        self
    }

    /// Add a property: logged with the value and searchable, but not a dimension.
    pub fn property(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.properties.push((name, value.into()));
        self
    }

    /// This metric, scoped to `stack`: `Stack` becomes its first dimension.
    pub fn in_stack(mut self, stack: &str) -> Self {
        self.dimensions
            .insert(0, (STACK_DIMENSION, stack.to_owned()));
        self
    }

    /// The EMF document of this metric at `at`.
    pub fn to_emf(&self, at: DateTime<Utc>) -> Value {
        let dims: Vec<&str> = self.dimensions.iter().map(|(k, _)| *k).collect();
        let mut doc = Map::new();
        doc.insert(
            "_aws".into(),
            json!({
                "Timestamp": at.timestamp_millis(),
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [dims],
                    "Metrics": [{"Name": self.name, "Unit": self.unit.as_str()}],
                }],
            }),
        );
        for (k, v) in self.properties.iter().chain(&self.dimensions) {
            doc.insert((*k).into(), Value::String(v.clone()));
        }
        doc.insert(self.name.into(), json!(self.value));
        Value::Object(doc)
    }
}

/// Whether this process is a Lambda function (whose stdout CloudWatch Logs reads for EMF).
fn in_lambda() -> bool {
    static IN_LAMBDA: OnceLock<bool> = OnceLock::new();
    *IN_LAMBDA.get_or_init(|| std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some())
}

/// `CRANE_STACK_NAME`, read once.
fn stack() -> Option<&'static str> {
    static STACK: OnceLock<Option<String>> = OnceLock::new();
    STACK
        .get_or_init(|| {
            std::env::var(STACK_VAR)
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })
        .as_deref()
}

/// Write `metrics` as EMF lines, each scoped to this function's stack
/// ([`STACK_VAR`]): to stdout in Lambda, to the debug log elsewhere (tests, local tools).
/// Best effort: a failed write is dropped.
pub fn emit(metrics: &[Metric], at: DateTime<Utc>) {
    if metrics.is_empty() {
        return;
    }
    let scoped: Vec<Metric>;
    let metrics = match stack() {
        Some(stack) => {
            scoped = metrics.iter().map(|m| m.clone().in_stack(stack)).collect();
            &scoped[..]
        }
        None => metrics,
    };
    if !in_lambda() {
        for m in metrics {
            tracing::debug!(target: "crane::metrics", emf = %m.to_emf(at), "metric");
        }
        return;
    }
    let mut out = std::io::stdout().lock();
    for m in metrics {
        let _ = writeln!(out, "{}", m.to_emf(at));
    }
    let _ = out.flush();
}

/// The metrics implied by new events of one run. `state` (the run after them, if known)
/// names the tool of each step; `now` is when the reactor saw them.
pub fn from_events(
    records: &[EventRecord],
    state: Option<&RunState>,
    now: DateTime<Utc>,
) -> Vec<Metric> {
    let tool_of = |step_id: &str| {
        state
            .and_then(|s| s.step(step_id))
            .map_or_else(|| "unknown".to_owned(), |s| s.tool.clone())
    };
    let mut out = Vec::new();
    for rec in records {
        let tool = || tool_of(rec.event.step_id().unwrap_or_default());
        let ms = match &rec.event {
            Event::RunCreated { .. } => vec![Metric::count("RunsCreated")],
            Event::RunCompleted { .. } => vec![run_status("completed")],
            Event::RunFailed { .. } => vec![run_status("failed")],
            Event::RunCompensated {} => vec![run_status("compensated")],
            Event::RunCompensationFailed { .. } => vec![run_status("compensation_failed")],
            Event::RunCancelled {} => vec![run_status("cancelled")],
            Event::StepCompleted { duration_ms, .. } => {
                vec![Metric::millis("StepLatency", *duration_ms).dimension("Tool", tool())]
            }
            Event::StepAttemptFailed { retry_in_ms, .. } => {
                let mut v = vec![Metric::count("StepAttemptFailures").dimension("Tool", tool())];
                if retry_in_ms.is_some() {
                    v.push(Metric::count("StepRetries").dimension("Tool", tool()));
                }
                v
            }
            Event::StepInterrupted { .. } => {
                vec![Metric::count("StepInterruptions").dimension("Tool", tool())]
            }
            Event::StepDeferred { .. } => {
                vec![Metric::count("BreakerRejections").dimension("Tool", tool())]
            }
            Event::StepCompensated { .. } => {
                vec![Metric::count("Compensations").dimension("Outcome", "compensated")]
            }
            Event::StepCompensationFailed { .. } => {
                vec![Metric::count("Compensations").dimension("Outcome", "failed")]
            }
            Event::ApprovalRequested { .. } => vec![Metric::count("ApprovalsRequested")],
            Event::StepApproved { step_id, .. } => {
                approval_decided(rec, state, step_id, "approved")
            }
            Event::StepRejected {
                step_id, expired, ..
            } => {
                let decision = if *expired { "expired" } else { "rejected" };
                approval_decided(rec, state, step_id, decision)
            }
            _ => Vec::new(),
        };
        out.extend(ms.into_iter().map(|m| match rec.event.step_id() {
            Some(step) => m.property("step_id", step),
            None => m,
        }));
    }
    if let Some(oldest) = records.iter().map(|r| r.at).min() {
        let lag = (now - oldest).num_milliseconds().max(0) as u64;
        out.push(Metric::millis("StreamLag", lag));
    }
    if let Some(s) = state {
        out = out
            .into_iter()
            .map(|m| {
                m.property("run_id", s.run_id.clone())
                    .property("correlation_id", s.correlation_id.clone())
            })
            .collect();
    }
    out
}

/// A decision on a held step: counted by `Decision`, and the time the person took (from
/// `ApprovalRequested`, as the state after the events knows it). Requests minus decisions
/// is the number of approvals waiting.
fn approval_decided(
    rec: &EventRecord,
    state: Option<&RunState>,
    step_id: &str,
    decision: &'static str,
) -> Vec<Metric> {
    let mut v = vec![Metric::count("ApprovalDecisions").dimension("Decision", decision)];
    let requested = state
        .and_then(|s| s.step(step_id))
        .and_then(|s| s.approval.as_ref())
        .map(|a| a.requested_at);
    if let Some(requested) = requested {
        let ms = (rec.at - requested).num_milliseconds().max(0) as u64;
        v.push(Metric::millis("ApprovalDecisionTime", ms));
    }
    v
}

fn run_status(status: &'static str) -> Metric {
    Metric::count("Runs").dimension("Status", status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ErrorKind;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.to_utc())
            .expect("valid time")
    }

    #[test]
    fn given_a_metric_when_rendered_then_it_is_an_emf_document() {
        let m = Metric::millis("StepLatency", 12)
            .dimension("Tool", "calculator")
            .property("run_id", "r1");
        let doc = m.to_emf(at("2026-01-02T03:04:05Z"));
        assert_eq!(
            doc,
            json!({
                "_aws": {
                    "Timestamp": 1_767_323_045_000_i64,
                    "CloudWatchMetrics": [{
                        "Namespace": "Crane",
                        "Dimensions": [["Tool"]],
                        "Metrics": [{"Name": "StepLatency", "Unit": "Milliseconds"}],
                    }],
                },
                "Tool": "calculator",
                "run_id": "r1",
                "StepLatency": 12.0,
            })
        );
    }

    #[test]
    fn given_a_stack_when_a_metric_is_scoped_then_stack_is_its_first_dimension() {
        let t = at("2026-01-02T03:04:05Z");
        let doc = Metric::millis("StepLatency", 12)
            .dimension("Tool", "calculator")
            .in_stack("crane-staging")
            .to_emf(t);
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Stack", "Tool"]])
        );
        assert_eq!(doc["Stack"], "crane-staging");
        assert_eq!(doc["Tool"], "calculator");
        let doc = Metric::count("RunsCreated")
            .in_stack("crane-prod")
            .to_emf(t);
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Stack"]]),
            "a metric without dimensions of its own is still per stack"
        );
        assert_eq!(doc["Stack"], "crane-prod");
    }

    #[test]
    fn given_a_metric_without_dimensions_when_rendered_then_its_dimension_set_is_empty() {
        let doc = Metric::count("RunsCreated").to_emf(at("2026-01-02T03:04:05Z"));
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([[]])
        );
        assert_eq!(doc["RunsCreated"], json!(1.0));
    }

    #[test]
    fn given_step_and_run_events_when_measured_then_each_maps_to_its_metric() {
        let t = at("2026-01-02T03:04:05Z");
        let records = vec![
            EventRecord::new(
                5,
                t,
                Event::StepAttemptFailed {
                    step_id: "s1".into(),
                    attempt: 1,
                    error: "boom".into(),
                    kind: ErrorKind::Transient,
                    duration_ms: 3,
                    retry_in_ms: Some(1_000),
                },
            ),
            EventRecord::new(
                6,
                t,
                Event::StepCompleted {
                    step_id: "s1".into(),
                    attempt: 2,
                    output: json!(5).into(),
                    duration_ms: 7,
                },
            ),
            EventRecord::new(7, t, Event::RunCompleted { result: json!(5) }),
        ];
        let ms = from_events(&records, None, t + chrono::Duration::milliseconds(40));
        let names: Vec<(&str, f64)> = ms.iter().map(|m| (m.name, m.value)).collect();
        assert_eq!(
            names,
            vec![
                ("StepAttemptFailures", 1.0),
                ("StepRetries", 1.0),
                ("StepLatency", 7.0),
                ("Runs", 1.0),
                ("StreamLag", 40.0),
            ]
        );
        assert_eq!(
            ms[2].dimensions,
            vec![("Tool", "unknown".to_owned())],
            "no state: the tool is unknown"
        );
        assert_eq!(ms[3].dimensions, vec![("Status", "completed".to_owned())]);
    }

    #[test]
    fn given_approval_events_when_measured_then_requests_decisions_and_time_to_decide_are_counted()
    {
        let t = at("2026-01-02T03:04:05Z");
        let mut state = crate::domain::fold(
            "r1",
            &[EventRecord::new(
                1,
                t,
                Event::RunCreated {
                    tenant: "default".into(),
                    prompt: "p".into(),
                    correlation_id: "c".into(),
                    idempotency_key: None,
                },
            )],
        )
        .expect("folds");
        state.steps.push(crate::domain::StepState {
            id: "s1".into(),
            tool: "todo".into(),
            status: crate::domain::StepStatus::Pending,
            attempts: 0,
            output: None,
            error: None,
            started_at: None,
            finished_at: None,
            attempt_started_at: None,
            lease_until: None,
            next_attempt_at: None,
            compensation_error: None,
            interruptions: 0,
            waiting: None,
            approval: Some(crate::domain::StepApproval {
                requested_at: t,
                expires_at: t + chrono::Duration::hours(1),
                approver: "default".into(),
                input: json!({}),
                decision: None,
                decided_at: None,
                decided_by: None,
                comment: None,
            }),
        });
        let later = t + chrono::Duration::seconds(90);
        let records = vec![
            EventRecord::new(
                2,
                t,
                Event::ApprovalRequested {
                    step_id: "s1".into(),
                    input: json!({}),
                    approver: "default".into(),
                    expires_at: t + chrono::Duration::hours(1),
                },
            ),
            EventRecord::new(
                3,
                later,
                Event::StepRejected {
                    step_id: "s1".into(),
                    by: None,
                    comment: None,
                    expired: true,
                },
            ),
        ];
        let ms = from_events(&records, Some(&state), later);
        let names: Vec<(&str, f64)> = ms.iter().map(|m| (m.name, m.value)).collect();
        assert_eq!(
            names[..3],
            [
                ("ApprovalsRequested", 1.0),
                ("ApprovalDecisions", 1.0),
                ("ApprovalDecisionTime", 90_000.0)
            ]
        );
        assert_eq!(ms[1].dimensions, vec![("Decision", "expired".to_owned())]);
    }
}
