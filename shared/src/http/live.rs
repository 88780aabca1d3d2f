//! Watching runs over HTTP: the long-poll of `GET /runs/{id}/events?after=&wait=`, the
//! Server-Sent Events of `GET /runs/{id}/stream`, and `Prefer: wait=N` (RFC 7240) on
//! `POST /runs` and `GET /runs/{id}`.
//!
//! The waiting itself is [`crate::app::live`]: on the embedded store a waiter sleeps on the
//! store's append signals (no reads while nothing happens); on AWS it polls with a backoff.
//! The stream needs those signals, so it is served only where the store has them
//! (`crane-local`); elsewhere it answers `404 streaming_unavailable`.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tracing::warn;

use super::{path_id, query_of, run_key, truncate, ApiError, ErrorCode};
use crate::app::live::{EventsAfter, MAX_EVENTS_WAIT, MAX_PREFER_WAIT, REQUEST_BUDGET};
use crate::app::App;
use crate::domain::{EventRecord, RunKey, RunState};
use crate::ports::LogWatch;

use super::Tenant;

/// How often an idle stream sends a keep-alive comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `after=`: a sequence number, 0 (the default) for the whole log.
fn after_of(q: &HashMap<String, String>) -> Result<u64, ApiError> {
    match q.get("after") {
        None => Ok(0),
        Some(a) => seq_of(a).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidAfter,
                format!(
                    "after={} is not a sequence number (an integer from 0)",
                    truncate(a)
                ),
            )
        }),
    }
}

fn seq_of(s: &str) -> Option<u64> {
    let t = s.trim();
    (!t.is_empty() && t.len() <= 19 && t.bytes().all(|b| b.is_ascii_digit()))
        .then(|| t.parse().ok())
        .flatten()
}

/// `wait=`: whole seconds from 0 to [`MAX_EVENTS_WAIT`]; 0 (the default) answers at once.
fn wait_of(q: &HashMap<String, String>) -> Result<Duration, ApiError> {
    let Some(w) = q.get("wait") else {
        return Ok(Duration::ZERO);
    };
    let max = MAX_EVENTS_WAIT.as_secs();
    match seq_of(w) {
        Some(s) if s <= max => Ok(Duration::from_secs(s)),
        _ => Err(ApiError::new(
            ErrorCode::InvalidWait,
            format!(
                "wait={} is not a number of seconds from 0 to {max}",
                truncate(w)
            ),
        )),
    }
}

/// `GET /runs/{id}/events?after=&wait=`.
pub(super) async fn run_events(
    State(app): State<Arc<App>>,
    tenant: Tenant,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let key = run_key(tenant, &path_id(path)?)?;
    let q = query_of(query)?;
    let after = after_of(&q)?;
    let wait = wait_of(&q)?;
    let page = app.events_after(&key, after, wait).await?;
    Ok(Json(json!({"run_id": key.run_id, "events": page.events})).into_response())
}

/// The `wait` preference of a request (`Prefer: wait=N`, RFC 7240), capped at
/// [`MAX_PREFER_WAIT`]. Other preferences are ignored; a `wait` that is not a whole
/// number of seconds is a 400.
pub(super) fn prefer_wait(headers: &HeaderMap) -> Result<Option<Duration>, ApiError> {
    let mut wait = None;
    for value in headers.get_all("prefer") {
        let bad = || {
            ApiError::new(
                ErrorCode::InvalidPrefer,
                "Prefer must be visible ASCII, e.g. 'Prefer: wait=10'",
            )
        };
        let value = value.to_str().map_err(|_| bad())?;
        for pref in value.split(',') {
            let token = pref.split(';').next().unwrap_or_default().trim();
            let (name, val) = token.split_once('=').unwrap_or((token, ""));
            if !name.trim().eq_ignore_ascii_case("wait") {
                continue;
            }
            let val = val.trim().trim_matches('"');
            let secs = seq_of(val).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidPrefer,
                    format!(
                        "Prefer: wait={} is not a whole number of seconds",
                        truncate(val)
                    ),
                )
            })?;
            wait = Some(Duration::from_secs(secs).min(MAX_PREFER_WAIT));
        }
    }
    Ok(wait)
}

