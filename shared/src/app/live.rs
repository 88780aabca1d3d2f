//! Watching runs: events past a sequence number, waiting for them up to a deadline, and
//! waiting for a run to settle (`Prefer: wait`).
//!
//! Invariant: a waiter never reads the store while nothing happens. With a store that
//! signals its appends in process (the embedded store), the waiter watches the run
//! *before* reading it, reads once, then sleeps until an append to that run commits or the
//! deadline passes. A store without signals (DynamoDB on Lambda, where other processes
//! write) is polled with a backoff from [`POLL_FIRST`] to [`POLL_MAX`].

use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

use super::{App, AppError, Refusal};
use crate::domain::{fold, EventRecord, RunKey, RunState, RunStatus, StepStatus};
use crate::engine::saga;
use crate::ports::{LogWatch, WatchError};
use crate::tools::Registry;

/// Longest `GET /runs/{id}/events?wait=` (fits API Gateway's 30 s integration limit).
pub const MAX_EVENTS_WAIT: Duration = Duration::from_secs(20);
/// Longest `Prefer: wait=` of `POST /runs` and `GET /runs/{id}`.
pub const MAX_PREFER_WAIT: Duration = Duration::from_secs(25);
/// Every wait of a request ends this long after the request arrived at the latest, so
/// that a `POST /runs` whose planning took long still answers within API Gateway's 30 s.
pub const REQUEST_BUDGET: Duration = Duration::from_secs(27);
/// First pause of a waiter polling a store without signals.
pub const POLL_FIRST: Duration = Duration::from_millis(100);
/// Longest pause of a waiter polling a store without signals.
pub const POLL_MAX: Duration = Duration::from_secs(1);

/// Events of a run after a sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct EventsAfter {
    /// The events with a sequence number above the one asked for, in order (empty when none came).
    pub events: Vec<EventRecord>,
    /// The run has settled: no event follows unless an operator asks for more.
    pub settled: bool,
}

/// Whether `state` is settled: a final status nothing will move on from by itself
/// (`completed`, `compensated`, `compensation_failed`, `cancelled`, or `failed` with no
/// step running and nothing to compensate).
pub fn is_settled(state: &RunState, registry: &Registry) -> bool {
    match state.status {
        RunStatus::Completed
        | RunStatus::Compensated
        | RunStatus::CompensationFailed
        | RunStatus::Cancelled => true,
        RunStatus::Failed => {
            !state.steps.iter().any(|s| s.status == StepStatus::Running)
                && saga::compensation_order(state, registry).is_empty()
        }
        RunStatus::Pending | RunStatus::Running | RunStatus::Compensating => false,
    }
}

/// Sleeps between reads of one run until a deadline: on the store's signals, or polling.
pub struct Waiter {
    watch: Option<Box<dyn LogWatch>>,
    deadline: Instant,
    pause: Duration,
}

impl Waiter {
    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Sleep until the run may have changed, or the deadline; false once it has passed.
    pub async fn wait(&mut self) -> bool {
        if self.expired() {
            return false;
        }
        match &mut self.watch {
            Some(watch) => {
                match tokio::time::timeout_at(self.deadline, watch.changed()).await {
                    Ok(true) => {}
                    // No more signals (shutting down): answer with what there is.
                    Ok(false) | Err(_) => return false,
                }
            }
            None => {
                let until = (Instant::now() + self.pause).min(self.deadline);
                tokio::time::sleep_until(until).await;
                self.pause = (self.pause * 2).min(POLL_MAX);
            }
        }
        true
    }
}

fn too_many(e: WatchError) -> AppError {
    AppError::Refused {
        why: Refusal::TooManyWatchers,
        message: format!("{e}; retry later"),
    }
}

impl App {
    /// Start waiting on `key` until `wait` from now. Take it before reading the run.
    pub fn waiter(&self, key: &RunKey, wait: Duration) -> Result<Waiter, AppError> {
        let watch = if wait.is_zero() {
            None
        } else {
            match self.events.signals() {
                Some(signals) => Some(signals.watch(key).map_err(too_many)?),
                None => None,
            }
        };
        Ok(Waiter {
            watch,
            deadline: Instant::now() + wait,
            pause: POLL_FIRST,
        })
    }

    /// The run's events with a sequence number above `after`, and whether it has settled.
    /// `None` if the run does not exist.
    pub async fn read_after(
        &self,
        key: &RunKey,
        after: u64,
    ) -> Result<Option<EventsAfter>, AppError> {
        let events = self.events.load(key).await?;
        if events.is_empty() {
            return Ok(None);
        }
        // The log is served even if it cannot be folded (it is the audit trail); such a
        // run just never counts as settled.
        let settled = match fold(&key.run_id, &events) {
            Ok(state) => is_settled(&state, &self.registry),
            Err(e) => {
                warn!(run_id = %key.run_id, error = %e, "the run's log does not fold");
                false
            }
        };
        Ok(Some(EventsAfter {
            events: events.into_iter().filter(|e| e.seq > after).collect(),
            settled,
        }))
    }

    /// `GET /runs/{id}/events?after=&wait=`: the events after `after`, as soon as there is
    /// one, or none once `wait` has passed (at once if the run has settled).
    pub async fn events_after(
        &self,
        key: &RunKey,
        after: u64,
        wait: Duration,
    ) -> Result<EventsAfter, AppError> {
        let mut waiter = self.waiter(key, wait)?;
        loop {
            let page = self
                .read_after(key, after)
                .await?
                .ok_or_else(|| AppError::NotFound(format!("run {} not found", key.run_id)))?;
            if !page.events.is_empty() || page.settled || !waiter.wait().await {
                return Ok(page);
            }
        }
    }

    /// `Prefer: wait=`: the run once it has settled, or as it is when `wait` has passed.
    /// The flag says whether it has settled.
    pub async fn await_settled(
        &self,
        key: &RunKey,
        wait: Duration,
    ) -> Result<(RunState, bool), AppError> {
        let mut waiter = self.waiter(key, wait)?;
        loop {
            let run = self.get_run(key).await?;
            let settled = is_settled(&run, &self.registry);
            if settled || !waiter.wait().await {
                return Ok((run, settled));
            }
        }
    }
}
