//! What a person watching a run needs to see, folded from its events (or read from a run
//! view). This is a display model, deliberately lenient: the server's `fold` is the truth,
//! statuses are kept as the strings the API sends, and an event or status this version
//! does not know is carried through instead of failing the command.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

/// One run as watched.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    pub run_id: String,
    pub prompt: String,
    /// A run status of the API (`pending`, `running`, `completed`, ...).
    pub status: String,
    pub planner: Option<String>,
    pub steps: Vec<StepProgress>,
    pub error: Option<String>,
    pub result: Option<Value>,
    pub cancel_requested: bool,
    pub created_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Sequence number of the last event folded in (0: none).
    pub last_seq: u64,
}

/// One step as watched.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepProgress {
    pub id: String,
    pub tool: String,
    pub input: Value,
    pub depends_on: Vec<String>,
    /// A step status of the API, plus `compensating` while its undo is under way.
    pub status: String,
    /// Attempts started so far.
    pub attempts: u32,
    /// Error of the last failed attempt, or why the step failed.
    pub error: Option<String>,
    pub output: Option<Value>,
    pub duration_ms: Option<u64>,
    /// Waiting to retry: when the next attempt is due.
    pub retry_at: Option<DateTime<Utc>>,
    /// Held back by its tool's circuit breaker.
    pub held: Option<Held>,
    pub compensation_error: Option<String>,
    /// Waiting for approval: when the request expires (which counts as a rejection).
    pub approval_expires: Option<DateTime<Utc>>,
    /// What became of its approval, with the approver's comment.
    pub verdict: Option<String>,
}

/// A step its tool's circuit breaker refuses to run for now.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub reason: String,
    pub until: Option<DateTime<Utc>>,
    /// Refusals recorded since the step last started.
    pub rejections: u32,
}

/// Whether there is more to watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Steps or compensations are still under way.
    Running,
    /// `failed`, and a compensation saga is on its way for completed steps that change
    /// something (`certain`), or may be (a tool this client does not know).
    AwaitingSaga { certain: bool },
    /// Nothing more will happen.
    Ended,
}

/// Statuses in which nothing more happens to a run (a `failed` run may still compensate).
pub fn is_final(status: &str) -> bool {
    matches!(
        status,
        "completed" | "compensated" | "compensation_failed" | "cancelled"
    )
}

impl Progress {
    /// A run about to be watched from its first event.
    pub fn new(run_id: &str) -> Progress {
        Progress {
            run_id: run_id.to_owned(),
            status: "pending".into(),
            ..Progress::default()
        }
    }

