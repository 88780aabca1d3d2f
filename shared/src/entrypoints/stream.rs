//! The event-reactor function: the events table's DynamoDB Stream in, reactions out.
//!
//! The stream is the event log that drives everything that must happen because of an
//! event, so no process can die between "state changed" and "reaction sent". A record holds
//! one append, so it carries one or more events, all of which go to its run. For each run
//! in the batch, [`App::project`] updates the runs view (idempotent by sequence number)
//! and returns the effects of the new events; step jobs are sent through the
//! [`StepDispatcher`] (all of the batch's in one call, so SQS sees batches of ten) and
//! compensations started through the [`SagaStarter`]. When a run's group fails, the
//! response names the sequence number of that group's first record: Lambda retries the
//! shard from there (bisecting on error), and every reaction is idempotent, so replaying
//! records that already succeeded is harmless.

use aws_lambda_events::dynamodb::{Event as StreamEvent, EventRecord as StreamRecord};
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use futures::StreamExt;
use tracing::{debug, error, info, info_span, warn, Instrument};

use super::metrics;
use crate::app::{App, Projection};
use crate::domain::{Effect, EventRecord, RunKey, RunState, StepJob};

use crate::ports::{SagaStarter, StepDispatcher, StoreError};

/// Runs of one batch projected at the same time.
pub const CONCURRENCY: usize = 10;

/// The new events of one run in a batch.
struct Group {
    key: RunKey,
    /// `dynamodb.SequenceNumber` of the group's first record: where a retry starts.
    first_sequence_number: String,
    records: Vec<EventRecord>,
}

/// Decode a stream record's new image into the run it belongs to and its events (all
/// those of the append the record's item holds, in order).
pub fn decode_record(record: &StreamRecord) -> Result<(RunKey, Vec<EventRecord>), StoreError> {
    crate::adapters::aws::stream::decode_new_image(record.change.new_image.clone())
}

/// React to a batch of stream records; report the groups that must be retried.
pub async fn handle_stream_batch(
    app: &App,
    dispatcher: &dyn StepDispatcher,
    saga: &dyn SagaStarter,
    event: StreamEvent,
) -> DynamoDbEventResponse {
    let mut failures: Vec<String> = Vec::new();
    let mut groups: Vec<Group> = Vec::new();
    for record in &event.records {
        let sequence_number = record.change.sequence_number.clone().unwrap_or_default();
        if record.event_name != "INSERT" {
            debug!(event_name = %record.event_name, %sequence_number, "not an insert: ignored");
            continue;
        }
        match decode_record(record) {
            Ok((key, recs)) => match groups.iter_mut().find(|g| g.key == key) {
                Some(g) => g.records.extend(recs),
                None => groups.push(Group {
                    key,
                    first_sequence_number: sequence_number,
                    records: recs,
                }),
            },
            Err(e) => {
                error!(error = %e, %sequence_number, "stream record is not an event; it will be retried");
                failures.push(sequence_number);
            }
        }
    }
    for g in &mut groups {
        g.records.sort_by_key(|r| r.seq);
        g.records.dedup_by_key(|r| r.seq);
    }

    // Project every run; collect the reactions.
    let projections: Vec<_> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| project(app, i, g))
        .collect();
    let projected: Vec<(usize, Result<Projection, String>)> = futures::stream::iter(projections)
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut failed = vec![false; groups.len()];
    let mut states: Vec<Option<RunState>> = vec![None; groups.len()];
    let mut dispatches: Vec<(usize, (StepJob, u64))> = Vec::new();
    let mut sagas: Vec<(usize, RunKey, String, u32)> = Vec::new();
    for (i, result) in projected {
        match result {
            Ok(Projection { state, effects }) => {
                states[i] = state;
                for effect in effects {
                    match effect {
                        Effect::Dispatch { job, delay_ms } => dispatches.push((i, (job, delay_ms))),
                        Effect::Compensate {
                            key,
                            correlation_id,
                            attempt,
                        } => sagas.push((i, key, correlation_id, attempt)),
                    }
                }
            }
            Err(e) => {
                warn!(run_id = %groups[i].key.run_id, error = %e, "projection failed; the run's records will be retried");
                failed[i] = true;
            }
        }
    }

    // Execute them: step jobs in one call (the dispatcher batches them by ten).
    if !dispatches.is_empty() {
        let jobs: Vec<(StepJob, u64)> = dispatches.iter().map(|(_, j)| j.clone()).collect();
        match dispatcher.dispatch(&jobs).await {
            Ok(()) => {
                for (i, (job, delay_ms)) in &dispatches {
                    let lag_ms = lag_ms(app, &groups[*i]);
                    info!(run_id = %job.run_id, step_id = %job.step_id, attempt = job.attempt, delay_ms, lag_ms, correlation_id = %job.correlation_id, "step dispatched");
                }
            }
            Err(e) => {
                warn!(error = %e, jobs = jobs.len(), "dispatch failed; the runs' records will be retried");
                for (i, _) in &dispatches {
                    failed[*i] = true;
                }
            }
        }
    }
    for (i, key, correlation_id, attempt) in &sagas {
        match saga.start(key, correlation_id, *attempt).await {
            Ok(()) => {
                info!(run_id = %key.run_id, correlation_id = %correlation_id, saga_attempt = attempt, "compensation saga started")
            }
            Err(e) => {
                warn!(run_id = %key.run_id, error = %e, "could not start the saga; the run's records will be retried");
                failed[*i] = true;
            }
        }
    }

    // Metrics of what succeeded (best effort).
    let now = app.clock.now();
    // The projected state names each step's tool; no second read of the view.
    for ((g, state), _) in groups
        .iter()
        .zip(&states)
        .zip(&failed)
        .filter(|(_, f)| !**f)
    {
        metrics::emit(&metrics::from_events(&g.records, state.as_ref(), now), now);
    }

    failures.extend(
        groups
            .iter()
            .zip(&failed)
            .filter(|(_, f)| **f)
            .map(|(g, _)| g.first_sequence_number.clone()),
    );
    let mut response = DynamoDbEventResponse::default();
    for id in failures {
        let mut failure = DynamoDbBatchItemFailure::default();
        failure.item_identifier = Some(id);
        response.batch_item_failures.push(failure);
    }
    response
}

async fn project(app: &App, i: usize, g: &Group) -> (usize, Result<Projection, String>) {
    let span = info_span!("project", run_id = %g.key.run_id, records = g.records.len());
    let r = app
        .project(&g.key, &g.records)
        .instrument(span)
        .await
        .map_err(|e| e.to_string());
    (i, r)
}

/// How long after its newest event a group's reaction was sent (the stream hop).
fn lag_ms(app: &App, g: &Group) -> i64 {
    g.records
        .iter()
        .map(|r| r.at)
        .max()
        .map_or(0, |at| (app.clock.now() - at).num_milliseconds())
}
