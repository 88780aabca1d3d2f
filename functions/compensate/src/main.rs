//! `compensate`: the saga state machine's tasks (`begin`, `compensate_step`, `finish`).
//! Errors carry the type the state machine's Retry/Catch match: `Crane.TransientError` or
//! `Crane.PermanentError`.

use crane::config::{Config, LogFormat};
use crane::entrypoints::{app_from_env, saga, Function};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    crane::telemetry::init(LogFormat::Json);
    let config = Config::from_env()?;
    let (app, _) = app_from_env(&config, Function::Compensate).await?;
    let app = &app;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        saga::handle_saga_input(app, event.payload).await
    }))
    .await
}
