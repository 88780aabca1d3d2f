//! `step-worker`: SQS batches of step jobs in, partial batch responses out
//! (`ReportBatchItemFailures`). The levels a run's jobs make ready run in the same
//! invocation while its deadline leaves time for them. Jobs that must wait go back to the
//! queue with a delay; jobs that hit an infrastructure error come back early (shortened
//! visibility).

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use crane::config::{Config, LogFormat};
use crane::entrypoints::{app_from_env, sqs, Function};
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    crane::telemetry::init(LogFormat::Json);
    let config = Config::from_env()?;
    let (app, ports) = app_from_env(&config, Function::StepWorker).await?;
    let (app, ports) = (&app, &ports);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let (dispatcher, redelivery) = (ports.dispatcher.as_ref(), ports.redelivery.as_ref());
        let until = sqs::inline_until(event.context.deadline);
        let batch = sqs::handle_step_batch(app, dispatcher, redelivery, event.payload, until);
        Ok::<SqsBatchResponse, Error>(batch.await)
    }))
    .await
}
