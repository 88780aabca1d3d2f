//! Running the jobs of one run together, level after level: the cloud step worker's fast
//! path.
//!
//! A message on the step queue may carry several steps of one run (a DAG level). The
//! worker claims all of them in one append, runs their tools at the same time, and then
//! makes one append of their outcomes together with the claims of the steps those
//! outcomes made ready, which it runs itself. So the next level starts one append after
//! the last step of the current one completed, with no queue or stream hop, for as long
//! as the invocation has time left ([`WaveLimits::inline_until`]). Whatever it does not
//! run itself (a retry after its backoff, an approval's expiry timer, a level past the
//! time limit) comes back in [`JobsReport::send`], for the queue.
//!
//! The guarantees of [`App::process_job`] hold: every append is optimistic, so only one
//! worker runs an attempt and duplicate deliveries are harmless; appends made here tell
//! the store that this worker sends their jobs itself, so the stream reactor does not see
//! them unless they change the run's status or call for a saga. If the worker stops before
//! sending or running what came next, its message is delivered again; a delivery after
//! the first ([`WaveLimits::resume`]) also resumes every unfinished step of the run
//! ([`engine::resume_jobs`]), which is how nothing a crashed worker held is left behind.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use tracing::{debug, info, warn};

use super::worker::{contention, Gate};
use super::{App, AppError, JobResult, MAX_CONFLICTS};
use crate::domain::{Effect, Event, EventRecord, Output, RunState, StepJob, ToolError};
use crate::engine::{self, Claim, Deferral};
use crate::ports::StoreError;

/// How far a worker may go on its own.
#[derive(Debug, Clone, Copy, Default)]
pub struct WaveLimits {
    /// Run the steps the outcomes make ready here only if their tools can finish (the step
    /// timeout and the lease margin) before this instant; `None`: never, send them.
    pub inline_until: Option<Instant>,
    /// The jobs were delivered before (their holder may have crashed): also resume every
    /// unfinished step of the run.
    pub resume: bool,
}

/// What became of a batch of one run's jobs.
#[derive(Debug, Clone, Default)]
pub struct JobsReport {
    /// What became of each job handed in, in the same order.
    pub results: Vec<JobResult>,
    /// Jobs for the queue, each with its delay in milliseconds: steps made ready or due
    /// for a retry that this worker did not run itself.
    pub send: Vec<(StepJob, u64)>,
    /// The records appended that the stream reactor will not see (they are left out of
    /// its stream), for the worker's own metrics.
    pub unseen: Vec<EventRecord>,
    /// The run after the last append, when there was one.
    pub state: Option<RunState>,
}

/// A tool call that came back.
struct Finished {
    step_id: String,
    attempt: u32,
    result: Result<Output, ToolError>,
    duration_ms: u64,
    sample: f64,
}

/// What a job of the wave came to, applied once the append holding it is committed.
enum Settled {
    /// Nothing more to do for it.
    Done,
    /// Deliver it again then.
    At(DateTime<Utc>),
    /// Claimed: call its tool (`trial`: under a half-open breaker's trial slot; `clean`:
    /// its breaker had counted no failures).
    Call {
        attempt: u32,
        trial: bool,
        clean: bool,
    },
}

/// A job of the wave: its index among the jobs handed in (`None` for a job this worker
/// took on itself) and the job.
type WaveJob = (Option<usize>, StepJob);

