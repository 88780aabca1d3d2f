//! [`StepDispatcher`] on an SQS standard queue, and [`Redelivery`] of the messages the
//! step worker received from it.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use tracing::instrument;

use super::error::sdk_error;
use super::{env_var, MissingEnv, STEP_QUEUE_URL_VAR};
use crate::domain::StepJob;
use crate::ports::{Redelivery, StepDispatcher, StoreError, StoreResult};

/// `SendMessageBatch` takes at most this many entries.
const BATCH: usize = 10;
/// Rounds of resending entries SQS reported as failed, after the first send.
const RESEND_ROUNDS: u32 = 3;
/// SQS's longest message delay.
pub const MAX_DELAY_SECONDS: u64 = 900;

/// `DelaySeconds` for a delay: rounded up to whole seconds, at most 15 minutes (a longer
/// backoff is shortened to SQS's maximum).
pub fn delay_seconds(delay_ms: u64) -> i32 {
    // At most 900, so the conversion cannot fail.
    i32::try_from(delay_ms.div_ceil(1000).min(MAX_DELAY_SECONDS)).unwrap_or(900)
}

/// Sends step jobs to the step queue. A message's body is the job as JSON, or a JSON list
/// of the jobs of one run that are due together (up to 100 in one message).
#[derive(Debug, Clone)]
pub struct SqsDispatcher {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsDispatcher {
    /// A dispatcher sending to the queue at `queue_url` through `client`.
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }

    /// A dispatcher to the queue at `CRANE_STEP_QUEUE_URL`.
    pub fn from_env(config: &aws_config::SdkConfig) -> Result<Self, MissingEnv> {
        Ok(Self::new(
            aws_sdk_sqs::Client::new(config),
            env_var(STEP_QUEUE_URL_VAR)?,
        ))
    }

    /// The URL of the step queue.
    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    async fn send_chunk(&self, chunk: &[(Vec<StepJob>, u64)]) -> StoreResult<()> {
        let mut pending = chunk
            .iter()
            .enumerate()
            .map(|(i, (jobs, delay_ms))| {
                let body = match jobs.as_slice() {
                    [job] => serde_json::to_string(job),
                    jobs => serde_json::to_string(jobs),
                }
                .map_err(|e| StoreError::Invalid(format!("step job: {e}")))?;
                SendMessageBatchRequestEntry::builder()
                    .id(format!("job{i}"))
                    .message_body(body)
                    .delay_seconds(delay_seconds(*delay_ms))
                    .build()
                    .map_err(|e| StoreError::Invalid(format!("building an SQS entry: {e}")))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        for round in 0..=RESEND_ROUNDS {
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(50 << round)).await;
            }
            let out = self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(pending.clone()))
                .send()
                .await
                .map_err(|e| sdk_error("SendMessageBatch", e))?;
            if out.failed.is_empty() {
                return Ok(());
            }
            let failed: HashSet<&str> = out.failed.iter().map(|f| f.id()).collect();
            tracing::warn!(
                failed = failed.len(),
                round,
                code = out.failed.first().map(|f| f.code()),
                "SQS refused some step jobs; resending them"
            );
            pending.retain(|e| failed.contains(e.id()));
            if round == RESEND_ROUNDS {
                let codes: Vec<String> = out
                    .failed
                    .iter()
                    .map(|f| format!("{} ({})", f.code(), f.message().unwrap_or_default()))
                    .collect();
                return Err(StoreError::unavailable(format!(
                    "SQS did not accept {} step jobs after {} attempts: {}",
                    pending.len(),
                    RESEND_ROUNDS + 1,
                    codes.join(", ")
                )));
            }
        }
        Ok(())
    }
}

