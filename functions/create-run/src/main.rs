//! `create-run`: `POST /runs` behind API Gateway. Plans the prompt and appends
//! `RunCreated` + `PlanGenerated` in one conditional write; the events table's stream does
//! the rest. Serves the shared router (the template routes only `POST /runs` here).

use crane::config::{Config, LogFormat};
use crane::entrypoints::{app_from_env, http, Function};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    crane::telemetry::init(LogFormat::Json);
    let config = Config::from_env()?;
    let (app, _) = app_from_env(&config, Function::CreateRun).await?;
    lambda_http::run(http::service(app, &config.http.edge())).await
}
