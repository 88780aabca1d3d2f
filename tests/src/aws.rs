//! Helpers for tests of the AWS adapters against the local engines `scripts/test` starts:
//! DynamoDB Local (`CRANE_TEST_DYNAMODB_ENDPOINT`) and moto (`CRANE_TEST_MOTO_ENDPOINT`,
//! SQS and Step Functions). Every helper creates uniquely named resources, so tests run in
//! parallel. A missing endpoint is an error, never a skip.

use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{bail, Context, Result};
use aws_sdk_dynamodb::config::interceptors::{
    AfterDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextMut,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::types::{ConsumedCapacity, ReturnConsumedCapacity};
use aws_smithy_runtime_api::box_error::BoxError;
use crane::adapters::aws::{
    aws_sdk_dynamodb, aws_sdk_sfn, aws_sdk_sqs, provision, DynamoStore, TableNames,
};

use crate::clients;
use crate::names::unique;

pub const DYNAMODB_ENDPOINT_VAR: &str = "CRANE_TEST_DYNAMODB_ENDPOINT";
pub const MOTO_ENDPOINT_VAR: &str = "CRANE_TEST_MOTO_ENDPOINT";
/// moto's default account.
pub const ACCOUNT: &str = "123456789012";

/// The endpoint in `var`, or an error saying how to get one.
pub fn endpoint(var: &str) -> Result<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        _ => bail!(
            "{var} is not set: run ./scripts/test, which installs and starts DynamoDB Local and moto"
        ),
    }
}

/// A DynamoDB client for DynamoDB Local.
pub fn dynamodb_client() -> Result<aws_sdk_dynamodb::Client> {
    Ok(clients::dynamodb(&endpoint(DYNAMODB_ENDPOINT_VAR)?, None))
}

/// An SQS client for moto.
pub fn sqs_client() -> Result<aws_sdk_sqs::Client> {
    Ok(clients::sqs(&endpoint(MOTO_ENDPOINT_VAR)?, None))
}

/// A Step Functions client for moto.
pub fn sfn_client() -> Result<aws_sdk_sfn::Client> {
    Ok(clients::sfn(&endpoint(MOTO_ENDPOINT_VAR)?, None))
}

/// Fresh, uniquely named tables (created with [`provision::create_tables`]).
pub async fn fresh_tables() -> Result<(aws_sdk_dynamodb::Client, TableNames)> {
    let client = dynamodb_client()?;
    let names = TableNames::with_prefix(&unique("crane-test"));
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
        .queue_name(unique("crane-test"))
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
        .name(unique("crane-test"))
        .definition(definition.to_string())
        .role_arn(format!("arn:aws:iam::{ACCOUNT}:role/crane-test-saga"))
        .send()
        .await
        .context("creating a state machine in moto")?;
    Ok(out.state_machine_arn)
}

/// The capacity each `PutItem` of a client consumed, on the table and on each index
/// (`ReturnConsumedCapacity=INDEXES`, which DynamoDB Local reports as DynamoDB bills it),
/// in the order the puts were answered. Failed puts are not recorded.
#[derive(Debug, Clone, Default)]
pub struct PutCapacity(Arc<Mutex<Vec<ConsumedCapacity>>>);

impl PutCapacity {
    /// A DynamoDB Local client whose puts are recorded here.
    pub fn client(&self) -> Result<aws_sdk_dynamodb::Client> {
        let conf = dynamodb_client()?
            .config()
            .to_builder()
            .interceptor(self.clone())
            .build();
        Ok(aws_sdk_dynamodb::Client::from_conf(conf))
    }

    /// The write units of every recorded put since the last call: (table, `index`).
    pub fn take(&self, index: &str) -> Vec<(f64, f64)> {
        let mut puts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        puts.drain(..)
            .map(|c| {
                let units = |c: Option<&aws_sdk_dynamodb::types::Capacity>| {
                    c.and_then(|c| c.capacity_units).unwrap_or(0.0)
                };
                let on_index = c
                    .global_secondary_indexes
                    .as_ref()
                    .and_then(|i| i.get(index));
                (units(c.table.as_ref()), units(on_index))
            })
            .collect()
    }
}

impl Intercept for PutCapacity {
    fn name(&self) -> &'static str {
        "PutCapacity"
    }

    fn modify_before_serialization(
        &self,
        ctx: &mut BeforeSerializationInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        use aws_sdk_dynamodb::operation::put_item::PutItemInput;
        if let Some(i) = ctx.input_mut().downcast_mut::<PutItemInput>() {
            i.return_consumed_capacity = Some(ReturnConsumedCapacity::Indexes);
        }
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        ctx: &AfterDeserializationInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        use aws_sdk_dynamodb::operation::put_item::PutItemOutput;
        let consumed = ctx
            .output_or_error()
            .ok()
            .and_then(|o| o.downcast_ref::<PutItemOutput>())
            .and_then(|o| o.consumed_capacity.clone());
        if let Some(c) = consumed {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(c);
        }
        Ok(())
    }
}
