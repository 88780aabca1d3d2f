//! The step-worker function: an SQS batch of step jobs in, a partial batch response out.
//!
//! Each message body is a JSON [`StepJob`]. A job that ran (or had nothing to do) is
//! acknowledged; a job that must wait (a retry's backoff, another worker's lease) is sent
//! back to the queue with the remaining delay and acknowledged, so no Lambda is billed for
//! waiting; a job that failed, or a body that is not a job, is reported as a batch item
//! failure so SQS delivers it again (and, after `maxReceiveCount`, to the DLQ).
//!
//! A job that failed for an infrastructure reason (the store throttling, timing out or
//! unreachable, too much contention) would wait out the queue's whole visibility timeout
//! (360 s) before its next delivery. Its visibility is shortened first, with backoff on its
//! `ApproximateReceiveCount` ([`redelivery_secs`]: about 5 s, 20 s, 80 s, then 300 s), so
//! a hiccup delays a run by seconds.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures::StreamExt;
use rand::Rng;
use tracing::{error, info_span, warn, Instrument};

use crate::app::{App, AppError, JobResult};
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

enum Outcome {
    Done,
    Failed(String),
    /// Failed for an infrastructure reason: shorten its visibility, then report it.
    Hiccup {
        message_id: String,
        receipt_handle: Option<String>,
        receive_count: u32,
    },
    Deferred {
        message_id: String,
        job: StepJob,
        delay_ms: u64,
    },
}

/// Run a batch of step jobs; report the messages that must be delivered again (those
/// that failed for an infrastructure reason made visible again soon through
/// `redelivery`).
pub async fn handle_step_batch(
    app: &App,
    dispatcher: &dyn StepDispatcher,
    redelivery: &dyn Redelivery,
    event: SqsEvent,
) -> SqsBatchResponse {
    let runs: Vec<_> = event
        .records
        .into_iter()
        .map(|record| run_record(app, record))
        .collect();
    let outcomes: Vec<Outcome> = futures::stream::iter(runs)
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut failed = Vec::new();
    let mut deferred = Vec::new();
    for outcome in outcomes {
        match outcome {
            Outcome::Done => {}
            Outcome::Failed(id) => failed.push(id),
            Outcome::Hiccup {
                message_id,
                receipt_handle,
                receive_count,
            } => {
                let seconds = redelivery_secs(receive_count, rand::rng().random());
                match receipt_handle {
                    Some(handle) => match redelivery.redeliver_in(&handle, seconds).await {
                        Ok(()) => {
                            warn!(message_id = %message_id, receive_count, redeliver_in_s = seconds, "step job failed for an infrastructure reason; it comes back early")
                        }
                        Err(e) => {
                            warn!(message_id = %message_id, error = %e, "could not shorten the message's visibility; it comes back after the queue's visibility timeout")
                        }
                    },
                    None => {
                        warn!(message_id = %message_id, "message without a receipt handle; it comes back after the queue's visibility timeout")
                    }
                }
                failed.push(message_id);
            }
            Outcome::Deferred {
                message_id,
                job,
                delay_ms,
            } => deferred.push((message_id, (job, delay_ms))),
        }
    }
    if !deferred.is_empty() {
        let jobs: Vec<(StepJob, u64)> = deferred.iter().map(|(_, j)| j.clone()).collect();
        if let Err(e) = dispatcher.dispatch(&jobs).await {
            warn!(error = %e, jobs = jobs.len(), "could not defer jobs; they will be delivered again");
            failed.extend(deferred.into_iter().map(|(id, _)| id));
        }
    }
    let mut response = SqsBatchResponse::default();
    for id in failed {
        response.add_failure(id);
    }
    response
}

async fn run_record(app: &App, record: SqsMessage) -> Outcome {
    let message_id = record.message_id.clone().unwrap_or_default();
    let receive_count: u32 = record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(1);
    let receipt_handle = record.receipt_handle.clone();
    let span = info_span!("step_message", message_id = %message_id, receive_count);
    async move {
        let body = record.body.as_deref().unwrap_or_default();
        let job: StepJob = match serde_json::from_str(body) {
            Ok(job) => job,
            Err(e) => {
                let preview: String = body.chars().take(200).collect();
                error!(error = %e, body = %preview, "message is not a step job; reporting it so it reaches the DLQ");
                return Outcome::Failed(message_id);
            }
        };
        match app.process_job(&job).await {
            Ok(JobResult::Done) => Outcome::Done,
            Ok(JobResult::RetryAt(at)) => {
                let delay_ms = (at - app.clock.now())
                    .num_milliseconds()
                    .clamp(0, MAX_DELAY_MS as i64) as u64;
                Outcome::Deferred {
                    message_id,
                    job,
                    delay_ms,
                }
            }
            Err(e) if is_infrastructure(&e) => {
                warn!(run_id = %job.run_id, step_id = %job.step_id, attempt = job.attempt, correlation_id = %job.correlation_id, error = %e, "step job failed for an infrastructure reason; it will be delivered again soon");
                Outcome::Hiccup {
                    message_id,
                    receipt_handle,
                    receive_count,
                }
            }
            Err(e) => {
                warn!(run_id = %job.run_id, step_id = %job.step_id, attempt = job.attempt, correlation_id = %job.correlation_id, error = %e, "step job failed; it will be delivered again");
                Outcome::Failed(message_id)
            }
        }
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

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
