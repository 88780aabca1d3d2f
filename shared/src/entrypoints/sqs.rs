//! The step-worker function: an SQS batch of step jobs in, a partial batch response out.
//!
//! Each message body is a JSON [`StepJob`], or a list of the jobs of one run (a DAG level).
//! The jobs of one run are processed together, and the levels they make ready run in the
//! same invocation ([`App::process_jobs`]). A job that ran (or had nothing to do) is
//! acknowledged; a job that must wait (a retry's backoff, another worker's lease) is sent
//! back to the queue with the remaining delay and acknowledged, so no Lambda is billed for
//! waiting; a job that failed, or a body that is not a job, is reported as a batch item
//! failure so SQS delivers it again (and, after `maxReceiveCount`, to the DLQ). A message
//! is acknowledged only once everything that followed from it was appended and sent, so a
//! worker that stops half-way leaves its message to be delivered again, and that delivery
//! resumes the run where it stopped.
//!
//! A job that failed for an infrastructure reason (the store throttling, timing out or
//! unreachable, too much contention) would wait out the queue's whole visibility timeout
//! (360 s) before its next delivery. Its visibility is shortened first, with backoff on its
//! `ApproximateReceiveCount` ([`redelivery_secs`]: about 5 s, 20 s, 80 s, then 300 s), so
//! a hiccup delays a run by seconds.

use std::time::Instant;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures::StreamExt;
use rand::Rng;
use tracing::{error, info_span, warn, Instrument};

use super::metrics;
use crate::app::{App, AppError, JobResult, JobsReport, WaveLimits};
use crate::domain::StepJob;
use crate::ports::{Redelivery, StepDispatcher, StoreError};

/// Jobs of one batch run at the same time.
pub const CONCURRENCY: usize = 10;
/// SQS refuses longer message delays; a job deferred further comes back early and is
/// deferred again.
pub const MAX_DELAY_MS: u64 = 900_000;

/// Redelivery delay after the first infrastructure failure of a message, in seconds.
pub const REDELIVERY_BASE_SECS: u32 = 5;
/// Each further receive waits this many times longer.
pub const REDELIVERY_FACTOR: u32 = 4;
/// The longest shortened wait; below the step queue's 360 s visibility timeout.
pub const REDELIVERY_MAX_SECS: u32 = 300;

/// How long a message received `receive_count` times (1 on its first delivery) stays
/// invisible after an infrastructure failure: `REDELIVERY_BASE_SECS` x
/// `REDELIVERY_FACTOR`^(receive_count - 1), at most `REDELIVERY_MAX_SECS`, then between
/// half and all of that (`jitter` in [0, 1)) so failed messages do not return together.
pub fn redelivery_secs(receive_count: u32, jitter: f64) -> u32 {
    let exponent = receive_count.saturating_sub(1).min(16);
    let nominal = REDELIVERY_FACTOR
        .checked_pow(exponent)
        .and_then(|f| f.checked_mul(REDELIVERY_BASE_SECS))
        .map_or(REDELIVERY_MAX_SECS, |d| d.min(REDELIVERY_MAX_SECS));
    let jittered = f64::from(nominal) * (0.5 + 0.5 * jitter.clamp(0.0, 1.0));
    (jittered.round() as u32).clamp(1, nominal)
}

/// Whether a failed job failed because of the infrastructure under it (worth an early
/// retry), not because of the job.
fn is_infrastructure(e: &AppError) -> bool {
    matches!(
        e,
        AppError::Store(StoreError::Unavailable { .. } | StoreError::Conflict(_))
    )
}

/// Time kept back from the invocation's deadline for appending and sending what is left.
pub const DEADLINE_MARGIN_MS: u64 = 2_000;

/// Until when a handler whose invocation must end by `deadline_ms` (milliseconds since the
/// Unix epoch: the Lambda context's deadline) may run further steps itself; `None` if the
/// deadline leaves no time or cannot be read.
pub fn inline_until(deadline_ms: u64) -> Option<Instant> {
    let now_ms = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_millis(),
    )
    .ok()?;
    let left = deadline_ms
        .checked_sub(now_ms)?
        .checked_sub(DEADLINE_MARGIN_MS)?;
    Some(Instant::now() + std::time::Duration::from_millis(left))
}

/// A message body: one job, or several jobs of one run (a DAG level, see
/// [`crate::adapters::aws::SqsDispatcher`]).
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Body {
    One(StepJob),
    Many(Vec<StepJob>),
}

