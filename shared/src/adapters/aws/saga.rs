//! [`SagaStarter`] on Step Functions: one execution per saga attempt of a run, named after
//! the run ([`execution_name`]): `<run id>` for the first attempt, `<run id>-saga-<n>` for
//! the n-th (an operator's retry request, recorded as `CompensationRetryRequested`). A
//! name already taken means that attempt was started: starting it again is a no-op.

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
    /// A starter of executions of the state machine at `state_machine_arn`.
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

    /// The ARN of the saga state machine executions are started on.
    pub fn state_machine_arn(&self) -> &str {
        &self.state_machine_arn
    }
}

/// The execution name of saga attempt `attempt` of run `run_id` (at most 80 characters
/// of `[A-Za-z0-9-_]`; a run id is a UUID).
pub fn execution_name(run_id: &str, attempt: u32) -> String {
    if attempt <= 1 {
        run_id.to_owned()
    } else {
        format!("{run_id}-saga-{attempt}")
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
    async fn start(&self, key: &RunKey, correlation_id: &str, attempt: u32) -> StoreResult<()> {
        let result = self
            .client
            .start_execution()
            .state_machine_arn(&self.state_machine_arn)
            .name(execution_name(&key.run_id, attempt))
            .input(saga_input(key, correlation_id).to_string())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // The execution name is the run id and attempt: it was started already.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_saga_attempts_when_named_then_the_first_is_the_run_id_and_retries_are_new_names() {
        let run = "01977b6e-4c2a-7a3b-9f10-5e2d8c1a0b02";
        assert_eq!(execution_name(run, 1), run);
        assert_eq!(execution_name(run, 0), run);
        assert_eq!(execution_name(run, 2), format!("{run}-saga-2"));
        let long = execution_name(run, u32::MAX);
        assert!(long.len() <= 80 && long.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }
}
