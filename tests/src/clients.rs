//! SDK clients for the local AWS engines: DynamoDB Local (DynamoDB and its Streams) and moto
//! (SQS, Step Functions, Secrets Manager). Every client is built here the same way: dummy
//! credentials, the region of `AWS_REGION` (default `us-east-1`), the emulator's endpoint
//! and, when a [`RequestLog`] is given, that log as an interceptor counting its requests.

use crate::cloud::RequestLog;

/// The region of the emulators' resources: `AWS_REGION`, or `us-east-1`.
pub fn region() -> String {
    std::env::var("AWS_REGION")
        .ok()
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| "us-east-1".into())
}

/// Build one SDK's client: `$sdk` is the crate (`aws_sdk_sqs`), then the endpoint, the
/// region and an `Option<&RequestLog>`.
macro_rules! emulator_client {
    ($sdk:ident, $endpoint:expr, $region:expr, $log:expr) => {{
        use $sdk::config::{BehaviorVersion, Credentials, Region};
        let mut b = $sdk::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new($region.to_owned()))
            .credentials_provider(Credentials::new("test", "test", None, None, "crane-tests"))
            .endpoint_url($endpoint);
        let log: Option<&RequestLog> = $log;
        if let Some(log) = log {
            b = b.interceptor(log.clone());
        }
        $sdk::Client::from_conf(b.build())
    }};
}

/// A DynamoDB client for DynamoDB Local at `endpoint`.
pub fn dynamodb(endpoint: &str, log: Option<&RequestLog>) -> aws_sdk_dynamodb::Client {
    emulator_client!(aws_sdk_dynamodb, endpoint, region(), log)
}

/// A DynamoDB Streams client for DynamoDB Local at `endpoint`.
pub fn streams(endpoint: &str, log: Option<&RequestLog>) -> aws_sdk_dynamodbstreams::Client {
    emulator_client!(aws_sdk_dynamodbstreams, endpoint, region(), log)
}

/// An SQS client for moto at `endpoint`.
pub fn sqs(endpoint: &str, log: Option<&RequestLog>) -> aws_sdk_sqs::Client {
    emulator_client!(aws_sdk_sqs, endpoint, region(), log)
}

/// A Step Functions client for moto at `endpoint`.
pub fn sfn(endpoint: &str, log: Option<&RequestLog>) -> aws_sdk_sfn::Client {
    emulator_client!(aws_sdk_sfn, endpoint, region(), log)
}

/// A Step Functions client for moto at `endpoint`, in `region` (moto keeps each region's
/// state machines apart, so a test can have a region of its own).
pub fn sfn_in(endpoint: &str, region: &str) -> aws_sdk_sfn::Client {
    emulator_client!(aws_sdk_sfn, endpoint, region, None)
}

/// A Secrets Manager client for moto at `endpoint`.
pub fn secrets_manager(endpoint: &str) -> aws_sdk_secretsmanager::Client {
    emulator_client!(aws_sdk_secretsmanager, endpoint, region(), None)
}
