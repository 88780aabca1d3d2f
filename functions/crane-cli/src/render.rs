//! How runs look: the live frame redrawn on a terminal (a header and one line per step),
//! the plain line printed for each event when the output is not a terminal, and the text
//! of `get`. Pure functions of a [`Progress`], the time and a spinner frame, so they are
//! tested without a terminal.

use chrono::{DateTime, Local, Utc};
use serde_json::Value;

use crate::error::one_line;
use crate::progress::{time, Progress, StepProgress};

const SPINNER: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/// What a frame is drawn with.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// For countdowns ("retry in 0.8 s").
    pub now: DateTime<Utc>,
    /// Spinner position.
    pub frame: usize,
    /// ANSI colours.
    pub color: bool,
}

/// The live frame: a header line, then one line per step.
pub fn frame(p: &Progress, style: &Style) -> Vec<String> {
    let mut lines = vec![header(p, style)];
    let width = |f: fn(&StepProgress) -> String| {
        p.steps
            .iter()
            .map(|s| f(s).chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths = [
        width(|s| s.id.clone()),
        width(|s| s.tool.clone()),
        width(|s| input_summary(&s.tool, &s.input)),
    ];
    for step in &p.steps {
        lines.push(step_line(p, step, style, widths));
    }
    lines
}

/// [`frame`] in at most `max_lines` lines (a terminal's height): when the steps do not
/// fit, the ones doing something (running, retrying, held, waiting for approval, failed,
/// being undone) are kept first, in plan order, and a last line counts the others.
pub fn frame_within(p: &Progress, style: &Style, max_lines: usize) -> Vec<String> {
    let mut lines = frame(p, style);
    if lines.len() <= max_lines {
        return lines;
    }
    if max_lines < 3 {
        lines.truncate(max_lines);
        return lines;
    }
    let budget = max_lines - 2;
    let mut order: Vec<usize> = (0..p.steps.len()).collect();
    order.sort_by_key(|&i| (!busy(&p.steps[i]), i));
    let mut kept: Vec<usize> = order.into_iter().take(budget).collect();
    kept.sort_unstable();
    let hidden = p.steps.len() - kept.len();
    let mut fitted = vec![lines.remove(0)];
    let mut steps: Vec<Option<String>> = lines.into_iter().map(Some).collect();
    fitted.extend(
        kept.iter()
            .filter_map(|&i| steps.get_mut(i).and_then(Option::take)),
    );
    fitted.push(paint(
        &format!("  … {hidden} more step{}", plural(hidden)),
        DIM,
        style.color,
    ));
    fitted
}

/// A step worth a line when not all fit.
fn busy(s: &StepProgress) -> bool {
    match s.status.as_str() {
        "completed" | "skipped" | "compensated" => false,
        "pending" => s.retry_at.is_some() || s.held.is_some(),
        _ => true,
    }
}

fn header(p: &Progress, style: &Style) -> String {
    let mut parts = vec![
        format!("run {}", p.run_id),
        paint_status(&p.status, style.color),
    ];
    let n = p.steps.len();
    if n > 0 {
        parts.push(format!("{n} step{}", plural(n)));
    }
    if let Some(planner) = &p.planner {
        parts.push(format!("{planner} planner"));
    }
    parts.join(" · ")
}

/// One step: symbol, id, tool, input, then what it is doing.
pub fn step_line(p: &Progress, s: &StepProgress, style: &Style, widths: [usize; 3]) -> String {
    let spin = SPINNER[style.frame % SPINNER.len()];
    let c = style.color;
    let (symbol, detail) = match s.status.as_str() {
        "pending" => pending(p, s, style),
        "running" => (
            paint(spin, CYAN, c),
            format!("running · attempt {}", s.attempts.max(1)),
        ),
        "completed" => {
            let mut d = format!(
                "→ {}",
                s.output.as_ref().map(value_summary).unwrap_or_default()
            );
            if s.attempts > 1 {
                d.push_str(&format!(" · after {} attempts", s.attempts));
            }
            if let Some(ms) = s.duration_ms {
                d.push_str(&format!(" · {ms} ms"));
            }
            (paint("✓", GREEN, c), d)
        }
        "failed" => {
            let error = clip(s.error.as_deref().unwrap_or("unknown error"), 100);
            let detail = match (s.attempts, &s.verdict) {
                (0, Some(verdict)) => format!("failed: {verdict}"),
                (0, None) => format!("failed: {error}"),
                (n, _) => format!("failed after {n} attempt{}: {error}", plural(n as usize)),
            };
            (paint("✗", RED, c), detail)
        }
        "skipped" => (paint("–", DIM, c), paint("skipped", DIM, c)),
        "compensating" => (paint(spin, BLUE, c), "undoing".into()),
        "compensated" => (paint("↩", BLUE, c), "undone".into()),
        "compensation_failed" => (
            paint("✗", RED, c),
            format!(
                "undo failed: {}",
                clip(
                    s.compensation_error.as_deref().unwrap_or("unknown error"),
                    100
                )
            ),
        ),
        "waiting_approval" => {
            let expires = s
                .approval_expires
                .map(|t| format!(" (expires {})", countdown(t, style.now)))
                .unwrap_or_default();
            (
                paint("⏸", MAGENTA, c),
                format!(
                    "waiting for approval{expires}: crane approve {} {}",
                    p.run_id, s.id
                ),
            )
        }
        "rejected" => (
            paint("✗", RED, c),
            s.verdict.clone().unwrap_or_else(|| "rejected".into()),
        ),
        other => ("?".into(), other.to_owned()),
    };
    let [wi, wt, wn] = widths;
    let input = input_summary(&s.tool, &s.input);
    let line = format!(
        "  {symbol} {:<wi$}  {:<wt$}  {:<wn$}  {detail}",
        s.id, s.tool, input
    );
    line.trim_end().to_owned()
}

/// A pending step: held by its breaker, waiting to retry, interrupted, or waiting for the
/// steps it depends on.
fn pending(p: &Progress, s: &StepProgress, style: &Style) -> (String, String) {
    let c = style.color;
    if let Some(held) = &s.held {
        let mut d = format!("held by the circuit breaker: {}", clip(&held.reason, 80));
        if let Some(until) = held.until {
            d.push_str(&format!(" · asks again {}", countdown(until, style.now)));
        }
        if held.rejections > 1 {
            d.push_str(&format!(" · {} rejections", held.rejections));
        }
        return (paint("⊘", YELLOW, c), d);
    }
    if let Some(due) = s.retry_at {
        let what = if s.attempts > 0 {
            format!("attempt {} failed", s.attempts)
        } else {
            "interrupted".to_owned()
        };
        let err = s
            .error
            .as_deref()
            .map(|e| format!(": {}", clip(e, 80)))
            .unwrap_or_default();
        return (
            paint("↻", YELLOW, c),
            format!("{what}{err} · retry {}", countdown(due, style.now)),
        );
    }
    let waits: Vec<&str> = s
        .depends_on
        .iter()
        .filter(|d| p.step(d).is_none_or(|d| d.status != "completed"))
        .map(String::as_str)
        .collect();
    let detail = if waits.is_empty() {
        "ready".to_owned()
    } else {
        format!("waits for {}", waits.join(", "))
    };
    (paint("·", DIM, c), paint(&detail, DIM, c))
}

/// "in 1.2 s", or "now" once due.
fn countdown(due: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let ms = (due - now).num_milliseconds();
    if ms <= 0 {
        "now".into()
    } else {
        format!("in {}", seconds(ms))
    }
}

/// `ms` for people: "0.8 s", "12 s", "3 min", "5 h", "2 d".
pub fn seconds(ms: i64) -> String {
    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;
    match ms {
        ..=9_999 => format!("{:.1} s", ms as f64 / 1000.0),
        10_000..=119_999 => format!("{} s", ms / 1000),
        _ if ms < 120 * MIN => format!("{} min", ms / MIN),
        _ if ms < 48 * HOUR => format!("{} h", ms / HOUR),
        _ => format!("{} d", ms / (24 * HOUR)),
    }
}

/// The last line of a watched run: how it ended.
pub fn summary(p: &Progress, color: bool) -> String {
    let took = match (p.created_at, p.finished_at) {
        (Some(a), Some(b)) => format!(" in {}", seconds((b - a).num_milliseconds().max(0))),
        _ => String::new(),
    };
    let mut line = format!("run {}{took}", paint_status(&p.status, color));
    if p.status == "completed" {
        let result = p
            .result
            .as_ref()
            .map(value_summary)
            .unwrap_or_else(|| "null".into());
        line.push_str(&format!(": result {result}"));
    } else if let Some(error) = &p.error {
        line.push_str(&format!(": {}", one_line(error)));
    }
    line
}

/// The plain lines for one event, already folded into `p`: a time, then what changed.
pub fn event_lines(event: &Value, p: &Progress) -> Vec<String> {
    let stamp = time(&event["at"])
        .map(|t| t.with_timezone(&Local).format("%H:%M:%S%.3f").to_string())
        .unwrap_or_default();
    let data = &event["data"];
    let step = data["step_id"].as_str().and_then(|id| p.step(id));
    let subject = match step {
        Some(s) => format!("{} {} {}", s.id, s.tool, input_summary(&s.tool, &s.input)),
        None => data["step_id"]
            .as_str()
            .map_or_else(|| "run".to_owned(), str::to_owned),
    };
    let attempt = data["attempt"].as_u64().unwrap_or(0);
    let err = || one_line(data["error"].as_str().unwrap_or("unknown error"));
    let kind = event["type"].as_str().unwrap_or("?");
    let what = match kind {
        "RunCreated" => format!("created: {}", quoted(data["prompt"].as_str().unwrap_or(""))),
        "PlanGenerated" => {
            let n = p.steps.len();
            let mut lines = vec![format!(
                "{stamp} run planned by the {} planner: {n} step{}",
                p.planner.as_deref().unwrap_or("unknown"),
                plural(n)
            )];
            for s in &p.steps {
                let after = if s.depends_on.is_empty() {
                    String::new()
                } else {
                    format!(" (after {})", s.depends_on.join(", "))
                };
                lines.push(format!(
                    "{stamp}   {} {} {}{after}",
                    s.id,
                    s.tool,
                    input_summary(&s.tool, &s.input)
                ));
            }
            return lines;
        }
        "StepStarted" => format!("running (attempt {attempt})"),
        "StepCompleted" => format!(
            "completed → {} ({} ms)",
            value_summary(&data["output"]),
            data["duration_ms"].as_u64().unwrap_or(0)
        ),
        "StepAttemptFailed" => match data["retry_in_ms"].as_i64() {
            Some(ms) => format!(
                "attempt {attempt} failed: {}; retry in {}",
                err(),
                seconds(ms)
            ),
            None => format!("attempt {attempt} failed: {}", err()),
        },
        "StepFailed" if attempt == 0 => format!("failed: {}", err()),
        "StepFailed" => format!(
            "failed after {attempt} attempt{}: {}",
            plural(attempt as usize),
            err()
        ),
        "StepInterrupted" => format!("attempt {attempt} interrupted: {}; it runs again", err()),
        "StepDeferred" => {
            let until = time(&data["until"])
                .map(|t| {
                    format!(
                        "; asks again at {}",
                        t.with_timezone(&Local).format("%H:%M:%S")
                    )
                })
                .unwrap_or_default();
            format!(
                "held by the circuit breaker: {}{until}",
                one_line(data["reason"].as_str().unwrap_or(""))
            )
        }
        "ApprovalRequested" => format!(
            "⏸ waiting for approval: crane approve {run} {id} (or crane reject {run} {id})",
            run = p.run_id,
            id = data["step_id"].as_str().unwrap_or("")
        ),
        "StepApproved" | "StepRejected" => step
            .and_then(|s| s.verdict.clone())
            .unwrap_or_else(|| kind.trim_start_matches("Step").to_lowercase()),
        "RunCompleted" => format!("completed: result {}", value_summary(&data["result"])),
        "RunFailed" => format!("failed: {}", err()),
        "CancelRequested" => "cancel requested".into(),
        "CompensationStarted" => {
            let steps: Vec<&str> = data["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            format!("compensating: undoing {}", steps.join(", "))
        }
        "CompensationRetryRequested" => format!("compensation retried (saga attempt {attempt})"),
        "StepCompensated" => "undone".into(),
        "StepCompensationFailed" => format!("undo failed: {}", err()),
        "RunCompensated" | "RunCancelled" | "RunCompensationFailed" => match &p.error {
            Some(e) if p.status == "compensation_failed" => {
                format!("compensation_failed: {}", one_line(e))
            }
            _ => p.status.clone(),
        },
        other => format!("{other} {}", clip(&data.to_string(), 100)),
    };
    let about_run = kind.starts_with("Run")
        || matches!(
            kind,
            "CancelRequested" | "CompensationStarted" | "CompensationRetryRequested"
        )
        || data["step_id"].is_null();
    if about_run {
        return vec![format!("{stamp} run {what}")];
    }
    vec![format!("{stamp} {subject}: {what}")]
}

/// A tool input in a few characters: the expression, the todo action and its argument.
pub fn input_summary(tool: &str, input: &Value) -> String {
    let s = match (tool, input) {
        (_, Value::Null) => String::new(),
        ("calculator", _) if input["expression"].is_string() => {
            input["expression"].as_str().unwrap_or_default().to_owned()
        }
        ("todo", _) if input["action"].is_string() => {
            let action = input["action"].as_str().unwrap_or_default();
            match (&input["title"], &input["id"]) {
                (Value::String(t), _) => format!("{action} {}", quoted(t)),
                (_, id) if !id.is_null() => format!("{action} {}", value_summary(id)),
                _ => action.to_owned(),
            }
        }
        _ => input.to_string(),
    };
    clip(&s, 32)
}

/// A JSON value in at most 60 characters: numbers and strings as they are, a todo list as
/// its count, anything else as compact JSON.
pub fn value_summary(v: &Value) -> String {
    let s = match v {
        Value::String(s) => quoted(s),
        Value::Object(o)
            if o.get("title").is_some_and(Value::is_string) && o.contains_key("id") =>
        {
            let title = o.get("title").and_then(Value::as_str).unwrap_or_default();
            format!(
                "todo {} {}",
                o.get("id").map(Value::to_string).unwrap_or_default(),
                quoted(title)
            )
        }
        Value::Object(o) if o.get("todos").is_some_and(Value::is_array) => {
            let total = o.get("total").and_then(Value::as_u64).unwrap_or(0);
            format!("{total} todo{}", plural(total as usize))
        }
        other => other.to_string(),
    };
    clip(&s, 60)
}

fn quoted(s: &str) -> String {
    format!("\"{}\"", one_line(s))
}

/// At most `max` characters, with an ellipsis when cut.
pub fn clip(s: &str, max: usize) -> String {
    let s = one_line(s);
    if s.chars().count() <= max {
        return s;
    }
    let mut cut: String = s.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

const GREEN: &str = "32";
const RED: &str = "31";
const YELLOW: &str = "33";
const BLUE: &str = "34";
const MAGENTA: &str = "35";
const CYAN: &str = "36";
const DIM: &str = "2";

fn paint(s: &str, code: &str, color: bool) -> String {
    if color {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_owned()
    }
}

fn paint_status(status: &str, color: bool) -> String {
    let code = match status {
        "completed" => GREEN,
        "failed" | "compensation_failed" => RED,
        "compensating" | "compensated" | "cancelled" => YELLOW,
        _ => CYAN,
    };
    paint(status, code, color)
}

#[cfg(test)]
mod tests;
