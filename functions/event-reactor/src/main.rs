//! `event-reactor`: the events table's DynamoDB Stream. Updates the runs view and sends
//! every reaction (step jobs to SQS, sagas to Step Functions); failed runs are reported as
//! batch item failures so Lambda retries them from their first record.

use aws_lambda_events::dynamodb::Event;
use aws_lambda_events::streams::DynamoDbEventResponse;
use crane::config::{Config, LogFormat};
use crane::entrypoints::{app_from_env, stream, Function};
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    crane::telemetry::init(LogFormat::Json);
    let config = Config::from_env()?;
    let (app, ports) = app_from_env(&config, Function::EventReactor).await?;
    let (app, ports) = (&app, &ports);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Event>| async move {
        let (dispatcher, saga) = (ports.dispatcher.as_ref(), ports.saga.as_ref());
        let batch = stream::handle_stream_batch(app, dispatcher, saga, event.payload);
        Ok::<DynamoDbEventResponse, Error>(batch.await)
    }))
    .await
}
