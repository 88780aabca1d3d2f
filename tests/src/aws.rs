//! Helpers for tests of the AWS adapters against the local engines `scripts/test` starts:
//! DynamoDB Local (`CRANE_TEST_DYNAMODB_ENDPOINT`) and moto (`CRANE_TEST_MOTO_ENDPOINT`,
//! SQS and Step Functions). Every helper creates uniquely named resources, so tests run in
//! parallel. A missing endpoint is an error, never a skip.

use anyhow::{bail, Context, Result};
use crane::adapters::aws::{
    aws_sdk_dynamodb, aws_sdk_sfn, aws_sdk_sqs, provision, DynamoStore, TableNames,
};

pub const DYNAMODB_ENDPOINT_VAR: &str = "CRANE_TEST_DYNAMODB_ENDPOINT";
pub const MOTO_ENDPOINT_VAR: &str = "CRANE_TEST_MOTO_ENDPOINT";
pub const REGION: &str = "us-east-1";
/// moto's default account.
pub const ACCOUNT: &str = "123456789012";

/// Logs go to stderr only when `TEST_LOG` is set.
pub fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        crane::telemetry::init(crane::config::LogFormat::Text);
    }
}

/// The endpoint in `var`, or an error saying how to get one.
pub fn endpoint(var: &str) -> Result<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        _ => bail!(
            "{var} is not set: run ./scripts/test, which installs and starts DynamoDB Local and moto"
        ),
    }
}

/// A name no other test uses: `crane-test-<32 hex digits>`.
pub fn unique_name() -> String {
    format!("crane-test-{}", uuid::Uuid::new_v4().simple())
}

fn credentials() -> aws_sdk_dynamodb::config::Credentials {
    aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "crane-tests")
}

/// A DynamoDB client for DynamoDB Local.
pub fn dynamodb_client() -> Result<aws_sdk_dynamodb::Client> {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Region};
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint(DYNAMODB_ENDPOINT_VAR)?)
        .credentials_provider(credentials())
        .build();
    Ok(aws_sdk_dynamodb::Client::from_conf(config))
}

/// An SQS client for moto.
pub fn sqs_client() -> Result<aws_sdk_sqs::Client> {
    use aws_sdk_sqs::config::{BehaviorVersion, Region};
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint(MOTO_ENDPOINT_VAR)?)
        .credentials_provider(credentials())
        .build();
    Ok(aws_sdk_sqs::Client::from_conf(config))
}

/// A Step Functions client for moto.
pub fn sfn_client() -> Result<aws_sdk_sfn::Client> {
    use aws_sdk_sfn::config::{BehaviorVersion, Region};
    let config = aws_sdk_sfn::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint(MOTO_ENDPOINT_VAR)?)
        .credentials_provider(credentials())
        .build();
    Ok(aws_sdk_sfn::Client::from_conf(config))
}

/// Fresh, uniquely named tables (created with [`provision::create_tables`]).
pub async fn fresh_tables() -> Result<(aws_sdk_dynamodb::Client, TableNames)> {
    let client = dynamodb_client()?;
    let names = TableNames::with_prefix(&unique_name());
    provision::create_tables(&client, &names)
        .await
        .with_context(|| format!("creating tables {names:?} in DynamoDB Local"))?;
    Ok((client, names))
}

/// A [`DynamoStore`] over fresh tables.
pub async fn fresh_dynamo_store() -> Result<DynamoStore> {
    let (client, names) = fresh_tables().await?;
    Ok(DynamoStore::new(client, names))
}

/// A fresh standard queue in moto; returns its URL.
pub async fn fresh_queue(sqs: &aws_sdk_sqs::Client) -> Result<String> {
    let out = sqs
        .create_queue()
        .queue_name(unique_name())
        .send()
        .await
        .context("creating a queue in moto")?;
    out.queue_url.context("moto returned no queue URL")
}

/// A fresh state machine in moto with one `Pass` state; returns its ARN.
pub async fn pass_state_machine(sfn: &aws_sdk_sfn::Client) -> Result<String> {
    let definition = serde_json::json!({
        "Comment": "Crane test saga: does nothing",
        "StartAt": "Done",
        "States": {"Done": {"Type": "Pass", "End": true}}
    });
    let out = sfn
        .create_state_machine()
        .name(unique_name())
        .definition(definition.to_string())
        .role_arn(format!("arn:aws:iam::{ACCOUNT}:role/crane-test-saga"))
        .send()
        .await
        .context("creating a state machine in moto")?;
    Ok(out.state_machine_arn)
}
