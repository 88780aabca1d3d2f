//! Each command: one or two API calls, then the answer shown as text for people or as the
//! API's JSON (`--json`). Returns the exit status.

use std::io::{self, IsTerminal, Write};

use chrono::Local;
use clap::CommandFactory;
use serde_json::{json, Value};

use crate::cli::{Cli, Command};
use crate::client::Api;
use crate::error::{CliError, EXIT_FAILED, EXIT_OK};
use crate::follow::{self, Mode};
use crate::progress::{is_final, time, Progress};
use crate::render::{self, clip, Style};

/// Run the command `cli` names.
pub async fn execute(cli: Cli) -> Result<u8, CliError> {
    if let Command::Completions { shell } = cli.command {
        let mut out = io::stdout().lock();
        clap_complete::generate(shell, &mut Cli::command(), "crane", &mut out);
        out.flush()?;
        return Ok(EXIT_OK);
    }
    let api = Api::new(&cli.url, cli.api_key.as_deref())?;
    let json = cli.json;
    match cli.command {
        Command::Run {
            prompt,
            follow,
            idempotency_key,
        } => {
            run(
                &api,
                &prompt.join(" "),
                follow,
                idempotency_key.as_deref(),
                json,
            )
            .await
        }
        Command::Get { id, at } => get(&api, &id, at, json).await,
        Command::Events { id, follow } => events(&api, &id, follow, json).await,
        Command::Runs {
            status,
            limit,
            cursor,
        } => runs(&api, status, limit, cursor, json).await,
        Command::Cancel { id } => cancel(&api, &id, json).await,
        Command::Approve {
            run_id,
            step_id,
            comment,
        } => decide(&api, &run_id, &step_id, "approve", comment, json).await,
        Command::Reject {
            run_id,
            step_id,
            comment,
        } => decide(&api, &run_id, &step_id, "reject", comment, json).await,
        Command::Todos { limit, cursor } => todos(&api, limit, cursor, json).await,
        Command::Tools => tools(&api, json).await,
        Command::Health => health(&api, json).await,
        Command::Completions { .. } => Ok(EXIT_OK),
    }
}

async fn run(
    api: &Api,
    prompt: &str,
    follow: bool,
    idempotency_key: Option<&str>,
    json: bool,
) -> Result<u8, CliError> {
    let headers: Vec<(&str, &str)> = idempotency_key
        .map(|k| ("idempotency-key", k))
        .into_iter()
        .collect();
    let created = api
        .post(&["runs"], Some(&json!({"prompt": prompt})), &headers)
        .await?;
    let id = created["run_id"].as_str().unwrap_or_default().to_owned();
    if !follow {
        if json {
            print_json(&created)?;
        } else {
            line(&id)?;
            if io::stderr().is_terminal() {
                note(&format!("follow it with: crane events {id} --follow"));
            }
        }
        return Ok(EXIT_OK);
    }
    follow_run(api, &id, json).await
}

/// Follow run `id` in the mode the output calls for; with `--json`, print the final run.
async fn follow_run(api: &Api, id: &str, json: bool) -> Result<u8, CliError> {
    let mode = if json { Mode::Quiet } else { follow_mode() };
    let seen = follow::follow(api, id, mode).await?;
    if json {
        print_json(&final_view(api, id, seen.last_seq).await?)?;
    }
    Ok(exit_for(&seen))
}

/// Live step lines on a terminal, plain lines otherwise.
fn follow_mode() -> Mode {
    if io::stdout().is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb") {
        Mode::Live {
            color: std::env::var_os("NO_COLOR").is_none(),
        }
    } else {
        Mode::Plain
    }
}

