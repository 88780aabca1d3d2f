//! Creating Crane's tables exactly as the [module docs](super) describe them, for tests and
//! for developers working against DynamoDB Local. In AWS the SAM template creates them.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::operation::create_table::builders::CreateTableFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, IndexStatus, KeySchemaElement, KeyType,
    Projection, ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_dynamodb::Client;
use tracing::instrument;

use super::error::{build_error, sdk_error};
use super::views::{BY_CREATED, BY_CREATED_PROJECTS};
use super::TableNames;
use crate::ports::{StoreError, StoreResult};

/// The idempotency table's TTL attribute.
pub const TTL_ATTRIBUTE: &str = "expires_at";

/// How long to wait for a table to become ACTIVE.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(300);

fn attr(name: &str, ty: ScalarAttributeType) -> StoreResult<AttributeDefinition> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ty)
        .build()
        .map_err(build_error)
}

fn key(name: &str, ty: KeyType) -> StoreResult<KeySchemaElement> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(ty)
        .build()
        .map_err(build_error)
}

/// A GSI projecting its keys, the table's key and `include`.
fn gsi(name: &str, hash: &str, range: &str, include: &[&str]) -> StoreResult<GlobalSecondaryIndex> {
    let projection = include.iter().fold(
        Projection::builder().projection_type(ProjectionType::Include),
        |p, attr| p.non_key_attributes(*attr),
    );
    GlobalSecondaryIndex::builder()
        .index_name(name)
        .key_schema(key(hash, KeyType::Hash)?)
        .key_schema(key(range, KeyType::Range)?)
        .projection(projection.build())
        .build()
        .map_err(build_error)
}

fn table(client: &Client, name: &str) -> CreateTableFluentBuilder {
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
}

/// The five `CreateTable` requests.
fn requests(client: &Client, names: &TableNames) -> StoreResult<Vec<CreateTableFluentBuilder>> {
    use ScalarAttributeType::{N, S};
    let events = table(client, &names.events)
        .attribute_definitions(attr("pk", S)?)
        .attribute_definitions(attr("seq", N)?)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("seq", KeyType::Range)?)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewImage)
                .build()
                .map_err(build_error)?,
        );
    let runs = table(client, &names.runs)
        .attribute_definitions(attr("pk", S)?)
        .attribute_definitions(attr("tenant", S)?)
        .attribute_definitions(attr("created_sk", S)?)
        .key_schema(key("pk", KeyType::Hash)?)
        .global_secondary_indexes(gsi(
            BY_CREATED,
            "tenant",
            "created_sk",
            &BY_CREATED_PROJECTS,
        )?);
    let todos = table(client, &names.todos)
        .attribute_definitions(attr("pk", S)?)
        .attribute_definitions(attr("sk", S)?)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?);
    let idempotency = table(client, &names.idempotency)
        .attribute_definitions(attr("pk", S)?)
        .key_schema(key("pk", KeyType::Hash)?);
    let breakers = table(client, &names.breakers)
        .attribute_definitions(attr("tool", S)?)
        .key_schema(key("tool", KeyType::Hash)?);
    Ok(vec![events, runs, todos, idempotency, breakers])
}

/// Create the five tables (those that exist already are left as they are), wait until all
/// are ACTIVE, and turn on TTL (`expires_at`) on the idempotency table.
#[instrument(skip(client))]
pub async fn create_tables(client: &Client, names: &TableNames) -> StoreResult<()> {
    let creates = requests(client, names)?
        .into_iter()
        .map(|request| async move {
            match request.send().await {
                Ok(_) => Ok(()),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_resource_in_use_exception()) =>
                {
                    Ok(())
                }
                Err(e) => Err(sdk_error("CreateTable", e)),
            }
        });
    futures::future::try_join_all(creates).await?;
    let tables = [
        &names.events,
        &names.runs,
        &names.todos,
        &names.idempotency,
        &names.breakers,
    ];
    futures::future::try_join_all(tables.map(|t| wait_active(client, t))).await?;
    enable_ttl(client, &names.idempotency).await
}

/// Poll until the table and its indexes are ACTIVE.
async fn wait_active(client: &Client, name: &str) -> StoreResult<()> {
    let deadline = Instant::now() + ACTIVE_TIMEOUT;
    loop {
        let out = client
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(|e| sdk_error("DescribeTable", e))?;
        let active = out.table.as_ref().is_some_and(|t| {
            t.table_status == Some(TableStatus::Active)
                && t.global_secondary_indexes().iter().all(|i| {
                    i.index_status
                        .as_ref()
                        .is_none_or(|s| *s == IndexStatus::Active)
                })
        });
        if active {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(StoreError::unavailable(format!(
                "table {name} was not ACTIVE after {}s",
                ACTIVE_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn enable_ttl(client: &Client, table: &str) -> StoreResult<()> {
    let current = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| sdk_error("DescribeTimeToLive", e))?;
    let status = current
        .time_to_live_description
        .and_then(|d| d.time_to_live_status);
    if matches!(
        status,
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
    ) {
        return Ok(());
    }
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(TTL_ATTRIBUTE)
                .build()
                .map_err(build_error)?,
        )
        .send()
        .await
        .map_err(|e| sdk_error("UpdateTimeToLive", e))?;
    Ok(())
}