/// The messages for `jobs`: the jobs of one run due after the same whole number of
/// seconds (a DAG level) share one message, so one worker invocation claims and runs them
/// together; each message with its delay in milliseconds, in the order of its first job.
pub fn messages(jobs: &[(StepJob, u64)]) -> Vec<(Vec<StepJob>, u64)> {
    let mut out: Vec<(Vec<StepJob>, u64)> = Vec::new();
    for (job, delay_ms) in jobs {
        let together = out.iter_mut().find(|(js, d)| {
            delay_seconds(*d) == delay_seconds(*delay_ms)
                && js.len() < MAX_JOBS_PER_MESSAGE
                && js.first().is_some_and(|j| j.key() == job.key())
        });
        match together {
            Some((js, _)) => {
                if !js.contains(job) {
                    js.push(job.clone());
                }
            }
            None => out.push((vec![job.clone()], *delay_ms)),
        }
    }
    out
}

/// Most jobs in one message (a job is well under 1 KB; SQS takes 256 KB).
pub const MAX_JOBS_PER_MESSAGE: usize = 100;

#[async_trait]
impl StepDispatcher for SqsDispatcher {
    #[instrument(level = "debug", skip(self, jobs), fields(count = jobs.len()))]
    async fn dispatch(&self, jobs: &[(StepJob, u64)]) -> StoreResult<()> {
        let messages = messages(jobs);
        for chunk in messages.chunks(BATCH) {
            self.send_chunk(chunk).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Redelivery for SqsDispatcher {
    #[instrument(level = "debug", skip(self, receipt_handle))]
    async fn redeliver_in(&self, receipt_handle: &str, seconds: u32) -> StoreResult<()> {
        // SQS accepts 0 to 43,200 seconds (12 hours).
        let seconds = i32::try_from(seconds.min(43_200)).unwrap_or(43_200);
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(seconds)
            .send()
            .await
            .map_err(|e| sdk_error("ChangeMessageVisibility", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(run: &str, step: &str) -> StepJob {
        StepJob {
            tenant: "t".into(),
            run_id: run.into(),
            step_id: step.into(),
            attempt: 1,
            correlation_id: "c".into(),
        }
    }

    fn shape(messages: &[(Vec<StepJob>, u64)]) -> Vec<(Vec<String>, u64)> {
        messages
            .iter()
            .map(|(jobs, d)| {
                let ids = jobs
                    .iter()
                    .map(|j| format!("{}/{}", j.run_id, j.step_id))
                    .collect();
                (ids, *d)
            })
            .collect()
    }

    #[test]
    fn given_jobs_of_runs_and_delays_when_grouped_then_a_runs_jobs_due_together_share_a_message() {
        let jobs = vec![
            (job("a", "s1"), 0),
            (job("b", "s1"), 0),
            (job("a", "s2"), 0),
            (job("a", "s3"), 1_500),
            (job("a", "s4"), 1_900),
            (job("a", "s1"), 0),
        ];
        assert_eq!(
            shape(&messages(&jobs)),
            vec![
                (vec!["a/s1".into(), "a/s2".into()], 0),
                (vec!["b/s1".into()], 0),
                (vec!["a/s3".into(), "a/s4".into()], 1_500),
            ],
            "same run and same whole second of delay: one message, duplicates dropped"
        );
        let many: Vec<(StepJob, u64)> = (0..MAX_JOBS_PER_MESSAGE + 1)
            .map(|i| (job("a", &format!("s{i}")), 0))
            .collect();
        let sizes: Vec<usize> = messages(&many).iter().map(|(j, _)| j.len()).collect();
        assert_eq!(sizes, vec![MAX_JOBS_PER_MESSAGE, 1]);
        assert!(messages(&[]).is_empty());
    }

    #[test]
    fn given_delays_when_converted_then_seconds_round_up_and_cap_at_fifteen_minutes() {
        assert_eq!(delay_seconds(0), 0);
        assert_eq!(delay_seconds(1), 1);
        assert_eq!(delay_seconds(1000), 1);
        assert_eq!(delay_seconds(1001), 2);
        assert_eq!(delay_seconds(900_000), 900);
        assert_eq!(delay_seconds(3_600_000), 900);
        assert_eq!(delay_seconds(u64::MAX), 900);
    }
}