    /// The run as a run view of the API shows it (`GET /runs/{id}`).
    pub fn from_view(view: &Value) -> Progress {
        let plan = view["plan"]["steps"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let steps = view["steps"]
            .as_array()
            .map(|steps| {
                steps
                    .iter()
                    .map(|s| {
                        let id = text(&s["id"]);
                        let planned = plan.iter().find(|p| p["id"] == s["id"]);
                        StepProgress {
                            tool: text(&s["tool"]),
                            input: planned.map(|p| p["input"].clone()).unwrap_or(Value::Null),
                            depends_on: planned
                                .map(|p| strings(&p["depends_on"]))
                                .unwrap_or_default(),
                            status: text(&s["status"]),
                            attempts: count(&s["attempts"]),
                            error: opt_text(&s["error"]),
                            output: Some(s["output"].clone()).filter(|o| !o.is_null()),
                            duration_ms: span_ms(&s["started_at"], &s["finished_at"]),
                            retry_at: time(&s["next_attempt_at"]),
                            held: s.get("waiting").filter(|w| w.is_object()).map(|w| Held {
                                reason: text(&w["reason"]),
                                until: time(&w["until"]),
                                rejections: count(&w["deferrals"]).max(1),
                            }),
                            compensation_error: opt_text(&s["compensation_error"]),
                            approval_expires: time(&s["approval"]["expires_at"])
                                .filter(|_| s["approval"]["decision"].is_null()),
                            verdict: match s["approval"]["decision"].as_str() {
                                Some("expired") => Some("approval expired".into()),
                                Some(d) => Some(verdict(d, &s["approval"]["comment"])),
                                None => None,
                            },
                            id,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        Progress {
            run_id: text(&view["run_id"]),
            prompt: text(&view["prompt"]),
            status: text(&view["status"]),
            planner: opt_text(&view["planner"]["name"]),
            steps,
            error: opt_text(&view["error"]),
            result: Some(view["result"].clone()).filter(|r| !r.is_null()),
            cancel_requested: view["cancel_requested"].as_bool().unwrap_or(false),
            created_at: time(&view["created_at"]),
            finished_at: time(&view["finished_at"]),
            last_seq: view["last_seq"].as_u64().unwrap_or(0),
        }
    }

    pub fn step(&self, id: &str) -> Option<&StepProgress> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// Fold in one event (`{"seq", "at", "type", "data"}`). Returns `false`, changing
    /// nothing, for an event already folded in (a server that ignores `after` sends the
    /// whole log again).
    pub fn apply(&mut self, event: &Value) -> bool {
        let seq = event["seq"].as_u64().unwrap_or(0);
        if seq <= self.last_seq {
            return false;
        }
        self.last_seq = seq;
        let at = time(&event["at"]);
        let data = &event["data"];
        let step_id = data["step_id"].as_str().unwrap_or_default().to_owned();
        match event["type"].as_str().unwrap_or_default() {
            "RunCreated" => {
                self.prompt = text(&data["prompt"]);
                self.created_at = at;
            }
            "PlanGenerated" => {
                self.planner = opt_text(&data["planner"]["name"]);
                self.steps = data["plan"]["steps"]
                    .as_array()
                    .map(|plan| plan.iter().map(planned_step).collect())
                    .unwrap_or_default();
            }
            "StepStarted" => {
                if self.status == "pending" {
                    self.status = "running".into();
                }
                self.with_step(&step_id, |s| {
                    s.status = "running".into();
                    s.attempts = count(&data["attempt"]);
                    s.retry_at = None;
                    s.held = None;
                });
            }
            "StepCompleted" => self.with_step(&step_id, |s| {
                s.status = "completed".into();
                s.attempts = s.attempts.max(count(&data["attempt"]));
                s.output = Some(data["output"].clone());
                s.duration_ms = data["duration_ms"].as_u64();
                s.error = None;
            }),
            "StepAttemptFailed" => self.with_step(&step_id, |s| {
                s.error = opt_text(&data["error"]);
                if let Some(ms) = data["retry_in_ms"].as_u64() {
                    s.status = "pending".into();
                    s.retry_at = at.map(|t| t + millis(ms));
                }
            }),
            "StepFailed" => self.with_step(&step_id, |s| {
                s.status = "failed".into();
                s.attempts = s.attempts.max(count(&data["attempt"]));
                s.error = opt_text(&data["error"]);
                s.retry_at = None;
                s.held = None;
            }),
            "StepInterrupted" => self.with_step(&step_id, |s| {
                s.status = "pending".into();
                s.error = opt_text(&data["error"]);
                s.retry_at = at;
            }),
            "StepDeferred" => self.with_step(&step_id, |s| {
                let rejections = s.held.as_ref().map_or(0, |h| h.rejections) + 1;
                s.held = Some(Held {
                    reason: text(&data["reason"]),
                    until: time(&data["until"]),
                    rejections,
                });
            }),
            "ApprovalRequested" => {
                if self.status == "pending" {
                    self.status = "running".into();
                }
                self.with_step(&step_id, |s| {
                    s.status = "waiting_approval".into();
                    s.approval_expires = time(&data["expires_at"]);
                });
            }
            "StepApproved" => self.with_step(&step_id, |s| {
                s.status = "pending".into();
                s.approval_expires = None;
                s.verdict = Some(verdict("approved", &data["comment"]));
            }),
            "StepRejected" => self.with_step(&step_id, |s| {
                s.status = "rejected".into();
                s.approval_expires = None;
                s.verdict = Some(if data["expired"].as_bool() == Some(true) {
                    "approval expired".into()
                } else {
                    verdict("rejected", &data["comment"])
                });
            }),
            "RunCompleted" => {
                self.status = "completed".into();
                self.result = Some(data["result"].clone());
                self.finished_at = at;
            }
            "RunFailed" => {
                self.status = "failed".into();
                self.error = opt_text(&data["error"]);
                self.finished_at = at;
                self.skip_pending();
            }
            "CancelRequested" => {
                self.cancel_requested = true;
                self.skip_pending();
            }
            "CompensationStarted" | "CompensationRetryRequested" => {
                self.status = "compensating".into();
                self.finished_at = None;
                for id in strings(&data["steps"]) {
                    self.with_step(&id, |s| s.status = "compensating".into());
                }
            }
            "StepCompensated" => self.with_step(&step_id, |s| s.status = "compensated".into()),
            "StepCompensationFailed" => self.with_step(&step_id, |s| {
                s.status = "compensation_failed".into();
                s.compensation_error = opt_text(&data["error"]);
            }),
            "RunCompensated" => {
                self.status = if self.cancel_requested {
                    "cancelled"
                } else {
                    "compensated"
                }
                .into();
                self.finished_at = at;
            }
            "RunCompensationFailed" => {
                self.status = "compensation_failed".into();
                self.finished_at = at;
                let msg = format!(
                    "undoing {} failed: {}",
                    text(&data["step_id"]),
                    text(&data["error"])
                );
                self.error = Some(match self.error.take() {
                    Some(e) => format!("{e}; {msg}"),
                    None => msg,
                });
            }
            "RunCancelled" => {
                self.status = "cancelled".into();
                self.finished_at = at;
                self.skip_pending();
            }
            _ => {}
        }
        true
    }

    /// Whether there is more to watch. A `failed` run whose completed steps changed
    /// something is about to be compensated by its saga.
    pub fn ending(&self) -> Ending {
        if is_final(&self.status) {
            return Ending::Ended;
        }
        if self.status != "failed" {
            return Ending::Running;
        }
        let mut ending = Ending::Ended;
        for step in self.steps.iter().filter(|s| s.status == "completed") {
            match undo_of(step) {
                Undo::Nothing => {}
                Undo::Certain => return Ending::AwaitingSaga { certain: true },
                Undo::Unknown => ending = Ending::AwaitingSaga { certain: false },
            }
        }
        ending
    }

    fn with_step(&mut self, id: &str, change: impl FnOnce(&mut StepProgress)) {
        if let Some(step) = self.steps.iter_mut().find(|s| s.id == id) {
            change(step);
        }
    }

    fn skip_pending(&mut self) {
        for step in &mut self.steps {
            if matches!(step.status.as_str(), "pending" | "waiting_approval") {
                step.status = "skipped".into();
                step.retry_at = None;
                step.held = None;
            }
        }
    }
}

/// Whether a completed step has something to undo (the tools' declared compensations:
/// todo add, complete and delete do; calculator and todo reads do not).
enum Undo {
    Nothing,
    Certain,
    Unknown,
}

fn undo_of(step: &StepProgress) -> Undo {
    match (step.tool.as_str(), step.input["action"].as_str()) {
        ("calculator", _) | ("todo", Some("list" | "get")) => Undo::Nothing,
        ("todo", Some("add" | "complete" | "delete" | "reopen")) => Undo::Certain,
        _ => Undo::Unknown,
    }
}

fn planned_step(p: &Value) -> StepProgress {
    StepProgress {
        id: text(&p["id"]),
        tool: text(&p["tool"]),
        input: p["input"].clone(),
        depends_on: strings(&p["depends_on"]),
        status: "pending".into(),
        ..StepProgress::default()
    }
}

fn verdict(what: &str, comment: &Value) -> String {
    match comment.as_str().filter(|c| !c.is_empty()) {
        Some(comment) => format!("{what}: {comment}"),
        None => what.to_owned(),
    }
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

fn opt_text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn count(v: &Value) -> u32 {
    v.as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0)
}

pub(crate) fn time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.to_utc())
}

fn span_ms(start: &Value, end: &Value) -> Option<u64> {
    let (start, end) = (time(start)?, time(end)?);
    u64::try_from((end - start).num_milliseconds()).ok()
}

fn millis(ms: u64) -> Duration {
    Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX / 1_000_000))
}

#[cfg(test)]
mod tests;
