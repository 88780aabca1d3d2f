//! `get-run`: every `GET` route behind API Gateway (runs, one run, `?at=`, events, todos,
//! tools, health), reading the runs view and the events table. Serves the shared router;
//! its role is read-only.

use crane::config::{Config, LogFormat};
use crane::entrypoints::{app_from_env, http, Function};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    crane::telemetry::init(LogFormat::Json);
    let config = Config::from_env()?;
    let (app, _) = app_from_env(&config, Function::GetRun).await?;
    lambda_http::run(http::service(app, &config.http.edge())).await
}
