//! The events of a run. Past tense, each with a type name (`type`) and a schema version.
//!
//! Events are immutable once written; new fields are added as `Option`/defaulted so old
//! events keep deserialising, and a breaking change bumps [`EventRecord::version`].

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::de::{self, DeserializeSeed, IgnoredAny, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use super::output::Output;
use super::plan::Plan;

/// Current schema version written for every event type.
pub const EVENT_VERSION: u32 = 1;

/// One stored event: its position in the run's log, when it happened and what happened.
///
/// Written as one JSON object: `seq`, `at`, `version`, then the event's `type` and `data`.
/// Read by hand rather than through `#[serde(flatten)]`, which would buffer the object
/// first and so could not hand an [`Output`] its text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRecord {
    /// Position in the run's log: 1 for `RunCreated`, then consecutive with no gaps.
    pub seq: u64,
    /// When the event was recorded (UTC).
    pub at: DateTime<Utc>,
    /// Schema version of the event's type; [`EVENT_VERSION`] for new events and for old ones
    /// stored without it.
    #[serde(default = "default_version")]
    pub version: u32,
    /// What happened, serialised inline as `type` and `data`.
    #[serde(flatten)]
    pub event: Event,
}

fn default_version() -> u32 {
    EVENT_VERSION
}

impl EventRecord {
    /// A record at `seq` written with the current [`EVENT_VERSION`].
    pub fn new(seq: u64, at: DateTime<Utc>, event: Event) -> Self {
        Self {
            seq,
            at,
            version: EVENT_VERSION,
            event,
        }
    }

    /// Number a batch of new events consecutively after `last_seq`.
    pub fn batch(last_seq: u64, at: DateTime<Utc>, events: Vec<Event>) -> Vec<EventRecord> {
        events
            .into_iter()
            .zip(last_seq + 1..)
            .map(|(event, seq)| EventRecord::new(seq, at, event))
            .collect()
    }
}

impl<'de> Deserialize<'de> for EventRecord {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RecordVisitor)
    }
}

struct RecordVisitor;

/// A member of a record's object, named without allocating (any other is skipped).
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Member {
    Seq,
    At,
    Version,
    Type,
    Data,
    #[serde(other)]
    Other,
}

impl<'de> Visitor<'de> for RecordVisitor {
    type Value = EventRecord;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an event record: seq, at, version, type and data")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EventRecord, A::Error> {
        let (mut seq, mut at, mut version) = (None, None, None);
        let (mut kind, mut data): (Option<String>, Option<Box<RawValue>>) = (None, None);
        while let Some(key) = map.next_key::<Member>()? {
            match key {
                Member::Seq => seq = Some(map.next_value()?),
                Member::At => at = Some(map.next_value()?),
                Member::Version => version = Some(map.next_value()?),
                Member::Type => kind = Some(map.next_value()?),
                Member::Data => data = Some(map.next_value()?),
                Member::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let kind = kind.ok_or_else(|| de::Error::missing_field("type"))?;
        let event = Event::deserialize(de::value::MapAccessDeserializer::new(Tagged {
            kind: Some(&kind),
            data: data.as_deref(),
        }))
        .map_err(de::Error::custom)?;
        Ok(EventRecord {
            seq: seq.ok_or_else(|| de::Error::missing_field("seq"))?,
            at: at.ok_or_else(|| de::Error::missing_field("at"))?,
            version: version.unwrap_or_else(default_version),
            event,
        })
    }
}

/// An event's `type` and `data` as the map its adjacently tagged form reads, the tag first
/// (so `data` goes straight to its variant, unbuffered).
struct Tagged<'a> {
    kind: Option<&'a str>,
    data: Option<&'a RawValue>,
}

impl<'a> MapAccess<'a> for Tagged<'a> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'a>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let key = if self.kind.is_some() {
            "type"
        } else if self.data.is_some() {
            "data"
        } else {
            return Ok(None);
        };
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        if let Some(kind) = self.kind.take() {
            return seed.deserialize(kind.into_deserializer());
        }
        match self.data.take() {
            Some(data) => seed.deserialize(&mut serde_json::Deserializer::from_str(data.get())),
            None => Err(de::Error::custom("a value without a key")),
        }
    }
}

/// Whether a failure is worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// May succeed if tried again (timeouts, throttling, an unavailable dependency).
    Transient,
    /// Will fail the same way every time (bad input, a missing todo).
    Permanent,
}

