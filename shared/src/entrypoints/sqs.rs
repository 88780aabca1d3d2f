//! The step-worker function: an SQS batch of step jobs in, a partial batch response out.
//!
//! Each message body is a JSON [`StepJob`]. A job that ran (or had nothing to do) is
//! acknowledged; a job that must wait (a retry's backoff, another worker's lease) is sent
//! back to the queue with the remaining delay and acknowledged, so no Lambda is billed for
//! waiting; a job that failed, or a body that is not a job, is reported as a batch item
//! failure so SQS delivers it again (and, after `maxReceiveCount`, to the DLQ).

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures::StreamExt;
use tracing::{error, info_span, warn, Instrument};

use crate::app::{App, JobResult};
use crate::ports::{StepDispatcher, StepJob};

/// Jobs of one batch run at the same time.
pub const CONCURRENCY: usize = 10;
/// SQS refuses longer message delays; a job deferred further comes back early and is
/// deferred again.
pub const MAX_DELAY_MS: u64 = 900_000;

enum Outcome {
    Done,
    Failed(String),
    Deferred {
        message_id: String,
        job: StepJob,
        delay_ms: u64,
    },
}

/// Run a batch of step jobs; report the messages that must be delivered again.
pub async fn handle_step_batch(
    app: &App,
    dispatcher: &dyn StepDispatcher,
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
    let receive_count = record
        .attributes
        .get("ApproximateReceiveCount")
        .cloned()
        .unwrap_or_default();
    let span = info_span!("step_message", message_id = %message_id, receive_count = %receive_count);
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
            Err(e) => {
                warn!(run_id = %job.run_id, step_id = %job.step_id, attempt = job.attempt, correlation_id = %job.correlation_id, error = %e, "step job failed; it will be delivered again");
                Outcome::Failed(message_id)
            }
        }
    }
    .instrument(span)
    .await
}