/// The jobs in a message body; `None` if it is not a job or a non-empty list of jobs.
pub fn decode_body(body: &str) -> Option<Vec<StepJob>> {
    match serde_json::from_str(body).ok()? {
        Body::One(job) => Some(vec![job]),
        Body::Many(jobs) if !jobs.is_empty() => Some(jobs),
        Body::Many(_) => None,
    }
}

/// A message of the batch and what became of it.
struct Message {
    id: String,
    receipt_handle: Option<String>,
    receive_count: u32,
    /// Its jobs, or `None` when the body is not a job.
    jobs: Option<Vec<StepJob>>,
    outcome: Outcome,
}

#[derive(Clone, Copy, PartialEq)]
enum Outcome {
    Done,
    /// Deliver it again after the queue's visibility timeout.
    Failed,
    /// Failed for an infrastructure reason: shorten its visibility, then report it.
    Hiccup,
}

/// The jobs of one run in the batch, with the messages they came in.
struct Group {
    jobs: Vec<StepJob>,
    /// For each job, the index of its message.
    messages: Vec<usize>,
    /// A message of the group was delivered before.
    redelivered: bool,
}

/// Run a batch of step jobs; report the messages that must be delivered again (those
/// that failed for an infrastructure reason made visible again soon through
/// `redelivery`). The jobs of one run are processed together ([`App::process_jobs`]): a
/// level's steps are claimed in one append and the levels they make ready run here while
/// `inline_until` leaves time for them (the handler's deadline; `None`: send them).
pub async fn handle_step_batch(
    app: &App,
    dispatcher: &dyn StepDispatcher,
    redelivery: &dyn Redelivery,
    event: SqsEvent,
    inline_until: Option<Instant>,
) -> SqsBatchResponse {
    let mut messages: Vec<Message> = event.records.into_iter().map(message).collect();
    let mut groups: Vec<Group> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        for job in m.jobs.iter().flatten() {
            let group = match groups.iter_mut().position(|g| g.jobs[0].key() == job.key()) {
                Some(g) => &mut groups[g],
                None => {
                    groups.push(Group {
                        jobs: Vec::new(),
                        messages: Vec::new(),
                        redelivered: false,
                    });
                    let last = groups.len() - 1;
                    &mut groups[last]
                }
            };
            group.jobs.push(job.clone());
            group.messages.push(i);
            group.redelivered |= m.receive_count > 1;
        }
    }
    let runs: Vec<_> = groups
        .iter()
        .enumerate()
        .map(|(g, group)| async move {
            let limits = WaveLimits {
                inline_until,
                resume: group.redelivered,
            };
            let first = &group.jobs[0];
            let span = info_span!("step_jobs", run_id = %first.run_id, jobs = group.jobs.len(), correlation_id = %first.correlation_id);
            (g, app.process_jobs(&group.jobs, limits).instrument(span).await)
        })
        .collect();
    let results: Vec<(usize, Result<JobsReport, AppError>)> = futures::stream::iter(runs)
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;

    let now = app.clock.now();
    let mut send: Vec<(StepJob, u64)> = Vec::new();
    // For each job sent, the messages that must come back if the send fails.
    let mut sent_for: Vec<Vec<usize>> = Vec::new();
    for (g, result) in results {
        let group = &groups[g];
        match result {
            Ok(report) => {
                metrics::emit(
                    &metrics::from_events(&report.unseen, report.state.as_ref(), now),
                    now,
                );
                let mut all: Vec<usize> = group.messages.clone();
                all.dedup();
                for (job, result) in group.jobs.iter().zip(&report.results) {
                    if let JobResult::RetryAt(at) = result {
                        let delay_ms =
                            (*at - now).num_milliseconds().clamp(0, MAX_DELAY_MS as i64) as u64;
                        send.push((job.clone(), delay_ms));
                        sent_for.push(all.clone());
                    }
                }
                for (job, delay_ms) in report.send {
                    send.push((job, delay_ms.min(MAX_DELAY_MS)));
                    sent_for.push(all.clone());
                }
            }
            Err(e) => {
                let infrastructure = is_infrastructure(&e);
                let first = &group.jobs[0];
                if infrastructure {
                    warn!(run_id = %first.run_id, jobs = group.jobs.len(), correlation_id = %first.correlation_id, error = %e, "step jobs failed for an infrastructure reason; they will be delivered again soon");
                } else {
                    warn!(run_id = %first.run_id, jobs = group.jobs.len(), correlation_id = %first.correlation_id, error = %e, "step jobs failed; they will be delivered again");
                }
                for &i in &group.messages {
                    let m = &mut messages[i];
                    m.outcome = match (m.outcome, infrastructure) {
                        (Outcome::Failed, _) | (_, false) => Outcome::Failed,
                        _ => Outcome::Hiccup,
                    };
                }
            }
        }
    }
    if !send.is_empty() {
        if let Err(e) = dispatcher.dispatch(&send).await {
            warn!(error = %e, jobs = send.len(), "could not send step jobs; their messages will be delivered again");
            for i in sent_for.into_iter().flatten() {
                if messages[i].outcome == Outcome::Done {
                    messages[i].outcome = Outcome::Hiccup;
                }
            }
        }
    }

    let mut response = SqsBatchResponse::default();
    for m in messages {
        match m.outcome {
            Outcome::Done => {}
            Outcome::Failed => response.add_failure(m.id),
            Outcome::Hiccup => {
                let seconds = redelivery_secs(m.receive_count, rand::rng().random());
                match m.receipt_handle {
                    Some(handle) => match redelivery.redeliver_in(&handle, seconds).await {
                        Ok(()) => {
                            warn!(message_id = %m.id, receive_count = m.receive_count, redeliver_in_s = seconds, "step job failed for an infrastructure reason; it comes back early")
                        }
                        Err(e) => {
                            warn!(message_id = %m.id, error = %e, "could not shorten the message's visibility; it comes back after the queue's visibility timeout")
                        }
                    },
                    None => {
                        warn!(message_id = %m.id, "message without a receipt handle; it comes back after the queue's visibility timeout")
                    }
                }
                response.add_failure(m.id);
            }
        }
    }
    response
}