impl App {
    /// Process `jobs`, all of one run (see the module docs). The caller sends
    /// [`JobsReport::send`] and re-sends the jobs whose result is [`JobResult::RetryAt`].
    pub async fn process_jobs(
        &self,
        jobs: &[StepJob],
        limits: WaveLimits,
    ) -> Result<JobsReport, AppError> {
        let mut report = JobsReport {
            results: vec![JobResult::Done; jobs.len()],
            ..JobsReport::default()
        };
        let Some(first) = jobs.first() else {
            return Ok(report);
        };
        let key = first.key();
        if let Some(other) = jobs.iter().find(|j| j.key() != key) {
            return Err(AppError::Store(StoreError::Invalid(format!(
                "jobs of runs {} and {} handed in together",
                key.run_id, other.run_id
            ))));
        }
        let Some(mut state) = self.load_state(&key).await? else {
            debug!(run_id = %key.run_id, "jobs for an unknown run: dropped");
            return Ok(report);
        };
        let mut wave: Vec<WaveJob> = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            if !wave.iter().any(|(_, j)| same_step(j, job)) {
                wave.push((Some(i), job.clone()));
            }
        }
        if limits.resume {
            for job in engine::resume_jobs(&state) {
                if !wave.iter().any(|(_, j)| j.step_id == job.step_id) {
                    info!(run_id = %key.run_id, step_id = %job.step_id, attempt = job.attempt, "resuming a step after a redelivery");
                    wave.push((None, job));
                }
            }
        }
        // Asked once per job, before its claim: a refused call must not use up an attempt.
        let mut gates: HashMap<String, (String, Gate)> = HashMap::new();
        // Tools whose breaker admitted a call without a trial, and whether it was clean.
        let mut open_tools: HashMap<String, bool> = HashMap::new();
        let mut finished: Vec<Finished> = Vec::new();
        let mut conflicts = 0;
        loop {
            let now = self.now();
            // The outcomes of the calls that came back...
            let mut events: Vec<Event> = Vec::new();
            let mut ahead = engine::Lookahead::new(&state);
            for f in &finished {
                let sim = ahead.at(&events);
                match engine::outcome(
                    sim,
                    &f.step_id,
                    f.attempt,
                    f.result.clone(),
                    f.duration_ms,
                    &self.settings.retry,
                    f.sample,
                ) {
                    Ok(outcome) => events.extend(outcome),
                    Err(stale) => warn!(step_id = %f.step_id, reason = %stale.0, "outcome dropped"),
                }
            }
            // ...make the next level ready: take it on here while there is time.
            if !finished.is_empty() && self.may_run_inline(&limits) {
                let records = engine::records(&state, now, events.clone());
                let sim = ahead.at(&events);
                for effect in engine::react(sim, &records, &self.registry) {
                    if let Effect::Dispatch { job, delay_ms: 0 } = effect {
                        if !wave.iter().any(|(_, j)| same_step(j, &job)) {
                            wave.push((None, job));
                        }
                    }
                }
            }
            // The claims of the wave, in the same append.
            let mut settled: Vec<Settled> = Vec::with_capacity(wave.len());
            for (_, job) in &wave {
                let sim = ahead.at(&events);
                let decision = engine::claim(
                    sim,
                    &job.step_id,
                    job.attempt,
                    now,
                    &self.settings.retry,
                    self.settings.lease_ms(),
                    self.settings.void_leases_before,
                );
                settled.push(match decision {
                    Claim::Skip(reason) => {
                        debug!(step_id = %job.step_id, attempt = job.attempt, %reason, "nothing to do");
                        Settled::Done
                    }
                    Claim::Later(at) => Settled::At(at),
                    Claim::Record(recorded) => {
                        events.extend(recorded);
                        Settled::Done
                    }
                    Claim::Start {
                        attempt,
                        events: mut claim,
                    } => {
                        let tool = sim
                            .step(&job.step_id)
                            .map(|s| s.tool.clone())
                            .unwrap_or_default();
                        if !gates.contains_key(&job.step_id) {
                            // A tool whose breaker let a call through without a trial is
                            // asked once per batch, not once per step.
                            let gate = match open_tools.get(&tool) {
                                Some(clean) => Gate::Open {
                                    trial: false,
                                    clean: *clean,
                                },
                                None => self.gate(&tool).await,
                            };
                            if let Gate::Open { trial: false, clean } = gate {
                                open_tools.insert(tool.clone(), clean);
                            }
                            gates.insert(job.step_id.clone(), (tool, gate));
                        }
                        match gates.get(&job.step_id) {
                            Some((_, Gate::Closed { until, reason })) => {
                                claim.pop();
                                let before = engine::simulate(sim, &claim);
                                let (deferral, at) = match engine::defer(
                                    &before,
                                    &job.step_id,
                                    attempt,
                                    reason,
                                    *until,
                                    now,
                                    self.settings.step_deadline_ms,
                                ) {
                                    Deferral::Wait { events, until } => (events, Some(until)),
                                    Deferral::GiveUp(events) => (events, None),
                                };
                                events.extend(claim);
                                events.extend(deferral);
                                at.map_or(Settled::Done, Settled::At)
                            }
                            Some((_, Gate::Open { trial, clean })) => {
                                events.extend(claim);
                                Settled::Call {
                                    attempt,
                                    trial: *trial,
                                    clean: *clean,
                                }
                            }
                            None => Settled::Done,
                        }
                    }
                });
            }
            if events.is_empty() {
                self.settle(&mut report, &wave, &settled, now);
                self.release_unused(&gates, &[]).await;
                break;
            }
            let committed = match self.commit_as(&state, events, true).await {
                Ok(c) => c,
                Err(StoreError::Conflict(_)) => {
                    conflicts += 1;
                    if conflicts >= MAX_CONFLICTS {
                        self.release_unused(&gates, &[]).await;
                        return Err(contention());
                    }
                    match self.load_state(&key).await? {
                        Some(s) => state = s,
                        None => return Ok(report),
                    }
                    continue;
                }
                Err(e) => {
                    self.release_unused(&gates, &[]).await;
                    return Err(e.into());
                }
            };
            conflicts = 0;
            state = committed.state;
            if !committed.wake {
                report.unseen.extend(committed.records);
            }
            for effect in committed.effects {
                if let Effect::Dispatch { job, delay_ms } = effect {
                    report.send.push((job, delay_ms));
                }
            }
            self.settle(&mut report, &wave, &settled, now);
            // Call the tools of the steps just claimed, all at once.
            let calls: Vec<_> = wave
                .iter()
                .zip(&settled)
                .filter_map(|((_, job), s)| match s {
                    Settled::Call {
                        attempt,
                        trial,
                        clean,
                    } => Some((job.step_id.clone(), *attempt, *trial, *clean)),
                    _ => None,
                })
                .collect();
            let called: Vec<String> = calls.iter().map(|(s, _, _, _)| s.clone()).collect();
            let state_now = &state;
            finished = futures::future::join_all(calls.into_iter().map(
                |(step_id, attempt, trial, clean)| async move {
                    let started = Instant::now();
                    let result = self
                        .call_tool(state_now, &step_id, attempt, trial, clean)
                        .await;
                    let duration_ms = started.elapsed().as_millis() as u64;
                    let tool = state_now
                        .step(&step_id)
                        .map(|s| s.tool.clone())
                        .unwrap_or_default();
                    match &result {
                        Ok(_) => info!(%step_id, tool = %tool, attempt, duration_ms, "step attempt succeeded"),
                        Err(e) => warn!(%step_id, tool = %tool, attempt, duration_ms, error = %e.message, kind = ?e.kind, "step attempt failed"),
                    }
                    Finished {
                        step_id,
                        attempt,
                        result,
                        duration_ms,
                        sample: rand::rng().random(),
                    }
                },
            ))
            .await;
            self.release_unused(&gates, &called).await;
            gates.clear();
            // A failure may have moved a breaker: ask it again next time.
            for f in &finished {
                if f.result.is_err() {
                    if let Some(step) = state.step(&f.step_id) {
                        open_tools.remove(&step.tool);
                    }
                }
            }
            wave.clear();
            if finished.is_empty() {
                break;
            }
        }
        if state.status.is_finished() {
            info!(run_id = %key.run_id, status = state.status.as_str(), "run finished");
        }
        report.state = Some(state);
        Ok(report)
    }

    /// Whether a step made ready now may run in this invocation.
    fn may_run_inline(&self, limits: &WaveLimits) -> bool {
        let needs = Duration::from_millis(self.settings.lease_ms());
        limits
            .inline_until
            .is_some_and(|until| Instant::now() + needs < until)
    }

    /// Record what became of the wave's jobs: a job handed in gets its result; a job taken
    /// on here that must wait goes to the queue.
    fn settle(
        &self,
        report: &mut JobsReport,
        wave: &[WaveJob],
        settled: &[Settled],
        now: DateTime<Utc>,
    ) {
        for ((index, job), s) in wave.iter().zip(settled) {
            let Settled::At(at) = s else {
                continue;
            };
            match index {
                Some(i) => {
                    if let Some(r) = report.results.get_mut(*i) {
                        *r = JobResult::RetryAt(*at);
                    }
                }
                None => {
                    let delay_ms = u64::try_from((*at - now).num_milliseconds()).unwrap_or(0);
                    report.send.push((job.clone(), delay_ms));
                }
            }
        }
    }

    /// Give back the half-open trial slots taken for jobs whose tool was not called.
    async fn release_unused(&self, gates: &HashMap<String, (String, Gate)>, called: &[String]) {
        for (step, (tool, gate)) in gates {
            if matches!(gate, Gate::Open { trial: true, .. }) && !called.contains(step) {
                self.release_trial(tool).await;
            }
        }
    }
}

/// Whether two jobs are the same attempt of the same step.
fn same_step(a: &StepJob, b: &StepJob) -> bool {
    a.step_id == b.step_id && a.attempt == b.attempt
}