/// Answer with `run` after waiting up to `wait` for it to settle: `settled_status` and
/// `Preference-Applied: wait=N` when it settled, `pending_status` without that header
/// when the wait ran out first (or could not be applied: no watcher slot, a store error).
/// The wait runs out [`REQUEST_BUDGET`] after `arrived` at the latest.
pub(super) async fn settled_response(
    app: &App,
    run: RunState,
    (wait, arrived): (Duration, Instant),
    settled_status: StatusCode,
    pending_status: StatusCode,
) -> Response {
    let key = RunKey::new(&run.tenant, &run.run_id);
    let budget = REQUEST_BUDGET.saturating_sub(arrived.elapsed());
    let (run, settled) = if crate::app::live::is_settled(&run, &app.registry) {
        (run, true)
    } else {
        match app.await_settled(&key, wait.min(budget)).await {
            Ok(waited) => waited,
            // The run exists (a POST has just created it): answer with it as it is rather
            // than fail a request whose work is done, even with no watcher slot free.
            Err(e) => {
                warn!(run_id = %key.run_id, error = %e, "Prefer: wait not applied");
                (run, false)
            }
        }
    };
    let status = if settled {
        settled_status
    } else {
        pending_status
    };
    let mut resp = (status, Json(&run)).into_response();
    if settled {
        if let Ok(v) = HeaderValue::from_str(&format!("wait={}", wait.as_secs())) {
            resp.headers_mut().insert("preference-applied", v);
        }
    }
    resp.headers_mut()
        .insert("vary", HeaderValue::from_static("Prefer"));
    resp
}

/// Where a stream resumes: `Last-Event-ID` (a reconnecting `EventSource`), else `after=`.
fn resume_after(headers: &HeaderMap, q: &HashMap<String, String>) -> Result<u64, ApiError> {
    match headers.get("last-event-id") {
        None => after_of(q),
        Some(v) => v.to_str().ok().and_then(seq_of).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidLastEventId,
                "Last-Event-ID must be the sequence number of an event",
            )
        }),
    }
}

/// `GET /runs/{id}/stream`: Server-Sent Events, one per event of the run after
/// `Last-Event-ID` (or `after=`), ending after the run has settled.
pub(super) async fn stream(
    State(app): State<Arc<App>>,
    tenant: Tenant,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = run_key(tenant, &path_id(path)?)?;
    let q = query_of(query)?;
    let after = resume_after(&headers, &q)?;
    let Some(signals) = app.events.signals() else {
        return Err(ApiError::new(
            ErrorCode::StreamingUnavailable,
            "this deployment does not stream; long-poll GET /runs/{id}/events?after=&wait= instead",
        ));
    };
    let watch = signals.watch(&key).map_err(|e| {
        ApiError::from(crate::app::AppError::Refused {
            why: crate::app::Refusal::TooManyWatchers,
            message: format!("{e}; retry later"),
        })
    })?;
    // Watch first, then read: no append between the two is missed.
    let first = app
        .read_after(&key, after)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {} not found", key.run_id)))?;
    let state = Streaming {
        app,
        key,
        watch,
        after,
        pending: VecDeque::new(),
        done: false,
    }
    .with(first);
    let events = futures::stream::unfold(state, Streaming::next);
    let mut resp = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // Ask proxies (nginx) not to buffer the stream.
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

/// The state of one stream: what is read but not sent, and where to read from next.
struct Streaming {
    app: Arc<App>,
    key: RunKey,
    watch: Box<dyn LogWatch>,
    after: u64,
    pending: VecDeque<EventRecord>,
    /// The run had settled when last read: end once `pending` is sent.
    done: bool,
}

impl Streaming {
    fn with(mut self, page: EventsAfter) -> Self {
        if let Some(last) = page.events.last() {
            self.after = last.seq;
        }
        self.pending.extend(page.events);
        self.done = page.settled;
        self
    }

    async fn next(mut self) -> Option<(Result<SseEvent, Infallible>, Self)> {
        loop {
            if let Some(rec) = self.pending.pop_front() {
                return Some((Ok(sse_event(&rec)), self));
            }
            if self.done {
                return None;
            }
            if !self.watch.changed().await {
                // Shutting down: end the stream; the client resumes with Last-Event-ID.
                return None;
            }
            match self.app.read_after(&self.key, self.after).await {
                Ok(Some(page)) => self = self.with(page),
                Ok(None) => return None,
                Err(e) => {
                    // The client reconnects with Last-Event-ID and resumes.
                    warn!(run_id = %self.key.run_id, error = %e, "event stream ended on a read error");
                    return None;
                }
            }
        }
    }
}

/// One SSE event: `id` = seq, `event` = type, `data` = the event as `GET .../events` shows it.
fn sse_event(rec: &EventRecord) -> SseEvent {
    let data = serde_json::to_string(rec).unwrap_or_else(|_| "{}".to_owned());
    SseEvent::default()
        .id(rec.seq.to_string())
        .event(rec.event.type_name())
        .data(data)
}