/// Decode a received message.
fn message(record: SqsMessage) -> Message {
    let id = record.message_id.clone().unwrap_or_default();
    let receive_count: u32 = record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(1);
    let body = record.body.as_deref().unwrap_or_default();
    let jobs = decode_body(body);
    let outcome = if jobs.is_some() {
        Outcome::Done
    } else {
        let preview: String = body.chars().take(200).collect();
        error!(message_id = %id, body = %preview, "message is not a step job; reporting it so it reaches the DLQ");
        Outcome::Failed
    };
    Message {
        id,
        receipt_handle: record.receipt_handle,
        receive_count,
        jobs,
        outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_message_bodies_when_decoded_then_a_job_or_a_list_of_jobs_is_read() {
        let job = r#"{"tenant":"t","run_id":"r","step_id":"s1","attempt":1,"correlation_id":"c"}"#;
        let one = decode_body(job).expect("one job");
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].step_id, "s1");
        let two = decode_body(&format!("[{job},{}]", job.replace("s1", "s2"))).expect("a level");
        let steps: Vec<&str> = two.iter().map(|j| j.step_id.as_str()).collect();
        assert_eq!(steps, ["s1", "s2"]);
        for bad in ["[]", "{}", "not json", r#"[{"tenant":"t"}]"#, "42"] {
            assert!(decode_body(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn given_a_deadline_when_converted_then_the_margin_is_kept_and_a_past_deadline_gives_none() {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after the epoch")
            .as_millis() as u64;
        let until = inline_until(now_ms + 60_000).expect("time left");
        let left = until.saturating_duration_since(Instant::now());
        assert!(left <= std::time::Duration::from_millis(60_000 - DEADLINE_MARGIN_MS));
        assert!(left >= std::time::Duration::from_millis(50_000));
        assert!(inline_until(now_ms + DEADLINE_MARGIN_MS / 2).is_none());
        assert!(inline_until(0).is_none());
    }

    #[test]
    fn given_receive_counts_when_backed_off_then_waits_grow_from_seconds_to_the_cap() {
        let full: Vec<u32> = (1..=6).map(|n| redelivery_secs(n, 1.0)).collect();
        assert_eq!(full, [5, 20, 80, 300, 300, 300]);
        let half: Vec<u32> = (1..=4).map(|n| redelivery_secs(n, 0.0)).collect();
        assert_eq!(
            half,
            [3, 10, 40, 150],
            "jitter keeps at least half the wait"
        );
        assert_eq!(
            redelivery_secs(0, 1.0),
            5,
            "a missing count is the first delivery"
        );
        assert_eq!(redelivery_secs(u32::MAX, 1.0), REDELIVERY_MAX_SECS);
    }
}