/// The run view once it has caught up with the events seen (on AWS the view is updated
/// from the stream, a moment after the events).
async fn final_view(api: &Api, id: &str, seq: u64) -> Result<Value, CliError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let view = api.get(&["runs", id], &[]).await?;
        let caught_up = view["last_seq"].as_u64().unwrap_or(0) >= seq;
        if caught_up || std::time::Instant::now() >= deadline {
            return Ok(view);
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// 0 for `completed`, 1 (and a line on stderr saying how it ended) for any other final
/// status; a run still under way is no failure.
fn exit_for(p: &Progress) -> u8 {
    let status = p.status.as_str();
    if status == "completed" || !(is_final(status) || status == "failed") {
        return EXIT_OK;
    }
    let why = p
        .error
        .as_deref()
        .map(|e| format!(": {}", clip(e, 200)))
        .unwrap_or_default();
    note(&format!("crane: run {} ended {status}{why}", p.run_id));
    EXIT_FAILED
}

async fn get(api: &Api, id: &str, at: Option<String>, json: bool) -> Result<u8, CliError> {
    let query: Vec<(&str, String)> = at.iter().map(|t| ("at", t.clone())).collect();
    let view = api.get(&["runs", id], &query).await?;
    let p = Progress::from_view(&view);
    if json {
        print_json(&view)?;
        return Ok(exit_for(&p));
    }
    let color = io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let style = Style {
        now: chrono::Utc::now(),
        frame: 0,
        color,
    };
    let mut lines = render::frame(&p, &style);
    lines.insert(1, format!("  prompt: {}", clip(&p.prompt, 200)));
    if let Some(at) = &at {
        lines.insert(1, format!("  as of {at}"));
    }
    if is_final(&p.status) || p.status == "failed" {
        lines.push(render::summary(&p, color));
    }
    for l in lines {
        line(&l)?;
    }
    Ok(exit_for(&p))
}

async fn events(api: &Api, id: &str, follow: bool, json: bool) -> Result<u8, CliError> {
    if follow {
        let mode = if json { Mode::JsonLines } else { follow_mode() };
        let seen = follow::follow(api, id, mode).await?;
        return Ok(exit_for(&seen));
    }
    let events = api.events(id, 0, std::time::Duration::ZERO).await?;
    let mut p = Progress::new(id);
    let stdout = io::stdout();
    let mut out = stdout.lock();
    for event in &events {
        if json {
            writeln!(out, "{event}")?;
        } else if p.apply(event) {
            for l in render::event_lines(event, &p) {
                writeln!(out, "{l}")?;
            }
        }
    }
    out.flush()?;
    Ok(EXIT_OK)
}

async fn runs(
    api: &Api,
    status: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
    json: bool,
) -> Result<u8, CliError> {
    let mut query = Vec::new();
    if let Some(s) = status {
        query.push(("status", s));
    }
    if let Some(l) = limit {
        query.push(("limit", l.to_string()));
    }
    if let Some(c) = cursor {
        query.push(("cursor", c));
    }
    let page = api.get(&["runs"], &query).await?;
    if json {
        print_json(&page)?;
        return Ok(EXIT_OK);
    }
    for run in page["runs"].as_array().into_iter().flatten() {
        let created = time(&run["created_at"])
            .map(|t| {
                t.with_timezone(&Local)
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string()
            })
            .unwrap_or_default();
        line(&format!(
            "{}  {:<19}  {created}  {}",
            run["run_id"].as_str().unwrap_or_default(),
            run["status"].as_str().unwrap_or_default(),
            clip(run["prompt"].as_str().unwrap_or_default(), 60)
        ))?;
    }
    more(&page, "runs")
}

/// Say how to get the next page, on stderr so the listing stays clean.
fn more(page: &Value, command: &str) -> Result<u8, CliError> {
    if let Some(next) = page["next_cursor"].as_str() {
        note(&format!("more: crane {command} --cursor {next}"));
    }
    Ok(EXIT_OK)
}

async fn cancel(api: &Api, id: &str, json: bool) -> Result<u8, CliError> {
    let run = api.post(&["runs", id, "cancel"], None, &[]).await?;
    if json {
        print_json(&run)?;
    } else {
        line(&format!(
            "cancel requested: run {id} is {}",
            run["status"].as_str().unwrap_or("unknown")
        ))?;
    }
    Ok(EXIT_OK)
}

/// `approve` or `reject` a step waiting for approval.
async fn decide(
    api: &Api,
    run_id: &str,
    step_id: &str,
    verb: &str,
    comment: Option<String>,
    json: bool,
) -> Result<u8, CliError> {
    let body = match comment {
        Some(c) => json!({ "comment": c }),
        None => json!({}),
    };
    let answer = api
        .post(&["runs", run_id, "steps", step_id, verb], Some(&body), &[])
        .await?;
    if json {
        print_json(&answer)?;
    } else {
        let done = if verb == "approve" {
            "approved"
        } else {
            "rejected"
        };
        let status = answer["status"]
            .as_str()
            .filter(|_| answer["run_id"].is_string())
            .map(|s| format!("; the run is {s}"))
            .unwrap_or_default();
        line(&format!("{done} step {step_id} of run {run_id}{status}"))?;
    }
    Ok(EXIT_OK)
}

async fn todos(
    api: &Api,
    limit: Option<u32>,
    cursor: Option<String>,
    json: bool,
) -> Result<u8, CliError> {
    let mut query = Vec::new();
    if let Some(l) = limit {
        query.push(("limit", l.to_string()));
    }
    if let Some(c) = cursor {
        query.push(("cursor", c));
    }
    let page = api.get(&["todos"], &query).await?;
    if json {
        print_json(&page)?;
        return Ok(EXIT_OK);
    }
    for todo in page["todos"].as_array().into_iter().flatten() {
        let done = if todo["done"].as_bool().unwrap_or(false) {
            "x"
        } else {
            " "
        };
        line(&format!(
            "{:>4}  [{done}]  {}",
            todo["id"],
            clip(todo["title"].as_str().unwrap_or_default(), 200)
        ))?;
    }
    more(&page, "todos")
}

async fn tools(api: &Api, json: bool) -> Result<u8, CliError> {
    let list = api.get(&["tools"], &[]).await?;
    if json {
        print_json(&list)?;
        return Ok(EXIT_OK);
    }
    let tools = list["tools"].as_array().cloned().unwrap_or_default();
    let width = tools
        .iter()
        .filter_map(|t| t["name"].as_str())
        .map(str::len)
        .max()
        .unwrap_or(0);
    for tool in &tools {
        let breaker = &tool["breaker"];
        let state = breaker["state"].as_str().unwrap_or("unknown");
        let until = time(&breaker["until"])
            .map(|t| format!(" until {}", t.with_timezone(&Local).format("%H:%M:%S")))
            .unwrap_or_default();
        line(&format!(
            "{:<width$}  breaker {state}{until}  {}",
            tool["name"].as_str().unwrap_or_default(),
            clip(tool["description"].as_str().unwrap_or_default(), 100)
        ))?;
    }
    Ok(EXIT_OK)
}

async fn health(api: &Api, json: bool) -> Result<u8, CliError> {
    let (status, body) = api.get_any(&["health"]).await?;
    if json {
        print_json(&body)?;
    } else {
        let planner = &body["planner"];
        let reason = planner["reason"]
            .as_str()
            .map(|r| format!(" ({})", clip(r, 100)))
            .unwrap_or_default();
        line(&format!(
            "{} · version {} · store {} · planner {} {}{reason}",
            body["status"].as_str().unwrap_or("unknown"),
            body["version"].as_str().unwrap_or("?"),
            body["store"].as_str().unwrap_or("unknown"),
            planner["name"].as_str().unwrap_or("?"),
            planner["status"].as_str().unwrap_or("unknown"),
        ))?;
    }
    Ok(if status < 400 { EXIT_OK } else { EXIT_FAILED })
}

fn line(text: &str) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")?;
    Ok(())
}

fn print_json(value: &Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    line(&text)
}

/// A hint for people, on stderr; never fails the command.
fn note(text: &str) {
    let _ = writeln!(io::stderr(), "{text}");
}