/// Which planner made a plan, and why a fallback happened if one did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PlannerInfo {
    /// `pattern`, `llm` or `bedrock`.
    pub name: String,
    /// The model that planned, for LLM planners; `None` for the pattern planner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Set when the configured planner failed and another one planned instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    /// The planner that was asked first, when it is not the one that planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<String>,
    /// Tokens and latency of the planning call; `None` when no model was called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// Cost of one planning call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Usage {
    /// Tokens sent to the model in the prompt.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Tokens the model generated in its answer.
    #[serde(default)]
    pub completion_tokens: u64,
    /// Wall-clock time of the call, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
}

/// Everything that can happen to a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    /// The run was accepted; always the first event of a log.
    RunCreated {
        /// The tenant that owns the run.
        tenant: String,
        /// The prompt as the user wrote it.
        prompt: String,
        /// The correlation id of the request that created the run (`X-Correlation-Id`, or
        /// generated).
        correlation_id: String,
        /// The `Idempotency-Key` the request carried, if any; a retry with the same key returns
        /// this run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idempotency_key: Option<String>,
    },
    /// The prompt was turned into a plan, whose steps are now pending.
    PlanGenerated {
        /// Which planner produced the plan, and any fallback or usage.
        planner: PlannerInfo,
        /// The validated DAG of steps to run. Shared: the state of a run holds the same plan
        /// and is copied at every decision.
        plan: Arc<Plan>,
    },
    /// A worker claimed an attempt of a step; it holds it until `lease_ms` after `at`.
    StepStarted {
        /// The id of the step in the plan.
        step_id: String,
        /// The attempt number, from 1.
        attempt: u32,
        /// How long the worker holds the attempt, in milliseconds; after that it counts as
        /// interrupted.
        lease_ms: u64,
    },
    /// An attempt succeeded and the step is done.
    StepCompleted {
        /// The id of the step in the plan.
        step_id: String,
        /// The attempt that succeeded, from 1.
        attempt: u32,
        /// The tool's output, which later steps may reference, as its JSON text. Shared: a
        /// run's state holds the same output, and both are copied at every decision.
        output: Output,
        /// How long the tool ran, in milliseconds.
        duration_ms: u64,
    },
    /// One attempt failed. `retry_in_ms` is the backoff chosen before the next attempt, or
    /// `None` when no attempt follows (permanent error or attempts exhausted).
    StepAttemptFailed {
        /// The id of the step in the plan.
        step_id: String,
        /// The attempt that failed, from 1.
        attempt: u32,
        /// The tool's error message.
        error: String,
        /// Whether the failure may succeed if retried.
        kind: ErrorKind,
        /// How long the tool ran before failing, in milliseconds.
        duration_ms: u64,
        /// Backoff before the next attempt, in milliseconds; `None` when no attempt follows.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_in_ms: Option<u64>,
    },
    /// The step failed for good: a permanent error, no attempts left, or a rejected approval.
    StepFailed {
        /// The id of the step in the plan.
        step_id: String,
        /// The last attempt made, from 1.
        attempt: u32,
        /// Why the step failed.
        error: String,
    },
    /// The worker running `attempt` died (its lease expired, or a restarted runtime voided
    /// it). Not a tool failure: it does not use up the retry budget, only the step's own,
    /// larger budget of interruptions.
    StepInterrupted {
        /// The id of the step in the plan.
        step_id: String,
        /// The attempt whose worker died, from 1.
        attempt: u32,
        /// How the interruption was noticed (an expired lease, a restart).
        error: String,
    },
    /// The tool's circuit breaker refused the call, so no attempt was started (none is
    /// used up): the step waits until `until` and asks again.
    StepDeferred {
        /// The id of the step in the plan.
        step_id: String,
        /// The attempt that would have started.
        attempt: u32,
        /// Why the breaker refused (its state and tool).
        reason: String,
        /// When the step asks the breaker again.
        until: DateTime<Utc>,
    },
    /// Every step completed: the run is done.
    RunCompleted {
        /// The run's result: the output of the plan's last step.
        result: Value,
    },
    /// The run failed; compensation of completed steps may follow.
    RunFailed {
        /// Why the run failed.
        error: String,
        /// The step whose failure failed the run; `None` when the run failed as a whole (planning,
        /// a deadline).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step_id: Option<String>,
    },
    /// The user asked to cancel: nothing new is scheduled from here on.
    CancelRequested {
        /// The reason the user gave, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Compensation of the listed steps began, in this order.
    CompensationStarted {
        /// Ids of the completed steps whose tools can undo them, most recently completed first.
        steps: Vec<String>,
    },
    /// A completed step was undone by its tool's compensation.
    StepCompensated {
        /// The id of the compensated step.
        step_id: String,
        /// Compensation attempts it took, from 1 (0 in events written before this was recorded).
        #[serde(default)]
        attempts: u32,
    },
    /// A step's compensation failed after its retries; the saga stops here.
    StepCompensationFailed {
        /// The id of the step that could not be undone.
        step_id: String,
        /// The last compensation error.
        error: String,
        /// Compensation attempts made, from 1 (0 in events written before this was recorded).
        #[serde(default)]
        attempts: u32,
    },
    /// Every compensation succeeded (or there was nothing to undo after a cancel).
    RunCompensated {},
    /// The saga ended without undoing everything: `step_id` could not be compensated.
    RunCompensationFailed {
        /// The step whose compensation failed (`unknown` when the saga itself failed around the
        /// steps).
        step_id: String,
        /// Why it failed.
        error: String,
    },
    /// The run was cancelled and everything it did was undone.
    RunCancelled {},
    /// An operator asked for the compensation saga to run again (its execution crashed and
    /// left the run `compensating`, or a compensation failed and has been repaired): saga
    /// attempt `attempt` (2 for the first retry) starts as a new execution, and undoes
    /// what is still to undo.
    CompensationRetryRequested {
        /// The saga attempt that starts, 2 for the first retry.
        attempt: u32,
        /// The reason the operator gave, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A step that needs approval became ready: it is held, not dispatched, until a person
    /// decides or `expires_at` passes (which counts as a rejection). `input` is the step's
    /// input with references to earlier outputs filled in (what the tool would be given);
    /// `approver` is who may decide (the run's tenant).
    ApprovalRequested {
        /// The id of the held step.
        step_id: String,
        /// The step's input with references filled in: what the tool would be given.
        input: Value,
        /// Who may decide: the run's tenant.
        approver: String,
        /// When the request expires and counts as a rejection.
        expires_at: DateTime<Utc>,
    },
    /// The held step may run; it is dispatched now.
    StepApproved {
        /// The id of the approved step.
        step_id: String,
        /// Who decided (the tenant of the request).
        by: String,
        /// The approver's comment, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
    },
    /// The held step must not run: it fails for good (a `StepFailed` follows), and the saga
    /// undoes what completed. `expired` when no decision came in time (`by` is then absent).
    StepRejected {
        /// The id of the rejected step.
        step_id: String,
        /// Who rejected it; `None` when it expired.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        /// The approver's comment, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
        /// No decision came before the request expired.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        expired: bool,
    },
}

impl Event {
    /// The event's type name, as stored and as served by the API.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::RunCreated { .. } => "RunCreated",
            Event::PlanGenerated { .. } => "PlanGenerated",
            Event::StepStarted { .. } => "StepStarted",
            Event::StepCompleted { .. } => "StepCompleted",
            Event::StepAttemptFailed { .. } => "StepAttemptFailed",
            Event::StepFailed { .. } => "StepFailed",
            Event::StepInterrupted { .. } => "StepInterrupted",
            Event::StepDeferred { .. } => "StepDeferred",
            Event::RunCompleted { .. } => "RunCompleted",
            Event::RunFailed { .. } => "RunFailed",
            Event::CancelRequested { .. } => "CancelRequested",
            Event::CompensationStarted { .. } => "CompensationStarted",
            Event::StepCompensated { .. } => "StepCompensated",
            Event::StepCompensationFailed { .. } => "StepCompensationFailed",
            Event::RunCompensated {} => "RunCompensated",
            Event::RunCompensationFailed { .. } => "RunCompensationFailed",
            Event::RunCancelled {} => "RunCancelled",
            Event::CompensationRetryRequested { .. } => "CompensationRetryRequested",
            Event::ApprovalRequested { .. } => "ApprovalRequested",
            Event::StepApproved { .. } => "StepApproved",
            Event::StepRejected { .. } => "StepRejected",
        }
    }

    /// The step an event is about, if any (for logs).
    pub fn step_id(&self) -> Option<&str> {
        match self {
            Event::StepStarted { step_id, .. }
            | Event::StepCompleted { step_id, .. }
            | Event::StepAttemptFailed { step_id, .. }
            | Event::StepFailed { step_id, .. }
            | Event::StepInterrupted { step_id, .. }
            | Event::StepDeferred { step_id, .. }
            | Event::StepCompensated { step_id, .. }
            | Event::StepCompensationFailed { step_id, .. }
            | Event::ApprovalRequested { step_id, .. }
            | Event::StepApproved { step_id, .. }
            | Event::StepRejected { step_id, .. } => Some(step_id),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_an_event_record_when_serialised_then_it_has_seq_type_at_and_data() {
        let at = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("valid time");
        let rec = EventRecord::new(
            3,
            at,
            Event::RunFailed {
                error: "boom".into(),
                step_id: None,
            },
        );
        let json = serde_json::to_value(&rec).expect("serialises");
        assert_eq!(json["seq"], 3);
        assert_eq!(json["type"], "RunFailed");
        assert_eq!(json["version"], 1);
        assert_eq!(json["data"]["error"], "boom");
        assert_eq!(json["at"], "2026-01-02T03:04:05Z");
        let back: EventRecord = serde_json::from_value(json).expect("deserialises");
        assert_eq!(back, rec);
    }

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("valid time")
    }

    #[test]
    fn given_a_completed_step_when_written_then_its_output_is_embedded_as_its_json_and_reads_back()
    {
        let output = Output::from_value(&serde_json::json!({"todos": [{"id": 1}], "total": 1}));
        let rec = EventRecord::new(
            4,
            at(),
            Event::StepCompleted {
                step_id: "s1".into(),
                attempt: 2,
                output: output.clone(),
                duration_ms: 7,
            },
        );
        let text = serde_json::to_string(&rec).expect("serialises");
        assert_eq!(
            text,
            r#"{"seq":4,"at":"2026-01-02T03:04:05Z","version":1,"type":"StepCompleted","data":{"step_id":"s1","attempt":2,"output":{"todos":[{"id":1}],"total":1},"duration_ms":7}}"#
        );
        let back: EventRecord = serde_json::from_str(&text).expect("reads");
        assert_eq!(back, rec);
        // And through a JSON value (how DynamoDB items are read).
        let back: EventRecord =
            serde_json::from_value(serde_json::to_value(&rec).expect("value")).expect("reads");
        assert_eq!(back, rec);
    }

    #[test]
    fn given_records_written_in_other_shapes_when_read_then_each_is_its_event_or_a_clear_error() {
        let run_failed = Event::RunFailed {
            error: "boom".into(),
            step_id: None,
        };
        // Members in any order, spaces, an unknown member, no version (an old record).
        for text in [
            r#"{"data":{"error":"boom"},"type":"RunFailed","at":"2026-01-02T03:04:05Z","seq":3}"#,
            r#"{ "seq": 3, "extra": [1, {"x": null}], "at": "2026-01-02T03:04:05Z", "type": "RunFailed", "data": { "error": "boom" } }"#,
        ] {
            let back: EventRecord = serde_json::from_str(text).expect(text);
            assert_eq!(
                back,
                EventRecord::new(3, at(), run_failed.clone()),
                "{text}"
            );
        }
        // A unit-like event, its data empty.
        let back: EventRecord = serde_json::from_str(
            r#"{"seq":9,"at":"2026-01-02T03:04:05Z","version":1,"type":"RunCancelled","data":{}}"#,
        )
        .expect("reads");
        assert_eq!(back.event, Event::RunCancelled {});
        for (text, says) in [
            (r#"{"seq":3,"at":"2026-01-02T03:04:05Z","data":{}}"#, "type"),
            (
                r#"{"at":"2026-01-02T03:04:05Z","type":"RunCancelled","data":{}}"#,
                "seq",
            ),
            (r#"{"seq":3,"type":"RunCancelled","data":{}}"#, "at"),
            (
                r#"{"seq":3,"at":"2026-01-02T03:04:05Z","type":"RunFailed"}"#,
                "data",
            ),
            (
                r#"{"seq":3,"at":"2026-01-02T03:04:05Z","type":"Nope","data":{}}"#,
                "Nope",
            ),
            (
                r#"{"seq":3,"at":"2026-01-02T03:04:05Z","type":"RunFailed","data":{"error":5}}"#,
                "invalid type",
            ),
            (r#"[3]"#, "event record"),
        ] {
            let err = serde_json::from_str::<EventRecord>(text)
                .expect_err(text)
                .to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn given_unit_like_events_when_round_tripped_then_they_survive() {
        for event in [Event::RunCompensated {}, Event::RunCancelled {}] {
            let json = serde_json::to_string(&event).expect("serialises");
            let back: Event = serde_json::from_str(&json).expect("deserialises");
            assert_eq!(back, event);
            assert_eq!(back.type_name(), event.type_name());
        }
    }
}

/// A tool failure, classified so the engine knows whether to retry.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ToolError {
    /// Whether retrying may help.
    pub kind: ErrorKind,
    /// What went wrong, as recorded in the step's events and shown by the API.
    pub message: String,
}

impl ToolError {
    /// A failure that retrying will not fix (bad input, a missing todo).
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Permanent,
            message: message.into(),
        }
    }

    /// A failure that may succeed if retried (a timeout, throttling).
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Transient,
            message: message.into(),
        }
    }
}
