//! [`SagaStarter`] on Step Functions: one execution per run, named after the run.

use async_trait::async_trait;
use serde_json::json;
use tracing::instrument;

use super::error::sdk_error;
use super::{env_var, MissingEnv, SAGA_STATE_MACHINE_ARN_VAR};
use crate::domain::RunKey;
use crate::ports::{SagaStarter, StoreResult};

/// Starts the compensation state machine of a run.
#[derive(Debug, Clone)]
pub struct SfnSagaStarter {
    client: aws_sdk_sfn::Client,
    state_machine_arn: String,
}

impl SfnSagaStarter {
    pub fn new(client: aws_sdk_sfn::Client, state_machine_arn: impl Into<String>) -> Self {
        Self {
            client,
            state_machine_arn: state_machine_arn.into(),
        }
    }

    /// A starter for the state machine at `CRANE_SAGA_STATE_MACHINE_ARN`.
    pub fn from_env(config: &aws_config::SdkConfig) -> Result<Self, MissingEnv> {
        Ok(Self::new(
            aws_sdk_sfn::Client::new(config),
            env_var(SAGA_STATE_MACHINE_ARN_VAR)?,
        ))
    }

    pub fn state_machine_arn(&self) -> &str {
        &self.state_machine_arn
    }
}

/// The execution input the saga state machine receives.
pub fn saga_input(key: &RunKey, correlation_id: &str) -> serde_json::Value {
    json!({
        "tenant": key.tenant,
        "run_id": key.run_id,
        "correlation_id": correlation_id,
    })
}

#[async_trait]
impl SagaStarter for SfnSagaStarter {
    #[instrument(level = "debug", skip(self), fields(run = %key))]
    async fn start(&self, key: &RunKey, correlation_id: &str) -> StoreResult<()> {
        let result = self
            .client
            .start_execution()
            .state_machine_arn(&self.state_machine_arn)
            .name(&key.run_id)
            .input(saga_input(key, correlation_id).to_string())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // The execution name is the run id: the saga was started already.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_execution_already_exists()) =>
            {
                tracing::debug!("saga of {key} already started");
                Ok(())
            }
            Err(e) => Err(sdk_error("StartExecution", e)),
        }
    }
}
